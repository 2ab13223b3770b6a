//! `tend delete`: mark objects for deletion (by name, file, label selector or `--all`), with the
//! workload's grace period; `--wait` follows them over the watch API until they are gone.

use super::backend::Backend;
use super::input::{all_valid, read_inputs};
use anyhow::bail;
use futures::StreamExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tend_schema::store::{ChangeType, Propagation};
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
    /// Give up waiting after this long (`30s`, `5m`; a bare number is seconds).
    #[arg(long, default_value = "300s", value_parser = crate::runtime_native::cli::parse_duration)]
    pub timeout: Duration,
    /// Not found is not an error.
    #[arg(long)]
    pub ignore_not_found: bool,
    /// Print the objects that would go (each with its users and dependents), delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Every object of KIND in the namespace.
    #[arg(long)]
    pub all: bool,
    /// Every object of KIND in the namespace whose labels match this selector (`app=web`,
    /// `tier!=db`, `env in (a,b)`, `!canary`), as kubectl's -l.
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// Seconds a Container's workload gets between SIGTERM and SIGKILL, instead of its
    /// spec.stopGracePeriodSeconds (default 10). 0 sends SIGKILL at once. Negative: the spec's.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i64,
    /// Kill now: the same as --grace-period=0 (SIGKILL, no SIGTERM and no grace to wait out).
    /// Host objects are still torn down before the object goes (tend never forgets a running
    /// workload), so with --wait this returns once that is done.
    #[arg(long)]
    pub force: bool,
}

/// The grace period the flags ask for: None = the object's own.
fn grace(args: &Args) -> anyhow::Result<Option<u32>> {
    match (args.force, args.grace_period) {
        (true, g) if g > 0 => {
            bail!("--force and --grace-period greater than 0 cannot be given together")
        }
        (true, _) => Ok(Some(0)),
        (false, g) if g < 0 => Ok(None),
        (false, g) => {
            Ok(Some(u32::try_from(g).map_err(|_| {
                anyhow::anyhow!("--grace-period: {g} is too large")
            })?))
        }
    }
}

pub async fn run(backend: &Backend, args: Args) -> anyhow::Result<ExitCode> {
    let grace = grace(&args)?;
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
        if args.all || args.selector.is_some() {
            if !args.names.is_empty() {
                bail!("give names, or --all / -l, not both");
            }
            let selector = args.selector.as_deref().unwrap_or("");
            let list = backend
                .list(Some(kind), Some(&args.namespace), selector, None)
                .await
                .map_err(|f| anyhow::anyhow!(f.message))?;
            keys.extend(list.items.iter().filter_map(|o| o.key().ok()));
            if keys.is_empty() {
                eprintln!(
                    "No {} found in {} namespace.",
                    kind.plural(),
                    args.namespace
                );
            }
        } else if args.names.is_empty() {
            bail!("give at least one name, -l SELECTOR, or --all");
        }
        keys.extend(
            args.names
                .iter()
                .map(|n| ObjectKey::new(kind, args.namespace.clone(), n.clone())),
        );
    }
    if args.dry_run {
        return dry_run(backend, &keys).await;
    }
    let mut pending = Vec::new();
    let mut from = u64::MAX;
    let mut failed = false;
    for key in keys {
        let label = format!("{}.tend.dev/{}", key.kind.singular(), key.name);
        match backend.delete(&key, args.cascade, grace).await {
            Ok(None) => println!("{label} deleted"),
            Ok(Some(o)) => {
                println!(
                    "{label} deleted (terminating: waiting for {})",
                    o.metadata.finalizers.join(", ")
                );
                // Its removal is a change after the revision that marked it.
                from = from.min(o.metadata.revision().unwrap_or(0));
                pending.push(key);
            }
            Err(e) if e.is_not_found() && args.ignore_not_found => {}
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if args.wait && !pending.is_empty() {
        wait_gone(backend, from, pending, args.timeout).await?;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn wait_gone(
    backend: &Backend,
    from: u64,
    mut pending: Vec<ObjectKey>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut kinds: Vec<Kind> = pending.iter().map(|k| k.kind).collect();
    kinds.sort_by_key(|k| k.as_str());
    kinds.dedup();
    let mut stream = backend.watch(&kinds, None, from).await?;
    // Objects already gone by now need no event.
    let mut still = Vec::new();
    for k in pending.drain(..) {
        if backend.get(&k).await.is_ok() {
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

/// Prints each object with everything built on it (users by name, owned dependents), as a tree.
async fn dry_run(backend: &Backend, keys: &[ObjectKey]) -> anyhow::Result<ExitCode> {
    use std::collections::BTreeMap;
    let all = backend.list(None, None, "", None).await?.items;
    let mut deps: BTreeMap<ObjectKey, Vec<ObjectKey>> = BTreeMap::new();
    let by_uid: BTreeMap<String, ObjectKey> = all
        .iter()
        .filter_map(|o| Some((o.metadata.uid.clone()?, o.key().ok()?)))
        .collect();
    for o in &all {
        let Ok(k) = o.key() else { continue };
        for r in tend_schema::kinds::references(k.kind, &k.namespace, &o.spec) {
            deps.entry(r).or_default().push(k.clone());
        }
        for owner in &o.metadata.owner_references {
            if let Some(ok) = by_uid.get(&owner.uid) {
                deps.entry(ok.clone()).or_default().push(k.clone());
            }
        }
    }
    fn walk(
        k: &ObjectKey,
        depth: usize,
        deps: &std::collections::BTreeMap<ObjectKey, Vec<ObjectKey>>,
        seen: &mut Vec<ObjectKey>,
    ) {
        let label = format!("{}.tend.dev/{}", k.kind.singular(), k.name);
        if seen.contains(k) {
            println!("{}{label} (already listed)", "  ".repeat(depth));
            return;
        }
        println!("{}{label}", "  ".repeat(depth));
        seen.push(k.clone());
        let mut users = deps.get(k).cloned().unwrap_or_default();
        users.sort();
        users.dedup();
        for u in users {
            walk(&u, depth + 1, deps, seen);
        }
    }
    let mut failed = false;
    let mut seen = Vec::new();
    for k in keys {
        if !all.iter().any(|o| o.key().ok().as_ref() == Some(k)) {
            eprintln!("error: {k} not found");
            failed = true;
            continue;
        }
        walk(k, 0, &deps, &mut seen);
    }
    if seen.len() > keys.len() {
        println!(
            "(dry run: {} object(s); in use, so without --cascade=foreground the first stays \
             Terminating until the others are gone)",
            seen.len()
        );
    } else {
        println!("(dry run: {} object(s))", seen.len());
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
