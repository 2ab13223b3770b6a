//! `exec_in`: run a command inside a running workload's namespaces and cgroup (`tend exec`).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use super::child::{self, exit_now, fail};
use super::security::SecurityPlan;
use super::{io_err, sys_err, Result, ShimConfig, ShimError};

/// Namespaces joined, in order (mnt last: the others are opened by /proc path before it).
const NAMESPACES: [(&str, CloneFlags); 5] = [
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

struct ExecPlan {
    namespaces: Vec<(OwnedFd, CloneFlags)>,
    root: OwnedFd,
    go: OwnedFd,
    report: OwnedFd,
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    security: SecurityPlan,
    /// The workload's user namespace, entered last (see [`super::userns`]).
    userns: Option<OwnedFd>,
    uid: u32,
    gid: u32,
}

/// Runs `argv` with exactly `env` inside the PID, mount, UTS, IPC and network namespaces and the
/// root of `workload_pid`, in the cgroups of `config` (its `cgroup_procs`), as its user and with
/// its [`super::Security`] (capabilities, `no_new_privs`, seccomp) and in its user namespace
/// when it has one, with the caller's
/// stdin/stdout/stderr. Returns its exit code (128 + signal when a signal killed it).
///
/// Blocking until the command ends: call it through `tend::util::blocking` from async code.
/// Safe to call from a multi-threaded process: the namespace switches happen in a forked child.
///
/// # Errors
/// [`ShimError::StartFailed`] with the failed step when the command could not be started, e.g.
/// `execve: No such file or directory`; an I/O error naming `/proc/<pid>/ns/...` when the
/// workload is gone.
pub fn exec_in(
    workload_pid: i32,
    argv: &[String],
    env: &[(String, String)],
    config: &ShimConfig,
) -> Result<i32> {
    let cgroup_procs = &config.cgroup_procs;
    let security = SecurityPlan::new(&config.security).map_err(|e| ShimError::StartFailed {
        dir: PathBuf::from(format!("/proc/{workload_pid}")),
        message: e.to_string(),
    })?;
    let ns_dir = PathBuf::from(format!("/proc/{workload_pid}/ns"));
    let mut namespaces = Vec::new();
    for (name, flag) in NAMESPACES {
        let p = ns_dir.join(name);
        namespaces.push((File::open(&p).map_err(io_err("open", &p))?.into(), flag));
    }
    let userns = match config.user_namespace {
        Some(_) => {
            let p = ns_dir.join("user");
            Some(File::open(&p).map_err(io_err("open", &p))?.into())
        }
        None => None,
    };
    let root_path = PathBuf::from(format!("/proc/{workload_pid}/root"));
    let root: OwnedFd = File::open(&root_path)
        .map_err(io_err("open", &root_path))?
        .into();
    let (go_r, go_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("pipe2", "exec"))?;
    let (rep_r, rep_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("pipe2", "exec"))?;
    let plan = ExecPlan {
        namespaces,
        root,
        go: go_r,
        report: rep_w,
        candidates: child::exec_candidates(argv.first().map_or("", |s| s.as_str()), env),
        argv: argv
            .iter()
            .map(|a| CString::new(a.as_str()).unwrap_or_default())
            .collect(),
        envp: child::envp(env),
        security,
        userns,
        uid: config.uid,
        gid: config.gid,
    };
    if argv.is_empty() {
        return Err(ShimError::Usage("exec: empty command".into()));
    }
    let middle = match fork()? {
        ForkResult::Child => run_middle(plan),
        ForkResult::Parent { child } => child,
    };
    drop(plan);
    let abort = |e: ShimError| {
        let _ = nix::sys::signal::kill(middle, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(middle, None);
        e
    };
    for procs in cgroup_procs {
        std::fs::write(procs, middle.as_raw().to_string())
            .map_err(io_err("write", procs))
            .map_err(abort)?;
    }
    nix::unistd::write(&go_w, b"g")
        .map_err(sys_err("write", "exec go pipe"))
        .map_err(abort)?;
    let mut msg = [0u8; 5];
    let mut n = 0;
    while n < msg.len() {
        match nix::unistd::read(rep_r.as_fd(), &mut msg[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    let status = wait(middle)?;
    if n == msg.len() {
        return Err(ShimError::StartFailed {
            dir: PathBuf::from(format!("/proc/{workload_pid}")),
            message: child::decode_failure(&msg),
        });
    }
    Ok(status)
}

fn wait(pid: Pid) -> Result<i32> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, c)) => return Ok(c),
            Ok(WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(sys_err("waitpid", pid)(e)),
        }
    }
}

fn fork() -> Result<ForkResult> {
    fork_raw().map_err(sys_err("fork", "exec"))
}

#[allow(unsafe_code)]
fn fork_raw() -> nix::Result<ForkResult> {
    // SAFETY: the child (and its own child) only makes system calls on data prepared before the
    // fork and ends in execve or _exit, which is what POSIX allows after fork in a threaded process.
    unsafe { nix::unistd::fork() }
}

/// The forked middle process: joins the namespaces, forks the command (a PID namespace applies
/// to children only), waits for it and exits with its status.
fn run_middle(plan: ExecPlan) -> ! {
    let report = plan.report.as_fd();
    let mut byte = [0u8; 1];
    if !matches!(nix::unistd::read(plan.go.as_fd(), &mut byte), Ok(1)) {
        exit_now(127);
    }
    for (fd, flag) in &plan.namespaces {
        if let Err(e) = nix::sched::setns(fd, *flag) {
            fail(report, "setns", e);
        }
    }
    if let Err(e) = nix::unistd::fchdir(&plan.root) {
        fail(report, "chdir", e);
    }
    if let Err(e) = nix::unistd::chroot(".").and_then(|()| nix::unistd::chdir("/")) {
        fail(report, "chroot", e);
    }
    let pid = match fork_raw() {
        Ok(ForkResult::Child) => {
            if let Some(ns) = &plan.userns {
                if let Err(e) = nix::sched::setns(ns, CloneFlags::CLONE_NEWUSER) {
                    fail(report, "setns user", e)
                }
            }
            if let Err((s, e)) = plan.security.apply_before_setuid() {
                fail(report, s, e)
            }
            let ids = nix::unistd::setgroups(&[nix::unistd::Gid::from_raw(plan.gid)])
                .and_then(|()| nix::unistd::setgid(nix::unistd::Gid::from_raw(plan.gid)))
                .and_then(|()| nix::unistd::setuid(nix::unistd::Uid::from_raw(plan.uid)));
            if let Err(e) = ids {
                fail(report, "setgroups/setgid/setuid", e)
            }
            if let Err((s, e)) = plan.security.apply_after_setuid(plan.uid) {
                fail(report, s, e)
            }
            fail(
                report,
                "execve",
                child::exec_any(&plan.candidates, &plan.argv, &plan.envp),
            )
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => fail(report, "fork", e),
    };
    drop(plan.report); // only the command holds it now: EOF at its exec
    let code = loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, c)) => break c,
            Ok(WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break 127,
        }
    };
    exit_now(code)
}
