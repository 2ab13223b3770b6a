//! Published ports: which Container holds which host socket (`hostIP:hostPort/protocol`), and
//! the seam to the host's NAT rules. A port is claimed before anything is installed, so the
//! second Container asking for a held socket gets `PortConflict` and no rule at all.

use crate::action::Error;
use crate::context::Context;
use async_trait::async_trait;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use tend_schema::kinds::container::{ContainerPort, ContainerSpec, ContainerStatus};
use tend_schema::store::{ListQuery, StoreError};
use tend_schema::Kind;

/// One forwarding as the host should have it: `host:host_port/protocol` → `address:container_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    pub port: ContainerPort,
    /// The parsed `hostIP` (`0.0.0.0`: every local address).
    pub host: Ipv4Addr,
    /// The container's leased address on its first network.
    pub address: Ipv4Addr,
    /// The bridge of that network (loopback and hairpin traffic leave through it).
    pub bridge: String,
}

/// The host side of published ports: one set of rules per container.
///
/// # Assumptions
/// Both changes are idempotent and atomic: after an error the host has the old rules or the
/// new ones, never part of them.
#[async_trait]
pub trait PortDriver: Send + Sync + 'static {
    /// Makes the host forward exactly `rules` for container `uid` (an empty list removes them).
    async fn publish(&self, uid: &str, rules: Vec<PortRule>) -> Result<(), Error>;
    /// Puts back what drifted (rules deleted or changed behind tend's back); returns what was
    /// wrong, `None` when the host already matched.
    async fn verify(&self) -> Result<Option<String>, Error>;
}

/// Who claimed which ports, in this daemon.
#[derive(Default)]
pub(crate) struct Claims {
    by_uid: Mutex<HashMap<String, (String, Vec<ContainerPort>)>>,
}

/// The Container that already holds one of `ports`, named for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub port: String,
    pub holder: String,
}

impl Claims {
    /// Claims `ports` for `uid` unless another Container holds an overlapping one: a Container
    /// whose `status.ports` lists it (installed, survives restarts), or one that claimed it
    /// earlier in this daemon. All or nothing.
    pub(crate) async fn claim(
        &self,
        ctx: &Context,
        uid: &str,
        name: &str,
        ports: &[ContainerPort],
    ) -> Result<Result<(), Conflict>, StoreError> {
        let installed = if ports.is_empty() {
            vec![]
        } else {
            installed_ports(ctx, uid).await?
        };
        let mut by_uid = self.by_uid.lock().unwrap_or_else(|p| p.into_inner());
        let claimed = by_uid
            .iter()
            .filter(|(u, _)| u.as_str() != uid)
            .flat_map(|(_, (n, ps))| ps.iter().map(move |p| (n.clone(), p.clone())));
        for (holder, held) in installed.into_iter().chain(claimed) {
            if let Some(p) = ports.iter().find(|p| p.overlaps(&held)) {
                return Ok(Err(Conflict {
                    port: p.describe(),
                    holder,
                }));
            }
        }
        by_uid.insert(uid.to_string(), (name.to_string(), ports.to_vec()));
        Ok(Ok(()))
    }

    pub(crate) fn release(&self, uid: &str) {
        self.by_uid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }
}

/// `(namespace/name, port)` of every port other live Containers have installed.
async fn installed_ports(
    ctx: &Context,
    uid: &str,
) -> Result<Vec<(String, ContainerPort)>, StoreError> {
    let q = ListQuery {
        kind: Some(Kind::Container),
        ..Default::default()
    };
    let list = ctx.store.list(&q).await?;
    let mut out = vec![];
    for o in &list.items {
        if o.metadata.uid.as_deref() == Some(uid) {
            continue;
        }
        let Ok(t) = o.typed::<ContainerSpec, ContainerStatus>() else {
            continue;
        };
        let name = format!("{}/{}", o.metadata.ns(), o.metadata.name);
        out.extend(t.status.ports.into_iter().map(|p| (name.clone(), p)));
    }
    Ok(out)
}

/// A [`PortDriver`] that records what each container has published, for unit tests.
#[derive(Default)]
pub struct RecordingPorts {
    pub published: Mutex<HashMap<String, Vec<PortRule>>>,
}

#[async_trait]
impl PortDriver for RecordingPorts {
    async fn publish(&self, uid: &str, rules: Vec<PortRule>) -> Result<(), Error> {
        let mut p = self.published.lock().unwrap_or_else(|p| p.into_inner());
        if rules.is_empty() {
            p.remove(uid);
        } else {
            p.insert(uid.to_string(), rules);
        }
        Ok(())
    }

    async fn verify(&self) -> Result<Option<String>, Error> {
        Ok(None)
    }
}
