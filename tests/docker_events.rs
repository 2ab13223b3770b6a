//! The event stream across a lost connection to dockerd: the driver talks to the real dockerd
//! through a unix-socket proxy the test owns; cutting the proxy is "dockerd went away" without
//! disturbing the shared dockerd. The stream must report an error, resync when the socket is back,
//! and replay the event that happened while it was cut.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use tend::docker::{ContainerEventKind, DockerDriver, DockerEvent, DockerSpec, Owner};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

const DOCKER_SOCK: &str = "/var/run/docker.sock";

/// A unix-socket proxy to dockerd; dropping it closes every proxied connection.
struct Proxy {
    tasks: JoinSet<()>,
}

impl Proxy {
    async fn start(path: &Path) -> Proxy {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut upstream) = UnixStream::connect(DOCKER_SOCK).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Proxy { tasks }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

async fn next_event(
    events: &mut (impl futures::Stream<Item = Result<DockerEvent, tend::docker::DockerError>> + Unpin),
) -> Result<DockerEvent, tend::docker::DockerError> {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event stream item within 10 s")
        .expect("the event stream never ends")
}

#[tokio::test]
async fn event_stream_survives_losing_dockerd_and_replays_missed_events() {
    if !common::privileged("event_stream_survives_losing_dockerd_and_replays_missed_events") {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/docker-test-image.sh");
    assert!(Command::new(script).status().unwrap().success());
    let dir = tempfile::tempdir().unwrap();
    let sock: PathBuf = dir.path().join("docker.sock");
    let proxy = Proxy::start(&sock).await;
    let d = DockerDriver::connect(Some(sock.to_str().unwrap())).unwrap();
    let owner = Owner {
        uid: uuid::Uuid::new_v4().to_string(),
        namespace: "default".into(),
        name: common::unique("ev"),
    };
    let _clean = Cleanup(owner.container_name());
    let spec = DockerSpec {
        image: "tend-test/busybox:latest".into(),
        cmd: vec!["sleep".into(), "60".into()],
        ..Default::default()
    };

    let mut events = d.events();
    let id = d.create_and_start(&owner, &spec).await.unwrap();
    loop {
        if let DockerEvent::Container(ev) = next_event(&mut events).await.unwrap() {
            if ev.container_id == id && ev.kind == ContainerEventKind::Start {
                break;
            }
        }
    }

    // "dockerd goes away": the stream reports it instead of hanging or panicking.
    drop(proxy);
    // The stream is host-wide: other tests' containers may have events already in flight.
    let err = loop {
        match next_event(&mut events).await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(err.is_unavailable(), "{err}");
    assert!(d.inspect(&id).await.unwrap_err().is_unavailable());

    // While the driver cannot see dockerd, the container is removed behind its back.
    let out = Command::new("docker")
        .args(["rm", "-f", &id])
        .output()
        .unwrap();
    assert!(out.status.success());

    // "dockerd is back": Resync first, then the missed destroy is replayed.
    let _proxy = Proxy::start(&sock).await;
    let mut resynced = false;
    loop {
        match next_event(&mut events).await {
            Err(e) => assert!(e.is_unavailable() && !resynced, "{e}"),
            Ok(DockerEvent::Resync) => resynced = true,
            Ok(DockerEvent::Container(ev)) => {
                if ev.container_id == id && ev.kind == ContainerEventKind::Destroy {
                    assert!(resynced, "Resync comes before replayed events");
                    break;
                }
            }
        }
    }
}
