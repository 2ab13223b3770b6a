//! Usage per container end to end: a real `tend serve` sampling every second, real workloads
//! that burn CPU and hold memory; what a user reads in `status.usage`, `tend top` and the
//! cAdvisor-named series of `/metrics`.

mod common;

use common::daemon::Daemon;
use serde_json::Value;

fn container(name: &str, script: &str) -> String {
    format!(
        "apiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: {name}}}\nspec:\n  command: [/bin/sh, -c, {script:?}]\n  stopGracePeriodSeconds: 0\n  resources: {{cpu: 500m, memory: 256Mi}}\n"
    )
}

fn usage(v: &Value) -> &Value {
    &v["status"]["usage"]
}

#[test]
fn usage_is_sampled_and_shown_in_status_top_and_metrics() {
    if !common::privileged("usage") {
        return;
    }
    let d = Daemon::start(&[
        "--resync-seconds",
        "3600",
        "--snapshot-backend",
        "copy",
        "--usage-interval",
        "1",
    ]);
    // `burn` spins under a 500m CPU limit; `hold` keeps ~40 MB in a shell variable.
    d.apply(&format!(
        "{}---\n{}",
        container("burn", "while :; do :; done"),
        container(
            "hold",
            "x=$(head -c 40000000 /dev/zero | tr '\\0' a); echo held; sleep 3600"
        )
    ));
    // Two samples of `burn` make a rate; `hold` has printed `held` once its memory is taken.
    let burn = d.wait("container", "burn", "a CPU rate in status.usage", |v| {
        usage(v)["cpuCores"].as_f64().is_some()
    });
    let u = usage(&burn);
    let cores = u["cpuCores"].as_f64().unwrap();
    assert!(
        (0.2..=0.75).contains(&cores),
        "a spinning shell under a 500m limit uses about half a core: {u}"
    );
    assert!(u["cpuSeconds"].as_f64().unwrap() > 0.0, "{u}");
    assert!(u["pids"].as_u64().unwrap() >= 1, "{u}");
    assert!(u["sampledAt"].is_string(), "{u}");
    d.wait_for("container", "hold", "its log says held", |_| {
        String::from_utf8_lossy(&d.tend(&["logs", "hold"]).stdout).contains("held")
    });
    let hold = d.wait("container", "hold", "40 MB in its working set", |v| {
        usage(v)["workingSetBytes"]
            .as_u64()
            .is_some_and(|b| b > 40_000_000)
    });
    let ws = usage(&hold)["workingSetBytes"].as_u64().unwrap();
    assert!(ws < 256 << 20, "working set within the memory limit: {ws}");

    // tend top: burn first (sorted by CPU), in millicores; hold has the larger working set.
    let out = d.tend(&["top"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("CPU(cores)"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("burn ") && lines[1].contains('m'),
        "{text}"
    );
    let out = d.tend(&["top", "--sort-by", "memory"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().nth(1).unwrap().starts_with("hold "), "{text}");

    // /metrics: cAdvisor's names, one series per container with its name and uid.
    let (code, metrics) = d.http("GET", "/metrics", None, "");
    assert_eq!(code, 200);
    let uid = burn["metadata"]["uid"].as_str().unwrap();
    for family in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_usage_bytes",
        "container_threads",
    ] {
        let prefix = format!(
            "{family}{{namespace=\"default\",name=\"burn\",container=\"burn\",id=\"{uid}\"}} "
        );
        let line = metrics.lines().find(|l| l.starts_with(&prefix));
        let value: f64 = line
            .and_then(|l| l[prefix.len()..].parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"));
        assert!(value > 0.0, "{family}: {value}");
        assert!(metrics.contains(&format!("# TYPE {family} ")), "{family}");
    }

    // Deleted: no sample left for it.
    let out = d.tend(&["delete", "container", "burn", "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, metrics) = d.http("GET", "/metrics", None, "");
    assert!(!metrics.contains("name=\"burn\""), "{metrics}");
}
