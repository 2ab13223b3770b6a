//! `POST /apis/tend.dev/v1/apply`: tend's own batch apply, the request `tend apply` sends.
//!
//! The body is a `kind: List` of objects (JSON or YAML). They are created or updated in order
//! by [`Store::apply`](tend_schema::store::Store::apply) — the same call `tend apply` makes
//! without a daemon — stopping at the first failure and keeping what was applied before it.
//! The answer is always an [`ApplyResponse`]: HTTP 200 when everything applied, else the code
//! of the failure with `failed.status` holding its `kind: Status` body.

use super::error::{ApiError, ApiResult};
use super::request::{parse_object_body, Params};
use super::{AppRef, Identity};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tend_schema::decode::decode_value;
use tend_schema::store::Applied;

/// What happened to one applied object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedItem {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `created`, `configured` or `unchanged`.
    pub action: String,
    pub resource_version: String,
}

/// The item that stopped the apply, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedItem {
    /// 0-based index into `items` of the request.
    pub index: usize,
    /// A `kind: Status` body (reason, message, `details.causes[].field`).
    pub status: Value,
}

/// The answer to a batch apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResponse {
    pub api_version: String,
    /// Always `ApplyResult`.
    pub kind: String,
    /// The objects applied (committed, or would be with dryRun), in request order.
    pub items: Vec<AppliedItem>,
    /// Set when an item failed; nothing after it was tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<FailedItem>,
}

/// The wire word for an [`Applied`].
pub fn action_word(a: Applied) -> &'static str {
    match a {
        Applied::Created => "created",
        Applied::Configured => "configured",
        Applied::Unchanged => "unchanged",
    }
}

fn respond(items: Vec<AppliedItem>, failed: Option<(usize, ApiError)>) -> Response {
    let code = failed.as_ref().map_or(StatusCode::OK, |(_, e)| e.code);
    let body = ApplyResponse {
        api_version: tend_schema::API_VERSION.into(),
        kind: "ApplyResult".into(),
        items,
        failed: failed.map(|(index, e)| FailedItem {
            index,
            status: e.status_body(),
        }),
    };
    (code, Json(body)).into_response()
}

/// `POST /apis/tend.dev/v1/apply[?dryRun=All]` with a `kind: List` body.
pub(crate) async fn apply(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    p: Params,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let v = parse_object_body(&headers, &body, true)?;
    let Some(Value::Array(items)) = v.get("items") else {
        return Err(ApiError::bad_request("the body must be a List with items"));
    };
    let mut objects = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match decode_value(item.clone()) {
            Ok(o) => objects.push(o),
            Err(e) => return Ok(respond(vec![], Some((i, e.into())))),
        }
    }
    // Every namespace and the admission policy are checked before anything is written.
    for o in &objects {
        id.check(Some(o.metadata.ns()), true)?;
        s.admit(&id, o)?;
    }
    let (applied, failed) = match s.timed(s.store.apply(objects, p.dry_run)).await {
        Ok(r) => (r, None),
        Err(e) => (e.applied, Some((e.failed, ApiError::from(*e.error)))),
    };
    let items = applied
        .into_iter()
        .map(|r| AppliedItem {
            kind: r.key.kind.as_str().into(),
            namespace: r.key.namespace.clone(),
            name: r.key.name.clone(),
            action: action_word(r.action).into(),
            resource_version: r.object.metadata.resource_version.unwrap_or_default(),
        })
        .collect();
    Ok(respond(items, failed))
}
