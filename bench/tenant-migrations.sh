#!/usr/bin/env bash
# How long `tenantd migrate --tenants` takes for N tenant schemas (default 1,000) on
# PostgreSQL: each schema is created and brought from nothing to the newest data-plane
# migration (its tables, indexes, row-level security and grants), CONCURRENCY at a time.
# Then the same command again, which has nothing left to do (what a resumed run costs).
#
# The placements are written straight into the placement table (as a crash after
# placing, before creating, would leave them), so the command does all the work.
# Needs psql and PostgreSQL: TENANTD_BENCH_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/test; a database named tenantd_bench_migrations is
# made there and dropped after). Settings: TENANTS (1000), CONCURRENCY ("1 4 8 16").
set -euo pipefail
cd "$(dirname "$0")/.."
command -v psql >/dev/null || { echo "bench/tenant-migrations.sh: psql is not installed" >&2; exit 2; }
TENANTS=${TENANTS:-1000}
CONCURRENCY=${CONCURRENCY:-"1 4 8 16"}
BASE=${TENANTD_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
DB=tenantd_bench_migrations
DB_URL="${BASE%/*}/$DB"
echo "building tenantd (release)…" >&2
cargo build --release -q -p tenantd
WORK=$(mktemp -d)
cleanup() {
  psql -q "$BASE" -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "$(date -u +%FT%TZ)  $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
echo "$TENANTS tenant schemas"
for c in $CONCURRENCY; do
  psql -q "$BASE" -c "DROP DATABASE IF EXISTS $DB" >/dev/null
  psql -q "$BASE" -c "CREATE DATABASE $DB" >/dev/null
  # The catalog, the shared tables and the placement table.
  target/release/tenantd migrate --tenants --database-url "$DB_URL" --data-dir "$WORK" 2>/dev/null
  psql -q "$DB_URL" -c "INSERT INTO tenant_data.placements (tenant_id, tier, location, state, updated_at)
    SELECT 't' || n, 'schema', 'schema:tenant_t' || n, 'placed', 0 FROM generate_series(1, $TENANTS) n" >/dev/null
  start=$(date +%s.%N)
  target/release/tenantd migrate --tenants --concurrency "$c" --database-url "$DB_URL" --data-dir "$WORK" \
    2>"$WORK/first.log"
  first=$(echo "$(date +%s.%N) - $start" | bc)
  start=$(date +%s.%N)
  target/release/tenantd migrate --tenants --concurrency "$c" --database-url "$DB_URL" --data-dir "$WORK" \
    2>"$WORK/again.log"
  again=$(echo "$(date +%s.%N) - $start" | bc)
  schemas=$(psql -tA "$DB_URL" -c "SELECT COUNT(*) FROM pg_namespace WHERE nspname LIKE 'tenant\_t%'")
  printf 'concurrency %-3s  %s schemas created and migrated in %6.1f s (%5.1f ms each); again: %5.1f s\n' \
    "$c" "$schemas" "$first" "$(echo "$first * 1000 / $TENANTS" | bc -l)" "$again"
  tail -1 "$WORK/first.log" | sed 's/^/    /'
  tail -1 "$WORK/again.log" | sed 's/^/    /'
done
