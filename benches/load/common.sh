# Shared by benches/load/run.sh and memory.sh (sourced, from the checkout's root):
# installs wrk, nginx and curl (Debian packages) when missing, raises the open-file
# limit, runs scripts/setup, and picks the binary to measure: $BFF_BIN when set (an
# older commit's build, to compare in one run), else this checkout's release build.
# Sets NGINX and BIN; defines wait_http, start_upstream and bench_config.

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
if [ -n "${BFF_BIN:-}" ]; then
  BIN=$BFF_BIN
else
  cargo build --release --bin bff-proxy >&2
  BIN=${CARGO_TARGET_DIR:-target}/release/bff-proxy
fi

wait_http() { # url: waits up to 10 s for any HTTP answer
  for _ in $(seq 1 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "no answer from $1" >&2; return 1
}

start_upstream() { # port dir: the upstream every row shares, an nginx of one worker
  # answering "ok" at 127.0.0.1:port (pid in dir/nginx-up.pid)
  cat > "$2/nginx-up.conf" <<CONF
worker_processes 1;
pid $2/nginx-up.pid;
error_log $2/nginx-up-error.log;
daemon on;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$1; location / { return 200 "ok\n"; } }
}
CONF
  "$NGINX" -c "$2/nginx-up.conf" -p "$2" -e "$2/nginx-up-error.log"
  wait_http "http://127.0.0.1:$1/"
}

bench_config() { # listen admin engine dev_idp threads [extra [session] lines]: a
  # bff-proxy config of the measured stack (the script sets PX, IDP, UP and KEY):
  # public at PX, the IdP at IDP, /api/ on the upstream at UP, tokens of an hour.
  cat <<EOF
[server]
listen = "127.0.0.1:$1"
public_url = "http://127.0.0.1:$PX"
admin_listen = "127.0.0.1:$2"
engine = "$3"
threads = $5
drain_delay = "0s"
[oidc]
issuer = "http://127.0.0.1:$IDP"
client_id = "bench"
client_secret = "bench-secret"
scopes = ["openid", "offline_access"]
[session]
keys = ["$KEY"]
${6:-}
[dev]
idp = $4
access_token_lifetime = "1h"
[[routes]]
path = "/api/"
upstream = "http://127.0.0.1:$UP"
EOF
}
