//! cgroup v2 (unified hierarchy): one directory `tend/<name>`; controllers enabled down the
//! tree through cgroup.subtree_control; limits in memory.max (+ memory.swap.max 0), cpu.max and
//! pids.max; OOM kills counted from memory.events; stop with cgroup.kill and wait for
//! `populated 0` in cgroup.events (woken by the kernel's file notification, not by polling).
//!
//! Delegation rules: processes only ever join leaf groups (`tend/<name>`); `tend/` itself holds
//! none, so the kernel's "no internal processes" rule is kept and controllers can be enabled in
//! its cgroup.subtree_control at any time.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::fs::{self, CgroupError, Result, DRAIN_TIMEOUT};
use super::stats::{read_key, read_number, read_pressure, Stats, Usage};
use super::{CgroupManager, Limits, Resource, CPU_PERIOD_US, PARENT};

/// Failpoint checked before every limit write (`cgroup.v2.write=error` in a daemon's failpoints
/// file makes each one fail): proves that the v2 suite notices a broken limit write.
pub const WRITE_FAILPOINT: &str = "cgroup.v2.write";

/// Controllers tend enables for its groups, when the hierarchy offers them.
const WANTED: [&str; 3] = ["cpu", "memory", "pids"];

/// cgroup v2 manager rooted at a cgroup2 mount (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// on a hybrid host, where it usually has no controllers).
#[derive(Debug, Clone)]
pub struct V2Manager {
    root: PathBuf,
}

impl V2Manager {
    /// A manager for the unified hierarchy mounted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        V2Manager { root: root.into() }
    }

    fn parent(&self) -> PathBuf {
        self.root.join(PARENT)
    }

    fn group(&self, name: &str) -> Result<PathBuf> {
        fs::check_name(name)?;
        Ok(self.parent().join(name))
    }

    /// Enables in `dir`'s cgroup.subtree_control every wanted controller `dir` has but has not
    /// enabled yet, in one write ("+cpu +memory +pids").
    fn enable_controllers(&self, dir: &std::path::Path) -> Result<()> {
        let available = fs::read(&dir.join("cgroup.controllers"))?;
        let control = dir.join("cgroup.subtree_control");
        let enabled = fs::read(&control)?;
        let has = |list: &str, c: &str| {
            list.split_whitespace()
                .any(|w| w.trim_start_matches('+') == c)
        };
        let missing: Vec<String> = WANTED
            .iter()
            .filter(|c| has(&available, c) && !has(&enabled, c))
            .map(|c| format!("+{c}"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        fs::write(&control, &missing.join(" "))
    }

    /// Writes `value` to the group's `file`; a missing file (controller not enabled) is an error
    /// only when `limited`.
    fn set(&self, name: &str, file: &str, value: &str, limited: bool) -> Result<()> {
        let path = self.group(name)?.join(file);
        if path.exists() {
            crate::failpoint::check(WRITE_FAILPOINT).map_err(|source| CgroupError::Injected {
                path: path.clone(),
                source,
            })?;
            fs::write(&path, value)
        } else if limited {
            Err(CgroupError::MissingController {
                controller: controller_of(file),
                root: self.root.clone(),
                what: file_what(file),
            })
        } else {
            Ok(())
        }
    }

    /// Reads a `max`-or-number file of the group; a missing file reads as unlimited.
    fn read_opt(&self, name: &str, file: &str) -> Result<Option<u64>> {
        let path = self.group(name)?.join(file);
        if !path.exists() {
            return Ok(None);
        }
        fs::read_max(&path)
    }
}

impl CgroupManager for V2Manager {
    fn create(&self, name: &str) -> Result<()> {
        let group = self.group(name)?;
        self.enable_controllers(&self.root)?;
        fs::mkdir(&self.parent())?;
        self.enable_controllers(&self.parent())?;
        fs::mkdir(&group)
    }

    fn apply(&self, name: &str, limits: &Limits) -> Result<()> {
        let l = limits.normalized();
        let memory = l.memory_bytes.map_or("max".into(), |m| m.to_string());
        self.set(name, "memory.max", &memory, l.memory_bytes.is_some())?;
        if self.group(name)?.join("memory.swap.max").exists() {
            let swap = if l.memory_bytes.is_some() { "0" } else { "max" };
            self.set(name, "memory.swap.max", swap, false)?;
        }
        let quota = l
            .cpu_millis
            .map_or("max".into(), |c| (c * CPU_PERIOD_US / 1000).to_string());
        let cpu = format!("{quota} {CPU_PERIOD_US}");
        self.set(name, "cpu.max", &cpu, l.cpu_millis.is_some())?;
        let pids = l.pids.map_or("max".into(), |p| p.to_string());
        self.set(name, "pids.max", &pids, l.pids.is_some())
    }

    fn add_task(&self, name: &str, pid: i32) -> Result<()> {
        fs::write(&self.group(name)?.join("cgroup.procs"), &pid.to_string())
    }

    fn read_limits(&self, name: &str) -> Result<Limits> {
        let group = self.group(name)?;
        // A missing interface file reads as unlimited (controller not enabled); a missing group
        // is an error, as on v1, so a deleted group is never taken for an unlimited one.
        std::fs::metadata(&group).map_err(|source| CgroupError::Read {
            path: group.clone(),
            source,
        })?;
        let cpu_path = group.join("cpu.max");
        let cpu_millis = if cpu_path.exists() {
            let s = fs::read(&cpu_path)?;
            let parsed = match s.split_once(' ') {
                Some(("max", _)) => Some(None),
                Some((q, p)) => match (q.parse::<u64>(), p.parse::<u64>()) {
                    (Ok(q), Ok(p)) if p > 0 => Some(Some(q * 1000 / p)),
                    _ => None,
                },
                None => None,
            };
            parsed.ok_or(CgroupError::Parse {
                path: cpu_path,
                content: s,
            })?
        } else {
            None
        };
        Ok(Limits {
            memory_bytes: self.read_opt(name, "memory.max")?,
            cpu_millis,
            pids: self.read_opt(name, "pids.max")?,
        })
    }

    fn procs(&self, name: &str) -> Result<Vec<i32>> {
        fs::procs_of(&[self.group(name)?])
    }

    fn oom_kill_count(&self, name: &str) -> Result<u64> {
        let events = self.group(name)?.join("memory.events");
        if !events.exists() {
            return Err(CgroupError::MissingController {
                controller: "memory",
                root: self.root.clone(),
                what: "oom_kill_count",
            });
        }
        fs::read_keyed(&events, "oom_kill")
    }

    fn kill_all(&self, name: &str) -> Result<()> {
        let group = self.group(name)?;
        let kill_file = group.join("cgroup.kill");
        // cgroup.kill (5.14+) SIGKILLs every process of the group and its children, forks
        // included, in one write; older kernels get the signal-until-empty loop.
        if kill_file.exists() {
            fs::write(&kill_file, "1")?;
            if group.join("cgroup.events").exists() {
                return wait_unpopulated(&group, DRAIN_TIMEOUT);
            }
        }
        fs::kill_until_empty(&[group])
    }

    fn remove(&self, name: &str) -> Result<()> {
        fs::rmdir_retry(&self.group(name)?)
    }

    fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.group(name)?.is_dir())
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(fs::list_dirs(&self.parent(), prefix)?.into_iter().collect())
    }

    fn path_for_join(&self, name: &str) -> Vec<PathBuf> {
        vec![self.parent().join(name).join("cgroup.procs")]
    }

    fn dirs(&self, name: &str) -> Result<Vec<PathBuf>> {
        Ok(vec![self.group(name)?])
    }

    fn limit_file(&self, name: &str, resource: Resource) -> Result<PathBuf> {
        let file = match resource {
            Resource::Memory => "memory.max",
            Resource::Cpu => "cpu.max",
            Resource::Pids => "pids.max",
        };
        Ok(self.group(name)?.join(file))
    }

    fn populated(&self, name: &str) -> Result<bool> {
        Ok(fs::read_keyed(&self.group(name)?.join("cgroup.events"), "populated")? != 0)
    }

    fn stats(&self, name: &str) -> Result<Stats> {
        let group = self.group(name)?;
        Ok(Stats {
            cpu: read_pressure(&group.join("cpu.pressure"))?,
            memory: read_pressure(&group.join("memory.pressure"))?,
            io: read_pressure(&group.join("io.pressure"))?,
        })
    }

    fn usage(&self, name: &str) -> Result<Usage> {
        let group = self.group(name)?;
        let u = Usage {
            cpu_ns: read_key(&group.join("cpu.stat"), "usage_usec")?.map(|us| us * 1000),
            memory_bytes: read_number(&group.join("memory.current"))?,
            pids: read_number(&group.join("pids.current"))?,
            pressure: self.stats(name)?,
            ..Default::default()
        };
        Ok(u.with_inactive_file(read_key(&group.join("memory.stat"), "inactive_file")?))
    }

    fn restrict_devices(&self, name: &str, _allow: &[&str]) -> Result<()> {
        fs::check_name(name)
    }
}

/// Waits until `group`'s cgroup.events says `populated 0`. The kernel raises a file-modified
/// notification on cgroup.events when that changes, so this sleeps in `poll` on an inotify watch
/// instead of re-reading the file; [`CgroupError::Busy`] after `timeout`.
fn wait_unpopulated(group: &Path, timeout: Duration) -> Result<()> {
    let events = group.join("cgroup.events");
    let watch_err = |source| CgroupError::Watch {
        path: events.clone(),
        source,
    };
    let inotify =
        Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).map_err(watch_err)?;
    inotify
        .add_watch(&events, AddWatchFlags::IN_MODIFY)
        .map_err(watch_err)?;
    let start = Instant::now();
    loop {
        // Read after the watch is in place, so a change between the two is never missed.
        if fs::read_keyed(&events, "populated")? == 0 {
            return Ok(());
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            let pids = fs::procs_of(&[group.to_path_buf()])?;
            return Err(fs::busy(&[group.to_path_buf()], pids, start));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(watch_err(e)),
        }
        let _ = inotify.read_events(); // drain; the loop re-reads the file itself
    }
}

/// The controller that owns a v2 interface file (`memory.max` → `memory`).
fn controller_of(file: &str) -> &'static str {
    match file.split('.').next() {
        Some("memory") => "memory",
        Some("cpu") => "cpu",
        _ => "pids",
    }
}

/// Which `Limits` field a v2 file serves, for error messages.
fn file_what(file: &str) -> &'static str {
    match controller_of(file) {
        "memory" => "memory_bytes",
        "cpu" => "cpu_millis",
        _ => "pids",
    }
}

#[cfg(test)]
#[path = "v2_tests.rs"]
mod tests;
