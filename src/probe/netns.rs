//! Sockets inside another process's network namespace, without moving any executor thread:
//! one dedicated thread joins the target namespace (`setns`), creates a non-blocking socket
//! there and hands it back; the socket stays in that namespace for its life, and the connect
//! and the I/O run on the async executor. One thread serves every probe of the daemon.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::mpsc;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

type Reply = oneshot::Sender<std::io::Result<OwnedFd>>;

/// The handle of the socket thread.
#[derive(Clone)]
pub struct SocketFactory {
    tx: mpsc::Sender<(u32, Reply)>,
}

impl SocketFactory {
    /// Starts the thread (it ends when the last handle is dropped).
    pub fn start() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<(u32, Reply)>();
        std::thread::Builder::new()
            .name("tend-probe-netns".into())
            .spawn(move || {
                for (pid, reply) in rx {
                    let _ = reply.send(socket_in(pid));
                }
            })?;
        Ok(Self { tx })
    }

    /// A TCP/IPv4 socket in the network namespace of `pid`.
    pub async fn socket(&self, pid: u32) -> std::io::Result<TcpSocket> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((pid, reply))
            .map_err(|_| std::io::Error::other("the probe socket thread has ended"))?;
        let fd = rx
            .await
            .map_err(|_| std::io::Error::other("the probe socket thread has ended"))??;
        Ok(TcpSocket::from_std_stream(std::net::TcpStream::from(fd)))
    }

    /// Connects to `to` from inside the network namespace of `pid`.
    pub async fn connect(&self, pid: u32, to: SocketAddr) -> std::io::Result<TcpStream> {
        self.socket(pid).await?.connect(to).await
    }
}

/// On the factory thread: join the namespace of `pid`, make the socket there.
fn socket_in(pid: u32) -> std::io::Result<OwnedFd> {
    use nix::sched::{setns, CloneFlags};
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
    socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(std::io::Error::from)
}
