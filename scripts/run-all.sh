#!/usr/bin/env bash
# run-all.sh — every load scenario of loadtest/scenarios.toml against the native stack, REPEATS
# times each, then loadtest/BASELINES.md written from those runs by loadtest/baselines.py.
# This script owns the surroundings (arguments, the stack, k6, the open-files limit); the scenarios,
# the runs and the report are baselines.py's. The stack is left as found: started here only when
# it was not ready, and stopped again at the end.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/run-all.sh [--quick | --list]

Runs `storm-loadgen calibrate` once (the generator's ceiling), then every scenario of
loadtest/scenarios.toml REPEATS times against the gateway at GATEWAY_URL, keeps every result under
loadtest/results/<UTC time>/ (not committed), and rewrites loadtest/BASELINES.md from them: one
table per source system (source figure, target, our median and min–max, pass/fail), the generator
ceiling, CPU per run, the machine, commit, date and exact commands. The hand-written notes between
the notes markers of BASELINES.md are kept. About 85 minutes with REPEATS=3, 55 of them the S1
and S3 k6 ramps (the longest run once each: `repeats` in scenarios.toml). S2 and S4 need the
messages, chat and writer services too, S1 the interceptor-overhead server (storm-interceptors):
`scripts/stack.sh up` starts them all.
Exit 0 when every run completed — a missed target is a "fail" in the table, not an error — and 1
when a run failed (non-zero exit), timed out or wrote no result (BASELINES.md is then left as it was).

  --quick   CI smoke: one run per scenario, a few seconds each, small counts. Writes
            loadtest/results/<time>-quick/BASELINES.quick.md, never loadtest/BASELINES.md. Exits 1
            if a run failed or shows a 5xx, a lost or duplicated frame, or a transport error; no
            latency or throughput assertion.
  --list    print the scenarios (name, source, tool, what) and exit
  -h, --help

The stack: unless RUN_ALL_NO_STACK=1, when `scripts/stack.sh status` is not all ready,
`scripts/stack.sh up` starts it (STACK_NO_BUILD, STACK_BIN_DIR, STACK_DIR, GATEWAY_HTTP_ADDR, … are
honoured) and `scripts/stack.sh down` stops it when this script ends (RUN_ALL_KEEP_STACK=1 keeps
it). A stack that was already running is left running.

Env:
  GATEWAY_URL          the gateway (default http://127.0.0.1:8080)
  CHAT_URL             the chat service, for the S4 scenarios (default http://127.0.0.1:8082)
  CHAT_PID             its pid, for its CPU share per S4 run (default: STACK_DIR/chat.pid)
  INTERCEPTORS_HOST    where storm-interceptors serves the S1 call (default 127.0.0.1); the S1
                       scripts' own BASELINE_PORT, VALIDATION_PORT, LOGGER_PORT, TRACING_PORT,
                       FULLCHAIN_PORT (8181–8184, 8180) and PROTOCOL (http) pass through
  INTERCEPTORS_ADMIN_URL  its /health, /ready, /metrics listener, checked before the S1 runs
                       (default http://$INTERCEPTORS_HOST:8185)
  INTERCEPTORS_PID     its pid, for its CPU share per S1 run (default: STACK_DIR/interceptors.pid)
  RUN_ALL_NO_STACK=1   never start or stop the stack: GATEWAY_URL must answer /ready (test.sh)
  GATEWAY_PID          the gateway's pid, for its CPU share per run (default: STACK_DIR/gateway.pid)
  LOADGEN_BIN          storm-loadgen (default target/release/storm-loadgen, else target/debug/…)
  RUN_ALL_ONLY         comma-separated scenario names; a subset writes its report to the results
                       directory only, BASELINES.md is left as it was
  REPEATS              runs per scenario (default 3; 1 with --quick)
  RUN_ALL_RESULTS_DIR  where the per-run directories go (default loadtest/results)
  JWT_SECRET           what the generators sign their tokens with (default dev-secret)

Open files: k6 holds one socket per VU and the gateway one per connection, so the S3 ramps (10,000,
5,000 and 20,000 VUs) need that many open files in each process. This script raises the soft
limit to the hard one before the stack starts; where the hard limit is lower than a scenario needs,
scripts/k6-run.sh caps the VUs (VU_CAP) and the run says so (loadtest/k6/README-S1-S3.md).

Adding a scenario: one [[scenario]] block in loadtest/scenarios.toml (its header says how).
USAGE
}

usage_error() {
  echo "run-all.sh: $1 (see --help)" >&2
  exit 2
}

QUICK=""
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  --quick) QUICK=1 ;;
  --list) ;;
  "") ;;
  *) usage_error "unexpected argument '$1'" ;;
esac
(($# <= 1)) || usage_error "too many arguments"

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$STORM_ROOT"

python3 -c 'import tomllib' 2>/dev/null || die "run-all.sh needs Python 3.11+ (python3 with tomllib)"
BASELINES_PY=(python3 loadtest/baselines.py)

if [[ ${1:-} == --list ]]; then
  exec "${BASELINES_PY[@]}" list --only "${RUN_ALL_ONLY:-}"
fi

GATEWAY_URL=${GATEWAY_URL:-http://127.0.0.1:8080}
GATEWAY_URL=${GATEWAY_URL%/}
[[ $GATEWAY_URL =~ ^https?://[^/]+$ ]] || usage_error "GATEWAY_URL must be http(s)://host:port, got '$GATEWAY_URL'"
CHAT_URL=${CHAT_URL:-http://127.0.0.1:8082}
CHAT_URL=${CHAT_URL%/}
[[ $CHAT_URL =~ ^https?://[^/]+$ ]] || usage_error "CHAT_URL must be http(s)://host:port, got '$CHAT_URL'"
INTERCEPTORS_HOST=${INTERCEPTORS_HOST:-127.0.0.1}
[[ $INTERCEPTORS_HOST =~ ^[A-Za-z0-9._:-]+$ ]] ||
  usage_error "INTERCEPTORS_HOST must be a host name or address (no scheme, no port), got '$INTERCEPTORS_HOST'"
INTERCEPTORS_ADMIN_URL=${INTERCEPTORS_ADMIN_URL:-http://$INTERCEPTORS_HOST:8185}
INTERCEPTORS_ADMIN_URL=${INTERCEPTORS_ADMIN_URL%/}
[[ $INTERCEPTORS_ADMIN_URL =~ ^https?://[^/]+$ ]] ||
  usage_error "INTERCEPTORS_ADMIN_URL must be http(s)://host:port, got '$INTERCEPTORS_ADMIN_URL'"
REPEATS=${REPEATS:-}
[[ -z $REPEATS || $REPEATS =~ ^[1-9][0-9]*$ ]] || usage_error "REPEATS must be a positive integer, got '$REPEATS'"
[[ -z ${GATEWAY_PID:-} || ${GATEWAY_PID} =~ ^[0-9]+$ ]] || usage_error "GATEWAY_PID must be a pid, got '$GATEWAY_PID'"
[[ -z ${INTERCEPTORS_PID:-} || ${INTERCEPTORS_PID} =~ ^[0-9]+$ ]] ||
  usage_error "INTERCEPTORS_PID must be a pid, got '$INTERCEPTORS_PID'"
[[ -z ${CHAT_PID:-} || ${CHAT_PID} =~ ^[0-9]+$ ]] || usage_error "CHAT_PID must be a pid, got '$CHAT_PID'"
# An unknown name in RUN_ALL_ONLY is a usage error too (exit 2, from baselines.py).
TOOLS=$("${BASELINES_PY[@]}" list --tools --only "${RUN_ALL_ONLY:-}") || exit $?

STACK_STARTED=""
# The EXIT trap keeps the script's exit status (it does not call exit itself).
on_exit() {
  if [[ -n $STACK_STARTED && ${RUN_ALL_KEEP_STACK:-} != 1 ]]; then
    log "stopping the stack run-all.sh started (RUN_ALL_KEEP_STACK=1 keeps it)"
    bash scripts/stack.sh down || warn "scripts/stack.sh down failed"
  fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# 5,000 sockets on each side of the fan-out scenario, and one per k6 VU on each side of the S3
# ramps (up to 20,000), go far past the usual 1024; set before the stack starts so a gateway
# started here inherits it too.
raise_nofile
S3_RAMPS=$("${BASELINES_PY[@]}" list --only "${RUN_ALL_ONLY:-}" | awk '$1 ~ /^s3-(load-test|spike|stress)$/ {print $1}')
nofile=$(ulimit -Sn)
if [[ -n $S3_RAMPS && -z $QUICK && $nofile != unlimited ]] && ((nofile < 20000 + ${K6_FD_RESERVE:-256})); then
  warn "open-files limit $nofile (hard $(ulimit -Hn)): s3-stress asks for 20,000 VUs, one socket each in k6 and" \
    "in the gateway; scripts/k6-run.sh caps it at VU_CAP=$((nofile - ${K6_FD_RESERVE:-256})) VUs and the run says" \
    "\"capped\". Raise the hard limit to run it whole (loadtest/k6/README-S1-S3.md)."
fi

# --- the stack ----------------------------------------------------------------------------------------
if [[ ${RUN_ALL_NO_STACK:-} == 1 ]]; then
  wait_ready "$GATEWAY_URL/ready" 10 || die "RUN_ALL_NO_STACK=1 but $GATEWAY_URL/ready does not answer 200"
elif bash scripts/stack.sh status >/dev/null 2>&1; then
  log "stack already running: leaving it as it is"
else
  log "stack not ready: scripts/stack.sh up"
  STACK_STARTED=1
  bash scripts/stack.sh up ||
    die "scripts/stack.sh up failed (a gateway not started by stack.sh? point GATEWAY_URL at it and set RUN_ALL_NO_STACK=1)"
fi
wait_ready "$GATEWAY_URL/ready" 10 ||
  die "$GATEWAY_URL/ready does not answer 200 (is GATEWAY_URL the stack's gateway? see scripts/stack.sh status)"

if [[ -z ${GATEWAY_PID:-} ]]; then
  pid_file="${STACK_DIR:-$STORM_ROOT/.stack}/gateway.pid"
  if [[ -f $pid_file ]] && alive "$(<"$pid_file")"; then GATEWAY_PID=$(<"$pid_file"); fi
fi
if [[ -z ${INTERCEPTORS_PID:-} ]]; then
  pid_file="${STACK_DIR:-$STORM_ROOT/.stack}/interceptors.pid"
  if [[ -f $pid_file ]] && alive "$(<"$pid_file")"; then INTERCEPTORS_PID=$(<"$pid_file"); fi
fi
if [[ -z ${CHAT_PID:-} ]]; then
  pid_file="${STACK_DIR:-$STORM_ROOT/.stack}/chat.pid"
  if [[ -f $pid_file ]] && alive "$(<"$pid_file")"; then CHAT_PID=$(<"$pid_file"); fi
fi
# scripts/k6-run.sh bounds VU_CAP by the gateway's own open-files limit too.
[[ -z ${GATEWAY_PID:-} ]] || export GATEWAY_PID

# --- the generators --------------------------------------------------------------------------------------
if grep -qx k6 <<<"$TOOLS" && ! command -v k6 >/dev/null; then
  bash scripts/install-k6.sh >&2
fi
target_dir=${CARGO_TARGET_DIR:-target}
if [[ -z ${LOADGEN_BIN:-} ]]; then
  for candidate in "$target_dir/release/storm-loadgen" "$target_dir/debug/storm-loadgen"; do
    if [[ -x $candidate ]]; then LOADGEN_BIN=$candidate; break; fi
  done
fi
if [[ -n ${LOADGEN_BIN:-} && ! -x $LOADGEN_BIN ]]; then
  die "LOADGEN_BIN=$LOADGEN_BIN is not an executable"
fi
if grep -qx loadgen <<<"$TOOLS" && [[ -z ${LOADGEN_BIN:-} ]]; then
  die "storm-loadgen not found under $target_dir/{release,debug}: cargo build --release --bins (or set LOADGEN_BIN)"
fi

# --- the runs --------------------------------------------------------------------------------------------
results_dir="${RUN_ALL_RESULTS_DIR:-loadtest/results}/$(date -u +%Y-%m-%dT%H-%M-%SZ)${QUICK:+-quick}"
log "results: $results_dir"
args=(run --gateway "$GATEWAY_URL" --chat "$CHAT_URL" --results "$results_dir" --loadgen "${LOADGEN_BIN:-}"
  --interceptors-host "$INTERCEPTORS_HOST" --interceptors-admin "$INTERCEPTORS_ADMIN_URL")
[[ -z $QUICK ]] || args+=(--quick)
[[ -z $REPEATS ]] || args+=(--repeats "$REPEATS")
[[ -z ${RUN_ALL_ONLY:-} ]] || args+=(--only "$RUN_ALL_ONLY")
[[ -z ${GATEWAY_PID:-} ]] || args+=(--gateway-pid "$GATEWAY_PID")
[[ -z ${INTERCEPTORS_PID:-} ]] || args+=(--interceptors-pid "$INTERCEPTORS_PID")
[[ -z ${CHAT_PID:-} ]] || args+=(--chat-pid "$CHAT_PID")
# Last command: its exit status is the script's (set -e), and the EXIT trap still stops the stack.
"${BASELINES_PY[@]}" "${args[@]}"
