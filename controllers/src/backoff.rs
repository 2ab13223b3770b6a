//! Per-key exponential backoff with jitter.
//!
//! Ours: 5 ms·2ⁿ, capped at 5 minutes, multiplied by a jitter factor in [0.8, 1.2], reset on the
//! first success. controller-runtime caps at 1000 s; a host controller should notice a
//! recovered dependency (dockerd back, a disk freed) within minutes, and resync plus driver
//! events wake keys sooner anyway, so a 5-minute ceiling loses nothing and bounds recovery time.

use std::time::Duration;

/// First retry delay.
pub const BASE: Duration = Duration::from_millis(5);
/// The ceiling.
pub const CAP: Duration = Duration::from_secs(300);

/// The delay before retry number `failures` (1 = first failure), without jitter.
pub fn delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(31);
    BASE.checked_mul(1u32 << exp).map_or(CAP, |d| d.min(CAP))
}

/// `delay(failures)` with ±20% jitter, so keys failing together do not retry together.
pub fn jittered(failures: u32) -> Duration {
    let factor = 0.8 + rand::random::<f64>() * 0.4;
    delay(failures).mul_f64(factor).min(CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        assert_eq!(delay(1), Duration::from_millis(5));
        assert_eq!(delay(2), Duration::from_millis(10));
        assert_eq!(delay(11), Duration::from_millis(5 * 1024));
        assert_eq!(delay(30), CAP);
        assert_eq!(delay(u32::MAX), CAP);
        for n in 1..40 {
            let j = jittered(n);
            assert!(
                j >= delay(n).mul_f64(0.8) - Duration::from_nanos(1) && j <= CAP,
                "{n}: {j:?}"
            );
        }
    }
}
