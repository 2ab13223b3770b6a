//! `tend bench container`: apply→Running latency, a 200-container apply, kill→restarted
//! latency, then the peers that are installed on the same busybox rootfs (`super::peers`).
//! Two setups: containers on the host filesystem with limits, and the case — each on its
//! own Sandbox of a busybox State (btrfs), with a Network address and limits.

use super::daemon::container_status as status;
use super::daemon::{BenchDaemon, BenchOptions};
use super::{emit, note, report, Figure};
use std::path::Path;
use std::time::{Duration, Instant};
use tend_schema::kinds::container::ContainerStatus;
use tend_schema::store::{SqliteStore, Store};
use tend_schema::{AnyObject, Kind, ObjectKey};

/// The bench container; `isolated: false` turns the default isolation off (all capabilities,
/// no seccomp, no masked paths, no_new_privs off, the host's network without networks), to
/// measure what it costs.
fn spec(full: bool, isolated: bool) -> serde_json::Value {
    let mut s = serde_json::json!({
        "command": ["/bin/sleep", "3600"],
        "resources": {"memory": "64Mi", "cpu": "250m", "pids": 64},
        "stopGracePeriodSeconds": 0
    });
    if full {
        s["rootfs"] = serde_json::json!({"state": "busybox"});
        s["networks"] = serde_json::json!([{"name": "bench"}]);
    }
    if !isolated {
        s["securityContext"] = serde_json::json!({"privileged": true, "noNewPrivileges": false});
        s["hostNetwork"] = serde_json::json!(!full);
    }
    s
}

/// A busybox rootfs (`/bin/busybox`, `sh`, `sleep`) in `dir`: the full setup's State and the
/// peers' image and bundle.
pub(super) fn busybox_rootfs(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let root = dir.join("rootfs");
    for d in ["bin", "tmp", "proc", "dev", "sys"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))?;
    for a in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a))?;
    }
    Ok(root)
}

/// Creates the State and Network the full setup uses and waits for both to be Ready.
async fn full_setup(store: &SqliteStore, rootfs: &Path) -> anyhow::Result<()> {
    let state = AnyObject::new(
        Kind::State,
        "default",
        "busybox",
        serde_json::json!({"source": {"directory": rootfs}}),
    );
    let net = AnyObject::new(
        Kind::Network,
        "default",
        "bench",
        serde_json::json!({"subnet": "10.251.0.0/16"}),
    );
    store.apply(vec![state, net], false).await?;
    for key in [
        ObjectKey::new(Kind::State, "default", "busybox"),
        ObjectKey::new(Kind::Network, "default", "bench"),
    ] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let o = store.get(&key).await?;
            let st: tend_schema::meta::CommonStatus =
                serde_json::from_value(o.status).unwrap_or_default();
            if st.is_ready(o.metadata.generation) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{key} not Ready: {:?}",
                st.condition("Ready")
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(())
}

/// Waits until `pred` holds for the container's status; polls the local store every 0.5 ms.
async fn until(
    store: &SqliteStore,
    key: &ObjectKey,
    pred: impl Fn(&ContainerStatus) -> bool,
) -> anyhow::Result<()> {
    super::daemon::until_status(store, key, Duration::from_micros(500), pred)
        .await
        .map(drop)
}

fn running(s: &ContainerStatus) -> bool {
    s.common.phase.as_deref() == Some("Running") && s.pid.is_some()
}

/// Runs the benchmark with an in-process daemon on a temporary state dir; `single` samples of
/// one apply each, then one apply of `bulk` containers, then `kills` kill→restart samples.
/// `isolated: false` runs them without the default isolation (see [`spec`]).
pub async fn run(single: usize, bulk: usize, kills: usize, isolated: bool) -> anyhow::Result<()> {
    for full in [false, true] {
        // Host-filesystem containers need no loop image; the full setup uses btrfs.
        let opts = match full {
            true => BenchOptions::btrfs(2 << 30),
            false => BenchOptions::default(),
        };
        let d = BenchDaemon::start("ct", opts).await?;
        note(format_args!(
            "tend bench container ({}{}): state dir {}, instance {}",
            if isolated { "" } else { "isolation off; " },
            if full {
                "each on its own Sandbox of a btrfs State, with a Network and limits"
            } else {
                "host filesystem, limits"
            },
            d.state_dir().display(),
            d.instance()
        ));
        let result = async {
            if full {
                full_setup(&d.store, &busybox_rootfs(&d.dir)?).await?;
            }
            figures(&d.store, (single, bulk, kills), full, isolated).await
        }
        .await;
        let stopped = d.stop().await;
        result?;
        stopped?;
    }
    super::peers::run(single).await
}

async fn figures(
    store: &SqliteStore,
    (single, bulk, kills): (usize, usize, usize),
    full: bool,
    isolated: bool,
) -> anyhow::Result<()> {
    let mut lat = Vec::new();
    for i in 0..single {
        let key = ObjectKey::new(Kind::Container, "default", format!("one-{i}"));
        let t = Instant::now();
        store
            .create(AnyObject::new(
                Kind::Container,
                "default",
                &key.name,
                spec(full, isolated),
            ))
            .await?;
        until(store, &key, running).await?;
        lat.push(t.elapsed());
    }
    let setup = if full {
        "own Sandbox + Network"
    } else {
        "host fs"
    };
    report(&format!("apply -> Running (1 container), {setup}"), lat);

    let objs: Vec<AnyObject> = (0..bulk)
        .map(|i| {
            AnyObject::new(
                Kind::Container,
                "default",
                &format!("bulk-{i}"),
                spec(full, isolated),
            )
        })
        .collect();
    let t = Instant::now();
    store.apply(objs, false).await?;
    for i in 0..bulk {
        until(
            store,
            &ObjectKey::new(Kind::Container, "default", format!("bulk-{i}")),
            running,
        )
        .await?;
    }
    let name = format!("apply of many -> all Running, {setup}");
    emit(&Figure::rate(name, bulk, t.elapsed()));

    let mut lat = Vec::new();
    for i in 0..kills.min(bulk) {
        let key = ObjectKey::new(Kind::Container, "default", format!("bulk-{i}"));
        let Some(pid) = status(store, &key).await.and_then(|s| s.pid) else {
            continue;
        };
        let t = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        until(store, &key, |s| running(s) && s.pid != Some(pid)).await?;
        lat.push(t.elapsed());
    }
    report(&format!("kill -9 -> restarted, {setup}"), lat);
    Ok(())
}
