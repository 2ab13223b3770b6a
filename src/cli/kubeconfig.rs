//! `tend kubeconfig`: a kubeconfig for the running daemon's TCP listener and the admin token.

use crate::api::auth::TokenFile;
use crate::daemon::lifecycle::EngineInfo;
use crate::daemon::Layout;
use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Default namespace of the context.
    #[arg(long, short = 'n', default_value = tend_schema::DEFAULT_NAMESPACE)]
    pub namespace: String,
}

/// The kubeconfig YAML for `server` and `token`.
pub fn render(server: &str, ca_pem: &str, token: &str, namespace: &str) -> String {
    let ca = crate::api::tls::base64_encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: tend\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: tend-admin\n  user:\n    token: {token}\ncontexts:\n- name: tend\n  context:\n    cluster: tend\n    user: tend-admin\n    namespace: {namespace}\ncurrent-context: tend\n"
    )
}

pub fn run(dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let engine = Layout::new(dir).engine_json();
    let text = std::fs::read_to_string(&engine).with_context(|| {
        format!("no daemon is running on {} ({} is missing); start `tend serve --listen 127.0.0.1:6443`", dir.display(), engine.display())
    })?;
    let info: EngineInfo =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", engine.display()))?;
    let listen = info.listen.ok_or_else(|| {
        anyhow::anyhow!("the daemon (pid {}) has no TCP listener, and kubectl cannot use its unix socket; restart it with `tend serve --listen 127.0.0.1:6443`", info.pid)
    })?;
    let admin = TokenFile::load(&Layout::new(dir).tokens())?
        .tokens
        .into_iter()
        .find(|t| t.id == "admin")
        .ok_or_else(|| {
            anyhow::anyhow!("no admin token in {}", Layout::new(dir).tokens().display())
        })?;
    let mut addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("engine.json listen {listen:?}"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let ca_path = Layout::new(dir).ca_cert();
    let ca = std::fs::read_to_string(&ca_path)
        .with_context(|| format!("reading {}", ca_path.display()))?;
    print!(
        "{}",
        render(
            &format!("https://{addr}"),
            &ca,
            &admin.secret,
            &args.namespace
        )
    );
    Ok(ExitCode::SUCCESS)
}
