//! The Docker container runtime: [`ContainerRuntime`] over the Engine API driver
//! ([`crate::docker`]), so `spec.runtime: docker` Containers get the same reconcile loop,
//! restart policy (tend's backoff; Docker's policy is "no"), status and drift repair as native
//! ones.
//!
//! # Ownership
//! A container is `tend-<uid>`, labelled `dev.tend.uid/namespace/name/spec-hash` plus
//! `dev.tend.instance` (this daemon) and `dev.tend.generation`. Only containers with this
//! instance's label are ever listed, stopped or removed; anything else is never touched.
//!
//! # Events first
//! [`DockerRuntime::watch_events`] feeds Docker's event stream (start, die, oom, stop, destroy)
//! into the Container controller's trigger and resolves exit watchers; after dockerd comes back
//! (`Resync`) every Container this runtime has seen is reconciled again.
//!
//! # Daemon trouble
//! Every call is bounded by a timeout; an unreachable dockerd becomes
//! [`DriverError::Unavailable`] (Ready=Unknown `RuntimeUnavailable`) and opens a short circuit
//! breaker, so callers fail fast instead of each waiting out a timeout.

mod events;
mod exec;
mod mapping;
mod netns;
mod ops;

pub use mapping::{LABEL_GENERATION, LABEL_INSTANCE};

use crate::docker::{DockerDriver, DockerError, Timeouts};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tend_controllers::container::DriverError;
use tend_controllers::Context;
use tokio::sync::broadcast;

/// What can go wrong in the Docker runtime; each variant names the container or object.
#[derive(Debug, thiserror::Error)]
pub enum DockerRuntimeError {
    /// An Engine API call failed.
    #[error("container {uid}: {op}: {source}")]
    Docker {
        uid: String,
        op: &'static str,
        #[source]
        source: DockerError,
    },
    /// The Container has no `spec.image` (validation prevents this).
    #[error("container {uid}: spec.image is required for the docker runtime")]
    NoImage { uid: String },
    /// `image: {state: NAME}` names a State that is missing or not Ready.
    #[error("state {state}: {why}")]
    StateNotReady { state: String, why: String },
    /// `tend logs`/`tend exec` on a uid this instance has no container for.
    #[error("container {uid}: no docker container of this daemon")]
    NotFound { uid: String },
    /// Moving the container into its network namespace failed.
    #[error("container {uid}: netns {path}: {op}: {source}")]
    Netns {
        uid: String,
        path: String,
        op: &'static str,
        #[source]
        source: nix::Error,
    },
}

/// How long calls fail fast after dockerd was found unreachable.
const BREAKER: Duration = Duration::from_secs(2);

/// An exit-watcher wake-up: one uid, or everyone (after the event stream resynced).
#[derive(Debug, Clone)]
enum Wake {
    Uid(String),
    All,
}

/// The Docker runtime of one daemon instance. Cheap to share (`Arc`).
pub struct DockerRuntime {
    driver: DockerDriver,
    instance: String,
    /// Store and index view: resolves `image: {state: NAME}`.
    ctx: Context,
    /// uid → Docker container id, as last seen.
    ids: Mutex<HashMap<String, String>>,
    /// uid → the last inspect and when: `repair` right after the controller's `inspect` reuses
    /// it instead of asking dockerd twice in one reconcile.
    last: Mutex<HashMap<String, (Instant, crate::docker::ContainerInfo)>>,
    /// Every uid inspected: reconciled again when dockerd comes back.
    known: Mutex<HashSet<String>>,
    /// uids that have a container of this instance, once `list_owned` has listed them: a uid
    /// outside it is answered `Absent` without asking dockerd (the other-runtime check every
    /// native reconcile makes). `None` until the first list.
    have: Mutex<Option<HashSet<String>>>,
    /// Calls fail fast until then (dockerd was unreachable).
    down_until: Mutex<Option<Instant>>,
    /// Container ids Docker reported an `oom` event for (until they are destroyed).
    oom: Mutex<HashSet<String>>,
    /// Serializes imports of one State image.
    imports: tokio::sync::Mutex<()>,
    /// Held shared from resolving a State image to the container made from it, and exclusively
    /// by the sweep of unused State images, so the sweep never removes an image about to be used.
    images_in_use: tokio::sync::RwLock<()>,
    wake: broadcast::Sender<Wake>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DockerRuntime {
    /// A runtime for the dockerd at `socket` (`None`: `DOCKER_HOST`, else the default socket).
    /// Does not contact dockerd: tend starts and stays healthy while dockerd is down.
    pub fn new(
        socket: Option<&str>,
        instance: &str,
        ctx: Context,
    ) -> Result<Arc<Self>, DockerError> {
        let driver = DockerDriver::connect(socket)?.with_timeouts(Timeouts {
            call: Duration::from_secs(5),
            ..Timeouts::default()
        });
        Ok(Arc::new(Self {
            driver,
            instance: instance.to_string(),
            ctx,
            ids: Mutex::default(),
            last: Mutex::default(),
            known: Mutex::default(),
            have: Mutex::default(),
            oom: Mutex::default(),
            down_until: Mutex::default(),
            imports: tokio::sync::Mutex::default(),
            images_in_use: tokio::sync::RwLock::default(),
            wake: broadcast::channel(1024).0,
        }))
    }

    /// The driver this runtime talks through.
    pub fn driver(&self) -> &DockerDriver {
        &self.driver
    }

    /// Fails fast while the breaker is open.
    fn check_breaker(&self) -> Result<(), DriverError> {
        match *lock(&self.down_until) {
            Some(t) if Instant::now() < t => Err(DriverError::Unavailable {
                runtime: "docker",
                message: format!("dockerd at {} is unreachable", self.driver.socket()),
            }),
            _ => Ok(()),
        }
    }

    /// Maps a driver error to what the controller shows; an unreachable dockerd opens the
    /// breaker.
    fn fault(&self, uid: &str, op: &'static str, e: DockerError) -> DriverError {
        match e {
            DockerError::Unavailable { .. } => {
                *lock(&self.down_until) = Some(Instant::now() + BREAKER);
                DriverError::Unavailable {
                    runtime: "docker",
                    message: e.to_string(),
                }
            }
            DockerError::ImageNotFound { image } => DriverError::Refused {
                reason: "ImageNotFound",
                message: format!("image {image:?} not found locally (tend never pulls)"),
            },
            e if e.is_not_found() => DriverError::NotFound {
                message: e.to_string(),
            },
            source => DriverError::failed(DockerRuntimeError::Docker {
                uid: uid.to_string(),
                op,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tend_controllers::container::ContainerRuntime;
    use tend_schema::store::{OpenOptions, SqliteStore};

    #[tokio::test]
    async fn a_missing_dockerd_is_unavailable_then_fails_fast() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("t.db"), OpenOptions::default())
            .await
            .unwrap();
        let ctx = tend_controllers::Runtime::new(Arc::new(store), Default::default()).context();
        let sock = dir.path().join("docker.sock");
        let rt = DockerRuntime::new(Some(sock.to_str().unwrap()), "abcd1234", ctx).unwrap();
        let e = rt.inspect("u1").await.unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        let t = Instant::now();
        let e = rt.list_owned().await.unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert!(
            t.elapsed() < Duration::from_millis(50),
            "the breaker is open"
        );
    }
}
