//! Restart policy, backoff, and the status a Container shows in each situation.

use super::driver::{Exit, Running};
use std::time::Duration;
use tend_schema::kinds::container::{
    ContainerStatus, LastState, NetworkStatusEntry, RestartPolicy,
};
use tend_schema::ConditionStatus;

/// Whether a workload that ended like `exit` is started again under `policy`.
pub fn should_restart(policy: RestartPolicy, exit: &Exit) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !exit.succeeded(),
        RestartPolicy::Never => false,
    }
}

/// The wait before restart number `crashes` of a crash loop (`crashes` counts the runs in a row
/// that ended before the reset window, this one included): the first restart is immediate, then
/// `base`, `2·base`, `4·base`, … capped at `max`.
pub fn restart_delay(crashes: u32, base: Duration, max: Duration) -> Duration {
    if crashes <= 1 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(crashes - 2).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

/// `lastState` for an exit.
pub(crate) fn last_state(e: &Exit) -> LastState {
    LastState {
        exit_code: e.exit_code,
        signal: e.signal,
        reason: e.reason().to_string(),
        started_at: e.started_at,
        finished_at: e.finished_at,
    }
}

/// Pending with a reason a script can match.
pub(crate) fn pending(s: &mut ContainerStatus, generation: i64, reason: &str, message: &str) {
    s.common.phase = Some("Pending".into());
    s.common.observed_generation = generation;
    s.pid = None;
    s.common
        .set_condition("Ready", ConditionStatus::False, reason, message, generation);
}

/// Running with its pid and networks.
pub(crate) fn running(
    s: &mut ContainerStatus,
    generation: i64,
    r: &Running,
    networks: Vec<NetworkStatusEntry>,
    runtime: &str,
) {
    s.common.phase = Some("Running".into());
    s.common.observed_generation = generation;
    s.pid = Some(r.pid);
    s.started_at = r.started_at;
    s.networks = networks;
    s.common.set_condition(
        "Ready",
        ConditionStatus::True,
        "Running",
        &format!("pid {} ({runtime})", r.pid),
        generation,
    );
}

/// Ended for good (no restart under the policy): Succeeded or Failed.
pub(crate) fn finished(s: &mut ContainerStatus, generation: i64, e: &Exit) {
    s.common.phase = Some(if e.succeeded() { "Succeeded" } else { "Failed" }.into());
    s.common.observed_generation = generation;
    s.pid = None;
    s.last_state = Some(last_state(e));
    let message = match (&e.error, e.exit_code, e.signal) {
        (Some(err), _, _) => format!("could not start: {err}"),
        (None, Some(c), _) => format!("exited with code {c}"),
        (None, None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "exit status unknown".into(),
    };
    s.common.set_condition(
        "Ready",
        ConditionStatus::False,
        e.reason(),
        &message,
        generation,
    );
}

/// Waiting out a restart backoff.
pub(crate) fn backing_off(s: &mut ContainerStatus, generation: i64, e: &Exit, wait: Duration) {
    s.common.phase = Some("Running".into());
    s.common.observed_generation = generation;
    s.pid = None;
    s.last_state = Some(last_state(e));
    s.common.set_condition(
        "Ready",
        ConditionStatus::False,
        "CrashLoopBackOff",
        &format!(
            "back-off {:.1}s restarting failed container ({})",
            wait.as_secs_f64(),
            e.reason()
        ),
        generation,
    );
}

/// Being deleted.
pub(crate) fn terminating(s: &mut ContainerStatus, generation: i64) {
    s.common.phase = Some("Terminating".into());
    s.common.set_condition(
        "Ready",
        ConditionStatus::False,
        "Terminating",
        "stopping the workload",
        generation,
    );
}
