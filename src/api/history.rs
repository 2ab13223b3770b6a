//! `GET {base}/namespaces/{ns}/{plural}/{name}/history`: every spec, status and metadata change
//! of one object still in the change feed (bounded by its compaction), each with what changed —
//! what `tend history KIND/NAME` prints.

use super::error::ApiResult;
use super::{AppRef, Identity};
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{json, Value};
use tend_schema::store::{ChangeType, Store};
use tend_schema::{AnyObject, ObjectKey};

/// Which parts of the object differ between two versions: `spec`, `status`, `metadata`.
fn changed(before: Option<&AnyObject>, after: &AnyObject) -> Vec<&'static str> {
    let Some(b) = before else {
        return vec![];
    };
    let mut out = Vec::new();
    if b.spec != after.spec {
        out.push("spec");
    }
    if b.status != after.status {
        out.push("status");
    }
    let meta = |o: &AnyObject| {
        let mut m = o.metadata.clone();
        m.resource_version = None;
        m.generation = 0;
        m
    };
    if meta(b) != meta(after) {
        out.push("metadata");
    }
    out
}

/// `kind: ObjectHistory` of `key`: its changes, oldest first, and where history was compacted.
pub async fn history(store: &dyn Store, key: &ObjectKey) -> ApiResult<Value> {
    let (events, compacted) = store.history(key).await?;
    let mut prev: Option<AnyObject> = None;
    let mut items = Vec::new();
    for ev in events {
        let what = match ev.type_ {
            ChangeType::Added => vec!["created"],
            ChangeType::Deleted => vec!["deleted"],
            ChangeType::Modified => changed(prev.as_ref(), &ev.object),
        };
        items.push(json!({
            "revision": ev.revision,
            "type": ev.type_.as_str(),
            "generation": ev.object.metadata.generation,
            "changed": what,
            "object": super::present(ev.object.clone()),
        }));
        prev = Some(ev.object);
    }
    Ok(json!({
        "apiVersion": tend_schema::API_VERSION,
        "kind": "ObjectHistory",
        "metadata": {"name": key.name, "namespace": key.namespace},
        "compactedRevision": compacted,
        "items": items,
    }))
}

/// `GET {base}/namespaces/{ns}/{plural}/{name}/history`.
pub(crate) async fn handler(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path((ns, plural, name)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    id.check(Some(&ns), false)?;
    let key = super::request::key(&plural, &ns, &name)?;
    Ok(Json(history(&*s.store, &key).await?))
}
