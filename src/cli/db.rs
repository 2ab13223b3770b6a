//! `tend db`: dump every object, run a read-only query, or check integrity.

use super::output::{print_rows, to_yaml};
use std::process::ExitCode;
use tend_schema::store::{ListQuery, SqliteStore, Store};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: DbCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DbCommand {
    /// Print every object, with status, as multi-document YAML.
    Dump,
    /// Run one read-only SQL statement (writes are refused).
    Query { sql: String },
    /// Run SQLite's integrity_check; exit 1 unless it says ok.
    Check,
}

pub async fn run(store: &SqliteStore, args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        DbCommand::Dump => {
            let list = store.list(&ListQuery::default()).await?;
            println!("# tend store at revision {}", list.revision);
            for o in list.items {
                println!("---");
                print!("{}", to_yaml(&serde_json::to_value(&o)?));
            }
        }
        DbCommand::Query { sql } => {
            let (cols, rows) = store.query(sql).await?;
            let rows = rows
                .into_iter()
                .map(|r| {
                    r.into_iter()
                        .map(|v| {
                            v.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string())
                        })
                        .collect()
                })
                .collect();
            print_rows(Some(cols), rows);
        }
        DbCommand::Check => {
            let result = store.integrity_check().await?;
            for line in &result {
                println!("{line}");
            }
            if result != ["ok"] {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
