//! The benches a person runs by hand still run, at a small size, and what they report holds:
//! `tend bench probes` (no container restarted or seen not Ready across a daemon restart, no
//! probe failed), `tend bench ports` (every target answered, Docker's peer included), `tend
//! bench cli` (every sample applied and waited for both ways) and `tend bench rollback` (every
//! round rolled back, on btrfs and copy). Only
//! counts are asserted here, never a time: figures belong to docs/benchmarks.md.

mod common;

use std::process::Command;

/// Runs `tend bench <args> --json` and returns its figures, by name.
fn bench(args: &[&str]) -> std::collections::HashMap<String, serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_tend"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run tend bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tend bench {args:?} failed:\n{stderr}"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            (v["figure"].as_str().unwrap_or_default().to_string(), v)
        })
        .collect()
}

fn scalar(figures: &std::collections::HashMap<String, serde_json::Value>, name: &str) -> f64 {
    figures
        .get(name)
        .and_then(|f| f["value"].as_f64())
        .unwrap_or_else(|| panic!("no figure {name:?} in {figures:#?}"))
}

#[test]
fn the_probe_bench_keeps_every_container_ready_across_a_daemon_restart() {
    if !common::privileged("bench probes") {
        return;
    }
    let f = bench(&["probes", "--exec", "3", "--tcp", "3", "--seconds", "2"]);
    assert_eq!(scalar(&f, "containers restarted across the restart"), 0.0);
    assert_eq!(
        scalar(&f, "containers seen not Ready across the restart"),
        0.0
    );
    for handler in ["tcpSocket", "exec"] {
        let name = format!("{handler} probes failed, 3 tcp + 3 exec");
        assert_eq!(scalar(&f, &name), 0.0, "{name}");
        let runs = &f[&format!("{handler} probe run, 3 tcp + 3 exec")];
        assert!(runs["n"].as_u64().unwrap() >= 3, "{runs}");
    }
    assert!(
        scalar(
            &f,
            "daemon start -> all 6 probed containers confirmed Ready"
        ) > 0.0
    );
}

#[test]
fn the_ports_bench_reaches_the_container_through_tend_and_docker() {
    if !common::privileged("bench ports") {
        return;
    }
    let f = bench(&[
        "ports",
        "--requests",
        "64",
        "--clients",
        "4",
        "--rounds",
        "2",
    ]);
    let skipped: Vec<_> = f.values().filter(|v| v.get("skipped").is_some()).collect();
    assert!(skipped.is_empty(), "a target was skipped: {skipped:?}");
    for target in [
        "direct to the container's address",
        "tend published port, 127.0.0.1 (nftables DNAT)",
        "direct to the docker container's address",
    ] {
        assert_eq!(f[&format!("requests, {target}")]["n"], 64, "{target}");
    }
    let docker = f
        .keys()
        .find(|k| k.starts_with("requests, docker run -p"))
        .unwrap_or_else(|| panic!("no Docker peer in {:#?}", f.keys()));
    assert_eq!(f[docker]["n"], 64);
}

#[test]
fn the_usage_bench_samples_every_container_in_one_pass() {
    if !common::privileged("bench usage") {
        return;
    }
    // The bench fails unless each pass read every container's group.
    let f = bench(&["usage", "--containers", "5", "--passes", "3"]);
    assert_eq!(f["sampling pass, 5 containers (wall)"]["n"], 3);
    assert!(
        scalar(
            &f,
            "sampling CPU at the default 10 s interval, 5 containers"
        ) > 0.0
    );
}

#[test]
fn the_cli_bench_applies_and_waits_both_ways_and_lists_events() {
    if !common::privileged("the_cli_bench_applies_and_waits_both_ways_and_lists_events") {
        return;
    }
    let figures = bench(&["cli", "--samples", "2", "--kubectl", "2"]);
    for name in [
        "tend apply --wait, whole process: Sandbox + Container Ready",
        "same apply + watch in process (no process start)",
    ] {
        let f = figures
            .get(name)
            .unwrap_or_else(|| panic!("no figure {name:?} in {figures:#?}"));
        assert_eq!(f["n"], 2, "{f}");
    }
    // kubectl is not in Debian: its figure may be skipped only where the kubectl suite's own
    // skip is asked for knowingly (TEND_SKIP_KUBECTL=1), as in tests/api_kubectl.rs.
    let k = &figures["kubectl get events, whole process"];
    let skip_ok = std::env::var("TEND_SKIP_KUBECTL").is_ok_and(|v| v == "1");
    assert!(
        k["n"] == 2 || (skip_ok && k["skipped"] == "kubectl not installed"),
        "{k}"
    );
}

#[test]
fn the_rollback_bench_rolls_back_every_round_on_both_backends() {
    if !common::privileged("bench rollback") {
        return;
    }
    let f = bench(&["rollback", "--rounds", "2"]);
    for backend in ["btrfs", "copy"] {
        let name = format!(
            "rollback: deadline -> previous revision Ready, data restored ({backend}, 50 MB Sandbox)"
        );
        assert_eq!(f[&name]["n"], 2, "{name}: {f:#?}");
        let own = format!("container's own stop+start -> Ready (Recreate, {backend})");
        assert_eq!(f[&own]["n"], 2, "{own}: {f:#?}");
    }
}
