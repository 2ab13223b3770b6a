//! The Network controller's driver over netlink: [`NetworkDriver`] implemented on `NetDriver`.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use async_trait::async_trait;
use ipnet::Ipv4Net;
use tend_controllers::network::{
    AttachConfig, AttachObserved, BridgeConfig, BridgeObserved, HostLink, NetworkDriver,
};
use tend_controllers::Error;

use super::{names, AttachRequest, NetDriver};

/// [`NetworkDriver`] over the netlink driver.
#[derive(Clone)]
pub struct NetlinkNetworkDriver {
    net: NetDriver,
}

impl NetlinkNetworkDriver {
    pub fn new(net: NetDriver) -> Self {
        Self { net }
    }
}

fn net4(n: &Ipv4Net) -> (Ipv4Addr, u8) {
    (n.addr(), n.prefix_len())
}

fn box_err(e: super::Error) -> Error {
    Box::new(e)
}

#[async_trait]
impl NetworkDriver for NetlinkNetworkDriver {
    fn bridge_name(&self, network_uid: &str) -> String {
        names::bridge_name(network_uid)
    }

    fn host_veth_name(&self, container_uid: &str, index: usize) -> String {
        names::host_veth_name(container_uid, index)
    }

    fn netns_path(&self, name: &str) -> PathBuf {
        self.net.netns_dir().join(name)
    }

    async fn ensure_bridge(&self, b: &BridgeConfig) -> Result<(), Error> {
        self.net
            .ensure_bridge(&b.name, b.gateway, b.prefix, b.mtu, Some(&b.alias))
            .await
            .map_err(box_err)?;
        Ok(())
    }

    async fn inspect_bridge(&self, name: &str) -> Result<Option<BridgeObserved>, Error> {
        Ok(self
            .net
            .inspect_bridge(name)
            .await
            .map_err(box_err)?
            .map(|b| BridgeObserved {
                up: b.up,
                mtu: b.mtu,
                addresses: b.addresses.iter().map(net4).collect(),
                alias: b.alias,
            }))
    }

    async fn delete_link(&self, name: &str) -> Result<(), Error> {
        self.net.delete_link(name).await.map_err(box_err)
    }

    async fn list_links(&self) -> Result<Vec<HostLink>, Error> {
        let links = self.net.list_tend_links().await.map_err(box_err)?;
        let name_of = |i: u32| links.iter().find(|l| l.index == i).map(|l| l.name.clone());
        Ok(links
            .iter()
            .map(|l| HostLink {
                name: l.name.clone(),
                alias: l.alias.clone(),
                up: l.up,
                master: l.master.and_then(name_of),
            })
            .collect())
    }

    async fn host_link(&self, name: &str) -> Result<Option<HostLink>, Error> {
        let Some(l) = self.net.link_by_name(name).await.map_err(box_err)? else {
            return Ok(None);
        };
        let master = match super::link_master(&l) {
            Some(i) => self.net.link_name_by_index(i).await.map_err(box_err)?,
            None => None,
        };
        Ok(Some(HostLink {
            name: name.to_string(),
            alias: super::bridge::link_alias(&l),
            up: super::link_up(&l),
            master,
        }))
    }

    async fn route_overlap(&self, network: Ipv4Addr, prefix: u8) -> Result<Option<String>, Error> {
        let subnet = Ipv4Net::new(network, prefix).map_err(|e| -> Error { Box::new(e) })?;
        let bridges: Vec<u32> = self
            .net
            .list_tend_links()
            .await
            .map_err(box_err)?
            .iter()
            .filter(|l| l.name.starts_with(names::BRIDGE_PREFIX))
            .map(|l| l.index)
            .collect();
        let hit = self
            .net
            .route_overlap(subnet, &bridges)
            .await
            .map_err(box_err)?;
        Ok(hit.map(|r| {
            let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            let dev = r.oif.map(|o| format!(" (ifindex {o})")).unwrap_or_default();
            format!("{}{via}{dev}", r.destination)
        }))
    }

    async fn create_netns(&self, name: &str) -> Result<(), Error> {
        self.net.create_netns(name).await.map_err(box_err)
    }

    async fn restore_netns(&self, name: &str, pid: u32, owner_uid: &str) -> Result<bool, Error> {
        self.net
            .restore_netns(name, pid, owner_uid)
            .await
            .map_err(box_err)
    }

    async fn delete_netns(&self, name: &str) -> Result<(), Error> {
        self.net.delete_netns(name).await.map_err(box_err)
    }

    async fn netns_exists(&self, name: &str) -> Result<bool, Error> {
        self.net.netns_exists(name).await.map_err(box_err)
    }

    async fn list_netns(&self, prefix: &str) -> Result<Vec<String>, Error> {
        self.net.list_netns(prefix).await.map_err(box_err)
    }

    async fn attach(&self, a: &AttachConfig) -> Result<(), Error> {
        crate::failpoint::check_async("net.attach").await?;
        let req = AttachRequest {
            netns: a.netns.clone(),
            bridge: a.bridge.clone(),
            host_ifname: a.host_ifname.clone(),
            ifname: a.ifname.clone(),
            address: Ipv4Net::new(a.address, a.prefix).map_err(|e| -> Error { Box::new(e) })?,
            gateway: a.gateway,
            mtu: a.mtu,
            alias: Some(a.alias.clone()),
        };
        self.net.attach(&req).await.map_err(box_err)
    }

    async fn inspect_attachment(&self, a: &AttachConfig) -> Result<AttachObserved, Error> {
        let s = self
            .net
            .inspect_attachment(&a.netns, &a.host_ifname, &a.ifname)
            .await
            .map_err(box_err)?;
        Ok(AttachObserved {
            netns_exists: s.netns_exists,
            host_exists: s.host_exists,
            host_up: s.host_up,
            master: s.master,
            peer_exists: s.peer_exists,
            peer_up: s.peer_up,
            addresses: s.addresses.iter().map(net4).collect(),
            default_gateway: s.default_gateway,
        })
    }
}
