//! The image driver: pulls OCI images from registries and loads image archives into a
//! content-addressed blob store under the state dir, and applies layers onto a tree. It decides
//! nothing: the State controller asks through [`ImageFetcher`], and hands the blobs to the
//! snapshot backend, which applies them inside its atomic temp-tree import
//! ([`crate::snapshot::layers`]).
//!
//! # Guarantees
//! Only verified blobs are stored under their digest; a pull killed half-way leaves temp files
//! that the next start removes, and the next pull downloads only what is missing.

pub mod archive;
pub mod auth;
pub mod blobs;
pub mod prune;
pub mod registry;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use tend_controllers::image::{FetchedImage, ImageError, ImageFetcher, ImageHold};

use crate::util::blocking;
use auth::Credentials;
use blobs::BlobStore;

/// The [`ImageFetcher`] over a blob store and registry credentials.
#[derive(Clone, Debug)]
pub struct ImageStore {
    blobs: BlobStore,
    creds: Arc<Credentials>,
    /// Pulls hold it shared, `tend image prune` exclusively ([`ImageFetcher::hold`]).
    holds: Arc<tokio::sync::RwLock<()>>,
}

impl ImageStore {
    /// A store at `root` (e.g. `<state dir>/images`) using `creds` for registries.
    pub fn new(root: &Path, creds: Credentials) -> std::io::Result<Self> {
        // Registry TLS goes through rustls with ring, the provider tend already uses for its
        // listener; installing it process-wide is idempotent (a second call is refused).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(ImageStore {
            blobs: BlobStore::new(root)?,
            creds: Arc::new(creds),
            holds: Arc::default(),
        })
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Waits until no pull holds the content, and keeps new ones waiting while it is held.
    pub async fn hold_exclusive(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.holds.clone().write_owned().await
    }

    fn puller(&self) -> registry::Puller<'_> {
        registry::Puller {
            blobs: &self.blobs,
            creds: &self.creds,
        }
    }
}

#[async_trait]
impl ImageFetcher for ImageStore {
    async fn pull(&self, reference: &str) -> Result<FetchedImage, ImageError> {
        self.puller().pull(reference).await
    }

    async fn resolve(&self, reference: &str) -> Result<String, ImageError> {
        self.puller().resolve(reference).await
    }

    async fn load_archive(&self, path: &Path) -> Result<FetchedImage, ImageError> {
        let (blobs, path): (BlobStore, PathBuf) = (self.blobs.clone(), path.into());
        blocking(move || archive::load(&blobs, &path)).await
    }

    async fn remove_stale_temps(&self) -> Result<usize, ImageError> {
        let blobs = self.blobs.clone();
        blocking(move || blobs.remove_temps()).await
    }

    async fn hold(&self) -> ImageHold {
        Box::new(self.holds.clone().read_owned().await)
    }
}
