//! tend-controllers: the controller runtime and one reconciler per kind.
//!
//! The runtime (work queue, per-key backoff, the shared informer and index, finalizers, owner
//! garbage collection, conditions, events, metrics) knows nothing about Linux: reconcilers reach
//! the host through driver traits, and tests drive them with fakes and paused time.

pub mod action;
pub mod backoff;
pub mod container;
pub mod context;
pub mod controller;
pub mod finalizer;
pub mod gc;
pub mod image;
pub mod index;
pub mod informer;
pub mod metrics;
pub mod network;
pub mod queue;
pub mod report;
pub mod runtime;
pub mod sandbox;
pub mod snapshot;
pub mod state;

pub use action::{Action, Error};
pub use context::Context;
pub use controller::{ControllerConfig, Reconciler};
pub use index::Index;
pub use runtime::{Runtime, RuntimeConfig, Trigger};

#[cfg(test)]
mod controller_tests;
