//! The one harness for suites that run a real `tend serve` child on its own temp state dir:
//! start, SIGKILL, restart, drive it through the CLI or raw HTTP on its socket, read its store
//! directly, count its shims, and clean up on drop also when the test failed.
//!
//! Two ways to end, chosen by the constructor:
//! - [`Daemon::start`] (end-to-end suites): every object is deleted through the daemon, so its
//!   controllers tear the host objects down, and the daemon gets SIGTERM.
//! - [`Daemon::unstarted`] / [`Daemon::start_new`] (reliability suites: chaos, faults,
//!   security): the daemon is SIGKILLed, as those suites check leftovers themselves.
//!
//! Either way, whatever of its instance is left goes too ([`super::sweep::instance_leftovers`]).

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tend_schema::store::{Lease, LeaseFilter, ListQuery, OpenOptions, SqliteStore, Store};
use tend_schema::AnyObject;

pub const TEND: &str = env!("CARGO_BIN_EXE_tend");

#[derive(Clone, Copy, PartialEq)]
enum Teardown {
    /// Delete every object through the daemon, then SIGTERM.
    ThroughDaemon,
    /// SIGKILL; the sweep removes the rest.
    Kill,
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    /// A state dir elsewhere (e.g. on a small tmpfs) instead of `dir`.
    pub at: Option<PathBuf>,
    child: Option<Child>,
    /// `tend serve` arguments and environment, kept for restarts.
    pub serve_args: Vec<String>,
    pub env: Vec<(String, String)>,
    teardown: Teardown,
    rt: OnceLock<tokio::runtime::Runtime>,
    store: Option<Arc<SqliteStore>>,
    /// Uid of every object [`Daemon::objects`] ever returned: the leak check looks for links
    /// named after them too, not only for links carrying the instance's alias.
    seen_uids: std::collections::HashSet<String>,
}

impl Daemon {
    /// A daemon on its own btrfs image (512 MiB, btrfs snapshots, no periodic resync); `extra`
    /// are more `tend serve` arguments.
    pub fn start_btrfs(extra: &[&str]) -> Self {
        let mut args = vec![
            "--btrfs-image-size",
            "512Mi",
            "--snapshot-backend",
            "btrfs",
            "--resync-seconds",
            "3600",
        ];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    /// Starts `tend serve` with `args` (e.g. `--snapshot-backend copy`) and waits for it.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// The same, with extra environment for the daemon (e.g. `TEND_DOCKER_SOCKET`).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut d = Self::new("tend-e2e", args.iter().map(|s| s.to_string()).collect());
        d.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        d.spawn();
        d
    }

    /// A reliability-suite daemon (copy backend, 2 s resync, 1 s orphan grace), started.
    pub fn start_new(prefix: &str) -> Self {
        let mut d = Self::unstarted(prefix, &[]);
        d.spawn();
        d
    }

    /// A reliability-suite daemon not started yet; `args` are added to its defaults (copy
    /// backend unless `args` name one, fast resync and orphan grace). Dropping it SIGKILLs it.
    pub fn unstarted(prefix: &str, args: &[&str]) -> Self {
        let mut serve_args: Vec<String> = ["--resync-seconds", "2", "--orphan-grace-seconds", "1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if !args.contains(&"--snapshot-backend") {
            serve_args.extend(["--snapshot-backend".into(), "copy".into()]);
        }
        serve_args.extend(args.iter().map(|s| s.to_string()));
        let mut d = Self::new(prefix, serve_args);
        d.teardown = Teardown::Kill;
        d
    }

    fn new(prefix: &str, serve_args: Vec<String>) -> Self {
        Daemon {
            dir: tempfile::Builder::new().prefix(prefix).tempdir().unwrap(),
            at: None,
            child: None,
            serve_args,
            env: Vec::new(),
            teardown: Teardown::ThroughDaemon,
            rt: OnceLock::new(),
            store: None,
            seen_uids: Default::default(),
        }
    }

    pub fn path(&self) -> &Path {
        self.at.as_deref().unwrap_or(self.dir.path())
    }

    /// Starts `tend serve` (again, after [`Daemon::kill9`]: same state dir, args and env) and
    /// waits for `engine.json`.
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
            .args(&self.serve_args)
            // Defaults first, so a test's own environment (e.g. TEND_LOG=debug) wins.
            .env("TEND_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // The daemon works in its state dir: a shell a name reached would write there.
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
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// SIGKILL, as a crash would (and reap). Its shims and workloads live on.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as `systemctl stop` does, and wait for the daemon to exit; its exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        c.wait().ok()
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
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

    /// The CLI on this state dir, not run yet.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(TEND);
        c.arg("--state-dir").arg(self.path()).args(args);
        c
    }

    /// Runs the CLI on this state dir.
    pub fn tend(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// An API client on the daemon's unix socket.
    pub fn client(&self) -> tend::api::client::Client {
        tend::api::client::Client::unix(self.path().join("tend.sock"))
    }

    /// `tend apply -f` of this YAML; panics with the CLI's stderr on failure.
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

    /// Polls `kind/name` until `pred` holds (20 s at most, [`super::scaled`]; `None` means not
    /// found), and panics with the object and the daemon's log otherwise.
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

    /// One HTTP/1.0 request over the unix socket: (status code, body). `token` goes in a bearer
    /// header when given.
    pub fn http(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(self.path().join("tend.sock")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: tend\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let code = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    /// Waits until `/readyz` says every controller has done its start-up observation pass.
    pub fn wait_readyz(&self) {
        let deadline = Instant::now() + super::scaled(Duration::from_secs(30));
        while self.http("GET", "/readyz", None, "").0 != 200 {
            assert!(Instant::now() < deadline, "never ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A runtime of the test's own for reads from the store.
    pub fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        })
    }

    /// The store of this state dir, opened in the test process (reads while the daemon runs).
    pub fn store(&mut self) -> Arc<SqliteStore> {
        if self.store.is_none() {
            let path = self.path().join("tend.db");
            let s = self
                .rt()
                .block_on(SqliteStore::open(path, OpenOptions::default()))
                .unwrap();
            self.store = Some(Arc::new(s));
        }
        self.store.clone().unwrap()
    }

    /// Every object of every kind in the store.
    pub fn objects(&mut self) -> Vec<AnyObject> {
        let s = self.store();
        let items = self
            .rt()
            .block_on(s.list(&ListQuery::default()))
            .unwrap()
            .items;
        self.seen_uids
            .extend(items.iter().filter_map(|o| o.metadata.uid.clone()));
        items
    }

    pub fn leases(&mut self) -> Vec<Lease> {
        let s = self.store();
        self.rt()
            .block_on(s.list_leases(&LeaseFilter::default()))
            .unwrap()
    }

    /// Polls until `pred` holds on the whole store (at most `secs`); panics with `what`, the
    /// objects that keep it false and the daemon log.
    pub fn wait_all(
        &mut self,
        secs: u64,
        what: &str,
        pred: impl Fn(&[AnyObject]) -> Result<(), String>,
    ) -> Duration {
        let t0 = Instant::now();
        loop {
            let objs = self.objects();
            match pred(&objs) {
                Ok(()) => return t0.elapsed(),
                Err(why) if t0.elapsed() > Duration::from_secs(secs) => {
                    let log = self.log();
                    let lines: Vec<&str> = log.lines().collect();
                    let tail = lines[lines.len().saturating_sub(60)..].join("\n");
                    panic!("{what} after {secs} s: {why}\n--- serve.log (tail):\n{tail}");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// `tend shim <dir>` processes of this state dir, by container dir name (the uid).
    pub fn shims(&self) -> HashMap<String, Vec<i32>> {
        let root = self.path().join("containers");
        let mut out: HashMap<String, Vec<i32>> = HashMap::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let words: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            if words.len() >= 3 && words[1] == b"shim" {
                let dir = PathBuf::from(String::from_utf8_lossy(words[2]).to_string());
                if dir.parent() == Some(root.as_path()) {
                    let uid = dir.file_name().unwrap().to_string_lossy().to_string();
                    out.entry(uid).or_default().push(pid);
                }
            }
        }
        out
    }

    /// Host objects of this instance still present: links (by alias, and by the names derived
    /// from every uid seen), netns, cgroups, snapshot trees, container dirs, shims. Empty when
    /// nothing leaked.
    pub fn host_leftovers(&self) -> Vec<String> {
        use tend::net::names::{bridge_name, host_veth_name};
        let inst = self.instance();
        let named: std::collections::HashSet<String> = self
            .seen_uids
            .iter()
            .flat_map(|u| {
                (0..16)
                    .map(|i| host_veth_name(u, i))
                    .chain([bridge_name(u)])
            })
            .collect();
        let mut left = Vec::new();
        for e in std::fs::read_dir("/sys/class/net").unwrap().flatten() {
            let alias = std::fs::read_to_string(e.path().join("ifalias")).unwrap_or_default();
            let name = e.file_name().to_string_lossy().into_owned();
            if alias.contains(&format!("tend:{inst}:")) || named.contains(&name) {
                left.push(format!("link {name:?} ({})", alias.trim()));
            }
        }
        for e in std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with(&format!("tend-{inst}-")) {
                left.push(format!("netns {n}"));
            }
        }
        left.extend(cgroups(&inst).into_iter().map(|p| format!("cgroup {p}")));
        for sub in [
            "snapshots/states",
            "snapshots/sandboxes",
            "btrfs/states",
            "btrfs/sandboxes",
            "containers",
        ] {
            if let Ok(rd) = std::fs::read_dir(self.path().join(sub)) {
                for e in rd.flatten() {
                    left.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
                }
            }
        }
        for (uid, pids) in self.shims() {
            left.push(format!("shim {uid} {pids:?}"));
        }
        for id in docker_containers(&inst) {
            left.push(format!("docker container {id}"));
        }
        left
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

/// Ids of the Docker containers labelled with `instance`, running or not.
pub fn docker_containers(instance: &str) -> std::collections::BTreeSet<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter"])
        .arg(format!("label=dev.tend.instance={instance}"))
        .output()
        .expect("docker (docker.io) is installed by deploy/setup-host.sh");
    assert!(
        out.status.success(),
        "docker ps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Every tend cgroup of `instance` in any hierarchy (`<hierarchy>/tend/<instance>-*`: each v1
/// controller and the unified mount of a hybrid host, or the one tree of a v2 host), as paths.
pub fn cgroups(instance: &str) -> Vec<String> {
    tend::cgroup::find_groups(Path::new("/sys/fs/cgroup"), &format!("{instance}-"))
        .unwrap()
        .into_iter()
        .map(|p| p.display().to_string())
        .collect()
}

/// The Ready condition's status of a stored object ("True", "False", "Unknown" or "").
pub fn ready(o: &AnyObject) -> &str {
    o.status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
}

/// The Ready condition's reason and message, for messages.
pub fn ready_reason(o: &AnyObject) -> String {
    o.status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| format!("{} {}", c["reason"], c["message"]))
        .unwrap_or_default()
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// CPU time (user + system) of a process in clock ticks, from `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = s.rsplit(')').next().unwrap();
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 0; utime and stime are fields 11 and 12.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.teardown == Teardown::ThroughDaemon {
            if self.child.is_none() {
                let _ = self.try_spawn(); // also when the test panicked: the sweep below remains
            }
            if self.child.is_some() {
                for kind in ["container", "sandbox", "state", "network"] {
                    let _ = self.tend(&["delete", kind, "--all", "--wait", "--timeout", "60"]);
                }
            }
            if let Some(mut c) = self.child.take() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                let _ = c.wait();
            }
        }
        self.kill9();
        if let Some(rt) = self.rt.get() {
            let _in_runtime = rt.enter();
            drop(self.store.take());
        }
        super::sweep::instance_leftovers(self.path());
    }
}
