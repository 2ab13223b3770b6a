//! Pressure stall information (PSI) of one group, read from cgroup v2's `cpu.pressure`,
//! `memory.pressure` and `io.pressure`: how much of the time the group's tasks were stalled
//! waiting for that resource. cgroup v1 has no per-group PSI.

use std::io::ErrorKind;
use std::path::Path;

use super::fs::{CgroupError, Result};

/// One line of a pressure file: the share of wall time stalled over the last 10, 60 and 300 s
/// (percent), and the total stall time since the group was created (µs).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct PsiLine {
    /// Percent of the last 10 s.
    pub avg10: f64,
    /// Percent of the last 60 s.
    pub avg60: f64,
    /// Percent of the last 300 s.
    pub avg300: f64,
    /// Total stall time, microseconds.
    pub total_us: u64,
}

/// A pressure file: `some` (at least one task stalled) and `full` (all non-idle tasks stalled at
/// once; the kernel reports no `full` for cpu at the root, and older kernels none for cpu at all).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Pressure {
    /// Time in which some task was stalled.
    pub some: PsiLine,
    /// Time in which every task was stalled, when the kernel reports it.
    pub full: Option<PsiLine>,
}

/// What the driver can tell about a group besides its limits. Each field is `None` where the
/// host has no such figure (v1, or PSI disabled with `psi=0`).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Stats {
    /// `cpu.pressure`.
    pub cpu: Option<Pressure>,
    /// `memory.pressure`.
    pub memory: Option<Pressure>,
    /// `io.pressure`.
    pub io: Option<Pressure>,
}

/// What a group has used, read in one pass over its files. Each field is `None` where the host
/// has no such file (a controller not mounted or not enabled).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    /// CPU time of every task that ran in the group, nanoseconds (v1 `cpuacct.usage`, v2
    /// `cpu.stat` `usage_usec`).
    pub cpu_ns: Option<u64>,
    /// Memory charged to the group, page cache included (v1 `memory.usage_in_bytes`, v2
    /// `memory.current`).
    pub memory_bytes: Option<u64>,
    /// `memory_bytes` less the inactive file cache: cAdvisor's working set, what memory
    /// pressure and the OOM killer act on.
    pub working_set_bytes: Option<u64>,
    /// Tasks (threads) in the group (`pids.current`).
    pub pids: Option<u64>,
    /// Pressure stall information (v2 only).
    pub pressure: Stats,
}

impl Usage {
    /// `memory_bytes` less the `inactive` file cache (never below zero).
    pub(crate) fn with_inactive_file(mut self, inactive: Option<u64>) -> Self {
        self.working_set_bytes = self
            .memory_bytes
            .map(|m| m.saturating_sub(inactive.unwrap_or(0)));
        self
    }
}

/// Reads a file holding one number; `Ok(None)` when the file does not exist.
pub(crate) fn read_number(path: &Path) -> Result<Option<u64>> {
    match std::fs::read_to_string(path) {
        Ok(t) => t.trim().parse().map(Some).map_err(|_| CgroupError::Parse {
            path: path.to_path_buf(),
            content: t,
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads `key` from a `key value` per line file (cpu.stat, memory.stat); `Ok(None)` when the
/// file or the key does not exist.
pub(crate) fn read_key(path: &Path, key: &str) -> Result<Option<u64>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads a pressure file; `Ok(None)` when it does not exist (no PSI on this kernel or hierarchy).
/// A file that exists but cannot be read (PSI disabled: EOPNOTSUPP) is also `None`.
pub(crate) fn read_pressure(path: &Path) -> Result<Option<Pressure>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            return Ok(None)
        }
        Err(source) => {
            return Err(CgroupError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let parse_err = || CgroupError::Parse {
        path: path.to_path_buf(),
        content: text.clone(),
    };
    let mut some = None;
    let mut full = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (kind, rest) = line.split_once(' ').ok_or_else(parse_err)?;
        let parsed = parse_line(rest).ok_or_else(parse_err)?;
        match kind {
            "some" => some = Some(parsed),
            "full" => full = Some(parsed),
            _ => return Err(parse_err()),
        }
    }
    Ok(Some(Pressure {
        some: some.ok_or_else(parse_err)?,
        full,
    }))
}

/// Parses `avg10=0.12 avg60=0.05 avg300=0.01 total=12345`.
fn parse_line(rest: &str) -> Option<PsiLine> {
    let mut l = PsiLine::default();
    let mut seen = 0;
    for field in rest.split_whitespace() {
        let (k, v) = field.split_once('=')?;
        match k {
            "avg10" => l.avg10 = v.parse().ok()?,
            "avg60" => l.avg60 = v.parse().ok()?,
            "avg300" => l.avg300 = v.parse().ok()?,
            "total" => l.total_us = v.parse().ok()?,
            _ => continue,
        }
        seen += 1;
    }
    (seen == 4).then_some(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_files_parse_with_and_without_full() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("memory.pressure");
        std::fs::write(
            &p,
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=4711\nfull avg10=0.50 avg60=0.00 avg300=0.00 total=12\n",
        )
        .unwrap();
        let got = read_pressure(&p).unwrap().unwrap();
        assert_eq!(
            got.some,
            PsiLine {
                avg10: 1.5,
                avg60: 0.25,
                avg300: 0.0,
                total_us: 4711
            }
        );
        assert_eq!(got.full.unwrap().total_us, 12);

        let cpu = dir.path().join("cpu.pressure");
        std::fs::write(&cpu, "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").unwrap();
        assert_eq!(read_pressure(&cpu).unwrap().unwrap().full, None);

        assert_eq!(
            read_pressure(&dir.path().join("io.pressure")).unwrap(),
            None
        );
        std::fs::write(&cpu, "some avg10=x\n").unwrap();
        assert!(matches!(
            read_pressure(&cpu),
            Err(CgroupError::Parse { .. })
        ));
    }
}
