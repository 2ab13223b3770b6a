//! The controllers' [`SnapshotDriver`] over the chosen [`AnySnapshotter`]: uids become tree
//! ids, driver errors become [`TreeError`]s, and import sources are checked against the state
//! dir before the backend sees them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use tend_controllers::snapshot::{
    ImportSource, SnapshotDriver, TreeClass as Class, TreeError, TreeInfo,
};

use super::{AnySnapshotter, Error, SnapshotBackend, Tree};
use crate::util::blocking;

/// A [`SnapshotDriver`] backed by a real snapshot backend.
#[derive(Clone)]
pub struct Adapter {
    backend: Arc<AnySnapshotter>,
    /// tend's state dir, canonical: no source may lie inside it (or contain it).
    state_dir: PathBuf,
}

impl Adapter {
    /// Wraps `backend`; sources inside (or containing) `state_dir` are refused.
    pub fn new(backend: Arc<AnySnapshotter>, state_dir: &Path) -> std::io::Result<Self> {
        Ok(Self {
            backend,
            state_dir: state_dir.canonicalize()?,
        })
    }

    /// The backend underneath.
    pub fn backend(&self) -> &AnySnapshotter {
        &self.backend
    }

    /// Checks a user-named source: it exists, has the wanted type, and is not tend's own tree.
    fn check_source(&self, p: &Path, want_dir: bool) -> Result<PathBuf, TreeError> {
        let bad = |reason: &str| TreeError::BadSource {
            path: p.into(),
            reason: reason.into(),
        };
        let meta = match std::fs::metadata(p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TreeError::SourceNotFound { path: p.into() })
            }
            Err(e) => return Err(bad(&e.to_string())),
        };
        if want_dir && !meta.is_dir() {
            return Err(bad("not a directory"));
        }
        if !want_dir && !meta.is_file() {
            return Err(bad("not a regular file"));
        }
        let canon = p.canonicalize().map_err(|e| bad(&e.to_string()))?;
        if canon.starts_with(&self.state_dir) {
            return Err(bad("inside tend's state dir"));
        }
        if want_dir && self.state_dir.starts_with(&canon) {
            return Err(bad("contains tend's state dir"));
        }
        Ok(canon)
    }
}

fn tree(class: Class, uid: &str) -> Result<Tree, TreeError> {
    Tree::new(class, uid).map_err(|e| TreeError::Other(e.to_string()))
}

/// Classifies a driver error for the controllers.
fn map(e: Error) -> TreeError {
    match e {
        Error::BadSource { path, .. } if !path.exists() => TreeError::SourceNotFound { path },
        Error::BadSource { path, reason } => TreeError::BadSource { path, reason },
        Error::BadTarball { path, reason } => TreeError::BadTarball { path, reason },
        Error::BadLayer { path, reason } => TreeError::BadLayer { path, reason },
        Error::NotFound { path } => TreeError::NotFound { path },
        Error::Exists { path } => TreeError::Exists { path },
        e => TreeError::Other(e.to_string()),
    }
}

#[async_trait]
impl SnapshotDriver for Adapter {
    fn backend(&self) -> &'static str {
        self.backend.name()
    }

    fn path(&self, class: Class, uid: &str) -> PathBuf {
        match tree(class, uid) {
            Ok(t) => self.backend.path(&t),
            Err(_) => self.backend.root().join("invalid"),
        }
    }

    async fn import(&self, uid: &str, source: &ImportSource) -> Result<TreeInfo, TreeError> {
        let t = tree(Class::States, uid)?;
        crate::failpoint::check_async("snapshot.import")
            .await
            .map_err(|e| TreeError::Other(e.to_string()))?;
        let (p, dir) = match source {
            ImportSource::Directory(p) => (p.clone(), true),
            ImportSource::Tarball(p) => (p.clone(), false),
            // tend's own verified blobs (inside the state dir by design): no source check.
            ImportSource::Layers(ls) => {
                return self
                    .backend
                    .import_layers(&t, ls.clone())
                    .await
                    .map_err(map)
            }
        };
        let this = self.clone();
        let src = blocking(move || this.check_source(&p, dir)).await?;
        let r = if dir {
            self.backend.import_dir(&t, &src).await
        } else {
            self.backend.import_tarball(&t, &src).await
        };
        r.map_err(map)
    }

    async fn snapshot(
        &self,
        src: (Class, &str),
        dst: (Class, &str),
        read_only: bool,
    ) -> Result<TreeInfo, TreeError> {
        let (s, d) = (tree(src.0, src.1)?, tree(dst.0, dst.1)?);
        self.backend.snapshot(&s, &d, read_only).await.map_err(map)
    }

    async fn restore(&self, src: (Class, &str), dst: (Class, &str)) -> Result<TreeInfo, TreeError> {
        let (s, d) = (tree(src.0, src.1)?, tree(dst.0, dst.1)?);
        self.backend.restore(&s, &d).await.map_err(map)
    }

    async fn stat(&self, class: Class, uid: &str) -> Result<Option<bool>, TreeError> {
        match self.backend.is_read_only(&tree(class, uid)?).await {
            Ok(ro) => Ok(Some(ro)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(map(e)),
        }
    }

    async fn inspect(&self, class: Class, uid: &str) -> Result<Option<TreeInfo>, TreeError> {
        let t = tree(class, uid)?;
        Ok(self.backend.inspect(&t).await.map_err(map)?)
    }

    async fn set_read_only(&self, class: Class, uid: &str, ro: bool) -> Result<(), TreeError> {
        let t = tree(class, uid)?;
        self.backend.set_read_only(&t, ro).await.map_err(map)
    }

    async fn delete(&self, class: Class, uid: &str) -> Result<bool, TreeError> {
        self.backend.delete(&tree(class, uid)?).await.map_err(map)
    }

    async fn list(&self, class: Class) -> Result<Vec<String>, TreeError> {
        self.backend.list(class).await.map_err(map)
    }

    async fn remove_stale_temps(&self, class: Class) -> Result<Vec<PathBuf>, TreeError> {
        self.backend.remove_stale_temps(class).await.map_err(map)
    }
}
