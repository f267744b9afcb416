//! Per-peer inbound rate limits: GCRA from `governor`, on `tokio::time`.

use std::num::NonZeroU32;

use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::peer::PeerId;

/// `governor`'s clock on `tokio::time`, so limits follow virtual time under
/// `tokio::time::pause()`.
#[derive(Clone, Debug)]
pub(crate) struct TokioTime {
    start: tokio::time::Instant,
}

impl GovernorClock for TokioTime {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.start.elapsed())
    }
}

/// A keyed GCRA limiter: `per_second` sustained, `burst` at once, per peer.
#[derive(Debug)]
pub(crate) struct PeerLimiter {
    limiter: RateLimiter<PeerId, HashMapStateStore<PeerId>, TokioTime, NoOpMiddleware<Nanos>>,
}

impl PeerLimiter {
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_second.max(1)).expect("max(1) is non-zero");
        let burst = NonZeroU32::new(burst.max(1)).expect("max(1) is non-zero");
        let quota = Quota::per_second(rate).allow_burst(burst);
        let clock = TokioTime {
            start: tokio::time::Instant::now(),
        };
        Self {
            limiter: RateLimiter::new(quota, HashMapStateStore::default(), clock),
        }
    }

    /// Whether `peer` may send one more now.
    pub(crate) fn check(&self, peer: &PeerId) -> bool {
        self.limiter.check_key(peer).is_ok()
    }

    /// Forgets peers whose buckets are full again (they are indistinguishable from new
    /// peers), bounding memory to the recently active ones.
    pub(crate) fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::Keypair;

    #[tokio::test(start_paused = true)]
    async fn burst_then_sustained_rate() {
        let limiter = PeerLimiter::new(10, 20);
        let peer = Keypair::from_index(1).peer_id();
        let other = Keypair::from_index(2).peer_id();
        let burst = (0..100).filter(|_| limiter.check(&peer)).count();
        assert_eq!(burst, 20);
        assert!(limiter.check(&other), "limits are per peer");
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let refill = (0..100).filter(|_| limiter.check(&peer)).count();
        assert_eq!(refill, 10);
        tokio::time::advance(std::time::Duration::from_secs(60)).await;
        limiter.prune();
        assert_eq!(limiter.len(), 0);
    }
}
