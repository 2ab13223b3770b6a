//! A `tcpSocket` probe of the workload's own loopback answered by the kernel's socket lookup
//! (`sock_diag`), without sending a packet.
//!
//! A TCP connect to a local address is completed by the kernel alone: it looks up the listening
//! socket the SYN is for (`inet_lookup`: exact address, then the wildcard, dual-stack IPv6
//! listeners included) and queues the new connection if that listener's accept queue has room —
//! the application is not asked. `SOCK_DIAG_BY_FAMILY` without `NLM_F_DUMP` runs that same
//! lookup for an address pair and reports the socket it finds with its accept queue (length and
//! limit). So "a listener is found and its accept queue is not full" is exactly when a connect
//! would succeed, at the cost of one request and one reply on a netlink socket that was opened
//! inside the workload's network namespace once — no socket, handshake, reset or executor
//! registration per probe.
//!
//! Used for the loopback only (the probe's default host, or any 127.0.0.0/8 address): another
//! address may belong to another namespace, where only a connect tells.

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_sock_diag::constants::{AF_INET, IPPROTO_TCP, TCP_LISTEN};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};
use std::net::{IpAddr, SocketAddrV4};

/// What the kernel's lookup found for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A listener with room in its accept queue: a connect would succeed.
    Accepts,
    /// A listener whose accept queue is full (`queued` of `backlog`): a SYN would be dropped.
    Full { queued: u32, backlog: u32 },
    /// Nothing listens there: a connect would be refused.
    Refused,
}

/// A `NETLINK_SOCK_DIAG` socket bound to the network namespace it was opened in.
pub struct Listeners {
    sock: Socket,
    seq: u32,
}

impl Listeners {
    /// Opens the socket in the calling thread's network namespace (it stays bound to it).
    pub fn open() -> std::io::Result<Self> {
        let mut sock = Socket::new(NETLINK_SOCK_DIAG)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // The kernel answers within the request's send: a reply is always waiting.
        sock.set_non_blocking(true)?;
        Ok(Self { sock, seq: 0 })
    }

    /// Where a SYN to `to` would land in this namespace.
    pub fn lookup(&mut self, to: SocketAddrV4) -> std::io::Result<Lookup> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.sequence_number = self.seq;
        // The lookup takes the pair as a packet would carry it: from `destination` (any port
        // no connection uses) to `source`, the listening side.
        let mut id = SocketId::new_v4();
        id.source_address = IpAddr::V4(*to.ip());
        id.source_port = to.port();
        id.destination_address = IpAddr::V4(*to.ip());
        id.destination_port = 1;
        id.cookie = [0xff; 8];
        let mut msg = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family: AF_INET,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::all(),
                socket_id: id,
            })
            .into(),
        );
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let mut reply = Vec::with_capacity(1024);
        let n = self.sock.recv(&mut reply, 0)?;
        let parsed = NetlinkMessage::<SockDiagMessage>::deserialize(&reply[..n])
            .map_err(|e| std::io::Error::other(format!("sock_diag reply: {e}")))?;
        match parsed.payload {
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                let h = &r.header;
                Ok(match (h.state, h.recv_queue, h.send_queue) {
                    // Full when the queue is past its limit (the kernel's sk_acceptq_is_full).
                    (TCP_LISTEN, q, b) if q > b => Lookup::Full {
                        queued: q,
                        backlog: b,
                    },
                    (TCP_LISTEN, ..) => Lookup::Accepts,
                    // A connected socket on that exact pair cannot be (port 1 is never a
                    // client's): treat anything else as nothing listening.
                    _ => Lookup::Refused,
                })
            }
            NetlinkPayload::Error(e) if e.code.map(|c| -c.get()) == Some(libc::ENOENT) => {
                Ok(Lookup::Refused)
            }
            NetlinkPayload::Error(e) => Err(e.to_io()),
            other => Err(std::io::Error::other(format!(
                "sock_diag: unexpected reply {other:?}"
            ))),
        }
    }
}
