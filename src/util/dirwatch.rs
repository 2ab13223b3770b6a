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
    /// `name` changed in the directory watched as `dir` (`mask` says how).
    Name {
        dir: WatchDescriptor,
        name: String,
        mask: AddWatchFlags,
    },
    /// The directory watched as `dir` is gone (or no longer watched).
    Removed { dir: WatchDescriptor },
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
    mask: AddWatchFlags,
}

impl DirWatch {
    /// A watch for the events in `mask`, on no directory yet (see [`DirWatch::add`]).
    ///
    /// # Errors
    /// `inotify_init1` failures (the per-user instance limit).
    pub fn new(mask: AddWatchFlags) -> std::io::Result<Self> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        Ok(Self {
            fd: register(Fd(ino))?,
            mask,
        })
    }

    /// Watches `dir` too; returns the descriptor its events carry. Adding a directory twice
    /// returns the same descriptor.
    ///
    /// # Errors
    /// `inotify_add_watch` failures (a directory that does not exist), naming the directory.
    pub fn add(&self, dir: &Path) -> std::io::Result<WatchDescriptor> {
        self.fd.get_ref().0.add_watch(dir, self.mask).map_err(|e| {
            let e = std::io::Error::from(e);
            std::io::Error::new(
                e.kind(),
                format!("inotify_add_watch {}: {e}", dir.display()),
            )
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
                    if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                        return Some(DirEvent::Removed { dir: ev.wd });
                    }
                    Some(DirEvent::Name {
                        dir: ev.wd,
                        name: ev.name?.into_string().ok()?,
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

impl DirWatch {
    /// Hands every event to `f` until reading fails; the failure is logged as the `what`
    /// watch's, whose drift is then found by resync only.
    pub async fn for_each(&self, what: &'static str, mut f: impl FnMut(DirEvent)) {
        loop {
            match self.next().await {
                Ok(events) => events.into_iter().for_each(&mut f),
                Err(e) => {
                    tracing::error!(error = %e, watch = what, "inotify watch failed; its drift is found by resync only");
                    return;
                }
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
        let w = DirWatch::new(mask).unwrap();
        let wa = w.add(a.path()).unwrap();
        let wb = w.add(b.path()).unwrap();
        assert_ne!(wa, wb);
        assert_eq!(
            w.add(b.path()).unwrap(),
            wb,
            "watched twice, one descriptor"
        );
        std::fs::write(b.path().join("x"), "").unwrap();
        std::fs::remove_file(b.path().join("x")).unwrap();
        let gone = b.path().to_path_buf();
        drop(b);
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let batch = tokio::time::timeout(Duration::from_secs(5), w.next()).await;
            seen.extend(batch.expect("events within 5 s").unwrap());
        }
        let got: Vec<String> = seen
            .iter()
            .map(|e| match e {
                DirEvent::Name { dir, name, mask } => format!(
                    "{} {name} {}",
                    if *dir == wb { "b" } else { "?" },
                    if mask.contains(AddWatchFlags::IN_DELETE) {
                        "deleted"
                    } else {
                        "created"
                    }
                ),
                DirEvent::Removed { dir } => {
                    format!("{} removed", if *dir == wb { "b" } else { "?" })
                }
                DirEvent::Overflow => "overflow".into(),
            })
            .collect();
        assert_eq!(got, ["b x created", "b x deleted", "b removed"]);
        assert!(w.add(&gone).is_err());
    }
}
