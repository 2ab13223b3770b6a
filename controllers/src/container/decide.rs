//! The Container reconcile's decision: from the workload the runtime observed, the spec's
//! generation and restart policy, and the crash loop so far, what to do next. No I/O here; the
//! reconciler observes before and acts after.

use super::driver::{Exit, Observed, Running};
use super::status::{restart_delay, should_restart};
use std::time::Duration;
use tend_schema::kinds::container::RestartPolicy;

/// What to do with one Container's workload.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// It runs the current generation: keep it, repair drift around it, refresh status.
    Keep(Running),
    /// It runs an older generation: stop it, then start the current one.
    Replace(Running),
    /// It has ended and the exit is being recorded: look again shortly.
    AwaitExit,
    /// It ended and the restart policy says no: record the final state.
    Finished(Exit),
    /// It ended and restarts after `wait` (the crash loop's backoff), of which `left` remains.
    BackOff {
        exit: Exit,
        wait: Duration,
        left: Duration,
    },
    /// Start a workload. `last` is the ended run to show as `lastState`; `restart` counts it
    /// in `restartCount`; `new_loop` forgets the crash loop (a new generation starts afresh).
    Start {
        last: Option<Exit>,
        restart: bool,
        new_loop: bool,
    },
}

/// What the decision needs besides the observation.
pub(crate) struct Facts {
    pub generation: i64,
    pub policy: RestartPolicy,
    /// Crashes in a row, counting this exit (only asked for a same-generation exit).
    pub crashes: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long ago the exit happened (`Duration::MAX` when unknown).
    pub since_exit: Duration,
}

/// Decides from what was observed. `exit_of` turns an ended observation (exited or lost)
/// into an exit record.
pub(crate) fn decide(observed: Observed, f: &Facts) -> Decision {
    let g = f.generation;
    match observed {
        Observed::Running(r) if r.generation == g => Decision::Keep(r),
        Observed::Running(r) => Decision::Replace(r),
        Observed::Exiting { .. } => Decision::AwaitExit,
        Observed::Exited(e) if e.generation != g => Decision::Start {
            last: Some(e),
            restart: false,
            new_loop: true,
        },
        Observed::Lost { generation } if generation != g => Decision::Start {
            last: None,
            restart: false,
            new_loop: false,
        },
        o @ (Observed::Exited(_) | Observed::Lost { .. }) => {
            let e = exit_of(o, g);
            if !should_restart(f.policy, &e) {
                return Decision::Finished(e);
            }
            let wait = restart_delay(f.crashes, f.backoff_base, f.backoff_max);
            if f.since_exit < wait {
                return Decision::BackOff {
                    exit: e,
                    wait,
                    left: wait - f.since_exit,
                };
            }
            Decision::Start {
                last: Some(e),
                restart: true,
                new_loop: false,
            }
        }
        Observed::Absent => Decision::Start {
            last: None,
            restart: false,
            new_loop: false,
        },
    }
}

/// The exit of an ended workload; a lost one counts as an error with unknown status.
pub(crate) fn exit_of(o: Observed, generation: i64) -> Exit {
    match o {
        Observed::Exited(e) => e,
        _ => Exit {
            generation,
            exit_code: None,
            signal: None,
            oom_killed: false,
            started_at: None,
            finished_at: None,
            error: Some("the exit status was lost (its supervisor was killed)".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(crashes: u32, since_exit: Duration) -> Facts {
        Facts {
            generation: 2,
            policy: RestartPolicy::Always,
            crashes,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            since_exit,
        }
    }

    fn exit(generation: i64, code: i32) -> Exit {
        Exit {
            generation,
            exit_code: Some(code),
            signal: None,
            oom_killed: false,
            started_at: None,
            finished_at: None,
            error: None,
        }
    }

    fn running(generation: i64) -> Running {
        Running {
            generation,
            pid: 7,
            start_time: 1,
            started_at: None,
        }
    }

    #[test]
    fn a_running_workload_is_kept_or_replaced_by_generation() {
        let f = facts(0, Duration::MAX);
        assert_eq!(
            decide(Observed::Running(running(2)), &f),
            Decision::Keep(running(2))
        );
        assert_eq!(
            decide(Observed::Running(running(1)), &f),
            Decision::Replace(running(1))
        );
    }

    #[test]
    fn an_exit_of_an_older_generation_starts_a_new_loop() {
        let d = decide(Observed::Exited(exit(1, 1)), &facts(5, Duration::ZERO));
        assert_eq!(
            d,
            Decision::Start {
                last: Some(exit(1, 1)),
                restart: false,
                new_loop: true
            }
        );
    }

    #[test]
    fn a_crash_waits_out_its_backoff_then_restarts_and_counts() {
        // The second crash in a row waits the base delay (1 s); 200 ms have passed.
        let d = decide(
            Observed::Exited(exit(2, 1)),
            &facts(2, Duration::from_millis(200)),
        );
        assert_eq!(
            d,
            Decision::BackOff {
                exit: exit(2, 1),
                wait: Duration::from_secs(1),
                left: Duration::from_millis(800)
            }
        );
        let d = decide(
            Observed::Exited(exit(2, 1)),
            &facts(2, Duration::from_secs(2)),
        );
        assert!(matches!(d, Decision::Start { restart: true, .. }), "{d:?}");
    }

    #[test]
    fn the_policy_decides_whether_an_exit_is_final() {
        let mut f = facts(1, Duration::MAX);
        f.policy = RestartPolicy::OnFailure;
        assert_eq!(
            decide(Observed::Exited(exit(2, 0)), &f),
            Decision::Finished(exit(2, 0))
        );
        assert!(matches!(
            decide(Observed::Exited(exit(2, 3)), &f),
            Decision::Start { restart: true, .. }
        ));
    }
}
