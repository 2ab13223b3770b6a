//! The one FORWARD rule that lets traffic pass between ports of tend's bridges.
//!
//! Why a subprocess here, when everything else is netlink: on hosts with Docker the iptables
//! FORWARD policy is DROP and `br_netfilter` sends bridged IPv4 through it, so two namespaces
//! on one tend bridge cannot talk without an ACCEPT rule. iptables has no maintained netlink
//! crate for the nft backend Docker uses, so `iptables` itself is run — once, at daemon start.
//!
//! The rule matches only tend-prefixed interfaces (`tnd-+`) and is shared by every tend daemon
//! on the host, so it is never removed (a daemon cannot know whether another one still runs).

use std::process::Command;

/// Comment tagging tend's rule (`-m comment --comment tend-bridges`).
pub const RULE_COMMENT: &str = "tend-bridges";

/// The rule's arguments after the operation (`-C`/`-I`/`-D FORWARD`).
fn rule() -> [&'static str; 10] {
    [
        "-i",
        "tnd-+",
        "-o",
        "tnd-+",
        "-m",
        "comment",
        "--comment",
        RULE_COMMENT,
        "-j",
        "ACCEPT",
    ]
}

/// What happened when the rule was ensured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallOutcome {
    /// The rule was already there.
    Present,
    /// The rule was inserted at the top of FORWARD.
    Inserted,
    /// `iptables` is not installed: nothing to do (and nothing filters forwarding through it).
    NoIptables,
}

/// Errors running `iptables`.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("running iptables {args}: {source}")]
    Spawn {
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error("iptables {args} failed: {stderr}")]
    Failed { args: String, stderr: String },
}

fn run(op: &[&str]) -> Result<std::process::Output, FirewallError> {
    let args: Vec<&str> = ["-w", "5"]
        .into_iter()
        .chain(op.iter().copied())
        .chain(rule())
        .collect();
    Command::new("iptables")
        .args(&args)
        .output()
        .map_err(|source| FirewallError::Spawn {
            args: args.join(" "),
            source,
        })
}

/// Ensures `iptables -I FORWARD -i tnd-+ -o tnd-+ -m comment --comment tend-bridges -j ACCEPT`
/// exists (checked with `-C` first, so it is idempotent). Blocking: call it off the executor.
///
/// # Errors
/// When `iptables` runs but fails (other than "rule not found" from the check).
pub fn ensure_bridge_forwarding() -> Result<FirewallOutcome, FirewallError> {
    let check = match run(&["-C", "FORWARD"]) {
        Ok(o) => o,
        Err(FirewallError::Spawn { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(FirewallOutcome::NoIptables)
        }
        Err(e) => return Err(e),
    };
    if check.status.success() {
        return Ok(FirewallOutcome::Present);
    }
    let out = run(&["-I", "FORWARD", "1"])?;
    if out.status.success() {
        Ok(FirewallOutcome::Inserted)
    } else {
        Err(FirewallError::Failed {
            args: format!("-I FORWARD 1 {}", rule().join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}
