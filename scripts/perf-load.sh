#!/usr/bin/env bash
# perf-load.sh — the S0 entry point: run loadtest/k6/perf-load.js against a running gateway.
# Mints a development token when ACCESS_TOKEN is unset, installs k6 when missing, and exits with
# k6's own status (non-zero when a threshold failed).
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: [ACCESS_TOKEN=...] [VAR=value ...] bash scripts/perf-load.sh [k6 run options]

Runs the S0 pub/sub load scenario (loadtest/k6/perf-load.js) against the gateway.

Env (all optional):
  ACCESS_TOKEN   JWT for the gateway (default: minted by scripts/gen-jwt.sh user-1)
  GATEWAY_URL    default http://localhost:8080
  SUBJECT        default storm.events (ignored when CHANNEL_ID is set)
  CHANNEL_ID     the channel path end to end: publishers POST /api/v1/channels/ID/messages
                 (gateway → messages → Postgres → Redis), subscribers use /ws?channel_id=ID
  DURATION       default 30s (chaos: 60s)
  PUB_VUS        publisher VUs, default 5 (chaos: 100)
  WS_VUS         WebSocket VUs, default 5 (chaos: 100)
  PUB_RATE       POSTs per second per publisher VU, default 10 (chaos: 50)
  MODE           baseline | chaos
  THRESH_FAIL    max HTTP error rate, default 0.01 (chaos: 0.10)
  THRESH_P95     max HTTP p95 in ms, default 250 (chaos: 500)
  WS_LATENCY     measure delivery latency per frame (default: on in baseline, off in chaos)
  RESULTS_DIR    where the JSON summary goes (default loadtest/results)
  SUMMARY_JSON   exact path of the JSON summary (overrides RESULTS_DIR)

Examples:
  ACCESS_TOKEN=$(bash scripts/gen-jwt.sh user-1) bash scripts/perf-load.sh
  MODE=chaos DURATION=5m PUB_VUS=100 WS_VUS=100 PUB_RATE=50 bash scripts/perf-load.sh
USAGE
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
esac

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$STORM_ROOT"

if [[ -z ${ACCESS_TOKEN:-} ]]; then
  ACCESS_TOKEN=$(bash scripts/gen-jwt.sh user-1)
  if [[ -n ${JWT_SECRET:-} ]]; then signed_with=JWT_SECRET; else signed_with=dev-secret; fi
  log "ACCESS_TOKEN not set: using a token for user-1 signed with $signed_with"
fi
export ACCESS_TOKEN

# Each VU holds sockets; chaos mode (200 VUs, fast reconnects) goes past the usual 1024 default.
raise_nofile
prepare_k6

# k6 sees this process's environment as __ENV, so every variable above passes through as is.
exec k6 run "$@" loadtest/k6/perf-load.js
