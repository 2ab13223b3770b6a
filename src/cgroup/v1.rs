//! cgroup v1 (legacy and hybrid hosts): one directory per controller hierarchy, each holding
//! `tend/<name>`; limits in memory.limit_in_bytes, cpu.cfs_{period,quota}_us and pids.max.

use std::path::{Path, PathBuf};

use super::fs::{self, CgroupError, Result};
use super::stats::{read_key, read_number};
use super::{CgroupManager, Limits, Resource, Stats, Usage, CPU_PERIOD_US, PARENT};

/// The v1 hierarchies tend puts a group in; the freezer is only used to stop forks in `kill_all`,
/// devices to limit device access ([`CgroupManager::restrict_devices`]), cpuacct to read CPU
/// time ([`CgroupManager::usage`]) where it is not mounted together with cpu.
const CONTROLLERS: [&str; 6] = ["memory", "cpu", "cpuacct", "pids", "freezer", "devices"];

/// v1 reports "unlimited" memory as a huge page-aligned number (PAGE_COUNTER_MAX pages).
const MEMORY_UNLIMITED_FROM: u64 = 1 << 62;

/// cgroup v1 manager rooted at a directory holding one mount per controller (`/sys/fs/cgroup`).
#[derive(Debug, Clone)]
pub struct V1Manager {
    root: PathBuf,
}

impl V1Manager {
    /// A manager for the hierarchies mounted under `root` (e.g. `/sys/fs/cgroup/memory`).
    /// Controllers that are not mounted there are skipped.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        V1Manager { root: root.into() }
    }

    /// Controllers among [`CONTROLLERS`] that are mounted under the root, each hierarchy once
    /// (`cpu` and `cpuacct` are often one mount, `cpu,cpuacct`, linked under both names).
    fn present(&self) -> Vec<&'static str> {
        let root = &self.root;
        let mut seen = std::collections::HashSet::new();
        CONTROLLERS
            .into_iter()
            .filter(|c| root.join(c).is_dir())
            .filter(|c| seen.insert(std::fs::canonicalize(root.join(c)).unwrap_or(root.join(c))))
            .collect()
    }

    fn group(&self, controller: &str, name: &str) -> PathBuf {
        self.root.join(controller).join(PARENT).join(name)
    }

    fn groups(&self, name: &str) -> Result<Vec<PathBuf>> {
        fs::check_name(name)?;
        Ok(self
            .present()
            .into_iter()
            .map(|c| self.group(c, name))
            .collect())
    }

    fn has(&self, controller: &str) -> bool {
        self.root.join(controller).is_dir()
    }

    fn missing(&self, controller: &'static str, what: &'static str) -> CgroupError {
        CgroupError::MissingController {
            controller,
            root: self.root.clone(),
            what,
        }
    }

    /// Writes `value` to `ctl`'s `file`. An absent controller is an error only when `limited`
    /// (an unlimited value is trivially satisfied without the controller).
    fn set(
        &self,
        name: &str,
        ctl: &'static str,
        file: &str,
        value: String,
        limited: bool,
    ) -> Result<()> {
        if self.has(ctl) {
            fs::write(&self.group(ctl, name).join(file), &value)
        } else if limited {
            Err(self.missing(ctl, file_what(file)))
        } else {
            Ok(())
        }
    }

    /// Freezes the group so it cannot fork while being killed; returns whether it did.
    fn freeze(&self, name: &str) -> Result<bool> {
        let state = self.group("freezer", name).join("freezer.state");
        if !state.exists() {
            return Ok(false);
        }
        fs::write(&state, "FROZEN")?;
        for _ in 0..50 {
            if fs::read(&state)? == "FROZEN" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Ok(true)
    }
}

impl CgroupManager for V1Manager {
    fn create(&self, name: &str) -> Result<()> {
        let groups = self.groups(name)?;
        if groups.is_empty() {
            return Err(self.missing("memory", "any group"));
        }
        groups.iter().try_for_each(|g| fs::mkdir(g))
    }

    fn apply(&self, name: &str, limits: &Limits) -> Result<()> {
        fs::check_name(name)?;
        let l = limits.normalized();
        let memory = l.memory_bytes.map_or("-1".into(), |m| m.to_string());
        self.set(
            name,
            "memory",
            "memory.limit_in_bytes",
            memory,
            l.memory_bytes.is_some(),
        )?;
        let cpu = l.cpu_millis.is_some();
        self.set(
            name,
            "cpu",
            "cpu.cfs_period_us",
            CPU_PERIOD_US.to_string(),
            cpu,
        )?;
        let quota = l
            .cpu_millis
            .map_or("-1".into(), |c| (c * CPU_PERIOD_US / 1000).to_string());
        self.set(name, "cpu", "cpu.cfs_quota_us", quota, cpu)?;
        let pids = l.pids.map_or("max".into(), |p| p.to_string());
        self.set(name, "pids", "pids.max", pids, l.pids.is_some())
    }

    fn add_task(&self, name: &str, pid: i32) -> Result<()> {
        let pid = pid.to_string();
        self.groups(name)?
            .iter()
            .try_for_each(|g| fs::write(&g.join("cgroup.procs"), &pid))
    }

    fn read_limits(&self, name: &str) -> Result<Limits> {
        fs::check_name(name)?;
        let mut l = Limits::default();
        if self.has("memory") {
            let path = self.group("memory", name).join("memory.limit_in_bytes");
            let v = parse_i64(&path)?;
            l.memory_bytes = u64::try_from(v).ok().filter(|&v| v < MEMORY_UNLIMITED_FROM);
        }
        if self.has("cpu") {
            let dir = self.group("cpu", name);
            let quota = parse_i64(&dir.join("cpu.cfs_quota_us"))?;
            let period = parse_i64(&dir.join("cpu.cfs_period_us"))?;
            if let (Ok(q), Ok(p)) = (u64::try_from(quota), u64::try_from(period)) {
                l.cpu_millis = (p > 0).then(|| q * 1000 / p);
            }
        }
        if self.has("pids") {
            l.pids = fs::read_max(&self.group("pids", name).join("pids.max"))?;
        }
        Ok(l)
    }

    fn procs(&self, name: &str) -> Result<Vec<i32>> {
        fs::procs_of(&self.groups(name)?)
    }

    fn oom_kill_count(&self, name: &str) -> Result<u64> {
        fs::check_name(name)?;
        if !self.has("memory") {
            return Err(self.missing("memory", "oom_kill_count"));
        }
        fs::read_keyed(
            &self.group("memory", name).join("memory.oom_control"),
            "oom_kill",
        )
    }

    fn kill_all(&self, name: &str) -> Result<()> {
        let groups = self.groups(name)?;
        let frozen = self.freeze(name)?;
        let signalled = fs::signal_all(&groups);
        if frozen {
            fs::write(&self.group("freezer", name).join("freezer.state"), "THAWED")?;
        }
        signalled?;
        fs::kill_until_empty(&groups)
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.groups(name)?
            .iter()
            .try_for_each(|g| fs::rmdir_retry(g))
    }

    fn exists(&self, name: &str) -> Result<bool> {
        let groups = self.groups(name)?;
        Ok(!groups.is_empty() && groups.iter().all(|g| g.is_dir()))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut all = std::collections::BTreeSet::new();
        for c in self.present() {
            all.extend(fs::list_dirs(&self.root.join(c).join(PARENT), prefix)?);
        }
        Ok(all.into_iter().collect())
    }

    fn path_for_join(&self, name: &str) -> Vec<PathBuf> {
        let present = self.present().into_iter();
        present
            .map(|c| self.group(c, name).join("cgroup.procs"))
            .collect()
    }

    fn dirs(&self, name: &str) -> Result<Vec<PathBuf>> {
        self.groups(name)
    }

    fn limit_file(&self, name: &str, resource: Resource) -> Result<PathBuf> {
        fs::check_name(name)?;
        let (ctl, file) = match resource {
            Resource::Memory => ("memory", "memory.limit_in_bytes"),
            Resource::Cpu => ("cpu", "cpu.cfs_quota_us"),
            Resource::Pids => ("pids", "pids.max"),
        };
        Ok(self.group(ctl, name).join(file))
    }

    fn populated(&self, name: &str) -> Result<bool> {
        Ok(!fs::procs_of(&self.groups(name)?)?.is_empty())
    }

    fn stats(&self, name: &str) -> Result<Stats> {
        fs::check_name(name)?;
        Ok(Stats::default())
    }

    fn usage(&self, name: &str) -> Result<Usage> {
        fs::check_name(name)?;
        let memory = self.group("memory", name);
        let u = Usage {
            // In cpu's own group when the two are one mount (`cpu,cpuacct`), else cpuacct's.
            cpu_ns: match read_number(&self.group("cpu", name).join("cpuacct.usage"))? {
                Some(ns) => Some(ns),
                None => read_number(&self.group("cpuacct", name).join("cpuacct.usage"))?,
            },
            memory_bytes: read_number(&memory.join("memory.usage_in_bytes"))?,
            pids: read_number(&self.group("pids", name).join("pids.current"))?,
            ..Default::default()
        };
        Ok(u.with_inactive_file(read_key(
            &memory.join("memory.stat"),
            "total_inactive_file",
        )?))
    }

    fn restrict_devices(&self, name: &str, allow: &[&str]) -> Result<()> {
        fs::check_name(name)?;
        if !self.has("devices") {
            return Err(self.missing("devices", "device access"));
        }
        let group = self.group("devices", name);
        fs::write(&group.join("devices.deny"), "a")?;
        allow
            .iter()
            .try_for_each(|rule| fs::write(&group.join("devices.allow"), rule))
    }
}

/// Which `Limits` field a v1 file serves, for error messages.
fn file_what(file: &str) -> &'static str {
    match file {
        "memory.limit_in_bytes" => "memory_bytes",
        "pids.max" => "pids",
        _ => "cpu_millis",
    }
}

/// Reads a file holding one signed number (v1 writes -1 for "unlimited").
fn parse_i64(path: &Path) -> Result<i64> {
    let s = fs::read(path)?;
    s.parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        content: s,
    })
}

#[cfg(test)]
#[path = "v1_tests.rs"]
mod tests;
