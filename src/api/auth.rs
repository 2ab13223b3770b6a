//! Bearer tokens in `<state-dir>/tokens.json` (0600): who may read and write which namespaces.
//!
//! The file is the only truth: `tend token …` edits it, the server re-reads it whenever its
//! inode, size or mtime changes (one `stat` per request). Secrets are never logged.

use super::error::{ApiError, ApiResult};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Errors reading or writing the token file.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid token file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no token with id {0:?}")]
    NoSuchToken(String),
}

/// One token. An empty `namespaces` list means every namespace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    pub id: String,
    pub secret: String,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub read_only: bool,
    pub created_at: tend_schema::Time,
}

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenFile {
    pub tokens: Vec<Token>,
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl TokenFile {
    /// Reads the file; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| AuthError::Parse {
                path: path.into(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(AuthError::Read {
                path: path.into(),
                source,
            }),
        }
    }

    /// Reads the file, lets `change` edit it and writes it back, all under an exclusive
    /// `flock` on `<path>.lock`, so concurrent `tend token` runs never lose each other's edit.
    ///
    /// # Guarantees
    /// The file is replaced atomically (temp file 0600, then rename): a reader (the daemon)
    /// sees the old or the new file, never a half-written one. Nothing is written when
    /// `change` fails.
    ///
    /// # Errors
    /// The lock file's open or lock, the read, `change`'s own error, the write.
    pub fn update<T>(
        path: &Path,
        change: impl FnOnce(&mut Self) -> Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        let _lock = Self::lock(path)?;
        let mut f = Self::load(path)?;
        let out = change(&mut f)?;
        f.save(path)?;
        Ok(out)
    }

    fn lock(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, AuthError> {
        let lock_path = path.with_extension("json.lock");
        let werr = |source| AuthError::Write {
            path: lock_path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(werr)?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| werr(errno.into()))
    }

    /// Writes atomically (temp file 0600, then rename); callers that read first hold the lock
    /// ([`Self::update`]).
    pub fn save(&self, path: &Path) -> Result<(), AuthError> {
        let tmp = path.with_extension("json.tmp");
        let werr = |source| AuthError::Write {
            path: path.into(),
            source,
        };
        let body = serde_json::to_vec_pretty(self).expect("tokens serialize");
        {
            use std::io::Write;
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(werr)?;
            f.write_all(&body).map_err(werr)?;
        }
        std::fs::rename(&tmp, path).map_err(werr)
    }

    /// Adds a token and returns it (with its secret, shown once to the user).
    pub fn create(
        &mut self,
        id: Option<String>,
        namespaces: Vec<String>,
        read_only: bool,
    ) -> Token {
        let t = Token {
            id: id.unwrap_or_else(|| random_hex(4)),
            secret: format!("tend_{}", random_hex(24)),
            namespaces,
            read_only,
            created_at: tend_schema::meta::now(),
        };
        self.tokens.push(t.clone());
        t
    }

    pub fn revoke(&mut self, id: &str) -> Result<(), AuthError> {
        let before = self.tokens.len();
        self.tokens.retain(|t| t.id != id);
        if self.tokens.len() == before {
            return Err(AuthError::NoSuchToken(id.into()));
        }
        Ok(())
    }

    /// The admin token, created (and the file written) if there is none yet.
    pub fn ensure_admin(path: &Path) -> Result<Token, AuthError> {
        if let Some(t) = Self::load(path)?
            .tokens
            .into_iter()
            .find(|t| t.id == "admin")
        {
            return Ok(t);
        }
        Self::update(path, |f| {
            if let Some(t) = f.tokens.iter().find(|t| t.id == "admin") {
                return Ok(t.clone());
            }
            Ok(f.create(Some("admin".into()), vec![], false))
        })
    }
}

/// Who is asking: the unix socket's trusted local admin, or a token's holder.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// Token id ("local" on the socket): the key for per-token limits.
    pub id: String,
    /// Namespaces this identity may touch; None = all.
    pub namespaces: Option<Vec<String>>,
    pub read_only: bool,
}

impl Identity {
    pub fn local() -> Self {
        Self {
            id: "local".into(),
            namespaces: None,
            read_only: false,
        }
    }

    /// What the admission policy treats it as: limited to namespaces, or admin.
    pub fn credential(&self) -> tend_schema::policy::Credential {
        use tend_schema::policy::Credential;
        match self.namespaces {
            Some(_) => Credential::Namespaced,
            None => Credential::Admin,
        }
    }

    /// May this identity see `ns`?
    pub fn sees(&self, ns: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|list| list.iter().any(|n| n == ns))
    }

    /// 403 unless it may act on `ns` (None = cluster-wide) with or without writing.
    pub fn check(&self, ns: Option<&str>, write: bool) -> ApiResult<()> {
        if write && self.read_only {
            return Err(ApiError::forbidden(format!(
                "token {:?} is read-only",
                self.id
            )));
        }
        match ns {
            Some(ns) if !self.sees(ns) => Err(ApiError::forbidden(format!(
                "token {:?} may not access namespace {ns:?}",
                self.id
            ))),
            None if write && self.namespaces.is_some() => Err(ApiError::forbidden(format!(
                "token {:?} is limited to namespaces and may not write cluster-wide",
                self.id
            ))),
            _ => Ok(()),
        }
    }
}

/// Identifies one version of the file on disk: inode, size, mtime (s, ns).
type Stamp = (u64, u64, i64, i64);

/// The token file as the server sees it, re-read when it changes on disk.
pub struct Tokens {
    path: PathBuf,
    cached: Mutex<(Option<Stamp>, TokenFile)>,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            cached: Mutex::new((None, TokenFile::default())),
        }
    }

    /// The identity for a bearer secret, or 401.
    pub fn authenticate(&self, secret: Option<&str>) -> ApiResult<Identity> {
        let secret = secret.ok_or_else(ApiError::unauthorized)?;
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()));
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0 != stamp || stamp.is_none() {
            match TokenFile::load(&self.path) {
                Ok(f) => *cached = (stamp, f),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reload tokens; keeping the last good set");
                }
            }
        }
        cached
            .1
            .tokens
            .iter()
            .find(|t| constant_time_eq(t.secret.as_bytes(), secret.as_bytes()))
            .map(|t| Identity {
                id: t.id.clone(),
                namespaces: (!t.namespaces.is_empty()).then(|| t.namespaces.clone()),
                read_only: t.read_only,
            })
            .ok_or_else(ApiError::unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_reload_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let admin = TokenFile::ensure_admin(&path).unwrap();
        assert_eq!(TokenFile::ensure_admin(&path).unwrap(), admin);
        let tokens = Tokens::new(path.clone());
        assert_eq!(
            tokens.authenticate(Some(&admin.secret)).unwrap().namespaces,
            None
        );
        assert_eq!(tokens.authenticate(Some("nope")).unwrap_err().code, 401);
        let mut f = TokenFile::load(&path).unwrap();
        let t = f.create(None, vec!["a".into()], true);
        f.save(&path).unwrap();
        let id = tokens.authenticate(Some(&t.secret)).unwrap();
        assert!(id.read_only && id.sees("a") && !id.sees("b"));
        assert_eq!(id.check(Some("a"), true).unwrap_err().code, 403);
        f.revoke(&t.id).unwrap();
        f.save(&path).unwrap();
        assert_eq!(tokens.authenticate(Some(&t.secret)).unwrap_err().code, 401);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
