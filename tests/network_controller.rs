//! Network controller against the real kernel: a daemon runtime in-process with the Network
//! controller, Containers' attachments made through the attachment component, traffic between
//! two namespaces, leases under concurrency, drift repair, restart, overlap and exhaustion.

mod common;

use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tend::daemon::network::register_network;
use tend::daemon::DaemonConfig;
use tend_controllers::metrics::ControllerMetrics;
use tend_controllers::network::Attacher;
use tend_controllers::{Context, ControllerConfig, Runtime, RuntimeConfig};
use tend_schema::kinds::container::NetworkStatusEntry;
use tend_schema::store::{
    DeleteOptions, LeaseError, LeaseFilter, LeaseRequest, OpenOptions, SqliteStore, Store,
    StoreError,
};
use tend_schema::{AnyObject, Kind, ObjectKey};

/// Removes what this test's daemon instance left on the host (through `ip`), even on panic.
struct HostGuard {
    instance: String,
    dummies: Vec<String>,
}

impl HostGuard {
    fn new(instance: &str) -> Self {
        Self {
            instance: instance.to_string(),
            dummies: vec![],
        }
    }
}

/// This instance's namespaces and links (by alias) still on the host.
fn leftovers(instance: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&format!("tend-{instance}-")))
                .collect()
        })
        .unwrap_or_default();
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&links.stdout).lines() {
        if line.contains(&format!("alias tend:{instance}:")) {
            let name = line.split(": ").nth(1).unwrap_or("");
            out.push(name.split('@').next().unwrap_or(name).to_string());
        }
    }
    out
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        for name in leftovers(&self.instance) {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            let _ = Command::new("ip").args(["link", "del", &name]).output();
        }
        for d in &self.dummies {
            let _ = Command::new("ip").args(["link", "del", d]).output();
        }
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A /24 in 10.220–249.n.0 distinct per test process and per test (`n`).
fn subnet(n: u8) -> (String, Ipv4Addr) {
    let second = 220 + (std::process::id() % 30) as u8;
    (
        format!("10.{second}.{n}.0/24"),
        Ipv4Addr::new(10, second, n, 0),
    )
}

struct TestDaemon {
    store: Arc<SqliteStore>,
    ctx: Context,
    attacher: Arc<Attacher>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(dir: &Path, instance: &str) -> TestDaemon {
    start_with_resync(dir, instance, Duration::from_secs(2)).await
}

/// A daemon whose resync is `resync`: a long one shows that something was driven by events.
async fn start_with_resync(dir: &Path, instance: &str, resync: Duration) -> TestDaemon {
    let store = Arc::new(
        SqliteStore::open(dir.join("tend.db"), OpenOptions::default())
            .await
            .unwrap(),
    );
    let cfg = DaemonConfig {
        layout: tend::daemon::Layout::new(dir),
        instance: instance.to_string(),
        exe: PathBuf::from(env!("CARGO_BIN_EXE_tend")),
        controller: ControllerConfig {
            concurrency: 4,
            resync,
        },
        snapshot: Default::default(),
        probe_timings: None,
        usage_interval: Duration::from_secs(10),
        log: Default::default(),
        registry_auth: None,
        id_pool: Default::default(),
    };
    let dyn_store: Arc<dyn Store> = store.clone();
    let mut rt = Runtime::new(dyn_store.clone(), RuntimeConfig::default());
    let handle = register_network(&mut rt, &cfg).await.unwrap();
    let ctx = Context {
        store: dyn_store,
        index: rt.index(),
        metrics: Arc::new(ControllerMetrics::default()),
    };
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        rt.run(async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    TestDaemon {
        store,
        ctx,
        attacher: handle,
        stop,
        task,
    }
}

impl TestDaemon {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }

    async fn create(&self, kind: Kind, name: &str, spec: Value) -> AnyObject {
        self.store
            .create(AnyObject::new(kind, "default", name, spec))
            .await
            .unwrap()
    }

    async fn get(&self, kind: Kind, name: &str) -> Option<AnyObject> {
        match self.store.get(&ObjectKey::new(kind, "default", name)).await {
            Ok(o) => Some(o),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => panic!("{e}"),
        }
    }

    /// The Network's Ready condition as (status, reason, message).
    async fn ready(&self, name: &str) -> Option<(String, String, String)> {
        let o = self.get(Kind::Network, name).await?;
        let c = o.status["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?
            .clone();
        let s = |f: &str| c[f].as_str().unwrap_or_default().to_string();
        Some((s("status"), s("reason"), s("message")))
    }

    async fn wait_ready(&self, name: &str, status: &str, reason: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let last = self.ready(name).await;
            if let Some((s, r, m)) = &last {
                if s == status && r == reason {
                    return m.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "network {name}: wanted {status}/{reason}, have {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn attach(&self, name: &str) -> Vec<NetworkStatusEntry> {
        let obj = self.get(Kind::Container, name).await.unwrap();
        self.attacher
            .ensure_attachments(&self.ctx, &obj)
            .await
            .unwrap()
    }

    async fn delete(&self, kind: Kind, name: &str) {
        let key = ObjectKey::new(kind, "default", name);
        let _ = self.store.delete(&key, &DeleteOptions::default()).await;
    }
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn container_spec(networks: Value) -> Value {
    json!({"command": ["/bin/true"], "networks": networks})
}

fn instance() -> String {
    format!("{:08x}", rand::random::<u32>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_attachments_talk_and_nothing_is_left_after_deletion() {
    if !common::privileged("two_attachments_talk_and_nothing_is_left_after_deletion") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let inst = instance();
    let _guard = HostGuard::new(&inst);
    // Resync never comes during the test: status.leases must follow the leases at once.
    let d = start_with_resync(dir.path(), &inst, Duration::from_secs(600)).await;
    let (cidr, base) = subnet(1);
    let net = d
        .create(Kind::Network, "backend", json!({"subnet": cidr}))
        .await;
    d.wait_ready("backend", "True", "BridgeReady").await;
    let bridge = tend::net::names::bridge_name(net.metadata.uid.as_deref().unwrap());
    assert!(ip(&["-d", "link", "show", &bridge]).contains(&format!("alias tend:{inst}:")));
    let a = d
        .create(
            Kind::Container,
            "a",
            container_spec(json!([{"name": "backend"}])),
        )
        .await;
    let fixed = Ipv4Addr::from(u32::from(base) + 50);
    let b = d
        .create(
            Kind::Container,
            "b",
            container_spec(json!([{"name": "backend", "ip": fixed.to_string()}])),
        )
        .await;
    let ea = d.attach("a").await;
    let eb = d.attach("b").await;
    assert_eq!(ea[0].interface, "eth0");
    assert_eq!(ea[0].ip, Ipv4Addr::from(u32::from(base) + 2).to_string());
    assert_eq!(eb[0].ip, fixed.to_string());
    // Idempotent: a second call keeps the address.
    assert_eq!(d.attach("a").await, ea);
    let (ua, ub) = (a.metadata.uid.unwrap(), b.metadata.uid.unwrap());
    let (pa, pb) = (d.attacher.netns_path(&ua), d.attacher.netns_path(&ub));
    let listed = ip(&["netns", "list"]);
    assert!(listed.contains(&d.attacher.netns_name(&ua)), "{listed}");
    let addr_a = ip(&[
        "-n",
        &d.attacher.netns_name(&ua),
        "-4",
        "-o",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(addr_a.contains(&format!("{}/24", ea[0].ip)), "{addr_a}");
    let routes = ip(&[
        "-n",
        &d.attacher.netns_name(&ua),
        "route",
        "show",
        "default",
    ]);
    assert!(routes.contains(&format!("via {}", Ipv4Addr::from(u32::from(base) + 1))));
    d.wait_ready("backend", "True", "BridgeReady").await;
    eventually("leases: 2", || async {
        d.get(Kind::Network, "backend").await.unwrap().status["leases"] == 2
    })
    .await;

    // TCP from b's namespace to a's.
    let addr = SocketAddrV4::new(ea[0].ip.parse().unwrap(), 7070);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = common::fixtures::in_netns(pa, move || {
        let l = TcpListener::bind(addr).unwrap();
        ready_tx.send(()).unwrap();
        let (mut s, peer) = l.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"pong").unwrap();
        peer.ip().to_string()
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let client = common::fixtures::in_netns(pb, move || {
        let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5)).unwrap();
        s.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        buf
    });
    assert_eq!(&client.join().unwrap(), b"pong");
    assert_eq!(server.join().unwrap(), fixed.to_string());

    // Deleting the Network while containers use it: Terminating with InUse, bridge kept.
    d.delete(Kind::Network, "backend").await;
    let msg = d.wait_ready("backend", "False", "InUse").await;
    assert!(msg.contains("container/default/a"), "{msg}");
    for (c, name) in [("a", &ua), ("b", &ub)] {
        let obj = d.get(Kind::Container, c).await.unwrap();
        d.attacher.remove_attachments(&d.ctx, &obj).await.unwrap();
        d.delete(Kind::Container, c).await;
        assert!(!d.attacher.netns_path(name).exists());
    }
    eventually("network row gone", || async {
        d.get(Kind::Network, "backend").await.is_none()
    })
    .await;
    eventually("nothing of tend's left", || async {
        leftovers(&inst).is_empty()
    })
    .await;
    let leases = d.store.list_leases(&LeaseFilter::default()).await.unwrap();
    assert!(leases.is_empty(), "{leases:?}");
    d.shutdown().await;
}

fn lease_req(net: &str, cidr: &str, owner: &str, requested: Option<Ipv4Addr>) -> LeaseRequest {
    let subnet = tend_schema::kinds::network::Subnet::parse(cidr).unwrap();
    LeaseRequest {
        network_uid: net.to_string(),
        subnet,
        gateway: subnet.first_host(),
        owner_uid: owner.to_string(),
        requested,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_unique_under_concurrency_from_two_stores_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tend.db");
    let s1 = Arc::new(
        SqliteStore::open(&path, OpenOptions::default())
            .await
            .unwrap(),
    );
    // A second store on the same file: its own writer connection, as another process has.
    let s2 = Arc::new(
        SqliteStore::open(&path, OpenOptions::default())
            .await
            .unwrap(),
    );
    let cidr = "10.1.0.0/24";
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = if i % 2 == 0 { s1.clone() } else { s2.clone() };
            tokio::spawn(async move {
                s.allocate_lease(lease_req("n1", cidr, &format!("c{i}"), None))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut addrs = Vec::new();
    for t in tasks {
        addrs.push(t.await.unwrap().address);
    }
    let mut sorted = addrs.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 50, "duplicate addresses: {addrs:?}");
    assert!(
        !addrs.contains(&"10.1.0.1".parse().unwrap()),
        "gateway leased"
    );
    // Lowest free: exactly .2 to .51.
    assert_eq!(sorted.first().unwrap().to_string(), "10.1.0.2");
    assert_eq!(sorted.last().unwrap().to_string(), "10.1.0.51");
    // Idempotent per owner; a released address is reused lowest-first.
    let again = s1
        .allocate_lease(lease_req("n1", cidr, "c7", None))
        .await
        .unwrap();
    assert_eq!(again.address, addrs[7]);
    s2.release_leases("c0", None).await.unwrap();
    let next = s1
        .allocate_lease(lease_req("n1", cidr, "new", None))
        .await
        .unwrap();
    assert_eq!(next.address, addrs[0]);
    // Fixed addresses: taken, gateway, outside the subnet.
    for (want, why) in [
        (addrs[3], "already leased"),
        ("10.1.0.1".parse().unwrap(), "gateway"),
        ("10.2.0.9".parse().unwrap(), "not a host address"),
        ("10.1.0.255".parse().unwrap(), "not a host address"),
    ] {
        let err = s1
            .allocate_lease(lease_req("n1", cidr, "fixed", Some(want)))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Lease(LeaseError::AddressUnavailable { .. })
            ),
            "{err}"
        );
        assert!(err.to_string().contains(why), "{err}");
    }
    // Exhaustion: a /29 has six hosts, one is the gateway.
    for i in 0..5 {
        s1.allocate_lease(lease_req("small", "10.3.0.0/29", &format!("s{i}"), None))
            .await
            .unwrap();
    }
    let err = s1
        .allocate_lease(lease_req("small", "10.3.0.0/29", "s5", None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Lease(LeaseError::SubnetExhausted { .. })),
        "{err}"
    );
    // A subnet change re-addresses the holder.
    let moved = s1
        .allocate_lease(lease_req("small", "10.4.0.0/29", "s0", None))
        .await
        .unwrap();
    assert_eq!(moved.address.to_string(), "10.4.0.2");
    drop((s1, s2));
    let s3 = SqliteStore::open(&path, OpenOptions::default())
        .await
        .unwrap();
    let f = LeaseFilter {
        network_uid: Some("n1".into()),
        owner_uid: None,
    };
    assert_eq!(s3.list_leases(&f).await.unwrap().len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_repaired_and_a_restart_keeps_every_address() {
    if !common::privileged("drift_is_repaired_and_a_restart_keeps_every_address") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let inst = instance();
    let _guard = HostGuard::new(&inst);
    let d = start(dir.path(), &inst).await;
    let (cidr, _) = subnet(2);
    let net = d
        .create(Kind::Network, "drift", json!({"subnet": cidr}))
        .await;
    d.wait_ready("drift", "True", "BridgeReady").await;
    let bridge = tend::net::names::bridge_name(net.metadata.uid.as_deref().unwrap());
    let c = d
        .create(
            Kind::Container,
            "c",
            container_spec(json!([{"name": "drift"}])),
        )
        .await;
    let uid = c.metadata.uid.clone().unwrap();
    let entries = d.attach("c").await;
    let want = format!("{}/24", entries[0].ip);
    let ns = d.attacher.netns_name(&uid);
    let veth = tend::net::names::host_veth_name(&uid, 0);
    let whole = || {
        let host = Command::new("ip")
            .args(["-o", "link", "show", &veth])
            .output()
            .unwrap();
        let host = String::from_utf8_lossy(&host.stdout).into_owned();
        let inside = Command::new("ip")
            .args(["-n", &ns, "-4", "-o", "addr", "show", "eth0"])
            .output()
            .unwrap();
        let inside = String::from_utf8_lossy(&inside.stdout).into_owned();
        host.contains(&format!("master {bridge}")) && host.contains(",UP") && inside.contains(&want)
    };
    assert!(whole());
    let cases: [&[&str]; 5] = [
        &["link", "del", &veth],
        &["link", "set", &veth, "down"],
        &["-n", &ns, "addr", "del", &want, "dev", "eth0"],
        &["link", "del", &bridge],
        &["netns", "del", &ns],
    ];
    for case in cases {
        ip(case);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_millis(50)).await;
        eventually(&format!("repair after ip {case:?}"), || async { whole() }).await;
        eprintln!("ip {case:?}: repaired in {:?}", t0.elapsed());
    }
    let events = d
        .store
        .list_events(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.reason == "DriftRepaired")
        .count();
    assert!(events >= 3, "DriftRepaired events: {events}");

    // Restart: a new daemon on the same state dir keeps the lease and the address, and its
    // start-up sweep removes an orphaned namespace of this instance (and nobody else's).
    d.shutdown().await;
    let orphan = format!("tend-{inst}-00000000-dead-beef-0000-000000000000");
    let foreign = common::unique("tend-other-");
    ip(&["netns", "add", &orphan]);
    ip(&["netns", "add", &foreign]);
    let d = start(dir.path(), &inst).await;
    d.wait_ready("drift", "True", "BridgeReady").await;
    eventually("orphan swept", || async {
        !Path::new("/run/netns").join(&orphan).exists()
    })
    .await;
    assert!(Path::new("/run/netns").join(&foreign).exists());
    ip(&["netns", "del", &foreign]);
    assert!(whole());
    assert_eq!(d.attach("c").await, entries);

    let obj = d.get(Kind::Container, "c").await.unwrap();
    d.attacher.remove_attachments(&d.ctx, &obj).await.unwrap();
    d.delete(Kind::Container, "c").await;
    d.delete(Kind::Network, "drift").await;
    eventually("network gone", || async {
        d.get(Kind::Network, "drift").await.is_none()
    })
    .await;
    eventually("nothing of tend's left", || async {
        leftovers(&inst).is_empty()
    })
    .await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_and_exhaustion_give_their_conditions() {
    if !common::privileged("overlap_and_exhaustion_give_their_conditions") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let inst = instance();
    let mut guard = HostGuard::new(&inst);
    let d = start(dir.path(), &inst).await;
    let (cidr, base) = subnet(3);
    d.create(Kind::Network, "first", json!({"subnet": cidr}))
        .await;
    d.wait_ready("first", "True", "BridgeReady").await;
    let half = format!("{}/25", Ipv4Addr::from(u32::from(base) + 128));
    d.create(Kind::Network, "second", json!({"subnet": half}))
        .await;
    let msg = d.wait_ready("second", "False", "SubnetOverlap").await;
    assert!(msg.contains("network/default/first"), "{msg}");

    // A host route (on a plain bridge the test owns) overlapping a Network's subnet.
    let dummy = common::unique("tdm");
    guard.dummies.push(dummy.clone());
    let (route_cidr, route_base) = subnet(4);
    ip(&["link", "add", &dummy, "type", "bridge"]);
    ip(&[
        "addr",
        "add",
        &format!("{}/24", Ipv4Addr::from(u32::from(route_base) + 1)),
        "dev",
        &dummy,
    ]);
    ip(&["link", "set", &dummy, "up"]);
    d.create(Kind::Network, "routed", json!({"subnet": route_cidr}))
        .await;
    let msg = d.wait_ready("routed", "False", "SubnetOverlap").await;
    assert!(msg.contains("host route"), "{msg}");

    // Exhaustion: a /29 has five leasable addresses.
    let (_, small_base) = subnet(5);
    d.create(
        Kind::Network,
        "small",
        json!({"subnet": format!("{small_base}/29")}),
    )
    .await;
    d.wait_ready("small", "True", "BridgeReady").await;
    for i in 0..6 {
        d.create(
            Kind::Container,
            &format!("s{i}"),
            container_spec(json!([{"name": "small"}])),
        )
        .await;
    }
    for i in 0..5 {
        d.attach(&format!("s{i}")).await;
    }
    let obj = d.get(Kind::Container, "s5").await.unwrap();
    let err = d
        .attacher
        .ensure_attachments(&d.ctx, &obj)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "SubnetExhausted", "{err}");
    // A container waiting for a Network that is not Ready.
    d.create(
        Kind::Container,
        "w",
        container_spec(json!([{"name": "second"}])),
    )
    .await;
    let obj = d.get(Kind::Container, "w").await.unwrap();
    let err = d
        .attacher
        .ensure_attachments(&d.ctx, &obj)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "WaitingForNetwork", "{err}");

    for i in 0..6 {
        let obj = d.get(Kind::Container, &format!("s{i}")).await.unwrap();
        d.attacher.remove_attachments(&d.ctx, &obj).await.unwrap();
        d.delete(Kind::Container, &format!("s{i}")).await;
    }
    d.delete(Kind::Container, "w").await;
    for n in ["first", "second", "routed", "small"] {
        d.delete(Kind::Network, n).await;
    }
    eventually("networks gone", || async {
        let q = tend_schema::store::ListQuery::default();
        d.store.list(&q).await.unwrap().items.is_empty()
    })
    .await;
    eventually("nothing of tend's left", || async {
        leftovers(&inst).is_empty()
    })
    .await;
    d.shutdown().await;
}
