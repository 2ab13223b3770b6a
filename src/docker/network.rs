//! Docker bridge networks for tend Networks used by docker containers: same subnet and gateway
//! as the tend Network, labelled with its owner, created idempotently.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::ListNetworksOptionsBuilder;
use ipnet::Ipv4Net;

use super::error::Target;
use super::spec::{Owner, LABEL_UID};
use super::{DockerDriver, DockerError};

/// A Docker network carrying `dev.tend.uid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedNetwork {
    /// Network id.
    pub id: String,
    /// Network name.
    pub name: String,
    /// The owner from the labels.
    pub owner: Owner,
    /// IPAM subnets (CIDR strings) as Docker reports them.
    pub subnets: Vec<String>,
}

impl DockerDriver {
    /// Makes sure the bridge network `name` exists with `subnet` and `gateway`, labelled for
    /// `owner`, and returns its id. Idempotent.
    ///
    /// # Errors
    /// `NetworkMismatch` when `name` exists with another subnet or gateway or another owner
    /// (tend never changes or removes a network it does not own); `Unavailable`; `Other` (e.g. the
    /// subnet overlaps another Docker network).
    pub async fn ensure_network(
        &self,
        name: &str,
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
        owner: &Owner,
    ) -> Result<String, DockerError> {
        if let Some(id) = self.check_network(name, subnet, gateway, owner).await? {
            return Ok(id);
        }
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                driver: Some("default".into()),
                config: Some(vec![IpamConfig {
                    subnet: Some(subnet.trunc().to_string()),
                    gateway: Some(gateway.to_string()),
                    ..Default::default()
                }]),
                options: None,
            }),
            labels: Some(owner.labels()),
            ..Default::default()
        };
        let ctx = self.ctx("create network", name, Target::Network);
        match self
            .call(&ctx, |d| async move { d.create_network(request).await })
            .await
        {
            Ok(created) => Ok(created.id),
            // Lost a race with another creator: accept it if it matches.
            Err(DockerError::Conflict { .. }) => self
                .check_network(name, subnet, gateway, owner)
                .await?
                .ok_or_else(|| DockerError::NetworkNotFound {
                    network: name.to_string(),
                }),
            Err(e) => Err(e),
        }
    }

    /// `Some(id)` when `name` exists and matches; `None` when absent; `NetworkMismatch` otherwise.
    async fn check_network(
        &self,
        name: &str,
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
        owner: &Owner,
    ) -> Result<Option<String>, DockerError> {
        let ctx = self.ctx("inspect network", name, Target::Network);
        let net = match self
            .call(&ctx, |d| async move { d.inspect_network(name, None).await })
            .await
        {
            Ok(n) => n,
            Err(DockerError::NetworkNotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mismatch = |detail: String| DockerError::NetworkMismatch {
            network: name.to_string(),
            detail,
        };
        let labels = net.labels.unwrap_or_default();
        if labels.get(LABEL_UID) != Some(&owner.uid) {
            return Err(mismatch(format!(
                "owned by {:?}, not {}",
                labels.get(LABEL_UID),
                owner.uid
            )));
        }
        let configs = net.ipam.and_then(|i| i.config).unwrap_or_default();
        let want = (subnet.trunc().to_string(), gateway.to_string());
        let found = configs.iter().any(|c| {
            c.subnet.as_deref() == Some(want.0.as_str())
                && c.gateway.as_deref() == Some(want.1.as_str())
        });
        if !found {
            return Err(mismatch(format!(
                "want subnet {} gateway {}, have {:?}",
                want.0, want.1, configs
            )));
        }
        Ok(net.id)
    }

    /// Removes a network. Idempotent: false when it was already gone.
    ///
    /// # Errors
    /// `Conflict`/`Other` while containers are still attached; `Unavailable`.
    pub async fn remove_network(&self, name: &str) -> Result<bool, DockerError> {
        let ctx = self.ctx("remove network", name, Target::Network);
        match self
            .call(&ctx, |d| async move { d.remove_network(name).await })
            .await
        {
            Ok(()) => Ok(true),
            Err(DockerError::NetworkNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every Docker network carrying `dev.tend.uid`; never an unlabelled one.
    pub async fn list_owned_networks(&self) -> Result<Vec<OwnedNetwork>, DockerError> {
        let ctx = self.ctx("list networks", LABEL_UID, Target::Network);
        let filters = HashMap::from([("label", vec![LABEL_UID])]);
        let opts = ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let list = self
            .call(&ctx, |d| async move { d.list_networks(Some(opts)).await })
            .await?;
        Ok(list
            .into_iter()
            .filter_map(|n| {
                let owner = Owner::from_labels(n.labels.as_ref()?)?;
                let subnets = n
                    .ipam
                    .and_then(|i| i.config)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|c| c.subnet)
                    .collect();
                Some(OwnedNetwork {
                    id: n.id?,
                    name: n.name?,
                    owner,
                    subnets,
                })
            })
            .collect())
    }
}
