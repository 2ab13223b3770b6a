//! Server-side apply with a simple ownership model, and `metadata.managedFields` on the wire.
//!
//! Each apply records the leaf fields (under `spec`, `metadata.labels`, `metadata.annotations`;
//! arrays are atomic) its field manager sent. Applying a different value to a leaf another
//! manager owns is a 409 conflict unless `force=true`, which takes the field over. Leaves a
//! manager applied before and omits now are removed when nobody else owns them.
//!
//! The store does not keep `metadata.managedFields`, so the ownership map rides in the
//! [`MANAGED_ANNOTATION`] annotation and is shown to clients as `managedFields`.

use super::auth::Identity;
use super::error::{ApiError, ApiResult};
use super::objects::write;
use super::request::{fit_to_path, parse_bytes, Params};
use super::AppRef;
use axum::http::StatusCode;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use tend_schema::decode::{decode_shape, decode_value};
use tend_schema::store::StoreError;
use tend_schema::{AnyObject, FieldErrors, ObjectKey};

/// Where the ownership map is stored.
pub const MANAGED_ANNOTATION: &str = "tend.dev/managed-fields";

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Entry {
    paths: BTreeSet<String>,
    time: Option<tend_schema::Time>,
}

type Managers = BTreeMap<String, Entry>;

fn managers(obj: &AnyObject) -> Managers {
    obj.metadata
        .annotations
        .get(MANAGED_ANNOTATION)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

fn unescape(k: &str) -> String {
    k.replace("~1", "/").replace("~0", "~")
}

/// Leaf pointers of `v` under `prefix`; empty objects and arrays are leaves.
fn leaves(v: &Value, prefix: String, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                leaves(c, format!("{prefix}/{}", escape(k)), out);
            }
        }
        _ => {
            out.insert(prefix);
        }
    }
}

fn applied_paths(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(spec) = v.get("spec") {
        leaves(spec, "/spec".into(), &mut out);
        out.remove("/spec");
    }
    for m in ["labels", "annotations"] {
        if let Some(Value::Object(map)) = v.pointer(&format!("/metadata/{m}")) {
            for k in map.keys().filter(|k| *k != MANAGED_ANNOTATION) {
                out.insert(format!("/metadata/{m}/{}", escape(k)));
            }
        }
    }
    out
}

fn set_ptr(doc: &mut Value, ptr: &str, value: Value) {
    let mut cur = doc;
    let parts: Vec<String> = ptr.split('/').skip(1).map(unescape).collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let m = cur.as_object_mut().expect("made an object");
        if i + 1 == parts.len() {
            m.insert(p.clone(), value);
            return;
        }
        cur = m
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

fn remove_ptr(doc: &mut Value, ptr: &str) {
    let (parent, last) = ptr.rsplit_once('/').unwrap_or(("", ptr));
    if let Some(Value::Object(m)) = doc.pointer_mut(parent) {
        m.remove(&unescape(last));
    }
}

/// The object as clients see it: ownership shown as `metadata.managedFields`.
pub fn present(mut obj: AnyObject) -> AnyObject {
    let Some(raw) = obj.metadata.annotations.remove(MANAGED_ANNOTATION) else {
        return obj;
    };
    let mgrs: Managers = serde_json::from_str(&raw).unwrap_or_default();
    let list: Vec<Value> = mgrs
        .into_iter()
        .map(|(manager, e)| {
            let mut fields = json!({});
            for p in &e.paths {
                let f: String = p
                    .split('/')
                    .skip(1)
                    .map(|s| format!("/f:{}", escape(&unescape(s))))
                    .collect();
                set_ptr(&mut fields, &f, json!({}));
            }
            json!({
                "manager": manager, "operation": "Apply", "apiVersion": tend_schema::API_VERSION,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": fields,
            })
        })
        .collect();
    obj.metadata.managed_fields = Some(Value::Array(list));
    obj
}

/// Keeps the stored ownership map on a write that came from a client (which sees
/// `managedFields`, not the annotation).
pub fn carry(current: &AnyObject, desired: &mut AnyObject) {
    desired.metadata.managed_fields = None;
    match current.metadata.annotations.get(MANAGED_ANNOTATION) {
        Some(v) => {
            desired
                .metadata
                .annotations
                .insert(MANAGED_ANNOTATION.into(), v.clone());
        }
        None => {
            desired.metadata.annotations.remove(MANAGED_ANNOTATION);
        }
    }
}

/// Server-side apply of `body` (YAML or JSON) by `fieldManager`: 201 when created, else 200.
pub async fn apply(
    s: &AppRef,
    id: &Identity,
    key: &ObjectKey,
    body: &[u8],
    p: &Params,
) -> ApiResult<(StatusCode, AnyObject)> {
    let manager = p
        .field_manager
        .clone()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                "PATCH with application/apply-patch+yaml requires the fieldManager parameter",
            )
        })?;
    let mut v = parse_bytes(body, true)?;
    fit_to_path(&mut v, key.kind, &key.namespace, Some(&key.name))?;
    // The same field checks as a create, also when the object exists (`metadata.mtu` is an
    // error, not silently dropped).
    decode_shape(v.clone())?;
    let paths = applied_paths(&v);
    for _ in 0..8 {
        let current = match s.store.get(key).await {
            Err(StoreError::NotFound(_)) => None,
            other => Some(other?),
        };
        let Some(current) = current else {
            let mut obj = decode_value(v.clone())?;
            s.admit(id, &obj)?;
            let mut mgrs = Managers::new();
            mgrs.insert(
                manager.clone(),
                Entry {
                    paths: paths.clone(),
                    time: Some(tend_schema::meta::now()),
                },
            );
            obj.metadata.annotations.insert(
                MANAGED_ANNOTATION.into(),
                serde_json::to_string(&mgrs).expect("serializes"),
            );
            let created = if p.dry_run {
                s.store.apply(vec![obj], true).await?.remove(0).object
            } else {
                match s.timed(s.store.create(obj)).await {
                    Err(StoreError::AlreadyExists(_)) => continue,
                    other => other?,
                }
            };
            return Ok((StatusCode::CREATED, created));
        };
        let mut mgrs = managers(&current);
        let mut doc = serde_json::to_value(&current).expect("objects serialize");
        let mut conflicts = FieldErrors::default();
        for path in &paths {
            let new = v.pointer(path);
            if doc.pointer(path) == new {
                continue;
            }
            for (other, e) in mgrs.iter_mut().filter(|(m, _)| **m != manager) {
                if e.paths.contains(path) {
                    if p.force {
                        e.paths.remove(path);
                    } else {
                        conflicts.push(path.replace('/', "."), format!("conflict with {other:?}"));
                    }
                }
            }
        }
        if !conflicts.is_empty() {
            let n = conflicts.0.len();
            let mut e = ApiError::invalid(conflicts);
            e.code = StatusCode::CONFLICT;
            e.reason = "Conflict";
            e.message = format!("Apply failed with {n} conflict(s): {}; use force=true (kubectl --force-conflicts) to take them over", e.message);
            return Err(e);
        }
        let previous = mgrs
            .get(&manager)
            .map(|e| e.paths.clone())
            .unwrap_or_default();
        for gone in previous.difference(&paths) {
            if !mgrs
                .iter()
                .any(|(m, e)| *m != manager && e.paths.contains(gone))
            {
                remove_ptr(&mut doc, gone);
            }
        }
        for path in &paths {
            set_ptr(
                &mut doc,
                path,
                v.pointer(path).cloned().unwrap_or(Value::Null),
            );
        }
        let entry = mgrs.entry(manager.clone()).or_default();
        if entry.paths != paths || entry.time.is_none() {
            entry.paths = paths.clone();
            entry.time = Some(tend_schema::meta::now());
        }
        mgrs.retain(|_, e| !e.paths.is_empty());
        set_ptr(
            &mut doc,
            &format!("/metadata/annotations/{}", escape(MANAGED_ANNOTATION)),
            serde_json::to_string(&mgrs).expect("serializes").into(),
        );
        doc.as_object_mut().expect("object").remove("status");
        let mut desired = decode_value(doc)?;
        desired.metadata.resource_version = current.metadata.resource_version.clone();
        let mut keep = current.clone();
        keep.metadata.annotations.insert(
            MANAGED_ANNOTATION.into(),
            desired.metadata.annotations[MANAGED_ANNOTATION].clone(),
        );
        match write(s, id, desired, &keep, p.dry_run).await {
            Err(e) if e.reason == "Conflict" => continue,
            other => return Ok((StatusCode::OK, other?)),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "Conflict",
        format!("{key} kept changing during apply; try again"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_and_pointers() {
        let v = json!({"spec": {"a": {"b": 1}, "c": [1], "d": {}}, "metadata": {"labels": {"x/y": "1"}}});
        let p = applied_paths(&v);
        assert_eq!(
            p.into_iter().collect::<Vec<_>>(),
            ["/metadata/labels/x~1y", "/spec/a/b", "/spec/c", "/spec/d"]
        );
        let mut doc = json!({});
        set_ptr(&mut doc, "/metadata/labels/x~1y", json!("1"));
        assert_eq!(doc, json!({"metadata": {"labels": {"x/y": "1"}}}));
        remove_ptr(&mut doc, "/metadata/labels/x~1y");
        assert_eq!(doc, json!({"metadata": {"labels": {}}}));
    }
}
