//! A small typed client for the API over the unix socket (or TCP with a bearer token), returning
//! the same types the handlers use, so the CLI can talk to a running daemon.

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use tend_schema::store::{ObjectList, Propagation};
use tend_schema::{AnyObject, Kind, ObjectKey};

/// What went wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {target}: {source}")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    #[error("HTTP to {target}: {source}")]
    Http {
        target: String,
        source: hyper::Error,
    },
    #[error("{code} {reason}: {message}")]
    Api {
        code: u16,
        reason: String,
        message: String,
        body: Value,
    },
    #[error("decoding the response from {path}: {source}")]
    Decode {
        path: String,
        source: serde_json::Error,
    },
    #[error("building a request for {path}: {source}")]
    Request {
        path: String,
        source: hyper::http::Error,
    },
    /// A streamed exec failed after it started (the daemon's error frame, a broken frame).
    #[error("exec: {message}")]
    Exec { message: String },
}

/// Where the daemon listens.
#[derive(Debug, Clone)]
pub enum Target {
    Unix(PathBuf),
    /// HTTPS, trusting only the given CA (PEM: the state dir's `ca.crt`).
    Tcp(SocketAddr, String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "unix://{}", p.display()),
            Target::Tcp(a, _) => write!(f, "https://{a}"),
        }
    }
}

/// A raw response: status, content type, body.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Bytes,
}

impl RawResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One line of a watch.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct WatchLine {
    #[serde(rename = "type")]
    pub type_: String,
    pub object: Value,
}

/// One keep-alive connection, re-opened when the server closed it.
pub struct Client {
    pub(crate) target: Target,
    token: Option<String>,
    conn: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl Client {
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Self::new(Target::Unix(path.into()), None)
    }

    /// HTTPS to `addr`, trusting `ca_pem`, with an optional bearer token.
    pub fn tcp(addr: SocketAddr, ca_pem: &str, token: Option<String>) -> Self {
        Self::new(Target::Tcp(addr, ca_pem.to_string()), token)
    }

    pub fn new(target: Target, token: Option<String>) -> Self {
        Self {
            target,
            token,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    pub(crate) async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        self.connect_as().await
    }

    /// A fresh connection whose requests carry bodies of type `B` (a streamed one for exec).
    pub(crate) async fn connect_as<B>(&self) -> Result<SendRequest<B>, ClientError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let target = self.target.to_string();
        let cerr = |source| ClientError::Connect {
            target: target.clone(),
            source,
        };
        let herr = |source| ClientError::Http {
            target: target.clone(),
            source,
        };
        macro_rules! handshake {
            ($io:expr) => {{
                let (send, conn) = http1::handshake(TokioIo::new($io)).await.map_err(herr)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                send
            }};
        }
        Ok(match &self.target {
            Target::Unix(p) => {
                handshake!(tokio::net::UnixStream::connect(p).await.map_err(cerr)?)
            }
            Target::Tcp(a, ca) => {
                let s = tokio::net::TcpStream::connect(a).await.map_err(cerr)?;
                let _ = s.set_nodelay(true);
                let cfg =
                    super::tls::client_config(ca).map_err(|e| cerr(std::io::Error::other(e)))?;
                let name = rustls::pki_types::ServerName::IpAddress(a.ip().into());
                let tls = tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, s)
                    .await
                    .map_err(cerr)?;
                handshake!(tls)
            }
        })
    }

    pub(crate) fn build(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        self.build_with(method, path, content_type, Full::new(Bytes::from(body)))
    }

    /// [`Self::build`] with any body.
    pub(crate) fn build_with<B>(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: B,
    ) -> Result<Request<B>, ClientError> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "tend");
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        if let Some(t) = &self.token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(body).map_err(|source| ClientError::Request {
            path: path.into(),
            source,
        })
    }

    /// Sends one request on the kept connection (one retry on a fresh one if it had closed).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<RawResponse, ClientError> {
        let mut guard = self.conn.lock().await;
        for attempt in 0..2 {
            let mut send = match guard.take() {
                Some(s) if !s.is_closed() => s,
                _ => self.connect().await?,
            };
            let req = self.build(method.clone(), path, content_type, body.clone())?;
            match send.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    let content_type = resp
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let body = resp
                        .into_body()
                        .collect()
                        .await
                        .map_err(|source| ClientError::Http {
                            target: self.target.to_string(),
                            source,
                        })?
                        .to_bytes();
                    *guard = Some(send);
                    return Ok(RawResponse {
                        status,
                        content_type,
                        body,
                    });
                }
                Err(e) if attempt == 0 && (e.is_canceled() || e.is_closed()) => continue,
                Err(source) => {
                    return Err(ClientError::Http {
                        target: self.target.to_string(),
                        source,
                    })
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    pub(crate) async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        ct: Option<&str>,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        let r = self.raw(method, path, ct, body).await?;
        if !r.status.is_success() {
            let body = r.json();
            return Err(ClientError::Api {
                code: r.status.as_u16(),
                reason: body["reason"].as_str().unwrap_or("").into(),
                message: body["message"].as_str().unwrap_or("").into(),
                body,
            });
        }
        serde_json::from_slice(&r.body).map_err(|source| ClientError::Decode {
            path: path.into(),
            source,
        })
    }

    pub async fn get(&self, key: &ObjectKey) -> Result<AnyObject, ClientError> {
        self.call(Method::GET, &object_path(key), None, vec![])
            .await
    }

    /// Lists `kind` in `namespace` (None: all) matching a label selector.
    pub async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        labels: &str,
    ) -> Result<ObjectList, ClientError> {
        let path = format!(
            "{}?labelSelector={}",
            collection_path(kind, namespace),
            encode(labels)
        );
        let v: Value = self.call(Method::GET, &path, None, vec![]).await?;
        let revision = v["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let items = serde_json::from_value(v["items"].clone())
            .map_err(|source| ClientError::Decode { path, source })?;
        Ok(ObjectList { items, revision })
    }

    pub async fn create(&self, obj: &AnyObject) -> Result<AnyObject, ClientError> {
        let path = collection_path(obj.kind().unwrap_or(Kind::State), Some(obj.metadata.ns()));
        self.call(
            Method::POST,
            &path,
            Some("application/json"),
            serde_json::to_vec(obj).expect("serializes"),
        )
        .await
    }

    /// Server-side apply as `manager`.
    pub async fn apply(
        &self,
        obj: &AnyObject,
        manager: &str,
        force: bool,
    ) -> Result<AnyObject, ClientError> {
        let key = obj.key().map_err(|e| ClientError::Api {
            code: 422,
            reason: "Invalid".into(),
            message: e.to_string(),
            body: Value::Null,
        })?;
        let path = format!(
            "{}?fieldManager={}&force={force}",
            object_path(&key),
            encode(manager)
        );
        self.call(
            Method::PATCH,
            &path,
            Some("application/apply-patch+yaml"),
            serde_json::to_vec(obj).expect("serializes"),
        )
        .await
    }

    /// Deletes; returns the object when it waits for finalizers, None when it is gone.
    pub async fn delete(
        &self,
        key: &ObjectKey,
        propagation: Propagation,
        grace_period_seconds: Option<u32>,
    ) -> Result<Option<AnyObject>, ClientError> {
        let mut body = serde_json::json!({"propagationPolicy": format!("{propagation:?}")});
        if let Some(g) = grace_period_seconds {
            body["gracePeriodSeconds"] = g.into();
        }
        let v: Value = self
            .call(
                Method::DELETE,
                &object_path(key),
                Some("application/json"),
                body.to_string().into_bytes(),
            )
            .await?;
        if v["kind"] == "Status" {
            return Ok(None);
        }
        serde_json::from_value(v)
            .map(Some)
            .map_err(|source| ClientError::Decode {
                path: object_path(key),
                source,
            })
    }

    /// Watches `kind` from `resource_version` (None: current objects first, as ADDED).
    pub async fn watch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        resource_version: Option<u64>,
    ) -> Result<BoxStream<'static, Result<WatchLine, ClientError>>, ClientError> {
        let mut path = format!(
            "{}?watch=1&allowWatchBookmarks=true",
            collection_path(kind, namespace)
        );
        if let Some(rv) = resource_version {
            path.push_str(&format!("&resourceVersion={rv}"));
        }
        // One JSON object per line; a line may span chunks, a chunk may hold many lines.
        let chunks = self.stream(&path).await?;
        let lines = futures::stream::unfold(
            (chunks, Vec::<u8>::new()),
            |(mut chunks, mut buf)| async move {
                loop {
                    if let Some(i) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=i).collect();
                        let item = serde_json::from_slice::<WatchLine>(&line).map_err(|source| {
                            ClientError::Decode {
                                path: "watch".into(),
                                source,
                            }
                        });
                        return Some((item, (chunks, buf)));
                    }
                    match chunks.next().await {
                        Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                        Some(Err(e)) => return Some((Err(e), (chunks, buf))),
                        None => return None,
                    }
                }
            },
        );
        Ok(lines.boxed())
    }
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `/apis/tend.dev/v1/namespaces/{ns}/{plural}`, or the all-namespaces path for None.
pub fn collection_path(kind: Kind, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("/apis/tend.dev/v1/namespaces/{ns}/{}", kind.plural()),
        None => format!("/apis/tend.dev/v1/{}", kind.plural()),
    }
}

pub fn object_path(key: &ObjectKey) -> String {
    format!(
        "{}/{}",
        collection_path(key.kind, Some(&key.namespace)),
        key.name
    )
}
