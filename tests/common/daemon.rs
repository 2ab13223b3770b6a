//! A real `tend serve` on its own temp state dir, driven through the CLI, for end-to-end tests.
//!
//! Dropping it cleans up also when the test failed: every object is deleted through the daemon
//! (so its controllers tear the host objects down) and the daemon is stopped; then whatever of
//! its instance is left goes too ([`super::sweep::instance_leftovers`]).

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const TEND: &str = env!("CARGO_BIN_EXE_tend");

pub struct Daemon {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Starts `tend serve` with `args` (e.g. `--snapshot-backend copy`) and waits for it.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// The same, with extra environment for the daemon (e.g. `TEND_DOCKER_SOCKET`).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tend-e2e")
            .tempdir()
            .unwrap();
        let mut d = Daemon {
            dir,
            child: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.spawn();
        d
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the daemon again after [`Daemon::kill9`] (same state dir, args and env).
    pub fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let _ = std::fs::remove_file(self.path().join("engine.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("serve.log"))
            .map_err(|e| format!("serve.log: {e}"))?;
        let child = Command::new(TEND)
            .arg("--state-dir")
            .arg(self.path())
            .arg("serve")
            .args(&self.args)
            .env("TEND_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn tend serve: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + super::scaled(Duration::from_secs(30));
        while !self.path().join("engine.json").exists() {
            if Instant::now() > deadline {
                self.kill9();
                return Err(format!("tend serve did not start: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
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

    /// This state dir's instance id (what its host objects are named and labelled with).
    pub fn instance(&self) -> String {
        std::fs::read_to_string(self.path().join("instance-id"))
            .unwrap()
            .trim()
            .to_string()
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
        let f = self
            .path()
            .join(format!("apply-{}.yaml", super::unique("a")));
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

    /// Polls `kind/name` until `pred` holds (20 s at most, [`super::scaled`]; `None` means not found), and
    /// panics with the object and the daemon's log otherwise.
    pub fn wait_for(
        &self,
        kind: &str,
        name: &str,
        what: &str,
        pred: impl Fn(Option<&Value>) -> bool,
    ) -> Value {
        let deadline = Instant::now() + super::scaled(Duration::from_secs(20));
        loop {
            let v = self.get(kind, name);
            if pred(v.as_ref()) {
                return v.unwrap_or(Value::Null);
            }
            assert!(
                Instant::now() < deadline,
                "{kind}/{name}: {what}: {v:#?}\n--- serve.log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Polls until `kind/name` exists and `pred` holds on it (20 s at most).
    pub fn wait(&self, kind: &str, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(kind, name, what, |v| v.is_some_and(&pred))
    }

    /// Waits until `kind/name` has condition Ready=True; panics with its status and the log.
    pub fn wait_ready(&self, kind: &str, name: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + super::scaled(timeout);
        loop {
            let obj = self.get(kind, name);
            if let Some(o) = obj.as_ref().filter(|o| condition(o, "Ready") == "True") {
                return o.clone();
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

/// The status of condition `type_` of an object, or "" when it has none.
pub fn condition(v: &Value, type_: &str) -> String {
    v["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_none() {
            let _ = self.try_spawn(); // also when the test panicked: the sweep below remains
        }
        if self.child.is_some() {
            for kind in ["container", "sandbox", "state", "network"] {
                let _ = self.tend(&["delete", kind, "--all", "--wait", "--timeout", "60"]);
            }
        }
        if let Some(c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let mut c = c;
            let _ = c.wait();
        }
        super::sweep::instance_leftovers(self.path());
    }
}
