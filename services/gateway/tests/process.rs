//! The real `storm-gateway` binary: configuration errors stop it with one line naming the
//! variable; SIGTERM drains and exits 0.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_storm-gateway");

fn run_with(vars: &[(&str, &str)]) -> (i32, String) {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in vars {
        command.env(k, v);
    }
    let output = command.output().expect("the gateway binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn malformed_or_missing_variables_stop_the_process_naming_them() {
    let base = [
        ("JWT_SECRET", "a-production-secret-of-32-bytes!"),
        ("HTTP_ADDR", "127.0.0.1:0"),
        ("PPROF_ADDR", ""),
    ];
    let cases: &[(&str, &str)] = &[
        ("MAX_CCU", "many"),
        ("MAX_CCU", "0"),
        ("UTILIZATION", "150"),
        ("HTTP_ADDR", "not-an-address"),
        ("PPROF_ADDR", "6060"),
        ("REDIS_URL", "http://localhost:6379"),
        ("WS_SEND_QUEUE", "-1"),
        ("LOG_FORMAT", "xml"),
        ("SHUTDOWN_GRACE_SECS", "soon"),
        ("PUBSUB_PREFIX", "has space"),
        ("PUBSUB_PREFIX", "ends-without-a-colon"),
        // Development secrets need the development flag (STORM_DEV=1).
        ("JWT_SECRET", "dev-secret"),
        ("JWT_SECRET", "31-bytes-is-one-byte-too-short!"),
        ("STORM_DEV", "perhaps"),
    ];
    for (name, value) in cases {
        let mut vars: Vec<(&str, &str)> = base.iter().copied().filter(|(k, _)| k != name).collect();
        vars.push((name, value));
        let (code, stderr) = run_with(&vars);
        assert_eq!(code, 2, "{name}={value}: exit code");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{name}={value}: one line, got {stderr:?}");
        assert!(
            lines[0].contains(name),
            "{name}={value}: the line names the variable: {stderr:?}"
        );
    }
    let (code, stderr) = run_with(&[("HTTP_ADDR", "127.0.0.1:0")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("JWT_SECRET"), "{stderr}");
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let mut child = Command::new(BIN)
        // The development secret starts only behind the development flag.
        .env("JWT_SECRET", "dev-secret")
        .env("STORM_DEV", "1")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("PPROF_ADDR", "")
        .env("PUBSUB_PREFIX", "process-test:")
        .env("SHUTDOWN_GRACE_SECS", "5")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the listening line, then signal.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stderr).lines();
        let listening = lines.any(|l| l.map(|l| l.contains("listening")).unwrap_or(false));
        tx.send(listening).unwrap();
        // Then hang up: logging into a closed pipe must not stop the shutdown.
    });
    assert!(rx.recv().unwrap(), "the gateway logs that it listens");
    reader.join().unwrap();
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "exits within the grace period"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
