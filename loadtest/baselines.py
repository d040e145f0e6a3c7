#!/usr/bin/env python3
"""baselines.py — run the scenarios of loadtest/scenarios.toml and write loadtest/BASELINES.md.

scripts/run-all.sh owns the stack and the tools and calls `run`; the other commands stand alone:

  baselines.py list    [--only a,b] [--tools]     the scenarios (or the tools they need); exit 2 on an unknown name
  baselines.py run     --gateway URL --results DIR [--chat URL] [--loadgen BIN] [--quick] [--repeats N]
                       [--only a,b] [--gateway-pid PID] [--chat-pid PID] [--baselines PATH]
                       [--interceptors-host HOST] [--interceptors-admin URL] [--interceptors-pid PID]
  baselines.py report  --results DIR [--out PATH] [--baselines PATH]   rebuild the Markdown from a results dir

A results dir is self-contained: run.json (what ran, how, exit status, CPU time), a copy of the
manifest, one JSON and one log per run. `report` needs nothing else, so a table can be re-rendered
(or its layout changed) without running anything again. Each run records the CPU share of the
server it loads (`server`: the gateway; storm-interceptors for S1; storm-chat for S4).

The rule this file must not break: every figure in the Markdown is read from a result file of a
run in the results dir; a value that is missing is printed "n/a", never filled in. The
hand-written notes in BASELINES.md (between the notes markers) are carried over verbatim.
Python standard library only (3.11+ for tomllib).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "loadtest" / "scenarios.toml"
BASELINES = ROOT / "loadtest" / "BASELINES.md"
RUN_SCHEMA = "stormstack-run-all/1"
DEFAULT_CHAT_URL = "http://127.0.0.1:8082"
DEFAULT_INTERCEPTORS_HOST = "127.0.0.1"
INTERCEPTORS_ADMIN_PORT = 8185  # storm-interceptors' /health, /ready, /metrics
LOADGEN_SCHEMA = "storm-loadgen/1"
NOTES_BEGIN = "<!-- notes:begin — hand-written; scripts/run-all.sh keeps everything up to notes:end -->"
NOTES_END = "<!-- notes:end -->"
DEFAULT_TIMEOUT_S = 300
QUICK_TIMEOUT_S = 120


class UsageError(Exception):
    """A bad argument or manifest entry: one line, exit 2."""


# --- the manifest ---------------------------------------------------------------------------------

TARGET_RE = re.compile(r"^\s*(<=|>=|==|<|>)\s*(-?[0-9][0-9_]*(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)\s*$")
OPS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
}
OP_TEXT = {"<": "<", "<=": "≤", ">": ">", ">=": "≥", "==": "="}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass
class Row:
    metric: str
    value: str
    unit: str
    source: str
    target: tuple[str, float] | None = None
    target_note: str = ""
    judge: str = "median"

    def lookup(self, result: dict):
        return lookup(result, self.value)


@dataclass
class Scenario:
    name: str
    source: str
    tool: str
    title: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    quick_set: dict[str, str] = field(default_factory=dict)
    quick_env: dict[str, str] = field(default_factory=dict)
    timeout_s: float | None = None
    repeats: int | None = None  # at most this many runs, whatever REPEATS says
    rows: list[Row] = field(default_factory=list)

    def runs(self, repeats: int) -> int:
        return min(repeats, self.repeats) if self.repeats else repeats


@dataclass
class Manifest:
    sources: dict[str, dict]
    calibrate: Scenario
    scenarios: list[Scenario]

    def select(self, only: str | None) -> list[Scenario]:
        if not only:
            return list(self.scenarios)
        names = [n.strip() for n in only.split(",") if n.strip()]
        known = {s.name for s in self.scenarios}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UsageError(
                f"unknown scenario {', '.join(repr(n) for n in unknown)} in RUN_ALL_ONLY "
                f"(scenarios: {', '.join(s.name for s in self.scenarios)})"
            )
        return [s for s in self.scenarios if s.name in names]


def _strings(where: str, value, kind=list):
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{where} must be a list of strings")
        return list(value)
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a table")
    return {str(k): str(v) for k, v in value.items()}


def _scenario(where: str, raw: dict, sources: dict, calibrate: bool = False) -> Scenario:
    allowed = {"name", "source", "tool", "title", "command", "env", "quick", "timeout_s", "repeats", "row"}
    extra = set(raw) - allowed
    if extra:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
    if calibrate:
        name, source, tool, title = "calibrate", "", "loadgen", "storm-loadgen calibrate"
    else:
        for key in ("name", "source", "tool", "title", "command"):
            if key not in raw:
                raise UsageError(f"{where}: missing '{key}'")
        name, source, tool, title = raw["name"], raw["source"], raw["tool"], raw["title"]
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise UsageError(f"{where}: name must match [a-z0-9-]+, got {name!r}")
        where = f"scenario '{name}'"
        if source not in sources:
            raise UsageError(f"{where}: source {source!r} is not one of [sources.*] ({', '.join(sources)})")
        if tool not in TOOLS:
            raise UsageError(f"{where}: tool {tool!r} is not one of {', '.join(TOOLS)}")
    command = _strings(f"{where}: command", raw.get("command"))
    if not command:
        raise UsageError(f"{where}: command is empty")
    if not any("{out}" in part for part in command + [str(v) for v in raw.get("env", {}).values()]):
        raise UsageError(f"{where}: command or env must contain {{out}} (where the result JSON goes)")
    quick = raw.get("quick", {})
    if not isinstance(quick, dict) or set(quick) - {"set", "env"}:
        raise UsageError(f"{where}: quick may only hold 'set' and 'env'")
    scenario = Scenario(
        name=name,
        source=source,
        tool=tool,
        title=title,
        command=command,
        env=_strings(f"{where}: env", raw.get("env", {}), dict),
        quick_set=_strings(f"{where}: quick.set", quick.get("set", {}), dict),
        quick_env=_strings(f"{where}: quick.env", quick.get("env", {}), dict),
        timeout_s=raw.get("timeout_s"),
        repeats=raw.get("repeats"),
    )
    if scenario.timeout_s is not None and not (isinstance(scenario.timeout_s, (int, float)) and scenario.timeout_s > 0):
        raise UsageError(f"{where}: timeout_s must be a positive number")
    if scenario.repeats is not None and not (isinstance(scenario.repeats, int) and not isinstance(scenario.repeats, bool)
                                             and scenario.repeats > 0):
        raise UsageError(f"{where}: repeats must be a positive integer")
    for i, row in enumerate(raw.get("row", []), 1):
        scenario.rows.append(_row(f"{where} row {i}", row))
    if not calibrate and not scenario.rows:
        raise UsageError(f"{where}: no [[scenario.row]]: it would feed nothing into BASELINES.md")
    return scenario


def _row(where: str, raw: dict) -> Row:
    allowed = {"metric", "value", "unit", "source", "target", "target_note", "judge"}
    extra = set(raw) - allowed
    if extra:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
    for key in ("metric", "value", "unit", "source"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise UsageError(f"{where}: missing '{key}'")
    if raw["unit"] not in ("ms", "µs", "s", "%", "count") and not raw["unit"].endswith("/s"):
        raise UsageError(f"{where}: unit must be ms, µs, s, %, count or a rate ending in /s, got {raw['unit']!r}")
    target = None
    if "target" in raw:
        match = TARGET_RE.match(str(raw["target"]))
        if not match:
            raise UsageError(f"{where}: target must look like '< 200', '>= 50000' or '== 0', got {raw['target']!r}")
        target = (match.group(1), float(match.group(2)))
    judge = raw.get("judge", "median")
    if judge not in ("median", "every"):
        raise UsageError(f"{where}: judge must be 'median' or 'every', got {judge!r}")
    return Row(raw["metric"], raw["value"], raw["unit"], raw["source"], target, raw.get("target_note", ""), judge)


def load_manifest(path: Path = MANIFEST) -> Manifest:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"{path}: {e}") from e
    sources = raw.get("sources", {})
    for key, src in sources.items():
        if not isinstance(src, dict) or not isinstance(src.get("title"), str):
            raise UsageError(f"{path}: [sources.{key}] needs a title")
    if "calibrate" not in raw:
        raise UsageError(f"{path}: missing [calibrate]")
    calibrate = _scenario("[calibrate]", raw["calibrate"], sources, calibrate=True)
    scenarios, seen = [], set()
    for i, entry in enumerate(raw.get("scenario", []), 1):
        scenario = _scenario(f"{path.name}: scenario #{i}", entry, sources)
        if scenario.name in seen:
            raise UsageError(f"{path.name}: scenario name '{scenario.name}' appears twice")
        seen.add(scenario.name)
        scenarios.append(scenario)
    return Manifest(sources, calibrate, scenarios)


def lookup(result: dict | None, path: str):
    """The number at a dotted path ("latency_ms.p95", "stress.stages.3.req_per_s": a number indexes a
    list), or None when any step is missing/null."""
    node = result
    for part in path.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        return None
    return float(node)


# --- the tools: which exit codes mean "it ran", and what a smoke run must never show ---------------


def _loadgen_problems(result: dict) -> list[str]:
    def n(path):
        return int(lookup(result, path) or 0)

    problems = []
    if result.get("kind") == "http":
        if n("status.5xx"):
            problems.append(f"{n('status.5xx')} 5xx responses")
        errors = {k: int(v) for k, v in (result.get("errors") or {}).items() if v}
        if errors:
            problems.append("transport errors: " + ", ".join(f"{k} {v}" for k, v in errors.items()))
        if not n("requests.completed"):
            problems.append("no request completed")
    elif result.get("kind") == "chat":
        for op in ("writes", "reads"):
            for cls in ("4xx", "5xx"):
                if n(f"{op}.status.{cls}"):
                    problems.append(f"{n(f'{op}.status.{cls}')} {cls} answers to {op}")
            errors = {k: int(v) for k, v in ((result.get(op) or {}).get("errors") or {}).items() if v}
            if errors:
                problems.append(f"{op} transport errors: " + ", ".join(f"{k} {v}" for k, v in errors.items()))
            if not n(f"{op}.completed"):
                problems.append(f"no {op[:-1]} completed")
        if n("accepted.unparsed"):
            problems.append(f"{n('accepted.unparsed')} write answers without a message number")
    elif result.get("kind") == "ws":
        for path, what in [
            ("frames.lost", "lost frames"),
            ("frames.duplicated", "duplicated frames"),
            ("connect.failed", "failed WebSocket connects"),
            ("publish.status.5xx", "5xx answers to publishes"),
            ("publish.failed", "failed publishes"),
        ]:
            if n(path):
                problems.append(f"{n(path)} {what}")
        if not n("frames.delivered"):
            problems.append("no frame delivered")
    return problems


def _k6_problems(result: dict) -> list[str]:
    problems = []
    failed = int(lookup(result, "metrics.http_req_failed.values.passes") or 0)
    if failed:
        problems.append(f"{failed} failed HTTP requests (non-2xx/3xx or transport errors)")
    if not lookup(result, "metrics.http_reqs.values.count"):
        problems.append("no HTTP request made")
    # Only for scripts that open WebSockets: k6 reports ws_sessions for every socket it tried,
    # upgraded or not, and no ws_* metric at all for an HTTP-only script.
    uses_ws = any(m in result["metrics"] for m in ("ws_sessions", "ws_connecting", "ws_msgs_received"))
    if uses_ws and not lookup(result, "metrics.ws_msgs_received.values.count"):
        problems.append("no WebSocket message received")
    # redis-pubsub.js accounts for its frames itself (published × subscribers vs received).
    expected, received = lookup(result, "pubsub.frames_expected"), lookup(result, "pubsub.frames_received")
    if expected is not None and received is not None and received < expected:
        problems.append(f"{int(expected - received)} lost frames (of {int(expected)} expected)")
    return problems


def _loadgen_valid(result: dict) -> str | None:
    if result.get("schema") != LOADGEN_SCHEMA:
        return f"schema is {result.get('schema')!r}, expected {LOADGEN_SCHEMA!r}"
    return None


def _k6_valid(result: dict) -> str | None:
    return None if isinstance(result.get("metrics"), dict) else "no 'metrics' object (not a k6 summary)"


TOOLS = {
    "loadgen": {"ok_exit": {0}, "problems": _loadgen_problems, "valid": _loadgen_valid, "label": "storm-loadgen"},
    # 99: k6 ran to the end and a threshold of the script failed: a result, recorded in the table.
    "k6": {"ok_exit": {0, 99}, "problems": _k6_problems, "valid": _k6_valid, "label": "k6"},
}


# --- running ----------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def render_command(scenario: Scenario, quick: bool, subst: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The argv and extra env of one run: --quick overrides applied, placeholders replaced."""
    args = list(scenario.command)
    env = dict(scenario.env)
    if quick:
        for flag, value in scenario.quick_set.items():
            if flag in args and args.index(flag) + 1 < len(args):
                args[args.index(flag) + 1] = value
            else:
                args += [flag, value]
        env.update(scenario.quick_env)

    def fill(text: str) -> str:
        for key, value in subst.items():
            text = text.replace("{" + key + "}", value)
        return text

    return [fill(a) for a in args], {k: fill(v) for k, v in env.items()}


def display_command(argv: list[str], env: dict[str, str]) -> str:
    """The command as a person would type it from the repository root."""

    def rel(text: str) -> str:
        return text.replace(str(ROOT) + "/", "")

    prefix = " ".join(f"{k}={shlex.quote(rel(v))}" for k, v in env.items())
    return (prefix + " " if prefix else "") + shlex.join(rel(a) for a in argv)


def shown_env(argv: list[str], extra_env: dict[str, str], gateway: str, chat: str | None = None) -> dict[str, str]:
    """The environment worth showing beside a command: GATEWAY_URL only when neither it nor the
    chat service's URL is in argv or the extra env (a chat scenario does not talk to the gateway)."""
    shown = argv + list(extra_env.values())
    if any(gateway in a for a in argv) or (chat and any(chat in a for a in shown)):
        return dict(extra_env)
    return {"GATEWAY_URL": gateway, **extra_env}


def uses_chat(scenario: Scenario) -> bool:
    """Whether a scenario talks to the chat service ({chat} in its command or env)."""
    return any("{chat}" in part for part in scenario.command + list(scenario.env.values()))


def uses_interceptors(scenario: Scenario) -> bool:
    """Whether a scenario talks to storm-interceptors (S1: {interceptors_host} in its command or env)."""
    return any("{interceptors_host}" in part for part in scenario.command + list(scenario.env.values()))


def server_of(scenario: Scenario) -> str:
    """The server a scenario loads, whose CPU share its runs record: storm-interceptors (S1),
    storm-chat (S4, {chat}), else the gateway."""
    if uses_interceptors(scenario):
        return "storm-interceptors"
    if uses_chat(scenario):
        return "storm-chat"
    return "gateway"


def quick_changes(scenario: Scenario) -> str:
    """What --quick changes, e.g. "--subscribers 200 --duration 3s" or "DURATION=5s PUB_VUS=2"."""
    parts = [f"{k} {v}" for k, v in scenario.quick_set.items()] + [f"{k}={v}" for k, v in scenario.quick_env.items()]
    return " ".join(parts) or "nothing"


def proc_cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process from /proc (None when it is not there)."""
    if not pid:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Interrupted(Exception):
    pass


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def kill_group(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def execute(
    scenario: Scenario,
    repeat: int | None,
    results: Path,
    quick: bool,
    subst: dict[str, str],
    server_pid: int | None,
    server: str | None = None,
) -> dict:
    """Run one repetition; return its run.json entry (status ok|failed|timeout|no-result).
    `server_pid` is the server whose CPU share is recorded (`server`: the gateway, storm-interceptors
    for S1, storm-chat for S4) in `gateway_cpu_percent` (the key predates the other servers)."""
    stem = scenario.name if repeat is None else f"{scenario.name}.r{repeat}"
    out, log_path = results / f"{stem}.json", results / f"{stem}.log"
    argv, extra_env = render_command(scenario, quick, {**subst, "out": str(out)})
    timeout = scenario.timeout_s or (QUICK_TIMEOUT_S if quick else DEFAULT_TIMEOUT_S)
    entry = {
        "scenario": scenario.name,
        "repeat": repeat,
        "tool": scenario.tool,
        "argv": argv,
        "env": extra_env,
        # An S1 scenario never talks to the gateway: no GATEWAY_URL beside its command.
        "display": display_command(argv, extra_env if uses_interceptors(scenario)
                                   else shown_env(argv, extra_env, subst["gateway"], subst.get("chat"))),
        "result": out.name,
        "log": log_path.name,
        "server": server,
        "problems": [],
        "notes": [],
    }
    env = {**os.environ, "GATEWAY_URL": subst["gateway"], **extra_env}
    if subst.get("chat"):
        env.setdefault("CHAT_URL", subst["chat"])
    cpu_before, gw_before = children_cpu_seconds(), proc_cpu_seconds(server_pid)
    started = time.monotonic()
    with open(log_path, "wb") as log_file:
        try:
            # Own process group: a timeout (or Ctrl-C here) stops the tool and anything it started.
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            entry.update(status="failed", exit=None, elapsed_s=0.0, problems=[f"could not start: {e}"])
            return entry
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            code = None
        except BaseException:
            kill_group(proc)
            raise
    elapsed = time.monotonic() - started
    gw_after = proc_cpu_seconds(server_pid)
    entry.update(
        exit=code,
        elapsed_s=round(elapsed, 3),
        generator_cpu_percent=round(100 * (children_cpu_seconds() - cpu_before) / elapsed, 1) if elapsed > 0 else None,
        gateway_cpu_percent=(round(100 * (gw_after - gw_before) / elapsed, 1)
                             if gw_before is not None and gw_after is not None and elapsed > 0 else None),
    )
    tool = TOOLS[scenario.tool]
    if code is None:
        entry.update(status="timeout", problems=[f"killed after {timeout:g} s (timeout)"])
        return entry
    if code not in tool["ok_exit"]:
        what = f"signal {-code}" if code < 0 else f"exit {code}"
        entry.update(status="failed", problems=[f"{tool['label']} {what} (see {log_path.name})"])
        return entry
    if code == 99 and scenario.tool == "k6":
        entry["notes"].append("k6 exit 99: a threshold of the script failed")
    try:
        result = json.loads(out.read_text())
        invalid = TOOLS[scenario.tool]["valid"](result) if isinstance(result, dict) else "not a JSON object"
    except (OSError, ValueError) as e:
        result, invalid = None, f"no result JSON ({e.__class__.__name__}: {e})"
    if invalid:
        entry.update(status="no-result", problems=[f"{out.name}: {invalid}"])
        return entry
    entry["status"] = "ok"
    entry["problems"] = tool["problems"](result)
    return entry


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def commit_id() -> str:
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine_info() -> dict:
    info = {"cores": os.cpu_count(), "kernel": os.uname().release, "hostname": os.uname().nodename}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                info["os"] = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return info


def binary_of(pid: int | None) -> str | None:
    """The executable of a running process, relative to the repository when inside it."""
    if not pid:
        return None
    try:
        return os.readlink(f"/proc/{pid}/exe").replace(str(ROOT) + "/", "")
    except OSError:
        return None


def process_info(pid: int | None, **fields) -> dict:
    """`fields`, the pid, and the binary of the process when it is running."""
    info: dict = {**fields, "pid": pid}
    binary = binary_of(pid)
    if binary:
        info["binary"] = binary
    return info


def gateway_info(url: str, pid: int | None) -> dict:
    info = process_info(pid, url=url)
    try:
        with urllib.request.urlopen(f"{url}/api/metrics", timeout=3) as response:
            snapshot = json.load(response)
        info["admission"] = {k: snapshot.get(k) for k in ("workers", "queue_capacity")}
    except (OSError, ValueError):
        pass
    return info


def interceptors_info(host: str, admin: str, pid: int | None) -> dict:
    return process_info(pid, host=host, admin_url=admin)


def chat_info(url: str, pid: int | None) -> dict:
    return process_info(pid, url=url)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def tool_version(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0] if out else None


def summarize(scenario: Scenario, result: dict | None) -> str:
    parts = []
    for row in scenario.rows:
        value = row.lookup(result) if result else None
        parts.append(f"{row.metric} {fmt(value, row.unit)}")
    return " · ".join(parts)


def cmd_run(args) -> int:
    manifest = load_manifest()
    selected = manifest.select(args.only)
    quick = args.quick
    repeats = args.repeats or (1 if quick else 3)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MANIFEST, results / "scenarios.toml")
    gateway = args.gateway.rstrip("/")
    loadgen = str(Path(args.loadgen).resolve()) if args.loadgen else ""
    needs_loadgen = any(s.tool == "loadgen" for s in selected)
    if needs_loadgen and not (loadgen and os.access(loadgen, os.X_OK)):
        raise UsageError(f"storm-loadgen not found or not executable: {args.loadgen or '(none given)'}")
    chat = (args.chat or os.environ.get("CHAT_URL") or DEFAULT_CHAT_URL).rstrip("/")
    interceptors_host = args.interceptors_host or os.environ.get("INTERCEPTORS_HOST") or DEFAULT_INTERCEPTORS_HOST
    interceptors_admin = (args.interceptors_admin or os.environ.get("INTERCEPTORS_ADMIN_URL")
                          or f"http://{interceptors_host}:{INTERCEPTORS_ADMIN_PORT}").rstrip("/")
    subst = {"gateway": gateway, "loadgen": loadgen, "chat": chat, "interceptors_host": interceptors_host}
    s1 = any(uses_interceptors(s) for s in selected)

    run: dict = {
        "schema": RUN_SCHEMA,
        "mode": "quick" if quick else "full",
        "repeats": repeats,
        "only": args.only or None,
        "started_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit_id(),
        "machine": machine_info(),
        "gateway": gateway_info(gateway, args.gateway_pid),
        "chat": chat_info(chat, args.chat_pid) if any(uses_chat(s) for s in selected) else None,
        "interceptors": interceptors_info(interceptors_host, interceptors_admin, args.interceptors_pid) if s1 else None,
        "tools": {},
        "calibrate": None,
        "runs": [],
    }
    if any(s.tool == "k6" for s in selected):
        run["tools"]["k6"] = tool_version(["k6", "version"])
    index = results / "run.json"

    def save():
        index.write_text(json.dumps(run, indent=2) + "\n")

    save()
    signal.signal(signal.SIGTERM, _raise_interrupted)
    started = time.monotonic()
    total = sum(s.runs(repeats) for s in selected) + (1 if loadgen else 0)
    done = 0
    try:
        if loadgen:
            done += 1
            log(f"[{done}/{total}] calibrate: {display_command(*render_command(manifest.calibrate, quick, {**subst, 'out': 'FILE'}))}")
            entry = execute(manifest.calibrate, None, results, quick, subst, None)
            run["calibrate"] = entry
            result = load_result(results, entry)
            if result:
                run["tools"]["storm-loadgen"] = (result.get("generator") or {}).get("version")
                log(f"    generator ceiling: {ceiling_text(result)}")
            else:
                log(f"    calibrate {entry['status']}: {'; '.join(entry['problems'])}")
            save()
        else:
            log("storm-loadgen not given: no generator calibration (only k6 scenarios selected)")
        if run["chat"] and not http_ok(f"{chat}/ready"):
            log(f"warning: the chat service at {chat} does not answer /ready with 200: its scenarios will fail "
                "(start it, or set CHAT_URL)")
        if s1 and not http_ok(f"{interceptors_admin}/ready"):
            log(f"warning: storm-interceptors does not answer {interceptors_admin}/ready with 200: the S1 scenarios "
                "will fail (start it: scripts/stack.sh up, or target/release/storm-interceptors; or set "
                "INTERCEPTORS_HOST / INTERCEPTORS_ADMIN_URL)")
        for scenario in selected:
            runs = scenario.runs(repeats)
            server = server_of(scenario)
            server_pid = {"storm-interceptors": args.interceptors_pid, "storm-chat": args.chat_pid}.get(
                server, args.gateway_pid)
            for repeat in range(1, runs + 1):
                done += 1
                what = f"quick: {quick_changes(scenario)}" if quick else scenario.title
                log(f"[{done}/{total}] {scenario.name} run {repeat}/{runs}: {what}")
                entry = execute(scenario, repeat, results, quick, subst, server_pid, server)
                run["runs"].append(entry)
                save()
                result = load_result(results, entry)
                cpu = f"generator CPU {fmt_pct(entry.get('generator_cpu_percent'))}"
                if entry.get("gateway_cpu_percent") is not None:
                    cpu += f", {server} {fmt_pct(entry['gateway_cpu_percent'])}"
                if entry["status"] == "ok":
                    log(f"    {summarize(scenario, result)}  ({entry['elapsed_s']:.1f} s, {cpu})")
                else:
                    log(f"    RUN FAILED ({entry['status']}): {'; '.join(entry['problems'])}")
                    tail = (results / entry["log"]).read_text(errors="replace").splitlines()[-15:]
                    for line in tail:
                        print(f"      | {line}", file=sys.stderr)
                for problem in entry["problems"] if entry["status"] == "ok" else []:
                    log(f"    problem: {problem}")
    except (KeyboardInterrupt, Interrupted):
        run["interrupted"] = True
        run["finished_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        save()
        log(f"interrupted; partial results in {results}")
        return 130
    run["finished_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    run["elapsed_s"] = round(time.monotonic() - started, 1)
    save()

    failed_runs = [e for e in all_runs(run) if e["status"] != "ok"]
    smoke = [(e, p) for e in run["runs"] if e["status"] == "ok" for p in e["problems"]]
    baselines = Path(args.baselines) if args.baselines else BASELINES
    report_path = write_reports(results, run, baselines, publish=not quick and not args.only and not failed_runs)

    print(file=sys.stderr)
    if quick:
        log(f"quick report: {report_path}")
    elif report_path == baselines:
        log(f"wrote {baselines.relative_to(ROOT) if baselines.is_relative_to(ROOT) else baselines} (results: {results})")
    else:
        why = "a subset (RUN_ALL_ONLY)" if args.only else "a run failed"
        log(f"{why}: {baselines.name} left as it was; report written to {report_path}")
    for entry in failed_runs:
        log(f"RUN FAILED {run_label(entry)}: {'; '.join(entry['problems'])}")
    if quick:
        for entry, problem in smoke:
            log(f"SMOKE FAIL {run_label(entry)}: {problem}")
        if failed_runs or smoke:
            return 1
        log(f"smoke OK: {len(run['runs'])} runs, no 5xx, no lost or duplicated frames, no transport errors")
        return 0
    return 1 if failed_runs else 0


def all_runs(run: dict) -> list[dict]:
    return ([run["calibrate"]] if run.get("calibrate") else []) + run["runs"]


def run_label(entry: dict) -> str:
    return entry["scenario"] + (f" run {entry['repeat']}" if entry.get("repeat") else "")


def load_result(results: Path, entry: dict | None) -> dict | None:
    if not entry or entry.get("status") != "ok":
        return None
    try:
        result = json.loads((results / entry["result"]).read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


# --- formatting ---------------------------------------------------------------------------------------


def fmt_number(value: float, unit: str) -> str:
    """The number alone, with the precision its unit deserves."""
    if unit == "ms":
        if value >= 1000:
            return f"{value:,.0f}"
        return f"{value:.1f}" if value >= 100 else f"{value:.2f}"
    if unit == "µs":
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"
    if unit == "%":
        pct = value * 100
        return f"{pct:.4f}" if 0 < pct < 0.01 else f"{pct:.2f}"
    if unit == "count":
        return f"{value:,.0f}"
    if unit == "s":
        return f"{value:,.1f}"
    return f"{value:,.0f}" if value >= 1000 else f"{value:,.1f}"  # a rate


def plain_number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,g}"


def unit_suffix(unit: str) -> str:
    return {"ms": " ms", "µs": " µs", "s": " s", "%": " %", "count": "", "/s": "/s"}.get(unit, f" {unit}")


def fmt(value: float | None, unit: str) -> str:
    return "n/a" if value is None else fmt_number(value, unit) + unit_suffix(unit)


def fmt_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} %"


def target_text(row: Row) -> str:
    if not row.target:
        return "—"
    op, number = row.target
    if row.unit == "%":
        number *= 100  # a fraction in the manifest, a percentage on the page
    shown = plain_number(number) + unit_suffix(row.unit)  # as written: "< 250 ms", not "< 250.0 ms"
    text = f"{OP_TEXT[op]} {shown}"
    if row.judge == "every":
        text += ", every run"
    if row.target_note:
        text += f" ({row.target_note})"
    return text


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return lines


def measured(values: list[float], unit: str, repeats: int) -> str:
    """"3.76 ms (3.08–3.85 ms)": the median, then min–max when there is more than one run."""
    if not values:
        return "n/a"
    text = fmt(statistics.median(values), unit)
    if len(values) > 1:
        low, high = fmt_number(min(values), unit), fmt_number(max(values), unit)
        text += " (all equal)" if low == high else f" ({low}–{high}{unit_suffix(unit)})"
    if len(values) < repeats:
        text += f" — {len(values)} of {repeats} runs"
    return text


def verdict(row: Row, values: list[float]) -> str:
    if not row.target:
        return "—"
    if not values:
        return "n/a"
    op, number = row.target
    passed = [OPS[op](v, number) for v in values]
    if row.judge == "every":
        misses = passed.count(False)
        return "pass" if not misses else f"**fail** ({misses} of {len(values)} runs)"
    ok = OPS[op](statistics.median(values), number)
    misses = passed.count(False) if ok else passed.count(True)
    if len(values) > 1 and misses:
        return ("pass" if ok else "**fail**") + f" ({misses} of {len(values)} runs {'missed' if ok else 'met it'})"
    return "pass" if ok else "**fail**"


def ceiling_text(calibrate: dict | None) -> str:
    if not calibrate:
        return "not measured"
    http, ws = calibrate.get("http") or {}, calibrate.get("ws") or {}
    parts = []
    if http.get("throughput_rps") is not None:
        p99 = lookup(http, "latency_ms.p99")
        parts.append(
            f"HTTP {fmt(http['throughput_rps'], 'req/s')} over {http.get('connections', '?')} connections"
            + (f" (p99 {fmt(p99, 'ms')})" if p99 is not None else "")
        )
    if ws.get("frames_per_s") is not None:
        parts.append(f"WebSocket {fmt(ws['frames_per_s'], 'frames/s')} into {plain_number(ws['sockets']) if isinstance(ws.get('sockets'), (int, float)) else '?'} sockets")
    return ", ".join(parts) or "not in the calibrate JSON"


def memory_text(n: int | None) -> str:
    return "?" if not n else f"{n / 2**30:.1f} GiB"


# --- the report -----------------------------------------------------------------------------------------


def read_notes(baselines: Path) -> tuple[str | None, bool]:
    """The hand-written notes of an existing BASELINES.md (None when the file has none) and
    whether the file existed at all."""
    if not baselines.exists():
        return None, False
    text = baselines.read_text()
    begin, end = text.find("<!-- notes:begin"), text.find(NOTES_END)
    if begin < 0 or end < begin:
        return None, True
    begin = text.index("-->", begin) + 3
    return text[begin:end].strip("\n"), True


def render_report(results: Path, run: dict, notes: str | None) -> str:
    manifest = load_manifest(results / "scenarios.toml") if (results / "scenarios.toml").exists() else load_manifest()
    quick = run["mode"] == "quick"
    repeats = run["repeats"]
    by_scenario: dict[str, list[dict]] = {}
    for entry in run["runs"]:
        by_scenario.setdefault(entry["scenario"], []).append(entry)
    ran = [s for s in manifest.scenarios if s.name in by_scenario]
    calibrate = load_result(results, run.get("calibrate"))
    machine = dict(run.get("machine") or {})
    for key, value in ((calibrate or {}).get("machine") or {}).items():
        machine.setdefault(key, value)
    cores = machine.get("cores") or "?"
    gateway = run.get("gateway") or {}
    tools = {k: v for k, v in (run.get("tools") or {}).items() if v}
    results_rel = str(results).replace(str(ROOT) + "/", "")

    out: list[str] = []
    if quick:
        out += [
            "# stormstack baselines — quick smoke (not a baseline)",
            "",
            f"`scripts/run-all.sh --quick`: one short run per scenario with small counts, a CI smoke. "
            "Its figures say that every scenario runs, not how fast the stack is; targets are not judged. "
            "The smoke fails on a failed run, a 5xx, a lost or duplicated frame or a transport error.",
        ]
    else:
        out += [
            "# stormstack baselines",
            "",
            "<!-- Generated by scripts/run-all.sh from loadtest/scenarios.toml; edit only the notes section at the end. -->",
            "",
            f"Written by `scripts/run-all.sh` from its own runs (raw results: `{results_rel}/`, not committed). "
            + (f"Each figure is the median of {repeats} runs with (min–max) beside it; a target is judged on the "
             "median unless it says \"every run\". " if repeats > 1 else "Each figure is from one run (REPEATS=1). ")
            + "Source figures come from the source systems' own performance documents.",
        ]
    out.append("")
    os_text = f", {machine['os']}" if machine.get("os") else ""
    out.append(
        f"- **Machine**: {machine.get('cpu_model', '?')}, {cores} cores, {memory_text(machine.get('memory_bytes'))}, "
        f"Linux {machine.get('kernel', '?')}{os_text} (host `{machine.get('hostname', '?')}`)."
    )
    out.append(f"- **Commit**: `{run.get('commit', '?')}`.")
    date = run.get("started_at", "?")
    took = f", {run['elapsed_s'] / 60:.1f} min in all" if run.get("elapsed_s") else ""
    out.append(f"- **Date**: {date.replace('T', ' ').replace('Z', ' UTC')}{took}.")
    gw = f"- **Gateway**: {gateway.get('url', '?')}"
    if gateway.get("binary"):
        gw += f", `{gateway['binary']}`"
    admission = gateway.get("admission") or {}
    if admission.get("workers") is not None:
        gw += f", admission {admission['workers']} workers + {admission.get('queue_capacity')} queued"
    out.append(gw + ".")
    if (run.get("chat") or {}).get("url") and any(uses_chat(s) for s in ran):
        text = f"- **Chat service** (S4): {run['chat']['url']}"
        text += f", `{run['chat']['binary']}`" if run["chat"].get("binary") else ""
        out.append(text + ".")
    interceptors = run.get("interceptors") or {}
    if interceptors.get("host") and any(uses_interceptors(s) for s in ran):
        text = (f"- **Interceptor-overhead server** (S1): `storm-interceptors` on {interceptors['host']} "
                f"(admin {interceptors.get('admin_url')})")
        text += f", `{interceptors['binary']}`" if interceptors.get("binary") else ""
        out.append(text + ".")
    if tools:
        out.append("- **Generators**: " + ", ".join(v if v.startswith(k) else f"{k} {v}" for k, v in tools.items()) + ".")
    out.append(
        f"- **Shared CPU**: the generators, the gateway and Redis all run on these {cores} cores, so every "
        f"figure is a lower bound for the gateway. CPU columns are percent of one core (of {cores}00 % in all)."
    )
    out.append(f"- **Generator ceiling** (`storm-loadgen calibrate`, same machine, nothing else running): "
               f"{ceiling_text(calibrate)}.")
    if run.get("only"):
        out.append(f"- **Subset**: RUN_ALL_ONLY={run['only']}.")
    if run.get("interrupted"):
        out.append("- **Interrupted** before every run finished.")

    for source_id, source in manifest.sources.items():
        scenarios = [s for s in ran if s.source == source_id]
        if not scenarios:
            continue
        out += ["", f"## {source_id} — {source['title']}", ""]
        if source.get("about"):
            out += [source["about"].strip(), ""]
        ours = f"ours: median (min–max of {repeats})" if repeats > 1 else "ours (one run)"
        header = ["scenario", "metric", "source", "target", ours, "verdict"]
        if quick:
            header = ["scenario", "metric", "source", "quick run"]
        rows = []
        for scenario in scenarios:
            entries = by_scenario[scenario.name]
            loaded = [load_result(results, e) for e in entries]
            for i, row in enumerate(scenario.rows):
                values = [v for v in (row.lookup(r) for r in loaded if r) if v is not None]
                name = f"`{scenario.name}`" if i == 0 else ""
                if quick:
                    rows.append([name, row.metric, row.source, measured(values, row.unit, scenario.runs(repeats))])
                else:
                    rows.append([name, row.metric, row.source, target_text(row),
                                 measured(values, row.unit, scenario.runs(repeats)), verdict(row, values)])
        out += md_table(header, rows)
        out += ["", f"Generator ceiling: {ceiling_text(calibrate)}. A figure close to it measures the generator, "
                "not the gateway; k6 has no such calibration, its CPU share below shows when it is the bottleneck.", ""]
        cpu_rows = []
        for scenario in scenarios:
            entries = by_scenario[scenario.name]
            gen = [e["generator_cpu_percent"] for e in entries if e.get("generator_cpu_percent") is not None]
            gw_cpu = [e["gateway_cpu_percent"] for e in entries if e.get("gateway_cpu_percent") is not None]
            ok = sum(1 for e in entries if e["status"] == "ok")
            what = f"quick: {quick_changes(scenario)}" if quick else scenario.title
            if not quick and scenario.runs(repeats) < repeats:
                what += f" — {scenario.runs(repeats)} run{'s' if scenario.runs(repeats) > 1 else ''} (repeats = {scenario.repeats} in scenarios.toml)"
            cpu_rows.append([
                f"`{scenario.name}`", what,
                TOOLS[scenario.tool]["label"],
                fmt_pct(statistics.median(gen)) if gen else "n/a",
                fmt_pct(statistics.median(gw_cpu)) if gw_cpu else "n/a",
                f"{ok} of {len(entries)} ok",
            ])
        server = server_column(scenarios, by_scenario)
        out += md_table(["scenario", "what", "generator", "generator CPU", server, "runs"], cpu_rows)
        out += ["", "Commands (run 1 of each; the k6 token is minted by `perf-load.sh` (`ACCESS_TOKEN`) or "
                "`k6-run.sh` (`TOKEN`), storm-loadgen mints its own from `JWT_SECRET`):", "", "```sh"]
        for scenario in scenarios:
            out.append(by_scenario[scenario.name][0]["display"])
        out.append("```")

    problem_rows = []
    for entry in all_runs(run):
        for problem in entry["problems"]:
            kind = "smoke" if entry["status"] == "ok" else entry["status"]
            problem_rows.append([run_label(entry), kind, problem])
        for note in entry.get("notes", []):
            problem_rows.append([run_label(entry), "note", note])
    out += ["", "## Runs", ""]
    if problem_rows:
        out += md_table(["run", "kind", "what"], problem_rows)
    else:
        total = len(all_runs(run))
        out.append(f"All {total} runs completed with no 5xx, no lost or duplicated frame and no transport error.")
    out += ["", f"Per run: `{results_rel}/run.json` (command, exit status, elapsed, CPU) and "
            "`<scenario>.r<N>.json` / `.log` beside it."]

    if not quick:
        out += ["", "## Notes", "", NOTES_BEGIN]
        out.append(notes if notes is not None else
                   "(hand-written analysis goes here: what bounds each figure, profiles, what changed)")
        out.append(NOTES_END)
    return "\n".join(out).rstrip() + "\n"


def server_column(scenarios: list[Scenario], by_scenario: dict[str, list[dict]]) -> str:
    """"storm-chat CPU": the server whose CPU share a table's runs recorded. A run says which
    (`server`); one written before runs said so was storm-interceptors' for S1, else the gateway's."""
    servers: list[str] = []
    for scenario in scenarios:
        for entry in by_scenario[scenario.name]:
            server = entry.get("server") or ("storm-interceptors" if uses_interceptors(scenario) else "gateway")
            if server not in servers:
                servers.append(server)
    return " / ".join(servers or ["gateway"]) + " CPU"


def write_reports(results: Path, run: dict, baselines: Path, publish: bool) -> Path:
    """Write the report into the results dir, and over BASELINES.md when `publish` (a complete full
    run). Returns where the report a person should read went."""
    quick = run["mode"] == "quick"
    notes, existed = read_notes(baselines)
    if existed and notes is None and not quick:
        print(f"warning: {baselines} has no notes markers; its old text is kept in "
              f"{results / 'BASELINES.previous.md'}", file=sys.stderr)
    text = render_report(results, run, notes)
    local = results / ("BASELINES.quick.md" if quick else "BASELINES.md")
    local.write_text(text)
    if not publish:
        return local
    if existed:
        shutil.copyfile(baselines, results / "BASELINES.previous.md")
    baselines.write_text(text)
    return baselines


# --- commands -----------------------------------------------------------------------------------------


def cmd_list(args) -> int:
    manifest = load_manifest()
    selected = manifest.select(args.only)
    if args.tools:
        for tool in sorted({s.tool for s in selected}):
            print(tool)
        return 0
    for s in selected:
        print(f"{s.name:24} {s.source:3} {s.tool:8} {s.title}")
    return 0


def cmd_report(args) -> int:
    results = Path(args.results)
    try:
        run = json.loads((results / "run.json").read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{results}/run.json: {e}") from e
    if run.get("schema") != RUN_SCHEMA:
        raise UsageError(f"{results}/run.json: schema {run.get('schema')!r}, expected {RUN_SCHEMA!r}")
    notes, _ = read_notes(Path(args.baselines) if args.baselines else BASELINES)
    text = render_report(results, run, notes)
    if args.out == "-" or not args.out:
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="baselines.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="the scenarios of the manifest")
    p.add_argument("--only", default=os.environ.get("RUN_ALL_ONLY") or None)
    p.add_argument("--tools", action="store_true", help="print the tools the selection needs")
    p = sub.add_parser("run", help="run the scenarios, then write the report")
    p.add_argument("--gateway", required=True)
    p.add_argument("--chat", default=None, help=f"the chat service, {{chat}} (default $CHAT_URL, else {DEFAULT_CHAT_URL})")
    p.add_argument("--results", required=True)
    p.add_argument("--loadgen", default="")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=0)
    p.add_argument("--only", default=None)
    p.add_argument("--gateway-pid", type=int, default=None)
    p.add_argument("--chat-pid", type=int, default=None, help="storm-chat's pid, for its CPU share in the S4 runs")
    p.add_argument("--interceptors-host", default=None,
                   help=f"storm-interceptors' host, {{interceptors_host}} (default $INTERCEPTORS_HOST, else {DEFAULT_INTERCEPTORS_HOST})")
    p.add_argument("--interceptors-admin", default=None,
                   help=f"its admin listener, checked for /ready before S1 runs (default $INTERCEPTORS_ADMIN_URL, "
                        f"else http://HOST:{INTERCEPTORS_ADMIN_PORT})")
    p.add_argument("--interceptors-pid", type=int, default=None, help="its pid, for its CPU share in the S1 runs")
    p.add_argument("--baselines", default=None, help="the BASELINES.md to rewrite (default loadtest/BASELINES.md)")
    p = sub.add_parser("report", help="rebuild the Markdown from a results dir")
    p.add_argument("--results", required=True)
    p.add_argument("--out", default="-")
    p.add_argument("--baselines", default=None, help="where the hand-written notes come from")
    args = parser.parse_args(argv)
    try:
        if args.command == "run" and args.repeats < 0:
            raise UsageError("--repeats must be positive")
        return {"list": cmd_list, "run": cmd_run, "report": cmd_report}[args.command](args)
    except UsageError as e:
        print(f"baselines.py: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
