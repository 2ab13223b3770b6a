//! `tend wait KIND/NAME --for=condition=Ready [--timeout 60s]`, with a progress line.

use super::backend::Backend;
use crate::runtime_native::cli::parse_duration;
use futures::StreamExt;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tend_schema::meta::CommonStatus;
use tend_schema::store::ChangeType;
use tend_schema::{Kind, ObjectKey};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to wait for: `container/web` (kinds by any name: ct, containers…).
    pub target: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// `condition=<Type>` (status True) or `condition=<Type>=<True|False|Unknown>`, or `delete`.
    #[arg(long = "for", default_value = "condition=Ready")]
    pub for_: String,
    /// Give up after this long (exit 1).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

pub async fn run(backend: &Backend, args: Args) -> anyhow::Result<ExitCode> {
    let (kind, name) = args
        .target
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("{:?}: expected KIND/NAME", args.target))?;
    let kind: Kind = kind.parse().map_err(anyhow::Error::msg)?;
    let key = ObjectKey::new(kind, args.namespace.clone(), name);
    let want_delete = args.for_ == "delete";
    let (ctype, cstatus) = match args.for_.strip_prefix("condition=") {
        Some(rest) => match rest.split_once('=') {
            Some((t, s)) => (t.to_string(), s.to_string()),
            None => (rest.to_string(), "True".to_string()),
        },
        None if want_delete => (String::new(), String::new()),
        None => anyhow::bail!(
            "--for={:?}: expected condition=<Type>[=<Status>] or delete",
            args.for_
        ),
    };
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + args.timeout;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last = String::new();
    // The object now and the revision it was read at, then every change after it: no polling.
    let list = backend
        .list(Some(kind), Some(&key.namespace), "", Some(&key.name))
        .await?;
    let mut current = list.items.into_iter().next();
    let mut stream = backend
        .watch(&[kind], Some(&key.namespace), list.revision)
        .await?;
    loop {
        let (done, progress) = match &current {
            None if want_delete => (true, "deleted".to_string()),
            None => (false, "not found".to_string()),
            Some(_) if want_delete => (false, "still exists".to_string()),
            Some(obj) => {
                let st: CommonStatus =
                    serde_json::from_value(obj.status.clone()).unwrap_or_default();
                let phase = st.phase.clone().unwrap_or_else(|| "-".into());
                match st.condition(&ctype) {
                    Some(c) => {
                        let status = format!("{:?}", c.status);
                        let up_to_date = c.observed_generation >= obj.metadata.generation;
                        (
                            up_to_date && status == cstatus,
                            format!("{phase}, {ctype}={status} ({})", c.reason),
                        )
                    }
                    None => (false, format!("{phase}, no {ctype} condition yet")),
                }
            }
        };
        let line = format!("waiting for {key}: {progress}");
        if done {
            if tty {
                eprint!("\r\x1b[K");
            }
            println!(
                "{key} condition met ({progress}) after {:.1}s",
                started.elapsed().as_secs_f64()
            );
            return Ok(ExitCode::SUCCESS);
        }
        if line != last {
            if tty {
                eprint!("\r\x1b[K{line}");
            } else {
                eprintln!("{line}");
            }
            let _ = std::io::stderr().flush();
            last = line;
        }
        // The next change of this object, or the deadline.
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => {
                    if tty {
                        eprintln!();
                    }
                    eprintln!(
                        "error: timed out after {:?} waiting for {key} ({progress})",
                        args.timeout
                    );
                    return Ok(ExitCode::FAILURE);
                }
                Ok(None) => anyhow::bail!("the watch of {key} ended"),
                Ok(Some(ev)) => {
                    let ev = ev?;
                    if ev.object.metadata.name != key.name {
                        continue;
                    }
                    current = (ev.type_ != ChangeType::Deleted).then_some(ev.object);
                    break;
                }
            }
        }
    }
}
