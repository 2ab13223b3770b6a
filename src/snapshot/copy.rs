//! The copy backend: trees are plain directories, snapshots are reflinked or full copies.
//!
//! Read-only is enforced with `FS_IMMUTABLE_FL` (chattr +i) on every directory and regular file
//! of the tree, which the kernel honours even for root (writes fail with EPERM). A marker file
//! `<class>/.ro-<id>` beside the tree records the intent as well; on a filesystem without inode
//! flags (e.g. older tmpfs) the marker is all there is, and read-only is advisory there.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::error::{Error, Result};
use super::fsops::{self, Enforcement};
use super::{
    ensure_absent, exchange_into_place, make_class_dirs, scan_class, temp_path, SnapshotBackend,
    Tree, TreeClass, TreeInfo,
};
use crate::util::blocking;

/// Plain-directory backend rooted at a directory on any filesystem.
#[derive(Clone, Debug)]
pub struct CopyBackend {
    root: PathBuf,
}

impl CopyBackend {
    /// A backend at `root`; creates the class directories.
    pub fn new(root: &Path) -> Result<Self> {
        make_class_dirs(root)?;
        Ok(CopyBackend {
            root: root.to_path_buf(),
        })
    }

    fn marker(&self, tree: &Tree) -> PathBuf {
        self.root
            .join(tree.class().dir_name())
            .join(format!(".ro-{}", tree.id()))
    }

    /// Builds a tree under a temp name with `fill`, freezes it if asked, renames it into place.
    async fn build<F>(
        &self,
        tree: &Tree,
        read_only: bool,
        measure: bool,
        fill: F,
    ) -> Result<TreeInfo>
    where
        F: FnOnce(&Path) -> Result<()> + Send + 'static,
    {
        let (this, tree) = (self.clone(), tree.clone());
        blocking(move || {
            let dst = this.path(&tree);
            ensure_absent(&dst)?;
            let tmp = temp_path(&this.root, &tree);
            std::fs::create_dir(&tmp).map_err(Error::io("mkdir", &tmp))?;
            let result = fill(&tmp).and_then(|()| {
                if read_only {
                    // Everything but the top directory now: an immutable directory cannot be
                    // renamed. The top follows right after the rename.
                    fsops::set_immutable_tree(&tmp, true, true)?;
                }
                std::fs::rename(&tmp, &dst).map_err(Error::io("rename", &dst))
            });
            if let Err(e) = result {
                let _ = fsops::remove_tree(&tmp);
                return Err(e);
            }
            if read_only {
                this.freeze_blocking(&tree, true)?;
            }
            if measure {
                return this
                    .info_blocking(&tree)?
                    .ok_or(Error::NotFound { path: dst });
            }
            Ok(TreeInfo {
                path: dst,
                read_only,
                size_bytes: 0,
            })
        })
        .await
    }

    fn freeze_blocking(&self, tree: &Tree, on: bool) -> Result<()> {
        let path = self.path(tree);
        if !path.is_dir() {
            return Err(Error::NotFound { path });
        }
        let marker = self.marker(tree);
        if on {
            std::fs::write(&marker, b"").map_err(Error::io("write", &marker))?;
            if fsops::set_immutable_tree(&path, true, false)? == Enforcement::Unsupported {
                tracing::warn!(path = %path.display(),
                    "filesystem has no immutable flag; read-only is recorded but not enforced");
            }
        } else {
            fsops::set_immutable_tree(&path, false, false)?;
            match std::fs::remove_file(&marker) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::Io {
                        op: "unlink",
                        path: marker,
                        source: e,
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Read-only = the top directory is immutable, or (no inode flags here) the marker exists.
    fn read_only_blocking(&self, tree: &Tree) -> Result<bool> {
        match fsops::immutable(&self.path(tree))? {
            Some(flag) => Ok(flag),
            None => Ok(self.marker(tree).exists()),
        }
    }

    fn info_blocking(&self, tree: &Tree) -> Result<Option<TreeInfo>> {
        let path = self.path(tree);
        if !path.is_dir() {
            return Ok(None);
        }
        Ok(Some(TreeInfo {
            read_only: self.read_only_blocking(tree)?,
            size_bytes: fsops::tree_size(&path)?,
            path,
        }))
    }
}

#[async_trait]
impl SnapshotBackend for CopyBackend {
    fn name(&self) -> &'static str {
        "copy"
    }

    fn root(&self) -> &Path {
        &self.root
    }

    async fn import_dir(&self, tree: &Tree, src: &Path) -> Result<TreeInfo> {
        let src = fsops::check_source(src, &self.root, true)?;
        self.build(tree, true, true, move |tmp| fsops::copy_tree(&src, tmp))
            .await
    }

    async fn import_tarball(&self, tree: &Tree, src: &Path) -> Result<TreeInfo> {
        let src = fsops::check_source(src, &self.root, false)?;
        self.build(tree, true, true, move |tmp| {
            super::tarball::extract(&src, tmp)
        })
        .await
    }

    async fn import_layers(&self, tree: &Tree, layers: Vec<PathBuf>) -> Result<TreeInfo> {
        self.build(tree, true, true, move |tmp| {
            super::apply_layers(&layers, tmp)
        })
        .await
    }

    async fn snapshot(&self, src: &Tree, dst: &Tree, read_only: bool) -> Result<TreeInfo> {
        let from = self.path(src);
        if !from.is_dir() {
            return Err(Error::NotFound { path: from });
        }
        self.build(dst, read_only, false, move |tmp| {
            fsops::copy_tree(&from, tmp)
        })
        .await
    }

    async fn restore(&self, src: &Tree, dst: &Tree) -> Result<TreeInfo> {
        let (from, to) = (self.path(src), self.path(dst));
        if !from.is_dir() {
            return Err(Error::NotFound { path: from });
        }
        let tmp = temp_path(&self.root, dst);
        let path = to.clone();
        blocking(move || {
            std::fs::create_dir(&tmp).map_err(Error::io("mkdir", &tmp))?;
            // The copy of a read-only (immutable) tree is writable: copy_tree carries no flags.
            let placed =
                fsops::copy_tree(&from, &tmp).and_then(|()| exchange_into_place(&tmp, &to));
            match placed {
                Ok(true) => {
                    fsops::remove_tree(&tmp)?;
                }
                Ok(false) => {}
                Err(e) => {
                    let _ = fsops::remove_tree(&tmp);
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
        let (path, marker) = (self.path(tree), self.marker(tree));
        blocking(move || {
            let removed = fsops::remove_tree(&path)?;
            let _ = std::fs::remove_file(&marker);
            Ok(removed)
        })
        .await
    }

    async fn set_read_only(&self, tree: &Tree, read_only: bool) -> Result<()> {
        let (this, tree) = (self.clone(), tree.clone());
        blocking(move || this.freeze_blocking(&tree, read_only)).await
    }

    async fn is_read_only(&self, tree: &Tree) -> Result<bool> {
        let (this, tree) = (self.clone(), tree.clone());
        blocking(move || {
            if !this.path(&tree).is_dir() {
                return Err(Error::NotFound {
                    path: this.path(&tree),
                });
            }
            this.read_only_blocking(&tree)
        })
        .await
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
            let temps = scan_class(&root, class)?.1;
            for t in &temps {
                fsops::remove_tree(t)?;
            }
            Ok(temps)
        })
        .await
    }
}
