//! Image States against a real registry (Debian's `docker-registry` on 127.0.0.1) and images
//! built and pushed with the Docker CLI: the pulled tree equals `docker export` of the same
//! image, its config feeds a Container, tampering, a missing tag, wrong credentials and a kill
//! mid-pull end the way a user expects, and `docker save` output imports the same tree.

mod common;

use common::daemon::{condition, Daemon};
use common::registry::{test_image_context, Registry};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PULL: Duration = Duration::from_secs(60);

/// What the comparison looks at for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir {
        mode: u32,
        uid: u64,
        gid: u64,
    },
    File {
        mode: u32,
        uid: u64,
        gid: u64,
        sha: String,
    },
    Link {
        target: String,
        uid: u64,
        gid: u64,
    },
}

fn sha(r: &mut dyn Read) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Files Docker itself adds to every exported container; not part of the image.
fn docker_made(p: &str) -> bool {
    matches!(
        p,
        ".dockerenv" | "etc/hosts" | "etc/hostname" | "etc/resolv.conf" | "etc/mtab"
    ) || ["dev/", "proc/", "sys/"].iter().any(|d| p.starts_with(d))
}

/// `docker create` + `docker export` of `image`, as path → node.
fn docker_export(image: &str) -> BTreeMap<String, Node> {
    let id = String::from_utf8(
        Command::new("docker")
            .args(["create", image])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    assert!(!id.is_empty(), "docker create {image} failed");
    let out = Command::new("docker")
        .args(["export", &id])
        .output()
        .unwrap();
    let _ = Command::new("docker").args(["rm", "-f", &id]).output();
    assert!(out.status.success());
    let mut ar = tar::Archive::new(&out.stdout[..]);
    let mut map = BTreeMap::new();
    let mut hard = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let p = p.trim_start_matches("./").to_string();
        if p.is_empty() || p == "." || docker_made(&p) {
            continue;
        }
        let h = e.header().clone();
        let (mode, uid, gid) = (
            h.mode().unwrap() & 0o7777,
            h.uid().unwrap(),
            h.gid().unwrap(),
        );
        let node = match h.entry_type() {
            tar::EntryType::Directory => Node::Dir { mode, uid, gid },
            tar::EntryType::Symlink => Node::Link {
                target: e
                    .link_name()
                    .unwrap()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                uid,
                gid,
            },
            tar::EntryType::Link => {
                let t = e
                    .link_name()
                    .unwrap()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                hard.push((p, t));
                continue;
            }
            _ => Node::File {
                mode,
                uid,
                gid,
                sha: sha(&mut e),
            },
        };
        map.insert(p, node);
    }
    for (p, t) in hard {
        let n = map[t.trim_start_matches('/')].clone();
        map.insert(p, n);
    }
    map
}

/// Walks a tree on disk (never following symlinks), as path → node.
fn walk(root: &Path) -> BTreeMap<String, Node> {
    let mut map = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let (mode, uid, gid) = (m.mode() & 0o7777, m.uid() as u64, m.gid() as u64);
            let node = if m.file_type().is_symlink() {
                Node::Link {
                    target: std::fs::read_link(&p)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                    uid,
                    gid,
                }
            } else if m.is_dir() {
                stack.push(p.clone());
                Node::Dir { mode, uid, gid }
            } else {
                Node::File {
                    mode,
                    uid,
                    gid,
                    sha: sha(&mut std::fs::File::open(&p).unwrap()),
                }
            };
            if !docker_made(&rel) {
                map.insert(rel, node);
            }
        }
    }
    map
}

/// Differences between two trees, one line each (empty when equal).
fn diff(want: &BTreeMap<String, Node>, got: &BTreeMap<String, Node>) -> Vec<String> {
    let mut out = Vec::new();
    for (p, n) in want {
        match got.get(p) {
            None => out.push(format!("missing {p}: {n:?}")),
            Some(g) if g != n => out.push(format!("differs {p}: want {n:?}, got {g:?}")),
            _ => {}
        }
    }
    for p in got.keys().filter(|p| !want.contains_key(*p)) {
        out.push(format!("extra {p}: {:?}", got[p]));
    }
    out
}

fn state_yaml(name: &str, source: &str) -> String {
    format!("apiVersion: tend.dev/v1\nkind: State\nmetadata: {{name: {name}}}\nspec:\n  source: {source}\n")
}

fn status(v: &Value) -> &Value {
    &v["status"]
}

/// Waits until the State's Ready condition is False with a reason (a positive failure signal).
fn wait_failed(d: &Daemon, name: &str) -> Value {
    d.wait("state", name, "Ready=False with a reason", |v| {
        let c = v["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        c.iter().any(|c| {
            c["type"] == "Ready"
                && c["status"] == "False"
                && c["reason"] != "Pending"
                && c["reason"].as_str().is_some_and(|r| r != "Importing")
        }) && v["status"]["phase"] == "Failed"
    })
}

fn reason(v: &Value) -> (String, String) {
    let r = reason_of(v);
    eprintln!("Ready reason {}: {}", r.0, r.1);
    r
}

fn reason_of(v: &Value) -> (String, String) {
    let c = v["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    (
        c["reason"].as_str().unwrap().into(),
        c["message"].as_str().unwrap_or("").into(),
    )
}

/// Neither a finished tree nor a temp one for the State's uid, and no half-downloaded blob,
/// anywhere in tend's layout (walked 4 levels deep, symlinks not followed).
fn no_content(d: &Daemon, uid: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![(d.path().to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            if name == uid
                || name.starts_with(&format!(".tmp-{uid}"))
                || dir.ends_with("images/tmp")
            {
                found.push(p.display().to_string());
            }
            if depth < 4 && e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push((p, depth + 1));
            }
        }
    }
    found
}

#[test]
fn a_pulled_image_equals_docker_export_file_by_file_and_its_status_says_what_was_unpacked() {
    let mut reg = Registry::start(None);
    let t = tempfile::tempdir().unwrap();
    let digest = reg.build_push(&test_image_context(t.path()), "test/app:1");
    let d = Daemon::start(&[]);
    let image = format!("{}/test/app:1", reg.host());
    d.apply(&state_yaml("app", &format!("{{image: \"{image}\"}}")));
    let v = d.wait_ready("state", "app", PULL);
    let st = status(&v);
    assert_eq!(st["image"]["digest"], digest.as_str(), "{st:#}");
    assert_eq!(st["image"]["reference"], image.as_str());
    assert_eq!(st["image"]["layers"], 4);
    let cfg = &st["image"]["config"];
    assert_eq!(
        cfg["entrypoint"],
        serde_json::json!(["/bin/sh", "/usr/local/bin/app.sh"])
    );
    assert_eq!(cfg["cmd"], serde_json::json!(["default-arg"]));
    assert_eq!(
        (cfg["workingDir"].as_str(), cfg["user"].as_str()),
        (Some("/srv"), Some("1234:1234"))
    );
    assert!(cfg["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "GREETING=hello-from-image"));
    assert_eq!(reason(&v).0, "Pulled");

    let tree = PathBuf::from(st["path"].as_str().unwrap());
    let want = docker_export(&image);
    let got = walk(&tree);
    // The layers' own work must be visible, or the comparison proves nothing.
    assert!(want.contains_key("data/new") && !want.contains_key("data/old"));
    assert!(
        !got.contains_key("etc/motd") && !got.contains_key("data/sub"),
        "whiteout / opaque dir not applied"
    );
    assert_eq!(
        std::fs::metadata(tree.join("data/new")).unwrap().ino(),
        std::fs::metadata(tree.join("data/new-hard")).unwrap().ino()
    );
    let d_ = diff(&want, &got);
    assert!(
        d_.is_empty(),
        "tree differs from docker export:\n{}",
        d_.join("\n")
    );
}

#[test]
fn a_container_from_the_image_state_runs_its_entrypoint_with_image_env_user_and_workdir() {
    let mut reg = Registry::start(None);
    let t = tempfile::tempdir().unwrap();
    reg.build_push(&test_image_context(t.path()), "test/app:1");
    let d = Daemon::start(&[]);
    let image = format!("{}/test/app:1", reg.host());
    d.apply(&format!(
        "{}---\napiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: web}}\nspec:\n  rootfs: {{state: app}}\n  args: [from-spec]\n  env: [{{name: MODE, value: spec}}]\n---\napiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: plain}}\nspec:\n  rootfs: {{state: app}}\n---\napiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: indocker}}\nspec:\n  runtime: docker\n  image: {{state: app}}\n",
        state_yaml("app", &format!("{{image: \"{image}\"}}"))
    ));
    let uid = d.wait_ready("state", "app", PULL)["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    for (name, want) in [
        (
            "web",
            "uid=1234 gid=1234 greeting=hello-from-image mode=spec pwd=/srv args=from-spec",
        ),
        (
            "plain",
            "uid=1234 gid=1234 greeting=hello-from-image mode=image pwd=/srv args=default-arg",
        ),
        // The docker runtime gets the same defaults (Docker sees an imported tree, no config).
        (
            "indocker",
            "uid=1234 gid=1234 greeting=hello-from-image mode=image pwd=/srv args=default-arg",
        ),
    ] {
        d.wait("container", name, "Running", |v| {
            v["status"]["phase"] == "Running"
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let out = d.tend(&["logs", name]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.contains(want) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: logs {text:?} lack {want:?}\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The docker runtime imported the State as an image and keeps it: remove it after its user.
    drop(d);
    let image = format!("tend-state/{uid}:g1");
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
}

#[test]
fn a_tampered_blob_fails_with_digest_mismatch_and_leaves_no_state_content() {
    let mut reg = Registry::start(None);
    let t = tempfile::tempdir().unwrap();
    reg.build_push(&test_image_context(t.path()), "test/app:1");
    // The largest blob is the busybox layer: flip bytes in the middle, keep the length.
    let (layer, f) = reg.largest_blob();
    let mut bytes = std::fs::read(&f).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0xff;
    }
    std::fs::write(&f, &bytes).unwrap();

    let d = Daemon::start(&[]);
    d.apply(&state_yaml(
        "app",
        &format!("{{image: \"{}/test/app:1\"}}", reg.host()),
    ));
    let v = wait_failed(&d, "app");
    let (r, msg) = reason(&v);
    assert_eq!(r, "DigestMismatch", "{msg}");
    assert!(msg.contains(&layer), "message names the blob: {msg}");
    assert!(
        v["status"]["path"].is_null() && v["status"]["image"].is_null(),
        "{v:#}"
    );
    let uid = v["metadata"]["uid"].as_str().unwrap();
    let left = no_content(&d, uid);
    assert!(left.is_empty(), "content left: {left:?}");
}

#[test]
fn a_missing_tag_fails_with_image_pull_failed_and_the_registry_s_message() {
    let reg = Registry::start(None);
    let d = Daemon::start(&[]);
    d.apply(&state_yaml(
        "gone",
        &format!("{{image: \"{}/test/nothing:nope\"}}", reg.host()),
    ));
    let v = wait_failed(&d, "gone");
    let (r, msg) = reason(&v);
    assert_eq!(r, "ImagePullFailed", "{msg}");
    // The registry's own words (distribution: NAME_UNKNOWN / MANIFEST_UNKNOWN).
    assert!(msg.contains("UNKNOWN") && msg.contains("unknown"), "{msg}");
}

#[test]
fn wrong_registry_credentials_are_refused_and_say_so_and_right_ones_pull() {
    let mut reg = Registry::start(Some(("tester", "right-pass")));
    let t = tempfile::tempdir().unwrap();
    let digest = reg.build_push(&test_image_context(t.path()), "test/app:1");
    let auth = |user: &str, pass: &str| {
        let f = t.path().join(format!("auth-{pass}.json"));
        let b64 = base64_encode(format!("{user}:{pass}").as_bytes());
        std::fs::write(
            &f,
            format!(
                "{{\"auths\": {{\"{}\": {{\"auth\": \"{b64}\"}}}}}}",
                reg.host()
            ),
        )
        .unwrap();
        f
    };
    let wrong = auth("tester", "wrong-pass");
    let d = Daemon::start(&["--registry-auth", wrong.to_str().unwrap()]);
    d.apply(&state_yaml(
        "app",
        &format!("{{image: \"{}/test/app:1\"}}", reg.host()),
    ));
    let v = wait_failed(&d, "app");
    let (r, msg) = reason(&v);
    assert_eq!(r, "ImagePullFailed", "{msg}");
    assert!(
        msg.contains("authentication failed") && msg.contains("\"tester\""),
        "{msg}"
    );
    assert!(
        !msg.contains("wrong-pass"),
        "the password must not be shown: {msg}"
    );
    drop(d);

    let right = auth("tester", "right-pass");
    let d = Daemon::start(&["--registry-auth", right.to_str().unwrap()]);
    d.apply(&state_yaml(
        "app",
        &format!("{{image: \"{}/test/app:1\"}}", reg.host()),
    ));
    let v = d.wait_ready("state", "app", PULL);
    assert_eq!(v["status"]["image"]["digest"], digest.as_str());
}

fn base64_encode(b: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn kill_9_mid_pull_then_restart_ends_ready_with_the_right_digest_and_no_temp_left() {
    let mut reg = Registry::start(None);
    let t = tempfile::tempdir().unwrap();
    let digest = reg.build_push(&test_image_context(t.path()), "test/app:1");
    let mut d = Daemon::start(&["--failpoints"]);
    // Every stored blob pauses the pull: the kill lands between two blobs.
    std::fs::write(d.path().join("failpoints"), "image.blob=sleep(3000)\n").unwrap();
    d.apply(&state_yaml(
        "app",
        &format!("{{image: \"{}/test/app:1\"}}", reg.host()),
    ));
    let blobs = d.path().join("images/blobs/sha256");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&blobs).map(|r| r.count()).unwrap_or(0) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no blob stored: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let v = d.get("state", "app").unwrap();
    assert_ne!(
        condition(&v, "Ready"),
        "True",
        "pull ended before the kill: {v:#}"
    );
    d.kill9();
    std::fs::write(d.path().join("failpoints"), "").unwrap();
    d.spawn();
    let v = d.wait_ready("state", "app", PULL);
    assert_eq!(v["status"]["image"]["digest"], digest.as_str());
    let tmp: Vec<_> = std::fs::read_dir(d.path().join("images/tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(tmp.is_empty(), "temp blobs left: {tmp:?}");
    let states = PathBuf::from(v["status"]["path"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    let temps: Vec<_> = std::fs::read_dir(&states)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .map(|e| e.path())
        .collect();
    assert!(temps.is_empty(), "temp trees left: {temps:?}");
}

/// Podman with a storage root of the test's own (vfs: no mounts), so the host's images are
/// never touched.
fn podman(root: &Path, args: &[&str]) {
    common::registry::require("podman", "podman");
    let out = Command::new("podman")
        .arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args(["--storage-driver", "vfs"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn docker_save_output_and_an_oci_image_layout_tar_import_equal_to_the_registry_pull() {
    let mut reg = Registry::start(None);
    let t = tempfile::tempdir().unwrap();
    reg.build_push(&test_image_context(t.path()), "test/app:1");
    let image = format!("{}/test/app:1", reg.host());
    let saved = t.path().join("app-docker.tar");
    reg.docker(&["save", "-o", saved.to_str().unwrap(), &image]);
    // An OCI image layout tar, written by podman from the same registry.
    let layout = t.path().join("app-oci.tar");
    let proot = t.path().join("podman");
    podman(&proot, &["pull", "-q", "--tls-verify=false", &image]);
    podman(
        &proot,
        &[
            "save",
            "-q",
            "--format",
            "oci-archive",
            "-o",
            layout.to_str().unwrap(),
            &image,
        ],
    );
    let mut ar = tar::Archive::new(std::fs::File::open(&layout).unwrap());
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "index.json"),
        "not an OCI layout: {names:?}"
    );

    let d = Daemon::start(&[]);
    d.apply(&format!(
        "{}---\n{}---\n{}",
        state_yaml("pulled", &format!("{{image: \"{image}\"}}")),
        state_yaml("saved", &format!("{{ociArchive: \"{}\"}}", saved.display())),
        state_yaml(
            "layout",
            &format!("{{ociArchive: \"{}\"}}", layout.display())
        )
    ));
    let a = d.wait_ready("state", "pulled", PULL);
    let ta = walk(Path::new(a["status"]["path"].as_str().unwrap()));
    assert!(ta.contains_key("data/new"));
    for name in ["saved", "layout"] {
        let b = d.wait_ready("state", name, PULL);
        assert_eq!(b["status"]["image"]["layers"], 4, "{name}");
        assert_eq!(
            a["status"]["image"]["config"], b["status"]["image"]["config"],
            "{name}"
        );
        let tb = walk(Path::new(b["status"]["path"].as_str().unwrap()));
        let d_ = diff(&ta, &tb);
        assert!(
            d_.is_empty(),
            "{name} import differs from the pull:\n{}",
            d_.join("\n")
        );
    }
}

#[test]
fn an_image_sharing_lower_layers_starts_from_the_stored_chain_on_btrfs() {
    let mut reg = Registry::start(None);
    let t = tempfile::tempdir().unwrap();
    reg.build_push(&test_image_context(t.path()), "test/app:1");
    let ctx2 = t.path().join("ctx2");
    std::fs::create_dir_all(&ctx2).unwrap();
    std::fs::write(ctx2.join("extra.txt"), "fifth layer\n").unwrap();
    std::fs::write(
        ctx2.join("Dockerfile"),
        format!(
            "FROM {}/test/app:1\nCOPY extra.txt /extra.txt\n",
            reg.host()
        ),
    )
    .unwrap();
    reg.build_push(&ctx2, "test/app:2");
    let d = Daemon::start(&["--snapshot-backend", "btrfs"]);
    d.apply(&state_yaml(
        "one",
        &format!("{{image: \"{}/test/app:1\"}}", reg.host()),
    ));
    let a = d.wait_ready("state", "one", PULL);
    d.apply(&state_yaml(
        "two",
        &format!("{{image: \"{}/test/app:2\"}}", reg.host()),
    ));
    let b = d.wait_ready("state", "two", PULL);
    assert_eq!(
        (
            a["status"]["backend"].as_str(),
            b["status"]["image"]["layers"].as_u64()
        ),
        (Some("btrfs"), Some(5))
    );
    let (pa, pb) = (
        PathBuf::from(a["status"]["path"].as_str().unwrap()),
        PathBuf::from(b["status"]["path"].as_str().unwrap()),
    );
    let chains_dir = pa.parent().unwrap().parent().unwrap().join("layers");
    let chains: Vec<PathBuf> = std::fs::read_dir(&chains_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    // 4 chains for the first image, 1 more for the second: the shared 4 are stored once.
    assert_eq!(chains.len(), 5, "{chains:?}");
    let info = |p: &Path| {
        btrfsutil::subvolume::Subvolume::get(p)
            .unwrap()
            .info()
            .unwrap()
    };
    let parent = info(&pb)
        .parent_uuid
        .expect("the second tree is a snapshot");
    let base = chains
        .iter()
        .find(|c| info(c).uuid == parent)
        .expect("its parent is a stored chain");
    // That chain holds the whole first image (and is itself read-only): what two started from.
    assert!(btrfsutil::subvolume::Subvolume::get(base.as_path())
        .unwrap()
        .is_ro()
        .unwrap());
    let d_ = diff(&walk(&pa), &walk(base));
    assert!(
        d_.is_empty(),
        "the chain two started from is not image one:\n{}",
        d_.join("\n")
    );
    let (ta, tb) = (walk(&pa), walk(&pb));
    assert!(tb.contains_key("extra.txt") && !ta.contains_key("extra.txt"));
    let mut tb_minus = tb.clone();
    tb_minus.remove("extra.txt");
    let d_ = diff(&ta, &tb_minus);
    assert!(
        d_.is_empty(),
        "two is one plus extra.txt:\n{}",
        d_.join("\n")
    );
}

#[test]
fn pull_policy_always_follows_a_moved_tag_at_resync() {
    let mut reg = Registry::start(None);
    let t = tempfile::tempdir().unwrap();
    let first = reg.build_push(&test_image_context(t.path()), "test/app:1");
    let d = Daemon::start(&["--resync-seconds", "2"]);
    d.apply(&format!(
        "{}  pullPolicy: Always\n",
        state_yaml("app", &format!("{{image: \"{}/test/app:1\"}}", reg.host()))
    ));
    let v = d.wait_ready("state", "app", PULL);
    assert_eq!(v["status"]["image"]["digest"], first.as_str());
    let path = PathBuf::from(v["status"]["path"].as_str().unwrap());
    assert!(!path.join("moved.txt").exists());
    // The tag moves to a new image.
    let ctx2 = t.path().join("ctx2");
    std::fs::create_dir_all(&ctx2).unwrap();
    std::fs::write(ctx2.join("moved.txt"), "new content\n").unwrap();
    std::fs::write(
        ctx2.join("Dockerfile"),
        format!(
            "FROM {}/test/app:1\nCOPY moved.txt /moved.txt\n",
            reg.host()
        ),
    )
    .unwrap();
    let second = reg.build_push(&ctx2, "test/app:1");
    assert_ne!(first, second);
    let v = d.wait("state", "app", "the new digest", |v| {
        v["status"]["image"]["digest"] == second.as_str() && condition(v, "Ready") == "True"
    });
    let path = PathBuf::from(v["status"]["path"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(path.join("moved.txt")).unwrap(),
        "new content\n"
    );
    assert_eq!(v["status"]["image"]["layers"], 5);
}
