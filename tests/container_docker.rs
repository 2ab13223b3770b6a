//! The Container controller with `runtime: docker`, end to end: a real `tend serve` talking to
//! the real dockerd (through a unix-socket proxy the test owns where dockerd must "go away", and
//! a dockerd of the test's own that it stops and starts),
//! driven through the CLI and checked with the `docker` CLI.

mod common;

use common::daemon::Daemon;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
const IMAGE: &str = "tend-test/busybox:latest";

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn exists(id: &str) -> bool {
    docker(&["inspect", "-f", "{{.Id}}", id]).status.success()
}

fn build_image() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/docker-test-image.sh");
    assert!(Command::new(script).status().unwrap().success());
}

/// Docker containers the test made itself (foreign ones); removed on drop.
struct Made(Vec<String>);

impl Drop for Made {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = docker(&["rm", "-f", n]);
        }
    }
}

/// A daemon (resync 1 s) on its own state dir, talking to dockerd through `socket` when given.
fn docker_daemon(socket: Option<PathBuf>) -> Daemon {
    build_image();
    let args = ["--resync-seconds", "1", "--snapshot-backend", "copy"];
    match socket {
        Some(s) => Daemon::start_with_env(&args, &[("TEND_DOCKER_SOCKET", s.to_str().unwrap())]),
        None => Daemon::start(&args),
    }
}

/// Running on a container other than `not` (None: any).
fn running(d: &Daemon, name: &str, not: Option<&str>) -> Value {
    d.wait("container", name, "Running", |v| {
        v["status"]["phase"] == "Running"
            && ready(v) == "True"
            && v["status"]["containerID"]
                .as_str()
                .is_some_and(|id| Some(id) != not)
    })
}

fn ready(v: &Value) -> String {
    condition(v, "status")
}

fn condition(v: &Value, field: &str) -> String {
    v["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c[field].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn cid(v: &Value) -> String {
    v["status"]["containerID"].as_str().unwrap().to_string()
}

fn container(name: &str, image: &str, command: &str, extra: &str) -> String {
    format!(
        "apiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: {name}}}\nspec:\n  runtime: docker\n  image: {image}\n  command: [/bin/sh, -c, {command:?}]\n  stopGracePeriodSeconds: 1\n{extra}"
    )
}

#[test]
fn create_maps_fields_replaces_repairs_and_deletes() {
    if !common::privileged("create_maps_fields_replaces_repairs_and_deletes") {
        return;
    }
    let d = docker_daemon(None);
    let name = common::unique("dk");
    let extra = "  resources: {memory: 64Mi, cpu: 500m, pids: 64}\n  env: [{name: GREETING, value: hello}]\n  hostname: box1\n  workingDir: /tmp\n  user: {uid: 65534, gid: 65534}\n";
    d.apply(&container(&name, IMAGE, "exec sleep 3600", extra));
    let v = running(&d, &name, None);
    let (id, uid) = (cid(&v), v["metadata"]["uid"].as_str().unwrap().to_string());
    let fmt = "{{index .Config.Labels \"dev.tend.uid\"}} {{index .Config.Labels \"dev.tend.instance\"}} {{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}} {{.Config.Hostname}} {{.Config.WorkingDir}} {{.Config.User}} {{.HostConfig.RestartPolicy.Name}} {{.State.Pid}}";
    let got = docker_ok(&["inspect", "-f", fmt, &id]);
    let want = format!(
        "{uid} {} 67108864 500000000 64 box1 /tmp 65534:65534 no {}",
        d.instance(),
        v["status"]["pid"]
    );
    assert_eq!(got, want);
    assert!(docker_ok(&["exec", &id, "env"]).contains("GREETING=hello"));

    // Update: the container is replaced (new id; the old one is gone).
    d.apply(&container(
        &name,
        IMAGE,
        "exec sleep 3600",
        &extra.replace("hello", "again"),
    ));
    let v = running(&d, &name, Some(&id));
    let id2 = cid(&v);
    assert!(!exists(&id), "old container {id} still exists");
    assert!(docker_ok(&["exec", &id2, "env"]).contains("GREETING=again"));

    // `docker rm -f` behind tend's back: repaired.
    let t0 = Instant::now();
    docker_ok(&["rm", "-f", &id2]);
    let v = running(&d, &name, Some(&id2));
    eprintln!("rm -f → Running again in {:?}", t0.elapsed());
    let id3 = cid(&v);

    // `docker stop` behind tend's back: restarted (restartPolicy Always), counted.
    docker_ok(&["stop", "-t", "0", &id3]);
    let v = running(&d, &name, Some(&id3));
    assert!(v["status"]["restartCount"].as_u64().unwrap() >= 1, "{v:#}");
    assert_eq!(v["status"]["lastState"]["signal"], 9, "{v:#}");
    let id4 = cid(&v);

    // A limit changed behind tend's back (`docker update`): replaced on the next resync.
    docker_ok(&["update", "--memory", "32m", "--memory-swap", "32m", &id4]);
    let v = running(&d, &name, Some(&id4));
    let id5 = cid(&v);
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.HostConfig.Memory}}", &id5]),
        "67108864"
    );
    assert!(!exists(&id4));
    let id4 = id5;

    // Delete: the container goes.
    let out = d.tend(&["delete", "container", &name]);
    assert!(out.status.success());
    d.wait_for("container", &name, "deleted", |v| v.is_none());
    assert!(!exists(&id4), "container {id4} outlived its object");
}

#[test]
fn oom_is_reported_and_a_missing_image_is_a_condition() {
    if !common::privileged("oom_is_reported_and_a_missing_image_is_a_condition") {
        return;
    }
    let d = docker_daemon(None);
    let oom = common::unique("oom");
    d.apply(&container(
        &oom,
        IMAGE,
        "dd if=/dev/zero of=/dev/null bs=64M count=4",
        "  resources: {memory: 16Mi}\n  restartPolicy: Never\n",
    ));
    let v = d.wait("container", &oom, "Failed, OOMKilled", |v| {
        v["status"]["phase"] == "Failed" && v["status"]["lastState"]["reason"] == "OOMKilled"
    });
    assert_eq!(condition(&v, "reason"), "OOMKilled");
    assert_eq!(v["status"]["lastState"]["exitCode"], 137, "{v:#}");

    let missing = common::unique("nope");
    let image = format!("tend-test/{missing}:none");
    let t0 = Instant::now();
    d.apply(&container(&missing, &image, "exec sleep 3600", ""));
    let v = d.wait("container", &missing, "ImageNotFound", |v| {
        condition(v, "reason") == "ImageNotFound"
    });
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(ready(&v), "False");
    assert!(condition(&v, "message").contains(&image), "{v:#}");
}

#[test]
fn sigkilled_tend_adopts_by_label_sweeps_its_orphans_and_leaves_foreign_ones() {
    if !common::privileged(
        "sigkilled_tend_adopts_by_label_sweeps_its_orphans_and_leaves_foreign_ones",
    ) {
        return;
    }
    let mut d = docker_daemon(None);
    let names = [common::unique("ad"), common::unique("ad")];
    for n in &names {
        d.apply(&container(n, IMAGE, "exec sleep 3600", ""));
    }
    let before: Vec<(String, String)> = names
        .iter()
        .map(|n| {
            let id = cid(&running(&d, n, None));
            let started = docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", &id]);
            (id, started)
        })
        .collect();

    // Containers tend did not make for this daemon: an orphan of this instance (tend's labels,
    // no object), another instance's container, and an unlabelled one.
    let (orphan_uid, other_uid) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let orphan = format!("tend-{orphan_uid}");
    let other = format!("tend-{other_uid}");
    let plain = common::unique("foreign");
    let _made = Made(vec![orphan.clone(), other.clone(), plain.clone()]);
    let run = |name: &str, labels: &[String]| {
        let mut args = vec!["run", "-d", "--name", name];
        for l in labels {
            args.extend(["--label", l]);
        }
        args.extend([IMAGE, "sleep", "3600"]);
        docker_ok(&args);
    };
    run(
        &orphan,
        &[
            format!("dev.tend.uid={orphan_uid}"),
            format!("dev.tend.instance={}", d.instance()),
        ],
    );
    run(
        &other,
        &[
            format!("dev.tend.uid={other_uid}"),
            "dev.tend.instance=00000000".into(),
        ],
    );
    run(&plain, &[]);

    d.kill9();
    d.spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    while exists(&orphan) {
        assert!(Instant::now() < deadline, "orphan not swept\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let a few resyncs pass: adoption must keep the very same containers running.
    std::thread::sleep(Duration::from_secs(3));
    for (n, (id, started)) in names.iter().zip(&before) {
        let v = running(&d, n, None);
        assert_eq!(&cid(&v), id, "{n} was recreated");
        let now = docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.StartedAt}}",
            id,
        ]);
        assert_eq!(now, format!("true {started}"), "{n} was restarted");
    }
    assert!(exists(&other), "another instance's container was touched");
    assert!(exists(&plain), "an unlabelled container was touched");
}

/// A unix-socket proxy to the real dockerd, owned by the test: dropping it is "dockerd went
/// away" (connections cut, new ones refused) without disturbing the shared dockerd.
struct Proxy {
    rt: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    fn start(path: &Path) -> Proxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let _ = std::fs::remove_file(path);
        let listener = rt
            .block_on(async { tokio::net::UnixListener::bind(path) })
            .unwrap();
        rt.spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut up) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                    }
                });
            }
        });
        Proxy { rt: Some(rt) }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn unavailable(v: &Value) -> bool {
    ready(v) == "Unknown" && condition(v, "reason") == "RuntimeUnavailable"
}

#[test]
fn dockerd_away_is_runtime_unavailable_stalls_nothing_and_converges_when_back() {
    if !common::privileged(
        "dockerd_away_is_runtime_unavailable_stalls_nothing_and_converges_when_back",
    ) {
        return;
    }
    let sockdir = tempfile::tempdir().unwrap();
    let sock = sockdir.path().join("docker.sock");
    // tend starts with dockerd unreachable and stays healthy.
    let d = docker_daemon(Some(sock.clone()));
    let (dk, native) = (common::unique("dk"), common::unique("nat"));
    d.apply(&container(&dk, IMAGE, "exec sleep 3600", ""));
    d.wait("container", &dk, "RuntimeUnavailable", unavailable);
    // Native containers are not held up by the missing dockerd.
    let t0 = Instant::now();
    d.apply(&format!(
        "apiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: {native}}}\nspec:\n  command: [/bin/sleep, '3600']\n  stopGracePeriodSeconds: 0\n"
    ));
    d.wait("container", &native, "Running", |v| {
        v["status"]["phase"] == "Running"
    });
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // dockerd "comes up": the docker Container converges.
    let proxy = Proxy::start(&sock);
    let id = cid(&running(&d, &dk, None));

    // dockerd "goes away" while the container runs: Unknown, then back to the same container.
    drop(proxy);
    d.wait("container", &dk, "RuntimeUnavailable", unavailable);
    let _proxy = Proxy::start(&sock);
    let v = running(&d, &dk, None);
    assert_eq!(cid(&v), id, "the container was recreated");
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Running}}", &id]),
        "true"
    );

    for n in [&dk, &native] {
        assert!(d.tend(&["delete", "container", n]).status.success());
    }
    for n in [&dk, &native] {
        d.wait_for("container", n, "deleted", |v| v.is_none());
    }
    assert!(!exists(&id));
}

#[test]
fn a_docker_container_joins_tends_bridge_with_its_leased_address() {
    if !common::privileged("a_docker_container_joins_tends_bridge_with_its_leased_address") {
        return;
    }
    let d = docker_daemon(None);
    let (net, name) = (common::unique("net"), common::unique("dkn"));
    let second = 200 + (std::process::id() % 20);
    d.apply(&format!(
        "apiVersion: tend.dev/v1\nkind: Network\nmetadata: {{name: {net}}}\nspec: {{subnet: 10.{second}.77.0/24}}\n"
    ));
    d.apply(&container(
        &name,
        IMAGE,
        "exec sleep 3600",
        &format!("  networks: [{{name: {net}}}]\n"),
    ));
    let v = d.wait("container", &name, "Running with an address", |v| {
        v["status"]["phase"] == "Running" && v["status"]["networks"][0]["ip"].is_string()
    });
    let (id, ip) = (
        cid(&v),
        v["status"]["networks"][0]["ip"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    // The attacher puts its veth into the container's own namespace on the next reconcile.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let addrs = docker_ok(&["exec", &id, "ip", "-4", "addr"]);
        if addrs.contains(&format!("inet {ip}/24")) {
            break;
        }
        assert!(Instant::now() < deadline, "{addrs}\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let gw = format!("10.{second}.77.1");
    docker_ok(&["exec", &id, "ping", "-c", "1", "-W", "2", &gw]);

    assert!(d.tend(&["delete", "container", &name]).status.success());
    d.wait_for("container", &name, "deleted", |v| v.is_none());
    assert!(d.tend(&["delete", "network", &net]).status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.tend(&["get", "network", &net]).status.success() {
        assert!(Instant::now() < deadline, "network not deleted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes an image tag the test caused to exist.
struct ImageGuard(String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = docker(&["rmi", "-f", &self.0]);
        }
    }
}

#[test]
fn a_state_is_imported_as_an_image_once_per_generation() {
    if !common::privileged("a_state_is_imported_as_an_image_once_per_generation") {
        return;
    }
    let d = docker_daemon(None);
    // The source must lie outside tend's state dir.
    let src = tempfile::Builder::new()
        .prefix("tend-cd-src")
        .tempdir()
        .unwrap();
    let root = common::fixtures::busybox_rootfs(src.path(), &[]);
    std::fs::write(root.join("marker"), "from-a-state\n").unwrap();
    let (st, name) = (common::unique("st"), common::unique("dks"));
    d.apply(&format!(
        "apiVersion: tend.dev/v1\nkind: State\nmetadata: {{name: {st}}}\nspec:\n  source: {{directory: {}}}\n",
        root.display()
    ));
    let mut guard = ImageGuard(String::new());
    d.apply(&container(
        &name,
        &format!("{{state: {st}}}"),
        "exec /bin/sleep 3600",
        "",
    ));
    let v = running(&d, &name, None);
    let id = cid(&v);
    let image = docker_ok(&["inspect", "-f", "{{.Config.Image}}", &id]);
    guard.0 = image.clone();
    assert!(
        image.starts_with("tend-state/") && image.ends_with(":g1"),
        "{image}"
    );
    assert_eq!(
        docker_ok(&["exec", &id, "/bin/cat", "/marker"]),
        "from-a-state"
    );
    let created = docker_ok(&["image", "inspect", "-f", "{{.Id}}", &image]);
    // A restart does not import again: the same image.
    docker_ok(&["rm", "-f", &id]);
    let v = running(&d, &name, Some(&id));
    let again = docker_ok(&["inspect", "-f", "{{.Image}}", &cid(&v)]);
    assert_eq!(again, created);
    assert_eq!(
        docker_ok(&[
            "image",
            "inspect",
            "-f",
            "{{index .Config.Labels \"dev.tend.instance\"}}",
            &image
        ]),
        d.instance(),
        "the imported image carries the instance that owns it"
    );

    // The Container moves to another State: it is replaced from that State's image, and the
    // first image, used by nothing now, is removed.
    let st2 = common::unique("st2");
    let root2 = common::fixtures::busybox_rootfs(&src.path().join("v2"), &[]);
    std::fs::write(root2.join("marker"), "second\n").unwrap();
    d.apply(&format!(
        "apiVersion: tend.dev/v1\nkind: State\nmetadata: {{name: {st2}}}\nspec:\n  source: {{directory: {}}}\n",
        root2.display()
    ));
    d.apply(&container(
        &name,
        &format!("{{state: {st2}}}"),
        "exec /bin/sleep 3600",
        "",
    ));
    let v = d.wait("container", &name, "on the second State's image", |v| {
        v["status"]["phase"] == "Running"
            && v["status"]["containerID"].as_str().is_some_and(|c| {
                let out = docker(&["inspect", "-f", "{{.Config.Image}}", c]);
                out.status.success() && String::from_utf8_lossy(&out.stdout).trim() != image
            })
    });
    let id2 = cid(&v);
    let image2 = docker_ok(&["inspect", "-f", "{{.Config.Image}}", &id2]);
    guard.0 = image2.clone();
    assert_eq!(docker_ok(&["exec", &id2, "/bin/cat", "/marker"]), "second");
    assert!(
        !docker(&["image", "inspect", &image]).status.success(),
        "{image} is used by nothing and still there"
    );

    assert!(d.tend(&["delete", "container", &name]).status.success());
    d.wait_for("container", &name, "deleted", |v| v.is_none());
    // Deleting the last container on a State image removes the image (nothing leaks in dockerd).
    assert!(
        !docker(&["image", "inspect", &image2]).status.success(),
        "{image2} outlived the container made from it"
    );
}

#[test]
fn logs_and_exec_by_uid_through_the_runtime() {
    if !common::privileged("logs_and_exec_by_uid_through_the_runtime") {
        return;
    }
    let d = docker_daemon(None);
    let name = common::unique("dkl");
    d.apply(&container(
        &name,
        IMAGE,
        "echo hello-logs; echo oops >&2; exec sleep 3600",
        "",
    ));
    let v = running(&d, &name, None);
    let uid = v["metadata"]["uid"].as_str().unwrap().to_string();
    let instance = d.instance();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    tokio.block_on(async {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let store = tend_schema::store::SqliteStore::open(
            dir.path().join("t.db"),
            tend_schema::store::OpenOptions::default(),
        )
        .await
        .unwrap();
        let ctx = tend_controllers::Runtime::new(std::sync::Arc::new(store), Default::default())
            .context();
        let rt = tend::runtime_docker::DockerRuntime::new(None, &instance, ctx).unwrap();
        use tend_controllers::container::{ContainerRuntime, LogQuery};
        let out = rt
            .exec_collected(&uid, &["hostname".to_string()], Default::default())
            .await
            .unwrap();
        assert_eq!(out.exit_code, 0);
        let chunks: Vec<Vec<u8>> = rt
            .logs(&uid, &LogQuery::default())
            .await
            .unwrap()
            .map(|c| c.unwrap())
            .collect()
            .await;
        let text = String::from_utf8(chunks.concat()).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        // stdout and stderr are separate streams: no order between them.
        lines.sort();
        assert_eq!(lines, ["hello-logs", "oops"]);
        // Timestamps as the native runtime prints them: `<time> <stream> <text>`.
        let q = LogQuery {
            timestamps: true,
            ..Default::default()
        };
        let chunks: Vec<Vec<u8>> = rt
            .logs(&uid, &q)
            .await
            .unwrap()
            .map(|c| c.unwrap())
            .collect()
            .await;
        let text = String::from_utf8(chunks.concat()).unwrap();
        let mut lines: Vec<(String, String)> = text
            .lines()
            .map(|l| {
                let mut p = l.splitn(3, ' ');
                let time = p.next().unwrap();
                assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{l}");
                (p.next().unwrap().to_string(), p.next().unwrap().to_string())
            })
            .collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                ("stderr".to_string(), "oops".to_string()),
                ("stdout".to_string(), "hello-logs".to_string())
            ]
        );
        // Streamed exec: binary stdin comes back through cat; stderr and the exit code apart.
        use tend_controllers::container::ExecEvent;
        let mut s = rt.exec(&uid, &["cat".to_string()], true).await.unwrap();
        let all: Vec<u8> = (0..=255u8).cycle().take(64 << 10).collect();
        s.stdin.take().unwrap().send(all.clone()).await.unwrap();
        let (mut out, mut code) = (Vec::new(), None);
        while let Some(ev) = s.events.next().await {
            match ev.unwrap() {
                ExecEvent::Stdout(b) => out.extend(b),
                ExecEvent::Stderr(b) => panic!("stderr {b:?}"),
                ExecEvent::Exit(c) => code = Some(c),
            }
        }
        assert_eq!(code, Some(0));
        assert!(out == all, "binary bytes changed through docker exec");
        let argv = ["sh", "-c", "echo out; echo err >&2; exit 7"].map(String::from);
        let s = rt.exec(&uid, &argv, false).await.unwrap();
        let evs: Vec<ExecEvent> = s.events.map(|e| e.unwrap()).collect().await;
        assert!(
            evs.contains(&ExecEvent::Stdout(b"out\n".to_vec())),
            "{evs:?}"
        );
        assert!(
            evs.contains(&ExecEvent::Stderr(b"err\n".to_vec())),
            "{evs:?}"
        );
        assert_eq!(evs.last(), Some(&ExecEvent::Exit(7)));
        // Another instance's runtime does not see it.
        let other = tend::runtime_docker::DockerRuntime::new(None, "00000000", {
            let s = tend_schema::store::SqliteStore::open(
                dir.path().join("u.db"),
                tend_schema::store::OpenOptions::default(),
            )
            .await
            .unwrap();
            tend_controllers::Runtime::new(std::sync::Arc::new(s), Default::default()).context()
        })
        .unwrap();
        assert!(other
            .exec(&uid, &["true".to_string()], false)
            .await
            .is_err());
    });
    // Through the CLI and the API: --since keeps only what came after; --previous says why not.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = d.tend(&["exec", &name, "--", "sh", "-c", "echo late > /proc/1/fd/1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.tend(&["logs", &name, "--since", "2s", "--timestamps"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.trim_end().ends_with(" stdout late"), "{text}");
    let out = d.tend(&["logs", &name, "--previous"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("restart replaces"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A dockerd of the test's own: socket, data and exec roots in a temp dir, its own containerd
/// namespace, its own bridge and no iptables rules, so it touches nothing of the host's dockerd.
/// (With `--bridge=none` dockerd deletes the host's `docker0` at start: it is given a bridge of
/// the test's instead.) Started and stopped by PID; the real daemon going away and coming back.
struct OwnDockerd {
    dir: tempfile::TempDir,
    ns: String,
    bridge: String,
    child: Option<std::process::Child>,
}

impl OwnDockerd {
    fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("tdkd").tempdir().unwrap();
        let bridge = common::unique("tdkb");
        let out = Command::new("ip")
            .args(["link", "add", &bridge, "type", "bridge"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip link add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut d = OwnDockerd {
            dir,
            ns: common::unique("tend-test-dockerd"),
            bridge,
            child: None,
        };
        d.start();
        d
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn cli(&self, args: &[&str]) -> Output {
        let host = format!("unix://{}", self.sock().display());
        Command::new("docker")
            .args(["-H", &host])
            .args(args)
            .output()
            .unwrap()
    }

    /// Starts dockerd and waits until it answers.
    fn start(&mut self) {
        let p = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p.join("dockerd.log"))
            .unwrap();
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(format!("unix://{}", self.sock().display()))
            .arg("--data-root")
            .arg(p.join("data"))
            .arg("--exec-root")
            .arg(p.join("exec"))
            .arg("--pidfile")
            .arg(p.join("docker.pid"))
            .args([
                "--bridge",
                &self.bridge,
                "--iptables=false",
                "--ip6tables=false",
            ])
            .args(["--containerd-namespace", &self.ns])
            .args([
                "--containerd-plugins-namespace",
                &format!("{}-plugins", self.ns),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd (docker.io) is installed by deploy/setup-host.sh");
        self.child = Some(child);
        let deadline = Instant::now() + common::scaled(Duration::from_secs(30));
        while !self.cli(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "own dockerd did not start: {}",
                std::fs::read_to_string(p.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, as `systemctl stop docker` does, and wait for it to exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }
}

impl Drop for OwnDockerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Whatever the test left running goes before the daemon does.
            if let Ok(out) = String::from_utf8(self.cli(&["ps", "-aq"]).stdout) {
                for id in out.split_whitespace() {
                    let _ = self.cli(&["rm", "-f", id]);
                }
            }
        }
        self.stop();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

#[test]
fn a_real_dockerd_stopped_and_started_again_gets_its_container_back() {
    if !common::privileged("a_real_dockerd_stopped_and_started_again_gets_its_container_back") {
        return;
    }
    let mut dockerd = OwnDockerd::new();
    let d = Daemon::start_with_env(
        &["--resync-seconds", "1", "--snapshot-backend", "copy"],
        &[("TEND_DOCKER_SOCKET", dockerd.sock().to_str().unwrap())],
    );
    // The image comes from a State: this dockerd starts empty.
    let src = tempfile::Builder::new()
        .prefix("tend-cd-src")
        .tempdir()
        .unwrap();
    let root = common::fixtures::busybox_rootfs(src.path(), &[]);
    let (st, name) = (common::unique("st"), common::unique("dkr"));
    d.apply(&format!(
        "apiVersion: tend.dev/v1\nkind: State\nmetadata: {{name: {st}}}\nspec:\n  source: {{directory: {}}}\n",
        root.display()
    ));
    d.apply(&container(
        &name,
        &format!("{{state: {st}}}"),
        "exec /bin/sleep 3600",
        "",
    ));
    let id = cid(&running(&d, &name, None));

    // dockerd stops (its containers stop with it): tend says the runtime is unavailable.
    dockerd.stop();
    d.wait("container", &name, "RuntimeUnavailable", unavailable);
    // It comes back: tend starts the workload again, and dockerd says it runs.
    dockerd.start();
    let v = running(&d, &name, None);
    let inspect = dockerd.cli(&["inspect", "-f", "{{.State.Running}}", &cid(&v)]);
    assert_eq!(String::from_utf8_lossy(&inspect.stdout).trim(), "true");
    eprintln!(
        "container {} before the stop, {} after (restartCount {})",
        &id[..12],
        &cid(&v)[..12],
        v["status"]["restartCount"]
    );

    assert!(d.tend(&["delete", "container", &name]).status.success());
    d.wait_for("container", &name, "deleted", |v| v.is_none());
    let left = dockerd.cli(&["ps", "-aq"]);
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "",
        "containers left"
    );
}

#[test]
fn probes_are_run_by_tend_for_a_docker_container() {
    if !common::privileged("probes_are_run_by_tend_for_a_docker_container") {
        return;
    }
    let d = docker_daemon(None);
    let name = common::unique("dkp");
    // httpd on the container's own loopback; readiness over HTTP inside its namespace, liveness
    // an exec of `cat` on a file the test deletes.
    let script = "mkdir -p /tmp/www; echo ok > /tmp/www/healthz; touch /tmp/healthy; exec httpd -f -p 127.0.0.1:8080 -h /tmp/www";
    let probes = "  probes:\n    readiness: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}\n    liveness: {exec: {command: [cat, /tmp/healthy]}, periodSeconds: 1, failureThreshold: 2}\n";
    d.apply(&container(&name, IMAGE, script, probes));
    let v = d.wait_ready("container", &name, Duration::from_secs(30));
    assert_eq!(v["status"]["restartCount"], 0);
    docker_ok(&["exec", &cid(&v), "sh", "-c", "rm /tmp/healthy"]);
    let v = d.wait("container", &name, "restarted by liveness", |v| {
        v["status"]["restartCount"] == 1
    });
    assert_eq!(v["status"]["lastState"]["reason"], "Unhealthy", "{v:#}");
    let events = d.tend(&["get", "events"]);
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(
        events
            .lines()
            .any(|l| l.contains("Unhealthy") && l.contains("liveness probe failed")),
        "{events}"
    );
    d.wait_ready("container", &name, Duration::from_secs(30));
}
