//! A Container's revisions and rollback: `GET .../containers/{name}/revisions[/{n}]` and
//! `POST .../containers/{name}/rollback` (`{"toRevision": N, "data": true}`), the same calls
//! `tend rollout history|undo` makes (directly on the store when no daemon runs).
//!
//! A rollback writes the old revision's spec as a new generation (so a new revision, with the
//! cause `rollback to revision N`), through the same admission check as any write; with
//! `data` the new revision also names revision N's data snapshot, which the controller
//! restores into the Sandbox before the new revision starts.

use super::error::{ApiError, ApiResult};
use super::{AppRef, Identity};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tend_schema::kinds::container::{ContainerSpec, ContainerStatus};
use tend_schema::store::{Requester, Revision, Store};
use tend_schema::{AnyObject, Kind, ObjectKey};

/// The body of a rollback.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackRequest {
    /// The revision to go back to; absent: the one before the spec's current revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_revision: Option<u64>,
    /// Also restore that revision's data snapshot into the Sandbox.
    #[serde(default)]
    pub data: bool,
}

/// `kind: ContainerRevisionList`: the revisions, oldest first, and which one runs.
pub async fn history(store: &dyn Store, key: &ObjectKey) -> ApiResult<Value> {
    let obj = store.get(key).await?;
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let st: ContainerStatus = serde_json::from_value(obj.status.clone()).unwrap_or_default();
    let revs = store.revisions(&uid).await?;
    let spec_rev = revs
        .iter()
        .find(|r| r.generation == obj.metadata.generation)
        .map(|r| r.revision);
    Ok(json!({
        "apiVersion": tend_schema::API_VERSION,
        "kind": "ContainerRevisionList",
        "metadata": {"name": key.name, "namespace": key.namespace, "uid": uid},
        "running": st.revision,
        "spec": spec_rev,
        "items": revs,
    }))
}

fn unknown(key: &ObjectKey, n: u64, revs: &[Revision]) -> ApiError {
    let have: Vec<String> = revs.iter().map(|r| r.revision.to_string()).collect();
    ApiError::not_found(format!(
        "{key} has no revision {n} (it has {})",
        if have.is_empty() {
            "none".to_string()
        } else {
            have.join(", ")
        }
    ))
}

/// One revision, or 404 naming the revisions there are.
pub async fn one(store: &dyn Store, key: &ObjectKey, n: u64) -> ApiResult<Revision> {
    let obj = store.get(key).await?;
    let revs = store
        .revisions(obj.metadata.uid.as_deref().unwrap_or_default())
        .await?;
    revs.iter()
        .find(|r| r.revision == n)
        .cloned()
        .ok_or_else(|| unknown(key, n, &revs))
}

/// Writes revision `req.to_revision`'s spec as the Container's spec (a new revision), as
/// `who`; `admit` is the caller's admission check of the object to be written.
///
/// # Errors
/// 404 for an unknown Container or revision; 400 when the revision is the current spec, or
/// `data` is asked of a revision without a data snapshot; 409 when the object moved meanwhile.
pub async fn rollback(
    store: &dyn Store,
    key: &ObjectKey,
    req: &RollbackRequest,
    who: &str,
    admit: impl FnOnce(&AnyObject) -> ApiResult<()>,
) -> ApiResult<AnyObject> {
    let mut obj = store.get(key).await?;
    let revs = store
        .revisions(obj.metadata.uid.as_deref().unwrap_or_default())
        .await?;
    let current = revs
        .iter()
        .find(|r| r.generation == obj.metadata.generation)
        .map(|r| r.revision);
    let to = match req.to_revision {
        Some(n) => revs
            .iter()
            .find(|r| r.revision == n)
            .ok_or_else(|| unknown(key, n, &revs))?,
        None => revs
            .iter()
            .rev()
            .find(|r| current.is_none_or(|c| r.revision < c))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{key} has no revision before the current one to go back to"
                ))
            })?,
    };
    if to.spec == obj.spec {
        return Err(ApiError::bad_request(format!(
            "the spec of {key} already is revision {}'s",
            to.revision
        )));
    }
    let restore = match (req.data, &to.snapshot) {
        (false, _) => None,
        (true, Some(tree)) => Some(tree.clone()),
        (true, None) => {
            let with: Vec<String> = revs
                .iter()
                .filter(|r| r.snapshot.is_some())
                .map(|r| r.revision.to_string())
                .collect();
            return Err(ApiError::bad_request(format!(
                "data: revision {} of {key} has no data snapshot (revisions with one: {}); only a Rollout with snapshotData takes them",
                to.revision,
                if with.is_empty() { "none".into() } else { with.join(", ") }
            )));
        }
    };
    let spec: ContainerSpec = serde_json::from_value(to.spec.clone()).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("revision {} does not decode: {e}", to.revision),
        )
    })?;
    if restore.is_some() && spec.rootfs.is_none() {
        return Err(ApiError::bad_request(format!(
            "data: revision {} of {key} has no Sandbox to restore into",
            to.revision
        )));
    }
    obj.spec = to.spec.clone();
    admit(&obj)?;
    let cause = match restore {
        Some(_) => format!("rollback to revision {} with its data", to.revision),
        None => format!("rollback to revision {}", to.revision),
    };
    let requester = Requester {
        who: who.to_string(),
        cause,
        restore_snapshot: restore,
    };
    Ok(requester.scope(store.update(obj)).await?)
}

/// The `who` recorded for an identity.
pub fn who(id: &Identity) -> String {
    match id.namespaces {
        None if id.id == "local" => "local".into(),
        _ => format!("token:{}", id.id),
    }
}

fn container_key(plural: &str, ns: &str, name: &str) -> ApiResult<ObjectKey> {
    let key = super::request::key(plural, ns, name)?;
    if key.kind != Kind::Container {
        return Err(ApiError::not_found(format!(
            "{} have no revisions; only containers do",
            key.kind.plural()
        )));
    }
    Ok(key)
}

/// `GET {base}/namespaces/{ns}/containers/{name}/revisions`.
pub(crate) async fn list_handler(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path((ns, plural, name)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    id.check(Some(&ns), false)?;
    let key = container_key(&plural, &ns, &name)?;
    Ok(Json(history(&*s.store, &key).await?))
}

/// `GET {base}/namespaces/{ns}/containers/{name}/revisions/{n}`.
pub(crate) async fn one_handler(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path((ns, plural, name, n)): Path<(String, String, String, String)>,
) -> ApiResult<Json<Revision>> {
    id.check(Some(&ns), false)?;
    let key = container_key(&plural, &ns, &name)?;
    let n: u64 = n
        .parse()
        .map_err(|_| ApiError::bad_request(format!("revision {n:?} is not a number")))?;
    Ok(Json(one(&*s.store, &key, n).await?))
}

/// `POST {base}/namespaces/{ns}/containers/{name}/rollback`.
pub(crate) async fn rollback_handler(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<AnyObject>> {
    id.check(Some(&ns), true)?;
    let key = container_key(&plural, &ns, &name)?;
    let req: RollbackRequest = if body.is_empty() {
        RollbackRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("rollback request: {e}")))?
    };
    let who = who(&id);
    let obj = rollback(&*s.store, &key, &req, &who, |o| s.admit(&id, o)).await?;
    Ok(Json(super::present(obj)))
}
