//! Usage of Containers as the API serves it: `status.usage` filled in on every read of a
//! Container from its runtime's last sample ([`ContainerRuntime::usage`]), and per-container
//! series on `/metrics` under the names cAdvisor uses, so existing dashboards and alerts work,
//! and the last few samples of each at `GET /apis/tend.dev/v1/usage` (the web view's
//! sparklines). Samples are never written to the store.

use super::{AppState, Identity};
use serde_json::{json, Value};
use std::fmt::Write;
use tend_schema::kinds::container::ContainerUsage;
use tend_schema::store::ListQuery;
use tend_schema::{AnyObject, Kind};

/// The last usage sample of Container `obj`: a lookup by uid in each runtime's sampler (no
/// decoding of the spec: this runs for every item of every list).
fn sample(s: &AppState, obj: &AnyObject) -> Option<ContainerUsage> {
    if obj.kind().ok() != Some(Kind::Container) {
        return None;
    }
    let uid = obj.metadata.uid.as_deref()?;
    s.runtimes
        .as_ref()?
        .all()
        .into_iter()
        .find_map(|rt| rt.usage(uid))
}

/// `obj` with `status.usage` set from the last sample, when it is a sampled Container.
pub(crate) fn with_usage(s: &AppState, mut obj: AnyObject) -> AnyObject {
    if let Some(u) = sample(s, &obj) {
        if !obj.status.is_object() {
            obj.status = serde_json::json!({});
        }
        if let (Some(st), Ok(v)) = (obj.status.as_object_mut(), serde_json::to_value(u)) {
            st.insert("usage".into(), v);
        }
    }
    obj
}

/// `GET /apis/tend.dev/v1/usage`: the kept samples (oldest first) of every sampled Container
/// `id` may see, as `{namespace, name, uid, samples: [ContainerUsage]}` items.
pub(crate) async fn history(s: &AppState, id: &Identity) -> super::ApiResult<Value> {
    let list = s
        .store
        .list(&ListQuery {
            kind: Some(Kind::Container),
            ..Default::default()
        })
        .await?;
    let runtimes = s.runtimes.as_ref().map(|r| r.all()).unwrap_or_default();
    let items: Vec<Value> = list
        .items
        .into_iter()
        .filter(|o| id.sees(o.metadata.ns()))
        .filter_map(|o| {
            let uid = o.metadata.uid.as_deref()?;
            let samples = runtimes
                .iter()
                .map(|rt| rt.usage_history(uid))
                .find(|h| !h.is_empty())?;
            Some(json!({
                "namespace": o.metadata.ns(),
                "name": o.metadata.name,
                "uid": uid,
                "samples": samples,
            }))
        })
        .collect();
    Ok(json!({
        "apiVersion": tend_schema::API_VERSION,
        "kind": "UsageHistoryList",
        "metadata": {},
        "items": items,
    }))
}

/// One value with a Prometheus label set: label values escaped as the text format asks.
fn series(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    let esc = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
        .collect();
    let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
}

/// The `container_*` series of every sampled Container (cAdvisor's names and meanings).
pub(crate) async fn metrics(s: &AppState) -> String {
    let Ok(list) = s
        .store
        .list(&ListQuery {
            kind: Some(Kind::Container),
            ..Default::default()
        })
        .await
    else {
        return String::new();
    };
    let sampled: Vec<(AnyObject, ContainerUsage)> = list
        .items
        .into_iter()
        .filter_map(|o| sample(s, &o).map(|u| (o, u)))
        .collect();
    let mut out = String::new();
    type Get = fn(&ContainerUsage) -> Option<f64>;
    let families: [(&str, &str, &str, Get); 6] = [
        (
            "container_cpu_usage_seconds_total",
            "counter",
            "Cumulative CPU time consumed, seconds.",
            |u| Some(u.cpu_seconds),
        ),
        (
            "container_memory_usage_bytes",
            "gauge",
            "Current memory usage, page cache included, bytes.",
            |u| Some(u.memory_bytes as f64),
        ),
        (
            "container_memory_working_set_bytes",
            "gauge",
            "Current working set (usage less inactive file cache), bytes.",
            |u| Some(u.working_set_bytes as f64),
        ),
        (
            "container_threads",
            "gauge",
            "Number of tasks (threads) in the container's cgroup.",
            |u| Some(u.pids as f64),
        ),
        (
            "container_pressure_cpu_waiting_percent_avg10",
            "gauge",
            "PSI some avg10 of cpu.pressure (cgroup v2), percent.",
            |u| u.pressure.as_ref().map(|p| p.cpu),
        ),
        (
            "container_pressure_memory_waiting_percent_avg10",
            "gauge",
            "PSI some avg10 of memory.pressure (cgroup v2), percent.",
            |u| u.pressure.as_ref().map(|p| p.memory),
        ),
    ];
    for (name, kind, help, get) in families {
        let mut body = String::new();
        for (o, u) in &sampled {
            let Some(v) = get(u) else { continue };
            let labels = [
                ("namespace", o.metadata.ns()),
                ("name", o.metadata.name.as_str()),
                ("container", o.metadata.name.as_str()),
                ("id", o.metadata.uid.as_deref().unwrap_or_default()),
            ];
            series(&mut body, name, &labels, v);
        }
        if !body.is_empty() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            out.push_str(&body);
        }
    }
    out
}
