//! Wiring of the Network side: the forwarding rule, the netlink driver, the Network reconciler,
//! the attachment repairer, and the tasks that turn link, address and netns-name events into
//! reconciles.

use std::sync::Arc;

use nix::sys::inotify::AddWatchFlags;
use tend_controllers::network::{
    parse_alias, Attacher, AttachmentReconciler, NetworkDriver, NetworkReconciler,
};
use tend_controllers::{Index, Runtime, Trigger};
use tend_schema::Kind;
use tokio::sync::broadcast::error::RecvError;

use super::DaemonConfig;
use crate::net::adapter::NetlinkNetworkDriver;
use crate::net::firewall::{self, Firewall, NftPorts};
use crate::net::{names, NetDriver, NetEvent, NetMonitor};
use crate::util::dirwatch::{DirEvent, DirWatch};

/// Registers the Network controller: tend's nftables table (forwarding, published ports), the netlink driver on
/// `/run/netns`, the Network reconciler, the attachment repairer (a second controller on
/// Containers), and the monitor that triggers both.
///
/// # Errors
/// When netlink cannot be opened or the monitor cannot start.
pub async fn register_network(
    runtime: &mut Runtime,
    cfg: &DaemonConfig,
) -> anyhow::Result<Arc<Attacher>> {
    let instance = cfg.instance.clone();
    let firewall = match crate::util::blocking(move || Firewall::start(&instance)).await {
        Ok(fw) => Some(Arc::new(fw)),
        Err(e) => {
            tracing::warn!(error = %e, "no nftables table: bridge forwarding rule and published ports unavailable");
            None
        }
    };
    let net = NetDriver::with_default_dir()?;
    let driver: Arc<dyn NetworkDriver> = Arc::new(NetlinkNetworkDriver::new(net.clone()));
    let mut attacher = Attacher::new(driver, cfg.instance.clone());
    if let Some(fw) = &firewall {
        attacher = attacher.with_ports(Arc::new(NftPorts(fw.clone())));
        match firewall::watch_ruleset() {
            Ok(changes) => {
                tokio::spawn(keep_table(changes, fw.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "no nftables events; the table is checked at resync")
            }
        }
    }
    let attacher = Arc::new(attacher);
    // Inside the namespaces is looked at on (nearly) every resync; the host ends on every wake.
    let inspect_every = cfg.controller.resync.mul_f64(0.9);
    let repairer = AttachmentReconciler::new(attacher.clone(), inspect_every);
    let attachments = runtime.register(Arc::new(repairer), cfg.controller.clone());
    let reconciler = Arc::new(NetworkReconciler::new(
        attacher.clone(),
        attachments.clone(),
    ));
    let networks = runtime.register(reconciler.clone(), cfg.controller.clone());
    attacher.notify_networks(networks.clone());
    let monitor = net.monitor(None).await?;
    net.prepare_netns_dir().await?;
    let netns = DirWatch::new(AddWatchFlags::IN_DELETE)?;
    netns.add(net.netns_dir())?;
    let prefix = attacher.netns_prefix();
    tokio::spawn(watch_netns(
        netns,
        prefix,
        runtime.index(),
        attachments.clone(),
    ));
    tokio::spawn(watch_links(
        monitor,
        reconciler,
        cfg.instance.clone(),
        runtime.index(),
        networks,
        attachments,
    ));
    Ok(attacher)
}

/// Puts tend's nftables table back whenever the ruleset changed and it no longer matches.
async fn keep_table(mut changes: tokio::sync::mpsc::Receiver<()>, fw: Arc<Firewall>) {
    while changes.recv().await.is_some() {
        let started = std::time::Instant::now();
        let fw = fw.clone();
        match crate::util::blocking(move || fw.verify_blocking()).await {
            Ok(Some(problem)) => tracing::info!(
                %problem,
                took_ms = started.elapsed().as_millis() as u64,
                "nftables table repaired"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "checking the nftables table"),
        }
    }
}

/// Turns link/address events on tend's interfaces into reconciles: a bridge's Network, a
/// veth's Container (for the attachment repairer), found by the link's alias; address events
/// (no alias) by name through the index. Lost events wake everything.
async fn watch_links(
    mut monitor: NetMonitor,
    reconciler: Arc<NetworkReconciler>,
    instance: String,
    index: Arc<Index>,
    networks: Trigger,
    attachments: Trigger,
) {
    let wake_all = || {
        index
            .keys(Kind::Network)
            .into_iter()
            .for_each(|k| networks.key(k));
        index
            .keys(Kind::Container)
            .into_iter()
            .for_each(|k| attachments.key(k));
    };
    loop {
        match monitor.recv().await {
            Ok(NetEvent::Overrun) => {
                tracing::warn!("the kernel dropped netlink events; checking every attachment");
                wake_all();
            }
            Ok(ev) => {
                if !names::is_tend_link(ev.ifname()) {
                    continue;
                }
                // A link names its owner in its alias (`tend:<instance>:<uid>`): no search.
                if let Some((inst, uid)) = ev.alias().and_then(parse_alias) {
                    if inst == instance {
                        networks.uid(uid);
                        attachments.uid(uid);
                    }
                    continue;
                }
                for k in reconciler.keys_for_ifname(&index, ev.ifname()) {
                    match k.kind {
                        Kind::Network => networks.key(k),
                        _ => attachments.key(k),
                    }
                }
            }
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    lost = n,
                    "netlink monitor lagged; checking every attachment"
                );
                wake_all();
            }
            Err(RecvError::Closed) => {
                tracing::error!("netlink monitor closed; drift is now found by resync only");
                return;
            }
        }
    }
}

/// Turns the deletion of one of this daemon's namespace names (`ip netns del`) into a repair
/// of its container: a running workload keeps the namespace alive, so no link event follows.
async fn watch_netns(w: DirWatch, prefix: String, index: Arc<Index>, attachments: Trigger) {
    w.for_each("netns names", |ev| match ev {
        DirEvent::Name { name, .. } => {
            if let Some(uid) = name.strip_prefix(&prefix) {
                attachments.uid(uid);
            }
        }
        DirEvent::Removed { .. } => {}
        DirEvent::Overflow => index
            .keys(Kind::Container)
            .into_iter()
            .for_each(|k| attachments.key(k)),
    })
    .await;
}
