//! The `tend` binary: parses the command line and hands off to `tend::cli`.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // The shim forks: it must run before any runtime or logging thread exists.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("shim") {
        return ExitCode::from(tend::shim::main_from_args(args[1..].to_vec()).clamp(0, 255) as u8);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TEND_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never in a redirected log file.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    tend::cli::run(tend::cli::Cli::parse())
}
