//! A Container's `securityContext`: privileged, capabilities, seccomp, no_new_privs, read-only
//! root, runAsNonRoot, userNamespace; and the capability sets every runtime and the policy share.

use crate::field::FieldErrors;
use serde::{Deserialize, Serialize};

/// Docker's default capability set (moby `oci/caps/defaults.go`): what a container holds
/// unless its securityContext adds or drops.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability Linux defines (6.x), in bit order.
pub const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityContext {
    /// All capabilities, no seccomp filter, no masked paths (admin only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompProfile>,
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_new_privileges: Option<bool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_root_filesystem: bool,
    /// Refuse to start when the resolved uid is 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub run_as_non_root: bool,
    /// Run in a user namespace of its own: container uid/gid 0..65535 are an unprivileged host
    /// range allocated to this Container (native runtime with a rootfs only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub user_namespace: bool,
}

/// Capability names, with or without `CAP_`, any case; `ALL` means every capability.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capabilities {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompProfile {
    /// Docker's default profile.
    #[default]
    RuntimeDefault,
    /// No filter (admin only).
    Unconfined,
}

/// `net_admin`, `NET_ADMIN`, `CAP_NET_ADMIN` → `CAP_NET_ADMIN`; `None` for an unknown name.
pub fn canonical_capability(name: &str) -> Option<&'static str> {
    let up = name.trim().to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    ALL_CAPABILITIES.iter().copied().find(|c| *c == full)
}

impl SecurityContext {
    pub fn seccomp(&self) -> SeccompProfile {
        self.seccomp_profile.unwrap_or_default()
    }

    pub fn no_new_privileges(&self) -> bool {
        self.no_new_privileges.unwrap_or(true)
    }

    /// The capabilities the container holds (canonical names, bit order); every capability
    /// when privileged. Unknown names are ignored here (validation refuses them).
    pub fn effective_capabilities(&self) -> Vec<&'static str> {
        if self.privileged {
            return ALL_CAPABILITIES.to_vec();
        }
        let caps = self.capabilities.clone().unwrap_or_default();
        let all = |l: &[String]| l.iter().any(|c| c.eq_ignore_ascii_case("ALL"));
        let names = |l: &[String]| -> Vec<&'static str> {
            l.iter().filter_map(|c| canonical_capability(c)).collect()
        };
        let (add, drop) = (names(&caps.add), names(&caps.drop));
        ALL_CAPABILITIES
            .iter()
            .copied()
            .filter(|c| {
                let default = DEFAULT_CAPABILITIES.contains(c) && !all(&caps.drop);
                all(&caps.add) || add.contains(c) || (default && !drop.contains(c))
            })
            .collect()
    }

    pub fn validate(&self, errs: &mut FieldErrors) {
        let base = "spec.securityContext";
        if let Some(c) = &self.capabilities {
            for (list, names) in [("add", &c.add), ("drop", &c.drop)] {
                for (i, n) in names.iter().enumerate() {
                    if !n.eq_ignore_ascii_case("ALL") && canonical_capability(n).is_none() {
                        errs.push(
                            format!("{base}.capabilities.{list}[{i}]"),
                            format!("{n:?} is not a Linux capability"),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(add: &[&str], drop: &[&str]) -> SecurityContext {
        SecurityContext {
            capabilities: Some(Capabilities {
                add: add.iter().map(|s| s.to_string()).collect(),
                drop: drop.iter().map(|s| s.to_string()).collect(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn capabilities_start_from_docker_s_set() {
        let d = SecurityContext::default().effective_capabilities();
        assert_eq!(d.len(), DEFAULT_CAPABILITIES.len());
        let c = ctx(&["net_admin"], &["MKNOD", "CAP_NET_RAW"]).effective_capabilities();
        assert!(c.contains(&"CAP_NET_ADMIN") && !c.contains(&"CAP_MKNOD"));
        assert_eq!(c.len(), 13);
        assert_eq!(
            ctx(&["CHOWN"], &["ALL"]).effective_capabilities(),
            ["CAP_CHOWN"]
        );
        assert_eq!(ctx(&["ALL"], &[]).effective_capabilities().len(), 41);
        let p = SecurityContext {
            privileged: true,
            ..Default::default()
        };
        assert_eq!(p.effective_capabilities().len(), 41);
    }

    #[test]
    fn validation_names_the_bad_capability() {
        let mut errs = FieldErrors::default();
        let c = ctx(&["NET_ADMIN", "FLY"], &["all"]);
        c.validate(&mut errs);
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.securityContext.capabilities.add[1]"]);
    }
}
