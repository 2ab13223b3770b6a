//! `tend serve`: one daemon per state dir, engine.json written and removed on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_for(cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn second_instance_is_refused_and_engine_json_follows_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let engine = dir.path().join("engine.json");
    let mut first = Command::new(env!("CARGO_BIN_EXE_tend"))
        .args([
            "--state-dir",
            dir.path().to_str().unwrap(),
            "serve",
            "--snapshot-backend",
            "copy",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = first.id();
    let guard = scopeguard(pid);
    assert!(wait_for(|| engine.exists()), "engine.json never appeared");
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&engine).unwrap()).unwrap();
    assert_eq!(info["pid"], pid);
    assert!(info["version"].is_string() && info["started_at"].is_string());

    let second = Command::new(env!("CARGO_BIN_EXE_tend"))
        .args([
            "--state-dir",
            dir.path().to_str().unwrap(),
            "serve",
            "--snapshot-backend",
            "copy",
        ])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("already running") && err.contains(&format!("pid {pid}")),
        "{err}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = first.wait().unwrap();
    std::mem::forget(guard);
    assert!(status.success());
    assert!(!engine.exists(), "engine.json is removed on clean shutdown");
}

struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn scopeguard(pid: u32) -> KillOnDrop {
    KillOnDrop(pid)
}

/// A `--listen` port already taken fails the start before the host is touched: no btrfs image
/// is made or mounted for it (before, the image was created and mounted, then left behind), and
/// the error is said once.
#[test]
fn a_listen_port_in_use_fails_before_anything_is_set_up() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tend"))
        .args([
            "--state-dir",
            dir.path().to_str().unwrap(),
            "serve",
            "--listen",
            &addr,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("--listen {addr}")), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "said once: {err}");
    assert!(!dir.path().join("btrfs.img").exists(), "no image was made");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(dir.path().to_str().unwrap()),
        "nothing is mounted under the state dir"
    );
    assert!(!dir.path().join("engine.json").exists());
}

#[test]
fn tokens_created_by_concurrent_processes_are_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let n = 12;
    let children: Vec<_> = (0..n)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_tend"))
                .args([
                    "--state-dir",
                    dir.path().to_str().unwrap(),
                    "token",
                    "create",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let secrets: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        })
        .collect();
    let file = tend::api::auth::TokenFile::load(&dir.path().join("tokens.json")).unwrap();
    assert_eq!(file.tokens.len(), n, "tokens lost to a concurrent rewrite");
    for s in &secrets {
        assert!(
            file.tokens.iter().any(|t| &t.secret == s),
            "secret {s} printed but not kept"
        );
    }
}

/// Stops a daemon with SIGTERM (by pid) and waits for it, also when the test failed.
struct Stop(std::process::Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

/// Whether a TLS handshake with `addr` trusting only `ca` accepts the certificate for `name`.
async fn accepts(addr: std::net::SocketAddr, ca: &str, name: &str) -> bool {
    let cfg = tend::api::tls::client_config(ca).unwrap();
    let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(server, tcp)
        .await
        .is_ok()
}

#[test]
fn the_listener_certificate_names_the_host_and_every_tls_san() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Stop(
        Command::new(env!("CARGO_BIN_EXE_tend"))
            .args(["--state-dir", dir.path().to_str().unwrap(), "serve"])
            .args(["--snapshot-backend", "copy", "--listen"])
            .arg(format!("0.0.0.0:{port}"))
            .args(["--tls-san", "api.tend.test", "--tls-san", "10.11.12.13"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_for(|| dir.path().join("engine.json").exists()),
        "daemon did not start"
    );
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    // Only loopback traffic: every name is checked on a connection to 127.0.0.1.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        for name in [
            "localhost",
            "127.0.0.1",
            &host,
            "api.tend.test",
            "10.11.12.13",
        ] {
            assert!(accepts(addr, &ca, name).await, "certificate lacks {name}");
        }
        assert!(
            !accepts(addr, &ca, "other.tend.test").await,
            "a name never given must not verify"
        );
    });
    drop(daemon);
}
