//! The REST API: Kubernetes-style paths, verbs and bodies over a unix socket and optional TCP.
//!
//! The socket (`<state-dir>/tend.sock`, 0600) is the trusted local admin; TCP needs a bearer
//! token from `<state-dir>/tokens.json`. Handlers call the same [`Store`] the CLI uses. `/ui` is
//! a static web view over this same API ([`ui`]).

pub mod auth;
pub mod batch;
pub mod client;
pub use client_exec::ExecOutputFrame;
mod client_exec;
mod client_ops;
pub mod columns;
pub mod containers;
mod discovery;
mod dispatch;
pub mod error;
pub mod events;
pub mod exec_frames;
pub mod history;
pub mod images;
mod kevents;
pub mod metrics;
mod objects;
mod openapi;
pub mod request;
pub mod rollouts;
mod ssa;
mod table;
pub mod tls;
mod ui;
mod usage;
mod watch;

pub use auth::{Identity, Token, TokenFile};
pub use error::{ApiError, ApiResult};
pub use ssa::present;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tend_schema::store::Store;

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {path}: {source}")]
    BindUnix {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("binding TCP {addr}: {source}")]
    BindTcp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("tokens: {0}")]
    Tokens(#[from] auth::AuthError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Extra Prometheus text from the caller (controller metrics), appended to `/metrics`.
pub type MetricsProvider = Arc<dyn Fn() -> String + Send + Sync>;

/// Bounds on what one request or client may take.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Time to produce a response's headers (a watch's body streams on past it).
    pub request_timeout: Duration,
    /// Open watches per token (the socket counts as one token).
    pub watches_per_token: usize,
    /// How often a watch with `allowWatchBookmarks` gets a BOOKMARK.
    pub bookmark_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 3 << 20,
            request_timeout: Duration::from_secs(60),
            watches_per_token: 256,
            bookmark_interval: Duration::from_secs(30),
        }
    }
}

/// The API's files, as the daemon's state-dir layout names them.
#[derive(Debug, Clone)]
pub struct ApiPaths {
    /// The admin unix socket.
    pub socket: PathBuf,
    /// Bearer tokens.
    pub tokens: PathBuf,
    /// The TLS CA (certificate and key) for the TCP listener.
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
}

/// What `serve` needs from the daemon.
pub struct ApiConfig {
    pub paths: ApiPaths,
    /// Optional TCP listener (bearer tokens required).
    pub listen: Option<SocketAddr>,
    /// Names and addresses the TCP listener's certificate carries besides the defaults
    /// ([`tls::server_names`]).
    pub tls_sans: Vec<String>,
    pub store: Arc<dyn Store>,
    /// True once the start-up observation pass is done (`/readyz`).
    pub ready: Arc<AtomicBool>,
    pub metrics: Option<MetricsProvider>,
    pub limits: Limits,
    /// The container runtimes, for logs and exec (absent: those answer 503).
    pub runtimes: Option<tend_controllers::container::Runtimes>,
    /// What namespace-limited tokens may ask for.
    pub policy: tend_schema::policy::Policy,
    /// The image content pruner (`images/prune`; absent: 503).
    pub images: Option<Arc<crate::image::prune::Pruner>>,
}

/// Shared by every handler.
pub(crate) struct AppState {
    pub store: Arc<dyn Store>,
    pub tokens: auth::Tokens,
    pub metrics: metrics::ApiMetrics,
    pub extra_metrics: Option<MetricsProvider>,
    pub ready: Arc<AtomicBool>,
    pub limits: Limits,
    watch_slots: Mutex<HashMap<String, usize>>,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// The container runtimes, for logs and exec.
    pub runtimes: Option<tend_controllers::container::Runtimes>,
    pub policy: tend_schema::policy::Policy,
    pub images: Option<Arc<crate::image::prune::Pruner>>,
}

impl AppState {
    /// The admission check every write path makes before storing `obj` for `id`.
    pub(crate) fn admit(&self, id: &auth::Identity, obj: &tend_schema::AnyObject) -> ApiResult<()> {
        Ok(self.policy.admit(id.credential(), obj)?)
    }
}

pub(crate) type AppRef = Arc<AppState>;

/// Held by an open watch; frees the token's slot when dropped.
pub(crate) struct WatchSlot {
    state: AppRef,
    id: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut slots = self
            .state
            .watch_slots
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = slots.get_mut(&self.id) {
            *n = n.saturating_sub(1);
        }
        self.state.metrics.watches.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AppState {
    /// A watch slot for `id`, or 429 when it has too many open.
    pub fn watch_slot(self: &Arc<Self>, id: &str) -> ApiResult<WatchSlot> {
        let mut slots = self.watch_slots.lock().unwrap_or_else(|p| p.into_inner());
        let n = slots.entry(id.to_string()).or_default();
        if *n >= self.limits.watches_per_token {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!("token {id:?} already has {n} open watches"),
            ));
        }
        *n += 1;
        self.metrics.watches.fetch_add(1, Ordering::Relaxed);
        Ok(WatchSlot {
            state: self.clone(),
            id: id.to_string(),
        })
    }

    /// Runs a store write and records its latency.
    pub async fn timed<T>(&self, f: impl Future<Output = T>) -> T {
        let t = Instant::now();
        let out = f.await;
        self.metrics.store_write_latency.observe(t.elapsed());
        out
    }
}

fn verb(req: &Request) -> &'static str {
    let m = req.method().as_str();
    let q = req.uri().query().unwrap_or("");
    let watching = q.split('&').any(|kv| kv == "watch=1" || kv == "watch=true");
    let last = req.uri().path().rsplit('/').next().unwrap_or("");
    let collection = last == "events" || request::kind_of(last).is_ok();
    match m {
        "GET" if watching => "WATCH",
        "GET" if collection => "LIST",
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        _ => "OTHER",
    }
}

/// Authenticates (TCP only), bounds the time to a response, and counts the request.
async fn gate(
    State((state, trusted)): State<(AppRef, bool)>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let verb = verb(&req);
    let path = req.uri().path();
    // Health, and the web view's static assets (no data: the page reads the API with a token).
    let open = matches!(path, "/healthz" | "/readyz" | "/livez") || ui::is_open(path);
    let identity = if trusted || open {
        Ok(Identity::local())
    } else {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        state.tokens.authenticate(bearer)
    };
    let resp = match identity {
        Err(e) => e.into_response(),
        Ok(id) => {
            // Every store write of this request is attributed to `id` (revisions record it).
            let requester = tend_schema::store::Requester::who(rollouts::who(&id));
            req.extensions_mut().insert(id);
            let run = requester.scope(next.run(req));
            match tokio::time::timeout(state.limits.request_timeout, run).await {
                Ok(r) => r,
                Err(_) => ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "Timeout",
                    "the request did not complete in time",
                )
                .into_response(),
            }
        }
    };
    state
        .metrics
        .record(verb, resp.status().as_u16(), started.elapsed());
    resp
}

async fn not_found() -> ApiError {
    ApiError::not_found("the server could not find the requested resource")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<AppRef>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        "ok".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: start-up pass running",
        )
            .into_response()
    }
}

/// `/metrics`: the daemon's series and every Container's usage, of every namespace — so only
/// for credentials that see every namespace (403 for a namespace-limited token).
async fn metrics_text(
    State(s): State<AppRef>,
    axum::Extension(id): axum::Extension<Identity>,
) -> Response {
    if id.namespaces.is_some() {
        return ApiError::forbidden(format!(
            "token {:?} is limited to namespaces; /metrics lists every namespace's containers and needs an admin token",
            id.id
        ))
        .into_response();
    }
    let mut text = s.metrics.render();
    if let Some(extra) = &s.extra_metrics {
        text.push_str(&extra());
    }
    text.push_str(&usage::metrics(&s).await);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn router(state: AppRef, trusted: bool) -> Router {
    let base = "/apis/tend.dev/v1";
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(discovery::routes())
        .merge(kevents::routes())
        .merge(ui::routes())
        .route(
            &format!("{base}/namespaces/{{ns}}/{{plural}}"),
            get(dispatch::ns_collection).post(objects::create),
        )
        .route(
            &format!("{base}/namespaces/{{ns}}/{{plural}}/{{name}}"),
            get(objects::get_one)
                .put(objects::replace)
                .patch(objects::patch)
                .delete(objects::delete),
        )
        .route(
            &format!("{base}/namespaces/{{ns}}/{{plural}}/{{name}}/status"),
            get(objects::get_one)
                .put(objects::replace_status)
                .patch(objects::patch_status),
        )
        .route(
            &format!("{base}/namespaces/{{ns}}/{{plural}}/{{name}}/log"),
            get(dispatch::log),
        )
        .route(
            &format!("{base}/namespaces/{{ns}}/{{plural}}/{{name}}/exec"),
            // stdin streams through: no body limit (the runtime's channel bounds what is held).
            axum::routing::post(dispatch::exec).layer(DefaultBodyLimit::disable()),
        )
        .route(
            &format!("{base}/namespaces/{{ns}}/{{plural}}/{{name}}/history"),
            get(history::handler),
        )
        .route(
            &format!("{base}/namespaces/{{ns}}/{{plural}}/{{name}}/revisions"),
            get(rollouts::list_handler),
        )
        .route(
            &format!("{base}/namespaces/{{ns}}/{{plural}}/{{name}}/revisions/{{n}}"),
            get(rollouts::one_handler),
        )
        .route(
            &format!("{base}/namespaces/{{ns}}/{{plural}}/{{name}}/rollback"),
            axum::routing::post(rollouts::rollback_handler),
        )
        .route(
            &format!("{base}/images/prune"),
            axum::routing::post(images::prune_handler),
        )
        .route(
            &format!("{base}/{{plural}}"),
            get(dispatch::all_collection).post(dispatch::all_post),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), trusted),
            gate,
        ))
        .with_state(state)
}

/// Binds the admin socket at `socket` so that no other user can ever reach it: the state dir
/// becomes 0700 (also when it already existed), the socket is bound inside a fresh 0700
/// directory, made 0600, and only then renamed into place.
fn bind_private(state_dir: &Path, socket: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))?;
    let private = state_dir.join(format!(".sock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("tend.sock");
    let bound = tokio::net::UnixListener::bind(&staged).and_then(|l| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, socket)?;
        Ok(l)
    });
    let _ = std::fs::remove_dir_all(&private);
    bound
}

/// A bound server: listeners are open, nothing is served until [`BoundApi::run`].
pub struct BoundApi {
    state: AppRef,
    unix: tokio::net::UnixListener,
    tcp: Option<(tokio::net::TcpListener, Arc<rustls::ServerConfig>)>,
    socket: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
}

/// Binds the socket (replacing a stale one; mode 0600) and the optional TCP address, and
/// makes sure an admin token exists.
pub async fn bind(config: ApiConfig) -> Result<BoundApi, ServeError> {
    let tokens_file = config.paths.tokens.clone();
    auth::TokenFile::ensure_admin(&tokens_file)?;
    let socket = config.paths.socket.clone();
    let dir = socket.parent().unwrap_or(Path::new("/")).to_path_buf();
    let unix = bind_private(&dir, &socket).map_err(|source| ServeError::BindUnix {
        path: socket.clone(),
        source,
    })?;
    let tcp = match config.listen {
        None => None,
        Some(addr) => Some((
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::BindTcp { addr, source })?,
            tls::server_config(
                &config.paths.ca_cert,
                &config.paths.ca_key,
                addr,
                &config.tls_sans,
            )?,
        )),
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let state = Arc::new(AppState {
        store: config.store,
        tokens: auth::Tokens::new(tokens_file),
        metrics: Default::default(),
        extra_metrics: config.metrics,
        ready: config.ready,
        limits: config.limits,
        watch_slots: Mutex::new(HashMap::new()),
        shutdown,
        runtimes: config.runtimes,
        policy: config.policy,
        images: config.images,
    });
    Ok(BoundApi {
        state,
        unix,
        tcp,
        socket,
        stop,
    })
}

impl BoundApi {
    /// The TCP address actually bound (port 0 resolved).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Serves until `shutdown` resolves; open watches end then, and the socket file is removed.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let BoundApi {
            state,
            unix,
            tcp,
            socket,
            stop,
        } = self;
        let mut done = stop.subscribe();
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        let d2 = done.clone();
        let unix_srv =
            axum::serve(unix, router(state.clone(), true)).with_graceful_shutdown(async move {
                let _ = done.wait_for(|v| *v).await;
            });
        let tcp_srv = async move {
            match tcp {
                Some((l, cfg)) => serve_tls(l, cfg, router(state, false), d2).await,
                None => Ok(()),
            }
        };
        let (a, b) = tokio::join!(async move { unix_srv.await }, tcp_srv);
        let _ = std::fs::remove_file(&socket);
        a.and(b).map_err(ServeError::Serve)
    }
}

/// Accepts TLS connections and serves HTTP/1.1 on each until `stop` turns true.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    cfg: Arc<rustls::ServerConfig>,
    app: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = stop.wait_for(|v| *v).await; } => return Ok(()),
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app, mut stop) = (acceptor.clone(), app.clone(), stop.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = async { let _ = stop.wait_for(|v| *v).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}

/// Binds and serves until `shutdown` resolves: the entry point `tend serve` calls.
pub async fn serve(
    config: ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    bind(config).await?.run(shutdown).await
}
