//! Link and address monitor: RTNLGRP_LINK and RTNLGRP_IPV4_IFADDR multicast events turned into
//! a small stream of drift events (link deleted, link down, address removed).

use std::collections::HashMap;

use futures::StreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::sys::AsyncSocket;
use rtnetlink::MulticastGroup;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::bridge::{addr_of, link_alias};
use super::{link_name, link_up, Error, NetDriver, Result};

/// A change on a link or an IPv4 address that may be drift from the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// The link was deleted (or, from the bridge's side, left its bridge). `alias` is the
    /// link's `IFLA_IFALIAS` — tend's `tend:<instance>:<uid>` names the owner.
    LinkDeleted {
        ifname: String,
        index: u32,
        alias: Option<String>,
    },
    /// The link changed and is now administratively down.
    LinkDown {
        ifname: String,
        index: u32,
        alias: Option<String>,
    },
    /// An IPv4 address was removed from the link.
    AddressRemoved {
        ifname: String,
        index: u32,
        address: Ipv4Net,
    },
    /// The kernel dropped events (the socket's buffer was full): resynchronize.
    Overrun,
}

impl NetEvent {
    /// The interface the event is about.
    pub fn ifname(&self) -> &str {
        match self {
            NetEvent::LinkDeleted { ifname, .. }
            | NetEvent::LinkDown { ifname, .. }
            | NetEvent::AddressRemoved { ifname, .. } => ifname,
            NetEvent::Overrun => "",
        }
    }

    /// The link's alias, when the event is about a link that has one.
    pub fn alias(&self) -> Option<&str> {
        match self {
            NetEvent::LinkDeleted { alias, .. } | NetEvent::LinkDown { alias, .. } => {
                alias.as_deref()
            }
            _ => None,
        }
    }
}

/// A running monitor. Events are broadcast to every subscriber; a slow subscriber sees
/// `RecvError::Lagged` and should fall back to a resync. Dropping the monitor stops it.
pub struct NetMonitor {
    tx: broadcast::Sender<NetEvent>,
    rx: broadcast::Receiver<NetEvent>,
    tasks: Vec<JoinHandle<()>>,
}

const CAPACITY: usize = 4096;

/// The monitor socket's receive buffer. Removing hundreds of namespaces at once emits
/// thousands of link messages; the default (~200 KiB) overflows and the kernel drops them.
const RECEIVE_BUFFER: usize = 8 << 20;

/// Raises the socket's receive buffer past `net.core.rmem_max` (root only; otherwise the
/// default stays, and an overrun is still reported as [`NetEvent::Overrun`]).
fn enlarge_receive_buffer(socket: &rtnetlink::sys::Socket) {
    use nix::sys::socket::{setsockopt, sockopt::RcvBufForce};
    use std::os::fd::AsFd;
    if let Err(e) = setsockopt(&socket.as_fd(), RcvBufForce, &RECEIVE_BUFFER) {
        tracing::debug!(error = %e, "netlink monitor keeps the default receive buffer");
    }
}

impl NetDriver {
    /// Starts a monitor of the host namespace (`netns: None`) or of the named namespace.
    /// Events that happen after this returns are delivered.
    pub async fn monitor(&self, netns: Option<&str>) -> Result<NetMonitor> {
        let groups = [MulticastGroup::Link, MulticastGroup::Ipv4Ifaddr];
        let open = move |what: &str| {
            rtnetlink::new_multicast_connection(&groups).map_err(|source| Error::Io {
                op: "open netlink multicast socket",
                path: what.into(),
                source,
            })
        };
        let (mut conn, _handle, mut messages) = match netns {
            None => open("host")?,
            Some(name) => {
                self.in_netns(name, move |p| open(&p.display().to_string()))
                    .await?
                    .1
            }
        };
        enlarge_receive_buffer(conn.socket_mut().socket_ref());
        let (tx, rx) = broadcast::channel(CAPACITY);
        let sender = tx.clone();
        let forward = tokio::spawn(async move {
            let mut aliases = Aliases::default();
            while let Some((msg, _)) = messages.next().await {
                let ev = match msg.payload {
                    NetlinkPayload::InnerMessage(m) => to_event(m, &mut aliases),
                    NetlinkPayload::Overrun(_) => Some(NetEvent::Overrun),
                    _ => None,
                };
                if let Some(ev) = ev {
                    let _ = sender.send(ev);
                }
            }
        });
        Ok(NetMonitor {
            tx,
            rx,
            tasks: vec![tokio::spawn(conn), forward],
        })
    }
}

impl NetMonitor {
    /// The next event on the monitor's own subscription.
    ///
    /// # Errors
    /// `Lagged(n)` when `n` events were lost (resync), `Closed` when the socket closed.
    pub async fn recv(&mut self) -> Result<NetEvent, broadcast::error::RecvError> {
        self.rx.recv().await
    }

    /// A further, independent subscription, starting at the next event.
    pub fn subscribe(&self) -> broadcast::Receiver<NetEvent> {
        self.tx.subscribe()
    }
}

impl Drop for NetMonitor {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The alias of each link seen so far, by index. A bridge's own message about a port leaving
/// it (`RTM_DELLINK` of family `AF_BRIDGE`, also sent before the link's deletion) carries no
/// alias; this fills it in from the link's earlier messages.
#[derive(Default)]
struct Aliases(HashMap<u32, String>);

impl Aliases {
    /// The alias of `l` (its own, else the one last seen on its index); forgets a deleted link.
    fn of(&mut self, l: &LinkMessage, deleted: bool) -> Option<String> {
        let index = l.header.index;
        let alias = match link_alias(l) {
            Some(a) => {
                self.0.insert(index, a.clone());
                Some(a)
            }
            None => self.0.get(&index).cloned(),
        };
        if deleted && l.header.interface_family != AddressFamily::Bridge {
            self.0.remove(&index);
        }
        alias
    }
}

fn to_event(m: RouteNetlinkMessage, aliases: &mut Aliases) -> Option<NetEvent> {
    match m {
        RouteNetlinkMessage::DelLink(l) => {
            let alias = aliases.of(&l, true);
            let (ifname, index) = link_id(&l)?;
            Some(NetEvent::LinkDeleted {
                ifname,
                index,
                alias,
            })
        }
        RouteNetlinkMessage::NewLink(l) => {
            let alias = aliases.of(&l, false);
            if !went_down(&l) {
                return None;
            }
            let (ifname, index) = link_id(&l)?;
            Some(NetEvent::LinkDown {
                ifname,
                index,
                alias,
            })
        }
        RouteNetlinkMessage::DelAddress(a) => {
            let address = Ipv4Net::new(addr_of(&a)?, a.header.prefix_len).ok()?;
            Some(NetEvent::AddressRemoved {
                ifname: addr_label(&a).unwrap_or_default(),
                index: a.header.index,
                address,
            })
        }
        _ => None,
    }
}

/// A link set down — not one being made: a new link is announced down with every change bit
/// set, and the messages while its creator sets master and alias carry no change bits.
fn went_down(l: &LinkMessage) -> bool {
    let change = l.header.change_mask;
    !link_up(l) && change.contains(LinkFlags::Up) && change.bits() != u32::MAX
}

fn link_id(l: &LinkMessage) -> Option<(String, u32)> {
    Some((link_name(l)?.to_string(), l.header.index))
}

fn addr_label(a: &AddressMessage) -> Option<String> {
    a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Label(l) => Some(l.clone()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(flags: LinkFlags, change: u32) -> LinkMessage {
        let mut l = LinkMessage::default();
        l.header.flags = flags;
        l.header.change_mask = LinkFlags::from_bits_retain(change);
        l
    }

    #[test]
    fn only_a_link_set_down_went_down() {
        assert!(
            went_down(&link(LinkFlags::Broadcast, 0x41)),
            "ip link set down"
        );
        assert!(
            !went_down(&link(LinkFlags::Broadcast, u32::MAX)),
            "a new link"
        );
        assert!(
            !went_down(&link(LinkFlags::Broadcast, 0)),
            "master or alias set while down"
        );
        assert!(!went_down(&link(LinkFlags::Up, 0x1)), "set up");
    }
}
