#!/usr/bin/env python3
"""check_observability.py — the parts of scripts/check-observability.sh that read JSON and PromQL.

Standard library only (the check must run on a fresh machine). Subcommands:

  derive-config SRC DST SELF_ADDR   infra/prometheus/prometheus.yml with every target replaced by the
                                    URL in the environment variable its `# check-observability: VAR`
                                    marker names, and 1 s scrape and rule-evaluation intervals
  wait-fresh PROM_URL CONFIG AFTER_EPOCH
                                    wait until every job of CONFIG was scraped, up, and every rule
                                    group evaluated after AFTER_EPOCH
  evaluate PROM_URL DASHBOARD_DIR SOURCE_DIR
                                    every PromQL expression of the dashboards and of the rules
                                    Prometheus loaded, through /api/v1/query; prints the table
  families NAME=URL...              the SPEC "Observability" metric families on each /metrics
  ws-hold URL TOKEN SUBJECT SECONDS a WebSocket subscriber that never reads (a slow consumer)

What must not break: an expression passes only when Prometheus evaluates it without error AND it
returns at least one sample that is not NaN — unless it is marked validity-only (a dashboard
panel whose description carries `[validity-only]` or `[validity-only: B C]` for some refIds, a
rule named in VALIDITY_ONLY_RULES, every alert), in which case it must still parse and evaluate,
and every metric it names must exist in Prometheus or be described in the services' source.
"""

import base64
import calendar
import glob
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

# Recording rules that may be empty even after the load (none now: the services export their fault
# and overload counters at 0 from start, so a rule over them returns 0, which is data). Alerts are
# always validity-only: they have data only when firing.
VALIDITY_ONLY_RULES = set()

# What Grafana substitutes, for the check: windows wide enough to cover the whole short load.
GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "5s",
    "__interval_ms": "5000",
    "__range": "10m",
    "__range_s": "600",
    "__range_ms": "600000",
}

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2", "start", "end",
}

# SPEC "Observability", phrase by phrase → (family, sample name on /metrics, services). Every one
# must be on /metrics after the load: the counters are exported at 0 from start
# (common::metrics::register_counters), the histograms appear on their first observation, which
# the load makes (requests, a publish confirm, a writer batch), and so are two gauges the gateway
# sets only then: gateway_ws_connections (first socket) and gateway_pubsub_subscriptions.
ALL_SERVICES = ("gateway", "messages", "chat", "writer", "interceptors")
DB_SERVICES = ("messages", "chat", "writer")
SPEC_FAMILIES = [
    ("request count by method, route, status", "http_requests_total", ALL_SERVICES),
    ("latency histogram by method, route, status", "http_request_duration_seconds_bucket", ALL_SERVICES),
    ("WebSocket connections", "gateway_ws_connections", ("gateway",)),
    ("frames sent", "gateway_ws_frames_sent_total", ("gateway",)),
    ("slow-consumer closes", "gateway_ws_slow_consumer_closes_total", ("gateway",)),
    ("pub/sub messages in", "gateway_pubsub_messages_in_total", ("gateway",)),
    ("admission inflight", "admission_inflight", ("gateway",)),
    ("admission queued", "admission_queued", ("gateway",)),
    ("admission shed", "admission_shed_total", ("gateway",)),
    ("broker publishes", "chat_publish_total", ("chat",)),
    ("broker confirms", 'chat_publish_total{outcome="confirmed"}', ("chat",)),
    ("broker confirms (publish → confirm latency)", "chat_publish_confirm_seconds_bucket", ("chat",)),
    ("writer batch size", "writer_batch_size_bucket", ("writer",)),
    ("rows written", "writer_rows_written_total", ("writer",)),
    ("redeliveries", "writer_redeliveries_total", ("writer",)),
    ("dead letters", "writer_dead_letters_total", ("writer",)),
    ("database pool in use", 'db_pool_connections{state="in_use"}', DB_SERVICES),
    ("database pool idle", 'db_pool_connections{state="idle"}', DB_SERVICES),
]


def die(message):
    print(f"check_observability.py: {message}", file=sys.stderr)
    sys.exit(1)


# --- derive-config -------------------------------------------------------------------------------

def host_port(url, variable):
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or not parsed.hostname or not parsed.port:
        die(f"{variable} must be http://HOST:PORT (got {url!r})")
    return f"{parsed.hostname}:{parsed.port}"


def derive_config(src, dst, self_addr):
    marker = re.compile(r'^(\s*- targets: \[)"[^"]*"(\]\s*)# check-observability: (\S+)\s*$')
    intervals = re.compile(r"^(\s*)(scrape_interval|evaluation_interval|scrape_timeout):\s*\S+\s*$")
    out, jobs, replaced = [], 0, 0
    with open(src, encoding="utf-8") as f:
        for line in f:
            if re.match(r"^\s*- job_name:", line):
                jobs += 1
            m = marker.match(line)
            if m:
                variable = m.group(3)
                if variable == "self":
                    target = self_addr
                else:
                    url = os.environ.get(variable)
                    if not url:
                        die(f"{src} names {variable} for a target, but it is not set")
                    target = host_port(url, variable)
                line = f'{m.group(1)}"{target}"{m.group(2).rstrip()}\n'
                replaced += 1
            m = intervals.match(line)
            if m:
                line = f"{m.group(1)}{m.group(2)}: 1s\n"
            out.append(line)
    if replaced != jobs:
        die(f"{src}: {jobs} jobs but {replaced} targets carry a `# check-observability: VAR` marker")
    with open(dst, "w", encoding="utf-8") as f:
        f.writelines(out)


# --- Prometheus HTTP API -------------------------------------------------------------------------

def api(prom, path, params=None):
    data = urllib.parse.urlencode(params).encode() if params else None
    request = urllib.request.Request(prom + path, data=data)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        try:
            return json.load(e)
        except ValueError:
            return {"status": "error", "error": f"HTTP {e.code}"}


def wait_fresh(prom, config, after, timeout=40):
    """Waits until every job of CONFIG has its target up and scraped after AFTER, and every rule
    group of the rules file next to it was evaluated after AFTER. (Right after start the target
    and group lists are still empty, and target discovery takes a few seconds: an empty list is
    not fresh.)"""
    with open(config, encoding="utf-8") as f:
        jobs = set(re.findall(r"^\s*- job_name:\s*(\S+)", f.read(), re.M))
    with open(os.path.join(os.path.dirname(config), "rules.yml"), encoding="utf-8") as f:
        groups = set(re.findall(r"^\s*- name:\s*(\S+)", f.read(), re.M))
    deadline = time.time() + timeout
    while True:
        fresh_jobs, fresh_groups, down = set(), set(), []
        for target in api(prom, "/api/v1/targets")["data"]["activeTargets"]:
            job = target["labels"].get("job")
            if target["health"] == "down":
                down.append(f"{job}: {target.get('lastError')}")
            elif target["health"] == "up" and parse_ts(target["lastScrape"]) > after:
                fresh_jobs.add(job)
        for group in api(prom, "/api/v1/rules")["data"]["groups"]:
            if parse_ts(group.get("lastEvaluation", "")) > after:
                fresh_groups.add(group["name"])
        if fresh_jobs >= jobs and fresh_groups >= groups:
            return
        if time.time() > deadline:
            stale = sorted(jobs - fresh_jobs) + [f"rule group {g}" for g in sorted(groups - fresh_groups)]
            die(f"not fresh {timeout}s after {after:.0f}: " + ", ".join(stale) + "; down: " + "; ".join(down))
        time.sleep(0.25)


def parse_ts(text):
    """RFC 3339 with nanoseconds, as Prometheus writes it, to epoch seconds (0 when unset)."""
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text or "")
    if not m or m.group(1) == "0001":
        return 0.0
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    fraction = float("0." + m.group(7)) if m.group(7) else 0.0
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) + fraction
    zone = m.group(8)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds


# --- expressions ---------------------------------------------------------------------------------

def substitute(expr, variables):
    """Grafana's variables: built-ins to fixed windows, template variables to their all-value."""
    def value(name):
        if name in GRAFANA_VARIABLES:
            return GRAFANA_VARIABLES[name]
        if name in variables:
            return variables[name]
        die(f"unknown Grafana variable ${name} in: {expr}")

    expr = re.sub(r"\$\{(\w+)(?::\w+)?\}", lambda m: value(m.group(1)), expr)
    expr = re.sub(r"\[\[(\w+)\]\]", lambda m: value(m.group(1)), expr)
    return re.sub(r"\$(\w+)", lambda m: value(m.group(1)), expr)


def metric_names(expr):
    """The metric names an expression selects (a lexical approximation of PromQL, enough here)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"'(?:[^'\\]|\\.)*'", "''", s)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", s):
        token = m.group(0)
        if s[m.end():].lstrip().startswith("(") or token.lower() in PROMQL_KEYWORDS:
            continue
        names.add(token)
    return names


def dashboard_expressions(directory):
    found = []
    files = sorted(glob.glob(os.path.join(directory, "*.json")))
    if not files:
        die(f"no dashboards in {directory}")
    for path in files:
        with open(path, encoding="utf-8") as f:
            board = json.load(f)
        where = os.path.basename(path)
        variables = {}
        for var in board.get("templating", {}).get("list", []):
            name = var["name"]
            variables[name] = var.get("allValue") or ".*"
            query = var.get("query")
            if isinstance(query, dict):
                query = query.get("query")
            if var.get("type") == "query" and query:
                m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
                if not m:
                    die(f"{where}: variable {name}: only label_values(SELECTOR, LABEL) is checked, got {query!r}")
                found.append({
                    "where": f"{where}: variable ${name}",
                    "raw": query,
                    "expr": substitute(f"count by ({m.group(2)}) ({m.group(1)})", variables),
                    "validity_only": False,
                })
        panels = list(board.get("panels", []))
        while panels:
            panel = panels.pop(0)
            panels.extend(panel.get("panels", []))
            description = panel.get("description", "")
            marker = re.search(r"\[validity-only(?::\s*([A-Z ]+))?\]", description)
            only = None if not marker else (set(marker.group(1).split()) if marker.group(1) else "all")
            for target in panel.get("targets", []):
                expr = target.get("expr")
                if not expr:
                    continue
                ref = target.get("refId", "?")
                found.append({
                    "where": f"{where}: {panel.get('title', '?')} [{ref}]",
                    "raw": expr,
                    "expr": substitute(expr, variables),
                    "validity_only": only == "all" or (isinstance(only, set) and ref in only),
                })
    return found


def rule_expressions(prom):
    found = []
    for group in api(prom, "/api/v1/rules")["data"]["groups"]:
        for rule in group["rules"]:
            kind = rule["type"]
            name = rule["name"]
            found.append({
                "where": f"rules.yml: {group['name']}: {'alert ' if kind == 'alerting' else ''}{name}",
                "raw": rule["query"],
                "expr": rule["query"],
                "validity_only": kind == "alerting" or name in VALIDITY_ONLY_RULES,
                "record": name if kind == "recording" else None,
                "rule_health": rule.get("health"),
                "rule_error": rule.get("lastError", ""),
            })
    return found


def described_in_source(source_dir):
    """Every metric name the services register or describe by a literal name (the macros of the
    `metrics` crate), so a validity-only expression cannot hide a misspelt metric."""
    names = set()
    macro = re.compile(r'\b(?:describe_\w+|counter|gauge|histogram)!\(\s*"([a-z_:][a-z0-9_:]*)"')
    for path in glob.glob(os.path.join(source_dir, "**", "*.rs"), recursive=True):
        with open(path, encoding="utf-8") as f:
            names.update(macro.findall(f.read()))
    return names


def evaluate(prom, dashboard_dir, source_dir):
    expressions = dashboard_expressions(dashboard_dir) + rule_expressions(prom)
    present = set(api(prom, "/api/v1/label/__name__/values")["data"])
    recorded = {e["record"] for e in expressions if e.get("record")}
    described = described_in_source(source_dir)
    rows, failures = [], 0
    counts = {"ok": 0, "validity-only": 0}
    for e in expressions:
        answer = api(prom, "/api/v1/query", {"query": e["expr"]})
        detail = ""
        if answer.get("status") != "success":
            status, detail = "error", answer.get("error", "?")
        elif e.get("rule_health") == "err":
            status, detail = "error", f"rule evaluation: {e['rule_error']}"
        else:
            kind, result = answer["data"]["resultType"], answer["data"]["result"]
            if kind == "vector":
                values = [r["value"][1] for r in result]
            elif kind == "matrix":
                values = [v[1] for r in result for v in r["values"]]
            else:  # scalar or string: [time, value]
                values = [result[1]]
            real = [v for v in values if v.lower() not in ("nan", "+inf", "-inf")]
            if e["validity_only"]:
                unknown = sorted(
                    n for n in metric_names(e["expr"])
                    if n not in present and n not in recorded
                    and re.sub(r"_(bucket|sum|count)$", "", n) not in described
                )
                if unknown:
                    status, detail = "error", "unknown metric(s): " + ", ".join(unknown)
                else:
                    status = "validity-only"
                    detail = f"{len(real)} series (data)" if real else "parses; no data (needs its condition)"
            elif not values:
                status = "empty"
            elif not real:
                status, detail = "nan", f"{len(values)} series, all NaN/Inf"
            else:
                status, detail = "ok", f"{len(real)} series"
        if status in ("ok", "validity-only"):
            counts[status] += 1
        else:
            failures += 1
        rows.append((status, e["where"], detail, e["expr"]))

    width = max(len(r[1]) for r in rows)
    print(f"{'STATUS':<14} {'WHERE':<{width}}  DETAIL")
    for status, where, detail, expr in rows:
        print(f"{status:<14} {where:<{width}}  {detail}")
        if status not in ("ok", "validity-only"):
            print(f"{'':<14} {'':<{width}}  expr: {' '.join(expr.split())}")
    print(f"expressions: {len(rows)} total, {counts['ok']} with data, "
          f"{counts['validity-only']} validity-only, {failures} failed")
    with open(os.environ.get("CHECK_OBS_SUMMARY", os.devnull), "w", encoding="utf-8") as f:
        f.write(f"{len(rows)} {counts['ok']} {counts['validity-only']}\n")
    return 1 if failures else 0


# --- families ------------------------------------------------------------------------------------

def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode("utf-8")


def families(pairs):
    bodies = {}
    for pair in pairs:
        name, _, url = pair.partition("=")
        bodies[name] = fetch(url)
    failures = checked = 0
    print(f"{'STATUS':<10} {'SERVICE':<13} {'SPEC PHRASE':<44} FAMILY")
    for phrase, sample, services in SPEC_FAMILIES:
        name, _, labels = sample.partition("{")
        wanted = [l for l in labels.rstrip("}").split(",") if l]
        for service in services:
            body = bodies.get(service)
            if body is None:
                die(f"no /metrics given for {service}")
            found = any(
                line.startswith(name) and line[len(name):len(name) + 1] in ("{", " ")
                and all(w in line for w in wanted)
                for line in body.splitlines()
            )
            family = re.sub(r"_bucket$", "", name) + ("{" + labels if labels else "")
            if found:
                status = "ok"
            else:
                status = "MISSING"
                failures += 1
            print(f"{status:<10} {service:<13} {phrase:<44} {family}")
            checked += 1
    print(f"families: {checked} checked, {checked - failures} present, {failures} missing")
    return 1 if failures else 0


# --- ws-hold -------------------------------------------------------------------------------------

def ws_hold(url, token, subject, seconds):
    """Subscribes over a raw socket with a tiny receive buffer and then reads nothing, so the
    gateway's send queue for it fills and the gateway closes it with 1013 (a slow consumer)."""
    parsed = urllib.parse.urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parsed.hostname, parsed.port))
    key = base64.b64encode(os.urandom(16)).decode()
    query = urllib.parse.urlencode({"subscribe": subject, "access_token": token})
    sock.sendall(
        f"GET /api/v1/ws?{query} HTTP/1.1\r\nHost: {parsed.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            die("the gateway closed the WebSocket handshake")
        head += chunk
    status_line = head.split(b"\r\n", 1)[0].decode()
    if " 101 " not in status_line + " ":
        die(f"WebSocket upgrade answered {status_line!r}")
    print("subscribed", flush=True)
    time.sleep(seconds)
    sock.close()


def main(argv):
    if len(argv) < 2:
        die("usage: see the module docstring")
    command, args = argv[1], argv[2:]
    if command == "derive-config" and len(args) == 3:
        derive_config(*args)
        return 0
    if command == "wait-fresh" and len(args) == 3:
        wait_fresh(args[0], args[1], float(args[2]))
        return 0
    if command == "evaluate" and len(args) == 3:
        return evaluate(*args)
    if command == "families" and args:
        return families(args)
    if command == "ws-hold" and len(args) == 4:
        ws_hold(args[0], args[1], args[2], float(args[3]))
        return 0
    die(f"bad arguments for {command!r}: see the module docstring")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
