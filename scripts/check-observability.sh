#!/usr/bin/env bash
# check-observability.sh — proves the Prometheus rules and Grafana dashboards of infra/ against the
# real services: starts a private Prometheus (config derived from infra/prometheus/prometheus.yml,
# 1 s scrapes, the same rules.yml) scraping the live stack, sends a short load that moves every
# metric the expressions use, then evaluates every PromQL expression of infra/prometheus/rules.yml
# and of every panel of infra/grafana/dashboards/*.json through Prometheus's HTTP API. It fails on
# any expression that errors or returns no data (a 0 is data: the services export their fault and
# overload counters at 0 from start) — except the validity-only ones (every alert, and any panel or
# rule marked so because it can be empty even then), which must still evaluate and name only
# metrics that exist. It also checks that every metric family SPEC "Observability" names is on the
# services' /metrics (absent = failure), and runs `promtool check metrics` on each.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/check-observability.sh

Checks the Prometheus rules and Grafana dashboards of infra/ against the running stack (by
default the native stack of scripts/stack.sh). Needs Redis, Postgres and RabbitMQ behind the
services; installs Debian's `prometheus` package (prometheus, promtool) when missing and enables
RabbitMQ's rabbitmq_prometheus plugin when the broker is local and the plugin is off.

Env (defaults: the native stack):
  GATEWAY_URL              http://127.0.0.1:8080
  MESSAGES_URL             http://127.0.0.1:8081
  CHAT_URL                 http://127.0.0.1:8082
  WRITER_URL               http://127.0.0.1:8083
  INTERCEPTORS_ADMIN_URL   http://127.0.0.1:8185 (health, ready, metrics)
  INTERCEPTORS_HOST        127.0.0.1, with the S1 scripts' PROTOCOL (http; https = self-signed
                           TLS, not verified), FULLCHAIN_PORT 8180, BASELINE_PORT 8181,
                           VALIDATION_PORT 8182, LOGGER_PORT 8183, TRACING_PORT 8184
  RABBITMQ_PROMETHEUS_URL  http://127.0.0.1:15692 (scraped at /metrics/per-object)
  JWT_SECRET               the services' secret (default dev-secret)
  LOADGEN_BIN              storm-loadgen (default target/release/storm-loadgen, else target/debug)
  OBS_LOAD_SECS            length of the load (default 8; every part of it is small)
  OBS_SLOW_BUDGET          seconds the slow-consumer bursts may take before the check fails
                           (default 45; a debug gateway needs more bursts than a release one)

Output: one line per expression (ok / empty / nan / error / validity-only), one line per SPEC
metric family and service, and `check-observability: OK (N expressions, M with data, K
validity-only)`. Exit 0 when everything passed, 1 otherwise.
USAGE
}
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) echo "check-observability.sh: unexpected argument '$1' (see --help)" >&2; exit 2 ;;
esac

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$STORM_ROOT"

GATEWAY_URL=${GATEWAY_URL:-http://127.0.0.1:8080}
MESSAGES_URL=${MESSAGES_URL:-http://127.0.0.1:8081}
CHAT_URL=${CHAT_URL:-http://127.0.0.1:8082}
WRITER_URL=${WRITER_URL:-http://127.0.0.1:8083}
INTERCEPTORS_ADMIN_URL=${INTERCEPTORS_ADMIN_URL:-http://127.0.0.1:8185}
INTERCEPTORS_HOST=${INTERCEPTORS_HOST:-127.0.0.1}
PROTOCOL=${PROTOCOL:-http}
RABBITMQ_PROMETHEUS_URL=${RABBITMQ_PROMETHEUS_URL:-http://127.0.0.1:15692}
JWT_SECRET=${JWT_SECRET:-dev-secret}
OBS_LOAD_SECS=${OBS_LOAD_SECS:-8}
export GATEWAY_URL MESSAGES_URL CHAT_URL WRITER_URL INTERCEPTORS_ADMIN_URL RABBITMQ_PROMETHEUS_URL JWT_SECRET
declare -A CALL_PORT=(
  [full]=${FULLCHAIN_PORT:-8180} [baseline]=${BASELINE_PORT:-8181} [validation]=${VALIDATION_PORT:-8182}
  [logger]=${LOGGER_PORT:-8183} [tracing]=${TRACING_PORT:-8184}
)
declare -A SERVICE_URL=(
  [gateway]=$GATEWAY_URL [messages]=$MESSAGES_URL [chat]=$CHAT_URL [writer]=$WRITER_URL
  [interceptors]=$INTERCEPTORS_ADMIN_URL
)
SERVICES=(gateway messages chat writer interceptors)
HELPER=scripts/check_observability.py

[[ $PROTOCOL == http || $PROTOCOL == https ]] || die "PROTOCOL must be http or https, got '$PROTOCOL'"
if ! [[ $OBS_LOAD_SECS =~ ^[0-9]+$ ]] || ((OBS_LOAD_SECS < 3 || OBS_LOAD_SECS > 20)); then
  die "OBS_LOAD_SECS must be 3–20 seconds, got '$OBS_LOAD_SECS'"
fi
OBS_SLOW_BUDGET=${OBS_SLOW_BUDGET:-45}
if ! [[ $OBS_SLOW_BUDGET =~ ^[0-9]+$ ]] || ((OBS_SLOW_BUDGET < 5 || OBS_SLOW_BUDGET > 300)); then
  die "OBS_SLOW_BUDGET must be 5–300 seconds, got '$OBS_SLOW_BUDGET'"
fi
if [[ -z ${LOADGEN_BIN:-} ]]; then
  for candidate in "${CARGO_TARGET_DIR:-target}/release/storm-loadgen" "${CARGO_TARGET_DIR:-target}/debug/storm-loadgen"; do
    if [[ -x $candidate ]]; then LOADGEN_BIN=$candidate; break; fi
  done
fi
[[ -n ${LOADGEN_BIN:-} && -x $LOADGEN_BIN ]] ||
  die "storm-loadgen not found: cargo build --release -p storm-loadgen, or set LOADGEN_BIN"

STARTED=$SECONDS
WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/check-observability.XXXXXX")
PROM_PID=""
BACKGROUND=()
cleanup() {
  local status=$? pid
  for pid in "${BACKGROUND[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [[ -n $PROM_PID ]]; then
    kill "$PROM_PID" 2>/dev/null || true
    wait "$PROM_PID" 2>/dev/null || true
  fi
  if ((status != 0)) && [[ -s $WORK_DIR/prometheus.log ]]; then
    echo "--- last 20 lines of the Prometheus log ---" >&2
    tail -n 20 "$WORK_DIR/prometheus.log" >&2
  fi
  rm -rf "$WORK_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools and the broker's exporter --------------------------------------------------------------
command -v curl >/dev/null || apt_install curl
command -v python3 >/dev/null || apt_install python3
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  apt_install prometheus
fi

# RabbitMQ's exporter is a plugin: enable it on a local broker whose plugin is off (idempotent; a
# remote or containerised broker must have it on already, as the compose image does).
rabbit_hostport=${RABBITMQ_PROMETHEUS_URL#http://}
rabbit_hostport=${rabbit_hostport%%/*}
rabbit_host=${rabbit_hostport%:*}
rabbit_port=${rabbit_hostport##*:}
if ! port_open "$rabbit_host" "$rabbit_port"; then
  if [[ $rabbit_host =~ ^(127\.0\.0\.1|localhost)$ ]] && command -v rabbitmq-plugins >/dev/null; then
    if ! rabbitmq-plugins -q is_enabled rabbitmq_prometheus >/dev/null 2>&1; then
      log "enabling RabbitMQ's rabbitmq_prometheus plugin"
      rabbitmq-plugins -q enable rabbitmq_prometheus >/dev/null
    fi
    wait_port "$rabbit_host" "$rabbit_port" 30 ||
      die "RabbitMQ's Prometheus exporter does not answer on $rabbit_hostport (rabbitmq-plugins enable rabbitmq_prometheus)"
  else
    die "RabbitMQ's Prometheus exporter does not answer at $RABBITMQ_PROMETHEUS_URL (enable rabbitmq_prometheus)"
  fi
fi

for name in "${SERVICES[@]}"; do
  wait_ready "${SERVICE_URL[$name]}/ready" 10 || die "$name is not ready at ${SERVICE_URL[$name]}/ready"
done

# --- the configs, checked, and a private Prometheus -----------------------------------------------
log "promtool: infra/prometheus/prometheus.yml and rules.yml"
promtool check config infra/prometheus/prometheus.yml >/dev/null ||
  die "promtool check config infra/prometheus/prometheus.yml failed"
promtool check rules infra/prometheus/rules.yml >/dev/null || die "promtool check rules infra/prometheus/rules.yml failed"

PROM_PORT=$(free_port)
PROM_URL="http://127.0.0.1:$PROM_PORT"
python3 "$HELPER" derive-config infra/prometheus/prometheus.yml "$WORK_DIR/prometheus.yml" "127.0.0.1:$PROM_PORT"
cp infra/prometheus/rules.yml "$WORK_DIR/rules.yml"
promtool check config "$WORK_DIR/prometheus.yml" >/dev/null || die "the derived config does not pass promtool"
prometheus --config.file="$WORK_DIR/prometheus.yml" --storage.tsdb.path="$WORK_DIR/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$WORK_DIR/prometheus.log" 2>&1 </dev/null &
PROM_PID=$!
wait_ready "$PROM_URL/-/ready" 30 "$PROM_PID" || die "Prometheus did not become ready on $PROM_URL"
python3 "$HELPER" wait-fresh "$PROM_URL" "$WORK_DIR/prometheus.yml" "$(date +%s)"
log "Prometheus $(prometheus --version 2>&1 | head -n 1 | cut -d' ' -f3) on $PROM_URL: every target up, every rule group evaluated"

# --- the load: small, but it moves every metric the expressions read -------------------------------
TOKEN=$(bash scripts/gen-jwt.sh obs-check)
TENANT=$(python3 -c 'import uuid; print(uuid.uuid4())')
TENANT_TOKEN=$(bash scripts/gen-jwt.sh obs-check --tenant "$TENANT")
RUN=obs-$$-$RANDOM
JSON=(-H 'Content-Type: application/json')
AUTH=(-H "Authorization: Bearer $TOKEN")
TAUTH=(-H "Authorization: Bearer $TENANT_TOKEN")
quiet() { curl -s -o /dev/null --max-time 5 "$@" || true; }

# spawn NAME CMD… — a part of the load in the background, its output in WORK_DIR/NAME.log.
spawn() {
  local name=$1
  shift
  "$@" >"$WORK_DIR/$name.log" 2>&1 &
  BACKGROUND+=($!)
  LOAD_NAMES+=("$name")
}
LOAD_NAMES=()

# One round of requests over every route the dashboards show, errors included (404, 400, 401,
# 403, 409, 422). Rounds run a second apart, so each series moves between scrapes.
chat_round() {
  local round=$1 base="$CHAT_URL/api/v1/applications/$chat_app" cauth=(-H "Authorization: Bearer $chat_token")
  quiet "${cauth[@]}" "${JSON[@]}" -d "{\"body\":\"running check $round\"}" "$base/chats/1/messages"
  quiet "${cauth[@]}" "$CHAT_URL/api/v1/applications"
  quiet "${cauth[@]}" "$base"
  quiet -X PATCH "${cauth[@]}" "${JSON[@]}" -d "{\"name\":\"obs $round\"}" "$base"
  quiet "${cauth[@]}" "$base/chats"
  quiet "${cauth[@]}" "$base/chats/1"
  quiet "${cauth[@]}" "$base/chats/1/messages/1"
  quiet "${cauth[@]}" "$base/chats/1/messages/search?q=run"
  quiet "${cauth[@]}" "$base/chats/1/messages?per_page=0"               # 422
  quiet "${cauth[@]}" "$CHAT_URL/api/v1/applications/nosuchapplication000"  # 404
  quiet "${cauth[@]}" "${JSON[@]}" -d '{"name":' "$CHAT_URL/api/v1/applications" # 400
}
messages_round() {
  local round=$1 call="$RUN-call-$1" state
  for state in INITIATED RINGING ANSWERED COMPLETED RINGING; do # the last one: 409
    quiet "${TAUTH[@]}" "${JSON[@]}" -d "{\"call_id\":\"$call\",\"state\":\"$state\",\"from\":\"+100\",\"to\":\"+200\"}" \
      "$MESSAGES_URL/api/v1/demo/events/call"
  done
  quiet "${TAUTH[@]}" "${JSON[@]}" -d "{\"call_id\":\"$call-f\",\"state\":\"INITIATED\",\"from\":\"+1\",\"to\":\"+2\"}" \
    "$MESSAGES_URL/api/v1/demo/events/call"
  quiet "${TAUTH[@]}" "${JSON[@]}" -d "{\"call_id\":\"$call-f\",\"state\":\"FAILED\",\"from\":\"+1\",\"to\":\"+2\"}" \
    "$MESSAGES_URL/api/v1/demo/events/call"
  quiet "${AUTH[@]}" "${JSON[@]}" -d '{"call_id":"x","state":"INITIATED","from":"+1","to":"+2"}' \
    "$MESSAGES_URL/api/v1/demo/events/call"                                    # 403: no tenant
  local from to
  from=$(date -u -d '-2 hours' +%Y-%m-%dT%H:00:00Z)
  to=$(date -u -d '+1 hour' +%Y-%m-%dT%H:00:00Z)
  quiet "${TAUTH[@]}" "$MESSAGES_URL/api/v1/reporting/metrics?granularity=hourly&from=$from&to=$to"
  quiet "${TAUTH[@]}" "$MESSAGES_URL/api/v1/reporting/metrics?granularity=daily&from=$from&to=$to"
  quiet "${TAUTH[@]}" "$MESSAGES_URL/api/v1/reporting/calls?limit=10"
  quiet "${TAUTH[@]}" "$MESSAGES_URL/api/v1/reporting/calls?cursor=not-a-cursor" # 400
  quiet "${AUTH[@]}" "${JSON[@]}" -d "{\"body\":\"round $round\"}" "$MESSAGES_URL/api/v1/channels/$RUN/messages"
  quiet "${AUTH[@]}" "$MESSAGES_URL/api/v1/channels/$RUN/messages?limit=5"
}
gateway_round() {
  local round=$1
  quiet "${AUTH[@]}" "${JSON[@]}" -d "{\"body\":\"via gateway $round\"}" "$GATEWAY_URL/api/v1/channels/$RUN/messages"
  quiet "${AUTH[@]}" "$GATEWAY_URL/api/v1/channels/$RUN/messages?limit=5"
  quiet "${AUTH[@]}" "${JSON[@]}" -d '{"hello":1}' "$GATEWAY_URL/api/echo"
  quiet "${AUTH[@]}" "${JSON[@]}" -d '{"hello":' "$GATEWAY_URL/api/echo"          # 400
  quiet "${AUTH[@]}" "$GATEWAY_URL/api/metrics"
  quiet "${AUTH[@]}" "${JSON[@]}" -d "{\"payload\":\"s0 $round\"}" "$GATEWAY_URL/publish?subject=$RUN.s0"
  quiet "$GATEWAY_URL/healthz"
  quiet "${AUTH[@]}" "$GATEWAY_URL/api/v1/no-such-route"                          # 404
  quiet "${JSON[@]}" -d '{}' "$GATEWAY_URL/api/v1/events/$RUN.noauth"             # 401
}
interceptors_round() {
  local chain url
  for chain in full baseline validation logger tracing; do
    url="$PROTOCOL://$INTERCEPTORS_HOST:${CALL_PORT[$chain]}"
    for _ in 1 2 3; do
      quiet -k "${JSON[@]}" -H 'Connect-Protocol-Version: 1' -d '{"name":"obs"}' "$url/greeter.v1.GreeterService/SayHello"
    done
    quiet -k "$url/grpc.health.v1.Health/Check"
  done
  url="$PROTOCOL://$INTERCEPTORS_HOST:${CALL_PORT[full]}"
  quiet -k "${JSON[@]}" -H 'Connect-Protocol-Version: 1' -d '{"name":""}' "$url/greeter.v1.GreeterService/SayHello" # 400
  quiet -k "${JSON[@]}" -d '{}' "$url/greeter.v1.GreeterService/Nope"              # 404
}
rounds() {
  local round=0 deadline=$((SECONDS + OBS_LOAD_SECS))
  while ((SECONDS < deadline)); do
    round=$((round + 1))
    "$@" "$round"
    sleep 1
  done
}

# A chat user, application and chat for the rounds (the generator makes its own).
chat_token=$(curl -sSf "${JSON[@]}" -d "{\"email\":\"$RUN@example.com\",\"name\":\"obs\"}" "$CHAT_URL/api/v1/users" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])') || die "POST $CHAT_URL/api/v1/users failed"
chat_app=$(curl -sSf -H "Authorization: Bearer $chat_token" "${JSON[@]}" -d '{"name":"obs"}' "$CHAT_URL/api/v1/applications" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])') || die "POST $CHAT_URL/api/v1/applications failed"
curl -sSf -o /dev/null -X POST -H "Authorization: Bearer $chat_token" "$CHAT_URL/api/v1/applications/$chat_app/chats" ||
  die "POST a chat failed"

# A slow consumer: a subscriber that never reads, then 2 s bursts of 8 KiB events on its subject
# until the gateway closes it with 1013 — the socket's buffers (up to tcp_wmem's maximum) and then
# its WS_SEND_QUEUE (default 1024 frames) must fill first, so the number of bursts depends on the
# machine and the build (a debug gateway accepts fewer events a second): bursts repeat until the
# close, for at most OBS_SLOW_BUDGET seconds.
slow_closes() {
  curl -s --max-time 5 "$GATEWAY_URL/metrics" |
    awk '/^gateway_ws_slow_consumer_closes_total[{ ]/ { n += $NF } END { print n + 0 }'
}
slow_consumer() {
  local subject="$RUN.slow" before holder burst=0 pad started=$SECONDS deadline=$((SECONDS + OBS_SLOW_BUDGET))
  before=$(slow_closes)
  python3 "$HELPER" ws-hold "$GATEWAY_URL" "$TOKEN" "$subject" $((OBS_SLOW_BUDGET + 15)) >"$WORK_DIR/slow-holder.log" 2>&1 &
  holder=$!
  for _ in {1..50}; do
    grep -q subscribed "$WORK_DIR/slow-holder.log" && break
    sleep 0.1
  done
  pad=$(printf '%08192d' 0)
  while ((SECONDS < deadline)); do
    burst=$((burst + 1))
    "$LOADGEN_BIN" http --url "$GATEWAY_URL/api/v1/events/$subject" --method POST -H 'Content-Type: application/json' \
      --body "{\"pad\":\"$pad\"}" --token "$TOKEN" --rate 800 --duration 2s --connections 16 "${LOADGEN_COMMON[@]}" \
      >"$WORK_DIR/slow-burst.log" 2>&1 || { cat "$WORK_DIR/slow-burst.log"; kill "$holder" 2>/dev/null; return 1; }
    if (($(slow_closes) > before)); then
      echo "the gateway closed the slow consumer after $burst burst(s) of up to 1600 events ($((SECONDS - started))s)"
      kill "$holder" 2>/dev/null || true
      return 0
    fi
  done
  kill "$holder" 2>/dev/null || true
  cat "$WORK_DIR/slow-holder.log" "$WORK_DIR/slow-burst.log"
  echo "the gateway did not close a subscriber that read nothing of $burst burst(s) in ${OBS_SLOW_BUDGET}s (OBS_SLOW_BUDGET)"
  return 1
}

log "load for ${OBS_LOAD_SECS}s: WebSocket fan-out, a slow consumer, S3 endpoints, chat writes and reads, calls, reporting, S1 calls"
LOAD_START=$(date +%s)
LOADGEN_COMMON=(--progress 0 --threads 1)
spawn slow-consumer slow_consumer
spawn ws-fanout "$LOADGEN_BIN" ws --url "$GATEWAY_URL" --token "$TOKEN" --subscribers 8 --subjects 2 --rate 40 \
  --duration "${OBS_LOAD_SECS}s" --drain 1s "${LOADGEN_COMMON[@]}"
spawn s3-users "$LOADGEN_BIN" http --url "$GATEWAY_URL/api/users" --token "$TOKEN" --rate 30 \
  --duration "${OBS_LOAD_SECS}s" --connections 4 "${LOADGEN_COMMON[@]}"
spawn chat-load "$LOADGEN_BIN" chat --url "$CHAT_URL" --writes 25 --reads 25 --workers 4 --chats-per-app 2 \
  --warmup 0 --duration "${OBS_LOAD_SECS}s" --no-fail-exit "${LOADGEN_COMMON[@]}"
spawn chat-rounds rounds chat_round
spawn messages-rounds rounds messages_round
spawn gateway-rounds rounds gateway_round
spawn interceptors-rounds rounds interceptors_round
failed_parts=()
for i in "${!BACKGROUND[@]}"; do
  wait "${BACKGROUND[$i]}" || failed_parts+=("${LOAD_NAMES[$i]}")
done
BACKGROUND=()
for part in "${failed_parts[@]}"; do
  echo "--- ${part} (failed) ---" >&2
  tail -n 20 "$WORK_DIR/$part.log" >&2
done
((${#failed_parts[@]} == 0)) || die "load parts failed: ${failed_parts[*]}"
log "slow consumer: $(tail -n 1 "$WORK_DIR/slow-consumer.log")"
LOAD_END=$(date +%s)
log "load done in $((LOAD_END - LOAD_START))s; waiting for a scrape of every target and a rule evaluation after it"
python3 "$HELPER" wait-fresh "$PROM_URL" "$WORK_DIR/prometheus.yml" "$LOAD_END"

# --- every expression --------------------------------------------------------------------------------
status=0
printf '\n== PromQL expressions (dashboards and rules) against %s ==\n' "$PROM_URL"
CHECK_OBS_SUMMARY="$WORK_DIR/summary" python3 "$HELPER" evaluate "$PROM_URL" infra/grafana/dashboards services || status=1

# --- SPEC "Observability" families and promtool on each /metrics ------------------------------------
printf '\n== SPEC "Observability" metric families on the live /metrics ==\n'
family_args=()
for name in "${SERVICES[@]}"; do family_args+=("$name=${SERVICE_URL[$name]}/metrics"); done
python3 "$HELPER" families "${family_args[@]}" || status=1

printf '\n== promtool check metrics ==\n'
for name in "${SERVICES[@]}"; do
  curl -sSf -o "$WORK_DIR/$name.metrics" "${SERVICE_URL[$name]}/metrics" || die "GET ${SERVICE_URL[$name]}/metrics failed"
  if promtool check metrics <"$WORK_DIR/$name.metrics" >"$WORK_DIR/$name.promtool" 2>&1; then
    echo "ok         $name ($(grep -c '^# TYPE' "$WORK_DIR/$name.metrics") families)"
  else
    echo "FAILED     $name"
    sed 's/^/           /' "$WORK_DIR/$name.promtool"
    status=1
  fi
done

if ((status != 0)); then
  echo "check-observability: FAILED after $((SECONDS - STARTED))s (the lines above that are not ok)"
  exit 1
fi
read -r total with_data validity_only <"$WORK_DIR/summary"
echo
log "all checks passed in $((SECONDS - STARTED))s"
echo "check-observability: OK ($total expressions, $with_data with data, $validity_only validity-only)"
