#!/usr/bin/env python3
"""Merge the end-of-test summaries of the N runners of one distributed k6 run (k6-operator TestRun).

Each runner ran 1/N of the test (its execution segment) and wrote its own summary — the JSON that
loadtest/k6/lib/common.js's handleSummary writes: k6's summary data plus {scenario, config,
finished_at}. With SUMMARY_JSON=/dev/stdout (infra/k6-operator/testrun.yaml) that JSON is in the
runner's log, so the input can be either the JSON files or the saved logs:

    for p in $(kubectl -n stormstack-load get pods -l k6_cr=stormstack-load-test,runner=true -o name); do
      kubectl -n stormstack-load logs "$p" > "runner-${p##*/}.log"; done
    python3 infra/k6-operator/merge-summaries.py runner-*.log [--json merged.json]

What merges and what does not:
  - counters (count, rate per second): they add. Rates add because every runner ran the same
    duration.
  - rates (the fraction of true samples, e.g. http_req_failed): passes and fails add, the merged
    rate is passes / (passes + fails) — exact.
  - trends: min and max are exact (min of mins, max of maxes); avg is exact when the runner's sample
    count is known (the trend's own `count` stat, or http_reqs / iterations for k6's built-in
    http_req_* / iteration_duration trends). Percentiles (med, p(90), p(95), …) do NOT merge: the
    average of N p95s is not the p95 of the whole. What is true: the merged p-th percentile lies
    between the smallest and the largest runner's p-th percentile (the whole is a mixture of the
    runners' samples: if every runner has at most 5 % of its samples above x, so has the whole).
    So percentiles are printed as that range, and a percentile threshold is decided only when the
    whole range is on one side of it. For the exact value, stream the samples to one place: the
    TestRun's Prometheus remote-write output (README.md "Merging results").
  - thresholds: each runner judged its own 1/N of the samples. Here they are re-judged on the
    merged figures where the figures allow it.

`--self-test` checks the merging on built-in data (scripts/check-k8s.sh runs it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

PERCENTILE = re.compile(r"^(med|p\(\d+(\.\d+)?\))$")
THRESHOLD = re.compile(r"^\s*(avg|min|max|med|count|rate|value|p\(\d+(?:\.\d+)?\))\s*(<=|>=|==|===|!=|<|>)\s*(-?[\d.]+)\s*$")
# k6's built-in trends whose sample count is another built-in counter's count.
IMPLIED_COUNT = {"http_req_": "http_reqs", "iteration_duration": "iterations"}


def extract_summary(text: str, origin: str) -> dict:
    """The summary JSON: the whole text, or the pretty-printed object inside a runner's log."""
    try:
        data = json.loads(text)
        if isinstance(data, dict) and "metrics" in data:
            return data
    except json.JSONDecodeError:
        pass
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line == "{" and i + 1 < len(lines) and lines[i + 1].startswith('  "scenario":'):
            for j in range(i + 1, len(lines)):
                if lines[j] == "}":
                    return json.loads("\n".join(lines[i : j + 1]))
    raise SystemExit(f"{origin}: no k6 summary JSON found (a runner log with SUMMARY_JSON=/dev/stdout, or the JSON file)")


def sample_count(name: str, summary: dict) -> float | None:
    values = summary["metrics"][name]["values"]
    if "count" in values:
        return values["count"]
    base = name.split("{", 1)[0]
    for prefix, counter in IMPLIED_COUNT.items():
        if base.startswith(prefix) and name == base and counter in summary["metrics"]:
            return summary["metrics"][counter]["values"].get("count")
    return None


def merge(summaries: list[dict]) -> dict:
    """{metric: {type, values: {stat: number | [lo, hi]}, exact: {stat: bool}}} over all runners."""
    names = sorted(set().union(*(s["metrics"] for s in summaries)))
    merged: dict[str, dict] = {}
    for name in names:
        present = [s for s in summaries if name in s["metrics"]]
        kind = present[0]["metrics"][name]["type"]
        vals = [s["metrics"][name]["values"] for s in present]
        out: dict[str, object] = {}
        exact: dict[str, bool] = {}
        if kind == "counter":
            for stat in ("count", "rate"):
                out[stat] = sum(v.get(stat, 0) for v in vals)
                exact[stat] = True
        elif kind == "rate":
            passes = sum(v.get("passes", 0) for v in vals)
            fails = sum(v.get("fails", 0) for v in vals)
            out.update(passes=passes, fails=fails, rate=passes / (passes + fails) if passes + fails else 0.0)
            exact.update(passes=True, fails=True, rate=True)
        elif kind == "gauge":
            # VUs add up across runners (every runner follows the same stage timing); other gauges
            # are per-runner readings, of which only the extremes mean something.
            if name in ("vus", "vus_max"):
                for stat in ("value", "min", "max"):
                    out[stat] = sum(v.get(stat, 0) for v in vals)
                    exact[stat] = stat != "value"
            else:
                out["min"] = min(v.get("min", v.get("value", 0)) for v in vals)
                out["max"] = max(v.get("max", v.get("value", 0)) for v in vals)
                exact.update(min=True, max=True)
        elif kind == "trend":
            stats = set().union(*vals)
            if "min" in stats:
                out["min"], exact["min"] = min(v["min"] for v in vals), True
            if "max" in stats:
                out["max"], exact["max"] = max(v["max"] for v in vals), True
            weights = [sample_count(name, s) for s in present]
            if "avg" in stats and all(w is not None for w in weights) and sum(weights) > 0:
                out["avg"] = sum(v["avg"] * w for v, w in zip(vals, weights)) / sum(weights)
                exact["avg"] = True
            elif "avg" in stats:
                out["avg"] = [min(v["avg"] for v in vals), max(v["avg"] for v in vals)]
                exact["avg"] = False
            if "count" in stats:
                out["count"], exact["count"] = sum(v.get("count", 0) for v in vals), True
            for stat in sorted(s for s in stats if PERCENTILE.match(s)):
                out[stat] = [min(v[stat] for v in vals), max(v[stat] for v in vals)]
                exact[stat] = False
        merged[name] = {"type": kind, "values": out, "exact": exact, "runners": len(present)}
    return merged


def judge(expr: str, values: dict) -> str:
    """PASS / FAIL / UNDECIDED for one threshold expression on merged values."""
    m = THRESHOLD.match(expr)
    if not m:
        return "UNDECIDED"
    stat, op, limit = m.group(1), m.group(2), float(m.group(3))
    if stat not in values:
        return "UNDECIDED"
    ops = {"<": lambda a: a < limit, "<=": lambda a: a <= limit, ">": lambda a: a > limit,
           ">=": lambda a: a >= limit, "==": lambda a: a == limit, "===": lambda a: a == limit,
           "!=": lambda a: a != limit}
    value = values[stat]
    if isinstance(value, list):
        lo, hi = value
        if lo == hi:
            return "PASS" if ops[op](lo) else "FAIL"
        both = (ops[op](lo), ops[op](hi))
        if op in ("==", "===", "!="):
            return "UNDECIDED"
        return "PASS" if all(both) else "FAIL" if not any(both) else "UNDECIDED"
    return "PASS" if ops[op](value) else "FAIL"


def thresholds(summaries: list[dict], merged: dict) -> list[tuple[str, str, str, int]]:
    """(metric, expression, merged verdict, runners that passed it on their own share)."""
    out = []
    seen = set()
    for s in summaries:
        for name, metric in s["metrics"].items():
            for expr in metric.get("thresholds", {}):
                if (name, expr) in seen:
                    continue
                seen.add((name, expr))
                passed = sum(1 for t in summaries if t["metrics"].get(name, {}).get("thresholds", {}).get(expr, {}).get("ok"))
                out.append((name, expr, judge(expr, merged[name]["values"]), passed))
    return sorted(out)


def fmt(value: object) -> str:
    if isinstance(value, list):
        return f"{value[0]:.2f}..{value[1]:.2f}" if value[0] != value[1] else f"{value[0]:.2f}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def report(summaries: list[dict], merged: dict, origins: list[str]) -> str:
    scenarios = sorted({s.get("scenario", "?") for s in summaries})
    lines = [f"== merged k6 summary: {', '.join(scenarios)} from {len(summaries)} runners ==",
             "(a..b: the merged percentile lies in this range — runners' min..max; exact only from the Prometheus stream)"]
    if len(scenarios) > 1:
        lines.append(f"warning: the runners ran different scenarios: {scenarios}")
    for name, m in merged.items():
        stats = "  ".join(f"{k}={fmt(v)}" for k, v in m["values"].items())
        note = "" if m["runners"] == len(summaries) else f"  (only {m['runners']} runners)"
        lines.append(f"  {name:<40} {m['type']:<8} {stats}{note}")
    checks = thresholds(summaries, merged)
    if checks:
        lines.append("thresholds (merged verdict; runners that passed on their own 1/N):")
        for name, expr, verdict, passed in checks:
            lines.append(f"  {verdict:<9} {name} {expr}   [{passed}/{len(summaries)} runners]")
    lines.append(f"inputs: {', '.join(origins)}")
    return "\n".join(lines)


def self_test() -> None:
    # failed / succeeded: requests; in a k6 Rate, `passes` counts the true samples (here: failures).
    def summary(count, rate, failed, succeeded, lat, reqs, ok):
        return {"scenario": "t", "metrics": {
            "http_reqs": {"type": "counter", "values": {"count": reqs, "rate": rate}},
            "things": {"type": "counter", "values": {"count": count, "rate": rate}},
            "http_req_failed": {"type": "rate", "values": {"rate": failed / (failed + succeeded), "passes": failed, "fails": succeeded},
                                "thresholds": {"rate<0.3": {"ok": ok}}},
            "http_req_duration": {"type": "trend", "values": lat, "thresholds": {"p(95)<200": {"ok": True}, "p(95)<120": {"ok": ok}}},
            "vus": {"type": "gauge", "values": {"value": 0, "min": 1, "max": 50}},
        }}
    a = summary(100, 10.0, 10, 90, {"avg": 50.0, "min": 1.0, "max": 150.0, "med": 40.0, "p(95)": 110.0}, 100, True)
    b = summary(300, 30.0, 90, 210, {"avg": 70.0, "min": 2.0, "max": 190.0, "med": 60.0, "p(95)": 130.0}, 300, False)
    m = merge([a, b])
    v = m["http_req_duration"]["values"]
    assert m["things"]["values"] == {"count": 400, "rate": 40.0}, m["things"]
    # 10 + 90 failed of 400.
    assert abs(m["http_req_failed"]["values"]["rate"] - 100 / 400) < 1e-12, m["http_req_failed"]
    assert v["min"] == 1.0 and v["max"] == 190.0 and abs(v["avg"] - (50 * 100 + 70 * 300) / 400) < 1e-9, v
    assert v["p(95)"] == [110.0, 130.0] and m["vus"]["values"]["max"] == 100, (v, m["vus"])
    verdicts = {(n, e): r for n, e, r, _ in thresholds([a, b], m)}
    assert verdicts[("http_req_duration", "p(95)<200")] == "PASS"
    assert verdicts[("http_req_duration", "p(95)<120")] == "UNDECIDED"
    assert verdicts[("http_req_failed", "rate<0.3")] == "PASS"
    log = "time=x level=info msg=start\n\n== t summary ==\n{\n  \"scenario\": \"t\",\n  \"metrics\": {}\n}\nafter\n"
    assert extract_summary(log, "log") == {"scenario": "t", "metrics": {}}
    print("merge-summaries: self-test OK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="*", type=Path, help="runner logs or summary JSON files")
    ap.add_argument("--json", type=Path, help="also write the merged figures as JSON here")
    ap.add_argument("--self-test", action="store_true", help="check the merging on built-in data")
    args = ap.parse_args()
    if args.self_test:
        self_test()
        return 0
    if not args.inputs:
        ap.error("give the runners' logs or summary JSON files")
    summaries = [extract_summary(p.read_text(), str(p)) for p in args.inputs]
    merged = merge(summaries)
    print(report(summaries, merged, [str(p) for p in args.inputs]))
    if args.json:
        args.json.write_text(json.dumps({
            "scenario": sorted({s.get("scenario", "?") for s in summaries}),
            "runners": len(summaries),
            "metrics": merged,
            "thresholds": [{"metric": n, "expr": e, "verdict": r, "runners_passed": p} for n, e, r, p in thresholds(summaries, merged)],
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
