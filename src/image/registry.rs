//! Pulls from an OCI distribution registry with `oci-client`: the manifest (linux/amd64 from an
//! index), then the config and every layer blob not yet in the blob store, each hashed while it
//! streams to a temp file and moved under its digest only when it matched.

use std::str::FromStr;

use futures::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tend_controllers::image::{FetchedImage, ImageError};

use super::auth::Credentials;
use super::blobs::BlobStore;

/// How many layer blobs download at once.
const PARALLEL_LAYERS: usize = 4;

/// A temp file removed when dropped (a no-op once it was renamed into the store).
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A registry client for one pull.
pub struct Puller<'a> {
    pub blobs: &'a BlobStore,
    pub creds: &'a Credentials,
}

/// Loopback registries are spoken to over plain HTTP (as Docker does); others over HTTPS.
fn is_loopback(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(h, p)| !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(registry, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Puller<'_> {
    fn client(&self, r: &Reference) -> (Client, RegistryAuth) {
        let registry = r.resolve_registry().to_string();
        let protocol = if is_loopback(&registry) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let cfg = ClientConfig {
            protocol,
            platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
            max_concurrent_download: PARALLEL_LAYERS,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..Default::default()
        };
        let auth = match self.creds.for_registry(&registry) {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        };
        (Client::new(cfg), auth)
    }

    fn parse(reference: &str) -> Result<Reference, ImageError> {
        Reference::from_str(reference)
            .map_err(|e| ImageError::PullFailed(format!("{reference}: not a reference: {e}")))
    }

    /// The manifest digest `reference` names now.
    pub async fn resolve(&self, reference: &str) -> Result<String, ImageError> {
        let r = Self::parse(reference)?;
        let (client, auth) = self.client(&r);
        let (_, digest) = client
            .pull_image_manifest(&r, &auth)
            .await
            .map_err(|e| self.classify(reference, &r, &auth, e))?;
        Ok(digest)
    }

    /// Pulls `reference` into the blob store.
    pub async fn pull(&self, reference: &str) -> Result<FetchedImage, ImageError> {
        let r = Self::parse(reference)?;
        let (client, auth) = self.client(&r);
        let err = |e| self.classify(reference, &r, &auth, e);
        let (manifest, digest) = client.pull_image_manifest(&r, &auth).await.map_err(err)?;
        // Pin the rest of the pull to the digest just resolved: a tag moved meanwhile does not
        // mix two images.
        let pinned = r.clone_with_digest(digest.clone());
        self.fetch(&client, &pinned, &manifest.config)
            .await
            .map_err(err)?;
        let config = self.blobs.read_config(&manifest.config.digest)?;
        let downloads: Vec<_> = manifest
            .layers
            .iter()
            .map(|l| self.fetch(&client, &pinned, l))
            .collect();
        futures::stream::iter(downloads)
            .buffer_unordered(PARALLEL_LAYERS)
            .try_collect::<Vec<()>>()
            .await
            .map_err(err)?;
        let layer_digests: Vec<String> = manifest.layers.iter().map(|l| l.digest.clone()).collect();
        Ok(FetchedImage {
            digest,
            layers: layer_digests
                .iter()
                .map(|d| self.blobs.path(d))
                .collect::<Result<_, _>>()?,
            layer_digests,
            config_digest: manifest.config.digest.clone(),
            config,
        })
    }

    /// Downloads one blob unless the store has it.
    async fn fetch(
        &self,
        client: &Client,
        r: &Reference,
        d: &OciDescriptor,
    ) -> Result<(), OciDistributionError> {
        let dest = self
            .blobs
            .path(&d.digest)
            .map_err(|e| OciDistributionError::GenericError(Some(e.to_string())))?;
        if tokio::fs::try_exists(&dest).await.unwrap_or(false) {
            return Ok(());
        }
        let (tmp, file) = self.blobs.temp(&d.digest).await?;
        // Removed however this ends: an error, or this download dropped because another
        // blob of the same pull failed.
        let _guard = TempFile(tmp.clone());
        let r = client.pull_blob(r, d, file).await;
        match r {
            Ok(()) => {
                tokio::fs::rename(&tmp, &dest).await?;
                // Lets a test stop the daemon between two blobs of one pull.
                crate::failpoint::check_async("image.blob")
                    .await
                    .map_err(|e| OciDistributionError::GenericError(Some(e.to_string())))
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    /// Turns a client error into what the State says: the registry's own words where it gave
    /// some, `DigestMismatch` for content that did not hash to its name.
    fn classify(
        &self,
        reference: &str,
        r: &Reference,
        auth: &RegistryAuth,
        e: OciDistributionError,
    ) -> ImageError {
        let registry = r.resolve_registry();
        match e {
            OciDistributionError::DigestError(d) => {
                ImageError::DigestMismatch(format!("pull {reference}: {d}"))
            }
            OciDistributionError::RegistryError { envelope, url } => {
                let said: Vec<String> = envelope
                    .errors
                    .iter()
                    .map(|e| {
                        let code = serde_json::to_value(&e.code)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default();
                        format!("{code}: {}", e.message)
                    })
                    .collect();
                ImageError::PullFailed(format!(
                    "pull {reference}: the registry said: {} ({url})",
                    said.join("; ")
                ))
            }
            OciDistributionError::UnauthorizedError { url } => {
                let who = match auth {
                    RegistryAuth::Basic(u, _) => {
                        format!("the credentials of user {u:?} for {registry} were refused")
                    }
                    _ => format!(
                        "{registry} wants credentials and none are configured (tend serve --registry-auth)"
                    ),
                };
                ImageError::PullFailed(format!(
                    "pull {reference}: authentication failed: {who} (401 Unauthorized from {url})"
                ))
            }
            OciDistributionError::AuthenticationFailure(m) => {
                ImageError::PullFailed(format!("pull {reference}: authentication failed: {m}"))
            }
            OciDistributionError::ImageManifestNotFoundError(m) => {
                ImageError::PullFailed(format!("pull {reference}: manifest not found: {m}"))
            }
            OciDistributionError::ServerError { code, url, message } => {
                ImageError::PullFailed(format!(
                    "pull {reference}: the registry answered {code}: {} ({url})",
                    message.trim()
                ))
            }
            OciDistributionError::RequestError(e) => {
                ImageError::PullFailed(format!("pull {reference}: {e}"))
            }
            other => ImageError::PullFailed(format!("pull {reference}: {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_use_http() {
        for r in [
            "127.0.0.1:5000",
            "localhost:443",
            "localhost",
            "[::1]:5000",
            "127.8.0.1",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "registry.example.com",
            "10.0.0.1:5000",
            "localhost.example.com:5000",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }
}
