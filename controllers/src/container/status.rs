//! Restart policy, backoff, and the status a Container shows in each situation.

use super::driver::{Exit, Running};
use super::probe::{Health, Verdict};
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
    not_started(s, generation, reason, message);
}

/// `Ready` and `Started` False: nothing runs.
fn not_started(s: &mut ContainerStatus, generation: i64, reason: &str, message: &str) {
    not_ready(s, generation, reason, message);
    s.common.set_condition(
        "Started",
        ConditionStatus::False,
        reason,
        message,
        generation,
    );
}

/// `Ready` False with a reason.
pub(crate) fn not_ready(s: &mut ContainerStatus, generation: i64, reason: &str, message: &str) {
    s.common
        .set_condition("Ready", ConditionStatus::False, reason, message, generation);
}

/// Running with its pid and networks; `Started` and `Ready` as its probes say.
pub(crate) fn running(
    s: &mut ContainerStatus,
    generation: i64,
    r: &Running,
    networks: Vec<NetworkStatusEntry>,
    runtime: &str,
    h: &Health,
) {
    s.common.phase = Some("Running".into());
    s.common.observed_generation = generation;
    s.pid = Some(r.pid);
    s.started_at = r.started_at;
    s.networks = networks;
    let running = format!("pid {} ({runtime})", r.pid);
    let (started, reason, message) = match h.started {
        true => (ConditionStatus::True, "Started", running.clone()),
        false => (
            ConditionStatus::False,
            "WaitingForProbe",
            "the startup probe has not passed yet".into(),
        ),
    };
    s.common
        .set_condition("Started", started, reason, &message, generation);
    let output = |o: &str| match o.is_empty() {
        true => String::new(),
        false => format!(": {o}"),
    };
    let (ready, reason, message) = match (&h.unhealthy, h.started, h.ready) {
        (Some(why), _, _) => (ConditionStatus::False, "Unhealthy", why.clone()),
        (None, false, _) => (
            ConditionStatus::False,
            "WaitingForProbe",
            "waiting for the startup probe".into(),
        ),
        (None, true, Verdict::Success) => (ConditionStatus::True, "Running", running),
        (None, true, Verdict::Unknown) => (
            ConditionStatus::False,
            "WaitingForProbe",
            format!(
                "the readiness probe has not passed yet{}",
                output(&h.readiness_output)
            ),
        ),
        (None, true, Verdict::Failure) => (
            ConditionStatus::False,
            "ProbeFailed",
            format!("readiness probe failed{}", output(&h.readiness_output)),
        ),
    };
    s.common
        .set_condition("Ready", ready, reason, &message, generation);
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
    not_started(s, generation, e.reason(), &message);
}

/// Waiting out a restart backoff.
pub(crate) fn backing_off(s: &mut ContainerStatus, generation: i64, e: &Exit, wait: Duration) {
    s.common.phase = Some("Running".into());
    s.common.observed_generation = generation;
    s.pid = None;
    s.last_state = Some(last_state(e));
    let message = format!(
        "back-off {:.1}s restarting failed container ({})",
        wait.as_secs_f64(),
        e.reason()
    );
    not_started(s, generation, "CrashLoopBackOff", &message);
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
