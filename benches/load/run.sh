#!/usr/bin/env bash
# Load benchmark: one small fast upstream (nginx answering "ok"), measured
#   direct, through nginx as a plain reverse proxy (keep-alive to the upstream),
#   through bff-proxy with the pingora engine and with the hyper engine,
#   through three pingora replicas sharing Redis (a third of the connections each),
# the bff-proxy rows with a valid session cookie and the CSRF header on every
# request, so each request does the full open-session + Bearer work. Same total
# connections and duration for each. Then a refresh storm: 1000 concurrent connections on one
# session whose access token has just expired, counting the token requests.
#
#   bash benches/load/run.sh            # DUR=10s CONNS=64 THREADS=1 by default
#   DUR=30s CONNS=128 bash benches/load/run.sh
#
# Installs wrk and nginx (Debian packages) when missing. Everything listens on
# 127.0.0.1; every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

DUR=${DUR:-10s}
CONNS=${CONNS:-64}
WRK_THREADS=${WRK_THREADS:-1}
# CPU given to each proxy: nginx workers and bff-proxy threads alike.
PROXY_THREADS=${PROXY_THREADS:-1}
BASE_PORT=${BASE_PORT:-18080}
UP=$((BASE_PORT + 1)) NGX=$((BASE_PORT + 2)) PG=$((BASE_PORT + 3)) HY=$((BASE_PORT + 4))
IDP=$((BASE_PORT + 10)) ADM_PG=$((BASE_PORT + 13)) ADM_HY=$((BASE_PORT + 14))
ST=$((BASE_PORT + 5)) IDP_ST=$((BASE_PORT + 15)) ADM_ST=$((BASE_PORT + 16))
R1=$((BASE_PORT + 6)) R2=$((BASE_PORT + 7)) R3=$((BASE_PORT + 8))
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true

./scripts/setup
cargo build --release --bin bff-proxy >&2
BIN=${CARGO_TARGET_DIR:-target}/release/bff-proxy

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_http() { # url
  for _ in $(seq 1 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "no answer from $1" >&2; return 1
}

# The upstream and the reference proxy.
cat > "$WORK/nginx.conf" <<EOF
worker_processes $PROXY_THREADS;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
daemon on;
events { worker_connections 8192; }
http {
  access_log off;
  upstream up { server 127.0.0.1:$UP; keepalive 256; }
  server { listen 127.0.0.1:$UP; location / { return 200 "ok\n"; } }
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
EOF
}
config "$PG" "$ADM_PG" pingora true "$IDP" 1h 30s > "$WORK/pingora.toml"
config "$HY" "$ADM_HY" hyper false "$IDP" 1h 30s > "$WORK/hyper.toml"
RUST_LOG=warn "$BIN" --config "$WORK/pingora.toml" 2>"$WORK/pingora.log" & PIDS+=($!)
wait_http "http://127.0.0.1:$ADM_PG/healthz"
RUST_LOG=warn "$BIN" --config "$WORK/hyper.toml" 2>"$WORK/hyper.log" & PIDS+=($!)
wait_http "http://127.0.0.1:$ADM_HY/healthz"

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
done

run() { # name url [headers...]
  local name=$1 url=$2; shift 2
  local args=()
  for h in "$@"; do args+=(-H "$h"); done
  wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DUR" --latency "${args[@]}" "$url" > "$WORK/$name.wrk"
  local rps p50 p99 errors
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/$name.wrk")
  p50=$(awk '$1 == "50%" {print $2}' "$WORK/$name.wrk")
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/$name.wrk")
  errors=$(awk '/Non-2xx/ {print $5} /Socket errors/ {print "socket:" $0}' "$WORK/$name.wrk" | tr '\n' ' ')
  echo "$name $rps $p50 $p99 ${errors:-0}" >> "$WORK/results"
}
to_ms() { # wrk latency (e.g. 1.23ms, 456.00us, 1.02s) → ms
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else print v }'
}

: > "$WORK/results"
run direct "http://127.0.0.1:$UP/api/bench"
run nginx "http://127.0.0.1:$NGX/api/bench"
run bff-pingora "http://127.0.0.1:$PG/api/bench" "Cookie: $COOKIE" "X-CSRF: 1"
run bff-hyper "http://127.0.0.1:$HY/api/bench" "Cookie: $COOKIE" "X-CSRF: 1"

# Three pingora replicas sharing Redis, each with a third of the connections; the
# session cookie from the first instance works on all of them (same keys).
redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1 || ./scripts/setup
STORE=$(printf '[store]\nkind = "redis"\nurl = "%s"\nkey_prefix = "bff-bench:"' "$REDIS_URL")
for i in 1 2 3; do
  port_var="R$i"; port=${!port_var}
  config "$port" $((BASE_PORT + 20 + i)) pingora false "$IDP" 1h 30s "$STORE" > "$WORK/replica$i.toml"
  RUST_LOG=warn "$BIN" --config "$WORK/replica$i.toml" 2>"$WORK/replica$i.log" & PIDS+=($!)
  wait_http "http://127.0.0.1:$((BASE_PORT + 20 + i))/healthz" || { cat "$WORK/replica$i.toml" "$WORK/replica$i.log" >&2; exit 1; }
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
echo "bff-3x+redis $rps3 $p50_3 $p99_3 $err3" >> "$WORK/results"

refreshes_before=$(curl -s "http://127.0.0.1:$ADM_PG/metrics" | awk '/^bff_refresh_total\{result="ok"\}/ {print $2}')

# The refresh storm: its own IdP and proxy, access tokens of 5 s.
config "$ST" "$ADM_ST" pingora true "$IDP_ST" 5s 1s | sed "s/$PG\"/$ST\"/" > "$WORK/storm.toml"
RUST_LOG=warn "$BIN" --config "$WORK/storm.toml" 2>"$WORK/storm.log" & PIDS+=($!)
wait_http "http://127.0.0.1:$ADM_ST/healthz"
STORM_COOKIE=$(login "$ST")
sleep 5.5 # the access token has just expired
wrk -t2 -c1000 -d1s --latency -H "Cookie: $STORM_COOKIE" -H "X-CSRF: 1" "http://127.0.0.1:$ST/api/bench" > "$WORK/storm.wrk"
storm_requests=$(awk '/requests in/ {print $1}' "$WORK/storm.wrk")
storm_non2xx=$(awk '/Non-2xx/ {print $5}' "$WORK/storm.wrk")
storm_metrics=$(curl -s "http://127.0.0.1:$ADM_ST/metrics")
storm_token=$(echo "$storm_metrics" | awk '/^bff_idp_requests_total\{endpoint="token",status="200"\}/ {print $2}')
storm_refresh=$(echo "$storm_metrics" | awk '/^bff_refresh_total\{result="ok"\}/ {print $2}')

echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m); wrk -t$WRK_THREADS -c$CONNS -d$DUR; proxies with $PROXY_THREADS worker(s)"
echo
printf '| %-12s | %12s | %9s | %9s | %14s | %16s | %s\n' "target" "requests/s" "p50 ms" "p99 ms" "× nginx req/s" "p99 over direct" "errors"
printf '|%s|\n' "--------------|--------------|-----------|-----------|----------------|------------------|-------"
nginx_rps=$(awk '$1 == "nginx" {print $2}' "$WORK/results")
direct_p99=$(to_ms "$(awk '$1 == "direct" {print $4}' "$WORK/results")")
while read -r name rps p50 p99 errors; do
  p50ms=$(to_ms "$p50"); p99ms=$(to_ms "$p99")
  ratio=$(awk -v a="$rps" -v b="$nginx_rps" 'BEGIN {printf "%.2f", a / b}')
  over=$(awk -v a="$p99ms" -v b="$direct_p99" 'BEGIN {printf "%+.3f ms", a - b}')
  printf '| %-12s | %12s | %9s | %9s | %14s | %16s | %s\n' "$name" "$rps" "$p50ms" "$p99ms" "$ratio" "$over" "$errors"
done < "$WORK/results"
echo
echo "refresh storm (1000 connections, one session, access token just expired, 1 s): $storm_requests requests, non-2xx: ${storm_non2xx:-0}, token requests at the IdP for the refresh: $((storm_token - 1)) (bff_refresh_total{result=\"ok\"} = $storm_refresh)"
echo "refreshes during the throughput runs: ${refreshes_before:-0} (none expected: tokens live 1 h)"
