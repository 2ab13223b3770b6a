//! What native workloads use: one pass over this daemon's cgroups every interval — one listing
//! of the groups named `<instance>-*`, then a handful of small reads per group — never a task or
//! a timer per container. The last sample of each is kept in memory and served with reads of the
//! Container (`status.usage`), by `tend top` and as cAdvisor-named series on `/metrics`; the last
//! [`HISTORY`] samples of each are kept too, for the web view's sparklines. Nothing is written to
//! the store.

use super::files::cgroup_name;
use crate::cgroup::{AnyCgroupManager, CgroupManager};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tend_schema::kinds::container::{ContainerUsage, PressureSample};

/// How often [`UsageSampler::run`] samples unless `tend serve --usage-interval` says otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Samples kept per workload for [`UsageSampler::history`] (10 minutes at the default interval).
pub const HISTORY: usize = 60;

struct Sampled {
    usage: ContainerUsage,
    cpu_ns: u64,
    at: Instant,
}

/// The last usage sample of every native workload of one daemon, by Container uid.
pub struct UsageSampler {
    cgroups: Arc<AnyCgroupManager>,
    instance: String,
    last: RwLock<HashMap<String, Sampled>>,
    /// The last [`HISTORY`] samples of each workload still present, oldest first.
    history: Mutex<HashMap<String, VecDeque<ContainerUsage>>>,
}

impl UsageSampler {
    pub fn new(cgroups: Arc<AnyCgroupManager>, instance: &str) -> Self {
        Self {
            cgroups,
            instance: instance.to_string(),
            last: RwLock::default(),
            history: Mutex::default(),
        }
    }

    /// Samples every group of this daemon once (blocking: file reads); returns how many were
    /// read. A group that vanishes meanwhile is left out.
    pub fn sample(&self) -> usize {
        let prefix = cgroup_name(&self.instance, "");
        let names = self.cgroups.list(&prefix).unwrap_or_default();
        let now = Instant::now();
        let wall = tend_schema::meta::now();
        let mut next = HashMap::with_capacity(names.len());
        let prev = self.last.read().unwrap_or_else(|p| p.into_inner());
        for name in &names {
            let Some(uid) = name.strip_prefix(&prefix) else {
                continue;
            };
            let Ok(u) = self.cgroups.usage(name) else {
                continue;
            };
            let cpu_ns = u.cpu_ns.unwrap_or(0);
            let cpu_cores = prev.get(uid).and_then(|p| {
                let dt = now.duration_since(p.at).as_secs_f64();
                (dt > 0.0 && cpu_ns >= p.cpu_ns).then(|| (cpu_ns - p.cpu_ns) as f64 / 1e9 / dt)
            });
            let avg10 = |p: Option<crate::cgroup::Pressure>| p.map_or(0.0, |p| p.some.avg10);
            let pressure = u.pressure;
            let usage = ContainerUsage {
                cpu_seconds: cpu_ns as f64 / 1e9,
                cpu_cores,
                memory_bytes: u.memory_bytes.unwrap_or(0),
                working_set_bytes: u.working_set_bytes.unwrap_or(0),
                pids: u.pids.unwrap_or(0),
                pressure: (pressure.cpu.is_some()
                    || pressure.memory.is_some()
                    || pressure.io.is_some())
                .then(|| PressureSample {
                    cpu: avg10(pressure.cpu),
                    memory: avg10(pressure.memory),
                    io: avg10(pressure.io),
                }),
                sampled_at: wall,
            };
            let at = now;
            next.insert(uid.to_string(), Sampled { usage, cpu_ns, at });
        }
        drop(prev);
        let n = next.len();
        {
            let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
            history.retain(|uid, _| next.contains_key(uid));
            for (uid, s) in &next {
                let ring = history.entry(uid.clone()).or_default();
                if ring.len() == HISTORY {
                    ring.pop_front();
                }
                ring.push_back(s.usage.clone());
            }
        }
        *self.last.write().unwrap_or_else(|p| p.into_inner()) = next;
        n
    }

    /// The last sample of `uid`'s workload.
    pub fn get(&self, uid: &str) -> Option<ContainerUsage> {
        let last = self.last.read().unwrap_or_else(|p| p.into_inner());
        last.get(uid).map(|s| s.usage.clone())
    }

    /// The last samples of `uid`'s workload (at most [`HISTORY`]), oldest first; empty when it
    /// has none.
    pub fn history(&self, uid: &str) -> Vec<ContainerUsage> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history
            .get(uid)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Samples every `every` until the task is dropped, each pass on the blocking pool.
    pub async fn run(self: Arc<Self>, every: Duration) {
        loop {
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.sample()).await;
            tokio::time::sleep(every).await;
        }
    }
}
