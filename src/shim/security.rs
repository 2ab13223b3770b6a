//! What a workload may do: its capabilities, `no_new_privs`, the seccomp filter, masked and
//! read-only kernel paths, its own network namespace. The daemon writes [`Security`] into
//! `config.json`; the shim turns it into a [`SecurityPlan`] before the fork (capability sets,
//! compiled BPF), and the child only applies the plan with system calls.

use caps::{CapSet, Capability, CapsHashSet};
use nix::errno::Errno;
use seccompiler::BpfProgram;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

use super::seccomp::{default_profile, SeccompError};

/// Docker's default capability set: the schema's, the one list the policy and the shim share.
pub use tend_schema::kinds::security::DEFAULT_CAPABILITIES as DOCKER_DEFAULT_CAPS;

/// Files hidden behind `/dev/null` and directories behind an empty read-only tmpfs (Docker's
/// and runc's masked paths).
pub const MASKED_PATHS: [&str; 12] = [
    "proc/asound",
    "proc/acpi",
    "proc/interrupts",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// Kernel paths bound read-only over themselves.
pub const READONLY_PATHS: [&str; 5] = [
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// The isolation of one workload, as written in `config.json`. The defaults are Docker's
/// defaults plus `no_new_privs` and a network namespace of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// Capability names (`CAP_…`) kept in the bounding set, and in the effective and permitted
    /// sets when the workload runs as uid 0; `None` keeps every capability (privileged).
    #[serde(default = "docker_caps")]
    pub capabilities: Option<Vec<String>>,
    /// Set `no_new_privs`: setuid binaries and file capabilities grant nothing.
    #[serde(default = "yes")]
    pub no_new_privs: bool,
    /// Install Docker's default seccomp profile.
    #[serde(default = "yes")]
    pub seccomp: bool,
    /// Mask [`MASKED_PATHS`] and make [`READONLY_PATHS`] read-only.
    #[serde(default = "yes")]
    pub mask_paths: bool,
    /// Remount the container root read-only after `pivot_root`.
    #[serde(default)]
    pub readonly_rootfs: bool,
    /// Without a `netns` to join: true makes a new network namespace with only `lo` up, false
    /// keeps the host's.
    #[serde(default = "yes")]
    pub own_network: bool,
}

fn yes() -> bool {
    true
}

fn docker_caps() -> Option<Vec<String>> {
    Some(DOCKER_DEFAULT_CAPS.iter().map(|s| s.to_string()).collect())
}

impl Default for Security {
    fn default() -> Self {
        Self {
            capabilities: docker_caps(),
            no_new_privs: true,
            seccomp: true,
            mask_paths: true,
            readonly_rootfs: false,
            own_network: true,
        }
    }
}

impl Security {
    /// Everything allowed: all capabilities, no filter, no masks (`privileged: true`), host network.
    pub fn unconfined() -> Self {
        Self {
            capabilities: None,
            no_new_privs: false,
            seccomp: false,
            mask_paths: false,
            readonly_rootfs: false,
            own_network: false,
        }
    }
}

/// Why a [`Security`] cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A capability name the kernel interface does not know.
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    /// The seccomp profile could not be built.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
}

/// A [`Security`] resolved before the fork: nothing left to allocate or parse in the child.
pub(crate) struct SecurityPlan {
    /// Capabilities to drop from the bounding set.
    drop_bounding: Vec<Capability>,
    /// Effective and permitted set for uid 0; `None` leaves the sets the shim has (privileged:
    /// every capability the host grants tend, which may be fewer than the kernel knows).
    root_caps: Option<CapsHashSet>,
    /// Empty set (inheritable; effective and permitted for other uids).
    none: CapsHashSet,
    no_new_privs: bool,
    filters: Vec<BpfProgram>,
}

impl SecurityPlan {
    /// Resolves names and compiles the seccomp filters.
    pub(crate) fn new(s: &Security) -> Result<Self, SecurityError> {
        let all = caps::all();
        let keep: CapsHashSet = match &s.capabilities {
            None => all.clone(),
            Some(names) => names
                .iter()
                .map(|n| {
                    Capability::from_str(&caps::to_canonical(n))
                        .map_err(|_| SecurityError::UnknownCapability(n.clone()))
                })
                .collect::<Result<_, _>>()?,
        };
        let mut drop_bounding: Vec<Capability> =
            all.iter().filter(|c| !keep.contains(c)).copied().collect();
        drop_bounding.sort_by_key(|c| c.index());
        let mut kept: Vec<Capability> = keep.iter().copied().collect();
        kept.sort_by_key(|c| c.index());
        let filters = if s.seccomp {
            default_profile(&kept)?
        } else {
            vec![]
        };
        Ok(Self {
            drop_bounding,
            root_caps: s.capabilities.is_some().then_some(keep),
            none: CapsHashSet::new(),
            no_new_privs: s.no_new_privs,
            filters,
        })
    }

    /// Child, before the uid change: drops the bounding set, sets `no_new_privs`, installs the
    /// filters (while still privileged, so `no_new_privs: false` works too) and keeps the
    /// permitted set across `setuid`.
    pub(crate) fn apply_before_setuid(&self) -> Result<(), (&'static str, Errno)> {
        for c in &self.drop_bounding {
            // EINVAL: a capability this kernel does not have; nothing to drop.
            if caps::drop(None, CapSet::Bounding, *c).is_err() && Errno::last() != Errno::EINVAL {
                return Err(("capabilities", Errno::last()));
            }
        }
        if self.no_new_privs {
            nix::sys::prctl::set_no_new_privs().map_err(|e| ("no_new_privs", e))?;
        }
        for f in &self.filters {
            install(f).map_err(|e| ("seccomp", e))?;
        }
        nix::sys::prctl::set_keepcaps(true).map_err(|e| ("capabilities", e))
    }

    /// Child, after the uid change: effective and permitted become the kept set for uid 0 and
    /// empty for other uids (as in Docker); inheritable and ambient are empty.
    pub(crate) fn apply_after_setuid(&self, uid: u32) -> Result<(), (&'static str, Errno)> {
        let set = match (&self.root_caps, uid) {
            (Some(caps), 0) => Some(caps),
            (None, 0) => None,
            _ => Some(&self.none),
        };
        let sets = [
            set.map(|s| (CapSet::Effective, s)),
            set.map(|s| (CapSet::Permitted, s)),
            Some((CapSet::Inheritable, &self.none)),
        ];
        for (cset, value) in sets.into_iter().flatten() {
            caps::set(None, cset, value).map_err(|_| ("capabilities", Errno::last()))?;
        }
        caps::clear(None, CapSet::Ambient).map_err(|_| ("capabilities", Errno::last()))
    }
}

/// `prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog)`. Not `seccompiler::apply_filter`: that
/// always sets `no_new_privs`, and `noNewPrivileges: false` must stay possible.
#[allow(unsafe_code)]
fn install(prog: &BpfProgram) -> Result<(), Errno> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        // seccompiler's `sock_filter` is `#[repr(C)]` with the kernel's layout, as libc's is.
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, alive for the call; the kernel copies the program.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
        )
    };
    Errno::result(r).map(drop)
}

/// Brings `lo` up in the current network namespace (`ioctl(SIOCSIFFLAGS)` on a datagram socket).
#[allow(unsafe_code)]
pub(crate) fn loopback_up() -> Result<(), Errno> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name[0] = b'l' as libc::c_char;
    req.ifr_name[1] = b'o' as libc::c_char;
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads an ifreq, which `req` is, for the duration of the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    Errno::result(r).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_defaults_make_docker_s_bounding_mask() {
        let plan = SecurityPlan::new(&Security::default()).unwrap();
        assert_eq!(plan.filters.len(), 2, "profile + clone3 ENOSYS");
        let mask: u64 = plan.root_caps.unwrap().iter().map(|c| c.bitmask()).sum();
        assert_eq!(mask, 0xa80425fb, "CapBnd of `docker run`");
        let privileged = SecurityPlan::new(&Security::unconfined()).unwrap();
        assert!(privileged.drop_bounding.is_empty() && privileged.filters.is_empty());
        assert!(privileged.root_caps.is_none());
    }

    #[test]
    fn capability_names_are_checked_and_canonicalized() {
        let mut s = Security {
            capabilities: Some(vec!["net_admin".into(), "CAP_SYS_ADMIN".into()]),
            ..Security::default()
        };
        let plan = SecurityPlan::new(&s).unwrap();
        assert_eq!(plan.filters.len(), 1, "CAP_SYS_ADMIN may clone3");
        assert!(plan.root_caps.unwrap().contains(&Capability::CAP_NET_ADMIN));
        s.capabilities = Some(vec!["CAP_FLY".into()]);
        assert!(matches!(
            SecurityPlan::new(&s),
            Err(SecurityError::UnknownCapability(n)) if n == "CAP_FLY"
        ));
    }

    #[test]
    fn config_without_security_gets_the_defaults() {
        let s: Security = serde_json::from_str("{}").unwrap();
        assert_eq!(s, Security::default());
    }
}
