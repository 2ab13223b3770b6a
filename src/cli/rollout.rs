//! `tend rollout history|undo container/NAME`: a Container's revisions, and going back to one
//! (a new revision with the old spec; `--data` also restores that revision's data snapshot).
//! Both go through the daemon's API when one runs (`.../revisions`, `.../rollback`).

use super::backend::Backend;
use super::output::print_rows;
use crate::api::rollouts::RollbackRequest;
use std::process::ExitCode;
use tend_schema::store::Revision;
use tend_schema::{Kind, ObjectKey};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// List the revisions of a Container: number, when, who, why, whether data was kept.
    History(Target),
    /// Go back to an earlier revision (default: the one before the current spec).
    Undo {
        #[command(flatten)]
        target: Target,
        /// The revision to go back to.
        #[arg(long)]
        to_revision: Option<u64>,
        /// Also restore the data (Sandbox) that revision's snapshot holds.
        #[arg(long)]
        data: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct Target {
    /// `container/web`, or the kind with the name as the next argument.
    pub object: String,
    pub name: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Print the revision list as JSON (history).
    #[arg(short = 'o', long)]
    pub output: Option<String>,
}

impl Target {
    fn key(&self) -> anyhow::Result<ObjectKey> {
        let (kind, name) = match (self.object.split_once('/'), &self.name) {
            (Some((k, n)), None) => (k.to_string(), n.to_string()),
            (None, Some(n)) => (self.object.clone(), n.clone()),
            _ => anyhow::bail!("usage: tend rollout history|undo container/NAME"),
        };
        let kind: Kind = kind.parse().map_err(anyhow::Error::msg)?;
        if kind != Kind::Container {
            anyhow::bail!("only containers have revisions, not {}", kind.plural());
        }
        Ok(ObjectKey::new(kind, &self.namespace, name))
    }
}

pub async fn run(backend: &Backend, args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::History(t) => {
            let list = backend.revisions(&t.key()?).await?;
            if t.output.as_deref() == Some("json") {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            let revs: Vec<Revision> = serde_json::from_value(list["items"].clone())?;
            let (running, spec) = (list["running"].as_u64(), list["spec"].as_u64());
            let rows = revs
                .iter()
                .map(|r| {
                    let mut mark = Vec::new();
                    if running == Some(r.revision) {
                        mark.push("running");
                    }
                    if spec == Some(r.revision) {
                        mark.push("spec");
                    }
                    vec![
                        r.revision.to_string(),
                        r.generation.to_string(),
                        r.created_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        r.created_by.clone(),
                        if r.snapshot.is_some() { "yes" } else { "-" }.into(),
                        mark.join(","),
                        r.cause.clone(),
                    ]
                })
                .collect();
            let head = [
                "REVISION",
                "GENERATION",
                "CREATED",
                "BY",
                "DATA",
                "NOW",
                "CAUSE",
            ];
            print_rows(Some(head.map(String::from).to_vec()), rows);
            Ok(ExitCode::SUCCESS)
        }
        Sub::Undo {
            target,
            to_revision,
            data,
        } => {
            let key = target.key()?;
            let req = RollbackRequest { to_revision, data };
            let obj = backend.rollback(&key, &req).await?;
            println!(
                "{} rolled back (generation {}{})",
                key,
                obj.metadata.generation,
                if data { ", data restore requested" } else { "" }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
