//! In-process metrics per controller, rendered in Prometheus text format by the API.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram of durations with fixed buckets (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

const BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Default for Histogram {
    fn default() -> Self {
        Self {
            bounds: BOUNDS,
            counts: BOUNDS.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if s <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {n}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {n}");
    }
}

/// One controller's figures.
#[derive(Debug, Default)]
pub struct ControllerMetrics {
    pub reconciles: Counter,
    pub errors: Counter,
    pub panics: Counter,
    pub drift_repairs: Counter,
    pub duration: Histogram,
    /// From a key's first trigger to the start of its reconcile.
    pub trigger_latency: Histogram,
    pub queue_depth: AtomicU64,
    pub active: AtomicU64,
}

type Getter = fn(&ControllerMetrics) -> u64;

/// Renders every controller's metrics as Prometheus text.
pub fn render(controllers: &[(String, std::sync::Arc<ControllerMetrics>)]) -> String {
    let mut out = String::new();
    let counters: [(&str, &str, Getter); 4] = [
        ("tend_reconcile_total", "Reconciles run.", |m| {
            m.reconciles.get()
        }),
        (
            "tend_reconcile_errors_total",
            "Reconciles that returned an error or panicked.",
            |m| m.errors.get(),
        ),
        (
            "tend_reconcile_panics_total",
            "Reconciles that panicked.",
            |m| m.panics.get(),
        ),
        (
            "tend_drift_repairs_total",
            "Host objects changed behind tend's back and put back.",
            |m| m.drift_repairs.get(),
        ),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (c, m) in controllers {
            let _ = writeln!(out, "{name}{{controller=\"{c}\"}} {}", get(m));
        }
    }
    let gauges: [(&str, &str, Getter); 2] = [
        ("tend_queue_depth", "Keys waiting to be reconciled.", |m| {
            m.queue_depth.load(Ordering::Relaxed)
        }),
        ("tend_reconcile_active", "Reconciles running now.", |m| {
            m.active.load(Ordering::Relaxed)
        }),
    ];
    for (name, help, get) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (c, m) in controllers {
            let _ = writeln!(out, "{name}{{controller=\"{c}\"}} {}", get(m));
        }
    }
    for (name, help, pick) in [
        (
            "tend_reconcile_duration_seconds",
            "Reconcile duration.",
            (|m| &m.duration) as fn(&ControllerMetrics) -> &Histogram,
        ),
        (
            "tend_trigger_to_reconcile_seconds",
            "Time from a change to the start of its reconcile.",
            |m| &m.trigger_latency,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (c, m) in controllers {
            pick(m).render(&mut out, name, &format!("controller=\"{c}\""));
        }
    }
    out
}
