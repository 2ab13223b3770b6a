//! tend's event rows as Kubernetes Events: the core `v1` and `events.k8s.io/v1` shapes, their
//! field selectors, and the Table `kubectl get events` prints.

use super::super::columns::age;
use super::super::error::{ApiError, ApiResult};
use chrono::SecondsFormat;
use serde_json::{json, Value};
use tend_schema::store::{Event, EventQuery};

/// Which Kubernetes API an event is served as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `v1` Event (`/api/v1`): `involvedObject`, `message`, `source`, `count`.
    Core,
    /// `events.k8s.io/v1` Event: `regarding`, `note`, `series`, `reportingController`.
    EventsV1,
}

const COMPONENT: &str = "tend";
const CONTROLLER: &str = "tend.dev/tend";

impl Flavor {
    pub fn api_version(self) -> &'static str {
        match self {
            Flavor::Core => "v1",
            Flavor::EventsV1 => "events.k8s.io/v1",
        }
    }

    /// The field holding the object an event is about.
    fn object_field(self) -> &'static str {
        match self {
            Flavor::Core => "involvedObject",
            Flavor::EventsV1 => "regarding",
        }
    }

    /// Field selector fields this flavour answers, each with where it is in the rendered event.
    fn field(self, name: &str) -> Option<&'static str> {
        let common = match name {
            "metadata.name" => Some("/metadata/name"),
            "metadata.namespace" => Some("/metadata/namespace"),
            "reason" => Some("/reason"),
            "type" => Some("/type"),
            _ => None,
        };
        let own = match (self, name) {
            (Flavor::Core, "involvedObject.kind") => Some("/involvedObject/kind"),
            (Flavor::Core, "involvedObject.name") => Some("/involvedObject/name"),
            (Flavor::Core, "involvedObject.namespace") => Some("/involvedObject/namespace"),
            (Flavor::Core, "involvedObject.uid") => Some("/involvedObject/uid"),
            (Flavor::Core, "involvedObject.apiVersion") => Some("/involvedObject/apiVersion"),
            (Flavor::Core, "involvedObject.resourceVersion") => {
                Some("/involvedObject/resourceVersion")
            }
            (Flavor::Core, "involvedObject.fieldPath") => Some("/involvedObject/fieldPath"),
            (Flavor::Core, "source") => Some("/source/component"),
            (Flavor::Core, "reportingComponent") => Some("/reportingComponent"),
            (Flavor::EventsV1, "regarding.kind") => Some("/regarding/kind"),
            (Flavor::EventsV1, "regarding.name") => Some("/regarding/name"),
            (Flavor::EventsV1, "regarding.namespace") => Some("/regarding/namespace"),
            (Flavor::EventsV1, "regarding.uid") => Some("/regarding/uid"),
            (Flavor::EventsV1, "regarding.apiVersion") => Some("/regarding/apiVersion"),
            (Flavor::EventsV1, "regarding.resourceVersion") => Some("/regarding/resourceVersion"),
            (Flavor::EventsV1, "regarding.fieldPath") => Some("/regarding/fieldPath"),
            (Flavor::EventsV1, "reportingController") => Some("/reportingController"),
            _ => None,
        };
        common.or(own)
    }

    fn fields(self) -> &'static str {
        match self {
            Flavor::Core => "metadata.name, metadata.namespace, involvedObject.kind, involvedObject.name, involvedObject.namespace, involvedObject.uid, involvedObject.apiVersion, involvedObject.resourceVersion, involvedObject.fieldPath, reason, reportingComponent, source, type",
            Flavor::EventsV1 => "metadata.name, metadata.namespace, regarding.kind, regarding.name, regarding.namespace, regarding.uid, regarding.apiVersion, regarding.resourceVersion, regarding.fieldPath, reason, reportingController, type",
        }
    }
}

/// An event's name: its object's name and a hash of what makes it one event (the object's uid,
/// type, reason and message, the table's unique key), so a repeat keeps its name as in kube.
pub fn name_of(e: &Event) -> String {
    format!("{}.{:016x}", e.name, identity_hash(e, 0))
}

fn identity_hash(e: &Event, seed: u64) -> u64 {
    // FNV-1a: stable across builds and releases (std's hasher is not promised to be).
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for part in [&e.uid, e.type_.as_str(), &e.reason, &e.message] {
        for b in part.bytes().chain([0u8]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn host() -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default()
    })
    .clone()
}

fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn micro_time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// One event in `flavor`'s shape.
pub fn render(e: &Event, flavor: Flavor) -> Value {
    let uid = uuid::Uuid::from_u64_pair(identity_hash(e, 0), identity_hash(e, 1));
    let metadata = json!({
        "name": name_of(e),
        "namespace": e.namespace,
        "uid": uid.to_string(),
        "resourceVersion": e.id.to_string(),
        "creationTimestamp": time(&e.first_timestamp),
    });
    let object = json!({
        "apiVersion": tend_schema::API_VERSION,
        "kind": e.kind,
        "namespace": e.namespace,
        "name": e.name,
        "uid": e.uid,
    });
    let source = json!({"component": COMPONENT, "host": host()});
    match flavor {
        Flavor::Core => json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": metadata,
            "involvedObject": object,
            "reason": e.reason,
            "message": e.message,
            "source": source,
            "firstTimestamp": time(&e.first_timestamp),
            "lastTimestamp": time(&e.last_timestamp),
            "count": e.count,
            "type": e.type_.as_str(),
            "eventTime": null,
            "reportingComponent": COMPONENT,
            "reportingInstance": host(),
        }),
        Flavor::EventsV1 => {
            let mut v = json!({
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": metadata,
                "eventTime": micro_time(&e.first_timestamp),
                "reportingController": CONTROLLER,
                "reportingInstance": host(),
                // tend records no separate action; the reason says what was done.
                "action": e.reason,
                "reason": e.reason,
                "regarding": object,
                "note": e.message,
                "type": e.type_.as_str(),
                "deprecatedSource": source,
                "deprecatedFirstTimestamp": time(&e.first_timestamp),
                "deprecatedLastTimestamp": time(&e.last_timestamp),
                "deprecatedCount": e.count,
            });
            if e.count > 1 {
                v["series"] =
                    json!({"count": e.count, "lastObservedTime": micro_time(&e.last_timestamp)});
            }
            v
        }
    }
}

/// One term of a field selector: where the value is in a rendered event, and what it must be.
#[derive(Debug, Clone)]
struct Term {
    pointer: &'static str,
    value: String,
    equal: bool,
}

/// A parsed field selector over events: what the store can narrow, and the terms every
/// rendered event must meet.
#[derive(Debug, Clone)]
pub struct Selector {
    terms: Vec<Term>,
    pub query: EventQuery,
}

impl Selector {
    /// Parses `fieldSelector` for events in `ns` (None: every namespace). An unknown field is a
    /// 400 naming it and the fields that are served.
    pub fn parse(selector: &str, ns: Option<&str>, flavor: Flavor) -> ApiResult<Self> {
        let mut query = EventQuery {
            namespace: ns.map(str::to_string),
            ..Default::default()
        };
        let mut terms = Vec::new();
        for raw in selector.split(',').filter(|t| !t.trim().is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = raw.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = raw.split_once("==").or_else(|| raw.split_once('=')) {
                (f, v, true)
            } else {
                return Err(ApiError::bad_request(format!(
                    "fieldSelector: {raw:?} is not field=value, field==value or field!=value"
                )));
            };
            let (field, value) = (field.trim(), value.trim().to_string());
            let pointer = flavor.field(field).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "fieldSelector: field {field:?} is not supported for {} events (supported: {})",
                    flavor.api_version(),
                    flavor.fields()
                ))
            })?;
            if equal {
                let object = flavor.object_field();
                let sub = field.strip_prefix(object).and_then(|f| f.strip_prefix('.'));
                match (field, sub) {
                    (_, Some("name")) => query.name = Some(value.clone()),
                    (_, Some("kind")) => query.kind = Some(value.clone()),
                    (_, Some("uid")) => query.uid = Some(value.clone()),
                    ("metadata.namespace", _) | (_, Some("namespace")) if ns.is_none() => {
                        query.namespace = Some(value.clone())
                    }
                    _ => {}
                }
            }
            terms.push(Term {
                pointer,
                value,
                equal,
            });
        }
        Ok(Self { terms, query })
    }

    /// Does the rendered event meet every term?
    pub fn matches(&self, rendered: &Value) -> bool {
        self.terms.iter().all(|t| {
            let v = match rendered.pointer(t.pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (v == t.value) == t.equal
        })
    }
}

/// kube's "LAST SEEN" cell: `5s`, or `5s (x3 over 2m)` for a repeated event.
fn last_seen(e: &Event) -> String {
    let last = age(Some(&e.last_timestamp));
    if e.count > 1 {
        format!(
            "{last} (x{} over {})",
            e.count,
            age(Some(&e.first_timestamp))
        )
    } else {
        last
    }
}

/// The Table kube-apiserver serves for Events (same columns, same priorities).
pub fn table(events: &[(Event, Value)], resource_version: &str) -> Value {
    let col = |name: &str, priority: u8, format: &str| json!({"name": name, "type": "string", "format": format, "description": "", "priority": priority});
    let rows: Vec<Value> = events
        .iter()
        .map(|(e, v)| {
            json!({
                "cells": [
                    last_seen(e),
                    e.type_.as_str(),
                    e.reason,
                    format!("{}/{}", e.kind.to_ascii_lowercase(), e.name),
                    "",
                    format!("{COMPONENT}, {}", host()),
                    e.message,
                    age(Some(&e.first_timestamp)),
                    e.count,
                    name_of(e),
                ],
                "object": v,
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            col("Last Seen", 0, ""), col("Type", 0, ""), col("Reason", 0, ""),
            col("Object", 0, ""), col("Subobject", 1, ""), col("Source", 1, ""),
            col("Message", 0, ""), col("First Seen", 1, ""), col("Count", 1, ""),
            col("Name", 1, "name"),
        ],
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tend_schema::store::EventType;

    fn ev() -> Event {
        let t = chrono::Utc::now();
        Event {
            id: 7,
            namespace: "a".into(),
            kind: "Container".into(),
            name: "web".into(),
            uid: "u-1".into(),
            type_: EventType::Warning,
            reason: "BackOff".into(),
            message: "restarting".into(),
            count: 3,
            first_timestamp: t,
            last_timestamp: t,
        }
    }

    #[test]
    fn both_shapes_name_the_object_and_keep_the_name_across_repeats() {
        let e = ev();
        let core = render(&e, Flavor::Core);
        assert_eq!(core["involvedObject"]["name"], "web");
        assert_eq!(core["involvedObject"]["kind"], "Container");
        assert_eq!(core["count"], 3);
        let v1 = render(&e, Flavor::EventsV1);
        assert_eq!(v1["regarding"]["uid"], "u-1");
        assert_eq!(v1["note"], "restarting");
        assert_eq!(v1["series"]["count"], 3);
        let repeat = Event {
            id: 9,
            count: 4,
            ..ev()
        };
        assert_eq!(name_of(&repeat), core["metadata"]["name"]);
        assert_ne!(
            name_of(&Event {
                reason: "Other".into(),
                ..ev()
            }),
            name_of(&e)
        );
    }

    #[test]
    fn selectors_narrow_the_store_and_filter_the_rest() {
        let sel = Selector::parse(
            "involvedObject.name=web,involvedObject.kind=Container,type!=Normal",
            Some("a"),
            Flavor::Core,
        )
        .unwrap();
        assert_eq!(sel.query.name.as_deref(), Some("web"));
        assert_eq!(sel.query.kind.as_deref(), Some("Container"));
        assert!(sel.matches(&render(&ev(), Flavor::Core)));
        let normal = Event {
            type_: EventType::Normal,
            ..ev()
        };
        assert!(!sel.matches(&render(&normal, Flavor::Core)));
        let sel = Selector::parse("regarding.name=db", None, Flavor::EventsV1).unwrap();
        assert!(!sel.matches(&render(&ev(), Flavor::EventsV1)));
        let err = Selector::parse("regarding.name=web", None, Flavor::Core).unwrap_err();
        assert!(
            err.message.contains("\"regarding.name\""),
            "{}",
            err.message
        );
        let err = Selector::parse("spec.bogus=1", None, Flavor::EventsV1).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.contains("spec.bogus"), "{}", err.message);
    }
}
