#!/usr/bin/env bash
# k6-run.sh — run one of the bundled k6 scripts against the running stack, with what a large run
# needs around it: a tenant TOKEN for the scripts that ask for one (S2), the open-files limit
# raised and VU_CAP set from it (S1/S3 ramps to thousands of VUs: one socket per VU), and a Go
# memory limit so 10,000–20,000 VUs stay inside the machine's memory. Exits with k6's own status
# (99 when a threshold failed).
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: [VAR=value ...] bash scripts/k6-run.sh SCRIPT [k6 run options]

Runs `k6 run [k6 run options] SCRIPT`, e.g. loadtest/k6/call-state-updates.js or
loadtest/k6/fluxor-stress.js.

Before k6 starts:
  - TOKEN is minted when the script needs one (requireToken('TOKEN'): the S2 scripts) and unset.
  - The open-files soft limit is raised to the hard limit. k6 holds one socket per VU and the
    server one per connection, so a VU count near the limit ends in "too many open files".
    VU_CAP (exported to the script; the S1/S3 ramp scripts cap every stage to it) is
    min(soft limit, the gateway's own soft limit when its pid is known, ephemeral ports)
    minus K6_FD_RESERVE. When the script asks for more VUs than that, this says so and the run
    goes ahead capped (the script's result block and JSON say "capped" too).
  - GOMEMLIMIT (k6 is a Go program) is set to 60 % of the machine's memory when unset: k6 uses
    about 1 MB per VU with the default garbage-collector pacing, about half of it garbage; the
    limit makes the collector work harder instead of growing past it.

Env (all optional; every other variable passes through to the script as __ENV):
  TOKEN          JWT for the services (default, for the scripts that need one: minted by
                 scripts/gen-jwt.sh user-1 --tenant $TENANT_ID, signed with JWT_SECRET or dev-secret)
  TENANT_ID      the tenant of a minted TOKEN (default 00000000-0000-0000-0000-000000000000,
                 a tenant that scripts/seed-calls.sh fills)
  API_URL        the messages service (default http://127.0.0.1:8081)
  GATEWAY_URL    the gateway (default http://127.0.0.1:8080)
  VU_CAP         the most VUs a stage may have (default: from the limits above; 0 = no cap)
  K6_FD_RESERVE  files kept for everything but the VUs' sockets (default 256)
  GATEWAY_PID    the server's pid, whose open-files limit also bounds VU_CAP (default: the pid
                 file of scripts/stack.sh, STACK_DIR/gateway.pid)
  GOMEMLIMIT     k6's memory limit (default 60 % of MemTotal, e.g. 14GiB on a 24 GiB machine)
  RESULTS_DIR    where the JSON summary goes (default loadtest/results)
  SUMMARY_JSON   exact path of the JSON summary (overrides RESULTS_DIR)

Examples:
  bash scripts/k6-run.sh loadtest/k6/call-state-updates.js
  RATE=100 DURATION=10s bash scripts/k6-run.sh loadtest/k6/reporting-endpoints.js --quiet
  bash scripts/k6-run.sh loadtest/k6/load-test.js                  # S3, up to 10,000 VUs
  STRESS_VUS=5000 bash scripts/k6-run.sh loadtest/k6/fluxor-stress.js
  bash scripts/k6-run.sh loadtest/k6/interceptor-overhead.js       # S1, storm-interceptors
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
[[ -z ${VU_CAP:-} || $VU_CAP =~ ^[0-9]+$ ]] || { echo "k6-run.sh: VU_CAP must be a number of VUs, got '$VU_CAP'" >&2; exit 2; }
K6_FD_RESERVE=${K6_FD_RESERVE:-256}
[[ $K6_FD_RESERVE =~ ^[0-9]+$ ]] || { echo "k6-run.sh: K6_FD_RESERVE must be a number, got '$K6_FD_RESERVE'" >&2; exit 2; }

if grep -q "requireToken('TOKEN'" "$script" && [[ -z ${TOKEN:-} ]]; then
  TENANT_ID=${TENANT_ID:-00000000-0000-0000-0000-000000000000}
  TOKEN=$(bash scripts/gen-jwt.sh user-1 --tenant "$TENANT_ID")
  if [[ -n ${JWT_SECRET:-} ]]; then signed_with=JWT_SECRET; else signed_with=dev-secret; fi
  log "TOKEN not set: using a token for user-1 of tenant $TENANT_ID signed with $signed_with"
  export TOKEN
fi
export API_URL=${API_URL:-http://127.0.0.1:8081}
export GATEWAY_URL=${GATEWAY_URL:-http://127.0.0.1:8080}

raise_nofile
prepare_k6

# --- VU_CAP: how many VUs the open-files limits and the ephemeral ports allow ----------------------
if [[ -z ${VU_CAP:-} ]]; then
  soft=$(ulimit -Sn) hard=$(ulimit -Hn)
  cap="" why=""
  if [[ $soft != unlimited ]]; then
    cap=$((soft - K6_FD_RESERVE)) why="k6's open-files limit $soft (hard $hard)"
  fi
  gateway_pid=${GATEWAY_PID:-}
  pid_file="${STACK_DIR:-$STORM_ROOT/.stack}/gateway.pid"
  if [[ -z $gateway_pid && -f $pid_file ]]; then gateway_pid=$(<"$pid_file"); fi
  if [[ -n $gateway_pid ]] && alive "$gateway_pid"; then
    server_soft=$(awk '/^Max open files/ {print $4}' "/proc/$gateway_pid/limits" 2>/dev/null || true)
    if [[ $server_soft =~ ^[0-9]+$ ]] && { [[ -z $cap ]] || ((server_soft - K6_FD_RESERVE < cap)); }; then
      cap=$((server_soft - K6_FD_RESERVE)) why="the gateway's open-files limit $server_soft (pid $gateway_pid)"
    fi
  fi
  if read -r port_low port_high </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null; then
    ports=$((port_high - port_low + 1))
    if [[ -z $cap ]] || ((ports - K6_FD_RESERVE < cap)); then
      cap=$((ports - K6_FD_RESERVE)) why="$ports ephemeral ports ($port_low–$port_high) towards one address"
    fi
  fi
  if [[ -n $cap ]]; then
    ((cap > 0)) || die "no room for any VU: $why leaves $cap after K6_FD_RESERVE=$K6_FD_RESERVE"
    export VU_CAP=$cap
    # What the script asks for, from its own options (k6 runs its init code once, no VU starts).
    wanted=$(VU_CAP=0 k6 inspect --include-system-env-vars --execution-requirements "$script" 2>/dev/null |
      python3 -c 'import json, sys; print(json.load(sys.stdin).get("maxVUs") or "")' 2>/dev/null || true)
    if [[ $wanted =~ ^[0-9]+$ ]] && ((wanted > VU_CAP)); then
      warn "$(basename "$script") asks for $wanted VUs: that needs $wanted sockets in k6 and as many in the gateway," \
        "but $why allows $cap after $K6_FD_RESERVE kept for other files. The run is CAPPED at VU_CAP=$VU_CAP VUs." \
        "To run it whole, raise the hard open-files limit of both processes (loadtest/k6/README-S1-S3.md)."
    else
      log "VU_CAP=$VU_CAP (${why}, $K6_FD_RESERVE kept for other files)${wanted:+; the script asks for at most $wanted VUs}"
    fi
  fi
fi

# --- memory: a Go soft limit, so the garbage of 20,000 VUs does not outgrow the machine --------------
if [[ -z ${GOMEMLIMIT:-} ]]; then
  mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null || true)
  if [[ $mem_kib =~ ^[0-9]+$ ]]; then
    export GOMEMLIMIT="$((mem_kib * 6 / 10 / 1024))MiB"
  fi
fi

exec k6 run "$@" "$script"
