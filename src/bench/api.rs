//! `tend bench api`: an in-process server on a temp state dir, loaded by a separate
//! `tend bench api --client SOCKET` process over the unix socket (keep-alive connections).

use super::{emit, note, report, Figure};
use crate::api::client::Client;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tend_schema::store::{OpenOptions, SqliteStore};
use tend_schema::{AnyObject, Kind, ObjectKey};

/// `tend bench api` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Concurrent keep-alive GET clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds of GET load.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent watchers for the delivery figure.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// Internal: be the load generator against this socket.
    #[arg(long, hide = true)]
    pub client: Option<PathBuf>,
    /// With `--client` (e.g. a live daemon's `<state-dir>/tend.sock`): only GET this existing
    /// object, `kind/name` in namespace default; create nothing.
    #[arg(long, requires = "client")]
    pub target: Option<String>,
}

/// Runs the server side and spawns the load generator as a child process.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(sock) = &args.client {
        return load(sock, &args).await;
    }
    let dir = std::env::temp_dir().join(format!("tend-bench-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let out = serve_and_load(&dir, &args).await;
    let _ = std::fs::remove_dir_all(&dir);
    out
}

async fn serve_and_load(dir: &Path, args: &Args) -> anyhow::Result<()> {
    let store: Arc<SqliteStore> =
        Arc::new(SqliteStore::open(dir.join("tend.db"), OpenOptions::default()).await?);
    let api = crate::api::bind(crate::api::ApiConfig {
        paths: crate::daemon::lifecycle::api_paths(&crate::daemon::Layout::new(dir)),
        listen: None,
        tls_sans: vec![],
        store,
        ready: Arc::new(true.into()),
        metrics: None,
        limits: Default::default(),
        runtimes: None,
        policy: Default::default(),
        images: None,
    })
    .await?;
    let sock = api.socket().to_path_buf();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api.run(async move {
        let _ = stopped.await;
    }));
    note(format_args!(
        "tend bench api: server in this process (pid {}), load from a child process over {}",
        std::process::id(),
        sock.display()
    ));
    let mut child = tokio::process::Command::new(std::env::current_exe()?);
    child
        .args([
            "bench",
            "api",
            "--clients",
            &args.clients.to_string(),
            "--seconds",
            &args.seconds.to_string(),
            "--watchers",
            &args.watchers.to_string(),
            "--client",
        ])
        .arg(&sock);
    if super::printing_json() {
        child.arg("--json");
    }
    let status = child.status().await?;
    let _ = stop.send(());
    let _ = server.await;
    anyhow::ensure!(status.success(), "the load generator failed: {status}");
    Ok(())
}

fn net(name: &str, annotations: &[(&str, String)]) -> AnyObject {
    let mut o = AnyObject::new(
        Kind::Network,
        "default",
        name,
        serde_json::json!({"subnet": "10.9.0.0/24"}),
    );
    for (k, v) in annotations {
        o.metadata.annotations.insert(k.to_string(), v.clone());
    }
    o
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

async fn load(sock: &Path, args: &Args) -> anyhow::Result<()> {
    let c = Client::unix(sock);
    let key = match &args.target {
        Some(t) => {
            let (kind, name) = t
                .split_once('/')
                .ok_or_else(|| anyhow::anyhow!("--target {t:?}: expected kind/name"))?;
            let kind: Kind = kind.parse().map_err(anyhow::Error::msg)?;
            ObjectKey::new(kind, "default", name)
        }
        None => {
            c.create(&net("target", &[])).await?;
            ObjectKey::new(Kind::Network, "default", "target")
        }
    };
    // GET with N keep-alive clients for a fixed time.
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (sock, key) = (sock.to_path_buf(), key.clone());
        tasks.push(tokio::spawn(async move {
            let c = Client::unix(sock);
            let mut lat = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                if c.get(&key).await.is_ok() {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let started = Instant::now();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let took = started.elapsed();
    let name = format!("GET one object, {} clients", args.clients);
    emit(&Figure::rate(format!("{name}: requests"), lat.len(), took));
    report(&name, lat);
    if args.target.is_some() {
        return Ok(());
    }
    // Create latency, one client.
    let mut lat = Vec::new();
    for i in 0..500 {
        let t = Instant::now();
        c.create(&net(&format!("c{i}"), &[])).await?;
        lat.push(t.elapsed());
    }
    report("create, 1 client", lat);
    // Watch delivery: N watchers, creates stamped with their send time.
    let rev = c.list(Kind::Network, Some("default"), "").await?.revision;
    let mut watchers = Vec::new();
    let events = 100usize;
    for _ in 0..args.watchers {
        let c = Client::unix(sock);
        let mut w = c.watch(Kind::Network, Some("default"), Some(rev)).await?;
        watchers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while lat.len() < events {
                match tokio::time::timeout(Duration::from_secs(30), w.next()).await {
                    Ok(Some(Ok(l))) if l.type_ == "ADDED" => {
                        if let Some(t) = l.object["metadata"]["annotations"]["t"]
                            .as_str()
                            .and_then(|s| s.parse::<u128>().ok())
                        {
                            lat.push(Duration::from_nanos(now_nanos().saturating_sub(t) as u64));
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
            lat
        }));
    }
    for i in 0..events {
        c.create(&net(&format!("w{i}"), &[("t", now_nanos().to_string())]))
            .await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut lat = Vec::new();
    for w in watchers {
        lat.extend(w.await?);
    }
    report(
        &format!(
            "watch delivery, {} watchers x {events} events",
            args.watchers
        ),
        lat,
    );
    Ok(())
}
