//! The whole stack on real kernel objects: a busybox State on btrfs, Sandboxes cloned from it,
//! a Network, and native Containers in their own PID, mount and network namespaces that talk to
//! each other over TCP, write into their Sandboxes, and survive a daemon crash.

mod common;

use common::daemon::Daemon;
use std::path::Path;
use std::time::{Duration, Instant};
use tend::cgroup::{CgroupManager, Resource};

/// A /24 no other test on this host uses (tests run in parallel; overlapping subnets are refused).
fn subnet() -> (String, String) {
    let a = 100 + std::process::id() % 100;
    let b = 1
        + (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_micros()
            % 250);
    (format!("10.{a}.{b}.0/24"), format!("10.{a}.{b}"))
}

fn wait_for_file(path: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.is_empty() {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn containers_on_sandboxes_talk_over_a_network_and_survive_a_daemon_crash() {
    if !common::privileged("containers_on_sandboxes_talk_over_a_network_and_survive_a_daemon_crash")
    {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let rootfs = common::fixtures::busybox_rootfs(src.path(), &["nc", "hostname", "ls"]);
    let mut d = Daemon::start(&["--btrfs-image-size", "512Mi", "--resync-seconds", "2"]);
    let (cidr, net) = subnet();
    d.apply(&format!(
        r#"
apiVersion: tend.dev/v1
kind: State
metadata: {{name: busybox}}
spec: {{source: {{directory: {rootfs}}}}}
---
apiVersion: tend.dev/v1
kind: Network
metadata: {{name: lan}}
spec: {{subnet: {cidr}}}
---
apiVersion: tend.dev/v1
kind: Sandbox
metadata: {{name: server-fs}}
spec: {{state: busybox}}
---
apiVersion: tend.dev/v1
kind: Container
metadata: {{name: server}}
spec:
  rootfs: {{sandbox: server-fs}}
  hostname: server
  command: ["/bin/sh", "-c", "echo pid=$$ host=$(hostname); nc -l -p 7000 > /data/got; sleep 3600"]
  networks: [{{name: lan, ip: {net}.10}}]
  resources: {{memory: 32Mi, pids: 64}}
---
apiVersion: tend.dev/v1
kind: Container
metadata: {{name: client}}
spec:
  rootfs: {{state: busybox}}
  command: ["/bin/sh", "-c", "until echo hello-over-tcp | nc {net}.10 7000; do sleep 0.2; done; echo sent; sleep 3600"]
  networks: [{{name: lan}}]
"#,
        rootfs = rootfs.display()
    ));
    let t = Duration::from_secs(60);
    let state = d.wait_ready("state", "busybox", t);
    assert_eq!(state["status"]["backend"], "btrfs");
    let sb = d.wait_ready("sandbox", "server-fs", t);
    let server = d.wait_ready("container", "server", t);
    let client = d.wait_ready("container", "client", t);

    // The client got an address leased from the subnet, the server its fixed one.
    assert_eq!(server["status"]["networks"][0]["ip"], format!("{net}.10"));
    let client_ip = client["status"]["networks"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        client_ip.starts_with(&net) && client_ip != format!("{net}.10"),
        "{client_ip}"
    );

    // TCP from one container's namespace to the other's; the bytes land in the server's Sandbox.
    let got = wait_for_file(
        &Path::new(sb["status"]["path"].as_str().unwrap()).join("data/got"),
        t,
    );
    assert_eq!(got.trim(), "hello-over-tcp");

    // PID namespace and hostname, seen from inside.
    let logs = String::from_utf8(d.tend(&["logs", "server"]).stdout).unwrap();
    assert!(logs.contains("pid=1 host=server"), "{logs}");

    // The client's rootfs is an owned Sandbox, cloned from the State.
    let owned = d
        .get("sandbox", "client-rootfs")
        .expect("an owned Sandbox for rootfs: {state: ...}");
    assert_eq!(owned["metadata"]["ownerReferences"][0]["name"], "client");

    // The cgroup holds the workload with the declared limit.
    let pid = server["status"]["pid"].as_u64().unwrap();
    let uid = server["metadata"]["uid"].as_str().unwrap();
    let group = format!("{}-{uid}", d.instance());
    let cgroups = tend::cgroup::detect(Path::new("/sys/fs/cgroup")).unwrap();
    assert!(cgroups.procs(&group).unwrap().contains(&(pid as i32)));
    let file = cgroups.limit_file(&group, Resource::Memory).unwrap();
    let limit = std::fs::read_to_string(file).unwrap();
    assert_eq!(limit.trim(), (32u64 << 20).to_string());

    // The daemon crashes; the workloads do not, and are adopted, not restarted.
    let client_pid = client["status"]["pid"].as_u64().unwrap();
    d.restart();
    let server2 = d.wait_ready("container", "server", t);
    let client2 = d.wait_ready("container", "client", t);
    assert_eq!(server2["status"]["pid"].as_u64(), Some(pid));
    assert_eq!(client2["status"]["pid"].as_u64(), Some(client_pid));
    assert_eq!(server2["status"]["restartCount"], 0);

    // A State in use cannot go while its Sandboxes exist.
    let out = d.tend(&["delete", "state", "busybox"]);
    assert!(out.status.success());
    // The controller's answer to the delete is the positive signal: Ready=False, InUse, naming
    // a user; only then is "still there" a finding.
    let held = d.wait("state", "busybox", "held as InUse", |o| {
        o["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["reason"] == "InUse")
    });
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    let msg = held["status"]["conditions"].to_string();
    assert!(
        msg.contains("rootfs"),
        "the InUse message names a user: {msg}"
    );
    let instance = std::fs::read_to_string(d.path().join("instance-id"))
        .unwrap()
        .trim()
        .to_string();
    let state_dir = d.path().display().to_string();
    drop(d);

    // Deleting everything leaves nothing of this daemon's on the host.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the workload stops when its Container goes"
    );
    let named = |dir: &str| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let netns: Vec<_> = named("/run/netns")
        .into_iter()
        .filter(|n| n.contains(&instance))
        .collect();
    assert!(netns.is_empty(), "network namespaces left: {netns:?}");
    let prefix = format!("{instance}-");
    let cgroups = tend::cgroup::find_groups(Path::new("/sys/fs/cgroup"), &prefix).unwrap();
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    let links = std::process::Command::new("ip")
        .args(["-d", "-o", "link"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains(&format!("tend:{instance}")),
        "links left: {links}"
    );
    let shims: Vec<_> = named("/proc")
        .into_iter()
        .filter_map(|p| std::fs::read(format!("/proc/{p}/cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("shim") && c.contains(&state_dir))
        .collect();
    assert!(shims.is_empty(), "shims left: {shims:?}");
}
