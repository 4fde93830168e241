//! [`Clock`]: where the components that compare times (the [`crate::token::Issuer`] and
//! [`crate::token::Verifier`], the [`crate::revocation::MemoryRevocationStore`]) read
//! the time. The system clock unless told otherwise; a [`ManualClock`] in tests, so that a
//! test of expiry, not-before or leeway moves the clock instead of waiting for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

/// The time as a component reads it: the system clock ([`Clock::system`], the default),
/// or the time a [`ManualClock`] stands at. Cheap to clone; clones of a manual clock move
/// together.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// A manual clock's milliseconds since the Unix epoch; `None`: the system clock.
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// Milliseconds since the Unix epoch (0 before it).
    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            Some(ms) => ms.load(Ordering::Acquire),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// Whole seconds since the Unix epoch, as `iat`, `nbf` and `exp` count them.
    pub fn now_unix(&self) -> u64 {
        self.now_ms() / 1000
    }

    /// Now, as a date.
    pub fn now_utc(&self) -> OffsetDateTime {
        match &self.manual {
            None => OffsetDateTime::now_utc(),
            Some(_) => {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.now_ms()) * 1_000_000)
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH)
            }
        }
    }
}

/// A clock that moves only when told, for tests: components built with
/// [`ManualClock::clock`] read its time, and [`ManualClock::advance`] moves them all past
/// an expiry at once.
#[derive(Debug, Clone)]
pub struct ManualClock {
    ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `unix_ms` milliseconds since the Unix epoch.
    pub fn at_ms(unix_ms: u64) -> Self {
        Self {
            ms: Arc::new(AtomicU64::new(unix_ms)),
        }
    }

    /// A clock standing where the system clock is now.
    pub fn at_system_time() -> Self {
        Self::at_ms(Clock::system().now_ms())
    }

    /// The clock to hand to components: it reads this one's time.
    pub fn clock(&self) -> Clock {
        Clock {
            manual: Some(self.ms.clone()),
        }
    }

    /// Moves the time forward by `by` (at most to `u64::MAX` milliseconds).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                Some(now.saturating_add(by))
            });
    }

    /// Milliseconds since the Unix epoch it stands at.
    pub fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_its_clocks_with_it() {
        let manual = ManualClock::at_ms(1_800_000_000_250);
        let (a, b) = (manual.clock(), manual.clock());
        assert_eq!(a.now_unix(), 1_800_000_000);
        assert_eq!(
            a.now_utc(),
            OffsetDateTime::from_unix_timestamp_nanos(1_800_000_000_250_000_000).unwrap()
        );
        manual.advance(Duration::from_millis(750));
        assert_eq!(
            (a.now_ms(), b.now_unix()),
            (1_800_000_001_000, 1_800_000_001)
        );
        manual.advance(Duration::MAX);
        assert_eq!(a.now_ms(), u64::MAX);
    }

    #[test]
    fn the_system_clock_reads_the_system_time() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let read = Clock::system().now_ms();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(before.as_millis() <= u128::from(read) && u128::from(read) <= after.as_millis());
        let utc = Clock::system().now_utc();
        assert!(utc.unix_timestamp() >= i64::try_from(before.as_secs()).unwrap());
    }
}
