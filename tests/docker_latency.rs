//! Apply latency of the driver's create+start against raw Engine API create+start (bollard, no
//! tend code) of the same image in the same run; prints the figures issue 7 compares.
//! Run with `--nocapture` to see them. Only a loose sanity bound is asserted: the host is shared.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, StartContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use tend::docker::{
    DockerDriver, DockerSpec, Owner, LABEL_NAME, LABEL_NAMESPACE, LABEL_SPEC_HASH, LABEL_UID,
};

const IMAGE: &str = "tend-test/busybox:latest";
const ROUNDS: usize = 8;

/// Removes, on drop, every container name this test used.
#[derive(Default)]
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Raw create+start of the same container the driver makes (same labels, empty entrypoint,
/// restart "no", no network), so the figure isolates tend's own cost, not Docker's per-field cost.
async fn raw_create_start(docker: &Docker, name: &str) {
    let labels = [LABEL_UID, LABEL_NAMESPACE, LABEL_NAME, LABEL_SPEC_HASH]
        .map(|k| (k.to_string(), name.to_string()));
    let body = ContainerCreateBody {
        image: Some(IMAGE.into()),
        cmd: Some(vec!["sleep".into(), "60".into()]),
        entrypoint: Some(Vec::new()),
        env: Some(Vec::new()),
        labels: Some(HashMap::from(labels)),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let opts = CreateContainerOptionsBuilder::default().name(name).build();
    let id = docker.create_container(Some(opts), body).await.unwrap().id;
    docker
        .start_container(&id, None::<StartContainerOptions>)
        .await
        .unwrap();
}

#[tokio::test]
async fn create_start_latency_against_raw_engine_api() {
    if !common::privileged("create_start_latency_against_raw_engine_api") {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/docker-test-image.sh");
    assert!(Command::new(script).status().unwrap().success());
    let driver = DockerDriver::connect(None).unwrap();
    driver.ping().await.unwrap(); // connect + negotiate outside the timed region, like raw
    let raw = Docker::connect_with_unix("/var/run/docker.sock", 30, API_DEFAULT_VERSION)
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    let mut clean = Cleanup::default();
    let (mut tend_times, mut raw_times) = (Vec::new(), Vec::new());
    let spec = DockerSpec {
        image: IMAGE.into(),
        cmd: vec!["sleep".into(), "60".into()],
        ..Default::default()
    };
    for round in 0..ROUNDS {
        let owner = Owner {
            uid: uuid::Uuid::new_v4().to_string(),
            namespace: "default".into(),
            name: "bench".into(),
        };
        clean.0.push(owner.container_name());
        let name = common::unique("rawbench");
        clean.0.push(name.clone());
        // Alternate which goes first so neither side systematically pays for the other.
        for tend_turn in [round % 2 == 0, round % 2 != 0] {
            let t0 = Instant::now();
            if tend_turn {
                driver.create_and_start(&owner, &spec).await.unwrap();
                tend_times.push(t0.elapsed());
            } else {
                raw_create_start(&raw, &name).await;
                raw_times.push(t0.elapsed());
            }
        }
    }
    let t0 = Instant::now();
    for name in &clean.0 {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        raw.remove_container(name, Some(opts)).await.unwrap();
    }
    let remove_each = t0.elapsed() / clean.0.len() as u32;
    let (t, r) = (median(tend_times.clone()), median(raw_times.clone()));
    let overhead = (t.as_secs_f64() / r.as_secs_f64() - 1.0) * 100.0;
    println!(
        "docker create+start over {ROUNDS} rounds: tend driver median {t:?} (max {:?}), raw Engine \
         API median {r:?} (max {:?}), overhead {overhead:+.1}%; force-remove {remove_each:?} each",
        tend_times.iter().max().unwrap(),
        raw_times.iter().max().unwrap(),
    );
    assert!(t < Duration::from_secs(5), "create+start took {t:?}");
}
