//! Safe tarball extraction (.tar, .tar.gz by magic bytes) into a fresh tree.
//!
//! Entries with `..` components or absolute paths, and hard links naming such targets, are
//! rejected with an error (not skipped); writes through symlinks that leave the tree are
//! refused by `tar`'s own `unpack_in` check; device nodes are skipped with a warning, since a
//! tree is not a place to create devices from untrusted input.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path};

use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tar::EntryType;

use super::error::{Error, Result};

/// Extracts `tarball` into the existing empty directory `dst`, keeping modes, owners, mtimes
/// and xattrs. On error, `dst` may hold a partial tree: the caller imports into a temp name
/// and removes it.
pub fn extract(tarball: &Path, dst: &Path) -> Result<()> {
    let bad = |reason: String| Error::BadTarball {
        path: tarball.to_path_buf(),
        reason,
    };
    let mut file = File::open(tarball).map_err(Error::io("open", tarball))?;
    let len = file.metadata().map_err(Error::io("stat", tarball))?.len();
    if len == 0 {
        return Err(bad("empty file, not a tar archive".into()));
    }
    let mut magic = [0u8; 2];
    let gz = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    file.seek(SeekFrom::Start(0))
        .map_err(Error::io("seek", tarball))?;
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);

    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    let mut dirs = Vec::new();
    let mut count = 0usize;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("not a tar archive: {e}")))?;
        count += 1;
        let path = entry
            .path()
            .map_err(|e| bad(format!("entry name: {e}")))?
            .into_owned();
        check_entry_path(&path).map_err(|why| bad(format!("entry {}: {why}", path.display())))?;
        let kind = entry.header().entry_type();
        if kind == EntryType::Link {
            if let Some(target) = entry
                .link_name()
                .map_err(|e| bad(format!("link name: {e}")))?
            {
                check_entry_path(&target).map_err(|why| {
                    bad(format!(
                        "hard link {} -> {}: {why}",
                        path.display(),
                        target.display()
                    ))
                })?;
            }
        }
        match kind {
            EntryType::Char | EntryType::Block => {
                tracing::warn!(tarball = %tarball.display(), entry = %path.display(),
                    "skipping device node in tarball");
            }
            EntryType::Directory => dirs.push(entry),
            _ => unpack_one(&mut entry, dst, &path, tarball)?,
        }
    }
    if count == 0 && !gz && len < 1024 {
        return Err(bad("no tar entries and no end-of-archive marker".into()));
    }
    // Directories last, deepest first, so their modes and mtimes are not disturbed by children
    // (the same order `tar::Archive::unpack` uses).
    dirs.reverse();
    for mut dir in dirs {
        let path = dir
            .path()
            .map_err(|e| bad(format!("entry name: {e}")))?
            .into_owned();
        unpack_one(&mut dir, dst, &path, tarball)?;
        finish_dir(&mut dir, &dst.join(&path))?;
    }
    Ok(())
}

/// `tar` sets a directory's mode and owner but not its xattrs or mtime; do both here.
fn finish_dir<R: Read>(entry: &mut tar::Entry<R>, path: &Path) -> Result<()> {
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                xattr::set(path, name, ext.value_bytes()).map_err(Error::io("setxattr", path))?;
            }
        }
    }
    if let Ok(mtime) = entry.header().mtime() {
        let t = TimeSpec::new(mtime as i64, 0);
        utimensat(AT_FDCWD, path, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(Error::sys("utimensat", path))?;
    }
    Ok(())
}

fn unpack_one<R: Read>(
    entry: &mut tar::Entry<R>,
    dst: &Path,
    path: &Path,
    tarball: &Path,
) -> Result<()> {
    match entry.unpack_in(dst) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::BadTarball {
            path: tarball.into(),
            reason: format!("entry {} points outside the tree", path.display()),
        }),
        Err(e) => Err(Error::BadTarball {
            path: tarball.into(),
            reason: format!("entry {}: {e}", path.display()),
        }),
    }
}

/// Only relative paths of normal components (and `.`) may appear in a tree.
fn check_entry_path(path: &Path) -> std::result::Result<(), &'static str> {
    for c in path.components() {
        match c {
            Component::ParentDir => return Err("contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
            Component::CurDir | Component::Normal(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths() {
        assert!(check_entry_path(Path::new("a/b/c")).is_ok());
        assert!(check_entry_path(Path::new("./a")).is_ok());
        assert!(check_entry_path(Path::new("../a")).is_err());
        assert!(check_entry_path(Path::new("a/../../b")).is_err());
        assert!(check_entry_path(Path::new("/etc/passwd")).is_err());
    }
}
