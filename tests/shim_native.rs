//! The native shim against the real kernel: namespaces, pivot_root, logs, exit records, stop, exec.
//!
//! The shim runs by re-executing this test binary ("self-exec"): `shim_exe` writes a wrapper
//! script that execs this binary filtered to `selfexec_shim_entry`, which calls
//! `tend::shim::main_from_args` when `TEND_SHIM_SELFEXEC_DIR` is set and does nothing otherwise.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tend::shim::{
    self, ExitRecord, LogLimits, PidFd, ShimConfig, ShimError, ShimHandle, ShimState,
};

#[test]
fn selfexec_shim_entry() {
    if let Ok(dir) = std::env::var("TEND_SHIM_SELFEXEC_DIR") {
        std::process::exit(shim::main_from_args(vec!["shim".into(), dir]));
    }
}

/// A container directory in a tempdir; Drop kills the workload it started (by verified pid).
struct Container {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    exe: PathBuf,
}

impl Container {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        std::fs::create_dir(&dir).unwrap();
        let exe = tmp.path().join("tend-shim.sh");
        let me = std::env::current_exe().unwrap();
        let script = format!(
            "#!/bin/sh\nTEND_SHIM_SELFEXEC_DIR=\"$2\" exec '{}' selfexec_shim_entry --exact --test-threads=1 --nocapture\n",
            me.display()
        );
        std::fs::write(&exe, script).unwrap();
        std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        Self { tmp, dir, exe }
    }

    fn config(&self, argv: &[&str]) -> ShimConfig {
        ShimConfig {
            id: common::unique("sh"),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("PATH".into(), "/bin:/usr/bin".into())],
            cwd: "/".into(),
            hostname: None,
            uid: 0,
            gid: 0,
            rootfs: None,
            netns: None,
            cgroup_procs: vec![],
            log: LogLimits::default(),
            oom: None,
            security: Default::default(),
            init: false,
            user_namespace: None,
            net_sysctls: vec![],
        }
    }

    fn spawn(&self, config: &ShimConfig) -> Result<ShimHandle, ShimError> {
        std::fs::write(
            self.dir.join("config.json"),
            serde_json::to_vec(config).unwrap(),
        )
        .unwrap();
        shim::spawn_shim(&self.exe, &self.dir)
    }

    /// Builds a busybox rootfs under the tempdir and returns its path.
    fn busybox_root(&self) -> PathBuf {
        let root = self.tmp.path().join("rootfs");
        for d in ["bin", "data", "etc"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for app in [
            "sh", "echo", "sleep", "cat", "hostname", "ps", "id", "readlink", "test", "[", "true",
            "ls",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
        }
        root
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Waits (pidfd, no polling) for the shim to end, then returns the recorded exit.
    async fn wait_exit(&self, h: &ShimHandle) -> ExitRecord {
        if let Ok(pfd) = PidFd::open(h.shim_pid, h.shim_start_time) {
            tokio::time::timeout(Duration::from_secs(10), pfd.exited())
                .await
                .expect("shim did not exit")
                .unwrap();
        }
        match shim::read_state(&self.dir).unwrap() {
            ShimState::Exited(rec) => rec,
            other => panic!("expected Exited, got {other:?}"),
        }
    }

    async fn wait_log(&self, needle: &str) {
        let t0 = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "log never got {needle:?}: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Ok(ShimState::Running(h)) = shim::read_state(&self.dir) {
            if shim::process_start_time(h.workload_pid).ok() == Some(h.workload_start_time) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(h.workload_pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn ppid(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn host_workload_logs_and_exit_code() {
    if !common::privileged("host_workload_logs_and_exit_code") {
        return;
    }
    let c = Container::new();
    let t0 = Instant::now();
    let h = c
        .spawn(&c.config(&["sh", "-c", "echo hello; echo oops >&2; exit 3"]))
        .unwrap();
    eprintln!("spawn latency (host fs): {:?}", t0.elapsed());
    assert_ne!(
        ppid(h.shim_pid),
        std::process::id() as i32,
        "the shim must not be our child"
    );
    let rec = c.wait_exit(&h).await;
    assert_eq!(
        (rec.exit_code, rec.signal, rec.oom_killed),
        (Some(3), None, false)
    );
    let log = c.log();
    let line = log
        .lines()
        .find(|l| l.ends_with(" stdout hello"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        chrono::DateTime::parse_from_rfc3339(line.split(' ').next().unwrap()).is_ok(),
        "{line}"
    );
    assert!(log.contains(" stderr oops"), "{log}");
}

#[tokio::test]
async fn rootfs_namespaces_lock_and_exec() {
    if !common::privileged("rootfs_namespaces_lock_and_exec") {
        return;
    }
    let c = Container::new();
    let root = c.busybox_root();
    let mut cfg = c.config(&["sh", "-c", "echo pid=$$; hostname; echo hi > /data/out; cat /proc/1/stat >/dev/null && echo proc-ok; ls /dev/null /dev/shm >/dev/null && echo dev-ok; sleep 30"]);
    cfg.rootfs = Some(root.clone());
    cfg.hostname = Some("shimbox".into());
    let h = c.spawn(&cfg).unwrap();
    c.wait_log("dev-ok").await;
    let log = c.log();
    assert!(log.contains(" stdout pid=1\n"), "{log}");
    assert!(log.contains(" stdout shimbox\n"), "{log}");
    assert_eq!(
        std::fs::read_to_string(root.join("data/out")).unwrap(),
        "hi\n"
    );
    assert_ne!(ppid(h.shim_pid), std::process::id() as i32);
    assert!(matches!(shim::read_state(&c.dir).unwrap(), ShimState::Running(r) if r == h));

    // The lock: a second shim on the same directory is refused and changes nothing.
    assert!(matches!(
        c.spawn(&cfg),
        Err(ShimError::AlreadyRunning { .. })
    ));
    assert!(matches!(shim::read_state(&c.dir).unwrap(), ShimState::Running(r) if r == h));

    // exec_in: same pid namespace, hostname and root; the exit code comes back.
    let pidns = std::fs::read_link(format!("/proc/{}/ns/pid", h.workload_pid)).unwrap();
    let env = vec![
        ("PATH".to_string(), "/bin".to_string()),
        ("NS".to_string(), pidns.display().to_string()),
    ];
    let check = r#"[ "$(readlink /proc/self/ns/pid)" = "$NS" ] && [ "$(hostname)" = shimbox ] && [ -f /data/out ] && [ ! -e /bin/bash ] && exit 7"#;
    let argv = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
    assert_eq!(
        shim::exec_in(h.workload_pid, &argv(check), &env, &cfg).unwrap(),
        7
    );
    assert_eq!(
        shim::exec_in(h.workload_pid, &argv("exit 5"), &env, &cfg).unwrap(),
        5
    );
    let err = shim::exec_in(h.workload_pid, &["nope".to_string()], &env, &cfg).unwrap_err();
    assert!(err.to_string().contains("execve"), "{err}");

    // sh as PID 1 has no TERM handler, so stop falls back to SIGKILL after the grace.
    let rec = shim::stop(&c.dir, Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.signal, Some(9));
}

#[tokio::test]
async fn stop_sends_term_then_kill() {
    if !common::privileged("stop_sends_term_then_kill") {
        return;
    }
    // Traps TERM and keeps going: killed after the grace period.
    let c = Container::new();
    c.spawn(&c.config(&[
        "sh",
        "-c",
        "trap 'echo got-term' TERM; echo ready; while :; do sleep 0.05; done",
    ]))
    .unwrap();
    c.wait_log("ready").await;
    let t0 = Instant::now();
    let rec = shim::stop(&c.dir, Duration::from_millis(500))
        .await
        .unwrap()
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(rec.signal, Some(9));
    assert!(c.log().contains("got-term"), "{}", c.log());

    // Exits on TERM: stop returns its own exit code before the grace ends.
    let c2 = Container::new();
    c2.spawn(&c2.config(&[
        "sh",
        "-c",
        "trap 'exit 0' TERM; echo ready; while :; do sleep 0.05; done",
    ]))
    .unwrap();
    c2.wait_log("ready").await;
    let t0 = Instant::now();
    let rec = shim::stop(&c2.dir, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(rec.exit_code, Some(0));
    // Idempotent: stopping again returns the same record.
    assert_eq!(
        shim::stop(&c2.dir, Duration::from_secs(1)).await.unwrap(),
        Some(rec)
    );
}

#[tokio::test]
async fn pidfd_wait_returns_when_workload_exits() {
    if !common::privileged("pidfd_wait_returns_when_workload_exits") {
        return;
    }
    let c = Container::new();
    let h = c.spawn(&c.config(&["sleep", "0.3"])).unwrap();
    let pfd = PidFd::open(h.workload_pid, h.workload_start_time).unwrap();
    let t0 = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), pfd.exited())
        .await
        .unwrap()
        .unwrap();
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert_eq!(c.wait_exit(&h).await.exit_code, Some(0));
    // The pid is dead now: opening it again is refused.
    assert!(PidFd::open(h.workload_pid, h.workload_start_time).is_err());
}

#[tokio::test]
async fn log_rotation_caps_size() {
    if !common::privileged("log_rotation_caps_size") {
        return;
    }
    let c = Container::new();
    let mut cfg = c.config(&[
        "sh",
        "-c",
        "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done",
    ]);
    cfg.log = LogLimits {
        max_bytes: 4096,
        max_files: 2,
    };
    let h = c.spawn(&cfg).unwrap();
    assert_eq!(c.wait_exit(&h).await.exit_code, Some(0));
    for name in ["log", "log.1"] {
        let len = std::fs::metadata(c.dir.join(name)).unwrap().len();
        assert!(len > 0 && len <= 4096, "{name}: {len}");
    }
    assert!(!c.dir.join("log.2").exists());
    assert!(c
        .log()
        .lines()
        .last()
        .unwrap()
        .ends_with(" stdout line-1999"));
}

#[tokio::test]
async fn failed_start_is_reported_and_recorded() {
    if !common::privileged("failed_start_is_reported_and_recorded") {
        return;
    }
    let c = Container::new();
    let err = c.spawn(&c.config(&["/does/not/exist"])).unwrap_err();
    assert!(
        err.to_string()
            .contains("execve: No such file or directory"),
        "{err}"
    );
    match shim::read_state(&c.dir).unwrap() {
        ShimState::Exited(rec) => assert!(rec.error.unwrap().contains("execve")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn spawn_latency() {
    if !common::privileged("spawn_latency") {
        return;
    }
    let (mut times, mut to_exec) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let c = Container::new();
        let root = c.busybox_root();
        let mut cfg = c.config(&["true"]);
        cfg.rootfs = Some(root);
        let (t0, wall0) = (Instant::now(), chrono::Utc::now());
        let h = c.spawn(&cfg).unwrap();
        times.push(t0.elapsed());
        let started = chrono::DateTime::parse_from_rfc3339(&h.started_at).unwrap();
        to_exec.push(
            (started.with_timezone(&chrono::Utc) - wall0)
                .to_std()
                .unwrap_or_default(),
        );
        assert_eq!(c.wait_exit(&h).await.exit_code, Some(0));
    }
    times.sort();
    to_exec.sort();
    eprintln!(
        "spawn latency with rootfs over 20: p50 {:?}, max {:?} (spawn -> workload exec'd: p50 {:?})",
        times[10], times[19], to_exec[10]
    );
}

/// Removes the test's network namespace and cgroup even when the test fails.
struct HostObjects {
    netns: String,
    cgroup: PathBuf,
}

impl Drop for HostObjects {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
        for _ in 0..50 {
            if std::fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test]
async fn joins_netns_and_cgroup() {
    if !common::privileged("joins_netns_and_cgroup") {
        return;
    }
    let name = common::unique("tshim");
    let objs = HostObjects {
        netns: name.clone(),
        cgroup: PathBuf::from("/sys/fs/cgroup/unified").join(&name),
    };
    assert!(std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap()
        .success());
    std::fs::create_dir(&objs.cgroup).unwrap();
    let c = Container::new();
    let mut cfg = c.config(&["sleep", "30"]);
    cfg.netns = Some(PathBuf::from("/run/netns").join(&name));
    cfg.cgroup_procs = vec![objs.cgroup.join("cgroup.procs")];
    let h = c.spawn(&cfg).unwrap();
    use std::os::unix::fs::MetadataExt;
    let want = std::fs::metadata(format!("/run/netns/{name}"))
        .unwrap()
        .ino();
    let got = std::fs::metadata(format!("/proc/{}/ns/net", h.workload_pid))
        .unwrap()
        .ino();
    assert_eq!(got, want, "workload is not in the netns");
    let procs = std::fs::read_to_string(objs.cgroup.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l == h.workload_pid.to_string()),
        "{procs}"
    );
    let rec = shim::stop(&c.dir, Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.signal, Some(9));
}
