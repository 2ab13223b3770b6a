//! Tree-walking helpers shared by the backends: faithful copy, immutable flags, size, removal.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::{utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::error::{Error, Result};
use super::sys;

/// Checks an import source: it exists, is a directory (or a regular file for tarballs), and
/// neither contains nor lies inside the backend root. Returns the canonical source path.
pub fn check_source(src: &Path, root: &Path, want_dir: bool) -> Result<PathBuf> {
    let bad = |reason: String| Error::BadSource {
        path: src.to_path_buf(),
        reason,
    };
    let meta = fs::metadata(src).map_err(|e| bad(format!("cannot stat: {e}")))?;
    if want_dir && !meta.is_dir() {
        return Err(bad("is not a directory".into()));
    }
    if !want_dir && !meta.is_file() {
        return Err(bad("is not a regular file".into()));
    }
    let canon = src
        .canonicalize()
        .map_err(|e| bad(format!("cannot resolve: {e}")))?;
    let root = root
        .canonicalize()
        .map_err(Error::io("canonicalize", root))?;
    if canon.starts_with(&root) {
        return Err(bad(format!(
            "is inside tend's state tree {}",
            root.display()
        )));
    }
    if want_dir && root.starts_with(&canon) {
        return Err(bad(format!(
            "contains tend's state tree {}",
            root.display()
        )));
    }
    Ok(canon)
}

/// Copies the contents of directory `src` into the existing empty directory `dst`, keeping
/// modes, owners, symlinks, hard links, device nodes, xattrs and timestamps. Regular files are
/// reflinked (`FICLONE`) where the filesystem allows it, else copied with `copy_file_range`.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut cx = CopyCx {
        reflink: true,
        links: HashMap::new(),
    };
    copy_dir_contents(&mut cx, src, dst)?;
    copy_meta(
        src,
        dst,
        &fs::symlink_metadata(src).map_err(Error::io("lstat", src))?,
    )
}

struct CopyCx {
    reflink: bool,
    links: HashMap<(u64, u64), PathBuf>,
}

fn copy_dir_contents(cx: &mut CopyCx, src: &Path, dst: &Path) -> Result<()> {
    for entry in fs::read_dir(src).map_err(Error::io("readdir", src))? {
        let entry = entry.map_err(Error::io("readdir", src))?;
        let (s, d) = (entry.path(), dst.join(entry.file_name()));
        let meta = fs::symlink_metadata(&s).map_err(Error::io("lstat", &s))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::create_dir(&d).map_err(Error::io("mkdir", &d))?;
            copy_dir_contents(cx, &s, &d)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&s).map_err(Error::io("readlink", &s))?;
            std::os::unix::fs::symlink(&target, &d).map_err(Error::io("symlink", &d))?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = cx.links.get(&(meta.dev(), meta.ino())) {
                    fs::hard_link(first, &d).map_err(Error::io("link", &d))?;
                    continue;
                }
                cx.links.insert((meta.dev(), meta.ino()), d.clone());
            }
            copy_file(cx, &s, &d)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
            nix::sys::stat::mknod(&d, kind, Mode::from_bits_truncate(meta.mode()), meta.rdev())
                .map_err(Error::sys("mknod", &d))?;
        } else {
            continue; // sockets belong to a live process, not to a tree
        }
        copy_meta(&s, &d, &meta)?;
    }
    Ok(())
}

fn copy_file(cx: &mut CopyCx, src: &Path, dst: &Path) -> Result<()> {
    let mut from = File::open(src).map_err(Error::io("open", src))?;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(Error::io("create", dst))?;
    if cx.reflink {
        match sys::ficlone(&to, &from) {
            Ok(()) => return Ok(()),
            Err(Errno::EOPNOTSUPP | Errno::EXDEV | Errno::EINVAL | Errno::ENOTTY) => {
                cx.reflink = false;
            }
            Err(e) => {
                return Err(Error::Sys {
                    syscall: "FICLONE",
                    path: dst.into(),
                    source: e,
                })
            }
        }
    }
    std::io::copy(&mut from, &mut to).map_err(Error::io("copy", dst))?;
    Ok(())
}

/// Owner, then mode (chown clears set-id bits), then xattrs, then timestamps.
fn copy_meta(src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<()> {
    let link = meta.file_type().is_symlink();
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
        .map_err(Error::io("lchown", dst))?;
    if !link {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(Error::io("chmod", dst))?;
    }
    copy_xattrs(src, dst, link)?;
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        dst,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(Error::sys("utimensat", dst))
}

fn copy_xattrs(src: &Path, dst: &Path, link: bool) -> Result<()> {
    let names = match xattr::list(src) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(()),
        Err(e) => {
            return Err(Error::Io {
                op: "listxattr",
                path: src.into(),
                source: e,
            })
        }
    };
    for name in names {
        let Some(value) = xattr::get(src, &name).map_err(Error::io("getxattr", src))? else {
            continue;
        };
        if let Err(e) = xattr::set(dst, &name, &value) {
            // user.* xattrs are not allowed on symlinks; nothing to preserve there.
            if !(link && e.raw_os_error() == Some(libc::EPERM)) {
                return Err(Error::Io {
                    op: "setxattr",
                    path: dst.into(),
                    source: e,
                });
            }
        }
    }
    Ok(())
}

/// How read-only is enforced for a copy-backend tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enforcement {
    /// `FS_IMMUTABLE_FL` is set on every directory and regular file: the kernel refuses writes.
    Immutable,
    /// The filesystem has no inode flags; only tend's marker records read-only.
    Unsupported,
}

/// Sets or clears `FS_IMMUTABLE_FL` on every directory and regular file under `root`
/// (symlinks and device nodes cannot carry it; their immutable parents protect them).
/// With `skip_root`, the top directory itself is left alone so it can still be renamed.
pub fn set_immutable_tree(root: &Path, on: bool, skip_root: bool) -> Result<Enforcement> {
    if !skip_root && !set_immutable(root, on)? {
        return Ok(Enforcement::Unsupported);
    }
    walk_immutable(root, on)
}

fn walk_immutable(dir: &Path, on: bool) -> Result<Enforcement> {
    for entry in fs::read_dir(dir).map_err(Error::io("readdir", dir))? {
        let entry = entry.map_err(Error::io("readdir", dir))?;
        let ft = entry
            .file_type()
            .map_err(Error::io("lstat", entry.path()))?;
        if !(ft.is_dir() || ft.is_file()) {
            continue;
        }
        if !set_immutable(&entry.path(), on)? {
            return Ok(Enforcement::Unsupported);
        }
        if ft.is_dir() && walk_immutable(&entry.path(), on)? == Enforcement::Unsupported {
            return Ok(Enforcement::Unsupported);
        }
    }
    Ok(Enforcement::Immutable)
}

/// Sets or clears the flag on one inode; Ok(false) when the filesystem has no inode flags.
pub fn set_immutable(path: &Path, on: bool) -> Result<bool> {
    let f = open_noblock(path)?;
    let flags = match sys::get_flags(&f) {
        Ok(f) => f,
        Err(Errno::ENOTTY | Errno::EOPNOTSUPP | Errno::EINVAL) => return Ok(false),
        Err(e) => {
            return Err(Error::Sys {
                syscall: "FS_IOC_GETFLAGS",
                path: path.into(),
                source: e,
            })
        }
    };
    let want = if on {
        flags | sys::FS_IMMUTABLE_FL
    } else {
        flags & !sys::FS_IMMUTABLE_FL
    };
    if want != flags {
        match sys::set_flags(&f, want) {
            Ok(()) => {}
            Err(Errno::ENOTTY | Errno::EOPNOTSUPP) => return Ok(false),
            Err(e) => {
                return Err(Error::Sys {
                    syscall: "FS_IOC_SETFLAGS",
                    path: path.into(),
                    source: e,
                })
            }
        }
    }
    Ok(true)
}

/// Whether the inode at `path` carries `FS_IMMUTABLE_FL`; None when the filesystem has no
/// inode flags.
pub fn immutable(path: &Path) -> Result<Option<bool>> {
    let f = open_noblock(path)?;
    match sys::get_flags(&f) {
        Ok(flags) => Ok(Some(flags & sys::FS_IMMUTABLE_FL != 0)),
        Err(Errno::ENOTTY | Errno::EOPNOTSUPP | Errno::EINVAL) => Ok(None),
        Err(e) => Err(Error::Sys {
            syscall: "FS_IOC_GETFLAGS",
            path: path.into(),
            source: e,
        }),
    }
}

fn open_noblock(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(Error::io("open", path))
}

/// Apparent size of a tree: the sum of regular-file and symlink lengths (hard links once).
pub fn tree_size(root: &Path) -> Result<u64> {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(Error::io("readdir", &dir))? {
            let entry = entry.map_err(Error::io("readdir", &dir))?;
            let meta = entry.metadata().map_err(Error::io("lstat", entry.path()))?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.nlink() <= 1 || seen.insert((meta.dev(), meta.ino())) {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// Removes a directory tree, clearing immutable flags first; a missing path is not an error.
pub fn remove_tree(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(Error::Io {
                op: "lstat",
                path: path.into(),
                source: e,
            })
        }
        Ok(m) if !m.is_dir() => {
            fs::remove_file(path).map_err(Error::io("unlink", path))?;
            return Ok(true);
        }
        Ok(_) => {}
    }
    set_immutable_tree(path, false, false)?;
    fs::remove_dir_all(path).map_err(Error::io("rmtree", path))?;
    Ok(true)
}
