//! Events as a simple list: `GET /apis/tend.dev/v1/namespaces/{ns}/events` and
//! `GET /apis/tend.dev/v1/events`, newest last.
//!
//! tend's events are its own shape (`tend_schema::store::Event`), not core/v1 Events; the
//! query names follow Kubernetes: `fieldSelector=involvedObject.kind=K,involvedObject.name=N`
//! (both or neither) and `limit`.

use super::error::{ApiError, ApiResult};
use super::request::field_terms;
use super::{AppRef, Identity};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde_json::{json, Value};
use std::collections::HashMap;
use tend_schema::store::EventQuery;
use tend_schema::{Kind, ObjectKey};

/// The event query a request's parameters describe, for events in `ns` (None: all).
pub fn event_query(q: &HashMap<String, String>, ns: Option<&str>) -> ApiResult<EventQuery> {
    let mut kind: Option<Kind> = None;
    let mut name: Option<String> = None;
    let mut namespace = ns.map(str::to_string);
    for term in field_terms(q.get("fieldSelector").map(String::as_str).unwrap_or("")) {
        let (field, value) = term?;
        match field {
            "involvedObject.kind" => {
                kind = Some(value.parse().map_err(|e: String| {
                    ApiError::bad_request(format!("fieldSelector: involvedObject.kind: {e}"))
                })?)
            }
            "involvedObject.name" => name = Some(value.to_string()),
            "involvedObject.namespace" | "metadata.namespace" => match &namespace {
                Some(n) if n != value => {
                    return Err(ApiError::bad_request(format!(
                        "fieldSelector: namespace {value:?} is not the path's {n:?}"
                    )))
                }
                _ => namespace = Some(value.to_string()),
            },
            other => {
                return Err(ApiError::bad_request(format!(
                    "fieldSelector: field {other:?} is not supported for events \
                     (involvedObject.kind, involvedObject.name, involvedObject.namespace)"
                )))
            }
        }
    }
    let object = match (kind, name) {
        (None, None) => None,
        (Some(k), Some(n)) => {
            let ns = namespace.clone().ok_or_else(|| {
                ApiError::bad_request("fieldSelector: involvedObject needs a namespace")
            })?;
            Some(ObjectKey::new(k, ns, n))
        }
        _ => {
            return Err(ApiError::bad_request(
                "fieldSelector: involvedObject.kind and involvedObject.name go together",
            ))
        }
    };
    let limit = match q.get("limit").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(l) => Some(
            l.parse()
                .map_err(|_| ApiError::bad_request(format!("limit: {l:?} is not a number")))?,
        ),
    };
    Ok(EventQuery {
        namespace,
        object,
        limit,
        ..Default::default()
    })
}

async fn list(
    s: AppRef,
    id: Identity,
    ns: Option<String>,
    q: HashMap<String, String>,
) -> ApiResult<Json<Value>> {
    if let Some(ns) = &ns {
        id.check(Some(ns), false)?;
    }
    let query = event_query(&q, ns.as_deref())?;
    let items = match (&id.namespaces, &query.namespace, &query.object) {
        // A namespace token asking across namespaces: each of its namespaces with the limit,
        // merged newest first and cut to the limit again, so `limit` counts what it may see.
        (Some(mine), None, None) => {
            let mut all = Vec::new();
            for n in mine {
                let one = EventQuery {
                    namespace: Some(n.clone()),
                    ..query.clone()
                };
                all.extend(s.store.list_events(&one).await?);
            }
            if query.after.is_some() {
                all.sort_by_key(|e| e.id);
            } else {
                all.sort_by_key(|e| std::cmp::Reverse((e.last_timestamp, e.id)));
            }
            all.truncate(query.limit.unwrap_or(usize::MAX));
            all
        }
        _ => s
            .store
            .list_events(&query)
            .await?
            .into_iter()
            .filter(|e| id.sees(&e.namespace))
            .collect(),
    };
    Ok(Json(json!({
        "apiVersion": tend_schema::API_VERSION,
        "kind": "EventList",
        "metadata": {},
        "items": items,
    })))
}

/// `GET /apis/tend.dev/v1/namespaces/{ns}/events`.
pub(crate) async fn list_ns(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    list(s, id, Some(ns), q).await
}

/// `GET /apis/tend.dev/v1/events`: every namespace the caller may see.
pub(crate) async fn list_all(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    list(s, id, None, q).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let q = |s: &str| HashMap::from([("fieldSelector".to_string(), s.to_string())]);
        let e = event_query(
            &q("involvedObject.kind=Container,involvedObject.name=web"),
            Some("a"),
        )
        .unwrap();
        assert_eq!(e.object, Some(ObjectKey::new(Kind::Container, "a", "web")));
        assert!(event_query(&q("involvedObject.name=web"), Some("a")).is_err());
        assert!(event_query(&q("spec.x=1"), None).is_err());
        assert!(event_query(&q(""), None).unwrap().object.is_none());
    }
}
