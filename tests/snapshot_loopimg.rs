//! The embedded btrfs loop image (create, reuse, re-mount after unmount) and the snapshot
//! benchmark on both backends.

mod common;

use std::path::{Path, PathBuf};

use tend::bench::snapshots::bench_snapshots_sized;
use tend::snapshot::{loopimg, probe, BackendMode, SnapshotBackend};

/// Unmounts and detaches the image under `state` when dropped, so a failing test leaves
/// no mount or loop device behind.
struct LoopGuard(PathBuf);

impl Drop for LoopGuard {
    fn drop(&mut self) {
        if let Err(e) = loopimg::unmount_and_detach(&self.0) {
            eprintln!("cleanup of {}: {e}", self.0.display());
        }
    }
}

fn is_mounted(mnt: &Path) -> bool {
    let mnt = mnt.canonicalize().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(mnt.to_str().unwrap()))
}

fn loop_devices_for(image: &Path) -> String {
    let out = std::process::Command::new("losetup")
        .arg("-j")
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn loop_image_is_created_reused_and_remounted() {
    if !common::privileged("loop_image_is_created_reused_and_remounted") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix(&common::unique("tloop"))
        .tempdir()
        .unwrap();
    let state = dir.path().join("state");
    let _guard = LoopGuard(state.clone());
    let (image, mnt) = (loopimg::image_path(&state), loopimg::mount_point(&state));

    let m = loopimg::ensure(&state, 200 << 20).unwrap();
    assert_eq!(m.outcome, loopimg::Outcome::Created);
    assert_eq!(m.root, mnt);
    assert!(is_mounted(&mnt));
    let meta = std::fs::metadata(&image).unwrap();
    assert_eq!(meta.len(), 200 << 20);
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < meta.len(),
        "image is sparse"
    );
    let stat = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&mnt)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&stat.stdout).trim(), "btrfs");
    assert!(loop_devices_for(&image).contains(m.device.as_ref().unwrap().to_str().unwrap()));
    std::fs::write(mnt.join("kept"), b"across mounts").unwrap();

    let again = loopimg::ensure(&state, 200 << 20).unwrap();
    assert_eq!(again.outcome, loopimg::Outcome::Reused);
    assert_eq!(again.device, m.device);

    // As after a reboot: not mounted, no loop device, the image still there.
    loopimg::unmount_and_detach(&state).unwrap();
    assert!(!is_mounted(&mnt));
    assert_eq!(loop_devices_for(&image), "", "loop device detached");
    let back = loopimg::ensure(&state, 200 << 20).unwrap();
    assert_eq!(back.outcome, loopimg::Outcome::Remounted);
    assert_eq!(std::fs::read(mnt.join("kept")).unwrap(), b"across mounts");

    let (backend, why) = probe(&back.root, BackendMode::Auto).unwrap();
    assert_eq!(backend.name(), "btrfs", "{why}");

    loopimg::unmount_and_detach(&state).unwrap();
    loopimg::unmount_and_detach(&state).unwrap();
    assert!(!is_mounted(&mnt));
    assert_eq!(loop_devices_for(&image), "");
}

#[test]
fn auto_picks_copy_off_btrfs() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, why) = probe(dir.path(), BackendMode::Auto).unwrap();
    assert_eq!(backend.name(), "copy", "{why}");
    assert!(probe(dir.path(), BackendMode::Btrfs).is_err());
}

/// `TEND_BENCH_N` (default 20) writable snapshots of a `TEND_BENCH_MB` (default 10, to keep
/// the test short; `tend bench sandbox` uses 50) MB State.
#[tokio::test]
async fn bench_both_backends() {
    if !common::privileged("bench_both_backends") {
        return;
    }
    let n: usize = std::env::var("TEND_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mb: u64 = std::env::var("TEND_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::Builder::new()
        .prefix(&common::unique("tbench"))
        .tempdir()
        .unwrap();
    let state = dir.path().join("state");
    let _guard = LoopGuard(state.clone());
    let m = loopimg::ensure(&state, 1 << 30).unwrap();

    let (btrfs, _) = probe(&m.root.join("b"), BackendMode::Btrfs).unwrap();
    let fig = bench_snapshots_sized(&btrfs, n, mb * 1_000_000)
        .await
        .unwrap();
    println!("BENCH {fig}");
    assert_eq!(fig.snapshots, n);
    assert!(btrfs
        .list(tend::snapshot::TreeClass::Sandboxes)
        .await
        .unwrap()
        .is_empty());

    let (reflink, _) = probe(&m.root.join("c"), BackendMode::Copy).unwrap();
    let fig = bench_snapshots_sized(&reflink, n.min(3), mb * 1_000_000)
        .await
        .unwrap();
    println!("BENCH (copy on btrfs, reflink) {fig}");

    let (copy, _) = probe(&dir.path().join("copy"), BackendMode::Copy).unwrap();
    let fig = bench_snapshots_sized(&copy, n.min(3), mb * 1_000_000)
        .await
        .unwrap();
    println!("BENCH (copy on ext4, full copy) {fig}");
    assert!(copy
        .list(tend::snapshot::TreeClass::States)
        .await
        .unwrap()
        .is_empty());
}
