//! `meta.k8s.io/v1` Table responses for `kubectl get`, with the CLI's columns per kind.

use super::columns::row;
use serde_json::{json, Value};
use tend_schema::{AnyObject, Kind};

/// A Table of `items` (all of `kind`): the CLI's narrow columns at priority 0, its wide-only
/// columns at priority 1 (kubectl shows those with `-o wide`).
pub fn table(kind: Kind, items: &[AnyObject], resource_version: &str) -> Value {
    let sample = AnyObject::new(kind, "default", "x", json!({}));
    let (narrow, _) = row(&sample, false);
    let (wide, _) = row(&sample, true);
    let columns: Vec<Value> = wide
        .iter()
        .map(|h| {
            let name = title(h);
            let priority = u8::from(!narrow.contains(h));
            let (ty, format, desc) = match *h {
                "NAME" => ("string", "name", "Name must be unique within a namespace."),
                "AGE" => ("string", "", "Time since the object was created."),
                _ => ("string", "", ""),
            };
            json!({"name": name, "type": ty, "format": format, "description": desc, "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let (_, cells) = row(o, true);
            json!({"cells": cells, "object": o})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// `RESTARTS` → `Restarts`, as kube names columns.
fn title(h: &str) -> String {
    let lower = h.to_ascii_lowercase();
    let mut c = lower.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_columns() {
        let o = AnyObject::new(Kind::Container, "default", "web", json!({}));
        let t = table(Kind::Container, &[o], "7");
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"Phase") && names.contains(&"Restarts") && names.contains(&"Age"));
        assert_eq!(t["rows"][0]["cells"][0], "web");
        assert_eq!(t["rows"][0]["cells"].as_array().unwrap().len(), names.len());
    }
}
