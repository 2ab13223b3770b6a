//! An inotify watch on a few directories, read on tokio's reactor: the names created, deleted
//! or renamed in them. The drivers turn these into reconciles of the objects the names belong
//! to (State and Sandbox trees, named network namespaces).

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;

/// What happened in a watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirEvent {
    /// `name` changed in the `dir`-th watched directory (`mask` says how).
    Name {
        dir: usize,
        name: String,
        mask: AddWatchFlags,
    },
    /// The kernel's event queue overflowed: events were lost, look at everything.
    Overflow,
}

struct Fd(Inotify);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A running watch; dropping it closes the inotify descriptor.
pub struct DirWatch {
    fd: AsyncFd<Fd>,
    dirs: Vec<WatchDescriptor>,
}

impl DirWatch {
    /// Watches each of `dirs` for the events in `mask`.
    ///
    /// # Errors
    /// `inotify_init1` or `inotify_add_watch` failures (a directory that does not exist), with
    /// the directory named.
    pub fn new(dirs: &[&Path], mask: AddWatchFlags) -> std::io::Result<Self> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        let mut wds = Vec::with_capacity(dirs.len());
        for dir in dirs {
            let wd = ino.add_watch(*dir, mask).map_err(|e| {
                let e = std::io::Error::from(e);
                std::io::Error::new(
                    e.kind(),
                    format!("inotify_add_watch {}: {e}", dir.display()),
                )
            })?;
            wds.push(wd);
        }
        Ok(Self {
            fd: register(Fd(ino))?,
            dirs: wds,
        })
    }

    /// The next batch of events (never empty).
    ///
    /// # Errors
    /// A failed read of the inotify descriptor; the watch is then useless.
    pub async fn next(&self) -> std::io::Result<Vec<DirEvent>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let events = match guard.get_inner().0.read_events() {
                Ok(ev) => ev,
                Err(Errno::EAGAIN) => {
                    guard.clear_ready();
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let out: Vec<DirEvent> = events
                .into_iter()
                .filter_map(|ev| {
                    if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                        return Some(DirEvent::Overflow);
                    }
                    let dir = self.dirs.iter().position(|wd| *wd == ev.wd)?;
                    let name = ev.name?.into_string().ok()?;
                    Some(DirEvent::Name {
                        dir,
                        name,
                        mask: ev.mask,
                    })
                })
                .collect();
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }
}

/// Registers the inotify fd with tokio's reactor.
#[allow(unsafe_code)]
fn register(fd: Fd) -> std::io::Result<AsyncFd<Fd>> {
    // SAFETY: `Fd` owns the inotify descriptor (an `OwnedFd` inside `Inotify`) for as long as
    // the `AsyncFd` holds it, and `as_raw_fd` always returns that same descriptor.
    unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn names_created_and_deleted_are_reported_per_directory() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mask = AddWatchFlags::IN_CREATE | AddWatchFlags::IN_DELETE;
        let w = DirWatch::new(&[a.path(), b.path()], mask).unwrap();
        std::fs::write(b.path().join("x"), "").unwrap();
        std::fs::remove_file(b.path().join("x")).unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let batch = tokio::time::timeout(Duration::from_secs(5), w.next()).await;
            seen.extend(batch.expect("events within 5 s").unwrap());
        }
        let got: Vec<(usize, &str, bool)> = seen
            .iter()
            .map(|e| match e {
                DirEvent::Name { dir, name, mask } => {
                    (*dir, name.as_str(), mask.contains(AddWatchFlags::IN_DELETE))
                }
                DirEvent::Overflow => (9, "overflow", false),
            })
            .collect();
        assert_eq!(got, vec![(1, "x", false), (1, "x", true)]);
        assert!(DirWatch::new(&[&a.path().join("missing")], mask).is_err());
    }
}
