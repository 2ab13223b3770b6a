//! Published ports on the real kernel: busybox httpd in a native Container, reached through
//! tend's nftables DNAT from the host (127.0.0.1 and every address), from a client namespace
//! routed to the host (the server sees the client's own address), over UDP, from another
//! container (hairpin); a rule deleted behind tend's back comes back; a second claim of a held
//! port is a `PortConflict`; an operator's own nftables rule decides who may connect.
//!
//! Traffic goes only to 127.0.0.1 and to addresses this test put on links it made.

mod common;

use common::daemon::{condition, Daemon};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tend::net::firewall::{table_name, Firewall};
use tend_controllers::network::{AttachConfig, BridgeConfig, NetworkDriver};

/// Three octets no other test uses at once (tests run in parallel; overlaps are refused).
fn octets() -> (u32, u32) {
    let a = 100 + std::process::id() % 100;
    let b = 1 + rand::random::<u32>() % 250;
    (a, b)
}

/// A free port in 20000..60000 for the host side (nothing listens on it: DNAT decides).
fn host_port(n: u16) -> u16 {
    20000 + (std::process::id() % 4000) as u16 * 10 + n
}

/// `GET path` over HTTP/1.0 to `addr`; the body, or the error.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    // httpd passes a CGI's head (LF line ends) after its own status line (CRLF).
    let out = out.replace("\r\n", "\n");
    let body = out.split_once("\n\n").map(|(_, b)| b);
    match body {
        Some(b)
            if out.starts_with("HTTP/1.") && out.lines().next().unwrap_or("").contains(" 200 ") =>
        {
            // httpd listens on an IPv6 socket: `[::ffff:10.0.0.2]` is 10.0.0.2.
            Ok(b.trim()
                .trim_start_matches("[::ffff:")
                .trim_end_matches(']')
                .to_string())
        }
        _ => Err(std::io::Error::other(format!("bad answer: {out:?}"))),
    }
}

/// Retries `f` until it returns Ok (the positive signal), `t` at most.
fn until<T>(what: &str, t: Duration, mut f: impl FnMut() -> std::io::Result<T>) -> T {
    let deadline = Instant::now() + common::scaled(t);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// httpd's document root: `/cgi-bin/addr` answers with the client address httpd saw.
fn www(dir: &Path) -> PathBuf {
    let root = dir.join("www");
    std::fs::create_dir_all(root.join("cgi-bin")).unwrap();
    let cgi = root.join("cgi-bin/addr");
    std::fs::write(
        &cgi,
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"$REMOTE_ADDR\"\n",
    )
    .unwrap();
    let mut p = std::fs::metadata(&cgi).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
    std::fs::set_permissions(&cgi, p).unwrap();
    root
}

/// A UDP echo server on port 9000 (busybox nc has no UDP), for the container to run.
fn udp_echo(dir: &Path) -> PathBuf {
    let p = dir.join("udp_echo.py");
    std::fs::write(
        &p,
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('0.0.0.0', 9000))\nwhile True:\n    d, a = s.recvfrom(2048)\n    s.sendto(d, a)\n",
    )
    .unwrap();
    p
}

/// tend's table as JSON objects (rules with their comments), or empty when it is gone.
fn table(instance: &str) -> Vec<Value> {
    let t = table_name(instance);
    match nftables::helper::get_current_ruleset_with_args(
        None::<&str>,
        ["list", "table", "ip", t.as_str()],
    ) {
        Ok(n) => serde_json::to_value(&n).unwrap()["nftables"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        Err(_) => vec![],
    }
}

/// The rules of container `uid` in tend's table: `(chain, handle)`.
fn rules_of(instance: &str, uid: &str) -> Vec<(String, u64)> {
    table(instance)
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["comment"] == uid)
        .map(|r| {
            (
                r["chain"].as_str().unwrap().to_string(),
                r["handle"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn apply_nft(req: Value) {
    let n: nftables::schema::Nftables = serde_json::from_value(req).unwrap();
    nftables::helper::apply_ruleset(&n).unwrap();
}

/// A client namespace routed to the host: bridge `<name>b` with `.1` on the host, the
/// namespace `<name>` with `.2` behind it. Removed on drop, also when the test fails.
struct Client {
    rt: tokio::runtime::Runtime,
    driver: tend::net::adapter::NetlinkNetworkDriver,
    name: String,
    bridge: String,
    host: Ipv4Addr,
    addr: Ipv4Addr,
}

impl Client {
    fn new(a: u32, b: u32) -> Client {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let name = common::unique("tpc");
        let bridge = format!("{name}b");
        let host = Ipv4Addr::new(10, a as u8, (b as u8).wrapping_add(1), 1);
        let addr = Ipv4Addr::new(10, a as u8, (b as u8).wrapping_add(1), 2);
        let driver = rt.block_on(async {
            tend::net::adapter::NetlinkNetworkDriver::new(
                tend::net::NetDriver::with_default_dir().unwrap(),
            )
        });
        let c = Client {
            rt,
            driver,
            name,
            bridge,
            host,
            addr,
        };
        c.rt.block_on(async {
            c.driver
                .ensure_bridge(&BridgeConfig {
                    name: c.bridge.clone(),
                    alias: format!("test:{}", c.name),
                    gateway: host,
                    prefix: 24,
                    mtu: 1500,
                })
                .await
                .unwrap();
            c.driver.create_netns(&c.name).await.unwrap();
            c.driver
                .attach(&AttachConfig {
                    netns: c.name.clone(),
                    bridge: c.bridge.clone(),
                    host_ifname: format!("{}h", c.name),
                    alias: format!("test:{}", c.name),
                    ifname: "eth0".into(),
                    address: addr,
                    prefix: 24,
                    gateway: Some(host),
                    mtu: 1500,
                })
                .await
                .unwrap();
        });
        c
    }

    /// Runs `f` on a thread inside the client namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(self.driver.netns_path(&self.name)).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.rt.block_on(async {
            let _ = self.driver.delete_netns(&self.name).await;
            let _ = self.driver.delete_link(&format!("{}h", self.name)).await;
            let _ = self.driver.delete_link(&self.bridge).await;
        });
    }
}

/// An operator's own table (removed on drop).
struct OperatorTable(String);

impl Drop for OperatorTable {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            apply_nft(json!({"nftables": [
                {"add": {"table": {"family": "ip", "name": self.0}}},
                {"delete": {"table": {"family": "ip", "name": self.0}}},
            ]}))
        });
    }
}

#[test]
fn published_ports_reach_the_container_and_stay_published() {
    if !common::privileged("published_ports_reach_the_container_and_stay_published") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = www(dir.path());
    let (a, b) = octets();
    let net = format!("10.{a}.{b}");
    let (p_lo, p_any, p_udp, p_any2) = (host_port(1), host_port(2), host_port(3), host_port(4));
    let hairpin_out = dir.path().join("hairpin.out");
    let mut d = Daemon::start(&["--resync-seconds", "2"]);
    let inst = d.instance();
    d.apply(&format!(
        r#"
apiVersion: tend.dev/v1
kind: Network
metadata: {{name: lan}}
spec: {{subnet: {net}.0/24}}
---
apiVersion: tend.dev/v1
kind: Container
metadata: {{name: web}}
spec:
  command: ["/bin/sh", "-c", "python3 {echo} & exec /bin/busybox httpd -f -p 8080 -h {root}"]
  networks: [{{name: lan, ip: {net}.10}}]
  ports:
  - {{containerPort: 8080, hostPort: {p_lo}, hostIP: 127.0.0.1}}
  - {{containerPort: 8080, hostPort: {p_any}}}
  - {{containerPort: 9000, hostPort: {p_udp}, protocol: UDP, hostIP: 127.0.0.1}}
---
apiVersion: tend.dev/v1
kind: Container
metadata: {{name: neighbour}}
spec:
  command: ["/bin/sh", "-c", "until /bin/busybox wget -q -O {out}.tmp http://{net}.1:{p_any}/cgi-bin/addr; do sleep 0.2; done; mv {out}.tmp {out}; exec sleep 3600"]
  networks: [{{name: lan}}]
"#,
        root = root.display(),
        out = hairpin_out.display(),
        echo = udp_echo(dir.path()).display(),
    ));
    let t = Duration::from_secs(60);
    let web = d.wait_ready("container", "web", t);
    let uid = web["metadata"]["uid"].as_str().unwrap().to_string();
    assert_eq!(
        web["status"]["ports"].as_array().unwrap().len(),
        3,
        "{web:#}"
    );

    // From the host: the loopback-only port and the every-address port, both on 127.0.0.1.
    let lo = SocketAddr::from(([127, 0, 0, 1], p_lo));
    let seen = until("GET 127.0.0.1 (hostIP 127.0.0.1)", t, || {
        http_get(lo, "/cgi-bin/addr")
    });
    assert_eq!(seen, format!("{net}.1"), "loopback clients are masqueraded");
    until("GET 127.0.0.1 (hostIP 0.0.0.0)", t, || {
        http_get(SocketAddr::from(([127, 0, 0, 1], p_any)), "/cgi-bin/addr")
    });

    // UDP echo through the loopback-only UDP port.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let echoed = until("UDP echo", t, || {
        udp.send_to(b"ping-udp", ("127.0.0.1", p_udp))?;
        let mut buf = [0u8; 64];
        let (n, _) = udp.recv_from(&mut buf)?;
        Ok(buf[..n].to_vec())
    });
    assert_eq!(echoed, b"ping-udp");

    // From another namespace routed to the host: httpd sees the client's own address.
    let client = Client::new(a, b);
    let target = SocketAddr::from((client.host, p_any));
    let seen = client.run(move || {
        until(
            "GET from the client namespace",
            Duration::from_secs(20),
            || http_get(target, "/cgi-bin/addr"),
        )
    });
    assert_eq!(
        seen,
        client.addr.to_string(),
        "outside clients keep their address"
    );

    // Hairpin: a container on the same bridge reaches web through the published port.
    let deadline = Instant::now() + common::scaled(t);
    let neighbour_saw = loop {
        if let Ok(s) = std::fs::read_to_string(&hairpin_out) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "neighbour never got an answer\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // With br_netfilter the DNATed packet is bridged and conntrack undoes the DNAT on the
    // bridge (the server sees the neighbour); without it the packet is routed back out the
    // same bridge and tend's hairpin rule masquerades it (the server sees the gateway).
    let neighbour = d.wait_ready("container", "neighbour", t);
    let neighbour_ip = neighbour["status"]["networks"][0]["ip"].as_str().unwrap();
    let saw = neighbour_saw.trim();
    let saw = saw.trim_start_matches("[::ffff:").trim_end_matches(']');
    assert!(
        saw == neighbour_ip || saw == format!("{net}.1"),
        "hairpin: server saw {saw}"
    );

    // A rule deleted behind tend's back comes back (nftables events wake the check).
    let (chain, handle) = rules_of(&inst, &uid)
        .into_iter()
        .find(|(c, _)| c == "prerouting")
        .expect("web has prerouting rules");
    let before = rules_of(&inst, &uid).len();
    let started = Instant::now();
    apply_nft(json!({"nftables": [{"delete": {"rule": {
        "family": "ip", "table": table_name(&inst), "chain": chain, "handle": handle, "expr": []
    }}}]}));
    let deadline = Instant::now() + common::scaled(Duration::from_secs(10));
    while rules_of(&inst, &uid).len() != before {
        assert!(Instant::now() < deadline, "rule not restored\n{}", d.log());
        std::thread::sleep(Duration::from_millis(2));
    }
    let restored = started.elapsed();
    println!("published-port rule deleted → restored in {restored:?}");
    let seen = client.run(move || {
        until("GET after the repair", Duration::from_secs(10), || {
            http_get(target, "/cgi-bin/addr")
        })
    });
    assert_eq!(seen, client.addr.to_string());

    // The operator's firewall decides: a reject for the client's address, in the operator's
    // own table before the DNAT (prerouting, priority raw), refuses it (a positive answer: a
    // TCP reset from the address the client asked for).
    let op = OperatorTable(format!("{}op", common::unique("tpo")));
    apply_nft(json!({"nftables": [
        {"add": {"table": {"family": "ip", "name": op.0}}},
        {"add": {"chain": {"family": "ip", "table": op.0, "name": "oppre",
            "type": "filter", "hook": "prerouting", "prio": -300, "policy": "accept"}}},
        {"add": {"rule": {"family": "ip", "table": op.0, "chain": "oppre", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                "right": client.addr.to_string()}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                "right": p_any}},
            {"reject": {"type": "tcp reset"}},
        ]}}},
    ]}));
    let refused = client.run(move || {
        TcpStream::connect_timeout(&target, Duration::from_secs(5))
            .map(|_| ())
            .unwrap_err()
            .kind()
    });
    assert_eq!(refused, std::io::ErrorKind::ConnectionRefused);
    assert!(
        http_get(lo, "/cgi-bin/addr").is_ok(),
        "other clients are not affected"
    );
    drop(op);
    client.run(move || {
        until(
            "GET once the operator's rule is gone",
            Duration::from_secs(10),
            || http_get(target, "/cgi-bin/addr"),
        )
    });

    // A second container asking for a held socket: PortConflict naming the holder, no rule.
    d.apply(&format!(
        r#"
apiVersion: tend.dev/v1
kind: Container
metadata: {{name: web2}}
spec:
  command: ["/bin/sh", "-c", "exec /bin/busybox httpd -f -p 8080 -h {root}"]
  networks: [{{name: lan}}]
  ports:
  - {{containerPort: 8080, hostPort: {p_any2}}}
  - {{containerPort: 8080, hostPort: {p_lo}, hostIP: 127.0.0.1}}
"#,
        root = root.display(),
    ));
    let web2 = d.wait("container", "web2", "PortConflict", |v| {
        v["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["reason"] == "PortConflict"))
    });
    assert_eq!(condition(&web2, "Ready"), "False");
    let msg = web2["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["reason"] == "PortConflict")
        .unwrap()["message"]
        .to_string();
    assert!(
        msg.contains("web") && msg.contains(&p_lo.to_string()),
        "{msg}"
    );
    let uid2 = web2["metadata"]["uid"].as_str().unwrap().to_string();
    assert!(rules_of(&inst, &uid2).is_empty(), "nothing half-installed");

    // Deleting the holder removes its rules; the waiting container then gets the port.
    let out = d.tend(&["delete", "container", "web", "--wait", "--timeout", "60"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(rules_of(&inst, &uid).is_empty(), "web's rules are gone");
    d.wait_ready("container", "web2", t);
    until("GET web2 on the freed port", t, || {
        http_get(lo, "/cgi-bin/addr")
    });
    assert_eq!(
        rules_of(&inst, &uid2).len(),
        4,
        "web2: 2 ports × prerouting+output"
    );

    // Orphans: a rule of this instance whose container is gone (left by a crashed daemon) is
    // swept at start; the live container publishes its ports again.
    d.kill9();
    apply_nft(json!({"nftables": [{"add": {"rule": {
        "family": "ip", "table": table_name(&inst), "chain": "prerouting", "comment": "gone-uid",
        "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                "right": host_port(5)}},
            {"dnat": {"addr": format!("{net}.99"), "port": 80}},
        ]
    }}}]}));
    assert_eq!(rules_of(&inst, "gone-uid").len(), 1);
    d.spawn();
    let deadline = Instant::now() + common::scaled(t);
    while !(rules_of(&inst, "gone-uid").is_empty() && rules_of(&inst, &uid2).len() == 4) {
        assert!(
            Instant::now() < deadline,
            "after restart: {:#?}\n{}",
            table(&inst),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    until("GET web2 after the daemon restarted", t, || {
        http_get(lo, "/cgi-bin/addr")
    });

    let out = d.tend(&["delete", "container", "--all", "--wait", "--timeout", "60"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<_> = table(&inst)
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["chain"] == "prerouting" || r["chain"] == "output")
        .cloned()
        .collect();
    assert!(left.is_empty(), "no published-port rule left: {left:#?}");
    drop(client);
    drop(d);
    assert!(table(&inst).is_empty(), "the sweep removes tend's table");
    let _ = Firewall::delete_table(&inst);
}

#[test]
fn a_docker_runtime_container_is_published_the_same_way() {
    if !common::privileged("a_docker_runtime_container_is_published_the_same_way") {
        return;
    }
    let (a, b) = octets();
    let net = format!("10.{a}.{b}");
    let port = host_port(5);
    let d = Daemon::start(&["--resync-seconds", "3600"]);
    let inst = d.instance();
    d.apply(&format!(
        r#"
apiVersion: tend.dev/v1
kind: Network
metadata: {{name: dnet}}
spec: {{subnet: {net}.0/24}}
---
apiVersion: tend.dev/v1
kind: Container
metadata: {{name: dweb}}
spec:
  runtime: docker
  image: tend-test/busybox:latest
  command: ["/bin/sh", "-c", "mkdir -p /tmp/www && echo from-docker > /tmp/www/index.html && exec /bin/busybox httpd -f -p 8080 -h /tmp/www"]
  networks: [{{name: dnet, ip: {net}.20}}]
  ports:
  - {{containerPort: 8080, hostPort: {port}, hostIP: 127.0.0.1}}
  stopGracePeriodSeconds: 1
"#
    ));
    let t = Duration::from_secs(60);
    let web = d.wait_ready("container", "dweb", t);
    assert!(web["status"]["containerID"].is_string(), "{web:#}");
    assert_eq!(web["status"]["ports"][0]["hostPort"], port, "{web:#}");
    // Through tend's DNAT on 127.0.0.1, to the Docker container on tend's bridge.
    let body = until("GET 127.0.0.1 to the docker container", t, || {
        http_get(SocketAddr::from(([127, 0, 0, 1], port)), "/index.html")
    });
    assert_eq!(body, "from-docker");
    let rules = table(&inst);
    assert!(
        rules
            .iter()
            .any(|o| o.to_string().contains("\"dport\"")
                && o.to_string().contains(&port.to_string())),
        "no DNAT rule for {port} in tend's table: {rules:#?}"
    );
    // Deleted: the rule goes with it.
    let out = d.tend(&["delete", "container", "dweb", "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !table(&inst)
            .iter()
            .any(|o| o.to_string().contains(&port.to_string())),
        "a rule for {port} is left"
    );
}
