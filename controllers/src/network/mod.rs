//! The Network controller: a bridge per Network (gateway address, MTU, up, instance alias),
//! subnet overlap checks, lease bookkeeping, repair of drifted attachments, in-use protection
//! on deletion, and the start-up orphan sweep.

pub mod attach;
pub mod driver;
pub mod fake;
pub mod ports;
mod repair;
mod sweep;
#[cfg(test)]
mod tests;

pub use attach::{link_alias, parse_alias, AttachError, Attacher, ResolvedNetwork};
pub use driver::{
    AttachConfig, AttachObserved, BridgeConfig, BridgeObserved, HostLink, NetworkDriver,
};
pub use ports::{PortDriver, PortRule};
pub use repair::AttachmentReconciler;

use crate::action::{Action, Error};
use crate::context::Context;
use crate::controller::Reconciler;
use crate::finalizer::{self, Cleanup, Event};
use crate::index::Index;
use crate::runtime::Trigger;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tend_schema::kinds::network::Subnet;
use tend_schema::kinds::{NetworkSpec, NetworkStatus};
use tend_schema::store::{EventType, LeaseFilter, ListQuery, StoreError};
use tend_schema::{AnyObject, ConditionStatus, Kind, ObjectKey};

/// The finalizer the Network controller puts on every Network.
pub const FINALIZER: &str = "tend.dev/network";

/// What the Network controller failed to do, with the object or operation involved.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A host operation failed.
    #[error("{op} {object}: {source}")]
    Driver {
        op: &'static str,
        object: String,
        #[source]
        source: Error,
    },
    /// The stored object does not read as a Network.
    #[error("network {network}: {message}")]
    Invalid { network: String, message: String },
}

impl NetworkError {
    pub(crate) fn driver(op: &'static str, object: &str) -> impl FnOnce(Error) -> Self {
        let object = object.to_string();
        move |source| NetworkError::Driver { op, object, source }
    }
}

/// The reconciler. Shares its [`Attacher`] with the Container controller; repairs of single
/// attachments are the [`AttachmentReconciler`]'s, woken through `attachments`.
pub struct NetworkReconciler {
    attacher: Arc<Attacher>,
    attachments: Trigger,
}

impl NetworkReconciler {
    pub fn new(attacher: Arc<Attacher>, attachments: Trigger) -> Self {
        Self {
            attacher,
            attachments,
        }
    }

    fn driver(&self) -> &dyn NetworkDriver {
        &*self.attacher.driver
    }

    /// The keys a netlink event on `ifname` concerns: the Network of a bridge, or the Container
    /// with that host veth (for the [`AttachmentReconciler`]). The monitor wakes them.
    pub fn keys_for_ifname(&self, index: &Index, ifname: &str) -> Vec<ObjectKey> {
        let d = self.driver();
        if ifname.starts_with("tnd-") {
            return index
                .keys(Kind::Network)
                .into_iter()
                .filter(|k| {
                    index
                        .get(k)
                        .is_some_and(|e| d.bridge_name(&e.uid) == ifname)
                })
                .collect();
        }
        if !ifname.starts_with("tnv-") || ifname.len() < 2 {
            return vec![];
        }
        let stem = &ifname[..ifname.len() - 1];
        let mut out = Vec::new();
        for k in index.keys(Kind::Container) {
            let Some(e) = index.get(&k) else { continue };
            let own = d.host_veth_name(&e.uid, 0);
            if own[..own.len() - 1] == *stem {
                out.push(k);
            }
        }
        out
    }

    async fn apply(&self, ctx: &Context, obj: AnyObject) -> Result<Action, Error> {
        let t = obj
            .typed::<NetworkSpec, NetworkStatus>()
            .map_err(|e| invalid(&obj, e.to_string()))?;
        let generation = obj.metadata.generation;
        let uid = obj.metadata.uid.clone().unwrap_or_default();
        // Published ports are checked (and put back) at every Network resync too.
        match self.attacher.verify_ports().await {
            Ok(Some(problem)) => {
                tracing::info!(%problem, "published-port rules repaired");
                ctx.drift_repaired();
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "checking published-port rules"),
        }
        let spec_changed = t.status.common.observed_generation != generation;
        let mut status = t.status.clone();
        let mut rebuilt = spec_changed;
        status.common.observed_generation = generation;
        let (subnet, gateway) = match t.spec.subnet().and_then(|s| Ok((s, t.spec.gateway()?))) {
            Ok(v) => v,
            Err(m) => {
                return self
                    .refuse(ctx, &obj, status, "InvalidSpec", &m, None)
                    .await
            }
        };
        if let Some(other) = overlapping_network(ctx, &obj, &subnet).await? {
            let m = format!("subnet {} overlaps {other}", t.spec.subnet);
            return self
                .refuse(ctx, &obj, status, "SubnetOverlap", &m, Some(10))
                .await;
        }
        let d = self.driver();
        // A Network that holds its subnet (Ready at this generation) keeps it: a host route
        // added later does not evict it, as a later Network would not. This also spares the
        // link and route dumps on every wake of a busy Network.
        let route = match t.status.common.is_ready(generation) {
            true => None,
            false => d
                .route_overlap(subnet.network, subnet.prefix)
                .await
                .map_err(NetworkError::driver(
                    "check host routes for",
                    &t.spec.subnet,
                ))?,
        };
        if let Some(r) = route {
            let m = format!("subnet {} overlaps host route {r}", t.spec.subnet);
            return self
                .refuse(ctx, &obj, status, "SubnetOverlap", &m, Some(30))
                .await;
        }
        let want = BridgeConfig {
            name: d.bridge_name(&uid),
            alias: link_alias(&self.attacher.instance, &uid),
            gateway,
            prefix: subnet.prefix,
            mtu: t.spec.mtu(),
        };
        let seen = d
            .inspect_bridge(&want.name)
            .await
            .map_err(NetworkError::driver("inspect bridge", &want.name))?;
        if let Some(problem) = bridge_problem(seen.as_ref(), &want) {
            d.ensure_bridge(&want)
                .await
                .map_err(NetworkError::driver("ensure bridge", &want.name))?;
            rebuilt = true;
            if status.bridge.is_some() && !spec_changed {
                ctx.drift_repaired();
                let msg = format!("bridge {} repaired: {problem}", want.name);
                ctx.event(&obj, EventType::Warning, "DriftRepaired", msg)
                    .await;
            }
        }
        status.bridge = Some(want.name.clone());
        let net = attach::resolve(&obj, &t.spec, Some(&want.name)).map_err(|m| invalid(&obj, m))?;
        status.leases = self.sweep_leases(ctx, &net, rebuilt).await?;
        status.common.phase = Some("Ready".into());
        let msg = format!(
            "bridge {} up with {gateway}/{}, {} lease(s)",
            want.name, subnet.prefix, status.leases
        );
        status.common.set_condition(
            "Ready",
            ConditionStatus::True,
            "BridgeReady",
            &msg,
            generation,
        );
        ctx.write_status(&obj, &status).await?;
        Ok(Action::await_change())
    }

    /// Releases the leases of containers that are gone or no longer list the network and
    /// returns how many are left. When the bridge was (re)made or the spec changed, every
    /// holder's attachments are handed to the [`AttachmentReconciler`] for a full inspection
    /// (ports of a deleted bridge lose their master; a new subnet means new addresses).
    async fn sweep_leases(
        &self,
        ctx: &Context,
        net: &ResolvedNetwork,
        rebuilt: bool,
    ) -> Result<u32, Error> {
        let leases = ctx.store.list_leases(&network_filter(&net.uid)).await?;
        let mut kept = 0;
        for l in &leases {
            let holder = match lease_holder(ctx, &l.owner_uid, net).await? {
                Holder::Stale => {
                    ctx.store
                        .release_leases(&l.owner_uid, Some(&net.uid))
                        .await?;
                    continue;
                }
                Holder::Known(k) => Some(k),
                Holder::NotIndexedYet => None,
            };
            kept += 1;
            if rebuilt {
                self.attacher.forget_inspection(&l.owner_uid);
                holder.into_iter().for_each(|k| self.attachments.key(k));
            }
        }
        Ok(kept)
    }

    /// Writes `Ready=False` with `reason` and looks again after `retry` seconds (overlaps clear
    /// up when the other side goes, which does not wake this Network).
    async fn refuse(
        &self,
        ctx: &Context,
        obj: &AnyObject,
        mut status: NetworkStatus,
        reason: &str,
        message: &str,
        retry: Option<u64>,
    ) -> Result<Action, Error> {
        let g = obj.metadata.generation;
        status.common.phase = Some("Pending".into());
        let flipped =
            status
                .common
                .set_condition("Ready", ConditionStatus::False, reason, message, g);
        ctx.write_status(obj, &status).await?;
        if flipped {
            ctx.event(obj, EventType::Warning, reason, message).await;
        }
        Ok(retry.map_or(Action::await_change(), |s| {
            Action::requeue(Duration::from_secs(s))
        }))
    }

    async fn cleanup(&self, ctx: &Context, obj: AnyObject) -> Result<Cleanup, Error> {
        let key = obj.key().map_err(|e| invalid(&obj, e.to_string()))?;
        let uid = obj.metadata.uid.clone().unwrap_or_default();
        let users = finalizer::users(ctx, &key);
        if !users.is_empty() {
            let mut status: NetworkStatus = obj
                .typed::<NetworkSpec, NetworkStatus>()
                .map(|t| t.status)
                .unwrap_or_default();
            let names: Vec<String> = users.iter().map(|k| k.to_string()).collect();
            let msg = format!("in use by {}", names.join(", "));
            status.common.phase = Some("Terminating".into());
            let g = obj.metadata.generation;
            status
                .common
                .set_condition("Ready", ConditionStatus::False, "InUse", &msg, g);
            ctx.write_status(&obj, &status).await?;
            return Ok(Cleanup::Wait(Action::await_change()));
        }
        let bridge = self.driver().bridge_name(&uid);
        self.driver()
            .delete_link(&bridge)
            .await
            .map_err(NetworkError::driver("delete bridge", &bridge))?;
        ctx.store.release_network_leases(&uid).await?;
        Ok(Cleanup::Done)
    }
}

#[async_trait]
impl Reconciler for NetworkReconciler {
    fn kind(&self) -> Kind {
        Kind::Network
    }

    async fn observe(&self, ctx: &Context) -> Result<(), Error> {
        sweep::sweep_orphans(ctx, &self.attacher).await
    }

    async fn reconcile(&self, ctx: &Context, key: &ObjectKey) -> Result<Action, Error> {
        finalizer::finalizer(ctx, FINALIZER, key, |ev| async move {
            match ev {
                Event::Apply(obj) => self.apply(ctx, obj).await.map(Into::into),
                Event::Cleanup(obj) => self.cleanup(ctx, obj).await.map(Into::into),
            }
        })
        .await
    }
}

fn invalid(obj: &AnyObject, message: String) -> NetworkError {
    NetworkError::Invalid {
        network: obj.metadata.name.clone(),
        message,
    }
}

/// Who holds a lease.
enum Holder {
    /// The Container is gone or no longer lists the network: release the lease.
    Stale,
    Known(ObjectKey),
    /// A stored Container the index has not seen yet (a fresh create): keep the lease.
    NotIndexedYet,
}

/// The Container holding a lease on `net`. The index answers for the common case; the store
/// decides when the index says no (it may lag a fresh create or update).
async fn lease_holder(
    ctx: &Context,
    owner_uid: &str,
    net: &ResolvedNetwork,
) -> Result<Holder, StoreError> {
    let key = ctx.index.key_of_uid(owner_uid);
    let lists = |refs: &[ObjectKey], ns: &str| {
        refs.iter()
            .any(|r| r.kind == Kind::Network && r.name == net.name && r.namespace == ns)
    };
    if let Some(k) = &key {
        if ctx
            .index
            .get(k)
            .is_some_and(|e| lists(&e.refs, &k.namespace))
        {
            return Ok(Holder::Known(k.clone()));
        }
    }
    let obj = match &key {
        Some(k) => ctx.get(k).await?,
        None => None,
    };
    let Some(obj) = obj.filter(|o| o.metadata.uid.as_deref() == Some(owner_uid)) else {
        return Ok(match attach::owner_exists(ctx, owner_uid).await? {
            true => Holder::NotIndexedYet,
            false => Holder::Stale,
        });
    };
    let listed = obj
        .spec
        .get("networks")
        .and_then(|n| n.as_array())
        .is_some_and(|a| a.iter().any(|n| n["name"] == net.name.as_str()));
    Ok(match obj.key() {
        Ok(k) if listed => Holder::Known(k),
        _ => Holder::Stale,
    })
}

fn network_filter(uid: &str) -> LeaseFilter {
    LeaseFilter {
        network_uid: Some(uid.to_string()),
        owner_uid: None,
    }
}

/// What is wrong with the bridge, if anything.
fn bridge_problem(seen: Option<&BridgeObserved>, want: &BridgeConfig) -> Option<String> {
    let Some(b) = seen else {
        return Some("missing".into());
    };
    if !b.up {
        Some("down".into())
    } else if b.mtu != want.mtu {
        Some(format!("MTU {} instead of {}", b.mtu, want.mtu))
    } else if b.addresses != [(want.gateway, want.prefix)] {
        Some(format!("addresses {:?}", b.addresses))
    } else if b.alias.as_deref() != Some(want.alias.as_str()) {
        Some("alias missing".into())
    } else {
        None
    }
}

/// Another Network (in any namespace) whose subnet overlaps and that has precedence: one that
/// is Ready (it holds the subnet) over one that is not; otherwise the one created earlier
/// (ties broken by uid). So the first one keeps its subnet and later ones are refused.
async fn overlapping_network(
    ctx: &Context,
    obj: &AnyObject,
    subnet: &Subnet,
) -> Result<Option<String>, StoreError> {
    let q = ListQuery {
        kind: Some(Kind::Network),
        ..Default::default()
    };
    let holds = |o: &AnyObject| {
        o.typed::<NetworkSpec, NetworkStatus>()
            .is_ok_and(|t| t.status.common.is_ready(0))
    };
    let rank = |o: &AnyObject| {
        (
            !holds(o),
            o.metadata.creation_timestamp,
            o.metadata.uid.clone(),
        )
    };
    let mine = rank(obj);
    for other in ctx.store.list(&q).await?.items {
        if other.metadata.uid == obj.metadata.uid || other.metadata.is_terminating() {
            continue;
        }
        let Some(s) = other.spec.get("subnet").and_then(|s| s.as_str()) else {
            continue;
        };
        let Ok(theirs) = Subnet::parse(s) else {
            continue;
        };
        if theirs.overlaps(subnet) && rank(&other) < mine {
            // Subnets are host-wide, but names are not: a Network in another namespace is not
            // named, so a namespace-limited token learns nothing about other namespaces.
            if other.metadata.namespace != obj.metadata.namespace {
                return Ok(Some("a Network in another namespace".into()));
            }
            let k = other.key().map(|k| k.to_string()).unwrap_or_default();
            return Ok(Some(format!("{k} ({s})")));
        }
    }
    Ok(None)
}
