//! `tend token create|list|revoke`: edit `<state-dir>/tokens.json`; a running daemon re-reads it.

use crate::api::auth::TokenFile;
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Create a token and print its secret (shown only now).
    Create {
        /// Limit the token to this namespace (repeatable); default: all namespaces.
        #[arg(long = "namespace", short = 'n')]
        namespaces: Vec<String>,
        /// Reads only: writes get 403.
        #[arg(long)]
        read_only: bool,
    },
    /// List tokens (ids and limits, never secrets).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

pub fn run(dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let path = crate::daemon::Layout::new(dir).tokens();
    match args.what {
        What::Create {
            namespaces,
            read_only,
        } => {
            for ns in &namespaces {
                tend_schema::field::check_dns1123_label(ns)
                    .map_err(|m| anyhow::anyhow!("--namespace {ns:?}: {m}"))?;
            }
            std::fs::create_dir_all(dir)?;
            let t = TokenFile::update(&path, |f| Ok(f.create(None, namespaces, read_only)))?;
            eprintln!("created token {}", t.id);
            println!("{}", t.secret);
        }
        What::List => {
            let file = TokenFile::load(&path)?;
            println!("{:<10} {:<10} {:<24} CREATED", "ID", "ACCESS", "NAMESPACES");
            for t in &file.tokens {
                let ns = if t.namespaces.is_empty() {
                    "*".to_string()
                } else {
                    t.namespaces.join(",")
                };
                let access = if t.read_only {
                    "read-only"
                } else {
                    "read-write"
                };
                println!(
                    "{:<10} {access:<10} {ns:<24} {}",
                    t.id,
                    t.created_at.to_rfc3339()
                );
            }
        }
        What::Revoke { id } => {
            TokenFile::update(&path, |f| f.revoke(&id))?;
            eprintln!("revoked token {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
