//! Container logs and exec: `GET .../namespaces/{ns}/containers/{name}/log` (text/plain,
//! streamed with `follow`) and `POST .../namespaces/{ns}/containers/{name}/exec` (streamed
//! both ways, see [`exec_frames`]).
//!
//! Both are the container runtime's ([`ContainerRuntime::logs`], [`ContainerRuntime::exec`]):
//! the handler finds the Container, asks the daemon's runtimes which one serves it, and maps
//! the runtime's typed error to a status (503 while dockerd is down). kubectl's SPDY/websocket
//! exec and attach are not served.

use super::error::{ApiError, ApiResult};
use super::exec_frames;
use super::{AppRef, Identity};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tend_controllers::container::{ContainerRuntime, DriverError, ExecEvent, LogQuery};
use tend_schema::kinds::container::{ContainerSpec, ContainerStatus};
use tend_schema::{Kind, ObjectKey};

/// The first line of an exec request (the rest of the body is stdin).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// argv; the first word is looked up on the container's PATH.
    pub command: Vec<String>,
    /// Give the command the rest of the request body as stdin (else it reads EOF).
    #[serde(default)]
    pub stdin: bool,
}

/// The runtime serving Container `ns/name`, and its uid: the runtime is the daemon's to choose
/// ([`Runtimes::serving`]), never the API's.
async fn target(
    s: &AppRef,
    ns: &str,
    name: &str,
) -> ApiResult<(Arc<dyn ContainerRuntime>, String)> {
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
    let unavailable =
        |m: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", m);
    let runtimes = s
        .runtimes
        .as_ref()
        .ok_or_else(|| unavailable("this server runs no container runtimes".into()))?;
    let rt = runtimes
        .serving(&c.spec)
        .ok_or_else(|| unavailable(format!("no {:?} runtime in this daemon", c.spec.runtime)))?;
    Ok((rt.clone(), c.metadata.uid.unwrap_or_default()))
}

/// The HTTP answer to a runtime's failure.
fn driver_error(e: DriverError) -> ApiError {
    let msg = e.to_string();
    match e {
        DriverError::Unavailable { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", msg)
        }
        DriverError::NotFound { .. } => ApiError::not_found(msg),
        DriverError::NotRunning { .. } => ApiError::new(StatusCode::CONFLICT, "Conflict", msg),
        DriverError::Refused { .. } => ApiError::bad_request(msg),
        DriverError::TimedOut { .. } => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "Timeout", msg),
        DriverError::Failed(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", msg)
        }
    }
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
    let (rt, uid) = target(&s, &ns, &name).await?;
    let chunks = rt.logs(&uid, &lq).await.map_err(driver_error)?;
    let body = chunks
        .take_while(|c| std::future::ready(c.is_ok()))
        .filter_map(|c| std::future::ready(c.ok().map(Bytes::from)))
        .map(Ok::<_, std::convert::Infallible>);
    Ok(text_stream(Body::from_stream(body)))
}

/// Longest JSON line at the head of an exec request.
const MAX_EXEC_REQUEST: usize = 64 * 1024;

/// Reads the request line (JSON up to `\n`, or the whole body without one) and returns it
/// with the bytes after it (the start of stdin).
async fn exec_request(
    body: &mut (impl futures::Stream<Item = Result<Bytes, axum::Error>> + Unpin),
) -> ApiResult<(ExecRequest, Bytes)> {
    let mut head = Vec::new();
    let mut rest = Bytes::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("exec request: {e}")))?;
        if let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            head.extend_from_slice(&chunk[..i]);
            rest = chunk.slice(i + 1..);
            break;
        }
        head.extend_from_slice(&chunk);
        if head.len() > MAX_EXEC_REQUEST {
            return Err(ApiError::bad_request("exec request: no newline in 64 KiB"));
        }
    }
    let req: ExecRequest = serde_json::from_slice(&head)
        .map_err(|e| ApiError::bad_request(format!("malformed exec request: {e}")))?;
    Ok((req, rest))
}

/// One event as a frame ([`exec_frames`]).
fn frame(ev: Result<ExecEvent, DriverError>) -> Bytes {
    match ev {
        Ok(ExecEvent::Stdout(b)) => exec_frames::encode(exec_frames::STDOUT, &b),
        Ok(ExecEvent::Stderr(b)) => exec_frames::encode(exec_frames::STDERR, &b),
        Ok(ExecEvent::Exit(code)) => {
            exec_frames::encode(exec_frames::EXIT, code.to_string().as_bytes())
        }
        Err(e) => exec_frames::encode(exec_frames::ERROR, e.to_string().as_bytes()),
    }
}

/// `POST /apis/tend.dev/v1/namespaces/{ns}/containers/{name}/exec`: streamed both ways (the
/// format is [`exec_frames`]'s). The runtime reads output only as fast as the connection takes
/// it; the connection closing drops the session, which kills the command.
pub(crate) async fn exec(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path((ns, name)): Path<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    id.check(Some(&ns), true)?;
    let mut body = body.into_data_stream();
    let (req, rest) = exec_request(&mut body).await?;
    if req.command.is_empty() {
        return Err(ApiError::bad_request("command: must not be empty"));
    }
    let (rt, uid) = target(&s, &ns, &name).await?;
    let session = rt
        .exec(&uid, &req.command, req.stdin)
        .await
        .map_err(driver_error)?;
    if let Some(tx) = session.stdin {
        tokio::spawn(async move {
            if !rest.is_empty() && tx.send(rest.to_vec()).await.is_err() {
                return;
            }
            while let Some(Ok(chunk)) = body.next().await {
                if tx.send(chunk.to_vec()).await.is_err() {
                    return;
                }
            }
        });
    }
    let frames = session
        .events
        .map(|ev| Ok::<_, std::convert::Infallible>(frame(ev)));
    Ok((
        [(header::CONTENT_TYPE, exec_frames::CONTENT_TYPE)],
        Body::from_stream(frames),
    )
        .into_response())
}
