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
use tend::daemon::DaemonConfig;
use tend::net::adapter::register_network;
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
    let links = Command::new("ip").args(["-o", "link", "show"]).output().unwrap();
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
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A /24 in 10.220–249.n.0 distinct per test process and per test (`n`).
fn subnet(n: u8) -> (String, Ipv4Addr) {
    let second = 220 + (std::process::id() % 30) as u8;
    (format!("10.{second}.{n}.0/24"), Ipv4Addr::new(10, second, n, 0))
}

struct TestDaemon {
    store: Arc<SqliteStore>,
    ctx: Context,
    attacher: Arc<Attacher>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(dir: &Path, instance: &str) -> TestDaemon {
    let store = Arc::new(
        SqliteStore::open(dir.join("tend.db"), OpenOptions::default())
            .await
            .unwrap(),
    );
    let cfg = DaemonConfig {
        state_dir: dir.to_path_buf(),
        instance: instance.to_string(),
        exe: PathBuf::from(env!("CARGO_BIN_EXE_tend")),
        controller: ControllerConfig {
            concurrency: 4,
            resync: Duration::from_secs(2),
        },
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
        attacher: handle.attacher,
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
        self.attacher.ensure_attachments(&self.ctx, &obj).await.unwrap()
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

fn in_netns<T: Send + 'static>(
    path: PathBuf,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let file = std::fs::File::open(path).expect("open netns");
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
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
    let d = start(dir.path(), &inst).await;
    let (cidr, base) = subnet(1);
    let net = d.create(Kind::Network, "backend", json!({"subnet": cidr})).await;
    d.wait_ready("backend", "True", "BridgeReady").await;
    let bridge = tend::net::names::bridge_name(net.metadata.uid.as_deref().unwrap());
    assert!(ip(&["-d", "link", "show", &bridge]).contains(&format!("alias tend:{inst}:")));
    let a = d
        .create(Kind::Container, "a", container_spec(json!([{"name": "backend"}])))
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
    let addr_a = ip(&["-n", &d.attacher.netns_name(&ua), "-4", "-o", "addr", "show", "eth0"]);
    assert!(addr_a.contains(&format!("{}/24", ea[0].ip)), "{addr_a}");
    let routes = ip(&["-n", &d.attacher.netns_name(&ua), "route", "show", "default"]);
    assert!(routes.contains(&format!("via {}", Ipv4Addr::from(u32::from(base) + 1))));
    d.wait_ready("backend", "True", "BridgeReady").await;
    eventually("leases: 2", || async {
        d.get(Kind::Network, "backend").await.unwrap().status["leases"] == 2
    })
    .await;

    // TCP from b's namespace to a's.
    let addr = SocketAddrV4::new(ea[0].ip.parse().unwrap(), 7070);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = in_netns(pa, move || {
        let l = TcpListener::bind(addr).unwrap();
        ready_tx.send(()).unwrap();
        let (mut s, peer) = l.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"pong").unwrap();
        peer.ip().to_string()
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let client = in_netns(pb, move || {
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
    eventually("nothing of tend's left", || async { leftovers(&inst).is_empty() }).await;
    let leases = d.store.list_leases(&LeaseFilter::default()).await.unwrap();
    assert!(leases.is_empty(), "{leases:?}");
    d.shutdown().await;
}
