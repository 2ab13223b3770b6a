//! The state dir's layout: every path tend keeps under `--state-dir`, named here and nowhere
//! else. Drivers and the API are handed the paths they need; they never join names themselves.

use std::path::{Path, PathBuf};

/// The paths of one state dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The state dir itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite database (`tend.db`, with its `-wal` and `-shm`).
    pub fn db(&self) -> PathBuf {
        self.root.join("tend.db")
    }

    /// The daemon's exclusive lock.
    pub fn lock(&self) -> PathBuf {
        self.root.join("tend.lock")
    }

    /// The running daemon's announcement (pid, endpoints), removed at a clean stop.
    pub fn engine_json(&self) -> PathBuf {
        self.root.join("engine.json")
    }

    /// This state dir's instance id, carried by every host object tend makes.
    pub fn instance_id(&self) -> PathBuf {
        self.root.join("instance-id")
    }

    /// Fault-injection settings read by test builds' failpoints.
    pub fn failpoints(&self) -> PathBuf {
        self.root.join("failpoints")
    }

    /// API bearer tokens.
    pub fn tokens(&self) -> PathBuf {
        self.root.join("tokens.json")
    }

    /// The admin API's unix socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("tend.sock")
    }

    /// The TLS CA's certificate (given to clients) for `--listen`.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.crt")
    }

    /// The TLS CA's private key (0600).
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }

    /// Native containers' directories (shim state, config, logs), one per uid.
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// The image blob store (`blobs/sha256/<hex>`, `tmp/`).
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_inside_the_state_dir_and_distinct() {
        let l = Layout::new("/var/lib/tend");
        let all = [
            l.db(),
            l.lock(),
            l.engine_json(),
            l.instance_id(),
            l.failpoints(),
            l.tokens(),
            l.socket(),
            l.ca_cert(),
            l.ca_key(),
            l.containers(),
        ];
        let set: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(set.len(), all.len());
        assert!(all.iter().all(|p| p.parent() == Some(l.root())));
    }
}
