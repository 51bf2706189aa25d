#!/usr/bin/env bash
# Instructions per request, counted by valgrind (callgrind), for machines without
# hardware counters (`perf stat -e instructions` needs a PMU; most VMs, this
# project's among them, have none). callgrind counts the user-space instructions a
# process executes, whatever else the machine is doing: the same binary and load
# give the same count, so the figure compares builds and proxies on a noisy box.
# The kernel's share (socket I/O, wake-ups) is not counted: the syscalls per request
# are the same for every row here (strace: 2 reads, 2 writes per proxied request).
#
# One correction, the same for every row: callgrind counts each byte of a
# `rep movsb` / `rep stosb` as an instruction, where the CPU's own counter counts
# the instruction once. glibc's memcpy and memset switch to those above a few KB
# (under valgrind: a 13,500-byte memcpy counted 13,515 instructions, an 8,000-byte
# one 784). pingora moves a ~13.5 KB future once per request, so its count was
# ~12,500 higher than the work done (2026-12-04: 118,984 against 106,442). The
# measured processes therefore run with GLIBC_TUNABLES raising both thresholds out
# of reach: large copies take glibc's vector loop, whose instructions are real
# ones. REP_STRINGS=1 keeps glibc's defaults (the figures of earlier sessions were
# taken that way).
#
# Rows: nginx as a plain reverse proxy (keep-alive to the upstream) and bff-proxy
# with each engine doing the full session work on every request (open the sealed
# cookie, CSRF, revocation and lifetime checks, Bearer injection). Each proxy runs
# alone under callgrind with one worker (nginx `master_process off`, bff-proxy
# `server.threads = 1`); after a warm-up its counters are zeroed, wrk sends
# requests for DUR over CONNS connections, and the counters are dumped: the count
# over the requests wrk completed is the figure. Each engine then gets a second
# row, `-public`: the same process on a route with `auth = "none"` and no Cookie,
# so no session work at all, which is the engine's own floor (its two HTTP/1 hops,
# the header rules, the request id).
#
#   bash benches/load/instructions.sh           # DUR=10s CONNS=8
#   BFF_BIN=/path/to/older/bff-proxy bash benches/load/instructions.sh
#   PROXY_LOG=info bash benches/load/instructions.sh  # with the access line
#   REP_STRINGS=1 bash benches/load/instructions.sh   # glibc's rep movsb/stosb
#   KEEP=/tmp/cg bash benches/load/instructions.sh   # keep the callgrind files
#     (then: callgrind_annotate --inclusive=yes /tmp/cg/bff-hyper.cg.out.1 | head -60)
#
# Needs valgrind (callgrind_control), wrk, nginx and curl (the last three installed
# when missing). Everything listens on 127.0.0.1; every process it starts is stopped
# on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

DUR=${DUR:-10s}
# The measured proxies' log level: `warn` leaves the access line out (as nginx's
# `access_log off`); PROXY_LOG=info counts it too (written to a file).
PROXY_LOG=${PROXY_LOG:-warn}
CONNS=${CONNS:-8}
BASE_PORT=${BASE_PORT:-18400}
UP=$((BASE_PORT + 1)) NGX=$((BASE_PORT + 2)) PX=$((BASE_PORT + 3)) PX_ADMIN=$((BASE_PORT + 4))
IDP=$((BASE_PORT + 5)) IDP_PROXY=$((BASE_PORT + 6)) IDP_ADMIN=$((BASE_PORT + 7))

command -v callgrind_control >/dev/null || {
  echo "valgrind (callgrind_control) is needed: apt-get install valgrind" >&2; exit 1; }
# wrk, nginx, curl, scripts/setup, BIN (BFF_BIN or this checkout's build), wait_http.
. benches/load/common.sh

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx-up.pid" ] && kill "$(cat "$WORK/nginx-up.pid")" 2>/dev/null
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$WORK"/*.cg.out* "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

start_upstream "$UP" "$WORK"

KEY=$("$BIN" keygen)
config() { # listen admin engine dev_idp
  bench_config "$1" "$2" "$3" "$4" 1
  # The engine's floor: a route without session work (no cookie to open, no CSRF,
  # no token), on the same upstream; the header rules, the request id, the path
  # check and both HTTP/1 hops are still done.
  cat <<EOF
[[routes]]
path = "/pub/"
upstream = "http://127.0.0.1:$UP"
auth = "none"
EOF
}
# The dev IdP in a process of its own, not measured.
config "$IDP_PROXY" "$IDP_ADMIN" hyper true > "$WORK/idp.toml"
RUST_LOG=warn "$BIN" --config "$WORK/idp.toml" 2>"$WORK/idp.log" & PIDS+=($!)
wait_http "http://127.0.0.1:$IDP/.well-known/openid-configuration" || { cat "$WORK/idp.log" >&2; exit 1; }

count() { # name pid url [headers...] → a results line: name requests instructions
  # (CG: the process's callgrind file name when it is not `name`; DUMP: which of its
  # dumps this count is, 1 for its first)
  local name=$1 pid=$2 url=$3; shift 3
  local args=() h
  for h in "$@"; do args+=(-H "$h"); done
  # Warm-up (connection pools, lazy statics), then count from zero.
  wrk -t1 -c"$CONNS" -d2s "${args[@]}" "$url" > /dev/null
  callgrind_control -z "$pid" > /dev/null 2>&1
  wrk -t1 -c"$CONNS" -d"$DUR" "${args[@]}" "$url" > "$WORK/$name.wrk"
  callgrind_control -d "$pid" > /dev/null 2>&1
  local requests non2xx instr
  requests=$(awk '/requests in/ {print $1}' "$WORK/$name.wrk")
  non2xx=$(awk '/Non-2xx/ {print $5}' "$WORK/$name.wrk")
  # The last dump's totals: summed over the dump files of this process (one per
  # thread with --separate-threads=no there is one; take the newest).
  # The dump of the measured run (callgrind numbers it .1); a process that exited
  # meanwhile left only its final file: say so rather than print a wrong count.
  local f="$WORK/${CG:-$name}.cg.out.${DUMP:-1}"
  if [ ! -s "$f" ] || ! kill -0 "$pid" 2>/dev/null; then
    echo "$name stopped during its run; its valgrind log ends:" >&2
    grep -v "^==" "$WORK/${CG:-$name}.valgrind.log" | tail -5 >&2
    exit 1
  fi
  instr=$(awk '/^summary:/ {print $2} /^totals:/ {print $2}' "$f" | tail -1)
  echo "$name $requests $instr ${non2xx:-0}" >> "$WORK/results"
}
stop() { # pid: stops a process and waits (at most 20 s) until its ports are free
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 200); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  echo "process $1 did not stop" >&2; exit 1
}
# glibc's copy and fill loops instead of `rep movsb` / `rep stosb` (header above),
# for the measured processes only, added to whatever GLIBC_TUNABLES the caller set.
TUNABLES=${GLIBC_TUNABLES:-}
if [ "${REP_STRINGS:-0}" = 1 ]; then
  REP_NOTE="on (glibc's defaults, counted per byte)"
else
  REP_NOTE="off (glibc's vector loops)"
  TUNABLES="${TUNABLES:+$TUNABLES:}glibc.cpu.x86_rep_movsb_threshold=1073741824:glibc.cpu.x86_rep_stosb_threshold=1073741824"
fi
under_callgrind() { # name command...: starts it under callgrind, prints its pid
  local name=$1; shift
  GLIBC_TUNABLES="$TUNABLES" valgrind --tool=callgrind \
    --callgrind-out-file="$WORK/$name.cg.out" "$@" > "$WORK/$name.valgrind.log" 2>&1 &
  echo $!
}

: > "$WORK/results"

# nginx: one worker, no master, in the foreground (so valgrind follows the worker).
cat > "$WORK/nginx.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
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
pid=$(under_callgrind nginx "$NGINX" -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log")
PIDS+=("$pid")
wait_http "http://127.0.0.1:$NGX/" || { cat "$WORK/nginx.valgrind.log" >&2; exit 1; }
count nginx "$pid" "http://127.0.0.1:$NGX/api/bench"
stop "$pid"

for engine in pingora hyper; do
  config "$PX" "$PX_ADMIN" "$engine" false > "$WORK/$engine.toml"
  pid=$(RUST_LOG="$PROXY_LOG" under_callgrind "bff-$engine" "$BIN" --config "$WORK/$engine.toml")
  PIDS+=("$pid")
  for _ in $(seq 1 60); do curl -s -o /dev/null "http://127.0.0.1:$PX_ADMIN/healthz" && break; sleep 1; done
  wait_http "http://127.0.0.1:$PX/" || { cat "$WORK/bff-$engine.valgrind.log" >&2; exit 1; }
  jar="$WORK/jar.$engine"
  curl -s -c "$jar" -b "$jar" -L -o /dev/null "http://127.0.0.1:$PX/bff/login?returnUrl=/"
  cookie=$(awk '$6 ~ /^__Host-Http-bff/ && $6 !~ /-login-/ { printf "%s%s=%s", sep, $6, $7; sep="; " }' "$jar")
  got=$(curl -s -H "Cookie: $cookie" -H "X-CSRF: 1" "http://127.0.0.1:$PX/api/bench")
  [ "$got" = "ok" ] || { echo "the session does not work on $engine: $got" >&2; exit 1; }
  count "bff-$engine" "$pid" "http://127.0.0.1:$PX/api/bench" "Cookie: $cookie" "X-CSRF: 1"
  got=$(curl -s "http://127.0.0.1:$PX/pub/bench")
  [ "$got" = "ok" ] || { echo "the public route does not work on $engine: $got" >&2; exit 1; }
  CG="bff-$engine" DUMP=2 count "bff-$engine-public" "$pid" "http://127.0.0.1:$PX/pub/bench"
  stop "$pid"
done

echo "machine: $(nproc) cores, $(uname -m); valgrind $(valgrind --version | sed 's/^valgrind-//'), callgrind; each proxy alone with 1 worker; wrk -t1 -c$CONNS -d$DUR after a 2 s warm-up; user-space instructions only; rep movsb/stosb $REP_NOTE"
echo
printf '| %-19s | %9s | %16s | %12s | %8s | %s\n' "target" "requests" "instructions" "instr/req" "× nginx" "non-2xx"
printf '|%s|\n' "---------------------|-----------|------------------|--------------|----------|--------"
nginx_per=$(awk '$1 == "nginx" && $2 > 0 {printf "%.0f", $3 / $2}' "$WORK/results")
while read -r name requests instr non2xx; do
  per=$(awk -v i="$instr" -v n="$requests" 'BEGIN { if (n > 0) printf "%.0f", i / n; else print "-" }')
  ratio=$(awk -v a="$per" -v b="$nginx_per" 'BEGIN { if (a == "-" || b == "") print "-"; else printf "%.2f", a / b }')
  printf '| %-19s | %9s | %16s | %12s | %8s | %s\n' "$name" "$requests" "$instr" "$per" "$ratio" "$non2xx"
done < "$WORK/results"
