//! A real registry for image tests: Debian's `docker-registry` (the CNCF distribution
//! registry) as a child of the test on 127.0.0.1 and a free port, with its own config and
//! storage in a temp dir, optionally behind htpasswd basic auth; killed by PID on drop. Images
//! are built and pushed with the Docker CLI under a `--config` dir of the test's own, so
//! `docker login` never touches the host's credentials.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
    /// `docker --config` dir for this registry's logins.
    pub docker_config: PathBuf,
    /// Local Docker tags and image ids made for this registry, removed on drop.
    tags: Vec<String>,
}

/// Fails the test with a reason when a tool the suite needs is missing.
pub fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} not found: install the Debian package {package} (deploy/setup-host.sh does)"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Registry {
    /// Starts a registry; with `basic = Some((user, password))`, behind htpasswd (bcrypt).
    pub fn start(basic: Option<(&str, &str)>) -> Self {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "the image suite needs root (btrfs, namespaces, dockerd)"
        );
        require("docker-registry", "docker-registry");
        require("docker", "docker.io");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: tend-test\n",
            dir.path().join("data").display()
        );
        if let Some((user, pass)) = basic {
            require("htpasswd", "apache2-utils");
            let file = dir.path().join("htpasswd");
            run(Command::new("htpasswd")
                .args(["-Bbc"])
                .arg(&file)
                .args([user, pass]));
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: tend-test\n    path: {}\n",
                file.display()
            ));
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let docker_config = dir.path().join("docker-config");
        std::fs::create_dir_all(&docker_config).unwrap();
        let mut r = Registry {
            dir,
            port,
            child,
            docker_config,
            tags: Vec::new(),
        };
        r.wait_up();
        if let Some((user, pass)) = basic {
            r.docker(&["login", &r.host(), "-u", user, "-p", pass]);
        }
        r
    }

    fn wait_up(&mut self) {
        let deadline = Instant::now() + super::scaled(Duration::from_secs(20));
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("docker-registry exited ({st}): {}", self.log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "registry not up: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The Docker CLI with this registry's credentials dir.
    pub fn docker(&self, args: &[&str]) -> String {
        run(Command::new("docker")
            .arg("--config")
            .arg(&self.docker_config)
            .args(args))
    }

    /// Builds `context` (a dir with a Dockerfile) as `127.0.0.1:PORT/repo`, pushes it, and
    /// returns the pushed manifest digest.
    pub fn build_push(&mut self, context: &Path, repo: &str) -> String {
        let tag = format!("{}/{repo}", self.host());
        self.tags.push(tag.clone());
        let mut c = Command::new("docker");
        c.arg("--config")
            .arg(&self.docker_config)
            .args(["build", "-q", "-t", &tag])
            .arg(context)
            .env("DOCKER_BUILDKIT", "0");
        // The id too: a tag pushed again leaves the first image untagged.
        self.tags.push(run(&mut c).trim().to_string());
        let out = self.docker(&["push", &tag]);
        out.split_whitespace()
            .skip_while(|w| *w != "digest:")
            .nth(1)
            .unwrap_or_else(|| panic!("no digest in push output: {out}"))
            .to_string()
    }

    /// The largest blob in the registry's storage: its digest and its data file.
    pub fn largest_blob(&self) -> (String, PathBuf) {
        let root = self.dir.path().join("data/docker/registry/v2/blobs/sha256");
        let mut best: Option<(u64, String, PathBuf)> = None;
        for prefix in std::fs::read_dir(&root).unwrap().flatten() {
            for blob in std::fs::read_dir(prefix.path()).unwrap().flatten() {
                let data = blob.path().join("data");
                let len = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
                if best.as_ref().is_none_or(|b| len > b.0) {
                    let hex = blob.file_name().to_string_lossy().into_owned();
                    best = Some((len, format!("sha256:{hex}"), data));
                }
            }
        }
        let (_, digest, data) = best.expect("the registry holds no blob");
        (digest, data)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Tags by force, ids without: an id another test still tags (the same build) stays.
        for t in &self.tags {
            let force = if t.starts_with("sha256:") {
                "--no-prune=false"
            } else {
                "-f"
            };
            let _ = Command::new("docker")
                .args(["rmi", force, t])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A Docker build context making a 4-layer image from the busybox rootfs: a file and a dir
/// deleted by a later layer (a whiteout and an opaque dir), a hard link, symlinks pointing out
/// of the tree, and a config with Entrypoint, Cmd, Env, WorkingDir and User.
pub fn test_image_context(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let root = super::fixtures::busybox_rootfs(
        &ctx,
        &["mkdir", "rm", "ln", "id", "env", "pwd", "chown", "chmod"],
    );
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(
        ctx.join("app.sh"),
        "#!/bin/sh\necho \"uid=$(id -u) gid=$(id -g) greeting=$GREETING mode=$MODE pwd=$(pwd) args=$*\"\nexec sleep 3600\n",
    )
    .unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        r#"FROM scratch
COPY rootfs/ /
RUN mkdir -p /data/sub /srv && echo old > /data/old && echo x > /data/sub/x \
 && echo motd > /etc/motd && echo keep > /etc/keep && chown 1234:1234 /srv && chmod 0750 /srv
RUN rm /etc/motd && rm -rf /data && mkdir /data && echo new > /data/new \
 && ln /data/new /data/new-hard && ln -s /etc/passwd /data/abs-link && ln -s ../../../../.. /data/up-link
COPY app.sh /usr/local/bin/app.sh
ENV GREETING=hello-from-image MODE=image
WORKDIR /srv
USER 1234:1234
ENTRYPOINT ["/bin/sh", "/usr/local/bin/app.sh"]
CMD ["default-arg"]
"#,
    )
    .unwrap();
    ctx
}
