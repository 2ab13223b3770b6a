//! The files the daemon and the shim exchange: `config.json`, `shim.json`, `exit.json`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::{io_err, Result, ShimError};

/// What the daemon asks the shim to run; written to `<container dir>/config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShimConfig {
    /// Opaque id of the container (tend uses the object uid); recorded, never interpreted.
    pub id: String,
    /// The command and its arguments; `argv[0]` without a `/` is looked up in the env's `PATH`.
    pub argv: Vec<String>,
    /// Environment of the workload, as `(name, value)` pairs; nothing is inherited.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory inside the container (default `/`).
    #[serde(default = "default_cwd")]
    pub cwd: PathBuf,
    /// Hostname in the container's UTS namespace (default: leave the copied host name).
    #[serde(default)]
    pub hostname: Option<String>,
    /// User id the workload runs as.
    #[serde(default)]
    pub uid: u32,
    /// Group id the workload runs as (also its only supplementary group).
    #[serde(default)]
    pub gid: u32,
    /// Root filesystem to pivot into; `None` runs on the host filesystem (with a private /proc).
    #[serde(default)]
    pub rootfs: Option<PathBuf>,
    /// Network namespace to join, e.g. `/run/netns/<name>`; `None` keeps the host's.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// `cgroup.procs` files the workload pid is written into before it execs.
    #[serde(default)]
    pub cgroup_procs: Vec<PathBuf>,
    /// Log rotation limits.
    #[serde(default)]
    pub log: LogLimits,
    /// Capabilities, seccomp, masked paths, network isolation (default: Docker's defaults plus
    /// `no_new_privs` and a network namespace of its own).
    #[serde(default)]
    pub security: super::Security,
    /// How to tell an OOM kill: read before start and after exit, a rise means OOM-killed.
    #[serde(default)]
    pub oom: Option<OomCheck>,
    /// Run in a user namespace with this mapping, on an id-mapped `rootfs` (required then);
    /// `uid` and `gid` are ids inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_namespace: Option<super::IdMap>,
    /// Sysctls written in the container's own network namespace before anything else, as
    /// (`net/ipv4/...` under /proc/sys, value); never applied to the host's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net_sysctls: Vec<(String, String)>,
    /// Run an init as PID 1 that forwards signals to the command and reaps zombies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
}

fn default_cwd() -> PathBuf {
    PathBuf::from("/")
}

/// Size cap of the workload log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLimits {
    /// Rotate `log` when the next line would make it larger than this.
    pub max_bytes: u64,
    /// Files kept in all, counting `log` itself (at least 1).
    pub max_files: u32,
}

impl Default for LogLimits {
    /// 10 MiB × 5 files, as `tend serve --log-max-size/--log-max-files` default to.
    fn default() -> Self {
        Self {
            max_bytes: 10 << 20,
            max_files: 5,
        }
    }
}

impl LogLimits {
    /// These limits with what `spec.logs` sets instead.
    pub fn with_spec(self, o: Option<&tend_schema::kinds::container::LogOptions>) -> Self {
        let Some(o) = o else { return self };
        Self {
            max_bytes: o.max_size.as_ref().map_or(self.max_bytes, |q| q.value()),
            max_files: o.max_files.unwrap_or(self.max_files),
        }
    }
}

/// A counter in a `key value` per line file, e.g. cgroup v1 `memory.oom_control` or v2
/// `memory.events`, field `oom_kill`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OomCheck {
    /// The file to read.
    pub file: PathBuf,
    /// The key whose value counts OOM kills.
    pub field: String,
}

impl OomCheck {
    /// Reads the counter; `None` when the file or the field is missing.
    pub fn read(&self) -> Option<u64> {
        let text = std::fs::read_to_string(&self.file).ok()?;
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(char::is_whitespace)?;
            (k == self.field).then(|| v.trim().parse().ok()).flatten()
        })
    }
}

/// The running shim and workload (`shim.json`), as returned by [`super::spawn_shim`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimHandle {
    /// Host pid of the shim.
    pub shim_pid: i32,
    /// Start time of the shim (`/proc/<pid>/stat` field 22, clock ticks since boot).
    pub shim_start_time: u64,
    /// Host pid of the workload (PID 1 in its own PID namespace).
    pub workload_pid: i32,
    /// Start time of the workload (`/proc/<pid>/stat` field 22).
    pub workload_start_time: u64,
    /// When the workload started, RFC3339.
    pub started_at: String,
}

/// How the workload ended (`exit.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit code when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal number when a signal killed it.
    pub signal: Option<i32>,
    /// True when the configured [`OomCheck`] counter rose while it ran.
    pub oom_killed: bool,
    /// When it started, RFC3339 (empty if it never started).
    pub started_at: String,
    /// When the shim saw it end, RFC3339.
    pub finished_at: String,
    /// Why it never started, if it did not.
    #[serde(default)]
    pub error: Option<String>,
}

impl ExitRecord {
    /// The shell-style status: the exit code, or 128 + signal.
    pub fn status_code(&self) -> i32 {
        self.exit_code
            .unwrap_or_else(|| 128 + self.signal.unwrap_or(0))
    }
}

/// The current time as RFC3339 with microseconds, UTC.
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Writes `value` as JSON to `path` atomically: a temp file in the same directory, then rename.
/// `durable` adds an fsync before the rename (survives a host crash, costs milliseconds).
pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T, durable: bool) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(value).map_err(|source| ShimError::Json {
        path: path.into(),
        source,
    })?;
    let mut f = std::fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(&body).map_err(io_err("write", &tmp))?;
    if durable {
        f.sync_all().map_err(io_err("fsync", &tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err("rename", path))
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| ShimError::Json {
                path: path.into(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: ShimConfig = serde_json::from_str(r#"{"id":"u1","argv":["true"]}"#).unwrap();
        assert_eq!(c.cwd, PathBuf::from("/"));
        assert_eq!(c.log, LogLimits::default());
        assert!(serde_json::from_str::<ShimConfig>(r#"{"id":"u1","argv":[],"typo":1}"#).is_err());
    }

    #[test]
    fn oom_counter_and_atomic_json() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.events");
        std::fs::write(&f, "low 0\noom 2\noom_kill 1\n").unwrap();
        let check = OomCheck {
            file: f,
            field: "oom_kill".into(),
        };
        assert_eq!(check.read(), Some(1));
        let p = dir.path().join("exit.json");
        let rec = ExitRecord {
            exit_code: None,
            signal: Some(9),
            oom_killed: true,
            started_at: now_rfc3339(),
            finished_at: now_rfc3339(),
            error: None,
        };
        write_json_atomic(&p, &rec, true).unwrap();
        assert_eq!(read_json::<ExitRecord>(&p).unwrap(), Some(rec.clone()));
        assert_eq!(rec.status_code(), 137);
        assert!(read_json::<ExitRecord>(&dir.path().join("none.json"))
            .unwrap()
            .is_none());
    }
}
