//! Networks for docker containers: the container joins tend's own bridge, not a Docker network.
//!
//! Docker cannot start a container in an existing namespace, so it is started with network
//! `none` (its own namespace with only `lo`), and then the Container's named namespace (the path
//! the Network side's attacher created, `Attach::Ready { netns }`) is re-pointed at the
//! container's namespace: the old bind mount is detached (its namespace, and the veth in it,
//! go away) and `/proc/<pid>/ns/net` is bind-mounted in its place. The attacher's next
//! `ensure` (the reconcile the container's start event triggers) finds its veth missing in that
//! namespace and attaches it again, with the same leased address, so native and docker
//! containers share tend's bridges, leases and firewall.

use super::DockerRuntimeError;
use crate::util::blocking;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};
use tend_controllers::container::DriverError;

/// Makes the named namespace at `netns` be the network namespace of the container process
/// `pid`. Idempotent.
pub async fn adopt(uid: &str, netns: &Path, pid: u32) -> Result<(), DriverError> {
    let (uid, netns) = (uid.to_string(), netns.to_path_buf());
    blocking(move || adopt_blocking(&uid, &netns, pid))
        .await
        .map_err(DriverError::failed)
}

fn adopt_blocking(uid: &str, netns: &PathBuf, pid: u32) -> Result<(), DockerRuntimeError> {
    let err = |op: &'static str| {
        let (uid, path) = (uid.to_string(), netns.display().to_string());
        move |source| DockerRuntimeError::Netns {
            uid,
            path,
            op,
            source,
        }
    };
    let target = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let same = match (std::fs::metadata(netns), std::fs::metadata(&target)) {
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt;
            a.dev() == b.dev() && a.ino() == b.ino()
        }
        _ => false,
    };
    if same {
        return Ok(());
    }
    match umount2(netns.as_path(), MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(err("umount")(e)),
    }
    if !netns.exists() {
        std::fs::File::create(netns).map_err(|e| {
            err("create mount point")(nix::Error::from_raw(e.raw_os_error().unwrap_or(0)))
        })?;
    }
    mount(
        Some(target.as_path()),
        netns.as_path(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(err("bind mount"))
}
