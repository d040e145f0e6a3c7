#!/usr/bin/env python3
"""Offline checks of the rendered Kubernetes manifests (run by scripts/check-k8s.sh, which renders
them with `kubectl kustomize` and installs what this needs: kubernetes-validate, PyYAML, jsonschema).

What it proves, without a cluster:
  1. Every object validates against the Kubernetes OpenAPI schemas of each requested version, in
     strict mode (an unknown or misspelt field is an error), from the schemas kubernetes-validate
     ships (no network).
  2. The k6-operator TestRun validates against infra/k6-operator/testrun.schema.json (strict, core
     types by $ref into the same Kubernetes schemas).
  3. What a schema cannot see: each service's environment holds only variables that binary reads
     (found in its crate's source), JWT_SECRET comes from a Secret, each command is a [[bin]] of the
     workspace, probes/Services/annotations name ports that exist, autoscalers and disruption
     budgets point at workloads, the grace period outlasts the drain, the pods run as the image's
     non-root user; signing secrets come from a Secret, and a render whose secrets are development
     ones sets STORM_DEV=1 while a prod render never sets it; a NetworkPolicy selects every service
     pod, admits its pprof and metrics-only ports from the `monitoring` namespace only and its API
     ports from the whole cluster; the TestRun's script volume holds every file the scripts import and its env
     names variables the scripts read.

The one thing a reader must not break: every failure is collected and printed, one line each,
naming the render, the object and the field; exit status 1 if there was any.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import tomllib
from pathlib import Path

import importlib_resources
import jsonschema
import referencing
import yaml
from kubernetes_validate.utils import all_versions

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# The repository part of an image reference is lower case; the tag may not be.
IMAGE_REF = re.compile(r"^[a-z0-9]+([._/:-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$")

# How a service reads a variable: common::config::Lookup's methods, the interceptor chains'
# per-chain listen variables, and tracing's EnvFilter (RUST_LOG).
LOOKUP_CALL = re.compile(
    r'\.(?:required|secret|string|parse|bounded|addr|optional_addr|url)(?:::<[^>]*>)?\(\s*"([A-Z][A-Z0-9_]*)"'
)
# A local helper taking the name first and a default after it (`millis("IDLE_TIMEOUT_MS", 60_000, …)`
# in common::config, wrapping a Lookup method).
HELPER_CALL = re.compile(r'\b[a-z_][a-z0-9_]*\(\s*"([A-Z][A-Z0-9_]*)"\s*,')
# The same with a constant for the name (`self.raw(DEV_FLAG)`), resolved through `const X: &str = "…"`.
LOOKUP_CONST_CALL = re.compile(
    r"\.(?:raw|required|secret|string|parse|bounded|addr|optional_addr|url)(?:::<[^>]*>)?\(\s*([A-Z][A-Z0-9_]*)\s*[,)]"
)
STR_CONST = re.compile(r'\bconst\s+([A-Z][A-Z0-9_]*)\s*:\s*&(?:\'static\s+)?str\s*=\s*"([A-Z][A-Z0-9_]*)"\s*;')
# Signing keys: only in a Secret, and refused at start outside STORM_DEV=1 when weak.
SECRET_KEYS = ("JWT_SECRET", "QUEUE_SIGNING_KEY")
DEV_SECRET = "dev-secret"
MIN_SECRET_BYTES = 32
# Who may reach the debug and metrics-only ports: pods in this namespace only.
MONITORING_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
# Binaries whose HTTP_ADDR serves only health, ready and metrics (no API).
METRICS_ONLY_HTTP = {"storm-writer", "storm-interceptors"}
CHAIN_VARIABLE = re.compile(r'Chain::\w+\s*=>\s*"([A-Z][A-Z0-9_]*_ADDR)"')
# How a k6 script reads one: lib/common.js's env helpers.
K6_ENV_CALL = re.compile(
    r"\b(?:env|envInt|envNumber|envBool|envDuration|envChoice|baseUrl|requireToken|summaryPath)\(\s*'([A-Z][A-Z0-9_]*)'"
)
K6_RELATIVE_IMPORT = re.compile(r"""(?:from|import)\s*['"](\.{1,2}/[^'"]+)['"]""")
# Variables the k6 binary itself (and the Go runtime under it) reads.
K6_RUNTIME_ENV = re.compile(r"^(K6_[A-Z0-9_]+|GOMEMLIMIT|GOGC|GOMAXPROCS)$")
# The Secret the prod overlay expects to exist (never rendered); any other reference must resolve.
EXTERNAL_SECRETS = {"stormstack-secrets"}
UID = 10001


class Report:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")


# --------------------------------------------------------------------------------------------
# The workspace: binaries and the variables each one reads


def workspace_binaries(repo: Path) -> dict[str, list[Path]]:
    """[[bin]] name -> the source directories whose variables that binary may read."""
    root = tomllib.loads((repo / "Cargo.toml").read_text())
    ws_paths = {
        name: repo / spec["path"]
        for name, spec in root["workspace"].get("dependencies", {}).items()
        if isinstance(spec, dict) and "path" in spec
    }

    def crate_dirs(crate: Path, seen: set[Path]) -> list[Path]:
        if crate in seen:
            return []
        seen.add(crate)
        dirs = [crate / "src"]
        manifest = tomllib.loads((crate / "Cargo.toml").read_text())
        for dep in manifest.get("dependencies", {}):
            if dep in ws_paths:
                dirs += crate_dirs(ws_paths[dep], seen)
        return dirs

    bins: dict[str, list[Path]] = {}
    bin_crates: set[Path] = set()
    for member in root["workspace"]["members"]:
        crate = repo / member
        manifest = tomllib.loads((crate / "Cargo.toml").read_text())
        for b in manifest.get("bin", []):
            bins[b["name"]] = crate_dirs(crate, set())
            bin_crates.add(crate / "src")
    # dirs[0] is the binary's own crate; the libraries it uses other than common and other binaries'
    # crates (writer uses chat's types) count as its own configuration too (chat and writer read
    # QUEUE_SIGNING_KEY in services/queue).
    for name, dirs in bins.items():
        OWN_DIRS[name] = {dirs[0]} | {d for d in dirs[1:] if d not in bin_crates and d.parent.name != "common"}
    return bins


OWN_DIRS: dict[str, set[Path]] = {}


def _code(f: Path) -> str:
    """A source file without its unit tests (a test's `required("JWT_SECRET")` is no read)."""
    return re.split(r"#\[cfg\(test\)\]\s*mod tests\b", f.read_text())[0]


def variables_read(dirs: list[Path]) -> set[str]:
    names: set[str] = set()
    texts = [_code(f) for d in dirs for f in d.rglob("*.rs")]
    consts = {k: v for text in texts for k, v in STR_CONST.findall(text)}
    for text in texts:
        names |= set(LOOKUP_CALL.findall(text)) | set(CHAIN_VARIABLE.findall(text)) | set(HELPER_CALL.findall(text))
        names |= {consts[c] for c in LOOKUP_CONST_CALL.findall(text) if c in consts}
        if "from_default_env" in text:
            names.add("RUST_LOG")
    return names


def requires_secret(dirs: list[Path], name: str, own: set[Path]) -> bool:
    """The binary's own crate, or a library crate it uses (not common, not another binary's crate),
    requires NAME (`.required("NAME")` or `.secret("NAME")`)."""
    rx = re.compile(rf'\.(?:required|secret)\(\s*"{name}"')
    return any(rx.search(_code(f)) for d in dirs if d in own for f in d.rglob("*.rs"))


# --------------------------------------------------------------------------------------------
# Schemas


class Schemas:
    """Strict Kubernetes schemas of one version, loaded once, as kubernetes-validate lays them out."""

    def __init__(self, version: str) -> None:
        available = [v for v in all_versions() if tuple(map(int, v.split(".")[:2])) <= tuple(map(int, version.split(".")[:2]))]
        if not available:
            raise SystemExit(f"kubernetes-validate has no schemas for Kubernetes {version}")
        self.version = available[-1]
        self.dir = importlib_resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{self.version}-local-strict"
        definitions = json.loads((self.dir / "_definitions.json").read_text())
        self.registry = referencing.Resource.from_contents(definitions) @ referencing.Registry()
        self.cache: dict[str, dict | None] = {}

    def for_object(self, obj: dict) -> dict | None:
        group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", obj["apiVersion"])
        name = f"{obj['kind'].lower()}-{group_version}.json"
        if name not in self.cache:
            path = self.dir / name
            self.cache[name] = json.loads(path.read_text()) if path.is_file() else None
        return self.cache[name]

    def errors(self, schema: dict, obj: dict) -> list[str]:
        validator = jsonschema.Draft202012Validator(schema, registry=self.registry)
        out = []
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
            path = ".".join(map(str, e.absolute_path)) or "(root)"
            out.append(f"{path}: {e.message}")
        return out


# --------------------------------------------------------------------------------------------
# Checks of one render


def ident(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def pod_spec(obj: dict) -> dict | None:
    if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def pod_labels(obj: dict) -> dict:
    return obj["spec"]["template"].get("metadata", {}).get("labels", {})


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_render(label: str, objs: list[dict], ctx: dict, report: Report) -> dict:
    stats = {"objects": len(objs), "names": set(), "bins": set()}
    ctx = {**ctx, "label": label}
    by_kind: dict[str, dict[str, dict]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o

    # Names and references the API server would reject, which a schema does not check.
    for o in objs:
        where = f"{label} {ident(o)}"
        name = o["metadata"]["name"]
        pattern = DNS1035_LABEL if o["kind"] == "Service" else DNS1123_SUBDOMAIN
        if not pattern.match(name):
            report.fail(where, f"metadata.name {name!r} is not a valid {o['kind']} name")
        if o["kind"] == "Service" and o["spec"].get("type") == "ExternalName":
            if not DNS1123_SUBDOMAIN.match(o["spec"].get("externalName", "")):
                report.fail(where, f"externalName {o['spec'].get('externalName')!r} is not a DNS name")
        spec = pod_spec(o)
        for c in (spec or {}).get("containers", []):
            if not IMAGE_REF.match(c.get("image", "")):
                report.fail(where, f"container {c['name']}: image {c.get('image')!r} is not a valid reference (repository in lower case)")

    workloads = [o for o in objs if pod_spec(o) is not None]
    readers: dict[tuple[str, str], set[str]] = {}  # (ConfigMap|Secret, name) -> binaries using it

    for o in workloads:
        where = f"{label} {ident(o)}"
        spec = pod_spec(o)
        containers = spec["containers"]
        port_names = {p.get("name") for c in containers for p in c.get("ports", [])}
        port_numbers = {p["containerPort"] for c in containers for p in c.get("ports", [])}

        # Probes name ports that exist.
        for c in containers:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port") or c.get(probe, {}).get("tcpSocket", {}).get("port")
                if isinstance(port, str) and port not in port_names:
                    report.fail(where, f"{c['name']}.{probe} uses port {port!r}, which no container declares")

        # Prometheus scrape annotations point at a declared port.
        annotations = o["spec"]["template"].get("metadata", {}).get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            port = annotations.get("prometheus.io/port", "")
            if not port.isdigit() or int(port) not in port_numbers:
                report.fail(where, f"prometheus.io/port {port!r} is not a container port")
            if not annotations.get("prometheus.io/path", "").startswith("/"):
                report.fail(where, "prometheus.io/path must be an absolute path")

        for c in containers:
            command = c.get("command") or []
            if not command or not command[0].startswith("storm-"):
                continue
            binary = command[0]
            stats["bins"].add(binary)
            if binary not in ctx["bins"]:
                report.fail(where, f"command {binary!r} is not a [[bin]] of the workspace (have: {', '.join(sorted(ctx['bins']))})")
                continue
            check_service_env(f"{where} {c['name']}", o, spec, c, binary, by_kind, ctx, report, stats, readers)
            check_service_pod(f"{where} {c['name']}", spec, c, report)

    # A ConfigMap or Secret used by one service holds only what that service reads; one shared by
    # several (stormstack-common) holds only what at least one of them reads.
    for (kind, name), binaries in sorted(readers.items()):
        source = by_kind.get(kind, {}).get(name)
        if source is None:
            continue
        allowed = set().union(*(ctx["reads"][b] for b in binaries))
        for key in list(source.get("data", {})) + list(source.get("stringData", {})):
            stats["names"].add(key)
            if key not in allowed:
                report.fail(f"{label} {kind}/{name}", f"{key} is read by none of {', '.join(sorted(binaries))} (a typo, or a variable that was removed)")
            if key in SECRET_KEYS and kind == "ConfigMap":
                report.fail(f"{label} {kind}/{name}", f"holds {key}: it belongs in a Secret")

    # Services select pods and name their ports.
    for svc in by_kind.get("Service", {}).values():
        where = f"{label} {ident(svc)}"
        selector = svc["spec"].get("selector")
        if svc["spec"].get("type") == "ExternalName":
            continue
        targets = [w for w in workloads if selects(selector, pod_labels(w))]
        if not targets:
            report.fail(where, f"selector {selector} matches no pod template")
            continue
        names = {p.get("name") for w in targets for c in pod_spec(w)["containers"] for p in c.get("ports", [])}
        for p in svc["spec"].get("ports", []):
            target = p.get("targetPort", p["port"])
            if isinstance(target, str) and target not in names:
                report.fail(where, f"targetPort {target!r} is no container port of the pods it selects")

    # Disruption budgets and autoscalers point at workloads.
    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        selector = pdb["spec"]["selector"].get("matchLabels", {})
        if not any(selects(selector, pod_labels(w)) for w in workloads):
            report.fail(f"{label} {ident(pdb)}", f"selector {selector} matches no pod template")
    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        ref = hpa["spec"]["scaleTargetRef"]
        target = by_kind.get(ref["kind"], {}).get(ref["name"])
        where = f"{label} {ident(hpa)}"
        if target is None:
            report.fail(where, f"scaleTargetRef {ref['kind']}/{ref['name']} is not in this render")
        elif "replicas" in target["spec"]:
            report.fail(where, f"{ref['kind']}/{ref['name']} sets spec.replicas, which would reset the autoscaler on every apply")
        if hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
            report.fail(where, "minReplicas > maxReplicas")

    for tr in by_kind.get("TestRun", {}).values():
        check_testrun(f"{label} {ident(tr)}", tr, by_kind, ctx, report)
    return stats


def resolve_env(c: dict, by_kind: dict, where: str, report: Report) -> tuple[dict[str, str], bool]:
    """The container's environment as the kubelet builds it: envFrom in order (the last source of a
    key wins), then env. Returns (values, whether it also reads an external Secret)."""
    values: dict[str, str] = {}
    external_secret = False
    for src in c.get("envFrom", []):
        if "configMapRef" in src:
            name = src["configMapRef"]["name"]
            cm = by_kind.get("ConfigMap", {}).get(name)
            if cm is None:
                report.fail(where, f"envFrom ConfigMap {name!r} is not in this render")
                continue
            values.update(cm.get("data", {}))
        elif "secretRef" in src:
            name = src["secretRef"]["name"]
            secret = by_kind.get("Secret", {}).get(name)
            if secret is None:
                if name in EXTERNAL_SECRETS:
                    external_secret = True
                else:
                    report.fail(where, f"envFrom Secret {name!r} is neither in this render nor an expected external Secret")
                continue
            for k in list(secret.get("data", {})) + list(secret.get("stringData", {})):
                values[k] = "<secret>"
    for e in c.get("env", []):
        values[e["name"]] = e.get("value", "<ref>")
    return values, external_secret


def secret_value(c: dict, by_kind: dict, key: str) -> str | None:
    """KEY's value from the last rendered Secret in the container's envFrom that holds it."""
    value = None
    for src in c.get("envFrom", []):
        secret = by_kind.get("Secret", {}).get(src.get("secretRef", {}).get("name", ""))
        if secret is None:
            continue
        if key in secret.get("stringData", {}):
            value = secret["stringData"][key]
        elif key in secret.get("data", {}):
            value = base64.b64decode(secret["data"][key]).decode(errors="replace")
    return value


def _port_matches(rule_port: dict, number: int, name: str | None) -> bool:
    port = rule_port.get("port")
    if port is None:
        return True
    if isinstance(port, str):
        return port == name
    return port <= number <= rule_port.get("endPort", port)


def check_network_policy(where: str, o: dict, c: dict, binary: str, values: dict, by_kind: dict, report: Report) -> None:
    """Ingress to a service pod: pprof and metrics-only ports from the monitoring namespace only,
    API ports from the whole cluster (as with no policy)."""
    labels = pod_labels(o)
    policies = [
        p for p in by_kind.get("NetworkPolicy", {}).values()
        if "Ingress" in p["spec"].get("policyTypes", ["Ingress"]) and selects(p["spec"]["podSelector"].get("matchLabels", {}), labels)
    ]
    if not policies:
        report.fail(where, "no NetworkPolicy (Ingress) selects this pod: its pprof and metrics ports are open to every pod")
        return
    pprof = values.get("PPROF_ADDR", "")
    if not pprof or pprof in ("<secret>", "<ref>"):
        report.fail(where, "PPROF_ADDR must be set explicitly in its ConfigMap (the binary's default is loopback-only)")
    restricted = {int(pprof.rpartition(":")[2])} if pprof.rpartition(":")[2].isdigit() else set()
    http = values.get("HTTP_ADDR", "").rpartition(":")[2]
    if binary in METRICS_ONLY_HTTP and http.isdigit():
        restricted.add(int(http))
    for p in c.get("ports", []):
        number, name = p["containerPort"], p.get("name")
        peers = [
            peer
            for pol in policies
            for rule in pol["spec"].get("ingress") or []
            if not rule.get("ports") or any(_port_matches(rp, number, name) for rp in rule["ports"])
            for peer in (rule.get("from") or [{}])  # no `from`: every source
        ]
        if number in restricted:
            if not peers:
                report.fail(where, f"port {number} ({name}): no NetworkPolicy rule admits it, not even from monitoring")
            for peer in peers:
                if {k: v for k, v in peer.items() if k != "podSelector"} != MONITORING_PEER:
                    report.fail(where, f"port {number} ({name}) is pprof or metrics-only and a NetworkPolicy admits it from {peer or 'anywhere'} (only the monitoring namespace may)")
        elif not any(peer == {"namespaceSelector": {}} or peer == {} for peer in peers):
            report.fail(where, f"API port {number} ({name}): no NetworkPolicy rule admits it from the whole cluster (namespaceSelector: {{}})")


def check_service_env(
    where: str, o: dict, spec: dict, c: dict, binary: str, by_kind: dict, ctx: dict, report: Report, stats: dict,
    readers: dict[tuple[str, str], set[str]],
) -> None:
    values, external_secret = resolve_env(c, by_kind, where, report)
    for src in c.get("envFrom", []):
        for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if field in src:
                readers.setdefault((kind, src[field]["name"]), set()).add(binary)
    for e in c.get("env", []):
        stats["names"].add(e["name"])
        if e["name"] not in ctx["reads"][binary]:
            report.fail(where, f"env sets {e['name']}, which {binary} never reads (a typo, or a variable that was removed)")
    for key in sorted(ctx["needs"][binary]):
        if key not in values and not external_secret:
            report.fail(where, f"{binary} requires {key} and no Secret in its envFrom provides it")
    # The development flag: never in prod; wherever the secrets are development ones, set, or the
    # service refuses to start (common::config::Lookup::secret).
    dev = values.get("STORM_DEV", "")
    if ctx["label"].startswith("prod") and "STORM_DEV" in values:
        report.fail(where, f"STORM_DEV={dev} in a prod render: the production overlay must not set the development flag")
    for key in sorted(ctx["needs"][binary]):
        value = secret_value(c, by_kind, key)
        if value is not None and (value == DEV_SECRET or len(value.encode()) < MIN_SECRET_BYTES) and dev not in ("1", "true"):
            report.fail(where, f"{key} is a development or short secret and STORM_DEV is not 1: {binary} would refuse to start")
    check_network_policy(where, o, c, binary, values, by_kind, report)

    # Listeners bind every interface of the pod, on the ports the pod declares.
    ports = {p["containerPort"] for p in c.get("ports", [])}
    for name, value in values.items():
        if name.endswith("_ADDR") and value not in ("", "<secret>", "<ref>"):
            host, _, port = value.rpartition(":")
            if host not in ("", "0.0.0.0", "[::]"):
                report.fail(where, f"{name}={value} binds {host!r}: other pods (and probes) could not reach it")
            if port.isdigit() and int(port) not in ports:
                report.fail(where, f"{name}={value}: port {port} is not a containerPort")

    # The drain must end before the kubelet's SIGKILL.
    grace_secs = int(values.get("SHUTDOWN_GRACE_SECS") or 10)
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    period = spec.get("terminationGracePeriodSeconds", 30)
    if period <= grace_secs + pre_stop:
        report.fail(where, f"terminationGracePeriodSeconds {period} <= SHUTDOWN_GRACE_SECS {grace_secs} + preStop sleep {pre_stop}")


def check_service_pod(where: str, spec: dict, c: dict, report: Report) -> None:
    pod_sc = spec.get("securityContext", {})
    sc = c.get("securityContext", {})
    if not (pod_sc.get("runAsNonRoot") and pod_sc.get("runAsUser") == UID):
        report.fail(where, f"pod must run as non-root uid {UID} (the image's user)")
    if sc.get("allowPrivilegeEscalation") is not False:
        report.fail(where, "allowPrivilegeEscalation must be false")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        report.fail(where, "capabilities must drop ALL")
    if sc.get("readOnlyRootFilesystem") is not True:
        report.fail(where, "readOnlyRootFilesystem must be true")
    if not any(m.get("mountPath") == "/tmp" for m in c.get("volumeMounts", [])):
        report.fail(where, "/tmp must be a writable volume (the heap profile is dumped there)")
    for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        if c.get(probe, {}).get("httpGet", {}).get("path") != path:
            report.fail(where, f"{probe} must GET {path}")
    if "limits" not in c.get("resources", {}) or "requests" not in c.get("resources", {}):
        report.fail(where, "resources need requests and limits")


def check_testrun(where: str, tr: dict, by_kind: dict, ctx: dict, report: Report) -> None:
    spec = tr["spec"]
    runner = spec.get("runner", {})
    initializer = spec.get("initializer")
    # The initializer evaluates the options (stages, VUs) from the same script and env as the runners.
    if initializer is not None:
        for field in ("env", "volumes", "volumeMounts"):
            if initializer.get(field) != runner.get(field):
                report.fail(where, f"initializer.{field} differs from runner.{field}: the initializer would plan a different test")

    # The script volume: ConfigMap items <-> files under loadtest/k6, and every import resolvable.
    k6_dir: Path = ctx["repo"] / "loadtest" / "k6"
    projected: dict[str, str] = {}  # path in the pod -> text
    for vol in runner.get("volumes", []):
        cm_ref = vol.get("configMap")
        if not cm_ref:
            continue
        mounts = [m["mountPath"] for m in runner.get("volumeMounts", []) if m["name"] == vol["name"]]
        cm = by_kind.get("ConfigMap", {}).get(cm_ref["name"])
        if cm is None:
            report.fail(where, f"volume {vol['name']}: ConfigMap {cm_ref['name']!r} is not in this render")
            continue
        data = cm.get("data", {})
        items = cm_ref.get("items") or [{"key": k, "path": k} for k in data]
        if {i["key"] for i in items} != set(data):
            missing = sorted(set(data) - {i["key"] for i in items})
            unknown = sorted({i["key"] for i in items} - set(data))
            report.fail(where, f"volume {vol['name']} items and ConfigMap keys differ (not projected: {missing}; no such key: {unknown})")
        for item in items:
            if item["key"] not in data:
                continue
            source = k6_dir / item["path"]
            if not source.is_file() or source.read_text() != data[item["key"]]:
                report.fail(where, f"item {item['key']} -> {item['path']}: not the content of loadtest/k6/{item['path']}")
            for mount in mounts:
                projected[f"{mount.rstrip('/')}/{item['path']}"] = data[item["key"]]

    local_file = spec["script"].get("localFile")
    if local_file and local_file not in projected:
        report.fail(where, f"script.localFile {local_file} is not a file of the script volume")
    for path, text in projected.items():
        for rel in K6_RELATIVE_IMPORT.findall(text):
            target = _normalise(Path(path).parent, rel)
            if target not in projected:
                report.fail(where, f"{path} imports {rel}, which is not in the script volume")

    read_by_scripts = set()
    for text in projected.values():
        read_by_scripts |= set(K6_ENV_CALL.findall(text))
    for e in runner.get("env", []):
        if e["name"] not in read_by_scripts and not K6_RUNTIME_ENV.match(e["name"]):
            report.fail(where, f"runner env {e['name']} is read by no script (lib/common.js env helpers) and is no k6/Go variable")


def _normalise(directory: Path, rel: str) -> str:
    parts: list[str] = []
    for part in (str(directory) + "/" + rel).split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return "/" + "/".join(parts)


# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--k8s-versions", required=True, help="comma-separated, e.g. 1.30,1.37")
    ap.add_argument("--testrun-schema", type=Path, required=True)
    ap.add_argument("renders", nargs="+", help="LABEL=FILE: a rendered multi-document YAML")
    args = ap.parse_args()

    report = Report()
    bins = workspace_binaries(args.repo)
    ctx = {
        "repo": args.repo,
        "bins": bins,
        "reads": {b: variables_read(dirs) for b, dirs in bins.items()},
        "needs": {b: {k for k in SECRET_KEYS if requires_secret(dirs, k, OWN_DIRS[b])} for b, dirs in bins.items()},
    }
    schemas = [Schemas(v) for v in args.k8s_versions.split(",")]
    testrun_schema = json.loads(args.testrun_schema.read_text())

    total_objects = testruns = 0
    names: set[str] = set()
    bins_used: set[str] = set()
    for render in args.renders:
        label, _, file = render.partition("=")
        objs = [o for o in yaml.safe_load_all(Path(file).read_text()) if o]
        for o in objs:
            where = f"{label} {ident(o)}"
            for s in schemas:
                if o["kind"] == "TestRun":
                    testruns += 1
                    errors = s.errors(testrun_schema, o)
                else:
                    schema = s.for_object(o)
                    if schema is None:
                        report.fail(where, f"no Kubernetes {s.version} schema for {o['apiVersion']} {o['kind']}")
                        continue
                    errors = s.errors(schema, o)
                for err in errors:
                    report.fail(f"{where} (Kubernetes {s.version})", err)
        stats = check_render(label, objs, ctx, report)
        total_objects += stats["objects"]
        bins_used |= stats["bins"]
        names |= stats["names"]
        print(f"  {label}: {stats['objects']} objects, {len(stats['names'])} service variables checked", flush=True)

    if report.errors:
        for e in report.errors:
            print(f"FAIL {e}")
        print(f"check-k8s: FAILED ({len(report.errors)} problems)")
        return 1
    versions = "/".join(s.version.rsplit(".", 1)[0] for s in schemas)
    print(
        f"check-k8s: OK ({len(args.renders)} renders, {total_objects} objects strict-valid on Kubernetes {versions}, "
        f"{testruns // len(schemas)} TestRun on the k6-operator schema, {len(names)} variables all read by "
        f"their services, {len(bins_used)} binaries all workspace [[bin]]s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
