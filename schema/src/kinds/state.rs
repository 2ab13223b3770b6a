//! State: an immutable filesystem tree (a read-only subvolume).

use crate::field::{check_dns1123_label, FieldErrors};
use crate::meta::CommonStatus;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateSpec {
    pub source: StateSource,
    /// Image sources only: when to ask the registry again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
}

/// Where a State's content comes from; exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tarball: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// An OCI distribution reference: `host[:port]/repo[:tag][@sha256:…]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A host path to `docker save` output or an OCI image-layout tar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci_archive: Option<String>,
}

/// When an image State asks the registry again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPolicy {
    /// Pull once; the tree stays as long as the State does.
    #[default]
    IfNotPresent,
    /// Re-resolve the tag at every resync and on every `tend apply`; a new digest makes new
    /// content, and the Containers using the State are replaced per their update strategy.
    Always,
}

/// The annotation whose change wakes an object's controller without a spec change (a
/// generation-independent trigger). The apply path sets it to the time of the apply on image
/// States with `pullPolicy: Always`, so that `tend apply` of an unchanged spec re-resolves the
/// tag; anyone may set it to ask for a reconcile.
pub const RECONCILE_REQUESTED: &str = "tend.dev/reconcile-requested-at";

impl StateSpec {
    /// Whether `tend apply` asks for the tag to be resolved again (`pullPolicy: Always` of a
    /// registry image).
    pub fn resolves_on_apply(&self) -> bool {
        self.pull_policy == Some(PullPolicy::Always) && self.source.image.is_some()
    }

    /// Whether the content comes from an image (a registry or an archive).
    pub fn is_image(&self) -> bool {
        self.source.image.is_some() || self.source.oci_archive.is_some()
    }

    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut errs = FieldErrors::default();
        let s = &self.source;
        let set = [
            &s.directory,
            &s.tarball,
            &s.state,
            &s.sandbox,
            &s.image,
            &s.oci_archive,
        ]
        .iter()
        .filter(|v| v.is_some())
        .count();
        if set != 1 {
            errs.push(
                "spec.source",
                format!(
                    "exactly one of directory, tarball, state, sandbox, image, ociArchive must be set ({set} are)"
                ),
            );
        }
        for (field, path) in [
            ("directory", &s.directory),
            ("tarball", &s.tarball),
            ("ociArchive", &s.oci_archive),
        ] {
            if let Some(p) = path {
                if !p.starts_with('/') {
                    errs.push(
                        format!("spec.source.{field}"),
                        format!("{p:?} must be an absolute path"),
                    );
                } else if p.contains('\0') {
                    errs.push(format!("spec.source.{field}"), "must not contain NUL");
                }
            }
        }
        if let Some(t) = &s.tarball {
            if ![".tar", ".tar.gz", ".tgz"].iter().any(|e| t.ends_with(e)) {
                errs.push(
                    "spec.source.tarball",
                    format!("{t:?} must end in .tar, .tar.gz or .tgz"),
                );
            }
        }
        for (field, name) in [("state", &s.state), ("sandbox", &s.sandbox)] {
            if let Some(n) = name {
                if let Err(m) = check_dns1123_label(n) {
                    errs.push(format!("spec.source.{field}"), m);
                }
            }
        }
        if let Some(r) = &s.image {
            if let Err(m) = ImageReference::parse(r) {
                errs.push("spec.source.image", format!("{r:?}: {m}"));
            }
        }
        if self.pull_policy.is_some() && !self.is_image() {
            errs.push(
                "spec.pullPolicy",
                "only applies to image and ociArchive sources",
            );
        }
        errs.into_result()
    }
}

/// A parsed OCI reference. `registry` is required (tend has no default registry: a reference
/// names where it is pulled from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    /// `host[:port]`.
    pub registry: String,
    /// `team/app`.
    pub repository: String,
    /// The tag; `latest` when neither a tag nor a digest is given.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

impl ImageReference {
    /// Parses `host[:port]/repo[:tag][@sha256:hex]`.
    ///
    /// # Errors
    /// A message saying which part is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 4096 {
            return Err("must be 1 to 4096 characters".into());
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain whitespace".into());
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or("a digest must start with sha256:")?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err("a sha256 digest has 64 hex digits".into());
                }
                if hex.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err("a digest is lowercase hex".into());
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let (registry, path) = rest
            .split_once('/')
            .ok_or("must name a registry host: host[:port]/repository[:tag]")?;
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(format!(
                "{registry:?} is not a registry host (host[:port], e.g. 127.0.0.1:5000 or registry.example.com)"
            ));
        }
        let host_ok = registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
        if !host_ok {
            return Err(format!("{registry:?} is not a valid host[:port]"));
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) => (r, Some(t.to_string())),
            None => (path, None),
        };
        if repository.is_empty()
            || repository.split('/').any(|c| {
                c.is_empty()
                    || !c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            })
        {
            return Err(format!(
                "repository {repository:?} must be lowercase path components of [a-z0-9._-]"
            ));
        }
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && !t.starts_with(['.', '-'])
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(format!("tag {t:?} must be 1 to 128 of [A-Za-z0-9_.-]"));
            }
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t,
        };
        Ok(ImageReference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Image and ociArchive sources: what was unpacked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageStatus>,
}

/// What tend unpacked from an image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    /// The reference pulled (or the archive path).
    pub reference: String,
    /// The manifest digest that was unpacked.
    pub digest: String,
    /// How many layers the image has.
    pub layers: u32,
    /// The blobs the tree was made from, as stored under `<state dir>/images/blobs`: the
    /// config and the layers (bottom first). `tend image prune` keeps what some State names here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layer_digests: Vec<String>,
    /// The runtime defaults the image declares.
    #[serde(default)]
    pub config: ImageConfig,
}

/// The part of an OCI image config that supplies Container defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// `NAME=value` entries, as in the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `uid[:gid]` or a name, as in the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> StateSpec {
        serde_json::from_value(v).unwrap()
    }

    fn fields(s: &StateSpec) -> Vec<String> {
        s.validate()
            .err()
            .map(|e| e.0.iter().map(|f| f.field.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn image_references_parse() {
        let r = ImageReference::parse("127.0.0.1:5000/team/app:1.2").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        let r = ImageReference::parse("registry.example.com/app").unwrap();
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageReference::parse(&format!("localhost/app@{d}")).unwrap();
        assert_eq!((r.tag, r.digest), (None, Some(d)));
        for bad in [
            "",
            "busybox",
            "docker/library/busybox",
            "127.0.0.1:5000/App",
            "127.0.0.1:5000/app:",
            "127.0.0.1:5000/app@sha256:xyz",
            "127.0.0.1:5000//app",
            "127.0.0.1:5000/app:a b",
        ] {
            assert!(ImageReference::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bad_image_sources_name_the_field() {
        let s = spec(serde_json::json!({"source": {"image": "busybox:latest"}}));
        assert_eq!(fields(&s), ["spec.source.image"]);
        let s = spec(serde_json::json!({"source": {"ociArchive": "x.tar"}}));
        assert_eq!(fields(&s), ["spec.source.ociArchive"]);
        let s = spec(serde_json::json!({"source": {"directory": "/x"}, "pullPolicy": "Always"}));
        assert_eq!(fields(&s), ["spec.pullPolicy"]);
        let s = spec(serde_json::json!({"source": {"image": "localhost/a", "tarball": "/a.tar"}}));
        assert_eq!(fields(&s), ["spec.source"]);
        let s =
            spec(serde_json::json!({"source": {"image": "localhost/a"}, "pullPolicy": "Always"}));
        assert!(s.validate().is_ok());
        let bad: Result<StateSpec, _> = serde_json::from_value(
            serde_json::json!({"source": {"image": "localhost/a"}, "pullPolicy": "Sometimes"}),
        );
        assert!(bad.is_err());
    }
}
