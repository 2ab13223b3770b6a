//! `tend bench docker`: apply→Running of a docker Container beside a raw Engine API
//! create+start of the same image and spec in the same run (interleaved), 40 containers at once
//! both ways, and `docker rm -f` (through the API) → repaired latency. Needs dockerd and the
//! test image (`deploy/docker-test-image.sh`).

// The burst polls slower (`until_every`): its figure is seconds, and a busy poll would steal
// CPU from the daemon on a 2-core machine.
use super::daemon::{container_status as status, until_status as until_every};
use super::daemon::{BenchDaemon, BenchOptions};
use super::{emit, report, Figure};
use crate::docker::{DockerDriver, DockerSpec, Owner};
use std::time::{Duration, Instant};
use tend_schema::kinds::container::ContainerStatus;
use tend_schema::store::{SqliteStore, Store};
use tend_schema::{AnyObject, Kind, ObjectKey};

const IMAGE: &str = "tend-test/busybox:latest";

fn spec() -> serde_json::Value {
    serde_json::json!({
        "runtime": "docker",
        "image": IMAGE,
        "command": ["sleep", "3600"],
        "resources": {"memory": "64Mi", "cpu": "250m", "pids": 64},
        "stopGracePeriodSeconds": 0
    })
}

fn raw_spec() -> DockerSpec {
    DockerSpec {
        image: IMAGE.into(),
        cmd: vec!["sleep".into(), "3600".into()],
        memory: Some(64 << 20),
        cpu_millicores: Some(250),
        pids: Some(64),
        ..Default::default()
    }
}

async fn until(
    store: &SqliteStore,
    key: &ObjectKey,
    pred: impl Fn(&ContainerStatus) -> bool,
) -> anyhow::Result<ContainerStatus> {
    until_every(store, key, Duration::from_millis(1), pred).await
}

fn running(s: &ContainerStatus) -> bool {
    s.common.phase.as_deref() == Some("Running") && s.pid.is_some() && s.container_id.is_some()
}

/// Runs the benchmark: `single` interleaved samples each way, a burst of `burst`, `repairs`
/// rm -f samples. Everything it creates is removed again.
pub async fn run(single: usize, burst: usize, repairs: usize) -> anyhow::Result<()> {
    let raw = DockerDriver::connect(None)?;
    raw.ping().await?;
    anyhow::ensure!(
        raw.image_exists(IMAGE).await?,
        "image {IMAGE} missing: run deploy/docker-test-image.sh"
    );
    let d = BenchDaemon::start("dk", BenchOptions::default()).await?;
    super::note(format_args!(
        "tend bench docker: state dir {}, instance {}",
        d.state_dir().display(),
        d.instance()
    ));
    let mut raw_ids = Vec::new();
    let result = figures(&d.store, &raw, &mut raw_ids, single, burst, repairs).await;
    for id in raw_ids {
        let _ = raw.remove(&id, true).await;
    }
    let stopped = d.stop().await;
    result.and(stopped)
}

async fn raw_one(raw: &DockerDriver, tag: &str, ids: &mut Vec<String>) -> anyhow::Result<()> {
    let owner = Owner {
        uid: format!("bench-{}-{tag}", std::process::id()),
        namespace: "bench".into(),
        name: tag.into(),
    };
    ids.push(raw.create_and_start(&owner, &raw_spec()).await?);
    Ok(())
}

async fn figures(
    store: &SqliteStore,
    raw: &DockerDriver,
    raw_ids: &mut Vec<String>,
    single: usize,
    burst: usize,
    repairs: usize,
) -> anyhow::Result<()> {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..single {
        let t = Instant::now();
        raw_one(raw, &format!("one-{i}"), raw_ids).await?;
        theirs.push(t.elapsed());
        let key = ObjectKey::new(Kind::Container, "default", format!("one-{i}"));
        let t = Instant::now();
        store
            .create(AnyObject::new(
                Kind::Container,
                "default",
                &key.name,
                spec(),
            ))
            .await?;
        until(store, &key, running).await?;
        ours.push(t.elapsed());
    }
    report("Engine API create+start (raw)", theirs);
    report("tend apply -> Running (docker)", ours);

    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..burst {
        let raw = raw.clone();
        set.spawn(async move {
            let mut ids = Vec::new();
            raw_one(&raw, &format!("burst-{i}"), &mut ids)
                .await
                .map(|_| ids)
        });
    }
    while let Some(r) = set.join_next().await {
        raw_ids.extend(r??);
    }
    emit(&Figure::rate(
        "raw: N create+start at once",
        burst,
        t.elapsed(),
    ));

    let objs: Vec<AnyObject> = (0..burst)
        .map(|i| AnyObject::new(Kind::Container, "default", &format!("burst-{i}"), spec()))
        .collect();
    let t = Instant::now();
    store.apply(objs, false).await?;
    for i in 0..burst {
        let key = ObjectKey::new(Kind::Container, "default", format!("burst-{i}"));
        until_every(store, &key, Duration::from_millis(10), running).await?;
    }
    emit(&Figure::rate(
        "tend: apply N -> all Running",
        burst,
        t.elapsed(),
    ));

    let mut lat = Vec::new();
    for i in 0..repairs.min(burst) {
        let key = ObjectKey::new(Kind::Container, "default", format!("burst-{i}"));
        let Some(id) = status(store, &key).await.and_then(|s| s.container_id) else {
            continue;
        };
        let t = Instant::now();
        raw.remove(&id, true).await?;
        until(store, &key, |s| {
            running(s) && s.container_id.as_deref() != Some(&id)
        })
        .await?;
        lat.push(t.elapsed());
    }
    report("docker rm -f -> Running again", lat);
    Ok(())
}
