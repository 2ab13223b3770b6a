//! Recording fakes of the Container controller's seams, for unit tests (here and in the daemon).

use super::driver::{
    Attach, Attachments, ContainerRuntime, DriverError, Exit, LogQuery, LogStream, Observed,
    Running, WorkloadSpec,
};
use super::exec::{ExecEvent, ExecSession};
use async_trait::async_trait;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tend_schema::kinds::container::ContainerSpec;
use tokio::sync::watch;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Slot {
    observed: Observed,
    /// Flips to true when the current run ends.
    ended: watch::Sender<bool>,
    spec: WorkloadSpec,
}

/// A runtime that runs nothing: `start` makes a "process" with a new pid, tests end it with
/// [`FakeRuntime::exit`]; every call is recorded as a line (`start <uid> g<gen>`, `stop <uid>`…).
#[derive(Default)]
pub struct FakeRuntime {
    slots: Mutex<HashMap<String, Slot>>,
    calls: Mutex<Vec<String>>,
    next_pid: Mutex<u32>,
    /// uids `list_owned` reports besides the started ones (orphans from an earlier life).
    pub orphans: Mutex<Vec<String>>,
    /// Lines the next `repair` returns (as if it had put something back).
    pub drift: Mutex<Vec<String>>,
    /// When set, `start` fails with this message.
    pub fail_start: Mutex<Option<String>>,
    /// When set, `start` fails with `DriverError::Refused { reason, .. }`.
    pub refuse_start: Mutex<Option<&'static str>>,
    /// When true, every call fails with `DriverError::Unavailable` (the daemon is down).
    pub unavailable: Mutex<bool>,
}

impl FakeRuntime {
    fn check(&self) -> Result<(), DriverError> {
        if *lock(&self.unavailable) {
            return Err(DriverError::Unavailable {
                runtime: "fake",
                message: "the fake daemon is down".into(),
            });
        }
        Ok(())
    }

    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            next_pid: Mutex::new(1000),
            ..Default::default()
        })
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }

    /// Calls that start with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        lock(&self.calls)
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }

    fn record(&self, s: String) {
        lock(&self.calls).push(s);
    }

    /// What `start` was last given for `uid`.
    pub fn spec_of(&self, uid: &str) -> Option<WorkloadSpec> {
        lock(&self.slots).get(uid).map(|s| s.spec.clone())
    }

    /// Ends the running workload of `uid` as if it had exited with `code` (or been OOM-killed),
    /// after running for `ran`.
    pub fn exit(&self, uid: &str, code: i32, oom: bool, ran: Duration) {
        let mut slots = lock(&self.slots);
        let Some(s) = slots.get_mut(uid) else { return };
        let Observed::Running(r) = &s.observed else {
            return;
        };
        let now = chrono::Utc::now();
        s.observed = Observed::Exited(Exit {
            generation: r.generation,
            exit_code: (!oom).then_some(code),
            signal: oom.then_some(9),
            oom_killed: oom,
            started_at: Some(now - chrono::Duration::from_std(ran).unwrap_or_default()),
            finished_at: Some(now),
            error: None,
        });
        let _ = s.ended.send(true);
    }

    /// Sets what `inspect` reports for `uid` (e.g. a workload recovered after a restart).
    pub fn set(&self, uid: &str, observed: Observed, spec: WorkloadSpec) {
        lock(&self.slots).insert(
            uid.into(),
            Slot {
                observed,
                ended: watch::channel(false).0,
                spec,
            },
        );
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn inspect(&self, uid: &str) -> Result<Observed, DriverError> {
        self.check()?;
        Ok(lock(&self.slots)
            .get(uid)
            .map_or(Observed::Absent, |s| s.observed.clone()))
    }

    async fn start(&self, w: &WorkloadSpec) -> Result<Running, DriverError> {
        self.check()?;
        self.record(format!("start {} g{}", w.uid, w.generation));
        if let Some(reason) = *lock(&self.refuse_start) {
            return Err(DriverError::Refused {
                reason,
                message: format!("refused: {reason}"),
            });
        }
        if let Some(m) = lock(&self.fail_start).clone() {
            return Err(m.into());
        }
        let pid = {
            let mut p = lock(&self.next_pid);
            *p += 1;
            *p
        };
        let r = Running {
            generation: w.generation,
            pid,
            start_time: u64::from(pid) * 7,
            started_at: Some(chrono::Utc::now()),
        };
        self.set(&w.uid, Observed::Running(r.clone()), w.clone());
        Ok(r)
    }

    async fn stop(&self, uid: &str, grace: Duration) -> Result<Option<Exit>, DriverError> {
        self.check()?;
        self.record(format!("stop {uid} {}s", grace.as_secs()));
        self.exit(uid, 143, false, Duration::ZERO);
        Ok(match self.inspect(uid).await? {
            Observed::Exited(e) => Some(e),
            _ => None,
        })
    }

    async fn remove(&self, uid: &str) -> Result<(), DriverError> {
        self.check()?;
        self.record(format!("remove {uid}"));
        lock(&self.slots).remove(uid);
        lock(&self.orphans).retain(|o| o != uid);
        Ok(())
    }

    async fn list_owned(&self) -> Result<Vec<String>, DriverError> {
        self.check()?;
        let mut v: Vec<String> = lock(&self.slots).keys().cloned().collect();
        v.extend(lock(&self.orphans).iter().cloned());
        Ok(v)
    }

    async fn repair(&self, w: &WorkloadSpec, _r: &Running) -> Result<Vec<String>, DriverError> {
        self.record(format!("repair {}", w.uid));
        Ok(std::mem::take(&mut *lock(&self.drift)))
    }

    fn exited(&self, uid: &str, r: &Running) -> Option<BoxFuture<'static, ()>> {
        let slots = lock(&self.slots);
        let s = slots.get(uid)?;
        if s.observed != Observed::Running(r.clone()) {
            return None;
        }
        let mut rx = s.ended.subscribe();
        Some(Box::pin(async move {
            let _ = rx.wait_for(|v| *v).await;
        }))
    }

    /// One line naming the uid and query, so a test sees what reached the runtime.
    async fn logs(&self, uid: &str, q: &LogQuery) -> Result<LogStream, DriverError> {
        self.check()?;
        self.record(format!("logs {uid}"));
        let line = format!("log of {uid} tail={:?}\n", q.tail).into_bytes();
        Ok(Box::pin(futures::stream::iter([Ok(line)])))
    }

    /// Echoes argv on stdout (then whatever stdin brings), exit code 0.
    async fn exec(
        &self,
        uid: &str,
        argv: &[String],
        stdin: bool,
    ) -> Result<ExecSession, DriverError> {
        self.check()?;
        self.record(format!("exec {uid}"));
        let head = futures::stream::iter([Ok::<_, DriverError>(ExecEvent::Stdout(
            argv.join(" ").into_bytes(),
        ))]);
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
        let echoed = futures::stream::unfold(rx, |mut rx| async move {
            let b = rx.recv().await?;
            Some((Ok(ExecEvent::Stdout(b)), rx))
        });
        let exit = futures::stream::iter([Ok(ExecEvent::Exit(0))]);
        Ok(ExecSession {
            stdin: stdin.then_some(tx),
            events: Box::pin(futures::StreamExt::chain(
                futures::StreamExt::chain(head, echoed),
                exit,
            )),
        })
    }
}

/// Attachments that answer what the test set and record `ensure`/`remove` calls.
pub struct FakeAttachments {
    pub answer: Mutex<Attach>,
    pub calls: Mutex<Vec<String>>,
}

impl Default for FakeAttachments {
    fn default() -> Self {
        Self {
            answer: Mutex::new(Attach::Ready {
                netns: None,
                networks: vec![],
            }),
            calls: Mutex::default(),
        }
    }
}

#[async_trait]
impl Attachments for FakeAttachments {
    async fn ensure(
        &self,
        _namespace: &str,
        uid: &str,
        _spec: &ContainerSpec,
    ) -> Result<Attach, DriverError> {
        lock(&self.calls).push(format!("ensure {uid}"));
        Ok(lock(&self.answer).clone())
    }

    async fn remove(&self, uid: &str) -> Result<(), DriverError> {
        lock(&self.calls).push(format!("remove {uid}"));
        Ok(())
    }
}
