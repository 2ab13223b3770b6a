//! Container logs and exec: `GET .../namespaces/{ns}/containers/{name}/log` (text/plain,
//! streamed with `follow`) and `POST .../namespaces/{ns}/containers/{name}/exec`
//! (`{"command": [...]}` in, `{"exitCode", "output"}` out).
//!
//! Both are the container runtime's ([`ContainerRuntime::logs`], [`ContainerRuntime::exec`]):
//! the handler finds the Container, asks the daemon's runtimes which one serves it, and maps
//! the runtime's typed error to a status (503 while dockerd is down). kubectl's SPDY/websocket
//! exec and attach are not served: exec runs to completion and returns the collected output.

use super::error::{ApiError, ApiResult};
use super::{AppRef, Identity};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tend_controllers::container::{ContainerRuntime, DriverError, LogQuery};
use tend_schema::kinds::container::{ContainerSpec, ContainerStatus};
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
    let (rt, uid) = target(&s, &ns, &name).await?;
    let out = rt.exec(&uid, &req.command).await.map_err(driver_error)?;
    Ok(Json(ExecResponse {
        exit_code: out.exit_code,
        output: String::from_utf8_lossy(&out.output).into_owned(),
    }))
}
