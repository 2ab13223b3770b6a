//! What tend asks Docker to run (`DockerSpec`), the ownership labels, and the stable spec hash.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, NetworkingConfig,
    RestartPolicy, RestartPolicyNameEnum,
};
use serde::Serialize;

/// Label carrying the owning tend object's uid; its presence is what makes a container tend's.
pub const LABEL_UID: &str = "dev.tend.uid";
/// Label carrying the owning object's namespace.
pub const LABEL_NAMESPACE: &str = "dev.tend.namespace";
/// Label carrying the owning object's name.
pub const LABEL_NAME: &str = "dev.tend.name";
/// Label carrying `spec_hash` of the spec the container was created from.
pub const LABEL_SPEC_HASH: &str = "dev.tend.spec-hash";

/// The tend object that owns a Docker container or network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl Owner {
    /// The ownership labels (`dev.tend.uid`, `dev.tend.namespace`, `dev.tend.name`).
    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_UID.to_string(), self.uid.clone()),
            (LABEL_NAMESPACE.to_string(), self.namespace.clone()),
            (LABEL_NAME.to_string(), self.name.clone()),
        ])
    }

    /// Reads the owner back from a label map; `None` when the uid label is missing.
    pub fn from_labels(labels: &HashMap<String, String>) -> Option<Owner> {
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let uid = labels.get(LABEL_UID)?.clone();
        Some(Owner {
            uid,
            namespace: get(LABEL_NAMESPACE),
            name: get(LABEL_NAME),
        })
    }

    /// The Docker container name tend uses for this owner: `tend-<uid>`.
    pub fn container_name(&self) -> String {
        format!("tend-{}", self.uid)
    }
}

/// Attachment of a container to one Docker network, optionally at a fixed IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkAttachment {
    /// The Docker network name (see `DockerDriver::ensure_network`).
    pub network: String,
    /// The address to assign; `None` lets Docker's IPAM pick one.
    pub ipv4: Option<Ipv4Addr>,
}

/// Everything about a Docker container that tend declares. Two specs with the same
/// [`spec_hash`] produce equivalent containers; a different hash means replace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DockerSpec {
    /// A local image reference (`repo:tag` or an image id).
    pub image: String,
    /// The command (Docker `Cmd`; the image entrypoint is cleared so this is the whole argv).
    pub cmd: Vec<String>,
    /// Environment variables, name → value (sorted, so order never changes the hash).
    pub env: BTreeMap<String, String>,
    /// Working directory inside the container.
    pub working_dir: Option<String>,
    /// Hostname inside the container.
    pub hostname: Option<String>,
    /// `(uid, gid)` the command runs as.
    pub user: Option<(u32, u32)>,
    /// Memory limit in bytes (swap is limited to the same value: no extra swap).
    pub memory: Option<i64>,
    /// CPU limit in millicores (1000 = one CPU), sent as `NanoCpus`.
    pub cpu_millicores: Option<i64>,
    /// Maximum number of processes.
    pub pids: Option<i64>,
    /// The network to join; `None` means Docker's `none` mode (loopback only).
    pub network: Option<NetworkAttachment>,
    /// Extra user labels (from `metadata.labels`), added beside tend's own labels.
    pub labels: BTreeMap<String, String>,
    // The fields below are left out of the hash when unset, so a spec that does not use them
    // keeps the hash it had before they existed.
    /// Docker's `NetworkMode: host`; wins over `network`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    /// Docker's `Privileged`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// Capabilities added to Docker's default set (`CAP_…` names).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities dropped from Docker's default set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// `SecurityOpt`, e.g. `no-new-privileges`, `seccomp=unconfined`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// Docker's `ReadonlyRootfs`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub readonly_rootfs: bool,
    /// json-file log rotation (`max-size` in bytes, `max-file`), from `spec.logs`; unset keeps
    /// dockerd's own default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_max_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_max_files: Option<u32>,
    /// Docker's `Init`: its own init as PID 1 (signals forwarded, zombies reaped).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
}

impl DockerSpec {
    /// `cpu_millicores` as Docker `NanoCpus` (1 millicore = 1,000,000 nano CPUs).
    pub fn nano_cpus(&self) -> Option<i64> {
        self.cpu_millicores.map(|m| m * 1_000_000)
    }

    /// The json-file driver with tend's rotation, when `spec.logs` set one.
    fn log_config(&self) -> Option<bollard::models::HostConfigLogConfig> {
        let mut config = HashMap::new();
        if let Some(b) = self.log_max_size {
            config.insert("max-size".to_string(), b.to_string());
        }
        if let Some(n) = self.log_max_files {
            config.insert("max-file".to_string(), n.to_string());
        }
        (!config.is_empty()).then(|| bollard::models::HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(config),
        })
    }

    /// The Engine API create body for this spec, with tend's labels for `owner`. Docker's restart
    /// policy is always "no": tend restarts containers itself, with its own backoff.
    pub(crate) fn to_create_body(&self, owner: &Owner) -> ContainerCreateBody {
        let mut labels: HashMap<String, String> = self.labels.clone().into_iter().collect();
        labels.extend(owner.labels());
        labels.insert(LABEL_SPEC_HASH.to_string(), spec_hash(self));
        let env = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let (network_mode, networking_config) = match &self.network {
            _ if self.host_network => ("host".to_string(), None),
            None => ("none".to_string(), None),
            Some(att) => {
                let endpoint = EndpointSettings {
                    ipam_config: att.ipv4.map(|ip| EndpointIpamConfig {
                        ipv4_address: Some(ip.to_string()),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let cfg = NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(att.network.clone(), endpoint)])),
                };
                (att.network.clone(), Some(cfg))
            }
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(self.cmd.clone()),
            entrypoint: Some(Vec::new()),
            env: Some(env),
            working_dir: self.working_dir.clone(),
            hostname: self.hostname.clone(),
            user: self.user.map(|(u, g)| format!("{u}:{g}")),
            labels: Some(labels),
            host_config: Some(HostConfig {
                memory: self.memory,
                memory_swap: self.memory,
                nano_cpus: self.nano_cpus(),
                pids_limit: self.pids,
                network_mode: Some(network_mode),
                privileged: Some(self.privileged),
                cap_add: (!self.cap_add.is_empty()).then(|| self.cap_add.clone()),
                cap_drop: (!self.cap_drop.is_empty()).then(|| self.cap_drop.clone()),
                security_opt: (!self.security_opt.is_empty()).then(|| self.security_opt.clone()),
                readonly_rootfs: Some(self.readonly_rootfs),
                log_config: self.log_config(),
                init: self.init.then_some(true),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            networking_config,
            ..Default::default()
        }
    }
}

/// A stable hash of every field of `spec`: FNV-1a 64 over its canonical JSON (struct fields in
/// declaration order, maps sorted), as 16 hex digits. Stable across Rust releases and platforms,
/// unlike `DefaultHasher`, so a tend upgrade does not replace every container.
pub fn spec_hash(spec: &DockerSpec) -> String {
    let canonical = serde_json::to_vec(spec).expect("DockerSpec always serializes");
    format!("{:016x}", fnv1a64(&canonical))
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DockerSpec {
        DockerSpec {
            image: "tend-test/busybox:latest".into(),
            cmd: vec!["sleep".into(), "60".into()],
            memory: Some(64 << 20),
            ..Default::default()
        }
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn hash_is_pinned_so_upgrades_do_not_replace_containers() {
        // If this changes, every running docker container is replaced on upgrade: do it on purpose.
        assert_eq!(spec_hash(&spec()), "1ac163630bbce579");
    }

    #[test]
    fn hash_follows_limits_not_label_or_env_order() {
        let mut more = spec();
        more.memory = Some(128 << 20);
        assert_ne!(spec_hash(&spec()), spec_hash(&more));

        let (mut a, mut b) = (spec(), spec());
        a.labels.insert("x".into(), "1".into());
        a.labels.insert("y".into(), "2".into());
        b.labels.insert("y".into(), "2".into());
        b.labels.insert("x".into(), "1".into());
        a.env.insert("A".into(), "1".into());
        a.env.insert("B".into(), "2".into());
        b.env.insert("B".into(), "2".into());
        b.env.insert("A".into(), "1".into());
        assert_eq!(spec_hash(&a), spec_hash(&b));
    }

    #[test]
    fn init_asks_docker_for_its_init_and_is_part_of_the_hash() {
        let owner = Owner {
            uid: "u1".into(),
            namespace: "default".into(),
            name: "web".into(),
        };
        let plain = spec().to_create_body(&owner).host_config.unwrap();
        assert_eq!(plain.init, None);
        let mut s = spec();
        s.init = true;
        assert_ne!(spec_hash(&s), spec_hash(&spec()));
        assert_eq!(
            s.to_create_body(&owner).host_config.unwrap().init,
            Some(true)
        );
    }

    #[test]
    fn create_body_carries_labels_limits_and_no_restart() {
        let owner = Owner {
            uid: "u1".into(),
            namespace: "default".into(),
            name: "web".into(),
        };
        let mut s = spec();
        s.cpu_millicores = Some(500);
        s.user = Some((1000, 1000));
        let body = s.to_create_body(&owner);
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_UID], "u1");
        assert_eq!(labels[LABEL_SPEC_HASH], spec_hash(&s));
        let hc = body.host_config.unwrap();
        assert_eq!(hc.nano_cpus, Some(500_000_000));
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(
            hc.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        assert_eq!(Owner::from_labels(&labels), Some(owner));
    }
}
