//! `securityContext.userNamespace: true` on the real kernel: container root is an unprivileged
//! host uid/gid range allocated per Container (recorded in the store, disjoint between
//! Containers, kept across a daemon restart, free again after a delete), and the Sandbox is
//! id-mapped so that host-root files show as root inside and what root writes inside is owned
//! by host root on disk. A filesystem that refuses id-mapping keeps the Container from starting
//! with a condition that says so.

mod common;

use common::daemon::Daemon;
use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tend_schema::store::Store;

const APPLETS: [&str; 11] = [
    "sh", "echo", "sleep", "cat", "id", "stat", "chown", "unshare", "true", "head", "httpd",
];

/// Prints what the container sees of its ids, writes two files into its Sandbox, then sleeps.
const SCRIPT: &str = "echo uid=$(id -u) gid=$(id -g); echo owner=$(stat -c %u:%g /bin/busybox); echo hi > /by-root; echo hi > /by-4242; chown 4242:4242 /by-4242; echo DONE; exec sleep 3600";

fn container(name: &str) -> String {
    format!(
        "apiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: {name}}}\nspec:\n  rootfs: {{state: bb}}\n  command: [/bin/sh, -c, {SCRIPT:?}]\n  stopGracePeriodSeconds: 0\n  securityContext: {{userNamespace: true}}\n"
    )
}

/// A daemon (btrfs snapshots on its embedded loop image unless `args` say otherwise) with the
/// busybox State `bb`.
fn daemon_with_state(mut d: Daemon) -> (Daemon, tempfile::TempDir) {
    let src = tempfile::tempdir().unwrap();
    let rootfs = common::fixtures::busybox_rootfs(src.path(), &APPLETS);
    d.spawn();
    d.apply(&format!(
        "apiVersion: tend.dev/v1\nkind: State\nmetadata: {{name: bb}}\nspec: {{source: {{directory: {:?}}}}}\n",
        rootfs.display().to_string()
    ));
    d.wait_ready("state", "bb", Duration::from_secs(60));
    (d, src)
}

fn btrfs_daemon() -> Daemon {
    Daemon::unstarted(
        "tend-userns",
        &["--snapshot-backend", "btrfs", "--btrfs-image-size", "512Mi"],
    )
}

/// The container's log once the script printed `DONE`.
fn output(d: &Daemon, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = d.tend(&["logs", name]);
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        if s.contains("DONE") {
            return s;
        }
        let v = d.get("container", name);
        assert!(
            Instant::now() < deadline,
            "{name}: no DONE in {s:?}\nobject: {v:#?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `(hostId, size)` of `status.userNamespace` and the workload pid.
fn range_and_pid(v: &Value) -> ((u64, u64), i64) {
    let ns = &v["status"]["userNamespace"];
    let range = (
        ns["hostId"]
            .as_u64()
            .unwrap_or_else(|| panic!("no status.userNamespace in {v:#}")),
        ns["size"].as_u64().unwrap(),
    );
    (range, v["status"]["pid"].as_i64().unwrap())
}

/// The whitespace-separated fields of line `key:` of `/proc/<pid>/status`.
fn status_ids(pid: i64, key: &str) -> Vec<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {text}"));
    line.split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// The host directory of the Container's own Sandbox (made from its rootfs State).
fn sandbox_path(d: &Daemon, container: &str) -> PathBuf {
    let name = format!("{container}-rootfs");
    let v = d.wait_ready("sandbox", &name, Duration::from_secs(30));
    PathBuf::from(v["status"]["path"].as_str().unwrap())
}

fn running(d: &Daemon, name: &str) -> Value {
    d.wait("container", name, "Running with a pid", |v| {
        v["status"]["phase"] == "Running" && v["status"]["pid"].as_i64().is_some()
    })
}

#[test]
fn container_root_is_an_unprivileged_host_range_and_sees_its_sandbox_as_root() {
    if !common::privileged(
        "container_root_is_an_unprivileged_host_range_and_sees_its_sandbox_as_root",
    ) {
        return;
    }
    let (d, _src) = daemon_with_state(btrfs_daemon());
    d.apply(&container("mapped"));
    let out = output(&d, "mapped");
    let v = running(&d, "mapped");
    let ((host, size), pid) = range_and_pid(&v);

    // Inside: root, and the busybox tree (host root's files) owned by root.
    assert!(out.contains("uid=0 gid=0"), "{out}");
    assert!(
        out.contains("owner=0:0"),
        "host-root files must show as root inside: {out}"
    );

    // Outside: the workload is the allocated unprivileged host id, from the default pool.
    assert_eq!(size, 65536);
    assert!(host >= 1_000_000_000, "host id {host} is not from the pool");
    assert_eq!(status_ids(pid, "Uid"), vec![host; 4]);
    assert_eq!(status_ids(pid, "Gid"), vec![host; 4]);
    for map in ["uid_map", "gid_map"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{map}")).unwrap();
        assert_eq!(words(&text), words(&format!("0 {host} 65536")), "{map}");
    }

    // Files written inside, seen on the host through the Sandbox's own path (not the
    // id-mapped mount): root's file is owned by host root (container uid 0 ↔ on-disk 0 through
    // the id-mapped mount), and a chown to 4242 inside is 4242 on disk.
    let sandbox = sandbox_path(&d, "mapped");
    let by_root = std::fs::metadata(sandbox.join("by-root")).unwrap();
    assert_eq!((by_root.uid(), by_root.gid()), (0, 0));
    let by_4242 = std::fs::metadata(sandbox.join("by-4242")).unwrap();
    assert_eq!((by_4242.uid(), by_4242.gid()), (4242, 4242));

    // tend exec joins the same user namespace.
    let exec = d.tend(&[
        "exec",
        "mapped",
        "--",
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map",
    ]);
    let text = String::from_utf8_lossy(&exec.stdout);
    assert_eq!(words(&text), words(&format!("0 0 {host} 65536")), "{text}");
    // The default confinement still holds inside the user namespace.
    let exec = d.tend(&["exec", "mapped", "--", "cat", "/proc/self/status"]);
    let text = String::from_utf8_lossy(&exec.stdout);
    assert!(text.contains("CapBnd:\t00000000a80425fb"), "{text}");
    assert!(
        text.contains("NoNewPrivs:\t1") && text.contains("Seccomp:\t2"),
        "{text}"
    );
    let exec = d.tend(&["exec", "mapped", "--", "unshare", "-U", "-r", "true"]);
    assert!(
        !exec.status.success(),
        "a nested user namespace was allowed"
    );
    // Root in a user namespace may still serve on a port below 1024 (as in Docker), in its own
    // network namespace only: the host's setting is untouched. (httpd binds, then daemonizes
    // with its stdio on /dev/null, so the exec ends.)
    let exec = d.tend(&[
        "exec",
        "mapped",
        "--",
        "sh",
        "-c",
        "httpd -p 80 && cat /proc/net/tcp /proc/net/tcp6 | grep -cE ':0050 0+:0000 0A'",
    ]);
    let text = String::from_utf8_lossy(&exec.stdout);
    assert_eq!(
        text.trim(),
        "1",
        "nothing listens on :80: {}",
        String::from_utf8_lossy(&exec.stderr)
    );
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    assert_ne!(host.trim(), "0", "the host's own setting was changed");
}

#[test]
fn ranges_are_disjoint_survive_a_daemon_restart_and_are_free_again_after_delete() {
    if !common::privileged(
        "ranges_are_disjoint_survive_a_daemon_restart_and_are_free_again_after_delete",
    ) {
        return;
    }
    let (mut d, _src) = daemon_with_state(btrfs_daemon());
    d.apply(&container("a"));
    d.apply(&container("b"));
    let (ra, pa) = range_and_pid(&running(&d, "a"));
    let (rb, pb) = range_and_pid(&running(&d, "b"));
    assert!(
        ra.0 + ra.1 <= rb.0 || rb.0 + rb.1 <= ra.0,
        "ranges overlap: {ra:?} {rb:?}"
    );
    assert_eq!(status_ids(pa, "Uid")[0], ra.0);
    assert_eq!(status_ids(pb, "Uid")[0], rb.0);
    let store = d.store();
    let held = |d: &Daemon| d.rt().block_on(store.list_id_ranges(None)).unwrap();
    let uid_a = d.get("container", "a").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(held(&d).len(), 2);

    // A daemon restart keeps the ranges, and the workloads run on untouched.
    d.restart();
    d.wait_readyz();
    for (name, range, pid) in [("a", ra, pa), ("b", rb, pb)] {
        let v = running(&d, name);
        assert_eq!(range_and_pid(&v), (range, pid), "{name} after the restart");
        assert_eq!(status_ids(pid, "Uid")[0], range.0);
    }
    assert_eq!(held(&d).len(), 2);

    // Deleted, `a`'s range is released, and the next user-namespaced Container gets it.
    assert!(d.tend(&["delete", "container", "a"]).status.success());
    d.wait_for("container", "a", "deleted", |v| v.is_none());
    let left = held(&d);
    assert!(left.iter().all(|r| r.owner_uid != uid_a), "{left:?}");
    assert!(!common::daemon::alive(pa as i32), "a's workload still runs");
    d.apply(&container("c"));
    let (rc, pc) = range_and_pid(&running(&d, "c"));
    assert_eq!(rc, ra, "the freed range is handed out again");
    assert_eq!(status_ids(pc, "Uid")[0], ra.0);
}

/// `status reason: message` of the Ready condition.
fn ready(v: &Value) -> String {
    let c = v["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    format!("{} {}: {}", c["status"], c["reason"], c["message"])
}

/// A ramfs on a temp dir (ramfs has no id-mapped mount support); Drop unmounts it.
struct Ramfs(tempfile::TempDir);

impl Drop for Ramfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_filesystem_that_refuses_id_mapping_keeps_the_container_from_starting() {
    if !common::privileged("a_filesystem_that_refuses_id_mapping_keeps_the_container_from_starting")
    {
        return;
    }
    let mnt = Ramfs(
        tempfile::Builder::new()
            .prefix("tend-ramfs")
            .tempdir()
            .unwrap(),
    );
    nix::mount::mount(
        Some("ramfs"),
        mnt.0.path(),
        Some("ramfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let mut d = Daemon::unstarted("tend-userns", &["--snapshot-backend", "copy"]);
    let state: &Path = &mnt.0.path().join("state");
    std::fs::create_dir_all(state).unwrap();
    d.at = Some(state.to_owned());
    let (d, _src) = daemon_with_state(d);
    d.apply(&container("refused"));
    let v = d.wait("container", "refused", "refused with a reason", |v| {
        ready(v).contains("UserNamespaceUnsupported")
    });
    let cond = ready(&v);
    assert!(cond.contains("mount_setattr"), "{cond}");
    assert!(cond.contains("securityContext.userNamespace"), "{cond}");
    assert!(v["status"]["pid"].is_null(), "it started: {v:#}");
    assert_ne!(v["status"]["phase"], "Running");
}
