#!/usr/bin/env bash
# Fuzzes tenantd's HTTP API from its own OpenAPI document with schemathesis (from PyPI),
# every check on (schemathesis's default), twice: as the operator and as a tenant's
# owner key. It builds and starts a debug server of its own on a free port, with a fresh
# data directory, and exits non-zero on any failure.
#
#   bash fuzz/schemathesis.sh            # about 2 × FUZZ_SECONDS (default 90) of fuzzing
#   FUZZ_SECONDS=600 bash fuzz/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${FUZZ_SECONDS:-90}"
SEED="${FUZZ_SEED:-}"
ST_VERSION="4.32.5"

if ! command -v st >/dev/null 2>&1 || [ "$(st --version 2>/dev/null | awk '{print $3}')" != "$ST_VERSION" ]; then
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
fi
cargo build --quiet --bin tenantd

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
admin="tdo_fuzz_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
TENANTD_ADMIN_KEY="$admin" ./target/debug/tenantd serve --listen "127.0.0.1:$port" \
  --data-dir "$work/data" --database-url "sqlite://$work/data/catalog.db" \
  --config fuzz/tenantd.toml >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -sf "$url/healthz" >/dev/null && break; sleep 0.1; done

# A tenant whose id the runs use for every {id}, on a plan without limits (the fuzzer's
# thousands of requests would otherwise meet one 429), and its owner's key.
curl -sf -X POST "$url/v1/plans" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d '{"id": "unlimited", "name": "Unlimited", "limits": []}' >/dev/null
curl -sf -X POST "$url/v1/tenants" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d '{"id": "acme", "plan": "unlimited", "owner_email": "owner@acme.test"}' >/dev/null
key="$(curl -sf -X POST "$url/v1/tenants/acme/keys" -H "Authorization: Bearer $admin" \
  -H 'Content-Type: application/json' -d '{"name": "fuzz", "role": "owner"}' \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')"

status=0
# The tenant first: the operator's run may suspend or delete the tenant.
for who in tenant operator; do
  token="$admin"; [ "$who" = tenant ] && token="$key"
  extra=()
  # The operator names the tenant of the data plane with X-Tenant-ID; a key's own tenant is its.
  [ "$who" = operator ] && extra+=(-H "X-Tenant-ID: acme")
  # A deleted tenant, with all that is under it, stays readable to the operator through
  # its 30 days of retention so that it can be restored: by design, not a resource still
  # there after its delete. The tenant's own run keeps the check, for every resource.
  # (Every check is on unless excluded; `--checks all` would also override the few
  # the configuration turns off for one operation.)
  [ "$who" = operator ] && extra+=(--exclude-checks use_after_free)
  [ -n "$SEED" ] && extra+=(--seed "$SEED")
  # A claim may long-poll for up to 30 s (wait_seconds), hence the request timeout.
  echo "== schemathesis as the $who (${SECONDS_EACH}s)"
  st --config-file fuzz/schemathesis.toml run "$url/openapi.json" \
    -H "Authorization: Bearer $token" "${extra[@]}" \
    --max-time "$SECONDS_EACH" --request-timeout 40 --phases examples,coverage,fuzzing,stateful \
    --workers 1 --no-color --report junit --report-dir "$work/report-$who" || status=1
done
if [ "$status" -ne 0 ]; then
  echo "== the server's log (last 40 lines)"
  tail -n 40 "$work/server.log"
fi
exit "$status"
