#!/usr/bin/env bash
# Admission throughput of one tenantd node with counters in Redis against the same node
# with in-process counters, in the same run: the same API key, plan, route, connections
# and duration. Every request is admitted (the plan's limits are far out of reach), so
# both modes do the full decision: resolve, verify the key, check the role, admit and
# meter against a sliding minute, an hour and a month.
#
# Needs wrk and curl (Debian: apt-get install wrk curl) and a Redis at REDIS_URL
# (default redis://127.0.0.1:6379). Settings: DURATION (10s), CONNECTIONS (32),
# THREADS (2). Prints requests/s and latency for each mode and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk curl; do
  command -v "$tool" >/dev/null || { echo "bench/limits-redis.sh: $tool is not installed" >&2; exit 2; }
done
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
ADMIN=bench-operator-key-0123456789
echo "building tenantd (release)…" >&2
cargo build --release -q
BIN=target/release/tenantd
WORK=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT

# run MODE PORT [serve flags…]: starts a node, makes a tenant and key, loads it with wrk.
run() {
  local mode=$1 port=$2; shift 2
  mkdir -p "$WORK/$mode"
  TENANTD_ADMIN_KEY=$ADMIN "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$WORK/$mode" \
    --log warn "$@" >"$WORK/$mode.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  local api="http://127.0.0.1:$port/v1" auth="Authorization: Bearer $ADMIN" json='Content-Type: application/json'
  curl -sf -X POST "$api/plans" -H "$auth" -H "$json" -d '{"id":"bench","name":"Bench","limits":[
    {"resource":"api_calls","window":"minute","limit":1000000000,"enforcement":"hard"},
    {"resource":"api_calls","window":"hour","limit":1000000000,"enforcement":"hard"},
    {"resource":"api_calls","window":"month","limit":1000000000,"enforcement":"soft"}]}' >/dev/null
  curl -sf -X POST "$api/tenants" -H "$auth" -H "$json" \
    -d '{"id":"bench","plan":"bench","owner_email":"o@bench.test"}' >/dev/null
  local key
  key=$(curl -sf -X POST "$api/tenants/bench/keys" -H "$auth" -H "$json" -d '{"name":"wrk","role":"member"}' \
    | sed -E 's/.*"key":"([^"]+)".*/\1/')
  curl -sf "$api/me" -H "Authorization: Bearer $key" >/dev/null
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "Authorization: Bearer $key" "$api/me" \
    >"$WORK/$mode.wrk"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  local rps p50 p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/$mode.wrk")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/$mode.wrk")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/$mode.wrk")
  non2xx=$(awk '/Non-2xx/ {print $5}' "$WORK/$mode.wrk")
  printf '%-12s %12s req/s   p50 %8s   p99 %8s   non-2xx %s\n' "$mode" "$rps" "$p50" "$p99" "${non2xx:-0}"
  echo "$rps" >"$WORK/$mode.rps"
}

echo "$(date -u +%FT%TZ)  $(nproc) cores  wrk -t$THREADS -c$CONNECTIONS -d$DURATION, GET /v1/me with an API key"
run in-process 18181
run redis 18182 --redis-url "$REDIS_URL" --config <(printf 'redis_prefix = "bench_%s:"\n' "$$")
awk -v a="$(cat "$WORK/redis.rps")" -v b="$(cat "$WORK/in-process.rps")" \
  'BEGIN { printf "redis / in-process throughput: %.2f×\n", a / b }'
