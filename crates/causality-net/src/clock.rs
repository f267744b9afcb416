//! Wall-clock time, injectable so tests are deterministic.

use std::fmt::Debug;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch. Envelopes are stamped
/// and checked against it.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's clock, read once at creation and advanced by the monotonic
/// clock after that: it reads wall time, yet never steps backwards or jumps while the
/// process runs (timers, bans and rate limits run on it).
#[derive(Clone, Copy, Debug)]
pub struct SystemClock {
    base_ms: u64,
    start: std::time::Instant,
}

impl SystemClock {
    /// A clock reading the system's wall time now.
    pub fn new() -> Self {
        Self {
            base_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            start: std::time::Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_ms.saturating_add(elapsed)
    }
}

/// Wall-clock time derived from `tokio::time`: `base_ms` plus the time elapsed since the
/// clock was made. Under `tokio::time::pause()` it advances only with virtual time, so a
/// simulation is deterministic.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    base_ms: u64,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `base_ms` now.
    pub fn new(base_ms: u64) -> Self {
        Self {
            base_ms,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_ms.saturating_add(elapsed)
    }
}
