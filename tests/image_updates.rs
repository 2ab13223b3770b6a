//! Image content that changes under a tag, end to end against a real registry (Debian's
//! `docker-registry` on 127.0.0.1, images pushed with the Docker CLI) and a real `tend serve` on
//! btrfs: `pullPolicy: Always` re-resolves the tag on `tend apply` of an unchanged spec, and the
//! Containers running from the State are replaced (`Recreate`) or rolled out and rolled back
//! (`Rollout`) — asserted on what the workload process itself sees in its root; and `tend image
//! prune` removes exactly the content no State records, only when told to.

mod common;

use common::daemon::{condition, Daemon};
use common::registry::Registry;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PULL: Duration = Duration::from_secs(60);

/// A daemon on btrfs whose resync never comes during the test: whatever happens after an
/// apply was started by the apply.
fn daemon() -> Daemon {
    daemon_with(&[])
}

fn daemon_with(extra: &[&str]) -> Daemon {
    Daemon::start_btrfs(extra)
}

/// The Container spec of the rollout tests: Ready when `/healthy` exists, 4 s to get there.
const ROLLOUT: &str = "  probes:\n    readiness: {exec: {command: [/bin/cat, /healthy]}, periodSeconds: 1}\n  updateStrategy: {type: Rollout, progressDeadlineSeconds: 4}\n";

/// A build context for a busybox image whose `/version` says `version`; `healthy` adds the
/// `/healthy` file the readiness probe of the rollout test reads.
fn versioned(dir: &Path, version: &str, healthy: bool) -> PathBuf {
    let ctx = dir.join(version);
    std::fs::create_dir_all(&ctx).unwrap();
    let root = common::fixtures::busybox_rootfs(&ctx, &["grep"]);
    std::fs::write(root.join("version"), version).unwrap();
    if healthy {
        std::fs::write(root.join("healthy"), "ok\n").unwrap();
    }
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY rootfs/ /\n").unwrap();
    ctx
}

/// The State `app` (`pullPolicy: Always`) and the Container `web` running from it; every start
/// appends `ran-on-<version>` to `/runs` in its own root. `extra` is more of the Container spec.
fn spec(reg: &Registry, extra: &str) -> String {
    format!(
        r#"apiVersion: tend.dev/v1
kind: State
metadata: {{name: app}}
spec:
  source: {{image: "{}/test/app:1"}}
  pullPolicy: Always
---
apiVersion: tend.dev/v1
kind: Container
metadata: {{name: web}}
spec:
  rootfs: {{state: app}}
  command: [/bin/sh, -c, "echo ran-on-$(cat /version) >> /runs; exec sleep 3600"]
  stopGracePeriodSeconds: 1
{extra}"#,
        reg.host()
    )
}

/// What the running workload of `web` sees at `file` in its root (read through /proc, so it
/// is the process's own view), and its pid.
fn seen(v: &Value, file: &str) -> (u64, String) {
    let pid = v["status"]["pid"].as_u64().expect("a running pid");
    let text = std::fs::read_to_string(format!("/proc/{pid}/root/{file}")).unwrap_or_default();
    (pid, text)
}

fn running(v: &Value) -> bool {
    v["status"]["phase"] == "Running" && v["status"]["pid"].as_u64().is_some()
}

fn progressing(v: &Value) -> (String, String) {
    let c = v["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing").cloned())
        .unwrap_or(Value::Null);
    (
        c["reason"].as_str().unwrap_or("").into(),
        c["message"].as_str().unwrap_or("").into(),
    )
}

fn describe(d: &Daemon, kind: &str, name: &str) -> String {
    String::from_utf8_lossy(&d.tend(&["describe", kind, name]).stdout).into_owned()
}

#[test]
fn an_unchanged_apply_re_resolves_the_tag_and_a_recreate_container_runs_the_new_content() {
    let mut reg = Registry::start(None);
    let t = tempfile::tempdir().unwrap();
    let first = reg.build_push(&versioned(t.path(), "v1", true), "test/app:1");
    let d = daemon();
    let yaml = spec(&reg, "");
    d.apply(&yaml);
    d.wait_ready("state", "app", PULL);
    let v = d.wait("container", "web", "running v1", |v| {
        running(v) && seen(v, "version").1 == "v1"
    });
    assert_eq!(v["status"]["imageDigest"], first.as_str(), "{v:#}");
    let (old_pid, _) = seen(&v, "version");

    // The tag moves; the spec does not. Only the apply can make tend look (resync is an hour).
    let second = reg.build_push(&versioned(t.path(), "v2", true), "test/app:1");
    assert_ne!(first, second);
    d.apply(&yaml);
    let st = d.wait_for("state", "app", "the new digest after apply", |v| {
        v.is_some_and(|v| v["status"]["image"]["digest"] == second.as_str())
    });
    assert_eq!(st["metadata"]["generation"], 1, "no new spec generation");
    assert!(
        st["metadata"]["annotations"]["tend.dev/reconcile-requested-at"].is_string(),
        "{st:#}"
    );
    let v = d.wait("container", "web", "running v2 in a new process", |v| {
        running(v) && seen(v, "version").1 == "v2"
    });
    let (pid, runs) = seen(&v, "runs");
    assert_ne!(pid, old_pid);
    // Recreate: a fresh tree of the new image, not the old tree with writes carried over.
    assert_eq!(runs, "ran-on-v2\n");
    assert_eq!(v["status"]["imageDigest"], second.as_str());
    assert_eq!(
        v["status"]["restartCount"], 0,
        "a replacement, not a crash restart"
    );
    assert_eq!(v["metadata"]["generation"], 1);
    let events = describe(&d, "state", "app");
    assert!(events.contains("NewImage"), "{events}");
    let events = describe(&d, "container", "web");
    assert!(
        events.contains("NewImage") && events.contains(&second),
        "{events}"
    );
}

#[test]
fn a_rollout_container_rolls_back_a_broken_new_image_and_rolls_out_a_good_one() {
    let mut reg = Registry::start(None);
    let t = tempfile::tempdir().unwrap();
    let first = reg.build_push(&versioned(t.path(), "v1", true), "test/app:1");
    let d = daemon();
    let yaml = spec(&reg, ROLLOUT);
    d.apply(&yaml);
    d.wait_ready("state", "app", PULL);
    let v = d.wait("container", "web", "v1 Ready", |v| {
        running(v) && condition(v, "Ready") == "True" && seen(v, "version").1 == "v1"
    });
    let revision = v["status"]["revision"].clone();

    // A broken image under the same tag: no /healthy, so readiness never passes.
    let broken = reg.build_push(&versioned(t.path(), "v3", false), "test/app:1");
    d.apply(&yaml);
    let v = d.wait("container", "web", "rolled back to v1", |v| {
        progressing(v).0 == "RolledBack"
            && running(v)
            && condition(v, "Ready") == "True"
            && seen(v, "version").1 == "v1"
    });
    let (reason, message) = progressing(&v);
    assert!(
        message.contains(&broken) && message.contains(&first) && message.contains("not Ready"),
        "{reason}: {message}"
    );
    // The data as v1 left it: the broken run's write is gone with its tree.
    let (_, runs) = seen(&v, "runs");
    assert!(runs.starts_with("ran-on-v1\n"), "{runs:?}");
    assert!(!runs.contains("v3"), "{runs:?}");
    assert_eq!(v["status"]["imageDigest"], first.as_str(), "{v:#}");
    assert_eq!(v["status"]["rolledBack"]["imageDigest"], broken.as_str());
    assert_eq!(v["status"]["revision"], revision);
    let st = d.get("state", "app").unwrap();
    assert_eq!(st["status"]["image"]["digest"], broken.as_str());
    let events = describe(&d, "container", "web");
    assert!(
        events.contains("NewImage") && events.contains("RolledBack"),
        "{events}"
    );

    // A good image: the same rollout completes and the workload runs it.
    let good = reg.build_push(&versioned(t.path(), "v4", true), "test/app:1");
    d.apply(&yaml);
    let v = d.wait("container", "web", "v4 rolled out", |v| {
        progressing(v).0 == "RolloutComplete"
            && running(v)
            && condition(v, "Ready") == "True"
            && seen(v, "version").1 == "v4"
    });
    assert_eq!(v["status"]["imageDigest"], good.as_str());
    assert!(v["status"]["rolledBack"].is_null(), "{v:#}");
    assert_eq!(v["metadata"]["generation"], 1);
}

/// `tend_image_bytes{store="..."}` from the daemon's /metrics.
fn image_bytes(d: &Daemon, store: &str) -> u64 {
    let (code, text) = d.http("GET", "/metrics", None, "");
    assert_eq!(code, 200, "{text}");
    let want = format!("tend_image_bytes{{store=\"{store}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .unwrap_or_else(|| panic!("no {want} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// The blob files and the chain dirs of an image State, from what its status records.
fn content_of(v: &Value) -> (Vec<String>, PathBuf) {
    let path = PathBuf::from(v["status"]["path"].as_str().unwrap());
    let btrfs_root = path.parent().unwrap().parent().unwrap().to_path_buf();
    let img = &v["status"]["image"];
    let hex = |d: &Value| {
        d.as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string()
    };
    let mut digests: Vec<String> = img["layerDigests"]
        .as_array()
        .unwrap()
        .iter()
        .map(hex)
        .collect();
    let first_chain = btrfs_root.join("layers").join(&digests[0]);
    digests.push(hex(&img["configDigest"]));
    (digests, first_chain)
}

fn blob_path(d: &Daemon, hex: &str) -> PathBuf {
    d.path().join("images/blobs/sha256").join(hex)
}

#[test]
fn image_prune_lists_unrecorded_content_removes_it_only_with_force_and_the_metric_drops() {
    let mut reg = Registry::start(None);
    let t = tempfile::tempdir().unwrap();
    reg.build_push(&versioned(t.path(), "kept", true), "test/kept:1");
    reg.build_push(&versioned(t.path(), "dropped", true), "test/dropped:1");
    let d = daemon();
    let state = |name: &str, repo: &str| {
        format!(
            "apiVersion: tend.dev/v1\nkind: State\nmetadata: {{name: {name}}}\nspec:\n  source: {{image: \"{}/{repo}\"}}\n---\n",
            reg.host()
        )
    };
    d.apply(&format!(
        "{}{}apiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: web}}\nspec:\n  rootfs: {{state: kept}}\n  command: [/bin/sleep, \"3600\"]\n",
        state("kept", "test/kept:1"),
        state("dropped", "test/dropped:1")
    ));
    let kept = d.wait_ready("state", "kept", PULL);
    let dropped = d.wait_ready("state", "dropped", PULL);
    d.wait("container", "web", "Running", running);
    let (kept_blobs, kept_chain) = content_of(&kept);
    let (dropped_blobs, dropped_chain) = content_of(&dropped);
    let prune = |args: &[&str]| {
        let mut a = vec!["image", "prune"];
        a.extend_from_slice(args);
        let out = d.tend(&a);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("tend {a:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
        (out.status.code(), text)
    };

    // Every piece of content is recorded by a State: nothing to prune.
    let (code, text) = prune(&[]);
    assert_eq!(code, Some(0));
    assert!(text.contains("(dry run: 0 item(s)"), "{text}");

    // The State goes; its content stays until a prune.
    let out = d.tend(&["delete", "state", "dropped", "--wait"]);
    assert!(out.status.success(), "{out:?}");
    for p in dropped_blobs.iter().map(|h| blob_path(&d, h)) {
        assert!(p.exists(), "{} went with the State", p.display());
    }
    let before = image_bytes(&d, "blobs") + image_bytes(&d, "layers");

    // Dry run (the default): lists it with its bytes, removes nothing.
    let (code, text) = prune(&[]);
    assert_eq!(code, Some(0));
    for h in &dropped_blobs {
        assert!(text.contains(h.as_str()), "{h} not listed: {text}");
    }
    for h in &kept_blobs {
        assert!(!text.contains(h.as_str()), "kept blob {h} listed: {text}");
    }
    assert!(text.contains("would be freed"), "{text}");
    for p in dropped_blobs.iter().map(|h| blob_path(&d, h)) {
        assert!(p.exists(), "a dry run removed {}", p.display());
    }
    assert!(dropped_chain.exists(), "a dry run removed the chain");
    assert_eq!(image_bytes(&d, "blobs") + image_bytes(&d, "layers"), before);

    // --force removes exactly that; the metric drops by what was freed.
    let out = d.tend(&["image", "prune", "--force", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let freed = report["bytes"].as_u64().unwrap();
    assert!(freed > 0 && report["dryRun"] == false, "{report:#}");
    for p in dropped_blobs.iter().map(|h| blob_path(&d, h)) {
        assert!(!p.exists(), "{} was not removed", p.display());
    }
    assert!(!dropped_chain.exists(), "the chain was not removed");
    for p in kept_blobs.iter().map(|h| blob_path(&d, h)) {
        assert!(
            p.exists(),
            "{} of a declared State was removed",
            p.display()
        );
    }
    assert!(kept_chain.exists());
    let after = image_bytes(&d, "blobs") + image_bytes(&d, "layers");
    assert_eq!(after, before - freed, "before {before}, freed {freed}");
    let (_, text) = prune(&[]);
    assert!(text.contains("(dry run: 0 item(s)"), "{text}");

    // What is kept still works: the Container runs and a new Container starts from the State.
    d.apply(
        "apiVersion: tend.dev/v1\nkind: Container\nmetadata: {name: again}\nspec:\n  rootfs: {state: kept}\n  command: [/bin/sh, -c, \"cat /version; exec sleep 3600\"]\n",
    );
    let v = d.wait("container", "again", "Running on kept", |v| {
        running(v) && seen(v, "version").1 == "kept"
    });
    assert!(running(&v));
    assert!(running(&d.get("container", "web").unwrap()));
}

/// The daemon SIGKILLs itself at one step of an image rollout of a broken image; after a
/// restart the Container runs the old content on the old data, with one workload and no
/// half-made tree.
#[test]
fn sigkill_at_each_image_rollout_step_ends_on_the_old_content_with_one_workload() {
    let mut reg = Registry::start(None);
    let t = tempfile::tempdir().unwrap();
    reg.build_push(&versioned(t.path(), "v1", true), "test/app:1");
    let mut d = daemon_with(&["--failpoints"]);
    let yaml = spec(&reg, ROLLOUT);
    d.apply(&yaml);
    d.wait_ready("state", "app", PULL);
    let v = d.wait("container", "web", "v1 Ready", |v| {
        running(v) && condition(v, "Ready") == "True" && seen(v, "version").1 == "v1"
    });
    let uid = v["metadata"]["uid"].as_str().unwrap().to_string();
    let faults = d.path().join("failpoints");
    let steps = [
        "rollout.stop",
        "rollout.after-snapshot",
        "rollout.restore-target",
        "snapshot.restore.exchange",
        "rollout.rollback",
        "rollout.restore",
        "rollout.after-restore",
    ];
    for (i, fp) in steps.iter().enumerate() {
        let bad = reg.build_push(
            &versioned(t.path(), &format!("bad{i}"), false),
            "test/app:1",
        );
        std::fs::write(&faults, format!("{fp}=kill\n")).unwrap();
        let pid = d.pid().unwrap() as i32;
        d.apply(&yaml);
        let t0 = std::time::Instant::now();
        while common::daemon::alive(pid) {
            assert!(
                t0.elapsed() < common::scaled(Duration::from_secs(60)),
                "{fp}: the daemon never reached the failpoint\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::write(&faults, "").unwrap();
        d.restart();
        let v = d.wait("container", "web", "rolled back after the kill", |v| {
            progressing(v).0 == "RolledBack"
                && v["status"]["rolledBack"]["imageDigest"] == bad.as_str()
                && v["status"]["rollout"].is_null()
                && running(v)
                && condition(v, "Ready") == "True"
        });
        let (_, version) = seen(&v, "version");
        let (_, runs) = seen(&v, "runs");
        assert_eq!(version, "v1", "{fp}: {v:#}");
        assert!(runs.starts_with("ran-on-v1\n"), "{fp}: {runs:?}");
        assert!(!runs.contains("bad"), "{fp}: {runs:?}");
        assert_eq!(
            d.shims().get(&uid).map_or(0, Vec::len),
            1,
            "{fp}: exactly one workload"
        );
        let sandboxes = PathBuf::from(
            d.get("sandbox", "web-rootfs").unwrap()["status"]["path"]
                .as_str()
                .unwrap(),
        );
        let left: Vec<_> = std::fs::read_dir(sandboxes.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-"))
            .collect();
        assert!(left.is_empty(), "{fp}: half-made trees left: {left:?}");
    }
}
