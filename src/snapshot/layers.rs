//! Applies OCI image layers, bottom first, onto a fresh tree: whiteouts (`.wh.NAME`) delete what
//! lower layers made, an opaque marker (`.wh..wh..opq`) empties its directory of lower content,
//! hard links and symlinks are made as links (a symlink's target is never followed on the
//! host), device nodes are skipped, owners, modes, mtimes and xattrs are kept.
//!
//! # Guarantees
//! Nothing is written outside `dst`: entry names with `..` or a leading `/` are refused, every
//! parent directory of an entry (and of a hard link's target) must be a real directory inside
//! the tree — a parent that is a symlink is refused, never followed — and an existing entry of
//! another type is removed before the new one is made, so the final component is never a
//! symlink either. The tree is private to tend while it is built (a temp name under the state
//! dir), so no one races these checks.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// Where the btrfs backend keeps layer chains: `<root>/layers/<chain id>`, one read-only
/// subvolume per distinct stack of layers (bottom first), shared by every image built on it.
pub fn dir(root: &Path) -> PathBuf {
    root.join("layers")
}

/// The chain id of every prefix of `layers`, like OCI's ChainID: `sha256(parent + " " + blob)`
/// over the blobs' names (their digests: the blob store names files by digest).
pub fn chain_ids(layers: &[PathBuf]) -> Result<Vec<String>, super::Error> {
    use sha2::{Digest, Sha256};
    let mut out: Vec<String> = Vec::new();
    for l in layers {
        let name = l
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let id = match out.last() {
            None => name.clone(),
            Some(parent) => {
                let h = Sha256::digest(format!("{parent} {name}").as_bytes());
                h.iter().map(|b| format!("{b:02x}")).collect()
            }
        };
        if id.is_empty() || super::validate_id(&id).is_err() {
            return Err(super::Error::BadLayer {
                path: l.clone(),
                reason: "a layer blob must be named by its digest".into(),
            });
        }
        out.push(id);
    }
    Ok(out)
}

/// Chain subvolumes half-made by a crash (`layers/.tmp-*`).
pub fn stale_temps(root: &Path) -> Result<Vec<PathBuf>, super::Error> {
    let d = dir(root);
    let Ok(rd) = std::fs::read_dir(&d) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(super::Error::io("readdir", &d))?;
        if e.file_name().to_string_lossy().starts_with(".tmp-") {
            out.push(e.path());
        }
    }
    Ok(out)
}

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The layer is not a (compressed) tar, or an entry is unsafe.
    #[error("bad layer {layer}: {reason}")]
    BadLayer {
        /// The layer blob.
        layer: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Local I/O on the tree.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Opens a layer blob, decompressing gzip or zstd (by magic bytes) or reading plain tar.
pub fn open_layer(layer: &Path) -> Result<Box<dyn Read>, UnpackError> {
    let io = |op| {
        let layer = layer.to_path_buf();
        move |source| UnpackError::Io {
            op,
            path: layer,
            source,
        }
    };
    let mut f = File::open(layer).map_err(io("open"))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(io("read"))?;
    let f = File::open(layer).map_err(io("open"))?;
    let r = BufReader::with_capacity(1 << 20, f);
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(r)),
        [0x28, 0xb5, 0x2f, 0xfd] => {
            Box::new(zstd::stream::read::Decoder::new(r).map_err(io("zstd"))?)
        }
        _ => Box::new(r),
    })
}

/// Applies `layers` in order onto the existing empty directory `dst`.
pub fn apply_layers(layers: &[PathBuf], dst: &Path) -> Result<(), UnpackError> {
    for layer in layers {
        apply_layer(layer, dst)?;
    }
    Ok(())
}

/// Applies one layer onto `dst`.
pub fn apply_layer(layer: &Path, dst: &Path) -> Result<(), UnpackError> {
    let bad = |reason: String| UnpackError::BadLayer {
        layer: layer.to_path_buf(),
        reason,
    };
    let mut archive = tar::Archive::new(open_layer(layer)?);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    // Paths this layer made: an opaque marker keeps them and removes the rest.
    let mut made: HashSet<PathBuf> = HashSet::new();
    let mut dirs = Vec::new();
    for entry in archive
        .entries()
        .map_err(|e| bad(format!("not a tar: {e}")))?
    {
        let mut entry = entry.map_err(|e| bad(format!("not a tar: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| bad(format!("entry name: {e}")))?
            .into_owned();
        let rel = clean(&raw).map_err(|why| bad(format!("entry {}: {why}", raw.display())))?;
        let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue; // the root itself (`./`): the tree's own directory stays as made
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        ensure_parents(dst, parent)
            .map_err(|why| bad(format!("entry {}: {why}", raw.display())))?;
        if name == OPAQUE {
            remove_lower(&dst.join(parent), parent, &made)?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            remove_any(&dst.join(parent).join(hidden))?;
            continue;
        }
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::Char | EntryType::Block | EntryType::Fifo)
            && kind != EntryType::Fifo
        {
            tracing::debug!(layer = %layer.display(), entry = %rel.display(), "device node skipped");
            continue;
        }
        if kind == EntryType::Link {
            let target = entry
                .link_name()
                .map_err(|e| bad(format!("link name: {e}")))?
                .ok_or_else(|| bad(format!("hard link {} has no target", rel.display())))?;
            let t = clean(&target).map_err(|why| {
                bad(format!(
                    "hard link {} -> {}: {why}",
                    rel.display(),
                    target.display()
                ))
            })?;
            check_parents(dst, t.parent().unwrap_or(Path::new(""))).map_err(|why| {
                bad(format!(
                    "hard link {} -> {}: {why}",
                    rel.display(),
                    target.display()
                ))
            })?;
        }
        let path = dst.join(&rel);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() && kind == EntryType::Directory => {}
            Ok(_) => remove_any(&path)?,
            Err(_) => {}
        }
        made.insert(rel.clone());
        if kind == EntryType::Directory {
            // Made now (children follow), mode/mtime applied again at the end of the layer.
            unpack(&mut entry, dst, &rel, layer)?;
            dirs.push((rel, entry.header().mtime().unwrap_or(0)));
            continue;
        }
        unpack(&mut entry, dst, &rel, layer)?;
    }
    // Children changed the directories' mtimes: put the layer's back, deepest first.
    for (rel, mtime) in dirs.into_iter().rev() {
        let p = dst.join(&rel);
        let t = nix::sys::time::TimeSpec::new(mtime as i64, 0);
        let _ = nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &p,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        );
    }
    Ok(())
}

fn unpack<R: Read>(
    entry: &mut tar::Entry<R>,
    dst: &Path,
    rel: &Path,
    layer: &Path,
) -> Result<(), UnpackError> {
    match entry.unpack_in(dst) {
        Ok(true) => Ok(()),
        Ok(false) => Err(UnpackError::BadLayer {
            layer: layer.into(),
            reason: format!("entry {} points outside the tree", rel.display()),
        }),
        Err(e) => Err(UnpackError::BadLayer {
            layer: layer.into(),
            reason: format!("entry {}: {e}", rel.display()),
        }),
    }
}

/// A relative path of normal components (`.` dropped); `..` and absolute paths are refused.
fn clean(p: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    Ok(out)
}

/// Every existing component of `parent` under `dst` must be a real directory (not a symlink).
fn check_parents(dst: &Path, parent: &Path) -> Result<(), String> {
    let mut p = dst.to_path_buf();
    for c in parent.components() {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("parent {} is a symlink; not followed", p.display()))
            }
            Ok(_) => return Err(format!("parent {} is not a directory", p.display())),
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Like [`check_parents`], and creates missing parents (0755, as the layer did not say).
fn ensure_parents(dst: &Path, parent: &Path) -> Result<(), String> {
    let mut p = dst.to_path_buf();
    for c in parent.components() {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("parent {} is a symlink; not followed", p.display()))
            }
            Ok(_) => return Err(format!("parent {} is not a directory", p.display())),
            Err(_) => std::fs::create_dir(&p).map_err(|e| format!("mkdir {}: {e}", p.display()))?,
        }
    }
    Ok(())
}

/// Removes whatever is at `path` (a directory with its content); absent is fine. Never follows
/// a symlink: `remove_dir_all` removes links, not their targets.
fn remove_any(path: &Path) -> Result<(), UnpackError> {
    let io = |op| {
        let path = path.to_path_buf();
        move |source| UnpackError::Io { op, path, source }
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map_err(io("rmdir")),
        Ok(_) => std::fs::remove_file(path).map_err(io("unlink")),
        Err(_) => Ok(()),
    }
}

/// Opaque directory `dir` (tree-relative `rel`): removes what lower layers put there, keeping
/// what this layer made (`made`), recursively.
fn remove_lower(dir: &Path, rel: &Path, made: &HashSet<PathBuf>) -> Result<(), UnpackError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(_) => return Ok(()),
    };
    for e in rd {
        let e = e.map_err(|source| UnpackError::Io {
            op: "readdir",
            path: dir.into(),
            source,
        })?;
        let child = rel.join(e.file_name());
        let path = e.path();
        if !made.contains(&child) {
            remove_any(&path)?;
        } else if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_lower(&path, &child, made)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Builds an uncompressed layer from (path, kind) entries.
    fn layer(dir: &Path, name: &str, entries: &[(&str, &str)]) -> PathBuf {
        let p = dir.join(name);
        let mut b = tar::Builder::new(File::create(&p).unwrap());
        for (path, what) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_uid(1000);
            h.set_gid(1001);
            h.set_mtime(1_700_000_000);
            let data: &[u8] = match *what {
                "dir" => {
                    h.set_entry_type(EntryType::Directory);
                    h.set_mode(0o750);
                    b"" as &[u8]
                }
                w if w.starts_with("sym:") => {
                    h.set_entry_type(EntryType::Symlink);
                    h.set_link_name(&w[4..]).unwrap();
                    b""
                }
                w if w.starts_with("hard:") => {
                    h.set_entry_type(EntryType::Link);
                    h.set_link_name(&w[5..]).unwrap();
                    b""
                }
                "chr" => {
                    h.set_entry_type(EntryType::Char);
                    h.set_device_major(1).unwrap();
                    h.set_device_minor(3).unwrap();
                    b""
                }
                w => w.as_bytes(),
            };
            h.set_size(data.len() as u64);
            // Raw names, so unsafe ones (`..`, absolute) can be written too.
            let name = path.as_bytes();
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.finish().unwrap();
        p
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_content() {
        let t = tempfile::tempdir().unwrap();
        let dst = t.path().join("tree");
        std::fs::create_dir(&dst).unwrap();
        let l1 = layer(
            t.path(),
            "1",
            &[
                ("etc", "dir"),
                ("etc/motd", "hi"),
                ("etc/keep", "k"),
                ("data", "dir"),
                ("data/old", "o"),
                ("data/sub", "dir"),
                ("data/sub/x", "x"),
            ],
        );
        let l2 = layer(
            t.path(),
            "2",
            &[
                ("etc/.wh.motd", ""),
                ("data", "dir"),
                ("data/new", "n"),
                ("data/.wh..wh..opq", ""),
            ],
        );
        apply_layers(&[l1, l2], &dst).unwrap();
        assert!(!dst.join("etc/motd").exists());
        assert_eq!(read(&dst.join("etc/keep")), "k");
        assert_eq!(read(&dst.join("data/new")), "n");
        assert!(!dst.join("data/old").exists() && !dst.join("data/sub").exists());
        assert!(!dst.join("data/.wh..wh..opq").exists());
        let m = std::fs::metadata(dst.join("etc/keep")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1001, 0o644));
        assert_eq!(
            std::fs::metadata(dst.join("data")).unwrap().mode() & 0o7777,
            0o750
        );
    }

    #[test]
    fn links_stay_links_and_devices_are_skipped() {
        let t = tempfile::tempdir().unwrap();
        let dst = t.path().join("tree");
        std::fs::create_dir(&dst).unwrap();
        let l = layer(
            t.path(),
            "1",
            &[
                ("a", "content"),
                ("b", "hard:a"),
                ("out", "sym:/etc"),
                ("up", "sym:../../.."),
                ("null", "chr"),
            ],
        );
        apply_layers(&[l], &dst).unwrap();
        let (a, b) = (
            std::fs::metadata(dst.join("a")).unwrap(),
            std::fs::metadata(dst.join("b")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino());
        assert_eq!(
            std::fs::read_link(dst.join("out")).unwrap(),
            Path::new("/etc")
        );
        assert!(!dst.join("null").exists());
    }

    #[test]
    fn nothing_is_written_through_a_symlink_or_outside_the_tree() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let cases: Vec<Vec<(&str, String)>> = vec![
            vec![
                ("esc", format!("sym:{}", outside.display())),
                ("esc/pwned", "x".into()),
            ],
            vec![("../outside/pwned", "x".into())],
            vec![("/tmp/pwned-abs", "x".into())],
            vec![
                ("esc", format!("sym:{}", outside.display())),
                ("esc/.wh.victim", "".into()),
            ],
            vec![
                ("esc", format!("sym:{}", outside.display())),
                ("h", "hard:esc/victim".into()),
            ],
        ];
        std::fs::write(outside.join("victim"), "v").unwrap();
        for (i, c) in cases.iter().enumerate() {
            let dst = t.path().join(format!("tree{i}"));
            std::fs::create_dir(&dst).unwrap();
            let entries: Vec<(&str, &str)> = c.iter().map(|(a, b)| (*a, b.as_str())).collect();
            let l = layer(t.path(), &format!("l{i}"), &entries);
            let r = apply_layers(&[l], &dst);
            assert!(
                matches!(r, Err(UnpackError::BadLayer { .. })),
                "case {i}: {r:?}"
            );
        }
        assert_eq!(read(&outside.join("victim")), "v");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
        assert!(!Path::new("/tmp/pwned-abs").exists());
    }

    #[test]
    fn a_file_replaces_a_symlink_instead_of_writing_through_it() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("victim");
        std::fs::write(&outside, "v").unwrap();
        let dst = t.path().join("tree");
        std::fs::create_dir(&dst).unwrap();
        let l1 = layer(
            t.path(),
            "1",
            &[("f", &format!("sym:{}", outside.display()))],
        );
        let l2 = layer(t.path(), "2", &[("f", "mine")]);
        apply_layers(&[l1, l2], &dst).unwrap();
        assert_eq!(read(&outside), "v");
        assert_eq!(read(&dst.join("f")), "mine");
        assert!(!std::fs::symlink_metadata(dst.join("f"))
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
