//! The rootfs of a Container: a Ready Sandbox's path, an owned Sandbox for a State, or the host.

use super::faults::store_err;
use super::reconcile::Container;
use super::ContainerError;
use crate::action::Error;
use crate::context::Context;
use std::path::PathBuf;
use tend_schema::kinds::sandbox::{SandboxSpec, SandboxStatus};
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
