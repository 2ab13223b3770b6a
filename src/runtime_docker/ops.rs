//! [`ContainerRuntime`] for Docker: inspect, start (create+start, replacing what is left),
//! stop, remove, the per-instance list, drift repair (spec hash, limits), exit watchers, and the
//! `logs`/`exec` entry points the API calls by uid.

use super::mapping::{self, container_name, ImageSource, LABEL_INSTANCE};
use super::{lock, DockerRuntime, DockerRuntimeError, Wake};
use crate::docker::{spec_hash, ContainerInfo, DockerError, DockerSpec, ImportSource, LogOptions};
use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::StreamExt;
use std::time::{Duration, Instant};
use tend_controllers::container::{
    ContainerRuntime, DriverError, ExecSession, Exit, LogQuery, LogStream, Observed, Running,
    WorkloadSpec,
};
use tokio::sync::broadcast::error::RecvError;

/// How long an inspect stands in for a fresh one (the controller's inspect, then `repair`).
const FRESH: Duration = Duration::from_millis(500);

impl DockerRuntime {
    /// This instance's container for `uid`, or `None` (absent, or another instance's).
    async fn find(&self, uid: &str) -> Result<Option<ContainerInfo>, DriverError> {
        if lock(&self.have).as_ref().is_some_and(|h| !h.contains(uid)) {
            return Ok(None);
        }
        self.check_breaker()?;
        lock(&self.known).insert(uid.to_string());
        let info = match self.driver.inspect(&container_name(uid)).await {
            Ok(i) => i,
            Err(e) if e.is_not_found() => {
                lock(&self.ids).remove(uid);
                lock(&self.last).remove(uid);
                if let Some(h) = lock(&self.have).as_mut() {
                    h.remove(uid);
                }
                return Ok(None);
            }
            Err(e) => return Err(self.fault(uid, "inspect", e)),
        };
        if info.labels.get(LABEL_INSTANCE) != Some(&self.instance) {
            return Ok(None);
        }
        lock(&self.ids).insert(uid.to_string(), info.id.clone());
        lock(&self.last).insert(uid.to_string(), (Instant::now(), info.clone()));
        Ok(Some(info))
    }

    /// What the controller sees; an `oom` event counts even when Docker's inspect missed it
    /// (dockerd can handle the exit before the OOM notice and leave `OOMKilled` false).
    fn observed(&self, info: &ContainerInfo) -> Observed {
        let mut o = mapping::observed(info);
        if let Observed::Exited(e) = &mut o {
            e.oom_killed |= lock(&self.oom).contains(&info.id);
        }
        o
    }

    /// The image reference for `w`, importing a State's tree first when it is not there yet.
    async fn image(&self, w: &WorkloadSpec) -> Result<String, DriverError> {
        let src = mapping::resolve_image(&self.ctx, w)
            .await
            .map_err(|e| -> DriverError {
                match e {
                    DockerRuntimeError::StateNotReady { .. } => DriverError::Refused {
                        reason: "WaitingForState",
                        message: e.to_string(),
                    },
                    e => DriverError::failed(e),
                }
            })?;
        if let ImageSource::State { tag, path } = &src {
            let _one = self.imports.lock().await;
            let have = self
                .driver
                .image_exists(tag)
                .await
                .map_err(|e| self.fault(&w.uid, "inspect image", e))?;
            if !have {
                tracing::info!(%tag, %path, "importing a State as a docker image");
                let source = ImportSource::Directory(path.into());
                self.driver
                    .import_image(&source, tag, &[(LABEL_INSTANCE, &self.instance)])
                    .await
                    .map_err(|e| self.fault(&w.uid, "import image", e))?;
            }
        }
        Ok(src.reference().to_string())
    }

    /// Removes the State images this instance imported that no container uses any more (a
    /// deleted Container's, or an older generation's). Skipped, never waited for, while a
    /// container is being made from a State image; failures are logged: the next removal or
    /// start-up sweep tries again.
    pub(crate) async fn sweep_state_images(&self) {
        let Ok(_alone) = self.images_in_use.try_write() else {
            return;
        };
        let _one = self.imports.lock().await;
        match self
            .driver
            .remove_unused_images(
                mapping::STATE_IMAGE_REPO,
                (LABEL_INSTANCE, &self.instance),
                Duration::ZERO,
            )
            .await
        {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(?removed, "removed State images no container uses");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweeping unused State images"),
        }
    }

    /// The Docker spec `w` asks for now.
    async fn desired(&self, w: &WorkloadSpec) -> Result<DockerSpec, DriverError> {
        let image = self.image(w).await?;
        Ok(mapping::docker_spec(w, image, &self.instance))
    }

    /// Removes what is left of `uid` and creates and starts a fresh container from `spec`.
    async fn create(&self, w: &WorkloadSpec, spec: &DockerSpec) -> Result<Running, DriverError> {
        let name = container_name(&w.uid);
        // The controller inspected just before (`find` keeps `ids` current): only remove when
        // something was there; a stale view ends in a name conflict, handled below.
        if lock(&self.ids).contains_key(&w.uid) {
            self.driver
                .remove(&name, true)
                .await
                .map_err(|e| self.fault(&w.uid, "remove", e))?;
        }
        let owner = mapping::owner(w);
        lock(&self.known).insert(w.uid.clone());
        if let Some(h) = lock(&self.have).as_mut() {
            h.insert(w.uid.clone());
        }
        let mut tries = 0;
        let id = loop {
            match self.driver.create_and_start(&owner, spec).await {
                // The name is still taken (a removal behind tend's back is in progress).
                Err(DockerError::Conflict { .. }) if tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = self.driver.remove(&name, true).await;
                }
                r => break r.map_err(|e| self.fault(&w.uid, "create and start", e))?,
            }
        };
        lock(&self.ids).insert(w.uid.clone(), id.clone());
        let info = self
            .driver
            .inspect(&id)
            .await
            .map_err(|e| self.fault(&w.uid, "inspect", e))?;
        if let (Some(netns), Some(pid)) = (&w.netns, info.pid) {
            super::netns::adopt(&w.uid, netns, pid).await?;
        }
        match mapping::observed(&info) {
            Observed::Running(r) => Ok(r),
            // It already ended: report it as started; the exit watcher wakes the controller.
            _ => Ok(Running {
                generation: w.generation,
                pid: info.pid.unwrap_or(0),
                start_time: 0,
                started_at: info.started_at,
            }),
        }
    }
}

fn not_found(uid: &str) -> DriverError {
    DriverError::NotFound {
        message: DockerRuntimeError::NotFound {
            uid: uid.to_string(),
        }
        .to_string(),
    }
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn inspect(&self, uid: &str) -> Result<Observed, DriverError> {
        Ok(match self.find(uid).await? {
            None => Observed::Absent,
            Some(info) => self.observed(&info),
        })
    }

    async fn start(&self, w: &WorkloadSpec) -> Result<Running, DriverError> {
        // The State image of the container this start replaces, as last inspected.
        let before = lock(&self.last)
            .get(&w.uid)
            .and_then(|(_, i)| i.image.clone())
            .filter(|i| i.starts_with(mapping::STATE_IMAGE_REPO));
        let using = self.images_in_use.read().await;
        let spec = self.desired(w).await?;
        let running = self.create(w, &spec).await?;
        drop(using);
        if before.is_some_and(|b| b != spec.image) {
            self.sweep_state_images().await;
        }
        Ok(running)
    }

    async fn stop(&self, uid: &str, grace: Duration) -> Result<Option<Exit>, DriverError> {
        let Some(info) = self.find(uid).await? else {
            return Ok(None);
        };
        if info.running {
            match self.driver.stop(&info.id, grace).await {
                Err(e) if !e.is_not_found() => return Err(self.fault(uid, "stop", e)),
                _ => {}
            }
        }
        Ok(match self.find(uid).await? {
            Some(after) => match self.observed(&after) {
                Observed::Exited(e) => Some(e),
                _ => None,
            },
            None => None,
        })
    }

    async fn remove(&self, uid: &str) -> Result<(), DriverError> {
        if let Some(info) = self.find(uid).await? {
            self.driver
                .remove(&info.id, true)
                .await
                .map_err(|e| self.fault(uid, "remove", e))?;
        }
        lock(&self.ids).remove(uid);
        lock(&self.last).remove(uid);
        lock(&self.known).remove(uid);
        self.sweep_state_images().await;
        Ok(())
    }

    async fn list_owned(&self) -> Result<Vec<String>, DriverError> {
        self.check_breaker()?;
        let all = self
            .driver
            .list_owned()
            .await
            .map_err(|e| self.fault("*", "list", e))?;
        let mut mine = Vec::new();
        // The list has no labels beyond the owner: inspect each for the instance label.
        for c in all {
            match self.driver.inspect(&c.id).await {
                Ok(i) if i.labels.get(LABEL_INSTANCE) == Some(&self.instance) => {
                    mine.push(c.owner.uid)
                }
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(self.fault(&c.owner.uid, "inspect", e)),
            }
        }
        mine.sort();
        mine.dedup();
        self.sweep_state_images().await;
        let mut have = lock(&self.have);
        let h = have.get_or_insert_with(Default::default);
        h.extend(mine.iter().cloned());
        Ok(mine)
    }

    async fn repair(&self, w: &WorkloadSpec, r: &Running) -> Result<Vec<String>, DriverError> {
        let recent = lock(&self.last)
            .get(&w.uid)
            .filter(|(at, i)| at.elapsed() < FRESH && i.pid == Some(r.pid))
            .map(|(_, i)| i.clone());
        let info = match recent {
            Some(i) => i,
            None => match self.find(&w.uid).await? {
                Some(i) => i,
                None => return Ok(vec![]),
            },
        };
        let using = self.images_in_use.read().await;
        let want = self.desired(w).await?;
        let hash = spec_hash(&want);
        let drift = if info.spec_hash.as_deref() != Some(hash.as_str()) {
            Some(format!(
                "spec hash {} != {hash}",
                info.spec_hash.as_deref().unwrap_or("none")
            ))
        } else if (info.memory, info.nano_cpus, info.pids_limit)
            != (want.memory, want.nano_cpus(), want.pids)
        {
            Some(format!(
                "limits were memory {:?} nanoCpus {:?} pids {:?}",
                info.memory, info.nano_cpus, info.pids_limit
            ))
        } else {
            None
        };
        let Some(why) = drift else {
            return Ok(vec![]);
        };
        let grace = Duration::from_secs(u64::from(w.spec.grace_period_seconds()));
        self.stop(&w.uid, grace).await?;
        let new = self.create(w, &want).await?;
        drop(using);
        // The replaced container may have been the last one on an older State image.
        self.sweep_state_images().await;
        Ok(vec![format!(
            "docker container {} (pid {}): {why}: replaced by {} (pid {})",
            short(&info.id),
            r.pid,
            short(&self.container_id(&w.uid).unwrap_or_default()),
            new.pid
        )])
    }

    /// The container's output through dockerd (`tail`, `follow`, `since`, `timestamps`, the
    /// latter as the native runtime prints them: `<time> <stream> <text>`); `previous` is
    /// refused: a restart replaces the Docker container, so there is no earlier run's log.
    async fn logs(&self, uid: &str, q: &LogQuery) -> Result<LogStream, DriverError> {
        if q.previous {
            // A restart replaces the Docker container, and its log goes with it.
            return Err(DriverError::Refused {
                reason: "Unsupported",
                message: "previous is not supported for docker containers: a restart replaces \
                          the Docker container and dockerd drops its log"
                    .into(),
            });
        }
        let info = self.find(uid).await?.ok_or_else(|| not_found(uid))?;
        let since = q.since.map(|d| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            now.saturating_sub(d).as_secs() as i64
        });
        let o = LogOptions {
            tail: q.tail,
            follow: q.follow,
            since,
            until: None,
            timestamps: q.timestamps,
        };
        let lines = self
            .driver
            .logs_with(&info.id, &o)
            .await
            .map_err(|e| self.fault(uid, "logs", e))?;
        let chunks = lines
            .take_while(|l| std::future::ready(l.is_ok()))
            .filter_map(|l| std::future::ready(l.ok()))
            .map(|l| Ok(log_line(&l).into_bytes()));
        Ok(Box::pin(chunks))
    }

    async fn exec(
        &self,
        uid: &str,
        argv: &[String],
        stdin: bool,
    ) -> Result<ExecSession, DriverError> {
        let info = self.find(uid).await?.ok_or_else(|| not_found(uid))?;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let started = self
            .driver
            .exec_start(&info.id, &argv, stdin)
            .await
            .map_err(|e| self.fault(uid, "exec", e))?;
        Ok(super::exec::session(self.driver.clone(), started))
    }

    fn exited(&self, uid: &str, r: &Running) -> Option<BoxFuture<'static, ()>> {
        let id = lock(&self.ids).get(uid).cloned()?;
        if r.pid == 0 {
            return None;
        }
        // Subscribe before looking, so an exit between the look and the wait is not missed.
        let mut rx = self.wake.subscribe();
        let (driver, uid) = (self.driver.clone(), uid.to_string());
        Some(Box::pin(async move {
            if !driver.inspect(&id).await.is_ok_and(|i| i.running) {
                return;
            }
            loop {
                match rx.recv().await {
                    Ok(Wake::Uid(u)) if u == uid => return,
                    Ok(Wake::All) | Err(RecvError::Lagged(_)) => return,
                    Ok(_) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        }))
    }

    fn container_id(&self, uid: &str) -> Option<String> {
        lock(&self.ids).get(uid).cloned()
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// One line as `tend logs` prints it.
fn log_line(l: &crate::docker::LogLine) -> String {
    match &l.time {
        Some(t) => {
            let stream = match l.stream {
                crate::docker::LogStream::Stdout => "stdout",
                crate::docker::LogStream::Stderr => "stderr",
            };
            format!("{t} {stream} {}\n", l.line)
        }
        None => format!("{}\n", l.line),
    }
}
