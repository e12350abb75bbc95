#!/usr/bin/env bash
# Webhooks end to end, on one machine: events through the outbox to a local receiver.
#
#   (a) the receiver alone: POSTs/s it takes from SENDERS connections (the baseline: what
#       the receiver, a Python ThreadingHTTPServer, can take at all);
#   (b) steady: SENDERS connections create API keys in TENANTS tenants for DURATION
#       seconds, each answered key a `key.created` event that each tenant's webhook gets.
#       Prints events/s acknowledged, deliveries/s (from the first acknowledgement to
#       the last delivery), and p50/p99 from an event's acknowledgement (its commit) to
#       its arrival at the receiver;
#   (c) drain: every webhook replays everything since the start at once; prints
#       deliveries/s until the receiver has them all.
#
# Needs curl and python3. Settings: DURATION (10), TENANTS (8), SENDERS (4),
# DATABASE_URL (a PostgreSQL database to use; SQLite otherwise), TENANTD_BIN (a tenantd
# binary instead of building one), WORKERS and PER_ENDPOINT ([webhooks], defaults 8 and 2).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in curl python3; do
  command -v "$tool" >/dev/null || { echo "bench/webhooks.sh: $tool is not installed" >&2; exit 2; }
done
DURATION=${DURATION:-10}
TENANTS=${TENANTS:-8}
SENDERS=${SENDERS:-4}
WORKERS=${WORKERS:-8}
PER_ENDPOINT=${PER_ENDPOINT:-2}
ADMIN=bench-operator-key-0123456789
RECV_PORT=18331 API_PORT=18332
if [ -n "${TENANTD_BIN:-}" ]; then
  BIN=$TENANTD_BIN
else
  echo "building tenantd (release)…" >&2
  cargo build --release -q -p tenantd
  BIN=target/release/tenantd
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
wait_for() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return; sleep 0.1; done; echo "bench/webhooks.sh: $1 does not answer" >&2; exit 1; }
py() { python3 bench/webhooks.py "$@"; }

python3 bench/webhooks.py receive "$RECV_PORT" "$WORK/arrivals" &
PIDS+=($!)
printf '[webhooks]\nallow_private_networks = true\nworkers = %s\nper_endpoint = %s\n' "$WORKERS" "$PER_ENDPOINT" >"$WORK/tenantd.toml"
DB_ARGS=()
[ -n "${DATABASE_URL:-}" ] && DB_ARGS=(--database-url "$DATABASE_URL")
TENANTD_ADMIN_KEY=$ADMIN "$BIN" serve --config "$WORK/tenantd.toml" --listen "127.0.0.1:$API_PORT" \
  --data-dir "$WORK/tenantd" "${DB_ARGS[@]}" --log warn >"$WORK/tenantd.log" 2>&1 &
PIDS+=($!)
wait_for "127.0.0.1:$API_PORT/healthz"
wait_for "127.0.0.1:$RECV_PORT/"
api="http://127.0.0.1:$API_PORT/v1" auth="Authorization: Bearer $ADMIN" json='Content-Type: application/json'
curl -sf -X POST "$api/plans" -H "$auth" -H "$json" -d '{"id":"bench","name":"Bench","limits":[]}' >/dev/null
HOOKS=()
for t in $(seq 0 $((TENANTS - 1))); do
  curl -sf -X POST "$api/tenants" -H "$auth" -H "$json" \
    -d "{\"id\":\"t$t\",\"plan\":\"bench\",\"owner_email\":\"o@t$t.test\"}" >/dev/null
  HOOKS+=("$(curl -sf -X POST "$api/tenants/t$t/webhooks" -H "$auth" -H "$json" \
    -d "{\"url\":\"http://127.0.0.1:$RECV_PORT/hook\",\"event_types\":[\"key.created\"]}" |
    sed -E 's/.*"id":"(wh_[a-z0-9]+)".*/\1/')")
done
START=$(date -u +%FT%TZ)
sleep 1

echo "$(date -u +%FT%TZ)  $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
CATALOG=SQLite
[ -n "${DATABASE_URL:-}" ] && CATALOG=PostgreSQL
echo "catalog: $CATALOG; $TENANTS tenants, one webhook each; $SENDERS senders; workers $WORKERS, per_endpoint $PER_ENDPOINT"
echo "(a) receiver alone: $(py direct "http://127.0.0.1:$RECV_PORT/hook" "$SENDERS" 3) POSTs/s"
: >"$WORK/arrivals"
T0=$(date +%s.%N)
PRODUCED=$(py produce "$api" "$ADMIN" "$TENANTS" "$SENDERS" "$DURATION" "$WORK/acks")
ACKED=$(wc -l <"$WORK/acks")
for _ in $(seq 1200); do
  read -r GOT MISSING RATE P50 P99 < <(py report "$WORK/acks" "$WORK/arrivals" "$T0")
  [ "$MISSING" -eq 0 ] && break
  sleep 0.1
done
echo "(b) steady: $PRODUCED events/s acknowledged ($ACKED in ${DURATION}s); $GOT delivered ($MISSING missing) at $RATE/s; commit to delivery p50 ${P50} ms, p99 ${P99} ms"

T2=$(date +%s.%N)
QUEUED=0
for t in $(seq 0 $((TENANTS - 1))); do
  n=$(curl -sf -X POST "$api/tenants/t$t/webhooks/${HOOKS[$t]}/replay" -H "$auth" -H "$json" \
    -d "{\"since\":\"$START\"}" | sed -E 's/.*"deliveries":([0-9]+).*/\1/')
  QUEUED=$((QUEUED + n))
done
for _ in $(seq 1200); do
  read -r N LAST < <(awk -v t2="$T2" '$1 >= t2 { n++; if ($1 > last) last = $1 } END { printf "%d %.6f\n", n, last }' "$WORK/arrivals")
  [ "$N" -ge "$QUEUED" ] && break
  sleep 0.1
done
echo "(c) drain: $QUEUED deliveries queued at once by replays; $N arrived at $(python3 -c "print(f'{$N / ($LAST - $T2):.0f}')")/s"
