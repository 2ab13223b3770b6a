//! Notices a container's cgroup limits rewritten behind tend's back (`echo … >
//! memory.limit_in_bytes`): writes to cgroupfs files raise inotify `IN_MODIFY` like any file,
//! so each running container's group directories are watched, and a write to a limit file
//! wakes the Container, whose reconcile puts the limit back. Resync remains the fallback
//! (a lost event, an overflow).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use nix::sys::inotify::{AddWatchFlags, WatchDescriptor};
use tend_controllers::Trigger;

use crate::cgroup::LIMIT_FILES;
use crate::util::dirwatch::{DirEvent, DirWatch};

/// The watch of every running container's cgroup directories.
pub struct LimitsWatch {
    dirs: DirWatch,
    /// Which container each watched directory belongs to (v1: one per controller).
    owners: Mutex<HashMap<WatchDescriptor, String>>,
}

impl LimitsWatch {
    /// An empty watch; events are delivered by [`LimitsWatch::run`].
    ///
    /// # Errors
    /// `inotify_init1` failures.
    pub fn new() -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            dirs: DirWatch::new(AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_ONLYDIR)?,
            owners: Mutex::default(),
        }))
    }

    /// Watches the group directories of `uid` (idempotent: a directory watched already keeps
    /// its watch). Blocking (a path lookup per directory); failures are logged: resync stays.
    pub fn watch(&self, uid: &str, dirs: impl IntoIterator<Item = PathBuf>) {
        for dir in dirs {
            match self.dirs.add(&dir) {
                Ok(wd) => {
                    self.owners
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(wd, uid.to_string());
                }
                Err(e) => tracing::debug!(error = %e, uid, "cgroup limits not watched"),
            }
        }
    }

    /// Delivers events until the watch fails: a limit file written wakes its Container.
    pub async fn run(self: Arc<Self>, containers: Trigger) {
        loop {
            let events = match self.dirs.next().await {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::error!(error = %e, "cgroup limits watch failed; limits are checked on resync only");
                    return;
                }
            };
            for ev in events {
                let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
                match ev {
                    DirEvent::Name { dir, name, .. } if LIMIT_FILES.contains(&name.as_str()) => {
                        if let Some(uid) = owners.get(&dir) {
                            containers.uid(uid);
                        }
                    }
                    DirEvent::Removed { dir } => {
                        owners.remove(&dir);
                    }
                    DirEvent::Name { .. } | DirEvent::Overflow => {}
                }
            }
        }
    }
}
