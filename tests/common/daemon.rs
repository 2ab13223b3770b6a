//! A real `tend serve` on its own temp state dir for end-to-end tests. Dropping it deletes every
//! object through the daemon (so its controllers tear the host objects down), stops it, and
//! releases the embedded btrfs image — also when the test failed.

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const TEND: &str = env!("CARGO_BIN_EXE_tend");

pub struct Daemon {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    args: Vec<String>,
}

impl Daemon {
    /// Starts `tend serve` with `args` (e.g. `--snapshot-backend copy`) and waits for it.
    pub fn start(args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tend-e2e")
            .tempdir()
            .unwrap();
        let mut d = Daemon {
            dir,
            child: None,
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        d.spawn();
        d
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.path().join("engine.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("serve.log"))
            .unwrap();
        let child = Command::new(TEND)
            .arg("--state-dir")
            .arg(self.path())
            .arg("serve")
            .args(&self.args)
            .env("TEND_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.path().join("engine.json").exists() {
            assert!(
                Instant::now() < deadline,
                "tend serve did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("serve.log")).unwrap_or_default()
    }

    pub fn tend(&self, args: &[&str]) -> Output {
        Command::new(TEND)
            .arg("--state-dir")
            .arg(self.path())
            .args(args)
            .output()
            .unwrap()
    }

    pub fn apply(&self, yaml: &str) {
        let f = self.path().join(format!("apply-{}.yaml", rand_suffix()));
        std::fs::write(&f, yaml).unwrap();
        let out = self.tend(&["apply", "-f", f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let out = self.tend(&["get", kind, name, "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Waits until `kind/name` has condition Ready=True; panics with its status and the log.
    pub fn wait_ready(&self, kind: &str, name: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let obj = self.get(kind, name);
            if let Some(o) = &obj {
                let ready = o["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
                if ready {
                    return o.clone();
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{kind}/{name} not Ready: {obj:#?}\n--- daemon log ---\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
        for kind in ["container", "sandbox", "state", "network"] {
            let _ = Command::new(TEND)
                .arg("--state-dir")
                .arg(self.path())
                .args(["delete", kind, "--all", "--wait", "--timeout", "60"])
                .output();
        }
        if let Some(c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let mut c = c;
            let _ = c.wait();
        }
        tend::snapshot::register::release(self.path());
    }
}
