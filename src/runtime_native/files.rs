//! A native container's directory `<state-dir>/containers/<uid>/`: what tend writes there
//! besides the shim's files, the shim config it builds from a spec, and reading the log.
//!
//! Layout: `config.json` (the [`ShimConfig`]), `meta.json` ([`Meta`]: the generation the run is
//! for), and the shim's own `shim.lock`, `shim.json`, `exit.json`, `log`, `log.1`, …; the log
//! of the run before the current one is kept as `previous.log` (`tend logs --previous`).

use super::NativeError;
use crate::cgroup::{AnyCgroupManager, CgroupManager, Limits};
use crate::shim::{IdMap, LogLimits, OomCheck, Security, ShimConfig};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tend_controllers::container::WorkloadSpec;
use tend_schema::kinds::container::ContainerSpec;
use tend_schema::kinds::security::SeccompProfile;

/// What tend records about the run in a container directory (`meta.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The Container's uid.
    pub uid: String,
    /// `namespace/name`, for people reading the directory.
    pub name: String,
    /// The generation the current run was started for.
    pub generation: i64,
}

/// The directory of container `uid` under `<state-dir>/containers`.
pub fn container_dir(containers_root: &Path, uid: &str) -> PathBuf {
    containers_root.join(uid)
}

/// The cgroup name of container `uid` in daemon instance `instance`.
pub fn cgroup_name(instance: &str, uid: &str) -> String {
    format!("{instance}-{uid}")
}

/// The limits `spec.resources` asks for.
pub fn limits(spec: &ContainerSpec) -> Limits {
    let r = spec.resources.clone().unwrap_or_default();
    Limits {
        memory_bytes: r.memory.map(|m| m.value()),
        cpu_millis: r.cpu.map(|c| c.millis()),
        pids: r.pids.map(u64::from),
    }
}

/// The OOM counter the shim compares before and after the run.
fn oom_check(cg: &AnyCgroupManager, name: &str) -> Option<OomCheck> {
    let joins = cg.path_for_join(name);
    match cg {
        AnyCgroupManager::V1(_) => joins
            .iter()
            .find(|p| p.components().any(|c| c.as_os_str() == "memory"))
            .map(|p| OomCheck {
                file: p.with_file_name("memory.oom_control"),
                field: "oom_kill".into(),
            }),
        AnyCgroupManager::V2(_) => joins.first().map(|p| OomCheck {
            file: p.with_file_name("memory.events"),
            field: "oom_kill".into(),
        }),
    }
}

/// The isolation `spec` asks for. On cgroup v2 (`devices_filtered: false`: no device allow-list)
/// CAP_MKNOD leaves Docker's default set unless the spec adds it, so no device node can be made.
pub fn security(spec: &ContainerSpec, devices_filtered: bool) -> Security {
    let sc = spec.security();
    let mut caps = sc.effective_capabilities();
    let asked_mknod = sc.capabilities.as_ref().is_some_and(|c| {
        c.add
            .iter()
            .any(|n| ["MKNOD", "CAP_MKNOD", "ALL"].contains(&n.to_ascii_uppercase().as_str()))
    });
    if !devices_filtered && !asked_mknod {
        caps.retain(|c| *c != "CAP_MKNOD");
    }
    Security {
        capabilities: (!sc.privileged).then(|| caps.iter().map(|c| c.to_string()).collect()),
        no_new_privs: sc.no_new_privileges(),
        seccomp: !sc.privileged && sc.seccomp() == SeccompProfile::RuntimeDefault,
        mask_paths: !sc.privileged,
        readonly_rootfs: sc.read_only_root_filesystem,
        own_network: !spec.host_network,
    }
}

/// Whether `spec` gets the device allow-list (every container but a privileged one).
pub fn restricts_devices(spec: &ContainerSpec) -> bool {
    !spec.security().privileged
}

/// The shim config for workload `w` in cgroup `cgroup`.
pub fn shim_config(
    w: &WorkloadSpec,
    cg: &AnyCgroupManager,
    cgroup: &str,
    log: LogLimits,
) -> ShimConfig {
    let mut env: Vec<(String, String)> = w
        .spec
        .env
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(
            0,
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
        );
    }
    let user = w.spec.user.unwrap_or_default();
    let short = w.name.rsplit('/').next().unwrap_or("container").to_string();
    ShimConfig {
        id: w.uid.clone(),
        argv: w.spec.command.clone(),
        env,
        cwd: PathBuf::from(w.spec.working_dir.as_deref().unwrap_or("/")),
        hostname: Some(w.spec.hostname.clone().unwrap_or(short)),
        uid: user.uid,
        gid: user.gid,
        rootfs: w.rootfs.clone(),
        netns: w.netns.clone(),
        cgroup_procs: cg.path_for_join(cgroup),
        log,
        oom: oom_check(cg, cgroup),
        security: security(&w.spec, matches!(cg, AnyCgroupManager::V1(_))),
        init: w.spec.init,
        net_sysctls: userns_net_sysctls(w),
        user_namespace: w.user_namespace.map(|u| IdMap {
            host_id: u.host_id,
            size: u.size,
        }),
    }
}

/// In a user namespace, container root's capabilities do not reach the network namespace (the
/// initial user namespace owns it), so what Docker grants every container by sysctl is granted
/// here the same way: ports below 1024 (`ip_unprivileged_port_start=0`) and ICMP echo sockets
/// for every group (`ping_group_range`). Never for the host's network namespace.
fn userns_net_sysctls(w: &WorkloadSpec) -> Vec<(String, String)> {
    if w.user_namespace.is_none() || w.spec.host_network {
        return vec![];
    }
    vec![
        ("net/ipv4/ip_unprivileged_port_start".into(), "0".into()),
        ("net/ipv4/ping_group_range".into(), "0 2147483647".into()),
    ]
}

/// Writes JSON atomically (temp file + rename; no fsync: a host crash ends the run too).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), NativeError> {
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(value).map_err(|source| NativeError::Json {
        path: path.into(),
        source,
    })?;
    std::fs::write(&tmp, body).map_err(NativeError::io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(NativeError::io("rename", path))
}

/// Reads JSON; `None` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, NativeError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| NativeError::Json {
                path: path.into(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NativeError::io("read", path)(e)),
    }
}

/// Keeps the last run's newest log as `previous.log` and drops its rotated parts, so the next
/// run starts a fresh `log`.
pub fn rotate_previous(dir: &Path) -> Result<(), NativeError> {
    let log = dir.join("log");
    if log.exists() {
        std::fs::rename(&log, dir.join("previous.log")).map_err(NativeError::io("rename", &log))?;
    }
    for n in 1..100 {
        let p = dir.join(format!("log.{n}"));
        if std::fs::remove_file(&p).is_err() {
            break;
        }
    }
    Ok(())
}

/// The log files of the current run, oldest first (`log.N` … `log.1`, `log`), or of the
/// previous run.
pub fn log_files(dir: &Path, previous: bool) -> Vec<PathBuf> {
    if previous {
        return vec![dir.join("previous.log")];
    }
    let mut rotated: Vec<PathBuf> = (1..100)
        .map(|n| dir.join(format!("log.{n}")))
        .take_while(|p| p.exists())
        .collect();
    rotated.reverse();
    rotated.push(dir.join("log"));
    rotated
}

/// One log record: `<timestamp> <stream> <text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: String,
    pub stream: String,
    pub text: String,
}

impl LogLine {
    /// Parses one line of the shim's log format; `None` for a malformed line.
    pub fn parse(line: &str) -> Option<LogLine> {
        let (time, rest) = line.split_once(' ')?;
        let (stream, text) = rest.split_once(' ').unwrap_or((rest, ""));
        Some(LogLine {
            time: time.into(),
            stream: stream.into(),
            text: text.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> ContainerSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn security_follows_the_spec_and_drops_mknod_without_a_device_list() {
        let mut d = security(&spec(serde_json::json!({"command": ["sh"]})), true);
        let mut docker = Security::default();
        for s in [&mut d, &mut docker] {
            s.capabilities.as_mut().unwrap().sort();
        }
        assert_eq!(d, docker);
        let v2 = security(&spec(serde_json::json!({"command": ["sh"]})), false);
        assert!(!v2.capabilities.unwrap().iter().any(|c| c == "CAP_MKNOD"));
        let p = security(
            &spec(serde_json::json!({"command": ["sh"], "hostNetwork": true,
                "securityContext": {"privileged": true, "readOnlyRootFilesystem": true}})),
            false,
        );
        assert!(p.capabilities.is_none() && !p.seccomp && !p.mask_paths && !p.own_network);
        assert!(p.readonly_rootfs && p.no_new_privs);
        let u = security(
            &spec(serde_json::json!({"command": ["sh"],
                "securityContext": {"seccompProfile": "Unconfined", "noNewPrivileges": false}})),
            true,
        );
        assert!(!u.seccomp && !u.no_new_privs && u.mask_paths);
    }

    #[test]
    fn log_lines_parse_and_files_order_oldest_first() {
        let l = LogLine::parse("2026-01-01T00:00:00.123456Z stdout hello world").unwrap();
        assert_eq!(
            (l.stream.as_str(), l.text.as_str()),
            ("stdout", "hello world")
        );
        assert_eq!(
            LogLine::parse("2026-01-01T00:00:00Z stderr").unwrap().text,
            ""
        );
        let d = tempfile::tempdir().unwrap();
        for f in ["log", "log.1", "log.2"] {
            std::fs::write(d.path().join(f), f).unwrap();
        }
        let names: Vec<_> = log_files(d.path(), false)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["log.2", "log.1", "log"]);
        rotate_previous(d.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("previous.log")).unwrap(),
            "log"
        );
        assert!(!d.path().join("log.1").exists());
    }
}
