#!/usr/bin/env bash
# k6-run.sh — run one of the bundled k6 scripts against the running stack, for the scenarios that
# need a tenant token (the S2 ones: call-state-updates, reporting-endpoints, redis-pubsub).
# Mints TOKEN when it is unset, installs k6 when missing, sets the service URLs' defaults, and exits
# with k6's own status (99 when a threshold failed).
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: [TOKEN=...] [VAR=value ...] bash scripts/k6-run.sh SCRIPT [k6 run options]

Runs `k6 run [k6 run options] SCRIPT`, e.g. loadtest/k6/call-state-updates.js.

Env (all optional; every other variable passes through to the script as __ENV):
  TOKEN         JWT for the services (default: minted by
                scripts/gen-jwt.sh user-1 --tenant $TENANT_ID, signed with JWT_SECRET or dev-secret)
  TENANT_ID     the tenant of a minted TOKEN (default 00000000-0000-0000-0000-000000000000,
                a tenant that scripts/seed-calls.sh fills)
  API_URL       the messages service (default http://127.0.0.1:8081)
  GATEWAY_URL   the gateway (default http://127.0.0.1:8080)
  RESULTS_DIR   where the JSON summary goes (default loadtest/results)
  SUMMARY_JSON  exact path of the JSON summary (overrides RESULTS_DIR)

Examples:
  bash scripts/k6-run.sh loadtest/k6/call-state-updates.js
  RATE=100 DURATION=10s bash scripts/k6-run.sh loadtest/k6/reporting-endpoints.js --quiet
  SUBSCRIBERS=20 MESSAGES_PER_SECOND=50 bash scripts/k6-run.sh loadtest/k6/redis-pubsub.js
USAGE
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
esac

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$STORM_ROOT"

script=$1
shift
[[ -f $script ]] || { echo "k6-run.sh: no such script '$script' (see --help)" >&2; exit 2; }

TENANT_ID=${TENANT_ID:-00000000-0000-0000-0000-000000000000}
if [[ -z ${TOKEN:-} ]]; then
  TOKEN=$(bash scripts/gen-jwt.sh user-1 --tenant "$TENANT_ID")
  if [[ -n ${JWT_SECRET:-} ]]; then signed_with=JWT_SECRET; else signed_with=dev-secret; fi
  log "TOKEN not set: using a token for user-1 of tenant $TENANT_ID signed with $signed_with"
fi
export TOKEN
export API_URL=${API_URL:-http://127.0.0.1:8081}
export GATEWAY_URL=${GATEWAY_URL:-http://127.0.0.1:8080}

# Hundreds of WebSocket subscribers go past the usual 1024 open files.
raise_nofile
prepare_k6

exec k6 run "$@" "$script"
