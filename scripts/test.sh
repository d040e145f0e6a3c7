#!/usr/bin/env bash
# test.sh — the project's one test command (CI runs it through .ci/run), for a fresh machine:
# installs what is missing, makes sure Redis/Postgres/RabbitMQ answer, runs fmt, clippy and the
# nextest suite, the self-test of the baselines pipeline and the offline checks of the deployment
# files (compose, Kubernetes), then starts the real service binaries
# (messages, the gateway in front of it, chat and writer on a queue of their own, the interceptor
# server over TLS) and checks them the way a performance engineer uses them: a chat message from
# 202 to its row, a k6 smoke of the S0 scenario, every load scenario once in `run-all.sh --quick`,
# every Prometheus rule and Grafana panel evaluated against them (scripts/check-observability.sh,
# promtool on each /metrics), go tool pprof on CPU and heap of each, and a clean exit on SIGTERM.
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
LOAD_PID=""
WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/stormstack-test.XXXXXX")
# The live services, by name: pid, API base URL, pprof base URL.
declare -A PID=() API=() PPROF=()
LIVE_ORDER=()
CI_DATABASE="storm_ci_$$"
# The chat service and writer of this run talk over their own queue (never the stack's).
CI_QUEUE="ci.chat.$$"

step() {
  CURRENT_STEP=$1
  STEPS_DONE=$((STEPS_DONE + 1))
  printf '\n== %s ==\n' "$1"
}

on_exit() {
  local status=$? name
  [[ -z $LOAD_PID ]] || kill "$LOAD_PID" 2>/dev/null || true
  for name in "${LIVE_ORDER[@]}"; do
    if [[ -n ${PID[$name]:-} ]] && alive "${PID[$name]}"; then
      kill -KILL "${PID[$name]}" 2>/dev/null || true
    fi
    if ((status != 0)) && [[ -s $WORK_DIR/$name.log ]]; then
      echo "--- last 30 lines of the $name log ---"
      tail -n 30 "$WORK_DIR/$name.log"
    fi
  done
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $CI_DATABASE WITH (FORCE)" >/dev/null 2>&1 || true
  for queue in "$CI_QUEUE" "$CI_QUEUE.dead"; do
    timeout 20 rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 || true
  done
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

# The live checks talk to running processes; if one died, say so (with its exit status) rather
# than letting the next step fail with a confusing connection error.
still_running() {
  local name status=0
  for name in "${LIVE_ORDER[@]}"; do
    [[ -n ${PID[$name]} ]] || continue
    alive "${PID[$name]}" && continue
    wait "${PID[$name]}" || status=$?
    PID[$name]=""
    fail "$name died during step '$CURRENT_STEP' (exit status $status)"
  done
}

# start_live NAME BINARY [VAR=VALUE…] — starts a debug binary on free ports and waits for /ready.
# Every listener on the loopback; the development flag (the secret is dev-secret) and the benchmark
# limits (run-all --quick opens its sockets from one IP with one user), as scripts/stack.sh does.
start_live() {
  local name=$1 bin=$2 http_port pprof_port
  shift 2
  [[ -x $bin ]] || fail "$bin not found after cargo build --bins"
  http_port=$(free_port)
  pprof_port=$(free_port)
  while [[ $pprof_port == "$http_port" ]]; do pprof_port=$(free_port); done
  API[$name]="http://127.0.0.1:$http_port"
  PPROF[$name]="http://127.0.0.1:$pprof_port"
  env HTTP_ADDR="127.0.0.1:$http_port" PPROF_ADDR="127.0.0.1:$pprof_port" STORM_DEV=1 JWT_SECRET=$SECRET \
    PUBSUB_PREFIX="ci-$$:" SHUTDOWN_GRACE_SECS=$GRACE_SECS LOG_FORMAT=json "${STORM_BENCH_LIMITS[@]}" "$@" \
    "$bin" >"$WORK_DIR/$name.log" 2>&1 </dev/null &
  PID[$name]=$!
  LIVE_ORDER+=("$name")
  if ! wait_ready "${API[$name]}/ready" 60 "${PID[$name]}"; then
    tail -n 30 "$WORK_DIR/$name.log" >&2
    fail "$name (pid ${PID[$name]}) not ready at ${API[$name]}/ready within 60s"
  fi
  echo "$name pid ${PID[$name]} ready: API ${API[$name]}, pprof ${PPROF[$name]}"
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

# --- (f') the deployment files, offline (no Docker engine, no cluster here) -------------------------
step "deploy: check-compose.sh (Dockerfile, docker-compose.yml, by docker-compose config and the repo)"
bash scripts/check-compose.sh

step "deploy: check-k8s.sh (kustomize overlays and the k6-operator TestRun, strict schemas)"
bash scripts/check-k8s.sh

# --- (g) the live binary ---------------------------------------------------------------------------
step "cargo build --bins"
cargo build --bins --locked
BIN_DIR="${CARGO_TARGET_DIR:-target}/debug"
GRACE_SECS=5
SECRET=dev-secret

json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

step "live services: messages, the gateway in front of it, chat, writer and interceptors"
start_live messages "$BIN_DIR/storm-messages" \
  DATABASE_URL="postgres://postgres@127.0.0.1:5432/$CI_DATABASE"
start_live gateway "$BIN_DIR/storm-gateway" MESSAGES_URL="${API[messages]}"
start_live chat "$BIN_DIR/storm-chat" DATABASE_URL="postgres://postgres@127.0.0.1:5432/$CI_DATABASE" \
  CHAT_QUEUE="$CI_QUEUE" REDIS_KEY_PREFIX="ci-$$:chat:" QUEUE_SIGNING_KEY="$STORM_DEV_QUEUE_SIGNING_KEY"
start_live writer "$BIN_DIR/storm-writer" DATABASE_URL="postgres://postgres@127.0.0.1:5432/$CI_DATABASE" \
  CHAT_QUEUE="$CI_QUEUE" QUEUE_SIGNING_KEY="$STORM_DEV_QUEUE_SIGNING_KEY"
# The interceptor-overhead server (S1) over TLS, as the source's scripts call it by default: its
# five listeners on free ports, passed to run-all.sh --quick with the scripts' own variables.
declare -A S1_PORT
for chain in full baseline validation logger tracing; do S1_PORT[$chain]=$(free_port); done
start_live interceptors "$BIN_DIR/storm-interceptors" INTERCEPTORS_TLS=self-signed \
  INTERCEPTORS_FULL_ADDR="127.0.0.1:${S1_PORT[full]}" INTERCEPTORS_BASELINE_ADDR="127.0.0.1:${S1_PORT[baseline]}" \
  INTERCEPTORS_VALIDATION_ADDR="127.0.0.1:${S1_PORT[validation]}" INTERCEPTORS_LOGGER_ADDR="127.0.0.1:${S1_PORT[logger]}" \
  INTERCEPTORS_TRACING_ADDR="127.0.0.1:${S1_PORT[tracing]}"
S1_CALL="https://127.0.0.1:${S1_PORT[full]}/greeter.v1.GreeterService/SayHello"
greeting=$(curl -sSk -H 'Content-Type: application/json' -H 'Connect-Protocol-Version: 1' -d '{"name":"ci"}' "$S1_CALL" |
  json_field greeting) || fail "SayHello over HTTPS on the full chain failed"
[[ $greeting == "Hello, ci!" ]] || fail "SayHello answered '$greeting' (expected 'Hello, ci!')"
echo "interceptors: SayHello over HTTPS on the full chain: $greeting"

BASE=${API[gateway]}
[[ $(curl -sS "$BASE/healthz") == ok ]] || fail "GET /healthz did not answer 'ok'"
token=$(JWT_SECRET=$SECRET bash scripts/gen-jwt.sh ci)
posted=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" \
  -H 'Content-Type: application/json' -d '{"body":"hello from test.sh"}' "$BASE/api/v1/channels/ci/messages")
[[ $posted == 201 ]] || fail "POST a channel message through the gateway answered $posted (expected 201)"

# A chat user with one application and chat: the pprof traffic below posts into it.
CHAT=${API[chat]}
chat_token=$(curl -sSf -H 'Content-Type: application/json' -d "{\"email\":\"ci-$$@example.com\",\"name\":\"ci\"}" \
  "$CHAT/api/v1/users" | json_field token) || fail "POST /api/v1/users failed"
chat_app=$(curl -sSf -H "Authorization: Bearer $chat_token" -H 'Content-Type: application/json' -d '{"name":"ci"}' \
  "$CHAT/api/v1/applications" | json_field token) || fail "POST /api/v1/applications failed"
curl -sSf -o /dev/null -X POST -H "Authorization: Bearer $chat_token" "$CHAT/api/v1/applications/$chat_app/chats" ||
  fail "POST …/chats failed"
CHAT_MESSAGES="$CHAT/api/v1/applications/$chat_app/chats/1/messages"
accepted=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $chat_token" \
  -H 'Content-Type: application/json' -d '{"body":"hello from test.sh"}' "$CHAT_MESSAGES")
[[ $accepted == 202 ]] || fail "POST a chat message answered $accepted (expected 202)"
for _ in {1..100}; do
  [[ $(curl -sS -H "Authorization: Bearer $chat_token" "$CHAT_MESSAGES" | json_field messages) != "[]" ]] && break
  sleep 0.1
done
[[ $(curl -sS -H "Authorization: Bearer $chat_token" "$CHAT_MESSAGES/1" | json_field body) == "hello from test.sh" ]] ||
  fail "the writer did not store the accepted chat message within 10 s"
echo "chat: message 1 accepted (202) and stored by the writer"

step "live: k6 smoke of perf-load.js"
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
still_running

# Every scenario of loadtest/scenarios.toml once, short and small (the debug generator is slow):
# it fails on a crashed run, a 5xx, a lost or duplicated frame; no performance assertion.
step "live: run-all.sh --quick (every load scenario, smoke)"
RUN_ALL_NO_STACK=1 GATEWAY_URL="$BASE" GATEWAY_PID="${PID[gateway]}" API_URL="${API[messages]}" \
  CHAT_URL="$CHAT" WRITER_URL="${API[writer]}" CHAT_QUEUE="$CI_QUEUE" DATABASE_URL="postgres://postgres@127.0.0.1:5432/$CI_DATABASE" JWT_SECRET=$SECRET \
  INTERCEPTORS_HOST=127.0.0.1 INTERCEPTORS_ADMIN_URL="${API[interceptors]}" INTERCEPTORS_PID="${PID[interceptors]}" \
  PROTOCOL=https FULLCHAIN_PORT="${S1_PORT[full]}" BASELINE_PORT="${S1_PORT[baseline]}" \
  VALIDATION_PORT="${S1_PORT[validation]}" LOGGER_PORT="${S1_PORT[logger]}" TRACING_PORT="${S1_PORT[tracing]}" \
  LOADGEN_BIN="${CARGO_TARGET_DIR:-target}/debug/storm-loadgen" bash scripts/run-all.sh --quick ||
  fail "run-all.sh --quick failed (its smoke checks are above; results under loadtest/results/)"
still_running

# Prometheus and Grafana as shipped in infra/: every rule and dashboard expression evaluated by a
# private Prometheus scraping these services after a short load, every SPEC metric family present,
# and `promtool check metrics` on each service's /metrics.
step "live: check-observability.sh (every dashboard and rule expression, SPEC metric families, promtool)"
GATEWAY_URL="$BASE" MESSAGES_URL="${API[messages]}" CHAT_URL="$CHAT" WRITER_URL="${API[writer]}" \
  INTERCEPTORS_ADMIN_URL="${API[interceptors]}" INTERCEPTORS_HOST=127.0.0.1 PROTOCOL=https \
  FULLCHAIN_PORT="${S1_PORT[full]}" BASELINE_PORT="${S1_PORT[baseline]}" VALIDATION_PORT="${S1_PORT[validation]}" \
  LOGGER_PORT="${S1_PORT[logger]}" TRACING_PORT="${S1_PORT[tracing]}" JWT_SECRET=$SECRET \
  LOADGEN_BIN="${CARGO_TARGET_DIR:-target}/debug/storm-loadgen" bash scripts/check-observability.sh
still_running

export HOME="$WORK_DIR/home" GOCACHE="$WORK_DIR/gocache" PPROF_TMPDIR="$WORK_DIR/pprof"
mkdir -p "$HOME" "$GOCACHE" "$PPROF_TMPDIR"
for name in "${LIVE_ORDER[@]}"; do
  step "live $name: go tool pprof (CPU, 3 s)"
  # A little traffic while the profiler samples, so the profile is not empty (bounded: 300
  # requests; channel messages go through the gateway to messages, chat messages through the
  # chat service and the queue to the writer).
  (
    for _ in {1..300}; do
      case $name in
        chat | writer) curl -s -o /dev/null -H "Authorization: Bearer $chat_token" \
          -H 'Content-Type: application/json' -d '{"body":"pprof"}' "$CHAT_MESSAGES" || true ;;
        interceptors) curl -sk -o /dev/null -H 'Content-Type: application/json' -d '{"name":"pprof"}' \
          "$S1_CALL" || true ;;
        *) curl -s -o /dev/null -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
          -d '{"body":"pprof"}' "$BASE/api/v1/channels/ci-pprof/messages" || true ;;
      esac
    done
  ) &
  LOAD_PID=$!
  go tool pprof -top "${PPROF[$name]}/debug/pprof/profile?seconds=3" >"$WORK_DIR/$name-cpu.txt" 2>&1 ||
    { cat "$WORK_DIR/$name-cpu.txt" >&2; fail "go tool pprof (CPU profile of $name) failed"; }
  wait "$LOAD_PID" || true
  LOAD_PID=""
  head -n 12 "$WORK_DIR/$name-cpu.txt"
  still_running

  step "live $name: go tool pprof (heap)"
  go tool pprof -top "${PPROF[$name]}/debug/pprof/heap" >"$WORK_DIR/$name-heap.txt" 2>&1 ||
    { cat "$WORK_DIR/$name-heap.txt" >&2; fail "go tool pprof (heap profile of $name) failed"; }
  head -n 12 "$WORK_DIR/$name-heap.txt"
  still_running
done

# The gateway first (it fronts messages), then messages; the chat service before the writer,
# which drains the queue and acknowledges its last batch before it exits.
for name in gateway messages chat writer interceptors; do
  step "live $name: SIGTERM exits 0 within ${GRACE_SECS}s"
  pid=${PID[$name]}
  started=$SECONDS
  kill -TERM "$pid"
  while alive "$pid"; do
    if ((SECONDS - started > GRACE_SECS + 2)); then
      tail -n 20 "$WORK_DIR/$name.log" >&2
      fail "$name still running $((GRACE_SECS + 2))s after SIGTERM"
    fi
    sleep 0.1
  done
  exit_status=0
  wait "$pid" || exit_status=$?
  PID[$name]=""
  ((exit_status == 0)) || { tail -n 20 "$WORK_DIR/$name.log" >&2; fail "$name exited $exit_status after SIGTERM (expected 0)"; }
  echo "$name exited 0 after $((SECONDS - started))s"
done

echo
echo "test.sh: OK, all $STEPS_DONE steps passed"
