//! The change feed: fans committed changes out to watchers, gap-free and in order.
//!
//! One feed task per store reads new rows of `changes` whenever it is woken and broadcasts them.
//! It is woken by this process's own commits (`poke`) and, for commits by other processes (a
//! CLI writing while the daemon runs), by inotify on the database's WAL file — no polling.
//! Each watcher's stream replays history from the table, then follows the broadcast; if it falls
//! behind or sees a gap it replays from the table again, so no change is ever skipped.

use super::pool::Pool;
use super::sqlite::{meta, parse_body, read_on};
use super::{ChangeType, Result, StoreError, WatchEvent, WatchStream};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;

const BATCH: usize = 2048;
/// Reads again this long after an inotify wake: another process's WAL frames (which inotify
/// sees) are written before its commit is visible in the WAL index (an mmap write, which
/// inotify cannot see), so the read right after the wake can come too early.
const RECHECKS: [Duration; 3] = [
    Duration::from_millis(2),
    Duration::from_millis(20),
    Duration::from_millis(100),
];
/// A last resort against a missed wake (an inotify queue overflow, a writer on another mount
/// namespace): read once a second. One indexed query that usually returns nothing.
const SAFETY_READ: Duration = Duration::from_secs(1);
const BROADCAST_CAPACITY: usize = 8192;

pub(super) struct Feed {
    path: PathBuf,
    wake: Arc<Notify>,
    tx: broadcast::Sender<Arc<WatchEvent>>,
    /// Highest revision broadcast so far.
    sent: Arc<AtomicU64>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().ok().and_then(|mut t| t.take()) {
            t.abort();
        }
    }
}

impl Feed {
    pub(super) fn new(path: &Path) -> Arc<Self> {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        Arc::new(Self {
            path: path.to_path_buf(),
            wake: Arc::new(Notify::new()),
            tx,
            sent: Arc::new(AtomicU64::new(0)),
            task: Mutex::new(None),
        })
    }

    /// Tells the feed task that something was committed.
    pub(super) fn poke(&self) {
        self.wake.notify_one();
    }

    fn ensure_started(self: &Arc<Self>, readers: &Pool) -> Result<()> {
        let mut task = self.task.lock().expect("feed lock");
        if task.is_some() {
            return Ok(());
        }
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .and_then(|i| {
                i.add_watch(
                    dir,
                    AddWatchFlags::IN_MODIFY
                        | AddWatchFlags::IN_CREATE
                        | AddWatchFlags::IN_MOVED_TO,
                )?;
                Ok(i)
            })
            .map_err(|source| StoreError::Inotify {
                path: dir.to_path_buf(),
                source,
            })?;
        let fd = register(InotifyFd(inotify)).map_err(|e| StoreError::Inotify {
            path: dir.to_path_buf(),
            source: nix::Error::from_raw(e.raw_os_error().unwrap_or(EIO)),
        })?;
        let shared = Shared {
            wake: self.wake.clone(),
            tx: self.tx.clone(),
            sent: self.sent.clone(),
        };
        *task = Some(tokio::spawn(run(shared, readers.clone(), fd)));
        Ok(())
    }

    /// A stream of every change after `from`, then live changes.
    pub(super) async fn watch(self: &Arc<Self>, readers: &Pool, from: u64) -> Result<WatchStream> {
        self.ensure_started(readers)?;
        // Subscribe before reading history, so nothing falls between the two.
        let rx = self.tx.subscribe();
        let compacted = read_on(readers, |c| meta(c, "compacted")).await?;
        if from < compacted {
            return Err(StoreError::TooOld {
                requested: from,
                compacted,
            });
        }
        let follower = Follower {
            readers: readers.clone(),
            rx,
            last: from,
            pending: VecDeque::new(),
            replay: true,
            finished: false,
        };
        self.poke();
        Ok(Box::pin(futures::stream::unfold(
            follower,
            |mut f| async move { f.next().await.map(|item| (item, f)) },
        )))
    }
}

const EIO: i32 = 5;

/// An owned inotify descriptor that tokio can poll.
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

#[allow(unsafe_code)]
fn register(fd: InotifyFd) -> std::io::Result<AsyncFd<InotifyFd>> {
    // SAFETY: `AsyncFd::register` requires the descriptor to stay open while registered. The
    // AsyncFd owns `fd` (and so the Inotify and its descriptor) and deregisters before dropping
    // it, so the descriptor outlives the registration.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// What the feed task shares with the `Feed`; the `Feed` aborts the task when dropped.
struct Shared {
    wake: Arc<Notify>,
    tx: broadcast::Sender<Arc<WatchEvent>>,
    sent: Arc<AtomicU64>,
}

/// The feed task: on every wake, broadcast whatever was committed since the last broadcast.
async fn run(f: Shared, readers: Pool, inotify: AsyncFd<InotifyFd>) {
    let mut inotify_ok = true;
    let mut rechecks: VecDeque<Instant> = VecDeque::new();
    loop {
        let notified = f.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Read after arming the wake-up, so a poke during the read is not lost.
        let mut from = f.sent.load(Ordering::Acquire);
        loop {
            match read_changes(&readers, from).await {
                Ok(batch) => {
                    let n = batch.len();
                    for ev in batch {
                        from = ev.revision;
                        let _ = f.tx.send(Arc::new(ev));
                    }
                    f.sent.store(from, Ordering::Release);
                    if n < BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change feed read failed; retrying on next wake");
                    break;
                }
            }
        }
        let now = Instant::now();
        while rechecks.front().is_some_and(|t| *t <= now) {
            rechecks.pop_front();
        }
        let next = rechecks.front().copied().unwrap_or(now + SAFETY_READ);
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(next) => {}
            ready = inotify.readable(), if inotify_ok => match ready {
                Ok(mut guard) => {
                    match guard.get_inner().0.read_events() {
                        Ok(_) => {}
                        Err(nix::Error::EAGAIN) => guard.clear_ready(),
                        Err(e) => tracing::warn!(error = %e, "inotify read failed"),
                    }
                    let now = Instant::now();
                    rechecks = RECHECKS.iter().map(|d| now + *d).collect();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "inotify wait failed; the feed now follows this process's writes and a once-a-second check");
                    inotify_ok = false;
                }
            }
        }
    }
}

/// One watcher's position: events read from the table and not yet handed out, the last
/// revision handed out, and whether the broadcast must be re-checked against the table.
struct Follower {
    readers: Pool,
    rx: broadcast::Receiver<Arc<WatchEvent>>,
    last: u64,
    pending: VecDeque<WatchEvent>,
    replay: bool,
    finished: bool,
}

impl Follower {
    /// The next event: from the replay buffer, else the broadcast; a gap or lag means replaying
    /// from the table again. Ends after a TooOld or store error (yielded first).
    async fn next(&mut self) -> Option<Result<WatchEvent>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(ev) = self.pending.pop_front() {
                self.last = ev.revision;
                return Some(Ok(ev));
            }
            if self.replay {
                match self.replay_batch().await {
                    Ok(more) => self.replay = more,
                    Err(e) => {
                        self.finished = true;
                        return Some(Err(e));
                    }
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(ev) if ev.revision <= self.last => {}
                Ok(ev) if ev.revision == self.last + 1 => {
                    self.last = ev.revision;
                    return Some(Ok((*ev).clone()));
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.replay = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Reads one batch after `last` into `pending`; true when there may be more.
    async fn replay_batch(&mut self) -> Result<bool> {
        let from = self.last;
        let compacted = read_on(&self.readers, |c| meta(c, "compacted")).await?;
        if from < compacted {
            return Err(StoreError::TooOld {
                requested: from,
                compacted,
            });
        }
        let batch = read_changes(&self.readers, from).await?;
        let more = batch.len() == BATCH;
        self.pending.extend(batch);
        Ok(more)
    }
}

async fn read_changes(readers: &Pool, after: u64) -> Result<Vec<WatchEvent>> {
    read_on(readers, move |c| {
        let mut st = c.prepare_cached(
            "SELECT revision, type, kind, body FROM changes WHERE revision > ?1 ORDER BY revision LIMIT ?2",
        )?;
        let mut rows = st.query(rusqlite::params![after as i64, BATCH as i64])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let revision = r.get::<_, i64>(0)? as u64;
            let ty: String = r.get(1)?;
            let kind: String = r.get(2)?;
            let body: String = r.get(3)?;
            let object = parse_body(&format!("revision {revision}"), &body)?;
            let type_ = match ty.as_str() {
                "ADDED" => ChangeType::Added,
                "DELETED" => ChangeType::Deleted,
                _ => ChangeType::Modified,
            };
            let kind = kind.parse().map_err(|_| StoreError::Corrupt {
                key: format!("revision {revision}"),
                source: serde::de::Error::custom(format!("unknown kind {kind}")),
            })?;
            out.push(WatchEvent { revision, type_, kind, object });
        }
        Ok(out)
    })
    .await
}
