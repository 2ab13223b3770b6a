//! The Container controller with the native runtime, end to end: a real `tend serve`, real
//! shims, namespaces and cgroups (v1 on these hosts, v2 in the VM suite: the cgroup driver says
//! where a group and its limit files are), driven through the CLI.

mod common;

use common::daemon::Daemon;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use tend::cgroup::{AnyCgroupManager, CgroupManager, Resource};

/// A daemon resyncing every `resync_seconds` (far out of reach: only events drive it).
fn daemon(resync_seconds: u64) -> Daemon {
    let resync = resync_seconds.to_string();
    Daemon::start(&["--resync-seconds", &resync, "--snapshot-backend", "copy"])
}

/// Waits until container `name` runs a workload.
fn running(d: &Daemon, name: &str) -> Value {
    d.wait("container", name, "Running", |v| {
        v["status"]["phase"] == "Running" && v["status"]["pid"].is_number()
    })
}

fn container(name: &str, command: &str, extra: &str) -> String {
    format!(
        "apiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: {name}}}\nspec:\n  command: [/bin/sh, -c, {command:?}]\n  stopGracePeriodSeconds: 1\n{extra}"
    )
}

fn pid_of(v: &Value) -> i32 {
    v["status"]["pid"].as_i64().unwrap() as i32
}

fn uid_of(v: &Value) -> String {
    v["metadata"]["uid"].as_str().unwrap().to_string()
}

/// The host's cgroup driver, as the daemon picks it.
fn cgroups() -> AnyCgroupManager {
    tend::cgroup::detect(Path::new("/sys/fs/cgroup")).unwrap()
}

/// The kernel file holding `resource`'s limit of group `group`.
fn limit_file(cg: &AnyCgroupManager, group: &str, resource: Resource) -> String {
    let p = cg.limit_file(group, resource).unwrap();
    p.display().to_string()
}

/// Whether /proc/<pid>/cgroup places `pid` in tend's group `group` (any hierarchy).
fn in_group(pid: i32, group: &str) -> bool {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    cg.lines().any(|l| l.ends_with(&format!(":/tend/{group}")))
}

/// Whether `pid` is in `group` in the memory hierarchy (v1), or in the unified one (v2): where
/// the repair test moved it out, and where tend moves it back only after writing the limits.
fn in_memory_group(pid: i32, group: &str) -> bool {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let lines: Vec<&str> = cg.lines().collect();
    let memory = lines
        .iter()
        .find(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| c == "memory"))
        })
        .or_else(|| lines.iter().find(|l| l.starts_with("0::")));
    memory.is_some_and(|l| l.ends_with(&format!(":/tend/{group}")))
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn limits_written_on_the_host_are_put_back_without_waiting_for_resync() {
    if !common::privileged("limits_written_on_the_host_are_put_back_without_waiting_for_resync") {
        return;
    }
    let d = daemon(3600);
    d.apply(&container(
        "limited",
        "exec sleep 3600",
        "  resources: {memory: 32Mi, pids: 16}\n",
    ));
    let uid = uid_of(&running(&d, "limited"));
    let (cg, group) = (cgroups(), format!("{}-{uid}", d.instance()));
    let read = |f: &str| std::fs::read_to_string(f).unwrap();
    for (res, theirs, ours) in [
        (Resource::Pids, "1000", "16"),
        (Resource::Memory, "1073741824", "33554432"),
    ] {
        let f = limit_file(&cg, &group, res);
        std::fs::write(&f, theirs).unwrap();
        let t = Instant::now();
        while read(&f).trim() != ours {
            assert!(
                t.elapsed() < common::scaled(Duration::from_secs(10)),
                "{f} not put back (resync is an hour away)"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("{f} rewritten -> put back: {:?}", t.elapsed());
    }
    // The user sees what happened.
    let out = d.tend(&["describe", "container", "limited"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("DriftRepaired"), "{text}");
    d.tend(&["delete", "container", "limited", "--wait"]);
    for dir in cg.dirs(&group).unwrap() {
        assert!(!dir.exists(), "{} left", dir.display());
    }
}

#[test]
fn runs_limited_as_pid_1_with_logs_exec_restart_replace_and_delete() {
    if !common::privileged("runs_limited_as_pid_1_with_logs_exec_restart_replace_and_delete") {
        return;
    }
    let d = daemon(1);
    let spec = container(
        "web",
        "echo pid=$$; echo oops >&2; exec sleep 3600",
        "  resources: {memory: 64Mi, cpu: 500m, pids: 64}\n  env: [{name: GREETING, value: hello}]\n",
    );
    d.apply(&spec);
    let v = running(&d, "web");
    let (pid, uid) = (pid_of(&v), uid_of(&v));
    let (cgs, cg) = (cgroups(), format!("{}-{uid}", d.instance()));
    assert!(in_group(pid, &cg), "{pid} is not in tend/{cg}");
    let read = |r: Resource| {
        std::fs::read_to_string(limit_file(&cgs, &cg, r))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(read(Resource::Memory), (64 << 20).to_string());
    // v1 cpu.cfs_quota_us "50000"; v2 cpu.max "50000 100000".
    assert_eq!(read(Resource::Cpu).split(' ').next(), Some("50000"));
    assert_eq!(read(Resource::Pids), "64");
    assert!(cgs.procs(&cg).unwrap().contains(&pid));

    // Logs: PID namespace shows the workload as PID 1; both streams are kept.
    let deadline = Instant::now() + common::scaled(Duration::from_secs(5));
    let logs = loop {
        let out = d.tend(&["logs", "web"]);
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        if s.contains("oops") || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(logs, "pid=1\noops\n");
    let tail = d.tend(&["logs", "web", "--tail", "1", "--timestamps"]);
    let tail = String::from_utf8_lossy(&tail.stdout);
    assert!(tail.trim_end().ends_with("stderr oops"), "{tail}");

    // Exec joins the namespaces and passes the exit code through.
    let out = d.tend(&[
        "exec",
        "web",
        "--",
        "/bin/sh",
        "-c",
        "echo $GREETING $(cat /proc/1/comm); exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello sleep\n");

    // A limit changed behind tend's back is set back (resync is 1 s here).
    std::fs::write(limit_file(&cgs, &cg, Resource::Pids), "1000").unwrap();
    let deadline = Instant::now() + common::scaled(Duration::from_secs(5));
    while read(Resource::Pids) != "64" {
        assert!(Instant::now() < deadline, "pids.max not put back");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The group deleted behind tend's back (its workload moved out first, as rmdir demands):
    // recreated with its limits and the workload moved back (resync is 1 s here).
    let group_dir = cgs.dirs(&cg).unwrap()[0].clone();
    let top = group_dir.parent().and_then(Path::parent).unwrap();
    std::fs::write(top.join("cgroup.procs"), pid.to_string()).unwrap();
    std::fs::remove_dir(&group_dir).unwrap();
    let deadline = Instant::now() + common::scaled(Duration::from_secs(10));
    while !(in_memory_group(pid, &cg) && group_dir.is_dir()) {
        assert!(Instant::now() < deadline, "deleted group not rebuilt");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(read(Resource::Memory), (64 << 20).to_string());

    // Killed from outside: restarted at once (pidfd, no polling), counted, reported.
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let v = d.wait("container", "web", "restarted", |v| {
        v["status"]["restartCount"] == 1 && v["status"]["pid"].is_number()
    });
    eprintln!(
        "kill -> restarted (seen through the CLI): {:?}",
        t.elapsed()
    );
    assert_ne!(pid_of(&v), pid);
    assert_eq!(v["status"]["lastState"]["signal"], 9);
    assert_eq!(v["status"]["lastState"]["reason"], "Error");
    let prev = d.tend(&["logs", "web", "--previous"]);
    assert_eq!(String::from_utf8_lossy(&prev.stdout), "pid=1\noops\n");

    // A spec change replaces the workload.
    let old = pid_of(&v);
    d.apply(&spec.replace("value: hello", "value: bye"));
    let v = d.wait("container", "web", "replaced", |v| {
        v["status"]["observedGeneration"] == 2 && v["status"]["phase"] == "Running"
    });
    assert_ne!(pid_of(&v), old);
    assert!(!alive(old), "old workload stopped");
    let out = d.tend(&["exec", "web", "--", "/bin/sh", "-c", "echo $GREETING"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bye\n");

    // tend wait sees Ready.
    let out = d.tend(&[
        "wait",
        "ct/web",
        "--for=condition=Ready",
        "--timeout",
        &common::scaled_secs(5),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Delete leaves no shim, cgroup or directory.
    let last = pid_of(&v);
    let out = d.tend(&["delete", "container", "web"]);
    assert!(out.status.success());
    let out = d.tend(&[
        "wait",
        "ct/web",
        "--for=delete",
        "--timeout",
        &common::scaled_secs(10),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!alive(last));
    for dir in cgs.dirs(&cg).unwrap() {
        assert!(!dir.exists(), "{} left", dir.display());
    }
    assert!(!d.path().join("containers").join(&uid).exists());
}

#[test]
fn memory_hog_is_oom_killed_and_reported() {
    if !common::privileged("memory_hog_is_oom_killed_and_reported") {
        return;
    }
    let d = daemon(1);
    d.apply(&container(
        "hog",
        "x=$(yes | head -c 300000000); echo survived",
        "  resources: {memory: 16Mi}\n  restartPolicy: Never\n",
    ));
    let v = d.wait("container", "hog", "Failed", |v| {
        v["status"]["phase"] == "Failed"
    });
    assert_eq!(v["status"]["lastState"]["reason"], "OOMKilled", "{v:#}");
    assert_eq!(v["status"]["conditions"][0]["reason"], "OOMKilled");
    d.tend(&["delete", "container", "hog"]);
    assert!(d
        .tend(&[
            "wait",
            "ct/hog",
            "--for=delete",
            "--timeout",
            &common::scaled_secs(10)
        ])
        .status
        .success());
}

#[test]
fn daemon_kill9_keeps_workloads_sees_exits_and_sweeps_orphans() {
    if !common::privileged("daemon_kill9_keeps_workloads_sees_exits_and_sweeps_orphans") {
        return;
    }
    let mut d = daemon(1);
    let mut yaml = String::new();
    for i in 0..10 {
        yaml.push_str(&container(&format!("c{i}"), "exec sleep 3600", "---\n"));
    }
    // "ends" exits when told to (a file appears), not after a guessed time.
    let go = d.path().join("ends-go");
    yaml.push_str(&container(
        "ends",
        &format!(
            "while [ ! -e {} ]; do sleep 0.05; done; exit 7",
            go.display()
        ),
        "  restartPolicy: Never\n",
    ));
    d.apply(&yaml);
    let before: Vec<i32> = (0..10)
        .map(|i| pid_of(&running(&d, &format!("c{i}"))))
        .collect();
    let ends = pid_of(&running(&d, "ends"));
    d.kill9();
    // While the daemon is down: the workloads live on; one exits; an orphan cgroup appears.
    for p in &before {
        assert!(alive(*p));
    }
    let cg = cgroups();
    let orphan = format!("{}-00000000-dead-beef-0000-000000000000", d.instance());
    cg.create(&orphan).unwrap();
    std::fs::write(&go, "").unwrap();
    let deadline = Instant::now() + common::scaled(Duration::from_secs(5));
    while alive(ends) {
        assert!(
            Instant::now() < deadline,
            "ends did not exit while the daemon was down"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.spawn();
    let v = d.wait("container", "ends", "exit seen", |v| {
        v["status"]["phase"] == "Failed"
    });
    assert_eq!(v["status"]["lastState"]["exitCode"], 7);
    for (i, p) in before.iter().enumerate() {
        let v = running(&d, &format!("c{i}"));
        assert_eq!(pid_of(&v), *p, "c{i} re-adopted, same pid");
        assert_eq!(v["status"]["restartCount"], 0, "c{i} never restarted");
    }
    assert!(
        !cg.exists(&orphan).unwrap(),
        "orphan cgroup of this instance removed"
    );
    // Re-attached: an exit after the restart is still noticed through the pidfd.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    d.wait("container", "c0", "restarted after re-adoption", |v| {
        v["status"]["restartCount"] == 1
    });
}

#[test]
fn crash_loop_backoff_grows() {
    if !common::privileged("crash_loop_backoff_grows") {
        return;
    }
    let d = daemon(1);
    d.apply(&container("crash", "exit 1", ""));
    // Restart 1 is immediate, then base, 2 base, 4 base: restart 4 comes after 7 base of backoff,
    // plus four runs of the workload (each a start and an exit: 3 s allowed).
    let base = tend_controllers::container::ContainerConfig::default().backoff_base;
    let window = base * 7 + 4 * common::scaled(Duration::from_secs(3));
    // Every status write, from `tend get -w` (a poll, slow under emulation, could miss a run),
    // and each run's start as the shim recorded it (status.startedAt while restartCount is n),
    // so the intervals do not depend on when this test gets to look.
    let mut watch = common::Kill(
        std::process::Command::new(common::daemon::TEND)
            .arg("--state-dir")
            .arg(d.path())
            .args(["get", "container", "crash", "-w", "-o", "json"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let out = watch.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for v in serde_json::Deserializer::from_reader(out).into_iter::<Value>() {
            if v.map(|v| tx.send(v)).is_err() {
                break;
            }
        }
    });
    let t0 = Instant::now();
    let mut starts: Vec<(u64, chrono::DateTime<chrono::FixedOffset>)> = Vec::new();
    let mut saw_backoff = false;
    while starts.last().is_none_or(|(n, _)| *n < 4) {
        let left = window.saturating_sub(t0.elapsed());
        let Ok(v) = rx.recv_timeout(left) else {
            panic!("no 4th restart in {window:?}: {starts:?}");
        };
        let n = v["status"]["restartCount"].as_u64().unwrap_or(0);
        let started = v["status"]["startedAt"].as_str().unwrap_or_default();
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(started) {
            if starts.last().is_none_or(|(m, _)| *m != n) {
                starts.push((n, at));
            }
        }
        saw_backoff |= v["status"]["conditions"][0]["reason"] == "CrashLoopBackOff";
    }
    drop(watch);
    assert!(saw_backoff, "{starts:?}");
    let at = |n: u64| starts.iter().find(|(m, _)| *m == n).map(|(_, t)| *t);
    let never = |n| panic!("run {n} never seen: {starts:?}");
    let (t3, t4) = (
        at(3).unwrap_or_else(|| never(3)),
        at(4).unwrap_or_else(|| never(4)),
    );
    // Restart 4 waited 4 base after run 3 ended: a lower bound that holds however slow the host.
    let base = chrono::Duration::from_std(base).unwrap();
    assert!(t4 - t3 >= base * 4, "{starts:?}");
    // And it waited longer than restart 3 (2 base), when run 2 was seen.
    if let Some(t2) = at(2) {
        assert!(
            t4 - t3 > t3 - t2 + chrono::Duration::milliseconds(500),
            "{starts:?}"
        );
    }
    d.tend(&["delete", "container", "crash"]);
    assert!(d
        .tend(&[
            "wait",
            "ct/crash",
            "--for=delete",
            "--timeout",
            &common::scaled_secs(10)
        ])
        .status
        .success());
}
