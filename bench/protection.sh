#!/usr/bin/env bash
# What encryption at rest costs, and how fast an export is, in one run on one machine:
#
#   get/put   records through the HTTP API (GET …/records/{id} of one record; POST a new
#             one each time) against two tenantd servers (release) on PostgreSQL, alike
#             but for encrypt_data: "on" seals every document under the tenant's data key
#             (AES-256-GCM), "off" stores it in the clear. Runs alternate on, off per round;
#             prints requests/s, p50/p99 and tenantd's CPU per request, and on/off
#             (target >= 0.9).
#   export    the "on" server's tenant "big" with RECORDS records (default 100,000) and
#             BLOB_MIB MiB of incompressible blobs (default 1024, in 64 MiB blobs): the time
#             from POST …/exports to done, and MB/s of tenant data (records' JSON + blobs)
#             and of archive written.
# Needs wrk, curl, psql and PostgreSQL: TENANTD_BENCH_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/test; databases tenantd_bench_prot_on and _off are
# made there and dropped after). Settings: DURATION (10, seconds), CONNECTIONS (32),
# THREADS (2), ROUNDS (3), RECORDS, BLOB_MIB.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk curl psql; do
  command -v "$tool" >/dev/null || { echo "bench/protection.sh: $tool is not installed" >&2; exit 2; }
done
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
RECORDS=${RECORDS:-100000}
BLOB_MIB=${BLOB_MIB:-1024}
BASE=${TENANTD_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
ADMIN=bench-operator-key-0123456789
echo "building tenantd (release)…" >&2
cargo build --release -q -p tenantd
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for m in on off; do psql -q "$BASE" -c "DROP DATABASE IF EXISTS tenantd_bench_prot_$m WITH (FORCE)" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
json='Content-Type: application/json' auth="Authorization: Bearer $ADMIN"
declare -A URL PID
port=18331
for m in on off; do
  psql -q "$BASE" -c "DROP DATABASE IF EXISTS tenantd_bench_prot_$m WITH (FORCE)" -c "CREATE DATABASE tenantd_bench_prot_$m"
  enc=$([ $m = on ] && echo true || echo false)
  mkdir -p "$WORK/$m"
  printf 'encrypt_data = %s\n' "$enc" >"$WORK/$m/tenantd.toml"
  TENANTD_ADMIN_KEY=$ADMIN TENANTD_MASTER_KEY=$(head -c32 /dev/urandom | base64) target/release/tenantd serve \
    --config "$WORK/$m/tenantd.toml" --listen "127.0.0.1:$port" --data-dir "$WORK/$m" \
    --database-url "${BASE%/*}/tenantd_bench_prot_$m" --log warn >"$WORK/$m.log" 2>&1 &
  PID[$m]=$!; PIDS+=("$!"); URL[$m]="http://127.0.0.1:$port"; port=$((port + 1))
done
for m in on off; do
  for _ in $(seq 200); do curl -s -o /dev/null "${URL[$m]}/healthz" && break; sleep 0.1; done
  curl -sf -X POST "${URL[$m]}/v1/plans" -H "$auth" -H "$json" -d '{"id":"bench","name":"Bench","limits":[
    {"resource":"api_calls","window":"minute","limit":1000000000,"enforcement":"hard"},
    {"resource":"api_calls","window":"hour","limit":1000000000,"enforcement":"hard"}]}' >/dev/null
  for t in bench big; do
    curl -sf -X POST "${URL[$m]}/v1/tenants" -H "$auth" -H "$json" -d "{\"id\":\"$t\",\"plan\":\"bench\",\"owner_email\":\"o@$t.test\"}" >/dev/null
  done
done
key() { curl -sf -X POST "$1/v1/tenants/$2/keys" -H "$auth" -H "$json" -d '{"name":"wrk","role":"admin"}' | sed -E 's/.*"key":"([^"]+)".*/\1/'; }
doc='{"customer":"Ada Lovelace","email":"ada@example.test","items":[{"sku":"A-1","qty":2,"price":"9.99"},{"sku":"B-7","qty":1,"price":"24.00"}],"note":"leave at the door"}'
declare -A KEYS REC
for m in on off; do
  KEYS[$m]=$(key "${URL[$m]}" bench)
  REC[$m]=$(curl -sf -X POST "${URL[$m]}/v1/data/collections/orders/records" -H "Authorization: Bearer ${KEYS[$m]}" \
    -H "$json" -d "$doc" | sed -E 's/.*"id":"([^"]+)".*/\1/')
done
printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' "'$doc'" >"$WORK/put.lua"

. bench/wrk-lib.sh
DURATION="${DURATION}s"
echo "$(date -u +%FT%TZ)  $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, an API key, PostgreSQL, $ROUNDS round(s), a ${#doc}-byte document"
for _ in $(seq "$ROUNDS"); do
  for m in on off; do
    KEY=${KEYS[$m]} SCRIPT= load "get-$m" "${URL[$m]}/v1/data/collections/orders/records/${REC[$m]}" "${PID[$m]}"
  done
  for m in on off; do
    KEY=${KEYS[$m]} SCRIPT=$WORK/put.lua load "put-$m" "${URL[$m]}/v1/data/collections/orders/records" "${PID[$m]}"
  done
done
printf '%-8s %12s %10s %10s %8s %10s\n' run req/s p50_us p99_us non-2xx cpu_us
for c in get-on get-off put-on put-off; do
  printf '%-8s %12s %10s %10s %8s %10s\n' "$c" "$(col $c 1)" "$(col $c 2)" "$(col $c 3)" "$(col $c 4)" "$(col $c 5)"
done
for op in get put; do
  echo "$op on/off: $(awk -v a="$(col "$op-on" 1)" -v b="$(col "$op-off" 1)" 'BEGIN { printf "%.3f", a / b }') (target >= 0.9)"
done

# Export throughput: RECORDS records and BLOB_MIB MiB of blobs in tenant "big" ("on").
base=${URL[on]} BIG=$(key "${URL[on]}" big)
cat >"$WORK/fill.lua" <<LUA
wrk.method = "POST"
wrk.body = '$doc'
wrk.headers["Content-Type"] = "application/json"
local n = 0
function response(status) n = n + 1; if n >= $(( RECORDS / THREADS )) then wrk.thread:stop() end end
LUA
echo "filling: $RECORDS records…" >&2
# (wrk's threads stop at their count, but wrk itself waits out -d: it is stopped once the
# rows are there.)
wrk -t"$THREADS" -c"$CONNECTIONS" -d3600s -H "Authorization: Bearer $BIG" -s "$WORK/fill.lua" \
  "$base/v1/data/collections/orders/records" >/dev/null &
fill=$!
count() { psql -qtA "${BASE%/*}/tenantd_bench_prot_on" -c "SELECT COUNT(*) FROM tenant_data.records WHERE tenant_id = 'big'"; }
until [ "$(count)" -ge "$RECORDS" ]; do sleep 1; done
kill -INT "$fill" 2>/dev/null || true
wait "$fill" 2>/dev/null || true
blobs=$((BLOB_MIB / 64)); [ "$blobs" -ge 1 ] || blobs=1
echo "filling: $blobs blobs of 64 MiB…" >&2
head -c $((64 << 20)) /dev/urandom >"$WORK/blob.bin"
for i in $(seq "$blobs"); do
  curl -sf -X PUT "$base/v1/data/blobs/bulk/$i.bin" -H "Authorization: Bearer $BIG" -H 'Content-Type: application/octet-stream' \
    --data-binary @"$WORK/blob.bin" >/dev/null
done
rm -f "$WORK/blob.bin"
t0=$(date +%s.%N)
eid=$(curl -sf -X POST "$base/v1/tenants/big/exports" -H "$auth" -d '{}' -H "$json" | sed -E 's/.*"export_id":"([^"]+)".*/\1/')
while :; do
  s=$(curl -sf "$base/v1/tenants/big/exports/$eid" -H "$auth")
  case "$s" in *'"state":"done"'*) break ;; *'"state":"failed"'*) echo "export failed: $s" >&2; exit 1 ;; esac
  sleep 0.2
done
t1=$(date +%s.%N)
records=$(echo "$s" | sed -E 's/.*"records\/orders.ndjson":([0-9]+).*/\1/')
size=$(echo "$s" | sed -E 's/.*"size_bytes":([0-9]+).*/\1/')
data=$(( records * (${#doc} + 120) + blobs * (64 << 20) ))
awk -v t0="$t0" -v t1="$t1" -v d="$data" -v s="$size" -v r="$records" -v b="$blobs" 'BEGIN {
  t = t1 - t0
  printf "export: %d records + %d x 64 MiB blobs in %.1f s: %.1f MB/s of tenant data (~%.0f MB), archive %.0f MB at %.1f MB/s\n",
    r, b, t, d / t / 1e6, d / 1e6, s / 1e6, s / t / 1e6 }'
