//! The content-addressed blob store under `<state dir>/images`: `blobs/sha256/<hex>` holds only
//! complete, verified blobs; downloads and archive reads go to `tmp/` first and are renamed in.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tend_controllers::image::ImageError;
use tend_schema::kinds::state::ImageConfig;

/// Blobs by digest, on local disk.
#[derive(Clone, Debug)]
pub struct BlobStore {
    root: PathBuf,
}

fn io(op: &str, p: &Path, e: std::io::Error) -> ImageError {
    ImageError::Other(format!("{op} {}: {e}", p.display()))
}

impl BlobStore {
    /// A store at `root` (created with its `blobs/sha256` and `tmp` dirs).
    pub fn new(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("blobs/sha256"))?;
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(BlobStore { root: root.into() })
    }

    /// The store's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` lives (whether or not it is there).
    ///
    /// # Errors
    /// A digest that is not `sha256:<64 lowercase hex>` (it names a path: never trusted).
    pub fn path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("blobs/sha256").join(hex_of(digest)?))
    }

    /// A fresh temp file for downloading `digest`.
    pub async fn temp(&self, digest: &str) -> std::io::Result<(PathBuf, tokio::fs::File)> {
        let hex = hex_of(digest).map_err(|e| std::io::Error::other(e.to_string()))?;
        let tag: u32 = rand::random();
        let p = self.root.join("tmp").join(format!("{hex}.{tag:08x}"));
        let f = tokio::fs::File::create(&p).await?;
        Ok((p, f))
    }

    /// Moves the file `src` in as blob `digest` after hashing it; a file that does not hash to
    /// `digest` is removed and reported as [`ImageError::DigestMismatch`]. Blocking.
    pub fn adopt(&self, src: &Path, digest: &str, what: &str) -> Result<PathBuf, ImageError> {
        let dest = self.path(digest)?;
        let got = sha256_file(src)?;
        if format!("sha256:{got}") != digest {
            let _ = std::fs::remove_file(src);
            return Err(ImageError::DigestMismatch(format!(
                "{what}: content hashes to sha256:{got}, expected {digest}"
            )));
        }
        std::fs::rename(src, &dest).map_err(|e| io("rename", &dest, e))?;
        Ok(dest)
    }

    /// Reads the image config blob `digest` and keeps its runtime defaults.
    pub fn read_config(&self, digest: &str) -> Result<ImageConfig, ImageError> {
        let p = self.path(digest)?;
        let body = std::fs::read(&p).map_err(|e| io("read", &p, e))?;
        parse_config(&body)
    }

    /// Every stored blob: its digest and size. Blocking.
    pub fn list(&self) -> Result<Vec<(String, u64)>, ImageError> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(|e| io("readdir", &dir, e))? {
            let e = e.map_err(|e| io("readdir", &dir, e))?;
            let len = e.metadata().map_err(|er| io("stat", &e.path(), er))?.len();
            out.push((format!("sha256:{}", e.file_name().to_string_lossy()), len));
        }
        Ok(out)
    }

    /// Removes the blob `digest`; Ok(false) when it was not there. Blocking.
    pub fn remove(&self, digest: &str) -> Result<bool, ImageError> {
        let p = self.path(digest)?;
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io("remove", &p, e)),
        }
    }

    /// Removes everything in `tmp/` (half-downloaded blobs of a run that was killed).
    pub fn remove_temps(&self) -> Result<usize, ImageError> {
        let dir = self.root.join("tmp");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).map_err(|e| io("readdir", &dir, e))? {
            let p = e.map_err(|e| io("readdir", &dir, e))?.path();
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(|e| io("remove", &p, e))?;
            n += 1;
        }
        Ok(n)
    }
}

/// `sha256:<hex>` → `<hex>`, checked.
fn hex_of(digest: &str) -> Result<&str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(h)
            if h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(h)
        }
        _ => Err(ImageError::BadArchive(format!(
            "{digest:?} is not a sha256 digest"
        ))),
    }
}

/// The lowercase hex sha256 of a file.
pub fn sha256_file(p: &Path) -> Result<String, ImageError> {
    let mut f = std::fs::File::open(p).map_err(|e| io("open", p, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| io("read", p, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Lowercase hex of bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    config: Option<RunConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The runtime defaults of an OCI / Docker image config JSON.
pub fn parse_config(body: &[u8]) -> Result<ImageConfig, ImageError> {
    let f: ConfigFile = serde_json::from_slice(body)
        .map_err(|e| ImageError::BadArchive(format!("image config: {e}")))?;
    let c = f.config.unwrap_or_default();
    let mut ports: Vec<String> = c
        .exposed_ports
        .unwrap_or_default()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    ports.sort();
    Ok(ImageConfig {
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        working_dir: c.working_dir.filter(|w| !w.is_empty()),
        user: c.user.filter(|u| !u.is_empty()),
        exposed_ports: ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked_before_they_name_a_path() {
        let d = tempfile::tempdir().unwrap();
        let s = BlobStore::new(d.path()).unwrap();
        assert!(s.path(&format!("sha256:{}", "a".repeat(64))).is_ok());
        for bad in [
            "sha256:../../etc",
            "md5:abc",
            &format!("sha256:{}", "A".repeat(64)),
        ] {
            assert!(s.path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn adopt_refuses_content_that_does_not_match() {
        let d = tempfile::tempdir().unwrap();
        let s = BlobStore::new(d.path()).unwrap();
        let f = d.path().join("tmp/x");
        std::fs::write(&f, b"hello").unwrap();
        let wrong = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(
            s.adopt(&f, &wrong, "t"),
            Err(ImageError::DigestMismatch(_))
        ));
        assert!(!f.exists() && !s.path(&wrong).unwrap().exists());
        std::fs::write(&f, b"hello").unwrap();
        let right = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(s.adopt(&f, right, "t").unwrap(), s.path(right).unwrap());
    }

    #[test]
    fn config_defaults_are_read() {
        let c = parse_config(
            br#"{"config": {"Entrypoint": ["/bin/a"], "Cmd": null, "Env": ["A=1"],
            "WorkingDir": "", "User": "1:2", "ExposedPorts": {"80/tcp": {}}}}"#,
        )
        .unwrap();
        assert_eq!(c.entrypoint, ["/bin/a"]);
        assert!(c.cmd.is_empty() && c.working_dir.is_none());
        assert_eq!(
            (c.user.as_deref(), c.exposed_ports.as_slice()),
            (Some("1:2"), &["80/tcp".to_string()][..])
        );
    }
}
