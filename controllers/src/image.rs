//! The image seam the State controller calls (pull from a registry, load an archive, resolve a
//! tag) and the Container defaults an image config supplies. No OS dependency here: the driver
//! in `src/image/` talks to registries and files; [`container_defaults`] is pure.

use async_trait::async_trait;
use std::path::{Path, PathBuf};
use tend_schema::kinds::container::{ContainerSpec, EnvVar, User};
use tend_schema::kinds::state::ImageConfig;

/// An image whose blobs are all on local disk, verified against their digests.
#[derive(Clone, Debug, PartialEq)]
pub struct FetchedImage {
    /// The manifest digest (`sha256:…`).
    pub digest: String,
    /// The layer blobs in order, bottom first (compressed as stored).
    pub layers: Vec<PathBuf>,
    /// The layer digests in the same order (chain identity for layer sharing).
    pub layer_digests: Vec<String>,
    /// The config blob's digest.
    pub config_digest: String,
    /// The runtime defaults of the image config.
    pub config: ImageConfig,
}

/// Why an image could not be fetched, classified so the State controller picks the reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    /// The registry refused or failed (missing tag, wrong credentials, unreachable): the
    /// registry's own message is kept. Reason `ImagePullFailed`.
    #[error("{0}")]
    PullFailed(String),
    /// A blob or manifest did not hash to its digest. Reason `DigestMismatch`.
    #[error("{0}")]
    DigestMismatch(String),
    /// An archive that is not `docker save` output or an OCI image layout. Reason `BadArchive`.
    #[error("{0}")]
    BadArchive(String),
    /// The archive path does not exist. Reason `SourceNotFound`.
    #[error("archive {0} not found")]
    NotFound(PathBuf),
    /// Local I/O and the like.
    #[error("{0}")]
    Other(String),
}

impl ImageError {
    /// The condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::PullFailed(_) => "ImagePullFailed",
            ImageError::DigestMismatch(_) => "DigestMismatch",
            ImageError::BadArchive(_) => "BadArchive",
            ImageError::NotFound(_) => "SourceNotFound",
            ImageError::Other(_) => "ImagePullFailed",
        }
    }
}

/// Fetches images into local, verified blobs.
#[async_trait]
pub trait ImageFetcher: Send + Sync + 'static {
    /// Pulls `reference` (linux/amd64 from an index): manifest, config and every layer not yet
    /// on disk, each verified while streaming.
    ///
    /// # Guarantees
    /// A blob is stored under its digest only when complete and verified; a kill mid-pull
    /// leaves temp files that [`remove_stale_temps`](Self::remove_stale_temps) removes, and a
    /// later pull downloads only the blobs still missing.
    async fn pull(&self, reference: &str) -> Result<FetchedImage, ImageError>;
    /// Asks the registry which manifest digest `reference` names now (no blobs fetched).
    async fn resolve(&self, reference: &str) -> Result<String, ImageError>;
    /// Loads `docker save` output or an OCI image-layout tar into verified local blobs.
    async fn load_archive(&self, path: &Path) -> Result<FetchedImage, ImageError>;
    /// Removes half-downloaded blobs left by a crash (call at start-up).
    async fn remove_stale_temps(&self) -> Result<usize, ImageError>;
    /// A hold on the stored image content, taken for as long as a State's content is being
    /// made and recorded in its status; `tend image prune` waits until no hold is left (and
    /// new holds wait for it), so it never removes blobs a pull has not recorded yet.
    async fn hold(&self) -> ImageHold {
        Box::new(())
    }
}

/// See [`ImageFetcher::hold`]; dropping it releases the hold.
pub type ImageHold = Box<dyn std::any::Any + Send + Sync>;

/// Why the image defaults give no runnable workload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefaultsError {
    /// Neither the spec nor the image names a command.
    #[error("spec.command is empty and the image has no Entrypoint or Cmd")]
    NoCommand,
    /// The image's User names a user or group the image's /etc/passwd or /etc/group lacks.
    #[error("image User {0:?}: {1}")]
    User(String, String),
}

/// The spec a workload runs with when its rootfs State came from an image with `cfg`:
/// - empty `command`: image Entrypoint + (`args` if set, else image Cmd); a set `command`
///   is followed by `args`;
/// - image Env first, spec env overrides by name;
/// - image WorkingDir and User where the spec sets none (`passwd`/`group` are the image's
///   `/etc/passwd` and `/etc/group`, for a User given by name).
///
/// # Errors
/// [`DefaultsError::NoCommand`] when nothing names a command; [`DefaultsError::User`] for a
/// user name the image does not know.
pub fn container_defaults(
    spec: &ContainerSpec,
    cfg: Option<&ImageConfig>,
    passwd: &str,
    group: &str,
) -> Result<ContainerSpec, DefaultsError> {
    let mut out = spec.clone();
    let empty = ImageConfig::default();
    let cfg = cfg.unwrap_or(&empty);
    if spec.command.is_empty() {
        let tail = if spec.args.is_empty() {
            &cfg.cmd
        } else {
            &spec.args
        };
        out.command = cfg.entrypoint.iter().chain(tail).cloned().collect();
    } else {
        out.command.extend(spec.args.iter().cloned());
    }
    out.args.clear();
    if out.command.is_empty() {
        return Err(DefaultsError::NoCommand);
    }
    let mut env: Vec<EnvVar> = Vec::new();
    for kv in &cfg.env {
        let (name, value) = kv.split_once('=').unwrap_or((kv, ""));
        if spec.env.iter().any(|e| e.name == name) {
            continue;
        }
        env.push(EnvVar {
            name: name.into(),
            value: value.into(),
        });
    }
    env.extend(spec.env.iter().cloned());
    out.env = env;
    if out.working_dir.is_none() {
        out.working_dir = cfg.working_dir.clone().filter(|w| !w.is_empty());
    }
    if out.user.is_none() {
        if let Some(u) = cfg.user.as_deref().filter(|u| !u.is_empty()) {
            out.user =
                Some(resolve_user(u, passwd, group).map_err(|m| DefaultsError::User(u.into(), m))?);
        }
    }
    Ok(out)
}

/// `uid`, `uid:gid`, `name`, `name:group` against the image's passwd and group files. A user
/// given alone takes its primary group from passwd (0 when numeric and unknown).
fn resolve_user(u: &str, passwd: &str, group: &str) -> Result<User, String> {
    let (user, grp) = match u.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (u, None),
    };
    let pw = |f: &dyn Fn(&[&str]) -> bool| {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|p| p.len() >= 4 && f(p))
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => {
            let gid = pw(&|p| p[2] == user).and_then(|p| p[3].parse().ok());
            (uid, gid.unwrap_or(0))
        }
        Err(_) => {
            let p = pw(&|p| p[0] == user).ok_or("no such user in the image's /etc/passwd")?;
            let uid = p[2].parse().map_err(|_| "bad uid in /etc/passwd")?;
            (uid, p[3].parse().map_err(|_| "bad gid in /etc/passwd")?)
        }
    };
    let gid = match grp {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|p| p.len() >= 3 && p[0] == g)
                .and_then(|p| p[2].parse().ok())
                .ok_or("no such group in the image's /etc/group")?,
        },
    };
    Ok(User { uid, gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> ContainerSpec {
        serde_json::from_value(v).unwrap()
    }

    fn cfg() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/bin/app".into()],
            cmd: vec!["--serve".into()],
            env: vec!["PATH=/bin".into(), "MODE=image".into()],
            working_dir: Some("/srv".into()),
            user: Some("app:staff".into()),
            exposed_ports: vec![],
        }
    }

    const PASSWD: &str = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/srv:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\n";

    #[test]
    fn empty_command_takes_entrypoint_and_cmd_and_args_replace_cmd() {
        let s =
            container_defaults(&spec(serde_json::json!({})), Some(&cfg()), PASSWD, GROUP).unwrap();
        assert_eq!(s.command, ["/bin/app", "--serve"]);
        let s = spec(serde_json::json!({"args": ["--once"]}));
        let s = container_defaults(&s, Some(&cfg()), PASSWD, GROUP).unwrap();
        assert_eq!(s.command, ["/bin/app", "--once"]);
        let s = spec(serde_json::json!({"command": ["/bin/sh"], "args": ["-c", "true"]}));
        let s = container_defaults(&s, Some(&cfg()), PASSWD, GROUP).unwrap();
        assert_eq!(s.command, ["/bin/sh", "-c", "true"]);
    }

    #[test]
    fn image_env_comes_first_and_spec_env_overrides() {
        let s = spec(
            serde_json::json!({"env": [{"name": "MODE", "value": "spec"}, {"name": "X", "value": "1"}]}),
        );
        let s = container_defaults(&s, Some(&cfg()), PASSWD, GROUP).unwrap();
        let env: Vec<_> = s
            .env
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect();
        assert_eq!(env, ["PATH=/bin", "MODE=spec", "X=1"]);
    }

    #[test]
    fn working_dir_and_user_come_from_the_image_unless_set() {
        let s =
            container_defaults(&spec(serde_json::json!({})), Some(&cfg()), PASSWD, GROUP).unwrap();
        assert_eq!(s.working_dir.as_deref(), Some("/srv"));
        assert_eq!(s.user, Some(User { uid: 1000, gid: 50 }));
        let s = spec(serde_json::json!({"workingDir": "/", "user": {"uid": 5, "gid": 6}}));
        let s = container_defaults(&s, Some(&cfg()), PASSWD, GROUP).unwrap();
        assert_eq!(
            (s.working_dir.as_deref(), s.user),
            (Some("/"), Some(User { uid: 5, gid: 6 }))
        );
        for (u, want) in [
            ("1000", (1000, 1001)),
            ("7:8", (7, 8)),
            ("app", (1000, 1001)),
            ("42", (42, 0)),
        ] {
            assert_eq!(
                resolve_user(u, PASSWD, GROUP).unwrap(),
                User {
                    uid: want.0,
                    gid: want.1
                },
                "{u}"
            );
        }
        let mut c = cfg();
        c.user = Some("nobody".into());
        let e =
            container_defaults(&spec(serde_json::json!({})), Some(&c), PASSWD, GROUP).unwrap_err();
        assert!(matches!(e, DefaultsError::User(..)), "{e}");
    }

    #[test]
    fn no_command_anywhere_is_an_error() {
        let e = container_defaults(&spec(serde_json::json!({})), None, "", "").unwrap_err();
        assert_eq!(e, DefaultsError::NoCommand);
    }
}
