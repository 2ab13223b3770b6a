//! cgroup driver: one `CgroupManager` trait, a v1 (legacy/hybrid) and a v2 (unified) cgroupfs
//! implementation, and `detect` that picks one from the host once at start-up.
//!
//! Why not the `cgroups-rs` crate (0.5): its v2 hierarchy is hard-wired to `/sys/fs/cgroup` and
//! its v1 hierarchy is found through `/proc/self/mountinfo`, so neither can be aimed at a temp
//! dir for unit tests, nor at the `/sys/fs/cgroup/unified` v2 mount of a hybrid host. What tend
//! needs (mkdir, a handful of limit files, cgroup.procs, SIGKILL, rmdir) is small enough to write
//! against cgroupfs directly, the way youki's libcgroups does.
//!
//! Besides limits, a group reports whether it is populated and, on v2, its pressure stall
//! information ([`Stats`]).
//!
//! All groups live under one parent, [`PARENT`] (`/sys/fs/cgroup/memory/tend/<name>` on v1,
//! `/sys/fs/cgroup/tend/<name>` on v2). Callers derive `<name>` from object uids. Every method
//! blocks (file I/O, short sleeps while a group drains): call it through `crate::util::blocking`.

mod fs;
mod stats;
mod v1;
mod v2;

use std::path::{Path, PathBuf};

pub use fs::{CgroupError, Result};
pub use stats::{Pressure, PsiLine, Stats, Usage};
pub use v1::V1Manager;
pub use v2::V2Manager;

/// The one parent directory every tend group lives under, in each hierarchy.
pub const PARENT: &str = "tend";

/// CFS period tend always uses: 100 ms. The quota is `cpu_millis * 100` µs per period.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Smallest CPU quota the kernel accepts (1 ms per period), in millicpus.
pub const MIN_CPU_MILLIS: u64 = 10;

/// Resource limits of one group; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory limit in bytes (v1 memory.limit_in_bytes, v2 memory.max). Swap is not limited on
    /// v1 (memory.memsw is left alone, to keep things simple); on v2 memory.swap.max is set to 0.
    pub memory_bytes: Option<u64>,
    /// CPU quota in millicpus (1000 = one full CPU), as a CFS quota over a 100 ms period.
    pub cpu_millis: Option<u64>,
    /// Maximum number of tasks (pids.max).
    pub pids: Option<u64>,
}

/// As a person reads them in an event: `memory 64Mi, cpu 250m, pids 64` (`unlimited` parts
/// say so).
impl std::fmt::Display for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let memory = match self.memory_bytes {
            Some(b) if b % (1 << 20) == 0 => format!("{}Mi", b >> 20),
            Some(b) => format!("{b}"),
            None => "unlimited".into(),
        };
        let cpu = self
            .cpu_millis
            .map_or_else(|| "unlimited".into(), |m| format!("{m}m"));
        let pids = self
            .pids
            .map_or_else(|| "unlimited".into(), |p| p.to_string());
        write!(f, "memory {memory}, cpu {cpu}, pids {pids}")
    }
}

impl Limits {
    /// The limits as the kernel will store them: memory rounded down to whole pages (at least
    /// one page), CPU raised to the kernel's 1 ms minimum quota. [`CgroupManager::apply`] writes
    /// these values, so `read_limits(name)? != desired.normalized()` is the drift test.
    pub fn normalized(&self) -> Limits {
        let page = page_size();
        Limits {
            memory_bytes: self.memory_bytes.map(|m| (m / page * page).max(page)),
            cpu_millis: self.cpu_millis.map(|c| c.max(MIN_CPU_MILLIS)),
            pids: self.pids,
        }
    }
}

/// The files (v1 and v2) that hold the limits [`CgroupManager::read_limits`] reads back: a
/// write to one of them behind tend's back is drift.
pub const LIMIT_FILES: &[&str] = &[
    "memory.limit_in_bytes",
    "cpu.cfs_quota_us",
    "cpu.cfs_period_us",
    "pids.max",
    "memory.max",
    "memory.swap.max",
    "cpu.max",
];

/// A limited resource, to ask where its limit lives ([`CgroupManager::limit_file`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// v1 `memory.limit_in_bytes`, v2 `memory.max` (bytes, both).
    Memory,
    /// v1 `cpu.cfs_quota_us` (µs per period), v2 `cpu.max` (`<quota> <period>`).
    Cpu,
    /// `pids.max` on both.
    Pids,
}

/// The operations tend needs on one host's cgroups. Names are single path components under
/// [`PARENT`]; PIDs are host PIDs. All methods block; implementations are cheap to share.
pub trait CgroupManager: Send + Sync {
    /// Creates the group in every controller tend uses (idempotent; repairs a partly deleted one).
    fn create(&self, name: &str) -> Result<()>;

    /// Sets the group's limits to exactly `limits` (normalized): `None` writes "unlimited".
    ///
    /// # Errors
    /// [`CgroupError::MissingController`] when a limit is `Some` but its controller is absent;
    /// an unlimited value for an absent controller is accepted. Write errors carry the file;
    /// lowering memory below what the group uses fails with EBUSY once the kernel's reclaim
    /// gives up (v1), and a group that is gone gives an error whose `is_not_found()` is true.
    fn apply(&self, name: &str, limits: &Limits) -> Result<()>;

    /// Moves process `pid` (all its threads) into the group.
    fn add_task(&self, name: &str, pid: i32) -> Result<()>;

    /// Reads the limits back from the kernel files, to notice changes made behind tend's back.
    fn read_limits(&self, name: &str) -> Result<Limits>;

    /// PIDs of the processes in the group (union over controllers on v1), sorted.
    fn procs(&self, name: &str) -> Result<Vec<i32>>;

    /// How many processes the kernel OOM killer has killed in the group since it was created
    /// (cumulative: compare with the count taken when the workload started).
    fn oom_kill_count(&self, name: &str) -> Result<u64>;

    /// SIGKILLs every process in the group, including ones forked meanwhile, and waits until the
    /// group is empty (a couple of seconds at most, else [`CgroupError::Busy`]).
    fn kill_all(&self, name: &str) -> Result<()>;

    /// Removes the group from every controller. Idempotent: a missing group is fine. Retries
    /// briefly while processes drain; it does not kill them (call `kill_all` first).
    fn remove(&self, name: &str) -> Result<()>;

    /// True when the group exists in every controller tend uses (false if any part was deleted).
    fn exists(&self, name: &str) -> Result<bool>;

    /// Names of the groups under [`PARENT`] that start with `prefix` (for the orphan sweep).
    fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// The `cgroup.procs` files a process writes its own PID into to join the group (the shim
    /// does this itself before exec). The group must have been created.
    fn path_for_join(&self, name: &str) -> Vec<PathBuf>;

    /// The group's directories, one per controller hierarchy on v1 (memory, cpu, pids, freezer)
    /// and one on v2, whether they exist or not: where a person (or a test) looks for it.
    fn dirs(&self, name: &str) -> Result<Vec<PathBuf>>;

    /// The kernel file holding the group's limit of `resource` (see [`Resource`]).
    fn limit_file(&self, name: &str, resource: Resource) -> Result<PathBuf>;

    /// True while any process is in the group (v2: `populated` of `cgroup.events`, which also
    /// counts processes in child groups; v1: a non-empty `cgroup.procs` in any controller).
    fn populated(&self, name: &str) -> Result<bool>;

    /// Pressure stall information of the group (v2 `*.pressure`; all `None` on v1).
    fn stats(&self, name: &str) -> Result<Stats>;

    /// What the group has used so far: CPU time, memory and working set, tasks, and PSI on v2
    /// ([`Usage`]). A handful of small reads; a group (or file) that does not exist reads as
    /// `None` figures.
    fn usage(&self, name: &str) -> Result<Usage>;

    /// Limits device access to `allow` (`devices.allow` lines such as `c 1:3 rwm`): v1 denies
    /// everything in the group's devices controller, then allows each rule; v2 does nothing
    /// (device filtering there is an eBPF program tend does not load: it exposes no device
    /// nodes and drops CAP_MKNOD instead). Idempotent.
    fn restrict_devices(&self, name: &str, allow: &[&str]) -> Result<()>;
}

/// The devices a default container may use: null, zero, full, random, urandom, tty, ptmx and
/// its pseudo-terminals. No `m` wildcard: creating any other device node fails.
pub const DEFAULT_DEVICES: [&str; 8] = [
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// The manager picked for this host, dispatching to v1 or v2.
#[derive(Debug, Clone)]
pub enum AnyCgroupManager {
    /// Legacy or hybrid host: one hierarchy per controller.
    V1(V1Manager),
    /// Unified hierarchy.
    V2(V2Manager),
}

/// Picks the manager for the cgroupfs at `root` (normally `/sys/fs/cgroup`): v2 when `root`
/// itself is a cgroup2 mount, otherwise v1 (a hybrid host's v2 mount at `root/unified` has no
/// controllers, so tend uses the v1 hierarchies there).
pub fn detect(root: &Path) -> Result<AnyCgroupManager> {
    let st = nix::sys::statfs::statfs(root).map_err(|source| CgroupError::Statfs {
        path: root.to_path_buf(),
        source,
    })?;
    Ok(
        if st.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC {
            AnyCgroupManager::V2(V2Manager::new(root))
        } else {
            AnyCgroupManager::V1(V1Manager::new(root))
        },
    )
}

impl AnyCgroupManager {
    fn inner(&self) -> &dyn CgroupManager {
        match self {
            AnyCgroupManager::V1(m) => m,
            AnyCgroupManager::V2(m) => m,
        }
    }

    /// "v1" or "v2", for logs and `tend` status output.
    pub fn version(&self) -> &'static str {
        match self {
            AnyCgroupManager::V1(_) => "v1",
            AnyCgroupManager::V2(_) => "v2",
        }
    }
}

impl CgroupManager for AnyCgroupManager {
    fn create(&self, name: &str) -> Result<()> {
        self.inner().create(name)
    }
    fn apply(&self, name: &str, limits: &Limits) -> Result<()> {
        self.inner().apply(name, limits)
    }
    fn add_task(&self, name: &str, pid: i32) -> Result<()> {
        self.inner().add_task(name, pid)
    }
    fn read_limits(&self, name: &str) -> Result<Limits> {
        self.inner().read_limits(name)
    }
    fn procs(&self, name: &str) -> Result<Vec<i32>> {
        self.inner().procs(name)
    }
    fn oom_kill_count(&self, name: &str) -> Result<u64> {
        self.inner().oom_kill_count(name)
    }
    fn kill_all(&self, name: &str) -> Result<()> {
        self.inner().kill_all(name)
    }
    fn remove(&self, name: &str) -> Result<()> {
        self.inner().remove(name)
    }
    fn exists(&self, name: &str) -> Result<bool> {
        self.inner().exists(name)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner().list(prefix)
    }
    fn path_for_join(&self, name: &str) -> Vec<PathBuf> {
        self.inner().path_for_join(name)
    }
    fn dirs(&self, name: &str) -> Result<Vec<PathBuf>> {
        self.inner().dirs(name)
    }
    fn limit_file(&self, name: &str, resource: Resource) -> Result<PathBuf> {
        self.inner().limit_file(name, resource)
    }
    fn populated(&self, name: &str) -> Result<bool> {
        self.inner().populated(name)
    }
    fn stats(&self, name: &str) -> Result<Stats> {
        self.inner().stats(name)
    }
    fn usage(&self, name: &str) -> Result<Usage> {
        self.inner().usage(name)
    }
    fn restrict_devices(&self, name: &str, allow: &[&str]) -> Result<()> {
        self.inner().restrict_devices(name, allow)
    }
}

/// Every directory under `root` (a cgroupfs as at `/sys/fs/cgroup`) that holds a group named
/// `<prefix>…` under [`PARENT`], in any hierarchy: the unified one on a v2 host; every v1
/// controller mount and the (usually empty) `unified` mount on a hybrid host. For leak checks and
/// last-resort sweeps, which must see a group wherever any manager could have made it.
pub fn find_groups(root: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let hierarchies: Vec<PathBuf> = match detect(root)? {
        AnyCgroupManager::V2(_) => vec![root.to_path_buf()],
        AnyCgroupManager::V1(_) => std::fs::read_dir(root)
            .map_err(|source| CgroupError::Read {
                path: root.to_path_buf(),
                source,
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect(),
    };
    let mut out = Vec::new();
    for h in hierarchies {
        let parent = h.join(PARENT);
        out.extend(
            fs::list_dirs(&parent, prefix)?
                .into_iter()
                .map(|n| parent.join(n)),
        );
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Kills every process in the group directory `dir` (any hierarchy, as [`find_groups`] returns
/// it) and removes the directory: the last-resort sweep for a group no manager is aimed at.
pub fn kill_and_remove_dir(dir: &Path) -> Result<()> {
    fs::kill_until_empty(&[dir.to_path_buf()])?;
    fs::rmdir_retry(dir)
}

/// The system page size (memory limits are kept in whole pages).
#[allow(unsafe_code)]
fn page_size() -> u64 {
    // SAFETY: sysconf only reads a constant of the running system; it touches no memory of ours.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(v).ok().filter(|&v| v > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_as_a_person_writes_them() {
        let l = Limits {
            memory_bytes: Some(64 << 20),
            cpu_millis: Some(250),
            pids: None,
        };
        assert_eq!(l.to_string(), "memory 64Mi, cpu 250m, pids unlimited");
    }

    #[test]
    fn normalized_rounds_memory_to_pages_and_raises_tiny_cpu() {
        let page = page_size();
        let l = Limits {
            memory_bytes: Some(10 * page + 123),
            cpu_millis: Some(3),
            pids: Some(7),
        };
        let n = l.normalized();
        assert_eq!(n.memory_bytes, Some(10 * page));
        assert_eq!(n.cpu_millis, Some(MIN_CPU_MILLIS));
        assert_eq!(n.pids, Some(7));
        assert_eq!(Limits::default().normalized(), Limits::default());
        assert_eq!(
            Limits {
                memory_bytes: Some(1),
                ..Limits::default()
            }
            .normalized()
            .memory_bytes,
            Some(page)
        );
    }

    #[test]
    fn find_groups_looks_in_every_hierarchy_of_a_v1_root() {
        let dir = tempfile::tempdir().unwrap();
        for d in [
            "memory/tend/i1-a",
            "pids/tend/i1-a",
            "freezer/tend/i1-b",
            "unified/tend/i1-c",
            "cpu/tend/i2-a",
            "cpu/other/i1-d",
        ] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let found: Vec<String> = find_groups(dir.path(), "i1-")
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            found,
            [
                "freezer/tend/i1-b",
                "memory/tend/i1-a",
                "pids/tend/i1-a",
                "unified/tend/i1-c"
            ]
        );
    }

    #[test]
    fn detect_picks_v1_on_a_plain_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(detect(dir.path()).unwrap().version(), "v1");
        assert!(matches!(
            detect(&dir.path().join("missing")),
            Err(CgroupError::Statfs { .. })
        ));
    }
}
