//! The operator's CLI against a live daemon: `tend delete --grace-period/--force/-l` reach the
//! workload, `tend apply --wait` returns once everything is Ready and names what cannot start.

mod common;

use common::daemon::Daemon;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

fn start() -> Daemon {
    Daemon::start(&["--snapshot-backend", "copy"])
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A host-rootfs Container running `command` (a YAML flow list), with labels and a grace.
fn container(name: &str, labels: &str, command: &str, grace: u32) -> String {
    format!(
        "apiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: {name}, labels: {{{labels}}}}}\nspec:\n  command: {command}\n  stopGracePeriodSeconds: {grace}\n---\n"
    )
}

fn apply(d: &Daemon, yaml: &str, extra: &[&str]) -> Output {
    let f = d.path().join(format!("{}.yaml", common::unique("ops")));
    std::fs::write(&f, yaml).unwrap();
    let mut args = vec!["apply", "-f", f.to_str().unwrap()];
    args.extend_from_slice(extra);
    d.tend(&args)
}

/// The workload pid of a Running container.
fn pid(d: &Daemon, name: &str) -> i32 {
    let out = ok(d.tend(&["get", "container", name, "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["status"]["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no pid: {v}")) as i32
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn exists(d: &Daemon, name: &str) -> bool {
    d.tend(&["get", "container", name]).status.success()
}

#[test]
fn delete_grace_period_and_force_reach_the_workload() {
    if !common::privileged("delete_grace_period_and_force_reach_the_workload") {
        return;
    }
    let d = start();
    let marker = d.path().join("got-sigterm");
    let (slow, trapper) = (common::unique("slow"), common::unique("trap"));
    // `sleep` as PID 1 of its namespace ignores SIGTERM: only SIGKILL ends it. The trapper
    // handles SIGTERM by writing a marker (and going on), so it shows whether one was sent.
    let trap = format!(
        "[/bin/sh, -c, \"trap 'echo term > {}' TERM; while :; do sleep 0.2; done\"]",
        marker.display()
    );
    let yaml = container(&slow, "app: ops", "[/bin/sleep, '300']", 30)
        + &container(&trapper, "app: ops", &trap, 30);
    ok(apply(&d, &yaml, &["--wait", "--timeout", "60s"]));
    let (slow_pid, trap_pid) = (pid(&d, &slow), pid(&d, &trapper));

    // --grace-period 1: SIGTERM (ignored), SIGKILL a second later, not the spec's 30 s.
    let t = Instant::now();
    ok(d.tend(&[
        "delete",
        "container",
        &slow,
        "--grace-period",
        "1",
        "--wait",
        "--timeout",
        "60",
    ]));
    let took = t.elapsed();
    assert!(!alive(slow_pid) && !exists(&d, &slow));
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(15),
        "grace 1 s took {took:?} (the spec says 30 s)"
    );

    // --force: SIGKILL without a SIGTERM first, and no grace to wait out.
    let t = Instant::now();
    ok(d.tend(&[
        "delete",
        "container",
        &trapper,
        "--force",
        "--wait",
        "--timeout",
        "60",
    ]));
    let took = t.elapsed();
    assert!(!alive(trap_pid) && !exists(&d, &trapper));
    assert!(!marker.exists(), "--force sent SIGTERM");
    assert!(took < Duration::from_secs(15), "force took {took:?}");
    // --force with a positive grace is a contradiction, refused before anything is deleted.
    let out = d.tend(&["delete", "container", "x", "--force", "--grace-period", "5"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--grace-period"), "{out:?}");
}

#[test]
fn delete_by_label_selector_takes_only_the_matching_ones() {
    if !common::privileged("delete_by_label_selector_takes_only_the_matching_ones") {
        return;
    }
    let d = start();
    let (a, b, c) = (
        common::unique("la"),
        common::unique("lb"),
        common::unique("lc"),
    );
    let yaml = container(&a, "tier: web", "[/bin/sleep, '300']", 1)
        + &container(&b, "tier: web", "[/bin/sleep, '300']", 1)
        + &container(&c, "tier: db", "[/bin/sleep, '300']", 1);
    ok(apply(&d, &yaml, &["--wait", "--timeout", "60s"]));
    let dry = ok(d.tend(&["delete", "container", "-l", "tier=web", "--dry-run"]));
    assert!(
        dry.contains(&a) && dry.contains(&b) && !dry.contains(&c),
        "{dry}"
    );
    assert!(exists(&d, &a) && exists(&d, &b), "dry run deleted");
    let out = ok(d.tend(&[
        "delete",
        "container",
        "-l",
        "tier=web",
        "--grace-period",
        "0",
        "--wait",
        "--timeout",
        "60",
    ]));
    assert!(
        out.contains(&a) && out.contains(&b) && !out.contains(&c),
        "{out}"
    );
    assert!(!exists(&d, &a) && !exists(&d, &b));
    assert!(exists(&d, &c), "a non-matching container went");
    // Names and a selector together are ambiguous.
    let out = d.tend(&["delete", "container", &c, "-l", "tier=db"]);
    assert!(!out.status.success() && exists(&d, &c), "{out:?}");
}

#[test]
fn apply_wait_returns_once_ready_and_names_what_cannot_start() {
    if !common::privileged("apply_wait_returns_once_ready_and_names_what_cannot_start") {
        return;
    }
    let d = start();
    let good = common::unique("aw");
    let out = ok(apply(
        &d,
        &container(&good, "app: ops", "[/bin/sleep, '300']", 1),
        &["--wait", "--timeout", "60s"],
    ));
    assert!(out.contains("Ready"), "{out}");
    // Ready when the command returned, not some time after.
    let json = ok(d.tend(&["get", "container", &good, "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let ready = v["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "True", "{v}");

    // A command that does not exist: exit 1 naming the object and why, well before the timeout.
    let bad = common::unique("awbad");
    let t = Instant::now();
    let out = apply(
        &d,
        &container(&bad, "app: ops", "[/nonexistent/cmd]", 1),
        &["--wait", "--timeout", "120s"],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("container/{bad} failed"))
            && (err.contains("StartFailed") || err.contains("CrashLoopBackOff")),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(100),
        "waited out the timeout"
    );

    // Waiting on a dependency that never comes: the timeout, naming the object and its reason.
    let waits = common::unique("awdep");
    let yaml = format!(
        "apiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: {waits}}}\nspec:\n  command: [/bin/sleep, '300']\n  dependsOn: [{{container: never-there, condition: Ready}}]\n"
    );
    let out = apply(&d, &yaml, &["--wait", "--timeout", "2s"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("timed out") && err.contains(&format!("container/{waits}")),
        "{err}"
    );
}

/// Processes in the pid namespace of `pid` (host pids), each with its state letter.
fn in_pid_ns(pid: i32) -> Vec<(i32, char)> {
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{p}/ns/pid"))
            .ok()
            .as_ref()
            != Some(&ns)
        {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .unwrap_or('?');
        out.push((p, state));
    }
    out
}

/// Waits until the namespace of `pid` has exactly `n` processes that are not zombies.
fn settle(pid: i32, n: usize) -> Vec<(i32, char)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let procs = in_pid_ns(pid);
        if procs.iter().filter(|(_, s)| *s != 'Z').count() == n {
            return procs;
        }
        assert!(Instant::now() < deadline, "never settled: {procs:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn init_forwards_sigterm_to_the_command_and_reaps_zombies() {
    if !common::privileged("init_forwards_sigterm_to_the_command_and_reaps_zombies") {
        return;
    }
    let d = start();
    // A subshell leaves an orphan that exits soon after; the command then is `sleep`, which
    // never reaps anything and ignores SIGTERM as PID 1.
    let cmd = "[/bin/sh, -c, '(sleep 0.3 &); exec sleep 300']";
    let (with, without) = (common::unique("init"), common::unique("noinit"));
    let yaml = container(&with, "app: ops", cmd, 30)
        .replace("  command:", "  init: true\n  command:")
        + &container(&without, "app: ops", cmd, 0);
    ok(apply(&d, &yaml, &["--wait", "--timeout", "60s"]));
    let (init_pid, bare_pid) = (pid(&d, &with), pid(&d, &without));
    // Once the orphan has exited: under the init, it was reaped (the init and sleep remain);
    // with sleep as PID 1, it stays a zombie.
    let procs = settle(init_pid, 2);
    assert!(
        procs.iter().all(|(_, s)| *s != 'Z'),
        "zombie under init: {procs:?}"
    );
    let procs = settle(bare_pid, 1);
    assert!(
        procs.iter().any(|(_, s)| *s == 'Z'),
        "without init the orphan should stay a zombie: {procs:?}"
    );
    let sleep_pid = procs.iter().find(|(_, s)| *s != 'Z').unwrap().0;
    assert_eq!(sleep_pid, bare_pid, "sleep is PID 1 without init");
    // SIGTERM reaches sleep through the init: the delete does not wait out the spec's 30 s.
    let t = Instant::now();
    ok(d.tend(&["delete", "container", &with, "--wait", "--timeout", "60"]));
    let took = t.elapsed();
    assert!(!alive(init_pid));
    assert!(
        took < Duration::from_secs(15),
        "stop under init took {took:?}"
    );
}
