//! Registry credentials from a docker `config.json` (`{"auths": {"host:port": {"auth":
//! base64(user:password)}}}`, or `username`/`password` fields), as `docker login` writes it.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use serde::Deserialize;

/// Basic credentials per registry host.
#[derive(Clone, Default)]
pub struct Credentials {
    by_host: HashMap<String, (String, String)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("hosts", &self.by_host.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl Credentials {
    /// Reads a docker `config.json`.
    ///
    /// # Errors
    /// A message naming the file and what is wrong in it (the secrets are never printed).
    pub fn load(path: &Path) -> Result<Self, String> {
        let body =
            std::fs::read(path).map_err(|e| format!("registry auth {}: {e}", path.display()))?;
        Self::parse(&body).map_err(|e| format!("registry auth {}: {e}", path.display()))
    }

    fn parse(body: &[u8]) -> Result<Self, String> {
        let cfg: ConfigFile = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let mut by_host = HashMap::new();
        for (key, e) in cfg.auths {
            let pair = match (e.auth, e.username, e.password) {
                (Some(a), _, _) if !a.is_empty() => {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(a.trim())
                        .map_err(|_| format!("auths.{key:?}.auth is not base64"))?;
                    let s = String::from_utf8(raw)
                        .map_err(|_| format!("auths.{key:?}.auth is not UTF-8"))?;
                    let (u, p) = s
                        .split_once(':')
                        .ok_or(format!("auths.{key:?}.auth is not user:password"))?;
                    (u.to_string(), p.to_string())
                }
                (_, Some(u), Some(p)) => (u, p),
                _ => continue,
            };
            by_host.insert(host_of(&key).to_string(), pair);
        }
        Ok(Credentials { by_host })
    }

    /// The credentials for `registry` (`host[:port]`), if any.
    pub fn for_registry(&self, registry: &str) -> Option<&(String, String)> {
        self.by_host.get(registry)
    }
}

/// `https://host:port/v1/` → `host:port` (docker writes keys both ways).
fn host_of(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_login_output_parses() {
        let body = br#"{"auths": {"127.0.0.1:5000": {"auth": "dXNlcjpwYTpzcw=="},
            "https://reg.example.com/v1/": {"username": "u", "password": "p"}, "empty": {}}}"#;
        let c = Credentials::parse(body).unwrap();
        assert_eq!(
            c.for_registry("127.0.0.1:5000"),
            Some(&("user".into(), "pa:ss".into()))
        );
        assert_eq!(
            c.for_registry("reg.example.com"),
            Some(&("u".into(), "p".into()))
        );
        assert!(c.for_registry("empty").is_none());
        assert!(!format!("{c:?}").contains("pa:ss"));
        assert!(Credentials::parse(br#"{"auths": {"h": {"auth": "%%%"}}}"#).is_err());
    }
}
