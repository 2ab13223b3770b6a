//! The Container controller's network seam, served by the Network side's `Attacher`.

use super::driver::{Attach, Attachments, DriverError};
use crate::context::Context;
use crate::network::Attacher;
use async_trait::async_trait;
use std::sync::Arc;
use tend_schema::kinds::ContainerSpec;
use tend_schema::{Kind, ObjectKey};

/// Attachments through the Network controller's attacher: named netns, one veth per network,
/// leased addresses. `ctx` is a store and index view owned by the daemon.
pub struct NetworkAttachments {
    pub attacher: Arc<Attacher>,
    pub ctx: Context,
}

#[async_trait]
impl Attachments for NetworkAttachments {
    async fn ensure(
        &self,
        namespace: &str,
        uid: &str,
        spec: &ContainerSpec,
    ) -> Result<Attach, DriverError> {
        if spec.networks.is_empty() {
            return Ok(Attach::Ready {
                netns: None,
                networks: vec![],
            });
        }
        let key = self
            .ctx
            .index
            .key_of_uid(uid)
            .filter(|k| k.kind == Kind::Container && k.namespace == namespace)
            .ok_or_else(|| format!("container {uid} is not in the index yet"))?;
        let Some(container) = self
            .ctx
            .get(&ObjectKey { ..key })
            .await
            .map_err(DriverError::failed)?
        else {
            return Err(format!("container {uid} is gone").into());
        };
        match self
            .attacher
            .ensure_attachments(&self.ctx, &container)
            .await
        {
            Ok(networks) => Ok(Attach::Ready {
                netns: Some(self.attacher.netns_path(uid)),
                networks,
            }),
            Err(e) if e.is_waiting() => Ok(Attach::Waiting {
                reason: e.reason().to_string(),
                message: e.to_string(),
            }),
            Err(e) => Err(DriverError::failed(e)),
        }
    }

    async fn remove(&self, uid: &str) -> Result<(), DriverError> {
        self.attacher
            .remove_by_uid(&self.ctx, uid)
            .await
            .map_err(DriverError::failed)
    }
}
