//! Netlink driver: bridges, named network namespaces, veth attachments, a link/address monitor
//! and host-route checks, all through one `rtnetlink` connection (no `ip` subprocess).

pub mod adapter;
mod attach;
mod bridge;
pub mod firewall;
mod monitor;
pub mod names;
mod netns;
mod routes;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::Handle;

pub use attach::{AttachRequest, AttachmentState};
pub use bridge::{BridgeState, TendLink};
pub use monitor::{NetEvent, NetMonitor};
pub use routes::HostRoute;

/// Default directory of named network namespaces, the one `ip netns` uses.
pub const DEFAULT_NETNS_DIR: &str = "/run/netns";

/// What the net driver failed to do, with the object and the operation involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A netlink request failed.
    #[error("netlink {op} on {object}: {source}")]
    Netlink {
        op: &'static str,
        object: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// A syscall on a namespace file or directory failed.
    #[error("{op} {path}: {source}")]
    Sys {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    /// A file operation (create, open, unlink, read_dir) failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An object the operation needs does not exist.
    #[error("{kind} {name} not found")]
    NotFound { kind: &'static str, name: String },
    /// A host object exists under the name but is not what tend expects (a non-bridge link
    /// where a bridge should be, say); tend leaves it alone.
    #[error("{name}: {reason}")]
    Conflict { name: String, reason: String },
    /// A name the kernel would refuse (empty, too long, with `/` or whitespace).
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        kind: &'static str,
        name: String,
        reason: &'static str,
    },
}

/// Result alias for the net driver.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn netlink(
        op: &'static str,
        object: impl Into<String>,
    ) -> impl FnOnce(rtnetlink::Error) -> Self {
        let object = object.into();
        move |source| Error::Netlink { op, object, source }
    }

    /// The kernel errno behind a netlink error, if any (positive, like `libc::ENODEV`).
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Netlink {
                source: rtnetlink::Error::NetlinkError(m),
                ..
            } => Some(m.raw_code().abs()),
            Error::Sys { source, .. } => Some(*source as i32),
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// The errno of a raw rtnetlink error, if it carries one.
pub(crate) fn nl_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// The netlink driver. Cheap to clone; all clones share one netlink connection.
///
/// Create it inside a tokio runtime: the constructor spawns the connection task.
#[derive(Clone)]
pub struct NetDriver {
    handle: Handle,
    netns_dir: Arc<PathBuf>,
    shared_dir: Arc<OnceLock<()>>,
}

impl NetDriver {
    /// A driver whose named namespaces live in `netns_dir` (`/run/netns` in production).
    ///
    /// # Errors
    /// When the netlink socket cannot be opened.
    pub fn new(netns_dir: impl Into<PathBuf>) -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| Error::Io {
            op: "open netlink socket",
            path: PathBuf::from("NETLINK_ROUTE"),
            source,
        })?;
        tokio::spawn(conn);
        Ok(NetDriver {
            handle,
            netns_dir: Arc::new(netns_dir.into()),
            shared_dir: Arc::new(OnceLock::new()),
        })
    }

    /// A driver on the default namespace directory, [`DEFAULT_NETNS_DIR`].
    pub fn with_default_dir() -> Result<Self> {
        Self::new(DEFAULT_NETNS_DIR)
    }

    /// The directory holding the namespace bind mounts.
    pub fn netns_dir(&self) -> &Path {
        &self.netns_dir
    }

    /// The host netlink handle (for callers that need a request the driver lacks).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The host link called `name`, or `None` when it does not exist.
    pub(crate) async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>> {
        get_link(&self.handle, name).await
    }

    /// The name of the host link with this index, or `None` when there is none.
    pub(crate) async fn link_name_by_index(&self, index: u32) -> Result<Option<String>> {
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(link) => Ok(link.as_ref().and_then(link_name).map(str::to_string)),
            Err(e) if nl_errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(source) => Err(Error::Netlink {
                op: "get link",
                object: format!("index {index}"),
                source,
            }),
        }
    }
}

/// Looks a link up by name on `handle`'s namespace; ENODEV maps to `None`.
pub(crate) async fn get_link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    let mut links = handle.link().get().match_name(name).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if nl_errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(source) => Err(Error::Netlink {
            op: "get link",
            object: name.to_string(),
            source,
        }),
    }
}

/// The name attribute of a link message.
pub(crate) fn link_name(msg: &LinkMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

/// Whether the link is administratively up.
pub fn link_up(msg: &LinkMessage) -> bool {
    msg.header.flags.contains(LinkFlags::Up)
}

/// The MTU attribute of a link message.
pub(crate) fn link_mtu(msg: &LinkMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

/// The master (bridge) index of a link message.
pub fn link_master(msg: &LinkMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

/// Rejects names the kernel refuses for interfaces (IFNAMSIZ is 16 with the NUL).
pub(crate) fn check_ifname(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > 15 {
        "longer than 15 bytes"
    } else if name.contains(['/', ':']) || name.chars().any(char::is_whitespace) {
        "contains '/', ':' or whitespace"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        kind: "interface",
        name: name.to_string(),
        reason,
    })
}
