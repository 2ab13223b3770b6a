//! `tend bench drift`: a real `tend serve` child on a throwaway state dir (btrfs loop image);
//! each kind of host object is changed behind its back and the time until the host is as declared
//! again is measured. tests/drift.rs runs the same with one round and asserts a bound.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use tend_schema::store::{OpenOptions, SqliteStore, Store};
use tend_schema::{AnyObject, Kind, ObjectKey};

use crate::cgroup::CgroupManager;
use crate::net::{names, NetDriver};

/// How to measure.
#[derive(Debug, Clone)]
pub struct DriftConfig {
    /// The `tend` binary to run as the daemon.
    pub exe: PathBuf,
    /// Tamper-and-repair rounds per kind of drift.
    pub rounds: usize,
    /// The daemon's `--resync-seconds` (drift no event reports is found by resync).
    pub resync_seconds: u64,
    /// Give up on one repair after this long.
    pub timeout: Duration,
    /// Subnet of the Network used (must overlap no host route).
    pub subnet: String,
    /// With a local Docker image: a `runtime: docker` Container too, removed with `docker rm -f`.
    pub docker_image: Option<String>,
}

/// Repair times of one kind of drift.
#[derive(Debug, Clone)]
pub struct DriftFigure {
    pub drift: &'static str,
    pub samples: Vec<Duration>,
}

/// The kinds of drift measured, in order.
pub const DRIFTS: [&str; 10] = [
    "workload killed",
    "veth deleted",
    "bridge deleted",
    "bridge address removed",
    "netns deleted",
    "cgroup memory limit changed",
    "State made writable",
    "State subvolume deleted",
    "Sandbox subvolume deleted",
    "Docker container removed (rm -f)",
];

/// The index of the Docker drift in [`DRIFTS`], measured only with a Docker image.
const DOCKER_DRIFT: usize = 9;

/// The host's cgroupfs, where the daemon's driver keeps the worker's group.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A daemon child on a temp dir; Drop kills it, stops its workloads and unmounts the image.
struct Serve {
    dir: PathBuf,
    child: Child,
    exe: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let run = |args: &[&str]| {
            let _ = Command::new(&self.exe)
                .arg("--state-dir")
                .arg(&self.dir)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        // Delete everything through the daemon, then stop it cleanly (it unmounts the image).
        run(&[
            "delete",
            "-f",
            &self.dir.join("drift.yaml").display().to_string(),
            "--wait",
            "--timeout",
            "30",
        ]);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        // Safety net when the delete did not finish: stop what is left of the workloads.
        crate::shim::kill_recorded(&self.dir.join("containers"));
        if let Ok(inst) = std::fs::read_to_string(self.dir.join("instance-id")) {
            let prefix = format!("{}-", inst.trim());
            for g in crate::cgroup::find_groups(Path::new(CGROUP_ROOT), &prefix).unwrap_or_default()
            {
                let _ = crate::cgroup::kill_and_remove_dir(&g);
            }
        }
        let _ = crate::snapshot::loopimg::unmount_and_detach(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spec(subnet: &str, source: &Path, docker_image: Option<&str>) -> String {
    let docker = docker_image.map(|image| format!(
        "---\napiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: dworker}}\nspec:\n  runtime: docker\n  image: {image}\n  \
         command: [/bin/sleep, \"3600\"]\n  stopGracePeriodSeconds: 1\n"
    )).unwrap_or_default();
    let native = format!(
        "apiVersion: tend.dev/v1\nkind: State\nmetadata: {{name: base}}\nspec: {{source: {{directory: {src}}}}}\n---\n\
         apiVersion: tend.dev/v1\nkind: Sandbox\nmetadata: {{name: spare}}\nspec: {{state: base}}\n---\n\
         apiVersion: tend.dev/v1\nkind: Network\nmetadata: {{name: drift}}\nspec: {{subnet: {subnet}}}\n---\n\
         apiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: worker}}\nspec:\n  command: [/bin/sleep, \"3600\"]\n  \
         stopGracePeriodSeconds: 1\n  resources: {{memory: 64Mi, pids: 32}}\n  networks: [{{name: drift}}]\n",
        src = source.display()
    );
    native + &docker
}

async fn get(store: &SqliteStore, kind: Kind, name: &str) -> anyhow::Result<AnyObject> {
    Ok(store.get(&ObjectKey::new(kind, "default", name)).await?)
}

fn ready(o: &AnyObject) -> bool {
    o.status["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn uid(o: &AnyObject) -> String {
    o.metadata.uid.clone().unwrap_or_default()
}

/// How long a run must last not to count toward a crash loop (the Container controller's
/// `backoff_reset`), with a margin.
const CRASH_LOOP_RESET: Duration = Duration::from_millis(10_500);

/// Polls `f` every millisecond until it says true; the time it took, or an error after `timeout`.
async fn until<F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    loop {
        if f().await {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > timeout {
            anyhow::bail!("{what}: not repaired after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Runs every drift `rounds` times against a fresh daemon; returns the repair times.
pub async fn measure(cfg: &DriftConfig) -> anyhow::Result<Vec<DriftFigure>> {
    let dir = std::env::temp_dir().join(format!("tend-drift-{:08x}", rand::random::<u32>()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("bin"))?;
    std::fs::copy("/bin/busybox", src.join("bin/busybox"))?;
    let state = dir.join("state");
    std::fs::create_dir_all(&state)?;
    // Dropped after `serve` (declared before it): the daemon cleans up inside `dir` first.
    let _cleanup_src = scopeguard(dir.clone());
    let child = Command::new(&cfg.exe)
        .arg("--state-dir")
        .arg(&state)
        .args([
            "serve",
            "--snapshot-backend",
            "btrfs",
            "--btrfs-image-size",
            "256Mi",
        ])
        .args(["--resync-seconds", &cfg.resync_seconds.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("serve.log"))?)
        .spawn()?;
    let serve = Serve {
        dir: state.clone(),
        child,
        exe: cfg.exe.clone(),
    };
    let store = Arc::new(SqliteStore::open(state.join("tend.db"), OpenOptions::default()).await?);
    std::fs::write(
        state.join("drift.yaml"),
        spec(&cfg.subnet, &src, cfg.docker_image.as_deref()),
    )?;
    let out = Command::new(&cfg.exe)
        .arg("--state-dir")
        .arg(&state)
        .args(["apply", "-f"])
        .arg(state.join("drift.yaml"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = Duration::from_secs(30);
    let docker = cfg.docker_image.is_some();
    until("first convergence", t, || all_ready(&store, docker)).await?;
    let net = NetDriver::with_default_dir()?;
    let instance = std::fs::read_to_string(state.join("instance-id"))?
        .trim()
        .to_string();
    let mut figures: Vec<DriftFigure> = DRIFTS[..if docker { DRIFTS.len() } else { DOCKER_DRIFT }]
        .iter()
        .map(|d| DriftFigure {
            drift: d,
            samples: Vec::new(),
        })
        .collect();
    for _ in 0..cfg.rounds {
        for (i, fig) in figures.iter_mut().enumerate() {
            let took = match drift_once(i, &store, &net, &instance, cfg.timeout, docker).await {
                Ok(t) => t,
                Err(e) => {
                    let log = std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    anyhow::bail!("{e:#}\n--- serve.log (tail):\n{}", tail.join("\n"));
                }
            };
            fig.samples.push(took);
            // Let the object settle (status written, backoff reset) before the next change.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    drop(serve);
    Ok(figures)
}

fn scopeguard(dir: PathBuf) -> impl Drop {
    struct G(PathBuf);
    impl Drop for G {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    G(dir)
}

/// Applies drift number `i` of [`DRIFTS`] and waits for its repair.
async fn drift_once(
    i: usize,
    store: &Arc<SqliteStore>,
    net: &NetDriver,
    instance: &str,
    timeout: Duration,
    docker: bool,
) -> anyhow::Result<Duration> {
    let worker = get(store, Kind::Container, "worker").await?;
    let network = get(store, Kind::Network, "drift").await?;
    let state = get(store, Kind::State, "base").await?;
    let sandbox = get(store, Kind::Sandbox, "spare").await?;
    let what = DRIFTS[i];
    let bridge = names::bridge_name(&uid(&network));
    let veth = names::host_veth_name(&uid(&worker), 0);
    let netns = format!("{}{instance}-{}", names::NETNS_PREFIX, uid(&worker));
    let state_path = PathBuf::from(state.status["path"].as_str().unwrap_or_default());
    let sandbox_path = PathBuf::from(sandbox.status["path"].as_str().unwrap_or_default());
    // Wherever this host keeps it (v1 memory.limit_in_bytes, v2 memory.max): the driver knows.
    let mem = crate::cgroup::detect(Path::new(CGROUP_ROOT))?.limit_file(
        &format!("{instance}-{}", uid(&worker)),
        crate::cgroup::Resource::Memory,
    )?;
    if i == 0 {
        // A workload killed within 10 s of its start counts as a crash loop and is restarted
        // after a backoff (as Kubernetes does); this figure is the restart path itself.
        let started = worker.status["startedAt"].as_str().unwrap_or_default();
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(started) {
            let ran = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .to_std()
                .unwrap_or_default();
            tokio::time::sleep(CRASH_LOOP_RESET.saturating_sub(ran)).await;
        }
    }
    let t0 = Instant::now();
    match i {
        0 => {
            let pid = worker.status["pid"].as_i64().unwrap_or(0) as i32;
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )?;
            until(what, timeout, || async move {
                get(store, Kind::Container, "worker").await.is_ok_and(|o| {
                    let p = o.status["pid"].as_i64().unwrap_or(0);
                    p != i64::from(pid)
                        && p > 0
                        && Path::new(&format!("/proc/{p}")).exists()
                        && ready(&o)
                })
            })
            .await?;
        }
        1 => {
            net.delete_link(&veth).await?;
            // Repaired: the host end is back on the bridge and up, and eth0 in the namespace
            // is up with its address (a bare veth back under the old name is not a repair).
            until(what, timeout, || async {
                super::network::attachment_whole(net, &netns, &veth)
                    .await
                    .unwrap_or(false)
            })
            .await?;
        }
        2 => {
            net.delete_link(&bridge).await?;
            until(what, timeout, || async {
                let b = net.inspect_bridge(&bridge).await.ok().flatten();
                b.is_some_and(|b| b.up && !b.addresses.is_empty())
            })
            .await?;
        }
        3 => {
            let b = net
                .inspect_bridge(&bridge)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no bridge"))?;
            let msgs: Vec<_> = net
                .handle()
                .address()
                .get()
                .set_link_index_filter(b.index)
                .execute()
                .try_collect()
                .await?;
            for m in msgs {
                net.handle().address().del(m).execute().await?;
            }
            until(what, timeout, || async {
                let b = net.inspect_bridge(&bridge).await.ok().flatten();
                b.is_some_and(|b| !b.addresses.is_empty())
            })
            .await?;
        }
        4 => {
            net.delete_netns(&netns).await?;
            // Repaired means the workload (maybe restarted) is in the namespace under that name
            // again: a new empty namespace under the old name is not a repair.
            let path = net.netns_dir().join(&netns);
            until(what, timeout, || async {
                let Ok(o) = get(store, Kind::Container, "worker").await else {
                    return false;
                };
                let pid = o.status["pid"].as_i64().unwrap_or(0);
                same_netns(&path, pid)
            })
            .await?;
        }
        5 => {
            let before = std::fs::read_to_string(&mem)?;
            std::fs::write(&mem, "999997440")?;
            until(what, timeout, || async {
                std::fs::read_to_string(&mem).is_ok_and(|v| v == before)
            })
            .await?;
        }
        6 | 7 => {
            let p = state_path.clone();
            crate::util::blocking(move || -> anyhow::Result<()> {
                let sv = btrfsutil::subvolume::Subvolume::get(p.as_path())?;
                if i == 6 {
                    sv.set_ro(false)?;
                } else {
                    sv.set_ro(false)?;
                    sv.delete(btrfsutil::subvolume::DeleteFlags::RECURSIVE)?;
                }
                Ok(())
            })
            .await?;
            until(what, timeout, || {
                let p = state_path.clone();
                async move {
                    crate::util::blocking(move || {
                        btrfsutil::subvolume::Subvolume::get(p.as_path()).and_then(|s| s.is_ro())
                    })
                    .await
                    .unwrap_or(false)
                }
            })
            .await?;
        }
        DOCKER_DRIFT => {
            let dworker = get(store, Kind::Container, "dworker").await?;
            let id = dworker.status["containerID"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            crate::docker::DockerDriver::connect(None)?
                .remove(&id, true)
                .await?;
            // Repaired: a new container of that Container runs, and tend says so.
            until(what, timeout, || async {
                get(store, Kind::Container, "dworker").await.is_ok_and(|o| {
                    o.status["containerID"].as_str().is_some_and(|c| c != id)
                        && o.status["phase"] == "Running"
                        && ready(&o)
                })
            })
            .await?;
        }
        _ => {
            let p = sandbox_path.clone();
            crate::util::blocking(move || -> anyhow::Result<()> {
                btrfsutil::subvolume::Subvolume::get(p.as_path())?
                    .delete(btrfsutil::subvolume::DeleteFlags::RECURSIVE)?;
                Ok(())
            })
            .await?;
            until(what, timeout, || async { sandbox_path.exists() }).await?;
        }
    }
    let took = t0.elapsed();
    // Repaired on the host; wait for the objects to say Ready again before the next drift.
    until("Ready again", timeout, || all_ready(store, docker)).await?;
    Ok(took)
}

/// Whether the objects of the drift spec are all Ready.
async fn all_ready(store: &SqliteStore, docker: bool) -> bool {
    let objects = [
        (Kind::State, "base"),
        (Kind::Sandbox, "spare"),
        (Kind::Network, "drift"),
        (Kind::Container, "worker"),
        (Kind::Container, "dworker"),
    ];
    for &(k, n) in &objects[..if docker { 5 } else { 4 }] {
        if !get(store, k, n).await.is_ok_and(|o| ready(&o)) {
            return false;
        }
    }
    true
}

/// Whether process `pid` is in the network namespace bind-mounted at `path`.
fn same_netns(path: &Path, pid: i64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata(path).map(|m| (m.dev(), m.ino()));
    let proc = std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| (m.dev(), m.ino()));
    matches!((ns, proc), (Ok(a), Ok(b)) if a == b)
}

/// `tend bench drift`: prints p50/p99/max repair time per kind of drift.
pub async fn run(
    rounds: usize,
    resync_seconds: u64,
    docker_image: Option<String>,
) -> anyhow::Result<()> {
    let cfg = DriftConfig {
        exe: std::env::current_exe()?,
        rounds,
        resync_seconds,
        timeout: Duration::from_secs(resync_seconds * 2 + 30),
        subnet: "10.213.7.0/24".into(),
        docker_image,
    };
    super::note(format_args!(
        "tend bench drift: {rounds} rounds, resync {resync_seconds} s, btrfs loop image"
    ));
    for f in measure(&cfg).await? {
        super::report(f.drift, f.samples);
    }
    Ok(())
}
