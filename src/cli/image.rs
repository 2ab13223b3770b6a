//! `tend image prune`: lists the image content no State records (blobs, layer chains) with
//! its size, and removes it with `--force`. Dry run by default, like `tend delete --dry-run`.
//! Exit 0 when the listing (or the removal) succeeded, whether or not anything was found;
//! 1 when nothing could be decided or removed (no daemon, a refusal, an I/O error).

use super::backend::Backend;
use super::output::print_rows;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Image content no State records: listed with its size; removed only with --force.
    Prune {
        /// Remove it (without this, nothing is removed).
        #[arg(short = 'f', long, alias = "yes")]
        force: bool,
        /// `json`: the report as JSON.
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
}

pub async fn run(backend: &Backend, args: Args) -> anyhow::Result<ExitCode> {
    let Sub::Prune { force, output } = args.command;
    let r = backend.prune_images(!force).await?;
    if output.as_deref() == Some("json") {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = r
        .items
        .iter()
        .map(|c| {
            vec![
                c.kind.as_str().to_string(),
                c.id.clone(),
                c.bytes.to_string(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        print_rows(Some(vec!["KIND".into(), "ID".into(), "BYTES".into()]), rows);
    }
    let n = r.items.len();
    if r.dry_run {
        let hint = if n > 0 { "; --force removes them" } else { "" };
        println!(
            "(dry run: {n} item(s), {} bytes would be freed; {} item(s) of {} bytes kept{hint})",
            r.bytes, r.kept, r.kept_bytes
        );
    } else {
        println!(
            "removed {n} item(s), {} bytes freed; {} item(s) of {} bytes kept",
            r.bytes, r.kept, r.kept_bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}
