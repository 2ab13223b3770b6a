//! Process identity (pid + `/proc/<pid>/stat` start time) and pidfds for waiting and signalling.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{io_err, sys_err, Result, ShimError};

/// State letter and start time (field 22, clock ticks since boot) of `<proc_root>/<pid>/stat`;
/// `None` when the process does not exist.
pub(crate) fn stat_of(proc_root: &Path, pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // `rest` starts at field 3, so field 22 is the 20th from here.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// The start time of `pid` from `/proc/<pid>/stat` field 22 (clock ticks since boot).
pub fn process_start_time(pid: i32) -> Result<u64> {
    stat_of(Path::new("/proc"), pid)
        .map(|(_, t)| t)
        .ok_or(ShimError::ProcessGone { pid })
}

/// True when `pid` is alive (not a zombie) and started at `start_time`, i.e. not a recycled pid.
pub(crate) fn is_alive(proc_root: &Path, pid: i32, start_time: u64) -> bool {
    matches!(stat_of(proc_root, pid), Some((s, t)) if t == start_time && s != 'Z' && s != 'X')
}

/// A pidfd: a handle on one process that a recycled pid can never alias.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
}

impl PidFd {
    /// Opens a pidfd for `pid` and checks afterwards that the process still has `start_time`,
    /// so the handle is known to refer to the process that was recorded.
    ///
    /// # Errors
    /// [`ShimError::ProcessGone`] when the process is gone or the pid was reused.
    pub fn open(pid: i32, start_time: u64) -> Result<Self> {
        let fd = pidfd_open(pid).map_err(|e| match e {
            Errno::ESRCH => ShimError::ProcessGone { pid },
            e => sys_err("pidfd_open", pid)(e),
        })?;
        if stat_of(Path::new("/proc"), pid).map(|(_, t)| t) != Some(start_time) {
            return Err(ShimError::ProcessGone { pid });
        }
        Ok(Self { fd, pid })
    }

    /// The pid this handle refers to.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal` through the pidfd (`pidfd_send_signal`); a process that already exited
    /// is not an error.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        match pidfd_send_signal(&self.fd, signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(sys_err("pidfd_send_signal", self.pid)(e)),
        }
    }

    /// Waits, without polling, until the process has exited (the pidfd becomes readable).
    /// Needs a tokio runtime; cancel-safe.
    pub async fn exited(&self) -> Result<()> {
        let dup = self
            .fd
            .try_clone()
            .map_err(io_err("dup pidfd of", format!("pid {}", self.pid)))?;
        let afd =
            register(dup).map_err(io_err("register pidfd of", format!("pid {}", self.pid)))?;
        let _ready = afd
            .readable()
            .await
            .map_err(io_err("poll pidfd of", format!("pid {}", self.pid)))?;
        Ok(())
    }
}

#[allow(unsafe_code)]
fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is a valid open descriptor, stays open and returns the same raw fd for
    // as long as the AsyncFd owns it.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(std::io::Error::from)
}

/// A non-blocking pidfd for `pid` (no check of which process it is: see [`PidFd::open`]).
///
/// # Errors
/// `ESRCH` when no process has that pid.
#[allow(unsafe_code)]
pub fn pidfd_open(pid: i32) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::PIDFD_NONBLOCK) };
    Errno::result(fd)?;
    // SAFETY: the syscall succeeded, so `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[allow(unsafe_code)]
fn pidfd_send_signal(fd: &OwnedFd, signal: Signal) -> nix::Result<()> {
    // SAFETY: `fd` is a live pidfd; a null siginfo asks the kernel to fill it in; flags are 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal as i32,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    Errno::result(r).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_handles_odd_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("42")).unwrap();
        let fields: Vec<String> = (3..=52)
            .map(|i| if i == 22 { "777".into() } else { i.to_string() })
            .collect();
        let line = format!("42 (a b) (c)) S {}", fields[1..].join(" "));
        std::fs::write(dir.path().join("42/stat"), line).unwrap();
        assert_eq!(stat_of(dir.path(), 42), Some(('S', 777)));
        assert!(is_alive(dir.path(), 42, 777));
        assert!(!is_alive(dir.path(), 42, 778));
        assert!(!is_alive(dir.path(), 43, 777));
    }

    #[test]
    fn own_start_time_is_stable() {
        let me = std::process::id() as i32;
        assert_eq!(
            process_start_time(me).unwrap(),
            process_start_time(me).unwrap()
        );
        assert!(PidFd::open(me, process_start_time(me).unwrap() + 1).is_err());
    }
}
