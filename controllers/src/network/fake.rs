//! A recording in-memory `NetworkDriver` for unit tests (of this controller and of the Container
//! controller that uses the attachment component): a pretend host that tests can break.

use super::driver::{
    AttachConfig, AttachObserved, BridgeConfig, BridgeObserved, HostLink, NetworkDriver,
};
use crate::action::Error;
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

/// The pretend host.
#[derive(Debug, Default)]
pub struct FakeHost {
    pub bridges: BTreeMap<String, BridgeObserved>,
    /// host veth name → (what was asked, what the host has).
    pub attachments: BTreeMap<String, (AttachConfig, AttachObserved)>,
    pub netns: BTreeSet<String>,
    /// Host routes (`network/prefix`) that are not tend's.
    pub routes: Vec<(Ipv4Addr, u8)>,
    /// Every mutating call, in order (`ensure_bridge tnd-…`, `attach tnv-…`…).
    pub calls: Vec<String>,
}

/// A recording fake driver.
#[derive(Debug, Default)]
pub struct FakeDriver {
    pub host: Mutex<FakeHost>,
}

impl FakeDriver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` on the pretend host (to inspect it or break it).
    pub fn with<T>(&self, f: impl FnOnce(&mut FakeHost) -> T) -> T {
        f(&mut self.host.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The calls recorded so far whose text starts with `prefix`.
    pub fn calls(&self, prefix: &str) -> Vec<String> {
        self.with(|h| {
            h.calls
                .iter()
                .filter(|c| c.starts_with(prefix))
                .cloned()
                .collect()
        })
    }
}

fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let m = |p: u8| u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
    let mask = m(a.1) & m(b.1);
    u32::from(a.0) & mask == u32::from(b.0) & mask
}

#[async_trait]
impl NetworkDriver for FakeDriver {
    fn bridge_name(&self, network_uid: &str) -> String {
        let tag: String = network_uid.replace('-', "").chars().take(10).collect();
        format!("tnd-{tag}")
    }

    fn host_veth_name(&self, container_uid: &str, index: usize) -> String {
        let tag: String = container_uid.replace('-', "").chars().take(10).collect();
        format!("tnv-{tag}{index:x}")
    }

    fn netns_path(&self, name: &str) -> PathBuf {
        PathBuf::from("/run/netns").join(name)
    }

    async fn ensure_bridge(&self, b: &BridgeConfig) -> Result<(), Error> {
        self.with(|h| {
            h.calls.push(format!("ensure_bridge {}", b.name));
            h.bridges.insert(
                b.name.clone(),
                BridgeObserved {
                    up: true,
                    mtu: b.mtu,
                    addresses: vec![(b.gateway, b.prefix)],
                    alias: Some(b.alias.clone()),
                },
            );
        });
        Ok(())
    }

    async fn inspect_bridge(&self, name: &str) -> Result<Option<BridgeObserved>, Error> {
        Ok(self.with(|h| h.bridges.get(name).cloned()))
    }

    async fn delete_link(&self, name: &str) -> Result<(), Error> {
        self.with(|h| {
            h.calls.push(format!("delete_link {name}"));
            h.bridges.remove(name);
            h.attachments.remove(name);
        });
        Ok(())
    }

    async fn list_links(&self) -> Result<Vec<HostLink>, Error> {
        Ok(self.with(|h| {
            let bridges = h.bridges.iter().map(|(n, b)| HostLink {
                name: n.clone(),
                alias: b.alias.clone(),
                up: b.up,
                master: None,
            });
            let veths = h.attachments.iter().map(|(n, (a, o))| HostLink {
                name: n.clone(),
                alias: Some(a.alias.clone()),
                up: o.host_up,
                master: o.master.clone(),
            });
            bridges.chain(veths).collect()
        }))
    }

    async fn host_link(&self, name: &str) -> Result<Option<HostLink>, Error> {
        Ok(self
            .list_links()
            .await?
            .into_iter()
            .find(|l| l.name == name))
    }

    async fn route_overlap(&self, network: Ipv4Addr, prefix: u8) -> Result<Option<String>, Error> {
        Ok(self.with(|h| {
            h.routes
                .iter()
                .find(|r| overlaps(**r, (network, prefix)))
                .map(|(n, p)| format!("{n}/{p} dev eth9"))
        }))
    }

    async fn create_netns(&self, name: &str) -> Result<(), Error> {
        self.with(|h| {
            if h.netns.insert(name.to_string()) {
                h.calls.push(format!("create_netns {name}"));
            }
        });
        Ok(())
    }

    async fn delete_netns(&self, name: &str) -> Result<(), Error> {
        self.with(|h| {
            h.calls.push(format!("delete_netns {name}"));
            h.netns.remove(name);
            h.attachments.retain(|_, (a, _)| a.netns != name);
        });
        Ok(())
    }

    async fn netns_exists(&self, name: &str) -> Result<bool, Error> {
        Ok(self.with(|h| h.netns.contains(name)))
    }

    async fn list_netns(&self, prefix: &str) -> Result<Vec<String>, Error> {
        Ok(self.with(|h| {
            h.netns
                .iter()
                .filter(|n| n.starts_with(prefix))
                .cloned()
                .collect()
        }))
    }

    async fn attach(&self, a: &AttachConfig) -> Result<(), Error> {
        self.with(|h| {
            if !h.netns.contains(&a.netns) {
                return Err(format!("netns {} not found", a.netns).into());
            }
            if !h.bridges.contains_key(&a.bridge) {
                return Err(format!("bridge {} not found", a.bridge).into());
            }
            h.calls
                .push(format!("attach {} {}", a.host_ifname, a.address));
            let obs = AttachObserved {
                netns_exists: true,
                host_exists: true,
                host_up: true,
                master: Some(a.bridge.clone()),
                peer_exists: true,
                peer_up: true,
                addresses: vec![(a.address, a.prefix)],
                default_gateway: a.gateway,
            };
            h.attachments
                .insert(a.host_ifname.clone(), (a.clone(), obs));
            Ok(())
        })
    }

    async fn inspect_attachment(&self, a: &AttachConfig) -> Result<AttachObserved, Error> {
        Ok(self.with(|h| {
            let mut o = h
                .attachments
                .get(&a.host_ifname)
                .map(|(_, o)| o.clone())
                .unwrap_or_default();
            o.netns_exists = h.netns.contains(&a.netns);
            o
        }))
    }
}
