#!/usr/bin/env bash
# run-performance-test.sh — the S4 entry point, with the source's command line: message writes and
# chat/message reads against the chat service at two target rates (`storm-loadgen chat`: the
# source's phases, progress lines, result block and PASS/FAIL), then the checks the source never
# made: the broker queue drains, and every 202 became exactly one row (scripts/audit-chat.sh).
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/run-performance-test.sh [--writes N] [--reads N] [--duration N] [--workers N] [-- LOADGEN_ARGS...]

The Chat API performance test (S4) against the chat service at CHAT_URL:
  Phase 1  setup: WORKERS users, one application each, 5 chats in each
  Phase 2  warm-up: 5 seconds at 10 % of the target rates (not recorded)
  Phase 3  writes (POST a message to a random chat) and reads (list a page of chats / of
           messages, 50/50), each at its target rate at once (open model: every request on a
           timetable, latency from its intended send time, no sampling); a progress line every 5 s
then the result block. PASS: throughput ≥ 100 % of each target and success ≥ 99.9 % (the source's
bar — ≥ 50 % and > 95 % — is printed beside it). Its CPU lines count the whole machine's busy CPU
over Phase 3 (/proc/stat: every process and the kernel) per answered request; the generator shares
the cores, so its own share is printed beside it, with chat's, the writer's, Postgres', RabbitMQ's
and Redis' (µs per request and % of one core). Afterwards: waits until the RabbitMQ queue is
empty (target: within 2 s of the test's end) and runs scripts/audit-chat.sh on the 202s.

Options:
  --writes N     target writes per second (default 5000)
  --reads N      target reads per second (default 10000)
  --duration N   test duration in seconds (default 30)
  --workers N    connections, split between writes and reads by rate, and users (default 100)
  --help         this help
  -- ARGS        passed to storm-loadgen chat as they are (e.g. -- --warmup 0 --chats-per-app 10)

Env:
  CHAT_URL       the chat service (default http://127.0.0.1:8082)
  DATABASE_URL   its database, for the audit (default postgres://postgres@localhost:5432/stormstack)
  CHAT_QUEUE     the queue between chat service and writer (default chat.messages)
  RABBITMQ_API   RabbitMQ management API (default http://guest:guest@127.0.0.1:15672); when it does
                 not answer, `rabbitmqctl list_queues` is used
  DRAIN_TIMEOUT  seconds to wait for the queue to empty (default 60)
  LOADGEN_BIN    storm-loadgen (default target/release/storm-loadgen, else target/debug/…, else
                 built with cargo build --release)
  RESULTS_DIR    where the run's directory goes (default loadtest/results): chat-perf-<UTC time>/
                 with chat.json (storm-loadgen's summary), accepted.txt and accepted.txt.refused

Exit 0 on PASS with nothing lost, 1 on FAIL, a lost or duplicated message, a queue that did not
drain, or a test that could not run; 2 on bad arguments.

Examples:
  scripts/run-performance-test.sh
  scripts/run-performance-test.sh --writes 3000 --reads 6000 --duration 60 --workers 50
  scripts/run-performance-test.sh --duration 10 --workers 50
USAGE
}

usage_error() {
  echo "run-performance-test.sh: $1 (see --help)" >&2
  exit 2
}

WRITES=5000
READS=10000
DURATION=30
WORKERS=100
EXTRA=()
positive() {
  if ! [[ $2 =~ ^[1-9][0-9]*$ ]]; then usage_error "$1 must be a positive integer, got '$2'"; fi
}
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --writes | --reads | --duration | --workers)
      (($# >= 2)) || usage_error "$1 needs a value"
      positive "$1" "$2"
      case "$1" in
        --writes) WRITES=$2 ;;
        --reads) READS=$2 ;;
        --duration) DURATION=$2 ;;
        --workers) WORKERS=$2 ;;
      esac
      shift 2
      ;;
    --) shift; EXTRA=("$@"); break ;;
    *) usage_error "unknown argument '$1'" ;;
  esac
done
((WORKERS >= 2)) || usage_error "--workers must be at least 2 (writes and reads each need a connection)"

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$STORM_ROOT"

CHAT_URL=${CHAT_URL:-http://127.0.0.1:8082}
CHAT_URL=${CHAT_URL%/}
[[ $CHAT_URL =~ ^http://[^/]+$ ]] || usage_error "CHAT_URL must be http://host:port, got '$CHAT_URL'"
QUEUE=${CHAT_QUEUE:-chat.messages}
RABBITMQ_API=${RABBITMQ_API:-http://guest:guest@127.0.0.1:15672}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-60}
positive DRAIN_TIMEOUT "$DRAIN_TIMEOUT"
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@localhost:5432/stormstack}

# --- the generator -----------------------------------------------------------------------------
target_dir=${CARGO_TARGET_DIR:-target}
if [[ -n ${LOADGEN_BIN:-} ]]; then
  [[ -x $LOADGEN_BIN ]] || die "LOADGEN_BIN=$LOADGEN_BIN is not an executable"
else
  for candidate in "$target_dir/release/storm-loadgen" "$target_dir/debug/storm-loadgen"; do
    if [[ -x $candidate ]]; then LOADGEN_BIN=$candidate; break; fi
  done
  if [[ -z ${LOADGEN_BIN:-} ]]; then
    command -v cargo >/dev/null || die "storm-loadgen not found under $target_dir/{release,debug} and no cargo to build it"
    log "building storm-loadgen (cargo build --release -p storm-loadgen)"
    cargo build --release -q -p storm-loadgen >&2 || die "cargo build --release -p storm-loadgen failed"
    LOADGEN_BIN=$target_dir/release/storm-loadgen
  fi
  if [[ -n $(find loadtest/loadgen/src -newer "$LOADGEN_BIN" -name '*.rs' 2>/dev/null | head -n 1) ]]; then
    warn "$LOADGEN_BIN is older than loadtest/loadgen/src: cargo build --release -p storm-loadgen (or set LOADGEN_BIN)"
  fi
  [[ $LOADGEN_BIN != */debug/* ]] || warn "using a debug build of storm-loadgen: at thousands of requests per second the generator itself may be the limit"
fi

# Every connection is a descriptor; --workers 1000 goes past the usual 1024.
raise_nofile

# One directory per run (loadtest/results/*/ is not committed).
run_dir="${RESULTS_DIR:-loadtest/results}/chat-perf-$(date -u +%Y-%m-%dT%H-%M-%SZ)"
mkdir -p "$run_dir"
JSON="$run_dir/chat.json"
ACCEPTED="$run_dir/accepted.txt"

# --- the test (banner, phases, progress and the result block are storm-loadgen's) ---------------
set +e
"$LOADGEN_BIN" chat --url "$CHAT_URL" --writes "$WRITES" --reads "$READS" --duration "$DURATION" \
  --workers "$WORKERS" --json "$JSON" --accepted "$ACCEPTED" "${EXTRA[@]}"
status=$?
set -e
ended=$(date +%s.%N)
if ((status == 2)) || [[ ! -f $JSON ]]; then
  echo "The test could not run (storm-loadgen exit $status): nothing to drain or audit." >&2
  exit $((status == 0 ? 1 : status))
fi

# --- the queue drains ----------------------------------------------------------------------------
# queue_depth — messages in the queue, ready + unacknowledged (a message the writer holds in its
# batch is not written yet); empty output when neither the management API nor rabbitmqctl answers.
queue_depth() {
  local json
  if json=$(curl -sf --max-time 2 "$RABBITMQ_API/api/queues/%2F/$QUEUE" 2>/dev/null); then
    python3 -c 'import json, sys; print(json.load(sys.stdin).get("messages", 0))' <<<"$json" 2>/dev/null && return
  fi
  if command -v rabbitmqctl >/dev/null; then
    rabbitmqctl -q list_queues name messages 2>/dev/null | awk -v q="$QUEUE" '$1 == q { print $2; found = 1 } END { if (!found) print "" }'
  fi
}

echo
drain_ok=1
depth=$(queue_depth)
if [[ -z $depth ]]; then
  warn "cannot read the depth of queue $QUEUE (no management API at ${RABBITMQ_API#*@}, no rabbitmqctl): not waiting for it"
  sleep 2 # the writer's batches are at most tens of milliseconds apart; give them a moment
else
  deadline=$((SECONDS + DRAIN_TIMEOUT))
  while [[ $depth =~ ^[0-9]+$ ]] && ((depth > 0)) && ((SECONDS < deadline)); do
    sleep 0.1
    depth=$(queue_depth)
  done
  took=$(awk -v a="$ended" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if [[ $depth == 0 ]]; then
    verdict=$(awk -v t="$took" 'BEGIN { print (t <= 2.0) ? "✓ within 2 s" : "✗ target 2 s" }')
    echo "Queue $QUEUE: empty ${took}s after the test ended ($verdict; measured by polling, so an upper bound)"
  else
    echo "Queue $QUEUE: still ${depth:-?} messages ${took}s after the test ended (DRAIN_TIMEOUT=$DRAIN_TIMEOUT): is storm-writer running?"
    drain_ok=""
  fi
fi

# --- every 202 is one row ------------------------------------------------------------------------
audit_ok=1
bash scripts/audit-chat.sh "$ACCEPTED" --database-url "$DATABASE_URL" || audit_ok=""

echo
echo "Results: $run_dir/ (chat.json, accepted.txt, accepted.txt.refused)"
if ((status != 0)) || [[ -z $drain_ok || -z $audit_ok ]]; then
  exit 1
fi
