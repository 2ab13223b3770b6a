//! The cgroup driver against this host's real cgroupfs, whichever hierarchy it has (v1 or hybrid
//! here; cgroup v2 only in the VM suite, deploy/vm-test.sh): limits in the kernel files, tasks in
//! /proc/<pid>/cgroup, drift seen, OOM kills counted, kill_all and remove leaving nothing.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tend::cgroup::{
    self, AnyCgroupManager, CgroupError, CgroupManager, Limits, Resource, V2Manager,
};

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

/// A guard on the manager `detect` picks for this host, with a unique group name.
fn host_guard(prefix: &str) -> Guard<AnyCgroupManager> {
    let mgr = cgroup::detect(Path::new(ROOT)).unwrap();
    eprintln!("cgroup {} at {ROOT}", mgr.version());
    Guard {
        mgr,
        name: common::unique(prefix),
        children: Vec::new(),
    }
}

/// Whether this host is cgroup v2 only: the root itself is the unified hierarchy, which shows
/// `cgroup.controllers` (a v1 or hybrid root is a tmpfs of per-controller mounts).
fn unified_host() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
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

/// The content of the kernel file holding `resource`'s limit of the group, trimmed.
fn limit(mgr: &AnyCgroupManager, name: &str, resource: Resource) -> String {
    let p = mgr.limit_file(name, resource).unwrap();
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// The lines of /proc/<pid>/cgroup that place `pid` in tend's group `name` (one per v1
/// hierarchy, `0::/tend/<name>` on v2).
fn membership(pid: i32, name: &str) -> usize {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    cg.lines()
        .filter(|l| l.ends_with(&format!(":/tend/{name}")))
        .count()
}

#[test]
fn detect_picks_the_hierarchy_the_host_has() {
    if !common::privileged("detect_picks_the_hierarchy_the_host_has") {
        return;
    }
    let want = if unified_host() { "v2" } else { "v1" };
    assert_eq!(cgroup::detect(Path::new(ROOT)).unwrap().version(), want);
}

#[test]
fn limits_land_in_kernel_files_and_drift_is_seen() {
    if !common::privileged("limits_land_in_kernel_files_and_drift_is_seen") {
        return;
    }
    let mut g = host_guard("cgl");
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
    eprintln!(
        "{} create+apply {setup:?}, add_task {add:?}",
        g.mgr.version()
    );

    // One line per hierarchy in /proc/<pid>/cgroup: 4 on v1 (memory, cpu, pids, freezer), 1 on v2.
    let dirs = g.mgr.dirs(&name).unwrap();
    assert!(dirs.iter().all(|d| d.is_dir()), "{dirs:?}");
    assert_eq!(membership(pid, &name), dirs.len());
    assert_eq!(limit(&g.mgr, &name, Resource::Memory), "67108864");
    assert_eq!(limit(&g.mgr, &name, Resource::Pids), "20");
    let cpu = g.mgr.limit_file(&name, Resource::Cpu).unwrap();
    match &g.mgr {
        AnyCgroupManager::V1(_) => {
            assert_eq!(limit(&g.mgr, &name, Resource::Cpu), "25000");
            let period = std::fs::read_to_string(cpu.with_file_name("cpu.cfs_period_us"));
            assert_eq!(period.unwrap().trim(), "100000");
            assert_eq!(g.mgr.stats(&name).unwrap(), cgroup::Stats::default());
        }
        AnyCgroupManager::V2(_) => {
            assert_eq!(limit(&g.mgr, &name, Resource::Cpu), "25000 100000");
            // No swap beyond the memory limit, unless asked.
            let swap = std::fs::read_to_string(cpu.with_file_name("memory.swap.max"));
            assert_eq!(swap.unwrap().trim(), "0");
            // Pressure stall figures of the group come through the driver.
            let stats = g.mgr.stats(&name).unwrap();
            assert!(stats.cpu.is_some() && stats.memory.is_some() && stats.io.is_some());
        }
    }
    assert_eq!(g.mgr.procs(&name).unwrap(), vec![pid]);
    assert!(g.mgr.populated(&name).unwrap());
    assert!(g.mgr.exists(&name).unwrap());
    assert!(g.mgr.list(&name).unwrap().contains(&name));
    assert_eq!(g.mgr.read_limits(&name).unwrap(), want.normalized());
    assert_eq!(g.mgr.oom_kill_count(&name).unwrap(), 0);

    // Someone edits the files behind tend's back; read_limits notices, apply sets them back.
    let doubled = match &g.mgr {
        AnyCgroupManager::V1(_) => "50000",
        AnyCgroupManager::V2(_) => "50000 100000",
    };
    std::fs::write(&cpu, doubled).unwrap();
    std::fs::write(g.mgr.limit_file(&name, Resource::Pids).unwrap(), "max").unwrap();
    let drifted = g.mgr.read_limits(&name).unwrap();
    assert_eq!(drifted.cpu_millis, Some(500));
    assert_eq!(drifted.pids, None);
    assert_ne!(drifted, want.normalized());
    g.mgr.apply(&name, &want).unwrap();
    assert_eq!(g.mgr.read_limits(&name).unwrap(), want.normalized());
    assert_eq!(limit(&g.mgr, &name, Resource::Pids), "20");

    // An odd memory size is kept in whole pages, so the drift check does not flap.
    let odd = Limits {
        memory_bytes: Some(50 * MIB + 123),
        ..want
    };
    g.mgr.apply(&name, &odd).unwrap();
    assert_eq!(g.mgr.read_limits(&name).unwrap(), odd.normalized());
}

#[test]
fn oom_kill_is_counted() {
    if !common::privileged("oom_kill_is_counted") {
        return;
    }
    let mut g = host_guard("cgo");
    let name = g.name.clone();
    g.mgr.create(&name).unwrap();
    let limits = Limits {
        memory_bytes: Some(32 * MIB),
        ..Limits::default()
    };
    g.mgr.apply(&name, &limits).unwrap();
    let join = g.mgr.path_for_join(&name);
    // The shell keeps the whole command substitution in memory: 300 MB against 32 MiB.
    let hog = "x=$(yes | head -c 300000000); echo survived";
    g.children.push(spawn_joined(&join, hog));

    let start = Instant::now();
    let status = loop {
        if let Some(s) = g.children[0].try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
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
    eprintln!(
        "{} OOM kill after {:?}, oom_kill={kills}",
        g.mgr.version(),
        start.elapsed()
    );
}

#[test]
fn kill_all_catches_every_process_and_remove_leaves_nothing() {
    if !common::privileged("kill_all_catches_every_process_and_remove_leaves_nothing") {
        return;
    }
    let mut g = host_guard("cgk");
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
    let dirs = g.mgr.dirs(&name).unwrap();
    let join = g.mgr.path_for_join(&name);
    g.children
        .push(spawn_joined(&join, "sleep 30 & sleep 30 & wait"));
    wait_for("three members", Duration::from_secs(20), || {
        g.mgr.procs(&name).unwrap().len() == 3
    });
    let members = g.mgr.procs(&name).unwrap();

    let t = Instant::now();
    g.mgr.kill_all(&name).unwrap();
    let killed = t.elapsed();
    assert!(g.mgr.procs(&name).unwrap().is_empty());
    assert!(!g.mgr.populated(&name).unwrap());
    let _ = g.children[0].wait();
    let t = Instant::now();
    g.mgr.remove(&name).unwrap();
    let removed = t.elapsed();
    eprintln!(
        "{} kill_all of 3 procs {killed:?}, remove {removed:?}",
        g.mgr.version()
    );

    for pid in members {
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            !alive || stat.contains(") Z"),
            "pid {pid} survived kill_all: {stat}"
        );
    }
    for dir in dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert!(!g.mgr.exists(&name).unwrap());
    assert!(!g.mgr.list("").unwrap().contains(&name));
    g.mgr.remove(&name).unwrap();
}

/// The unified hierarchy there is: on a hybrid host the `unified` mount, whose controllers are
/// bound to v1 (so only unlimited is accepted); on a v2 host the root itself.
#[test]
fn the_unified_hierarchy_joins_kills_and_removes() {
    if !common::privileged("the_unified_hierarchy_joins_kills_and_removes") {
        return;
    }
    let hybrid = Path::new(ROOT).join("unified");
    let unified = if unified_host() {
        Path::new(ROOT).to_path_buf()
    } else {
        assert!(
            hybrid.join("cgroup.procs").exists(),
            "neither {ROOT} nor {} is a cgroup2 mount",
            hybrid.display()
        );
        hybrid
    };
    assert_eq!(cgroup::detect(&unified).unwrap().version(), "v2");
    let mut g = Guard {
        mgr: V2Manager::new(&unified),
        name: common::unique("cgv"),
        children: Vec::new(),
    };
    let name = g.name.clone();
    g.mgr.create(&name).unwrap();
    g.mgr.apply(&name, &Limits::default()).unwrap();
    let one_mib = Limits {
        memory_bytes: Some(MIB),
        ..Limits::default()
    };
    let applied = g.mgr.apply(&name, &one_mib);
    if unified_host() {
        applied.unwrap();
        assert_eq!(g.mgr.read_limits(&name).unwrap(), one_mib.normalized());
        g.mgr.apply(&name, &Limits::default()).unwrap();
    } else {
        // Here memory, cpu and pids are bound to v1: a real limit is refused.
        assert!(
            matches!(applied, Err(CgroupError::MissingController { .. })),
            "{applied:?}"
        );
    }

    let join = g.mgr.path_for_join(&name);
    g.children
        .push(spawn_joined(&join, "sleep 30 & exec sleep 30"));
    let pid = g.children[0].id() as i32;
    wait_for("two members", Duration::from_secs(20), || {
        g.mgr.procs(&name).unwrap().len() == 2
    });
    assert_eq!(membership(pid, &name), 1);
    assert!(g.mgr.populated(&name).unwrap());

    // cgroup.kill, then the wait for `populated 0` in cgroup.events.
    let t = Instant::now();
    g.mgr.kill_all(&name).unwrap();
    eprintln!("v2 kill_all (cgroup.kill) {:?}", t.elapsed());
    assert!(g.mgr.procs(&name).unwrap().is_empty());
    assert!(!g.mgr.populated(&name).unwrap());
    let _ = g.children[0].wait();
    g.mgr.remove(&name).unwrap();
    assert!(!unified.join("tend").join(&name).exists());
    assert!(!g.mgr.exists(&name).unwrap());
}

#[test]
fn group_deleted_from_outside_is_noticed_and_rebuilt() {
    if !common::privileged("group_deleted_from_outside_is_noticed_and_rebuilt") {
        return;
    }
    let mut g = host_guard("cgd");
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

    // Behind tend's back: move the workload out of the memory group (to its hierarchy's root)
    // and delete that group.
    let mem = g.mgr.limit_file(&name, Resource::Memory).unwrap();
    let group = mem.parent().unwrap();
    let top = group.parent().and_then(Path::parent).unwrap();
    std::fs::write(top.join("cgroup.procs"), pid.to_string()).unwrap();
    std::fs::remove_dir(group).unwrap();
    assert!(!g.mgr.exists(&name).unwrap());
    assert!(g.mgr.read_limits(&name).unwrap_err().is_not_found());

    g.mgr.create(&name).unwrap();
    g.mgr.apply(&name, &want).unwrap();
    g.mgr.add_task(&name, pid).unwrap();
    assert!(g.mgr.exists(&name).unwrap());
    assert_eq!(g.mgr.read_limits(&name).unwrap(), want);
    assert_eq!(membership(pid, &name), g.mgr.dirs(&name).unwrap().len());
}
