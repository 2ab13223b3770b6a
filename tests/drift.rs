//! The drift suite: every kind of host object tend keeps is changed behind its back (workload
//! killed, veth / bridge / netns deleted, bridge address removed, cgroup limit changed, State
//! made writable or deleted, Sandbox deleted, Docker container removed with `rm -f`) and must be
//! put back within a generous bound. The
//! measuring code is `tend bench drift`'s (src/bench/drift.rs), run here for one round; the
//! measured times are printed.

mod common;

use std::time::Duration;

#[test]
fn every_kind_of_drift_is_repaired() {
    if !common::privileged("every_kind_of_drift_is_repaired") {
        return;
    }
    let octet = 100 + std::process::id() % 100;
    let image = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/docker-test-image.sh");
    assert!(std::process::Command::new(image)
        .status()
        .unwrap()
        .success());
    let cfg = tend::bench::drift::DriftConfig {
        exe: env!("CARGO_BIN_EXE_tend").into(),
        rounds: 1,
        resync_seconds: 5,
        timeout: Duration::from_secs(20),
        subnet: format!("10.{octet}.250.0/24"),
        docker_image: Some("tend-test/busybox:latest".into()),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let figures = rt
        .block_on(tend::bench::drift::measure(&cfg))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(figures.len(), tend::bench::drift::DRIFTS.len());
    for f in &figures {
        assert_eq!(f.samples.len(), 1, "{}", f.drift);
        eprintln!("drift: {:<30} repaired in {:?}", f.drift, f.samples[0]);
        assert!(f.samples[0] < Duration::from_secs(20), "{}", f.drift);
    }
}
