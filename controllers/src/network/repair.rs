//! The attachment repairer: a second controller on Containers that keeps each container's
//! network attachments whole, one container at a time. The netlink monitor wakes it for the
//! container whose veth was deleted, downed or lost its address, so a repair costs one
//! container's checks however many attachments the Network has. It also runs at start-up and
//! on resync (then looking inside the namespace too), and when a Network rebuilt its bridge.
//!
//! It never makes a first attachment: that is the Container controller's (through
//! [`Attacher::ensure_attachments`]). It repairs what holds a lease.

use super::attach::{
    container_parts, owner_filter, repaired, resolve_ready, AttachError, Attacher,
};
use crate::action::{Action, Error};
use crate::context::Context;
use crate::controller::Reconciler;
use crate::index::Index;
use crate::informer::Change;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tend_schema::{AnyObject, Kind, ObjectKey};

use super::driver::AttachConfig;
use super::NetworkError;

/// The reconciler; registered beside the Container controller under its own name.
pub struct AttachmentReconciler {
    attacher: Arc<Attacher>,
    /// How often the inside of a container's namespace is inspected; the netlink monitor
    /// only sees the host ends, which every reconcile checks.
    inspect_every: Duration,
}

impl AttachmentReconciler {
    pub fn new(attacher: Arc<Attacher>, inspect_every: Duration) -> Self {
        Self {
            attacher,
            inspect_every,
        }
    }
}

#[async_trait]
impl Reconciler for AttachmentReconciler {
    fn kind(&self) -> Kind {
        Kind::Container
    }

    fn name(&self) -> String {
        "network-attachments".into()
    }

    /// Store changes are the Container controller's business; this one is woken by the
    /// netlink monitor, by Networks, at start-up and on resync.
    fn triggers(&self, _change: &Change, _index: &Index) -> Vec<ObjectKey> {
        vec![]
    }

    async fn reconcile(&self, ctx: &Context, key: &ObjectKey) -> Result<Action, Error> {
        let Some(obj) = ctx.get(key).await? else {
            return Ok(Action::await_change());
        };
        if obj.metadata.is_terminating() {
            return Ok(Action::await_change());
        }
        let uid = obj.metadata.uid.clone().unwrap_or_default();
        let deep = self.attacher.inspection_due(&uid, self.inspect_every);
        self.attacher.repair(ctx, &obj, deep).await?;
        if deep {
            self.attacher.mark_inspected(&uid);
        }
        Ok(Action::await_change())
    }
}

impl Attacher {
    /// Checks the attachments `container` holds leases for and repairs those that drifted,
    /// returning what was wrong with each. The host ends are checked one link at a time;
    /// with `deep` the inside of the namespace (peer, address, route) is inspected too.
    /// A listed Network that is not Ready is skipped: its own controller reports that.
    ///
    /// # Errors
    /// Store and driver failures; the runtime retries with backoff.
    pub async fn repair(
        &self,
        ctx: &Context,
        container: &AnyObject,
        deep: bool,
    ) -> Result<Vec<String>, AttachError> {
        let (uid, spec, status) = container_parts(container)?;
        if spec.networks.is_empty() {
            return Ok(vec![]);
        }
        let _guard = self.lock(&uid).await;
        let leases = ctx.store.list_leases(&owner_filter(&uid)).await?;
        let mut problems = Vec::new();
        for (i, n) in spec.networks.iter().enumerate() {
            let Ok(net) = resolve_ready(ctx, container.metadata.ns(), &n.name).await else {
                continue;
            };
            let Some(lease) = leases.iter().find(|l| l.network_uid == net.uid) else {
                continue; // not attached yet: the Container controller makes it
            };
            // A lease outside a changed subnet (or on a new gateway) is re-leased; the store
            // gives the holder an address in the new subnet.
            let a = lease.address;
            let cfg = if net.subnet.is_host(a) && a != net.gateway {
                self.attach_config(&uid, i, &net, a)
            } else {
                self.config(ctx, &uid, i, &net, n.ip.as_deref()).await?
            };
            if !deep && self.host_side_whole(&cfg).await? {
                continue;
            }
            let obs = self
                .driver
                .inspect_attachment(&cfg)
                .await
                .map_err(NetworkError::driver("inspect attachment", &cfg.host_ifname))?;
            let Some(problem) = obs.problem(&cfg) else {
                continue;
            };
            // The name went but a running workload still holds its namespace: name that one
            // again (a fresh namespace under the old name would leave the workload cut off).
            let restored = match status.pid.filter(|_| !obs.netns_exists) {
                Some(pid) => self
                    .driver
                    .restore_netns(&cfg.netns, pid, &uid)
                    .await
                    .map_err(NetworkError::driver("restore netns", &cfg.netns))?,
                None => false,
            };
            if !restored || self.check(&cfg).await?.is_some() {
                self.driver
                    .create_netns(&cfg.netns)
                    .await
                    .map_err(NetworkError::driver("create netns", &cfg.netns))?;
                self.attach(&cfg).await?;
            }
            repaired(ctx, container, &problem).await;
            problems.push(problem);
        }
        Ok(problems)
    }

    /// What a netlink or namespace-name event can have broken: the host end (there, up, on
    /// the bridge) and the namespace's name.
    async fn host_side_whole(&self, cfg: &AttachConfig) -> Result<bool, AttachError> {
        let host = self
            .driver
            .host_link(&cfg.host_ifname)
            .await
            .map_err(NetworkError::driver("get link", &cfg.host_ifname))?;
        if !host.is_some_and(|l| l.up && l.master.as_deref() == Some(cfg.bridge.as_str())) {
            return Ok(false);
        }
        Ok(self
            .driver
            .netns_exists(&cfg.netns)
            .await
            .map_err(NetworkError::driver("look up netns", &cfg.netns))?)
    }

    /// Whether the inside of `uid`'s namespace is due for inspection.
    pub(crate) fn inspection_due(&self, uid: &str, every: Duration) -> bool {
        let last = self.inspected.lock().unwrap_or_else(|p| p.into_inner());
        last.get(uid).is_none_or(|t| t.elapsed() >= every)
    }

    pub(crate) fn mark_inspected(&self, uid: &str) {
        self.inspected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_string(), Instant::now());
    }

    /// Makes the next repair of `uid` look inside its namespace (its Network changed).
    pub(crate) fn forget_inspection(&self, uid: &str) {
        self.inspected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }
}
