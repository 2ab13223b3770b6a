//! The embedded btrfs default: a sparse image in the state dir, loop-mounted at `<state>/btrfs`.
//!
//! [`ensure`] is idempotent: a state dir already on btrfs is used as is; an image that is
//! mounted is reused; an image that exists but is not mounted (after a reboot) is attached and
//! mounted again; otherwise the image is created (sparse, never grown silently), formatted and
//! mounted. Loop devices are attached with `LOOP_CTL_GET_FREE` / `LOOP_SET_FD` /
//! `LOOP_SET_STATUS64` (with autoclear, so unmounting frees the device) and mounted with
//! `mount(2)`. These calls block: run them at start-up or through `util::blocking`.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;

use super::error::{Error, Result};
use super::sys;

/// Default image size: 4 GiB (sparse; only written blocks use disk).
pub const DEFAULT_IMAGE_SIZE: u64 = 4 << 30;

/// What [`ensure`] found or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The state dir itself is on btrfs; no image is used.
    NativeBtrfs,
    /// The image was already mounted.
    Reused,
    /// The image existed and was mounted again.
    Remounted,
    /// The image was created, formatted and mounted.
    Created,
}

/// Where the btrfs root is and how it got there.
#[derive(Clone, Debug)]
pub struct LoopMount {
    /// The directory to give the btrfs backend.
    pub root: PathBuf,
    /// What happened.
    pub outcome: Outcome,
    /// The loop device backing the mount, when an image is used.
    pub device: Option<PathBuf>,
}

/// `<state>/btrfs.img`.
pub fn image_path(state: &Path) -> PathBuf {
    state.join("btrfs.img")
}

/// `<state>/btrfs`.
pub fn mount_point(state: &Path) -> PathBuf {
    state.join("btrfs")
}

/// Makes sure a btrfs root exists for `state`, creating an image of `size_bytes` if needed.
///
/// # Errors
/// I/O errors on the state dir, [`Error::Mkfs`] when formatting fails (the half-made image is
/// removed), [`Error::Sys`] for the loop ioctls or `mount`.
pub fn ensure(state: &Path, size_bytes: u64) -> Result<LoopMount> {
    std::fs::create_dir_all(state).map_err(Error::io("mkdir", state))?;
    if sys::is_btrfs(state).map_err(Error::sys("statfs", state))? {
        return Ok(LoopMount {
            root: state.into(),
            outcome: Outcome::NativeBtrfs,
            device: None,
        });
    }
    let (image, mnt) = (image_path(state), mount_point(state));
    std::fs::create_dir_all(&mnt).map_err(Error::io("mkdir", &mnt))?;
    if let Some(dev) = mounted_source(&mnt)? {
        return Ok(LoopMount {
            root: mnt,
            outcome: Outcome::Reused,
            device: Some(dev),
        });
    }
    let outcome = if image.exists() {
        Outcome::Remounted
    } else {
        create_image(&image, size_bytes)?;
        Outcome::Created
    };
    let device = match attached_devices(&image)?.into_iter().next() {
        Some(dev) => {
            mount(&dev, &mnt)?;
            dev
        }
        None => attach_and_mount(&image, &mnt)?,
    };
    Ok(LoopMount {
        root: mnt,
        outcome,
        device: Some(device),
    })
}

/// Unmounts `<state>/btrfs` and detaches every loop device backed by `<state>/btrfs.img`.
/// Safe to call when nothing is mounted or attached.
pub fn unmount_and_detach(state: &Path) -> Result<()> {
    let (image, mnt) = (image_path(state), mount_point(state));
    if mounted_source(&mnt)?.is_some() {
        nix::mount::umount(&mnt).map_err(Error::sys("umount", &mnt))?;
    }
    if !image.exists() {
        return Ok(());
    }
    for dev in attached_devices(&image)? {
        let f = match OpenOptions::new().read(true).open(&dev) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::Io {
                    op: "open",
                    path: dev,
                    source: e,
                })
            }
        };
        match sys::loop_detach(&f) {
            Ok(()) | Err(Errno::ENXIO) => {}
            Err(e) => {
                return Err(Error::Sys {
                    syscall: "LOOP_CLR_FD",
                    path: dev,
                    source: e,
                })
            }
        }
    }
    Ok(())
}

/// Creates a sparse image under a temp name, formats it, renames it into place.
fn create_image(image: &Path, size_bytes: u64) -> Result<()> {
    let tmp = image.with_extension("img.tmp");
    let f = File::create(&tmp).map_err(Error::io("create", &tmp))?;
    f.set_len(size_bytes).map_err(Error::io("truncate", &tmp))?;
    drop(f);
    // mkfs.btrfs has no library equivalent (libbtrfsutil does not format); this one-time
    // format is the only subprocess in the snapshot driver.
    let out = std::process::Command::new("mkfs.btrfs")
        .arg("-q")
        .arg(&tmp)
        .output();
    let fail = match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "{}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run mkfs.btrfs: {e}")),
    };
    if let Some(reason) = fail {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Mkfs {
            path: image.into(),
            reason,
        });
    }
    std::fs::rename(&tmp, image).map_err(Error::io("rename", image))
}

/// Binds the image to a free loop device and mounts it; retries when another process wins the
/// race for the same free device.
fn attach_and_mount(image: &Path, mnt: &Path) -> Result<PathBuf> {
    let ctl_path = Path::new("/dev/loop-control");
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open(ctl_path)
        .map_err(Error::io("open", ctl_path))?;
    let img = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(Error::io("open", image))?;
    for _ in 0..16 {
        let n = sys::loop_get_free(&ctl).map_err(Error::sys("LOOP_CTL_GET_FREE", ctl_path))?;
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let devf = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev)
            .map_err(Error::io("open", &dev))?;
        match sys::loop_attach(&devf, &img, image) {
            Ok(()) => {}
            Err(Errno::EBUSY) => continue,
            Err(e) => {
                return Err(Error::Sys {
                    syscall: "LOOP_SET_FD",
                    path: dev,
                    source: e,
                })
            }
        }
        // Mount while `devf` is open: with autoclear, the last close of an unused device
        // would detach it.
        if let Err(e) = mount(&dev, mnt) {
            let _ = sys::loop_detach(&devf);
            return Err(e);
        }
        return Ok(dev);
    }
    Err(Error::Sys {
        syscall: "LOOP_SET_FD",
        path: image.into(),
        source: Errno::EBUSY,
    })
}

fn mount(dev: &Path, mnt: &Path) -> Result<()> {
    nix::mount::mount(
        Some(dev),
        mnt,
        Some("btrfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(Error::sys("mount", mnt))
}

/// The source device of the mount at exactly `mnt`, from `/proc/self/mountinfo`.
fn mounted_source(mnt: &Path) -> Result<Option<PathBuf>> {
    let info = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(info).map_err(Error::io("read", info))?;
    let mnt = mnt.canonicalize().map_err(Error::io("canonicalize", mnt))?;
    let want = mnt.to_string_lossy().replace(' ', "\\040");
    Ok(text.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(4) != Some(&want.as_str()) {
            return None;
        }
        let dash = fields.iter().position(|f| *f == "-")?;
        fields.get(dash + 2).map(PathBuf::from)
    }))
}

/// Loop devices whose backing file is `image` (from `/sys/block/loop*/loop/backing_file`).
fn attached_devices(image: &Path) -> Result<Vec<PathBuf>> {
    let image = image
        .canonicalize()
        .map_err(Error::io("canonicalize", image))?;
    let sys_block = Path::new("/sys/block");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(sys_block).map_err(Error::io("readdir", sys_block))? {
        let entry = entry.map_err(Error::io("readdir", sys_block))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) {
            if Path::new(backing.trim_end()) == image {
                out.push(PathBuf::from("/dev").join(name));
            }
        }
    }
    Ok(out)
}
