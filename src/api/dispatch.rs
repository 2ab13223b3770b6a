//! Routing for paths that share a pattern with the object routes: `events` and `apply` sit
//! where a resource plural goes, `log` and `exec` only exist for `containers`.

use super::error::{ApiError, ApiResult};
use super::request::Params;
use super::{batch, containers, events, objects, AppRef, Identity};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use std::collections::HashMap;

/// `GET {base}/namespaces/{ns}/{plural}`: events, or a list (or watch) of objects.
pub async fn ns_collection(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path((ns, plural)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if plural == "events" {
        return Ok(events::list_ns(State(s), Extension(id), Path(ns), Query(q))
            .await?
            .into_response());
    }
    let p = Params::parse(&q)?;
    objects::list_ns(State(s), Extension(id), Path((ns, plural)), p, headers).await
}

/// `GET {base}/{plural}`: events, usage history or objects in every namespace.
pub async fn all_collection(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path(plural): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if plural == "events" {
        return Ok(events::list_all(State(s), Extension(id), Query(q))
            .await?
            .into_response());
    }
    if plural == "usage" {
        return Ok(Json(super::usage::history(&s, &id).await?).into_response());
    }
    let p = Params::parse(&q)?;
    objects::list_all(State(s), Extension(id), Path(plural), p, headers).await
}

/// `POST {base}/{plural}`: only `apply` (the batch apply) takes a POST here.
pub async fn all_post(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path(plural): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    if plural != "apply" {
        return Err(ApiError::method_not_allowed());
    }
    batch::apply(State(s), Extension(id), Params::parse(&q)?, headers, body).await
}

fn only_containers(plural: &str) -> ApiResult<()> {
    if plural == tend_schema::Kind::Container.plural() {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "{plural} have no such subresource (log and exec are served for containers)"
        )))
    }
}

/// `GET {base}/namespaces/{ns}/containers/{name}/log`.
pub async fn log(
    s: State<AppRef>,
    id: Extension<Identity>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    q: Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    only_containers(&plural)?;
    containers::log(s, id, Path((ns, name)), q).await
}

/// `POST {base}/namespaces/{ns}/containers/{name}/exec`.
pub async fn exec(
    s: State<AppRef>,
    id: Extension<Identity>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    body: axum::body::Body,
) -> ApiResult<Response> {
    only_containers(&plural)?;
    containers::exec(s, id, Path((ns, name)), body).await
}
