//! The columns of each kind (`tend get` and kubectl's Table responses show the same): headers
//! and one row of cells per object, kubectl's age format, sizes in binary units.

use chrono::Utc;
use serde_json::Value;
use tend_schema::{AnyObject, Kind};

/// kubectl's age format: 45s, 12m, 5h, 3d.
pub fn age(t: Option<&chrono::DateTime<Utc>>) -> String {
    let Some(t) = t else {
        return "<unknown>".into();
    };
    let s = (Utc::now() - *t).num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn s(v: &Value, ptr: &str) -> String {
    match v.pointer(ptr) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Null) | None => "<none>".into(),
        Some(x) => x.to_string(),
    }
}

fn ready(o: &AnyObject) -> String {
    let conds = o.status.get("conditions").and_then(|c| c.as_array());
    conds
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"].as_str().unwrap_or("Unknown").to_string())
        .unwrap_or_else(|| "Unknown".into())
}

fn phase(o: &AnyObject) -> String {
    if o.metadata.deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    match o.status.get("phase").and_then(|p| p.as_str()) {
        Some(p) => p.to_string(),
        None => "Pending".into(),
    }
}

/// Column headers and one row of cells for an object, per kind.
pub fn row(o: &AnyObject, wide: bool) -> (Vec<&'static str>, Vec<String>) {
    let kind = o.kind().unwrap_or(Kind::State);
    let (st, sp) = (&o.status, &o.spec);
    let mut h = vec!["NAME"];
    let mut r = vec![o.metadata.name.clone()];
    let mut push = |hh: &'static str, v: String| {
        h.push(hh);
        r.push(v);
    };
    match kind {
        Kind::State => {
            let src = sp["source"]
                .as_object()
                .and_then(|m| m.iter().next())
                .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or("")))
                .unwrap_or_default();
            push("PHASE", phase(o));
            push("READY", ready(o));
            push("BACKEND", s(st, "/backend"));
            push(
                "SIZE",
                st.get("sizeBytes")
                    .and_then(|v| v.as_u64())
                    .map(human_bytes)
                    .unwrap_or_else(|| "<none>".into()),
            );
            if wide {
                push("SOURCE", src);
                push("PATH", s(st, "/path"));
            }
        }
        Kind::Sandbox => {
            push("STATE", s(sp, "/state"));
            push("PHASE", phase(o));
            push("READY", ready(o));
            if wide {
                push("BACKEND", s(st, "/backend"));
                push("PATH", s(st, "/path"));
            }
        }
        Kind::Network => {
            push("SUBNET", s(sp, "/subnet"));
            push("PHASE", phase(o));
            push("READY", ready(o));
            push(
                "LEASES",
                st.get("leases")
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "0".into()),
            );
            if wide {
                push("BRIDGE", s(st, "/bridge"));
            }
        }
        Kind::Container => {
            push(
                "RUNTIME",
                sp.get("runtime")
                    .and_then(|v| v.as_str())
                    .unwrap_or("native")
                    .to_string(),
            );
            push("PHASE", phase(o));
            push("READY", ready(o));
            push(
                "RESTARTS",
                st.get("restartCount")
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "0".into()),
            );
            let ips: Vec<String> = st
                .get("networks")
                .and_then(|n| n.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n["ip"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            push(
                "IP",
                if ips.is_empty() {
                    "<none>".into()
                } else {
                    ips.join(",")
                },
            );
            if wide {
                push("PID", s(st, "/pid"));
                push("REASON", reason(o));
            }
        }
    }
    h.push("AGE");
    r.push(age(o.metadata.creation_timestamp.as_ref()));
    (h, r)
}

fn reason(o: &AnyObject) -> String {
    o.status
        .get("conditions")
        .and_then(|c| c.as_array())
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["reason"].as_str())
        .unwrap_or("<none>")
        .to_string()
}

pub fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "Ki", "Mi", "Gi", "Ti"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", U[i])
    }
}
