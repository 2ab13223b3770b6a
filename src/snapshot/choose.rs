//! Choosing the snapshot backend for a state dir (embedded btrfs image by default, copies as the
//! fallback) and releasing the image at shutdown.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::{loopimg, probe, AnySnapshotter, BackendMode, Error, Result};

/// How `tend serve` picks and runs the snapshot backend.
#[derive(Debug, Clone)]
pub struct SnapshotConfig {
    /// `auto` (btrfs where possible, embedded image if needed), `btrfs` (or fail), `copy`.
    pub mode: BackendMode,
    /// Size of the embedded btrfs image, when one is created.
    pub image_size: u64,
    /// Use this existing btrfs mount instead of an image (trees go in `tend-<instance>/`).
    pub btrfs_root: Option<PathBuf>,
    /// How long a tree no object owns is left alone before it is removed.
    pub orphan_grace: Duration,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            mode: BackendMode::Auto,
            image_size: loopimg::DEFAULT_IMAGE_SIZE,
            btrfs_root: None,
            orphan_grace: Duration::from_secs(30),
        }
    }
}

impl FromStr for BackendMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(BackendMode::Auto),
            "btrfs" => Ok(BackendMode::Btrfs),
            "copy" => Ok(BackendMode::Copy),
            _ => Err(format!("{s:?} is not one of auto, btrfs, copy")),
        }
    }
}

/// Chooses the backend for a state dir and says why. `auto` and `btrfs` use the state dir's
/// own btrfs, else the embedded loop image (created or mounted again); `auto` falls back to
/// copies when the image cannot be had.
///
/// # Errors
/// `btrfs` mode without a usable btrfs; I/O errors creating the roots.
pub fn choose(
    state_dir: &Path,
    instance: &str,
    cfg: &SnapshotConfig,
) -> Result<(AnySnapshotter, String)> {
    if let Some(root) = &cfg.btrfs_root {
        let (b, why) = probe(&root.join(format!("tend-{instance}")), BackendMode::Btrfs)?;
        return Ok((b, format!("{why} (--btrfs-root)")));
    }
    let copy_root = state_dir.join("snapshots");
    if cfg.mode == BackendMode::Copy {
        return probe(&copy_root, BackendMode::Copy);
    }
    match loopimg::ensure(state_dir, cfg.image_size) {
        Ok(m) if m.outcome == loopimg::Outcome::NativeBtrfs => probe(&copy_root, cfg.mode),
        Ok(m) => {
            let (b, _) = probe(&m.root, BackendMode::Btrfs)?;
            let dev = m
                .device
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            let why = format!(
                "btrfs: {} is not on btrfs; embedded image {} ({:?}, {dev}) mounted at {}",
                state_dir.display(),
                loopimg::image_path(state_dir).display(),
                m.outcome,
                m.root.display()
            );
            Ok((b, why))
        }
        Err(e) if cfg.mode == BackendMode::Auto => {
            let (b, _) = probe(&copy_root, BackendMode::Copy)?;
            Ok((
                b,
                format!("copy: no btrfs for {} ({e})", state_dir.display()),
            ))
        }
        Err(e) => Err(Error::Unavailable {
            backend: "btrfs",
            root: state_dir.into(),
            reason: e.to_string(),
        }),
    }
}

/// At a clean shutdown: unmounts the embedded image (and frees its loop device) unless it is
/// in use — a workload with its root inside keeps it mounted (`EBUSY`), and the next start
/// reuses it either way. Nothing happens where no image is used.
pub fn release(state_dir: &Path) {
    if !loopimg::image_path(state_dir).exists() {
        return;
    }
    match loopimg::unmount_and_detach(state_dir) {
        Ok(()) => tracing::info!("snapshot image unmounted"),
        Err(e) => tracing::info!(error = %e, "snapshot image left mounted (in use)"),
    }
}
