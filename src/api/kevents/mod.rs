//! Kubernetes Events, read-only: core `v1` (`/api/v1/.../events`) and `events.k8s.io/v1` views
//! of tend's event table, with list, get and watch as the other kinds have them, so `kubectl get
//! events`, `kubectl events --for` and `kubectl describe` show what tend recorded.
//!
//! An event's `resourceVersion` is its event revision (the table id, which moves to a new
//! highest value on every repeat), so a watch resumes from a list exactly. Writes answer 405:
//! only tend records events.

mod view;

pub use view::Flavor;

use super::error::{ApiError, ApiResult};
use super::request::{wants_table, Params};
use super::{AppRef, Identity};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use tend_schema::store::{Event, EventQuery};
use view::{render, Selector};

type Q = Query<HashMap<String, String>>;

/// The core group's and events.k8s.io's event paths.
pub fn routes() -> Router<AppRef> {
    let mut r = Router::new();
    for (base, flavor) in [
        ("/api/v1", Flavor::Core),
        ("/apis/events.k8s.io/v1", Flavor::EventsV1),
    ] {
        let all = move |s: State<AppRef>, id: Extension<Identity>, q: Q, h: HeaderMap| {
            list(s, id, None, flavor, q, h)
        };
        let ns =
            move |s: State<AppRef>, id: Extension<Identity>, Path(ns): Path<String>, q: Q, h| {
                list(s, id, Some(ns), flavor, q, h)
            };
        let one = move |s: State<AppRef>,
                        id: Extension<Identity>,
                        Path(p): Path<(String, String)>,
                        h: HeaderMap| get_one(s, id, p, flavor, h);
        r = r
            .route(&format!("{base}/events"), get(all).fallback(read_only))
            .route(
                &format!("{base}/namespaces/{{ns}}/events"),
                get(ns).fallback(read_only),
            )
            .route(
                &format!("{base}/namespaces/{{ns}}/events/{{name}}"),
                get(one).fallback(read_only),
            );
    }
    r
}

/// Events are tend's record of what it did; nobody else writes them.
async fn read_only() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "events are read-only: tend records them itself (get, list and watch are served)",
    )
}

/// The rendered events a query and selector select, newest last, with the list's revision.
async fn select(
    s: &AppRef,
    id: &Identity,
    sel: &Selector,
    query: EventQuery,
    flavor: Flavor,
) -> ApiResult<Vec<(Event, Value)>> {
    Ok(s.store
        .list_events(&query)
        .await?
        .into_iter()
        .filter(|e| id.sees(&e.namespace))
        .map(|e| {
            let v = render(&e, flavor);
            (e, v)
        })
        .filter(|(_, v)| sel.matches(v))
        .collect())
}

async fn list(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    ns: Option<String>,
    flavor: Flavor,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if let Some(ns) = &ns {
        id.check(Some(ns), false)?;
    }
    let p = Params::parse(&q)?;
    let sel = Selector::parse(
        p.field_selector.as_deref().unwrap_or(""),
        ns.as_deref(),
        flavor,
    )?;
    if !p.label_selector.as_deref().unwrap_or("").trim().is_empty() {
        return Err(ApiError::bad_request(
            "labelSelector: tend's events carry no labels; select them with fieldSelector",
        ));
    }
    if p.watch {
        return watch(s, id, sel, flavor, p, &headers).await;
    }
    // The revision first: an event recorded between the two reads is then sent again by a
    // watch from this revision rather than missed.
    let rv = s.store.event_revision().await?.to_string();
    let query = EventQuery {
        limit: q
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0),
        ..sel.query.clone()
    };
    let events = select(&s, &id, &sel, query, flavor).await?;
    if wants_table(&headers) {
        return Ok(Json(view::table(&events, &rv)).into_response());
    }
    let items: Vec<Value> = events.into_iter().map(|(_, v)| v).collect();
    Ok(Json(json!({
        "apiVersion": flavor.api_version(),
        "kind": "EventList",
        "metadata": {"resourceVersion": rv},
        "items": items,
    }))
    .into_response())
}

async fn get_one(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    (ns, name): (String, String),
    flavor: Flavor,
    headers: HeaderMap,
) -> ApiResult<Response> {
    id.check(Some(&ns), false)?;
    let object = name.split_once('.').map(|(o, _)| o).unwrap_or(&name);
    let sel = Selector::parse("", Some(&ns), flavor)?;
    let query = EventQuery {
        namespace: Some(ns.clone()),
        name: Some(object.to_string()),
        limit: Some(usize::MAX >> 1),
        ..Default::default()
    };
    let found = select(&s, &id, &sel, query, flavor)
        .await?
        .into_iter()
        .find(|(e, _)| view::name_of(e) == name);
    let Some((e, v)) = found else {
        return Err(ApiError::not_found(format!(
            "events {name:?} not found in namespace {ns:?}"
        )));
    };
    if wants_table(&headers) {
        let rv = e.id.to_string();
        return Ok(Json(view::table(&[(e, v)], &rv)).into_response());
    }
    Ok(Json(v).into_response())
}

fn line(ty: &str, e: Event, v: Value, table: bool) -> Bytes {
    let object = if table {
        let rv = e.id.to_string();
        view::table(&[(e, v)], &rv)
    } else {
        v
    };
    let mut b = serde_json::to_vec(&json!({"type": ty, "object": object})).expect("serializes");
    b.push(b'\n');
    b.into()
}

/// How often a watch re-reads when nothing woke it: catches events recorded by another process
/// (this process's own writes wake it at once).
const SAFETY_READ: Duration = Duration::from_secs(1);

async fn watch(
    s: AppRef,
    id: Identity,
    sel: Selector,
    flavor: Flavor,
    p: Params,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let slot = s.watch_slot(&id.id)?;
    let from = match p.resource_version.as_deref() {
        None | Some("0") => None,
        Some(rv) => Some(rv.parse::<i64>().map_err(|_| {
            ApiError::bad_request(format!("resourceVersion: {rv:?} is not an event revision"))
        })?),
    };
    let table = wants_table(headers);
    let deadline = p.timeout_seconds.map(Duration::from_secs);
    let app = s.clone();
    Ok(super::watch::stream_lines(
        &app,
        slot,
        deadline,
        move |tx| async move {
            let _ = pump(&s, &id, &sel, flavor, from, table, &tx).await;
        },
    ))
}

/// Sends the current events (when no revision was given), then every change after.
async fn pump(
    s: &AppRef,
    id: &Identity,
    sel: &Selector,
    flavor: Flavor,
    from: Option<i64>,
    table: bool,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
) -> Option<()> {
    let mut writes = s.store.event_writes();
    let mut cursor = from.unwrap_or(0);
    let mut first = from.is_none();
    loop {
        if let Some(w) = writes.as_mut() {
            w.borrow_and_update();
        }
        let query = EventQuery {
            after: Some(cursor),
            limit: Some(1000),
            ..sel.query.clone()
        };
        let batch = match s.store.list_events(&query).await {
            Ok(b) => b,
            Err(e) => {
                let err = ApiError::from(e).status_body();
                let mut b = serde_json::to_vec(&json!({"type": "ERROR", "object": err})).ok()?;
                b.push(b'\n');
                let _ = tx.send(b.into()).await;
                return None;
            }
        };
        let full = batch.len() == 1000;
        for e in batch {
            cursor = cursor.max(e.id);
            if !id.sees(&e.namespace) {
                continue;
            }
            let v = render(&e, flavor);
            if !sel.matches(&v) {
                continue;
            }
            let ty = if first || e.count == 1 {
                "ADDED"
            } else {
                "MODIFIED"
            };
            tx.send(line(ty, e, v, table)).await.ok()?;
        }
        if full {
            continue;
        }
        first = false;
        tokio::select! {
            _ = async {
                let woke = match writes.as_mut() {
                    Some(w) => w.changed().await.is_ok(),
                    None => false,
                };
                if !woke {
                    std::future::pending::<()>().await;
                }
            } => {}
            _ = tokio::time::sleep(SAFETY_READ) => {}
            _ = tx.closed() => return None,
        }
    }
}
