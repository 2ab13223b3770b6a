//! The work queue: keys deduplicate, at most one reconcile per key at a time, delayed requeues.
//!
//! A key is in at most one of: `ready` (waiting for a worker), `active` (being reconciled) or
//! `delayed` (waiting for its time). A trigger for an active key marks it dirty; it runs once
//! more after the current reconcile finishes, however many triggers arrived meanwhile.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use tend_schema::ObjectKey;
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

#[derive(Default)]
struct State {
    ready: VecDeque<ObjectKey>,
    queued: HashSet<ObjectKey>,
    active: HashSet<ObjectKey>,
    dirty: HashSet<ObjectKey>,
    delayed: BTreeSet<(Instant, ObjectKey)>,
    due: HashMap<ObjectKey, Instant>,
    /// When each waiting key was first triggered, for the trigger→start latency metric.
    since: HashMap<ObjectKey, Instant>,
    /// Keys whose last reconcile failed, with how many times in a row.
    failures: HashMap<ObjectKey, u32>,
    shutdown: bool,
}

/// How soon a driver event runs a key whose last reconcile failed (see [`Queue::add_event`]).
pub const EVENT_DELAY_WHILE_FAILING: Duration = Duration::from_secs(1);

/// A work queue shared by one controller's workers and its trigger sources.
#[derive(Default)]
pub struct Queue {
    state: Mutex<State>,
    notify: Notify,
}

impl State {
    fn push_ready(&mut self, key: ObjectKey, now: Instant) {
        if let Some(at) = self.due.remove(&key) {
            self.delayed.remove(&(at, key.clone()));
        }
        if self.active.contains(&key) {
            self.dirty.insert(key);
        } else if self.queued.insert(key.clone()) {
            self.since.entry(key.clone()).or_insert(now);
            self.ready.push_back(key);
        }
    }
}

impl Queue {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `key` now. A pending delayed run of the key is replaced by this one.
    pub fn add(&self, key: ObjectKey) {
        let mut s = self.lock();
        if s.shutdown {
            return;
        }
        s.push_ready(key, Instant::now());
        drop(s);
        self.notify.notify_one();
    }

    /// Queues `key` for a resync: now, unless its last reconcile failed — its backoff retry
    /// is queued already, and resync does not cut it short.
    pub fn add_resync(&self, key: ObjectKey) {
        if !self.lock().failures.contains_key(&key) {
            self.add(key);
        }
    }

    /// Queues `key` for a driver event (netlink, inotify, pidfd, Docker): now, unless its last
    /// reconcile failed — then within [`EVENT_DELAY_WHILE_FAILING`] (or its backoff retry, if
    /// sooner). A reconcile that fails after changing the host would otherwise be woken at once
    /// by its own changes and retry in a loop that never backs off.
    pub fn add_event(&self, key: ObjectKey) {
        if self.lock().failures.contains_key(&key) {
            self.add_after(key, EVENT_DELAY_WHILE_FAILING);
        } else {
            self.add(key);
        }
    }

    /// Counts a failed reconcile of `key`; returns the failures in a row.
    pub fn record_failure(&self, key: &ObjectKey) -> u32 {
        let mut s = self.lock();
        let n = s.failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Forgets `key`'s failures (it reconciled).
    pub fn record_success(&self, key: &ObjectKey) {
        self.lock().failures.remove(key);
    }

    /// Queues `key` after `delay`, unless it is already waiting to run sooner.
    pub fn add_after(&self, key: ObjectKey, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay;
        let mut s = self.lock();
        if s.shutdown || s.queued.contains(&key) || s.dirty.contains(&key) {
            return;
        }
        match s.due.get(&key) {
            Some(&existing) if existing <= at => return,
            Some(&existing) => {
                s.delayed.remove(&(existing, key.clone()));
            }
            None => {}
        }
        s.due.insert(key.clone(), at);
        s.delayed.insert((at, key));
        drop(s);
        // Every idle worker recomputes its sleep, so the earliest deadline is always watched.
        self.notify.notify_waiters();
    }

    /// Waits for the next key and marks it active; returns it with how long it waited since
    /// its first trigger. None once the queue is shut down.
    pub async fn next(&self) -> Option<(ObjectKey, Duration)> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let earliest = {
                let mut s = self.lock();
                if s.shutdown {
                    return None;
                }
                let now = Instant::now();
                while let Some((at, _)) = s.delayed.first().cloned() {
                    if at > now {
                        break;
                    }
                    let (_, key) = s.delayed.pop_first().expect("checked above");
                    s.due.remove(&key);
                    s.push_ready(key, now);
                }
                if let Some(key) = s.ready.pop_front() {
                    s.queued.remove(&key);
                    s.active.insert(key.clone());
                    let waited = s.since.remove(&key).map(|t| now - t).unwrap_or_default();
                    if !s.ready.is_empty() {
                        // Let another idle worker take the next one.
                        self.notify.notify_one();
                    }
                    return Some((key, waited));
                }
                s.delayed.first().map(|(at, _)| *at)
            };
            match earliest {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks `key` finished; runs it again now if it was triggered while active.
    pub fn done(&self, key: &ObjectKey) {
        let mut s = self.lock();
        s.active.remove(key);
        if s.dirty.remove(key) && !s.shutdown {
            s.push_ready(key.clone(), Instant::now());
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Stops handing out work; `next` returns None from now on.
    pub fn shutdown(&self) {
        self.lock().shutdown = true;
        self.notify.notify_waiters();
    }

    /// Keys waiting to run now or later (not counting active ones).
    pub fn depth(&self) -> usize {
        let s = self.lock();
        s.ready.len() + s.delayed.len()
    }

    /// Keys being reconciled right now.
    pub fn active(&self) -> usize {
        self.lock().active.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tend_schema::Kind;

    fn k(n: &str) -> ObjectKey {
        ObjectKey::new(Kind::Network, "default", n)
    }

    #[tokio::test(start_paused = true)]
    async fn keys_deduplicate() {
        let q = Queue::new();
        q.add(k("a"));
        q.add(k("a"));
        q.add(k("b"));
        assert_eq!(q.depth(), 2);
        assert_eq!(q.next().await.unwrap().0, k("a"));
        assert_eq!(q.next().await.unwrap().0, k("b"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_active_key_runs_once_more_after_it_finishes() {
        let q = Queue::new();
        q.add(k("a"));
        let (key, _) = q.next().await.unwrap();
        for _ in 0..5 {
            q.add(k("a"));
        }
        assert_eq!(q.depth(), 0, "not handed out while active");
        q.done(&key);
        assert_eq!(q.depth(), 1, "five triggers coalesce into one run");
        let (again, _) = q.next().await.unwrap();
        q.done(&again);
        assert_eq!(q.depth(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_keys_wait_their_time_and_earlier_wins() {
        let q = std::sync::Arc::new(Queue::new());
        q.add_after(k("a"), Duration::from_secs(10));
        q.add_after(k("a"), Duration::from_secs(3));
        q.add_after(k("a"), Duration::from_secs(20));
        let start = Instant::now();
        let (key, _) = q.next().await.unwrap();
        assert_eq!(key, k("a"));
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
        q.done(&key);
        assert_eq!(q.depth(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_immediate_trigger_replaces_a_delay() {
        let q = Queue::new();
        q.add_after(k("a"), Duration::from_secs(60));
        q.add(k("a"));
        let start = Instant::now();
        q.next().await.unwrap();
        assert_eq!(Instant::now(), start);
        assert_eq!(q.depth(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_key_is_not_rushed_by_resync_or_driver_events() {
        let q = Queue::new();
        assert_eq!(q.record_failure(&k("a")), 1);
        assert_eq!(q.record_failure(&k("a")), 2);
        q.add_after(k("a"), Duration::from_secs(60)); // its backoff retry
        q.add_resync(k("a"));
        q.add_event(k("a"));
        let start = Instant::now();
        q.next().await.unwrap();
        assert_eq!(Instant::now() - start, EVENT_DELAY_WHILE_FAILING);
        q.done(&k("a"));
        q.record_success(&k("a"));
        q.add_event(k("a"));
        let start = Instant::now();
        q.next().await.unwrap();
        assert_eq!(Instant::now(), start, "a healthy key runs at once");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_releases_waiting_workers() {
        let q = std::sync::Arc::new(Queue::new());
        let w = {
            let q = q.clone();
            tokio::spawn(async move { q.next().await })
        };
        tokio::task::yield_now().await;
        q.shutdown();
        assert!(w.await.unwrap().is_none());
        q.add(k("a"));
        assert_eq!(q.depth(), 0, "no work accepted after shutdown");
    }
}
