//! Shared by the API tests: an in-process server on a temp state dir, and request helpers.
#![allow(dead_code)]

use hyper::Method;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tend::api::client::{Client, RawResponse};
use tend::api::{ApiConfig, Limits};
use tend_schema::store::{OpenOptions, SqliteStore};

pub struct Server {
    pub dir: tempfile::TempDir,
    pub store: Arc<SqliteStore>,
    pub tcp: SocketAddr,
    pub ca: String,
    pub admin: String,
    pub ready: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Server {
    pub async fn start(history: u64, limits: Limits) -> Self {
        Self::start_with(history, limits, Default::default()).await
    }

    /// A server whose admission policy is `policy`.
    pub async fn start_with(
        history: u64,
        limits: Limits,
        policy: tend_schema::policy::Policy,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let opts = OpenOptions {
            history,
            ..Default::default()
        };
        let store = Arc::new(
            SqliteStore::open(dir.path().join("tend.db"), opts)
                .await
                .unwrap(),
        );
        let ready = Arc::new(AtomicBool::new(false));
        let api = tend::api::bind(ApiConfig {
            paths: tend::daemon::lifecycle::api_paths(&tend::daemon::Layout::new(dir.path())),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            tls_sans: vec![],
            store: store.clone(),
            ready: ready.clone(),
            metrics: Some(Arc::new(|| "tend_controller_test 1\n".to_string())),
            limits,
            runtimes: None,
            policy,
            images: None,
        })
        .await
        .unwrap();
        let tcp = api.tcp_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(api.run(async move {
            let _ = rx.await;
        }));
        let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
        let admin = tend::api::TokenFile::load(&dir.path().join("tokens.json"))
            .unwrap()
            .tokens[0]
            .secret
            .clone();
        Server {
            dir,
            store,
            tcp,
            ca,
            admin,
            ready,
            stop: Some(tx),
        }
    }

    pub async fn default() -> Self {
        Self::start(100_000, Limits::default()).await
    }

    /// A client on the trusted unix socket.
    pub fn local(&self) -> Client {
        Client::unix(self.dir.path().join("tend.sock"))
    }

    /// An HTTPS client with `token`.
    pub fn remote(&self, token: Option<&str>) -> Client {
        Client::tcp(self.tcp, &self.ca, token.map(str::to_string))
    }

    /// Adds a token to the file the server watches.
    pub fn token(&self, namespaces: &[&str], read_only: bool) -> String {
        let path = self.dir.path().join("tokens.json");
        let mut f = tend::api::TokenFile::load(&path).unwrap();
        let t = f.create(
            None,
            namespaces.iter().map(|s| s.to_string()).collect(),
            read_only,
        );
        f.save(&path).unwrap();
        t.secret
    }
}

pub fn network(ns: &str, name: &str, subnet: &str) -> Value {
    json!({"apiVersion": "tend.dev/v1", "kind": "Network",
           "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
           "spec": {"subnet": subnet}})
}

pub fn coll(ns: &str) -> String {
    format!("/apis/tend.dev/v1/namespaces/{ns}/networks")
}

pub fn one(ns: &str, name: &str) -> String {
    format!("{}/{name}", coll(ns))
}

pub async fn send(
    c: &Client,
    m: Method,
    path: &str,
    ct: Option<&str>,
    body: &Value,
) -> RawResponse {
    let b = if body.is_null() {
        vec![]
    } else {
        body.to_string().into_bytes()
    };
    c.raw(m, path, ct, b).await.unwrap()
}

pub async fn post(c: &Client, path: &str, body: &Value) -> RawResponse {
    send(c, Method::POST, path, Some("application/json"), body).await
}

pub async fn get(c: &Client, path: &str) -> RawResponse {
    send(c, Method::GET, path, None, &Value::Null).await
}

/// Reads watch lines from a raw streaming GET until `n` lines or the timeout.
pub async fn watch_lines(
    c: &Client,
    kind: tend_schema::Kind,
    ns: Option<&str>,
    rv: Option<u64>,
    n: usize,
) -> Vec<Value> {
    use futures::StreamExt;
    let mut s = c.watch(kind, ns, rv).await.unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(std::time::Duration::from_secs(5), s.next()).await {
            Ok(Some(Ok(l))) if l.type_ != "BOOKMARK" => {
                out.push(json!({"type": l.type_, "object": l.object}))
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    out
}
