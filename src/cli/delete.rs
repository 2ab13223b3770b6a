//! `tend delete`: mark objects for deletion; `--wait` follows them until they are gone.

use super::input::{all_valid, read_inputs};
use anyhow::bail;
use futures::StreamExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tend_schema::store::{
    ChangeType, DeleteOptions, Deleted, Propagation, SqliteStore, Store, StoreError,
};
use tend_schema::{Kind, ObjectKey};

#[derive(Debug, clap::Args)]
pub struct Args {
    pub kind: Option<String>,
    pub names: Vec<String>,
    /// Delete the objects named in these files.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// What happens to dependents: background, foreground or orphan.
    #[arg(long, default_value = "background")]
    pub cascade: Propagation,
    /// Wait until the objects are really gone (their finalizers have run).
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Not found is not an error.
    #[arg(long)]
    pub ignore_not_found: bool,
}

pub async fn run(store: &SqliteStore, args: Args) -> anyhow::Result<ExitCode> {
    let mut keys = Vec::new();
    if !args.files.is_empty() {
        let docs = all_valid(read_inputs(&args.files, false)?)
            .map_err(|e| anyhow::anyhow!(e.join("\n")))?;
        keys.extend(docs.into_iter().filter_map(|(_, _, o)| o.key().ok()));
    } else {
        let Some(kind) = &args.kind else {
            bail!("give KIND NAME... or -f FILE")
        };
        let kind: Kind = kind.parse().map_err(anyhow::Error::msg)?;
        if args.names.is_empty() {
            bail!("give at least one name");
        }
        keys.extend(
            args.names
                .iter()
                .map(|n| ObjectKey::new(kind, args.namespace.clone(), n.clone())),
        );
    }
    let from = store.revision().await?;
    let opts = DeleteOptions {
        propagation: args.cascade,
        ..Default::default()
    };
    let mut pending = Vec::new();
    let mut failed = false;
    for key in keys {
        let label = format!("{}.tend.dev/{}", key.kind.singular(), key.name);
        match store.delete(&key, &opts).await {
            Ok(Deleted::Gone(_)) => println!("{label} deleted"),
            Ok(Deleted::Terminating(o)) => {
                println!(
                    "{label} deleted (terminating: waiting for {})",
                    o.metadata.finalizers.join(", ")
                );
                pending.push(key);
            }
            Err(StoreError::NotFound(_)) if args.ignore_not_found => {}
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if args.wait && !pending.is_empty() {
        wait_gone(store, from, pending, Duration::from_secs(args.timeout)).await?;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn wait_gone(
    store: &SqliteStore,
    from: u64,
    mut pending: Vec<ObjectKey>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut stream = store.watch(from).await?;
    // Objects already gone by now need no event.
    let mut still = Vec::new();
    for k in pending.drain(..) {
        if store.get(&k).await.is_ok() {
            still.push(k);
        }
    }
    pending = still;
    let deadline = tokio::time::Instant::now() + timeout;
    while !pending.is_empty() {
        eprintln!(
            "waiting for {} object(s) to be deleted: {}",
            pending.len(),
            pending
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => bail!(
                "timed out after {}s waiting for deletion",
                timeout.as_secs()
            ),
            Ok(None) => bail!("the change feed ended"),
            Ok(Some(ev)) => {
                let ev = ev?;
                if ev.type_ == ChangeType::Deleted {
                    if let Ok(k) = ev.object.key() {
                        pending.retain(|p| *p != k);
                    }
                }
            }
        }
    }
    Ok(())
}
