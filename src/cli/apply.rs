//! `tend apply`: create or update every object in the inputs, all validated before any write;
//! `--wait` then follows every applied object until it is Ready ([`super::ready`]).

use super::backend::Backend;
use super::input::{all_valid, read_inputs};
use std::path::PathBuf;
use std::process::ExitCode;
use tend_schema::store::Applied;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files, directories or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Recurse into directories.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Validate and show what would happen; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Then wait until every applied object is Ready (one watch, no polling). Exits 1 naming
    /// the object and its condition when one fails to start or the timeout passes.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (`30s`, `5m`; a bare number is seconds).
    #[arg(long, default_value = "120s", value_parser = crate::runtime_native::cli::parse_duration)]
    pub timeout: std::time::Duration,
}

pub async fn run(backend: &Backend, args: Args) -> anyhow::Result<ExitCode> {
    let docs = match all_valid(read_inputs(&args.files, args.recursive)?) {
        Ok(d) => d,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("nothing was applied: {} invalid document(s)", errors.len());
            return Ok(ExitCode::FAILURE);
        }
    };
    if docs.is_empty() {
        eprintln!("error: no objects found in the input");
        return Ok(ExitCode::FAILURE);
    }
    let suffix = if args.dry_run { " (dry run)" } else { "" };
    let objects = docs.iter().map(|(_, _, o)| o.clone()).collect();
    let (applied, failure) = backend.apply(objects, args.dry_run).await;
    for r in &applied {
        let verb = match r.action {
            Applied::Created => "created",
            Applied::Configured => "configured",
            Applied::Unchanged => "unchanged",
        };
        println!(
            "{}.tend.dev/{} {verb}{suffix}",
            r.key.kind.singular(),
            r.key.name
        );
    }
    let Some((failed, error)) = failure else {
        if args.wait && !args.dry_run {
            let keys: Vec<_> = applied.iter().map(|r| r.key.clone()).collect();
            if let Err(e) = super::ready::wait_ready(backend, &keys, args.timeout, true).await {
                eprintln!("error: {e:#}");
                return Ok(ExitCode::FAILURE);
            }
        }
        return Ok(ExitCode::SUCCESS);
    };
    let (file, index, obj) = &docs[failed];
    let at = format!(
        "{file} document {index} ({}/{})",
        obj.kind.to_lowercase(),
        obj.metadata.name
    );
    if error.causes.is_empty() {
        eprintln!("error: {at}: {error}");
    }
    for (field, message) in &error.causes {
        eprintln!("error: {at}: {field}: {message}");
    }
    let done: Vec<String> = docs[..failed]
        .iter()
        .map(|(f, i, _)| format!("{f}#{i}"))
        .collect();
    let not: Vec<String> = docs[failed..]
        .iter()
        .map(|(f, i, _)| format!("{f}#{i}"))
        .collect();
    eprintln!(
        "applied {} of {} documents: {}; not applied: {}",
        failed,
        docs.len(),
        if done.is_empty() {
            "none".into()
        } else {
            done.join(", ")
        },
        not.join(", ")
    );
    Ok(ExitCode::FAILURE)
}
