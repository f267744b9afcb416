//! Rate limits on the injected clock: the generic cell rate algorithm (GCRA), keyed.
//!
//! Written here rather than taken from `governor` because the core is a state machine that
//! receives the time as an argument; `governor` reads it from a clock object. GCRA keeps one
//! number per key (the theoretical arrival time), which makes the whole limiter a map.

use std::collections::HashMap;
use std::hash::Hash;

/// `per_second` sustained, `burst` at once, per key. Time in milliseconds; kept in
/// microseconds so rates above 1,000/s work.
#[derive(Debug)]
pub(crate) struct Gcra<K> {
    /// Microseconds between two cells at the sustained rate.
    interval_us: u64,
    /// How far ahead of now the arrival time may run: `interval × (burst − 1)`.
    tolerance_us: u64,
    /// Theoretical arrival time per key, µs.
    tat: HashMap<K, u64>,
}

impl<K: Hash + Eq + Clone> Gcra<K> {
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        let interval_us = 1_000_000 / u64::from(per_second.max(1));
        Self {
            interval_us: interval_us.max(1),
            tolerance_us: interval_us.max(1) * u64::from(burst.max(1) - 1),
            tat: HashMap::new(),
        }
    }

    /// One cell every `interval_us` sustained (for rates below one per second), `burst`
    /// at once.
    pub(crate) fn per_interval(interval_us: u64, burst: u32) -> Self {
        let interval_us = interval_us.max(1);
        Self {
            interval_us,
            tolerance_us: interval_us * u64::from(burst.max(1) - 1),
            tat: HashMap::new(),
        }
    }

    /// Whether `key` may have one more cell at `now_ms`; records it when so.
    pub(crate) fn check(&mut self, key: &K, now_ms: u64) -> bool {
        self.check_n(key, now_ms, 1)
    }

    /// Whether `key` may have `cells` more at `now_ms` (a cost, such as KiB); records them
    /// when so. A cost above the burst is never allowed.
    pub(crate) fn check_n(&mut self, key: &K, now_ms: u64, cells: u64) -> bool {
        let now = now_ms.saturating_mul(1000);
        let tat = self.tat.get(key).copied().unwrap_or(now).max(now);
        let cost = self.interval_us.saturating_mul(cells.max(1));
        // The last of the cells must still fall within the tolerance.
        let last = tat.saturating_add(cost - self.interval_us);
        if last - now > self.tolerance_us {
            return false;
        }
        self.tat.insert(key.clone(), tat.saturating_add(cost));
        true
    }

    /// Forgets keys whose bucket is full again (indistinguishable from new keys), so memory
    /// follows the recently active keys only.
    pub(crate) fn prune(&mut self, now_ms: u64) {
        let now = now_ms.saturating_mul(1000);
        self.tat.retain(|_, tat| *tat > now);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.tat.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_sustained_rate() {
        let mut limiter = Gcra::new(10, 20);
        let burst = (0..100).filter(|_| limiter.check(&1, 0)).count();
        assert_eq!(burst, 20);
        assert!(limiter.check(&2, 0), "limits are per key");
        let refill = (0..100).filter(|_| limiter.check(&1, 1_000)).count();
        assert_eq!(refill, 10);
        limiter.prune(61_000);
        assert_eq!(limiter.len(), 0);
    }

    #[test]
    fn costs_draw_several_cells() {
        let mut limiter = Gcra::new(100, 200);
        assert!(limiter.check_n(&1, 0, 150));
        assert!(!limiter.check_n(&1, 0, 51), "over the burst");
        assert!(limiter.check_n(&1, 0, 50));
        assert!(
            !limiter.check_n(&2, 0, 201),
            "a cost above the burst never passes"
        );
        // One second refills 100.
        assert!(limiter.check_n(&1, 1_000, 100));
        assert!(!limiter.check_n(&1, 1_000, 1));
    }

    #[test]
    fn high_rates_work_below_a_millisecond() {
        let mut limiter = Gcra::new(100_000, 100);
        let first_ms = (0..1000).filter(|_| limiter.check(&0, 5)).count();
        assert_eq!(first_ms, 100);
        let next = (0..1000).filter(|_| limiter.check(&0, 6)).count();
        assert_eq!(next, 100);
    }
}
