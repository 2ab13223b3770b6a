//! Fixtures the suites share: a busybox root filesystem and a thread inside a network namespace.

use std::path::{Path, PathBuf};

/// Applets every busybox rootfs gets; suites add their own.
const BASE_APPLETS: &[&str] = &["sh", "echo", "sleep", "cat", "true"];

/// A root filesystem under `dir/rootfs`: the static busybox, the base applets plus `extra` as
/// links to it, and the usual empty top-level directories.
pub fn busybox_rootfs(dir: &Path, extra: &[&str]) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "data", "tmp", "proc", "dev", "sys", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in BASE_APPLETS.iter().chain(extra) {
        let link = root.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    root
}

/// Runs `f` on a thread that has entered the network namespace at `path` (a bind mount such as
/// `/run/netns/NAME`).
pub fn in_netns<T: Send + 'static>(
    path: impl AsRef<Path>,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let file = std::fs::File::open(path.as_ref()).expect("open netns");
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}
