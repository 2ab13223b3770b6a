//! `tend history KIND/NAME`: every spec, status and metadata change of one object that the
//! change feed still holds (older ones are compacted away), oldest first.

use super::backend::Backend;
use super::output::print_rows;
use std::process::ExitCode;
use tend_schema::meta::CommonStatus;
use tend_schema::{Kind, ObjectKey};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `container/web`, or the kind with the name as the next argument.
    pub object: String,
    pub name: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// `json` prints the whole `ObjectHistory` (every version of the object).
    #[arg(short = 'o', long)]
    pub output: Option<String>,
}

pub async fn run(backend: &Backend, args: Args) -> anyhow::Result<ExitCode> {
    let (kind, name) = match (args.object.split_once('/'), &args.name) {
        (Some((k, n)), None) => (k.to_string(), n.to_string()),
        (None, Some(n)) => (args.object.clone(), n.clone()),
        _ => anyhow::bail!("usage: tend history KIND/NAME (or KIND NAME)"),
    };
    let kind: Kind = kind.parse().map_err(anyhow::Error::msg)?;
    let key = ObjectKey::new(kind, &args.namespace, name);
    let h = backend.history(&key).await?;
    if args.output.as_deref() == Some("json") {
        println!("{}", serde_json::to_string_pretty(&h)?);
        return Ok(ExitCode::SUCCESS);
    }
    let items = h["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        anyhow::bail!(
            "{key}: no changes in the change feed (history up to revision {} is compacted)",
            h["compactedRevision"]
        );
    }
    let first_added = items[0]["type"] == "ADDED";
    if !first_added {
        eprintln!(
            "(changes up to revision {} were compacted away)",
            h["compactedRevision"]
        );
    }
    let rows = items
        .iter()
        .map(|i| {
            let st: CommonStatus =
                serde_json::from_value(i["object"]["status"].clone()).unwrap_or_default();
            let ready = st
                .condition("Ready")
                .map(|c| format!("Ready={:?} {}", c.status, c.reason))
                .unwrap_or_default();
            let changed: Vec<&str> = i["changed"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            vec![
                i["revision"].to_string(),
                i["type"].as_str().unwrap_or("").to_string(),
                i["generation"].to_string(),
                changed.join(","),
                st.phase.unwrap_or_default(),
                ready,
            ]
        })
        .collect();
    let head = [
        "REVISION",
        "TYPE",
        "GENERATION",
        "CHANGED",
        "PHASE",
        "READY",
    ];
    print_rows(Some(head.map(String::from).to_vec()), rows);
    Ok(ExitCode::SUCCESS)
}
