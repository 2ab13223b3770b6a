//! The Network reconciler and the attachment component against the fake driver.

use super::fake::FakeDriver;
use super::*;
use crate::metrics::ControllerMetrics;
use serde_json::json;
use tend_schema::store::{DeleteOptions, OpenOptions, SqliteStore};

struct Setup {
    ctx: Context,
    driver: Arc<FakeDriver>,
    attacher: Arc<Attacher>,
    rec: NetworkReconciler,
    repairer: AttachmentReconciler,
    _dir: tempfile::TempDir,
}

/// The Network reconciler with the trigger of an attachment repairer (whose queue nobody
/// drains here: tests call the repairer themselves).
fn reconcilers(
    store: Arc<dyn tend_schema::store::Store>,
    attacher: &Arc<Attacher>,
) -> (NetworkReconciler, AttachmentReconciler) {
    let repairer = AttachmentReconciler::new(attacher.clone(), Duration::from_secs(60));
    let cfg = crate::RuntimeConfig {
        garbage_collection: false,
        ..Default::default()
    };
    let mut rt = crate::Runtime::new(store, cfg);
    let trigger = rt.register(
        Arc::new(AttachmentReconciler::new(attacher.clone(), Duration::ZERO)),
        Default::default(),
    );
    (NetworkReconciler::new(attacher.clone(), trigger), repairer)
}

/// A context over a fresh store in `dir`.
async fn context(dir: &std::path::Path) -> Context {
    let store = SqliteStore::open(dir.join("t.db"), OpenOptions::default())
        .await
        .unwrap();
    Context {
        store: Arc::new(store),
        index: Arc::new(Index::new()),
        metrics: Arc::new(ControllerMetrics::default()),
    }
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path()).await;
    let driver = Arc::new(FakeDriver::new());
    let attacher = Arc::new(Attacher::new(driver.clone(), "abcd0123"));
    let (rec, repairer) = reconcilers(ctx.store.clone(), &attacher);
    Setup {
        ctx,
        driver,
        attacher,
        rec,
        repairer,
        _dir: dir,
    }
}

impl Setup {
    async fn create(&self, kind: Kind, name: &str, spec: serde_json::Value) -> AnyObject {
        let o = self
            .ctx
            .store
            .create(AnyObject::new(kind, "default", name, spec))
            .await
            .unwrap();
        self.ctx.index.upsert(&o);
        o
    }

    async fn reconcile(&self, name: &str) -> NetworkStatus {
        let key = ObjectKey::new(Kind::Network, "default", name);
        self.rec.reconcile(&self.ctx, &key).await.unwrap();
        match self.ctx.get(&key).await.unwrap() {
            Some(o) => o.typed::<NetworkSpec, NetworkStatus>().unwrap().status,
            None => NetworkStatus::default(),
        }
    }
}

/// A Container spec on network `n`.
fn on_network_n() -> serde_json::Value {
    json!({"command": ["x"], "networks": [{"name": "n"}]})
}

fn reason(s: &NetworkStatus) -> String {
    s.common.condition("Ready").unwrap().reason.clone()
}

#[tokio::test]
async fn bridge_is_made_with_alias_and_overlaps_are_refused() {
    let s = setup().await;
    let n = s
        .create(Kind::Network, "a", json!({"subnet": "10.8.0.0/24"}))
        .await;
    let st = s.reconcile("a").await;
    assert_eq!(reason(&st), "BridgeReady");
    let bridge = st.bridge.unwrap();
    let b = s.driver.with(|h| h.bridges[&bridge].clone());
    let uid = n.metadata.uid.unwrap();
    assert_eq!(b.alias.unwrap(), format!("tend:abcd0123:{uid}"));
    assert_eq!(b.addresses, vec![("10.8.0.1".parse().unwrap(), 24)]);
    s.create(Kind::Network, "b", json!({"subnet": "10.8.0.0/16"}))
        .await;
    let st = s.reconcile("b").await;
    assert_eq!(reason(&st), "SubnetOverlap");
    assert!(st
        .common
        .condition("Ready")
        .unwrap()
        .message
        .contains("network/default/a"));
    s.driver
        .with(|h| h.routes.push(("10.9.0.0".parse().unwrap(), 16)));
    s.create(Kind::Network, "c", json!({"subnet": "10.9.1.0/24"}))
        .await;
    assert_eq!(reason(&s.reconcile("c").await), "SubnetOverlap");
    // A down bridge is drift: repaired and counted.
    s.driver
        .with(|h| h.bridges.get_mut(&bridge).unwrap().up = false);
    s.reconcile("a").await;
    assert!(s.driver.with(|h| h.bridges[&bridge].up));
    assert_eq!(s.ctx.metrics.drift_repairs.get(), 1);
}

#[tokio::test]
async fn attachments_wait_lease_repair_and_protect_the_network() {
    let s = setup().await;
    s.create(Kind::Network, "n", json!({"subnet": "10.8.0.0/24"}))
        .await;
    let c = s.create(Kind::Container, "c", on_network_n()).await;
    let err = s.attacher.ensure_attachments(&s.ctx, &c).await.unwrap_err();
    assert_eq!(err.reason(), "WaitingForNetwork");
    s.reconcile("n").await;
    let entries = s.attacher.ensure_attachments(&s.ctx, &c).await.unwrap();
    assert_eq!(
        (entries[0].interface.as_str(), entries[0].ip.as_str()),
        ("eth0", "10.8.0.2")
    );
    let uid = c.metadata.uid.clone().unwrap();
    assert!(s
        .driver
        .with(|h| h.netns.contains(&format!("tend-abcd0123-{uid}"))));
    // The veth vanishes: the attachment repairer puts it back with the same address.
    let veth = s.driver.host_veth_name(&uid, 0);
    s.driver.with(|h| h.attachments.remove(&veth));
    s.repairer
        .reconcile(&s.ctx, &c.key().unwrap())
        .await
        .unwrap();
    let addr = s.driver.with(|h| h.attachments[&veth].0.address);
    assert_eq!(addr.to_string(), "10.8.0.2");
    assert_eq!(s.ctx.metrics.drift_repairs.get(), 1);
    let st = s.reconcile("n").await;
    assert_eq!(st.leases, 1);
    // Deleting the Network while used: Terminating, InUse, bridge kept.
    let key = ObjectKey::new(Kind::Network, "default", "n");
    s.ctx
        .store
        .delete(&key, &DeleteOptions::default())
        .await
        .unwrap();
    let st = s.reconcile("n").await;
    assert_eq!(reason(&st), "InUse");
    assert_eq!(st.common.phase.as_deref(), Some("Terminating"));
    // The user goes: the bridge goes, and so does the row.
    s.attacher.remove_attachments(&s.ctx, &c).await.unwrap();
    let ckey = c.key().unwrap();
    s.ctx
        .store
        .delete(&ckey, &DeleteOptions::default())
        .await
        .unwrap();
    s.ctx.index.remove(&ckey);
    s.reconcile("n").await;
    assert!(s.ctx.get(&key).await.unwrap().is_none());
    assert!(s
        .driver
        .with(|h| h.bridges.is_empty() && h.netns.is_empty()));
}

#[tokio::test]
async fn monitor_events_map_to_their_objects() {
    let driver = Arc::new(FakeDriver::new());
    let attacher = Arc::new(Attacher::new(driver.clone(), "abcd0123"));
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("t.db"), OpenOptions::default())
        .await
        .unwrap();
    let (rec, _) = reconcilers(Arc::new(store), &attacher);
    let index = Index::new();
    let mut n = AnyObject::new(
        Kind::Network,
        "default",
        "n",
        json!({"subnet": "10.8.0.0/24"}),
    );
    n.metadata.uid = Some("11111111-2222".into());
    let mut c = AnyObject::new(Kind::Container, "default", "c", on_network_n());
    c.metadata.uid = Some("33333333-4444".into());
    index.upsert(&n);
    index.upsert(&c);
    let bridge = driver.bridge_name("11111111-2222");
    assert_eq!(rec.keys_for_ifname(&index, &bridge), vec![n.key().unwrap()]);
    let veth = driver.host_veth_name("33333333-4444", 0);
    assert_eq!(rec.keys_for_ifname(&index, &veth), vec![c.key().unwrap()]);
    assert!(rec.keys_for_ifname(&index, "eth0").is_empty());
}

#[tokio::test]
async fn repairs_look_inside_only_when_due_or_after_a_bridge_rebuild() {
    let s = setup().await;
    s.create(Kind::Network, "n", json!({"subnet": "10.8.0.0/24"}))
        .await;
    let bridge = s.reconcile("n").await.bridge.unwrap();
    let c = s.create(Kind::Container, "c", on_network_n()).await;
    s.attacher.ensure_attachments(&s.ctx, &c).await.unwrap();
    let veth = s
        .driver
        .host_veth_name(c.metadata.uid.as_deref().unwrap(), 0);
    let ckey = c.key().unwrap();
    // The first repair pass looks inside the namespace; all is well.
    s.repairer.reconcile(&s.ctx, &ckey).await.unwrap();
    assert_eq!(s.ctx.metrics.drift_repairs.get(), 0);
    // An address lost inside the namespace is not seen by the host-side check (the monitor
    // only sees the host) until the next inspection is due.
    s.driver
        .with(|h| h.attachments.get_mut(&veth).unwrap().1.addresses.clear());
    s.repairer.reconcile(&s.ctx, &ckey).await.unwrap();
    assert!(s
        .driver
        .with(|h| h.attachments[&veth].1.addresses.is_empty()));
    // The namespace's name goes (`ip netns del`; the inotify watch wakes the repairer): seen
    // without looking inside, and the attachment is made whole again.
    let netns = s.attacher.netns_name(c.metadata.uid.as_deref().unwrap());
    s.driver.with(|h| h.netns.remove(&netns));
    s.repairer.reconcile(&s.ctx, &ckey).await.unwrap();
    assert!(s.driver.with(|h| h.netns.contains(&netns)));
    assert!(!s
        .driver
        .with(|h| h.attachments[&veth].1.addresses.is_empty()));
    // The bridge goes (its ports lose their master): the Network remakes it and hands the
    // attachment to the repairer for a full inspection, which fixes both.
    s.driver.with(|h| {
        h.bridges.remove(&bridge);
        h.attachments.get_mut(&veth).unwrap().1.master = None;
    });
    s.reconcile("n").await;
    s.repairer.reconcile(&s.ctx, &ckey).await.unwrap();
    let (master, addrs) = s.driver.with(|h| {
        let o = &h.attachments[&veth].1;
        (o.master.clone(), o.addresses.clone())
    });
    assert_eq!(master.as_deref(), Some(bridge.as_str()));
    assert_eq!(addrs, vec![("10.8.0.2".parse().unwrap(), 24)]);
    assert_eq!(s.ctx.metrics.drift_repairs.get(), 3); // the namespace, the bridge, the veth
                                                      // A new subnet: the bridge is re-addressed and the repairer re-leases and re-addresses.
    let nkey = ObjectKey::new(Kind::Network, "default", "n");
    let mut n = s.ctx.store.get(&nkey).await.unwrap();
    n.spec = json!({"subnet": "10.9.0.0/24"});
    s.ctx.store.update(n).await.unwrap();
    s.reconcile("n").await;
    s.repairer.reconcile(&s.ctx, &ckey).await.unwrap();
    let addrs = s.driver.with(|h| h.attachments[&veth].1.addresses.clone());
    assert_eq!(addrs, vec![("10.9.0.2".parse().unwrap(), 24)]);
    // A container that stops listing the network loses its lease at the Network's next pass.
    let mut c = s.ctx.store.get(&ckey).await.unwrap();
    c.spec = json!({"command": ["x"]});
    let c = s.ctx.store.update(c).await.unwrap();
    s.ctx.index.upsert(&c);
    assert_eq!(s.reconcile("n").await.leases, 0);
}

#[tokio::test]
async fn a_held_port_is_a_conflict_naming_the_holder_and_installs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path()).await;
    let ports = Arc::new(ports::RecordingPorts::default());
    let attacher =
        Arc::new(Attacher::new(Arc::new(FakeDriver::new()), "abcd0123").with_ports(ports.clone()));
    let (rec, _) = reconcilers(ctx.store.clone(), &attacher);
    let create = |name: &str, spec: serde_json::Value| {
        let ctx = ctx.clone();
        let name = name.to_string();
        async move {
            let o = ctx
                .store
                .create(AnyObject::new(Kind::Container, "default", &name, spec))
                .await
                .unwrap();
            ctx.index.upsert(&o);
            o
        }
    };
    let n = ctx
        .store
        .create(AnyObject::new(
            Kind::Network,
            "default",
            "n",
            json!({"subnet": "10.8.0.0/24"}),
        ))
        .await
        .unwrap();
    ctx.index.upsert(&n);
    rec.reconcile(&ctx, &ObjectKey::new(Kind::Network, "default", "n"))
        .await
        .unwrap();
    let spec = |port: u32, ip: &str| {
        json!({"command": ["/bin/true"], "networks": [{"name": "n"}],
               "ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip}]})
    };
    let a = create("a", spec(8080, "0.0.0.0")).await;
    attacher.ensure_attachments(&ctx, &a).await.unwrap();
    let a_uid = a.metadata.uid.clone().unwrap();
    let rules = ports.published.lock().unwrap()[&a_uid].clone();
    assert_eq!(
        rules[0].address,
        "10.8.0.2".parse::<std::net::Ipv4Addr>().unwrap()
    );

    // 127.0.0.1:8080 overlaps 0.0.0.0:8080: b waits, names a, and has nothing installed.
    let b = create("b", spec(8080, "127.0.0.1")).await;
    let err = attacher.ensure_attachments(&ctx, &b).await.unwrap_err();
    assert_eq!(err.reason(), "PortConflict");
    assert!(err.is_waiting());
    assert!(err.to_string().contains("default/a"), "{err}");
    let b_uid = b.metadata.uid.clone().unwrap();
    assert!(!ports.published.lock().unwrap().contains_key(&b_uid));

    // Another port is fine; once a is gone, b gets 8080.
    let c = create("c", spec(8081, "127.0.0.1")).await;
    attacher.ensure_attachments(&ctx, &c).await.unwrap();
    attacher.remove_attachments(&ctx, &a).await.unwrap();
    assert!(!ports.published.lock().unwrap().contains_key(&a_uid));
    attacher.ensure_attachments(&ctx, &b).await.unwrap();
    assert!(ports.published.lock().unwrap().contains_key(&b_uid));
}
