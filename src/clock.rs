//! The BFF's clock: wall time plus an offset that tests move forward, so lifetimes
//! and grace windows are tested without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time with a test offset.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicU64,
}

/// Unix time in milliseconds on the wall clock, without a test offset: for times
/// other parties stamp (a logout token's `iat`), which tests do not move.
#[must_use]
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Clock {
    /// Unix time in milliseconds.
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        wall_ms().saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Unix time in seconds.
    #[must_use]
    pub fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }

    /// Moves the clock forward (tests).
    #[cfg(any(test, feature = "test-util"))]
    pub fn advance(&self, by: std::time::Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod example {
    /// What the module does, in a few lines.
    #[test]
    fn module_example() {
        use crate::clock::Clock;
        use std::time::Duration;

        let clock = Clock::default();
        let before = clock.now_secs();
        clock.advance(Duration::from_secs(3600));
        assert!(clock.now_secs() >= before + 3600);
    }
}
