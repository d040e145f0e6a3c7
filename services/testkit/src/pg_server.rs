//! A private Postgres 15 cluster, for tests that restart or stop Postgres: the machine's shared
//! server on 5432 must never be touched, since every other test uses it.
//!
//! `initdb` refuses to run as root, so the cluster belongs to the `postgres` user (commands run
//! through `runuser`); trust authentication, `fsync=off`, listening on 127.0.0.1 only, its
//! socket in its data directory. `restart`, `stop` and `start_again` keep the port and the
//! data. Stopped (`-m immediate`) and its directory removed on drop; clusters left by test
//! processes killed before their `Drop` are swept by the next `start`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::rabbit_server::{
    PortLock, new_private_dir, private_base, remove_private_dir, reserve_port, sweep_stale,
};

const BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct PgServer {
    port: u16,
    /// `base/pg-<hex>` (root's): `owner`, and `data/` (postgres', the cluster and its log).
    dir: PathBuf,
    running: bool,
    _port: PortLock,
}

impl PgServer {
    /// Creates a cluster (`initdb`, ~0.5 s) and starts it.
    pub async fn start() -> Self {
        sweep_stale("pg-", stop_stale_cluster);
        let (dir, _) = new_private_dir("pg-");
        let port = reserve_port();
        let mut server = Self {
            port: port.port,
            dir,
            running: false,
            _port: port,
        };
        // The private dir is root's: the data dir in it must be postgres' own (mode 0700).
        let data = server.data();
        std::fs::create_dir(&data).expect("data dir");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
            .expect("chmod data dir");
        let mut chown = Command::new("chown");
        chown.arg("postgres:postgres").arg(&data);
        let output = run(chown).await;
        server.check("chown postgres", output);
        let initdb = Path::new(BIN).join("initdb");
        let mut initdb = as_postgres(&initdb);
        initdb
            .args(["--no-sync", "-A", "trust", "-U", "postgres", "-E", "UTF8"])
            .arg("--locale=C.UTF-8")
            .arg("-D")
            .arg(&data);
        let output = run(initdb).await;
        server.check("initdb", output);
        server.start_again().await;
        server
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB` (the `postgres` database exists; create others).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (its log is `server.log` in it).
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// `pg_ctl restart -m fast`: open connections are terminated, then the server is back on
    /// the same port with the same data (this returns once it accepts connections).
    pub async fn restart(&mut self) {
        let output = self.pg_ctl(&["restart", "-m", "fast"]).await;
        self.check("pg_ctl restart", output);
        self.running = true;
    }

    /// `pg_ctl stop -m fast`: open connections are terminated and nothing listens on the port
    /// until `start_again`.
    pub async fn stop(&mut self) {
        if self.running {
            let output = self.pg_ctl(&["stop", "-m", "fast"]).await;
            self.check("pg_ctl stop", output);
            self.running = false;
        }
    }

    /// Starts the stopped server again on the same port with the same data; returns once it
    /// accepts connections.
    pub async fn start_again(&mut self) {
        assert!(
            !self.running,
            "the cluster on port {} is running",
            self.port
        );
        let output = self.pg_ctl(&["start"]).await;
        self.check("pg_ctl start", output);
        self.running = true;
    }

    async fn pg_ctl(&self, args: &[&str]) -> Output {
        let data = self.data();
        let options = format!(
            "-p {} -k {} -c fsync=off -c listen_addresses=127.0.0.1",
            self.port,
            data.display()
        );
        let mut command = pg_ctl(&data);
        command
            .args(args)
            .args(["-w", "-t", "60", "-l"])
            .arg(data.join("server.log"))
            .arg("-o")
            .arg(options);
        run(command).await
    }

    /// Panics with the command's output and the server log when `output` is a failure.
    fn check(&self, what: &str, output: Output) {
        if output.status.success() {
            return;
        }
        let log = std::fs::read_to_string(self.data().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        panic!(
            "{what} failed for the private Postgres on port {} ({}):\n{}{}\n--- server.log ---\n{}",
            self.port,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            lines[lines.len().saturating_sub(30)..].join("\n")
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Also when not `running`: a start that failed (timed out) may have left a server.
        let _ = pg_ctl(&self.data())
            .args(["stop", "-m", "immediate"])
            .output();
        remove_private_dir(&self.dir);
    }
}

/// `command` run as `postgres` (initdb and postgres refuse root), from a directory it may read.
fn as_postgres(command: &Path) -> Command {
    let mut runuser = Command::new("runuser");
    runuser
        .args(["-u", "postgres", "--"])
        .arg(command)
        .current_dir(private_base())
        .stdin(Stdio::null());
    runuser
}

fn pg_ctl(data: &Path) -> Command {
    let mut command = as_postgres(&Path::new(BIN).join("pg_ctl"));
    command.arg("-D").arg(data);
    command
}

/// Runs `command` to completion without blocking the async runtime.
async fn run(command: Command) -> Output {
    tokio::process::Command::from(command)
        .output()
        .await
        .expect("runuser and Postgres 15 are installed")
}

/// Stops a cluster left by a dead test process (a no-op when it is not running).
fn stop_stale_cluster(dir: &Path) {
    let _ = pg_ctl(&dir.join("data"))
        .args(["stop", "-m", "immediate"])
        .output();
}
