//! The snapshot driver's error type: every variant names the path, tree or syscall involved.

use std::path::PathBuf;

/// Errors from the snapshot backends, the tarball importer and the loop-image helper.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tree id that is not a safe path component (only `[a-z0-9-]`, 1..=128 chars).
    #[error("invalid tree id {id:?}: {reason}")]
    InvalidId {
        /// The rejected id.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An import source that cannot be used (missing, wrong type, inside the state tree).
    #[error("bad source {path}: {reason}")]
    BadSource {
        /// The source path the caller gave.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tarball that is not one, or that holds an unsafe entry (`..`, absolute, escaping link).
    #[error("bad tarball {path}: {reason}")]
    BadTarball {
        /// The tarball path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An image layer that is not a tar or holds an unsafe entry.
    #[error("bad layer {path}: {reason}")]
    BadLayer {
        /// The layer blob.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The target tree already exists under its real name.
    #[error("tree {path} already exists")]
    Exists {
        /// The tree's path.
        path: PathBuf,
    },
    /// The tree does not exist.
    #[error("tree {path} does not exist")]
    NotFound {
        /// The tree's path.
        path: PathBuf,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`mkdir`, `copy`, `rename`, ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A raw syscall or ioctl failed.
    #[error("{syscall} {path}: {source}")]
    Sys {
        /// The syscall or ioctl (`FS_IOC_SETFLAGS`, `LOOP_SET_FD`, `mount`, ...).
        syscall: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The errno.
        #[source]
        source: nix::errno::Errno,
    },
    /// A libbtrfsutil call failed; `errno` is the OS error it left behind.
    #[error("btrfs {op} {path}: {source} ({errno})")]
    Btrfs {
        /// The btrfsutil operation (`create subvolume`, `snapshot`, `delete`, ...).
        op: &'static str,
        /// The subvolume path.
        path: PathBuf,
        /// The library error.
        #[source]
        source: btrfsutil::BtrfsUtilError,
        /// `errno` right after the call.
        errno: std::io::Error,
    },
    /// The requested backend cannot run at this root.
    #[error("snapshot backend {backend} unavailable at {root}: {reason}")]
    Unavailable {
        /// `btrfs` or `copy`.
        backend: &'static str,
        /// The state root.
        root: PathBuf,
        /// Why not.
        reason: String,
    },
    /// Formatting the btrfs image failed.
    #[error("mkfs.btrfs {path}: {reason}")]
    Mkfs {
        /// The image file.
        path: PathBuf,
        /// The exit status and stderr, or the spawn error.
        reason: String,
    },
}

impl Error {
    /// Builds an [`Error::Io`] closure for `map_err`.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// Builds an [`Error::Sys`] closure for `map_err`.
    pub(crate) fn sys(
        syscall: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(nix::errno::Errno) -> Self {
        let path = path.into();
        move |source| Error::Sys {
            syscall,
            path,
            source,
        }
    }

    /// True when the error means "the tree is not there", so idempotent callers can ignore it.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound { .. } => true,
            Error::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            Error::Sys { source, .. } => *source == nix::errno::Errno::ENOENT,
            _ => false,
        }
    }
}

/// Result alias for the snapshot driver.
pub type Result<T> = std::result::Result<T, Error>;
