//! The seam between the Network controller and the host: bridges, named namespaces, veth
//! attachments and host routes, as a small async trait the netlink adapter implements.

use crate::action::Error;
use async_trait::async_trait;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// A bridge as the controller wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    pub name: String,
    /// Link alias (`tend:<instance>:<network uid>`), so an orphan sweep can tell whose it is.
    pub alias: String,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    pub mtu: u32,
}

/// What the host has for a bridge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeObserved {
    pub up: bool,
    pub mtu: u32,
    /// IPv4 addresses with prefix lengths.
    pub addresses: Vec<(Ipv4Addr, u8)>,
    pub alias: Option<String>,
}

/// One attachment as the controller wants it: a veth whose host end is on `bridge` and whose
/// peer is `ifname` inside namespace `netns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachConfig {
    pub netns: String,
    pub bridge: String,
    pub host_ifname: String,
    /// Link alias of the host end (`tend:<instance>:<container uid>`).
    pub alias: String,
    pub ifname: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// Default route via this gateway (the first network only).
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u32,
}

/// What the host has for one attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachObserved {
    pub netns_exists: bool,
    pub host_exists: bool,
    pub host_up: bool,
    /// The bridge the host end is a port of.
    pub master: Option<String>,
    pub peer_exists: bool,
    pub peer_up: bool,
    pub addresses: Vec<(Ipv4Addr, u8)>,
    pub default_gateway: Option<Ipv4Addr>,
}

impl AttachObserved {
    /// The first thing that differs from `want`, in words; `None` when the attachment is whole.
    pub fn problem(&self, want: &AttachConfig) -> Option<String> {
        let p = if !self.netns_exists {
            format!("namespace {} is missing", want.netns)
        } else if !self.host_exists || !self.peer_exists {
            format!("veth {} is missing", want.host_ifname)
        } else if !self.host_up || !self.peer_up {
            format!("veth {} is down", want.host_ifname)
        } else if self.master.as_deref() != Some(want.bridge.as_str()) {
            format!("veth {} is not on bridge {}", want.host_ifname, want.bridge)
        } else if self.addresses != [(want.address, want.prefix)] {
            format!(
                "{} has {:?} instead of {}/{}",
                want.ifname, self.addresses, want.address, want.prefix
            )
        } else if want.gateway.is_some() && self.default_gateway != want.gateway {
            format!("default route via {:?} is missing", want.gateway)
        } else {
            return None;
        };
        Some(p)
    }
}

/// A link with tend's prefix found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLink {
    pub name: String,
    pub alias: Option<String>,
    pub up: bool,
    /// The bridge this link is a port of.
    pub master: Option<String>,
}

/// Host operations the Network controller and the attachment component need.
///
/// # Assumptions
/// Every method is idempotent: creating what exists or deleting what is gone succeeds.
#[async_trait]
pub trait NetworkDriver: Send + Sync + 'static {
    /// The bridge name of the Network with this uid (`tnd-…`, at most 15 bytes).
    fn bridge_name(&self, network_uid: &str) -> String;
    /// The host end of a container's veth on its `index`-th network (`tnv-…`).
    fn host_veth_name(&self, container_uid: &str, index: usize) -> String;
    /// Where the named namespace is bind-mounted (what a workload joins).
    fn netns_path(&self, name: &str) -> PathBuf;

    /// Makes the bridge exist with exactly the gateway address, the MTU and the alias, and up.
    async fn ensure_bridge(&self, bridge: &BridgeConfig) -> Result<(), Error>;
    async fn inspect_bridge(&self, name: &str) -> Result<Option<BridgeObserved>, Error>;
    /// Deletes a host link (a bridge, or a veth with its peer).
    async fn delete_link(&self, name: &str) -> Result<(), Error>;
    /// Host links whose names carry tend's prefixes, with their aliases.
    async fn list_links(&self) -> Result<Vec<HostLink>, Error>;
    /// One host link by name (`None` when it does not exist): cheaper than a dump when a
    /// single attachment is checked.
    async fn host_link(&self, name: &str) -> Result<Option<HostLink>, Error>;
    /// A host route overlapping the subnet, described for people, ignoring routes through
    /// tend's own bridges and the default route.
    async fn route_overlap(&self, network: Ipv4Addr, prefix: u8) -> Result<Option<String>, Error>;

    async fn create_netns(&self, name: &str) -> Result<(), Error>;
    /// Binds the network namespace process `pid` is in under `name` again (after someone
    /// deleted the name while the workload kept running in it). Returns false when the driver
    /// cannot, the name exists, or `pid` is gone, in the host's namespace, or not in a cgroup
    /// of `owner_uid` (a reused pid); the caller then makes a new namespace.
    async fn restore_netns(&self, _name: &str, _pid: u32, _owner_uid: &str) -> Result<bool, Error> {
        Ok(false)
    }
    async fn delete_netns(&self, name: &str) -> Result<(), Error>;
    /// Whether the named namespace is there (its name mounted).
    async fn netns_exists(&self, name: &str) -> Result<bool, Error>;
    /// Names of the namespaces starting with `prefix`.
    async fn list_netns(&self, prefix: &str) -> Result<Vec<String>, Error>;

    /// Makes the attachment whole (creating, completing or fixing it).
    async fn attach(&self, a: &AttachConfig) -> Result<(), Error>;
    async fn inspect_attachment(&self, a: &AttachConfig) -> Result<AttachObserved, Error>;
}
