#!/usr/bin/env bash
# test.sh — the project's one test command (CI runs it through .ci/run), for a fresh machine:
# installs what is missing, makes sure Redis/Postgres/RabbitMQ answer, runs fmt, clippy and the
# nextest suite and the self-test of the baselines pipeline, then starts the real gateway binary and
# checks it the way a performance engineer uses it: a k6 smoke of the S0 scenario, every load
# scenario once in `run-all.sh --quick`, promtool on /metrics, go tool pprof on CPU and heap, and a
# clean exit on SIGTERM.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/test.sh

Env:
  TEST_SKIP_LINT=1   skip cargo fmt, clippy and nextest (iterate on the live-binary checks)
  CARGO_TARGET_DIR   honoured when looking for target/debug/storm-gateway
USAGE
}
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) echo "test.sh: unexpected argument '$1' (see --help)" >&2; exit 2 ;;
esac

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$STORM_ROOT"

CURRENT_STEP="start"
STEPS_DONE=0
GATEWAY_PID=""
LOAD_PID=""
WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/stormstack-test.XXXXXX")

step() {
  CURRENT_STEP=$1
  STEPS_DONE=$((STEPS_DONE + 1))
  printf '\n== %s ==\n' "$1"
}

on_exit() {
  local status=$?
  [[ -z $LOAD_PID ]] || kill "$LOAD_PID" 2>/dev/null || true
  if [[ -n $GATEWAY_PID ]] && alive "$GATEWAY_PID"; then
    kill -KILL "$GATEWAY_PID" 2>/dev/null || true
  fi
  if ((status != 0)) && [[ -s $WORK_DIR/gateway.log ]]; then
    echo "--- last 30 lines of the gateway's log ---"
    tail -n 30 "$WORK_DIR/gateway.log"
  fi
  rm -rf "$WORK_DIR"
  if ((status != 0)); then
    echo "test.sh: FAILED at step '$CURRENT_STEP' (exit $status)"
  fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM

fail() {
  echo "error: $*" >&2
  exit 1
}

# The live checks below talk to one gateway process; if it died, say so (with its exit status)
# rather than letting the next step fail with a confusing connection error.
gateway_still_running() {
  local status=0
  alive "$GATEWAY_PID" && return 0
  wait "$GATEWAY_PID" || status=$?
  GATEWAY_PID=""
  fail "the gateway died during step '$CURRENT_STEP' (exit status $status)"
}

# --- (a) tools ----------------------------------------------------------------------------------
step "install missing tools"
missing_packages=()
command -v curl >/dev/null || missing_packages+=(curl)
command -v go >/dev/null || missing_packages+=(golang-go)
command -v promtool >/dev/null || missing_packages+=(prometheus)
command -v shellcheck >/dev/null || missing_packages+=(shellcheck)
if ((${#missing_packages[@]} > 0)); then
  apt_install "${missing_packages[@]}"
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  log "cargo-nextest missing: cargo install --locked cargo-nextest"
  cargo install --locked cargo-nextest
fi
bash scripts/install-k6.sh
printf 'go: %s\npromtool: %s\nnextest: %s\n' "$(go version)" "$(promtool --version 2>&1 | head -n 1)" \
  "$(cargo nextest --version | head -n 1)"

# --- (b) services the tests talk to ---------------------------------------------------------------
step "dependencies: Redis, Postgres, RabbitMQ"
ensure_redis
ensure_postgres
ensure_rabbitmq

# --- (c)–(e) lint and the test suite ----------------------------------------------------------------
if [[ ${TEST_SKIP_LINT:-} == 1 ]]; then
  printf '\n== fmt, clippy, nextest skipped (TEST_SKIP_LINT=1) ==\n'
else
  step "cargo fmt --check"
  cargo fmt --all -- --check

  step "shellcheck"
  shellcheck -x scripts/*.sh .ci/run

  step "cargo clippy"
  cargo clippy --workspace --all-targets --locked -- -D warnings

  step "cargo nextest"
  cargo nextest run --workspace --locked --no-fail-fast
fi

# --- (f) the baselines pipeline, on fixtures ------------------------------------------------------
step "baselines.py self-test (run-all.sh and the BASELINES writer, fake generators)"
python3 loadtest/test_baselines.py

# --- (g) the live binary ---------------------------------------------------------------------------
step "cargo build --bins"
cargo build --bins --locked
GATEWAY_BIN="${CARGO_TARGET_DIR:-target}/debug/storm-gateway"
[[ -x $GATEWAY_BIN ]] || fail "$GATEWAY_BIN not found after cargo build --bins"

step "live gateway: start"
HTTP_PORT=$(free_port)
PPROF_PORT=$(free_port)
while [[ $PPROF_PORT == "$HTTP_PORT" ]]; do PPROF_PORT=$(free_port); done
BASE="http://127.0.0.1:$HTTP_PORT"
PPROF="http://127.0.0.1:$PPROF_PORT"
GRACE_SECS=5
SECRET=dev-secret
HTTP_ADDR="127.0.0.1:$HTTP_PORT" PPROF_ADDR="127.0.0.1:$PPROF_PORT" JWT_SECRET=$SECRET \
  PUBSUB_PREFIX="ci-$$-" SHUTDOWN_GRACE_SECS=$GRACE_SECS LOG_FORMAT=json \
  "$GATEWAY_BIN" >"$WORK_DIR/gateway.log" 2>&1 </dev/null &
GATEWAY_PID=$!
if ! wait_ready "$BASE/ready" 60 "$GATEWAY_PID"; then
  tail -n 30 "$WORK_DIR/gateway.log" >&2
  fail "gateway (pid $GATEWAY_PID) not ready at $BASE/ready within 60s"
fi
echo "gateway pid $GATEWAY_PID ready: API $BASE, pprof $PPROF"
[[ $(curl -sS "$BASE/healthz") == ok ]] || fail "GET /healthz did not answer 'ok'"

step "live gateway: k6 smoke of perf-load.js"
SUMMARY_JSON="$WORK_DIR/perf-load-summary.json"
k6_status=0
ACCESS_TOKEN=$(JWT_SECRET=$SECRET bash scripts/gen-jwt.sh ci) GATEWAY_URL="$BASE" DURATION=5s PUB_VUS=2 WS_VUS=2 \
  MODE=baseline SUMMARY_JSON="$SUMMARY_JSON" k6 run --quiet loadtest/k6/perf-load.js || k6_status=$?
((k6_status == 0)) || fail "k6 run exited $k6_status (99 = a threshold failed)"
python3 - "$SUMMARY_JSON" <<'PY' || fail "k6 summary check failed ($SUMMARY_JSON)"
import json, sys
metrics = json.load(open(sys.argv[1]))["metrics"]
def count(name):
    return metrics.get(name, {}).get("values", {}).get("count", 0)
published, received = count("http_reqs"), count("ws_msgs_received")
print(f"k6 summary: {published} HTTP requests, {received} WebSocket messages received, "
      f"{count('ws_events_received')} events of the subject")
if published == 0 or received == 0:
    sys.exit("expected HTTP requests and WebSocket messages in the k6 summary, got none")
PY
gateway_still_running

# Every scenario of loadtest/scenarios.toml once, short and small (the debug generator is slow):
# it fails on a crashed run, a 5xx, a lost or duplicated frame; no performance assertion.
step "live gateway: run-all.sh --quick (every load scenario, smoke)"
RUN_ALL_NO_STACK=1 GATEWAY_URL="$BASE" GATEWAY_PID="$GATEWAY_PID" JWT_SECRET=$SECRET \
  LOADGEN_BIN="${CARGO_TARGET_DIR:-target}/debug/storm-loadgen" bash scripts/run-all.sh --quick ||
  fail "run-all.sh --quick failed (its smoke checks are above; results under loadtest/results/)"
gateway_still_running

step "live gateway: promtool check metrics"
curl -sSf -o "$WORK_DIR/metrics.txt" "$BASE/metrics" || fail "GET /metrics failed"
[[ -s $WORK_DIR/metrics.txt ]] || fail "GET /metrics returned an empty body"
promtool check metrics <"$WORK_DIR/metrics.txt"
echo "promtool: $(grep -c '^# TYPE' "$WORK_DIR/metrics.txt") metric families OK"
gateway_still_running

step "live gateway: go tool pprof (CPU, 3 s)"
export HOME="$WORK_DIR/home" GOCACHE="$WORK_DIR/gocache" PPROF_TMPDIR="$WORK_DIR/pprof"
mkdir -p "$HOME" "$GOCACHE" "$PPROF_TMPDIR"
# A little traffic while the profiler samples, so the profile is not empty (bounded: 300 requests).
(
  token=$(JWT_SECRET=$SECRET bash scripts/gen-jwt.sh ci)
  for _ in {1..300}; do
    curl -s -o /dev/null -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
      -d '{"payload":"pprof"}' "$BASE/publish?subject=ci.pprof" || true
  done
) &
LOAD_PID=$!
go tool pprof -top "$PPROF/debug/pprof/profile?seconds=3" >"$WORK_DIR/cpu.txt" 2>&1 ||
  { cat "$WORK_DIR/cpu.txt" >&2; fail "go tool pprof (CPU profile) failed"; }
wait "$LOAD_PID" || true
LOAD_PID=""
head -n 12 "$WORK_DIR/cpu.txt"
gateway_still_running

step "live gateway: go tool pprof (heap)"
go tool pprof -top "$PPROF/debug/pprof/heap" >"$WORK_DIR/heap.txt" 2>&1 ||
  { cat "$WORK_DIR/heap.txt" >&2; fail "go tool pprof (heap profile) failed"; }
head -n 12 "$WORK_DIR/heap.txt"
gateway_still_running

step "live gateway: SIGTERM exits 0 within ${GRACE_SECS}s"
started=$SECONDS
kill -TERM "$GATEWAY_PID"
while alive "$GATEWAY_PID"; do
  if ((SECONDS - started > GRACE_SECS + 2)); then
    tail -n 20 "$WORK_DIR/gateway.log" >&2
    fail "gateway still running $((GRACE_SECS + 2))s after SIGTERM"
  fi
  sleep 0.1
done
exit_status=0
wait "$GATEWAY_PID" || exit_status=$?
GATEWAY_PID=""
((exit_status == 0)) || { tail -n 20 "$WORK_DIR/gateway.log" >&2; fail "gateway exited $exit_status after SIGTERM (expected 0)"; }
echo "gateway exited 0 after $((SECONDS - started))s"

echo
echo "test.sh: OK, all $STEPS_DONE steps passed"
