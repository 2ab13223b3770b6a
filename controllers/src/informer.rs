//! The shared informer: one list + watch of the store for the whole daemon, keeping the index
//! current and fanning every change out to the controllers.

use crate::controller::Reconciler;
use crate::index::{Entry, Index};
use crate::queue::Queue;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tend_schema::store::{ChangeType, ListQuery, Store, StoreError, WatchEvent};

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

/// One controller as the informer sees it: its trigger rules and its queue.
pub struct Sink {
    pub reconciler: Arc<dyn Reconciler>,
    pub queue: Arc<Queue>,
}

impl Sink {
    /// Queues whatever keys the controller wants woken by `change`. Synchronous and cheap, so
    /// the informer calls it inline: no extra task between a commit and the work queue.
    fn offer(&self, change: &Change, index: &Index) {
        for key in self.reconciler.triggers(change, index) {
            self.queue.add(key);
        }
    }
}

/// Follows the store from `revision` forever (the runtime aborts it), keeping the index current
/// and offering every change to every controller; re-lists after a gap in the history.
pub async fn run(store: Arc<dyn Store>, index: Arc<Index>, mut revision: u64, sinks: Vec<Sink>) {
    loop {
        let mut stream = match store.watch(revision).await {
            Ok(s) => s,
            Err(StoreError::TooOld { .. }) => {
                revision = relist(&*store, &index, &sinks).await;
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
                    for s in &sinks {
                        s.offer(&change, &index);
                    }
                }
                Err(StoreError::TooOld { .. }) => {
                    revision = relist(&*store, &index, &sinks).await;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "informer: watch failed; resuming");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn relist(store: &dyn Store, index: &Index, sinks: &[Sink]) -> u64 {
    loop {
        match prime(store, index).await {
            Ok(rev) => {
                tracing::warn!(
                    revision = rev,
                    "informer: change history was compacted past us; re-listed everything"
                );
                for s in sinks {
                    s.offer(&Change::Resync, index);
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
