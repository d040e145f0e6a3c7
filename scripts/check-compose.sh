#!/usr/bin/env bash
# check-compose.sh — validate Dockerfile, .dockerignore and docker-compose.yml offline, without a
# Docker engine: what `docker compose up` would otherwise reveal only at run time. Installs
# docker-compose (v1, from PyPI) into a cache directory on first use; afterwards it takes seconds.
#
# Checked: the compose file parses and validates (every profile); every bind-mounted host path
# exists; the files the containers are told to read through those mounts exist (Prometheus config
# and rules, Grafana provisioning, the k6 script); every URL a container is given points at a
# compose service and a port it listens on; each service waits (service_healthy) for what it needs;
# every Dockerfile COPY source exists and survives .dockerignore, and so does every file the build
# reads; every binary run is a real [[bin]] of the workspace; every variable in the shared env
# block is one a service reads and every required one is set; listeners bind all interfaces and are
# published once, on the host's 127.0.0.1 only; health checks use tools their image has; images are
# pinned; JWT_SECRET matches the scripts' development secret and STORM_DEV=1 lets the services take
# it; chat and writer share one QUEUE_SIGNING_KEY of 32+ bytes; no JWT is committed in the file: the
# k6 profile's token is minted at start (the mint is run here and its token verified); and the
# host-side scripts' default URLs (k6 perf-load, run-performance-test.sh, audit-chat.sh,
# seed-calls.sh) are served by the stack.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/check-compose.sh

Validates Dockerfile, .dockerignore and docker-compose.yml without a Docker engine. Prints one
line per problem and exits 1 if there is any; else prints `check-compose: OK (...)`.

Env:
  STORM_CACHE_DIR   where docker-compose is installed (default ${XDG_CACHE_HOME:-~/.cache}/stormstack)
USAGE
}
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) echo "check-compose.sh: unexpected argument '$1' (see --help)" >&2; exit 2 ;;
esac

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$STORM_ROOT"

# --- docker-compose 1.29.2 from PyPI, in a venv of its own ------------------------------------------
# docker-compose 1.29.2 requires PyYAML<6. PyYAML 5.4.1 has no wheel for Python 3.10+, and its sdist
# no longer builds in pip's isolated build environment (that environment pulls Cython 3, which
# 5.4.1's setup.py cannot use). Built with --no-build-isolation against the venv's own setuptools,
# it compiles (with libyaml when present, pure Python otherwise). The rest is installed --no-deps
# with exact versions: docker[ssh]'s paramiko/cryptography are not needed to read a compose file.
COMPOSE_VERSION=1.29.2
BUILD_PINS=("setuptools>=65,<81" "wheel==0.45.1")
PYYAML_PIN="pyyaml==5.4.1"
COMPOSE_PINS=(
  "docker-compose==$COMPOSE_VERSION" "docker==7.2.0" "dockerpty==0.4.1" "docopt==0.6.2"
  "jsonschema==3.2.0" "attrs==26.1.0" "pyrsistent==0.20.0" "six==1.17.0" "python-dotenv==0.21.1"
  "requests==2.34.2" "urllib3==2.8.0" "idna==3.20" "certifi==2026.10.19.post1"
  "charset-normalizer==3.5.3" "texttable==1.7.2" "websocket-client==0.59.0" "distro==1.9.0"
)
VENV="$STORM_CACHE_DIR/docker-compose-$COMPOSE_VERSION"

install_compose() {
  local stamp="$VENV/.stormstack-pins" want started=$SECONDS
  want=$(printf '%s\n' "${BUILD_PINS[@]}" "$PYYAML_PIN" "${COMPOSE_PINS[@]}")
  if [[ -x $VENV/bin/docker-compose && -f $stamp && $(<"$stamp") == "$want" ]]; then
    return 0
  fi
  log "installing docker-compose $COMPOSE_VERSION from PyPI into $VENV (first run only)"
  new_venv "$VENV"
  local pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input)
  "${pip[@]}" "${BUILD_PINS[@]}" || die "pip install ${BUILD_PINS[*]} failed"
  "${pip[@]}" --no-build-isolation "$PYYAML_PIN" || die "pip install --no-build-isolation $PYYAML_PIN failed"
  "${pip[@]}" --no-deps "${COMPOSE_PINS[@]}" || die "pip install docker-compose $COMPOSE_VERSION failed"
  "$VENV/bin/docker-compose" version >/dev/null || die "docker-compose does not run from $VENV"
  printf '%s' "$want" >"$stamp"
  log "docker-compose $COMPOSE_VERSION installed in $((SECONDS - started))s"
}
install_compose

# --- the compose file as an engine would see it -----------------------------------------------------
# A clean environment and an empty env file: what is checked is the file's own defaults, not this
# shell's overrides or a developer's .env.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-compose.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
: >"$WORK/empty.env"
compose() {
  env -i PATH="$PATH" HOME="${HOME:-/root}" "$VENV/bin/docker-compose" --env-file "$WORK/empty.env" \
    -f docker-compose.yml "$@"
}
compose config -q || die "docker-compose config rejects docker-compose.yml (default profile)"
PROFILES=$("$VENV/bin/python" -c '
import sys, yaml
services = yaml.safe_load(open(sys.argv[1]))["services"]
print(" ".join(sorted({p for s in services.values() for p in (s or {}).get("profiles", [])})))
' docker-compose.yml)
profile_args=()
for profile in $PROFILES; do profile_args+=(--profile "$profile"); done
compose "${profile_args[@]}" config -q || die "docker-compose config rejects docker-compose.yml (profiles: $PROFILES)"
compose "${profile_args[@]}" config >"$WORK/resolved.yml"
# Compose v2 validates against the newer spec: use it too where the plugin is installed.
v2=""
if docker compose version >/dev/null 2>&1; then
  env -i PATH="$PATH" HOME="${HOME:-/root}" docker compose --env-file "$WORK/empty.env" -f docker-compose.yml \
    "${profile_args[@]}" config -q || die "docker compose (v2) config rejects docker-compose.yml"
  v2=", docker compose v2"
fi

# --- the checks -----------------------------------------------------------------------------------
"$VENV/bin/python" - "$WORK/resolved.yml" "$COMPOSE_VERSION$v2" "$PROFILES" <<'PY'
import base64, hashlib, hmac, json, os, re, subprocess, sys, time
import yaml

resolved_path, compose_version, profiles = sys.argv[1], sys.argv[2], sys.argv[3].split()
ROOT = os.getcwd()
errors, warnings = [], []
checks = 0


def check(ok, message):
    global checks
    checks += 1
    if not ok:
        errors.append(message)
    return ok


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


cfg = yaml.safe_load(open(resolved_path))
raw = yaml.safe_load(read("docker-compose.yml"))
services = cfg["services"]

# ---- the workspace: packages, binaries, what each service crate reads ---------------------------
try:
    import tomllib
except ImportError:  # Python < 3.11: the few keys needed, by pattern
    tomllib = None


def load_toml(path):
    text = read(path)
    if tomllib:
        return tomllib.loads(text)
    data, table, arrays = {}, data, {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if m := re.fullmatch(r"\[\[([\w.-]+)\]\]", line):
            table = {}
            data.setdefault(m[1], []).append(table)
        elif m := re.fullmatch(r"\[([\w.\"-]+)\]", line):
            table = data.setdefault(m[1], {})
        elif m := re.fullmatch(r'(\w[\w-]*)\s*=\s*"([^"]*)"', line):
            table[m[1]] = m[2]
    if "workspace" in data:
        data["workspace"]["members"] = re.findall(r'"([^"]+)"', re.search(r"members\s*=\s*\[([^\]]*)\]", text)[1])
    return data


workspace = load_toml("Cargo.toml")
members = workspace["workspace"]["members"]
packages, bins = {}, {}  # package name → dir; bin name → package
for member in members:
    manifest = load_toml(f"{member}/Cargo.toml")
    name = manifest["package"]["name"]
    packages[name] = member
    for b in manifest.get("bin", []):
        bins[b["name"]] = name
    if not manifest.get("bin") and os.path.exists(f"{member}/src/main.rs"):
        bins[name] = name


def rust_sources(directory):
    """The crate's Rust code without its unit tests (a test's `required("JWT_SECRET")` is no read)."""
    out = []
    for base, _, files in os.walk(directory):
        out += [re.split(r"#\[cfg\(test\)\]\s*mod tests\b", read(os.path.join(base, f)))[0] for f in files if f.endswith(".rs")]
    return "\n".join(out)


# A service reads through the workspace crates it depends on (common, queue, …): follow the path
# dependencies of [workspace.dependencies], e.g. chat and writer read QUEUE_SIGNING_KEY in services/queue.
WS_PATHS = dict(re.findall(r'^([\w-]+)\s*=\s*\{[^}\n]*\bpath\s*=\s*"([^"]+)"', read("Cargo.toml"), re.M))


def crate_closure(directory, seen):
    if directory in seen:
        return []
    seen.add(directory)
    text = read(f"{directory}/Cargo.toml")
    deps = re.search(r"^\[dependencies\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    out = [directory]
    for dep in re.findall(r"^([\w-]+)(?:\.workspace)?\s*=", deps[1] if deps else "", re.M):
        if dep in WS_PATHS:
            out += crate_closure(WS_PATHS[dep], seen)
    return out


SERVICE_CRATES = ["gateway", "messages", "chat", "writer", "interceptors"]
# Per service: its own code and every workspace library crate it depends on but common (read once,
# below), so a variable `.required`/`.secret` there counts as required by that service.
# Another service's crate (writer uses chat's types) is a library there, not its configuration.
crate_dirs = {c: [d for d in crate_closure(f"services/{c}", {"services/common"} | {f"services/{o}" for o in SERVICE_CRATES if o != c})]
              for c in SERVICE_CRATES}
crate_src = {c: "\n".join(rust_sources(f"{d}/src") for d in crate_dirs[c]) for c in SERVICE_CRATES}
crate_src["common"] = rust_sources("services/common/src")
# Every name in quotes in the services' code (config.rs and friends); RUST_LOG through EnvFilter.
read_vars = set()
for src in crate_src.values():
    read_vars |= set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', src))
if "try_from_default_env" in crate_src["common"]:
    read_vars.add("RUST_LOG")
# Required: `.required("X")`, or `.secret("X")` (a required signing key, common::config::Lookup).
required_vars = {c: set(re.findall(r'\.(?:required|secret)\(\s*"([A-Z0-9_]+)"', crate_src[c])) for c in SERVICE_CRATES}
# The dependency a crate's URL variable names: DbConfig → DATABASE_URL, else the quoted name.
needed_urls = {}
for c in SERVICE_CRATES:
    names = {v for v in ("REDIS_URL", "AMQP_URL", "MESSAGES_URL") if f'"{v}"' in crate_src[c]}
    if "DbConfig" in crate_src[c]:
        names.add("DATABASE_URL")
    needed_urls[c] = names
LISTENER_VARS = {c: {"HTTP_ADDR", "PPROF_ADDR"} for c in SERVICE_CRATES}
LISTENER_VARS["interceptors"] |= set(re.findall(r'"(INTERCEPTORS_[A-Z]+_ADDR)"', crate_src["interceptors"]))

# ---- the Dockerfile ----------------------------------------------------------------------------
dockerfile = read("Dockerfile")
logical, buf = [], ""
for line in dockerfile.splitlines():
    if line.strip().startswith("#") and not buf:
        continue
    if line.rstrip().endswith("\\"):
        buf += line.rstrip()[:-1] + " "
        continue
    buf += line
    if buf.strip():
        logical.append(buf.strip())
    buf = ""
args = {m[1]: m[2] for m in (re.match(r"ARG\s+(\w+)=(\S+)", l) for l in logical) if m}
stages, instructions = [], []  # instructions: (stage, keyword, rest)
for l in logical:
    keyword, _, rest = l.partition(" ")
    keyword = keyword.upper()
    if keyword == "FROM":
        m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
        image = re.sub(r"\$\{(\w+)\}", lambda a: args.get(a[1], a[0]), m[1])
        stages.append({"name": m[2], "image": image, "apt": set()})
    if stages:
        instructions.append((stages[-1], keyword, rest))
        if keyword == "RUN" and "apt-get install" in rest:
            stages[-1]["apt"] |= set(re.findall(r"(?<![-\w])([a-z][a-z0-9.+-]+)", rest.split("apt-get install", 1)[1].split("&&")[0]))
runtime = stages[-1]

# .dockerignore, with Docker's rules: the last pattern matching the path or a parent decides.
def pattern_regex(p):
    out, i = "", 0
    while i < len(p):
        c = p[i]
        if p.startswith("**/", i):
            out += "(?:.*/)?"; i += 3; continue
        if p.startswith("**", i):
            out += ".*"; i += 2; continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    return re.compile(out + r"\Z")


ignore_rules = []
for line in read(".dockerignore").splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    negate = line.startswith("!")
    pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
    ignore_rules.append((negate, pattern_regex(pattern)))


def excluded(path):
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    state = False
    for negate, rx in ignore_rules:
        if any(rx.match(c) for c in candidates):
            state = not negate
    return state


def git_files(*paths):
    try:
        out = subprocess.run(["git", "ls-files", "--", *paths], capture_output=True, text=True, check=True).stdout
        return [f for f in out.splitlines() if os.path.exists(f)]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for p in paths:
            for base, _, names in os.walk(p):
                files += [os.path.relpath(os.path.join(base, n)) for n in names]
        return files


stage_names = set()
for stage, keyword, rest in instructions:
    if stage["name"]:
        stage_names.add(stage["name"])
    if keyword not in ("COPY", "ADD"):
        continue
    words = rest.split()
    source_from = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
    words = [w for w in words if not w.startswith("--")]
    if source_from:
        check(source_from in stage_names, f"Dockerfile: COPY --from={source_from}: no earlier stage of that name")
        continue
    for src in words[:-1]:
        check(os.path.exists(src), f"Dockerfile: COPY source '{src}' does not exist in the repository")
        if src not in (".", "./"):
            check(not excluded(os.path.normpath(src)), f"Dockerfile: COPY source '{src}' is excluded by .dockerignore")
# What `cargo build` reads from the context: manifests, lock, every member's files, the migrations
# that sqlx::migrate! embeds, cargo config and toolchain files.
migrate_dirs = {os.path.normpath(os.path.join("services/common", m))
                for m in re.findall(r'sqlx::migrate!\(\s*"([^"]+)"', crate_src["common"])}
build_inputs = ["Cargo.toml", "Cargo.lock"] + git_files(*members, *sorted(migrate_dirs))
build_inputs += [f for f in git_files(".cargo", "rust-toolchain", "rust-toolchain.toml") if f]
for f in build_inputs:
    check(not excluded(f), f".dockerignore excludes '{f}', which the build reads")
check(bool(migrate_dirs) and all(os.path.isdir(d) for d in migrate_dirs), "migrations/ (sqlx::migrate!) is missing")
for junk in ("target/release/x", ".git/HEAD", ".stack/gateway.log", "loadtest/results/x.json"):
    check(excluded(junk), f".dockerignore lets '{junk.split('/')[0]}/…' into the build context")

# The binaries the image ships and runs.
loop = re.search(r"for bin in ([^;]+);", dockerfile)
shipped = set(loop[1].split()) if loop else set()
check(bool(shipped), "Dockerfile: no `for bin in …` list of the binaries copied into the image")
for b in sorted(shipped):
    check(b in bins, f"Dockerfile: '{b}' is not a [[bin]] of the workspace (bins: {', '.join(sorted(bins))})")
pkg_flags = re.search(r'STORM_PACKAGES="([^"]+)"', dockerfile)
built_packages = re.findall(r"-p\s+(\S+)", pkg_flags[1]) if pkg_flags else []
check(bool(built_packages), "Dockerfile: STORM_PACKAGES (-p …) not found")
for p in built_packages:
    check(p in packages, f"Dockerfile: STORM_PACKAGES names '{p}', not a workspace package")
check({b for b, p in bins.items() if p in built_packages} == shipped,
      f"Dockerfile: the binaries of STORM_PACKAGES ({sorted(b for b, p in bins.items() if p in built_packages)}) "
      f"differ from those copied ({sorted(shipped)})")
cmd = re.search(r'^CMD\s+\["([^"]+)"', dockerfile, re.M)
check(bool(cmd) and cmd[1] in shipped, "Dockerfile: CMD does not run a shipped binary")
user = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
check(bool(user) and user[-1].split(":")[0] not in ("0", "root"), "Dockerfile: the runtime image must end with a non-root USER")
check("TMPDIR=/tmp" in dockerfile, "Dockerfile: TMPDIR must be set (jemalloc heap dumps go to a temporary file)")
for name in ("RUST_IMAGE", "RUNTIME_IMAGE"):
    tag = args.get(name, "")
    check(re.search(r":[\w.-]*\d", tag) and ":latest" not in tag, f"Dockerfile: {name}={tag or '?'} is not a pinned tag")
rust_tag = re.search(r"rust:(\d+)\.(\d+)", args.get("RUST_IMAGE", ""))
check(bool(rust_tag) and (int(rust_tag[1]), int(rust_tag[2])) >= (1, 85), "Dockerfile: the Rust image must be 1.85+ (edition 2024)")
try:
    rustc = re.search(r"rustc (\d+)\.(\d+)", subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout)
    if rust_tag and rustc and (rustc[1], rustc[2]) != (rust_tag[1], rust_tag[2]):
        warnings.append(f"Dockerfile builds with Rust {rust_tag[1]}.{rust_tag[2]}, this machine's rustc is {rustc[1]}.{rustc[2]}: bump RUST_IMAGE")
except OSError:
    pass
exposed = {int(p) for l in re.findall(r"^EXPOSE\s+(.+)$", dockerfile, re.M) for p in l.split()}

# ---- which tool each image has, for its health check ---------------------------------------------
SHELL = {"sh", "bash"}
TOOLS = {
    # Debian slim: bash/sh; the rest is what the runtime stage installs, and our binaries.
    "local": SHELL | {p for p in runtime["apt"] if p in ("curl", "wget", "openssl")} | shipped,
    "postgres:17.5-bookworm": SHELL | {"pg_isready", "psql"},
    "redis:7.4.2-alpine": {"sh", "redis-cli", "grep"},
    "rabbitmq:3.13.7-management": SHELL | {"rabbitmq-diagnostics", "rabbitmqctl", "python3"},
    "prom/prometheus:v3.5.0": {"sh", "wget"},
    "grafana/grafana:12.1.1": SHELL | {"curl", "wget"},
    "grafana/k6:1.1.0": {"sh", "k6", "wget"},
}
# The ports each image's server listens on, for URLs and published ports.
INFRA_PORTS = {"postgres": {5432}, "redis": {6379}, "rabbitmq": {5672, 15672, 15692}, "prometheus": {9090}, "grafana": {3000}}
BUILTINS = {"exec", "test", "[", "true", "false", "echo", "exit", "cd", "set", "!"}


def image_key(svc):
    return "local" if "build" in svc else svc.get("image", "")


def health_commands(test):
    if not test or test[0] == "NONE":
        return []
    if test[0] == "CMD-SHELL":
        scripts = [test[1]]
        exes = []
    else:
        exes = [test[1]]
        scripts = [test[3]] if test[1] in SHELL and len(test) > 3 and test[2] == "-c" else []
    for script in scripts:
        for part in re.split(r"\|\||&&|[|;]", script):
            words = part.split()
            if words:
                exes.append(words[0])
    return [e for e in exes if e not in BUILTINS]


def addr_port(value):
    m = re.fullmatch(r"(.*):(\d+)", value or "")
    return (m[1], int(m[2])) if m else (None, None)


# ---- per service ---------------------------------------------------------------------------------
anchor = raw.get("x-storm-env") or {}
check(bool(anchor), "docker-compose.yml: no x-storm-env block")
for name in anchor:
    check(name in read_vars, f"x-storm-env: {name} is read by no service (services/*/src)")

listening = {n: set(p) for n, p in INFRA_PORTS.items()}
published = {}  # host port → (service, container port, bind ip)
for name, svc in services.items():
    env = {k: ("" if v is None else str(v)) for k, v in (svc.get("environment") or {}).items()}
    key = image_key(svc)
    if key != "local":
        check(re.search(r":[\w.-]*\d", key) and not key.endswith(":latest"), f"{name}: image '{key}' is not pinned to a version tag")
    if name in SERVICE_CRATES:
        crate = name
        check(key == "local", f"{name}: must run the image built from ./Dockerfile")
        run = (svc.get("entrypoint") or []) + (svc.get("command") or [])
        check(run[:1] == [f"storm-{crate}"], f"{name}: runs {run[:1]}, expected storm-{crate}")
        for var in env:
            check(var in read_vars, f"{name}: environment variable {var} is read by no service")
        for var in required_vars[crate]:
            check(env.get(var, "").strip() != "", f"{name}: {var} is required by storm-{crate} and not set")
        ports = set()
        for var in sorted(LISTENER_VARS[crate]):
            host, port = addr_port(env.get(var))
            if check(port is not None, f"{name}: {var} must be set (host:port) so the listener is known"):
                check(host in ("", "0.0.0.0", "[::]"), f"{name}: {var}={env[var]} listens on {host} only; containers must bind all interfaces")
                check(port in exposed, f"Dockerfile: EXPOSE lacks {port} ({name} {var})")
                ports.add(port)
        listening[name] = ports
        _, http_port = addr_port(env.get("HTTP_ADDR"))
        test = (svc.get("healthcheck") or {}).get("test") or []
        check(any(t == f"http://127.0.0.1:{http_port}/ready" for t in test), f"{name}: the health check must GET http://127.0.0.1:{http_port}/ready")
    elif "build" in svc:
        # One of our binaries, or (the k6 token mint) a shell of the image running a script
        # bind-mounted from the repository (checked with the mounts below).
        run = (svc.get("entrypoint") or []) + (svc.get("command") or [])
        check(bool(run) and (run[0] in bins or (run[0] in SHELL and run[1:2] == ["-c"])),
              f"{name}: runs {run[:1]}, not a [[bin]] of the workspace nor a shell of the image")
    for p in svc.get("ports") or []:
        m = re.fullmatch(r"(?:([\d.]+|\[[^\]]+\]):)?(\d+):(\d+)(?:/(tcp|udp))?", str(p))
        if not check(bool(m), f"{name}: cannot read port mapping '{p}'"):
            continue
        ip, host_port, container_port = m[1] or "0.0.0.0", int(m[2]), int(m[3])
        check(host_port not in published, f"host port {host_port} published twice ({published.get(host_port, ('?',))[0]} and {name})")
        published[host_port] = (name, container_port, ip)
    # Health checks: present where someone waits on them, with tools the image has.
    test = (svc.get("healthcheck") or {}).get("test")
    if test:
        check(key in TOOLS, f"{name}: image '{key}' is not in the health-check tool table of scripts/check-compose.sh")
        for exe in health_commands(test):
            check(exe in TOOLS.get(key, set()), f"{name}: the health check runs '{exe}', which image '{key}' does not have")
    for dep, how in (svc.get("depends_on") or {}).items():
        check(dep in services, f"{name}: depends on unknown service {dep}")
        if (how or {}).get("condition") == "service_healthy":
            check(bool((services.get(dep) or {}).get("healthcheck")), f"{name}: waits for {dep} to be healthy, but {dep} has no health check")

for name in SERVICE_CRATES:
    check(name in services, f"docker-compose.yml: service {name} is missing")
for name, ports in listening.items():
    if name in SERVICE_CRATES and name in services:
        for port in ports:
            check(port in published and published[port][:2] == (name, port), f"{name}: port {port} must be published as {port}")
for host_port, (name, container_port, _) in published.items():
    check(container_port in listening.get(name, set()), f"{name}: publishes container port {container_port}, where nothing listens")
EXPECTED = {8080, 8081, 8082, 8083, 6060, 6061, 6062, 6063, 6064, 8180, 8181, 8182, 8183, 8184, 8185, 9090, 3000, 15672, 5432}
check(EXPECTED <= set(published), f"ports not published: {sorted(EXPECTED - set(published))}")

def on_loopback(port):
    return port in published and published[port][2] in ("127.0.0.1", "0.0.0.0")


# URLs in any container's environment: a compose service and a port it listens on (host-network
# containers: a published port on loopback), and the dependency waited for.
URL_RX = re.compile(r"^(https?|wss?|postgres(?:ql)?|rediss?|amqps?)://(?:[^@/]*@)?([^:/]+):(\d+)")
for name, svc in services.items():
    env = {k: str(v) for k, v in (svc.get("environment") or {}).items() if v is not None}
    host_net = svc.get("network_mode") == "host"
    for var, value in env.items():
        m = URL_RX.match(value)
        if not m:
            continue
        host, port = m[2], int(m[3])
        if host_net:
            check(host in ("127.0.0.1", "localhost") and on_loopback(port), f"{name}: {var}={value}: not a published port on loopback")
        else:
            check(host in services and port in listening.get(host, set()), f"{name}: {var}={value}: no compose service listens there")
    if name in SERVICE_CRATES:
        for var in needed_urls[name]:
            m = URL_RX.match(env.get(var, ""))
            dep = m[2] if m else None
            check(dep in services and ((svc.get("depends_on") or {}).get(dep) or {}).get("condition") == "service_healthy",
                  f"{name}: reads {var} ({env.get(var)}) but does not wait for {dep} (depends_on: condition: service_healthy)")
    # Loopback-only targets (storm-loadgen) need the host's network.
    run = (svc.get("entrypoint") or []) + (svc.get("command") or [])
    if run[:1] == ["storm-loadgen"]:
        check(host_net, f"{name}: storm-loadgen loads loopback targets only: it needs network_mode: host")
        for arg in run:
            if m := URL_RX.match(arg):
                check(m[2] in ("127.0.0.1", "localhost") and on_loopback(int(m[3])), f"{name}: target {arg} is not a published port on loopback")


# ---- bind mounts, and the files the containers read through them ----------------------------------
def mounts(svc):
    out = []
    for v in svc.get("volumes") or []:
        parts = str(v).split(":")
        if parts[0].startswith("/"):
            out.append((parts[0], parts[1], "ro" in parts[2:]))
    return out


def host_path(svc, container_path):
    best = None
    for source, target, ro in mounts(svc):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            if best is None or len(target) > len(best[1]):
                best = (source, target, ro)
    if best is None:
        return None, None
    return best[0] + container_path[len(best[1]):], best[2]


for name, svc in services.items():
    for source, target, _ in mounts(svc):
        inside = os.path.relpath(source, ROOT)
        check(not inside.startswith(".."), f"{name}: bind mount {source} is outside the repository")
        check(os.path.exists(source), f"{name}: bind-mounted host path ./{inside} does not exist")

for name, svc in services.items():
    image = svc.get("image", "")
    command = [str(c) for c in svc.get("command") or []]
    if image.startswith("prom/prometheus"):
        conf = next((c.split("=", 1)[1] for c in command if c.startswith("--config.file=")), "/etc/prometheus/prometheus.yml")
        path, _ = host_path(svc, conf)
        if check(path and os.path.isfile(path), f"{name}: {conf} is not in a bind mount of the repository"):
            prom = yaml.safe_load(open(path)) or {}
            for rule in prom.get("rule_files") or []:
                check(os.path.isfile(os.path.join(os.path.dirname(path), rule)), f"{name}: rule file {rule} missing next to {conf}")
            for job in prom.get("scrape_configs") or []:
                for sc in job.get("static_configs") or []:
                    for target in sc.get("targets") or []:
                        host, port = addr_port(target)
                        ok = (host == "localhost" and port == 9090) or (host in services and port in listening.get(host, set()))
                        check(ok, f"{name}: scrape target {target} (job {job.get('job_name')}) is no compose service's listener")
    if image.startswith("grafana/grafana"):
        prov, _ = host_path(svc, "/etc/grafana/provisioning")
        if check(prov and os.path.isdir(prov), f"{name}: /etc/grafana/provisioning is not mounted from the repository"):
            for kind in ("datasources", "dashboards"):
                folder = os.path.join(prov, kind)
                for f in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
                    if not f.endswith((".yml", ".yaml")):
                        continue
                    doc = yaml.safe_load(open(os.path.join(folder, f))) or {}
                    for ds in doc.get("datasources") or []:
                        m = URL_RX.match(ds.get("url", ""))
                        check(bool(m) and m[2] in services and int(m[3]) in listening.get(m[2], set()),
                              f"{name}: datasource {ds.get('name')} url {ds.get('url')} is no compose service's listener")
                    for provider in doc.get("providers") or []:
                        p = (provider.get("options") or {}).get("path", "")
                        hp, _ = host_path(svc, p)
                        check(hp and os.path.isdir(hp), f"{name}: dashboards path {p} is not mounted from the repository")
    if image.startswith("grafana/k6"):
        workdir = svc.get("working_dir", "/")
        script = next((c for c in command if c.endswith(".js")), None)
        full = script if script and script.startswith("/") else os.path.join(workdir, script or "")
        path, _ = host_path(svc, full)
        check(path and os.path.isfile(path), f"{name}: k6 script {full} is not in a bind mount of the repository")
        results = (svc.get("environment") or {}).get("RESULTS_DIR", "loadtest/results")
        path, ro = host_path(svc, os.path.join(workdir, str(results)))
        check(path and os.path.isdir(path) and not ro, f"{name}: RESULTS_DIR {results} is not a writable mount")
        host = (svc.get("environment") or {}).get("BASE_HOST")
        if host:
            for var, port in re.findall(r"port\('(\w+)',\s*(\d+)\)", read("loadtest/k6/lib/connect.js")):
                check(host in services and int(port) in listening.get(host, set()), f"{name}: BASE_HOST={host} does not listen on {var}'s default {port}")

# ---- the development secret, the k6 tokens, the host-side scripts' defaults ------------------------
gen_jwt = re.search(r"secret=\$\{JWT_SECRET:-([^}]+)\}", read("scripts/gen-jwt.sh"))
secret = gen_jwt[1] if gen_jwt else None
check(secret is not None, "scripts/gen-jwt.sh: cannot find its default secret")
anchor_default = re.fullmatch(r"\$\{JWT_SECRET:-([^}]*)\}", str(anchor.get("JWT_SECRET", "")))
check(bool(anchor_default) and anchor_default[1] == secret, f"x-storm-env: JWT_SECRET must default to the scripts' secret ({secret})")
for name, svc in services.items():
    env = svc.get("environment") or {}
    if "JWT_SECRET" in env:
        check(str(env["JWT_SECRET"]) == secret, f"{name}: JWT_SECRET resolves to something other than {secret}")

# The development flag: without STORM_DEV=1 the services refuse dev-secret (compose is the dev setup).
check(str(anchor.get("STORM_DEV", "")) in ("1", "${STORM_DEV:-1}", "true"),
      f"x-storm-env: STORM_DEV must default to 1 (got {anchor.get('STORM_DEV')!r}): the services refuse {secret} without it")
for name in SERVICE_CRATES:
    env = (services.get(name) or {}).get("environment") or {}
    check(str(env.get("STORM_DEV")) == "1", f"{name}: STORM_DEV resolves to {env.get('STORM_DEV')!r}, not 1")

# The queue-signing key: chat signs, the writer checks; one value, long enough, the scripts' own.
lib_key = re.search(r"^STORM_DEV_QUEUE_SIGNING_KEY=(\S+)$", read("scripts/lib.sh"), re.M)
check(bool(lib_key), "scripts/lib.sh: STORM_DEV_QUEUE_SIGNING_KEY not found")
keys = {n: str(((services.get(n) or {}).get("environment") or {}).get("QUEUE_SIGNING_KEY") or "") for n in ("chat", "writer")}
for n, key in keys.items():
    check(len(key.encode()) >= 32, f"{n}: QUEUE_SIGNING_KEY must be set, at least 32 bytes (got {len(key.encode())})")
check(keys["chat"] == keys["writer"], "chat and writer: QUEUE_SIGNING_KEY differs (the writer would dead-letter every message)")
check(bool(lib_key) and keys["chat"] == lib_key[1], "chat: QUEUE_SIGNING_KEY differs from scripts/lib.sh's development key")
for name, svc in services.items():
    if name not in ("chat", "writer"):
        check("QUEUE_SIGNING_KEY" not in (svc.get("environment") or {}), f"{name}: holds QUEUE_SIGNING_KEY, which only chat and writer need")

# Published ports: on the host's loopback unless STORM_BIND says otherwise.
for host_port, (name, _, ip) in sorted(published.items()):
    check(ip == "127.0.0.1", f"{name}: host port {host_port} is published on {ip}, not 127.0.0.1")

# No token is committed: the k6 profile's is minted at start by a one-shot service (scripts/gen-jwt.sh
# bind-mounted into our image, which has bash and openssl) into a volume the k6 container reads.
JWT_RX = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{10,}")
check(not JWT_RX.search(read("docker-compose.yml")), "docker-compose.yml: holds a JWT; mint it at start instead (never commit a token)")
pad = lambda part: part + "=" * (-len(part) % 4)


def verify_jwt(token, where):
    """The token's claims, after checking it is HS256 signed with the development secret."""
    try:
        head, body, sig = token.split(".")
        header = json.loads(base64.urlsafe_b64decode(pad(head)))
        claims = json.loads(base64.urlsafe_b64decode(pad(body)))
        want = base64.urlsafe_b64encode(hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()).decode().rstrip("=")
    except Exception as e:  # noqa: BLE001 — any malformed token is one finding
        check(False, f"{where}: not a JWT ({e})")
        return {}
    check(header.get("alg") == "HS256" and hmac.compare_digest(sig, want), f"{where}: not signed HS256 with {secret}")
    return claims


for name, svc in services.items():
    env = svc.get("environment") or {}
    token_vars = [v for v in ("ACCESS_TOKEN", "TOKEN") if v in env]
    if not token_vars:
        continue
    for var in token_vars:
        check(str(env[var] or "") == "", f"{name}: {var} has a default ({str(env[var])[:16]}…): the token must be minted at start")
    # Who mints it: a dependency that must complete first.
    minters = [d for d, how in (svc.get("depends_on") or {}).items() if (how or {}).get("condition") == "service_completed_successfully"]
    if not check(len(minters) == 1, f"{name}: reads {'/'.join(token_vars)} but depends on no one-shot mint (condition: service_completed_successfully)"):
        continue
    minter = services[minters[0]]
    run = (minter.get("entrypoint") or []) + (minter.get("command") or [])
    script = run[2] if run[:2] in (["bash", "-c"], ["sh", "-c"]) and len(run) > 2 else ""
    args = [str(a) for a in run[4:]] if len(run) > 3 else []  # run[3] is the script's $0
    gen = next((w for w in script.split() if w.endswith("gen-jwt.sh")), None)
    hp, _ = host_path(minter, gen or "/nonexistent")
    check(hp is not None and os.path.realpath(hp) == os.path.realpath(os.path.join(ROOT, "scripts/gen-jwt.sh")),
          f"{minters[0]}: must run scripts/gen-jwt.sh, bind-mounted from the repository (runs: {script!r})")
    check(image_key(minter) == "local" and "openssl" in TOOLS["local"], f"{minters[0]}: gen-jwt.sh needs openssl: run it in our image (Dockerfile installs openssl)")
    # Where the token goes, and that the reader mounts the same volume there.
    out = re.search(r">\s*(/\S+)/access_token(?:\.new)?\b", script)
    volume_dir = out[1] if out else None
    named = {str(v).split(":")[1]: str(v).split(":")[0] for v in minter.get("volumes") or [] if not str(v).startswith("/")}
    reader = {str(v).split(":")[1]: str(v).split(":")[0] for v in svc.get("volumes") or [] if not str(v).startswith("/")}
    check(volume_dir in named and reader.get(volume_dir) == named.get(volume_dir),
          f"{name}: must mount {minters[0]}'s token volume at {volume_dir} (minter: {named}, reader: {reader})")
    reader_script = " ".join(str(x) for x in svc.get("entrypoint") or [])
    check(f"{volume_dir}/access_token" in reader_script, f"{name}: the entrypoint does not read {volume_dir}/access_token")
    if volume_dir:
        check(re.search(rf"install -d\b[^&]*-o 10001\b[^&]*\s{re.escape(volume_dir)}\b", dockerfile) is not None,
              f"Dockerfile: {volume_dir} must exist owned by uid 10001 (a fresh named volume takes the owner of its mount point)")
    # Run the mint as the container would and verify what it prints.
    try:
        minted = subprocess.run(["bash", "scripts/gen-jwt.sh", *args], capture_output=True, text=True, timeout=30,
                                env={"PATH": os.environ.get("PATH", ""), "JWT_SECRET": secret}).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        minted = ""
        warnings.append(f"could not run scripts/gen-jwt.sh {' '.join(args)}: {e}")
    if check(minted != "", f"{minters[0]}: scripts/gen-jwt.sh {' '.join(args)} printed no token"):
        claims = verify_jwt(minted, f"{minters[0]}: the minted token")
        lifetime = claims.get("exp", 0) - claims.get("iat", 0)
        check(bool(claims.get("sub")) and 0 < lifetime <= 86400, f"{minters[0]}: the minted token lacks sub or lives {lifetime}s (at most a day)")
        check(re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", str(claims.get("tenant", ""))),
              f"{minters[0]}: the minted token has no tenant claim (the S2 scenarios need one)")


def default_of(path, pattern):
    m = re.search(pattern, read(path))
    check(bool(m), f"{path}: default not found (pattern {pattern})")
    return m[1] if m else ""


host_urls = {
    "loadtest/k6/perf-load.js GATEWAY_URL": default_of("loadtest/k6/perf-load.js", r"baseUrl\('GATEWAY_URL',\s*'([^']+)'\)"),
    "scripts/k6-run.sh API_URL": default_of("scripts/k6-run.sh", r"API_URL=\$\{API_URL:-([^}]+)\}"),
    "scripts/run-performance-test.sh CHAT_URL": default_of("scripts/run-performance-test.sh", r"CHAT_URL=\$\{CHAT_URL:-([^}]+)\}"),
    "scripts/run-performance-test.sh RABBITMQ_API": default_of("scripts/run-performance-test.sh", r"RABBITMQ_API=\$\{RABBITMQ_API:-([^}]+)\}"),
    "scripts/run-performance-test.sh DATABASE_URL": default_of("scripts/run-performance-test.sh", r"DATABASE_URL=\$\{DATABASE_URL:-([^}]+)\}"),
    "scripts/audit-chat.sh DATABASE_URL": default_of("scripts/audit-chat.sh", r"DB_URL=\$\{DATABASE_URL:-([^}]+)\}"),
    "scripts/seed-calls.sh DATABASE_URL": default_of("scripts/seed-calls.sh", r"DATABASE_URL=\$\{DATABASE_URL:-([^}]+)\}"),
}
for where, url in host_urls.items():
    m = re.match(r"^(\w+)://(?:([^:@/]*)(?::([^@/]*))?@)?([^:/]+):(\d+)(?:/([^?]*))?", url)
    if not check(bool(m), f"{where}: cannot read its default {url}"):
        continue
    scheme, user, password, host, port, path = m[1], m[2], m[3], m[4], int(m[5]), m[6]
    owner, container_port, _ = published.get(port, (None, None, None))
    ok = host in ("localhost", "127.0.0.1") and on_loopback(port) and container_port == port
    check(ok, f"{where}: {url} is not served by the compose stack on loopback")
    if not owner:
        continue
    env = services[owner].get("environment") or {}
    if scheme.startswith("postgres"):
        check(services[owner].get("image", "").startswith("postgres") and env.get("POSTGRES_HOST_AUTH_METHOD") == "trust"
              and (user or "postgres") == "postgres" and path == env.get("POSTGRES_DB"),
              f"{where}: {url} needs Postgres on {port} trusting user postgres with database {path}")
    elif "RABBITMQ" in where:
        check(services[owner].get("image", "").startswith("rabbitmq") and (user, password) == ("guest", "guest"),
              f"{where}: {url} needs RabbitMQ's management API with guest/guest on {port}")
queue = default_of("scripts/run-performance-test.sh", r"QUEUE=\$\{CHAT_QUEUE:-([^}]+)\}")
check(str(anchor.get("CHAT_QUEUE", queue)) == queue, f"x-storm-env: CHAT_QUEUE differs from run-performance-test.sh's {queue}")

for w in warnings:
    print(f"check-compose: warning: {w}", file=sys.stderr)
if errors:
    for e in errors:
        print(f"check-compose: {e}", file=sys.stderr)
    print(f"check-compose: FAILED ({len(errors)} of {checks} checks)", file=sys.stderr)
    sys.exit(1)
print(f"check-compose: OK ({len(services)} services, profiles {', '.join(profiles) or 'none'}, "
      f"{len(published)} published ports, {checks} checks; docker-compose {compose_version})")
PY
