//! cgroupfs file plumbing shared by v1 and v2: the error enum, reads and writes that keep the
//! path, and the kill / rmdir loops that wait for a group to drain.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long `kill_all` and `remove` wait for a group's processes to exit.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
const DRAIN_POLL: Duration = Duration::from_millis(2);

/// Everything the cgroup driver can fail at; each variant names the file or group involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Reading a control file failed.
    #[error("read {path}: {source}")]
    Read {
        /// The file read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Writing a control file failed (the kernel rejected the value, or the file is missing).
    #[error("write {data:?} to {path}: {source}")]
    Write {
        /// The file written.
        path: PathBuf,
        /// What was written.
        data: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Creating a group directory failed.
    #[error("mkdir {path}: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Removing a group directory failed for a reason other than it still being busy.
    #[error("rmdir {path}: {source}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A control file held something the driver could not parse.
    #[error("parse {path}: unexpected content {content:?}")]
    Parse {
        /// The file read.
        path: PathBuf,
        /// What it held.
        content: String,
    },
    /// `statfs` on the cgroup root failed during detection.
    #[error("statfs {path}: {source}")]
    Statfs {
        /// The root probed.
        path: PathBuf,
        /// The errno.
        source: nix::Error,
    },
    /// A limit was requested for a controller this host does not offer at this root.
    #[error("controller {controller} is not available under {root} (needed for {what})")]
    MissingController {
        /// The controller, e.g. `memory`.
        controller: &'static str,
        /// The cgroup root searched.
        root: PathBuf,
        /// The limit that needed it.
        what: &'static str,
    },
    /// Sending SIGKILL to a member of the group failed (other than the process being gone).
    #[error("kill {pid} in {path}: {source}")]
    Kill {
        /// The group directory.
        path: PathBuf,
        /// The process.
        pid: i32,
        /// The errno.
        source: nix::Error,
    },
    /// The group still had processes when the drain timeout ran out.
    #[error("{path} still holds processes {pids:?} after {waited:?}")]
    Busy {
        /// The group directory.
        path: PathBuf,
        /// The processes left.
        pids: Vec<i32>,
        /// How long the driver waited.
        waited: Duration,
    },
    /// The name is not a single path component (empty, `.`, `..` or containing `/`).
    #[error("invalid cgroup name {0:?}")]
    InvalidName(String),
    /// Watching a control file for changes (inotify) failed.
    #[error("watch {path}: {source}")]
    Watch {
        /// The file watched.
        path: PathBuf,
        /// The errno.
        source: nix::Error,
    },
    /// A write was refused by a failpoint (tests inject broken limit writes this way).
    #[error("write to {path}: {source}")]
    Injected {
        /// The file that was to be written.
        path: PathBuf,
        /// The failpoint that refused it.
        source: tend_schema::failpoint::Failpoint,
    },
}

impl CgroupError {
    /// True when the error says a group (or its file) is gone: e.g. deleted behind tend's back,
    /// so the caller should `create` it again and move the workload back.
    pub fn is_not_found(&self) -> bool {
        match self {
            CgroupError::Read { source, .. } | CgroupError::Write { source, .. } => {
                source.kind() == ErrorKind::NotFound
            }
            _ => false,
        }
    }
}

/// Result alias for the cgroup driver.
pub type Result<T> = std::result::Result<T, CgroupError>;

/// Rejects names that would escape the `tend` parent.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(CgroupError::InvalidName(name.to_string()));
    }
    Ok(())
}

/// Reads a control file, trimmed.
pub(crate) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| CgroupError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes one value to a control file (no create, no truncate games: cgroupfs takes one write).
pub(crate) fn write(path: &Path, data: &str) -> Result<()> {
    let open = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path);
    let res = open.and_then(|mut f| std::io::Write::write_all(&mut f, data.as_bytes()));
    res.map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        data: data.to_string(),
        source,
    })
}

/// Parses a file that holds one unsigned number or `max` (`None`).
pub(crate) fn read_max(path: &Path) -> Result<Option<u64>> {
    let s = read(path)?;
    if s == "max" {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        content: s,
    })
}

/// Reads `key value` lines (memory.events, memory.oom_control) and returns `key`'s value.
pub(crate) fn read_keyed(path: &Path, key: &str) -> Result<u64> {
    let s = read(path)?;
    let found = s.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    });
    found.ok_or_else(|| CgroupError::Parse {
        path: path.to_path_buf(),
        content: s,
    })
}

/// Creates a directory and its parents; existing is fine.
pub(crate) fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|source| CgroupError::Create {
        path: path.to_path_buf(),
        source,
    })
}

/// Member PIDs of every directory in `dirs` that exists (union, sorted).
pub(crate) fn procs_of(dirs: &[PathBuf]) -> Result<Vec<i32>> {
    let mut out = BTreeSet::new();
    for dir in dirs {
        let path = dir.join("cgroup.procs");
        let s = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(source) => return Err(CgroupError::Read { path, source }),
        };
        for line in s.lines().filter(|l| !l.trim().is_empty()) {
            let pid = line.trim().parse().map_err(|_| CgroupError::Parse {
                path: path.clone(),
                content: line.to_string(),
            })?;
            out.insert(pid);
        }
    }
    Ok(out.into_iter().collect())
}

/// SIGKILLs every current member of `dirs` once (processes already gone are fine).
pub(crate) fn signal_all(dirs: &[PathBuf]) -> Result<Vec<i32>> {
    let pids = procs_of(dirs)?;
    for &pid in &pids {
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) | Err(nix::Error::ESRCH) => {}
            Err(source) => {
                let path = dirs.first().cloned().unwrap_or_default();
                return Err(CgroupError::Kill { path, pid, source });
            }
        }
    }
    Ok(pids)
}

/// SIGKILLs every member of `dirs` until none is left (new forks included), or times out.
pub(crate) fn kill_until_empty(dirs: &[PathBuf]) -> Result<()> {
    let start = Instant::now();
    loop {
        let pids = signal_all(dirs)?;
        if pids.is_empty() {
            return Ok(());
        }
        if start.elapsed() > DRAIN_TIMEOUT {
            return Err(busy(dirs, pids, start));
        }
        std::thread::sleep(DRAIN_POLL);
    }
}

pub(crate) fn busy(dirs: &[PathBuf], pids: Vec<i32>, start: Instant) -> CgroupError {
    CgroupError::Busy {
        path: dirs.first().cloned().unwrap_or_default(),
        pids,
        waited: start.elapsed(),
    }
}

/// Removes a group directory; gone already is fine, EBUSY (processes still draining) is retried.
pub(crate) fn rmdir_retry(dir: &Path) -> Result<()> {
    let start = Instant::now();
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < DRAIN_TIMEOUT => {
                std::thread::sleep(DRAIN_POLL);
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                let pids = procs_of(&[dir.to_path_buf()])?;
                return Err(busy(&[dir.to_path_buf()], pids, start));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Names of the subdirectories of `parent` starting with `prefix` (a missing parent is empty).
pub(crate) fn list_dirs(parent: &Path, prefix: &str) -> Result<BTreeSet<String>> {
    let entries = match std::fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: parent.to_path_buf(),
                source,
            })
        }
    };
    let mut out = BTreeSet::new();
    for entry in entries.flatten() {
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_dir && name.starts_with(prefix) {
            out.insert(name);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_one_component() {
        for bad in ["", ".", "..", "a/b", "/x"] {
            assert!(matches!(check_name(bad), Err(CgroupError::InvalidName(_))));
        }
        check_name("tend-1234abcd").unwrap();
    }

    #[test]
    fn keyed_and_max_files_parse() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("memory.events");
        std::fs::write(&p, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n").unwrap();
        assert_eq!(read_keyed(&p, "oom_kill").unwrap(), 2);
        assert!(matches!(
            read_keyed(&p, "nope"),
            Err(CgroupError::Parse { .. })
        ));
        std::fs::write(&p, "max\n").unwrap();
        assert_eq!(read_max(&p).unwrap(), None);
        std::fs::write(&p, "42\n").unwrap();
        assert_eq!(read_max(&p).unwrap(), Some(42));
    }

    #[test]
    fn rmdir_of_missing_dir_is_ok_and_procs_skip_missing() {
        let dir = tempfile::tempdir().unwrap();
        rmdir_retry(&dir.path().join("gone")).unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir(&a).unwrap();
        std::fs::write(a.join("cgroup.procs"), "5\n3\n").unwrap();
        let procs = procs_of(&[a, dir.path().join("missing")]).unwrap();
        assert_eq!(procs, vec![3, 5]);
    }
}
