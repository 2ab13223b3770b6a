//! Named persistent network namespaces (`ip netns add` compatible bind mounts) and netlink
//! connections opened inside them from short-lived helper threads.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};
use rtnetlink::Handle;

use super::{Error, NetDriver, Result};
use crate::util::blocking;

impl NetDriver {
    /// The bind-mount path of the namespace `name`.
    ///
    /// # Errors
    /// `InvalidName` when `name` is empty, `.`/`..`, or contains `/`.
    pub fn netns_path(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.len() > 255
        {
            return Err(Error::InvalidName {
                kind: "netns",
                name: name.to_string(),
                reason: "empty, '.', '..', longer than 255 bytes or containing '/'",
            });
        }
        Ok(self.netns_dir.join(name))
    }

    /// Creates the named namespace `name` like `ip netns add`: a fresh network namespace
    /// bind-mounted on `<netns_dir>/<name>`, so `ip netns list` shows it.
    ///
    /// # Guarantees
    /// Idempotent: an existing namespace is kept as is. The calling process's own namespace
    /// never changes: the namespace is made by `unshare` in a dedicated helper thread.
    ///
    /// # Assumptions
    /// One caller at a time per name (the reconcile loop runs one reconcile per key).
    pub async fn create_netns(&self, name: &str) -> Result<()> {
        let path = self.netns_path(name)?;
        self.prepare_netns_dir().await?;
        blocking(move || create_blocking(&path)).await
    }

    /// Makes the namespace directory exist as a shared mount, as the first `create_netns`
    /// would, so that a watch on it sees the same directory from now on. Idempotent.
    pub async fn prepare_netns_dir(&self) -> Result<()> {
        let dir = self.netns_dir.to_path_buf();
        let shared = self.shared_dir.clone();
        blocking(move || {
            if shared.get().is_none() {
                make_dir_shared(&dir)?;
                let _ = shared.set(());
            }
            Ok(())
        })
        .await
    }

    /// Bind-mounts the network namespace of process `pid` on `<netns_dir>/<name>`, as `ip netns
    /// attach` does: for a workload whose namespace lost its name. Returns false (and changes
    /// nothing) when the name is mounted already, `pid` is gone, or `pid` is in this process's
    /// own namespace (never name the host's namespace as a container's), or `pid` is not in a
    /// cgroup whose path mentions `owner_uid` (its pid was reused by another process).
    pub async fn restore_netns(&self, name: &str, pid: u32, owner_uid: &str) -> Result<bool> {
        let path = self.netns_path(name)?;
        let owner = owner_uid.to_string();
        blocking(move || {
            use std::os::unix::fs::MetadataExt;
            let cgroups =
                std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            if owner.is_empty() || !cgroups.contains(&owner) {
                return Ok(false);
            }
            let theirs = format!("/proc/{pid}/ns/net");
            let id = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
            match (id(&theirs), id("/proc/self/ns/net")) {
                (Some(a), Some(b)) if a != b => {}
                _ => return Ok(false),
            }
            if is_netns_mount(&path) {
                return Ok(false);
            }
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o000)
                .open(&path)
                .map_err(|source| Error::Io {
                    op: "create netns mount point",
                    path: path.clone(),
                    source,
                })?;
            mount(
                Some(theirs.as_str()),
                &path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|source| Error::Sys {
                op: "bind-mount netns of a running workload",
                path: path.clone(),
                source,
            })?;
            Ok(true)
        })
        .await
    }

    /// Deletes the named namespace: lazy unmount, then unlink. The kernel destroys the
    /// namespace (and the veth peers in it) once nothing else holds it. Idempotent.
    pub async fn delete_netns(&self, name: &str) -> Result<()> {
        let path = self.netns_path(name)?;
        blocking(move || delete_blocking(&path)).await
    }

    /// Whether `<netns_dir>/<name>` is a mounted network namespace.
    pub async fn netns_exists(&self, name: &str) -> Result<bool> {
        let path = self.netns_path(name)?;
        Ok(blocking(move || is_netns_mount(&path)).await)
    }

    /// Names of the namespaces in `netns_dir` that start with `prefix`, sorted.
    pub async fn list_netns(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = self.netns_dir.to_path_buf();
        let prefix = prefix.to_string();
        blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(source) => {
                    return Err(Error::Io {
                        op: "read_dir",
                        path: dir,
                        source,
                    })
                }
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect();
            names.sort();
            Ok(names)
        })
        .await
    }

    /// Opens the namespace file and a netlink connection bound inside that namespace.
    ///
    /// A helper thread `setns`es into the namespace, opens the socket (which stays bound to
    /// that namespace for its whole life) and exits; the connection task runs on the runtime.
    /// Costs one thread spawn; dropping the handle closes the connection.
    pub(crate) async fn netns_handle(&self, name: &str) -> Result<(File, Handle)> {
        let (file, (conn, handle)) = self
            .in_netns(name, |path| {
                let (conn, handle, _) =
                    rtnetlink::new_connection().map_err(|source| Error::Io {
                        op: "open netlink socket in netns",
                        path: path.to_path_buf(),
                        source,
                    })?;
                Ok((conn, handle))
            })
            .await?;
        tokio::spawn(conn);
        Ok((file, handle))
    }

    /// Runs `f` on a throwaway thread that has entered namespace `name` and the current tokio
    /// runtime (so sockets `f` opens are bound to that namespace and registered with the
    /// runtime). Returns the open namespace file with `f`'s result.
    pub(crate) async fn in_netns<T, F>(&self, name: &str, f: F) -> Result<(File, T)>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> Result<T> + Send + 'static,
    {
        let path = self.netns_path(name)?;
        let rt = tokio::runtime::Handle::current();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let res = enter_netns(&path).and_then(|file| {
                let _guard = rt.enter();
                Ok((file, f(&path)?))
            });
            let _ = tx.send(res);
        });
        rx.await.expect("netns helper thread dropped its result")
    }
}

/// Opens the namespace file and moves the calling thread into that namespace.
fn enter_netns(path: &Path) -> Result<File> {
    let file = File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            kind: "netns",
            name: path.display().to_string(),
        },
        _ => Error::Io {
            op: "open netns",
            path: path.to_path_buf(),
            source,
        },
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| Error::Sys {
        op: "setns",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(file)
}

/// Makes the namespace directory a shared mount, as `ip netns add` does, so namespace mounts
/// propagate to mount namespaces created later.
fn make_dir_shared(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        op: "create_dir_all",
        path: dir.to_path_buf(),
        source,
    })?;
    let flags = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(None::<&str>, dir, None::<&str>, flags, None::<&str>) {
        Ok(()) => return Ok(()),
        Err(Errno::EINVAL) => {}
        Err(source) => {
            return Err(Error::Sys {
                op: "mount --make-rshared",
                path: dir.to_path_buf(),
                source,
            })
        }
    }
    // Not a mount point yet: bind it onto itself, then share it.
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .and_then(|()| mount(None::<&str>, dir, None::<&str>, flags, None::<&str>))
    .map_err(|source| Error::Sys {
        op: "mount --bind, --make-rshared",
        path: dir.to_path_buf(),
        source,
    })
}

fn create_blocking(path: &Path) -> Result<()> {
    if is_netns_mount(path) {
        return Ok(());
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o000)
        .open(path)
        .map_err(|source| Error::Io {
            op: "create netns mount point",
            path: path.to_path_buf(),
            source,
        })?;
    let target = path.to_path_buf();
    let res = std::thread::spawn(move || -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|source| Error::Sys {
            op: "unshare(CLONE_NEWNET)",
            path: target.clone(),
            source,
        })?;
        let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        mount(
            Some(own.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| Error::Sys {
            op: "bind-mount netns",
            path: target,
            source,
        })
    })
    .join()
    .expect("netns creation thread panicked");
    if res.is_err() {
        let _ = std::fs::remove_file(path);
    }
    res
}

fn delete_blocking(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(source) => {
            return Err(Error::Sys {
                op: "umount2(MNT_DETACH)",
                path: path.to_path_buf(),
                source,
            })
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            op: "unlink netns",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Whether `path` is a bind mount of a namespace (its filesystem is nsfs).
fn is_netns_mount(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_are_checked_and_listing_filters_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let d = NetDriver::new(dir.path()).unwrap();
        assert!(matches!(
            d.netns_path("../x"),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(d.netns_path(""), Err(Error::InvalidName { .. })));
        for n in ["tend-a", "tend-b", "other"] {
            std::fs::write(dir.path().join(n), "").unwrap();
        }
        assert_eq!(
            d.list_netns("tend-").await.unwrap(),
            vec!["tend-a", "tend-b"]
        );
        // Plain files are not namespaces.
        assert!(!d.netns_exists("tend-a").await.unwrap());
        // Deleting an unmounted file or a missing one succeeds.
        d.delete_netns("tend-a").await.unwrap();
        d.delete_netns("tend-a").await.unwrap();
        assert_eq!(d.list_netns("tend-").await.unwrap(), vec!["tend-b"]);
    }
}
