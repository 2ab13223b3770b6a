//! Admission policy: what a credential may ask for. Every write path (REST create, replace,
//! patch, server-side apply, batch apply; the CLI goes through the same API) asks [`Policy::admit`]
//! before anything is stored.
//!
//! Admin credentials (the unix socket, a token without a namespace list) may set everything. A
//! namespace-limited token may not ask for what would make it host root: `privileged`,
//! `hostNetwork`, `seccompProfile: Unconfined`, capabilities beyond Docker's default set, a native
//! Container without rootfs (the host filesystem), or a State imported from a host path outside
//! the directories the operator allowed (`tend serve --allow-source-dir`).

use crate::kinds::container::{ContainerSpec, Runtime};
use crate::kinds::security::{SeccompProfile, DEFAULT_CAPABILITIES};
use crate::kinds::state::StateSpec;
use crate::{AnyObject, Kind};
use std::path::{Path, PathBuf};

/// Who is writing, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The unix socket or a token for every namespace: may set everything.
    Admin,
    /// A token limited to some namespaces.
    Namespaced,
}

/// A refusal: the field that asked for too much, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Forbidden {
    pub field: String,
    pub message: String,
}

fn forbid(field: impl Into<String>, message: impl Into<String>) -> Forbidden {
    Forbidden {
        field: field.into(),
        message: message.into(),
    }
}

/// Why the policy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// An `--allow-source-dir` that does not resolve to a directory.
    #[error("--allow-source-dir {path}: {source}")]
    SourceDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The operator's policy for namespace-limited tokens.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Canonical directories under which namespace tokens may import States.
    source_dirs: Vec<PathBuf>,
}

impl Policy {
    /// A policy allowing imports from under `source_dirs` (each resolved now: symlinks, `..`).
    pub fn new(source_dirs: &[PathBuf]) -> Result<Self, PolicyError> {
        let source_dirs = source_dirs
            .iter()
            .map(|p| {
                std::fs::canonicalize(p).map_err(|source| PolicyError::SourceDir {
                    path: p.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { source_dirs })
    }

    /// The allowed source directories, resolved.
    pub fn source_dirs(&self) -> &[PathBuf] {
        &self.source_dirs
    }

    /// Whether `cred` may write `obj` (whose spec already passed validation).
    ///
    /// # Errors
    /// [`Forbidden`] naming the first field that asks for more than the credential may have.
    pub fn admit(&self, cred: Credential, obj: &AnyObject) -> Result<(), Forbidden> {
        if cred == Credential::Admin {
            return Ok(());
        }
        match obj.kind.parse::<Kind>() {
            Ok(Kind::Container) => {
                match serde_json::from_value::<ContainerSpec>(obj.spec.clone()) {
                    Ok(spec) => container(&spec),
                    Err(_) => Ok(()), // validation reports it
                }
            }
            Ok(Kind::State) => match serde_json::from_value::<StateSpec>(obj.spec.clone()) {
                Ok(spec) => self.state(&spec),
                Err(_) => Ok(()),
            },
            _ => Ok(()),
        }
    }

    fn state(&self, spec: &StateSpec) -> Result<(), Forbidden> {
        let s = &spec.source;
        for (field, path) in [
            ("directory", &s.directory),
            ("tarball", &s.tarball),
            ("ociArchive", &s.oci_archive),
        ] {
            if let Some(p) = path {
                let field = format!("spec.source.{field}");
                if !self.allows_source(Path::new(p)) {
                    return Err(forbid(
                        field,
                        format!(
                            "{p:?} is not under a directory the operator allowed for namespace tokens (tend serve --allow-source-dir)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// True when `path` resolves (following every symlink and `..`) to somewhere under an
    /// allowed directory. A path that does not resolve is refused.
    pub fn allows_source(&self, path: &Path) -> bool {
        std::fs::canonicalize(path)
            .is_ok_and(|real| self.source_dirs.iter().any(|d| real.starts_with(d)))
    }
}

fn container(spec: &ContainerSpec) -> Result<(), Forbidden> {
    let sc = spec.security();
    let base = "spec.securityContext";
    if sc.privileged {
        return Err(forbid(
            format!("{base}.privileged"),
            "a namespace token may not run privileged containers",
        ));
    }
    if spec.host_network {
        return Err(forbid(
            "spec.hostNetwork",
            "a namespace token may not share the host's network namespace",
        ));
    }
    if sc.seccomp() == SeccompProfile::Unconfined {
        return Err(forbid(
            format!("{base}.seccompProfile"),
            "a namespace token may not turn seccomp off",
        ));
    }
    if let Some(extra) = sc
        .effective_capabilities()
        .into_iter()
        .find(|c| !DEFAULT_CAPABILITIES.contains(c))
    {
        return Err(forbid(
            format!("{base}.capabilities.add"),
            format!("{extra} is beyond Docker's default set, which bounds namespace tokens"),
        ));
    }
    if spec.runtime == Runtime::Native && spec.rootfs.is_none() {
        return Err(forbid(
            "spec.rootfs",
            "a namespace token may not run a container on the host filesystem; set rootfs",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(kind: &str, spec: serde_json::Value) -> AnyObject {
        serde_json::from_value(json!({
            "apiVersion": "tend.dev/v1", "kind": kind,
            "metadata": {"name": "x", "namespace": "team"}, "spec": spec
        }))
        .unwrap()
    }

    fn refused(p: &Policy, o: &AnyObject) -> String {
        p.admit(Credential::Namespaced, o).unwrap_err().field
    }

    #[test]
    fn namespace_tokens_get_docker_s_defaults_and_no_host() {
        let p = Policy::default();
        let base = json!({"command": ["sh"], "rootfs": {"state": "s"}});
        let with = |extra: serde_json::Value| {
            let mut v = base.clone();
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            obj("Container", v)
        };
        p.admit(Credential::Namespaced, &with(json!({}))).unwrap();
        let drop_only =
            with(json!({"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}}}));
        p.admit(Credential::Namespaced, &drop_only).unwrap();
        for (extra, field) in [
            (
                json!({"securityContext": {"privileged": true}}),
                "spec.securityContext.privileged",
            ),
            (json!({"hostNetwork": true}), "spec.hostNetwork"),
            (
                json!({"securityContext": {"seccompProfile": "Unconfined"}}),
                "spec.securityContext.seccompProfile",
            ),
            (
                json!({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}),
                "spec.securityContext.capabilities.add",
            ),
        ] {
            let o = with(extra);
            assert_eq!(refused(&p, &o), field);
            p.admit(Credential::Admin, &o).unwrap();
        }
        let host_fs = obj("Container", json!({"command": ["sh"]}));
        assert_eq!(refused(&p, &host_fs), "spec.rootfs");
        let docker = obj(
            "Container",
            json!({"runtime": "docker", "image": "busybox"}),
        );
        p.admit(Credential::Namespaced, &docker).unwrap();
    }

    #[test]
    fn state_sources_must_resolve_under_an_allowed_dir() {
        let allowed = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let inside = allowed.path().join("tree");
        std::fs::create_dir(&inside).unwrap();
        let sneaky = allowed.path().join("sneaky");
        std::os::unix::fs::symlink(other.path(), &sneaky).unwrap();
        let p = Policy::new(&[allowed.path().to_path_buf()]).unwrap();
        let state = |dir: &Path| obj("State", json!({"source": {"directory": dir}}));
        p.admit(Credential::Namespaced, &state(&inside)).unwrap();
        let dotdot = inside
            .join("../../")
            .join(other.path().file_name().unwrap());
        for bad in [
            Path::new("/etc"),
            &sneaky,
            &dotdot,
            &allowed.path().join("missing"),
        ] {
            assert_eq!(refused(&p, &state(bad)), "spec.source.directory", "{bad:?}");
        }
        assert_eq!(
            refused(&Policy::default(), &state(&inside)),
            "spec.source.directory",
            "nothing is allowed by default"
        );
        p.admit(Credential::Admin, &state(Path::new("/etc")))
            .unwrap();
        let tar = obj("State", json!({"source": {"tarball": "/etc/x.tar"}}));
        assert_eq!(refused(&p, &tar), "spec.source.tarball");
        let arc = obj("State", json!({"source": {"ociArchive": "/etc/x.tar"}}));
        assert_eq!(refused(&p, &arc), "spec.source.ociArchive");
    }
}
