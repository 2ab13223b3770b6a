//! Isolation by default, on the real kernel: a default native container holds what `docker run`
//! holds (capabilities, seccomp) plus `no_new_privs`, cannot escape by the usual routes, and
//! sees neither the host's processes, interfaces nor files; a privileged one can (so the battery
//! is able to fail).

mod common;

use common::daemon::Daemon;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const APPLETS: [&str; 18] = [
    "sh", "echo", "sleep", "cat", "head", "wc", "mount", "mknod", "insmod", "unshare", "true",
    "mkdir", "ip", "ls", "grep", "test", "id", "ps",
];

/// `masked` reads /proc/kcore (where the kernel has it), /proc/timer_list and /proc/keys.
/// Each attempt prints `name=ok` or `name=refused:<error>`; `DONE` ends the battery.
const BATTERY: &str = r#"r() { n=$1; shift; if "$@" >/dev/null 2>/tmp/err; then echo "$n=ok"; else echo "$n=refused:$(head -c 100 /tmp/err)"; fi; }
mkdir -p /tmp/m
r mount mount -t tmpfs none /tmp/m
r masked sh -c 'for f in /proc/kcore /proc/timer_list /proc/keys; do head -c 16 $f; done 2>/dev/null | grep -q .'
r sysctl sh -c 'echo 300 > /proc/sys/kernel/ns_last_pid'
r mknod mknod /tmp/sda b 8 0
echo junk > /tmp/x.ko
r module insmod /tmp/x.ko
r userns unshare -U -r true
r sys sh -c 'cat /sys/kernel/mm/ksm/run > /sys/kernel/mm/ksm/run'
echo "links=$(ip -o link | wc -l) lo=$(ip -o link | grep -c ': lo:')"
echo "procs=$(ls /proc | grep -c '^[0-9]')"
echo DONE; exec sleep 3600"#;

fn container(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: {name}}}\nspec:\n  rootfs: {{state: bb}}\n  command: [/bin/sh, -c, {BATTERY:?}]\n  stopGracePeriodSeconds: 0\n{extra}"
    )
}

/// The container's log once the battery printed `DONE`.
fn battery_output(d: &Daemon, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = d.tend(&["logs", name]);
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        if s.contains("DONE") {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: no DONE in {s}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn result<'a>(out: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name}=");
    out.lines()
        .find_map(|l| l.split_once(&prefix).map(|(_, r)| r))
        .unwrap_or_else(|| panic!("{name} missing in {out}"))
}

/// `Cap*`, `NoNewPrivs`, `Seccomp` lines of `/proc/<pid>/status`.
fn status_of(pid: i64) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.starts_with("Cap") || *k == "NoNewPrivs" || *k == "Seccomp")
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// A `docker run -d` of the test image, removed on drop (also when the test fails).
struct DockerRun(String);

impl DockerRun {
    fn start() -> Self {
        let name = common::unique("tend-iso-");
        let out = Command::new("docker")
            .args([
                "run",
                "-d",
                "--name",
                &name,
                "tend-test/busybox:latest",
                "sleep",
                "3600",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        DockerRun(name)
    }

    fn pid(&self) -> i64 {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Pid}}", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}

impl Drop for DockerRun {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

fn daemon_with_state() -> (Daemon, tempfile::TempDir) {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("host-marker"), "host").unwrap();
    let rootfs = common::fixtures::busybox_rootfs(src.path(), &APPLETS);
    let d = Daemon::start(&["--snapshot-backend", "copy"]);
    d.apply(&format!(
        "apiVersion: tend.dev/v1\nkind: State\nmetadata: {{name: bb}}\nspec: {{source: {{directory: {:?}}}}}\n",
        rootfs.display().to_string()
    ));
    d.wait_ready("state", "bb", Duration::from_secs(30));
    (d, src)
}

#[test]
fn a_default_container_holds_what_docker_gives_and_cannot_escape() {
    if !common::privileged("a_default_container_holds_what_docker_gives_and_cannot_escape") {
        return;
    }
    let (d, src) = daemon_with_state();
    d.apply(&container("boxed", ""));
    let out = battery_output(&d, "boxed");
    let v: Value = d.get("container", "boxed").unwrap();
    let pid = v["status"]["pid"].as_i64().unwrap();

    // Capabilities and seccomp as `docker run` of the same busybox, plus no_new_privs.
    let docker = DockerRun::start();
    let (ours, theirs) = (status_of(pid), status_of(docker.pid()));
    for k in ["CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb", "Seccomp"] {
        assert_eq!(ours[k], theirs[k], "{k}: tend {ours:?} docker {theirs:?}");
    }
    assert_eq!(ours["CapBnd"], "00000000a80425fb");
    assert_eq!(ours["Seccomp"], "2");
    assert_eq!(ours["NoNewPrivs"], "1");

    // The escape battery: every attempt refused.
    for name in [
        "mount", "masked", "sysctl", "mknod", "module", "userns", "sys",
    ] {
        assert!(
            result(&out, name).starts_with("refused"),
            "{name} was allowed:\n{out}"
        );
    }
    assert!(result(&out, "module").contains("not permitted"), "{out}");
    assert!(result(&out, "userns").contains("not permitted"), "{out}");
    // Its own network namespace with only lo; its own processes only.
    assert!(out.contains("links=1 lo=1"), "{out}");
    let procs: usize = result(&out, "procs").trim().parse().unwrap();
    assert!(procs < 10, "sees {procs} processes:\n{out}");
    // The host's files are not there (the State is a copy; the source dir is not mounted).
    let marker = src.path().join("host-marker");
    let cmd = format!("test -e {} && echo SEEN || echo UNSEEN", marker.display());
    let exec = d.tend(&["exec", "boxed", "--", "sh", "-c", &cmd]);
    assert_eq!(String::from_utf8_lossy(&exec.stdout).trim(), "UNSEEN");
    // tend exec gets the same confinement.
    let exec = d.tend(&["exec", "boxed", "--", "cat", "/proc/self/status"]);
    let text = String::from_utf8_lossy(&exec.stdout);
    assert!(text.contains("CapBnd:\t00000000a80425fb"), "{text}");
    assert!(
        text.contains("NoNewPrivs:\t1") && text.contains("Seccomp:\t2"),
        "{text}"
    );
}

#[test]
fn the_same_battery_succeeds_in_a_privileged_container() {
    if !common::privileged("the_same_battery_succeeds_in_a_privileged_container") {
        return;
    }
    let (d, _src) = daemon_with_state();
    d.apply(&container(
        "loose",
        "  securityContext: {privileged: true}\n",
    ));
    let out = battery_output(&d, "loose");
    for name in ["mount", "masked", "sysctl", "mknod", "userns"] {
        assert_eq!(result(&out, name), "ok", "{name}:\n{out}");
    }
    // The kernel itself rejects the junk module: the call got past seccomp and capabilities.
    let module = result(&out, "module");
    assert!(!module.contains("not permitted"), "{out}");
    let v: Value = d.get("container", "loose").unwrap();
    let st = status_of(v["status"]["pid"].as_i64().unwrap());
    assert_eq!(st["Seccomp"], "0");
    assert_ne!(st["CapBnd"], "00000000a80425fb");
}

#[test]
fn host_network_and_capabilities_follow_the_spec() {
    if !common::privileged("host_network_and_capabilities_follow_the_spec") {
        return;
    }
    let (d, _src) = daemon_with_state();
    d.apply(&container(
        "hostnet",
        "  hostNetwork: true\n  securityContext: {capabilities: {add: [NET_ADMIN], drop: [MKNOD]}}\n",
    ));
    let out = battery_output(&d, "hostnet");
    let host_links = std::fs::read_dir("/sys/class/net").unwrap().count();
    assert!(
        out.contains(&format!("links={host_links} ")),
        "host has {host_links} links:\n{out}"
    );
    let v: Value = d.get("container", "hostnet").unwrap();
    let st = status_of(v["status"]["pid"].as_i64().unwrap());
    let want = (0xa80425fb_u64 | (1 << 12)) & !(1 << 27);
    assert_eq!(st["CapBnd"], format!("{want:016x}"));
}
