//! Container logs and exec: `GET .../namespaces/{ns}/containers/{name}/log` (text/plain,
//! streamed with `follow`) and `POST .../namespaces/{ns}/containers/{name}/exec`
//! (`{"command": [...]}` in, `{"exitCode", "output"}` out).
//!
//! Native containers are served from their log files under `<state-dir>/containers` and by
//! entering their namespaces; Docker containers (`tend-<uid>`) through dockerd, connected on
//! first use (503 while dockerd is down). kubectl's SPDY/websocket exec and attach are not
//! served: exec runs to completion and returns the collected output.

use super::error::{ApiError, ApiResult};
use super::{AppRef, Identity};
use crate::docker::{DockerDriver, DockerError};
use crate::runtime_native::cli::{logs as native_logs, LogQuery};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;
use tend_schema::kinds::container::{ContainerSpec, ContainerStatus, Runtime};
use tend_schema::{Kind, ObjectKey};

/// The body of an exec request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// argv; the first word is looked up on the container's PATH.
    pub command: Vec<String>,
}

/// The answer to an exec request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecResponse {
    pub exit_code: i64,
    /// stdout and stderr, interleaved as they arrived.
    pub output: String,
}

/// The runtime and uid of Container `ns/name`.
async fn target(s: &AppRef, ns: &str, name: &str) -> ApiResult<(Runtime, String)> {
    let obj = s
        .store
        .get(&ObjectKey::new(Kind::Container, ns, name))
        .await?;
    let c = obj.typed::<ContainerSpec, ContainerStatus>().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        )
    })?;
    Ok((c.spec.runtime, c.metadata.uid.unwrap_or_default()))
}

fn docker_error(e: DockerError) -> ApiError {
    let msg = e.to_string();
    if e.is_unavailable() {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", msg)
    } else if e.is_not_found() {
        ApiError::not_found(msg)
    } else if matches!(e, DockerError::Conflict { .. }) {
        ApiError::new(StatusCode::CONFLICT, "Conflict", msg)
    } else {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", msg)
    }
}

fn docker(s: &AppRef) -> ApiResult<DockerDriver> {
    s.docker
        .get_or_init(|| DockerDriver::connect(None).map_err(|e| e.to_string()))
        .clone()
        .map_err(|m| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", m))
}

fn flag(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k)
        .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True"))
}

fn number(q: &HashMap<String, String>, k: &str) -> ApiResult<Option<u64>> {
    q.get(k)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse()
                .map_err(|_| ApiError::bad_request(format!("{k}: {v:?} is not a number")))
        })
        .transpose()
}

/// Kubernetes pod-log query names: follow, tailLines, sinceSeconds, previous, timestamps.
pub fn log_query(q: &HashMap<String, String>) -> ApiResult<LogQuery> {
    Ok(LogQuery {
        tail: number(q, "tailLines")?.map(|n| n as usize),
        since: number(q, "sinceSeconds")?.map(Duration::from_secs),
        previous: flag(q, "previous"),
        follow: flag(q, "follow"),
        timestamps: flag(q, "timestamps"),
    })
}

/// A `Write` that feeds a streamed response body; writing fails once the client has gone.
struct ChannelWriter(tokio::sync::mpsc::UnboundedSender<Bytes>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn text_stream(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// `GET /apis/tend.dev/v1/namespaces/{ns}/containers/{name}/log`.
pub(crate) async fn log(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    id.check(Some(&ns), false)?;
    let lq = log_query(&q)?;
    let (runtime, uid) = target(&s, &ns, &name).await?;
    match runtime {
        Runtime::Native => {
            let root = s.state_dir.join("containers");
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut out = ChannelWriter(tx);
                if let Err(e) = native_logs(&root, &uid, &lq, &mut out).await {
                    tracing::debug!(error = %e, uid, "log stream ended");
                }
            });
            let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
                .map(Ok::<_, std::convert::Infallible>);
            Ok(text_stream(Body::from_stream(body)))
        }
        Runtime::Docker => {
            if lq.previous || lq.since.is_some() || lq.timestamps {
                return Err(ApiError::bad_request(
                    "previous, sinceSeconds and timestamps are not supported for docker containers",
                ));
            }
            let lines = docker(&s)?
                .logs(&format!("tend-{uid}"), lq.tail, lq.follow)
                .await
                .map_err(docker_error)?;
            let body = lines
                .take_while(|l| std::future::ready(l.is_ok()))
                .filter_map(|l| std::future::ready(l.ok()))
                .map(|l| Ok::<_, std::convert::Infallible>(Bytes::from(format!("{}\n", l.line))));
            Ok(text_stream(Body::from_stream(body)))
        }
    }
}

/// `POST /apis/tend.dev/v1/namespaces/{ns}/containers/{name}/exec`.
pub(crate) async fn exec(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<ExecResponse>> {
    id.check(Some(&ns), true)?;
    let req: ExecRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("malformed exec request: {e}")))?;
    if req.command.is_empty() {
        return Err(ApiError::bad_request("command: must not be empty"));
    }
    let (runtime, uid) = target(&s, &ns, &name).await?;
    match runtime {
        Runtime::Native => native_exec(&s, &uid, &req.command).await.map(Json),
        Runtime::Docker => {
            let argv: Vec<&str> = req.command.iter().map(String::as_str).collect();
            let out = docker(&s)?
                .exec(&format!("tend-{uid}"), &argv)
                .await
                .map_err(docker_error)?;
            Ok(Json(ExecResponse {
                exit_code: out.exit_code,
                output: out.output,
            }))
        }
    }
}

/// Runs `tend exec-native` (this binary) so the command's stdout and stderr land in one pipe
/// the daemon reads, not on the daemon's own output; tend's own error comes on stderr.
async fn native_exec(s: &AppRef, uid: &str, argv: &[String]) -> ApiResult<ExecResponse> {
    let internal = |m: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", m);
    let exe = std::env::current_exe().map_err(|e| internal(format!("locating tend: {e}")))?;
    let out = tokio::process::Command::new(exe)
        .arg("exec-native")
        .arg(s.state_dir.join("containers"))
        .arg(uid)
        .arg("--")
        .args(argv)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| internal(format!("starting exec: {e}")))?;
    let failure = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !failure.is_empty() {
        return Err(ApiError::new(StatusCode::CONFLICT, "Conflict", failure));
    }
    Ok(ExecResponse {
        exit_code: out.status.code().map_or(-1, i64::from),
        output: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}
