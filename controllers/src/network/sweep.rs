//! The start-up orphan sweep: namespaces, links and leases of THIS daemon instance whose
//! Network or Container is gone. Objects of other instances and non-tend links are never touched.

use super::attach::{parse_alias, Attacher};
use super::NetworkError;
use crate::action::Error;
use crate::context::Context;
use std::collections::HashSet;
use tend_schema::store::{LeaseFilter, ListQuery};
use tend_schema::Kind;

/// Removes what this instance created for objects that no longer exist.
///
/// # Guarantees
/// Only namespaces named `tend-<instance>-…` and links whose alias is `tend:<instance>:…` are
/// considered; of those, only ones whose uid is absent from the store are removed.
pub(crate) async fn sweep_orphans(ctx: &Context, attacher: &Attacher) -> Result<(), Error> {
    let all = ctx.store.list(&ListQuery::default()).await?.items;
    let uids_of = |kind: Kind| -> HashSet<String> {
        all.iter()
            .filter(|o| o.kind == kind.as_str())
            .filter_map(|o| o.metadata.uid.clone())
            .collect()
    };
    let (networks, containers) = (uids_of(Kind::Network), uids_of(Kind::Container));
    let d = &*attacher.driver;
    let prefix = attacher.netns_prefix();
    let netns = d
        .list_netns(&prefix)
        .await
        .map_err(NetworkError::driver("list netns", &prefix))?;
    for name in netns {
        let uid = &name[prefix.len()..];
        if !containers.contains(uid) {
            tracing::info!(netns = %name, "removing orphaned network namespace");
            attacher.remove_by_uid(ctx, uid).await?;
        }
    }
    let links = d
        .list_links()
        .await
        .map_err(NetworkError::driver("list links", "host"))?;
    for link in links {
        let Some((instance, uid)) = link.alias.as_deref().and_then(parse_alias) else {
            continue;
        };
        if instance == attacher.instance && !networks.contains(uid) && !containers.contains(uid) {
            tracing::info!(link = %link.name, "removing orphaned link");
            d.delete_link(&link.name)
                .await
                .map_err(NetworkError::driver("delete link", &link.name))?;
        }
    }
    for lease in ctx.store.list_leases(&LeaseFilter::default()).await? {
        if !networks.contains(&lease.network_uid) {
            ctx.store.release_network_leases(&lease.network_uid).await?;
        } else if !containers.contains(&lease.owner_uid) {
            ctx.store.release_leases(&lease.owner_uid, None).await?;
        }
    }
    Ok(())
}
