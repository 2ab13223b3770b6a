//! The native container runtime: [`ContainerRuntime`] over the shim (`tend shim`, pidfds) and
//! the cgroup driver. Host objects carry their owner: the directory
//! `<state-dir>/containers/<uid>/` (see [`files`]) and the cgroup `tend/<instance>-<uid>`.
//!
//! Drift: exits are seen through pidfds ([`ContainerRuntime::exited`]); a changed limit or a
//! deleted cgroup is found by [`ContainerRuntime::repair`], which the controller runs on every
//! reconcile — i.e. on resync (`tend serve --resync-seconds`, default 60 s) or any other trigger.

pub mod cli;
mod exec;
pub mod files;
pub mod limits_watch;
pub mod usage;

use crate::cgroup::{AnyCgroupManager, CgroupError, CgroupManager, DEFAULT_DEVICES};
use crate::shim::{self, LogLimits, PidFd, ShimError, ShimState};
use crate::util::blocking;
use async_trait::async_trait;
use files::{cgroup_name, container_dir, limits, read_json, write_json, Meta};
use futures::future::BoxFuture;
use futures::StreamExt;
use limits_watch::LimitsWatch;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tend_controllers::container::{
    ContainerRuntime, DriverError, ExecSession, Exit, LogQuery, LogStream, Observed, Running,
    WorkloadSpec,
};

/// What can go wrong in the native runtime; each variant names the container, path or call.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("container {uid}: {source}")]
    Shim {
        uid: String,
        #[source]
        source: ShimError,
    },
    #[error("container {uid}: cgroup {op}: {source}")]
    Cgroup {
        uid: String,
        op: &'static str,
        #[source]
        source: CgroupError,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// `exec` on a container whose workload does not run.
    #[error("container {uid} is not running")]
    NotRunning { uid: String },
}

impl From<NativeError> for DriverError {
    fn from(e: NativeError) -> Self {
        match e {
            NativeError::NotRunning { .. } => DriverError::NotRunning {
                message: e.to_string(),
            },
            NativeError::Shim {
                source: ShimError::Unsupported { message },
                ..
            } => DriverError::Refused {
                reason: "UserNamespaceUnsupported",
                message,
            },
            e => DriverError::failed(e),
        }
    }
}

impl NativeError {
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NativeError {
        let path = path.to_owned();
        move |source| NativeError::Io { op, path, source }
    }
}

/// The native runtime of one daemon instance.
#[derive(Clone)]
pub struct NativeRuntime {
    exe: PathBuf,
    root: PathBuf,
    instance: String,
    cgroups: Arc<AnyCgroupManager>,
    log: LogLimits,
    limits_watch: Option<Arc<LimitsWatch>>,
    usage: Option<Arc<usage::UsageSampler>>,
}

fn time(s: &str) -> Option<tend_schema::Time> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

impl NativeRuntime {
    /// A runtime that starts `exe shim` for containers in directories under `root`, with
    /// cgroups named `<instance>-<uid>` through `cgroups`.
    pub fn new(
        exe: PathBuf,
        root: PathBuf,
        instance: &str,
        cgroups: Arc<AnyCgroupManager>,
    ) -> Self {
        Self {
            exe,
            root,
            instance: instance.to_string(),
            cgroups,
            log: LogLimits::default(),
            limits_watch: None,
            usage: None,
        }
    }

    /// Watches each running container's limit files, so a limit rewritten on the host wakes
    /// the Container at once (see [`limits_watch`]).
    pub fn with_limits_watch(mut self, w: Arc<LimitsWatch>) -> Self {
        self.limits_watch = Some(w);
        self
    }

    /// Rotates every container's log at these limits unless its `spec.logs` says otherwise.
    pub fn with_log_limits(mut self, log: LogLimits) -> Self {
        self.log = log;
        self
    }

    /// Serves `status.usage` from `sampler`'s last pass.
    pub fn with_usage(mut self, sampler: Arc<usage::UsageSampler>) -> Self {
        self.usage = Some(sampler);
        self
    }

    /// Watches `uid`'s group for limit writes other than `want` (blocking; see [`LimitsWatch`]).
    fn watch_limits(&self, uid: &str, want: crate::cgroup::Limits) {
        if let Some(w) = &self.limits_watch {
            w.watch(uid, &cgroup_name(&self.instance, uid), want);
        }
    }

    fn dir(&self, uid: &str) -> PathBuf {
        container_dir(&self.root, uid)
    }

    fn cg<T: Send + 'static>(
        &self,
        uid: &str,
        op: &'static str,
        f: impl FnOnce(&AnyCgroupManager, &str) -> crate::cgroup::Result<T> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, NativeError>> {
        let (cg, name, uid) = (
            self.cgroups.clone(),
            cgroup_name(&self.instance, uid),
            uid.to_string(),
        );
        async move {
            blocking(move || f(&cg, &name))
                .await
                .map_err(|source| NativeError::Cgroup { uid, op, source })
        }
    }

    fn start_blocking(&self, w: &WorkloadSpec) -> Result<Running, NativeError> {
        let dir = self.dir(&w.uid);
        std::fs::create_dir_all(&dir).map_err(NativeError::io("mkdir", &dir))?;
        let name = cgroup_name(&self.instance, &w.uid);
        let cg_err = |op| {
            let uid = w.uid.clone();
            move |source| NativeError::Cgroup { uid, op, source }
        };
        self.cgroups.create(&name).map_err(cg_err("create"))?;
        self.cgroups
            .apply(&name, &limits(&w.spec))
            .map_err(cg_err("apply"))?;
        if files::restricts_devices(&w.spec) {
            self.cgroups
                .restrict_devices(&name, &DEFAULT_DEVICES)
                .map_err(cg_err("devices"))?;
        }
        self.watch_limits(&w.uid, limits(&w.spec));
        files::rotate_previous(&dir)?;
        let log = self.log.with_spec(w.spec.logs.as_ref());
        let config = files::shim_config(w, &self.cgroups, &name, log);
        write_json(&dir.join("config.json"), &config)?;
        let meta = Meta {
            uid: w.uid.clone(),
            name: w.name.clone(),
            generation: w.generation,
        };
        write_json(&dir.join("meta.json"), &meta)?;
        let h = shim::spawn_shim(&self.exe, &dir).map_err(|source| NativeError::Shim {
            uid: w.uid.clone(),
            source,
        })?;
        Ok(Running {
            generation: w.generation,
            pid: h.workload_pid as u32,
            start_time: h.workload_start_time,
            started_at: time(&h.started_at),
        })
    }

    /// Runs `argv` inside the running workload of `uid` (its namespaces, root and cgroup) with
    /// the container's environment and the caller's stdio; returns the exit code. Blocking.
    pub fn exec(containers_root: &Path, uid: &str, argv: &[String]) -> Result<i32, NativeError> {
        let dir = container_dir(containers_root, uid);
        let shim_err = |source| NativeError::Shim {
            uid: uid.to_string(),
            source,
        };
        let ShimState::Running(h) = shim::read_state(&dir).map_err(shim_err)? else {
            return Err(NativeError::NotRunning { uid: uid.into() });
        };
        let config: shim::ShimConfig = read_json(&dir.join("config.json"))?
            .ok_or_else(|| NativeError::NotRunning { uid: uid.into() })?;
        shim::exec_in(h.workload_pid, argv, &config.env, &config).map_err(shim_err)
    }
}

/// Every pid in the PID namespace of `pid` (the container's processes), from /proc.
fn pids_in_namespace_of(pid: u32) -> Vec<i32> {
    let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/pid")) else {
        return vec![];
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|l| l == ns))
        .collect()
}

fn exit_of(generation: i64, rec: shim::ExitRecord) -> Exit {
    Exit {
        generation,
        exit_code: rec.exit_code,
        signal: rec.signal,
        oom_killed: rec.oom_killed,
        started_at: time(&rec.started_at),
        finished_at: time(&rec.finished_at),
        error: rec.error,
    }
}

#[async_trait]
impl ContainerRuntime for NativeRuntime {
    fn usage(&self, uid: &str) -> Option<tend_schema::kinds::container::ContainerUsage> {
        self.usage.as_ref()?.get(uid)
    }

    fn usage_history(&self, uid: &str) -> Vec<tend_schema::kinds::container::ContainerUsage> {
        self.usage
            .as_ref()
            .map(|u| u.history(uid))
            .unwrap_or_default()
    }

    fn name(&self) -> &'static str {
        "native"
    }

    async fn inspect(&self, uid: &str) -> Result<Observed, DriverError> {
        let (dir, uid) = (self.dir(uid), uid.to_string());
        let o = blocking(move || -> Result<Observed, NativeError> {
            let Some(meta) = read_json::<Meta>(&dir.join("meta.json"))? else {
                return Ok(Observed::Absent);
            };
            let g = meta.generation;
            let state =
                shim::read_state(&dir).map_err(|source| NativeError::Shim { uid, source })?;
            Ok(match state {
                ShimState::Running(h) => Observed::Running(Running {
                    generation: g,
                    pid: h.workload_pid as u32,
                    start_time: h.workload_start_time,
                    started_at: time(&h.started_at),
                }),
                ShimState::Exiting(_) => Observed::Exiting { generation: g },
                ShimState::Exited(rec) => Observed::Exited(exit_of(g, rec)),
                ShimState::Lost(_) => Observed::Lost { generation: g },
                ShimState::Absent => Observed::Absent,
            })
        })
        .await?;
        Ok(o)
    }

    async fn start(&self, w: &WorkloadSpec) -> Result<Running, DriverError> {
        let uid = w.spec.user.unwrap_or_default().uid;
        if w.spec.security().run_as_non_root && uid == 0 {
            return Err(DriverError::Refused {
                reason: "RunAsNonRoot",
                message: "securityContext.runAsNonRoot is set but the container would run as uid 0 (set spec.user.uid)".into(),
            });
        }
        if let Some(ns) = w.user_namespace {
            let user = w.spec.user.unwrap_or_default();
            if user.uid >= ns.size || user.gid >= ns.size {
                return Err(DriverError::Refused {
                    reason: "UserOutsideUserNamespace",
                    message: format!(
                        "securityContext.userNamespace maps ids 0-{} but the container would run as {}:{}",
                        ns.size - 1,
                        user.uid,
                        user.gid
                    ),
                });
            }
        }
        let (me, w) = (self.clone(), w.clone());
        Ok(blocking(move || me.start_blocking(&w)).await?)
    }

    async fn stop(&self, uid: &str, grace: Duration) -> Result<Option<Exit>, DriverError> {
        let dir = self.dir(uid);
        if !dir.exists() {
            return Ok(None);
        }
        let meta: Option<Meta> = read_json(&dir.join("meta.json"))?;
        let rec = shim::stop(&dir, grace)
            .await
            .map_err(|source| NativeError::Shim {
                uid: uid.to_string(),
                source,
            })?;
        Ok(rec.map(|r| exit_of(meta.map_or(0, |m| m.generation), r)))
    }

    async fn remove(&self, uid: &str) -> Result<(), DriverError> {
        self.cg(uid, "kill", |cg, n| match cg.kill_all(n) {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        })
        .await?;
        self.cg(uid, "remove", |cg, n| cg.remove(n)).await?;
        let dir = self.dir(uid);
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(NativeError::io("remove", &dir)(e).into())
            }
            _ => Ok(()),
        }
    }

    async fn list_owned(&self) -> Result<Vec<String>, DriverError> {
        let prefix = format!("{}-", self.instance);
        let mut uids: Vec<String> = self
            .cg("*", "list", move |cg, _| cg.list(&prefix))
            .await?
            .into_iter()
            .filter_map(|n| n.split_once('-').map(|(_, u)| u.to_string()))
            .collect();
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            uids.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok()),
            );
        }
        uids.sort();
        uids.dedup();
        Ok(uids)
    }

    async fn repair(&self, w: &WorkloadSpec, r: &Running) -> Result<Vec<String>, DriverError> {
        let want = limits(&w.spec).normalized();
        let pid = r.pid;
        let (watch, uid) = (self.limits_watch.clone(), w.uid.clone());
        let devices = files::restricts_devices(&w.spec);
        // After a daemon restart (or a recreated group) the watch starts here; idempotent.
        let rewatch = move |n: &str| {
            if let Some(w) = &watch {
                w.watch(&uid, n, want);
            }
        };
        let fixes = self
            .cg(&w.uid, "repair", move |cg, n| {
                let mut fixes = Vec::new();
                if !cg.exists(n)? {
                    cg.create(n)?;
                    cg.apply(n, &want)?;
                    if devices {
                        cg.restrict_devices(n, &DEFAULT_DEVICES)?;
                    }
                    for p in pids_in_namespace_of(pid) {
                        cg.add_task(n, p)?;
                    }
                    rewatch(n);
                    fixes.push(format!(
                        "cgroup {n} was deleted: recreated, workload moved back"
                    ));
                    return Ok(fixes);
                }
                rewatch(n);
                let have = cg.read_limits(n)?;
                if have != want {
                    cg.apply(n, &want)?;
                    fixes.push(format!("cgroup {n} limits were {have}: set back to {want}"));
                }
                Ok(fixes)
            })
            .await?;
        Ok(fixes)
    }

    async fn logs(&self, uid: &str, q: &LogQuery) -> Result<LogStream, DriverError> {
        let (root, uid, q) = (self.root.clone(), uid.to_string(), q.clone());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut out = cli::ChannelWriter(tx);
            if let Err(e) = cli::logs(&root, &uid, &q, &mut out).await {
                tracing::debug!(error = %e, uid, "log stream ended");
            }
        });
        let lines = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok);
        Ok(Box::pin(lines))
    }

    /// Runs `tend exec-native` (this binary) in a process group of its own, so the daemon's
    /// own stdio is never the command's and a dropped session kills the whole group.
    async fn exec(
        &self,
        uid: &str,
        argv: &[String],
        stdin: bool,
    ) -> Result<ExecSession, DriverError> {
        let dir = self.dir(uid);
        let state = blocking(move || shim::read_state(&dir)).await;
        if !matches!(state, Ok(ShimState::Running(_))) {
            return Err(NativeError::NotRunning { uid: uid.into() }.into());
        }
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("exec-native")
            .arg(&self.root)
            .arg(uid)
            .arg("--")
            .args(argv)
            .kill_on_drop(true);
        Ok(exec::spawn(cmd, stdin)?)
    }

    fn exited(&self, uid: &str, r: &Running) -> Option<BoxFuture<'static, ()>> {
        let workload = PidFd::open(r.pid as i32, r.start_time).ok()?;
        // Also wait for the shim to record the exit, so the woken reconcile reads exit.json.
        let shim = match shim::read_state(&self.dir(uid)) {
            Ok(ShimState::Running(h)) => PidFd::open(h.shim_pid, h.shim_start_time).ok(),
            _ => None,
        };
        Some(Box::pin(async move {
            let _ = workload.exited().await;
            if let Some(s) = shim {
                let _ = tokio::time::timeout(Duration::from_secs(5), s.exited()).await;
            }
        }))
    }
}
