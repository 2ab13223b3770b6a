//! The shared informer: one list + watch of the store for the whole daemon, keeping the index
//! current and fanning every change out to the controllers.

use crate::index::{Entry, Index};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tend_schema::store::{ChangeType, ListQuery, Store, StoreError, WatchEvent};
use tokio::sync::mpsc;

/// A change as a controller sees it: the event, and the index entry before and after.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // Resync is rare; boxing every event would cost more.
pub enum Change {
    Event {
        event: Arc<WatchEvent>,
        previous: Option<Entry>,
        current: Option<Entry>,
    },
    /// The feed had a gap (compacted history): everything should be looked at again.
    Resync,
}

/// Lists everything into the index; returns the revision to watch from.
pub async fn prime(store: &dyn Store, index: &Index) -> Result<u64, StoreError> {
    let list = store.list(&ListQuery::default()).await?;
    index.reset(&list.items);
    Ok(list.revision)
}

/// Follows the store from `revision` until every subscriber is gone, re-listing after a gap.
pub async fn run(
    store: Arc<dyn Store>,
    index: Arc<Index>,
    mut revision: u64,
    subscribers: Vec<mpsc::Sender<Change>>,
) {
    let mut subs = subscribers;
    loop {
        let mut stream = match store.watch(revision).await {
            Ok(s) => s,
            Err(StoreError::TooOld { .. }) => {
                revision = relist(&*store, &index, &mut subs).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "informer: cannot watch the store; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        while let Some(item) = stream.next().await {
            match item {
                Ok(ev) => {
                    revision = ev.revision;
                    let (previous, current) = match ev.type_ {
                        ChangeType::Deleted => match ev.object.key() {
                            Ok(k) => (index.remove(&k), None),
                            Err(_) => (None, None),
                        },
                        _ => index.upsert(&ev.object),
                    };
                    let change = Change::Event {
                        event: Arc::new(ev),
                        previous,
                        current,
                    };
                    subs.retain(|s| !s.is_closed());
                    if subs.is_empty() {
                        return;
                    }
                    for s in &subs {
                        let _ = s.send(change.clone()).await;
                    }
                }
                Err(StoreError::TooOld { .. }) => {
                    revision = relist(&*store, &index, &mut subs).await;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "informer: watch failed; resuming");
                    break;
                }
            }
        }
        if subs.iter().all(|s| s.is_closed()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn relist(store: &dyn Store, index: &Index, subs: &mut [mpsc::Sender<Change>]) -> u64 {
    loop {
        match prime(store, index).await {
            Ok(rev) => {
                tracing::warn!(
                    revision = rev,
                    "informer: change history was compacted past us; re-listed everything"
                );
                for s in subs.iter() {
                    let _ = s.send(Change::Resync).await;
                }
                return rev;
            }
            Err(e) => {
                tracing::warn!(error = %e, "informer: re-list failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
