//! `tend serve`: one daemon per state dir, engine.json written and removed on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_for(cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn second_instance_is_refused_and_engine_json_follows_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let engine = dir.path().join("engine.json");
    let mut first = Command::new(env!("CARGO_BIN_EXE_tend"))
        .args([
            "--state-dir",
            dir.path().to_str().unwrap(),
            "serve",
            "--snapshot-backend",
            "copy",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = first.id();
    let guard = scopeguard(pid);
    assert!(wait_for(|| engine.exists()), "engine.json never appeared");
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&engine).unwrap()).unwrap();
    assert_eq!(info["pid"], pid);
    assert!(info["version"].is_string() && info["started_at"].is_string());

    let second = Command::new(env!("CARGO_BIN_EXE_tend"))
        .args([
            "--state-dir",
            dir.path().to_str().unwrap(),
            "serve",
            "--snapshot-backend",
            "copy",
        ])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("already running") && err.contains(&format!("pid {pid}")),
        "{err}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = first.wait().unwrap();
    std::mem::forget(guard);
    assert!(status.success());
    assert!(!engine.exists(), "engine.json is removed on clean shutdown");
}

struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn scopeguard(pid: u32) -> KillOnDrop {
    KillOnDrop(pid)
}
