//! Docker runtime driver: Docker containers, bridge networks and image imports through the Engine
//! API (bollard over the unix socket), every call bounded by a timeout, every object labelled.
//!
//! # Guarantees
//! - tend's code never spawns `docker`; everything goes through the Engine API.
//! - Containers and networks created here carry `dev.tend.uid` (plus namespace, name and, for
//!   containers, `dev.tend.spec-hash`); `list_owned*` only ever return labelled objects.
//! - A hung or absent dockerd gives [`DockerError::Unavailable`] after the configured timeout,
//!   never a hang. The driver can be built while dockerd is down; it connects on first use.
//! - Docker's restart policy is always "no": restarting is tend's job.

mod container;
mod error;
mod events;
mod exec;
mod image;
mod logs;
mod spec;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::{Docker, API_DEFAULT_VERSION};

pub use container::{ContainerInfo, EndpointInfo, ExecOutput, OwnedContainer};
pub use error::DockerError;
pub use events::{ContainerEvent, ContainerEventKind, DockerEvent};
pub use exec::{DockerExec, ExecChunk, ExecState};
pub use image::ImportSource;
pub use logs::{LogLine, LogOptions, LogStream};
pub use spec::{
    spec_hash, DockerSpec, NetworkAttachment, Owner, LABEL_NAME, LABEL_NAMESPACE, LABEL_SPEC_HASH,
    LABEL_UID,
};

use error::{Ctx, Target};

/// The socket used when neither an explicit path nor `DOCKER_HOST` is given.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Default bound on one Engine API call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Timeouts for the driver's calls.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// One ordinary call (inspect, create, start, list, …). Stop adds its grace period.
    pub call: Duration,
    /// Collecting the output of one `exec`.
    pub exec: Duration,
    /// Importing one image.
    pub import: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            call: DEFAULT_TIMEOUT,
            exec: Duration::from_secs(60),
            import: Duration::from_secs(600),
        }
    }
}

/// A handle on one dockerd. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct DockerDriver {
    socket: Arc<str>,
    timeouts: Timeouts,
    client: Arc<Mutex<Option<Docker>>>,
}

impl DockerDriver {
    /// A driver for the dockerd at `socket` (a path or `unix://` URL); `None` means `DOCKER_HOST`
    /// when set, else [`DEFAULT_SOCKET`]. Does not contact dockerd: that happens on first use,
    /// so tend starts while dockerd is down.
    ///
    /// # Errors
    /// `Unavailable` when `DOCKER_HOST` names something other than a unix socket.
    pub fn connect(socket: Option<&str>) -> Result<DockerDriver, DockerError> {
        let from_env = std::env::var("DOCKER_HOST").ok().filter(|s| !s.is_empty());
        let raw = socket
            .map(str::to_string)
            .or(from_env)
            .unwrap_or_else(|| DEFAULT_SOCKET.to_string());
        let path = match raw.strip_prefix("unix://") {
            Some(p) => p.to_string(),
            None if raw.contains("://") => {
                return Err(DockerError::Unavailable {
                    op: "connect",
                    socket: raw,
                    reason: "only unix sockets are supported".into(),
                })
            }
            None => raw,
        };
        Ok(DockerDriver {
            socket: path.into(),
            timeouts: Timeouts::default(),
            client: Arc::new(Mutex::new(None)),
        })
    }

    /// The same driver with other timeouts.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> DockerDriver {
        self.timeouts = timeouts;
        self
    }

    /// The unix socket path this driver talks to.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Checks that dockerd answers (`/_ping`), within the call timeout.
    pub async fn ping(&self) -> Result<(), DockerError> {
        let ctx = self.ctx("ping", "", Target::Container);
        self.call(&ctx, |d| async move { d.ping().await.map(|_| ()) })
            .await
    }

    fn ctx<'a>(&'a self, op: &'static str, object: &'a str, target: Target) -> Ctx<'a> {
        Ctx {
            op,
            object,
            target,
            socket: &self.socket,
        }
    }

    /// The bollard client, built and version-negotiated on first successful use. Each request
    /// opens a fresh connection, so a built client survives dockerd restarts.
    async fn client(&self, ctx: &Ctx<'_>) -> Result<Docker, DockerError> {
        if let Some(d) = self.client.lock().expect("docker client lock").as_ref() {
            return Ok(d.clone());
        }
        let secs = self.timeouts.call.as_secs().max(1);
        let docker = Docker::connect_with_unix(&self.socket, secs, API_DEFAULT_VERSION)
            .map_err(|e| ctx.map(e))?;
        // dockerd rejects clients newer than itself (Debian 12 ships API 1.41): negotiate down.
        let docker =
            match tokio::time::timeout(self.timeouts.call, docker.negotiate_version()).await {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => return Err(ctx.map(e)),
                Err(_) => return Err(ctx.timeout(self.timeouts.call)),
            };
        *self.client.lock().expect("docker client lock") = Some(docker.clone());
        Ok(docker)
    }

    /// Runs one Engine API call bounded by the call timeout.
    async fn call<T, F, Fut>(&self, ctx: &Ctx<'_>, f: F) -> Result<T, DockerError>
    where
        F: FnOnce(Docker) -> Fut,
        Fut: Future<Output = Result<T, BollardError>>,
    {
        self.call_within(ctx, self.timeouts.call, f).await
    }

    /// Runs one Engine API call bounded by `limit` (bollard's own timeout raised to match).
    async fn call_within<T, F, Fut>(
        &self,
        ctx: &Ctx<'_>,
        limit: Duration,
        f: F,
    ) -> Result<T, DockerError>
    where
        F: FnOnce(Docker) -> Fut,
        Fut: Future<Output = Result<T, BollardError>>,
    {
        let docker = self.client(ctx).await?;
        let docker = if limit > self.timeouts.call {
            docker.with_timeout(limit + Duration::from_secs(1))
        } else {
            docker
        };
        match tokio::time::timeout(limit, f(docker)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ctx.map(e)),
            Err(_) => Err(ctx.timeout(limit)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_accept_unix_urls_and_refuse_tcp() {
        let d = DockerDriver::connect(Some("unix:///tmp/x.sock")).unwrap();
        assert_eq!(d.socket(), "/tmp/x.sock");
        let d = DockerDriver::connect(Some("/tmp/y.sock")).unwrap();
        assert_eq!(d.socket(), "/tmp/y.sock");
        assert!(DockerDriver::connect(Some("tcp://1.2.3.4:2375"))
            .unwrap_err()
            .is_unavailable());
    }

    #[tokio::test]
    async fn a_missing_socket_is_unavailable_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let d = DockerDriver::connect(Some(sock.to_str().unwrap())).unwrap();
        let err = d.ping().await.unwrap_err();
        assert!(err.is_unavailable(), "{err}");
    }

    #[tokio::test]
    async fn a_silent_socket_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        // Accepts connections but never answers: a hung dockerd.
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let d = DockerDriver::connect(Some(sock.to_str().unwrap()))
            .unwrap()
            .with_timeouts(Timeouts {
                call: Duration::from_millis(300),
                ..Timeouts::default()
            });
        let t0 = std::time::Instant::now();
        let err = d.ping().await.unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(3));
    }
}
