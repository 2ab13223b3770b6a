//! `tend bench image`: pull+unpack of a ~50 MB, 5-layer image from a local registry (Debian's
//! `docker-registry` on 127.0.0.1) by tend, `docker pull` and `podman pull`, each cold (a fresh
//! state dir / image removed / a fresh podman root), p50 of `rounds`; then a second image
//! sharing 4 of the 5 layers (time, and bytes the btrfs filesystem gained); then Container
//! apply→Running from an image State. Needs root, dockerd, docker-registry.
//!
//! The setup (building, pushing and removing the images) goes through the Engine API
//! (bollard); the only Docker CLI run is the measured peer, `docker pull`, which is what its
//! label says.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, PushImageOptionsBuilder, RemoveImageOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use tend_schema::store::{DeleteOptions, Store};
use tend_schema::{AnyObject, Kind, ObjectKey};

use super::daemon::{until_status, BenchDaemon, BenchOptions};
use super::{emit, note, until, Figure};

/// Bytes of random data per layer (5 layers, the first also carries busybox).
const LAYER_BYTES: usize = 10 << 20;

/// A registry child on a free loopback port, killed by PID on drop.
struct Registry {
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl Registry {
    fn start(dir: &Path) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        std::fs::create_dir_all(dir)?;
        let cfg = dir.join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: tend-bench\n",
                dir.join("data").display()
            ),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("docker-registry (Debian package docker-registry) not runnable")?;
        let r = Registry {
            dir: dir.into(),
            port,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "registry did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(r)
    }

    fn image(&self, name: &str) -> String {
        format!("127.0.0.1:{}/bench/{name}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The measured peer: the Docker CLI's `docker pull`.
fn docker_pull(image: &str) -> anyhow::Result<String> {
    sh(Command::new("docker").args(["pull", "-q", image]))
}

/// Builds the context dir `ctx` as `tag` with dockerd's classic builder (`POST /build`; the
/// context is tarred with its symlinks kept as symlinks), until dockerd says it is done.
async fn build(docker: &Docker, ctx: &Path, tag: &str) -> anyhow::Result<()> {
    let dir = ctx.to_path_buf();
    let body = crate::util::blocking(move || -> std::io::Result<Vec<u8>> {
        let mut ar = tar::Builder::new(Vec::new());
        ar.follow_symlinks(false);
        ar.append_dir_all(".", &dir)?;
        ar.into_inner()
    })
    .await
    .context("tar the build context")?;
    let opts = BuildImageOptionsBuilder::new()
        .t(tag)
        .q(true)
        .rm(true)
        .build();
    let mut s = docker.build_image(opts, None, Some(bollard::body_full(body.into())));
    while let Some(info) = s.next().await {
        let info = info.with_context(|| format!("build {tag}"))?;
        if let Some(e) = info.error_detail.and_then(|e| e.message) {
            bail!("build {tag}: {e}");
        }
    }
    Ok(())
}

/// Pushes `image` (`host:port/repo:tag`) to its registry (`POST /images/{name}/push`).
async fn push(docker: &Docker, image: &str) -> anyhow::Result<()> {
    let (repo, tag) = image.rsplit_once(':').context("image without a tag")?;
    let opts = PushImageOptionsBuilder::new().tag(tag).build();
    let mut s = docker.push_image(repo, Some(opts), None);
    while let Some(info) = s.next().await {
        info.with_context(|| format!("push {image}"))?;
    }
    Ok(())
}

/// Removes the local image `image` (forced); one that is not there is fine.
async fn remove(docker: &Docker, image: &str) {
    let opts = RemoveImageOptionsBuilder::new().force(true).build();
    let _ = docker.remove_image(image, Some(opts), None).await;
}

fn random_file(p: &Path, n: usize) -> anyhow::Result<()> {
    let mut buf = vec![0u8; n];
    rand::fill(&mut buf[..]);
    std::fs::write(p, buf)?;
    Ok(())
}

/// Builds and pushes images `a` (5 layers) and `b` (the same first 4, another 5th), then
/// removes them locally so every pull below is cold.
async fn build_images(docker: &Docker, reg: &Registry, work: &Path) -> anyhow::Result<()> {
    let ctx = work.join("ctx");
    let root = ctx.join("rootfs");
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .context("/bin/busybox (package busybox-static)")?;
    for a in ["sh", "sleep"] {
        let l = root.join("bin").join(a);
        if !l.exists() {
            std::os::unix::fs::symlink("busybox", l)?;
        }
    }
    for i in 1..=5 {
        random_file(&ctx.join(format!("l{i}.bin")), LAYER_BYTES)?;
    }
    random_file(&ctx.join("b5.bin"), LAYER_BYTES)?;
    let common = "FROM scratch\nCOPY rootfs/ /\nCOPY l1.bin /data/l1.bin\nCOPY l2.bin /data/l2.bin\nCOPY l3.bin /data/l3.bin\n";
    // rootfs+l1 are one layer in spirit; docker makes each COPY a layer: rootfs, l1, l2, l3 = 4
    // shared layers, then the 5th differs.
    for (name, fifth) in [("a:1", "l5.bin"), ("b:1", "b5.bin")] {
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("{common}COPY {fifth} /data/l5.bin\nCMD [\"/bin/sleep\", \"3600\"]\n"),
        )?;
        let tag = reg.image(name);
        build(docker, &ctx, &tag).await?;
        push(docker, &tag).await?;
    }
    for name in ["a:1", "b:1"] {
        remove(docker, &reg.image(name)).await;
    }
    Ok(())
}

/// Used bytes of the filesystem holding `p`, after its pending writes are committed.
fn used_bytes(p: &Path) -> anyhow::Result<u64> {
    let f = std::fs::File::open(p)?;
    nix::unistd::syncfs(&f)?;
    let s = nix::sys::statvfs::statvfs(p)?;
    Ok((s.blocks() - s.blocks_free()) * s.fragment_size())
}

async fn wait_state(store: &dyn Store, name: &str) -> anyhow::Result<AnyObject> {
    let key = ObjectKey::new(Kind::State, "default", name);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(o) = store.get(&key).await {
            match o.status.get("phase").and_then(|p| p.as_str()) {
                Some("Ready") => return Ok(o),
                Some("Failed") => bail!("State {name} failed: {}", o.status),
                _ => {}
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "State {name}: not Ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn state(name: &str, image: &str) -> AnyObject {
    AnyObject::new(
        Kind::State,
        "default",
        name,
        serde_json::json!({"source": {"image": image}}),
    )
}

/// Runs the bench; see the module comment.
pub async fn run(rounds: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        nix::unistd::Uid::effective().is_root(),
        "tend bench image needs root"
    );
    let work = std::env::temp_dir().join(format!("tend-bench-image-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let r = bench(&work, rounds).await;
    let _ = std::fs::remove_dir_all(&work);
    r
}

async fn bench(work: &Path, rounds: usize) -> anyhow::Result<()> {
    let reg = Registry::start(&work.join("registry"))?;
    let docker = Docker::connect_with_local_defaults().context("connect to dockerd")?;
    note("building and pushing two 5-layer images (~50 MB, 4 layers shared) ...");
    build_images(&docker, &reg, work).await?;
    let (a, b) = (reg.image("a:1"), reg.image("b:1"));

    // tend: a fresh daemon (state dir, blob store, btrfs image) per round: cold.
    let mut tend = Vec::new();
    let mut shared = Vec::new();
    let mut added = Vec::new();
    let mut running = Vec::new();
    for round in 0..rounds {
        let d = BenchDaemon::start("image", BenchOptions::btrfs(4 << 30)).await?;
        let s: &dyn Store = &*d.store;
        let t0 = Instant::now();
        s.create(state("a", &a)).await?;
        let o = wait_state(s, "a").await?;
        tend.push(t0.elapsed());
        let tree = PathBuf::from(o.status["path"].as_str().unwrap_or_default());
        let before = used_bytes(&tree)?;
        let t0 = Instant::now();
        s.create(state("b", &b)).await?;
        wait_state(s, "b").await?;
        shared.push(t0.elapsed());
        added.push(used_bytes(&tree)?.saturating_sub(before));
        if round == 0 {
            note(format!("tend backend: {}", o.status["backend"]));
        }
        let c = AnyObject::new(
            Kind::Container,
            "default",
            "c",
            serde_json::json!({"rootfs": {"state": "a"}}),
        );
        let key = ObjectKey::new(Kind::Container, "default", "c");
        let t0 = Instant::now();
        s.create(c).await?;
        until_status(&d.store, &key, Duration::from_millis(2), |st| {
            st.common.phase.as_deref() == Some("Running")
        })
        .await?;
        running.push(t0.elapsed());
        s.delete(&key, &DeleteOptions::default()).await?;
        until(
            Duration::from_secs(60),
            Duration::from_millis(20),
            || async { s.get(&key).await.is_err() },
        )
        .await;
        d.stop().await?;
    }
    emit(&Figure::latency(
        "image pull+unpack, 5 layers ~50 MB, cold (tend)",
        tend,
    ));

    // docker pull: the image is removed before every round.
    let mut dock = Vec::new();
    for _ in 0..rounds {
        remove(&docker, &a).await;
        let t0 = Instant::now();
        docker_pull(&a)?;
        dock.push(t0.elapsed());
    }
    let t0 = Instant::now();
    docker_pull(&b)?;
    let docker_shared = t0.elapsed();
    for i in [&a, &b] {
        remove(&docker, i).await;
    }
    emit(&Figure::latency(
        "image pull+unpack, 5 layers ~50 MB, cold (docker pull)",
        dock,
    ));

    // podman pull: a fresh storage root per round.
    let mut pod = Vec::new();
    let mut pod_skip = None;
    for i in 0..rounds {
        let root = work.join(format!("podman-{i}"));
        let args = |extra: &[&str]| {
            let mut c = Command::new("podman");
            c.arg("--root")
                .arg(root.join("root"))
                .arg("--runroot")
                .arg(root.join("run"))
                .args(extra);
            c
        };
        let t0 = Instant::now();
        match sh(&mut args(&["pull", "-q", "--tls-verify=false", &a])) {
            Ok(_) => pod.push(t0.elapsed()),
            Err(e) => {
                pod_skip = Some(format!("podman pull failed: {e}"));
                break;
            }
        }
        let _ = sh(&mut args(&["system", "reset", "-f"]));
        let _ = std::fs::remove_dir_all(&root);
    }
    match pod_skip {
        Some(why) => emit(&Figure::skipped("image pull+unpack (podman pull)", why)),
        None => emit(&Figure::latency(
            "image pull+unpack, 5 layers ~50 MB, cold (podman pull)",
            pod,
        )),
    }

    emit(&Figure::latency(
        "second image sharing 4 of 5 layers, pull+unpack (tend)",
        shared,
    ));
    emit(&Figure::rate(
        "second image sharing 4 of 5 layers, pull (docker pull, 1 run)",
        1,
        docker_shared,
    ));
    added.sort_unstable();
    let med = added[added.len() / 2] as f64 / (1 << 20) as f64;
    emit(&Figure::scalar(
        "bytes the second image added on btrfs, median (tend; its own layer: 10 MiB)",
        med,
        "MiB",
    ));
    emit(&Figure::latency(
        "Container apply -> Running from an image State (tend)",
        running,
    ));
    drop(reg);
    Ok(())
}
