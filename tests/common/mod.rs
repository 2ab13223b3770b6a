//! Shared helpers for tend's integration tests: privilege checks and unique host-object names.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// `d` stretched by `TEND_TEST_TIME_SCALE` (default 1): the VM suite runs under CPU emulation
/// (deploy/vm-test.sh sets it), where every start takes several times longer. Only upper bounds
/// of waits for a positive signal are scaled, never a figure a test asserts.
pub fn scaled(d: Duration) -> Duration {
    let k: u32 = std::env::var("TEND_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&k| k >= 1)
        .unwrap_or(1);
    d * k
}

/// `secs` seconds, scaled, as a CLI duration ("20s").
pub fn scaled_secs(secs: u64) -> String {
    format!("{}s", scaled(Duration::from_secs(secs)).as_secs())
}

/// Returns true when the test may touch privileged host objects. On a non-root machine it says
/// so loudly and returns false, so the test can return early; with `TEND_REQUIRE_PRIVILEGED=1`
/// (set by CI, which runs as root) a missing privilege fails the test instead of skipping it.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    if std::env::var_os("TEND_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1") {
        panic!("{test}: needs root, and TEND_REQUIRE_PRIVILEGED=1 forbids skipping");
    }
    eprintln!("SKIPPED {test}: needs root (set TEND_REQUIRE_PRIVILEGED=1 to make this a failure)");
    false
}

/// Kills a child (by its pid) and reaps it when dropped, however the test ends.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A short name unique to this test process and call, for host objects: `<prefix><pid36><n>`.
/// Kept short because interface names are limited to 15 bytes.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{n}", radix36(std::process::id()))
}

fn radix36(mut v: u32) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}
pub mod daemon;
pub mod fixtures;
pub mod registry;
pub mod sweep;
