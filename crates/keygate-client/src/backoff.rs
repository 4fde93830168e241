//! [`Backoff`]: how long to wait before trying again after failures — this client's
//! token fetches, and keygate-server's reconnections to its store.

use std::time::Duration;

/// Exponential backoff with jitter: after the n-th consecutive failure, wait a random
/// time between half and all of `initial * 2^(n-1)`, capped at `max`. The jitter keeps
/// many clients that failed together (keygate restarting) from retrying together.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// Waits from `initial`, doubled after each further failure, up to `max`.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// The wait after `failures` consecutive failures (0 counts as 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let full = self.initial.saturating_mul(1 << exp).min(self.max);
        let half = full / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_stay_within_their_jitter_and_stop_at_the_cap() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for (failures, full) in [(1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (1000, 30)] {
            let full = Duration::from_secs(full);
            for _ in 0..50 {
                let d = b.delay(failures);
                assert!(d >= full / 2 && d <= full, "{failures}: {d:?} vs {full:?}");
            }
        }
    }

    #[test]
    fn delays_are_jittered() {
        let b = Backoff::new(Duration::from_secs(8), Duration::from_secs(8));
        let mut seen: Vec<Duration> = (0..20).map(|_| b.delay(1)).collect();
        seen.sort();
        seen.dedup();
        assert!(seen.len() > 1, "twenty delays, all equal: no jitter");
    }
}
