//! Handlers for objects: get, list, create, replace, status, patch, delete.

use super::error::{ApiError, ApiResult};
use super::request::{self, fit_to_path, kind_of, parse_bytes, parse_object_body, Params};
use super::{ssa, table, watch, AppRef, Identity};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};
use std::collections::HashMap;
use tend_schema::decode::decode_value;
use tend_schema::store::{DeleteOptions, Deleted, StoreError};
use tend_schema::{AnyObject, Kind, ObjectKey};

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
        Params::parse(&q.0)
    }
}

/// The request body, or a Status for one too large or unreadable.
fn body_bytes(b: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    b.map_err(|e| ApiError::new(e.status(), "RequestEntityTooLarge", e.body_text()))
        .and_then(|b| {
            if b.is_empty() {
                Err(ApiError::bad_request("the request needs a body"))
            } else {
                Ok(b)
            }
        })
}

/// One object as JSON, or as a one-row Table when asked.
pub(crate) fn respond(code: StatusCode, headers: &HeaderMap, obj: AnyObject) -> Response {
    let obj = ssa::present(obj);
    if request::wants_table(headers) {
        let kind = obj.kind().unwrap_or(Kind::State);
        let rv = obj.metadata.resource_version.clone().unwrap_or_default();
        return (code, Json(table::table(kind, &[obj], &rv))).into_response();
    }
    (code, Json(obj)).into_response()
}

pub async fn get_one(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let key = request::key(&plural, &ns, &name)?;
    id.check(Some(&ns), false)?;
    let obj = super::usage::with_usage(&s, s.store.get(&key).await?);
    Ok(respond(StatusCode::OK, &headers, obj))
}

pub async fn list_ns(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path((ns, plural)): Path<(String, String)>,
    p: Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    id.check(Some(&ns), false)?;
    list(s, id, kind_of(&plural)?, Some(ns), p, headers).await
}

pub async fn list_all(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path(plural): Path<String>,
    p: Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    list(s, id, kind_of(&plural)?, None, p, headers).await
}

async fn list(
    s: AppRef,
    id: Identity,
    kind: Kind,
    ns: Option<String>,
    p: Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let q = p.list_query(kind, ns.as_deref())?;
    if let Some(ns) = &q.namespace {
        id.check(Some(ns), false)?;
    }
    if p.watch {
        return watch::watch(s, id, kind, q, p, headers).await;
    }
    let list = s.store.list(&q).await?;
    let items: Vec<AnyObject> = list
        .items
        .into_iter()
        .filter(|o| id.sees(o.metadata.ns()))
        .map(|o| ssa::present(super::usage::with_usage(&s, o)))
        .collect();
    let rv = list.revision.to_string();
    if request::wants_table(&headers) {
        return Ok(Json(table::table(kind, &items, &rv)).into_response());
    }
    Ok(Json(json!({
        "apiVersion": tend_schema::API_VERSION,
        "kind": format!("{}List", kind.as_str()),
        "metadata": {"resourceVersion": rv},
        "items": items,
    }))
    .into_response())
}

/// Gives a `generateName` object its name, as kube does.
fn generate_name(v: &mut Value) {
    let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let named = meta
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if let (false, Some(prefix)) = (named, meta.get("generateName").and_then(Value::as_str)) {
        use rand::Rng;
        let suffix: String = (0..5)
            .map(|_| char::from(b"bcdfghjklmnpqrstvwxz2456789"[rand::rng().random_range(0..27)]))
            .collect();
        let name = format!("{prefix}{suffix}");
        meta.insert("name".into(), name.into());
    }
}

pub async fn create(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path((ns, plural)): Path<(String, String)>,
    p: Params,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let kind = kind_of(&plural)?;
    id.check(Some(&ns), true)?;
    let mut v = parse_object_body(&headers, &body_bytes(body)?, true)?;
    fit_to_path(&mut v, kind, &ns, None)?;
    generate_name(&mut v);
    let obj = decode_value(v)?;
    s.admit(&id, &obj)?;
    let created = if p.dry_run {
        let key = obj.key().map_err(ApiError::invalid)?;
        match s.store.get(&key).await {
            Ok(_) => return Err(StoreError::AlreadyExists(key).into()),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        s.store.apply(vec![obj], true).await?.remove(0).object
    } else {
        s.timed(s.store.create(obj)).await?
    };
    Ok(respond(StatusCode::CREATED, &headers, created))
}

/// Writes a full desired object for `id`: admission policy, then CAS on its resourceVersion
/// (none = unconditional).
pub(crate) async fn write(
    s: &AppRef,
    id: &Identity,
    mut obj: AnyObject,
    current: &AnyObject,
    dry_run: bool,
) -> ApiResult<AnyObject> {
    s.admit(id, &obj)?;
    ssa::carry(current, &mut obj);
    if dry_run {
        return Ok(s.store.apply(vec![obj], true).await?.remove(0).object);
    }
    Ok(s.timed(s.store.update(obj)).await?)
}

/// The object a write is about, after checking the token may write in its namespace.
fn writable_key(id: &Identity, plural: &str, ns: &str, name: &str) -> ApiResult<ObjectKey> {
    let key = request::key(plural, ns, name)?;
    id.check(Some(ns), true)?;
    Ok(key)
}

/// A PUT body (object or status): the key, and the parsed body with kind, namespace and name
/// checked against (or filled in from) the path.
fn put_body(
    id: &Identity,
    plural: &str,
    ns: &str,
    name: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(ObjectKey, Value)> {
    let key = writable_key(id, plural, ns, name)?;
    let mut v = parse_object_body(headers, &body_bytes(body)?, true)?;
    fit_to_path(&mut v, key.kind, ns, Some(name))?;
    Ok((key, v))
}

pub async fn replace(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    p: Params,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let (key, v) = put_body(&id, &plural, &ns, &name, &headers, body)?;
    let obj = decode_value(v)?;
    let current = s.store.get(&key).await?;
    let out = write(&s, &id, obj, &current, p.dry_run).await?;
    Ok(respond(StatusCode::OK, &headers, out))
}

fn revision_of(v: &Value, current: &AnyObject) -> ApiResult<u64> {
    match v
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        None | Some("") => Ok(current.metadata.revision().unwrap_or(0)),
        Some(rv) => rv.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "metadata.resourceVersion: {rv:?} is not a revision"
            ))
        }),
    }
}

async fn write_status(
    s: &AppRef,
    key: &ObjectKey,
    current: AnyObject,
    rv: u64,
    status: Value,
    dry_run: bool,
) -> ApiResult<AnyObject> {
    if dry_run {
        if current.metadata.revision() != Some(rv) {
            return Err(StoreError::Conflict {
                key: key.clone(),
                given: rv.to_string(),
                current: current.metadata.revision().unwrap_or(0),
            }
            .into());
        }
        return Ok(AnyObject { status, ..current });
    }
    Ok(s.timed(s.store.update_status(key, rv, status)).await?)
}

pub async fn replace_status(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    p: Params,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let (key, v) = put_body(&id, &plural, &ns, &name, &headers, body)?;
    let current = s.store.get(&key).await?;
    let rv = revision_of(&v, &current)?;
    let status = v.get("status").cloned().unwrap_or(Value::Null);
    let out = write_status(&s, &key, current, rv, status, p.dry_run).await?;
    Ok(respond(StatusCode::OK, &headers, out))
}

pub async fn patch(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    p: Params,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let key = writable_key(&id, &plural, &ns, &name)?;
    let body = body_bytes(body)?;
    let ct = request::content_type(&headers);
    let (code, out) = match ct.as_str() {
        "application/apply-patch+yaml" => ssa::apply(&s, &id, &key, &body, &p).await?,
        "application/merge-patch+json" | "application/json-patch+json" => (
            StatusCode::OK,
            patch_object(&s, &id, &key, &ct, &body, p.dry_run).await?,
        ),
        other => return Err(unsupported_patch(other)),
    };
    Ok(respond(code, &headers, out))
}

fn unsupported_patch(ct: &str) -> ApiError {
    ApiError::unsupported_media(
        ct,
        "application/merge-patch+json, application/json-patch+json, application/apply-patch+yaml",
    )
}

/// Applies a merge or JSON patch to `doc`.
fn apply_patch(doc: &mut Value, ct: &str, body: &[u8]) -> ApiResult<()> {
    if ct == "application/merge-patch+json" {
        let patch: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("malformed merge patch: {e}")))?;
        if !patch.is_object() {
            return Err(ApiError::bad_request("a merge patch must be a JSON object"));
        }
        json_patch::merge(doc, &patch);
        return Ok(());
    }
    let patch: json_patch::Patch = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON patch: {e}")))?;
    json_patch::patch(doc, &patch).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("the JSON patch does not apply: {e}"),
        )
    })
}

/// Read, patch, write with CAS; retried when someone else wrote in between and the patch itself
/// named no resourceVersion.
async fn patch_object(
    s: &AppRef,
    id: &Identity,
    key: &ObjectKey,
    ct: &str,
    body: &[u8],
    dry_run: bool,
) -> ApiResult<AnyObject> {
    for _ in 0..8 {
        let current = s.store.get(key).await?;
        let mut doc =
            serde_json::to_value(ssa::present(current.clone())).expect("objects serialize");
        apply_patch(&mut doc, ct, body)?;
        let pinned = doc.pointer("/metadata/resourceVersion")
            != Some(&json!(current.metadata.resource_version));
        let v = doc.as_object_mut().expect("objects are JSON objects");
        v.remove("status");
        let obj = decode_value(doc)?;
        if obj.key().map_err(ApiError::invalid)? != *key {
            return Err(ApiError::bad_request(
                "a patch may not change kind, namespace or name",
            ));
        }
        match write(s, id, obj, &current, dry_run).await {
            Err(e) if e.reason == "Conflict" && !pinned => continue,
            other => return other,
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "Conflict",
        format!("{key} kept changing; try again"),
    ))
}

pub async fn patch_status(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    p: Params,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let key = writable_key(&id, &plural, &ns, &name)?;
    let body = body_bytes(body)?;
    let ct = request::content_type(&headers);
    if ct != "application/merge-patch+json" && ct != "application/json-patch+json" {
        return Err(unsupported_patch(&ct));
    }
    let current = s.store.get(&key).await?;
    let mut doc = serde_json::to_value(&current).expect("objects serialize");
    apply_patch(&mut doc, &ct, &body)?;
    let rv = revision_of(&doc, &current)?;
    let status = doc.get("status").cloned().unwrap_or(Value::Null);
    let out = write_status(&s, &key, current, rv, status, p.dry_run).await?;
    Ok(respond(StatusCode::OK, &headers, out))
}

/// The parts of a Kubernetes DeleteOptions body tend honours.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteBody {
    propagation_policy: Option<String>,
    preconditions: Option<Preconditions>,
    dry_run: Option<Vec<String>>,
    orphan_dependents: Option<bool>,
    grace_period_seconds: Option<i64>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Preconditions {
    uid: Option<String>,
    resource_version: Option<String>,
}

pub async fn delete(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    p: Params,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let key = writable_key(&id, &plural, &ns, &name)?;
    let body =
        body.map_err(|e| ApiError::new(e.status(), "RequestEntityTooLarge", e.body_text()))?;
    let d: DeleteBody = if body.iter().all(u8::is_ascii_whitespace) {
        DeleteBody::default()
    } else {
        serde_json::from_value(parse_bytes(&body, false)?)
            .map_err(|e| ApiError::bad_request(format!("malformed DeleteOptions: {e}")))?
    };
    let mut opts = DeleteOptions {
        propagation: p.propagation.unwrap_or_default(),
        ..Default::default()
    };
    if let Some(pp) = &d.propagation_policy {
        opts.propagation = pp.parse().map_err(ApiError::bad_request)?;
    } else if d.orphan_dependents == Some(true) {
        opts.propagation = tend_schema::store::Propagation::Orphan;
    }
    let grace = match (d.grace_period_seconds, p.grace_period_seconds) {
        (Some(g), _) | (None, Some(g)) => Some(g),
        (None, None) => None,
    };
    if let Some(g) = grace {
        opts.grace_period_seconds = Some(u32::try_from(g).map_err(|_| {
            ApiError::bad_request(format!(
                "gracePeriodSeconds: {g} is not a number of seconds (0 or more)"
            ))
        })?);
    }
    if let Some(pre) = d.preconditions {
        opts.uid = pre.uid;
        opts.resource_version = pre.resource_version;
    }
    let dry_run = p.dry_run || d.dry_run.is_some_and(|v| v.iter().any(|x| x == "All"));
    if dry_run {
        let current = s.store.get(&key).await?;
        let stale = |given: &Option<String>, have: &Option<String>| {
            given.as_ref().is_some_and(|g| Some(g) != have.as_ref())
        };
        if stale(&opts.uid, &current.metadata.uid)
            || stale(&opts.resource_version, &current.metadata.resource_version)
        {
            return Err(StoreError::Precondition {
                key,
                message: "preconditions do not match".into(),
            }
            .into());
        }
        return Ok(respond(StatusCode::OK, &headers, current));
    }
    match s.timed(s.store.delete(&key, &opts)).await? {
        Deleted::Terminating(obj) => Ok(respond(StatusCode::OK, &headers, obj)),
        Deleted::Gone(obj) => Ok(Json(json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": obj.metadata.name,
                "group": tend_schema::API_GROUP,
                "kind": key.kind.plural(),
                "uid": obj.metadata.uid,
            },
        }))
        .into_response()),
    }
}
