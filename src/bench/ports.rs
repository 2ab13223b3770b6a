//! `tend bench ports`: HTTP requests through a published port, beside the same requests sent
//! straight to the container's address and through `docker run -p` of the same busybox httpd.
//!
//! One tend Container (host filesystem, default isolation) on a bench Network runs busybox
//! `httpd`, published on 127.0.0.1:PORT (tend's nftables DNAT). The peer is the equivalent of
//! `docker run -d -p 127.0.0.1:PORT2:80` of tend's test image on Docker's default bridge (made
//! through the Engine API): for localhost that is
//! Docker's userland proxy (`docker-proxy`) when dockerd runs with it, and the label says which
//! it was. Every request is a new connection (busybox httpd answers HTTP/1.0 and closes), from
//! `--clients` concurrent clients; latency is connect → last byte, the rate is requests over the
//! whole run. The Docker container is also asked straight at its bridge address, so each
//! published path can be set against its own server's direct figure. The targets alternate in
//! rounds so load drift hits them alike.

use super::daemon::{until_status, BenchDaemon, BenchOptions};
use super::{emit, note, Figure};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tend_schema::store::Store;
use tend_schema::{AnyObject, Kind, ObjectKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BODY: &str = "tend bench ports\n";

/// A free TCP port on 127.0.0.1 (bound and released).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One GET / over a new connection; errors when the answer is not 200 with [`BODY`].
async fn get(to: SocketAddr) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut s = tokio::net::TcpStream::connect(to).await?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await?;
    let mut buf = Vec::with_capacity(512);
    s.read_to_end(&mut buf).await?;
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&buf);
    anyhow::ensure!(
        text.starts_with("HTTP/1.") && text.contains(" 200 ") && text.ends_with(BODY),
        "{to}: unexpected answer {text:?}"
    );
    Ok(took)
}

/// `n` requests from `clients` concurrent clients: every latency and the whole run's time.
async fn load(
    to: SocketAddr,
    n: usize,
    clients: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let t = Instant::now();
    let per = n.div_ceil(clients.max(1));
    let tasks: Vec<_> = (0..clients.max(1))
        .map(|_| {
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for _ in 0..per {
                    lat.push(get(to).await?);
                }
                anyhow::Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for task in tasks {
        all.extend(task.await??);
    }
    Ok((all, t.elapsed()))
}

/// A target of the bench: what its figures are called and where requests go.
struct Target {
    label: String,
    to: SocketAddr,
    latencies: Vec<Duration>,
    took: Duration,
    done: usize,
}

impl Target {
    fn new(label: impl Into<String>, to: SocketAddr) -> Self {
        Self {
            label: label.into(),
            to,
            latencies: Vec::new(),
            took: Duration::ZERO,
            done: 0,
        }
    }
}

/// The Docker peer: a container of tend's test image publishing 127.0.0.1:`port`.
struct DockerPeer {
    name: String,
}

impl DockerPeer {
    async fn start(port: u16) -> Result<Self, String> {
        let name = format!("tend-bench-ports-{}", std::process::id());
        let script = format!(
            "echo '{}' > /tmp/index.html && exec /bin/busybox httpd -f -p 80 -h /tmp",
            BODY.trim_end()
        );
        // `docker run -d -p 127.0.0.1:PORT:80` through the Engine API: the path measured is
        // dockerd's port publishing, which the client does not change.
        use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
        use bollard::query_parameters::CreateContainerOptionsBuilder;
        let docker = bollard::Docker::connect_with_local_defaults().map_err(|e| e.to_string())?;
        let binding = PortBinding {
            host_ip: Some("127.0.0.1".into()),
            host_port: Some(port.to_string()),
        };
        let body = ContainerCreateBody {
            image: Some(super::peers::DOCKER_IMAGE.into()),
            cmd: Some(vec!["/bin/sh".into(), "-c".into(), script]),
            exposed_ports: Some(vec!["80/tcp".into()]),
            host_config: Some(HostConfig {
                port_bindings: Some(
                    [("80/tcp".to_string(), Some(vec![binding]))]
                        .into_iter()
                        .collect(),
                ),
                auto_remove: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let made = docker.create_container(Some(opts), body).await;
        let started = match made {
            Ok(_) => docker.start_container(&name, None).await,
            Err(e) => Err(e),
        };
        started.map_err(|e| {
            format!("docker create/start: {e} (deploy/docker-test-image.sh builds the image)")
        })?;
        Ok(Self { name })
    }

    /// The container's address on Docker's default bridge (Engine API).
    async fn address(&self) -> Option<std::net::Ipv4Addr> {
        let docker = bollard::Docker::connect_with_local_defaults().ok()?;
        let c = docker.inspect_container(&self.name, None).await.ok()?;
        let networks = c.network_settings?.networks?;
        networks.get("bridge")?.ip_address.as_deref()?.parse().ok()
    }

    /// Whether a `docker-proxy` process serves `port` (dockerd's userland proxy).
    fn proxied(port: u16) -> bool {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return false;
        };
        procs.flatten().any(|p| {
            std::fs::read(p.path().join("cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.first().is_some_and(|a| a.ends_with(b"docker-proxy"))
                    && args
                        .windows(2)
                        .any(|w| w[0] == b"-host-port" && w[1] == port.to_string().as_bytes())
            })
        })
    }

    async fn stop(self) {
        if let Ok(docker) = bollard::Docker::connect_with_local_defaults() {
            let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                .force(true)
                .build();
            let _ = docker.remove_container(&self.name, Some(opts)).await;
        }
    }
}

/// Waits until `to` answers (the published rule or the proxy may lag the start by a moment).
async fn answering(to: SocketAddr) -> bool {
    super::until(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { get(to).await.is_ok() },
    )
    .await
}

/// Runs the benchmark: `requests` per target in `rounds` rounds, from `clients` clients.
pub async fn run(requests: usize, clients: usize, rounds: usize) -> anyhow::Result<()> {
    let d = BenchDaemon::start("ports", BenchOptions::default()).await?;
    note(format_args!(
        "tend bench ports: {requests} HTTP/1.0 GETs per target (a new connection each) from \
         {clients} clients, in {rounds} alternating rounds; state dir {}, instance {}",
        d.state_dir().display(),
        d.instance()
    ));
    let result = figures(&d, requests, clients, rounds).await;
    let stopped = d.stop().await;
    result?;
    stopped
}

async fn figures(
    d: &BenchDaemon,
    requests: usize,
    clients: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let www = d.dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), BODY)?;
    let port = free_port()?;
    let net = AnyObject::new(
        Kind::Network,
        "default",
        "bench",
        serde_json::json!({"subnet": "10.253.0.0/24"}),
    );
    let ct = AnyObject::new(
        Kind::Container,
        "default",
        "web",
        serde_json::json!({
            "command": ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", www],
            "networks": [{"name": "bench"}],
            "ports": [{"containerPort": 80, "hostPort": port, "hostIP": "127.0.0.1"}],
            "stopGracePeriodSeconds": 0
        }),
    );
    d.store.apply(vec![net, ct], false).await?;
    let key = ObjectKey::new(Kind::Container, "default", "web");
    let st = until_status(&d.store, &key, Duration::from_millis(20), |s| {
        s.common.phase.as_deref() == Some("Running")
            && !s.ports.is_empty()
            && !s.networks.is_empty()
    })
    .await?;
    let ip = st.networks[0].ip.split('/').next().unwrap_or_default();
    let direct: SocketAddr = format!("{ip}:80").parse()?;
    let published = SocketAddr::from(([127, 0, 0, 1], port));
    anyhow::ensure!(answering(direct).await, "{direct}: httpd never answered");
    anyhow::ensure!(
        answering(published).await,
        "{published}: the published port never answered"
    );
    let mut targets = vec![
        Target::new("direct to the container's address", direct),
        Target::new("tend published port, 127.0.0.1 (nftables DNAT)", published),
    ];

    let docker_port = free_port()?;
    let docker = match DockerPeer::start(docker_port).await {
        Ok(p) => {
            let to = SocketAddr::from(([127, 0, 0, 1], docker_port));
            if answering(to).await {
                let how = match DockerPeer::proxied(docker_port) {
                    true => "docker-proxy",
                    false => "no userland proxy",
                };
                targets.push(Target::new(format!("docker run -p, 127.0.0.1 ({how})"), to));
                // The same Docker container without the published port: what its path adds.
                if let Some(ip) = p.address().await {
                    targets.push(Target::new(
                        "direct to the docker container's address",
                        SocketAddr::from((ip, 80)),
                    ));
                }
            } else {
                emit(&Figure::skipped(
                    "docker run -p",
                    "never answered on 127.0.0.1",
                ));
            }
            Some(p)
        }
        Err(why) => {
            emit(&Figure::skipped("docker run -p", why));
            None
        }
    };

    let result = async {
        let per_round = requests.div_ceil(rounds.max(1));
        for _ in 0..rounds.max(1) {
            for t in &mut targets {
                let (lat, took) = load(t.to, per_round, clients).await?;
                t.done += lat.len();
                t.latencies.extend(lat);
                t.took += took;
            }
        }
        anyhow::Ok(())
    }
    .await;
    if let Some(p) = docker {
        p.stop().await;
    }
    result?;
    for t in targets {
        emit(&Figure::rate(
            format!("requests, {}", t.label),
            t.done,
            t.took,
        ));
        emit(&Figure::latency(
            format!("request, {}", t.label),
            t.latencies,
        ));
    }
    Ok(())
}
