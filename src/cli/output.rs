//! Printing objects: kubectl-like tables (normal and wide), YAML, JSON, names.

use serde_json::Value;
use tend_schema::{AnyObject, Kind};

pub use crate::api::columns::{age, row};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Yaml,
    Json,
    Name,
}

/// Prints rows as an aligned table; `namespace` adds a NAMESPACE column first.
pub fn print_table(objs: &[AnyObject], wide: bool, namespace: bool, header: bool) {
    let mut kinds: Vec<Kind> = objs.iter().filter_map(|o| o.kind().ok()).collect();
    kinds.dedup();
    for (n, kind) in kinds.iter().enumerate() {
        let mut rows = Vec::new();
        let mut head = Vec::new();
        for o in objs.iter().filter(|o| o.kind().ok() == Some(*kind)) {
            let (h, mut r) = row(o, wide);
            head = h.iter().map(|s| s.to_string()).collect();
            if kinds.len() > 1 {
                r[0] = format!("{}/{}", kind.singular(), r[0]);
            }
            if namespace {
                r.insert(0, o.metadata.ns().to_string());
            }
            rows.push(r);
        }
        if namespace {
            head.insert(0, "NAMESPACE".into());
        }
        if n > 0 {
            println!();
        }
        print_rows(if header { Some(head) } else { None }, rows);
    }
}

/// Prints string rows aligned in columns.
pub fn print_rows(head: Option<Vec<String>>, rows: Vec<Vec<String>>) {
    let all: Vec<&Vec<String>> = head.iter().chain(rows.iter()).collect();
    let cols = all.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            all.iter()
                .map(|r| r.get(c).map(|s| s.chars().count()).unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in all {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == r.len() {
                    cell.clone()
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

/// YAML of one object, or of a `kind: List` when there are several.
pub fn to_yaml(v: &Value) -> String {
    serde_yaml_ng::to_string(v).unwrap_or_else(|e| format!("# cannot render YAML: {e}\n"))
}

pub fn list_value(objs: &[AnyObject], revision: u64) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": revision.to_string()},
        "items": objs,
    })
}
