//! The State controller: imports a directory or tarball, snapshots another State, or freezes a
//! Sandbox into a read-only tree named by the State's uid; repairs drift; protects it in use.

use crate::action::{Action, Error};
use crate::context::Context;
use crate::controller::Reconciler;
use crate::finalizer::{self, finalizer, Cleanup, Event};
use crate::image::{FetchedImage, ImageError, ImageFetcher};
use crate::snapshot::{ImportSource, ReconcileError, SnapshotDriver, TreeClass, TreeError};
use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tend_schema::kinds::state::{ImageStatus, PullPolicy};
use tend_schema::kinds::{SandboxSpec, SandboxStatus, StateSpec, StateStatus};
use tend_schema::store::EventType;
use tend_schema::{AnyObject, ConditionStatus, Kind, Object, ObjectKey};

/// The finalizer the State controller puts on every State.
pub const FINALIZER: &str = "tend.dev/state";

/// How long a State whose source is gone waits before looking again (besides triggers).
const SOURCE_LOST_RETRY: Duration = Duration::from_secs(30);

type State = Object<StateSpec, StateStatus>;

/// Reconciles States over a [`SnapshotDriver`].
pub struct StateReconciler {
    /// The snapshot backend.
    pub driver: Arc<dyn SnapshotDriver>,
    /// Registries and image archives; `None`: image sources fail with `ImagePullFailed`.
    pub images: Option<Arc<dyn ImageFetcher>>,
}

/// What the tree-making step ended with.
enum Made {
    /// The tree exists; the Ready reason to report.
    Ready(&'static str),
    /// Not yet: a condition reason and message; look again on change.
    Waiting(&'static str, String),
    /// The source cannot be used: a reason, a message, and whether to retry with backoff.
    Failed(&'static str, String, bool),
}

#[async_trait]
impl Reconciler for StateReconciler {
    fn kind(&self) -> Kind {
        Kind::State
    }

    async fn observe(&self, _ctx: &Context) -> Result<(), Error> {
        if let Some(images) = &self.images {
            let n = images.remove_stale_temps().await?;
            tracing::info!(removed = n, "half-downloaded image blobs removed");
        }
        crate::snapshot::observe_class(&*self.driver, TreeClass::States).await
    }

    async fn reconcile(&self, ctx: &Context, key: &ObjectKey) -> Result<Action, Error> {
        finalizer(ctx, FINALIZER, key, |ev| async move {
            match ev {
                Event::Apply(obj) => self.apply(ctx, key, obj).await.map(Into::into),
                Event::Cleanup(obj) => self.cleanup(ctx, key, obj).await.map(Into::into),
            }
        })
        .await
    }
}

fn decode(key: &ObjectKey, obj: &AnyObject) -> Result<(State, String), ReconcileError> {
    crate::snapshot::decode(key, obj)
}

impl StateReconciler {
    async fn apply(&self, ctx: &Context, key: &ObjectKey, obj: AnyObject) -> Result<Action, Error> {
        let (st, uid) = decode(key, &obj)?;
        // Held until the status naming the image's blobs is written (`tend image prune`).
        let _hold = match (&self.images, st.spec.is_image()) {
            (Some(images), true) => Some(images.hold().await),
            _ => None,
        };
        let gen = obj.metadata.generation;
        let mut status = st.status.clone();
        let d = &self.driver;
        let made = match d
            .stat(TreeClass::States, &uid)
            .await
            .map_err(ReconcileError::tree(key, "stat"))?
        {
            // Made, but the daemon stopped before writing what it unpacked (or a daemon before
            // blob digests were recorded made it): fetch again (the blobs are on disk, so only
            // the manifest is asked for).
            Some(true)
                if st.spec.is_image()
                    && status
                        .image
                        .as_ref()
                        .is_none_or(|i| i.config_digest.is_none()) =>
            {
                match self.fetch(&st.spec).await {
                    Ok(img) => {
                        status.image = Some(image_status(&st.spec, &img));
                        Made::Ready(ready_reason(&st.spec))
                    }
                    Err(e) => Made::Failed(e.reason(), e.to_string(), true),
                }
            }
            Some(true)
                if st.spec.pull_policy == Some(PullPolicy::Always)
                    && st.spec.source.image.is_some() =>
            {
                self.repull(ctx, key, &obj, &st, &uid, &mut status).await?
            }
            Some(true) => Made::Ready(ready_reason(&st.spec)),
            Some(false) => {
                d.set_read_only(TreeClass::States, &uid, true)
                    .await
                    .map_err(ReconcileError::tree(key, "set read-only"))?;
                ctx.drift_repaired();
                ctx.event(
                    &obj,
                    EventType::Warning,
                    "DriftRepaired",
                    "the tree was made writable behind tend's back; it is read-only again",
                )
                .await;
                Made::Ready(ready_reason(&st.spec))
            }
            None => self.make(ctx, key, &obj, &st, &uid, &mut status).await?,
        };
        let action = match made {
            Made::Ready(reason) => {
                if status.path.is_none() || status.size_bytes.is_none() {
                    let info = d
                        .inspect(TreeClass::States, &uid)
                        .await
                        .map_err(ReconcileError::tree(key, "inspect"))?;
                    status.size_bytes = info.map(|i| i.size_bytes);
                }
                status.path = Some(d.path(TreeClass::States, &uid).display().to_string());
                status.backend = Some(d.backend().to_string());
                status.common.phase = Some("Ready".into());
                status
                    .common
                    .set_condition("Ready", ConditionStatus::True, reason, "", gen);
                Ok(Action::await_change())
            }
            Made::Waiting(reason, msg) => {
                status.common.phase = Some("Pending".into());
                status
                    .common
                    .set_condition("Ready", ConditionStatus::False, reason, &msg, gen);
                Ok(Action::await_change())
            }
            Made::Failed(reason, msg, retry) => {
                status.common.phase = Some("Failed".into());
                status
                    .common
                    .set_condition("Ready", ConditionStatus::False, reason, &msg, gen);
                ctx.event(&obj, EventType::Warning, reason, msg.clone())
                    .await;
                if retry {
                    Err(msg)
                } else {
                    Ok(Action::requeue(SOURCE_LOST_RETRY))
                }
            }
        };
        status.common.observed_generation = gen;
        ctx.write_status(&obj, &status).await?;
        action.map_err(Into::into)
    }

    /// Builds the missing tree from the source. A State that had a tree before (status.path
    /// set) lost it behind tend's back: that is drift, reported as such.
    async fn make(
        &self,
        ctx: &Context,
        key: &ObjectKey,
        obj: &AnyObject,
        st: &State,
        uid: &str,
        status: &mut StateStatus,
    ) -> Result<Made, Error> {
        let lost = st.status.path.is_some();
        let src = &st.spec.source;
        let d = &self.driver;
        let result = if st.spec.is_image() {
            let img = match self.fetch(&st.spec).await {
                Ok(img) => img,
                Err(e) => return Ok(Made::Failed(e.reason(), e.to_string(), true)),
            };
            let r = d
                .import(uid, &ImportSource::Layers(img.layers.clone()))
                .await;
            if r.is_ok() {
                status.image = Some(image_status(&st.spec, &img));
            }
            r
        } else if let Some(p) = src.directory.as_ref().or(src.tarball.as_ref()) {
            let path = PathBuf::from(p);
            let source = if src.directory.is_some() {
                ImportSource::Directory(path)
            } else {
                ImportSource::Tarball(path)
            };
            d.import(uid, &source).await
        } else if let Some(name) = &src.state {
            let skey = ObjectKey::new(Kind::State, &key.namespace, name);
            let Some(sobj) = ctx.get(&skey).await? else {
                return Ok(Made::Waiting(
                    "WaitingForState",
                    format!("State {name:?} does not exist"),
                ));
            };
            let (s, suid) = decode(&skey, &sobj)?;
            if !s.status.common.is_ready(sobj.metadata.generation) {
                return Ok(Made::Waiting(
                    "WaitingForState",
                    format!("State {name:?} is not Ready"),
                ));
            }
            d.snapshot((TreeClass::States, &suid), (TreeClass::States, uid), true)
                .await
        } else if let Some(name) = &src.sandbox {
            if lost {
                return Ok(Made::Failed("SourceLost", format!("the tree frozen from Sandbox {name:?} was deleted behind tend's back and cannot be rebuilt; delete and recreate this State"), false));
            }
            let skey = ObjectKey::new(Kind::Sandbox, &key.namespace, name);
            let Some(sobj) = ctx.get(&skey).await? else {
                return Ok(Made::Waiting(
                    "WaitingForSandbox",
                    format!("Sandbox {name:?} does not exist"),
                ));
            };
            let sb: Object<SandboxSpec, SandboxStatus> =
                sobj.typed().map_err(|source| ReconcileError::Decode {
                    key: skey.to_string(),
                    source,
                })?;
            let suid = sobj.metadata.uid.clone().unwrap_or_default();
            if !sb.status.common.is_ready(sobj.metadata.generation) {
                return Ok(Made::Waiting(
                    "WaitingForSandbox",
                    format!("Sandbox {name:?} is not Ready"),
                ));
            }
            d.snapshot(
                (TreeClass::Sandboxes, &suid),
                (TreeClass::States, uid),
                true,
            )
            .await
        } else {
            return Ok(Made::Failed(
                "BadSource",
                "spec.source names no source".into(),
                false,
            ));
        };
        match result {
            Ok(_) => {
                if lost {
                    ctx.drift_repaired();
                    ctx.event(
                        obj,
                        EventType::Warning,
                        "DriftRepaired",
                        "the tree was deleted behind tend's back; rebuilt from its source",
                    )
                    .await;
                } else {
                    ctx.event(
                        obj,
                        EventType::Normal,
                        ready_reason(&st.spec),
                        "tree created",
                    )
                    .await;
                }
                Ok(Made::Ready(ready_reason(&st.spec)))
            }
            Err(TreeError::Exists { .. }) => Ok(Made::Waiting(
                "Importing",
                "the tree appeared meanwhile; looking again".into(),
            )),
            Err(TreeError::SourceNotFound { path }) if lost => Ok(Made::Failed(
                "SourceLost",
                format!(
                    "the tree was deleted behind tend's back and its source {} no longer exists",
                    path.display()
                ),
                true,
            )),
            Err(e @ TreeError::SourceNotFound { .. }) => {
                Ok(Made::Failed("SourceNotFound", e.to_string(), true))
            }
            Err(e @ TreeError::BadSource { .. }) => {
                Ok(Made::Failed("BadSource", e.to_string(), true))
            }
            Err(e @ TreeError::BadTarball { .. }) => {
                Ok(Made::Failed("BadTarball", e.to_string(), true))
            }
            Err(e @ TreeError::BadLayer { .. }) => {
                Ok(Made::Failed("BadLayer", e.to_string(), true))
            }
            // I/O (a full disk), ioctl or backend errors: said in the status and an event, and
            // retried with backoff; the retry makes a fresh temp tree.
            Err(e) => Ok(Made::Failed(
                "CreateFailed",
                format!("create tree: {e}"),
                true,
            )),
        }
    }

    async fn cleanup(
        &self,
        ctx: &Context,
        key: &ObjectKey,
        obj: AnyObject,
    ) -> Result<Cleanup, Error> {
        let (st, uid) = decode(key, &obj)?;
        let users = finalizer::users(ctx, key);
        let mut status = st.status.clone();
        status.common.phase = Some("Terminating".into());
        if !users.is_empty() {
            let names: Vec<String> = users.iter().map(|u| u.to_string()).collect();
            let msg = format!(
                "in use by {}; delete them first, or delete with --cascade=foreground",
                names.join(", ")
            );
            status.common.set_condition(
                "Ready",
                ConditionStatus::False,
                "InUse",
                &msg,
                obj.metadata.generation,
            );
            ctx.write_status(&obj, &status).await?;
            return Ok(Cleanup::Wait(Action::await_change()));
        }
        ctx.write_status(&obj, &status).await?;
        self.driver
            .delete(TreeClass::States, &uid)
            .await
            .map_err(ReconcileError::tree(key, "delete"))?;
        Ok(Cleanup::Done)
    }
}

impl StateReconciler {
    /// `pullPolicy: Always` (every reconcile, so at least every resync): asks the registry which
    /// digest the reference names now; a new one replaces the tree's content with the new image
    /// (pulled and verified first; the old tree goes only then). A registry that cannot be asked
    /// keeps the content as it is, with a Warning event.
    async fn repull(
        &self,
        ctx: &Context,
        key: &ObjectKey,
        obj: &AnyObject,
        st: &State,
        uid: &str,
        status: &mut StateStatus,
    ) -> Result<Made, Error> {
        let ready = Made::Ready(ready_reason(&st.spec));
        let (Some(images), Some(r)) = (&self.images, st.spec.source.image.as_deref()) else {
            return Ok(ready);
        };
        let cur = status
            .image
            .as_ref()
            .map(|i| i.digest.clone())
            .unwrap_or_default();
        let img = match images.resolve(r).await {
            Ok(now) if now == cur => return Ok(ready),
            Ok(_) => images.pull(r).await,
            Err(e) => Err(e),
        };
        let img = match img {
            Ok(img) => img,
            Err(e) => {
                let msg = format!("pullPolicy Always: {e}; keeping {cur}");
                ctx.event(obj, EventType::Warning, e.reason(), msg).await;
                return Ok(ready);
            }
        };
        self.driver
            .delete(TreeClass::States, uid)
            .await
            .map_err(ReconcileError::tree(key, "delete"))?;
        if let Err(e) = self
            .driver
            .import(uid, &ImportSource::Layers(img.layers.clone()))
            .await
        {
            return Ok(Made::Failed(
                "CreateFailed",
                format!("create tree: {e}"),
                true,
            ));
        }
        status.image = Some(image_status(&st.spec, &img));
        status.size_bytes = None;
        let msg = format!(
            "{r} now names {} (was {cur}); the tree holds it",
            img.digest
        );
        ctx.event(obj, EventType::Normal, "NewImage", msg).await;
        Ok(ready)
    }

    /// Pulls the image or loads the archive `spec` names into verified local blobs.
    async fn fetch(&self, spec: &StateSpec) -> Result<FetchedImage, ImageError> {
        let Some(images) = &self.images else {
            return Err(ImageError::PullFailed(
                "this daemon has no image support configured".into(),
            ));
        };
        match (&spec.source.image, &spec.source.oci_archive) {
            (Some(r), _) => images.pull(r).await,
            (None, Some(p)) => images.load_archive(std::path::Path::new(p)).await,
            (None, None) => Err(ImageError::Other("not an image source".into())),
        }
    }
}

/// `status.image` for an image fetched for `spec`.
fn image_status(spec: &StateSpec, img: &FetchedImage) -> ImageStatus {
    let s = &spec.source;
    ImageStatus {
        reference: s
            .image
            .clone()
            .or(s.oci_archive.clone())
            .unwrap_or_default(),
        digest: img.digest.clone(),
        layers: img.layers.len() as u32,
        config_digest: Some(img.config_digest.clone()),
        layer_digests: img.layer_digests.clone(),
        config: img.config.clone(),
    }
}

/// The Ready reason for a State made from `spec`'s source.
fn ready_reason(spec: &StateSpec) -> &'static str {
    let s = &spec.source;
    if spec.is_image() {
        "Pulled"
    } else if s.state.is_some() {
        "Snapshotted"
    } else if s.sandbox.is_some() {
        "Frozen"
    } else {
        "Imported"
    }
}
