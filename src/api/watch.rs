//! `?watch=1`: newline-delimited JSON events from a resourceVersion, with bookmarks and 410.

use super::error::{ApiError, ApiResult};
use super::request::{wants_table, Params};
use super::{ssa, table, AppRef, Identity};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::Duration;
use tend_schema::store::ListQuery;
use tend_schema::{AnyObject, Kind};

/// What one watch keeps: which objects, and in which shape.
struct Filter {
    kind: Kind,
    query: ListQuery,
    id: Identity,
    table: bool,
}

impl Filter {
    fn matches(&self, o: &AnyObject) -> bool {
        o.kind().ok() == Some(self.kind)
            && self
                .query
                .namespace
                .as_deref()
                .is_none_or(|n| n == o.metadata.ns())
            && self
                .query
                .name
                .as_deref()
                .is_none_or(|n| n == o.metadata.name)
            && self.query.selector.matches(&o.metadata.labels)
            && self.id.sees(o.metadata.ns())
    }

    fn line(&self, ty: &str, o: AnyObject) -> Bytes {
        let o = ssa::present(o);
        let object = if self.table {
            let rv = o.metadata.resource_version.clone().unwrap_or_default();
            table::table(self.kind, std::slice::from_ref(&o), &rv)
        } else {
            serde_json::to_value(&o).expect("objects serialize")
        };
        encode(&json!({"type": ty, "object": object}))
    }

    fn bookmark(&self, rv: u64) -> Bytes {
        encode(&json!({"type": "BOOKMARK", "object": {
            "apiVersion": tend_schema::API_VERSION,
            "kind": self.kind.as_str(),
            "metadata": {"resourceVersion": rv.to_string()},
        }}))
    }
}

fn encode(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).expect("values serialize");
    b.push(b'\n');
    b.into()
}

fn error_line(e: ApiError) -> Bytes {
    encode(&json!({"type": "ERROR", "object": e.status_body()}))
}

/// Starts a watch; the response streams until the client leaves, the timeout, or shutdown.
pub async fn watch(
    s: AppRef,
    id: Identity,
    kind: Kind,
    query: ListQuery,
    p: Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let slot = s.watch_slot(&id.id)?;
    let filter = Filter {
        kind,
        query,
        id,
        table: wants_table(&headers),
    };
    let from = match p.resource_version.as_deref() {
        None | Some("0") => None,
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("resourceVersion: {rv:?} is not a revision"))
        })?),
    };
    let bookmarks = p.allow_bookmarks.then_some(s.limits.bookmark_interval);
    let deadline = p.timeout_seconds.map(Duration::from_secs);
    let app = s.clone();
    Ok(stream_lines(&app, slot, deadline, move |tx| async move {
        pump(s, filter, from, bookmarks, tx).await;
    }))
}

/// A watch's response: the lines `pump` sends, streamed until it ends, the client leaves,
/// `deadline` passes or the server shuts down; the caller's watch `slot` is held as long.
pub(crate) fn stream_lines<F>(
    s: &AppRef,
    slot: super::WatchSlot,
    deadline: Option<Duration>,
    pump: impl FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> F,
) -> Response
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let mut shutdown = s.shutdown.clone();
    let run = pump(tx);
    tokio::spawn(async move {
        let _slot = slot;
        let until = async {
            match deadline {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = run => {}
            _ = until => {}
            _ = async { let _ = shutdown.wait_for(|v| *v).await; } => {}
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Sends the initial state (when no revision was given), then every matching change.
async fn pump(
    s: AppRef,
    f: Filter,
    from: Option<u64>,
    bookmarks: Option<Duration>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let start = match from {
        Some(rv) => rv,
        None => match s.store.list(&f.query).await {
            Ok(list) => {
                for o in list.items.into_iter().filter(|o| f.matches(o)) {
                    if tx.send(f.line("ADDED", o)).await.is_err() {
                        return;
                    }
                }
                list.revision
            }
            Err(e) => {
                let _ = tx.send(error_line(e.into())).await;
                return;
            }
        },
    };
    let mut events = match s.store.watch(start).await {
        Ok(w) => w,
        Err(e) => {
            let _ = tx.send(error_line(e.into())).await;
            return;
        }
    };
    let mut last = start;
    let period = bookmarks.unwrap_or(Duration::from_secs(3600));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        let (line, end) = tokio::select! {
            ev = events.next() => match ev {
                None => return,
                Some(Err(e)) => (error_line(e.into()), true),
                Some(Ok(ev)) => {
                    last = last.max(ev.revision);
                    if !f.matches(&ev.object) {
                        continue;
                    }
                    (f.line(ev.type_.as_str(), ev.object), false)
                }
            },
            _ = tick.tick(), if bookmarks.is_some() => (f.bookmark(last), false),
            _ = tx.closed() => return,
        };
        if tx.send(line).await.is_err() || end {
            return;
        }
    }
}
