//! States and Sandboxes through a real in-process daemon: each test has its own state dir and
//! so its own embedded btrfs loop image (512 MiB), or the copy backend on the host's ext4.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tend::daemon::{instance_id, Daemon, DaemonConfig};
use tend::snapshot::loopimg;
use tend::snapshot::register::SnapshotConfig;
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
    store: Arc<SqliteStore>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    work: PathBuf,
    state: PathBuf,
    _guard: Guard,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn new(test: &str, mode: BackendMode) -> Option<Env> {
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
            store,
            stop: None,
            task: None,
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
            state_dir: self.state.clone(),
            instance: instance_id(&self.state).unwrap(),
            exe: PathBuf::from(env!("CARGO_BIN_EXE_tend")),
            controller: ControllerConfig {
                concurrency: 8,
                resync: Duration::from_secs(1),
            },
            snapshot: SnapshotConfig {
                mode: self.mode,
                image_size: 512 << 20,
                btrfs_root: None,
                orphan_grace: Duration::from_secs(1),
            },
        };
        let d = Daemon::build(self.store.clone(), &cfg).await.unwrap();
        let mut ready = d.runtime.ready();
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
