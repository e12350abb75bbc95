#!/usr/bin/env bash
# The tenantd gateway against nginx doing the same proxying, in one run, on one machine:
#
#   (a) wrk straight to the upstream;
#   (b) wrk through nginx: proxy_pass with keep-alive upstream connections, a `map` from the
#       API key to a tenant (unknown keys get 401), the tenant set as X-Tenant-ID, and a
#       per-key `limit_req`;
#   (c) wrk through the tenantd gateway with its whole pipeline: resolve, verify the key,
#       check the role, admit and meter against a sliding minute, an hour and a month,
#       strip and set the identity headers and X-Tenant-Context, proxy.
#
# The upstream is an nginx instance of its own, answering a small JSON body. Every
# contender gets the same connections, duration, request and upstream; none is refused (the
# limits are out of reach). Prints requests/s and p50/p99 for each, the ratio (c)/(b)
# (target >= 1.0) and the p50 each proxy adds over (a) (target < 100 us for tenantd), and
# the CPU time each proxy's processes use per request (from /proc; 2 cores are shared by
# wrk, the upstream and the proxy, so a proxy's rate follows its CPU per request).
#
# Needs wrk, nginx and curl (Debian: apt-get install wrk nginx-light curl).
# Settings: DURATION (10s), CONNECTIONS (32), THREADS (2), ROUNDS (1; the contenders
# alternate within each round, and each figure is the median over rounds), TENANTD_BIN
# (a tenantd binary to use instead of building one).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk nginx curl; do
  command -v "$tool" >/dev/null || { echo "bench/gateway.sh: $tool is not installed" >&2; exit 2; }
done
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-1}
ADMIN=bench-operator-key-0123456789
UP_PORT=18301 NGINX_PORT=18302 GW_PORT=18303 API_PORT=18304
if [ -n "${TENANTD_BIN:-}" ]; then
  BIN=$TENANTD_BIN   # a binary built otherwise, e.g. with frame pointers for profiling
else
  echo "building tenantd (release)…" >&2
  cargo build --release -q
  BIN=$PWD/target/release/tenantd
fi
WORK=$(mktemp -d)
TPID=
cleanup() {
  [ -n "$TPID" ] && kill "$TPID" 2>/dev/null
  for p in "$WORK/upstream.pid" "$WORK/proxy.pid"; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# tenantd: a plan whose limits are out of reach, a tenant, a member key.
TENANTD_ADMIN_KEY=$ADMIN "$BIN" serve --listen "127.0.0.1:$API_PORT" --gateway-listen "127.0.0.1:$GW_PORT" \
  --upstream "http://127.0.0.1:$UP_PORT" --data-dir "$WORK/tenantd" --log warn >"$WORK/tenantd.log" 2>&1 &
TPID=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$API_PORT/healthz" >/dev/null && break; sleep 0.1; done
api="http://127.0.0.1:$API_PORT/v1" auth="Authorization: Bearer $ADMIN" json='Content-Type: application/json'
curl -sf -X POST "$api/plans" -H "$auth" -H "$json" -d '{"id":"bench","name":"Bench","limits":[
  {"resource":"api_calls","window":"minute","limit":1000000000,"enforcement":"hard"},
  {"resource":"api_calls","window":"hour","limit":1000000000,"enforcement":"hard"},
  {"resource":"api_calls","window":"month","limit":1000000000,"enforcement":"soft"}]}' >/dev/null
curl -sf -X POST "$api/tenants" -H "$auth" -H "$json" \
  -d '{"id":"bench","plan":"bench","owner_email":"o@bench.test"}' >/dev/null
KEY=$(curl -sf -X POST "$api/tenants/bench/keys" -H "$auth" -H "$json" -d '{"name":"wrk","role":"member"}' \
  | sed -E 's/.*"key":"([^"]+)".*/\1/')

# nginx: the upstream and the proxy are two instances, so that the proxy hands each
# request to another process, as tenantd does (one instance could answer its own upstream
# requests inside the same worker). Both run as a user would run them.
# start_nginx NAME: runs the instance whose server blocks are in $WORK/NAME.servers.
start_nginx() {
  mkdir -p "$WORK/$1"
  {
    echo "worker_processes auto;"
    echo "pid $WORK/$1.pid;"
    echo "error_log $WORK/$1/error.log warn;"
    echo "events { worker_connections 4096; }"
    echo "http {"
    echo "  access_log off;"
    for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $WORK/$1/$t;"; done
    echo "  keepalive_requests 1000000;"
    echo "  map_hash_bucket_size 128;"
    cat "$WORK/$1.servers"
    echo "}"
  } >"$WORK/$1.conf"
  nginx -c "$WORK/$1.conf" -p "$WORK/$1"
}
cat >"$WORK/upstream.servers" <<EOF
  server {
    listen 127.0.0.1:$UP_PORT;
    location / { default_type application/json; return 200 '{"ok":true,"items":[1,2,3]}'; }
  }
EOF
cat >"$WORK/proxy.servers" <<EOF
  map \$http_authorization \$tenant {
    "Bearer $KEY" bench;
    default "";
  }
  limit_req_zone \$http_authorization zone=perkey:10m rate=1000000r/s;
  upstream app {
    server 127.0.0.1:$UP_PORT;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      if (\$tenant = "") { return 401; }
      limit_req zone=perkey burst=1000000 nodelay;
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Tenant-ID \$tenant;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
EOF
start_nginx upstream
start_nginx proxy
for _ in $(seq 50); do curl -sf "127.0.0.1:$UP_PORT/" >/dev/null && break; sleep 0.1; done
for url in "127.0.0.1:$NGINX_PORT/items" "127.0.0.1:$GW_PORT/items"; do
  curl -sf -H "Authorization: Bearer $KEY" "$url" >/dev/null || { echo "bench/gateway.sh: $url does not answer" >&2; exit 1; }
done

. bench/wrk-lib.sh

echo "$(date -u +%FT%TZ)  $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, GET /items with an API key, $ROUNDS round(s)"
for r in $(seq "$ROUNDS"); do
  load direct "http://127.0.0.1:$UP_PORT/items"
  load nginx "http://127.0.0.1:$NGINX_PORT/items" $(pgrep -P "$(cat "$WORK/proxy.pid")")
  load tenantd "http://127.0.0.1:$GW_PORT/items" "$TPID"
done
printf '%-12s %12s %8s %8s %8s %14s %10s %10s\n' contender req/s p50_us p99_us non-2xx proxy_cpu_us user_us sys_us
for c in direct nginx tenantd; do
  printf '%-12s %12s %8s %8s %8s %14s %10s %10s\n' "$c" "$(col $c 1)" "$(col $c 2)" "$(col $c 3)" "$(col $c 4)" \
    "$(col $c 5)" "$(col $c 6)" "$(col $c 7)"
done
awk -v c="$(col tenantd 1)" -v b="$(col nginx 1)" -v tc="$(col tenantd 2)" -v nb="$(col nginx 2)" -v a="$(col direct 2)" 'BEGIN {
  printf "(c)/(b) throughput: %.2f   (target >= 1.0)\n", c / b
  printf "p50 added over (a): tenantd %.0f us (target < 100), nginx %.0f us\n", tc - a, nb - a
}'
