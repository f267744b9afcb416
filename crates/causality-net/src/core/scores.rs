//! Peer scores and bans, on the injected clock.

use std::collections::HashMap;
use std::time::Duration;

use crate::limits::Limits;
use crate::peer::PeerId;

#[derive(Debug)]
struct Score {
    value: i64,
    updated_ms: u64,
}

/// Scores decay toward zero; a score at the threshold bans the peer for a while.
#[derive(Debug)]
pub(crate) struct Scores {
    scores: HashMap<PeerId, Score>,
    bans: HashMap<PeerId, u64>,
    threshold: i64,
    decay_per_second: i64,
    ban_ms: u64,
}

impl Scores {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            scores: HashMap::new(),
            bans: HashMap::new(),
            threshold: limits.ban_threshold,
            decay_per_second: limits.score_decay_per_second,
            ban_ms: duration_ms(limits.ban_duration),
        }
    }

    pub(crate) fn ban_duration(&self) -> Duration {
        Duration::from_millis(self.ban_ms)
    }

    /// Whether `peer` is banned at `now_ms`.
    pub(crate) fn is_banned(&self, peer: &PeerId, now_ms: u64) -> bool {
        self.bans.get(peer).is_some_and(|until| *until > now_ms)
    }

    /// Bans in force: peer and the time the ban ends.
    pub(crate) fn bans(&self) -> impl Iterator<Item = (PeerId, u64)> + '_ {
        self.bans.iter().map(|(p, until)| (*p, *until))
    }

    /// The current score of `peer`.
    pub(crate) fn score(&self, peer: &PeerId, now_ms: u64) -> i64 {
        self.scores.get(peer).map_or(0, |s| self.decayed(s, now_ms))
    }

    fn decayed(&self, score: &Score, now_ms: u64) -> i64 {
        let elapsed =
            i64::try_from(now_ms.saturating_sub(score.updated_ms) / 1000).unwrap_or(i64::MAX);
        (score.value + elapsed.saturating_mul(self.decay_per_second)).min(0)
    }

    /// Lowers `peer`'s score by `points`. Returns `true` when this bans it.
    pub(crate) fn penalize(&mut self, peer: PeerId, points: i64, now_ms: u64) -> bool {
        if points == 0 {
            return false;
        }
        let current = self.score(&peer, now_ms);
        let value = current.saturating_sub(points);
        if value <= self.threshold && !self.is_banned(&peer, now_ms) {
            self.scores.remove(&peer);
            self.bans.insert(peer, now_ms.saturating_add(self.ban_ms));
            return true;
        }
        self.scores.insert(
            peer,
            Score {
                value,
                updated_ms: now_ms,
            },
        );
        false
    }

    /// Bans `peer` until `now_ms + duration` (or longer, when already banned longer).
    /// Returns `true` when it was not banned before.
    pub(crate) fn ban(&mut self, peer: PeerId, duration: Duration, now_ms: u64) -> bool {
        let new = !self.is_banned(&peer, now_ms);
        let until = now_ms.saturating_add(duration_ms(duration));
        let entry = self.bans.entry(peer).or_insert(until);
        *entry = (*entry).max(until);
        self.scores.remove(&peer);
        new
    }

    /// Forgets expired bans and scores that have decayed back to zero, except for the
    /// peers `keep` says are still connected (their score stays visible).
    pub(crate) fn prune(&mut self, now_ms: u64, keep: impl Fn(&PeerId) -> bool) {
        self.bans.retain(|_, until| *until > now_ms);
        let decay = self.decay_per_second.max(1);
        self.scores.retain(|peer, s| {
            let elapsed =
                i64::try_from(now_ms.saturating_sub(s.updated_ms) / 1000).unwrap_or(i64::MAX);
            keep(peer) || s.value + elapsed.saturating_mul(decay) < 0
        });
    }

    /// A peer disconnected: a neutral score is forgotten; a negative one is kept so
    /// reconnecting does not wash it out.
    pub(crate) fn on_disconnected(&mut self, peer: &PeerId, now_ms: u64) {
        if self.score(peer, now_ms) >= 0 {
            self.scores.remove(peer);
        }
    }
}

pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::Keypair;

    #[test]
    fn penalties_decay_and_ban_at_the_threshold() {
        let limits = Limits::default();
        let mut scores = Scores::new(&limits);
        let peer = Keypair::from_index(1).peer_id();
        assert!(!scores.penalize(peer, 60, 0));
        assert_eq!(scores.score(&peer, 0), -60);
        // 30 s at 1 point per second.
        assert_eq!(scores.score(&peer, 30_000), -30);
        assert!(!scores.penalize(peer, 60, 30_000));
        assert!(scores.penalize(peer, 20, 30_000), "-110 bans");
        assert!(scores.is_banned(&peer, 30_001));
        assert!(!scores.is_banned(&peer, 30_000 + 600_000));
        scores.prune(30_000 + 600_000, |_| false);
        assert_eq!(scores.bans().count(), 0);
    }
}
