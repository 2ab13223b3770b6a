//! The cgroup driver against this host's real cgroupfs: limits in the kernel files, tasks in
//! /proc/<pid>/cgroup, drift seen, OOM kills counted, kill_all and remove leaving nothing.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tend::cgroup::{self, AnyCgroupManager, CgroupError, CgroupManager, Limits, V2Manager};

const ROOT: &str = "/sys/fs/cgroup";
const MIB: u64 = 1 << 20;

/// Kills and reaps the test's children by PID and removes the group, even when the test fails.
struct Guard<M: CgroupManager> {
    mgr: M,
    name: String,
    children: Vec<Child>,
}

impl<M: CgroupManager> Drop for Guard<M> {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.mgr.kill_all(&self.name);
        let _ = self.mgr.remove(&self.name);
    }
}

fn v1_guard(prefix: &str) -> Guard<AnyCgroupManager> {
    let mgr = cgroup::detect(Path::new(ROOT)).unwrap();
    assert_eq!(
        mgr.version(),
        "v1",
        "this host is hybrid: tend must pick the v1 hierarchies"
    );
    Guard {
        mgr,
        name: common::unique(prefix),
        children: Vec::new(),
    }
}

/// Starts `sh -c script` that first writes its own PID into every `join` file (as the shim
/// does before exec), then signals readiness by creating nothing but running on.
fn spawn_joined(join: &[std::path::PathBuf], script: &str) -> Child {
    let full = format!("for f in \"$@\"; do echo $$ > \"$f\" || exit 99; done; {script}");
    Command::new("sh")
        .arg("-c")
        .arg(full)
        .arg("sh")
        .args(join)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// Polls until `f` holds, or panics after `limit`.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn group_file(ctl: &str, name: &str, file: &str) -> String {
    let p = format!("{ROOT}/{ctl}/tend/{name}/{file}");
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .trim()
        .to_string()
}

#[test]
fn v1_limits_land_in_kernel_files_and_drift_is_seen() {
    if !common::privileged("v1_limits_land_in_kernel_files_and_drift_is_seen") {
        return;
    }
    let mut g = v1_guard("cgl");
    let name = g.name.clone();
    let want = Limits {
        memory_bytes: Some(64 * MIB),
        cpu_millis: Some(250),
        pids: Some(20),
    };

    let t = Instant::now();
    g.mgr.create(&name).unwrap();
    g.mgr.apply(&name, &want).unwrap();
    let setup = t.elapsed();
    g.children
        .push(Command::new("sleep").arg("30").spawn().unwrap());
    let pid = g.children[0].id() as i32;
    let t = Instant::now();
    g.mgr.add_task(&name, pid).unwrap();
    let add = t.elapsed();
    eprintln!("v1 create+apply {setup:?}, add_task {add:?}");

    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for ctl in ["memory", "cpu", "pids", "freezer"] {
        let line = format!(":{ctl}:/tend/{name}\n");
        assert!(
            cg.contains(&line),
            "/proc/{pid}/cgroup lacks {line:?}:\n{cg}"
        );
    }
    assert_eq!(
        group_file("memory", &name, "memory.limit_in_bytes"),
        "67108864"
    );
    assert_eq!(group_file("cpu", &name, "cpu.cfs_period_us"), "100000");
    assert_eq!(group_file("cpu", &name, "cpu.cfs_quota_us"), "25000");
    assert_eq!(group_file("pids", &name, "pids.max"), "20");
    assert_eq!(g.mgr.procs(&name).unwrap(), vec![pid]);
    assert!(g.mgr.exists(&name).unwrap());
    assert!(g.mgr.list(&name).unwrap().contains(&name));
    assert_eq!(g.mgr.read_limits(&name).unwrap(), want.normalized());
    assert_eq!(g.mgr.oom_kill_count(&name).unwrap(), 0);

    // Someone edits the files behind tend's back; read_limits notices, apply sets them back.
    std::fs::write(format!("{ROOT}/cpu/tend/{name}/cpu.cfs_quota_us"), "50000").unwrap();
    std::fs::write(format!("{ROOT}/pids/tend/{name}/pids.max"), "max").unwrap();
    let drifted = g.mgr.read_limits(&name).unwrap();
    assert_eq!(drifted.cpu_millis, Some(500));
    assert_eq!(drifted.pids, None);
    assert_ne!(drifted, want.normalized());
    g.mgr.apply(&name, &want).unwrap();
    assert_eq!(g.mgr.read_limits(&name).unwrap(), want.normalized());

    // An odd memory size is kept in whole pages, so the drift check does not flap.
    let odd = Limits {
        memory_bytes: Some(50 * MIB + 123),
        ..want
    };
    g.mgr.apply(&name, &odd).unwrap();
    assert_eq!(g.mgr.read_limits(&name).unwrap(), odd.normalized());
}

#[test]
fn v1_oom_kill_is_counted() {
    if !common::privileged("v1_oom_kill_is_counted") {
        return;
    }
    let mut g = v1_guard("cgo");
    let name = g.name.clone();
    g.mgr.create(&name).unwrap();
    let limits = Limits {
        memory_bytes: Some(32 * MIB),
        ..Limits::default()
    };
    g.mgr.apply(&name, &limits).unwrap();
    let join = g.mgr.path_for_join(&name);
    let hog = "exec python3 -c 'b = b\"x\" * (256 << 20); print(len(b))'";
    g.children.push(spawn_joined(&join, hog));

    let start = Instant::now();
    let status = loop {
        if let Some(s) = g.children[0].try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "the hog was not OOM-killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "hog should die of SIGKILL, got {status:?}"
    );
    let kills = g.mgr.oom_kill_count(&name).unwrap();
    assert!(kills >= 1, "oom_kill count {kills}");
    eprintln!("v1 OOM kill after {:?}, oom_kill={kills}", start.elapsed());
}

#[test]
fn v1_kill_all_catches_every_process_and_remove_leaves_nothing() {
    if !common::privileged("v1_kill_all_catches_every_process_and_remove_leaves_nothing") {
        return;
    }
    let mut g = v1_guard("cgk");
    let name = g.name.clone();
    g.mgr.create(&name).unwrap();
    g.mgr
        .apply(
            &name,
            &Limits {
                pids: Some(16),
                ..Limits::default()
            },
        )
        .unwrap();
    let join = g.mgr.path_for_join(&name);
    g.children
        .push(spawn_joined(&join, "sleep 30 & sleep 30 & wait"));
    wait_for("three members", Duration::from_secs(5), || {
        g.mgr.procs(&name).unwrap().len() == 3
    });
    let members = g.mgr.procs(&name).unwrap();

    let t = Instant::now();
    g.mgr.kill_all(&name).unwrap();
    let killed = t.elapsed();
    assert!(g.mgr.procs(&name).unwrap().is_empty());
    let _ = g.children[0].wait();
    let t = Instant::now();
    g.mgr.remove(&name).unwrap();
    let removed = t.elapsed();
    eprintln!("v1 kill_all of 3 procs {killed:?}, remove {removed:?}");

    for pid in members {
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            !alive || stat.contains(") Z"),
            "pid {pid} survived kill_all: {stat}"
        );
    }
    for ctl in ["memory", "cpu", "pids", "freezer"] {
        let dir = format!("{ROOT}/{ctl}/tend/{name}");
        assert!(!Path::new(&dir).exists(), "{dir} left behind");
    }
    assert!(!g.mgr.exists(&name).unwrap());
    assert!(!g.mgr.list("").unwrap().contains(&name));
    g.mgr.remove(&name).unwrap();
}

#[test]
fn v2_unified_of_a_hybrid_host_joins_kills_and_removes() {
    if !common::privileged("v2_unified_of_a_hybrid_host_joins_kills_and_removes") {
        return;
    }
    let unified = Path::new("/sys/fs/cgroup/unified");
    if !unified.exists() {
        eprintln!("SKIPPED v2 part: no {} on this host", unified.display());
        return;
    }
    assert_eq!(cgroup::detect(unified).unwrap().version(), "v2");
    let mut g = Guard {
        mgr: V2Manager::new(unified),
        name: common::unique("cgv"),
        children: Vec::new(),
    };
    let name = g.name.clone();
    g.mgr.create(&name).unwrap();
    // Here memory, cpu and pids are bound to v1: unlimited is fine, a real limit is refused.
    g.mgr.apply(&name, &Limits::default()).unwrap();
    let err = g.mgr.apply(
        &name,
        &Limits {
            memory_bytes: Some(MIB),
            ..Limits::default()
        },
    );
    assert!(
        matches!(err, Err(CgroupError::MissingController { .. })),
        "{err:?}"
    );

    let join = g.mgr.path_for_join(&name);
    g.children
        .push(spawn_joined(&join, "sleep 30 & exec sleep 30"));
    let pid = g.children[0].id() as i32;
    wait_for("two members", Duration::from_secs(5), || {
        g.mgr.procs(&name).unwrap().len() == 2
    });
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cg.contains(&format!("0::/tend/{name}\n")), "{cg}");

    let t = Instant::now();
    g.mgr.kill_all(&name).unwrap();
    eprintln!("v2 kill_all (cgroup.kill) {:?}", t.elapsed());
    assert!(g.mgr.procs(&name).unwrap().is_empty());
    let _ = g.children[0].wait();
    g.mgr.remove(&name).unwrap();
    assert!(!unified.join("tend").join(&name).exists());
    assert!(!g.mgr.exists(&name).unwrap());
}

#[test]
fn v1_group_deleted_from_outside_is_noticed_and_rebuilt() {
    if !common::privileged("v1_group_deleted_from_outside_is_noticed_and_rebuilt") {
        return;
    }
    let mut g = v1_guard("cgd");
    let name = g.name.clone();
    let want = Limits {
        memory_bytes: Some(64 * MIB),
        ..Limits::default()
    };
    g.mgr.create(&name).unwrap();
    g.mgr.apply(&name, &want).unwrap();
    g.children
        .push(Command::new("sleep").arg("30").spawn().unwrap());
    let pid = g.children[0].id() as i32;
    g.mgr.add_task(&name, pid).unwrap();

    // Behind tend's back: move the workload out of the memory group and delete that group.
    std::fs::write(format!("{ROOT}/memory/cgroup.procs"), pid.to_string()).unwrap();
    std::fs::remove_dir(format!("{ROOT}/memory/tend/{name}")).unwrap();
    assert!(!g.mgr.exists(&name).unwrap());
    assert!(g.mgr.read_limits(&name).unwrap_err().is_not_found());

    g.mgr.create(&name).unwrap();
    g.mgr.apply(&name, &want).unwrap();
    g.mgr.add_task(&name, pid).unwrap();
    assert!(g.mgr.exists(&name).unwrap());
    assert_eq!(g.mgr.read_limits(&name).unwrap(), want);
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cg.contains(&format!(":memory:/tend/{name}\n")), "{cg}");
}
