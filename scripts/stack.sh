#!/usr/bin/env bash
# stack.sh — run the stormstack services natively: build, make sure Redis/Postgres/RabbitMQ
# answer, start each service with its pid file and log under .stack/, and wait for /ready.
# `down` stops only the processes whose pid files it wrote (and only if the pid still runs that
# binary), so it never touches a service someone started by hand.
set -euo pipefail

# One line per service, in start order (a service's upstreams first):
#   name  binary  http-port  pprof-port  [extra env as KEY=value ...]
# Adding a service is adding its line; its addresses can be moved with <NAME>_HTTP_ADDR and
# <NAME>_PPROF_ADDR (e.g. GATEWAY_HTTP_ADDR=127.0.0.1:9080, GATEWAY_PPROF_ADDR= disables pprof).
# Every listener binds the loopback unless told otherwise: this is a benchmark stack on a developer's
# machine, with the development secret (STORM_DEV=1) and raised per-IP limits.
# The interceptors' five S1 call listeners (their binary's default is every interface).
S1_LISTENERS="INTERCEPTORS_FULL_ADDR=${INTERCEPTORS_FULL_ADDR:-127.0.0.1:8180}"
S1_LISTENERS+=" INTERCEPTORS_BASELINE_ADDR=${INTERCEPTORS_BASELINE_ADDR:-127.0.0.1:8181}"
S1_LISTENERS+=" INTERCEPTORS_VALIDATION_ADDR=${INTERCEPTORS_VALIDATION_ADDR:-127.0.0.1:8182}"
S1_LISTENERS+=" INTERCEPTORS_LOGGER_ADDR=${INTERCEPTORS_LOGGER_ADDR:-127.0.0.1:8183}"
S1_LISTENERS+=" INTERCEPTORS_TRACING_ADDR=${INTERCEPTORS_TRACING_ADDR:-127.0.0.1:8184}"
SERVICES=(
  "messages      storm-messages      8081  6061"
  "chat          storm-chat          8082  6062"
  "writer        storm-writer        8083  6063"
  "interceptors  storm-interceptors  8185  6064  $S1_LISTENERS"
  "gateway       storm-gateway       8080  6060  MESSAGES_URL=http://127.0.0.1:8081"
)

usage() {
  cat <<'USAGE'
Usage: scripts/stack.sh up|down|status|logs [SERVICE]

  up      build release binaries, ensure Redis/Postgres/RabbitMQ, create the database
          `stormstack`, start every service not running yet, wait for /ready, print the URLs
  down    stop the services this script started (SIGTERM, SIGKILL after SHUTDOWN_GRACE_SECS+5 s)
  status  running/stopped and ready/not ready per service (exit 0 only if all are ready)
  logs    follow the logs (all services, or SERVICE's)

SERVICE limits a command to one service. Services: see the SERVICES list at the top.

Env:
  STACK_NO_BUILD=1       skip `cargo build --release --bins`
  STACK_BIN_DIR          where the binaries are (default: target/release)
  STACK_DIR              pid files and logs (default: .stack/)
  STACK_READY_TIMEOUT    seconds to wait for each /ready (default 60)
  <NAME>_HTTP_ADDR       e.g. GATEWAY_HTTP_ADDR (default 127.0.0.1:<http-port>)
  <NAME>_PPROF_ADDR      e.g. GATEWAY_PPROF_ADDR (default 127.0.0.1:<pprof-port>; empty disables)
  INTERCEPTORS_{FULL,BASELINE,VALIDATION,LOGGER,TRACING}_ADDR
                         the S1 call listeners (default 127.0.0.1:8180 … 127.0.0.1:8184)
  STORM_DEV              development flag (default 1: dev-secret and short secrets are accepted)
  JWT_SECRET             default dev-secret (what scripts/gen-jwt.sh signs with)
  QUEUE_SIGNING_KEY      chat → writer message signing key (default: a public development key)
  MAX_CONNS_PER_IP, WS_MAX_SOCKETS_PER_USER, WS_MAX_SOCKETS_PER_IP
                         raised for the benchmarks (default 40000, 20000, 20000: the fan-out and
                         10k-connection scenarios open everything from one IP with one user)
  LOG_FORMAT (default json), DATABASE_URL, REDIS_URL, AMQP_URL, RUST_LOG, SHUTDOWN_GRACE_SECS and
  the services' other variables are passed through.
USAGE
}

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STACK_DIR=${STACK_DIR:-$STORM_ROOT/.stack}
BIN_DIR=${STACK_BIN_DIR:-${CARGO_TARGET_DIR:-$STORM_ROOT/target}/release}
READY_TIMEOUT=${STACK_READY_TIMEOUT:-60}
GRACE_SECS=${SHUTDOWN_GRACE_SECS:-10}
[[ $READY_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "STACK_READY_TIMEOUT must be a positive integer, got '$READY_TIMEOUT'"
[[ $GRACE_SECS =~ ^[0-9]+$ ]] || die "SHUTDOWN_GRACE_SECS must be a non-negative integer, got '$GRACE_SECS'"

export STORM_DEV=${STORM_DEV:-1}
export JWT_SECRET=${JWT_SECRET:-dev-secret}
export QUEUE_SIGNING_KEY=${QUEUE_SIGNING_KEY:-$STORM_DEV_QUEUE_SIGNING_KEY}
for limit in "${STORM_BENCH_LIMITS[@]}"; do
  # An explicit value in the environment wins over the benchmark default.
  name=${limit%%=*}
  [[ -n ${!name:-} ]] || export "${limit?}"
done
export LOG_FORMAT=${LOG_FORMAT:-json}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/stormstack}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
export AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}

# --- one service ------------------------------------------------------------------------------

# load_service LINE — sets SVC_NAME SVC_BIN SVC_HTTP_ADDR SVC_PPROF_ADDR SVC_ENV (array).
load_service() {
  local fields upper var
  read -r -a fields <<<"$1"
  SVC_NAME=${fields[0]}
  SVC_BIN=${fields[1]}
  SVC_ENV=("${fields[@]:4}")
  upper=${SVC_NAME^^}
  var="${upper}_HTTP_ADDR"
  SVC_HTTP_ADDR=${!var:-127.0.0.1:${fields[2]}}
  var="${upper}_PPROF_ADDR"
  if [[ -v $var ]]; then SVC_PPROF_ADDR=${!var}; else SVC_PPROF_ADDR=127.0.0.1:${fields[3]}; fi
}

pid_file() { echo "$STACK_DIR/$SVC_NAME.pid"; }
log_file() { echo "$STACK_DIR/$SVC_NAME.log"; }

# addr_port ADDR / url_of ADDR — "0.0.0.0:8080", ":8080", "[::]:8080" → 8080 / http://127.0.0.1:8080
addr_port() { echo "${1##*:}"; }
url_of() {
  local host=${1%:*}
  case "$host" in "" | 0.0.0.0 | "[::]") host=127.0.0.1 ;; esac
  echo "http://$host:$(addr_port "$1")"
}

# running_pid — print the pid from the service's pid file if that process still runs its binary.
running_pid() {
  local pid argv0
  [[ -f $(pid_file) ]] || return 1
  pid=$(<"$(pid_file)")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  if [[ -r /proc/$pid/cmdline ]]; then
    argv0=$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n 1)
    [[ ${argv0##*/} == "$SVC_BIN" ]] || return 1
  fi
  echo "$pid"
}

stop_pid() {
  local pid=$1 deadline=$((SECONDS + GRACE_SECS + 5))
  kill -TERM "$pid" 2>/dev/null || return 0
  while alive "$pid"; do
    if ((SECONDS >= deadline)); then
      warn "$SVC_NAME (pid $pid) still running $((GRACE_SECS + 5))s after SIGTERM: sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 5))
      while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
      return 0
    fi
    sleep 0.2
  done
}

start_service() {
  local pid bin_path port kv ports
  if pid=$(running_pid); then
    log "$SVC_NAME already running (pid $pid)"
  else
    rm -f "$(pid_file)"
    bin_path="$BIN_DIR/$SVC_BIN"
    [[ -x $bin_path ]] || die "$bin_path not found: build it with 'cargo build --release --bins' (or unset STACK_NO_BUILD)"
    ports=("$(addr_port "$SVC_HTTP_ADDR")")
    [[ -z $SVC_PPROF_ADDR ]] || ports+=("$(addr_port "$SVC_PPROF_ADDR")")
    for kv in "${SVC_ENV[@]}"; do
      [[ ${kv%%=*} != *_ADDR ]] || ports+=("$(addr_port "${kv#*=}")")
    done
    for port in "${ports[@]}"; do
      if port_open 127.0.0.1 "$port"; then
        die "$SVC_NAME: port $port is already in use by a process stack.sh did not start (see: ss -ltnp 'sport = :$port')"
      fi
    done
    printf '=== %s: starting %s (HTTP_ADDR=%s PPROF_ADDR=%s) ===\n' \
      "$(date -Is)" "$bin_path" "$SVC_HTTP_ADDR" "$SVC_PPROF_ADDR" >>"$(log_file)"
    # setsid: the service outlives this script and ignores a Ctrl-C aimed at it.
    setsid env HTTP_ADDR="$SVC_HTTP_ADDR" PPROF_ADDR="$SVC_PPROF_ADDR" "${SVC_ENV[@]}" \
      "$bin_path" >>"$(log_file)" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$(pid_file)"
    log "$SVC_NAME started (pid $pid), waiting for $(url_of "$SVC_HTTP_ADDR")/ready"
  fi
  if ! wait_ready "$(url_of "$SVC_HTTP_ADDR")/ready" "$READY_TIMEOUT" "$pid"; then
    if alive "$pid"; then
      printf 'error: %s is not ready after %ss; last 30 lines of %s:\n' "$SVC_NAME" "$READY_TIMEOUT" "$(log_file)" >&2
    else
      printf 'error: %s exited before it was ready; last 30 lines of %s:\n' "$SVC_NAME" "$(log_file)" >&2
    fi
    tail -n 30 "$(log_file)" >&2
    stop_pid "$pid"
    rm -f "$(pid_file)"
    exit 1
  fi
}

# --- commands -----------------------------------------------------------------------------------

# select_services [SERVICE] — fill SELECTED with the SERVICES lines to act on; an unknown name
# is a usage error.
select_services() {
  local line names=()
  SELECTED=()
  for line in "${SERVICES[@]}"; do
    load_service "$line"
    names+=("$SVC_NAME")
    if [[ -z ${1:-} || $1 == "$SVC_NAME" ]]; then SELECTED+=("$line"); fi
  done
  if ((${#SELECTED[@]} == 0)); then
    echo "stack.sh: unknown service '$1' (services: ${names[*]})" >&2
    exit 2
  fi
}

create_database() {
  local exists
  command -v psql >/dev/null || die "psql not found: apt-get install postgresql-client"
  exists=$(psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'stormstack'") ||
    die "cannot query Postgres as user postgres on 127.0.0.1:5432 (it must trust that user on the loopback)"
  if [[ $exists != 1 ]]; then
    psql -h 127.0.0.1 -U postgres -d postgres -qc 'CREATE DATABASE stormstack' || die "CREATE DATABASE stormstack failed"
    log "created database stormstack"
  fi
}

cmd_up() {
  local line
  select_services "${1:-}"
  # The services inherit this shell's open-files limit: the gateway holds one per connection
  # (the S3 ramps reach 10,000–20,000 users).
  raise_nofile
  if [[ ${STACK_NO_BUILD:-} != 1 ]]; then
    log "cargo build --release --bins"
    (cd "$STORM_ROOT" && cargo build --release --bins) || die "cargo build --release --bins failed"
  fi
  ensure_redis
  ensure_postgres
  ensure_rabbitmq
  create_database
  mkdir -p "$STACK_DIR"
  for line in "${SELECTED[@]}"; do
    load_service "$line"
    start_service
  done
  echo
  printf '%-14s %-28s %-36s %s\n' SERVICE API METRICS PPROF
  for line in "${SELECTED[@]}"; do
    load_service "$line"
    printf '%-14s %-28s %-36s %s\n' "$SVC_NAME" "$(url_of "$SVC_HTTP_ADDR")" "$(url_of "$SVC_HTTP_ADDR")/metrics" \
      "$(if [[ -n $SVC_PPROF_ADDR ]]; then echo "$(url_of "$SVC_PPROF_ADDR")/debug/pprof/"; else echo "(disabled)"; fi)"
  done
  printf '\nlogs: scripts/stack.sh logs   status: scripts/stack.sh status   stop: scripts/stack.sh down\n'
}

cmd_down() {
  local i pid
  select_services "${1:-}"
  for ((i = ${#SELECTED[@]} - 1; i >= 0; i--)); do
    load_service "${SELECTED[i]}"
    if pid=$(running_pid); then
      log "stopping $SVC_NAME (pid $pid)"
      stop_pid "$pid"
      log "$SVC_NAME stopped"
    elif [[ -f $(pid_file) ]]; then
      log "$SVC_NAME not running (stale pid file removed)"
    else
      log "$SVC_NAME not running"
    fi
    rm -f "$(pid_file)"
  done
}

cmd_status() {
  local line pid state ready all_ready=0
  select_services "${1:-}"
  printf '%-14s %-18s %-10s %s\n' SERVICE STATE READY API
  for line in "${SELECTED[@]}"; do
    load_service "$line"
    if pid=$(running_pid); then state="running ($pid)"; else state=stopped; fi
    ready=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$(url_of "$SVC_HTTP_ADDR")/ready" 2>/dev/null || true)
    if [[ $ready == 200 ]]; then ready=ready; else ready="not ready"; all_ready=3; fi
    [[ $state != stopped ]] || all_ready=3
    printf '%-14s %-18s %-10s %s\n' "$SVC_NAME" "$state" "$ready" "$(url_of "$SVC_HTTP_ADDR")"
  done
  return "$all_ready"
}

cmd_logs() {
  local line files=()
  select_services "${1:-}"
  for line in "${SELECTED[@]}"; do
    load_service "$line"
    [[ ! -f $(log_file) ]] || files+=("$(log_file)")
  done
  ((${#files[@]} > 0)) || die "no logs yet under $STACK_DIR (start the stack with: scripts/stack.sh up)"
  exec tail -n 50 -F "${files[@]}"
}

command=${1:-}
(($# <= 2)) || { echo "stack.sh: too many arguments (see --help)" >&2; exit 2; }
case "$command" in
  up) cmd_up "${2:-}" ;;
  down) cmd_down "${2:-}" ;;
  status) cmd_status "${2:-}" ;;
  logs) cmd_logs "${2:-}" ;;
  -h | --help | help) usage ;;
  "") usage >&2; exit 2 ;;
  *) echo "stack.sh: unknown command '$command' (expected up|down|status|logs; see --help)" >&2; exit 2 ;;
esac
