//! cgroup v2 (unified hierarchy): one directory `tend/<name>`; controllers enabled down the
//! tree through cgroup.subtree_control; limits in memory.max, cpu.max and pids.max.

use std::path::PathBuf;

use super::fs::{self, CgroupError, Result};
use super::{CgroupManager, Limits, CPU_PERIOD_US, PARENT};

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
        let cpu_path = self.group(name)?.join("cpu.max");
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
        if kill_file.exists() {
            fs::write(&kill_file, "1")?;
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

    fn restrict_devices(&self, name: &str, _allow: &[&str]) -> Result<()> {
        fs::check_name(name)
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
