//! A recording in-memory snapshot driver for controller unit tests.

use super::{ImportSource, SnapshotDriver, TreeClass, TreeError, TreeInfo};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What a fake host path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FakeSource {
    /// A directory of this many bytes.
    Dir(u64),
    /// A valid tarball of this many bytes.
    Tarball(u64),
    /// A regular file that is not a tarball.
    File,
}

#[derive(Default)]
struct Inner {
    trees: BTreeMap<(TreeClass, String), (bool, u64)>,
    sources: HashMap<PathBuf, FakeSource>,
    calls: Vec<String>,
}

/// Trees live in a map; host sources are declared with [`FakeDriver::add_source`]. Every
/// mutating call is recorded as a line (`import <uid>`, `snapshot <src> -> <dst> ro=<b>`, ...).
#[derive(Default)]
pub struct FakeDriver {
    inner: Mutex<Inner>,
}

impl FakeDriver {
    /// An empty fake.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Declares a host path.
    pub fn add_source(&self, path: &str, src: FakeSource) {
        self.lock().sources.insert(PathBuf::from(path), src);
    }

    /// Removes a host path.
    pub fn remove_source(&self, path: &str) {
        self.lock().sources.remove(Path::new(path));
    }

    /// The recorded calls so far.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// `Some(read_only)` when the tree exists.
    pub fn tree(&self, class: TreeClass, uid: &str) -> Option<bool> {
        self.lock()
            .trees
            .get(&(class, uid.to_string()))
            .map(|t| t.0)
    }

    /// Drift helpers: remove a tree / flip its flag behind the controller's back.
    pub fn vanish(&self, class: TreeClass, uid: &str) {
        self.lock().trees.remove(&(class, uid.to_string()));
    }

    /// Sets a tree's read-only flag directly (drift).
    pub fn tamper_read_only(&self, class: TreeClass, uid: &str, ro: bool) {
        if let Some(t) = self.lock().trees.get_mut(&(class, uid.to_string())) {
            t.0 = ro;
        }
    }

    /// Adds a tree nobody asked for.
    pub fn plant(&self, class: TreeClass, uid: &str) {
        self.lock()
            .trees
            .insert((class, uid.to_string()), (false, 0));
    }

    fn p(class: TreeClass, uid: &str) -> PathBuf {
        let dir = match class {
            TreeClass::States => "states",
            TreeClass::Sandboxes => "sandboxes",
            TreeClass::Revisions => "revisions",
        };
        PathBuf::from(format!("/fake/{dir}/{uid}"))
    }
}

#[async_trait]
impl SnapshotDriver for FakeDriver {
    fn backend(&self) -> &'static str {
        "fake"
    }

    fn path(&self, class: TreeClass, uid: &str) -> PathBuf {
        Self::p(class, uid)
    }

    async fn import(&self, uid: &str, source: &ImportSource) -> Result<TreeInfo, TreeError> {
        let mut g = self.lock();
        g.calls.push(format!("import {uid}"));
        let (path, want_tar) = match source {
            ImportSource::Directory(p) => (p, false),
            ImportSource::Tarball(p) => (p, true),
            // Layers are tarballs the fake knows; the last one decides.
            ImportSource::Layers(ps) => match ps.last() {
                Some(p) => (p, true),
                None => return Err(TreeError::Other("no layers".into())),
            },
        };
        let size = match (g.sources.get(path), want_tar) {
            (None, _) => return Err(TreeError::SourceNotFound { path: path.clone() }),
            (Some(FakeSource::Dir(n)), false) | (Some(FakeSource::Tarball(n)), true) => *n,
            (Some(FakeSource::File), true) => {
                return Err(TreeError::BadTarball {
                    path: path.clone(),
                    reason: "not a tar archive".into(),
                })
            }
            (Some(_), _) => {
                return Err(TreeError::BadSource {
                    path: path.clone(),
                    reason: "wrong file type".into(),
                })
            }
        };
        let key = (TreeClass::States, uid.to_string());
        if g.trees.contains_key(&key) {
            return Err(TreeError::Exists {
                path: Self::p(TreeClass::States, uid),
            });
        }
        g.trees.insert(key, (true, size));
        Ok(TreeInfo {
            path: Self::p(TreeClass::States, uid),
            read_only: true,
            size_bytes: size,
        })
    }

    async fn snapshot(
        &self,
        src: (TreeClass, &str),
        dst: (TreeClass, &str),
        read_only: bool,
    ) -> Result<TreeInfo, TreeError> {
        let mut g = self.lock();
        g.calls
            .push(format!("snapshot {} -> {} ro={read_only}", src.1, dst.1));
        let Some(&(_, size)) = g.trees.get(&(src.0, src.1.to_string())) else {
            return Err(TreeError::NotFound {
                path: Self::p(src.0, src.1),
            });
        };
        let key = (dst.0, dst.1.to_string());
        if g.trees.contains_key(&key) {
            return Err(TreeError::Exists {
                path: Self::p(dst.0, dst.1),
            });
        }
        g.trees.insert(key, (read_only, size));
        Ok(TreeInfo {
            path: Self::p(dst.0, dst.1),
            read_only,
            size_bytes: 0,
        })
    }

    async fn restore(
        &self,
        src: (TreeClass, &str),
        dst: (TreeClass, &str),
    ) -> Result<TreeInfo, TreeError> {
        let mut g = self.lock();
        g.calls.push(format!("restore {} -> {}", src.1, dst.1));
        let Some(&(_, size)) = g.trees.get(&(src.0, src.1.to_string())) else {
            return Err(TreeError::NotFound {
                path: Self::p(src.0, src.1),
            });
        };
        g.trees.insert((dst.0, dst.1.to_string()), (false, size));
        Ok(TreeInfo {
            path: Self::p(dst.0, dst.1),
            read_only: false,
            size_bytes: 0,
        })
    }

    async fn stat(&self, class: TreeClass, uid: &str) -> Result<Option<bool>, TreeError> {
        Ok(self.tree(class, uid))
    }

    async fn inspect(&self, class: TreeClass, uid: &str) -> Result<Option<TreeInfo>, TreeError> {
        Ok(self
            .lock()
            .trees
            .get(&(class, uid.to_string()))
            .map(|&(ro, size)| TreeInfo {
                path: Self::p(class, uid),
                read_only: ro,
                size_bytes: size,
            }))
    }

    async fn set_read_only(&self, class: TreeClass, uid: &str, ro: bool) -> Result<(), TreeError> {
        let mut g = self.lock();
        g.calls.push(format!("set_read_only {uid} {ro}"));
        match g.trees.get_mut(&(class, uid.to_string())) {
            Some(t) => {
                t.0 = ro;
                Ok(())
            }
            None => Err(TreeError::NotFound {
                path: Self::p(class, uid),
            }),
        }
    }

    async fn delete(&self, class: TreeClass, uid: &str) -> Result<bool, TreeError> {
        let mut g = self.lock();
        g.calls.push(format!("delete {uid}"));
        Ok(g.trees.remove(&(class, uid.to_string())).is_some())
    }

    async fn list(&self, class: TreeClass) -> Result<Vec<String>, TreeError> {
        Ok(self
            .lock()
            .trees
            .keys()
            .filter(|(c, _)| *c == class)
            .map(|(_, id)| id.clone())
            .collect())
    }

    async fn remove_stale_temps(&self, _class: TreeClass) -> Result<Vec<PathBuf>, TreeError> {
        Ok(Vec::new())
    }
}
