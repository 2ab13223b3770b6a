//! Bridges (create, MTU, gateway address, up; delete; inspect) and the listing of tend's links.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec};

use super::{
    check_ifname, get_link, link_mtu, link_name, link_up, names, nl_errno, Error, NetDriver, Result,
};

/// What the host has for a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeState {
    /// Kernel interface index.
    pub index: u32,
    /// Administratively up.
    pub up: bool,
    /// Current MTU.
    pub mtu: u32,
    /// IPv4 addresses on the bridge, with their prefix lengths.
    pub addresses: Vec<Ipv4Net>,
    /// The link alias (`IFLA_IFALIAS`), which tend uses to record the owning daemon and object.
    pub alias: Option<String>,
}

/// A link whose name carries tend's prefix, as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TendLink {
    /// Interface name (`tnd-…` or `tnv-…`).
    pub name: String,
    /// Kernel interface index.
    pub index: u32,
    /// Link kind (`bridge`, `veth`…) when the kernel reports it.
    pub kind: Option<String>,
    /// The link alias (`IFLA_IFALIAS`), e.g. `tend:<instance>:<uid>`.
    pub alias: Option<String>,
    /// Administratively up.
    pub up: bool,
    /// Index of the bridge this link is a port of.
    pub master: Option<u32>,
}

impl NetDriver {
    /// Makes bridge `name` exist with MTU `mtu`, exactly the IPv4 address `gateway/prefix`, and
    /// up. Other IPv4 addresses on the bridge are removed (a subnet change re-addresses it).
    ///
    /// # Guarantees
    /// Idempotent; each step is skipped when the host already matches.
    ///
    /// # Errors
    /// `Conflict` when a link called `name` exists but is not a bridge.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        gateway: Ipv4Addr,
        prefix: u8,
        mtu: u32,
        alias: Option<&str>,
    ) -> Result<BridgeState> {
        check_ifname(name)?;
        let link = match self.link_by_name(name).await? {
            Some(l) => l,
            None => {
                // Created down: the kernel ignores IFLA_IFALIAS at creation, so the change below
                // brings it up and marks it in one message (never up without its owner's mark).
                let msg = LinkBridge::new(name).mtu(mtu).build();
                match self.handle.link().add(msg).execute().await {
                    Ok(()) => {}
                    Err(e) if nl_errno(&e) == Some(libc::EEXIST) => {}
                    Err(e) => return Err(Error::netlink("create bridge", name)(e)),
                }
                self.link_by_name(name)
                    .await?
                    .ok_or_else(|| Error::NotFound {
                        kind: "bridge",
                        name: name.to_string(),
                    })?
            }
        };
        if link_kind(&link).as_deref() != Some("bridge") {
            return Err(Error::Conflict {
                name: name.to_string(),
                reason: format!("exists as {:?}, not a bridge", link_kind(&link)),
            });
        }
        let index = link.header.index;
        let alias_off = alias.is_some_and(|a| link_alias(&link).as_deref() != Some(a));
        if link_mtu(&link) != Some(mtu) || !link_up(&link) || alias_off {
            let mut msg = LinkUnspec::new_with_index(index).mtu(mtu).up();
            if let Some(alias) = alias {
                msg = msg.alias(alias);
            }
            let msg = msg.build();
            self.handle
                .link()
                .change(msg)
                .execute()
                .await
                .map_err(Error::netlink("set mtu and up", name))?;
        }
        let want = Ipv4Net::new(gateway, prefix).map_err(|_| Error::InvalidName {
            kind: "prefix",
            name: prefix.to_string(),
            reason: "IPv4 prefix length above 32",
        })?;
        ensure_only_address(&self.handle, index, name, want).await?;
        self.inspect_bridge(name)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "bridge",
                name: name.to_string(),
            })
    }

    /// Deletes bridge `name`; a missing bridge is success. Ports are released, not deleted.
    pub async fn delete_bridge(&self, name: &str) -> Result<()> {
        self.delete_link(name).await
    }

    /// What the host has for bridge `name`, or `None` when it does not exist.
    pub async fn inspect_bridge(&self, name: &str) -> Result<Option<BridgeState>> {
        let Some(link) = self.link_by_name(name).await? else {
            return Ok(None);
        };
        let index = link.header.index;
        let addresses = ipv4_addresses(&self.handle, index, name).await?;
        Ok(Some(BridgeState {
            index,
            up: link_up(&link),
            mtu: link_mtu(&link).unwrap_or(0),
            addresses,
            alias: link_alias(&link),
        }))
    }

    /// Deletes the host link `name` (a veth takes its peer with it); missing is success.
    pub async fn delete_link(&self, name: &str) -> Result<()> {
        check_ifname(name)?;
        let msg = LinkUnspec::new_with_name(name).build();
        match self.handle.link().del_with_message(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if nl_errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(Error::netlink("delete link", name)(e)),
        }
    }

    /// Host links whose names carry tend's prefixes (`tnd-`, `tnv-`), for an orphan sweep.
    /// Links without the prefix are never listed.
    pub async fn list_tend_links(&self) -> Result<Vec<TendLink>> {
        let mut links = self.handle.link().get().execute();
        let mut out = Vec::new();
        while let Some(link) = links
            .try_next()
            .await
            .map_err(Error::netlink("dump links", "host"))?
        {
            if let Some(name) = link_name(&link).filter(|n| names::is_tend_link(n)) {
                out.push(TendLink {
                    name: name.to_string(),
                    index: link.header.index,
                    kind: link_kind(&link),
                    alias: link_alias(&link),
                    up: link_up(&link),
                    master: super::link_master(&link),
                });
            }
        }
        Ok(out)
    }
}

/// The `IFLA_INFO_KIND` of a link (`bridge`, `veth`…).
pub(crate) fn link_kind(msg: &LinkMessage) -> Option<String> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(InfoKind::Other(k)) => Some(k.clone()),
            LinkInfo::Kind(k) => Some(k.to_string()),
            _ => None,
        }),
        _ => None,
    })
}

/// The `IFLA_IFALIAS` of a link, when set.
pub(crate) fn link_alias(msg: &LinkMessage) -> Option<String> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    })
}

/// IPv4 address messages on link `index`.
async fn ipv4_messages(handle: &Handle, index: u32, object: &str) -> Result<Vec<AddressMessage>> {
    handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_filter(|m| futures::future::ready(addr_of(m).is_some()))
        .try_collect()
        .await
        .map_err(Error::netlink("get addresses", object))
}

/// The IPv4 addresses (with prefix) on link `index`.
pub(crate) async fn ipv4_addresses(
    handle: &Handle,
    index: u32,
    object: &str,
) -> Result<Vec<Ipv4Net>> {
    Ok(ipv4_messages(handle, index, object)
        .await?
        .iter()
        .filter_map(|m| Ipv4Net::new(addr_of(m)?, m.header.prefix_len).ok())
        .collect())
}

/// The local IPv4 address of an address message.
pub(crate) fn addr_of(m: &AddressMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(v)) | AddressAttribute::Address(IpAddr::V4(v)) => {
            Some(*v)
        }
        _ => None,
    })
}

/// Makes `want` the only IPv4 address on link `index`: removes the others, adds it if missing.
pub(crate) async fn ensure_only_address(
    handle: &Handle,
    index: u32,
    object: &str,
    want: Ipv4Net,
) -> Result<()> {
    let mut present = false;
    for m in ipv4_messages(handle, index, object).await? {
        if addr_of(&m) == Some(want.addr()) && m.header.prefix_len == want.prefix_len() {
            present = true;
            continue;
        }
        match handle.address().del(m).execute().await {
            Ok(()) => {}
            Err(e) if nl_errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
            Err(e) => return Err(Error::netlink("delete stray address", object)(e)),
        }
    }
    if !present {
        match handle
            .address()
            .add(index, IpAddr::V4(want.addr()), want.prefix_len())
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if nl_errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(Error::netlink("add address", object)(e)),
        }
    }
    Ok(())
}

/// Looks a link up on `handle` and returns its index, or `NotFound`.
pub(crate) async fn index_of(handle: &Handle, name: &str, kind: &'static str) -> Result<u32> {
    get_link(handle, name)
        .await?
        .map(|l| l.header.index)
        .ok_or_else(|| Error::NotFound {
            kind,
            name: name.to_string(),
        })
}
