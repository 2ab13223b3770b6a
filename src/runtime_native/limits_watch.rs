//! Notices a container's cgroup limits rewritten behind tend's back (`echo … >
//! memory.limit_in_bytes`): writes to cgroupfs files raise inotify `IN_MODIFY` like any file,
//! so each running container's group directories are watched. After a write to a limit file
//! the limits are read back and compared with the ones tend set; only a difference wakes the
//! Container, whose reconcile puts the limit back. tend's own writes (a start, a repair) match
//! and wake nothing, so a failing start cannot turn its own writes into a retry loop that
//! skips the backoff. Resync remains the fallback (a lost event, an overflow).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use nix::sys::inotify::{AddWatchFlags, WatchDescriptor};
use tend_controllers::Trigger;

use crate::cgroup::{AnyCgroupManager, CgroupManager, Limits, LIMIT_FILES};
use crate::util::blocking;
use crate::util::dirwatch::{DirEvent, DirWatch};

/// The watch of every running container's cgroup directories.
pub struct LimitsWatch {
    dirs: DirWatch,
    cgroups: Arc<AnyCgroupManager>,
    /// Which container each watched directory belongs to (v1: one per controller).
    owners: Mutex<HashMap<WatchDescriptor, String>>,
    /// Per container uid: its group and the limits tend set (normalized).
    wanted: Mutex<HashMap<String, (String, Limits)>>,
}

impl LimitsWatch {
    /// An empty watch; events are delivered by [`LimitsWatch::run`].
    ///
    /// # Errors
    /// `inotify_init1` failures.
    pub fn new(cgroups: Arc<AnyCgroupManager>) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            dirs: DirWatch::new(AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_ONLYDIR)?,
            cgroups,
            owners: Mutex::default(),
            wanted: Mutex::default(),
        }))
    }

    /// Watches the group `group` of `uid`, whose limits tend set to `want` (idempotent: a
    /// directory watched already keeps its watch; `want` is replaced). Blocking (a path lookup
    /// per directory); failures are logged: resync stays.
    pub fn watch(&self, uid: &str, group: &str, want: Limits) {
        lock(&self.wanted).insert(uid.to_string(), (group.to_string(), want.normalized()));
        let dirs = self.cgroups.path_for_join(group);
        for dir in dirs.iter().filter_map(|p| p.parent()).map(PathBuf::from) {
            match self.dirs.add(&dir) {
                Ok(wd) => {
                    lock(&self.owners).insert(wd, uid.to_string());
                }
                Err(e) => tracing::debug!(error = %e, uid, "cgroup limits not watched"),
            }
        }
    }

    /// Delivers events until the watch fails: a limit file written with a value other than
    /// tend's wakes its Container.
    pub async fn run(self: Arc<Self>, containers: Trigger) {
        self.dirs
            .for_each("cgroup limits", |ev| match ev {
                DirEvent::Name { dir, name, .. } if LIMIT_FILES.contains(&name.as_str()) => {
                    let Some(uid) = lock(&self.owners).get(&dir).cloned() else {
                        return;
                    };
                    let (this, containers) = (self.clone(), containers.clone());
                    tokio::spawn(async move {
                        if blocking({
                            let (this, uid) = (this.clone(), uid.clone());
                            move || this.drifted(&uid)
                        })
                        .await
                        {
                            containers.uid(&uid);
                        }
                    });
                }
                DirEvent::Removed { dir } => {
                    // The group is gone (the container was removed or its cgroup deleted):
                    // forget it once none of its directories is watched any more.
                    let mut owners = lock(&self.owners);
                    if let Some(uid) = owners.remove(&dir) {
                        if !owners.values().any(|u| *u == uid) {
                            lock(&self.wanted).remove(&uid);
                        }
                    }
                }
                DirEvent::Name { .. } | DirEvent::Overflow => {}
            })
            .await;
    }

    /// Whether `uid`'s limits on the host differ from the ones tend set (blocking).
    fn drifted(&self, uid: &str) -> bool {
        let Some((group, want)) = lock(&self.wanted).get(uid).cloned() else {
            return false;
        };
        match self.cgroups.read_limits(&group) {
            Ok(have) => have != want,
            Err(_) => true, // the reconcile sees what is wrong and says so
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
