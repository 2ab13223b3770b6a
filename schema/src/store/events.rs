//! Event types: what happened to an object, for people (`tend describe`, `tend get events`).

use crate::meta::Time;
use crate::object::ObjectKey;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// An event to record.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub object: ObjectKey,
    pub uid: String,
    pub type_: EventType,
    pub reason: String,
    pub message: String,
}

/// A recorded event with its repeat count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The event revision: grows on every insert and every repeat (count bump), so it orders
    /// changes to the table and is where a watch of events resumes.
    #[serde(default)]
    pub id: i64,
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    #[serde(rename = "type")]
    pub type_: EventType,
    pub reason: String,
    pub message: String,
    pub count: u64,
    pub first_timestamp: Time,
    pub last_timestamp: Time,
}

/// Which events to list: newest last, or, with `after`, oldest change first.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub namespace: Option<String>,
    /// Only events about this object.
    pub object: Option<ObjectKey>,
    /// Only events about objects of this kind (a string: a selector may name any kind).
    pub kind: Option<String>,
    /// Only events about objects with this name.
    pub name: Option<String>,
    /// Only events about the object with this uid.
    pub uid: Option<String>,
    /// Only events whose revision ([`Event::id`]) is above this, in revision order.
    pub after: Option<i64>,
    pub limit: Option<usize>,
}
