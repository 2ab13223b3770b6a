//! Docker's default seccomp profile (moby/profiles `seccomp/default.json`) as data for x86_64,
//! compiled with `seccompiler` into BPF before the fork. Only the child installs it.
//!
//! Rules follow the profile: a fixed allow list; syscalls allowed only when the container holds a
//! capability (`mount` with `CAP_SYS_ADMIN`, `reboot` with `CAP_SYS_BOOT`, …); `socket` without
//! `AF_ALG`/`AF_VSOCK`; `personality` with the five values glibc uses; `clone` without namespace
//! flags unless `CAP_SYS_ADMIN`; `clone3` answers `ENOSYS` unless `CAP_SYS_ADMIN` so libc falls
//! back to `clone`. Everything else fails with `EPERM`, as in Docker.
//!
//! Differences, by construction: the filter checks one architecture (x86_64); a 32-bit (i386
//! or x32) system call kills the process instead of being filtered by the i386 rules.

use caps::Capability;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule,
};
use std::collections::BTreeMap;

/// The namespace flags `clone` may not carry without `CAP_SYS_ADMIN` (the profile's mask).
const CLONE_NS_MASK: u64 = 0x7E02_0000;

/// Why the profile could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// `seccompiler` refused the filter (a bug in the table: the message says what).
    #[error("seccomp filter: {0}")]
    Compile(String),
    /// The profile tables exist for x86_64 only.
    #[error("seccomp RuntimeDefault is not built for {0}; use seccompProfile: Unconfined")]
    Arch(&'static str),
}

/// The filters to install, in order, for a container holding `caps`: the profile itself and a
/// second, smaller one that turns `clone3` into `ENOSYS` (stacked filters: the most recently
/// installed filter's errno wins among equal actions).
pub fn default_profile(caps: &[Capability]) -> Result<Vec<BpfProgram>, SeccompError> {
    #[cfg(target_arch = "x86_64")]
    {
        let arch = seccompiler::TargetArch::x86_64;
        let eperm = SeccompAction::Errno(libc::EPERM as u32);
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        let allow = |rules: &mut BTreeMap<i64, Vec<SeccompRule>>, list: &[(&str, i64)]| {
            for (_, nr) in list {
                rules.insert(*nr, vec![]);
            }
        };
        allow(&mut rules, table::ALLOW);
        allow(&mut rules, table::PTRACE_48);
        let has = |c: Capability| caps.contains(&c);
        for (cap, list) in table::BY_CAP {
            if has(*cap) {
                allow(&mut rules, list);
            }
        }
        let cond = |arg, len, op, v| SeccompCondition::new(arg, len, op, v).map_err(compile);
        let rule = |c: Vec<SeccompCondition>| SeccompRule::new(c).map_err(compile);
        rules.insert(
            table::SOCKET,
            vec![
                rule(vec![cond(0, Len::Dword, Op::Lt, 38)?])?,
                rule(vec![cond(0, Len::Dword, Op::Eq, 39)?])?,
                rule(vec![cond(0, Len::Dword, Op::Gt, 40)?])?,
            ],
        );
        let mut personas = Vec::new();
        for v in [0, 8, 0x20000, 0x20008, 0xffff_ffff] {
            personas.push(rule(vec![cond(0, Len::Dword, Op::Eq, v)?])?);
        }
        rules.insert(table::PERSONALITY, personas);
        if !has(Capability::CAP_SYS_ADMIN) {
            rules.insert(
                table::CLONE,
                vec![rule(vec![cond(
                    0,
                    Len::Qword,
                    Op::MaskedEq(CLONE_NS_MASK),
                    0,
                )?])?],
            );
        }
        let main = SeccompFilter::new(rules, eperm, SeccompAction::Allow, arch).map_err(compile)?;
        let mut out: Vec<BpfProgram> = vec![main.try_into().map_err(compile)?];
        if !has(Capability::CAP_SYS_ADMIN) {
            let enosys = SeccompFilter::new(
                [(table::CLONE3, vec![])].into_iter().collect(),
                SeccompAction::Allow,
                SeccompAction::Errno(libc::ENOSYS as u32),
                arch,
            )
            .map_err(compile)?;
            out.push(enosys.try_into().map_err(compile)?);
        }
        Ok(out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = caps;
        Err(SeccompError::Arch(std::env::consts::ARCH))
    }
}

fn compile(e: impl std::fmt::Display) -> SeccompError {
    SeccompError::Compile(e.to_string())
}

/// The syscall numbers the profile names, x86_64.
#[cfg(target_arch = "x86_64")]
pub(crate) mod table {
    use caps::Capability;

    pub const SOCKET: i64 = 41;
    pub const PERSONALITY: i64 = 135;
    pub const CLONE: i64 = 56;
    pub const CLONE3: i64 = 435;

    /// Docker's unconditional allow list (plus `arch_prctl`, `modify_ldt` for amd64).
    pub const ALLOW: &[(&str, i64)] = &[
        ("accept", 43),
        ("accept4", 288),
        ("access", 21),
        ("adjtimex", 159),
        ("alarm", 37),
        ("bind", 49),
        ("brk", 12),
        ("cachestat", 451),
        ("capget", 125),
        ("capset", 126),
        ("chdir", 80),
        ("chmod", 90),
        ("chown", 92),
        ("clock_adjtime", 305),
        ("clock_getres", 229),
        ("clock_gettime", 228),
        ("clock_nanosleep", 230),
        ("close", 3),
        ("close_range", 436),
        ("connect", 42),
        ("copy_file_range", 326),
        ("creat", 85),
        ("dup", 32),
        ("dup2", 33),
        ("dup3", 292),
        ("epoll_create", 213),
        ("epoll_create1", 291),
        ("epoll_ctl", 233),
        ("epoll_ctl_old", 214),
        ("epoll_pwait", 281),
        ("epoll_pwait2", 441),
        ("epoll_wait", 232),
        ("epoll_wait_old", 215),
        ("eventfd", 284),
        ("eventfd2", 290),
        ("execve", 59),
        ("execveat", 322),
        ("exit", 60),
        ("exit_group", 231),
        ("faccessat", 269),
        ("faccessat2", 439),
        ("fadvise64", 221),
        ("fallocate", 285),
        ("fanotify_mark", 301),
        ("fchdir", 81),
        ("fchmod", 91),
        ("fchmodat", 268),
        ("fchmodat2", 452),
        ("fchown", 93),
        ("fchownat", 260),
        ("fcntl", 72),
        ("fdatasync", 75),
        ("fgetxattr", 193),
        ("flistxattr", 196),
        ("flock", 73),
        ("fork", 57),
        ("fremovexattr", 199),
        ("fsetxattr", 190),
        ("fstat", 5),
        ("fstatfs", 138),
        ("fsync", 74),
        ("ftruncate", 77),
        ("futex", 202),
        ("futex_requeue", 456),
        ("futex_wait", 455),
        ("futex_waitv", 449),
        ("futex_wake", 454),
        ("futimesat", 261),
        ("getcpu", 309),
        ("getcwd", 79),
        ("getdents", 78),
        ("getdents64", 217),
        ("getegid", 108),
        ("geteuid", 107),
        ("getgid", 104),
        ("getgroups", 115),
        ("getitimer", 36),
        ("getpeername", 52),
        ("getpgid", 121),
        ("getpgrp", 111),
        ("getpid", 39),
        ("getppid", 110),
        ("getpriority", 140),
        ("getrandom", 318),
        ("getresgid", 120),
        ("getresuid", 118),
        ("getrlimit", 97),
        ("get_robust_list", 274),
        ("getrusage", 98),
        ("getsid", 124),
        ("getsockname", 51),
        ("getsockopt", 55),
        ("get_thread_area", 211),
        ("gettid", 186),
        ("gettimeofday", 96),
        ("getuid", 102),
        ("getxattr", 191),
        ("inotify_add_watch", 254),
        ("inotify_init", 253),
        ("inotify_init1", 294),
        ("inotify_rm_watch", 255),
        ("io_cancel", 210),
        ("ioctl", 16),
        ("io_destroy", 207),
        ("io_getevents", 208),
        ("io_pgetevents", 333),
        ("ioprio_get", 252),
        ("ioprio_set", 251),
        ("io_setup", 206),
        ("io_submit", 209),
        ("kill", 62),
        ("landlock_add_rule", 445),
        ("landlock_create_ruleset", 444),
        ("landlock_restrict_self", 446),
        ("lchown", 94),
        ("lgetxattr", 192),
        ("link", 86),
        ("linkat", 265),
        ("listen", 50),
        ("listmount", 458),
        ("listxattr", 194),
        ("llistxattr", 195),
        ("lremovexattr", 198),
        ("lseek", 8),
        ("lsetxattr", 189),
        ("lstat", 6),
        ("madvise", 28),
        ("map_shadow_stack", 453),
        ("membarrier", 324),
        ("memfd_create", 319),
        ("memfd_secret", 447),
        ("mincore", 27),
        ("mkdir", 83),
        ("mkdirat", 258),
        ("mknod", 133),
        ("mknodat", 259),
        ("mlock", 149),
        ("mlock2", 325),
        ("mlockall", 151),
        ("mmap", 9),
        ("mprotect", 10),
        ("mq_getsetattr", 245),
        ("mq_notify", 244),
        ("mq_open", 240),
        ("mq_timedreceive", 243),
        ("mq_timedsend", 242),
        ("mq_unlink", 241),
        ("mremap", 25),
        ("mseal", 462),
        ("msgctl", 71),
        ("msgget", 68),
        ("msgrcv", 70),
        ("msgsnd", 69),
        ("msync", 26),
        ("munlock", 150),
        ("munlockall", 152),
        ("munmap", 11),
        ("name_to_handle_at", 303),
        ("nanosleep", 35),
        ("newfstatat", 262),
        ("open", 2),
        ("openat", 257),
        ("openat2", 437),
        ("pause", 34),
        ("pidfd_open", 434),
        ("pidfd_send_signal", 424),
        ("pipe", 22),
        ("pipe2", 293),
        ("pkey_alloc", 330),
        ("pkey_free", 331),
        ("pkey_mprotect", 329),
        ("poll", 7),
        ("ppoll", 271),
        ("prctl", 157),
        ("pread64", 17),
        ("preadv", 295),
        ("preadv2", 327),
        ("prlimit64", 302),
        ("process_mrelease", 448),
        ("pselect6", 270),
        ("pwrite64", 18),
        ("pwritev", 296),
        ("pwritev2", 328),
        ("read", 0),
        ("readahead", 187),
        ("readlink", 89),
        ("readlinkat", 267),
        ("readv", 19),
        ("recvfrom", 45),
        ("recvmmsg", 299),
        ("recvmsg", 47),
        ("remap_file_pages", 216),
        ("removexattr", 197),
        ("rename", 82),
        ("renameat", 264),
        ("renameat2", 316),
        ("restart_syscall", 219),
        ("rmdir", 84),
        ("rseq", 334),
        ("rt_sigaction", 13),
        ("rt_sigpending", 127),
        ("rt_sigprocmask", 14),
        ("rt_sigqueueinfo", 129),
        ("rt_sigreturn", 15),
        ("rt_sigsuspend", 130),
        ("rt_sigtimedwait", 128),
        ("rt_tgsigqueueinfo", 297),
        ("sched_getaffinity", 204),
        ("sched_getattr", 315),
        ("sched_getparam", 143),
        ("sched_get_priority_max", 146),
        ("sched_get_priority_min", 147),
        ("sched_getscheduler", 145),
        ("sched_rr_get_interval", 148),
        ("sched_setaffinity", 203),
        ("sched_setattr", 314),
        ("sched_setparam", 142),
        ("sched_setscheduler", 144),
        ("sched_yield", 24),
        ("seccomp", 317),
        ("select", 23),
        ("semctl", 66),
        ("semget", 64),
        ("semop", 65),
        ("semtimedop", 220),
        ("sendfile", 40),
        ("sendmmsg", 307),
        ("sendmsg", 46),
        ("sendto", 44),
        ("setfsgid", 123),
        ("setfsuid", 122),
        ("setgid", 106),
        ("setgroups", 116),
        ("setitimer", 38),
        ("setpgid", 109),
        ("setpriority", 141),
        ("setregid", 114),
        ("setresgid", 119),
        ("setresuid", 117),
        ("setreuid", 113),
        ("setrlimit", 160),
        ("set_robust_list", 273),
        ("setsid", 112),
        ("setsockopt", 54),
        ("set_thread_area", 205),
        ("set_tid_address", 218),
        ("setuid", 105),
        ("setxattr", 188),
        ("shmat", 30),
        ("shmctl", 31),
        ("shmdt", 67),
        ("shmget", 29),
        ("shutdown", 48),
        ("sigaltstack", 131),
        ("signalfd", 282),
        ("signalfd4", 289),
        ("socketpair", 53),
        ("splice", 275),
        ("stat", 4),
        ("statfs", 137),
        ("statmount", 457),
        ("statx", 332),
        ("symlink", 88),
        ("symlinkat", 266),
        ("sync", 162),
        ("sync_file_range", 277),
        ("syncfs", 306),
        ("sysinfo", 99),
        ("tee", 276),
        ("tgkill", 234),
        ("time", 201),
        ("timer_create", 222),
        ("timer_delete", 226),
        ("timer_getoverrun", 225),
        ("timer_gettime", 224),
        ("timer_settime", 223),
        ("timerfd_create", 283),
        ("timerfd_gettime", 287),
        ("timerfd_settime", 286),
        ("times", 100),
        ("tkill", 200),
        ("truncate", 76),
        ("umask", 95),
        ("uname", 63),
        ("unlink", 87),
        ("unlinkat", 263),
        ("uretprobe", 335),
        ("utime", 132),
        ("utimensat", 280),
        ("utimes", 235),
        ("vfork", 58),
        ("vmsplice", 278),
        ("wait4", 61),
        ("waitid", 247),
        ("write", 1),
        ("writev", 20),
        ("arch_prctl", 158),
        ("modify_ldt", 154),
        ("setxattrat", 463),
        ("getxattrat", 464),
        ("listxattrat", 465),
        ("removexattrat", 466),
    ];
    // minKernel 4.8 rule
    /// Allowed on kernels from 4.8 on (all kernels tend supports).
    pub const PTRACE_48: &[(&str, i64)] = &[
        ("process_vm_readv", 310),
        ("process_vm_writev", 311),
        ("ptrace", 101),
    ];
    /// Allowed only to a container holding the capability.
    pub const BY_CAP: &[(Capability, &[(&str, i64)])] = &[
        (
            Capability::CAP_DAC_READ_SEARCH,
            &[("open_by_handle_at", 304)],
        ),
        (
            Capability::CAP_SYS_ADMIN,
            &[
                ("bpf", 321),
                ("fanotify_init", 300),
                ("fsconfig", 431),
                ("fsmount", 432),
                ("fsopen", 430),
                ("fspick", 433),
                ("lookup_dcookie", 212),
                ("lsm_get_self_attr", 459),
                ("lsm_list_modules", 461),
                ("lsm_set_self_attr", 460),
                ("mount", 165),
                ("mount_setattr", 442),
                ("move_mount", 429),
                ("open_tree", 428),
                ("perf_event_open", 298),
                ("quotactl", 179),
                ("quotactl_fd", 443),
                ("setdomainname", 171),
                ("sethostname", 170),
                ("setns", 308),
                ("syslog", 103),
                ("umount2", 166),
                ("unshare", 272),
                ("clone", 56),
                ("clone3", 435),
            ],
        ),
        (Capability::CAP_SYS_BOOT, &[("reboot", 169)]),
        (Capability::CAP_SYS_CHROOT, &[("chroot", 161)]),
        (
            Capability::CAP_SYS_MODULE,
            &[
                ("delete_module", 176),
                ("init_module", 175),
                ("finit_module", 313),
            ],
        ),
        (Capability::CAP_SYS_PACCT, &[("acct", 163)]),
        (
            Capability::CAP_SYS_PTRACE,
            &[
                ("kcmp", 312),
                ("pidfd_getfd", 438),
                ("process_madvise", 440),
                ("process_vm_readv", 310),
                ("process_vm_writev", 311),
                ("ptrace", 101),
            ],
        ),
        (Capability::CAP_SYS_RAWIO, &[("iopl", 172), ("ioperm", 173)]),
        (
            Capability::CAP_SYS_TIME,
            &[("settimeofday", 164), ("clock_settime", 227)],
        ),
        (Capability::CAP_SYS_TTY_CONFIG, &[("vhangup", 153)]),
        (
            Capability::CAP_SYS_NICE,
            &[
                ("get_mempolicy", 239),
                ("mbind", 237),
                ("set_mempolicy", 238),
                ("set_mempolicy_home_node", 450),
            ],
        ),
        (Capability::CAP_SYSLOG, &[("syslog", 103)]),
        (Capability::CAP_BPF, &[("bpf", 321)]),
        (Capability::CAP_PERFMON, &[("perf_event_open", 298)]),
    ];
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn allowed_by_default(nr: i64) -> bool {
        table::ALLOW
            .iter()
            .chain(table::PTRACE_48)
            .any(|(_, n)| *n == nr)
    }

    #[test]
    fn the_default_list_leaves_out_keys_mounts_modules_and_namespaces() {
        // keyctl, add_key, request_key, mount, umount2, unshare, setns, init_module,
        // finit_module, reboot, bpf: each needs a capability Docker's default set lacks.
        for nr in [250, 248, 249, 165, 166, 272, 308, 175, 313, 169, 321] {
            assert!(
                !allowed_by_default(nr),
                "syscall {nr} is in the default list"
            );
        }
        let names: Vec<&str> = table::ALLOW.iter().map(|(n, _)| *n).collect();
        assert!(names.contains(&"execve") && names.contains(&"capset"));
        let mut nrs: Vec<i64> = table::ALLOW.iter().map(|(_, n)| *n).collect();
        nrs.sort();
        nrs.dedup();
        assert_eq!(nrs.len(), table::ALLOW.len(), "a number is listed twice");
    }

    #[test]
    fn capabilities_add_their_syscalls_and_clone3_gets_enosys_without_sys_admin() {
        assert_eq!(default_profile(&[]).unwrap().len(), 2);
        let admin = default_profile(&[Capability::CAP_SYS_ADMIN]).unwrap();
        assert_eq!(
            admin.len(),
            1,
            "with CAP_SYS_ADMIN clone3 is allowed, no second filter"
        );
        assert!(admin[0].len() > default_profile(&[]).unwrap()[0].len());
    }
}
