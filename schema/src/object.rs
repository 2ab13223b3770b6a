//! The object envelope (apiVersion, kind, metadata, spec, status) and object keys.

use crate::field::{check_dns1123_label, check_label_key, check_label_value, FieldErrors};
use crate::kinds::Kind;
use crate::meta::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;

/// An object of one kind with typed spec and status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object<S, T> {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: S,
    #[serde(default)]
    pub status: T,
}

/// An object whose spec and status are kept as JSON: what the store and the API move around.
pub type AnyObject = Object<serde_json::Value, serde_json::Value>;

/// Identifies an object: kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.kind.singular(),
            self.namespace,
            self.name
        )
    }
}

impl AnyObject {
    /// A new object of `kind` with the given name, namespace and spec; server fields empty.
    pub fn new(kind: Kind, namespace: &str, name: &str, spec: serde_json::Value) -> Self {
        Object {
            api_version: crate::API_VERSION.to_string(),
            kind: kind.as_str().to_string(),
            metadata: ObjectMeta {
                name: name.to_string(),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            },
            spec,
            status: serde_json::Value::Null,
        }
    }

    /// The kind, parsed. Objects from the store always have a valid one.
    pub fn kind(&self) -> Result<Kind, FieldErrors> {
        if self.api_version != crate::API_VERSION {
            let mut e = FieldErrors::default();
            e.push(
                "apiVersion",
                format!(
                    "{:?} is not served (expected {:?})",
                    self.api_version,
                    crate::API_VERSION
                ),
            );
            return Err(e);
        }
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == self.kind)
            .ok_or_else(|| {
                let mut e = FieldErrors::default();
                e.push(
                    "kind",
                    format!(
                        "{:?} is not a tend kind (State, Sandbox, Network, Container)",
                        self.kind
                    ),
                );
                e
            })
    }

    pub fn key(&self) -> Result<ObjectKey, FieldErrors> {
        Ok(ObjectKey::new(
            self.kind()?,
            self.metadata.ns(),
            &self.metadata.name,
        ))
    }

    /// Validates everything a user controls: kind, name, namespace, labels, spec.
    pub fn validate(&self) -> Result<Kind, FieldErrors> {
        let kind = self.kind()?;
        let mut errs = FieldErrors::default();
        if let Err(m) = check_dns1123_label(&self.metadata.name) {
            errs.push("metadata.name", m);
        }
        if let Err(m) = check_dns1123_label(self.metadata.ns()) {
            errs.push("metadata.namespace", m);
        }
        for (k, v) in &self.metadata.labels {
            if let Err(m) = check_label_key(k).and_then(|_| check_label_value(v)) {
                errs.push(format!("metadata.labels[{k:?}]"), m);
            }
        }
        for k in self.metadata.annotations.keys() {
            if let Err(m) = check_label_key(k) {
                errs.push(format!("metadata.annotations[{k:?}]"), m);
            }
        }
        if let Err(e) = kind.validate_spec(&self.spec) {
            errs.0.extend(e.0);
        }
        // A name tend derives from this one must be valid too, or the object would be accepted
        // and then stay Pending for ever.
        let name_ok = check_dns1123_label(&self.metadata.name).is_ok();
        if kind == Kind::Container && name_ok && !self.spec["rootfs"]["state"].is_null() {
            let derived = crate::kinds::container::rootfs_sandbox_name(&self.metadata.name);
            if let Err(m) = check_dns1123_label(&derived) {
                errs.push(
                    "metadata.name",
                    format!("with spec.rootfs.state, tend makes a Sandbox named after the Container, and {m}; use a name of at most 56 characters"),
                );
            }
        }
        errs.into_result().map(|_| kind)
    }

    /// Converts to a typed object. Fails only on objects that bypassed validation.
    pub fn typed<S: DeserializeOwned, T: DeserializeOwned + Default>(
        &self,
    ) -> Result<Object<S, T>, serde_json::Error> {
        let status = if self.status.is_null() {
            T::default()
        } else {
            serde_json::from_value(self.status.clone())?
        };
        Ok(Object {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            metadata: self.metadata.clone(),
            spec: serde_json::from_value(self.spec.clone())?,
            status,
        })
    }
}

impl<S: Serialize, T: Serialize> Object<S, T> {
    /// Back to the JSON form the store keeps.
    pub fn to_any(&self) -> AnyObject {
        Object {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            metadata: self.metadata.clone(),
            spec: serde_json::to_value(&self.spec).unwrap_or_default(),
            status: serde_json::to_value(&self.status).unwrap_or_default(),
        }
    }
}
