//! `tend describe`: one object for people — metadata, spec, status, conditions, events.

use super::backend::Backend;
use super::output::{age, print_rows, to_yaml};
use std::process::ExitCode;
use tend_schema::{Kind, ObjectKey};

#[derive(Debug, clap::Args)]
pub struct Args {
    pub kind: String,
    pub name: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

pub async fn run(backend: &Backend, args: Args) -> anyhow::Result<ExitCode> {
    let kind: Kind = args.kind.parse().map_err(anyhow::Error::msg)?;
    let key = ObjectKey::new(kind, args.namespace, args.name);
    let o = backend.get(&key).await?;
    let m = &o.metadata;
    let field = |k: &str, v: String| println!("{:<20}{v}", format!("{k}:"));
    field("Name", m.name.clone());
    field("Namespace", m.ns().to_string());
    field("Kind", o.kind.clone());
    field("UID", m.uid.clone().unwrap_or_default());
    field("Generation", m.generation.to_string());
    field(
        "Resource Version",
        m.resource_version.clone().unwrap_or_default(),
    );
    field(
        "Created",
        format!(
            "{} ({} ago)",
            m.creation_timestamp
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            age(m.creation_timestamp.as_ref())
        ),
    );
    if let Some(d) = m.deletion_timestamp {
        field("Deleting Since", d.to_rfc3339());
    }
    let labels: Vec<String> = m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    field(
        "Labels",
        if labels.is_empty() {
            "<none>".into()
        } else {
            labels.join(", ")
        },
    );
    if !m.finalizers.is_empty() {
        field("Finalizers", m.finalizers.join(", "));
    }
    for r in &m.owner_references {
        field("Owned By", format!("{}/{}", r.kind.to_lowercase(), r.name));
    }
    println!("Spec:");
    print!("{}", indent(&to_yaml(&o.spec)));
    let mut status = o.status.clone();
    let conditions = status.as_object_mut().and_then(|s| s.remove("conditions"));
    println!("Status:");
    if status.is_null() || status.as_object().is_some_and(|s| s.is_empty()) {
        println!("  <none yet>");
    } else {
        print!("{}", indent(&to_yaml(&status)));
    }
    if let Some(serde_json::Value::Array(cs)) = conditions {
        println!("Conditions:");
        let rows = cs
            .iter()
            .map(|c| {
                let g = |k: &str| c[k].as_str().unwrap_or("").to_string();
                vec![
                    format!("  {}", g("type")),
                    g("status"),
                    g("reason"),
                    g("message"),
                ]
            })
            .collect();
        print_rows(
            Some(
                ["  Type", "Status", "Reason", "Message"]
                    .map(String::from)
                    .to_vec(),
            ),
            rows,
        );
    }
    let evs = backend.events(None, Some(&key), Some(20)).await?;
    println!("Events:");
    if evs.is_empty() {
        println!("  <none>");
    } else {
        let rows = evs
            .iter()
            .map(|e| {
                vec![
                    format!("  {}", e.type_.as_str()),
                    e.reason.clone(),
                    format!("{} (x{})", age(Some(&e.last_timestamp)), e.count),
                    e.message.clone(),
                ]
            })
            .collect();
        print_rows(
            Some(
                ["  Type", "Reason", "Age", "Message"]
                    .map(String::from)
                    .to_vec(),
            ),
            rows,
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}
