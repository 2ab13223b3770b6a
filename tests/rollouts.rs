//! Revisions, health-gated rollouts and rollbacks that bring the data back, end to end: a real
//! `tend serve` on btrfs (its embedded loop image), a busybox Container whose counter file
//! lives in its own Sandbox, real probes, real snapshots and restores.

mod common;

use common::daemon::{condition, Daemon};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const DEADLINE: u32 = 3;

/// A daemon on btrfs; `extra` are more `tend serve` arguments.
fn daemon(extra: &[&str]) -> Daemon {
    Daemon::start_btrfs(extra)
}

/// The busybox State and the Sandbox `data` the container writes into.
fn base(d: &Daemon, src: &Path) {
    let rootfs = common::fixtures::busybox_rootfs(src, &["false", "test", "expr"]);
    d.apply(&format!(
        "apiVersion: tend.dev/v1\nkind: State\nmetadata: {{name: busybox}}\nspec: {{source: {{directory: {}}}}}\n---\napiVersion: tend.dev/v1\nkind: Sandbox\nmetadata: {{name: data}}\nspec: {{state: busybox}}\n",
        rootfs.display()
    ));
}

/// The Container `app`: on start it adds `step` to /data/counter (a corrupting revision writes
/// junk instead); `ready` is its readiness command; `tag` makes each spec distinct.
fn app(step: &str, ready: &str, tag: &str) -> String {
    let script = match step {
        "corrupt" => "echo corrupted > /data/counter; exec sleep 3600".to_string(),
        n => format!(
            "c=$(cat /data/counter 2>/dev/null || echo 0); expr $c + {n} > /data/counter.new && mv /data/counter.new /data/counter; exec sleep 3600"
        ),
    };
    format!(
        r#"apiVersion: tend.dev/v1
kind: Container
metadata: {{name: app}}
spec:
  rootfs: {{sandbox: data}}
  command: [/bin/sh, -c, {script:?}]
  env: [{{name: TAG, value: {tag:?}}}]
  stopGracePeriodSeconds: 1
  probes:
    readiness: {{exec: {{command: [/bin/sh, -c, {ready:?}]}}, periodSeconds: 1}}
  updateStrategy: {{type: Rollout, snapshotData: true, progressDeadlineSeconds: {DEADLINE}, revisionHistoryLimit: 2}}
"#
    )
}

const GOOD: &str = "test -s /data/counter";
const NEVER: &str = "false";

fn progressing(v: &Value) -> (String, String) {
    let c = v["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"))
        .cloned()
        .unwrap_or(Value::Null);
    (
        c["reason"].as_str().unwrap_or("").to_string(),
        c["message"].as_str().unwrap_or("").to_string(),
    )
}

/// Waits until the rollout of the current generation has ended (RolloutComplete or
/// RolledBack) and the revision that runs is Ready.
fn settled(d: &Daemon, secs: u64) -> Value {
    let deadline = Instant::now() + common::scaled(Duration::from_secs(secs));
    loop {
        let v = d.get("container", "app").unwrap_or(Value::Null);
        let (reason, _) = progressing(&v);
        let done = v["status"]["rollout"].is_null()
            && v["status"]["observedGeneration"] == v["metadata"]["generation"]
            && matches!(reason.as_str(), "RolloutComplete" | "RolledBack")
            && condition(&v, "Ready") == "True";
        if done {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "rollout did not settle: {v:#}\n--- serve.log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sandbox_dir(d: &Daemon) -> PathBuf {
    let sb = d.get("sandbox", "data").unwrap();
    PathBuf::from(sb["status"]["path"].as_str().unwrap())
}

fn counter(d: &Daemon) -> String {
    std::fs::read_to_string(sandbox_dir(d).join("data/counter"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Waits until the counter file reads `want` (the workload writes it right after it starts).
fn wait_counter(d: &Daemon, want: &str) {
    let deadline = Instant::now() + common::scaled(Duration::from_secs(20));
    while counter(d) != want {
        assert!(
            Instant::now() < deadline,
            "counter is {:?}, want {want:?}\n--- serve.log:\n{}",
            counter(d),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The rollout data snapshots on the host (the `revisions` class dir of the backend).
fn snapshot_trees(d: &Daemon) -> Vec<String> {
    let dir = sandbox_dir(d)
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("revisions");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

fn history(d: &Daemon) -> Value {
    let out = d.tend(&["rollout", "history", "container/app", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn app_shims(d: &Daemon, uid: &str) -> usize {
    d.shims().get(uid).map_or(0, Vec::len)
}

#[test]
fn a_broken_revision_is_rolled_back_with_its_data_and_a_good_one_carries_the_data_forward() {
    if !common::privileged(
        "a_broken_revision_is_rolled_back_with_its_data_and_a_good_one_carries_the_data_forward",
    ) {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let d = daemon(&[]);
    base(&d, src.path());
    d.apply(&app("1", GOOD, "v1"));
    let v = d.wait_ready("container", "app", Duration::from_secs(60));
    assert_eq!(v["status"]["revision"], 1, "{v:#}");
    wait_counter(&d, "1");
    let uid = v["metadata"]["uid"].as_str().unwrap().to_string();

    // A revision that corrupts the file and never gets Ready.
    d.apply(&app("corrupt", NEVER, "bad"));
    wait_counter(&d, "corrupted");
    let v = settled(&d, 30);
    let (reason, message) = progressing(&v);
    assert_eq!(reason, "RolledBack", "{v:#}");
    assert!(
        message.contains(&format!("revision 2 not Ready after {DEADLINE}s"))
            && message.contains("back to 1 (data restored)"),
        "{message}"
    );
    // The user's spec stays generation 2; revision 1 runs, on its own data (1, plus its start).
    assert_eq!(v["metadata"]["generation"], 2);
    assert_eq!(v["status"]["revision"], 1);
    assert_eq!(v["status"]["rolledBack"]["generation"], 2);
    wait_counter(&d, "2");
    assert_eq!(app_shims(&d, &uid), 1, "one workload");
    let events = String::from_utf8(d.tend(&["describe", "container", "app"]).stdout).unwrap();
    assert!(events.contains("RolledBack"), "{events}");

    // A good revision: RolloutComplete, and it starts from the data as revision 1 left it.
    d.apply(&app("10", GOOD, "v2"));
    let v = settled(&d, 30);
    assert_eq!(progressing(&v).0, "RolloutComplete", "{v:#}");
    assert_eq!(v["status"]["revision"], 3);
    wait_counter(&d, "12");
    assert!(v["status"]["rolledBack"].is_null(), "{v:#}");

    let h = history(&d);
    let revs: Vec<u64> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revs, [1, 2, 3], "{h:#}");
    assert_eq!(h["running"], 3);
    assert_eq!(h["items"][0]["createdBy"], "local");
    // Revision 1's data as it was when revision 3 rolled out (2) is kept.
    assert!(h["items"][0]["snapshot"].is_string(), "{h:#}");

    // Unknown revisions and data that was never kept are clear errors that change nothing.
    let out = d.tend(&["rollout", "undo", "container/app", "--to-revision", "99"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("has no revision 99 (it has 1, 2, 3)"),
        "{err}"
    );
    let out = d.tend(&[
        "rollout",
        "undo",
        "container/app",
        "--to-revision",
        "2",
        "--data",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("revision 2") && err.contains("no data snapshot"),
        "{err}"
    );
    assert_eq!(
        d.get("container", "app").unwrap()["metadata"]["generation"],
        3
    );

    // Undo to revision 1 with its data: revision 1's spec (+1) on revision 1's data (2).
    let out = d.tend(&[
        "rollout",
        "undo",
        "container/app",
        "--to-revision",
        "1",
        "--data",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = d.wait("container", "app", "generation 4", |v| {
        v["metadata"]["generation"] == 4
    });
    assert_eq!(v["spec"]["env"][0]["value"], "v1");
    let v = settled(&d, 30);
    assert_eq!(progressing(&v).0, "RolloutComplete", "{v:#}");
    assert_eq!(v["status"]["revision"], 4);
    wait_counter(&d, "3");
    let h = history(&d);
    let last = &h["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last["cause"], "rollback to revision 1 with its data",
        "{h:#}"
    );

    // revisionHistoryLimit 2: revisions 3 and 4 are kept; revision 1's snapshot went with it,
    // revision 3's (taken by this last rollout) stays.
    let revs: Vec<u64> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revs, [3, 4], "{h:#}");
    assert_eq!(snapshot_trees(&d), [format!("{uid}-3")]);

    // `tend history`: from the change feed, every spec change (4 generations) and the status
    // changes between them, oldest first.
    let out = d.tend(&["history", "container/app", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h: Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = h["items"].as_array().unwrap();
    assert_eq!(items[0]["type"], "ADDED", "{h:#}");
    let spec_gens: Vec<u64> = items
        .iter()
        .filter(|i| i["changed"].as_array().unwrap().iter().any(|c| c == "spec"))
        .map(|i| i["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(spec_gens, [2, 3, 4], "{h:#}");
    assert!(
        items
            .iter()
            .any(|i| i["object"]["status"]["rolledBack"]["generation"] == 2),
        "the rollback is in the history"
    );
    let text = String::from_utf8(d.tend(&["history", "container/app"]).stdout).unwrap();
    assert!(
        text.starts_with("REVISION") && text.contains("spec"),
        "{text}"
    );
}

/// The daemon kills itself (SIGKILL) at one rollout step; after a restart the Container ends
/// in exactly one allowed state, with one workload.
#[test]
fn sigkill_at_each_rollout_step_ends_in_one_of_the_two_allowed_states() {
    if !common::privileged("sigkill_at_each_rollout_step_ends_in_one_of_the_two_allowed_states") {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let mut d = daemon(&["--failpoints"]);
    base(&d, src.path());
    d.apply(&app("1", GOOD, "v1"));
    let v = d.wait_ready("container", "app", Duration::from_secs(60));
    let uid = v["metadata"]["uid"].as_str().unwrap().to_string();
    wait_counter(&d, "1");
    let faults = d.path().join("failpoints");
    // (failpoint, the new revision is good) — a broken one must end rolled back on the old
    // data, a good one Complete on the data carried forward.
    let steps = [
        ("rollout.stop", false),
        ("rollout.snapshot", false),
        ("rollout.after-snapshot", false),
        ("rollout.start", false),
        ("rollout.rollback", false),
        ("rollout.restore", false),
        ("snapshot.restore.exchange", false),
        ("rollout.after-restore", false),
        ("rollout.after-snapshot", true),
    ];
    let mut count: u64 = 1;
    for (i, (fp, good)) in steps.iter().enumerate() {
        std::fs::write(&faults, format!("{fp}=kill\n")).unwrap();
        let pid = d.pid().unwrap() as i32;
        if *good {
            d.apply(&app("1", GOOD, &format!("good-{i}")));
        } else {
            d.apply(&app("corrupt", NEVER, &format!("bad-{i}")));
        }
        let t0 = Instant::now();
        while common::daemon::alive(pid) {
            assert!(
                t0.elapsed() < common::scaled(Duration::from_secs(30)),
                "{fp}: the daemon never reached the failpoint\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::write(&faults, "").unwrap();
        d.restart();
        let v = settled(&d, 60);
        let (reason, message) = progressing(&v);
        let gen = v["metadata"]["generation"].as_u64().unwrap();
        count += 1;
        if *good {
            assert_eq!(reason, "RolloutComplete", "{fp}: {message}\n{v:#}");
            assert_eq!(v["status"]["revision"].as_u64(), Some(gen), "{fp}");
        } else {
            assert_eq!(reason, "RolledBack", "{fp}: {message}\n{v:#}");
            assert_eq!(v["status"]["rolledBack"]["generation"].as_u64(), Some(gen));
            assert!(message.contains("(data restored)"), "{fp}: {message}");
        }
        // Old data (or the good revision's start on it), never the broken revision's junk.
        wait_counter(&d, &count.to_string());
        assert_eq!(app_shims(&d, &uid), 1, "{fp}: exactly one workload");
        let left: Vec<_> = std::fs::read_dir(sandbox_dir(&d).parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-"))
            .collect();
        assert!(left.is_empty(), "{fp}: half-made trees left: {left:?}");
    }
}
