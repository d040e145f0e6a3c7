//! Whole-machine CPU per request over the S4 test's measured window: `/proc/stat`'s aggregate
//! `cpu ` line and the utime + stime of the stack's processes (`/proc/<pid>/stat`), read once
//! before Phase 3 and once after it. The generator shares the cores with the stack, so the
//! whole-machine figure includes it and its own share is reported beside it; "other" is what no
//! named process accounts for (softirq work for the sockets, the kernel, anything else running).
//!
//! Counting rules (the one thing not to break: every tick is counted once):
//! - busy = user + nice + system + irq + softirq + steal; idle and iowait are idle. guest and
//!   guest_nice are already inside user and nice, so they are not added again.
//! - a process is a (pid, start time) pair, so a reused pid is a new process. One present at both
//!   samples counts its delta; one present only at the end started within the window and counts
//!   all its time; one that exited within the window is not counted in its group (its time shows
//!   up in "other", since the machine's ticks include it).
//! - the generator is this process (`/proc/self/stat`, all its threads).
//!
//! Parsing is on strings (tested here); [`sample`] is the thin part that reads `/proc`. Where
//! `/proc/stat` cannot be read (not Linux) there is no sample and the figure is absent. One file
//! past 600 lines because its tests (synthetic `/proc` texts with known answers) are half of it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::Serialize;

/// What a process counts as, by its `comm` (the kernel's 15-character name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    Chat,
    Writer,
    Postgres,
    Rabbitmq,
    Redis,
}

impl Group {
    pub const ALL: [Group; 5] = [
        Group::Chat,
        Group::Writer,
        Group::Postgres,
        Group::Rabbitmq,
        Group::Redis,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Group::Chat => "chat",
            Group::Writer => "writer",
            Group::Postgres => "postgres",
            Group::Rabbitmq => "rabbitmq",
            Group::Redis => "redis",
        }
    }

    /// The group of a process named `comm`: RabbitMQ is the Erlang VM and its helpers.
    pub fn of(comm: &str) -> Option<Group> {
        match comm {
            "storm-chat" => Some(Group::Chat),
            "storm-writer" => Some(Group::Writer),
            "postgres" => Some(Group::Postgres),
            "beam.smp" | "epmd" | "erl_child_setup" | "inet_gethost" => Some(Group::Rabbitmq),
            "redis-server" => Some(Group::Redis),
            _ => None,
        }
    }
}

/// The generator's name in [`CpuReport::processes`].
pub const GENERATOR: &str = "generator";

/// Jiffies of the aggregate `cpu ` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MachineTicks {
    /// user + nice + system + irq + softirq + steal.
    pub busy: u64,
    /// idle + iowait.
    pub idle: u64,
}

/// The aggregate `cpu ` line of `/proc/stat` and the number of `cpuN` lines (online cores).
pub fn parse_proc_stat(text: &str) -> Option<(MachineTicks, usize)> {
    let mut machine = None;
    let mut cores = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cpu ") {
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            // user nice system idle [iowait irq softirq steal guest guest_nice]: older kernels
            // stop early, a missing field is zero.
            if f.len() < 4 {
                return None;
            }
            let at = |i: usize| f.get(i).copied().unwrap_or(0);
            machine = Some(MachineTicks {
                busy: at(0) + at(1) + at(2) + at(5) + at(6) + at(7),
                idle: at(3) + at(4),
            });
        } else if line
            .strip_prefix("cpu")
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        {
            cores += 1;
        }
    }
    machine.map(|m| (m, cores.max(1)))
}

/// The figures of one `/proc/<pid>/stat` that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStat {
    pub comm: String,
    /// utime + stime, in clock ticks (the whole thread group).
    pub ticks: u64,
    /// Start time after boot, in clock ticks: with the pid, what names a process.
    pub started: u64,
}

/// `pid (comm) state ppid … utime stime … starttime …`. The comm may hold spaces and parentheses
/// (a process may name itself `a) (b`), so it runs from the first `(` to the *last* `)`.
pub fn parse_task_stat(text: &str) -> Option<TaskStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let comm = text[open + 1..close].to_string();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state): utime, stime and starttime are fields 14, 15 and 22.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(TaskStat {
        comm,
        ticks: field(14)? + field(15)?,
        started: field(22)?,
    })
}

/// One reading of the machine, the grouped processes and the generator.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub machine: MachineTicks,
    pub cores: usize,
    /// (pid, start time) → (group, utime + stime).
    pub processes: BTreeMap<(u32, u64), (Group, u64)>,
    /// utime + stime of this process.
    pub generator: u64,
}

impl Sample {
    /// A sample from the texts of `/proc/stat`, of each `/proc/<pid>/stat` (other than this
    /// process's) and of `/proc/self/stat`. Unreadable or foreign task lines are skipped.
    pub fn from_texts<'a>(
        at: Instant,
        proc_stat: &str,
        tasks: impl IntoIterator<Item = (u32, &'a str)>,
        self_stat: &str,
    ) -> Option<Self> {
        let (machine, cores) = parse_proc_stat(proc_stat)?;
        let mut processes = BTreeMap::new();
        for (pid, text) in tasks {
            if let Some(task) = parse_task_stat(text)
                && let Some(group) = Group::of(&task.comm)
            {
                processes.insert((pid, task.started), (group, task.ticks));
            }
        }
        Some(Self {
            at,
            machine,
            cores,
            processes,
            generator: parse_task_stat(self_stat).map_or(0, |t| t.ticks),
        })
    }
}

/// Reads `/proc` now; `None` where `/proc/stat` cannot be read or parsed.
pub fn sample() -> Option<Sample> {
    let at = Instant::now();
    let proc_stat = std::fs::read_to_string("/proc/stat").ok()?;
    let own = std::process::id();
    let mut texts = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == own {
                continue;
            }
            // A process may exit between the listing and the read: skip it.
            if let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) {
                texts.push((pid, text));
            }
        }
    }
    let self_stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    Sample::from_texts(
        at,
        &proc_stat,
        texts.iter().map(|(pid, text)| (*pid, text.as_str())),
        &self_stat,
    )
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), 100 when the call fails.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

/// One process group's (or the generator's) share of the window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Share {
    /// Percent of one core over the window (100 = one core busy throughout).
    pub cpu_percent: f64,
    pub us_per_request: f64,
    /// The processes counted (none found: 0 %).
    pub pids: Vec<u32>,
}

/// What no named process accounts for: machine busy minus every group and the generator. May be
/// slightly negative: the machine's and the processes' ticks are sampled apart.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Remainder {
    pub cpu_percent: f64,
    pub us_per_request: f64,
}

/// The `cpu` object of the chat report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CpuReport {
    /// Online cores (`cpuN` lines of `/proc/stat`).
    pub cores: usize,
    pub clock_ticks_per_s: u64,
    /// Wall time between the two samples: Phase 3 from its start until its last answer.
    pub window_s: f64,
    /// Writes and reads answered with a status in the window.
    pub requests: u64,
    /// Busy CPU time of the whole machine (every core, the generator included).
    pub machine_busy_s: f64,
    /// `machine_busy_s` in percent of one core (`cores × 100` = every core busy).
    pub machine_cpu_percent: f64,
    /// Idle + iowait, in percent of the machine.
    pub idle_percent: f64,
    /// `machine_busy_s × 10⁶ / requests`.
    pub us_per_request: f64,
    /// The generator's part of `us_per_request`.
    pub generator_us_per_request: f64,
    pub generator_cpu_percent: f64,
    /// chat, writer, postgres, rabbitmq, redis and the generator.
    pub processes: BTreeMap<String, Share>,
    pub other: Remainder,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The figures of the window between two samples, `requests` answered in it; `None` when
/// nothing can be said per request (no request answered, no time or no tick elapsed).
pub fn window(start: &Sample, end: &Sample, requests: u64, hz: u64) -> Option<CpuReport> {
    let seconds = end.at.saturating_duration_since(start.at).as_secs_f64();
    let busy = end.machine.busy.checked_sub(start.machine.busy)?;
    let idle = end.machine.idle.checked_sub(start.machine.idle)?;
    if requests == 0 || seconds <= 0.0 || busy + idle == 0 || hz == 0 {
        return None;
    }
    let hz = hz as f64;
    let percent = |ticks: f64| round1(ticks / hz / seconds * 100.0);
    let per_request = |ticks: f64| round1(ticks / hz * 1e6 / requests as f64);

    let mut ticks: BTreeMap<Group, (u64, Vec<u32>)> =
        Group::ALL.iter().map(|g| (*g, (0, Vec::new()))).collect();
    for (key @ (pid, _), (group, now)) in &end.processes {
        let before = start.processes.get(key).map_or(0, |(_, t)| *t);
        let entry = ticks.entry(*group).or_default();
        entry.0 += now.saturating_sub(before);
        entry.1.push(*pid);
    }
    let generator = end.generator.saturating_sub(start.generator);
    let mut processes: BTreeMap<String, Share> = ticks
        .iter()
        .map(|(group, (t, pids))| {
            let pids: BTreeSet<u32> = pids.iter().copied().collect();
            (
                group.name().to_string(),
                Share {
                    cpu_percent: percent(*t as f64),
                    us_per_request: per_request(*t as f64),
                    pids: pids.into_iter().collect(),
                },
            )
        })
        .collect();
    processes.insert(
        GENERATOR.to_string(),
        Share {
            cpu_percent: percent(generator as f64),
            us_per_request: per_request(generator as f64),
            pids: vec![std::process::id()],
        },
    );
    let named: u64 = ticks.values().map(|(t, _)| t).sum::<u64>() + generator;
    let other = busy as f64 - named as f64;
    Some(CpuReport {
        cores: end.cores,
        clock_ticks_per_s: hz as u64,
        window_s: crate::report::round3(seconds),
        requests,
        machine_busy_s: crate::report::round3(busy as f64 / hz),
        machine_cpu_percent: percent(busy as f64),
        idle_percent: round1(idle as f64 / (busy + idle) as f64 * 100.0),
        us_per_request: per_request(busy as f64),
        generator_us_per_request: per_request(generator as f64),
        generator_cpu_percent: percent(generator as f64),
        processes,
        other: Remainder {
            cpu_percent: percent(other),
            us_per_request: per_request(other),
        },
    })
}

/// `2,417`, `212`, `9.5`, `0`: whole numbers from 10 up (and nothing at all), one decimal below.
fn figure(x: f64) -> String {
    if x.abs() >= 1000.0 {
        let sign = if x < 0.0 { "-" } else { "" };
        format!("{sign}{}", crate::stats::group(x.abs().round() as u64))
    } else if x.abs() >= 10.0 || x == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

impl CpuReport {
    /// The result block's lines: the whole-machine figure with the generator's share beside it,
    /// then each group per request and in percent of one core.
    pub fn lines(&self) -> Vec<String> {
        let names = Group::ALL
            .iter()
            .map(|g| g.name())
            .chain([GENERATOR])
            .collect::<Vec<_>>();
        let row = |pick: &dyn Fn(&Share) -> f64, other: f64| {
            let mut parts: Vec<String> = names
                .iter()
                .filter_map(|n| {
                    self.processes
                        .get(*n)
                        .map(|s| format!("{n} {}", figure(pick(s))))
                })
                .collect();
            parts.push(format!("other {}", figure(other)));
            parts.join(", ")
        };
        vec![
            format!(
                "CPU: {} µs of machine CPU per request, the generator's {} µs included ({} cores, {} % idle; {} requests in {:.1} s)",
                figure(self.us_per_request),
                figure(self.generator_us_per_request),
                self.cores,
                figure(self.idle_percent),
                crate::stats::group(self.requests),
                self.window_s
            ),
            format!(
                "  µs per request:  {}",
                row(&|s| s.us_per_request, self.other.us_per_request)
            ),
            format!(
                "  % of one core:   {} (machine {} of {})",
                row(&|s| s.cpu_percent, self.other.cpu_percent),
                figure(self.machine_cpu_percent),
                self.cores * 100
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    // user nice system idle iowait irq softirq steal guest guest_nice
    const STAT_START: &str = "cpu  1000 100 500 8000 50 10 40 0 300 0\n\
        cpu0 500 50 250 4000 25 5 20 0 150 0\n\
        cpu1 500 50 250 4000 25 5 20 0 150 0\n\
        intr 12345 0 0\nctxt 999\ncpu_hotplug 3\n";
    // 10 s later on 2 cores (2,000 ticks at 100 Hz): busy +1,900 (user +1,200, nice +0,
    // system +500, irq +50, softirq +130, steal +20), idle +90, iowait +10; guest +700 is
    // inside user and must not count again.
    const STAT_END: &str = "cpu  2200 100 1000 8090 60 60 170 20 1000 0\n\
        cpu0 1100 50 500 4045 30 30 85 10 500 0\n\
        cpu1 1100 50 500 4045 30 30 85 10 500 0\n\
        intr 23456 0 0\n";

    fn task(pid: u32, comm: &str, utime: u64, stime: u64, started: u64) -> String {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss …
        format!(
            "{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 500 0 0 0 {utime} {stime} 7 7 20 0 4 0 {started} 123456 789 18446744073709551615"
        )
    }

    #[test]
    fn proc_stat_counts_busy_without_guest_and_idle_with_iowait() {
        let (m, cores) = parse_proc_stat(STAT_START).unwrap();
        assert_eq!(cores, 2);
        assert_eq!(
            m,
            MachineTicks {
                busy: 1000 + 100 + 500 + 10 + 40,
                idle: 8050
            }
        );
        // An old kernel's four fields; garbage and a missing line are no sample.
        assert_eq!(
            parse_proc_stat("cpu  1 2 3 4\ncpu0 1 2 3 4\n"),
            Some((MachineTicks { busy: 6, idle: 4 }, 1))
        );
        assert_eq!(parse_proc_stat("cpu  1 2 x 4\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 2\n"), None);
        assert_eq!(parse_proc_stat("intr 1 2 3\n"), None);
        assert_eq!(parse_proc_stat(""), None);
    }

    #[test]
    fn comm_runs_to_the_last_parenthesis() {
        let text = task(4242, "evil) (name", 120, 30, 9000);
        assert_eq!(
            parse_task_stat(&text),
            Some(TaskStat {
                comm: "evil) (name".into(),
                ticks: 150,
                started: 9000
            })
        );
        let spaced = task(7, "a b ) c", 1, 2, 3);
        assert_eq!(parse_task_stat(&spaced).unwrap().comm, "a b ) c");
        assert_eq!(
            parse_task_stat(&task(1, "storm-chat", 5, 6, 7))
                .unwrap()
                .ticks,
            11
        );
        // Truncated or unparenthesised lines are skipped, not a panic.
        assert_eq!(parse_task_stat("12 (storm-chat) S 1 2 3"), None);
        assert_eq!(parse_task_stat("12 storm-chat S"), None);
        assert_eq!(parse_task_stat("12 )storm-chat( S"), None);
        assert_eq!(parse_task_stat(""), None);
    }

    #[test]
    fn processes_group_by_comm() {
        let cases = [
            ("storm-chat", Some(Group::Chat)),
            ("storm-writer", Some(Group::Writer)),
            ("postgres", Some(Group::Postgres)),
            ("beam.smp", Some(Group::Rabbitmq)),
            ("epmd", Some(Group::Rabbitmq)),
            ("erl_child_setup", Some(Group::Rabbitmq)),
            ("inet_gethost", Some(Group::Rabbitmq)),
            ("redis-server", Some(Group::Redis)),
            ("storm-gateway", None),
            ("storm-loadgen", None),
            ("postgres: wal", None),
            ("redis-cli", None),
        ];
        for (comm, group) in cases {
            assert_eq!(Group::of(comm), group, "{comm}");
        }
    }

    #[test]
    fn window_gives_machine_and_process_cpu_per_request() {
        let t0 = Instant::now();
        let start_tasks = [
            (100, task(100, "storm-chat", 400, 100, 50)),
            (200, task(200, "postgres", 50, 50, 60)),
            (201, task(201, "postgres", 10, 0, 61)),
            // exits within the window: not in its group, its time lands in "other"
            (202, task(202, "postgres", 5, 5, 62)),
            (300, task(300, "beam.smp", 100, 0, 70)),
            (400, task(400, "bash", 1, 1, 80)),
            // pid 500 is reused by a new postgres within the window
            (500, task(500, "storm-writer", 9, 9, 90)),
        ];
        let end_tasks = [
            (100, task(100, "storm-chat", 900, 200, 50)), // +600
            (200, task(200, "postgres", 250, 100, 60)),   // +250
            (201, task(201, "postgres", 60, 0, 61)),      // +50
            (300, task(300, "beam.smp", 250, 50, 70)),    // +200
            (301, task(301, "epmd", 3, 2, 5000)),         // new: all 5
            (400, task(400, "bash", 900, 900, 80)),
            (500, task(500, "postgres", 20, 0, 5100)), // new process, same pid: all 20
            (600, task(600, "storm-writer", 70, 30, 5200)), // new: all 100
        ];
        let start = Sample::from_texts(
            t0,
            STAT_START,
            start_tasks.iter().map(|(p, t)| (*p, t.as_str())),
            &task(1, "storm-loadgen", 200, 100, 1),
        )
        .unwrap();
        let end = Sample::from_texts(
            t0 + Duration::from_secs(10),
            STAT_END,
            end_tasks.iter().map(|(p, t)| (*p, t.as_str())),
            &task(1, "storm-loadgen", 500, 200, 1), // +400
        )
        .unwrap();
        let r = window(&start, &end, 95_000, 100).unwrap();
        assert_eq!((r.cores, r.clock_ticks_per_s, r.requests), (2, 100, 95_000));
        assert_eq!(r.window_s, 10.0);
        // 1,900 busy ticks = 19 s of CPU; over 10 s of 2 cores (2,000 ticks) 100 were idle.
        assert_eq!(r.machine_busy_s, 19.0);
        assert_eq!(r.machine_cpu_percent, 190.0);
        assert_eq!(r.idle_percent, 5.0);
        // 19 s × 10⁶ / 95,000 requests = 200 µs.
        assert_eq!(r.us_per_request, 200.0);
        // The generator: 400 ticks = 4 s = 40 % of a core, 42.1 µs per request.
        assert_eq!(r.generator_cpu_percent, 40.0);
        assert_eq!(r.generator_us_per_request, 42.1);
        let share = |name: &str| {
            let s = &r.processes[name];
            (s.cpu_percent, s.us_per_request, s.pids.clone())
        };
        assert_eq!(share("chat"), (60.0, 63.2, vec![100]));
        assert_eq!(share("writer"), (10.0, 10.5, vec![600]));
        assert_eq!(share("postgres"), (32.0, 33.7, vec![200, 201, 500]));
        assert_eq!(share("rabbitmq"), (20.5, 21.6, vec![300, 301]));
        assert_eq!(share("redis"), (0.0, 0.0, vec![]));
        assert_eq!(share("generator").0, 40.0);
        // 1,900 − (600 + 100 + 320 + 205 + 0 + 400) = 275 ticks nobody named.
        assert_eq!(
            r.other,
            Remainder {
                cpu_percent: 27.5,
                us_per_request: 28.9
            }
        );
        assert_eq!(
            r.lines(),
            vec![
                "CPU: 200 µs of machine CPU per request, the generator's 42 µs included (2 cores, 5.0 % idle; 95,000 requests in 10.0 s)",
                "  µs per request:  chat 63, writer 10, postgres 34, rabbitmq 22, redis 0, generator 42, other 29",
                "  % of one core:   chat 60, writer 10, postgres 32, rabbitmq 20, redis 0, generator 40, other 28 (machine 190 of 200)",
            ]
        );
    }

    #[test]
    fn the_fixture_has_the_shape_the_report_writes() {
        // loadtest/fixtures/loadgen-chat.json feeds the baselines tests: its `cpu` object must
        // carry exactly the fields a run writes, per process too.
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../fixtures/loadgen-chat.json")).unwrap();
        let t0 = Instant::now();
        let chat = task(9, "storm-chat", 50, 0, 1);
        let start = Sample::from_texts(t0, STAT_START, [], "").unwrap();
        let end = Sample::from_texts(
            t0 + Duration::from_secs(10),
            STAT_END,
            [(9, chat.as_str())],
            "",
        )
        .unwrap();
        let written = serde_json::to_value(window(&start, &end, 100, 100).unwrap()).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            v.as_object().unwrap().keys().cloned().collect()
        };
        let cpu = &fixture["cpu"];
        assert_eq!(keys(cpu), keys(&written));
        assert_eq!(keys(&cpu["processes"]), keys(&written["processes"]));
        assert_eq!(
            keys(&cpu["processes"]),
            [
                "chat",
                "generator",
                "postgres",
                "rabbitmq",
                "redis",
                "writer"
            ]
        );
        for (name, share) in cpu["processes"].as_object().unwrap() {
            assert_eq!(keys(share), keys(&written["processes"]["chat"]), "{name}");
        }
        assert_eq!(keys(&cpu["other"]), keys(&written["other"]));
        assert!(cpu["us_per_request"].is_number());
        assert!(cpu["generator_us_per_request"].is_number());
    }

    #[test]
    fn window_reports_a_negative_remainder_as_it_is() {
        let t0 = Instant::now();
        let stat = |busy: u64, idle: u64| format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 0\n");
        let chat = |ticks: u64| task(9, "storm-chat", ticks, 0, 1);
        let start = Sample::from_texts(t0, &stat(0, 0), [(9, chat(0).as_str())], "").unwrap();
        // The process read a tick ahead of the machine line.
        let end = Sample::from_texts(
            t0 + Duration::from_secs(1),
            &stat(100, 0),
            [(9, chat(101).as_str())],
            "",
        )
        .unwrap();
        let r = window(&start, &end, 1000, 100).unwrap();
        assert_eq!(r.other.cpu_percent, -1.0);
        assert_eq!(r.other.us_per_request, -10.0);
        assert_eq!(r.generator_us_per_request, 0.0);
    }

    #[test]
    fn figures_read_like_the_rest_of_the_block() {
        let cases = [
            (2417.4, "2,417"),
            (-1250.0, "-1,250"),
            (212.0, "212"),
            (27.5, "28"),
            (9.54, "9.5"),
            (0.0, "0"),
            (-0.4, "-0.4"),
        ];
        for (x, text) in cases {
            assert_eq!(figure(x), text, "{x}");
        }
    }

    #[test]
    fn no_figure_without_requests_time_or_ticks() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(1);
        let s = |at, busy: u64| {
            Sample::from_texts(at, &format!("cpu  {busy} 0 0 5 0 0 0 0\n"), [], "").unwrap()
        };
        assert!(window(&s(t0, 1), &s(later, 2), 0, 100).is_none());
        assert!(window(&s(t0, 1), &s(t0, 2), 10, 100).is_none());
        assert!(window(&s(t0, 2), &s(later, 1), 10, 100).is_none());
        assert!(window(&s(t0, 1), &s(later, 2), 10, 100).is_some());
    }

    #[test]
    fn this_machine_samples_itself() {
        // Linux: /proc is there and this test process burns some CPU between the samples.
        let Some(start) = sample() else { return };
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        std::thread::sleep(Duration::from_millis(20));
        let end = sample().expect("a second sample");
        assert!(end.cores >= 1);
        assert!(end.generator >= start.generator);
        assert!(ticks_per_second() > 0);
        if let Some(r) = window(&start, &end, 1, ticks_per_second()) {
            assert_eq!(r.processes.len(), 6);
            assert!(r.idle_percent >= 0.0 && r.idle_percent <= 100.0);
        }
    }
}
