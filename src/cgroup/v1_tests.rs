//! Unit tests of the v1 manager against a temp dir laid out like /sys/fs/cgroup on a v1 host.

use std::path::Path;

use super::*;
use crate::cgroup::{CgroupError, CgroupManager, Limits};

const MIB: u64 = 1 << 20;

/// A fake root with the given controller directories, and `tend/<name>` populated with the
/// files the kernel would create in each of them.
fn fake(controllers: &[&str], name: &str) -> (tempfile::TempDir, V1Manager) {
    let dir = tempfile::tempdir().unwrap();
    for c in controllers {
        std::fs::create_dir_all(dir.path().join(c)).unwrap();
    }
    let m = V1Manager::new(dir.path());
    m.create(name).unwrap();
    let files: &[(&str, &str, &str)] = &[
        ("memory", "memory.limit_in_bytes", "9223372036854771712"),
        (
            "memory",
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        ),
        ("cpu", "cpu.cfs_period_us", "100000"),
        ("cpu", "cpu.cfs_quota_us", "-1"),
        ("pids", "pids.max", "max"),
        ("freezer", "freezer.state", "THAWED"),
    ];
    for (c, file, content) in files {
        if controllers.contains(c) {
            std::fs::write(
                dir.path().join(c).join("tend").join(name).join(file),
                content,
            )
            .unwrap();
        }
    }
    for c in controllers {
        std::fs::write(
            dir.path()
                .join(c)
                .join("tend")
                .join(name)
                .join("cgroup.procs"),
            "",
        )
        .unwrap();
    }
    (dir, m)
}

fn file(root: &Path, ctl: &str, name: &str, f: &str) -> String {
    std::fs::read_to_string(root.join(ctl).join("tend").join(name).join(f)).unwrap()
}

const ALL: [&str; 4] = ["memory", "cpu", "pids", "freezer"];

#[test]
fn apply_writes_exact_v1_files_and_reads_them_back() {
    let (dir, m) = fake(&ALL, "c1");
    let want = Limits {
        memory_bytes: Some(64 * MIB),
        cpu_millis: Some(250),
        pids: Some(50),
    };
    m.apply("c1", &want).unwrap();
    assert_eq!(
        file(dir.path(), "memory", "c1", "memory.limit_in_bytes"),
        "67108864"
    );
    assert_eq!(file(dir.path(), "cpu", "c1", "cpu.cfs_period_us"), "100000");
    assert_eq!(file(dir.path(), "cpu", "c1", "cpu.cfs_quota_us"), "25000");
    assert_eq!(file(dir.path(), "pids", "c1", "pids.max"), "50");
    assert_eq!(m.read_limits("c1").unwrap(), want);

    m.apply("c1", &Limits::default()).unwrap();
    assert_eq!(
        file(dir.path(), "memory", "c1", "memory.limit_in_bytes"),
        "-1"
    );
    assert_eq!(file(dir.path(), "cpu", "c1", "cpu.cfs_quota_us"), "-1");
    assert_eq!(file(dir.path(), "pids", "c1", "pids.max"), "max");
    assert_eq!(m.read_limits("c1").unwrap(), Limits::default());
}

#[test]
fn read_limits_sees_drift_and_kernel_unlimited_values() {
    let (dir, m) = fake(&ALL, "c2");
    assert_eq!(m.read_limits("c2").unwrap(), Limits::default());
    let want = Limits {
        memory_bytes: Some(32 * MIB),
        cpu_millis: Some(1500),
        pids: Some(10),
    };
    m.apply("c2", &want).unwrap();
    let cpu = dir.path().join("cpu/tend/c2/cpu.cfs_quota_us");
    std::fs::write(&cpu, "50000").unwrap();
    let got = m.read_limits("c2").unwrap();
    assert_eq!(got.cpu_millis, Some(500));
    assert_ne!(got, want.normalized());
}

#[test]
fn missing_controller_fails_only_for_a_real_limit() {
    let (_dir, m) = fake(&["memory", "cpu"], "c3");
    m.apply(
        "c3",
        &Limits {
            memory_bytes: Some(MIB),
            ..Limits::default()
        },
    )
    .unwrap();
    let err = m
        .apply(
            "c3",
            &Limits {
                pids: Some(5),
                ..Limits::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::MissingController {
                controller: "pids",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(m.read_limits("c3").unwrap().pids, None);
}

#[test]
fn tasks_join_every_controller_and_oom_count_parses() {
    let (dir, m) = fake(&ALL, "c4");
    m.add_task("c4", 4242).unwrap();
    for c in ALL {
        assert_eq!(file(dir.path(), c, "c4", "cgroup.procs"), "4242");
    }
    let join = m.path_for_join("c4");
    assert_eq!(join.len(), 4);
    assert_eq!(join[0], dir.path().join("memory/tend/c4/cgroup.procs"));
    std::fs::write(dir.path().join("pids/tend/c4/cgroup.procs"), "4242\n7\n").unwrap();
    assert_eq!(m.procs("c4").unwrap(), vec![7, 4242]);
    let oom = dir.path().join("memory/tend/c4/memory.oom_control");
    std::fs::write(oom, "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n").unwrap();
    assert_eq!(m.oom_kill_count("c4").unwrap(), 3);
}

#[test]
fn kill_all_on_an_empty_group_freezes_and_thaws() {
    let (dir, m) = fake(&ALL, "c5");
    m.kill_all("c5").unwrap();
    assert_eq!(file(dir.path(), "freezer", "c5", "freezer.state"), "THAWED");
}

#[test]
fn create_exists_list_remove_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for c in ALL {
        std::fs::create_dir(dir.path().join(c)).unwrap();
    }
    let m = V1Manager::new(dir.path());
    assert!(!m.exists("a1").unwrap());
    m.create("a1").unwrap();
    m.create("a1").unwrap();
    m.create("b1").unwrap();
    assert!(m.exists("a1").unwrap());
    std::fs::remove_dir(dir.path().join("pids/tend/a1")).unwrap();
    assert!(
        !m.exists("a1").unwrap(),
        "a group missing from one controller is not whole"
    );
    assert_eq!(m.list("a").unwrap(), vec!["a1"]);
    assert_eq!(m.list("").unwrap(), vec!["a1", "b1"]);
    m.create("a1").unwrap();
    assert!(m.exists("a1").unwrap());
    m.remove("a1").unwrap();
    m.remove("a1").unwrap();
    assert!(!dir.path().join("memory/tend/a1").exists());
    assert_eq!(m.list("").unwrap(), vec!["b1"]);
}

#[test]
fn names_that_escape_the_parent_are_refused() {
    let (_dir, m) = fake(&ALL, "ok");
    assert!(matches!(m.create("../x"), Err(CgroupError::InvalidName(_))));
    assert!(matches!(m.remove(".."), Err(CgroupError::InvalidName(_))));
}

#[test]
fn no_controllers_at_all_is_an_error_on_create() {
    let dir = tempfile::tempdir().unwrap();
    let m = V1Manager::new(dir.path());
    assert!(matches!(
        m.create("x"),
        Err(CgroupError::MissingController { .. })
    ));
}

#[test]
fn dirs_limit_files_populated_and_no_pressure() {
    let (dir, m) = fake(&ALL, "c8");
    let g = |c: &str| dir.path().join(c).join("tend/c8");
    let want: Vec<_> = ALL.iter().map(|c| g(c)).collect();
    assert_eq!(m.dirs("c8").unwrap(), want);
    assert_eq!(
        m.limit_file("c8", Resource::Memory).unwrap(),
        g("memory").join("memory.limit_in_bytes")
    );
    assert_eq!(
        m.limit_file("c8", Resource::Cpu).unwrap(),
        g("cpu").join("cpu.cfs_quota_us")
    );
    assert!(!m.populated("c8").unwrap());
    std::fs::write(g("pids").join("cgroup.procs"), "42\n").unwrap();
    assert!(m.populated("c8").unwrap());
    assert_eq!(m.stats("c8").unwrap(), Stats::default());
}
