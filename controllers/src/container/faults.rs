//! How the Container controller's failures read: runtime faults shown as the Ready condition
//! (and retried), and the errors of store and driver calls with the object and step named.

use super::driver::DriverError;
use super::reconcile::{Container, ContainerReconciler};
use super::status;
use super::ContainerError;
use crate::action::{Action, Error};
use crate::context::Context;
use std::time::Duration;
use tend_schema::store::{EventType, StoreError};
use tend_schema::{AnyObject, ObjectKey};

impl ContainerReconciler {
    /// Shows a runtime fault as the Ready condition and retries later: Unknown
    /// `RuntimeUnavailable` (every 5 s; the runtime's events wake it sooner), or False with the
    /// fault's reason (every 10 s).
    pub(crate) async fn report_fault(
        &self,
        ctx: &Context,
        obj: &AnyObject,
        fault: &DriverError,
    ) -> Result<Action, Error> {
        let key = obj.key()?;
        let c: Container = obj.typed().map_err(|source| ContainerError::Decode {
            key: key.clone(),
            source,
        })?;
        let (generation, mut st) = (c.metadata.generation, c.status.clone());
        let message = fault.to_string();
        let retry = match fault {
            DriverError::Unavailable { .. } => {
                st.common.observed_generation = generation;
                st.common.set_condition(
                    "Ready",
                    tend_schema::ConditionStatus::Unknown,
                    "RuntimeUnavailable",
                    &message,
                    generation,
                );
                Duration::from_secs(5)
            }
            other => {
                let reason = match other {
                    DriverError::Refused { reason, .. } => reason,
                    _ => "RuntimeError",
                };
                status::pending(&mut st, generation, reason, &message);
                ctx.event(obj, EventType::Warning, reason, message.clone())
                    .await;
                Duration::from_secs(10)
            }
        };
        ctx.write_status(obj, &st)
            .await
            .map_err(store_err(&key, "write status"))?;
        Ok(Action::requeue(retry))
    }
}

/// The runtime fault behind a reconcile error, if any.
pub(crate) fn fault_of(e: &Error) -> Option<&DriverError> {
    match e.downcast_ref::<ContainerError>()? {
        ContainerError::Driver { source, .. } if source.is_fault() => Some(source),
        _ => None,
    }
}

pub(crate) fn store_err(
    key: &ObjectKey,
    op: &'static str,
) -> impl FnOnce(StoreError) -> ContainerError {
    let key = key.clone();
    move |source| ContainerError::Store { key, op, source }
}

pub(crate) fn drv(
    uid: &str,
    driver: &'static str,
    op: &'static str,
) -> impl FnOnce(super::DriverError) -> ContainerError {
    let uid = uid.to_string();
    move |source| ContainerError::Driver {
        uid,
        driver,
        op,
        source,
    }
}
