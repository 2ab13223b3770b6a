//! Sandbox: a writable clone of a State.

use crate::field::{check_dns1123_label, FieldErrors};
use crate::meta::CommonStatus;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxSpec {
    /// The State this Sandbox is cloned from (same namespace).
    pub state: String,
}

impl SandboxSpec {
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut errs = FieldErrors::default();
        if let Err(m) = check_dns1123_label(&self.state) {
            errs.push("spec.state", m);
        }
        errs.into_result()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}
