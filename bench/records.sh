#!/usr/bin/env bash
# Records read and written through tenantd's HTTP API against the same statements straight
# over sqlx, on PostgreSQL with the same row-level security, in one run on one machine:
#
#   (a) sqlx: crates/tenantd-data/examples/direct.rs sqlx-get|sqlx-put, CONNECTIONS tasks
#       on a sqlx PgPool with sqlx's defaults, each operation a transaction that sets
#       tenantd.tenant_id and the search_path with set_config, then tenantd's statement
#       (and, for a write, tenantd's storage-row update), as the tenantd_data role: the
#       application the issue compares against (target (b)/(a) >= 0.8);
#   (c) crate: the same example's get|put, tenantd's own data crate in-process (its pool,
#       which skips sqlx's ping before use, and its BEGIN sent with the set_config): what
#       the HTTP API itself costs is (b)/(c);
#   (b) HTTP: wrk with CONNECTIONS connections and an API key: the edge pipeline (key,
#       role, admission, metering), then the data crate.
#
# get: one record read again and again (GET …/records/{id}); put: a new record each time
# (POST …/records). All use a pool of POOL connections (tenantd's data_pool_size).
# Runs ROUNDS rounds, each (a), (c), (b) for get, then for put, and prints per round the
# operations/s of each, the ratios (b)/(a) and (b)/(c), and the CPU time per operation
# of the client (the sqlx client, the crate client, tenantd) and of PostgreSQL (same
# order); then the median of each ratio (one run on a shared 2-core machine varies by
# ±0.05), and GET /v1/me's rate, the HTTP path without the database.
# Needs wrk, curl and PostgreSQL: TENANTD_BENCH_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/test; a database named tenantd_bench_records is made
# there and dropped after). Settings: DURATION (10, seconds), CONNECTIONS (32), THREADS (2),
# ROUNDS (3), POOL (16).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk curl psql; do
  command -v "$tool" >/dev/null || { echo "bench/records.sh: $tool is not installed" >&2; exit 2; }
done
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
POOL=${POOL:-16}
BASE=${TENANTD_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
DB_URL="${BASE%/*}/tenantd_bench_records"
ADMIN=bench-operator-key-0123456789
PORT=18321
echo "building tenantd and the direct reader (release)…" >&2
cargo build --release -q -p tenantd
cargo build --release -q -p tenantd-data --example direct
WORK=$(mktemp -d)
TPID=
cleanup() {
  [ -n "$TPID" ] && kill "$TPID" 2>/dev/null
  wait 2>/dev/null || true
  psql -q "$BASE" -c "DROP DATABASE IF EXISTS tenantd_bench_records" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
psql -q "$BASE" -c "DROP DATABASE IF EXISTS tenantd_bench_records" >/dev/null
psql -q "$BASE" -c "CREATE DATABASE tenantd_bench_records" >/dev/null

echo "data_pool_size = $POOL" >"$WORK/tenantd.toml"
TENANTD_ADMIN_KEY=$ADMIN target/release/tenantd serve --config "$WORK/tenantd.toml" --listen "127.0.0.1:$PORT" \
  --database-url "$DB_URL" --data-dir "$WORK/tenantd" --log warn >"$WORK/tenantd.log" 2>&1 &
TPID=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
api="http://127.0.0.1:$PORT/v1" auth="Authorization: Bearer $ADMIN" json='Content-Type: application/json'
curl -sf -X POST "$api/plans" -H "$auth" -H "$json" -d '{"id":"bench","name":"Bench","limits":[
  {"resource":"api_calls","window":"hour","limit":1000000000,"enforcement":"hard"}]}' >/dev/null
curl -sf -X POST "$api/tenants" -H "$auth" -H "$json" \
  -d '{"id":"bench","plan":"bench","owner_email":"o@bench.test"}' >/dev/null
KEY=$(curl -sf -X POST "$api/tenants/bench/keys" -H "$auth" -H "$json" -d '{"name":"wrk","role":"member"}' \
  | sed -E 's/.*"key":"([^"]+)".*/\1/')
RID=$(curl -s -X POST "$api/data/collections/orders/records" -H "Authorization: Bearer $KEY" -H "$json" \
  -d '{"customer":"c-17","total":120,"status":"open","lines":[{"sku":"a","qty":2},{"sku":"b","qty":1}]}' \
  | tee "$WORK/record.json" | sed -E 's/.*"id":"(rec_[a-z0-9]+)".*/\1/')
case "$RID" in rec_*) ;; *) echo "bench/records.sh: the record was not created: $(cat "$WORK/record.json")" >&2; exit 1 ;; esac

echo "$(date -u +%FT%TZ)  $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
echo "$CONNECTIONS connections, a pool of $POOL, ${DURATION}s per run, $ROUNDS rounds"
cat >"$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"customer":"c-17","total":120,"status":"open","lines":[{"sku":"a","qty":2},{"sku":"b","qty":1}]}'
wrk.headers["Content-Type"] = "application/json"
LUA
http() { # URL [wrk args]: operations/s, non-2xx
  local url=$1; shift
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" -H "Authorization: Bearer $KEY" "$@" "$url" >"$WORK/wrk.txt"
  echo "$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt") $(awk '/Non-2xx/ {print $5}' "$WORK/wrk.txt" | grep . || echo 0)"
}
records="http://127.0.0.1:$PORT/v1/data/collections/orders/records"
# CPU time (µs) a process, or PostgreSQL's backends for the bench database, use between
# two samples: utime + stime in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# PostgreSQL's: "pid ticks" per backend, and the ticks between two such samples (a
# backend that started meanwhile counts whole; one that ended is not seen).
pg_sample() { for p in $(pgrep -f "postgres: .*tenantd_bench_records"); do echo "$p $(ticks "$p")"; done; }
pg_delta() { awk 'NR == FNR {t0[$1] = $2; next} {s += $2 - ($1 in t0 ? t0[$1] : 0)} END {print s + 0}' "$1" "$2"; }
HZ=$(getconf CLK_TCK)
# Runs "$@" in the background (its output in $WORK/run.txt); samples the CPU of process
# $1 (or of the run itself when $1 is -) and of PostgreSQL from 1 s in to 1 s before the
# end; prints "ops/s client-µs/op postgres-µs/op" (ops/s from the run's own output).
measured() {
  local pid=$1; shift
  "$@" >"$WORK/run.txt" &
  local run=$!
  [ "$pid" = - ] && pid=$run
  sleep 1
  local c0 c1; c0=$(ticks "$pid"); pg_sample >"$WORK/pg0"
  sleep $((DURATION - 2))
  c1=$(ticks "$pid"); pg_sample >"$WORK/pg1"
  wait "$run"
  local ops; ops=$(awk '/Requests\/sec/ {print $2; exit} /^[0-9.]+$/ {print; exit}' "$WORK/run.txt")
  awk -v o="$ops" -v c=$((c1 - c0)) -v p="$(pg_delta "$WORK/pg0" "$WORK/pg1")" -v hz="$HZ" -v s=$((DURATION - 2)) \
    'BEGIN { n = o * s; printf "%s %.0f %.0f\n", o, c * 1e6 / hz / n, p * 1e6 / hz / n }'
}
wrk_run() { wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" -H "Authorization: Bearer $KEY" "$@"; }
printf '%-5s %5s %11s %11s %11s %8s %8s   %s\n' op round "sqlx ops/s" "crate ops/s" "HTTP ops/s" \
  "(b)/(a)" "(b)/(c)" "CPU µs/op: sqlx client, crate client, tenantd; PostgreSQL (same order)"
direct() { measured - target/release/examples/direct "$1" "$DB_URL" bench orders "$RID" "$CONNECTIONS" "$DURATION" "$POOL"; }
for round in $(seq "$ROUNDS"); do
  for op in get put; do
    read -r SQLX SC SP < <(direct "sqlx-$op")
    read -r CRATE CC CP < <(direct "$op")
    if [ "$op" = get ]; then
      read -r HTTP HC HP < <(measured "$TPID" wrk_run "$records/$RID")
    else
      read -r HTTP HC HP < <(measured "$TPID" wrk_run -s "$WORK/post.lua" "$records")
    fi
    NON2XX=$(awk '/Non-2xx/ {print $5}' "$WORK/run.txt" | grep . || echo 0)
    [ "$NON2XX" = 0 ] || echo "bench/records.sh: $NON2XX answers of $op were not 2xx" >&2
    awk -v op="$op" -v r="$round" -v a="$SQLX" -v c="$CRATE" -v b="$HTTP" -v ac="$SC" -v cc="$CC" -v bc="$HC" \
      -v ap="$SP" -v cp="$CP" -v bp="$HP" \
      'BEGIN { printf "%-5s %5s %11.0f %11.0f %11.0f %8.2f %8.2f   %s, %s, %s; %s, %s, %s\n",
        op, r, a, c, b, b / a, b / c, ac, cc, bc, ap, cp, bp }' | tee -a "$WORK/rounds.txt"
  done
done
for op in get put; do
  for col in 6 7; do
    awk -v op="$op" -v c="$col" '$1 == op {print $c}' "$WORK/rounds.txt" | sort -n \
      | awk -v op="$op" -v name="$([ $col = 6 ] && echo '(b)/(a), HTTP against sqlx' || echo '(b)/(c), HTTP against the crate')" \
        '{v[NR] = $1} END {m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
        printf "%s: median %s %.2f over %d rounds (lowest %.2f, highest %.2f)\n", op, name, m, NR, v[1], v[NR]}'
  done
done
# The HTTP path without the database: the edge pipeline and GET /v1/me.
read -r ME MC _ < <(measured "$TPID" wrk_run "http://127.0.0.1:$PORT/v1/me")
printf 'GET /v1/me (no database): %.0f requests/s, tenantd %s µs/request\n' "$ME" "$MC"
echo "target: (b)/(a) >= 0.8"
