#!/usr/bin/env python3
"""Self-test of loadtest/baselines.py and scripts/run-all.sh, without a stack or real generators.

Fake `storm-loadgen` and `k6` executables copy the fixtures of loadtest/fixtures/ (shaped like the
storm-loadgen/1 JSON and k6's summary) to wherever a run asks, so the real runner, the real
manifest and the real report writer are exercised end to end: commands and --quick overrides,
exit-code handling, smoke failures, the BASELINES.md rewrite and its kept notes.

  python3 loadtest/test_baselines.py -v
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURES = HERE / "fixtures"
sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, str(HERE))
import baselines  # noqa: E402

# Every scenario of the real manifest runs (3 repeats, fewer where its `repeats` caps them, + the
# calibration in a full run).
SCENARIOS = len(baselines.load_manifest().scenarios)
FULL_RUNS = sum(s.runs(3) for s in baselines.load_manifest().scenarios)

FAKE_LOADGEN = r'''#!/usr/bin/env python3
import json, os, re, sys
args = sys.argv[1:]
if os.environ.get("FAKE_LOADGEN_FAIL_ON") and os.environ["FAKE_LOADGEN_FAIL_ON"] in " ".join(args):
    print("fake storm-loadgen: target down", file=sys.stderr)
    sys.exit(1)
kind, out = args[0], args[args.index("--json") + 1]
data = json.load(open(os.path.join(os.environ["FAKE_FIXTURES"], f"loadgen-{kind}.json")))
repeat = int((re.search(r"\.r(\d+)\.json$", out) or [0, 2])[1])
scale = 1 + 0.02 * (repeat - 2)          # runs 1..3 differ a little: median, min and max differ
if kind == "http":
    data["throughput_rps"] = round(data["throughput_rps"] * scale, 1)
    data["latency_ms"]["p95"] = round(data["latency_ms"]["p95"] * scale, 3)
if kind == "ws":
    data["frames"]["frames_per_s"] = round(data["frames"]["frames_per_s"] * scale, 1)
    if os.environ.get("FAKE_LOST") and repeat == int(os.environ["FAKE_LOST"]):
        data["frames"]["lost"] = 3
if kind == "chat":
    data["writes"]["latency_ms"]["p99"] = round(data["writes"]["latency_ms"]["p99"] * scale, 3)
    if os.environ.get("FAKE_CHAT_503"):
        data["writes"]["status"]["5xx"] = int(os.environ["FAKE_CHAT_503"])
data["command"] = "storm-loadgen " + " ".join(args)
json.dump(data, open(out, "w"))
print("fake storm-loadgen", kind, "->", out)
'''

FAKE_K6 = r'''#!/usr/bin/env python3
import json, os, sys
if sys.argv[1:2] == ["version"]:
    print("k6 v1.1.0 (fake)")
    sys.exit(0)
# The summary of the script run: loadtest/k6/<name>.js → fixtures/k6-<name>.json.
script = [a for a in sys.argv[1:] if a.endswith(".js")][-1]
data = json.load(open(os.path.join(os.environ["FAKE_FIXTURES"], f"k6-{os.path.basename(script)[:-3]}.json")))
if os.environ.get("FAKE_PUBSUB_LOST") and "pubsub" in data:
    data["pubsub"]["frames_received"] -= int(os.environ["FAKE_PUBSUB_LOST"])
data["config"] = {k: os.environ.get(k) for k in ("MODE", "DURATION", "PUB_VUS", "WS_VUS", "GATEWAY_URL", "ACCESS_TOKEN",
                                                "CHAT_URL", "WRITE_RATE", "BASE_HOST", "STAGES", "VUS")}
json.dump(data, open(os.environ["SUMMARY_JSON"], "w"))
sys.exit(int(os.environ.get("FAKE_K6_EXIT", "0")))
'''

OLD_BASELINES = textwrap.dedent(f"""\
    # stormstack baselines

    an old hand-written table that the generator replaces

    ## Notes

    {baselines.NOTES_BEGIN}
    Why k6 is generator-bound: k6 124 %, gateway 52 %.
    {baselines.NOTES_END}
    """)


class FakeTools:
    def __init__(self, tmp: Path):
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for name, text in (("storm-loadgen", FAKE_LOADGEN), ("k6", FAKE_K6)):
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)
        self.loadgen = self.bin / "storm-loadgen"

    def env(self, **extra) -> dict:
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}", "FAKE_FIXTURES": str(FIXTURES)}
        env.pop("RUN_ALL_ONLY", None)
        env.pop("REPEATS", None)
        env.pop("CHAT_URL", None)
        return {**env, **extra}


class Base(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="baselines-test.")
        self.tmp = Path(self._tmp.name)
        self.tools = FakeTools(self.tmp)
        self.results = self.tmp / "results"
        self.baselines = self.tmp / "BASELINES.md"
        self.baselines.write_text(OLD_BASELINES)

    def tearDown(self):
        self._tmp.cleanup()

    def run_baselines(self, *extra: str, **env) -> subprocess.CompletedProcess:
        argv = [sys.executable, str(HERE / "baselines.py"), "run", "--gateway", "http://127.0.0.1:9",
                "--chat", "http://127.0.0.1:7", "--results", str(self.results), "--loadgen", str(self.tools.loadgen),
                "--baselines", str(self.baselines), *extra]
        return subprocess.run(argv, cwd=ROOT, env=self.tools.env(**env), capture_output=True, text=True, timeout=120)

    def table_row(self, text: str, scenario: str, metric: str) -> list[str]:
        """The cells of one BASELINES row (scenario is named on its first row only)."""
        current = None
        for line in text.splitlines():
            if not line.startswith("| "):
                continue
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            if cells[0]:
                current = cells[0].strip("`")
            if current == scenario and len(cells) > 1 and cells[1] == metric:
                return cells
        self.fail(f"no row {scenario} / {metric} in:\n{text}")


def k6_script(scenario) -> str:
    """The k6 script a scenario runs: a .js in its command, else perf-load (scripts/perf-load.sh)."""
    scripts = [Path(a).stem for a in scenario.command if a.endswith(".js")]
    return scripts[-1] if scripts else "perf-load"


class ManifestTest(unittest.TestCase):
    def test_every_row_reads_a_number_from_its_tools_result_shape(self):
        manifest = baselines.load_manifest()
        shapes = {
            "http": json.loads((FIXTURES / "loadgen-http.json").read_text()),
            "ws": json.loads((FIXTURES / "loadgen-ws.json").read_text()),
            "chat": json.loads((FIXTURES / "loadgen-chat.json").read_text()),
        }
        for scenario in manifest.scenarios:
            if scenario.tool == "k6":
                shape = json.loads((FIXTURES / f"k6-{k6_script(scenario)}.json").read_text())
            else:
                shape = shapes[scenario.command[1]]
            for row in scenario.rows:
                with self.subTest(scenario=scenario.name, row=row.metric):
                    self.assertIsNotNone(row.lookup(shape), f"{row.value} not found in the {scenario.tool} result")

    def test_the_chat_result_carries_the_machine_cpu_per_request(self):
        # storm-loadgen chat's `cpu` object (the Rust side checks the fixture against what it
        # writes): the whole machine over Phase 3, each process group, the generator beside it.
        cpu = json.loads((FIXTURES / "loadgen-chat.json").read_text())["cpu"]
        for key in ("cores", "clock_ticks_per_s", "window_s", "requests", "machine_busy_s", "machine_cpu_percent",
                    "idle_percent", "us_per_request", "generator_us_per_request", "generator_cpu_percent"):
            with self.subTest(key=key):
                self.assertIsInstance(cpu[key], (int, float))
        self.assertEqual(set(cpu["processes"]), {"chat", "writer", "postgres", "rabbitmq", "redis", "generator"})
        for name, share in cpu["processes"].items():
            with self.subTest(process=name):
                self.assertEqual(set(share), {"cpu_percent", "us_per_request", "pids"})
        self.assertEqual(set(cpu["other"]), {"cpu_percent", "us_per_request"})
        self.assertEqual(cpu["generator_us_per_request"], cpu["processes"]["generator"]["us_per_request"])
        # the parts add up to the whole (each rounded to 0.1 µs)
        parts = sum(s["us_per_request"] for s in cpu["processes"].values()) + cpu["other"]["us_per_request"]
        self.assertAlmostEqual(parts, cpu["us_per_request"], delta=0.5)
        # every S4 storm-loadgen scenario puts the figure and the generator's part in its table
        manifest = baselines.load_manifest()
        s4 = [s for s in manifest.scenarios if s.source == "S4" and s.tool == "loadgen"]
        self.assertEqual({s.name for s in s4}, {"s4-chat-api", "s4-chat-api-source-rates", "s4-chat-api-stretch"})
        for scenario in s4:
            with self.subTest(scenario=scenario.name):
                values = {row.value: row.unit for row in scenario.rows}
                self.assertEqual(values.get("cpu.us_per_request"), "µs")
                self.assertEqual(values.get("cpu.generator_us_per_request"), "µs")

    def test_each_scenario_names_the_server_whose_cpu_it_records(self):
        by_name = {s.name: s for s in baselines.load_manifest().scenarios}
        for name, server in [("s4-chat-api", "storm-chat"), ("s4-chat-api-source-rates", "storm-chat"), ("s4-chat-api-stretch", "storm-chat"),
                             ("s4-chat-api-k6", "storm-chat"), ("s1-interceptor-overhead", "storm-interceptors"),
                             ("s3-users", "gateway"), ("s0-perf-load-baseline", "gateway")]:
            with self.subTest(scenario=name):
                self.assertEqual(baselines.server_of(by_name[name]), server)

    def test_a_bad_manifest_is_one_line_naming_the_entry(self):
        bad = Path(tempfile.mkstemp(suffix=".toml")[1])
        self.addCleanup(bad.unlink)
        bad.write_text(textwrap.dedent("""\
            [calibrate]
            command = ["{loadgen}", "calibrate", "--json", "{out}"]
            [sources.S9]
            title = "x"
            [[scenario]]
            name = "x"
            source = "S9"
            tool = "loadgen"
            title = "x"
            command = ["{loadgen}", "--json", "{out}"]
              [[scenario.row]]
              metric = "m"
              value = "a.b"
              unit = "ms"
              source = "s"
              target = "about 5"
            """))
        with self.assertRaisesRegex(baselines.UsageError, r"scenario 'x' row 1: target must look like"):
            baselines.load_manifest(bad)

    def test_quick_overrides_replace_flag_values_and_env(self):
        scenario = baselines.Scenario(
            name="x", source="S0", tool="loadgen", title="x",
            command=["{loadgen}", "ws", "--url", "{gateway}", "--subscribers", "5000", "--json", "{out}"],
            env={"A": "1"}, quick_set={"--subscribers": "200", "--drain": "1s"}, quick_env={"A": "2"})
        argv, env = baselines.render_command(scenario, True, {"loadgen": "/bin/lg", "gateway": "http://g", "out": "/o.json"})
        self.assertEqual(argv, ["/bin/lg", "ws", "--url", "http://g", "--subscribers", "200", "--json", "/o.json",
                                "--drain", "1s"])
        self.assertEqual(env, {"A": "2"})

    def test_chat_placeholder_is_the_chat_service(self):
        manifest = baselines.load_manifest()
        [loadgen] = [s for s in manifest.scenarios if s.name == "s4-chat-api"]
        [k6] = [s for s in manifest.scenarios if s.name == "s4-chat-api-k6"]
        subst = {"loadgen": "/bin/lg", "gateway": "http://g", "chat": "http://c:8082", "out": "/o.json"}
        argv, _ = baselines.render_command(loadgen, False, subst)
        self.assertEqual(argv[:4], ["/bin/lg", "chat", "--url", "http://c:8082"])
        self.assertIn("--no-fail-exit", argv)  # a FAIL is a row in the table, not a failed run
        argv, env = baselines.render_command(k6, True, subst)
        self.assertEqual((env["CHAT_URL"], env["DURATION"], env["WRITE_RATE"]), ("http://c:8082", "3s", "20"))
        # no GATEWAY_URL beside a command that does not talk to the gateway
        self.assertEqual(baselines.shown_env(argv, env, "http://g", "http://c:8082"), env)
        self.assertEqual(baselines.shown_env(["k6", "x.js"], {}, "http://g", "http://c:8082"), {"GATEWAY_URL": "http://g"})
        argv, _ = baselines.render_command(loadgen, True, subst)
        self.assertEqual(argv[argv.index("--duration") + 1], "3s")
        self.assertEqual(argv[argv.index("--warmup") + 1], "1s")


    def test_interceptors_placeholder_is_the_s1_server(self):
        manifest = baselines.load_manifest()
        s1 = [s for s in manifest.scenarios if s.source == "S1"]
        self.assertEqual({s.name for s in s1},
                         {"s1-basic-load", "s1-stress", "s1-spike", "s1-interceptor-overhead"})
        subst = {"loadgen": "/bin/lg", "gateway": "http://g", "chat": "http://c", "interceptors_host": "10.0.0.7",
                 "out": "/o.json"}
        for scenario in s1:
            with self.subTest(scenario=scenario.name):
                self.assertTrue(baselines.uses_interceptors(scenario))
                _, env = baselines.render_command(scenario, False, subst)
                self.assertEqual(env["BASE_HOST"], "10.0.0.7")
        [s3] = [s for s in manifest.scenarios if s.name == "s3-load-test"]
        self.assertFalse(baselines.uses_interceptors(s3))

    def test_long_scenarios_cap_their_repeats(self):
        manifest = baselines.load_manifest()
        by_name = {s.name: s for s in manifest.scenarios}
        self.assertEqual(by_name["s3-load-test"].runs(3), 1)
        self.assertEqual(by_name["s1-interceptor-overhead"].runs(3), 3)
        self.assertEqual(by_name["s3-load-test"].runs(1), 1)

    def test_every_k6_scenario_with_a_quick_variant_stays_short(self):
        # CI runs each quick variant on a debug build: a few seconds each (STAGES or DURATION).
        manifest = baselines.load_manifest()
        for scenario in manifest.scenarios:
            stages = scenario.quick_env.get("STAGES")
            if scenario.tool != "k6" or not stages:
                continue
            with self.subTest(scenario=scenario.name):
                seconds = sum(int(part.split(":")[0].rstrip("s")) for part in stages.split(","))
                self.assertLessEqual(seconds, 10)


class FormatTest(unittest.TestCase):
    def test_figures(self):
        self.assertEqual(baselines.measured([3.08, 3.76, 3.85], "ms", 3), "3.76 ms (3.08–3.85 ms)")
        self.assertEqual(baselines.measured([48601.0, 48700.2, 48655.0], "req/s", 3), "48,655 req/s (48,601–48,700 req/s)")
        self.assertEqual(baselines.measured([0.0, 0.0], "%", 3), "0.00 % (all equal) — 2 of 3 runs")
        self.assertEqual(baselines.measured([], "ms", 3), "n/a")
        self.assertEqual(baselines.fmt(0.0331, "%"), "3.31 %")
        self.assertEqual(baselines.fmt(3.0, "s"), "3.0 s")
        self.assertEqual(baselines.fmt(289.0, "µs"), "289 µs")
        self.assertEqual(baselines.fmt(41.25, "µs"), "41.2 µs")
        self.assertEqual(baselines.measured([1210.0, 1290.4, 1250.0], "µs", 3), "1,250 µs (1,210–1,290 µs)")

    def test_a_value_path_may_index_a_list(self):
        result = {"stress": {"stages": [{"req_per_s": 10.0}, {"req_per_s": 20.5}]}}
        self.assertEqual(baselines.lookup(result, "stress.stages.1.req_per_s"), 20.5)
        self.assertIsNone(baselines.lookup(result, "stress.stages.2.req_per_s"))

    def test_verdicts(self):
        row = baselines.Row("m", "v", "req/s", "s", (">=", 50000.0))
        self.assertEqual(baselines.verdict(row, [51000, 49000, 52000]), "pass (1 of 3 runs missed)")
        self.assertEqual(baselines.verdict(row, [40000, 41000, 42000]), "**fail**")
        every = baselines.Row("lost", "v", "count", "s", ("==", 0.0), judge="every")
        self.assertEqual(baselines.verdict(every, [0, 3, 0]), "**fail** (1 of 3 runs)")
        self.assertEqual(baselines.target_text(every), "= 0, every run")
        self.assertEqual(baselines.target_text(baselines.Row("p", "v", "ms", "s", ("<=", 10.0))), "≤ 10 ms")
        self.assertEqual(baselines.target_text(baselines.Row("r", "v", "msgs/s", "s", (">=", 115667.0))), "≥ 115,667 msgs/s")
        self.assertEqual(baselines.target_text(baselines.Row("e", "v", "%", "s", ("<", 0.001))), "< 0.1 %")
        self.assertEqual(baselines.verdict(baselines.Row("m", "v", "ms", "s"), [1.0]), "—")


class FullRunTest(Base):
    def test_full_run_rewrites_baselines_keeping_the_notes(self):
        proc = self.run_baselines("--repeats", "3")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        text = self.baselines.read_text()
        self.assertNotIn("an old hand-written table", text)
        self.assertIn("Why k6 is generator-bound: k6 124 %, gateway 52 %.", text)
        self.assertEqual(text.count(baselines.NOTES_BEGIN), 1)
        self.assertIn("## S0 — Go gateway + messages stack", text)
        self.assertIn("## S3 — worker-pool web framework (S3 endpoints)", text)
        self.assertLess(text.index("## S0"), text.index("## S3"))
        self.assertIn("HTTP 152,340 req/s over 64 connections", text)
        self.assertIn("## S4 — Chat API", text)
        self.assertIn("- **Chat service** (S4): http://127.0.0.1:7.", text)
        self.assertEqual(self.table_row(text, "s4-chat-api", "write throughput")[3], "≥ 5,000 writes/s (the whole target rate)")
        self.assertEqual(self.table_row(text, "s4-chat-api-k6", "write p99")[3], "≤ 50 ms")
        self.assertIn("storm-loadgen chat --url http://127.0.0.1:7 --writes 5000", text)
        self.assertIn("- **Commit**: `", text)
        self.assertEqual(self.table_row(text, "s3-echo-throughput", "throughput"),
                         ["`s3-echo-throughput`", "throughput", "50,000+ req/s sustained (simulated)", "≥ 50,000 req/s",
                          "39,980 req/s (39,181–40,780 req/s)", "**fail**"])
        self.assertEqual(self.table_row(text, "s0-ws-fanout-5000", "frames lost")[3:], ["= 0, every run", "0 (all equal)", "pass"])
        self.assertEqual(self.table_row(text, "s0-perf-load-baseline", "HTTP p95")[4:], ["3.76 ms (all equal)", "pass"])
        self.assertIn("bash scripts/perf-load.sh --quiet", text)
        self.assertIn("--concurrency 64", text)
        self.assertIn(f"All {FULL_RUNS + 1} runs completed", text)
        self.assertTrue((self.results / "BASELINES.previous.md").read_text().startswith("# stormstack baselines\n\nan old"))
        # the report can be rebuilt from the results dir alone
        again = subprocess.run([sys.executable, str(HERE / "baselines.py"), "report", "--results", str(self.results),
                                "--baselines", str(self.baselines)], capture_output=True, text=True, cwd=ROOT)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(again.stdout, text)

    def test_a_failed_run_fails_and_leaves_baselines_alone(self):
        proc = self.run_baselines("--repeats", "1", "--only", "s3-users,s3-echo-throughput", FAKE_LOADGEN_FAIL_ON="/api/users")
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertEqual(self.baselines.read_text(), OLD_BASELINES)
        self.assertIn("RUN FAILED s3-users run 1: storm-loadgen exit 1", proc.stderr)
        report = (self.results / "BASELINES.md").read_text()
        self.assertIn("| s3-users run 1 | failed | storm-loadgen exit 1 (see s3-users.r1.log) |", report)
        self.assertEqual(self.table_row(report, "s3-users", "throughput")[4], "n/a")

    def test_a_subset_never_overwrites_baselines(self):
        proc = self.run_baselines("--repeats", "1", "--only", "s3-users")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(self.baselines.read_text(), OLD_BASELINES)
        report = (self.results / "BASELINES.md").read_text()
        self.assertIn("RUN_ALL_ONLY=s3-users", report)
        self.assertIn("Each figure is from one run (REPEATS=1).", report)
        self.assertIn("| scenario | metric | source | target | ours (one run) | verdict |", report)


class QuickRunTest(Base):
    def test_quick_run_uses_quick_settings_and_writes_only_the_quick_report(self):
        proc = self.run_baselines("--quick")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(self.baselines.read_text(), OLD_BASELINES)
        report = (self.results / "BASELINES.quick.md").read_text()
        self.assertIn("quick smoke (not a baseline)", report)
        self.assertNotIn("verdict", report)
        run = json.loads((self.results / "run.json").read_text())
        self.assertEqual(len(run["runs"]), SCENARIOS)
        self.assertEqual(run["calibrate"]["argv"][2:6], ["--duration", "2s", "--connections", "8"])
        users = json.loads((self.results / "s3-users.r1.json").read_text())
        self.assertIn("--concurrency 4", users["command"])
        k6 = json.loads((self.results / "s0-perf-load-chaos.r1.json").read_text())
        self.assertEqual((k6["config"]["MODE"], k6["config"]["DURATION"], k6["config"]["PUB_VUS"]), ("chaos", "5s", "2"))
        self.assertTrue(k6["config"]["ACCESS_TOKEN"])
        self.assertIn(f"smoke OK: {SCENARIOS} runs", proc.stderr)

    def test_quick_run_fails_on_a_lost_frame(self):
        proc = self.run_baselines("--quick", FAKE_LOST="1")
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertIn("SMOKE FAIL s0-ws-fanout-1000 run 1: 3 lost frames", proc.stderr)
        self.assertIn("| s0-ws-fanout-5000 run 1 | smoke | 3 lost frames |", (self.results / "BASELINES.quick.md").read_text())

    def test_quick_run_fails_on_a_lost_pubsub_frame_only_where_frames_are_counted(self):
        proc = self.run_baselines("--quick", "--only", "s2-redis-pubsub,s2-call-state-updates", FAKE_PUBSUB_LOST="2")
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertIn("SMOKE FAIL s2-redis-pubsub run 1: 2 lost frames (of 10040 expected)", proc.stderr)
        # an HTTP-only k6 script is not asked for WebSocket messages
        self.assertNotIn("SMOKE FAIL s2-call-state-updates", proc.stderr)

    def test_quick_chat_run_fails_on_a_5xx_and_reaches_the_chat_service(self):
        proc = self.run_baselines("--quick", "--only", "s4-chat-api,s4-chat-api-k6", "--chat-pid", str(os.getpid()),
                                  FAKE_CHAT_503="3")
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertIn("SMOKE FAIL s4-chat-api run 1: 3 5xx answers to writes", proc.stderr)
        self.assertIn("chat service at http://127.0.0.1:7 does not answer /ready", proc.stderr)
        chat = json.loads((self.results / "s4-chat-api.r1.json").read_text())
        self.assertIn("chat --url http://127.0.0.1:7 --writes 50 --reads 100", chat["command"])
        k6 = json.loads((self.results / "s4-chat-api-k6.r1.json").read_text())
        self.assertEqual((k6["config"]["CHAT_URL"], k6["config"]["WRITE_RATE"]), ("http://127.0.0.1:7", "20"))
        # the CPU share recorded beside an S4 run is the chat service's (--chat-pid), not the gateway's
        run = json.loads((self.results / "run.json").read_text())
        self.assertEqual(run["chat"]["pid"], os.getpid())
        for entry in run["runs"]:
            with self.subTest(run=entry["scenario"]):
                self.assertEqual(entry["server"], "storm-chat")
                self.assertIsNotNone(entry["gateway_cpu_percent"])
        report = (self.results / "BASELINES.quick.md").read_text()
        self.assertIn("| scenario | what | generator | generator CPU | storm-chat CPU | runs |", report)
        self.assertIn("machine CPU per request (every process, generator included)", report)
        self.assertIn("storm-chat", proc.stderr)

    def test_quick_s1_runs_reach_the_interceptor_server_and_warn_when_it_is_down(self):
        # (nothing listens on port 9; 127.0.0.9:8185 may answer where a real storm-interceptors runs)
        proc = self.run_baselines("--quick", "--only", "s1-interceptor-overhead,s3-load-test",
                                  "--interceptors-host", "127.0.0.9", "--interceptors-admin", "http://127.0.0.1:9")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("storm-interceptors does not answer http://127.0.0.1:9/ready", proc.stderr)
        s1 = json.loads((self.results / "s1-interceptor-overhead.r1.json").read_text())
        self.assertEqual((s1["config"]["BASE_HOST"], s1["config"]["VUS"]), ("127.0.0.9", "2"))
        s3 = json.loads((self.results / "s3-load-test.r1.json").read_text())
        self.assertEqual((s3["config"]["GATEWAY_URL"], s3["config"]["STAGES"]), ("http://127.0.0.1:9", "2s:20,4s:20,1s:0"))
        report = (self.results / "BASELINES.quick.md").read_text()
        # an S1 command is shown without the gateway it never talks to
        self.assertRegex(report, r"\nBASE_HOST=127\.0\.0\.9 SUMMARY_JSON=\S+ VUS=2 DURATION=4s THINK_MS=100 "
                                 r"bash scripts/k6-run\.sh loadtest/k6/interceptor-overhead\.js --quiet\n")
        self.assertIn("| scenario | what | generator | generator CPU | storm-interceptors CPU | runs |", report)
        self.assertIn("- **Interceptor-overhead server** (S1): `storm-interceptors` on 127.0.0.9", report)

    def test_k6_threshold_exit_99_is_a_result_not_a_crash(self):
        proc = self.run_baselines("--quick", "--only", "s0-perf-load-baseline", FAKE_K6_EXIT="99")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("k6 exit 99", (self.results / "BASELINES.quick.md").read_text())


class FakeGateway(BaseHTTPRequestHandler):
    def do_GET(self):
        body = {"/ready": b"ok", "/api/metrics": b'{"workers":3350,"queue_capacity":1650}'}.get(self.path)
        self.send_response(200 if body else 404)
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args):
        pass


class RunAllShTest(Base):
    def run_all(self, *args: str, **env) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(ROOT / "scripts" / "run-all.sh"), *args], cwd=ROOT,
                              env=self.tools.env(**env), capture_output=True, text=True, timeout=120)

    def test_usage(self):
        self.assertEqual(self.run_all("--help").returncode, 0)
        for args, env, message in [
            (("--fast",), {}, "unexpected argument '--fast'"),
            (("--quick", "x"), {}, "too many arguments"),
            (("--quick",), {"REPEATS": "0"}, "REPEATS must be a positive integer"),
            (("--quick",), {"RUN_ALL_ONLY": "s3-users,nope"}, "unknown scenario 'nope'"),
            (("--quick",), {"CHAT_URL": "localhost:8082"}, "CHAT_URL must be http(s)://host:port"),
            (("--quick",), {"CHAT_PID": "chat"}, "CHAT_PID must be a pid"),
        ]:
            with self.subTest(args=args, env=env):
                proc = self.run_all(*args, **env)
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertEqual(len(proc.stderr.strip().splitlines()), 1, proc.stderr)
                self.assertIn(message, proc.stderr)

    def test_quick_against_a_running_gateway(self):
        server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGateway)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        proc = self.run_all("--quick", RUN_ALL_NO_STACK="1", GATEWAY_URL=url, LOADGEN_BIN=str(self.tools.loadgen),
                            RUN_ALL_ONLY="s3-users,s0-perf-load-baseline,s4-chat-api", RUN_ALL_RESULTS_DIR=str(self.results),
                            GATEWAY_PID=str(os.getpid()), CHAT_PID=str(os.getppid()), CHAT_URL=url + "/")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        [run_dir] = list(self.results.iterdir())
        self.assertRegex(run_dir.name, r"^\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ-quick$")
        report = (run_dir / "BASELINES.quick.md").read_text()
        self.assertIn("admission 3350 workers + 1650 queued", report)
        self.assertRegex(report, re.escape(f"GATEWAY_URL={url} MODE=baseline"))
        # CHAT_URL reaches the chat scenario as {chat}, without its trailing slash
        self.assertIn(f"storm-loadgen chat --url {url} --writes 50", report)
        # CHAT_PID reaches baselines.py: S4's CPU column is storm-chat's, the others keep the gateway's
        run = json.loads((run_dir / "run.json").read_text())
        self.assertEqual(run["chat"]["pid"], os.getppid())
        servers = {e["scenario"]: e["server"] for e in run["runs"]}
        self.assertEqual(servers,
                         {"s3-users": "gateway", "s0-perf-load-baseline": "gateway", "s4-chat-api": "storm-chat"})
        self.assertIn("| scenario | what | generator | generator CPU | storm-chat CPU | runs |", report)
        self.assertIn("| scenario | what | generator | generator CPU | gateway CPU | runs |", report)

    def test_no_stack_needs_a_ready_gateway(self):
        proc = self.run_all("--quick", RUN_ALL_NO_STACK="1", GATEWAY_URL="http://127.0.0.1:9", RUN_ALL_ONLY="s3-users")
        self.assertEqual(proc.returncode, 1)
        self.assertIn("does not answer 200", proc.stderr)


if __name__ == "__main__":
    unittest.main()
