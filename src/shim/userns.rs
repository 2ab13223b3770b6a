//! The user namespace of a workload (`securityContext.userNamespace`) and the id-mapped mount
//! of its root.
//!
//! The shim, still host root and single-threaded, makes the namespace before anything else:
//! a helper child `unshare(CLONE_NEWUSER)`s, the shim writes its `uid_map` and `gid_map`
//! (`0 <host id> <size>`, from the parent, as a privileged writer: `setgroups` stays allowed)
//! and keeps `/proc/<helper>/ns/user` open; the helper exits. With that namespace the shim
//! clones the rootfs mount (`open_tree(OPEN_TREE_CLONE)`) and id-maps it
//! (`mount_setattr(MOUNT_ATTR_IDMAP)`): through it a file owned by host uid 0 shows as uid 0 to
//! the container, and a file the container's root writes is owned by host uid 0 on disk. A
//! filesystem or kernel that refuses id-mapping is [`ShimError::Unsupported`]; nothing falls
//! back to an unmapped root.
//!
//! The workload child attaches the clone as its root (`move_mount`), builds its mounts and
//! namespaces as host root as usual, and `setns`es into the user namespace last, after
//! `pivot_root` and before its capabilities are cut and its ids set: so its mount, PID, UTS,
//! IPC and network namespaces stay owned by the initial user namespace (the container's root
//! has no power over them) and its capabilities count only inside its own user namespace.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::ForkResult;
use serde::{Deserialize, Serialize};

use super::child::exit_now;
use super::{io_err, sys_err, Result, ShimError};

/// Container ids `0..size` are host ids `host_id..host_id+size` (uids and gids alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdMap {
    /// The host id of container id 0.
    pub host_id: u32,
    /// How many ids are mapped.
    pub size: u32,
}

impl IdMap {
    /// The line written to `uid_map` and `gid_map`.
    fn line(&self) -> String {
        format!("0 {} {}\n", self.host_id, self.size)
    }
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `struct mount_attr` of `<linux/mount.h>` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Makes a user namespace with `map` and returns a descriptor of it (`/proc/<pid>/ns/user` of
/// a helper that is gone when this returns).
///
/// # Assumptions
/// The caller is single-threaded (it forks) and has not yet unshared its PID namespace (the
/// helper would become that namespace's init and take it down on exit).
pub(crate) fn create(map: IdMap) -> Result<OwnedFd> {
    let (ready_r, ready_w) = pipe()?;
    let (done_r, done_w) = pipe()?;
    // SAFETY: the shim is single-threaded here (see `run::main_from_args`); the helper only
    // makes system calls and `_exit`s.
    #[allow(unsafe_code)]
    let fork = unsafe { nix::unistd::fork() }.map_err(sys_err("fork", "user namespace helper"))?;
    let helper = match fork {
        ForkResult::Child => {
            drop(ready_r);
            drop(done_w);
            let ok = nix::sched::unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = nix::unistd::write(&ready_w, if ok { b"y" } else { b"n" });
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(done_r.as_fd(), &mut b); // EOF: the shim is done
            exit_now(0)
        }
        ForkResult::Parent { child } => child,
    };
    drop(ready_w);
    drop(done_r);
    let mut b = [0u8; 1];
    let unshared = matches!(nix::unistd::read(ready_r.as_fd(), &mut b), Ok(1)) && b[0] == b'y';
    let proc = format!("/proc/{helper}");
    let r = if unshared {
        map_and_open(&proc, map)
    } else {
        Err(ShimError::Unsupported {
            message: "securityContext.userNamespace: unshare(CLONE_NEWUSER) failed: this kernel does not allow user namespaces".into(),
        })
    };
    drop(done_w); // the helper exits; the namespace lives on in the returned descriptor
    let _ = waitpid(helper, None);
    r
}

fn map_and_open(proc: &str, map: IdMap) -> Result<OwnedFd> {
    for f in ["uid_map", "gid_map"] {
        let p = format!("{proc}/{f}");
        std::fs::write(&p, map.line()).map_err(io_err("write", &p))?;
    }
    let p = format!("{proc}/ns/user");
    Ok(OwnedFd::from(File::open(&p).map_err(io_err("open", &p))?))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("pipe2", "user namespace"))
}

/// A detached copy of the mount tree at `path`, id-mapped through `userns`.
///
/// # Errors
/// [`ShimError::Unsupported`] naming the errno when the kernel or the filesystem refuses to
/// id-map it (e.g. `EINVAL` from a filesystem without id-mapped mount support).
#[allow(unsafe_code)]
pub(crate) fn idmapped_tree(path: &Path, userns: BorrowedFd<'_>) -> Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| ShimError::Usage(format!("rootfs {path:?} contains NUL")))?;
    // SAFETY: a path string alive for the call; the kernel returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint,
        )
    };
    let fd = Errno::result(fd).map_err(sys_err("open_tree", path.display()))?;
    // SAFETY: `fd` was just returned by open_tree and is owned by nobody else.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: `attr` is a valid mount_attr of the size passed, alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    match Errno::result(r) {
        Ok(_) => Ok(tree),
        Err(e) => Err(ShimError::Unsupported {
            message: format!(
                "securityContext.userNamespace: the filesystem of {} refuses an id-mapped mount (mount_setattr(MOUNT_ATTR_IDMAP): {e}); the container is not started rather than run with unmapped files",
                path.display()
            ),
        }),
    }
}

/// Child side, between fork and exec: attaches the detached `tree` at `target`.
#[allow(unsafe_code)]
pub(crate) fn attach(tree: BorrowedFd<'_>, target: &CStr) -> nix::Result<()> {
    // SAFETY: C strings alive for the call; no memory is handed to the kernel otherwise.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    Errno::result(r).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_line_is_one_extent_from_zero() {
        let m = IdMap {
            host_id: 1_000_000_000,
            size: 65536,
        };
        assert_eq!(m.line(), "0 1000000000 65536\n");
        assert_eq!(std::mem::size_of::<MountAttr>(), 32, "MOUNT_ATTR_SIZE_VER0");
    }
}
