//! An inotify watch on `<root>/states` and `<root>/sandboxes`: a tree created, deleted or
//! renamed behind tend's back wakes its object at once. A name no object owns is left to the
//! periodic orphan sweep (it must wait out the grace period anyway); a queue overflow wakes
//! the sweep. A flipped read-only flag raises no inotify event on btrfs; resync finds that.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use nix::sys::inotify::AddWatchFlags;
use tend_controllers::Trigger;
use tokio::sync::Notify;

use super::{Error, Result, TreeClass};
use crate::util::dirwatch::{DirEvent, DirWatch};

/// Starts watching the class dirs under `root`; the returned future delivers events until it
/// is dropped. Names starting with `.tmp-` (imports in progress) are ignored.
///
/// # Errors
/// `inotify_init1` / `inotify_add_watch` failures.
pub fn watch(
    root: &Path,
    states: Trigger,
    sandboxes: Trigger,
    sweep: Arc<Notify>,
) -> Result<impl Future<Output = ()> + Send + 'static> {
    let mask = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_ONLYDIR;
    let w = DirWatch::new(mask).map_err(Error::io("inotify_init1", root))?;
    let mut classes = Vec::new();
    for class in TreeClass::ALL {
        let dir = root.join(class.dir_name());
        let wd = w.add(&dir).map_err(Error::io("inotify_add_watch", &dir))?;
        classes.push((wd, class));
    }
    Ok(async move {
        w.for_each("State and Sandbox trees", |ev| {
            let (dir, name, mask) = match ev {
                DirEvent::Name { dir, name, mask } => (dir, name, mask),
                DirEvent::Removed { .. } => return, // the class dirs live as long as tend
                DirEvent::Overflow => return sweep.notify_one(),
            };
            if name.starts_with('.') {
                return; // `.tmp-…`: an import in progress
            }
            let Some(&(_, class)) = classes.iter().find(|(wd, _)| *wd == dir) else {
                return;
            };
            tracing::debug!(?class, tree = name, ?mask, "tree changed on the host");
            match class {
                TreeClass::States => states.uid(&name),
                TreeClass::Sandboxes => sandboxes.uid(&name),
                // Rollout snapshots: only the Container controller makes and removes them.
                TreeClass::Revisions => {}
            }
        })
        .await;
    })
}
