//! Discovery: `/version`, `/api`, `/apis`, `/apis/tend.dev/v1`, and aggregated discovery (v2);
//! besides tend.dev, the read-only Events of the core group and of `events.k8s.io`.

use super::{openapi, AppRef};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tend_schema::{Kind, API_GROUP};

const VERBS: [&str; 7] = [
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

pub fn routes() -> Router<AppRef> {
    Router::new()
        .route("/version", get(version))
        .route("/api", get(api))
        .route("/apis", get(apis))
        .route("/apis/tend.dev", get(group))
        .route("/apis/tend.dev/v1", get(resources))
        .route("/api/v1", get(|| async { Json(events_list("v1")) }))
        .route("/apis/events.k8s.io", get(events_group))
        .route(
            "/apis/events.k8s.io/v1",
            get(|| async { Json(events_list(EVENTS_GV)) }),
        )
        .merge(openapi::routes())
}

/// Does the client accept aggregated discovery (kubectl ≥ 1.26)?
fn wants_aggregated(h: &HeaderMap) -> bool {
    h.get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',').any(|m| {
                let m = m.replace(' ', "");
                m.contains("as=APIGroupDiscoveryList") && m.contains("v=v2;")
                    || m.ends_with("v=v2") && m.contains("as=APIGroupDiscoveryList")
            })
        })
}

fn aggregated(items: Value) -> Response {
    (
        [(header::CONTENT_TYPE, AGGREGATED)],
        Json(json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": items,
        })),
    )
        .into_response()
}

async fn version() -> Json<Value> {
    Json(json!({
        "major": "1",
        "minor": "32",
        "gitVersion": format!("v1.32.0+tend-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
}

const EVENTS_GROUP: &str = "events.k8s.io";
const EVENTS_GV: &str = "events.k8s.io/v1";
const READ_VERBS: [&str; 3] = ["get", "list", "watch"];

/// Events, read-only, in the core group (`group` "") or events.k8s.io. Only the core group's
/// carry the short name `ev` (kubectl would warn of an ambiguous short name otherwise).
fn aggregated_events(group: &str) -> Value {
    let short: &[&str] = if group.is_empty() { &["ev"] } else { &[] };
    json!({
        "metadata": {"name": group},
        "versions": [{"version": "v1", "freshness": "Current", "resources": [{
            "resource": "events",
            "responseKind": {"group": group, "version": "v1", "kind": "Event"},
            "scope": "Namespaced",
            "singularResource": "event",
            "verbs": READ_VERBS,
            "shortNames": short,
        }]}],
    })
}

/// The APIResourceList of a group version that serves only events.
fn events_list(group_version: &str) -> Value {
    let short: &[&str] = if group_version == "v1" { &["ev"] } else { &[] };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": [{
        "name": "events", "singularName": "event", "namespaced": true, "kind": "Event",
        "verbs": READ_VERBS, "shortNames": short,
    }]})
}

fn events_group_body() -> Value {
    let gv = json!({"groupVersion": EVENTS_GV, "version": "v1"});
    json!({"name": EVENTS_GROUP, "versions": [gv.clone()], "preferredVersion": gv})
}

async fn events_group() -> Json<Value> {
    let mut g = events_group_body();
    g["kind"] = "APIGroup".into();
    g["apiVersion"] = "v1".into();
    Json(g)
}

async fn api(h: HeaderMap) -> Response {
    if wants_aggregated(&h) {
        return aggregated(json!([aggregated_events("")]));
    }
    Json(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}))
        .into_response()
}

fn group_body() -> Value {
    let gv = json!({"groupVersion": tend_schema::API_VERSION, "version": "v1"});
    json!({"name": API_GROUP, "versions": [gv.clone()], "preferredVersion": gv})
}

async fn apis(h: HeaderMap) -> Response {
    if wants_aggregated(&h) {
        let resources: Vec<Value> = Kind::ALL.into_iter().map(aggregated_resource).collect();
        return aggregated(json!([{
            "metadata": {"name": API_GROUP},
            "versions": [{"version": "v1", "resources": resources, "freshness": "Current"}],
        }, aggregated_events(EVENTS_GROUP)]));
    }
    Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_body(), events_group_body()]}))
        .into_response()
}

async fn group() -> Json<Value> {
    let mut g = group_body();
    g["kind"] = "APIGroup".into();
    g["apiVersion"] = "v1".into();
    Json(g)
}

fn aggregated_resource(k: Kind) -> Value {
    let gvk = json!({"group": API_GROUP, "version": "v1", "kind": k.as_str()});
    json!({
        "resource": k.plural(),
        "responseKind": gvk,
        "scope": "Namespaced",
        "singularResource": k.singular(),
        "verbs": VERBS,
        "shortNames": k.short_names(),
        "categories": ["tend"],
        "subresources": [{"subresource": "status", "responseKind": gvk, "verbs": ["get", "patch", "update"]}],
    })
}

/// The APIResourceList for tend.dev/v1: four kinds and their status subresources.
pub fn resource_list() -> Value {
    let mut out = Vec::new();
    for k in Kind::ALL {
        out.push(json!({
            "name": k.plural(), "singularName": k.singular(), "namespaced": true,
            "kind": k.as_str(), "verbs": VERBS, "shortNames": k.short_names(),
            "categories": ["tend"],
        }));
        out.push(json!({
            "name": format!("{}/status", k.plural()), "singularName": "", "namespaced": true,
            "kind": k.as_str(), "verbs": ["get", "patch", "update"],
        }));
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": tend_schema::API_VERSION, "resources": out})
}

async fn resources() -> Json<Value> {
    Json(resource_list())
}
