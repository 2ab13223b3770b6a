//! The rootfs of a Container: a Ready Sandbox's path, an owned Sandbox for a State, or the host.

use super::faults::store_err;
use super::reconcile::Container;
use super::ContainerError;
use crate::action::Error;
use crate::context::Context;
use crate::image::{container_defaults, DefaultsError};
use std::path::PathBuf;
use tend_schema::kinds::container::{ContainerSpec, ImageRef, Runtime};
use tend_schema::kinds::sandbox::{SandboxSpec, SandboxStatus};
use tend_schema::kinds::state::{ImageConfig, StateSpec, StateStatus};
use tend_schema::meta::OwnerReference;
use tend_schema::store::StoreError;
use tend_schema::{AnyObject, Kind, ObjectKey};

/// Where the workload's root comes from, or why it cannot start yet.
pub(crate) enum RootfsState {
    /// `None` is the host filesystem.
    Ready(Option<PathBuf>),
    /// The message for `WaitingForSandbox`.
    Waiting(String),
}

pub(crate) async fn resolve(ctx: &Context, c: &Container) -> Result<RootfsState, Error> {
    let ns = c.metadata.ns();
    let Some(r) = &c.spec.rootfs else {
        return Ok(RootfsState::Ready(None));
    };
    let sandbox = match (&r.sandbox, &r.state) {
        (Some(s), _) => s.clone(),
        (None, Some(state)) => owned_sandbox(ctx, c, state).await?,
        (None, None) => return Ok(RootfsState::Ready(None)),
    };
    let key = ObjectKey::new(Kind::Sandbox, ns, &sandbox);
    let Some(obj) = ctx.get(&key).await.map_err(store_err(&key, "get"))? else {
        return Ok(RootfsState::Waiting(format!(
            "sandbox {sandbox:?} does not exist"
        )));
    };
    let sb = obj
        .typed::<SandboxSpec, SandboxStatus>()
        .map_err(|source| ContainerError::Decode { key, source })?;
    match &sb.status.path {
        Some(p)
            if sb.status.common.is_ready(sb.metadata.generation)
                && !sb.metadata.is_terminating() =>
        {
            Ok(RootfsState::Ready(Some(PathBuf::from(p))))
        }
        _ => Ok(RootfsState::Waiting(format!(
            "sandbox {sandbox:?} is not Ready"
        ))),
    }
}

/// The image config of the Container's rootfs State, when that State came from an image, and
/// the State's tree.
pub(crate) async fn image_config(
    ctx: &Context,
    c: &Container,
) -> Result<Option<(ImageConfig, Option<PathBuf>)>, Error> {
    let from_rootfs = c.spec.rootfs.as_ref().and_then(|r| r.state.as_ref());
    let from_image = match &c.spec.image {
        Some(ImageRef::State { state }) => Some(state),
        _ => None,
    };
    let Some(state) = from_rootfs.or(from_image) else {
        return Ok(None);
    };
    let Some(st) = state_named(ctx, c, state).await? else {
        return Ok(None);
    };
    Ok(st
        .status
        .image
        .map(|i| (i.config, st.status.path.map(PathBuf::from))))
}

/// The spec the workload runs with: the image's defaults under the Container's own spec
/// ([`crate::image::container_defaults`]); the image's `/etc/passwd` and `/etc/group` are read
/// (from `rootfs`, else the State's own tree) only when the image names its user.
pub(crate) async fn effective_spec(
    ctx: &Context,
    c: &Container,
    rootfs: Option<&std::path::Path>,
) -> Result<Result<ContainerSpec, DefaultsError>, Error> {
    let found = image_config(ctx, c).await?;
    if found.is_none() && c.spec.runtime == Runtime::Docker {
        // A Docker image keeps its own defaults; dockerd applies them.
        return Ok(Ok(c.spec.clone()));
    }
    let (cfg, tree) = found.map_or((None, None), |(c, t)| (Some(c), t));
    let root = rootfs.map(std::path::Path::to_path_buf).or(tree);
    let (mut passwd, mut group) = (String::new(), String::new());
    if let (Some(root), Some(_)) = (root, cfg.as_ref().and_then(|i| i.user.as_ref())) {
        passwd = tokio::fs::read_to_string(root.join("etc/passwd"))
            .await
            .unwrap_or_default();
        group = tokio::fs::read_to_string(root.join("etc/group"))
            .await
            .unwrap_or_default();
    }
    Ok(container_defaults(&c.spec, cfg.as_ref(), &passwd, &group))
}

/// Makes sure the owned Sandbox `<container>-rootfs` of State `state` exists; returns its name.
async fn owned_sandbox(ctx: &Context, c: &Container, state: &str) -> Result<String, Error> {
    let name = tend_schema::kinds::container::rootfs_sandbox_name(&c.metadata.name);
    let key = ObjectKey::new(Kind::Sandbox, c.metadata.ns(), &name);
    let uid = c.metadata.uid.clone().unwrap_or_default();
    let spec = serde_json::json!({ "state": state });
    match ctx.get(&key).await.map_err(store_err(&key, "get"))? {
        None => {
            let mut sb = AnyObject::new(Kind::Sandbox, c.metadata.ns(), &name, spec);
            sb.metadata.owner_references.push(OwnerReference {
                api_version: tend_schema::API_VERSION.to_string(),
                kind: Kind::Container.as_str().to_string(),
                name: c.metadata.name.clone(),
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            });
            match ctx.store.create(sb).await {
                Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                Err(source) => return Err(store_err(&key, "create")(source).into()),
            }
        }
        Some(mut sb)
            if sb.metadata.owner_references.iter().any(|o| o.uid == uid) && sb.spec != spec =>
        {
            sb.spec = spec;
            ctx.store
                .update(sb)
                .await
                .map_err(store_err(&key, "update"))?;
        }
        Some(_) => {}
    }
    Ok(name)
}

/// The image content a Container's rootfs State holds now.
pub(crate) struct RootfsImage {
    /// The State's name.
    pub state: String,
    /// The manifest digest of `status.image`.
    pub digest: String,
}

/// The State `name` of the Container's namespace, decoded; `None` when there is none.
async fn state_named(
    ctx: &Context,
    c: &Container,
    name: &str,
) -> Result<Option<tend_schema::Object<StateSpec, StateStatus>>, Error> {
    let key = ObjectKey::new(Kind::State, c.metadata.ns(), name);
    let Some(obj) = ctx.get(&key).await.map_err(store_err(&key, "get"))? else {
        return Ok(None);
    };
    let st = obj
        .typed::<StateSpec, StateStatus>()
        .map_err(|source| ContainerError::Decode { key, source })?;
    Ok(Some(st))
}

/// For `rootfs: {state: NAME}` where that State came from an image and is Ready: its name and
/// the digest its tree holds. `None` for every other rootfs.
pub(crate) async fn rootfs_image(
    ctx: &Context,
    c: &Container,
) -> Result<Option<RootfsImage>, Error> {
    let Some(state) = c.spec.rootfs.as_ref().and_then(|r| r.state.as_ref()) else {
        return Ok(None);
    };
    let Some(st) = state_named(ctx, c, state).await? else {
        return Ok(None);
    };
    if !st.status.common.is_ready(st.metadata.generation) {
        return Ok(None);
    }
    Ok(st.status.image.map(|i| RootfsImage {
        state: state.clone(),
        digest: i.digest,
    }))
}
