//! `tend image prune` and the image-content metrics: which stored image content no State
//! records any more, and how many bytes image content holds.
//!
//! # What is garbage
//! Image content is the blob store (`<state dir>/images/blobs/sha256/*`: manifests, configs,
//! layers) and, on btrfs, the layer chains (`<btrfs root>/layers/<chain id>`). A blob or chain
//! is **kept** when a State object — in any namespace, Terminating included — records it in
//! `status.image`: its manifest `digest`, `configDigest`, `layerDigests`, and the chains of
//! every prefix of those layers. Everything else is garbage: content of deleted States, of
//! digests a `pullPolicy: Always` State moved away from, and blobs of pulls that failed. State
//! trees themselves are never touched (they go with their State), nor are Sandboxes or
//! Containers (their trees are snapshots that keep their own content).
//!
//! # Guarantees
//! - The decision and the removal run under [`ImageStore::hold_exclusive`]: a pull in progress
//!   finishes and records its blobs first, and no pull starts until the prune is done.
//! - A State that has image content but records no blob digests (made by a daemon older than
//!   this record) makes the prune refuse ([`PruneError::Unrecorded`]) rather than guess; its
//!   next reconcile records them.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tend_schema::kinds::state::{StateSpec, StateStatus};
use tend_schema::store::{ListQuery, Store, StoreError};
use tend_schema::Kind;

use super::ImageStore;
use crate::snapshot::adapter::Adapter;
use crate::util::blocking;

/// What a piece of image content is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ContentKind {
    /// A blob of the blob store (manifest, config or layer).
    Blob,
    /// A layer chain (a read-only subvolume, btrfs).
    Layers,
}

impl ContentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentKind::Blob => "blob",
            ContentKind::Layers => "layers",
        }
    }
}

/// One piece of image content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    pub kind: ContentKind,
    /// The blob digest or the chain id.
    pub id: String,
    /// Its size (a chain: the apparent size of its files).
    pub bytes: u64,
}

/// What a prune found (and, unless a dry run, removed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    pub dry_run: bool,
    /// The garbage, largest first.
    pub items: Vec<Content>,
    /// Their bytes in total.
    pub bytes: u64,
    /// Content kept because a State records it.
    pub kept: usize,
    pub kept_bytes: u64,
}

/// Why a prune did not run.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// A State holds image content whose blobs are not recorded.
    #[error("State {state} holds image content but records no blob digests yet (its next reconcile records them); nothing was removed")]
    Unrecorded { state: String },
    #[error("listing States: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(String),
}

/// Prunes the image content of one daemon and reports its size.
pub struct Pruner {
    images: ImageStore,
    snapshots: Adapter,
    store: Arc<dyn Store>,
    /// Chain id → bytes: chains never change, so each is walked once.
    chain_sizes: Arc<Mutex<HashMap<String, u64>>>,
}

impl Pruner {
    pub fn new(images: ImageStore, snapshots: Adapter, store: Arc<dyn Store>) -> Self {
        Pruner {
            images,
            snapshots,
            store,
            chain_sizes: Arc::default(),
        }
    }

    /// Finds the content no State records; removes it unless `dry_run`.
    ///
    /// # Errors
    /// [`PruneError::Unrecorded`] (nothing removed), store and I/O errors (a removal that
    /// failed part-way leaves the rest; running again goes on).
    pub async fn prune(&self, dry_run: bool) -> Result<PruneReport, PruneError> {
        let _exclusive = self.images.hold_exclusive().await;
        let (blobs, chains) = self.recorded().await?;
        let stored = self.stored().await?;
        let (mut items, mut kept, mut kept_bytes) = (Vec::new(), 0, 0);
        for c in stored {
            let live = match c.kind {
                ContentKind::Blob => blobs.contains(&c.id),
                ContentKind::Layers => chains.contains(&c.id),
            };
            if live {
                kept += 1;
                kept_bytes += c.bytes;
            } else {
                items.push(c);
            }
        }
        items.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.id.cmp(&b.id)));
        let bytes = items.iter().map(|c| c.bytes).sum();
        if !dry_run {
            let (images, snaps, gone) =
                (self.images.clone(), self.snapshots.clone(), items.clone());
            blocking(move || -> Result<(), PruneError> {
                for c in &gone {
                    match c.kind {
                        ContentKind::Blob => images
                            .blobs()
                            .remove(&c.id)
                            .map(|_| ())
                            .map_err(|e| PruneError::Io(e.to_string()))?,
                        ContentKind::Layers => snaps
                            .backend()
                            .delete_chain(&c.id)
                            .map(|_| ())
                            .map_err(|e| PruneError::Io(format!("layer chain {}: {e}", c.id)))?,
                    }
                }
                Ok(())
            })
            .await?;
            let mut sizes = lock(&self.chain_sizes);
            for c in items.iter().filter(|c| c.kind == ContentKind::Layers) {
                sizes.remove(&c.id);
            }
        }
        Ok(PruneReport {
            dry_run,
            items,
            bytes,
            kept,
            kept_bytes,
        })
    }

    /// The blob digests and chain ids some State records.
    async fn recorded(&self) -> Result<(HashSet<String>, HashSet<String>), PruneError> {
        let q = ListQuery {
            kind: Some(Kind::State),
            ..Default::default()
        };
        let (mut blobs, mut chains) = (HashSet::new(), HashSet::new());
        for obj in self.store.list(&q).await?.items {
            let (Ok(spec), Ok(st)) = (
                serde_json::from_value::<StateSpec>(obj.spec.clone()),
                serde_json::from_value::<StateStatus>(obj.status.clone()),
            ) else {
                continue;
            };
            let Some(img) = st.image.filter(|_| spec.is_image()) else {
                continue;
            };
            let Some(cfg) = img.config_digest else {
                let key = obj.key().map(|k| k.to_string()).unwrap_or_default();
                return Err(PruneError::Unrecorded { state: key });
            };
            blobs.insert(img.digest);
            blobs.insert(cfg);
            let names: Vec<PathBuf> = img
                .layer_digests
                .iter()
                .map(|d| PathBuf::from(d.trim_start_matches("sha256:")))
                .collect();
            blobs.extend(img.layer_digests);
            let ids = crate::snapshot::layers::chain_ids(&names)
                .map_err(|e| PruneError::Io(e.to_string()))?;
            chains.extend(ids);
        }
        Ok((blobs, chains))
    }

    /// Every stored blob and chain with its size.
    async fn stored(&self) -> Result<Vec<Content>, PruneError> {
        let (images, snaps, sizes) = (
            self.images.clone(),
            self.snapshots.clone(),
            self.chain_sizes.clone(),
        );
        blocking(move || stored_blocking(&images, &snaps, &sizes)).await
    }

    /// Prometheus text: bytes and count of stored image content, blobs and layer chains.
    /// Reads the blob dir and the chain dir (each chain is walked once, then remembered).
    pub fn metrics(&self) -> String {
        use std::fmt::Write;
        let all =
            stored_blocking(&self.images, &self.snapshots, &self.chain_sizes).unwrap_or_default();
        let mut out = String::from(
            "# HELP tend_image_bytes Bytes held by stored image content (blobs; layer chains, btrfs).\n# TYPE tend_image_bytes gauge\n",
        );
        let mut n = String::from(
            "# HELP tend_image_objects Stored image blobs and layer chains.\n# TYPE tend_image_objects gauge\n",
        );
        for (kind, store) in [
            (ContentKind::Blob, "blobs"),
            (ContentKind::Layers, "layers"),
        ] {
            let of: Vec<&Content> = all.iter().filter(|c| c.kind == kind).collect();
            let bytes: u64 = of.iter().map(|c| c.bytes).sum();
            let _ = writeln!(out, "tend_image_bytes{{store=\"{store}\"}} {bytes}");
            let _ = writeln!(n, "tend_image_objects{{store=\"{store}\"}} {}", of.len());
        }
        out + &n
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn stored_blocking(
    images: &ImageStore,
    snaps: &Adapter,
    sizes: &Mutex<HashMap<String, u64>>,
) -> Result<Vec<Content>, PruneError> {
    let mut out: Vec<Content> = images
        .blobs()
        .list()
        .map_err(|e| PruneError::Io(e.to_string()))?
        .into_iter()
        .map(|(id, bytes)| Content {
            kind: ContentKind::Blob,
            id,
            bytes,
        })
        .collect();
    let backend = snaps.backend();
    for id in backend
        .chains()
        .map_err(|e| PruneError::Io(e.to_string()))?
    {
        let known = lock(sizes).get(&id).copied();
        let bytes = match known {
            Some(b) => b,
            None => {
                let b = backend.chain_size(&id).unwrap_or(0);
                lock(sizes).insert(id.clone(), b);
                b
            }
        };
        out.push(Content {
            kind: ContentKind::Layers,
            id,
            bytes,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_of_recorded_layers_match_the_ones_the_backend_stores() {
        // The backend names chains from the blob files' names (the digests' hex); the prune
        // derives them from the recorded digests: both must agree or a live chain is removed.
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let from_files = crate::snapshot::layers::chain_ids(&[
            PathBuf::from(format!("/x/blobs/sha256/{a}")),
            PathBuf::from(format!("/x/blobs/sha256/{b}")),
        ])
        .unwrap();
        let from_names =
            crate::snapshot::layers::chain_ids(&[PathBuf::from(&a), PathBuf::from(&b)]).unwrap();
        assert_eq!(from_files, from_names);
        assert_eq!(from_files[0], a);
    }
}
