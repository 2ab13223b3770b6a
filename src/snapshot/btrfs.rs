//! The btrfs backend: every tree is a subvolume, snapshots are one ioctl through libbtrfsutil.
//!
//! Read-only is the subvolume's own `BTRFS_SUBVOL_RDONLY` flag, which the kernel enforces for
//! everyone (writes fail with EROFS). No `btrfs` subprocess is ever spawned.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use btrfsutil::subvolume::{DeleteFlags, SnapshotFlags, Subvolume};

use super::error::{Error, Result};
use super::fsops;
use super::{
    ensure_absent, exchange_into_place, layers, make_class_dirs, scan_class, sys, temp_path,
    SnapshotBackend, Tree, TreeClass, TreeInfo,
};
use crate::util::blocking;

/// Subvolume backend rooted at a directory on a btrfs filesystem.
#[derive(Clone, Debug)]
pub struct BtrfsBackend {
    root: PathBuf,
}

/// Maps a libbtrfsutil result, keeping the errno it left behind.
fn bt<T>(op: &'static str, path: &Path, r: btrfsutil::Result<T>) -> Result<T> {
    r.map_err(|source| Error::Btrfs {
        op,
        path: path.into(),
        source,
        errno: std::io::Error::last_os_error(),
    })
}

fn subvol(path: &Path) -> Result<Subvolume> {
    if !path.exists() {
        return Err(Error::NotFound { path: path.into() });
    }
    bt("open subvolume", path, Subvolume::get(path))
}

/// Deletes the subvolume (with any nested ones) or plain directory at `path`; Ok(false) if absent.
pub(super) fn delete_path(path: &Path) -> Result<bool> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(false);
    }
    if Subvolume::is_subvolume(path).is_ok() {
        let sv = subvol(path)?;
        bt("delete subvolume", path, sv.delete(DeleteFlags::RECURSIVE))?;
        Ok(true)
    } else {
        fsops::remove_tree(path)
    }
}

impl BtrfsBackend {
    /// A backend at `root`, which must be on btrfs; creates the class directories.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when `root` is not on btrfs.
    pub fn new(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(Error::io("mkdir", root))?;
        if !sys::is_btrfs(root).map_err(Error::sys("statfs", root))? {
            return Err(Error::Unavailable {
                backend: "btrfs",
                root: root.into(),
                reason: "not a btrfs filesystem (statfs f_type)".into(),
            });
        }
        make_class_dirs(root)?;
        Ok(BtrfsBackend {
            root: root.to_path_buf(),
        })
    }

    /// Creates a subvolume under a temp name, fills it, makes it read-only, renames it in place.
    async fn import<F>(&self, tree: &Tree, fill: F) -> Result<TreeInfo>
    where
        F: FnOnce(&Path) -> Result<()> + Send + 'static,
    {
        let (this, tree) = (self.clone(), tree.clone());
        blocking(move || {
            let dst = this.path(&tree);
            ensure_absent(&dst)?;
            let tmp = temp_path(&this.root, &tree);
            bt("create subvolume", &tmp, Subvolume::create(tmp.as_path(), None))?;
            let result = fill(&tmp)
                .and_then(|()| bt("set read-only", &tmp, subvol(&tmp)?.set_ro(true)))
                .and_then(|()| std::fs::rename(&tmp, &dst).map_err(Error::io("rename", &dst)));
            if let Err(e) = result {
                if let Err(cleanup) = delete_path(&tmp) {
                    tracing::warn!(path = %tmp.display(), error = %cleanup, "temp subvolume left behind");
                }
                return Err(e);
            }
            this.info_blocking(&tree)?.ok_or(Error::NotFound { path: dst })
        })
        .await
    }

    /// Fills the new subvolume `tmp` with `layers`: it starts as a snapshot of the longest
    /// stored chain that is a prefix of `layers` (or empty), and every layer applied on top is
    /// stored as a read-only chain subvolume for the next image that shares it.
    fn build_from_chains(&self, tmp: &Path, layers: &[PathBuf]) -> Result<()> {
        let chains = layers::chain_ids(layers)?;
        let dir = layers::dir(&self.root);
        std::fs::create_dir_all(&dir).map_err(Error::io("mkdir", &dir))?;
        let have = (0..chains.len())
            .rev()
            .find(|&i| dir.join(&chains[i]).exists())
            .map_or(0, |i| i + 1);
        if have == 0 {
            bt("create subvolume", tmp, Subvolume::create(tmp, None))?;
        } else {
            let base = dir.join(&chains[have - 1]);
            bt(
                "snapshot",
                tmp,
                subvol(&base)?.snapshot(tmp, SnapshotFlags::empty(), None),
            )?;
        }
        for i in have..layers.len() {
            super::apply_layers(&layers[i..=i], tmp)?;
            let chain = dir.join(&chains[i]);
            if chain.exists() {
                continue;
            }
            let part = dir.join(format!(".tmp-{}-{:08x}", chains[i], rand::random::<u32>()));
            bt(
                "snapshot",
                &part,
                subvol(tmp)?.snapshot(part.as_path(), SnapshotFlags::READ_ONLY, None),
            )?;
            if let Err(e) = std::fs::rename(&part, &chain) {
                let _ = delete_path(&part);
                if !chain.exists() {
                    return Err(Error::io("rename", &chain)(e));
                }
            }
        }
        Ok(())
    }

    fn info_blocking(&self, tree: &Tree) -> Result<Option<TreeInfo>> {
        let path = self.path(tree);
        if !path.exists() {
            return Ok(None);
        }
        let read_only = bt("get read-only", &path, subvol(&path)?.is_ro())?;
        Ok(Some(TreeInfo {
            read_only,
            size_bytes: fsops::tree_size(&path)?,
            path,
        }))
    }
}

#[async_trait]
impl SnapshotBackend for BtrfsBackend {
    fn name(&self) -> &'static str {
        "btrfs"
    }

    fn root(&self) -> &Path {
        &self.root
    }

    async fn import_dir(&self, tree: &Tree, src: &Path) -> Result<TreeInfo> {
        let src = fsops::check_source(src, &self.root, true)?;
        self.import(tree, move |tmp| fsops::copy_tree(&src, tmp))
            .await
    }

    async fn import_tarball(&self, tree: &Tree, src: &Path) -> Result<TreeInfo> {
        let src = fsops::check_source(src, &self.root, false)?;
        self.import(tree, move |tmp| super::tarball::extract(&src, tmp))
            .await
    }

    async fn import_layers(&self, tree: &Tree, layers: Vec<PathBuf>) -> Result<TreeInfo> {
        let (this, tree) = (self.clone(), tree.clone());
        blocking(move || {
            let dst = this.path(&tree);
            ensure_absent(&dst)?;
            let tmp = temp_path(&this.root, &tree);
            let result = this
                .build_from_chains(&tmp, &layers)
                .and_then(|()| bt("set read-only", &tmp, subvol(&tmp)?.set_ro(true)))
                .and_then(|()| std::fs::rename(&tmp, &dst).map_err(Error::io("rename", &dst)));
            if let Err(e) = result {
                if let Err(cleanup) = delete_path(&tmp) {
                    tracing::warn!(path = %tmp.display(), error = %cleanup, "temp subvolume left behind");
                }
                return Err(e);
            }
            this.info_blocking(&tree)?.ok_or(Error::NotFound { path: dst })
        })
        .await
    }

    async fn snapshot(&self, src: &Tree, dst: &Tree, read_only: bool) -> Result<TreeInfo> {
        let (from, to) = (self.path(src), self.path(dst));
        let path = to.clone();
        blocking(move || {
            ensure_absent(&to)?;
            let flags = if read_only {
                SnapshotFlags::READ_ONLY
            } else {
                SnapshotFlags::empty()
            };
            bt(
                "snapshot",
                &to,
                subvol(&from)?.snapshot(to.as_path(), flags, None),
            )?;
            Ok(())
        })
        .await?;
        // The size is the source's; skip the walk on the hot path (a snapshot shares all extents).
        Ok(TreeInfo {
            path,
            read_only,
            size_bytes: 0,
        })
    }

    async fn restore(&self, src: &Tree, dst: &Tree) -> Result<TreeInfo> {
        let (from, to) = (self.path(src), self.path(dst));
        let tmp = temp_path(&self.root, dst);
        let path = to.clone();
        blocking(move || {
            bt(
                "snapshot",
                &tmp,
                subvol(&from)?.snapshot(tmp.as_path(), SnapshotFlags::empty(), None),
            )?;
            match exchange_into_place(&tmp, &to) {
                Ok(true) => {
                    delete_path(&tmp)?;
                }
                Ok(false) => {}
                Err(e) => {
                    let _ = delete_path(&tmp);
                    return Err(e);
                }
            }
            Ok(())
        })
        .await?;
        Ok(TreeInfo {
            path,
            read_only: false,
            size_bytes: 0,
        })
    }

    async fn delete(&self, tree: &Tree) -> Result<bool> {
        let path = self.path(tree);
        blocking(move || delete_path(&path)).await
    }

    async fn set_read_only(&self, tree: &Tree, read_only: bool) -> Result<()> {
        let path = self.path(tree);
        blocking(move || bt("set read-only", &path, subvol(&path)?.set_ro(read_only))).await
    }

    async fn is_read_only(&self, tree: &Tree) -> Result<bool> {
        let path = self.path(tree);
        blocking(move || bt("get read-only", &path, subvol(&path)?.is_ro())).await
    }

    async fn inspect(&self, tree: &Tree) -> Result<Option<TreeInfo>> {
        let (this, tree) = (self.clone(), tree.clone());
        blocking(move || this.info_blocking(&tree)).await
    }

    async fn list(&self, class: TreeClass) -> Result<Vec<String>> {
        let root = self.root.clone();
        blocking(move || Ok(scan_class(&root, class)?.0)).await
    }

    async fn remove_stale_temps(&self, class: TreeClass) -> Result<Vec<PathBuf>> {
        let root = self.root.clone();
        blocking(move || {
            let mut temps = scan_class(&root, class)?.1;
            if class == TreeClass::States {
                temps.extend(layers::stale_temps(&root)?);
            }
            for t in &temps {
                delete_path(t)?;
            }
            Ok(temps)
        })
        .await
    }
}
