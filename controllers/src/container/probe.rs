//! Probes as the Container controller sees them: the seam that runs one probe
//! ([`ProbeRunner`]), the threshold state machine ([`Counter`]), and what one run of a workload
//! has shown so far ([`Health`]). Pure: the scheduling is in [`super::prober`].

use super::driver::ContainerRuntime;
use async_trait::async_trait;
use std::sync::Arc;
use tend_schema::kinds::container::Probe;

/// Longest probe output kept (in the event and the condition message).
pub const MAX_OUTPUT: usize = 1024;

/// The workload a probe is run against.
#[derive(Clone)]
pub struct ProbeTarget {
    /// The Container's uid.
    pub uid: String,
    /// Host pid of the workload: its namespaces are the ones probed.
    pub pid: u32,
    /// The runtime that runs it (for `exec`).
    pub runtime: Arc<dyn ContainerRuntime>,
}

/// How one probe run went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub success: bool,
    /// What it printed or answered (capped at [`MAX_OUTPUT`]), or why it failed.
    pub output: String,
}

impl ProbeOutcome {
    pub fn new(success: bool, output: impl Into<String>) -> Self {
        Self {
            success,
            output: cap(output.into()),
        }
    }
}

/// `s` cut to [`MAX_OUTPUT`] bytes (at a character boundary), trimmed.
pub fn cap(s: String) -> String {
    let s = s.trim();
    if s.len() <= MAX_OUTPUT {
        return s.to_string();
    }
    let mut end = MAX_OUTPUT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Runs one probe against a workload, within the probe's `timeoutSeconds` (a run that takes
/// longer is a failure). Never panics on a dead target: that is a failed probe.
#[async_trait]
pub trait ProbeRunner: Send + Sync + 'static {
    async fn run(&self, target: &ProbeTarget, probe: &Probe) -> ProbeOutcome;
}

/// A probe's current verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not yet decided (too few results).
    Unknown,
    Success,
    Failure,
}

/// Kubernetes' thresholds: the verdict turns to Success after `successThreshold` successes in
/// a row, to Failure after `failureThreshold` failures in a row, and holds in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub verdict: Verdict,
    successes: u32,
    failures: u32,
}

impl Counter {
    pub fn new(verdict: Verdict) -> Self {
        Self {
            verdict,
            successes: 0,
            failures: 0,
        }
    }

    /// Records one result; true when the verdict changed.
    pub fn record(
        &mut self,
        success: bool,
        success_threshold: u32,
        failure_threshold: u32,
    ) -> bool {
        let before = self.verdict;
        if success {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= success_threshold {
                self.verdict = Verdict::Success;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= failure_threshold {
                self.verdict = Verdict::Failure;
            }
        }
        self.verdict != before
    }
}

/// What the probes of one run of a workload have shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The startup probe passed (or there is none).
    pub started: bool,
    /// The readiness verdict (Success without a readiness probe once started).
    pub ready: Verdict,
    /// The last readiness output, for the condition message.
    pub readiness_output: String,
    /// The liveness (or startup) probe failed for good with this output: restart.
    pub unhealthy: Option<String>,
}

impl Health {
    /// A fresh run: not started while a startup probe is declared; not ready while a readiness
    /// probe is declared.
    pub fn fresh(has_startup: bool, has_readiness: bool) -> Self {
        Self {
            started: !has_startup,
            ready: match has_readiness {
                true => Verdict::Unknown,
                false => Verdict::Success,
            },
            readiness_output: String::new(),
            unhealthy: None,
        }
    }

    /// Whether the `Ready` condition is True.
    pub fn is_ready(&self) -> bool {
        self.started && self.ready == Verdict::Success && self.unhealthy.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_moves_only_after_its_threshold_in_a_row() {
        let mut c = Counter::new(Verdict::Unknown);
        assert!(!c.record(false, 2, 3));
        assert!(!c.record(false, 2, 3));
        assert!(!c.record(true, 2, 3), "one success does not reach 2");
        assert!(c.record(true, 2, 3));
        assert_eq!(c.verdict, Verdict::Success);
        // Two failures, a success, two failures: never three in a row.
        for ok in [false, false, true, false, false] {
            assert!(!c.record(ok, 2, 3));
        }
        assert!(c.record(false, 2, 3));
        assert_eq!(c.verdict, Verdict::Failure);
    }

    #[test]
    fn a_seeded_success_holds_through_fewer_failures_than_the_threshold() {
        let mut c = Counter::new(Verdict::Success);
        assert!(!c.record(false, 1, 3));
        assert!(!c.record(false, 1, 3));
        assert!(!c.record(true, 1, 3));
        assert_eq!(c.verdict, Verdict::Success);
    }

    #[test]
    fn output_is_capped_at_a_char_boundary() {
        let long = "é".repeat(MAX_OUTPUT);
        let c = cap(long);
        assert!(c.len() <= MAX_OUTPUT + '…'.len_utf8());
        assert!(c.ends_with('…'));
        assert_eq!(cap("  ok\n".into()), "ok");
    }

    #[test]
    fn health_of_a_fresh_run_waits_for_the_declared_probes() {
        assert!(Health::fresh(false, false).is_ready());
        let h = Health::fresh(true, false);
        assert!(!h.started && !h.is_ready());
        let h = Health::fresh(false, true);
        assert!(h.started && h.ready == Verdict::Unknown && !h.is_ready());
    }
}
