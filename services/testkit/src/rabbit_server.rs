//! A private RabbitMQ node, for tests that stop, restart or kill the broker: the machine's shared
//! node (`rabbit@localhost`, AMQP on 5672) must never be touched, since every other test uses it.
//!
//! The node runs as a second Erlang node with a name, AMQP port, distribution port, data
//! directory (mnesia), logs, config files and Erlang cookie of its own, all under a private
//! directory; no plugins (no management UI). `stop` + `start_again` reuse the same port and the
//! same data, so durable queues and persistent messages survive, as when RabbitMQ restarts.
//! Booting takes a few seconds: start one per test that needs it, not per assertion.
//!
//! Cleanup: on drop every process of the node (found by a variable in their environment, since
//! `erl_child_setup` leaves the process group) is killed (SIGKILL) and waited for, and the
//! directory removed. A test process that is itself killed (a nextest timeout)
//! cannot run `Drop`; the nodes and directories it leaves are swept by the next `start`.
//!
//! This module also holds what `pg_server` shares with it: the private directories, their
//! sweeping, and ports reserved across test processes.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// The shell script that runs the node in the foreground. `/usr/sbin/rabbitmq-server` is a
/// wrapper that switches to the `rabbitmq` user and the shared node's home: not for us.
const SERVER_SCRIPTS: &str = "/usr/lib/rabbitmq/bin";

/// How long a boot may take on a loaded 2-core machine before `start` gives up.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a graceful stop may take before the node is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Set in the environment of the node's processes (to its private dir), which they all
/// inherit: how `Drop` and the sweeper find them, process group or not.
const MARKER: &str = "STORM_TESTKIT_RABBIT_DIR";

/// A line the node logs once every boot step has run (the listeners start just before it).
const BOOTED_LOG_LINE: &str = "Server startup complete";

pub struct RabbitServer {
    port: u16,
    dist_port: u16,
    node: String,
    dir: PathBuf,
    /// The `rabbitmq-server` script, leader of the node's process group.
    child: Option<Child>,
    _ports: [PortLock; 2],
}

impl RabbitServer {
    /// Boots a fresh node (empty data) and waits until it is booted and answers AMQP.
    pub async fn start() -> Self {
        sweep_stale("rabbit-", kill_stale_node);
        let (dir, id) = new_private_dir("rabbit-");
        let amqp = reserve_port();
        let dist = reserve_port();
        let port = amqp.port;
        fs::create_dir_all(dir.join("mnesia")).expect("mnesia dir");
        fs::create_dir_all(dir.join("log")).expect("log dir");
        fs::write(dir.join("enabled_plugins"), "[].\n").expect("enabled_plugins");
        // Replaces /etc/rabbitmq/rabbitmq-env.conf, which names the shared node.
        fs::write(dir.join("rabbitmq-env.conf"), "").expect("rabbitmq-env.conf");
        // Replaces /etc/rabbitmq/rabbitmq.conf, which listens on 5672. guest/guest may log in
        // over loopback only (the default), which is all we need.
        fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = 127.0.0.1:{port}\n\
                 loopback_users.guest = true\n\
                 log.file.level = info\n\
                 log.console = false\n"
            ),
        )
        .expect("rabbitmq.conf");
        let mut server = Self {
            port,
            dist_port: dist.port,
            node: format!("storm-test-{id}@localhost"),
            dir,
            child: None,
            _ports: [amqp, dist],
        };
        server.start_again().await;
        server
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Erlang node name, `storm-test-<hex>@localhost` (for `rabbitmqctl -n`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The private directory: data under `mnesia/`, the node's log under `log/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the stopped (or killed) node again on the same port with the same data, and waits
    /// until it is booted: durable queues and persistent messages are back.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the node {} is running", self.node);
        let log_offset = fs::metadata(self.log_path()).map_or(0, |m| m.len());
        let output = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stdout.log"))
            .expect("stdout.log");
        let mut command = Command::new(server_script("rabbitmq-server"));
        self.node_env(&mut command);
        let child = command
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("stdout.log"))
            .stderr(output)
            // A group of its own: the script, beam.smp, erl_child_setup, inet_gethost.
            .process_group(0)
            .spawn()
            .expect("rabbitmq-server is installed");
        self.child = Some(child);
        self.wait_until_booted(log_offset).await;
    }

    /// Stops the node gracefully (SIGTERM: clients get `connection.close`, then their sockets
    /// drop) and waits until every process of it is gone. The data stays for `start_again`.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The script traps TERM and stops the node (`kill -TERM` on beam, then waits for it).
        let script = child.id() as i32;
        signal(script, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child
            .try_wait()
            .expect("wait for rabbitmq-server")
            .is_none()
        {
            if Instant::now() >= deadline {
                self.child = Some(child);
                self.kill();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The script has reaped beam: the ports are free. erl_child_setup (and what it runs)
        // notices and exits on its own.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !node_processes(&self.dir).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        kill_node_processes(&self.dir);
    }

    /// Kills the node at once (SIGKILL), as in a crash: clients see their sockets drop without
    /// `connection.close`. As in a real crash, what the node did in its last seconds may be
    /// lost: a queue declared just before a kill was gone after `start_again` in about one run
    /// in eight (Mnesia logs through a write cache flushed every couple of seconds); with 2.5 s
    /// between the declaration and the kill, it always survived with its confirmed persistent
    /// message. Use `stop` for a restart that loses nothing. Blocks (milliseconds) until the
    /// node's processes are gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let script = child.id() as i32;
            // Kill beam alone first: the script reaps it, then exits, so once the script is
            // gone the ports are free. Before beam has written its pid, kill the whole group.
            match read_pid(&self.dir.join("beam.pid"))
                .filter(|pid| node_processes(&self.dir).contains(pid))
            {
                Some(beam) => signal(beam, libc::SIGKILL),
                None => signal(-script, libc::SIGKILL),
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() >= deadline {
                    signal(-script, libc::SIGKILL);
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        kill_node_processes(&self.dir);
    }

    /// `stop` then `start_again`.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Runs `rabbitmqctl -n NODE args…` against this node (about a second: the CLI boots an
    /// Erlang VM) and returns its stdout; panics when it fails.
    pub async fn ctl(&self, args: &[&str]) -> String {
        let mut command = Command::new(server_script("rabbitmqctl"));
        self.node_env(&mut command);
        command
            .current_dir(&self.dir)
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .stdin(Stdio::null());
        let output = tokio::process::Command::from(command)
            .output()
            .await
            .expect("rabbitmqctl runs");
        assert!(
            output.status.success(),
            "rabbitmqctl {args:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The environment the node and `rabbitmqctl` share: nothing from /etc/rabbitmq, and
    /// HOME is the private directory, so both use the cookie Erlang writes there.
    fn node_env(&self, command: &mut Command) {
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("RABBITMQ_") || key.starts_with("ERL_") {
                command.env_remove(&*key);
            }
        }
        let dir = &self.dir;
        command
            .env(MARKER, dir)
            .env("HOME", dir)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", dir.join("beam.pid"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("log").join(format!("{}.log", self.node))
    }

    async fn wait_until_booted(&mut self, log_offset: u64) {
        let started = Instant::now();
        loop {
            let child = self.child.as_mut().expect("the node was spawned");
            if let Some(status) = child.try_wait().expect("wait for rabbitmq-server") {
                self.child = None;
                kill_node_processes(&self.dir);
                panic!(
                    "private RabbitMQ node {} exited while booting ({status}){}",
                    self.node,
                    self.diagnostics()
                );
            }
            if self.log_says_booted(log_offset) && amqp_answers(self.port).await {
                return;
            }
            if started.elapsed() > BOOT_TIMEOUT {
                self.kill();
                panic!(
                    "private RabbitMQ node {} did not boot in {BOOT_TIMEOUT:?}{}",
                    self.node,
                    self.diagnostics()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_says_booted(&self, offset: u64) -> bool {
        fs::read(self.log_path()).is_ok_and(|log| {
            let new = log.get(offset as usize..).unwrap_or_default();
            String::from_utf8_lossy(new).contains(BOOTED_LOG_LINE)
        })
    }

    /// The last lines of the node's output and log, for panic messages.
    fn diagnostics(&self) -> String {
        let mut text = String::new();
        for path in [self.dir.join("stdout.log"), self.log_path()] {
            let content = fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            text.push_str(&format!("\n--- {} ---\n{tail}", path.display()));
        }
        text
    }
}

impl Drop for RabbitServer {
    fn drop(&mut self) {
        // Also when stopped: a `rabbitmqctl` left running by a dropped `ctl` future.
        self.kill();
        remove_private_dir(&self.dir);
    }
}

fn server_script(name: &str) -> PathBuf {
    let script = Path::new(SERVER_SCRIPTS).join(name);
    if script.exists() {
        script
    } else {
        PathBuf::from(name)
    }
}

/// Whether the port answers the AMQP protocol header with a `connection.start` frame (type 1,
/// channel 0), as a booted broker does.
async fn amqp_answers(port: u16) -> bool {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"AMQP\x00\x00\x09\x01").await?;
        let mut header = [0u8; 7];
        stream.read_exact(&mut header).await?;
        io::Result::Ok(header[0] == 1 && header[1..3] == [0, 0])
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Ok(true))
    )
}

/// Kills what a dead test process left running of its node.
fn kill_stale_node(dir: &Path) {
    kill_node_processes(dir);
}

fn signal(pid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety requirements; errors (ESRCH) are expected.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// The live processes of the node in `dir`: those with `MARKER=dir` in their environment.
/// Not just its process group: erl_child_setup, which beam spawns to run ports and commands
/// (inet_gethost, `df`…), calls `setsid`. Zombies have no environment left: not counted.
fn node_processes(dir: &Path) -> Vec<i32> {
    let mut marker = format!("{MARKER}=").into_bytes();
    marker.extend_from_slice(dir.as_os_str().as_encoded_bytes());
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        // An epmd the node had to start (none was running) serves every node: it stays.
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm != "epmd\n")
        })
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|environ| environ.split(|&b| b == 0).any(|var| var == marker))
        })
        .collect()
}

/// SIGKILLs every process of the node in `dir` until none is left (5 s at most).
fn kill_node_processes(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = node_processes(dir);
        if pids.is_empty() || Instant::now() >= deadline {
            return;
        }
        for pid in pids {
            signal(pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---- Shared with `pg_server`: private directories, sweeping, reserved ports. ----

/// `$TMPDIR/storm-testkit`: private servers' directories and port reservations. World-readable
/// so the `postgres` user can reach its data directory below it.
pub(crate) fn private_base() -> PathBuf {
    let base = std::env::temp_dir().join("storm-testkit");
    if !base.is_dir() {
        fs::create_dir_all(&base).expect("private server base dir");
        let _ = fs::set_permissions(&base, fs::Permissions::from_mode(0o755));
    }
    base
}

/// A fresh directory `base/<prefix><12 hex>` owned by this process (its pid in `owner`, for
/// `sweep_stale`); returns it and the hex id.
pub(crate) fn new_private_dir(prefix: &str) -> (PathBuf, String) {
    let id = Uuid::new_v4().simple().to_string()[..12].to_string();
    let dir = private_base().join(format!("{prefix}{id}"));
    fs::create_dir(&dir).expect("private server dir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod private dir");
    fs::write(dir.join("owner"), std::process::id().to_string()).expect("owner file");
    (dir, id)
}

/// Removes a private directory, unless the thread is panicking: then it stays for inspection
/// (the next `sweep_stale` removes it once this process is gone).
pub(crate) fn remove_private_dir(dir: &Path) {
    if std::thread::panicking() {
        eprintln!(
            "private server files kept for inspection: {}",
            dir.display()
        );
    } else {
        let _ = fs::remove_dir_all(dir);
    }
}

/// Cleans up (`cleanup`, then removal) the `prefix` directories whose owner process is gone:
/// what test processes killed before their `Drop` left behind.
pub(crate) fn sweep_stale(prefix: &str, cleanup: fn(&Path)) {
    let Ok(entries) = fs::read_dir(private_base()) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let dir = entry.path();
        // No owner yet: being created right now.
        if read_pid(&dir.join("owner")).is_some_and(|pid| !pid_alive(pid)) {
            cleanup(&dir);
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A TCP port reserved across the test processes of this machine until dropped.
///
/// Ports come from 20000–32000, below Linux's ephemeral range (32768+), so no client socket
/// takes one while its server is down for a restart; a lock file (`base/ports/PORT`, holding
/// the owner's pid) keeps other private servers off it, and a bind checks nothing else uses it.
pub(crate) struct PortLock {
    pub(crate) port: u16,
    path: PathBuf,
}

impl Drop for PortLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Ports others are known to use in that range (the shared RabbitMQ node's distribution port).
const RESERVED_ELSEWHERE: [u16; 1] = [25672];

pub(crate) fn reserve_port() -> PortLock {
    let dir = private_base().join("ports");
    fs::create_dir_all(&dir).expect("ports dir");
    // Free the reservations of test processes killed before their `Drop`.
    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
        if read_pid(&entry.path()).is_some_and(|pid| !pid_alive(pid)) {
            let _ = fs::remove_file(entry.path());
        }
    }
    for _ in 0..1000 {
        let port = 20000 + (Uuid::new_v4().as_u128() % 12000) as u16;
        if RESERVED_ELSEWHERE.contains(&port) {
            continue;
        }
        let path = dir.join(port.to_string());
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                let lock = PortLock { port, path };
                let _ = write!(file, "{}", std::process::id());
                drop(file);
                if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                    return lock;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if read_pid(&path).is_some_and(|pid| !pid_alive(pid)) {
                    let _ = fs::remove_file(&path);
                }
            }
            Err(e) => panic!("reserving port {port}: {e}"),
        }
    }
    panic!("no free port in 20000..32000");
}
