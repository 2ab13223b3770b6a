//! tend under systemd: the unit file is valid for systemd, and the daemon speaks the notify
//! protocol (`Type=notify`, `WatchdogSec=`). This machine has no systemd as PID 1, so the
//! service manager's side is emulated honestly: the test owns the `NOTIFY_SOCKET` datagram
//! socket systemd would create and reads what the daemon sends, as systemd would.

mod common;

use common::daemon::Daemon;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The next datagram on `sock` (at most `within`), as text.
fn next(sock: &UnixDatagram, within: Duration) -> String {
    sock.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification within {within:?}: {e}"));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_unit_file_is_valid_for_systemd() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/tend.service"))
        .unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "KillMode=process",
        "WatchdogSec=",
    ] {
        assert!(unit.contains(line), "the unit sets {line}");
    }
    // systemd-analyze checks the unit as systemd would load it (with the binary this build made).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("tend.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/tend", env!("CARGO_BIN_EXE_tend")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (package systemd) is installed by deploy/setup-host.sh");
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ready_after_the_start_up_pass_watchdog_pings_and_stopping() {
    if !common::privileged("ready_after_the_start_up_pass_watchdog_pings_and_stopping") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut d = Daemon::start_with_env(
        &["--snapshot-backend", "copy"],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    // READY=1 first, and only when /readyz says every controller passed its start-up pass.
    let first = next(&sock, common::scaled(Duration::from_secs(30)));
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    let t0 = Instant::now();
    d.wait_readyz();
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "READY=1 came {:?} before /readyz agreed",
        t0.elapsed()
    );
    // WATCHDOG=1 at half the period, while the heartbeat answers.
    let t0 = Instant::now();
    let mut pings = 0;
    while pings < 4 {
        if next(&sock, Duration::from_secs(2)).trim() == "WATCHDOG=1" {
            pings += 1;
        }
    }
    let took = t0.elapsed();
    assert!(
        took < common::scaled(Duration::from_millis(1600)),
        "4 pings took {took:?} with a 400 ms watchdog"
    );

    // Shims and workloads do not inherit the notify socket (NotifyAccess=main aside, a workload
    // must not be able to speak for the service).
    let name = common::unique("sd");
    d.apply(&format!(
        "apiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: {name}}}\nspec:\n  command: [/bin/sleep, '3600']\n  stopGracePeriodSeconds: 0\n"
    ));
    let v = d.wait_ready("container", &name, Duration::from_secs(20));
    let workload = v["status"]["pid"].as_i64().unwrap();
    let shim = d.shims().into_values().flatten().next().expect("a shim");
    for pid in [workload, shim as i64] {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let env = String::from_utf8_lossy(&env);
        assert!(
            !env.contains("NOTIFY_SOCKET"),
            "pid {pid} has NOTIFY_SOCKET"
        );
        assert!(
            !env.contains("WATCHDOG_USEC"),
            "pid {pid} has WATCHDOG_USEC"
        );
    }

    // SIGTERM (systemctl stop): STOPPING=1 before the daemon exits.
    let status = d.terminate().expect("the daemon was running");
    assert!(status.success(), "{status:?}");
    let mut saw = Vec::new();
    loop {
        let m = next(&sock, Duration::from_secs(5));
        if m.lines().any(|l| l == "STOPPING=1") {
            break;
        }
        saw.push(m);
    }
    assert!(
        saw.iter().all(|m| m.trim() == "WATCHDOG=1"),
        "only pings before STOPPING=1: {saw:?}"
    );
    assert!(!Path::new(&d.path().join("engine.json")).exists());
}
