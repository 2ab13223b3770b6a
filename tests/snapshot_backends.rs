//! Snapshot backends against the real kernel: btrfs on a loop image this test creates, and the
//! copy backend on the host filesystem (ext4 here: immutable flags, no reflink) and on btrfs.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tend::snapshot::{
    loopimg, probe, AnySnapshotter, BackendMode, Error, SnapshotBackend, Tree, TreeClass,
};

/// A backend in its own temp dir; dropping it clears immutable flags and unmounts/detaches
/// the loop image it made (also when the test panics).
struct Fixture {
    _guard: Guard,
    backend: AnySnapshotter,
    /// Outside the backend root: where sources and tarballs are made.
    work: PathBuf,
    _dir: tempfile::TempDir,
}

struct Guard {
    root: PathBuf,
    loop_state: Option<PathBuf>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-R")
            .arg("-i")
            .arg(&self.root)
            .output();
        if let Some(state) = &self.loop_state {
            if let Err(e) = loopimg::unmount_and_detach(state) {
                eprintln!("cleanup of {}: {e}", state.display());
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Copy,
    Btrfs,
    CopyOnBtrfs,
}

impl Fixture {
    fn new(test: &str, kind: Kind) -> Option<Self> {
        if !common::privileged(test) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix(&common::unique("tsnap"))
            .tempdir()
            .unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let (root, loop_state) = match kind {
            Kind::Copy => (dir.path().join("root"), None),
            Kind::Btrfs | Kind::CopyOnBtrfs => {
                let state = dir.path().join("state");
                (loopimg::mount_point(&state), Some(state))
            }
        };
        let guard = Guard {
            root: root.clone(),
            loop_state: loop_state.clone(),
        };
        if let Some(state) = &loop_state {
            let m = loopimg::ensure(state, 256 << 20).unwrap();
            assert_eq!(m.outcome, loopimg::Outcome::Created);
        }
        let mode = match kind {
            Kind::Btrfs => BackendMode::Btrfs,
            _ => BackendMode::Copy,
        };
        let (backend, why) = probe(&root, mode).unwrap();
        eprintln!("{test}: {why}");
        Some(Fixture {
            _guard: guard,
            backend,
            work,
            _dir: dir,
        })
    }
}

/// Runs an async test body against the copy backend, the btrfs backend and copy-on-btrfs.
macro_rules! on_all_backends {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn copy() {
                if let Some(f) = Fixture::new(concat!(stringify!($name), "_copy"), Kind::Copy) {
                    super::$name(&f).await;
                }
            }
            #[tokio::test]
            async fn btrfs() {
                if let Some(f) = Fixture::new(concat!(stringify!($name), "_btrfs"), Kind::Btrfs) {
                    super::$name(&f).await;
                }
            }
            #[tokio::test]
            async fn copy_on_btrfs() {
                if let Some(f) = Fixture::new(concat!(stringify!($name), "_cob"), Kind::CopyOnBtrfs)
                {
                    super::$name(&f).await;
                }
            }
        }
    };
}

/// A small rootfs-like tree: odd modes and owners, set-uid, symlinks, xattrs, fixed mtimes;
/// with `special`, also a hard link and a fifo (which tarballs made by `tar::Builder` lack).
fn make_source(dir: &Path, special: bool) {
    let w = |p: &str, data: &[u8], mode: u32| {
        std::fs::write(dir.join(p), data).unwrap();
        std::fs::set_permissions(dir.join(p), std::fs::Permissions::from_mode(mode)).unwrap();
    };
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    w("bin/tool", b"#!/bin/true\n", 0o4755);
    std::os::unix::fs::symlink("tool", dir.join("bin/link-rel")).unwrap();
    w("etc/conf", b"conf-data\n", 0o640);
    std::os::unix::fs::lchown(dir.join("etc/conf"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::lchown(dir.join("etc"), Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(dir.join("etc"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::set_permissions(dir.join("empty"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("etc/abs")).unwrap();
    xattr::set(dir.join("etc/conf"), "user.tend", b"hello").unwrap();
    xattr::set(dir.join("empty"), "user.dir", b"1").unwrap();
    let big: Vec<u8> = (0..131_072u32).map(|i| (i * 7 % 251) as u8).collect();
    w("big", &big, 0o644);
    if special {
        std::fs::hard_link(dir.join("etc/conf"), dir.join("etc/hard")).unwrap();
        nix::unistd::mkfifo(
            &dir.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
    }
    for (i, p) in [
        "bin/tool",
        "etc/conf",
        "big",
        "bin/link-rel",
        "bin",
        "etc",
        "empty",
    ]
    .iter()
    .enumerate()
    {
        let t = TimeSpec::new(1_600_000_000 + i as i64, 0);
        utimensat(
            nix::fcntl::AT_FDCWD,
            &dir.join(p),
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
}

/// What a user would compare between two trees: type, mode, owner, mtime (s), link target,
/// content length and the user xattrs; the top directory is left out.
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let target = std::fs::read_link(&p)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            let mtime = if m.file_type().is_symlink() {
                0
            } else {
                m.mtime()
            };
            let xattrs: Vec<String> = xattr::list(&p)
                .map(|l| {
                    l.map(|n| format!("{}={:?}", n.to_string_lossy(), xattr::get(&p, &n).unwrap()))
                        .collect()
                })
                .unwrap_or_default();
            let size = if m.is_file() { m.len() } else { 0 };
            out.insert(rel, format!("mode={:o} uid={} gid={} mtime={mtime} size={size} target={target} x={xattrs:?}",
                m.mode(), m.uid(), m.gid()));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

fn assert_read_only(root: &Path) {
    let err = std::fs::write(root.join("new-file"), b"x").unwrap_err();
    assert!(
        matches!(err.raw_os_error(), Some(libc::EROFS | libc::EPERM)),
        "create: {err}"
    );
    let err = std::fs::OpenOptions::new()
        .append(true)
        .open(root.join("big"))
        .unwrap_err();
    assert!(
        matches!(err.raw_os_error(), Some(libc::EROFS | libc::EPERM)),
        "append: {err}"
    );
    let err = std::fs::remove_file(root.join("bin/tool")).unwrap_err();
    assert!(
        matches!(err.raw_os_error(), Some(libc::EROFS | libc::EPERM)),
        "unlink: {err}"
    );
}

fn class_dir_entries(f: &Fixture, class: TreeClass) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(f.backend.root().join(class.dir_name()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

async fn import_directory(f: &Fixture) {
    let src = f.work.join("src");
    make_source(&src, true);
    let t = Tree::state("base-1").unwrap();
    let info = f.backend.import_dir(&t, &src).await.unwrap();
    assert_eq!(info.path, f.backend.root().join("states/base-1"));
    assert!(info.read_only);
    assert_eq!(
        info.size_bytes,
        std::fs::metadata(src.join("big")).unwrap().len() + 10 + 12 + 4 + 11
    );
    assert_eq!(describe(&info.path), describe(&src));
    let (a, b) = (
        std::fs::metadata(info.path.join("etc/conf")).unwrap(),
        std::fs::metadata(info.path.join("etc/hard")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "hard link kept");
    assert_read_only(&info.path);
    assert!(f.backend.is_read_only(&t).await.unwrap());
    assert_eq!(
        f.backend.list(TreeClass::States).await.unwrap(),
        vec!["base-1"]
    );
    assert!(matches!(
        f.backend.import_dir(&t, &src).await,
        Err(Error::Exists { .. })
    ));
    assert_eq!(
        class_dir_entries(f, TreeClass::States)
            .iter()
            .filter(|n| n.starts_with(".tmp"))
            .count(),
        0
    );
}
on_all_backends!(import_directory);

/// Writes a tarball of `src` with pax `SCHILY.xattr` records for the xattrs `tar::Builder` skips.
fn make_tarball(src: &Path, out: &Path, gzip: bool) {
    let file = std::fs::File::create(out).unwrap();
    let w: Box<dyn Write> = if gzip {
        Box::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        ))
    } else {
        Box::new(file)
    };
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    for (name, key, value) in [
        ("etc/conf", "user.tend", "hello"),
        ("empty", "user.dir", "1"),
    ] {
        let rec = pax_record(&format!("SCHILY.xattr.{key}"), value);
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(rec.len() as u64);
        h.set_cksum();
        b.append(&h, rec.as_bytes()).unwrap();
        b.append_path_with_name(src.join(name), name).unwrap();
    }
    for name in ["bin", "bin/tool", "bin/link-rel", "etc", "etc/abs", "big"] {
        b.append_path_with_name(src.join(name), name).unwrap();
    }
    b.into_inner().unwrap().flush().unwrap();
}

fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}")
}

async fn import_tarball(f: &Fixture) {
    let src = f.work.join("src");
    make_source(&src, false);
    for (id, gzip, name) in [("tar-1", false, "root.tar"), ("tgz-1", true, "root.tar.gz")] {
        let tarball = f.work.join(name);
        make_tarball(&src, &tarball, gzip);
        let info = f
            .backend
            .import_tarball(&Tree::state(id).unwrap(), &tarball)
            .await
            .unwrap();
        assert!(info.read_only);
        assert_eq!(describe(&info.path), describe(&src), "{name}");
        assert_read_only(&info.path);
    }
}
on_all_backends!(import_tarball);

async fn sandbox_write_then_freeze(f: &Fixture) {
    let src = f.work.join("src");
    make_source(&src, true);
    let base = Tree::state("base").unwrap();
    f.backend.import_dir(&base, &src).await.unwrap();
    let dev = Tree::sandbox("dev").unwrap();
    let sb = f.backend.snapshot(&base, &dev, false).await.unwrap();
    assert!(!sb.read_only && !f.backend.is_read_only(&dev).await.unwrap());
    std::fs::write(sb.path.join("new-file"), b"written in the sandbox").unwrap();
    std::fs::write(sb.path.join("etc/conf"), b"changed").unwrap();
    assert!(
        !f.backend.path(&base).join("new-file").exists(),
        "the State is untouched"
    );
    assert_eq!(
        std::fs::read(f.backend.path(&base).join("etc/conf")).unwrap(),
        b"conf-data\n"
    );

    let frozen = Tree::state("frozen").unwrap();
    let info = f.backend.snapshot(&dev, &frozen, true).await.unwrap();
    assert!(info.read_only);
    assert_eq!(
        std::fs::read(info.path.join("new-file")).unwrap(),
        b"written in the sandbox"
    );
    assert_eq!(
        std::fs::read(info.path.join("etc/conf")).unwrap(),
        b"changed"
    );
    assert_read_only(&info.path);
    let seen = f.backend.inspect(&frozen).await.unwrap().unwrap();
    assert!(seen.read_only && seen.size_bytes > 131_072);

    // Drift repair: made writable behind tend's back, then read-only again.
    f.backend.set_read_only(&frozen, false).await.unwrap();
    assert!(!f.backend.is_read_only(&frozen).await.unwrap());
    std::fs::write(info.path.join("drift"), b"x").unwrap();
    f.backend.set_read_only(&frozen, true).await.unwrap();
    assert!(f.backend.is_read_only(&frozen).await.unwrap());
    assert_read_only(&info.path);

    let missing = Tree::state("missing").unwrap();
    let err = f
        .backend
        .snapshot(&missing, &Tree::sandbox("x").unwrap(), false)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let err = f.backend.snapshot(&base, &dev, false).await.unwrap_err();
    assert!(matches!(err, Error::Exists { .. }), "{err}");
}
on_all_backends!(sandbox_write_then_freeze);

async fn delete_is_idempotent(f: &Fixture) {
    let src = f.work.join("src");
    make_source(&src, true);
    let base = Tree::state("del").unwrap();
    f.backend.import_dir(&base, &src).await.unwrap();
    let sb = Tree::sandbox("del-sb").unwrap();
    f.backend.snapshot(&base, &sb, false).await.unwrap();
    assert!(f.backend.delete(&sb).await.unwrap());
    assert!(!f.backend.delete(&sb).await.unwrap());
    assert!(
        f.backend.delete(&base).await.unwrap(),
        "a read-only State can be deleted"
    );
    assert!(!f.backend.delete(&base).await.unwrap());
    assert!(f.backend.inspect(&base).await.unwrap().is_none());
    assert!(f.backend.list(TreeClass::States).await.unwrap().is_empty());
    assert!(
        class_dir_entries(f, TreeClass::States).is_empty(),
        "marker removed too"
    );
    assert!(!f
        .backend
        .delete(&Tree::state("never").unwrap())
        .await
        .unwrap());
}
on_all_backends!(delete_is_idempotent);

/// A tar whose entries are written verbatim (tar::Builder refuses `..` and absolute names).
fn raw_tar(out: &Path, entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name_literal(l).unwrap();
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.finish().unwrap();
}

async fn bad_sources_change_nothing(f: &Fixture) {
    use tar::EntryType::{Regular, Symlink};
    let t = Tree::state("bad").unwrap();
    let outside = f.work.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let text = f.work.join("notes.txt");
    std::fs::write(
        &text,
        "this is not a tarball, just some text that is long enough\n".repeat(20),
    )
    .unwrap();
    let dotdot = f.work.join("dotdot.tar");
    raw_tar(
        &dotdot,
        &[
            ("ok", Regular, b"fine", None),
            ("../escape", Regular, b"pwned", None),
        ],
    );
    let abs = f.work.join("abs.tar");
    let abs_name = format!("{}/abs", outside.display());
    raw_tar(&abs, &[(abs_name.as_str(), Regular, b"pwned", None)]);
    let via_link = f.work.join("link.tar");
    let target = outside.display().to_string();
    raw_tar(
        &via_link,
        &[
            ("evil", Symlink, b"", Some(target.as_str())),
            ("evil/pwned", Regular, b"pwned", None),
        ],
    );
    let inside = f.backend.root().join("states");

    let cases: Vec<(&str, Result<_, Error>)> = vec![
        (
            "missing dir",
            f.backend.import_dir(&t, &f.work.join("nope")).await,
        ),
        ("file as dir", f.backend.import_dir(&t, &text).await),
        (
            "dir as tarball",
            f.backend.import_tarball(&t, &f.work).await,
        ),
        (
            "missing tarball",
            f.backend.import_tarball(&t, &f.work.join("nope.tar")).await,
        ),
        ("text as tarball", f.backend.import_tarball(&t, &text).await),
        (
            "dotdot tarball",
            f.backend.import_tarball(&t, &dotdot).await,
        ),
        ("absolute tarball", f.backend.import_tarball(&t, &abs).await),
        (
            "symlink escape",
            f.backend.import_tarball(&t, &via_link).await,
        ),
        (
            "source inside root",
            f.backend.import_dir(&t, &inside).await,
        ),
    ];
    for (what, r) in cases {
        let err = r.expect_err(what);
        eprintln!("{what}: {err}");
        let ok = match what {
            "text as tarball" | "dotdot tarball" | "absolute tarball" | "symlink escape" => {
                matches!(err, Error::BadTarball { .. })
            }
            _ => matches!(err, Error::BadSource { .. }),
        };
        assert!(ok, "{what}: wrong error {err:?}");
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
    assert!(!f.backend.root().join("states/escape").exists());
    assert!(
        class_dir_entries(f, TreeClass::States).is_empty(),
        "no tree, no temp left"
    );
}
on_all_backends!(bad_sources_change_nothing);

async fn stale_temps_are_swept(f: &Fixture) {
    let src = f.work.join("src");
    make_source(&src, false);
    f.backend
        .import_dir(&Tree::state("keep").unwrap(), &src)
        .await
        .unwrap();
    let stale = f.backend.root().join("states/.tmp-keep-deadbeef");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("half"), b"half-imported").unwrap();
    assert_eq!(
        f.backend.list(TreeClass::States).await.unwrap(),
        vec!["keep"]
    );
    assert_eq!(
        f.backend
            .remove_stale_temps(TreeClass::States)
            .await
            .unwrap(),
        vec![stale.clone()]
    );
    assert!(!stale.exists());
    assert_eq!(
        f.backend.list(TreeClass::States).await.unwrap(),
        vec!["keep"]
    );
}
on_all_backends!(stale_temps_are_swept);
