//! `tend bench cli`: what a script waits for. A `tend serve` child on a scratch state dir; each
//! sample applies one Container on its own Sandbox (copy backend) with a Network address, and
//! waits until both are Ready — alternately as a whole `tend apply -f FILE --wait` process and
//! in this process through the same CLI code (API apply, one watch), so the difference is what
//! starting the process costs. Then `kubectl get events` as a whole process, where installed.

use super::{emit, note, Figure, TempDir};
use crate::cli::backend::Backend;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The running `tend serve`, stopped (after deleting what the bench made) on drop.
struct Serve {
    child: std::process::Child,
    state: PathBuf,
}

impl Serve {
    fn start(dir: &Path) -> anyhow::Result<Self> {
        let state = dir.join("state");
        let log = std::fs::File::create(dir.join("serve.log"))?;
        let child = Command::new(std::env::current_exe()?)
            .arg("--state-dir")
            .arg(&state)
            .args([
                "serve",
                "--snapshot-backend",
                "copy",
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let s = Self { child, state };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s.state.join("engine.json").exists() {
            anyhow::ensure!(Instant::now() < deadline, "tend serve did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(s)
    }

    fn tend(&self, args: &[&str]) -> Command {
        let mut c = Command::new(std::env::current_exe().expect("current exe"));
        c.arg("--state-dir").arg(&self.state).args(args);
        c
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        for kind in ["container", "sandbox", "state", "network"] {
            let _ = self
                .tend(&[
                    "delete",
                    kind,
                    "--all",
                    "--force",
                    "--wait",
                    "--timeout",
                    "60",
                ])
                .output();
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn sample_yaml(i: usize) -> String {
    format!(
        "apiVersion: tend.dev/v1\nkind: Sandbox\nmetadata: {{name: sb-{i}}}\nspec: {{state: busybox}}\n---\n\
         apiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: c-{i}}}\nspec:\n  rootfs: {{sandbox: sb-{i}}}\n  \
         command: [/bin/sleep, '3600']\n  networks: [{{name: bench}}]\n  stopGracePeriodSeconds: 0\n"
    )
}

/// Runs the bench: `samples` of each way, `kubectl` runs of `kubectl get events`.
pub async fn run(samples: usize, kubectl: usize) -> anyhow::Result<()> {
    let tmp = TempDir::new("cli")?;
    let rootfs = super::container::busybox_rootfs(&tmp.0)?;
    let serve = Serve::start(&tmp.0)?;
    note(format_args!(
        "tend bench cli: tend serve on {} (copy backend); each sample one Sandbox + Container with a Network address",
        serve.state.display()
    ));
    let base = tmp.0.join("base.yaml");
    std::fs::write(
        &base,
        format!(
            "apiVersion: tend.dev/v1\nkind: State\nmetadata: {{name: busybox}}\nspec: {{source: {{directory: {}}}}}\n---\n\
             apiVersion: tend.dev/v1\nkind: Network\nmetadata: {{name: bench}}\nspec: {{subnet: 10.252.0.0/16}}\n",
            rootfs.display()
        ),
    )?;
    let out = serve
        .tend(&["apply", "-f", base.to_str().unwrap_or_default(), "--wait"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "setup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backend = Backend::open(&serve.state, false).await?;
    let (mut whole, mut inproc) = (Vec::new(), Vec::new());
    for i in 0..samples * 2 {
        let yaml = sample_yaml(i);
        if i % 2 == 0 {
            let f = tmp.0.join(format!("s{i}.yaml"));
            std::fs::write(&f, &yaml)?;
            let t = Instant::now();
            let out = serve
                .tend(&["apply", "-f", f.to_str().unwrap_or_default(), "--wait"])
                .output()?;
            whole.push(t.elapsed());
            anyhow::ensure!(
                out.status.success(),
                "sample {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            let objs = tend_schema::decode::decode_all(&yaml)?
                .into_iter()
                .map(|d| d.result)
                .collect::<Result<Vec<_>, _>>()?;
            let t = Instant::now();
            let (applied, failed) = backend.apply(objs, false).await;
            if let Some((_, f)) = failed {
                anyhow::bail!("sample {i}: {}", f.message);
            }
            let keys: Vec<_> = applied.into_iter().map(|a| a.key).collect();
            crate::cli::ready::wait_ready(&backend, &keys, Duration::from_secs(60), false).await?;
            inproc.push(t.elapsed());
        }
    }
    emit(&Figure::latency(
        "tend apply --wait, whole process: Sandbox + Container Ready",
        whole,
    ));
    emit(&Figure::latency(
        "same apply + watch in process (no process start)",
        inproc,
    ));
    kubectl_events(&serve, &tmp.0, kubectl)
}

/// `kubectl get events` as a whole process against the same daemon, or skipped.
fn kubectl_events(serve: &Serve, dir: &Path, runs: usize) -> anyhow::Result<()> {
    let name = "kubectl get events, whole process";
    if runs == 0 {
        emit(&Figure::skipped(name, "--kubectl 0"));
        return Ok(());
    }
    let present = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        emit(&Figure::skipped(name, "kubectl not installed"));
        return Ok(());
    }
    let kc = dir.join("kubeconfig");
    let out = serve.tend(&["kubeconfig"]).output()?;
    anyhow::ensure!(out.status.success(), "tend kubeconfig failed");
    std::fs::write(&kc, &out.stdout)?;
    let mut lat = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let out = Command::new("kubectl")
            .env("KUBECONFIG", &kc)
            .env("HOME", dir)
            .args(["get", "events", "-A"])
            .output()?;
        lat.push(t.elapsed());
        anyhow::ensure!(
            out.status.success(),
            "kubectl get events: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    emit(&Figure::latency(name, lat));
    Ok(())
}
