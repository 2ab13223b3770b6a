//! The peers `tend bench container` measures in the same run, on the same busybox rootfs and
//! with the same limits (64 MiB, a quarter CPU, 64 pids), each labelled as exactly what ran:
//! `docker run -d` through the Docker CLI on its default bridge, `podman run -d` with crun and
//! with runc, and bare `runc`/`crun run -d` of an OCI bundle. A figure is the time from the
//! command's start until it returned with the container started. A peer that is not installed
//! (or cannot run here) prints one "skipped" line. Every container, image and state dir a peer
//! made is removed afterwards, by the name the bench gave it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{emit, note, Figure, TempDir};

/// The image deploy/docker-test-image.sh builds: /bin/busybox with its applet links.
pub(super) const DOCKER_IMAGE: &str = "tend-test/busybox:latest";
/// Give up on one command (a run, a removal) after this long.
const LIMIT: Duration = Duration::from_secs(60);

/// One peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// `docker run -d --rm` through the Docker CLI: dockerd, containerd, runc, default bridge.
    Docker,
    /// `podman run -d --rm --runtime <runtime>`: conmon, the runtime, the default network;
    /// storage in the bench's temp dir.
    Podman(&'static str),
    /// `<runtime> run -d` of an OCI bundle: no image, no network set-up, no daemon.
    Bare(&'static str),
}

/// Every peer, in the order they are measured.
pub const PEERS: [Peer; 5] = [
    Peer::Docker,
    Peer::Podman("crun"),
    Peer::Podman("runc"),
    Peer::Bare("crun"),
    Peer::Bare("runc"),
];

impl Peer {
    /// What the figure is called: what ran, not what it resembles.
    pub fn label(self) -> String {
        match self {
            Peer::Docker => "docker run -d (Docker CLI, default bridge)".into(),
            Peer::Podman(rt) => format!("podman run -d --runtime {rt} (default network)"),
            Peer::Bare(rt) => format!("{rt} run -d (OCI bundle, no network)"),
        }
    }

    /// The programs that must be on PATH.
    fn needs(self) -> Vec<&'static str> {
        match self {
            Peer::Docker => vec!["docker"],
            Peer::Podman(rt) => vec!["podman", rt],
            Peer::Bare(rt) => vec![rt],
        }
    }

    /// A short tag for names and files.
    fn tag(self) -> String {
        match self {
            Peer::Docker => "docker".into(),
            Peer::Podman(rt) => format!("podman-{rt}"),
            Peer::Bare(rt) => rt.into(),
        }
    }
}

/// Measures each installed peer `n` times and prints one figure per peer.
pub async fn run(n: usize) -> anyhow::Result<()> {
    let tmp = TempDir::new("peers")?;
    let rootfs = super::container::busybox_rootfs(&tmp.0)?;
    note(format_args!(
        "peers: {n} containers each, busybox rootfs {}",
        rootfs.display()
    ));
    for peer in PEERS {
        let fig = match measure(peer, n, &tmp.0, &rootfs).await {
            Ok(samples) => Figure::latency(peer.label(), samples),
            Err(why) => Figure::skipped(peer.label(), why),
        };
        emit(&fig);
    }
    Ok(())
}

/// One peer's run: set-up, `n` containers one after another (all left running until the end,
/// as tend's are), then removal of what it made whatever happened.
async fn measure(peer: Peer, n: usize, dir: &Path, rootfs: &Path) -> Result<Vec<Duration>, String> {
    if let Some(missing) = peer.needs().into_iter().find(|p| !on_path(p)) {
        return Err(format!("{missing} not installed"));
    }
    let p = Setup::new(peer, dir, rootfs).await?;
    let mut made = Vec::new();
    let mut samples = Vec::new();
    let mut result = Ok(());
    for i in 0..n {
        let name = format!("tend-bench-{}-{}-{i}", std::process::id(), peer.tag());
        made.push(name.clone());
        let t = Instant::now();
        if let Err(e) = p.exec(p.run_args(&name)).await {
            result = Err(format!("failed: {e}"));
            break;
        }
        samples.push(t.elapsed());
    }
    p.remove(&made).await;
    result.map(|()| samples)
}

/// What one peer needs: its command line, its private state, its image or bundle.
struct Setup {
    peer: Peer,
    /// The peer's own directory (podman storage, runtime state, bundle, log).
    dir: PathBuf,
    /// Podman's image name once imported.
    image: Option<String>,
}

impl Setup {
    async fn new(peer: Peer, dir: &Path, rootfs: &Path) -> Result<Self, String> {
        let dir = dir.join(peer.tag());
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut s = Self {
            peer,
            dir,
            image: None,
        };
        match peer {
            Peer::Docker => {
                let args = ["image", "inspect", "-f", "{{.Id}}", DOCKER_IMAGE];
                s.exec(args.map(String::from).to_vec()).await.map_err(|e| {
                    format!("{e} (is dockerd up? deploy/docker-test-image.sh builds the image)")
                })?;
            }
            Peer::Podman(_) => {
                let tarball = s.dir.join("rootfs.tar");
                write_tarball(rootfs, &tarball).map_err(|e| format!("rootfs tarball: {e}"))?;
                let image = format!("localhost/tend-bench-{}:latest", std::process::id());
                let mut args = s.podman();
                args.extend(["import", "--change", "ENV PATH=/bin"].map(String::from));
                args.extend([tarball.display().to_string(), image.clone()]);
                s.exec(args)
                    .await
                    .map_err(|e| format!("podman import: {e}"))?;
                s.image = Some(image);
            }
            Peer::Bare(_) => {
                let bundle = s.dir.join("bundle");
                std::fs::create_dir_all(&bundle).map_err(|e| e.to_string())?;
                let config =
                    serde_json::to_vec_pretty(&oci_config(rootfs)).map_err(|e| e.to_string())?;
                std::fs::write(bundle.join("config.json"), config).map_err(|e| e.to_string())?;
            }
        }
        Ok(s)
    }

    /// Podman's global flags: storage under the peer's dir; cgroupfs and an events file, as
    /// this host has no systemd.
    fn podman(&self) -> Vec<String> {
        let d = |s: &str| self.dir.join(s).display().to_string();
        vec![
            "--root".into(),
            d("storage"),
            "--runroot".into(),
            d("run"),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
            "--events-backend".into(),
            "file".into(),
        ]
    }

    /// The bare runtime's global flags: its state and log under the peer's dir.
    fn bare(&self) -> Vec<String> {
        let d = |s: &str| self.dir.join(s).display().to_string();
        vec![
            "--root".into(),
            d("state"),
            "--log".into(),
            d("runtime.log"),
        ]
    }

    /// The program and arguments that start container `name` detached.
    fn run_args(&self, name: &str) -> Vec<String> {
        let limits = ["--memory", "64m", "--cpus", "0.25", "--pids-limit", "64"];
        let mut a = match self.peer {
            Peer::Docker => vec!["run", "-d", "--rm", "--name", name],
            Peer::Podman(rt) => vec!["run", "-d", "--rm", "--runtime", rt, "--name", name],
            Peer::Bare(_) => vec![],
        }
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        match self.peer {
            Peer::Docker => {
                a.extend(limits.map(String::from));
                a.extend([DOCKER_IMAGE, "sleep", "3600"].map(String::from));
            }
            Peer::Podman(_) => {
                a.extend(limits.map(String::from));
                // Podman's default rlimits (1M open files) are refused on this VM; these are
                // the bare bundle's.
                for u in ["nofile=1024:1024", "nproc=1024:1024"] {
                    a.extend(["--ulimit".into(), u.into()]);
                }
                a.push(self.image.clone().unwrap_or_default());
                a.extend(["sleep", "3600"].map(String::from));
                a = [self.podman(), a].concat();
            }
            Peer::Bare(_) => {
                a = self.bare();
                let bundle = self.dir.join("bundle").display().to_string();
                a.extend([
                    "run".into(),
                    "-d".into(),
                    "--bundle".into(),
                    bundle,
                    name.into(),
                ]);
            }
        }
        a
    }

    /// Removes the containers in `names` (and podman's image); logs what it could not remove.
    async fn remove(&self, names: &[String]) {
        let strings = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut calls: Vec<Vec<String>> = Vec::new();
        match self.peer {
            Peer::Docker if !names.is_empty() => {
                calls.push([strings(&["rm", "-f"]), names.to_vec()].concat());
            }
            Peer::Docker => {}
            Peer::Podman(_) => {
                let rm = strings(&["rm", "-f", "-t", "0"]);
                calls.push([self.podman(), rm, names.to_vec()].concat());
                if let Some(image) = &self.image {
                    let rmi = vec!["rmi".into(), "-f".into(), image.clone()];
                    calls.push([self.podman(), rmi].concat());
                }
            }
            Peer::Bare(_) => {
                for n in names {
                    let del = vec!["delete".into(), "-f".into(), n.clone()];
                    calls.push([self.bare(), del].concat());
                }
            }
        }
        for args in calls {
            if let Err(e) = self.exec(args.clone()).await {
                // A name that never became a container is not an error worth a line.
                if !e.contains("no such") && !e.contains("does not exist") {
                    note(format_args!(
                        "{}: cleanup {}: {e}",
                        self.peer.tag(),
                        args.join(" ")
                    ));
                }
            }
        }
        if let Peer::Podman(_) = self.peer {
            // Podman's overlay driver bind-mounts its own directory onto itself and leaves it
            // mounted; the temp dir cannot be removed under it.
            let overlay = self.dir.join("storage/overlay");
            let detach = nix::mount::MntFlags::MNT_DETACH;
            let _ = crate::util::blocking(move || nix::mount::umount2(&overlay, detach)).await;
        }
    }

    /// Runs the peer's program with `args` and waits for it to exit; stdin and stdout are
    /// discarded and stderr goes to a file, so a detached container inheriting it cannot hold
    /// the call open. The error is the last line of stderr (or of the runtime's log).
    async fn exec(&self, args: Vec<String>) -> Result<(), String> {
        let prog = match self.peer {
            Peer::Docker => "docker",
            Peer::Podman(_) => "podman",
            Peer::Bare(rt) => rt,
        };
        let errs = self.dir.join("stderr");
        let file = std::fs::File::create(&errs).map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new(prog)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{prog}: {e}"))?;
        let status = match tokio::time::timeout(LIMIT, child.wait()).await {
            Ok(s) => s.map_err(|e| format!("{prog}: {e}"))?,
            Err(_) => return Err(format!("{prog} {}: no answer in {LIMIT:?}", args[0])),
        };
        if status.success() {
            return Ok(());
        }
        let last = |p: PathBuf| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            text.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        };
        let why = last(errs)
            .or_else(|| last(self.dir.join("runtime.log")))
            .unwrap_or_else(|| status.to_string());
        Err(format!("{prog}: {why}"))
    }
}

/// Whether `prog` is an executable file in a directory of PATH.
fn on_path(prog: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| {
        std::fs::metadata(d.join(prog))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// `rootfs` as a tar file (symlinks kept), for `podman import`.
fn write_tarball(rootfs: &Path, to: &Path) -> std::io::Result<()> {
    let mut b = tar::Builder::new(std::fs::File::create(to)?);
    b.follow_symlinks(false);
    b.append_dir_all(".", rootfs)?;
    b.into_inner()?.sync_all()
}

/// The bare runtimes' OCI config: `sleep 3600` on `rootfs` (read-only), new pid, net, ipc,
/// uts and mount namespaces, the same limits as the other peers, `runc spec`'s capabilities,
/// mounts and masked paths, and no terminal (so `run -d` needs no console socket).
pub fn oci_config(rootfs: &Path) -> serde_json::Value {
    let caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let ns: Vec<_> = ["pid", "network", "ipc", "uts", "mount"]
        .iter()
        .map(|t| serde_json::json!({"type": t}))
        .collect();
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sleep", "3600"],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
                {"type": "RLIMIT_NPROC", "hard": 1024, "soft": 1024}
            ],
            "noNewPrivileges": true
        },
        "root": {"path": rootfs, "readonly": true},
        "hostname": "bench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": {"limit": 64_i64 << 20},
                "cpu": {"quota": 25_000, "period": 100_000},
                "pids": {"limit": 64}
            },
            "namespaces": ns,
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_say_what_ran() {
        let labels: Vec<String> = PEERS.iter().map(|p| p.label()).collect();
        assert_eq!(labels[0], "docker run -d (Docker CLI, default bridge)");
        assert!(labels.iter().all(|l| !l.contains("create+start")));
        assert_eq!(
            Peer::Podman("crun").needs(),
            vec!["podman", "crun"],
            "podman with crun is skipped when crun is missing"
        );
    }

    #[test]
    fn the_bundle_runs_detached_without_a_terminal_on_the_given_rootfs() {
        let c = oci_config(Path::new("/tmp/r"));
        assert_eq!(c["process"]["terminal"], false);
        assert_eq!(c["root"]["path"], "/tmp/r");
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(c["linux"]["resources"]["pids"]["limit"], 64);
    }

    #[test]
    fn commands_carry_the_same_limits_and_the_bench_name() {
        let s = Setup {
            peer: Peer::Podman("runc"),
            dir: "/tmp/p".into(),
            image: Some("localhost/x:latest".into()),
        };
        let a = s.run_args("tend-bench-1-podman-runc-0").join(" ");
        assert!(
            a.starts_with("--root /tmp/p/storage --runroot /tmp/p/run"),
            "{a}"
        );
        assert!(a.contains("run -d --rm --runtime runc --name tend-bench-1-podman-runc-0"));
        assert!(
            a.contains("--memory 64m --cpus 0.25 --pids-limit 64"),
            "{a}"
        );
        assert!(a.ends_with("localhost/x:latest sleep 3600"), "{a}");
        let s = Setup {
            peer: Peer::Bare("crun"),
            dir: "/tmp/c".into(),
            image: None,
        };
        assert_eq!(
            s.run_args("n").join(" "),
            "--root /tmp/c/state --log /tmp/c/runtime.log run -d --bundle /tmp/c/bundle n"
        );
    }
}
