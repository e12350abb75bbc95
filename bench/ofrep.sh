#!/usr/bin/env bash
# OFREP evaluation over HTTP, in one run, against one tenantd (release) with 20 flags
# (tenant and plan values, rollouts by tenant and by targeting key) and the built-in
# plans' features:
#
#   bulk      POST /ofrep/v1/evaluate/flags        every flag, 200 with its ETag
#   bulk-304  the same with If-None-Match           nothing changed: 304, no body
#   single    POST /ofrep/v1/evaluate/flags/f07     one flag
#   whoami    GET  /v1/me                           the baseline: the edge and a small answer
#
# Prints requests/s and p50/p99 for each, and each one's throughput against the baseline.
# Needs wrk and curl (Debian: apt-get install wrk curl).
# Settings: DURATION (10s), CONNECTIONS (32), THREADS (2), ROUNDS (1).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk curl; do
  command -v "$tool" >/dev/null || { echo "bench/ofrep.sh: $tool is not installed" >&2; exit 2; }
done
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-1}
ADMIN=bench-operator-key-0123456789
PORT=18321
echo "building tenantd (release)…" >&2
cargo build --release -q -p tenantd
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
TENANTD_ADMIN_KEY=$ADMIN target/release/tenantd serve --listen "127.0.0.1:$PORT" \
  --data-dir "$WORK/tenantd" --log warn >"$WORK/tenantd.log" 2>&1 &
PID=$!
for _ in $(seq 100); do curl -s -o /dev/null "127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
base="http://127.0.0.1:$PORT" auth="Authorization: Bearer $ADMIN" json='Content-Type: application/json'
curl -sf -X POST "$base/v1/plans" -H "$auth" -H "$json" -d '{"id":"bench","name":"Bench","features":["exports","sso"],
  "limits":[{"resource":"api_calls","window":"minute","limit":1000000000,"enforcement":"hard"},
  {"resource":"api_calls","window":"hour","limit":1000000000,"enforcement":"hard"}]}' >/dev/null
curl -sf -X POST "$base/v1/tenants" -H "$auth" -H "$json" \
  -d '{"id":"bench","plan":"bench","owner_email":"o@bench.test"}' >/dev/null
KEY=$(curl -sf -X POST "$base/v1/tenants/bench/keys" -H "$auth" -H "$json" -d '{"name":"wrk","role":"member"}' \
  | sed -E 's/.*"key":"([^"]+)".*/\1/')
for i in $(seq -w 1 20); do
  case $((10#$i % 4)) in
    0) spec='{"type":"boolean","default":false,"tenants":{"bench":true}}' ;;
    1) spec='{"type":"string","default":"a","plans":{"bench":"b"}}' ;;
    2) spec='{"type":"boolean","default":false,"rollout":{"percent":25,"value":true}}' ;;
    3) spec='{"type":"number","default":1,"rollout":{"percent":50,"value":2,"by":"targeting_key"}}' ;;
  esac
  curl -sf -X PUT "$base/v1/flags/f$i" -H "$auth" -H "$json" -d "$spec" >/dev/null
done
body='{"context":{"targetingKey":"usr_42"}}'
ETAG=$(curl -sf -D - -o /dev/null -X POST "$base/ofrep/v1/evaluate/flags" -H "Authorization: Bearer $KEY" \
  -H "$json" -d "$body" | awk -F': ' 'tolower($1)=="etag" {print $2}' | tr -d '\r')
[ -n "$ETAG" ] || { echo "bench/ofrep.sh: no ETag on the bulk answer" >&2; exit 1; }
# (wrk counts only statuses from 400 as errors: check once here that the 304 is one.)
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$base/ofrep/v1/evaluate/flags" -H "Authorization: Bearer $KEY" \
  -H "$json" -H "If-None-Match: $ETAG" -d "$body")
[ "$code" = 304 ] || { echo "bench/ofrep.sh: If-None-Match answered $code, not 304" >&2; exit 1; }
post() { # FILE [EXTRA-HEADER-LUA]
  printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n%s\n' \
    "'$body'" "${2:-}" >"$WORK/$1"
}
post bulk.lua
post bulk304.lua "wrk.headers[\"If-None-Match\"] = '$ETAG'"
post single.lua

. bench/wrk-lib.sh

echo "$(date -u +%FT%TZ)  $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, an API key, 20 flags + 2 plan features, $ROUNDS round(s)"
for _ in $(seq "$ROUNDS"); do
  SCRIPT= load whoami "$base/v1/me" "$PID"
  SCRIPT=$WORK/bulk.lua load bulk "$base/ofrep/v1/evaluate/flags" "$PID"
  SCRIPT=$WORK/bulk304.lua load bulk-304 "$base/ofrep/v1/evaluate/flags" "$PID"
  SCRIPT=$WORK/single.lua load single "$base/ofrep/v1/evaluate/flags/f07" "$PID"
done
printf '%-10s %12s %10s %10s %8s %10s %14s\n' request req/s p50_us p99_us non-2xx cpu_us "vs whoami"
for c in whoami bulk bulk-304 single; do
  printf '%-10s %12s %10s %10s %8s %10s %14s\n' "$c" "$(col $c 1)" "$(col $c 2)" "$(col $c 3)" "$(col $c 4)" \
    "$(col $c 5)" "$(awk -v a="$(col $c 1)" -v b="$(col whoami 1)" 'BEGIN { printf "%.2f", a / b }')"
done
