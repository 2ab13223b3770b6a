//! The shim process itself: `tend shim <container-dir>`.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};

use super::child::{self, ChildPlan};
use super::config::{
    now_rfc3339, read_json, write_json_atomic, ExitRecord, ShimConfig, ShimHandle,
};
use super::log::{LineSplitter, RotatingLog};
use super::proc::process_start_time;
use super::security::SecurityPlan;
use super::userns;
use super::{io_err, sys_err, Result, ShimError};

/// The one JSON line the shim writes on its stdout for [`super::spawn_shim`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    /// The workload exec'd.
    Started(ShimHandle),
    /// Another shim holds the lock.
    AlreadyRunning,
    /// Starting failed; the message says where.
    Failed(String),
    /// The kernel or filesystem refused what the container asks for ([`ShimError::Unsupported`]).
    Unsupported(String),
}

/// Entry point of `tend shim`: `args` are the words after `tend shim` (a leading `"shim"` is
/// skipped too), i.e. `[<container-dir>]`. Returns the process exit code: 0 once the shim is
/// detached (stage 0) or when the workload has been recorded, 2 when the container is already
/// running, 1 on other errors. The outcome is also reported as one JSON line on stdout.
///
/// # Assumptions
/// Call it before any other thread starts (before building a tokio runtime): it forks.
pub fn main_from_args(args: Vec<String>) -> i32 {
    let mut args = args.as_slice();
    if args.first().is_some_and(|a| a == "shim") {
        args = &args[1..];
    }
    let [dir] = args else {
        report(&Report::Failed(
            ShimError::Usage(format!("expected one argument, got {args:?}")).to_string(),
        ));
        return 1;
    };
    let dir = PathBuf::from(dir);
    match stage0(&dir) {
        Ok(code) => code,
        Err(ShimError::AlreadyRunning { .. }) => {
            report(&Report::AlreadyRunning);
            2
        }
        Err(e) => {
            report(&Report::Failed(e.to_string()));
            1
        }
    }
}

fn report(r: &Report) {
    let mut out = std::io::stdout().lock();
    // A leading newline ends any unterminated output a wrapper printed before us.
    let _ = out.write_all(b"\n");
    let _ = serde_json::to_writer(&mut out, r);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// Locks the directory, then forks: the parent returns at once, the child makes its own session.
fn stage0(dir: &Path) -> Result<i32> {
    let lock_path = dir.join("shim.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err("open", &lock_path))?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| match e {
        nix::errno::Errno::EWOULDBLOCK => ShimError::AlreadyRunning {
            dir: dir.to_owned(),
        },
        e => sys_err("flock", lock_path.display())(e),
    })?;
    for stale in ["exit.json", "shim.json"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let config: ShimConfig = read_json(&dir.join("config.json"))?.ok_or_else(|| {
        io_err("read", dir.join("config.json"))(std::io::ErrorKind::NotFound.into())
    })?;
    match fork()? {
        ForkResult::Parent { .. } => {
            // The child shares this open file description: dropping the Flock would unlock it
            // for the shim too. The fd simply closes when stage 0 exits.
            std::mem::forget(lock);
            Ok(0)
        }
        ForkResult::Child => {
            let _ = nix::unistd::setsid();
            let code = match shim(dir, &config) {
                Ok(()) => 0,
                Err(ShimError::Unsupported { message }) => {
                    report(&Report::Unsupported(message));
                    1
                }
                Err(e) => {
                    report(&Report::Failed(e.to_string()));
                    1
                }
            };
            drop(lock);
            std::process::exit(code)
        }
    }
}

#[allow(unsafe_code)]
fn fork() -> Result<ForkResult> {
    // SAFETY: `tend shim` is single-threaded here (see `main_from_args`); where it is not (the
    // self-exec test harness), the child only uses fork-safe glibc (malloc has atfork handlers).
    unsafe { nix::unistd::fork() }.map_err(sys_err("fork", "shim"))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_err("pipe2", "shim"))
}

/// Starts the workload, reports, pumps its output into the log, records its exit.
fn shim(dir: &Path, config: &ShimConfig) -> Result<()> {
    let oom_before = config.oom.as_ref().and_then(|o| o.read());
    let (handle, out_r, err_r) = match start(config) {
        Ok(v) => v,
        Err(e) => {
            let rec = ExitRecord {
                exit_code: Some(127),
                signal: None,
                oom_killed: false,
                started_at: String::new(),
                finished_at: now_rfc3339(),
                error: Some(match &e {
                    ShimError::StartFailed { message, .. } => message.clone(),
                    e => e.to_string(),
                }),
            };
            write_json_atomic(&dir.join("exit.json"), &rec, true)?;
            let message = match e {
                ShimError::StartFailed { message, .. } => message,
                e @ ShimError::Unsupported { .. } => return Err(e),
                e => e.to_string(),
            };
            return Err(ShimError::StartFailed {
                dir: dir.to_owned(),
                message,
            });
        }
    };
    // No fsync: a host crash ends the workload too, so shim.json need only be atomic.
    write_json_atomic(&dir.join("shim.json"), &handle, false)?;
    report(&Report::Started(handle.clone()));
    let devnull = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(io_err("open", "/dev/null"))?;
    let _ = nix::unistd::dup2_stdout(&devnull);
    let _ = nix::unistd::dup2_stderr(&devnull);

    // Opened after the report, off the start-up path. Should it fail, the output is drained
    // (so the workload never blocks on a full pipe) and the error goes into exit.json.
    let mut log = RotatingLog::open(&dir.join("log"), config.log);
    pump(log.as_mut().ok(), out_r, err_r);
    let status = loop {
        match waitpid(Pid::from_raw(handle.workload_pid), None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(sys_err("waitpid", handle.workload_pid))?,
        }
    };
    let (exit_code, signal) = match status {
        WaitStatus::Exited(_, c) => (Some(c), None),
        WaitStatus::Signaled(_, s, _) => (None, Some(s as i32)),
        _ => (None, None),
    };
    let oom_after = config.oom.as_ref().and_then(|o| o.read());
    let rec = ExitRecord {
        exit_code,
        signal,
        oom_killed: matches!((oom_before, oom_after), (Some(b), Some(a)) if a > b),
        started_at: handle.started_at,
        finished_at: now_rfc3339(),
        error: log.err().map(|e| e.to_string()),
    };
    write_json_atomic(&dir.join("exit.json"), &rec, true)
}

/// Forks the workload into new namespaces and waits until it has exec'd (or failed to).
fn start(config: &ShimConfig) -> Result<(ShimHandle, OwnedFd, OwnedFd)> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let (rep_r, rep_w) = pipe()?;
    let open_ro = |p: &Path| File::open(p).map(OwnedFd::from).map_err(io_err("open", p));
    let security = SecurityPlan::new(&config.security).map_err(|e| ShimError::StartFailed {
        dir: PathBuf::new(),
        message: e.to_string(),
    })?;
    // Before the PID namespace: the helper that makes the user namespace must not be its init.
    let (userns, root_tree) = match (config.user_namespace, &config.rootfs) {
        (None, _) => (None, None),
        (Some(_), None) => {
            return Err(ShimError::Usage(
                "config.json: user_namespace needs a rootfs to id-map".into(),
            ))
        }
        (Some(map), Some(root)) => {
            let ns = userns::create(map)?;
            // Mount points made here, as host root on the real tree: host root cannot create
            // anything through the id-mapped mount (it has no id inside the mapping).
            for d in ["proc", "dev", "sys"] {
                let p = root.join(d);
                if !p.is_dir() {
                    std::fs::create_dir_all(&p).map_err(io_err("mkdir", &p))?;
                }
            }
            let tree = userns::idmapped_tree(root, ns.as_fd())?;
            (Some(ns), Some(tree))
        }
    };
    let mut ops = match &config.rootfs {
        Some(r) => child::rootfs_ops(r, root_tree.is_some()),
        None => child::host_ops(),
    };
    if config.security.mask_paths {
        ops.extend(child::mask_ops(
            config.rootfs.as_deref().unwrap_or(Path::new("/")),
        ));
    }
    let plan = ChildPlan {
        stdin: open_ro(Path::new("/dev/null"))?,
        stdout: out_w,
        stderr: err_w,
        go: go_r,
        report: rep_w,
        netns: config.netns.as_deref().map(open_ro).transpose()?,
        own_netns: config.security.own_network,
        net_sysctls: if config.netns.is_some() || config.security.own_network {
            child::sysctl_ops(&config.net_sysctls)
        } else {
            vec![] // the host's network namespace: never touched
        },
        security,
        readonly_root: config.security.readonly_rootfs,
        root: config
            .rootfs
            .as_deref()
            .map(|r| std::ffi::CString::new(r.as_os_str().as_encoded_bytes()).unwrap_or_default()),
        ops,
        hostname: config
            .hostname
            .as_deref()
            .map(|h| std::ffi::CString::new(h).unwrap_or_default()),
        cwd: std::ffi::CString::new(config.cwd.as_os_str().as_encoded_bytes()).unwrap_or_default(),
        init: config.init,
        userns,
        root_tree,
        uid: config.uid,
        gid: config.gid,
        candidates: child::exec_candidates(
            config.argv.first().map_or("", |s| s.as_str()),
            &config.env,
        ),
        argv: config
            .argv
            .iter()
            .map(|a| std::ffi::CString::new(a.as_str()).unwrap_or_default())
            .collect(),
        envp: child::envp(&config.env),
    };
    if config.argv.is_empty() {
        return Err(ShimError::Usage("config.json: argv is empty".into()));
    }
    nix::sched::unshare(CloneFlags::CLONE_NEWPID).map_err(sys_err("unshare", "CLONE_NEWPID"))?;
    let pid = match fork()? {
        ForkResult::Child => child::run(&plan),
        ForkResult::Parent { child } => child,
    };
    drop(plan); // the child's ends of the pipes close here
    let fail = |e: ShimError| {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        e
    };
    for procs in &config.cgroup_procs {
        std::fs::write(procs, pid.as_raw().to_string())
            .map_err(io_err("write", procs))
            .map_err(fail)?;
    }
    nix::unistd::write(&go_w, b"g")
        .map_err(sys_err("write", "go pipe"))
        .map_err(fail)?;
    let mut msg = [0u8; 5];
    let n = read_full(rep_r.as_fd(), &mut msg);
    if n > 0 {
        let _ = waitpid(pid, None);
        return Err(ShimError::StartFailed {
            dir: PathBuf::new(),
            message: child::decode_failure(&msg),
        });
    }
    let workload_start_time = process_start_time(pid.as_raw())?;
    let me = std::process::id() as i32;
    let handle = ShimHandle {
        shim_pid: me,
        shim_start_time: process_start_time(me)?,
        workload_pid: pid.as_raw(),
        workload_start_time,
        started_at: now_rfc3339(),
    };
    Ok((handle, out_r, err_r))
}

fn read_full(fd: std::os::fd::BorrowedFd<'_>, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match nix::unistd::read(fd, &mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    n
}

/// Copies both pipes into the log until both reach EOF (the PID namespace dies with the workload,
/// so nothing can keep them open after it exits).
fn pump(mut log: Option<&mut RotatingLog>, out: OwnedFd, err: OwnedFd) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut streams = [
        (Some(out), "stdout", LineSplitter::default()),
        (Some(err), "stderr", LineSplitter::default()),
    ];
    let mut buf = vec![0u8; 64 * 1024];
    while streams.iter().any(|s| s.0.is_some()) {
        let mut ready = [false; 2];
        {
            let mut fds: Vec<PollFd<'_>> = Vec::new();
            let mut idx = Vec::new();
            for (i, s) in streams.iter().enumerate() {
                if let Some(fd) = &s.0 {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                    idx.push(i);
                }
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
            for (pfd, i) in fds.iter().zip(idx) {
                ready[i] = pfd.revents().is_some_and(|r| !r.is_empty());
            }
        }
        for (i, s) in streams.iter_mut().enumerate() {
            let (Some(fd), true) = (&s.0, ready[i]) else {
                continue;
            };
            let name = s.1;
            match nix::unistd::read(fd.as_fd(), &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EIO) | Err(nix::errno::Errno::EBADF) => {
                    let _ = s
                        .2
                        .finish(|l| log.as_deref_mut().map_or(Ok(()), |g| g.write_line(name, l)));
                    s.0 = None;
                }
                Ok(n) => {
                    let _ = s.2.push(&buf[..n], |l| {
                        log.as_deref_mut().map_or(Ok(()), |g| g.write_line(name, l))
                    });
                }
                Err(_) => {}
            }
        }
    }
}
