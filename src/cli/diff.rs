//! `tend diff`: what `apply` would change, as a unified diff of the user-owned fields.

use super::backend::Backend;
use super::input::{all_valid, read_inputs};
use similar::TextDiff;
use std::path::PathBuf;
use std::process::ExitCode;
use tend_schema::AnyObject;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

/// The fields `apply` owns: labels, annotations, spec.
fn user_view(o: &AnyObject) -> String {
    let v = serde_json::json!({
        "metadata": {"labels": o.metadata.labels, "annotations": o.metadata.annotations},
        "spec": o.spec,
    });
    serde_yaml_ng::to_string(&v).unwrap_or_default()
}

pub async fn run(backend: &Backend, args: Args) -> anyhow::Result<ExitCode> {
    let docs = all_valid(read_inputs(&args.files, args.recursive)?)
        .map_err(|e| anyhow::anyhow!(e.join("\n")))?;
    let mut changed = false;
    for (_, _, desired) in docs {
        let key = desired.key().map_err(anyhow::Error::msg)?;
        let current = match backend.get(&key).await {
            Ok(c) => user_view(&c),
            Err(e) if e.is_not_found() => String::new(),
            Err(e) => return Err(e.into()),
        };
        let want = user_view(&desired);
        if current != want {
            changed = true;
            let label = format!("{}/{}/{}", key.kind.singular(), key.namespace, key.name);
            let d = TextDiff::from_lines(&current, &want);
            print!(
                "{}",
                d.unified_diff()
                    .header(&format!("live/{label}"), &format!("merged/{label}"))
            );
        }
    }
    Ok(if changed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
