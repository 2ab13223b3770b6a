//! Net driver against the real kernel: bridges, named namespaces, veth attachments, traffic
//! between two namespaces the test made, monitor events, teardown and idempotency.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use tend::bench::netlink::{bench_attachments, BenchConfig};
use tend::net::{names, AttachRequest, NetDriver, NetEvent, NetMonitor};

/// Removes what a test created, even when it panics (through `ip`, which needs no runtime).
#[derive(Default)]
struct Cleanup {
    links: Vec<String>,
    netns: Vec<String>,
    /// Bridges given an intra-bridge ACCEPT rule in iptables FORWARD.
    forward_rules: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for br in &self.forward_rules {
            let _ = Command::new("iptables")
                .args(forward_rule("-D", br))
                .output();
        }
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for l in &self.links {
            let _ = Command::new("ip").args(["link", "del", l]).output();
        }
    }
}

/// `iptables <op> FORWARD -i br -o br -j ACCEPT`. On a host with Docker the FORWARD policy is
/// DROP and br_netfilter sends bridged IPv4 through it, so traffic between two ports of one
/// bridge is dropped unless such a rule exists (Docker adds the same one for docker0).
fn forward_rule<'a>(op: &'a str, br: &'a str) -> Vec<&'a str> {
    let mut v = vec![op, "FORWARD"];
    if op == "-I" {
        v.push("1");
    }
    v.extend(["-i", br, "-o", br, "-j", "ACCEPT"]);
    v
}

/// A /24 for this test: distinct per test (`n`) and per test process.
fn subnet(n: u8) -> Ipv4Net {
    let second = 100 + (std::process::id() % 100) as u8;
    Ipv4Net::new(Ipv4Addr::new(10, second, n, 0), 24).unwrap()
}

fn host(net: Ipv4Net, i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + i)
}

fn ip(args: &[&str]) -> (bool, String) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn netns_listed(name: &str) -> bool {
    ip(&["netns", "list"])
        .1
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

async fn wait_gone(link: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !ip(&["link", "show", link]).0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn next_event(mon: &mut NetMonitor, mut want: impl FnMut(&NetEvent) -> bool) -> NetEvent {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let ev = mon.recv().await.expect("monitor stream");
            if want(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("expected monitor event within 5 s")
}

/// A bridge on `net` plus `n` namespaces attached to it, all registered for cleanup.
async fn setup(
    d: &NetDriver,
    guard: &mut Cleanup,
    tag: &str,
    net: Ipv4Net,
    n: usize,
) -> (String, Vec<AttachRequest>) {
    let bridge = names::bridge_name(&common::unique(tag));
    guard.links.push(bridge.clone());
    d.ensure_bridge(&bridge, host(net, 1), 24, 1500, Some("tend:test:bridge"))
        .await
        .unwrap();
    let mut reqs = Vec::new();
    for i in 0..n {
        let ns = format!("{}{}", names::NETNS_PREFIX, common::unique(tag));
        guard.netns.push(ns.clone());
        let veth = names::host_veth_name(&ns, 0);
        guard.links.push(veth.clone());
        d.create_netns(&ns).await.unwrap();
        let req = AttachRequest {
            netns: ns,
            bridge: bridge.clone(),
            host_ifname: veth,
            ifname: "eth0".into(),
            address: Ipv4Net::new(host(net, 10 + i as u32), 24).unwrap(),
            gateway: Some(host(net, 1)),
            mtu: 1500,
            alias: Some(format!("tend:test-{tag}:{i}")),
        };
        d.attach(&req).await.unwrap();
        // The owner's mark is on the link as soon as it exists (set in the creating message).
        let alias =
            std::fs::read_to_string(format!("/sys/class/net/{}/ifalias", req.host_ifname)).unwrap();
        assert_eq!(alias.trim(), format!("tend:test-{tag}:{i}"));
        reqs.push(req);
    }
    (bridge, reqs)
}

#[tokio::test]
async fn bridge_gets_gateway_mtu_up_and_is_idempotent() {
    if !common::privileged("bridge_gets_gateway_mtu_up_and_is_idempotent") {
        return;
    }
    let d = NetDriver::with_default_dir().unwrap();
    let mut guard = Cleanup::default();
    let net = subnet(1);
    let br = names::bridge_name(&common::unique("br"));
    guard.links.push(br.clone());
    let gw = host(net, 1);
    let first = d
        .ensure_bridge(&br, gw, 24, 1500, Some("tend:test:bridge"))
        .await
        .unwrap();
    let again = d
        .ensure_bridge(&br, gw, 24, 1500, Some("tend:test:bridge"))
        .await
        .unwrap();
    assert_eq!(
        first.alias.as_deref(),
        Some("tend:test:bridge"),
        "alias set at creation"
    );
    assert_eq!(first, again);
    assert!(again.up);
    assert_eq!(again.addresses, vec![Ipv4Net::new(gw, 24).unwrap()]);

    let (ok, out) = ip(&["-j", "addr", "show", "dev", &br]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v[0]["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{out}"
    );
    assert_eq!(v[0]["mtu"], 1500);
    let addrs: Vec<_> = v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .collect();
    assert_eq!(addrs.len(), 1, "{out}");
    assert_eq!(addrs[0]["local"], gw.to_string());
    assert_eq!(addrs[0]["prefixlen"], 24);

    // Drift back: MTU, down, new gateway; one ensure repairs all of it.
    assert!(ip(&["link", "set", &br, "down", "mtu", "1400"]).0);
    let gw2 = host(subnet(2), 1);
    let st = d
        .ensure_bridge(&br, gw2, 24, 1500, Some("tend:test:bridge"))
        .await
        .unwrap();
    assert!(st.up);
    assert_eq!(st.mtu, 1500);
    assert_eq!(st.addresses, vec![Ipv4Net::new(gw2, 24).unwrap()]);

    assert!(d
        .list_tend_links()
        .await
        .unwrap()
        .iter()
        .any(|l| l.name == br && l.kind.as_deref() == Some("bridge")));
    assert!(d
        .list_tend_links()
        .await
        .unwrap()
        .iter()
        .all(|l| names::is_tend_link(&l.name)));

    d.delete_bridge(&br).await.unwrap();
    d.delete_bridge(&br).await.unwrap();
    assert_eq!(d.inspect_bridge(&br).await.unwrap(), None);
    assert!(!ip(&["link", "show", &br]).0);
}

#[tokio::test]
async fn netns_create_delete_are_idempotent_and_listed() {
    if !common::privileged("netns_create_delete_are_idempotent_and_listed") {
        return;
    }
    let d = NetDriver::with_default_dir().unwrap();
    let mut guard = Cleanup::default();
    let prefix = format!("{}{}-", names::NETNS_PREFIX, common::unique("ns"));
    let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
    guard.netns.extend([a.clone(), b.clone()]);
    d.create_netns(&a).await.unwrap();
    d.create_netns(&a).await.unwrap();
    d.create_netns(&b).await.unwrap();
    assert!(d.netns_exists(&a).await.unwrap());
    assert!(netns_listed(&a) && netns_listed(&b));
    assert_eq!(
        d.list_netns(&prefix).await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    // A fresh namespace has only loopback.
    let (ok, out) = ip(&["-n", &a, "-br", "link"]);
    assert!(
        ok && out.lines().count() == 1 && out.starts_with("lo"),
        "{out}"
    );

    d.delete_netns(&a).await.unwrap();
    d.delete_netns(&a).await.unwrap();
    assert!(!d.netns_exists(&a).await.unwrap());
    assert!(!netns_listed(&a));
    assert_eq!(d.list_netns(&prefix).await.unwrap(), vec![b.clone()]);
    d.delete_netns(&b).await.unwrap();
}

#[tokio::test]
async fn two_attachments_reach_each_other_and_teardown_leaves_nothing() {
    if !common::privileged("two_attachments_reach_each_other_and_teardown_leaves_nothing") {
        return;
    }
    let d = NetDriver::with_default_dir().unwrap();
    let mut guard = Cleanup::default();
    let net = subnet(3);
    let (bridge, reqs) = setup(&d, &mut guard, "tc", net, 2).await;
    if Command::new("iptables").arg("-V").output().is_ok() {
        guard.forward_rules.push(bridge.clone());
        let out = Command::new("iptables")
            .args(forward_rule("-I", &bridge))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    for r in &reqs {
        let st = d
            .inspect_attachment(&r.netns, &r.host_ifname, &r.ifname)
            .await
            .unwrap();
        assert!(st.host_exists && st.host_up && st.netns_exists, "{st:?}");
        assert_eq!(st.master.as_deref(), Some(bridge.as_str()));
        assert!(st.peer_exists && st.peer_up && st.loopback_up, "{st:?}");
        assert_eq!(st.addresses, vec![r.address]);
        assert_eq!(st.default_gateway, Some(host(net, 1)));
        // The peer was created inside the namespace: it is not on the host.
        let (ok, out) = ip(&["-n", &r.netns, "-j", "addr", "show", "dev", "eth0"]);
        assert!(ok && out.contains(&r.address.addr().to_string()), "{out}");
        // Attaching again changes nothing and fails nothing.
        d.attach(r).await.unwrap();
        assert_eq!(
            d.inspect_attachment(&r.netns, &r.host_ifname, &r.ifname)
                .await
                .unwrap(),
            st
        );
    }

    // TCP from namespace 1 to a listener in namespace 0.
    let addr = SocketAddrV4::new(reqs[0].address.addr(), 7070);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = common::fixtures::in_netns(format!("/run/netns/{}", reqs[0].netns), move || {
        let l = TcpListener::bind(addr).unwrap();
        ready_tx.send(()).unwrap();
        let (mut s, peer) = l.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"pong").unwrap();
        (peer.ip().to_string(), buf)
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let client = common::fixtures::in_netns(format!("/run/netns/{}", reqs[1].netns), move || {
        let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5)).unwrap();
        s.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        buf
    });
    assert_eq!(&client.join().unwrap(), b"pong");
    let (peer, got) = server.join().unwrap();
    assert_eq!(&got, b"ping");
    assert_eq!(peer, reqs[1].address.addr().to_string());

    // Detach (twice) removes both ends; deleting the namespace takes its veth along.
    d.detach(&reqs[0].host_ifname).await.unwrap();
    d.detach(&reqs[0].host_ifname).await.unwrap();
    assert!(!ip(&["link", "show", &reqs[0].host_ifname]).0);
    assert!(!ip(&["-n", &reqs[0].netns, "link", "show", "eth0"]).0);
    d.delete_netns(&reqs[1].netns).await.unwrap();
    assert!(
        wait_gone(&reqs[1].host_ifname).await,
        "veth of a deleted netns lingers"
    );
    d.delete_netns(&reqs[0].netns).await.unwrap();
    d.delete_bridge(&bridge).await.unwrap();
    for r in &reqs {
        assert!(!netns_listed(&r.netns));
        assert!(!d
            .list_tend_links()
            .await
            .unwrap()
            .iter()
            .any(|l| l.name == r.host_ifname));
    }
    assert!(!ip(&["link", "show", &bridge]).0);
}

#[tokio::test]
async fn monitor_reports_down_address_removed_and_deleted() {
    if !common::privileged("monitor_reports_down_address_removed_and_deleted") {
        return;
    }
    let d = NetDriver::with_default_dir().unwrap();
    let mut guard = Cleanup::default();
    let net = subnet(4);
    let (bridge, reqs) = setup(&d, &mut guard, "mo", net, 1).await;
    let r = &reqs[0];
    let mut host_mon = d.monitor(None).await.unwrap();
    let mut ns_mon = d.monitor(Some(&r.netns)).await.unwrap();

    assert!(ip(&["link", "set", &r.host_ifname, "down"]).0);
    let ev = next_event(
        &mut host_mon,
        |e| matches!(e, NetEvent::LinkDown { ifname, .. } if *ifname == r.host_ifname),
    )
    .await;
    assert_eq!(ev.ifname(), r.host_ifname);

    let gw = format!("{}/24", host(net, 1));
    assert!(ip(&["addr", "del", &gw, "dev", &bridge]).0);
    let ev = next_event(
        &mut host_mon,
        |e| matches!(e, NetEvent::AddressRemoved { ifname, .. } if *ifname == bridge),
    )
    .await;
    assert!(
        matches!(ev, NetEvent::AddressRemoved { address, .. } if address == Ipv4Net::new(host(net, 1), 24).unwrap())
    );

    // Inside the namespace: the container's own address goes.
    assert!(
        ip(&[
            "-n",
            &r.netns,
            "addr",
            "del",
            &r.address.to_string(),
            "dev",
            "eth0"
        ])
        .0
    );
    let ev = next_event(&mut ns_mon, |e| {
        matches!(e, NetEvent::AddressRemoved { .. })
    })
    .await;
    assert_eq!(ev.ifname(), "eth0");
    // Re-attaching repairs the address, the link state and the route.
    d.attach(r).await.unwrap();
    let st = d
        .inspect_attachment(&r.netns, &r.host_ifname, &r.ifname)
        .await
        .unwrap();
    assert!(st.host_up && st.peer_up);
    assert_eq!(st.addresses, vec![r.address]);
    assert_eq!(st.default_gateway, Some(host(net, 1)));

    assert!(ip(&["link", "del", &r.host_ifname]).0);
    next_event(
        &mut host_mon,
        |e| matches!(e, NetEvent::LinkDeleted { ifname, .. } if *ifname == r.host_ifname),
    )
    .await;
    next_event(
        &mut ns_mon,
        |e| matches!(e, NetEvent::LinkDeleted { ifname, .. } if ifname == "eth0"),
    )
    .await;

    // Making a veth is not reported as a link going down (a repairer would chase every new
    // attachment): up to the bridge going down, the new veth is not reported down.
    d.attach(r).await.unwrap();
    assert!(ip(&["link", "set", &bridge, "down"]).0);
    let mut seen = Vec::new();
    next_event(&mut host_mon, |e| {
        seen.push(e.clone());
        matches!(e, NetEvent::LinkDown { ifname, .. } if *ifname == bridge)
    })
    .await;
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, NetEvent::LinkDown { ifname, .. } if *ifname == r.host_ifname)),
        "creating {} was reported: {seen:?}",
        r.host_ifname
    );
}

#[tokio::test]
async fn host_route_overlap_sees_a_bridge_subnet() {
    if !common::privileged("host_route_overlap_sees_a_bridge_subnet") {
        return;
    }
    let d = NetDriver::with_default_dir().unwrap();
    let mut guard = Cleanup::default();
    let net = subnet(5);
    let br = names::bridge_name(&common::unique("ro"));
    guard.links.push(br.clone());
    let st = d
        .ensure_bridge(&br, host(net, 1), 24, 1500, Some("tend:test:bridge"))
        .await
        .unwrap();
    let half: Ipv4Net = Ipv4Net::new(host(net, 128), 25).unwrap();
    let hit = d
        .route_overlap(half, &[])
        .await
        .unwrap()
        .expect("the bridge's subnet route");
    assert_eq!(hit.destination, net);
    assert_eq!(hit.oif, Some(st.index));
    assert_eq!(d.route_overlap(half, &[st.index]).await.unwrap(), None);
    assert!(d
        .host_routes()
        .await
        .unwrap()
        .iter()
        .any(|r| r.destination == net));
}

#[tokio::test]
async fn small_bench_runs_and_cleans_up() {
    if !common::privileged("small_bench_runs_and_cleans_up") {
        return;
    }
    let d = NetDriver::with_default_dir().unwrap();
    let cfg = BenchConfig {
        count: 20,
        concurrency: 4,
        subnet: subnet(6),
    };
    let report = bench_attachments(&d, &cfg).await.unwrap();
    eprintln!("{report}");
    assert_eq!(report.count, 20);
    assert!(d
        .list_netns(&format!(
            "{}bench-{}-",
            names::NETNS_PREFIX,
            std::process::id()
        ))
        .await
        .unwrap()
        .is_empty());
}
