//! Attachments: a veth pair whose host end sits on a bridge and whose peer is created directly
//! inside a named namespace, with its address and default route; detach and inspect.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::bridge::{ensure_only_address, index_of, ipv4_addresses, link_alias};
use super::{
    check_ifname, get_link, link_master, link_mtu, link_up, nl_errno, Error, NetDriver, Result,
};

/// One interface of a namespace on one bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    /// Named namespace (in the driver's netns dir) that gets the interface.
    pub netns: String,
    /// Bridge the host end joins.
    pub bridge: String,
    /// Host end of the veth (`tnv-…`, see [`super::names::host_veth_name`]).
    pub host_ifname: String,
    /// Interface name inside the namespace (`eth0`, `eth1`…).
    pub ifname: String,
    /// Address and prefix of the interface inside the namespace.
    pub address: Ipv4Net,
    /// Default route via this gateway (set it for the first network only).
    pub gateway: Option<Ipv4Addr>,
    /// MTU of both veth ends.
    pub mtu: u32,
    /// Alias (`IFLA_IFALIAS`) of the host end, e.g. `tend:<instance>:<uid>`, set right after
    /// the veth is created and put back when it differs.
    pub alias: Option<String>,
}

/// What the host has for one attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachmentState {
    /// The host end exists.
    pub host_exists: bool,
    /// The host end is up.
    pub host_up: bool,
    /// Name of the bridge the host end is enslaved to.
    pub master: Option<String>,
    /// The namespace is mounted.
    pub netns_exists: bool,
    /// The peer exists inside the namespace.
    pub peer_exists: bool,
    /// The peer is up.
    pub peer_up: bool,
    /// Loopback inside the namespace is up.
    pub loopback_up: bool,
    /// IPv4 addresses on the peer.
    pub addresses: Vec<Ipv4Net>,
    /// Gateway of the namespace's default route, if any.
    pub default_gateway: Option<Ipv4Addr>,
}

impl NetDriver {
    /// Attaches namespace `req.netns` to bridge `req.bridge`: a veth pair created with its peer
    /// directly inside the namespace (no move between namespaces), host end on the bridge and
    /// up, loopback and peer up, the address on the peer and, with a gateway, a default route.
    ///
    /// # Guarantees
    /// Idempotent: an existing, correct attachment is left alone and a partial one is
    /// completed; a host end whose peer is not in the namespace is recreated.
    ///
    /// # Errors
    /// `NotFound` when the bridge or the namespace is missing; `Netlink` with the failing step.
    pub async fn attach(&self, req: &AttachRequest) -> Result<()> {
        check_ifname(&req.host_ifname)?;
        check_ifname(&req.ifname)?;
        let (bridge, (nsfile, ns), existing) = futures::try_join!(
            index_of(&self.handle, &req.bridge, "bridge"),
            self.netns_handle(&req.netns),
            get_link(&self.handle, &req.host_ifname),
        )?;
        let peer = match existing {
            Some(_) => get_link(&ns, &req.ifname).await?,
            None => None,
        };
        let fresh = match (existing, peer) {
            (Some(host), Some(_)) => {
                let alias_off = req.alias.is_some() && link_alias(&host) != req.alias;
                if link_master(&host) != Some(bridge)
                    || !link_up(&host)
                    || link_mtu(&host) != Some(req.mtu)
                    || alias_off
                {
                    let mut msg = LinkUnspec::new_with_index(host.header.index)
                        .controller(bridge)
                        .mtu(req.mtu)
                        .up();
                    if let Some(alias) = &req.alias {
                        msg = msg.alias(alias.clone());
                    }
                    let msg = msg.build();
                    self.handle
                        .link()
                        .change(msg)
                        .execute()
                        .await
                        .map_err(Error::netlink("enslave and up", &req.host_ifname))?;
                }
                false
            }
            (host, _) => {
                if host.is_some() {
                    // A host end without its peer in this namespace: start over.
                    self.delete_link(&req.host_ifname).await?;
                }
                // The peer cannot be set up in this message: veth_open refuses (ENOTCONN)
                // until both ends are linked, so it goes up from inside the namespace.
                let peer = LinkUnspec::new_with_name(&req.ifname)
                    .mtu(req.mtu)
                    .setns_by_fd(nsfile.as_raw_fd())
                    .build();
                let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                    .name(req.host_ifname.clone())
                    .mtu(req.mtu)
                    .controller(bridge)
                    .up()
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                    .build();
                self.handle
                    .link()
                    .add(msg)
                    .execute()
                    .await
                    .map_err(Error::netlink("create veth", &req.host_ifname))?;
                // The kernel ignores IFLA_IFALIAS in RTM_NEWLINK (only a change sets it), so
                // the mark follows at once. A kill in between leaves a link named after the
                // container's uid: the next attach adopts it and its cleanup deletes it by name.
                if let Some(alias) = &req.alias {
                    let msg = LinkUnspec::new_with_name(&req.host_ifname)
                        .alias(alias.clone())
                        .build();
                    self.handle
                        .link()
                        .change(msg)
                        .execute()
                        .await
                        .map_err(Error::netlink("set alias", &req.host_ifname))?;
                }
                true
            }
        };
        drop(nsfile);
        configure_inside(&ns, req, fresh).await
    }

    /// Removes an attachment by deleting its host veth end (the peer goes with it).
    /// A missing veth is success.
    pub async fn detach(&self, host_ifname: &str) -> Result<()> {
        self.delete_link(host_ifname).await
    }

    /// What the host has for the attachment `(netns, host_ifname, ifname)`.
    pub async fn inspect_attachment(
        &self,
        netns: &str,
        host_ifname: &str,
        ifname: &str,
    ) -> Result<AttachmentState> {
        let mut st = AttachmentState::default();
        if let Some(host) = get_link(&self.handle, host_ifname).await? {
            st.host_exists = true;
            st.host_up = link_up(&host);
            if let Some(m) = link_master(&host) {
                st.master = self.link_name_by_index(m).await?;
            }
        }
        let ns = match self.netns_handle(netns).await {
            Ok((_, ns)) => ns,
            Err(Error::NotFound { .. }) => return Ok(st),
            Err(e) => return Err(e),
        };
        st.netns_exists = true;
        st.loopback_up = get_link(&ns, "lo").await?.is_some_and(|l| link_up(&l));
        if let Some(peer) = get_link(&ns, ifname).await? {
            st.peer_exists = true;
            st.peer_up = link_up(&peer);
            st.addresses = ipv4_addresses(&ns, peer.header.index, ifname).await?;
        }
        let routes: Vec<RouteMessage> = ns
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(Error::netlink("dump routes", netns))?;
        st.default_gateway = routes
            .iter()
            .filter(|r| r.header.destination_prefix_length == 0)
            .find_map(|r| {
                r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
                    _ => None,
                })
            });
        Ok(st)
    }
}

/// Inside the namespace: loopback and peer up, the address on the peer, the default route.
/// A freshly created peer is known to be bare, so its address is added without a dump.
async fn configure_inside(ns: &Handle, req: &AttachRequest, fresh: bool) -> Result<()> {
    let ((), (), index) = futures::try_join!(
        set_up(ns, "lo", &req.netns),
        set_up(ns, &req.ifname, &req.ifname),
        index_of(ns, &req.ifname, "peer interface"),
    )?;
    if fresh {
        match ns
            .address()
            .add(
                index,
                IpAddr::V4(req.address.addr()),
                req.address.prefix_len(),
            )
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if nl_errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(Error::netlink("add address", &req.ifname)(e)),
        }
    } else {
        ensure_only_address(ns, index, &req.ifname, req.address).await?;
    }
    if let Some(gw) = req.gateway {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .build();
        ns.route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(Error::netlink("add default route", &req.netns))?;
    }
    Ok(())
}

/// Sets link `ifname` up (by name, one round trip); `object` names it in errors.
async fn set_up(handle: &Handle, ifname: &str, object: &str) -> Result<()> {
    let msg = LinkUnspec::new_with_name(ifname).up().build();
    handle
        .link()
        .change(msg)
        .execute()
        .await
        .map_err(Error::netlink("set up", object))
}
