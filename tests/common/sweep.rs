//! Last-resort cleanup of a test daemon's instance, also when the test failed: whatever the
//! daemon did not remove is removed here by PID (with start time), name prefix, link alias and
//! Docker label — all carrying this state dir's instance id, so nothing of another test (or of
//! anything that is not tend's) is touched.

use std::path::Path;
use std::process::Command;

/// Removes what is left of the instance of `state_dir`: shims and workloads, named network
/// namespaces, cgroups, links, its nftables table, Docker containers, the embedded btrfs image; and makes the
/// copy backend's immutable trees removable, so the temp dir can go.
pub fn instance_leftovers(state_dir: &Path) {
    let Ok(inst) = std::fs::read_to_string(state_dir.join("instance-id")) else {
        return;
    };
    let inst = inst.trim();
    tend::shim::kill_recorded(&state_dir.join("containers"));
    // tend's nftables table (`ip tend-<instance>`) outlives its daemon by design.
    if let Err(e) = tend::net::firewall::Firewall::delete_table(inst) {
        eprintln!("sweep: nftables table of {inst} left: {e}");
    }
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name()
            .to_string_lossy()
            .starts_with(&format!("tend-{inst}-"))
        {
            let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(e.path());
        }
    }
    // Every hierarchy, not only the one the daemon's manager uses (v1 controllers, the unified
    // mount of a hybrid host, or the v2 tree).
    let groups = tend::cgroup::find_groups(Path::new("/sys/fs/cgroup"), &format!("{inst}-"));
    for dir in groups.unwrap_or_default() {
        if let Err(e) = tend::cgroup::kill_and_remove_dir(&dir) {
            eprintln!("sweep: cgroup {} left: {e}", dir.display());
        }
    }
    for e in std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
    {
        let alias = std::fs::read_to_string(e.path().join("ifalias")).unwrap_or_default();
        if alias.contains(&format!("tend:{inst}:")) {
            let _ = Command::new("ip")
                .args(["link", "del"])
                .arg(e.file_name())
                .output();
        }
    }
    let filter = format!("label=dev.tend.instance={inst}");
    if let Ok(out) = Command::new("docker")
        .args(["ps", "-aq", "--filter", &filter])
        .output()
    {
        for c in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
    }
    tend::snapshot::choose::release(state_dir);
    // Copy-backend trees are immutable (chattr +i) and read-only: undo both.
    let _ = Command::new("chattr")
        .args(["-R", "-f", "-i"])
        .arg(state_dir)
        .output();
    let _ = Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(state_dir)
        .output();
}
