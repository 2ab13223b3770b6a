//! Loads an image archive into the blob store: an OCI image layout tar (`index.json`,
//! `blobs/sha256/…`) or `docker save` output (`manifest.json`, `<id>/layer.tar`). Every blob is
//! hashed before it is stored under its digest. Blocking: call from a blocking thread.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use tend_controllers::image::{FetchedImage, ImageError};

use super::blobs::{parse_config, sha256_file, BlobStore};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    layers: Vec<String>,
}

/// Loads `path` into `store`.
///
/// # Errors
/// [`ImageError::NotFound`] for a missing file, [`ImageError::BadArchive`] for one that is not
/// an image archive, [`ImageError::DigestMismatch`] for a blob that does not hash to its name.
pub fn load(store: &BlobStore, path: &Path) -> Result<FetchedImage, ImageError> {
    if !path.exists() {
        return Err(ImageError::NotFound(path.into()));
    }
    let tag: u32 = rand::random();
    let work = store.root().join("tmp").join(format!("archive-{tag:08x}"));
    std::fs::create_dir(&work).map_err(|e| other("mkdir", &work, e))?;
    let r = extract(path, &work).and_then(|links| {
        if work.join("index.json").is_file() {
            oci_layout(store, path, &work)
        } else if work.join("manifest.json").is_file() {
            docker_save(store, path, &work, &links)
        } else {
            Err(bad(
                path,
                "neither index.json (OCI image layout) nor manifest.json (docker save) in it",
            ))
        }
    });
    let _ = std::fs::remove_dir_all(&work);
    r
}

fn bad(path: &Path, why: impl std::fmt::Display) -> ImageError {
    ImageError::BadArchive(format!("archive {}: {why}", path.display()))
}

fn other(op: &str, p: &Path, e: std::io::Error) -> ImageError {
    ImageError::Other(format!("{op} {}: {e}", p.display()))
}

/// Writes the archive's regular files under `work` (no links are made: symlinks, used by
/// `docker save` for repeated layers, are returned as a map `path -> target path`).
fn extract(path: &Path, work: &Path) -> Result<HashMap<PathBuf, PathBuf>, ImageError> {
    let f = File::open(path).map_err(|e| other("open", path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut magic = [0u8; 2];
    let gz = r.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let f = File::open(path).map_err(|e| other("open", path, e))?;
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(f)))
    } else {
        Box::new(BufReader::with_capacity(1 << 20, f))
    };
    let mut ar = tar::Archive::new(reader);
    let mut links = HashMap::new();
    for e in ar.entries().map_err(|e| bad(path, e))? {
        let mut e = e.map_err(|e| bad(path, e))?;
        let name = e.path().map_err(|e| bad(path, e))?.into_owned();
        let Some(rel) = plain(&name) else {
            return Err(bad(
                path,
                format!("entry {} leaves the archive", name.display()),
            ));
        };
        match e.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let dest = work.join(&rel);
                if let Some(p) = dest.parent() {
                    std::fs::create_dir_all(p).map_err(|e| other("mkdir", p, e))?;
                }
                let mut out = File::create(&dest).map_err(|e| other("create", &dest, e))?;
                std::io::copy(&mut e, &mut out).map_err(|e| bad(path, e))?;
            }
            tar::EntryType::Symlink => {
                if let Some(t) = e.link_name().map_err(|e| bad(path, e))? {
                    let base = rel.parent().unwrap_or(Path::new("")).join(t);
                    if let Some(t) = normalize(&base) {
                        links.insert(rel, t);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(links)
}

/// A relative path of normal components, or None.
fn plain(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Resolves `..` lexically inside the archive; None when it climbs out.
fn normalize(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

fn read_json<T: serde::de::DeserializeOwned>(archive: &Path, p: &Path) -> Result<T, ImageError> {
    let body = std::fs::read(p).map_err(|e| bad(archive, format!("{}: {e}", p.display())))?;
    serde_json::from_slice(&body).map_err(|e| bad(archive, format!("{}: {e}", p.display())))
}

/// Stores the layout blob `digest` (hashing it) and returns its store path.
fn take(
    store: &BlobStore,
    archive: &Path,
    work: &Path,
    digest: &str,
) -> Result<PathBuf, ImageError> {
    let dest = store.path(digest)?;
    let hex = digest.trim_start_matches("sha256:");
    let src = work.join("blobs/sha256").join(hex);
    if !src.is_file() {
        return Err(bad(archive, format!("blob {digest} is missing")));
    }
    if dest.exists() {
        // Still checked: a wrong blob in the archive is a wrong archive.
        if format!("sha256:{}", sha256_file(&src)?) != digest {
            return Err(ImageError::DigestMismatch(format!(
                "archive {}: blob {digest} does not hash to its name",
                archive.display()
            )));
        }
        return Ok(dest);
    }
    store.adopt(
        &src,
        digest,
        &format!("archive {} blob {digest}", archive.display()),
    )
}

fn oci_layout(store: &BlobStore, archive: &Path, work: &Path) -> Result<FetchedImage, ImageError> {
    let mut index: Index = read_json(archive, &work.join("index.json"))?;
    // An index may point at a nested index (multi-platform): follow to the linux/amd64 image.
    for _ in 0..4 {
        let pick = index
            .manifests
            .iter()
            .position(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
            })
            .or(if index.manifests.is_empty() {
                None
            } else {
                Some(0)
            })
            .ok_or_else(|| bad(archive, "index.json lists no manifest"))?;
        let d = index.manifests.swap_remove(pick);
        let p = take(store, archive, work, &d.digest)?;
        if d.media_type.contains("index") || d.media_type.contains("manifest.list") {
            index = read_json(archive, &p)?;
            continue;
        }
        let m: Manifest = read_json(archive, &p)?;
        take(store, archive, work, &m.config.digest)?;
        let config = store.read_config(&m.config.digest)?;
        let mut layers = Vec::new();
        for l in &m.layers {
            layers.push(take(store, archive, work, &l.digest)?);
        }
        return Ok(FetchedImage {
            digest: d.digest,
            layers,
            layer_digests: m.layers.into_iter().map(|l| l.digest).collect(),
            config_digest: m.config.digest,
            config,
        });
    }
    Err(bad(archive, "indexes nested too deep"))
}

fn docker_save(
    store: &BlobStore,
    archive: &Path,
    work: &Path,
    links: &HashMap<PathBuf, PathBuf>,
) -> Result<FetchedImage, ImageError> {
    let entries: Vec<DockerEntry> = read_json(archive, &work.join("manifest.json"))?;
    let e = entries
        .into_iter()
        .next()
        .ok_or_else(|| bad(archive, "manifest.json lists no image"))?;
    let resolve = |name: &str| -> Result<PathBuf, ImageError> {
        let rel = plain(Path::new(name))
            .ok_or_else(|| bad(archive, format!("{name:?} leaves the archive")))?;
        let rel = links.get(&rel).cloned().unwrap_or(rel);
        Ok(work.join(rel))
    };
    // docker save names the config by its own digest (the image id).
    let cfg_path = resolve(&e.config)?;
    let cfg_hex = sha256_file(&cfg_path)?;
    let cfg_digest = format!("sha256:{cfg_hex}");
    let stem = Path::new(&e.config)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if stem.len() == 64 && stem != cfg_hex {
        return Err(ImageError::DigestMismatch(format!(
            "archive {}: config {} hashes to {cfg_digest}",
            archive.display(),
            e.config
        )));
    }
    let config =
        parse_config(&std::fs::read(&cfg_path).map_err(|er| other("read", &cfg_path, er))?)?;
    if !store.path(&cfg_digest)?.exists() {
        store.adopt(&cfg_path, &cfg_digest, "config")?;
    }
    let mut layers = Vec::new();
    let mut layer_digests = Vec::new();
    for l in &e.layers {
        let p = resolve(l)?;
        if !p.is_file() {
            return Err(bad(archive, format!("layer {l} is missing")));
        }
        // Layers of docker save are uncompressed: their digest is the diff id.
        let digest = format!("sha256:{}", sha256_file(&p)?);
        let dest = store.path(&digest)?;
        if !dest.exists() {
            // A layer named twice is one file: copy, since adopt moves it.
            let tmp = p.with_extension("adopt");
            std::fs::copy(&p, &tmp).map_err(|er| other("copy", &p, er))?;
            store.adopt(&tmp, &digest, l)?;
        }
        layers.push(dest);
        layer_digests.push(digest);
    }
    Ok(FetchedImage {
        digest: cfg_digest.clone(),
        layers,
        layer_digests,
        config_digest: cfg_digest,
        config,
    })
}
