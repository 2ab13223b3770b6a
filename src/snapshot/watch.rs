//! An inotify watch on `<root>/states` and `<root>/sandboxes`: a tree created, deleted or
//! renamed behind tend's back wakes its object at once. A name no object owns is left to the
//! periodic orphan sweep (it must wait out the grace period anyway); a queue overflow wakes
//! the sweep. A flipped read-only flag raises no inotify event on btrfs; resync finds that.

use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tend_controllers::Trigger;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use super::{Error, Result, TreeClass};

struct Fd(Inotify);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Registers the inotify fd with tokio's reactor.
#[allow(unsafe_code)]
fn register(fd: Fd) -> std::io::Result<AsyncFd<Fd>> {
    // SAFETY: `Fd` owns the inotify descriptor (an `OwnedFd` inside `Inotify`) for as long as
    // the `AsyncFd` holds it, and `as_raw_fd` always returns that same descriptor.
    unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)
}

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
    let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .map_err(Error::sys("inotify_init1", root))?;
    let mask = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_ONLYDIR;
    let mut wds = Vec::new();
    for class in TreeClass::ALL {
        let dir = root.join(class.dir_name());
        let wd = ino
            .add_watch(&dir, mask)
            .map_err(Error::sys("inotify_add_watch", &dir))?;
        wds.push((wd, class));
    }
    let fd = register(Fd(ino)).map_err(Error::io("AsyncFd::register", root))?;
    Ok(async move {
        loop {
            let Ok(mut guard) = fd.readable().await else {
                return;
            };
            let events = match guard.get_inner().0.read_events() {
                Ok(ev) => ev,
                Err(nix::errno::Errno::EAGAIN) => {
                    guard.clear_ready();
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "inotify read failed; drift is left to resync");
                    return;
                }
            };
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    sweep.notify_one();
                    continue;
                }
                let Some(name) = ev.name.as_ref().and_then(|n| n.to_str()) else {
                    continue;
                };
                if name.starts_with(".tmp-") || name.starts_with('.') {
                    continue;
                }
                let Some(&(_, class)) = wds.iter().find(|(wd, _)| *wd == ev.wd) else {
                    continue;
                };
                tracing::debug!(?class, tree = name, mask = ?ev.mask, "tree changed on the host");
                match class {
                    TreeClass::States => states.uid(name),
                    TreeClass::Sandboxes => sandboxes.uid(name),
                }
            }
        }
    })
}
