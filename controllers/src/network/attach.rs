//! The attachment component: gives a Container its named network namespace, one veth per
//! network in `spec.networks` (eth0, eth1… in order), leased addresses and a default route via
//! the first network's gateway. The Container controller calls it; the attachment repairer
//! (`repair.rs`) uses it to put back attachments that drifted.

use super::driver::{AttachConfig, NetworkDriver};
use super::ports::{Claims, PortDriver, PortRule};
use super::NetworkError;
use crate::context::Context;
use crate::runtime::Trigger;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tend_schema::kinds::container::{ContainerSpec, ContainerStatus, NetworkStatusEntry};
use tend_schema::kinds::network::Subnet;
use tend_schema::kinds::{NetworkSpec, NetworkStatus};
use tend_schema::store::{EventType, LeaseError, LeaseFilter, LeaseRequest, StoreError};
use tend_schema::{AnyObject, Kind, ObjectKey};

/// Why a Container's attachments could not be made (yet).
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// A listed Network is missing, being deleted or not Ready; the Container waits (it is
    /// woken when the Network changes).
    #[error("waiting for network {network}: {why}")]
    WaitingForNetwork { network: String, why: String },
    /// No free address on a listed network.
    #[error("network {network}: {source}")]
    SubnetExhausted {
        network: String,
        #[source]
        source: LeaseError,
    },
    /// The fixed address asked for in `spec.networks[].ip` cannot be given.
    #[error("network {network}: {source}")]
    AddressUnavailable {
        network: String,
        #[source]
        source: LeaseError,
    },
    /// The Container object cannot be read as a Container.
    #[error("container {container}: {message}")]
    Invalid { container: String, message: String },
    /// A published port's host socket is held by another Container (named in `holder`).
    #[error("port {port} is already published by container {holder}")]
    PortConflict { port: String, holder: String },
    #[error(transparent)]
    Network(#[from] NetworkError),
}

impl AttachError {
    /// The CamelCase reason for the Container's `Ready=False` condition.
    pub fn reason(&self) -> &'static str {
        match self {
            AttachError::WaitingForNetwork { .. } => "WaitingForNetwork",
            AttachError::SubnetExhausted { .. } => "SubnetExhausted",
            AttachError::AddressUnavailable { .. } => "AddressUnavailable",
            AttachError::Invalid { .. } => "InvalidSpec",
            AttachError::PortConflict { .. } => "PortConflict",
            AttachError::Network(_) => "NetworkError",
        }
    }

    /// True when retrying later cannot help until something else changes (the Network becomes
    /// Ready, an address is released): report the condition and await a change, not an error.
    pub fn is_waiting(&self) -> bool {
        !matches!(self, AttachError::Network(_))
    }
}

impl From<StoreError> for AttachError {
    fn from(e: StoreError) -> Self {
        AttachError::Network(NetworkError::Store(e))
    }
}

/// A Network resolved for attaching: its bridge, subnet, gateway and MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedNetwork {
    pub name: String,
    pub uid: String,
    pub bridge: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

/// The link alias tend puts on its host links: `tend:<instance>:<uid>`.
pub fn link_alias(instance: &str, uid: &str) -> String {
    format!("tend:{instance}:{uid}")
}

/// `(instance, uid)` of a tend link alias.
pub fn parse_alias(alias: &str) -> Option<(&str, &str)> {
    let rest = alias.strip_prefix("tend:")?;
    rest.split_once(':')
}

/// How long `status.leases` may lag a lease given or released.
const LEASE_COUNT_DELAY: Duration = Duration::from_millis(100);

/// Makes and removes Containers' attachments. One per daemon, shared by the Container and
/// Network controllers: it serializes work per container, so both never race on one netns.
pub struct Attacher {
    pub(crate) driver: Arc<dyn NetworkDriver>,
    pub(crate) instance: String,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// When each container's attachments were last inspected inside their namespace.
    pub(crate) inspected: Mutex<HashMap<String, Instant>>,
    /// Wakes a Network whose leases changed (its `status.leases`), once registered.
    networks: OnceLock<Trigger>,
    /// Published ports: the host rules (none: ports are refused) and who holds which.
    ports: Option<Arc<dyn PortDriver>>,
    claims: Claims,
}

impl Attacher {
    pub fn new(driver: Arc<dyn NetworkDriver>, instance: impl Into<String>) -> Self {
        Self {
            driver,
            instance: instance.into(),
            locks: Mutex::default(),
            inspected: Mutex::default(),
            networks: OnceLock::new(),
            ports: None,
            claims: Claims::default(),
        }
    }

    /// Publishes Containers' `spec.ports` through `ports`.
    pub fn with_ports(mut self, ports: Arc<dyn PortDriver>) -> Self {
        self.ports = Some(ports);
        self
    }

    /// Checks the published-port rules and puts back what drifted (see [`PortDriver::verify`]).
    pub async fn verify_ports(&self) -> Result<Option<String>, crate::action::Error> {
        match &self.ports {
            Some(p) => p.verify().await,
            None => Ok(None),
        }
    }

    /// Lets lease changes wake the Network controller (`status.leases` follows at once).
    pub fn notify_networks(&self, networks: Trigger) {
        let _ = self.networks.set(networks);
    }

    /// Wakes the Network soon: attaching many containers at once makes one reconcile per
    /// [`LEASE_COUNT_DELAY`], not one per lease.
    fn leases_changed(&self, network_uid: &str) {
        if let Some(t) = self.networks.get() {
            t.uid_after(network_uid, LEASE_COUNT_DELAY);
        }
    }

    /// The prefix of this daemon's namespace names: `tend-<instance>-`.
    pub fn netns_prefix(&self) -> String {
        format!("tend-{}-", self.instance)
    }

    /// The named namespace of a container: `tend-<instance>-<uid>`.
    pub fn netns_name(&self, container_uid: &str) -> String {
        format!("{}{container_uid}", self.netns_prefix())
    }

    /// The namespace file a container's workload joins (`setns`), e.g. `/run/netns/tend-…`.
    pub fn netns_path(&self, container_uid: &str) -> PathBuf {
        self.driver.netns_path(&self.netns_name(container_uid))
    }

    pub(crate) async fn lock(&self, uid: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = self
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(uid.to_string())
            .or_default()
            .clone();
        m.lock_owned().await
    }

    /// Makes the Container's namespace and one attachment per listed network, and returns the
    /// entries for `status.networks`. A container without networks gets none (and loses any
    /// it had).
    ///
    /// # Guarantees
    /// Idempotent; the container keeps its leased addresses across calls, restarts and repairs.
    /// Leases of networks no longer listed are released. A whole attachment that is found
    /// broken (the container's status listed it) is repaired and counted as drift.
    ///
    /// # Errors
    /// `WaitingForNetwork`, `SubnetExhausted`, `AddressUnavailable` (see [`AttachError::reason`])
    /// before any host change for the blocked network; `Network` for store and driver failures.
    pub async fn ensure_attachments(
        &self,
        ctx: &Context,
        container: &AnyObject,
    ) -> Result<Vec<NetworkStatusEntry>, AttachError> {
        let (uid, spec, status) = container_parts(container)?;
        if spec.networks.is_empty() {
            // Admission refuses ports without networks; nothing to forward to.
            let held = ctx.store.list_leases(&owner_filter(&uid)).await?;
            if !held.is_empty() {
                self.remove_by_uid(ctx, &uid).await?;
            }
            return Ok(vec![]);
        }
        let mut nets = Vec::with_capacity(spec.networks.len());
        for n in &spec.networks {
            nets.push(resolve_ready(ctx, container.metadata.ns(), &n.name).await?);
        }
        let _guard = self.lock(&uid).await;
        let name = format!("{}/{}", container.metadata.ns(), container.metadata.name);
        if let Err(c) = self.claims.claim(ctx, &uid, &name, &spec.ports).await? {
            // Nothing of this container's ports is installed (an earlier set goes too).
            self.claims.release(&uid);
            self.publish(&uid, vec![]).await?;
            return Err(AttachError::PortConflict {
                port: c.port,
                holder: c.holder,
            });
        }
        if !spec.ports.is_empty() && self.ports.is_none() {
            return Err(AttachError::Invalid {
                container: name,
                message: "spec.ports: this daemon cannot publish ports".into(),
            });
        }
        let held = ctx.store.list_leases(&owner_filter(&uid)).await?;
        let mut dropped = false;
        for l in held
            .iter()
            .filter(|l| nets.iter().all(|n| n.uid != l.network_uid))
        {
            ctx.store.release_leases(&uid, Some(&l.network_uid)).await?;
            self.leases_changed(&l.network_uid);
            dropped = true;
        }
        let netns = self.netns_name(&uid);
        if let Some(pid) = status.pid {
            // A running workload whose namespace lost its name gets that namespace back.
            self.driver
                .restore_netns(&netns, pid, &uid)
                .await
                .map_err(NetworkError::driver("restore netns", &netns))?;
        }
        self.driver
            .create_netns(&netns)
            .await
            .map_err(NetworkError::driver("create netns", &netns))?;
        let mut entries = Vec::with_capacity(nets.len());
        let mut rules = Vec::with_capacity(spec.ports.len());
        for (i, net) in nets.iter().enumerate() {
            let requested = spec.networks[i].ip.as_deref();
            let cfg = self.config(ctx, &uid, i, net, requested).await?;
            let known = status.networks.iter().any(|e| e.name == net.name);
            if known {
                if let Some(problem) = self.check(&cfg).await? {
                    self.attach(&cfg).await?;
                    repaired(ctx, container, &problem).await;
                }
            } else {
                self.attach(&cfg).await?;
            }
            if i == 0 {
                rules.extend(spec.ports.iter().map(|p| PortRule {
                    port: p.clone(),
                    host: p.host_addr().unwrap_or(Ipv4Addr::UNSPECIFIED),
                    address: cfg.address,
                    bridge: net.bridge.clone(),
                }));
            }
            entries.push(NetworkStatusEntry {
                name: net.name.clone(),
                interface: cfg.ifname.clone(),
                ip: cfg.address.to_string(),
            });
            if held.iter().all(|l| l.network_uid != net.uid) {
                self.leases_changed(&net.uid);
            }
        }
        self.publish(&uid, rules).await?;
        self.mark_inspected(&uid);
        if dropped {
            for j in nets.len()..16 {
                let name = self.driver.host_veth_name(&uid, j);
                self.driver
                    .delete_link(&name)
                    .await
                    .map_err(NetworkError::driver("delete veth", &name))?;
            }
        }
        Ok(entries)
    }

    /// Removes the Container's namespace (its veth peers go with it) and releases its leases.
    ///
    /// # Assumptions
    /// The workload has stopped: a namespace still held by a process keeps its veths alive
    /// (the orphan sweep removes them after that process is gone).
    pub async fn remove_attachments(
        &self,
        ctx: &Context,
        container: &AnyObject,
    ) -> Result<(), AttachError> {
        let uid = container.metadata.uid.clone().unwrap_or_default();
        self.remove_by_uid(ctx, &uid).await
    }

    pub async fn remove_by_uid(&self, ctx: &Context, uid: &str) -> Result<(), AttachError> {
        {
            let _guard = self.lock(uid).await;
            self.publish(uid, vec![]).await?;
            self.claims.release(uid);
            let netns = self.netns_name(uid);
            self.driver
                .delete_netns(&netns)
                .await
                .map_err(NetworkError::driver("delete netns", &netns))?;
            let held = ctx.store.list_leases(&owner_filter(uid)).await?;
            ctx.store.release_leases(uid, None).await?;
            held.iter()
                .for_each(|l| self.leases_changed(&l.network_uid));
        }
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
        self.forget_inspection(uid);
        Ok(())
    }

    async fn publish(&self, uid: &str, rules: Vec<PortRule>) -> Result<(), AttachError> {
        if let Some(p) = &self.ports {
            p.publish(uid, rules)
                .await
                .map_err(NetworkError::driver("publish ports", uid))?;
        }
        Ok(())
    }

    /// Leases the address and builds the attachment of `uid`'s `index`-th network.
    pub(crate) async fn config(
        &self,
        ctx: &Context,
        uid: &str,
        index: usize,
        net: &ResolvedNetwork,
        requested: Option<&str>,
    ) -> Result<AttachConfig, AttachError> {
        let requested = match requested {
            Some(s) => Some(s.parse::<Ipv4Addr>().map_err(|_| AttachError::Invalid {
                container: uid.to_string(),
                message: format!("spec.networks[{index}].ip: {s:?} is not an IPv4 address"),
            })?),
            None => None,
        };
        let req = LeaseRequest {
            network_uid: net.uid.clone(),
            subnet: net.subnet,
            gateway: net.gateway,
            owner_uid: uid.to_string(),
            requested,
        };
        let lease = match ctx.store.allocate_lease(req).await {
            Ok(l) => l,
            Err(StoreError::Lease(e @ LeaseError::SubnetExhausted { .. })) => {
                return Err(AttachError::SubnetExhausted {
                    network: net.name.clone(),
                    source: e,
                })
            }
            Err(StoreError::Lease(e)) => {
                return Err(AttachError::AddressUnavailable {
                    network: net.name.clone(),
                    source: e,
                })
            }
            Err(e) => return Err(e.into()),
        };
        Ok(self.attach_config(uid, index, net, lease.address))
    }

    /// The attachment of `uid`'s `index`-th network with its leased `address`.
    pub(crate) fn attach_config(
        &self,
        uid: &str,
        index: usize,
        net: &ResolvedNetwork,
        address: Ipv4Addr,
    ) -> AttachConfig {
        AttachConfig {
            netns: self.netns_name(uid),
            bridge: net.bridge.clone(),
            host_ifname: self.driver.host_veth_name(uid, index),
            alias: link_alias(&self.instance, uid),
            ifname: format!("eth{index}"),
            address,
            prefix: net.subnet.prefix,
            gateway: (index == 0).then_some(net.gateway),
            mtu: net.mtu,
        }
    }

    pub(crate) async fn check(&self, cfg: &AttachConfig) -> Result<Option<String>, AttachError> {
        let obs = self
            .driver
            .inspect_attachment(cfg)
            .await
            .map_err(NetworkError::driver("inspect attachment", &cfg.host_ifname))?;
        Ok(obs.problem(cfg))
    }

    pub(crate) async fn attach(&self, cfg: &AttachConfig) -> Result<(), AttachError> {
        self.driver
            .attach(cfg)
            .await
            .map_err(NetworkError::driver("attach", &cfg.host_ifname))?;
        Ok(())
    }
}

pub(crate) fn owner_filter(uid: &str) -> LeaseFilter {
    LeaseFilter {
        network_uid: None,
        owner_uid: Some(uid.to_string()),
    }
}

pub(crate) async fn repaired(ctx: &Context, obj: &AnyObject, problem: &str) {
    ctx.drift_repaired();
    ctx.event(
        obj,
        EventType::Warning,
        "DriftRepaired",
        format!("network attachment repaired: {problem}"),
    )
    .await;
}

pub(crate) fn container_parts(
    c: &AnyObject,
) -> Result<(String, ContainerSpec, ContainerStatus), AttachError> {
    let invalid = |message: String| AttachError::Invalid {
        container: c.metadata.name.clone(),
        message,
    };
    let uid = c
        .metadata
        .uid
        .clone()
        .ok_or_else(|| invalid("has no uid (not stored yet)".into()))?;
    let t = c
        .typed::<ContainerSpec, ContainerStatus>()
        .map_err(|e| invalid(e.to_string()))?;
    Ok((uid, t.spec, t.status))
}

/// Whether any stored Container still has this uid (the index may lag a fresh create).
pub(crate) async fn owner_exists(ctx: &Context, uid: &str) -> Result<bool, StoreError> {
    let q = tend_schema::store::ListQuery {
        kind: Some(Kind::Container),
        ..Default::default()
    };
    let list = ctx.store.list(&q).await?;
    Ok(list
        .items
        .iter()
        .any(|o| o.metadata.uid.as_deref() == Some(uid)))
}

/// Resolves a Network for attaching; `WaitingForNetwork` unless it exists and is Ready.
pub async fn resolve_ready(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<ResolvedNetwork, AttachError> {
    let waiting = |why: String| AttachError::WaitingForNetwork {
        network: name.to_string(),
        why,
    };
    let key = ObjectKey::new(Kind::Network, namespace, name);
    let obj = ctx
        .get(&key)
        .await?
        .ok_or_else(|| waiting("not found".into()))?;
    if obj.metadata.is_terminating() {
        return Err(waiting("it is being deleted".into()));
    }
    let t = obj
        .typed::<NetworkSpec, NetworkStatus>()
        .map_err(|e| waiting(e.to_string()))?;
    if !t.status.common.is_ready(obj.metadata.generation) {
        let why = t
            .status
            .common
            .condition("Ready")
            .map(|c| format!("not Ready ({}: {})", c.reason, c.message))
            .unwrap_or_else(|| "not Ready yet".into());
        return Err(waiting(why));
    }
    resolve(&obj, &t.spec, t.status.bridge.as_deref()).map_err(waiting)
}

/// A Network's attach parameters from its spec (bridge from status, or derived by the caller).
pub(crate) fn resolve(
    obj: &AnyObject,
    spec: &NetworkSpec,
    bridge: Option<&str>,
) -> Result<ResolvedNetwork, String> {
    Ok(ResolvedNetwork {
        name: obj.metadata.name.clone(),
        uid: obj.metadata.uid.clone().unwrap_or_default(),
        bridge: bridge.ok_or("has no bridge yet")?.to_string(),
        subnet: spec.subnet()?,
        gateway: spec.gateway()?,
        mtu: spec.mtu(),
    })
}
