#!/usr/bin/env bash
# Memory of the proxy (resident set, RSS): at idle, under load, and after 10,000
# distinct sessions have each made a request, for each engine, in cookie mode and in
# server mode with the memory store.
#
#   bash benches/load/memory.sh            # SESSIONS=10000 DUR=10s CONNS=64
#   BFF_BIN=/path/to/bff-proxy bash benches/load/memory.sh
#   ENGINES=hyper MODES=cookie bash benches/load/memory.sh   # some rows only
#
# The dev IdP runs in a process of its own (a bff-proxy with only `[dev] idp`), so
# its grants are not counted in the proxy's RSS. Logins go through the real flow
# (/bff/login → the IdP → /bff/callback), 8 at a time. Needs curl, wrk and nginx
# (installed when missing). Everything listens on
# 127.0.0.1; every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

SESSIONS=${SESSIONS:-10000}
DUR=${DUR:-10s}
CONNS=${CONNS:-64}
PROXY_THREADS=${PROXY_THREADS:-2}
BASE_PORT=${BASE_PORT:-18200}
UP=$((BASE_PORT + 1)) IDP=$((BASE_PORT + 2)) IDP_PROXY=$((BASE_PORT + 3)) IDP_ADMIN=$((BASE_PORT + 4))
PX=$((BASE_PORT + 5)) PX_ADMIN=$((BASE_PORT + 6))

# wrk, nginx, curl, scripts/setup, BIN (BFF_BIN or this checkout's build), wait_http.
. benches/load/common.sh

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx-up.pid" ] && kill "$(cat "$WORK/nginx-up.pid")" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

rss_mb() { # pid → resident set in MB
  awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"
}

start_upstream "$UP" "$WORK"

KEY=$("$BIN" keygen)
config() { # listen admin engine dev_idp [extra [session] lines]
  bench_config "$1" "$2" "$3" "$4" "$PROXY_THREADS" "${5:-}"
}

# The IdP's own process (its client's redirect URI is the measured proxy's callback:
# every instance here has the measured proxy's public_url).
config "$IDP_PROXY" "$IDP_ADMIN" hyper true > "$WORK/idp.toml"
RUST_LOG=warn "$BIN" --config "$WORK/idp.toml" 2>"$WORK/idp.log" & PIDS+=($!)
wait_http "http://127.0.0.1:$IDP/.well-known/openid-configuration" || { cat "$WORK/idp.log" >&2; exit 1; }

login_and_use() { # n: one login through the real flow, then one API request
  local jar="$WORK/jars/$1" cookie
  curl -s -c "$jar" -b "$jar" -L -o /dev/null "http://127.0.0.1:$PX/bff/login?returnUrl=/"
  cookie=$(awk '$6 ~ /^__Host-Http-bff/ && $6 !~ /-login-/ { printf "%s%s=%s", sep, $6, $7; sep="; " }' "$jar")
  curl -s -o /dev/null -w '%{http_code}\n' -H "Cookie: $cookie" -H "X-CSRF: 1" "http://127.0.0.1:$PX/api/m"
  rm -f "$jar"
}
export -f login_and_use
export WORK PX

measure() { # engine mode
  local engine=$1 mode=$2 extra=""
  [ "$mode" = server ] && extra='mode = "server"'
  config "$PX" "$PX_ADMIN" "$engine" false "$extra" > "$WORK/px.toml"
  RUST_LOG=warn "$BIN" --config "$WORK/px.toml" 2>"$WORK/px.log" &
  local pid=$!
  wait_http "http://127.0.0.1:$PX_ADMIN/readyz"
  wait_http "http://127.0.0.1:$PX/"
  mkdir -p "$WORK/jars"
  # One session for the load run.
  local status
  status=$(login_and_use first)
  [ "$status" = 200 ] || { echo "login failed on $engine/$mode: $status" >&2; cat "$WORK/px.log" >&2; exit 1; }
  curl -s -c "$WORK/jars/load" -b "$WORK/jars/load" -L -o /dev/null "http://127.0.0.1:$PX/bff/login?returnUrl=/"
  local cookie
  cookie=$(awk '$6 ~ /^__Host-Http-bff/ && $6 !~ /-login-/ { printf "%s%s=%s", sep, $6, $7; sep="; " }' "$WORK/jars/load")
  sleep 1
  local idle peak=0 now
  idle=$(rss_mb "$pid")
  wrk -t1 -c"$CONNS" -d"$DUR" -H "Cookie: $cookie" -H "X-CSRF: 1" "http://127.0.0.1:$PX/api/m" > "$WORK/load.wrk" &
  local wrk_pid=$!
  while kill -0 "$wrk_pid" 2>/dev/null; do
    now=$(rss_mb "$pid")
    peak=$(awk -v a="$now" -v b="$peak" 'BEGIN {print (a > b) ? a : b}')
    sleep 0.5
  done
  wait "$wrk_pid"
  local after_load
  after_load=$(rss_mb "$pid")
  local ok
  ok=$(seq 1 "$SESSIONS" | xargs -P 8 -I{} bash -c 'login_and_use {}' | grep -c '^200$' || true)
  sleep 1
  local after_sessions
  after_sessions=$(rss_mb "$pid")
  printf '| %-7s | %-6s | %8s | %13s | %12s | %17s | %s\n' "$engine" "$mode" "$idle" "$peak" "$after_load" "$after_sessions" "$ok"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "machine: $(nproc) cores, $(uname -m); proxies with $PROXY_THREADS worker(s); load: wrk -t1 -c$CONNS -d$DUR, one session; then $SESSIONS sessions, each a login and one API request"
echo
printf '| %-7s | %-6s | %8s | %13s | %12s | %17s | %s\n' "engine" "mode" "idle MB" "under load MB" "after load MB" "after sessions MB" "sessions that got 200"
printf '|%s|\n' "---------|--------|----------|---------------|--------------|-------------------|-----------------------"
for engine in ${ENGINES:-pingora hyper}; do
  for mode in ${MODES:-cookie server}; do
    measure "$engine" "$mode"
  done
done
