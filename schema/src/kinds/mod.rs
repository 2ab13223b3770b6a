//! The four kinds: their specs, statuses, validation and naming (plural, short names).

pub mod container;
pub mod health;
pub mod network;
pub mod rollout;
pub mod sandbox;
pub mod security;
pub mod state;

pub use container::{ContainerPort, ContainerSpec, ContainerStatus, Protocol};
pub use network::{NetworkSpec, NetworkStatus};
pub use sandbox::{SandboxSpec, SandboxStatus};
pub use state::{StateSpec, StateStatus};

use crate::field::FieldErrors;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A tend kind. The order is the order in which `apply` of a directory creates objects, so that
/// things others depend on come first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    State,
    Sandbox,
    Network,
    Container,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::State, Kind::Sandbox, Kind::Network, Kind::Container];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::State => "State",
            Kind::Sandbox => "Sandbox",
            Kind::Network => "Network",
            Kind::Container => "Container",
        }
    }

    /// The REST plural (`containers`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::State => "states",
            Kind::Sandbox => "sandboxes",
            Kind::Network => "networks",
            Kind::Container => "containers",
        }
    }

    /// The singular lower-case name (`container`).
    pub fn singular(self) -> &'static str {
        match self {
            Kind::State => "state",
            Kind::Sandbox => "sandbox",
            Kind::Network => "network",
            Kind::Container => "container",
        }
    }

    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::State => &["st"],
            Kind::Sandbox => &["sb"],
            Kind::Network => &["net"],
            Kind::Container => &["ct"],
        }
    }

    /// Deserializes and validates a spec, naming the field path of the first problem.
    pub fn validate_spec(self, spec: &serde_json::Value) -> Result<(), FieldErrors> {
        match self {
            Kind::State => typed::<StateSpec>(spec)?.validate(),
            Kind::Sandbox => typed::<SandboxSpec>(spec)?.validate(),
            Kind::Network => typed::<NetworkSpec>(spec)?.validate(),
            Kind::Container => typed::<ContainerSpec>(spec)?.validate(),
        }
    }
}

/// Deserializes a spec with its field path on error (`spec.resources.memory: …`).
pub fn typed<T: serde::de::DeserializeOwned>(spec: &serde_json::Value) -> Result<T, FieldErrors> {
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "spec".to_string()
        } else {
            format!("spec.{path}")
        };
        let mut errs = FieldErrors::default();
        errs.push(field, e.into_inner().to_string());
        errs
    })
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;

    /// Accepts the kind, its plural, singular or a short name, in any case.
    fn from_str(s: &str) -> Result<Self, String> {
        let l = s.to_ascii_lowercase();
        Kind::ALL
            .into_iter()
            .find(|k| l == k.singular() || l == k.plural() || k.short_names().contains(&l.as_str()))
            .ok_or_else(|| {
                format!("unknown kind {s:?} (expected one of state, sandbox, network, container)")
            })
    }
}

/// The objects `spec` refers to by name (same namespace): a Sandbox's State, a Container's
/// Sandbox, State and Networks, a State's source State or Sandbox. The controller runtime uses
/// this to requeue users when what they use changes, and for in-use protection.
pub fn references(kind: Kind, namespace: &str, spec: &serde_json::Value) -> Vec<crate::ObjectKey> {
    use crate::ObjectKey;
    let mut out = Vec::new();
    let mut add = |k: Kind, v: Option<&serde_json::Value>| {
        if let Some(name) = v.and_then(|v| v.as_str()) {
            out.push(ObjectKey::new(k, namespace, name));
        }
    };
    match kind {
        Kind::State => {
            add(Kind::State, spec.pointer("/source/state"));
            add(Kind::Sandbox, spec.pointer("/source/sandbox"));
        }
        Kind::Sandbox => add(Kind::State, spec.get("state")),
        Kind::Network => {}
        Kind::Container => {
            add(Kind::Sandbox, spec.pointer("/rootfs/sandbox"));
            add(Kind::State, spec.pointer("/rootfs/state"));
            add(Kind::State, spec.pointer("/image/state"));
            if let Some(nets) = spec.get("networks").and_then(|n| n.as_array()) {
                for n in nets {
                    add(Kind::Network, n.get("name"));
                }
            }
            // A dependent wakes when its dependency's status changes.
            if let Some(deps) = spec.get("dependsOn").and_then(|d| d.as_array()) {
                for d in deps {
                    add(Kind::Container, d.get("container"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod ref_tests {
    use super::*;

    #[test]
    fn container_references() {
        let spec = serde_json::json!({"rootfs": {"sandbox": "dev"}, "networks": [{"name": "a"}, {"name": "b"}],
            "dependsOn": [{"container": "db", "condition": "Ready"}]});
        let refs = references(Kind::Container, "ns", &spec);
        let names: Vec<String> = refs.iter().map(|k| k.to_string()).collect();
        assert_eq!(
            names,
            [
                "sandbox/ns/dev",
                "network/ns/a",
                "network/ns/b",
                "container/ns/db"
            ]
        );
        assert!(references(Kind::Network, "ns", &serde_json::json!({})).is_empty());
    }
}
