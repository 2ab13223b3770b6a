//! State: an immutable filesystem tree (a read-only subvolume).

use crate::field::{check_dns1123_label, FieldErrors};
use crate::meta::CommonStatus;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateSpec {
    pub source: StateSource,
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
}

impl StateSpec {
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut errs = FieldErrors::default();
        let s = &self.source;
        let set = [&s.directory, &s.tarball, &s.state, &s.sandbox]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if set != 1 {
            errs.push(
                "spec.source",
                format!(
                    "exactly one of directory, tarball, state, sandbox must be set ({set} are)"
                ),
            );
        }
        for (field, path) in [("directory", &s.directory), ("tarball", &s.tarball)] {
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
        errs.into_result()
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
}
