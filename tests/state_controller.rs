//! States and Sandboxes through a real in-process daemon: each test has its own state dir and
//! so its own embedded btrfs loop image (512 MiB), or the copy backend on the host's ext4.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tend::daemon::{instance_id, Daemon, DaemonConfig, Layout};
use tend::snapshot::choose::SnapshotConfig;
use tend::snapshot::loopimg;
use tend::snapshot::BackendMode;
use tend_controllers::ControllerConfig;
use tend_schema::store::{DeleteOptions, EventQuery, Propagation, SqliteStore, Store};
use tend_schema::{AnyObject, Kind, ObjectKey};
use tokio::sync::oneshot;

/// Unmounts and detaches the test's image and clears immutable flags, even on panic.
struct Guard {
    state: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("chattr")
            .args(["-R", "-i"])
            .arg(self.state.join("snapshots"))
            .output();
        if loopimg::unmount_and_detach(&self.state).is_err() {
            let mnt = loopimg::mount_point(&self.state);
            let _ = nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH);
            let _ = loopimg::unmount_and_detach(&self.state);
        }
    }
}

/// A test's state dir, work dir (sources) and running daemon.
struct Env {
    mode: BackendMode,
    /// The controllers' resync period (1 s unless a test needs drift found without it).
    resync: Duration,
    store: Arc<SqliteStore>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The running daemon's Prometheus text.
    metrics: Option<Box<dyn Fn() -> String + Send + Sync>>,
    work: PathBuf,
    state: PathBuf,
    _guard: Guard,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn new(test: &str, mode: BackendMode) -> Option<Env> {
        Self::with_resync(test, mode, Duration::from_secs(1)).await
    }

    async fn with_resync(test: &str, mode: BackendMode, resync: Duration) -> Option<Env> {
        if !common::privileged(test) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix(&common::unique("tstc"))
            .tempdir()
            .unwrap();
        let (state, work) = (dir.path().join("state"), dir.path().join("work"));
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let store = tend::cli::open(&state).await.unwrap();
        let mut env = Env {
            mode,
            resync,
            store,
            stop: None,
            task: None,
            metrics: None,
            work,
            state: state.clone(),
            _guard: Guard { state },
            _dir: dir,
        };
        env.start().await;
        Some(env)
    }

    async fn start(&mut self) {
        let cfg = DaemonConfig {
            layout: Layout::new(&self.state),
            instance: instance_id(&Layout::new(&self.state)).unwrap(),
            exe: PathBuf::from(env!("CARGO_BIN_EXE_tend")),
            controller: ControllerConfig {
                concurrency: 8,
                resync: self.resync,
            },
            snapshot: SnapshotConfig {
                mode: self.mode,
                image_size: 512 << 20,
                btrfs_root: None,
                orphan_grace: Duration::from_secs(1),
            },
            probe_timings: None,
            usage_interval: Duration::from_secs(10),
            log: Default::default(),
            registry_auth: None,
            id_pool: Default::default(),
        };
        let d = Daemon::build(self.store.clone(), &cfg).await.unwrap();
        let mut ready = d.runtime.ready();
        self.metrics = Some(Box::new(d.runtime.metrics_renderer()));
        let (tx, rx) = oneshot::channel::<()>();
        self.task = Some(tokio::spawn(async move {
            d.runtime
                .run(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        }));
        self.stop = Some(tx);
        tokio::time::timeout(Duration::from_secs(20), ready.wait_for(|r| *r))
            .await
            .unwrap()
            .unwrap();
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    /// Reconciles the running daemon's `controller` has run.
    fn reconciles(&self, controller: &str) -> u64 {
        let text = self.metrics.as_ref().map(|m| m()).unwrap_or_default();
        let prefix = format!("tend_reconcile_total{{controller=\"{controller}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or(0)
    }

    async fn create(&self, kind: Kind, name: &str, spec: serde_json::Value) -> AnyObject {
        let o = AnyObject::new(kind, "default", name, spec);
        self.store.create(o).await.unwrap()
    }

    /// Polls the object until `f` holds (None = gone), 20 s at most.
    async fn until(
        &self,
        kind: Kind,
        name: &str,
        what: &str,
        f: impl Fn(Option<&AnyObject>) -> bool,
    ) -> Option<AnyObject> {
        let key = ObjectKey::new(kind, "default", name);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = self.store.get(&key).await.ok();
            if f(o.as_ref()) {
                return o;
            }
            assert!(
                Instant::now() < deadline,
                "{key}: timed out waiting for {what}: {:?}",
                o.map(|o| o.status)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ready(&self, kind: Kind, name: &str) -> PathBuf {
        let o = self
            .until(kind, name, "Ready", |o| phase(o) == "Ready")
            .await
            .unwrap();
        PathBuf::from(o.status["path"].as_str().unwrap())
    }

    async fn delete(&self, kind: Kind, name: &str, propagation: Propagation) {
        let opts = DeleteOptions {
            propagation,
            ..Default::default()
        };
        self.store
            .delete(&ObjectKey::new(kind, "default", name), &opts)
            .await
            .unwrap();
    }

    async fn gone(&self, kind: Kind, name: &str) {
        self.until(kind, name, "deletion", |o| o.is_none()).await;
    }

    /// Waits for an event with this reason (events are recorded just after the host change).
    async fn event(&self, reason: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.event_reasons().await.iter().any(|r| r == reason) {
            assert!(
                Instant::now() < deadline,
                "no {reason} event: {:?}",
                self.event_reasons().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn event_reasons(&self) -> Vec<String> {
        let evs = self
            .store
            .list_events(&EventQuery::default())
            .await
            .unwrap();
        evs.into_iter().map(|e| e.reason).collect()
    }

    /// A source tree: a 0750 script, a symlink, a user xattr, a nested dir.
    fn source(&self, name: &str) -> PathBuf {
        let src = self.work.join(name);
        std::fs::create_dir_all(src.join("etc/app")).unwrap();
        std::fs::write(src.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o750))
            .unwrap();
        std::os::unix::fs::symlink("run.sh", src.join("link")).unwrap();
        std::fs::write(src.join("etc/app/conf"), "k=v\n").unwrap();
        xattr::set(src.join("etc/app/conf"), "user.tend", b"yes").unwrap();
        src
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn phase(o: Option<&AnyObject>) -> String {
    o.and_then(|o| o.status.get("phase")?.as_str())
        .unwrap_or("")
        .to_string()
}

fn reason(o: Option<&AnyObject>) -> String {
    o.and_then(|o| o.status.get("conditions")?.get(0)?.get("reason")?.as_str())
        .unwrap_or("")
        .to_string()
}

/// The content a user checks: the script's mode and text, the symlink, the xattr.
fn assert_content(root: &Path) {
    let meta = std::fs::metadata(root.join("run.sh")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o750, "mode of {}", root.display());
    assert_eq!(
        std::fs::read_link(root.join("link")).unwrap(),
        Path::new("run.sh")
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/app/conf")).unwrap(),
        "k=v\n"
    );
    assert_eq!(
        xattr::get(root.join("etc/app/conf"), "user.tend")
            .unwrap()
            .as_deref(),
        Some(&b"yes"[..])
    );
}

/// Read-only as a user sees it: creating a file fails.
fn writable(dir: &Path) -> bool {
    let p = dir.join(".probe");
    let ok = std::fs::write(&p, "x").is_ok();
    let _ = std::fs::remove_file(&p);
    ok
}

fn btrfs_ro(path: &Path) -> String {
    let out = Command::new("btrfs")
        .args(["property", "get", "-ts"])
        .arg(path)
        .arg("ro")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn import_snapshot_and_freeze(mode: BackendMode, test: &str) {
    let Some(mut env) = Env::new(test, mode).await else {
        return;
    };
    let src = env.source("src");
    let tarball = env.work.join("src.tar");
    let st = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=user.*", "-C"])
        .arg(&src)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let base = env
        .create(
            Kind::State,
            "base",
            serde_json::json!({"source": {"directory": src}}),
        )
        .await;
    env.create(
        Kind::State,
        "tb",
        serde_json::json!({"source": {"tarball": tarball}}),
    )
    .await;
    env.create(Kind::Sandbox, "dev", serde_json::json!({"state": "base"}))
        .await;
    let base_path = env.ready(Kind::State, "base").await;
    let tb_path = env.ready(Kind::State, "tb").await;
    let dev_path = env.ready(Kind::Sandbox, "dev").await;
    assert!(base_path.ends_with(format!("states/{}", base.metadata.uid.unwrap())));
    assert!(
        base_path.starts_with(&env.state),
        "trees live under the state dir"
    );
    let got = env
        .store
        .get(&ObjectKey::new(Kind::State, "default", "base"))
        .await
        .unwrap();
    let backend = if mode == BackendMode::Copy {
        "copy"
    } else {
        "btrfs"
    };
    assert_eq!(got.status["backend"], backend);
    assert!(got.status["sizeBytes"].as_u64().unwrap() > 0);
    for p in [&base_path, &tb_path, &dev_path] {
        assert_content(p);
    }
    assert!(
        !writable(&base_path) && !writable(&tb_path),
        "States are read-only"
    );
    assert!(writable(&dev_path), "Sandboxes are writable");
    if mode == BackendMode::Btrfs {
        assert_eq!(btrfs_ro(&base_path), "ro=true");
        assert_eq!(btrfs_ro(&dev_path), "ro=false");
    }

    // Write into the Sandbox, freeze it into a State, clone that.
    std::fs::write(dev_path.join("written"), "by the sandbox").unwrap();
    env.create(
        Kind::State,
        "frozen",
        serde_json::json!({"source": {"sandbox": "dev"}}),
    )
    .await;
    let frozen = env.ready(Kind::State, "frozen").await;
    assert_eq!(
        std::fs::read_to_string(frozen.join("written")).unwrap(),
        "by the sandbox"
    );
    assert!(!writable(&frozen));
    env.create(
        Kind::Sandbox,
        "dev2",
        serde_json::json!({"state": "frozen"}),
    )
    .await;
    let dev2 = env.ready(Kind::Sandbox, "dev2").await;
    assert_eq!(
        std::fs::read_to_string(dev2.join("written")).unwrap(),
        "by the sandbox"
    );
    assert!(
        !base_path.join("written").exists(),
        "the State under the Sandbox is untouched"
    );

    for (k, n) in [
        (Kind::Sandbox, "dev2"),
        (Kind::State, "frozen"),
        (Kind::Sandbox, "dev"),
        (Kind::State, "base"),
        (Kind::State, "tb"),
    ] {
        env.delete(k, n, Propagation::Background).await;
        env.gone(k, n).await;
    }
    for p in [&base_path, &tb_path, &dev_path, &frozen, &dev2] {
        assert!(!p.exists(), "{} removed", p.display());
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_snapshot_and_freeze_btrfs() {
    import_snapshot_and_freeze(BackendMode::Btrfs, "import_snapshot_and_freeze_btrfs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_snapshot_and_freeze_copy() {
    import_snapshot_and_freeze(BackendMode::Copy, "import_snapshot_and_freeze_copy").await;
}

/// Removes a tree behind tend's back, the way a user would.
fn remove_behind(mode: BackendMode, path: &Path) {
    let ok = if mode == BackendMode::Btrfs {
        Command::new("btrfs")
            .args(["subvolume", "delete"])
            .arg(path)
            .output()
            .unwrap()
            .status
            .success()
    } else {
        Command::new("chattr")
            .args(["-R", "-i"])
            .arg(path)
            .status()
            .unwrap();
        std::fs::remove_dir_all(path).is_ok()
    };
    assert!(ok, "could not remove {}", path.display());
}

/// Makes a State writable behind tend's back.
fn unfreeze_behind(mode: BackendMode, path: &Path) {
    let st = if mode == BackendMode::Btrfs {
        Command::new("btrfs")
            .args(["property", "set", "-ts"])
            .arg(path)
            .args(["ro", "false"])
            .status()
    } else {
        Command::new("chattr").arg("-i").arg(path).status()
    };
    assert!(st.unwrap().success());
    assert!(writable(path));
}

async fn drift(mode: BackendMode, test: &str) {
    // No resync during the test: every repair below must come from an event or a cheap check.
    let Some(mut env) = Env::with_resync(test, mode, Duration::from_secs(600)).await else {
        return;
    };
    let src = env.source("src");
    env.create(
        Kind::State,
        "base",
        serde_json::json!({"source": {"directory": src}}),
    )
    .await;
    env.create(Kind::Sandbox, "dev", serde_json::json!({"state": "base"}))
        .await;
    let base = env.ready(Kind::State, "base").await;
    let dev = env.ready(Kind::Sandbox, "dev").await;
    std::fs::write(dev.join("scratch"), "lost soon").unwrap();

    // A Sandbox deleted behind tend's back comes back from its State, without the writes.
    remove_behind(mode, &dev);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dev.join("run.sh").exists() {
        assert!(Instant::now() < deadline, "sandbox not recreated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!dev.join("scratch").exists());
    env.event("Recreated").await;

    // A State made writable is made read-only again (found by the daemon's read-only check,
    // every second, as no inotify event reports it).
    unfreeze_behind(mode, &base);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(20);
    while writable(&base) {
        assert!(Instant::now() < deadline, "state not made read-only again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{test}: writable State made read-only again after {:?}",
        t0.elapsed()
    );
    env.event("DriftRepaired").await;

    // A State deleted behind tend's back is re-imported while its source exists...
    remove_behind(mode, &base);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !base.join("run.sh").exists() || writable(&base) {
        assert!(Instant::now() < deadline, "state not re-imported");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_content(&base);
    // ... and reports SourceLost when the source is gone too.
    std::fs::remove_dir_all(&src).unwrap();
    remove_behind(mode, &base);
    env.until(Kind::State, "base", "SourceLost", |o| {
        reason(o) == "SourceLost"
    })
    .await;

    // A tree no object owns is removed after the grace period (1 s here).
    let stray = base
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("sandboxes/0123abcd-stray");
    if mode == BackendMode::Btrfs {
        assert!(Command::new("btrfs")
            .args(["subvolume", "create"])
            .arg(&stray)
            .output()
            .unwrap()
            .status
            .success());
    } else {
        std::fs::create_dir(&stray).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while stray.exists() {
        assert!(Instant::now() < deadline, "stray tree not removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dev.exists(), "owned trees stay");

    env.delete(Kind::Sandbox, "dev", Propagation::Background)
        .await;
    env.delete(Kind::State, "base", Propagation::Background)
        .await;
    env.gone(Kind::State, "base").await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_btrfs() {
    drift(BackendMode::Btrfs, "drift_btrfs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_copy() {
    drift(BackendMode::Copy, "drift_copy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_waits_for_users_and_cascades() {
    let Some(mut env) = Env::new("deletion_waits_for_users_and_cascades", BackendMode::Btrfs).await
    else {
        return;
    };
    let src = env.source("src");
    env.create(
        Kind::State,
        "base",
        serde_json::json!({"source": {"directory": src}}),
    )
    .await;
    env.create(Kind::Sandbox, "a", serde_json::json!({"state": "base"}))
        .await;
    env.create(
        Kind::State,
        "derived",
        serde_json::json!({"source": {"state": "base"}}),
    )
    .await;
    env.create(Kind::Sandbox, "b", serde_json::json!({"state": "derived"}))
        .await;
    let base = env.ready(Kind::State, "base").await;
    let a = env.ready(Kind::Sandbox, "a").await;
    let derived = env.ready(Kind::State, "derived").await;
    let b = env.ready(Kind::Sandbox, "b").await;

    let out = Command::new(env!("CARGO_BIN_EXE_tend"))
        .arg("--state-dir")
        .arg(&env.state)
        .args(["delete", "state", "base", "--dry-run"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for line in [
        "state.tend.dev/base",
        "  sandbox.tend.dev/a",
        "  state.tend.dev/derived",
        "    sandbox.tend.dev/b",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "dry run lacks {line:?}:\n{text}"
        );
    }
    assert!(
        env.store
            .get(&ObjectKey::new(Kind::State, "default", "base"))
            .await
            .is_ok(),
        "dry run deleted nothing"
    );

    // In use: Terminating, InUse naming the users, tree kept.
    env.delete(Kind::State, "base", Propagation::Background)
        .await;
    let o = env
        .until(Kind::State, "base", "InUse", |o| reason(o) == "InUse")
        .await
        .unwrap();
    let msg = o.status["conditions"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("sandbox/default/a") && msg.contains("state/default/derived"),
        "{msg}"
    );
    assert_eq!(phase(Some(&o)), "Terminating");
    assert!(base.exists() && a.exists());
    env.delete(Kind::Sandbox, "a", Propagation::Background)
        .await;
    env.gone(Kind::Sandbox, "a").await;
    assert!(base.exists(), "still used by derived");

    // Foreground cascade takes the users along.
    env.delete(Kind::State, "derived", Propagation::Foreground)
        .await;
    env.gone(Kind::Sandbox, "b").await;
    env.gone(Kind::State, "derived").await;
    env.gone(Kind::State, "base").await;
    for p in [&base, &a, &derived, &b] {
        assert!(!p.exists(), "{} removed", p.display());
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sources_give_conditions_and_write_nothing() {
    let Some(mut env) = Env::new(
        "bad_sources_give_conditions_and_write_nothing",
        BackendMode::Copy,
    )
    .await
    else {
        return;
    };
    let file = env.work.join("plain");
    std::fs::write(&file, "not a dir").unwrap();
    let not_tar = env.work.join("junk.tar");
    std::fs::write(&not_tar, vec![0x5a; 4096]).unwrap();
    // A tarball whose entry climbs out with `../`.
    let evil = env.work.join("evil.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&evil).unwrap());
        let data = b"escaped";
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../escape.txt");
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
        b.finish().unwrap();
    }
    let inside = env.state.join("snapshots");
    let cases = [
        (
            "missing",
            serde_json::json!({"directory": env.work.join("nope")}),
            "SourceNotFound",
        ),
        ("file", serde_json::json!({"directory": file}), "BadSource"),
        (
            "junk",
            serde_json::json!({"tarball": not_tar}),
            "BadTarball",
        ),
        ("evil", serde_json::json!({"tarball": evil}), "BadTarball"),
        (
            "inside",
            serde_json::json!({"directory": inside}),
            "BadSource",
        ),
    ];
    for (name, source, _) in &cases {
        env.create(Kind::State, name, serde_json::json!({"source": source}))
            .await;
    }
    for (name, _, want) in &cases {
        let o = env
            .until(Kind::State, name, want, |o| reason(o) == *want)
            .await
            .unwrap();
        assert_eq!(phase(Some(&o)), "Failed", "{name}");
        let msg = o.status["conditions"][0]["message"].as_str().unwrap();
        assert!(!msg.is_empty(), "{name}: a message for people");
    }
    for dir in [
        env.state.join("snapshots"),
        env.state.clone(),
        env.work.clone(),
    ] {
        assert!(
            !dir.join("escape.txt").exists(),
            "nothing written at {}",
            dir.display()
        );
    }
    // Failed sources are retried with backoff, and a retry builds under a `.tmp-` name that it
    // removes when it fails again: while the States exist only complete trees are counted.
    let entries = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let states_dir = env.state.join("snapshots/states");
    let trees: Vec<_> = entries(&states_dir)
        .into_iter()
        .filter(|n| !n.starts_with(".tmp-"))
        .collect();
    assert!(
        trees.is_empty(),
        "no tree made from a bad source: {trees:?}"
    );
    for (name, _, _) in &cases {
        env.delete(Kind::State, name, Propagation::Background).await;
        env.gone(Kind::State, name).await;
    }
    // Once the States are gone no retry runs any more: nothing at all is left, temps included.
    assert_eq!(
        entries(&states_dir),
        Vec::<String>::new(),
        "no half-made trees"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_trees_and_removes_stale_temps() {
    let Some(mut env) = Env::new(
        "restart_keeps_trees_and_removes_stale_temps",
        BackendMode::Btrfs,
    )
    .await
    else {
        return;
    };
    let src = env.source("src");
    env.create(
        Kind::State,
        "base",
        serde_json::json!({"source": {"directory": src}}),
    )
    .await;
    env.create(Kind::Sandbox, "dev", serde_json::json!({"state": "base"}))
        .await;
    let base = env.ready(Kind::State, "base").await;
    let dev = env.ready(Kind::Sandbox, "dev").await;
    let before = env
        .store
        .get(&ObjectKey::new(Kind::State, "default", "base"))
        .await
        .unwrap();
    let inodes = (
        std::fs::metadata(base.join("run.sh")).unwrap().ino(),
        std::fs::metadata(&dev).unwrap().dev(),
    );
    env.stop().await;

    // A crash mid-import leaves a temp tree; the next start removes it before any reconcile.
    let stale = base.parent().unwrap().join(".tmp-0123abcd-deadbeef");
    assert!(Command::new("btrfs")
        .args(["subvolume", "create"])
        .arg(&stale)
        .output()
        .unwrap()
        .status
        .success());
    std::fs::write(stale.join("half"), "half").unwrap();
    env.start().await;
    assert!(!stale.exists(), "stale temp removed at start-up");
    // Wait for the restarted daemon to have reconciled the State and the Sandbox (the reconciles
    // that decided nothing needed doing), then check that nothing was done.
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.reconciles("states") < 1 || env.reconciles("sandboxes") < 1 {
        assert!(Instant::now() < deadline, "no reconcile after the restart");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = env
        .store
        .get(&ObjectKey::new(Kind::State, "default", "base"))
        .await
        .unwrap();
    assert_eq!(phase(Some(&after)), "Ready");
    assert_eq!(
        before.status, after.status,
        "status unchanged: nothing re-imported"
    );
    assert_eq!(
        inodes,
        (
            std::fs::metadata(base.join("run.sh")).unwrap().ino(),
            std::fs::metadata(&dev).unwrap().dev()
        )
    );
    let imported = env
        .event_reasons()
        .await
        .iter()
        .filter(|r| *r == "Imported")
        .count();
    assert_eq!(imported, 1, "imported once");
    env.delete(Kind::Sandbox, "dev", Propagation::Background)
        .await;
    env.delete(Kind::State, "base", Propagation::Background)
        .await;
    env.gone(Kind::State, "base").await;
    env.stop().await;
}
