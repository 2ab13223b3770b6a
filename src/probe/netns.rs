//! Connections from inside another process's network namespace, without moving any executor
//! thread: one dedicated thread joins the target namespace (`setns` through a pidfd it keeps per
//! target, so a probe opens nothing under /proc), creates a non-blocking socket there and starts
//! the connect. The socket stays in that namespace for its life. A loopback connect has
//! completed by the time `connect(2)` returns (the handshake runs in the kernel before the call
//! ends), so the thread answers it at once and the executor never registers it; a connect still
//! in progress is handed to the executor to finish. One thread serves every probe of the daemon.
//!
//! `tcpSocket` probes to the loopback do not connect at all: the thread opens a `sock_diag`
//! socket in the namespace once and the caller keeps it ([`super::diag`]).
//!
//! Sockets close with `SO_LINGER` 0 (a reset, as the kubelet's probe dialer does): a probe every
//! second per container would otherwise leave tens of thousands of TIME-WAIT sockets in the
//! containers' namespaces.

use super::diag::{Listeners, Lookup};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{mpsc, Arc, Mutex};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// How a connect started on the factory thread stands when the thread lets go of it.
enum Started {
    /// Connected already (loopback, or any peer that answered within the call).
    Connected(OwnedFd),
    /// Still in progress: the executor waits for it.
    InProgress(OwnedFd),
}

/// How long the thread waits for a request before it leaves the last namespace it joined.
const IDLE: std::time::Duration = std::time::Duration::from_secs(1);

type Reply = oneshot::Sender<std::io::Result<Started>>;

/// What the socket thread is asked to do inside a workload's network namespace.
enum Request {
    /// Start a connect to the address.
    Connect(u32, SocketAddr, Reply),
    /// Open a `sock_diag` socket there (kept by the caller for later probes), with a pidfd of
    /// the process that tells when it has exited.
    Listeners(u32, oneshot::Sender<std::io::Result<Probed>>),
}

/// A process whose namespace has a `sock_diag` socket open, kept between probes.
struct Probed {
    pidfd: OwnedFd,
    listeners: Listeners,
}

/// The handle of the socket thread.
#[derive(Clone)]
pub struct SocketFactory {
    tx: mpsc::Sender<Request>,
    /// `sock_diag` sockets by pid, dropped once their process has exited (each keeps its
    /// namespace alive while held).
    probed: Arc<Mutex<HashMap<u32, Arc<Mutex<Probed>>>>>,
}

impl SocketFactory {
    /// Starts the thread (it ends when the last handle is dropped).
    pub fn start() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("tend-probe-netns".into())
            .spawn(move || {
                let mut targets = Targets::default();
                // The namespace the thread started in: it goes back there when idle, so it
                // never keeps a deleted container's namespace alive for long.
                let home = std::fs::File::open("/proc/thread-self/ns/net");
                loop {
                    match rx.recv_timeout(IDLE) {
                        Ok(Request::Connect(pid, to, reply)) => {
                            let _ = reply.send(targets.connect(pid, to));
                        }
                        Ok(Request::Listeners(pid, reply)) => {
                            let _ = reply.send(targets.listeners(pid));
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if let (Some(_), Ok(home)) = (targets.joined.take(), &home) {
                                let _ =
                                    nix::sched::setns(home, nix::sched::CloneFlags::CLONE_NEWNET);
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(Self {
            tx,
            probed: Arc::default(),
        })
    }

    fn gone() -> std::io::Error {
        std::io::Error::other("the probe socket thread has ended")
    }

    async fn start_connect(&self, pid: u32, to: SocketAddr) -> std::io::Result<Started> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Connect(pid, to, reply))
            .map_err(|_| Self::gone())?;
        rx.await.map_err(|_| Self::gone())?
    }

    /// The kept `sock_diag` socket of `pid`'s namespace, opened on first use; `None` when the
    /// kept one's process has exited (it is dropped: the pid may name another process now).
    async fn listeners(&self, pid: u32) -> std::io::Result<Arc<Mutex<Probed>>> {
        let kept = lock(&self.probed).get(&pid).cloned();
        if let Some(p) = kept {
            if !exited(&lock(&p).pidfd) {
                return Ok(p);
            }
            lock(&self.probed).remove(&pid);
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Listeners(pid, reply))
            .map_err(|_| Self::gone())?;
        let p = Arc::new(Mutex::new(rx.await.map_err(|_| Self::gone())??));
        let mut all = lock(&self.probed);
        all.insert(pid, p.clone());
        if all.len() > 64 && all.len().is_power_of_two() {
            all.retain(|_, p| !exited(&lock(p).pidfd));
        }
        Ok(p)
    }

    /// Connects to `to` from inside the network namespace of `pid`.
    pub async fn connect(&self, pid: u32, to: SocketAddr) -> std::io::Result<TcpStream> {
        let fd = match self.start_connect(pid, to).await? {
            Started::Connected(fd) => return TcpStream::from_std(fd.into()),
            Started::InProgress(fd) => fd,
        };
        let stream = TcpStream::from_std(fd.into())?;
        stream.writable().await?;
        match stream.take_error()? {
            Some(e) => Err(e),
            None => Ok(stream),
        }
    }

    /// Opens and closes a connection to `to` from inside the network namespace of `pid`: a
    /// `tcpSocket` probe. Without the executor when the connect completes within the call.
    ///
    /// To the loopback the kernel's own lookup answers instead (see [`super::diag`]): the
    /// same verdict without a packet.
    pub async fn probe(&self, pid: u32, to: SocketAddr) -> std::io::Result<()> {
        if let SocketAddr::V4(v4) = to {
            if v4.ip().is_loopback() {
                let p = self.listeners(pid).await?;
                let found = lock(&p).listeners.lookup(v4);
                return match found {
                    Ok(Lookup::Accepts) => Ok(()),
                    Ok(Lookup::Refused) => Err(std::io::ErrorKind::ConnectionRefused.into()),
                    Ok(Lookup::Full { queued, backlog }) => Err(std::io::Error::other(format!(
                        "the listener's accept queue is full ({queued} queued, backlog {backlog})"
                    ))),
                    // No answer without waiting: ask the way a client would.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        self.connect_probe(pid, to).await
                    }
                    Err(e) => Err(e),
                };
            }
        }
        self.connect_probe(pid, to).await
    }

    async fn connect_probe(&self, pid: u32, to: SocketAddr) -> std::io::Result<()> {
        match self.start_connect(pid, to).await? {
            Started::Connected(_) => Ok(()),
            Started::InProgress(fd) => self.finish(fd).await,
        }
    }

    async fn finish(&self, fd: OwnedFd) -> std::io::Result<()> {
        let stream = TcpStream::from_std(fd.into())?;
        stream.writable().await?;
        stream.take_error()?.map_or(Ok(()), Err)
    }
}

/// The factory thread's pidfds, one per probed process, and the namespace it is in now.
#[derive(Default)]
struct Targets {
    pidfds: HashMap<u32, OwnedFd>,
    /// The pid whose namespace the thread joined last (a repeat needs no `setns`).
    joined: Option<u32>,
    /// Sweep exited processes out of `pidfds` once it holds this many.
    sweep_at: usize,
}

impl Targets {
    /// Joins the namespace of `pid` and starts a connect to `to` there.
    fn connect(&mut self, pid: u32, to: SocketAddr) -> std::io::Result<Started> {
        self.join(pid)?;
        start(to)
    }

    /// Joins the namespace of `pid` and opens a `sock_diag` socket there, with a pidfd of its own.
    fn listeners(&mut self, pid: u32) -> std::io::Result<Probed> {
        self.join(pid)?;
        let pidfd = self.pidfds[&pid].try_clone()?;
        Ok(Probed {
            pidfd,
            listeners: Listeners::open()?,
        })
    }

    fn join(&mut self, pid: u32) -> std::io::Result<()> {
        use nix::sched::{setns, CloneFlags};
        if self.joined == Some(pid) && self.pidfds.contains_key(&pid) {
            // Still the same process? A pidfd of an exited one polls readable.
            if !exited(&self.pidfds[&pid]) {
                return Ok(());
            }
        }
        self.joined = None;
        // A cached pidfd whose process has exited fails with ESRCH: the pid may since name a
        // new process, so open it again once.
        for attempt in 0..2 {
            let fd = match self.pidfds.remove(&pid) {
                Some(fd) if attempt == 0 => fd,
                _ => crate::shim::pidfd_open(pid as i32).map_err(std::io::Error::from)?,
            };
            match setns(fd.as_fd(), CloneFlags::CLONE_NEWNET) {
                Ok(()) => {
                    self.insert(pid, fd);
                    self.joined = Some(pid);
                    return Ok(());
                }
                Err(nix::errno::Errno::ESRCH) if attempt == 0 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(std::io::Error::from_raw_os_error(libc::ESRCH))
    }

    fn insert(&mut self, pid: u32, fd: OwnedFd) {
        self.pidfds.insert(pid, fd);
        if self.pidfds.len() >= self.sweep_at {
            self.pidfds.retain(|_, fd| !exited(fd));
            self.sweep_at = (self.pidfds.len() * 2).max(1024);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// True when the process behind `pidfd` has exited (the pidfd polls readable).
fn exited(pidfd: &OwnedFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

/// A non-blocking TCP/IPv4 socket in the thread's namespace, closing with a reset, and its
/// connect to `to` started.
fn start(to: SocketAddr) -> std::io::Result<Started> {
    use nix::sys::socket::{
        connect, getsockopt, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType,
        SockaddrIn,
    };
    let SocketAddr::V4(v4) = to else {
        return Err(std::io::Error::other(format!(
            "{to}: probes reach IPv4 only"
        )));
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    setsockopt(&fd, sockopt::Linger, &linger)?;
    match connect(fd.as_raw_fd(), &SockaddrIn::from(v4)) {
        Ok(()) => return Ok(Started::Connected(fd)),
        Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
    if poll(&mut fds, PollTimeout::ZERO)? == 0 {
        return Ok(Started::InProgress(fd));
    }
    match getsockopt(&fd, sockopt::SocketError)? {
        0 => Ok(Started::Connected(fd)),
        errno => Err(std::io::Error::from_raw_os_error(errno)),
    }
}
