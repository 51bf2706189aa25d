#!/usr/bin/env bash
# Load benchmark: one small fast upstream (nginx answering "ok"), measured
#   direct, through nginx as a plain reverse proxy (keep-alive to the upstream; its
#   own nginx instance, so its CPU is the proxy's alone),
#   through bff-proxy with the pingora engine and with the hyper engine,
#   the same two processes on an auth = "none" route without a cookie (the -public
#   rows: each engine's floor, with no session work),
#   through three pingora replicas sharing Redis (a third of the connections each),
# the bff-proxy rows with a valid session cookie and the CSRF header on every
# request, so each request does the full open-session + Bearer work. Same total
# connections and duration for each. For each proxy: its CPU during its run (from
# /proc: user + system time of all its threads and processes), so requests/s per
# proxy core compares proxies on a box where the load generator and the upstream
# share the cores; CPU µs and instructions per request (`perf stat -e instructions`
# where the machine has hardware counters); ERROR lines in its log. Then a refresh storm: 1000 concurrent connections on one
# session whose access token has just expired, counting the token requests.
#
#   bash benches/load/run.sh            # DUR=10s CONNS=64 THREADS=1 by default
#   DUR=30s CONNS=128 bash benches/load/run.sh
#   BFF_BIN=/path/to/older/bff-proxy bash benches/load/run.sh   # another build
#   PROFILE=bff-pingora bash benches/load/run.sh   # perf record of that row
#   FIXED_RATE=5000 bash benches/load/run.sh   # the fixed-rate run at that rate
#
# Installs wrk and nginx (Debian packages) when missing. Everything listens on
# 127.0.0.1; every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

DUR=${DUR:-10s}
CONNS=${CONNS:-64}
WRK_THREADS=${WRK_THREADS:-1}
# CPU given to each proxy: nginx workers and bff-proxy threads alike.
PROXY_THREADS=${PROXY_THREADS:-2}
BASE_PORT=${BASE_PORT:-18080}
UP=$((BASE_PORT + 1)) NGX=$((BASE_PORT + 2)) PG=$((BASE_PORT + 3)) HY=$((BASE_PORT + 4))
IDP=$((BASE_PORT + 10)) ADM_PG=$((BASE_PORT + 13)) ADM_HY=$((BASE_PORT + 14))
ST=$((BASE_PORT + 5)) IDP_ST=$((BASE_PORT + 15)) ADM_ST=$((BASE_PORT + 16))
R1=$((BASE_PORT + 6)) R2=$((BASE_PORT + 7)) R3=$((BASE_PORT + 8))
NODE=$((BASE_PORT + 30)) NODE_IDP=$((BASE_PORT + 31)) NODE_IDP_PX=$((BASE_PORT + 32)) NODE_IDP_ADM=$((BASE_PORT + 33))
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}

# wrk, nginx, curl, scripts/setup, BIN (BFF_BIN or this checkout's build), wait_http.
. benches/load/common.sh
# The fixed-rate run's open-loop generator (benches/load/openload.rs).
cargo build --release --example openload >&2
OPENLOAD=${CARGO_TARGET_DIR:-target}/release/examples/openload

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$WORK"/nginx*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
  true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
# BENCH_KEEP=1 keeps the proxies' logs and configs in /tmp/bff-load-logs for a look after a run.
finish() {
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    mkdir -p /tmp/bff-load-logs && cp "$WORK"/*.log "$WORK"/*.toml "$WORK"/*.wrk /tmp/bff-load-logs/ 2>/dev/null || true
  fi
  cleanup
}
trap finish EXIT


# The upstream (one worker, the same for every row) and the reference proxy (its
# own instance with PROXY_THREADS workers).
start_upstream "$UP" "$WORK"
cat > "$WORK/nginx.conf" <<EOF
worker_processes $PROXY_THREADS;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
daemon on;
events { worker_connections 8192; }
http {
  access_log off;
  upstream up { server 127.0.0.1:$UP; keepalive 256; }
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$NGX;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
"$NGINX" -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log"
wait_http "http://127.0.0.1:$NGX/"

KEY=$("$BIN" keygen)
config() { # listen admin engine dev_idp issuer_port access_lifetime skew [store lines]
  cat <<EOF
[server]
listen = "127.0.0.1:$1"
public_url = "http://127.0.0.1:$PG"
admin_listen = "127.0.0.1:$2"
engine = "$3"
threads = $PROXY_THREADS
[oidc]
issuer = "http://127.0.0.1:$5"
client_id = "bench"
client_secret = "bench-secret"
scopes = ["openid", "offline_access"]
[session]
keys = ["$KEY"]
[refresh]
skew = "$7"
[dev]
idp = $4
access_token_lifetime = "$6"
${8:-}
[[routes]]
path = "/api/"
upstream = "http://127.0.0.1:$UP"
# The engine's floor (the -public rows): no cookie to open, no CSRF, no token; the
# path check, the header rules, the request id and both HTTP/1 hops remain.
[[routes]]
path = "/pub/"
upstream = "http://127.0.0.1:$UP"
auth = "none"
EOF
}
config "$PG" "$ADM_PG" pingora true "$IDP" 1h 30s > "$WORK/pingora.toml"
config "$HY" "$ADM_HY" hyper false "$IDP" 1h 30s > "$WORK/hyper.toml"
RUST_LOG=warn "$BIN" --config "$WORK/pingora.toml" 2>"$WORK/pingora.log" & PIDS+=($!)
PG_PID=$!
wait_http "http://127.0.0.1:$ADM_PG/healthz"
wait_http "http://127.0.0.1:$PG/"
RUST_LOG=warn "$BIN" --config "$WORK/hyper.toml" 2>"$WORK/hyper.log" & PIDS+=($!)
HY_PID=$!
wait_http "http://127.0.0.1:$ADM_HY/healthz"
wait_http "http://127.0.0.1:$HY/"

login() { # proxy_port → prints the Cookie header value
  local jar="$WORK/jar.$1"
  curl -s -c "$jar" -b "$jar" -L -o /dev/null "http://127.0.0.1:$1/bff/login?returnUrl=/"
  awk '$6 ~ /^__Host-Http-bff/ && $6 !~ /-login-/ { printf "%s%s=%s", sep, $6, $7; sep="; " }' "$jar"
}
COOKIE=$(login "$PG")
[ -n "$COOKIE" ] || { echo "login failed" >&2; exit 1; }
for port in "$PG" "$HY"; do
  got=$(curl -s -H "Cookie: $COOKIE" -H "X-CSRF: 1" "http://127.0.0.1:$port/api/bench")
  [ "$got" = "ok" ] || { echo "the session does not work on port $port: $got" >&2; exit 1; }
  got=$(curl -s "http://127.0.0.1:$port/pub/bench")
  [ "$got" = "ok" ] || { echo "the public route does not work on port $port: $got" >&2; exit 1; }
done

HZ=$(getconf CLK_TCK)
cpu_ticks() { # pids... → user + system clock ticks of these processes (all threads)
  local t=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    t=$((t + $(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$p/stat")))
  done
  echo "$t"
}
# Hardware counters are missing in many VMs (this project's machine among them):
# then the instructions column says n/a and CPU µs per request stands in for it.
PERF_OK=0
if command -v perf >/dev/null && perf stat -x, -e instructions true 2>&1 >/dev/null | grep -q '^[0-9]'; then
  PERF_OK=1
fi
run() { # name url pids-var [headers...]: pids-var names the proxy's processes
  local name=$1 url=$2 pids_var=$3; shift 3
  local pids=() args=() h
  read -r -a pids <<< "${!pids_var:-}"
  for h in "$@"; do args+=(-H "$h"); done
  local perf_pid=""
  if [ "$PERF_OK" = 1 ] && [ ${#pids[@]} -gt 0 ]; then
    perf stat -x, -e instructions -p "$(IFS=,; echo "${pids[*]}")" -o "$WORK/$name.perf" & perf_pid=$!
  fi
  # PROFILE=<row name> records that row's proxy with perf (software clock: no
  # hardware counters needed) into /tmp/bff-load-<row>.perf.data.
  local prof_pid=""
  if [ "${PROFILE:-}" = "$name" ] && [ ${#pids[@]} -gt 0 ]; then
    perf record -q -F 1999 --call-graph dwarf,16384 -p "$(IFS=,; echo "${pids[*]}")" -o "/tmp/bff-load-$name.perf.data" 2>/dev/null & prof_pid=$!
  fi
  local t0 t1 started ended
  t0=$(cpu_ticks "${pids[@]}"); started=$(date +%s.%N)
  wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DUR" --latency "${args[@]}" "$url" > "$WORK/$name.wrk"
  t1=$(cpu_ticks "${pids[@]}"); ended=$(date +%s.%N)
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid" 2>/dev/null; wait "$perf_pid" 2>/dev/null || true; fi
  if [ -n "$prof_pid" ]; then kill -INT "$prof_pid" 2>/dev/null; wait "$prof_pid" 2>/dev/null || true; fi
  local rps p50 p99 errors total cpu instr
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/$name.wrk")
  total=$(awk '/requests in/ {print $1}' "$WORK/$name.wrk")
  p50=$(awk '$1 == "50%" {print $2}' "$WORK/$name.wrk")
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/$name.wrk")
  errors=$(awk '/Non-2xx/ {printf "non-2xx:%s ", $5} /Socket errors/ {gsub(/ /, ""); printf "%s ", $0}' "$WORK/$name.wrk")
  # CPU as a share of one core over the run's wall time ("-" when not measured).
  cpu="-"
  if [ ${#pids[@]} -gt 0 ]; then
    cpu=$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v a="$started" -v b="$ended" 'BEGIN {printf "%.0f", 100 * t / hz / (b - a)}')
  fi
  instr="n/a"
  if [ -s "$WORK/$name.perf" ]; then
    instr=$(awk -F, -v n="$total" '$3 ~ /^instructions/ {printf "%.0f", $1 / n}' "$WORK/$name.perf")
  fi
  echo "$name $rps $p50 $p99 $cpu $total ${instr:-n/a} ${errors:-0}" >> "$WORK/results"
}
error_lines() { # log file → how many ERROR lines
  grep -c ' ERROR ' "$1" 2>/dev/null || true
}
to_ms() { # wrk latency (e.g. 1.23ms, 456.00us, 1.02s) → ms
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else print v }'
}

: > "$WORK/results"
NGINX_PIDS="$(cat "$WORK/nginx.pid") $(pgrep -P "$(cat "$WORK/nginx.pid")" | tr '\n' ' ')"
NO_PIDS=""
run direct "http://127.0.0.1:$UP/api/bench" NO_PIDS
run nginx "http://127.0.0.1:$NGX/api/bench" NGINX_PIDS
run bff-pingora "http://127.0.0.1:$PG/api/bench" PG_PID "Cookie: $COOKIE" "X-CSRF: 1"
run bff-hyper "http://127.0.0.1:$HY/api/bench" HY_PID "Cookie: $COOKIE" "X-CSRF: 1"
# Each engine's floor: the same processes on the auth = "none" route, no Cookie.
run bff-pingora-public "http://127.0.0.1:$PG/pub/bench" PG_PID
run bff-hyper-public "http://127.0.0.1:$HY/pub/bench" HY_PID

# The Node BFF (benches/load/node/bff.js: express-openid-connect + http-proxy-middleware,
# a cluster of PROXY_THREADS workers), logged in through its own dev IdP (a bff-proxy
# process whose client is the Node app), with its session cookie on every request.
if command -v node >/dev/null && command -v npm >/dev/null; then
  [ -d benches/load/node/node_modules/express-openid-connect ] ||
    npm ci --prefix benches/load/node --no-audit --no-fund >/dev/null
  config "$NODE_IDP_PX" "$NODE_IDP_ADM" hyper true "$NODE_IDP" 1h 30s |
    sed -e "s#^public_url = .*#public_url = \"http://127.0.0.1:$NODE\"#" \
        -e 's/^client_id = .*/client_id = "node"/' -e 's/^client_secret = .*/client_secret = "node-secret"/' \
    > "$WORK/node-idp.toml"
  RUST_LOG=warn "$BIN" --config "$WORK/node-idp.toml" 2>"$WORK/node-idp.log" & PIDS+=($!)
  wait_http "http://127.0.0.1:$NODE_IDP/.well-known/openid-configuration"
  PORT=$NODE UPSTREAM="http://127.0.0.1:$UP" ISSUER="http://127.0.0.1:$NODE_IDP" CLIENT_ID=node \
    CLIENT_SECRET=node-secret WORKERS=$PROXY_THREADS node benches/load/node/bff.js 2>"$WORK/node.log" &
  PIDS+=($!); NODE_PRIMARY=$!
  wait_http "http://127.0.0.1:$NODE/"
  sleep 1 # the workers start after the primary answers
  curl -s -c "$WORK/jar.node" -b "$WORK/jar.node" -L -o /dev/null "http://127.0.0.1:$NODE/bff/login"
  NODE_COOKIE=$(awk '$6 ~ /^appSession/ { printf "%s%s=%s", sep, $6, $7; sep="; " }' "$WORK/jar.node")
  got=$(curl -s -H "Cookie: $NODE_COOKIE" "http://127.0.0.1:$NODE/api/bench")
  if [ "$got" = "ok" ]; then
    NODE_PIDS="$NODE_PRIMARY $(pgrep -P "$NODE_PRIMARY" | tr '\n' ' ')"
    run node-bff "http://127.0.0.1:$NODE/api/bench" NODE_PIDS "Cookie: $NODE_COOKIE"
  else
    echo "the Node BFF's session does not work ($got): no node-bff row" >&2
  fi
else
  echo "node and npm are needed for the node-bff row: skipped" >&2
fi

# Fixed rate: half of nginx's maximum above, the same for every target, open loop
# (latency counted from when each request was due), so the added latency is measured
# without saturating the box.
# FIXED_RATE=<req/s> sets another rate (one every target can sustain, say).
RATE=${FIXED_RATE:-$(awk '$1 == "nginx" {printf "%d", $2 / 2}' "$WORK/results")}
FIXED_SECS=${DUR%s}
: > "$WORK/fixed"
fixed() { # name url [headers...]
  local name=$1 url=$2; shift 2
  local args=() h
  for h in "$@"; do args+=(-H "$h"); done
  echo "$name $("$OPENLOAD" --rate "$RATE" --duration "$FIXED_SECS" --connections "$CONNS" "${args[@]}" "$url")" >> "$WORK/fixed"
}
fixed direct "http://127.0.0.1:$UP/api/bench"
fixed nginx "http://127.0.0.1:$NGX/api/bench"
fixed bff-pingora "http://127.0.0.1:$PG/api/bench" "Cookie: $COOKIE" "X-CSRF: 1"
fixed bff-hyper "http://127.0.0.1:$HY/api/bench" "Cookie: $COOKIE" "X-CSRF: 1"
fixed bff-pingora-public "http://127.0.0.1:$PG/pub/bench"
fixed bff-hyper-public "http://127.0.0.1:$HY/pub/bench"

# Three pingora replicas sharing Redis, each with a third of the connections; the
# session cookie from the first instance works on all of them (same keys).
redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1 || ./scripts/setup
STORE=$(printf '[store]\nkind = "redis"\nurl = "%s"\nkey_prefix = "bff-bench:"' "$REDIS_URL")
for i in 1 2 3; do
  port_var="R$i"; port=${!port_var}
  config "$port" $((BASE_PORT + 20 + i)) pingora false "$IDP" 1h 30s "$STORE" > "$WORK/replica$i.toml"
  RUST_LOG=warn "$BIN" --config "$WORK/replica$i.toml" 2>"$WORK/replica$i.log" & PIDS+=($!)
  wait_http "http://127.0.0.1:$((BASE_PORT + 20 + i))/healthz" || { cat "$WORK/replica$i.toml" "$WORK/replica$i.log" >&2; exit 1; }
  wait_http "http://127.0.0.1:$port/" || { cat "$WORK/replica$i.log" >&2; exit 1; }
done
per=$(( CONNS / 3 )); [ "$per" -ge 1 ] || per=1
WRK_PIDS=()
for i in 1 2 3; do
  port_var="R$i"
  wrk -t1 -c"$per" -d"$DUR" --latency -H "Cookie: $COOKIE" -H "X-CSRF: 1" "http://127.0.0.1:${!port_var}/api/bench" > "$WORK/replica$i.wrk" &
  WRK_PIDS+=($!)
done
for p in "${WRK_PIDS[@]}"; do wait "$p"; done
rps3=$(awk '/^Requests\/sec:/ {s += $2} END {printf "%.2f", s}' "$WORK"/replica*.wrk)
p50_3=$(awk '$1 == "50%" {print $2}' "$WORK"/replica*.wrk | sort -h | tail -1)
p99_3=$(awk '$1 == "99%" {print $2}' "$WORK"/replica*.wrk | sort -h | tail -1)
err3=$(awk '/Non-2xx/ {s += $5} END {print s + 0}' "$WORK"/replica*.wrk)
echo "bff-3x+redis $rps3 $p50_3 $p99_3 - - n/a non-2xx:$err3" >> "$WORK/results"

refreshes_before=$(curl -s "http://127.0.0.1:$ADM_PG/metrics" | awk '/^bff_refresh_total\{result="ok"\}/ {print $2}')

# The refresh storm: its own IdP and proxy, access tokens of 5 s.
config "$ST" "$ADM_ST" pingora true "$IDP_ST" 5s 1s | sed "s/$PG\"/$ST\"/" > "$WORK/storm.toml"
RUST_LOG=warn "$BIN" --config "$WORK/storm.toml" 2>"$WORK/storm.log" & PIDS+=($!)
wait_http "http://127.0.0.1:$ADM_ST/healthz"
wait_http "http://127.0.0.1:$ST/"
STORM_COOKIE=$(login "$ST")
sleep 5.5 # the access token has just expired
wrk -t2 -c1000 -d1s --latency -H "Cookie: $STORM_COOKIE" -H "X-CSRF: 1" "http://127.0.0.1:$ST/api/bench" > "$WORK/storm.wrk"
storm_requests=$(awk '/requests in/ {print $1}' "$WORK/storm.wrk")
storm_non2xx=$(awk '/Non-2xx/ {print $5}' "$WORK/storm.wrk")
storm_metrics=$(curl -s "http://127.0.0.1:$ADM_ST/metrics")
storm_token=$(echo "$storm_metrics" | awk '/^bff_idp_requests_total\{endpoint="token",status="200"\}/ {print $2}')
storm_refresh=$(echo "$storm_metrics" | awk '/^bff_refresh_total\{result="ok"\}/ {print $2}')

echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m); wrk -t$WRK_THREADS -c$CONNS -d$DUR; every proxy with $PROXY_THREADS worker(s) (nginx worker_processes, bff-proxy server.threads); upstream: nginx, 1 worker"
echo
printf '| %-18s | %10s | %7s | %7s | %9s | %10s | %8s | %10s | %9s | %13s | %s\n' \
  "target" "requests/s" "p50 ms" "p99 ms" "proxy CPU" "req/s/core" "× nginx" "CPU µs/req" "instr/req" "p99 over dir." "errors"
printf '|%s|\n' "--------------------|------------|---------|---------|-----------|------------|----------|------------|-----------|---------------|-------"
per_core() { awk -v r="$1" -v c="$2" 'BEGIN { if (c == "-" || c == 0) print "-"; else printf "%.0f", r * 100 / c }'; }
nginx_per_core=$(awk '$1 == "nginx" {print $2, $5}' "$WORK/results" | { read -r r c; per_core "$r" "$c"; })
direct_p99=$(to_ms "$(awk '$1 == "direct" {print $4}' "$WORK/results")")
while read -r name rps p50 p99 cpu total instr errors; do
  p50ms=$(to_ms "$p50"); p99ms=$(to_ms "$p99")
  pc=$(per_core "$rps" "$cpu")
  ratio=$(awk -v a="$pc" -v b="$nginx_per_core" 'BEGIN { if (a == "-") print "-"; else printf "%.2f", a / b }')
  us=$(awk -v c="$cpu" -v r="$rps" 'BEGIN { if (c == "-") print "-"; else printf "%.1f", c / 100 * 1e6 / r }')
  over=$(awk -v a="$p99ms" -v b="$direct_p99" 'BEGIN {printf "%+.3f ms", a - b}')
  [ "$cpu" = "-" ] || cpu="$cpu %"
  printf '| %-18s | %10s | %7s | %7s | %9s | %10s | %8s | %10s | %9s | %13s | %s\n' \
    "$name" "$rps" "$p50ms" "$p99ms" "$cpu" "$pc" "$ratio" "$us" "$instr" "$over" "$errors"
done < "$WORK/results"
echo
echo "ERROR lines in the proxies' logs: nginx $(grep -c '\[error\]' "$WORK/nginx-error.log" 2>/dev/null || true), bff-pingora $(error_lines "$WORK/pingora.log"), bff-hyper $(error_lines "$WORK/hyper.log"), replicas $(cat "$WORK"/replica*.log | grep -c ' ERROR ' || true)"
[ "$PERF_OK" = 1 ] || echo "instructions per request: n/a (perf stat finds no hardware counter on this machine; CPU µs/req stands in)"
echo
rate_why="half of nginx's requests/s above"
[ -n "${FIXED_RATE:-}" ] && rate_why="set by FIXED_RATE"
echo "fixed rate: $RATE requests/s ($rate_why) for ${FIXED_SECS}s over $CONNS connections, open loop (benches/load/openload.rs)"
echo
printf '| %-18s | %8s | %8s | %9s | %8s | %14s | %s\n' "target" "p50 ms" "p99 ms" "p99.9 ms" "max ms" "p99 over nginx" "errors"
printf '|%s|\n' "--------------------|----------|----------|-----------|----------|----------------|-------"
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<< "$2"; }
nginx_fixed_p99=$(field p99_ms "$(awk '$1 == "nginx"' "$WORK/fixed")")
while read -r line; do
  name=${line%% *}
  p99=$(field p99_ms "$line")
  over=$(awk -v a="$p99" -v b="$nginx_fixed_p99" 'BEGIN {printf "%+.3f ms", a - b}')
  printf '| %-18s | %8s | %8s | %9s | %8s | %14s | %s\n' "$name" "$(field p50_ms "$line")" "$p99" \
    "$(field p999_ms "$line")" "$(field max_ms "$line")" "$over" "$(field errors "$line")"
done < "$WORK/fixed"
echo
echo "refresh storm (1000 connections, one session, access token just expired, 1 s): $storm_requests requests, non-2xx: ${storm_non2xx:-0}, token requests at the IdP for the refresh: $((storm_token - 1)) (bff_refresh_total{result=\"ok\"} = $storm_refresh)"
echo "refreshes during the throughput runs: ${refreshes_before:-0} (none expected: tokens live 1 h)"
