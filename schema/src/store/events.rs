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

/// Which events to list, newest last.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub namespace: Option<String>,
    /// Only events about this object.
    pub object: Option<ObjectKey>,
    pub limit: Option<usize>,
}
