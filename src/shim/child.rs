//! What runs between fork and exec. Everything is prepared before the fork (C strings, fds, the
//! list of mounts), so the child only makes system calls: no allocation, no locks.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

use super::security::{loopback_up, SecurityPlan};

/// One filesystem step of the container setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// `mkdir(path, 0755)`, existing is fine.
    Mkdir(CString),
    /// Create an empty file (a bind-mount target), existing is fine.
    Touch(CString),
    /// `symlink(target, link)`, existing is fine.
    Symlink(CString, CString),
    /// Hides a kernel path: `/dev/null` bound over a file, an empty read-only tmpfs over a
    /// directory; a path this kernel does not have is skipped.
    Mask(CString),
    /// Binds a kernel path read-only over itself; skipped when missing.
    ReadOnly(CString),
    /// `mount(source, target, fstype, flags, data)`.
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: MsFlags,
        data: Option<CString>,
    },
}

fn c(s: impl AsRef<[u8]>) -> CString {
    CString::new(s.as_ref().to_vec()).unwrap_or_default()
}

fn cp(p: &Path) -> CString {
    use std::os::unix::ffi::OsStrExt;
    c(p.as_os_str().as_bytes())
}

fn mount(
    source: Option<&str>,
    target: CString,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Op {
    Op::Mount {
        source: source.map(c),
        target,
        fstype: fstype.map(c),
        flags,
        data: data.map(c),
    }
}

/// The masked and read-only kernel paths under `root` (see [`super::security`]).
pub(crate) fn mask_ops(root: &Path) -> Vec<Op> {
    use super::security::{MASKED_PATHS, READONLY_PATHS};
    let masks = MASKED_PATHS.iter().map(|p| Op::Mask(cp(&root.join(p))));
    masks
        .chain(
            READONLY_PATHS
                .iter()
                .map(|p| Op::ReadOnly(cp(&root.join(p)))),
        )
        .collect()
}

/// The mounts that build a container root in `root` before `pivot_root`: the root bind itself
/// (left out when `idmapped`: the child attaches the shim's id-mapped clone there instead),
/// /proc, a minimal /dev, /dev/pts, /dev/shm, /dev/mqueue and a read-only /sys.
pub(crate) fn rootfs_ops(root: &Path, idmapped: bool) -> Vec<Op> {
    let at = |rel: &str| cp(&root.join(rel));
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let bind = Op::Mount {
        source: Some(cp(root)),
        target: cp(root),
        fstype: None,
        flags: MsFlags::MS_BIND | MsFlags::MS_REC,
        data: None,
    };
    let mut ops: Vec<Op> = (!idmapped).then_some(bind).into_iter().collect();
    ops.extend([
        Op::Mkdir(at("proc")),
        mount(Some("proc"), at("proc"), Some("proc"), nosuid, None),
        Op::Mkdir(at("dev")),
        mount(
            Some("tmpfs"),
            at("dev"),
            Some("tmpfs"),
            MsFlags::MS_NOSUID,
            Some("mode=755,size=65536k"),
        ),
    ]);
    for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
        ops.push(Op::Touch(at(&format!("dev/{dev}"))));
        ops.push(mount(
            Some(&format!("/dev/{dev}")),
            at(&format!("dev/{dev}")),
            None,
            MsFlags::MS_BIND,
            None,
        ));
    }
    ops.extend([
        Op::Mkdir(at("dev/pts")),
        mount(
            Some("devpts"),
            at("dev/pts"),
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        ),
        Op::Symlink(c("pts/ptmx"), at("dev/ptmx")),
        Op::Mkdir(at("dev/shm")),
        mount(
            Some("shm"),
            at("dev/shm"),
            Some("tmpfs"),
            nosuid,
            Some("mode=1777,size=65536k"),
        ),
        Op::Mkdir(at("dev/mqueue")),
        mount(
            Some("mqueue"),
            at("dev/mqueue"),
            Some("mqueue"),
            nosuid,
            None,
        ),
        Op::Symlink(c("/proc/self/fd"), at("dev/fd")),
        Op::Symlink(c("/proc/self/fd/0"), at("dev/stdin")),
        Op::Symlink(c("/proc/self/fd/1"), at("dev/stdout")),
        Op::Symlink(c("/proc/self/fd/2"), at("dev/stderr")),
        Op::Mkdir(at("sys")),
        mount(
            Some("sysfs"),
            at("sys"),
            Some("sysfs"),
            nosuid | MsFlags::MS_RDONLY,
            None,
        ),
    ]);
    ops
}

/// On the host filesystem only /proc is replaced, so the new PID namespace shows itself.
pub(crate) fn host_ops() -> Vec<Op> {
    vec![mount(
        Some("proc"),
        c("/proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )]
}

/// `(/proc/sys/<name>, value)` for each net sysctl, ready for the child.
pub(crate) fn sysctl_ops(sysctls: &[(String, String)]) -> Vec<(CString, CString)> {
    sysctls
        .iter()
        .map(|(k, v)| (c(format!("/proc/sys/{}", k.trim_start_matches('/'))), c(v)))
        .collect()
}

/// `open(O_WRONLY)` + one `write`: how a sysctl file takes its value.
fn write_file(path: &std::ffi::CStr, data: &[u8]) -> nix::Result<()> {
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    nix::unistd::write(&fd, data).map(drop)
}

/// Paths to try for `argv0`: itself when it has a `/`, else each `PATH` entry of `env`.
pub(crate) fn exec_candidates(argv0: &str, env: &[(String, String)]) -> Vec<CString> {
    if argv0.contains('/') {
        return vec![c(argv0)];
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    path.unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| c(format!("{}/{argv0}", d.trim_end_matches('/'))))
        .collect()
}

/// `name=value` strings for execve.
pub(crate) fn envp(env: &[(String, String)]) -> Vec<CString> {
    env.iter().map(|(k, v)| c(format!("{k}={v}"))).collect()
}

/// Setup steps, reported to the parent with the errno when they fail.
pub(crate) const STEPS: &[&str] = &[
    "dup2 stdio",
    "wait for the shim",
    "setns net",
    "unshare mnt/uts/ipc",
    "make mounts private",
    "mount",
    "mkdir",
    "create file",
    "symlink",
    "pivot_root",
    "sethostname",
    "chdir",
    "setgroups/setgid/setuid",
    "execve",
    "setns",
    "chroot",
    "fork",
    "capabilities",
    "no_new_privs",
    "seccomp",
    "unshare net",
    "loopback up",
    "mask path",
    "read-only path",
    "read-only root",
    "block signals",
    "attach id-mapped root",
    "setns user",
    "net sysctl",
];

/// Everything the workload child needs, prepared before the fork.
pub(crate) struct ChildPlan {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub go: OwnedFd,
    pub report: OwnedFd,
    pub netns: Option<OwnedFd>,
    /// Without `netns`: unshare a new network namespace and bring `lo` up.
    pub own_netns: bool,
    /// `/proc/sys/...` files and values written once in the container's network namespace.
    pub net_sysctls: Vec<(CString, CString)>,
    pub security: SecurityPlan,
    pub readonly_root: bool,
    pub root: Option<CString>,
    pub ops: Vec<Op>,
    pub hostname: Option<CString>,
    pub cwd: CString,
    pub uid: u32,
    pub gid: u32,
    pub candidates: Vec<CString>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// Stay as PID 1 (an init: signals forwarded, zombies reaped) and run the command as its
    /// child.
    pub init: bool,
    /// The user namespace to enter after `pivot_root` (see [`super::userns`]).
    pub userns: Option<OwnedFd>,
    /// The id-mapped clone of the rootfs, attached at `root` instead of a plain bind.
    pub root_tree: Option<OwnedFd>,
}

/// Writes `(step, errno)` on the report pipe and exits 127 without running any destructor.
pub(crate) fn fail(report: BorrowedFd<'_>, step: &str, errno: Errno) -> ! {
    let idx = STEPS.iter().position(|s| *s == step).unwrap_or(0) as u8;
    let mut msg = [0u8; 5];
    msg[0] = idx;
    msg[1..].copy_from_slice(&(errno as i32).to_le_bytes());
    let _ = nix::unistd::write(report, &msg);
    exit_now(127)
}

/// Decodes a report written by [`fail`].
pub(crate) fn decode_failure(msg: &[u8]) -> String {
    let step = STEPS.get(msg[0] as usize).copied().unwrap_or("?");
    let errno = Errno::from_raw(i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]));
    format!("{step}: {}", errno.desc())
}

/// `_exit`: leaves at once, no atexit handlers, no stdio flushing (safe after fork).
#[allow(unsafe_code)]
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// [`Op::Mask`]: what to put over `path` depends on what it is.
fn mask(path: &std::ffi::CStr) -> nix::Result<()> {
    let st = match nix::sys::stat::stat(path) {
        Err(Errno::ENOENT) => return Ok(()),
        other => other?,
    };
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0"),
        )
    } else {
        nix::mount::mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    }
}

/// [`Op::ReadOnly`]: bind over itself, then remount the bind read-only.
fn read_only(path: &std::ffi::CStr) -> nix::Result<()> {
    match nix::mount::mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    ) {
        Err(Errno::ENOENT) => return Ok(()),
        other => other?,
    }
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    nix::mount::mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
}

fn run_op(op: &Op) -> Result<(), (&'static str, Errno)> {
    let ok_exists = |r: nix::Result<()>, step| match r {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err((step, e)),
    };
    match op {
        Op::Mask(p) => mask(p).map_err(|e| ("mask path", e)),
        Op::ReadOnly(p) => read_only(p).map_err(|e| ("read-only path", e)),
        Op::Mkdir(p) => ok_exists(
            nix::unistd::mkdir(p.as_c_str(), Mode::from_bits_truncate(0o755)),
            "mkdir",
        ),
        Op::Touch(p) => {
            let flags = nix::fcntl::OFlag::O_CREAT
                | nix::fcntl::OFlag::O_WRONLY
                | nix::fcntl::OFlag::O_CLOEXEC;
            nix::fcntl::open(p.as_c_str(), flags, Mode::from_bits_truncate(0o644))
                .map(drop)
                .map_err(|e| ("create file", e))
        }
        Op::Symlink(t, l) => ok_exists(
            nix::unistd::symlinkat(t.as_c_str(), nix::fcntl::AT_FDCWD, l.as_c_str()),
            "symlink",
        ),
        Op::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => nix::mount::mount(
            source.as_deref(),
            target.as_c_str(),
            fstype.as_deref(),
            *flags,
            data.as_deref(),
        )
        .map_err(|e| ("mount", e)),
    }
}

/// Tries each candidate with execve; returns only on failure (the last interesting errno).
pub(crate) fn exec_any(candidates: &[CString], argv: &[CString], envp: &[CString]) -> Errno {
    let mut err = Errno::ENOENT;
    for cand in candidates {
        let e = nix::unistd::execve(cand, argv, envp).unwrap_err();
        if e != Errno::ENOENT && e != Errno::ENOTDIR {
            err = e;
        }
    }
    err
}

/// The workload side of the fork. Never returns: execs the command or reports and `_exit`s.
pub(crate) fn run(plan: &ChildPlan) -> ! {
    let report = plan.report.as_fd();
    let step = |step: &'static str, r: nix::Result<()>| {
        if let Err(e) = r {
            fail(report, step, e)
        }
    };
    step("dup2 stdio", nix::unistd::dup2_stdin(&plan.stdin));
    step("dup2 stdio", nix::unistd::dup2_stdout(&plan.stdout));
    step("dup2 stdio", nix::unistd::dup2_stderr(&plan.stderr));
    let mut byte = [0u8; 1];
    match nix::unistd::read(plan.go.as_fd(), &mut byte) {
        Ok(1) => {}
        _ => exit_now(127), // the shim died or refused: nothing to report to
    }
    if let Some(ns) = &plan.netns {
        step("setns net", nix::sched::setns(ns, CloneFlags::CLONE_NEWNET));
    } else if plan.own_netns {
        step("unshare net", nix::sched::unshare(CloneFlags::CLONE_NEWNET));
        step("loopback up", loopback_up());
    }
    // Net sysctls resolve against the writer's network namespace: the container's, by now.
    for (path, value) in &plan.net_sysctls {
        step("net sysctl", write_file(path, value.as_bytes()));
    }
    step(
        "unshare mnt/uts/ipc",
        nix::sched::unshare(
            CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC,
        ),
    );
    step(
        "make mounts private",
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ),
    );
    if let (Some(tree), Some(root)) = (&plan.root_tree, &plan.root) {
        step(
            "attach id-mapped root",
            super::userns::attach(tree.as_fd(), root.as_c_str()),
        );
    }
    for op in &plan.ops {
        if let Err((s, e)) = run_op(op) {
            fail(report, s, e)
        }
    }
    if let Some(root) = &plan.root {
        step("pivot_root", nix::unistd::chdir(root.as_c_str()));
        step("pivot_root", nix::unistd::pivot_root(".", "."));
        step("pivot_root", nix::mount::umount2(".", MntFlags::MNT_DETACH));
        if plan.readonly_root {
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            step(
                "read-only root",
                nix::mount::mount(None::<&str>, "/", None::<&str>, flags, None::<&str>),
            );
        }
    }
    if let Some(h) = &plan.hostname {
        use std::os::unix::ffi::OsStrExt;
        step(
            "sethostname",
            nix::unistd::sethostname(std::ffi::OsStr::from_bytes(h.as_bytes())),
        );
    }
    step("chdir", nix::unistd::chdir(plan.cwd.as_c_str()));
    if let Some(ns) = &plan.userns {
        // Last namespace step: from here on the capabilities count only inside it, and
        // entering it resets the bounding set, which the security plan cuts next.
        step(
            "setns user",
            nix::sched::setns(ns, CloneFlags::CLONE_NEWUSER),
        );
    }
    if let Err((s, e)) = plan.security.apply_before_setuid() {
        fail(report, s, e)
    }
    step(
        "setgroups/setgid/setuid",
        nix::unistd::setgroups(&[Gid::from_raw(plan.gid)]),
    );
    step(
        "setgroups/setgid/setuid",
        nix::unistd::setgid(Gid::from_raw(plan.gid)),
    );
    step(
        "setgroups/setgid/setuid",
        nix::unistd::setuid(Uid::from_raw(plan.uid)),
    );
    if let Err((s, e)) = plan.security.apply_after_setuid(plan.uid) {
        fail(report, s, e)
    }
    let _ = plan.report.as_raw_fd(); // stays open (O_CLOEXEC): EOF on exec tells the shim it worked
    if plan.init {
        super::init::run(plan)
    }
    fail(
        report,
        "execve",
        exec_any(&plan.candidates, &plan.argv, &plan.envp),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_path() {
        let env = vec![("PATH".to_string(), "/a:/b/".to_string())];
        assert_eq!(exec_candidates("sh", &env), vec![c("/a/sh"), c("/b/sh")]);
        assert_eq!(exec_candidates("/bin/x", &env), vec![c("/bin/x")]);
        assert_eq!(exec_candidates("sh", &[]).len(), 6);
    }

    #[test]
    fn rootfs_ops_start_with_the_root_bind_and_end_with_sys() {
        let ops = rootfs_ops(Path::new("/r"), false);
        assert!(matches!(&ops[0], Op::Mount { target, .. } if target.as_bytes() == b"/r"));
        let idmapped = rootfs_ops(Path::new("/r"), true);
        assert_eq!(
            idmapped[0],
            Op::Mkdir(c("/r/proc")),
            "no plain bind under the id-mapped root"
        );
        assert_eq!(idmapped.len() + 1, ops.len());
        assert!(
            matches!(ops.last(), Some(Op::Mount { flags, .. }) if flags.contains(MsFlags::MS_RDONLY))
        );
        assert_eq!(
            decode_failure(&[13, 2, 0, 0, 0]),
            "execve: No such file or directory"
        );
    }
}
