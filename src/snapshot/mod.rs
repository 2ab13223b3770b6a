//! Snapshot backends for States and Sandboxes: btrfs subvolumes or plain copies, behind one trait.
//!
//! A backend owns a root directory with one directory per [`TreeClass`] (`states/`,
//! `sandboxes/`); a tree lives at `<root>/<class>/<id>` where `id` is an opaque, validated
//! string (tend passes object uids), never a user-supplied path. Imports and copies are built
//! under a temp name `.tmp-<id>-<rand>` in the same class directory and renamed into place
//! only when complete, so a half-made tree never appears under its real name; [`list`]
//! ignores temp names and [`remove_stale_temps`] sweeps them at start-up.
//!
//! [`list`]: SnapshotBackend::list
//! [`remove_stale_temps`]: SnapshotBackend::remove_stale_temps

pub mod adapter;
mod btrfs;
pub mod choose;
mod copy;
mod error;
mod fsops;
pub mod layers;
pub mod loopimg;
mod sys;
mod tarball;
pub mod watch;

use std::path::{Path, PathBuf};

use async_trait::async_trait;

pub use btrfs::BtrfsBackend;
pub use copy::CopyBackend;
pub use error::{Error, Result};

/// Clears the immutable flag on every file and directory under `dir`, so a scratch dir holding
/// copy-backend States can be removed. Errors are ignored: removal reports what remains.
pub fn clear_immutable_tree(dir: &Path) {
    let _ = fsops::set_immutable_tree(dir, false, false);
}

/// Which family of trees an id belongs to (each class has its own directory under the root),
/// and what a backend observes about one tree: the controllers' own types.
pub use tend_controllers::snapshot::{TreeClass, TreeInfo};

/// A tree handle: its class and a validated id (`[a-z0-9-]`, 1..=128 chars, no leading `-`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tree {
    class: TreeClass,
    id: String,
}

impl Tree {
    /// Validates `id` and builds the handle.
    ///
    /// # Errors
    /// [`Error::InvalidId`] for an empty, over-long or non `[a-z0-9-]` id.
    pub fn new(class: TreeClass, id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        validate_id(&id)?;
        Ok(Tree { class, id })
    }

    /// A State tree.
    pub fn state(id: impl Into<String>) -> Result<Self> {
        Tree::new(TreeClass::States, id)
    }

    /// A Sandbox tree.
    pub fn sandbox(id: impl Into<String>) -> Result<Self> {
        Tree::new(TreeClass::Sandboxes, id)
    }

    /// The tree's class.
    pub fn class(&self) -> TreeClass {
        self.class
    }

    /// The tree's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Checks that `id` is safe as one path component: `[a-z0-9-]{1,128}`, not starting with `-`.
pub fn validate_id(id: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() || id.len() > 128 {
        return bad("must be 1 to 128 characters");
    }
    if id.starts_with('-') {
        return bad("must not start with '-'");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("only lowercase letters, digits and '-' are allowed");
    }
    Ok(())
}

/// Which backend `probe` should use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendMode {
    /// btrfs where the root is on btrfs, else copy.
    #[default]
    Auto,
    /// btrfs or an error.
    Btrfs,
    /// Plain copies, even on btrfs.
    Copy,
}

/// One snapshot backend. All operations are idempotent where the doc says so and never touch
/// paths outside the backend's root.
#[async_trait]
pub trait SnapshotBackend: Send + Sync {
    /// `"btrfs"` or `"copy"`, as written to `status.backend`.
    fn name(&self) -> &'static str;

    /// The backend root.
    fn root(&self) -> &Path;

    /// Where `tree` lives (whether or not it exists).
    fn path(&self, tree: &Tree) -> PathBuf {
        self.root().join(tree.class().dir_name()).join(tree.id())
    }

    /// Imports a host directory as a new read-only tree.
    ///
    /// # Guarantees
    /// Atomic: the tree appears under its name complete and read-only, or not at all.
    /// # Errors
    /// [`Error::BadSource`] (missing, not a directory, inside/containing the root),
    /// [`Error::Exists`] when the tree already exists.
    async fn import_dir(&self, tree: &Tree, src: &Path) -> Result<TreeInfo>;

    /// Imports a `.tar` or `.tar.gz` (detected by content) as a new read-only tree.
    ///
    /// # Errors
    /// As [`import_dir`](Self::import_dir), plus [`Error::BadTarball`] for a file that is not a
    /// tarball or holds unsafe entries; nothing is left behind.
    async fn import_tarball(&self, tree: &Tree, src: &Path) -> Result<TreeInfo>;

    /// Applies image layer blobs (bottom first, OCI whiteouts) as a new read-only tree.
    ///
    /// # Guarantees
    /// Atomic like [`import_dir`](Self::import_dir); nothing is written outside the tree
    /// (see [`layers`]).
    /// # Errors
    /// [`Error::BadLayer`] for a layer that is not a tar or holds unsafe entries.
    async fn import_layers(&self, tree: &Tree, layers: Vec<PathBuf>) -> Result<TreeInfo>;

    /// Snapshots `src` into a new tree `dst`, read-only or writable. Atomic like imports.
    /// The returned `size_bytes` is 0 (a snapshot is the hot path; [`inspect`](Self::inspect)
    /// walks the tree when the size is wanted).
    ///
    /// # Errors
    /// [`Error::NotFound`] when `src` is missing, [`Error::Exists`] when `dst` exists.
    async fn snapshot(&self, src: &Tree, dst: &Tree, read_only: bool) -> Result<TreeInfo>;

    /// Replaces the content of the writable tree `dst` with a writable copy of `src`.
    ///
    /// # Guarantees
    /// Atomic: the copy is built under a temp name and exchanged with `dst` in one
    /// `renameat2(RENAME_EXCHANGE)`; `dst` shows its old content or all of `src`'s, never a mix.
    /// The old content is then deleted; if the process dies first it stays under a temp name
    /// that [`remove_stale_temps`](Self::remove_stale_temps) clears.
    ///
    /// # Errors
    /// [`Error::NotFound`] when `src` is missing.
    async fn restore(&self, src: &Tree, dst: &Tree) -> Result<TreeInfo>;

    /// Deletes a tree; Ok(false) when it was already gone (idempotent).
    async fn delete(&self, tree: &Tree) -> Result<bool>;

    /// Sets or clears the read-only flag of an existing tree.
    async fn set_read_only(&self, tree: &Tree, read_only: bool) -> Result<()>;

    /// Whether an existing tree is read-only.
    async fn is_read_only(&self, tree: &Tree) -> Result<bool>;

    /// Path, read-only flag and size of a tree, or None when it does not exist. Walks the tree.
    async fn inspect(&self, tree: &Tree) -> Result<Option<TreeInfo>>;

    /// Ids of the complete trees of a class (temp names and stray names are skipped).
    async fn list(&self, class: TreeClass) -> Result<Vec<String>>;

    /// Removes leftover `.tmp-*` trees of a class (call at start-up, before any import runs).
    /// Returns the paths removed.
    async fn remove_stale_temps(&self, class: TreeClass) -> Result<Vec<PathBuf>>;
}

/// The backend chosen at start-up.
pub enum AnySnapshotter {
    /// btrfs subvolumes.
    Btrfs(BtrfsBackend),
    /// Plain directories.
    Copy(CopyBackend),
}

macro_rules! dispatch {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            AnySnapshotter::Btrfs($b) => $e,
            AnySnapshotter::Copy($b) => $e,
        }
    };
}

#[async_trait]
impl SnapshotBackend for AnySnapshotter {
    fn name(&self) -> &'static str {
        dispatch!(self, b => b.name())
    }
    fn root(&self) -> &Path {
        dispatch!(self, b => b.root())
    }
    async fn import_dir(&self, tree: &Tree, src: &Path) -> Result<TreeInfo> {
        dispatch!(self, b => b.import_dir(tree, src).await)
    }
    async fn import_tarball(&self, tree: &Tree, src: &Path) -> Result<TreeInfo> {
        dispatch!(self, b => b.import_tarball(tree, src).await)
    }
    async fn import_layers(&self, tree: &Tree, layers: Vec<PathBuf>) -> Result<TreeInfo> {
        dispatch!(self, b => b.import_layers(tree, layers).await)
    }
    async fn snapshot(&self, src: &Tree, dst: &Tree, read_only: bool) -> Result<TreeInfo> {
        dispatch!(self, b => b.snapshot(src, dst, read_only).await)
    }
    async fn restore(&self, src: &Tree, dst: &Tree) -> Result<TreeInfo> {
        dispatch!(self, b => b.restore(src, dst).await)
    }
    async fn delete(&self, tree: &Tree) -> Result<bool> {
        dispatch!(self, b => b.delete(tree).await)
    }
    async fn set_read_only(&self, tree: &Tree, read_only: bool) -> Result<()> {
        dispatch!(self, b => b.set_read_only(tree, read_only).await)
    }
    async fn is_read_only(&self, tree: &Tree) -> Result<bool> {
        dispatch!(self, b => b.is_read_only(tree).await)
    }
    async fn inspect(&self, tree: &Tree) -> Result<Option<TreeInfo>> {
        dispatch!(self, b => b.inspect(tree).await)
    }
    async fn list(&self, class: TreeClass) -> Result<Vec<String>> {
        dispatch!(self, b => b.list(class).await)
    }
    async fn remove_stale_temps(&self, class: TreeClass) -> Result<Vec<PathBuf>> {
        dispatch!(self, b => b.remove_stale_temps(class).await)
    }
}

impl AnySnapshotter {
    /// The stored layer chains (`<root>/layers/<chain id>`, btrfs only; half-made ones
    /// skipped). Blocking.
    pub fn chains(&self) -> Result<Vec<String>> {
        let d = layers::dir(self.root());
        let Ok(rd) = std::fs::read_dir(&d) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in rd {
            let name = e.map_err(Error::io("readdir", &d))?.file_name();
            let name = name.to_string_lossy();
            if !name.starts_with('.') && validate_id(&name).is_ok() {
                out.push(name.into_owned());
            }
        }
        Ok(out)
    }

    /// The apparent size of the files of chain `id` (walks it; a chain never changes, so
    /// callers may keep the answer). Blocking.
    pub fn chain_size(&self, id: &str) -> Result<u64> {
        fsops::tree_size(&self.chain_path(id))
    }

    /// Where the chain `id` lives.
    pub fn chain_path(&self, id: &str) -> PathBuf {
        layers::dir(self.root()).join(id)
    }

    /// Deletes the layer chain `id` (a read-only subvolume); Ok(false) when it was not there.
    /// Trees snapshotted from it keep their content (btrfs shares extents, not subvolumes).
    /// Blocking.
    pub fn delete_chain(&self, id: &str) -> Result<bool> {
        validate_id(id)?;
        match self {
            AnySnapshotter::Btrfs(_) => btrfs::delete_path(&self.chain_path(id)),
            AnySnapshotter::Copy(_) => Ok(false),
        }
    }
}

/// Chooses the backend for `root` once at start-up and says why. Creates `root` and its class
/// directories. Pair with [`loopimg::ensure`] to get a btrfs root where the state dir is not
/// on btrfs.
///
/// # Errors
/// [`Error::Unavailable`] when `Btrfs` is forced and `root` is not on btrfs; I/O errors.
pub fn probe(root: &Path, mode: BackendMode) -> Result<(AnySnapshotter, String)> {
    std::fs::create_dir_all(root).map_err(Error::io("mkdir", root))?;
    let on_btrfs = sys::is_btrfs(root).map_err(Error::sys("statfs", root))?;
    let (backend, why) = match (mode, on_btrfs) {
        (BackendMode::Copy, _) => (
            AnySnapshotter::Copy(CopyBackend::new(root)?),
            format!("copy: forced by configuration (root {})", root.display()),
        ),
        (_, true) => (
            AnySnapshotter::Btrfs(BtrfsBackend::new(root)?),
            format!("btrfs: {} is on a btrfs filesystem", root.display()),
        ),
        (BackendMode::Btrfs, false) => {
            return Err(Error::Unavailable {
                backend: "btrfs",
                root: root.into(),
                reason: "not a btrfs filesystem (statfs f_type)".into(),
            })
        }
        (BackendMode::Auto, false) => (
            AnySnapshotter::Copy(CopyBackend::new(root)?),
            format!("copy: {} is not on btrfs", root.display()),
        ),
    };
    Ok((backend, why))
}

/// Applies layer blobs onto the temp tree `tmp` (the backends' import closure).
fn apply_layers(layers: &[PathBuf], tmp: &Path) -> Result<()> {
    layers::apply_layers(layers, tmp).map_err(|e| match e {
        layers::UnpackError::BadLayer { layer, reason } => Error::BadLayer {
            path: layer,
            reason,
        },
        layers::UnpackError::Io { op, path, source } => Error::Io { op, path, source },
    })
}

/// Creates the class directories under `root`.
fn make_class_dirs(root: &Path) -> Result<()> {
    for class in TreeClass::ALL {
        let dir = root.join(class.dir_name());
        std::fs::create_dir_all(&dir).map_err(Error::io("mkdir", &dir))?;
    }
    Ok(())
}

/// A fresh temp path for building `tree`: `<root>/<class>/.tmp-<id>-<rand>`.
fn temp_path(root: &Path, tree: &Tree) -> PathBuf {
    let tag: u32 = rand::random();
    root.join(tree.class().dir_name())
        .join(format!(".tmp-{}-{tag:08x}", tree.id()))
}

/// Puts the finished temp tree `tmp` in place of `dst`: one atomic exchange when `dst` exists
/// (returns true: the old content is now at `tmp`), else a rename (returns false).
fn exchange_into_place(tmp: &Path, dst: &Path) -> Result<bool> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    if std::fs::symlink_metadata(dst).is_err() {
        std::fs::rename(tmp, dst).map_err(Error::io("rename", dst))?;
        return Ok(false);
    }
    crate::failpoint::check("snapshot.restore.exchange").map_err(|fp| Error::Io {
        op: "renameat2",
        path: dst.into(),
        source: std::io::Error::other(fp.to_string()),
    })?;
    renameat2(AT_FDCWD, tmp, AT_FDCWD, dst, RenameFlags::RENAME_EXCHANGE)
        .map_err(Error::sys("renameat2(RENAME_EXCHANGE)", dst))?;
    Ok(true)
}

/// Ids of complete trees in a class directory, and the temp entries beside them.
fn scan_class(root: &Path, class: TreeClass) -> Result<(Vec<String>, Vec<PathBuf>)> {
    let dir = root.join(class.dir_name());
    let (mut ids, mut temps) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(&dir).map_err(Error::io("readdir", &dir))? {
        let entry = entry.map_err(Error::io("readdir", &dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".tmp-") {
            temps.push(entry.path());
        } else if validate_id(&name).is_ok() {
            ids.push(name);
        }
    }
    ids.sort();
    Ok((ids, temps))
}

/// Fails with [`Error::Exists`] when something is already at `path`.
fn ensure_absent(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Err(Error::Exists { path: path.into() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io {
            op: "lstat",
            path: path.into(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(Tree::state("0b7c9a2e-1f3d-4e5a-9c8b-7a6d5e4f3c2b").is_ok());
        for bad in ["", "..", "a/b", "A", "-x", "a.b", "a b", &"x".repeat(129)] {
            assert!(Tree::sandbox(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn paths_come_from_class_and_id() {
        let dir = tempfile::tempdir().unwrap();
        let (b, why) = probe(dir.path(), BackendMode::Copy).unwrap();
        assert!(why.starts_with("copy"));
        let t = Tree::sandbox("abc-1").unwrap();
        assert_eq!(b.path(&t), dir.path().join("sandboxes/abc-1"));
        assert!(dir.path().join("states").is_dir());
    }
}
