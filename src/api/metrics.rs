//! The API's own Prometheus metrics: requests by verb and code, latency, store write latency.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// A cumulative latency histogram with lock-free observation.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cum = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            cum += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Everything the API counts.
#[derive(Default)]
pub struct ApiMetrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    pub request_latency: Histogram,
    pub store_write_latency: Histogram,
    pub watches: AtomicU64,
}

impl ApiMetrics {
    pub fn record(&self, verb: &'static str, code: u16, took: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((verb, code))
            .or_default() += 1;
        if verb != "WATCH" {
            self.request_latency.observe(took);
        }
    }

    /// Prometheus text exposition of the API's metrics.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP tend_api_requests_total API requests by verb and HTTP code.\n");
        out.push_str("# TYPE tend_api_requests_total counter\n");
        for ((verb, code), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "tend_api_requests_total{{verb=\"{verb}\",code=\"{code}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP tend_api_request_duration_seconds Latency of non-watch API requests.\n",
        );
        out.push_str("# TYPE tend_api_request_duration_seconds histogram\n");
        self.request_latency
            .render(&mut out, "tend_api_request_duration_seconds", "");
        out.push_str(
            "# HELP tend_store_write_duration_seconds Latency of store writes made by the API.\n",
        );
        out.push_str("# TYPE tend_store_write_duration_seconds histogram\n");
        self.store_write_latency
            .render(&mut out, "tend_store_write_duration_seconds", "");
        out.push_str(
            "# HELP tend_api_watches Open watch streams.\n# TYPE tend_api_watches gauge\n",
        );
        let _ = writeln!(
            out,
            "tend_api_watches {}",
            self.watches.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cumulative_buckets() {
        let m = ApiMetrics::default();
        m.record("GET", 200, Duration::from_micros(50));
        m.record("GET", 200, Duration::from_millis(3));
        m.record("POST", 409, Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("tend_api_requests_total{verb=\"GET\",code=\"200\"} 2"));
        assert!(text.contains("tend_api_request_duration_seconds_bucket{le=\"0.0001\"} 1"));
        assert!(text.contains("tend_api_request_duration_seconds_bucket{le=\"+Inf\"} 3"));
    }
}
