#!/usr/bin/env bash
# The tower layer's two ways to decide, in one run, on one machine: the example notes
# service (examples/notes) with
#
#   (a) the edge in process, on the tenantd catalog it shares (EdgeLayer::new);
#   (b) the edge asking a remote tenantd (EdgeLayer::remote: POST /v1/edge/decide).
#
# Both serve GET /notes to an API key of a tenant whose limits are out of reach. Prints
# requests/s and p50/p99 for each, the ratio (b)/(a), and the p50 the round trip adds.
#
# Needs wrk and curl (Debian: apt-get install wrk curl).
# Settings: DURATION (10s), CONNECTIONS (32), THREADS (2), ROUNDS (1).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk curl; do
  command -v "$tool" >/dev/null || { echo "bench/edge-remote.sh: $tool is not installed" >&2; exit 2; }
done
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-1}
ADMIN=bench-operator-key-0123456789
API_PORT=18311 LOCAL_PORT=18312 REMOTE_PORT=18313
echo "building tenantd and the notes example (release)…" >&2
cargo build --release -q -p tenantd -p tenantd-example-notes
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
wait_for() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return; sleep 0.1; done; echo "bench/edge-remote.sh: $1 does not answer" >&2; exit 1; }

TENANTD_ADMIN_KEY=$ADMIN target/release/tenantd serve --listen "127.0.0.1:$API_PORT" \
  --data-dir "$WORK/tenantd" --log warn >"$WORK/tenantd.log" 2>&1 &
PIDS+=($!)
wait_for "127.0.0.1:$API_PORT/healthz"
api="http://127.0.0.1:$API_PORT/v1" auth="Authorization: Bearer $ADMIN" json='Content-Type: application/json'
curl -sf -X POST "$api/plans" -H "$auth" -H "$json" -d '{"id":"bench","name":"Bench","limits":[
  {"resource":"api_calls","window":"minute","limit":1000000000,"enforcement":"hard"},
  {"resource":"api_calls","window":"hour","limit":1000000000,"enforcement":"hard"}]}' >/dev/null
curl -sf -X POST "$api/tenants" -H "$auth" -H "$json" \
  -d '{"id":"bench","plan":"bench","owner_email":"o@bench.test"}' >/dev/null
KEY=$(curl -sf -X POST "$api/tenants/bench/keys" -H "$auth" -H "$json" -d '{"name":"wrk","role":"member"}' \
  | sed -E 's/.*"key":"([^"]+)".*/\1/')

NOTES_LISTEN=127.0.0.1:$LOCAL_PORT TENANTD_DATABASE_URL="sqlite://$WORK/tenantd/catalog.db" \
  TENANTD_MASTER_KEY_FILE="$WORK/tenantd/master.key" NOTES_LOG=warn \
  target/release/tenantd-example-notes >"$WORK/local.log" 2>&1 &
PIDS+=($!)
NOTES_LISTEN=127.0.0.1:$REMOTE_PORT TENANTD_URL="http://127.0.0.1:$API_PORT" NOTES_LOG=warn \
  target/release/tenantd-example-notes >"$WORK/remote.log" 2>&1 &
PIDS+=($!)
for port in $LOCAL_PORT $REMOTE_PORT; do
  wait_for "127.0.0.1:$port/notes"
  curl -sf -H "Authorization: Bearer $KEY" "127.0.0.1:$port/notes" >/dev/null \
    || { echo "bench/edge-remote.sh: the notes service on $port refuses the key" >&2; exit 1; }
done

. bench/wrk-lib.sh

echo "$(date -u +%FT%TZ)  $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, GET /notes with an API key, $ROUNDS round(s)"
for _ in $(seq "$ROUNDS"); do
  load in-process "http://127.0.0.1:$LOCAL_PORT/notes"
  load remote "http://127.0.0.1:$REMOTE_PORT/notes"
done
printf '%-12s %12s %10s %10s %8s\n' layer req/s p50_us p99_us non-2xx
for c in in-process remote; do
  printf '%-12s %12s %10s %10s %8s\n' "$c" "$(col $c 1)" "$(col $c 2)" "$(col $c 3)" "$(col $c 4)"
done
awk -v b="$(col remote 1)" -v a="$(col in-process 1)" -v pb="$(col remote 2)" -v pa="$(col in-process 2)" 'BEGIN {
  printf "remote / in-process throughput: %.2f; p50 added by the round trip: %.0f us\n", b / a, pb - pa
}'
