//! Unit tests of the v2 manager against a temp dir laid out like a unified cgroup2 mount.

use std::path::Path;

use super::*;
use crate::cgroup::{CgroupError, CgroupManager, Limits};

const MIB: u64 = 1 << 20;

/// A fake cgroup2 root offering `controllers`, with `tend/` present (as the kernel would show
/// it) and `tend/<name>` created through the manager and populated with the interface files.
fn fake(controllers: &str, name: &str) -> (tempfile::TempDir, V2Manager) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("cgroup.controllers"), controllers).unwrap();
    std::fs::write(root.join("cgroup.subtree_control"), "").unwrap();
    std::fs::create_dir(root.join("tend")).unwrap();
    std::fs::write(root.join("tend/cgroup.controllers"), controllers).unwrap();
    std::fs::write(root.join("tend/cgroup.subtree_control"), "").unwrap();
    let m = V2Manager::new(root);
    m.create(name).unwrap();
    let g = root.join("tend").join(name);
    let mut files = vec![("cgroup.procs", ""), ("cgroup.kill", "")];
    if controllers.contains("memory") {
        files.extend([
            ("memory.max", "max"),
            ("memory.swap.max", "max"),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
            ),
        ]);
    }
    if controllers.contains("cpu") {
        files.push(("cpu.max", "max 100000"));
    }
    if controllers.contains("pids") {
        files.push(("pids.max", "max"));
    }
    for (f, content) in files {
        std::fs::write(g.join(f), content).unwrap();
    }
    (dir, m)
}

fn file(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap()
}

const ALL: &str = "cpuset cpu io memory hugetlb pids rdma misc";

#[test]
fn create_enables_wanted_controllers_in_one_write() {
    let (dir, _m) = fake(ALL, "c1");
    assert_eq!(
        file(dir.path(), "cgroup.subtree_control"),
        "+cpu +memory +pids"
    );
    assert_eq!(
        file(dir.path(), "tend/cgroup.subtree_control"),
        "+cpu +memory +pids"
    );
    assert!(dir.path().join("tend/c1").is_dir());
}

#[test]
fn create_leaves_already_enabled_controllers_alone() {
    let (dir, m) = fake("cpu memory pids", "c0");
    std::fs::write(dir.path().join("cgroup.subtree_control"), "cpu memory pids").unwrap();
    m.create("c0b").unwrap();
    assert_eq!(
        file(dir.path(), "cgroup.subtree_control"),
        "cpu memory pids"
    );
}

#[test]
fn apply_writes_exact_v2_files_and_reads_them_back() {
    let (dir, m) = fake(ALL, "c2");
    let want = Limits {
        memory_bytes: Some(64 * MIB),
        cpu_millis: Some(250),
        pids: Some(50),
    };
    m.apply("c2", &want).unwrap();
    assert_eq!(file(dir.path(), "tend/c2/memory.max"), "67108864");
    assert_eq!(file(dir.path(), "tend/c2/memory.swap.max"), "0");
    assert_eq!(file(dir.path(), "tend/c2/cpu.max"), "25000 100000");
    assert_eq!(file(dir.path(), "tend/c2/pids.max"), "50");
    assert_eq!(m.read_limits("c2").unwrap(), want);

    m.apply("c2", &Limits::default()).unwrap();
    assert_eq!(file(dir.path(), "tend/c2/memory.max"), "max");
    assert_eq!(file(dir.path(), "tend/c2/memory.swap.max"), "max");
    assert_eq!(file(dir.path(), "tend/c2/cpu.max"), "max 100000");
    assert_eq!(file(dir.path(), "tend/c2/pids.max"), "max");
    assert_eq!(m.read_limits("c2").unwrap(), Limits::default());
}

#[test]
fn read_limits_sees_drift() {
    let (dir, m) = fake(ALL, "c3");
    let want = Limits {
        memory_bytes: Some(32 * MIB),
        cpu_millis: Some(2000),
        pids: Some(9),
    };
    m.apply("c3", &want).unwrap();
    std::fs::write(dir.path().join("tend/c3/memory.max"), "max").unwrap();
    std::fs::write(dir.path().join("tend/c3/cpu.max"), "50000 50000").unwrap();
    let got = m.read_limits("c3").unwrap();
    assert_eq!(got.memory_bytes, None);
    assert_eq!(got.cpu_millis, Some(1000));
    assert_ne!(got, want.normalized());
    std::fs::write(dir.path().join("tend/c3/cpu.max"), "garbage").unwrap();
    assert!(matches!(
        m.read_limits("c3"),
        Err(CgroupError::Parse { .. })
    ));
}

#[test]
fn hybrid_unified_without_controllers_accepts_only_unlimited() {
    let (dir, m) = fake("hugetlb", "c4");
    assert_eq!(file(dir.path(), "cgroup.subtree_control"), "");
    m.apply("c4", &Limits::default()).unwrap();
    let err = m.apply(
        "c4",
        &Limits {
            memory_bytes: Some(MIB),
            ..Limits::default()
        },
    );
    assert!(matches!(
        err,
        Err(CgroupError::MissingController {
            controller: "memory",
            ..
        })
    ));
    assert!(matches!(
        m.oom_kill_count("c4"),
        Err(CgroupError::MissingController { .. })
    ));
    assert_eq!(m.read_limits("c4").unwrap(), Limits::default());
}

#[test]
fn tasks_oom_kill_and_join_paths() {
    let (dir, m) = fake(ALL, "c5");
    m.add_task("c5", 77).unwrap();
    assert_eq!(file(dir.path(), "tend/c5/cgroup.procs"), "77");
    assert_eq!(
        m.path_for_join("c5"),
        vec![dir.path().join("tend/c5/cgroup.procs")]
    );
    std::fs::write(
        dir.path().join("tend/c5/memory.events"),
        "oom 2\noom_kill 1\n",
    )
    .unwrap();
    assert_eq!(m.oom_kill_count("c5").unwrap(), 1);
    std::fs::write(dir.path().join("tend/c5/cgroup.procs"), "").unwrap();
    m.kill_all("c5").unwrap();
    assert_eq!(file(dir.path(), "tend/c5/cgroup.kill"), "1");
}

#[test]
fn exists_list_remove() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cgroup.controllers"), "").unwrap();
    std::fs::write(dir.path().join("cgroup.subtree_control"), "").unwrap();
    std::fs::create_dir(dir.path().join("tend")).unwrap();
    std::fs::write(dir.path().join("tend/cgroup.controllers"), "").unwrap();
    std::fs::write(dir.path().join("tend/cgroup.subtree_control"), "").unwrap();
    let m = V2Manager::new(dir.path());
    m.create("x-1").unwrap();
    m.create("y-1").unwrap();
    assert!(m.exists("x-1").unwrap());
    assert_eq!(m.list("x-").unwrap(), vec!["x-1"]);
    m.remove("x-1").unwrap();
    m.remove("x-1").unwrap();
    assert!(!m.exists("x-1").unwrap());
    assert_eq!(m.list("").unwrap(), vec!["y-1"]);
}

#[test]
fn kill_writes_cgroup_kill_and_returns_once_events_say_unpopulated() {
    let (dir, m) = fake(ALL, "c6");
    let g = dir.path().join("tend/c6");
    std::fs::write(g.join("cgroup.events"), "populated 0\nfrozen 0\n").unwrap();
    assert!(!m.populated("c6").unwrap());
    m.kill_all("c6").unwrap();
    assert_eq!(file(dir.path(), "tend/c6/cgroup.kill"), "1");

    // Still populated when the drain time runs out: Busy, naming the group.
    std::fs::write(g.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
    assert!(m.populated("c6").unwrap());
    assert!(matches!(
        m.kill_all("c6"),
        Err(CgroupError::Busy { path, .. }) if path == g
    ));
}

#[test]
fn limit_files_dirs_and_pressure_stats() {
    let (dir, m) = fake(ALL, "c7");
    let g = dir.path().join("tend/c7");
    assert_eq!(m.dirs("c7").unwrap(), vec![g.clone()]);
    assert_eq!(
        m.limit_file("c7", Resource::Memory).unwrap(),
        g.join("memory.max")
    );
    assert_eq!(
        m.limit_file("c7", Resource::Cpu).unwrap(),
        g.join("cpu.max")
    );
    assert_eq!(
        m.limit_file("c7", Resource::Pids).unwrap(),
        g.join("pids.max")
    );
    assert_eq!(m.stats("c7").unwrap(), Stats::default());
    std::fs::write(
        g.join("memory.pressure"),
        "some avg10=2.00 avg60=1.00 avg300=0.50 total=900\nfull avg10=1.00 avg60=0.00 avg300=0.00 total=300\n",
    )
    .unwrap();
    std::fs::write(
        g.join("cpu.pressure"),
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    )
    .unwrap();
    let s = m.stats("c7").unwrap();
    assert_eq!(s.memory.unwrap().some.avg10, 2.0);
    assert_eq!(s.memory.unwrap().full.unwrap().total_us, 300);
    assert_eq!(s.cpu.unwrap().some.total_us, 7);
    assert_eq!(s.io, None);
    assert!(matches!(
        m.limit_file("../x", Resource::Pids),
        Err(CgroupError::InvalidName(_))
    ));
}
