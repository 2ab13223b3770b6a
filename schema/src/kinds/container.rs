//! Container: a workload with its rootfs, resources, networks and restart policy.

pub use super::health::{Dependency, DependencyCondition, Probe, Probes};
pub use super::rollout::{
    ImageUpdate, RolledBack, RolloutStatus, RolloutStep, StrategyType, UpdateStrategy,
};
pub use super::security::SecurityContext;
use crate::field::{check_dns1123_label, FieldErrors};
use crate::meta::{CommonStatus, Time};
use crate::quantity::Quantity;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// How many container ids (uids and gids alike) a user namespace maps: 0..65535.
pub const USERNS_IDS: u32 = 65536;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerSpec {
    #[serde(default)]
    pub runtime: Runtime,
    /// Docker runtime: a local image name, or `{state: NAME}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    /// Native runtime: the root filesystem; omitted means the host filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<Rootfs>,
    /// Empty with a rootfs State made from an image: the image's Entrypoint + Cmd.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Replaces the image's Cmd (after the Entrypoint); appended to `command` when both are set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkAttachment>,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period_seconds: Option<u32>,
    /// Run a small init as PID 1 that forwards signals to the command and reaps zombies (as
    /// `docker run --init`): for workloads that install no SIGTERM handler of their own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// Share the host's network namespace (admin only). Default: a container without networks
    /// gets a namespace of its own with only `lo`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// Host ports forwarded (DNAT) to the container's address on its first network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Startup, liveness and readiness probes, run by tend for every runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<Probes>,
    /// Containers (same namespace) that must meet their condition before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Dependency>,
    /// How much output is kept: the log is rotated at `maxSize`, `maxFiles` files in all. Unset
    /// fields take the daemon's defaults (`tend serve --log-max-size 10Mi --log-max-files 5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogOptions>,
    /// How a spec change reaches the host: Recreate (default) or a health-gated Rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<UpdateStrategy>,
}

/// `spec.logs`: size-bounded rotation of a container's output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogOptions {
    /// Rotate when the log would grow past this (at least 4Ki).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<Quantity>,
    /// Files kept, the current one included (1–99).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u32>,
}

/// The smallest `spec.logs.maxSize`: a line longer than the limit still goes into one file.
pub const MIN_LOG_SIZE: u64 = 4 << 10;
/// The most files `spec.logs.maxFiles` keeps (`log`, `log.1` … `log.98`).
pub const MAX_LOG_FILES: u32 = 99;

/// One published port: `hostIP:hostPort` on the host reaches `containerPort` in the container.
/// Ports are `u32` so an out-of-range number is a validation error naming the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPort {
    pub container_port: u32,
    pub host_port: u32,
    #[serde(default)]
    pub protocol: Protocol,
    /// The host address to listen on; omitted means every address (`0.0.0.0`).
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

impl ContainerPort {
    /// The host address, `0.0.0.0` (every local address) when unset; `None` when it does not
    /// parse (admission refuses that).
    pub fn host_addr(&self) -> Option<Ipv4Addr> {
        match &self.host_ip {
            None => Some(Ipv4Addr::UNSPECIFIED),
            Some(s) => s.parse().ok(),
        }
    }

    /// Whether two published ports want the same host socket: same protocol and port, and
    /// the same address or one of them on every address.
    pub fn overlaps(&self, other: &ContainerPort) -> bool {
        let (a, b) = (self.host_addr(), other.host_addr());
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (a == b || a == Some(Ipv4Addr::UNSPECIFIED) || b == Some(Ipv4Addr::UNSPECIFIED))
    }

    /// `hostIP:hostPort/protocol`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{}:{}/{}",
            self.host_ip.as_deref().unwrap_or("0.0.0.0"),
            self.host_port,
            self.protocol.as_str()
        )
    }
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Protocol {
    #[default]
    TCP,
    UDP,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::TCP => "TCP",
            Protocol::UDP => "UDP",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    #[default]
    Native,
    Docker,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ImageRef {
    Name(String),
    State { state: String },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rootfs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct User {
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkAttachment {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// The name of the Sandbox a Container with `rootfs: {state: …}` owns: `<container>-rootfs`.
pub fn rootfs_sandbox_name(container: &str) -> String {
    format!("{container}-rootfs")
}

impl ContainerSpec {
    /// The securityContext, defaults filled in when absent.
    pub fn security(&self) -> SecurityContext {
        self.security_context.clone().unwrap_or_default()
    }

    /// The update strategy, defaults filled in when absent.
    pub fn strategy(&self) -> UpdateStrategy {
        self.update_strategy.clone().unwrap_or_default()
    }

    /// The declared probes (none when absent).
    pub fn probes(&self) -> Probes {
        self.probes.clone().unwrap_or_default()
    }

    pub fn grace_period_seconds(&self) -> u32 {
        self.stop_grace_period_seconds.unwrap_or(10)
    }

    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut errs = FieldErrors::default();
        match self.runtime {
            Runtime::Native => {
                // A rootfs State may come from an image, whose config supplies the command;
                // the controller says so in a condition when it does not.
                let from_state = self.rootfs.as_ref().is_some_and(|r| r.state.is_some());
                if self.command.is_empty() && !from_state {
                    errs.push(
                        "spec.command",
                        "must not be empty for the native runtime (unless rootfs is an image State)",
                    );
                }
                if self.image.is_some() {
                    errs.push(
                        "spec.image",
                        "is only used by the docker runtime; use spec.rootfs",
                    );
                }
            }
            Runtime::Docker => {
                if self.image.is_none() {
                    errs.push("spec.image", "is required for the docker runtime");
                }
                if self.rootfs.is_some() {
                    errs.push(
                        "spec.rootfs",
                        "is only used by the native runtime; use spec.image",
                    );
                }
            }
        }
        match &self.image {
            Some(ImageRef::Name(n)) if n.trim().is_empty() || n.len() > 255 => {
                errs.push("spec.image", "must be a non-empty image reference")
            }
            Some(ImageRef::State { state }) => name(&mut errs, "spec.image.state", state),
            _ => {}
        }
        if let Some(r) = &self.rootfs {
            match (&r.sandbox, &r.state) {
                (Some(s), None) => name(&mut errs, "spec.rootfs.sandbox", s),
                (None, Some(s)) => name(&mut errs, "spec.rootfs.state", s),
                _ => errs.push("spec.rootfs", "exactly one of sandbox, state must be set"),
            }
        }
        for (field, list) in [("command", &self.command), ("args", &self.args)] {
            for (i, arg) in list.iter().enumerate() {
                if arg.contains('\0') {
                    errs.push(format!("spec.{field}[{i}]"), "must not contain NUL");
                }
            }
        }
        for (i, e) in self.env.iter().enumerate() {
            let ok = !e.name.is_empty()
                && !e.name.contains('=')
                && !e.name.contains('\0')
                && !e.value.contains('\0');
            if !ok {
                errs.push(
                    format!("spec.env[{i}].name"),
                    format!("{:?} is not a valid variable name", e.name),
                );
            }
        }
        if let Some(w) = &self.working_dir {
            if !w.starts_with('/') {
                errs.push("spec.workingDir", format!("{w:?} must be an absolute path"));
            }
        }
        if let Some(h) = &self.hostname {
            if let Err(m) = check_dns1123_label(h) {
                errs.push("spec.hostname", m);
            }
        }
        if let Some(res) = &self.resources {
            if let Some(m) = &res.memory {
                if m.value() < 1 << 20 {
                    errs.push(
                        "spec.resources.memory",
                        format!("{m:?} is below the 1Mi minimum", m = m.as_str()),
                    );
                }
            }
            if let Some(c) = &res.cpu {
                if c.millis() < 1 {
                    errs.push(
                        "spec.resources.cpu",
                        format!("{:?} must be at least 1m", c.as_str()),
                    );
                }
            }
            if res.pids == Some(0) {
                errs.push("spec.resources.pids", "must be at least 1");
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, n) in self.networks.iter().enumerate() {
            name(&mut errs, &format!("spec.networks[{i}].name"), &n.name);
            if !seen.insert(&n.name) {
                errs.push(
                    format!("spec.networks[{i}].name"),
                    format!("{:?} is listed twice", n.name),
                );
            }
            if let Some(ip) = &n.ip {
                if ip.parse::<Ipv4Addr>().is_err() {
                    errs.push(
                        format!("spec.networks[{i}].ip"),
                        format!("{ip:?} is not an IPv4 address"),
                    );
                }
            }
        }
        if self.host_network && !self.networks.is_empty() {
            errs.push(
                "spec.hostNetwork",
                "cannot be combined with spec.networks (the host namespace has no attachments)",
            );
        }
        if let Some(sc) = &self.security_context {
            sc.validate(&mut errs);
            if sc.user_namespace {
                self.validate_user_namespace(&mut errs);
            }
        }
        self.validate_ports(&mut errs);
        self.validate_logs(&mut errs);
        if let Some(p) = &self.probes {
            p.validate(&mut errs);
        }
        super::health::validate_dependencies(&self.depends_on, &mut errs);
        if let Some(u) = &self.update_strategy {
            let has_sandbox = self.runtime == Runtime::Native && self.rootfs.is_some();
            u.validate(has_sandbox, &mut errs);
        }
        if self.networks.len() > 16 {
            errs.push("spec.networks", "at most 16 networks");
        }
        if let Some(g) = self.stop_grace_period_seconds {
            if g > 3600 {
                errs.push("spec.stopGracePeriodSeconds", "must be at most 3600");
            }
        }
        errs.into_result()
    }
}

impl ContainerSpec {
    /// `securityContext.userNamespace: true`: native runtime, a rootfs (the host filesystem
    /// cannot be id-mapped), and a user inside the 65536 ids the namespace maps.
    fn validate_user_namespace(&self, errs: &mut FieldErrors) {
        let field = "spec.securityContext.userNamespace";
        if self.runtime == Runtime::Docker {
            errs.push(
                field,
                "is not supported with runtime: docker (Docker remaps users only daemon-wide, userns-remap); use the native runtime",
            );
            return;
        }
        if self.rootfs.is_none() {
            errs.push(
                field,
                "needs spec.rootfs (a Sandbox or State): the host filesystem is not id-mapped into a container's user namespace",
            );
        }
        if let Some(u) = &self.user {
            for (f, id) in [("uid", u.uid), ("gid", u.gid)] {
                if id >= USERNS_IDS {
                    errs.push(
                        format!("spec.user.{f}"),
                        format!(
                            "{id} is outside the {USERNS_IDS} ids a user namespace maps (0-{})",
                            USERNS_IDS - 1
                        ),
                    );
                }
            }
        }
    }

    fn validate_logs(&self, errs: &mut FieldErrors) {
        let Some(l) = &self.logs else { return };
        if let Some(q) = &l.max_size {
            if q.value() < MIN_LOG_SIZE {
                errs.push(
                    "spec.logs.maxSize",
                    format!("{q} is below the smallest size, 4Ki"),
                );
            }
        }
        if let Some(n) = l.max_files {
            if !(1..=MAX_LOG_FILES).contains(&n) {
                errs.push(
                    "spec.logs.maxFiles",
                    format!("{n} is not in 1..{MAX_LOG_FILES}"),
                );
            }
        }
    }

    fn validate_ports(&self, errs: &mut FieldErrors) {
        if !self.ports.is_empty() && self.networks.is_empty() {
            errs.push(
                "spec.ports",
                "needs spec.networks: a port is forwarded to the address on the first network",
            );
        }
        for (i, p) in self.ports.iter().enumerate() {
            for (field, v) in [
                ("containerPort", p.container_port),
                ("hostPort", p.host_port),
            ] {
                if !(1..=65535).contains(&v) {
                    errs.push(
                        format!("spec.ports[{i}].{field}"),
                        format!("{v} is not in 1..65535"),
                    );
                }
            }
            if p.host_addr().is_none() {
                errs.push(
                    format!("spec.ports[{i}].hostIP"),
                    format!(
                        "{:?} is not an IPv4 address",
                        p.host_ip.as_deref().unwrap_or("")
                    ),
                );
            }
            if let Some(j) = self.ports[..i].iter().position(|q| q.overlaps(p)) {
                errs.push(
                    format!("spec.ports[{i}].hostPort"),
                    format!("{} is already published by spec.ports[{j}]", p.describe()),
                );
            }
        }
    }
}

fn name(errs: &mut FieldErrors, field: &str, value: &str) {
    if let Err(m) = check_dns1123_label(value) {
        errs.push(field, m);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default)]
    pub restart_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state: Option<LastState>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkStatusEntry>,
    /// The published ports installed on the host (empty until they are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// The crash loop so far, kept in the store so a daemon restart does not reset its backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_loop: Option<CrashLoopStatus>,
    /// The revision whose spec the workload runs (`tend rollout history`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// The image digest of the rootfs State the workload's tree was made from (image States
    /// only); a different digest in the State replaces the workload per `updateStrategy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// A rollout in progress (its step survives a daemon restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// The last generation rolled back, while it is still the spec's generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<RolledBack>,
    /// The host ids the Container's user namespace maps (`securityContext.userNamespace`), held
    /// from its first start until it is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_namespace: Option<UserNamespaceStatus>,
    /// What the running workload uses, from the daemon's last sample. Served with every read of
    /// the object, never stored (a sample is not a change of the object; watches do not carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ContainerUsage>,
}

/// `status.userNamespace`: container uid/gid `n` (0 ≤ n < size) is host id `hostId + n`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserNamespaceStatus {
    pub host_id: u32,
    pub size: u32,
}

/// A sample of a running workload's use (`status.usage`, `tend top`, the `container_*` series
/// of `/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerUsage {
    /// CPU time used by the workload's cgroup so far.
    pub cpu_seconds: f64,
    /// CPU used between the last two samples, in cores (0.5 = half of one core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<f64>,
    /// Memory charged to the cgroup, page cache included.
    pub memory_bytes: u64,
    /// `memoryBytes` less inactive file cache (cAdvisor's working set).
    pub working_set_bytes: u64,
    /// Tasks (threads) in the cgroup.
    pub pids: u64,
    /// Share of the last 10 s some task was stalled (PSI `some avg10`, percent), cgroup v2 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure: Option<PressureSample>,
    pub sampled_at: Time,
}

/// PSI `some avg10` (percent) per resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PressureSample {
    pub cpu: f64,
    pub memory: f64,
    pub io: f64,
}

/// Runs in a row that ended before the backoff reset window, and the exit last counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrashLoopStatus {
    pub crashes: u32,
    /// Generation of the exit last counted.
    pub generation: i64,
    /// When the exit last counted happened (with the generation, so a reconcile repeated on
    /// the same exit does not count it twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default)]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatusEntry {
    pub name: String,
    pub interface: String,
    pub ip: String,
}

#[cfg(test)]
mod tests {
    use crate::kinds::Kind;
    use serde_json::json;

    #[test]
    fn bad_quantity_names_its_path() {
        let spec = json!({"command": ["sh"], "resources": {"memory": "12XB"}});
        let err = Kind::Container.validate_spec(&spec).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"spec.resources.memory: "12XB" is not a quantity"#
        );
    }

    #[test]
    fn user_namespaces_need_the_native_runtime_a_rootfs_and_a_mapped_user() {
        let err = |spec: serde_json::Value| {
            Kind::Container
                .validate_spec(&spec)
                .map(|_| String::new())
                .unwrap_or_else(|e| e.to_string())
        };
        let sc = json!({"userNamespace": true});
        assert!(
            err(json!({"runtime": "docker", "image": "busybox", "securityContext": sc}))
                .starts_with(
                    "spec.securityContext.userNamespace: is not supported with runtime: docker"
                )
        );
        assert!(err(json!({"command": ["sh"], "securityContext": sc}))
            .starts_with("spec.securityContext.userNamespace: needs spec.rootfs"));
        assert_eq!(
            err(
                json!({"command": ["sh"], "rootfs": {"sandbox": "s"}, "securityContext": sc,
                "user": {"uid": 65536}})
            ),
            "spec.user.uid: 65536 is outside the 65536 ids a user namespace maps (0-65535)"
        );
        assert_eq!(
            err(
                json!({"command": ["sh"], "rootfs": {"sandbox": "s"}, "securityContext": sc,
                "user": {"uid": 1000, "gid": 1000}})
            ),
            ""
        );
    }

    #[test]
    fn log_rotation_limits_name_the_field() {
        let err = |logs: serde_json::Value| {
            let spec = json!({"command": ["sh"], "logs": logs});
            Kind::Container
                .validate_spec(&spec)
                .map(|_| String::new())
                .unwrap_or_else(|e| e.to_string())
        };
        assert_eq!(
            err(json!({"maxSize": "1Ki"})),
            "spec.logs.maxSize: 1Ki is below the smallest size, 4Ki"
        );
        assert_eq!(
            err(json!({"maxFiles": 0})),
            "spec.logs.maxFiles: 0 is not in 1..99"
        );
        assert!(err(json!({"maxfiles": 2})).starts_with("spec.logs.maxfiles: unknown field"));
        assert_eq!(err(json!({"maxSize": "4Ki", "maxFiles": 2})), "");
    }

    #[test]
    fn unknown_field_names_its_path() {
        let spec = json!({"command": ["sh"], "resources": {"memroy": "1Mi"}});
        let err = Kind::Container.validate_spec(&spec).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("spec.resources.memroy: unknown field"),
            "{err}"
        );
    }

    #[test]
    fn a_name_whose_rootfs_sandbox_would_be_too_long_is_refused() {
        let obj = |name: &str| {
            crate::AnyObject::new(
                Kind::Container,
                "default",
                name,
                json!({"command": ["sh"], "rootfs": {"state": "base"}}),
            )
        };
        let err = obj(&"a".repeat(60)).validate().unwrap_err();
        assert_eq!(err.0[0].field, "metadata.name");
        assert!(err.to_string().contains("-rootfs"), "{err}");
        obj(&"a".repeat(56)).validate().unwrap();
        // Without a State rootfs no Sandbox is derived: the name may use all 63 characters.
        let mut plain = obj(&"a".repeat(63));
        plain.spec = json!({"command": ["sh"]});
        plain.validate().unwrap();
    }

    #[test]
    fn port_errors_name_the_field() {
        let nets = json!([{"name": "backend"}]);
        let spec = json!({"command": ["sh"], "networks": nets, "ports": [
            {"containerPort": 80, "hostPort": 8080},
            {"containerPort": 81, "hostPort": 70000, "protocol": "UDP"},
            {"containerPort": 82, "hostPort": 8080, "hostIP": "127.0.0.1"},
            {"containerPort": 83, "hostPort": 9, "hostIP": "localhost"},
        ]});
        let err = Kind::Container.validate_spec(&spec).unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.ports[1].hostPort",
                "spec.ports[2].hostPort",
                "spec.ports[3].hostIP"
            ],
            "{err}"
        );
        let spec = json!({"command": ["sh"], "ports": [{"containerPort": 80, "hostPort": 80}]});
        let err = Kind::Container.validate_spec(&spec).unwrap_err();
        assert_eq!(err.0[0].field, "spec.ports");
        let spec = json!({"command": ["sh"], "networks": nets, "ports": [
            {"containerPort": 53, "hostPort": 5353, "protocol": "UDP"},
            {"containerPort": 53, "hostPort": 5353, "protocol": "TCP", "hostIP": "127.0.0.1"},
        ]});
        Kind::Container.validate_spec(&spec).unwrap();
    }

    #[test]
    fn update_strategy_errors_name_the_field() {
        let spec = json!({"command": ["sh"], "updateStrategy": {
            "snapshotData": true, "revisionHistoryLimit": 0, "progressDeadlineSeconds": 5}});
        let err = Kind::Container.validate_spec(&spec).unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.updateStrategy.revisionHistoryLimit",
                "spec.updateStrategy.snapshotData",
                "spec.updateStrategy.snapshotData",
                "spec.updateStrategy.progressDeadlineSeconds",
            ],
            "{err}"
        );
        let spec = json!({"command": ["sh"], "rootfs": {"sandbox": "d"}, "updateStrategy": {
            "type": "Rollout", "snapshotData": true, "progressDeadlineSeconds": 5}});
        Kind::Container.validate_spec(&spec).unwrap();
        let spec = json!({"command": ["sh"], "updateStrategy": {"type": "Canary"}});
        let err = Kind::Container.validate_spec(&spec).unwrap_err();
        assert_eq!(err.0[0].field, "spec.updateStrategy.type", "{err}");
    }

    #[test]
    fn rootfs_needs_exactly_one() {
        let spec = json!({"command": ["sh"], "rootfs": {"sandbox": "a", "state": "b"}});
        let err = Kind::Container.validate_spec(&spec).unwrap_err();
        assert_eq!(err.0[0].field, "spec.rootfs");
    }

    #[test]
    fn docker_needs_image() {
        let spec = json!({"runtime": "docker", "command": ["sh"]});
        let err = Kind::Container.validate_spec(&spec).unwrap_err();
        assert_eq!(err.0[0].field, "spec.image");
        let spec = json!({"runtime": "docker", "image": {"state": "base"}});
        Kind::Container.validate_spec(&spec).unwrap();
    }
}
