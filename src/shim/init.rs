//! `spec.init: true`: the container's PID 1 stays tend's own code (already in memory, so nothing
//! is put into the rootfs) and runs the command as its only child. It forwards every signal it
//! can catch to that child and reaps every process that ends in the namespace, as
//! `docker run --init` (tini) does, and exits with the command's status (128+n when a signal n
//! ended it).
//!
//! A workload that is PID 1 itself gets no signal it has no handler for (the kernel protects a
//! namespace's init), so `sleep` as PID 1 ignores SIGTERM and every stop waits out the grace
//! period; under this init the command is PID 2 and SIGTERM ends it.
//!
//! This runs between the shim's fork and exec: system calls only, no allocation, no locks.

use std::os::fd::{AsFd, AsRawFd};

use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use super::child::{exec_any, exit_now, fail, ChildPlan};

/// Becomes the init: blocks every signal, forks the command (which gets the old mask back and
/// execs), then supervises it. Never returns.
#[allow(unsafe_code)]
pub(crate) fn run(plan: &ChildPlan) -> ! {
    let report = plan.report.as_fd();
    let mut old = SigSet::empty();
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut old)) {
        fail(report, "block signals", e)
    }
    // SAFETY: this process has one thread (it was forked); the child only makes system calls
    // and ends in execve or _exit.
    match unsafe { nix::unistd::fork() } {
        Err(e) => fail(report, "fork", e),
        Ok(ForkResult::Child) => {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            fail(
                report,
                "execve",
                exec_any(&plan.candidates, &plan.argv, &plan.envp),
            )
        }
        Ok(ForkResult::Parent { child }) => {
            // The shim learns that the exec worked from EOF on the report pipe: this copy must
            // go (the command's own copy closes on exec). Nothing returns from here, so the
            // descriptor is never closed twice.
            // SAFETY: closing a descriptor this process owns and never uses again.
            unsafe { libc::close(plan.report.as_raw_fd()) };
            supervise(child)
        }
    }
}

/// Forwards signals to `child` and reaps zombies until `child` ends; exits with its status.
fn supervise(child: Pid) -> ! {
    let all = SigSet::all();
    loop {
        let Ok(sig) = all.wait() else { continue };
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => exit_now(code),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => exit_now(128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {} // an orphan of the namespace, reaped
            }
        }
    }
}
