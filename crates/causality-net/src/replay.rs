//! Replay protection: a sliding window of sequence numbers per sender, a bounded cache of
//! message ids, and a clock-skew bound.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use causality_hash::ContentId;

use crate::error::Rejection;
use crate::limits::Limits;
use crate::peer::PeerId;

/// Per-sender window: the highest sequence number seen and a bitmap of the ones below it.
#[derive(Debug)]
struct Window {
    highest: u64,
    /// Bit `i` set = `highest - i` was seen (bit 0 is `highest` itself).
    seen: Vec<u64>,
    /// Recency stamp for eviction.
    touched: u64,
}

impl Window {
    fn new(width: u64) -> Self {
        Self {
            highest: 0,
            seen: vec![0; usize::try_from(width.div_ceil(64)).unwrap_or(1).max(1)],
            touched: 0,
        }
    }

    fn width(&self) -> u64 {
        self.seen.len() as u64 * 64
    }

    fn get(&self, offset: u64) -> bool {
        let (word, bit) = ((offset / 64) as usize, offset % 64);
        self.seen[word] & (1 << bit) != 0
    }

    fn set(&mut self, offset: u64) {
        let (word, bit) = ((offset / 64) as usize, offset % 64);
        self.seen[word] |= 1 << bit;
    }

    /// Shifts the window so `seq` becomes the highest.
    fn advance(&mut self, seq: u64) {
        let shift = seq - self.highest;
        self.highest = seq;
        if shift >= self.width() {
            self.seen.fill(0);
            return;
        }
        let (words, bits) = ((shift / 64) as usize, (shift % 64) as u32);
        let n = self.seen.len();
        for i in (0..n).rev() {
            let lo = i.checked_sub(words).map_or(0, |j| self.seen[j]);
            let carry = if bits == 0 {
                0
            } else {
                i.checked_sub(words + 1)
                    .map_or(0, |j| self.seen[j] >> (64 - bits))
            };
            self.seen[i] = if bits == 0 { lo } else { (lo << bits) | carry };
        }
    }
}

/// Tracks what has been accepted, to refuse replays. Memory is bounded by
/// [`Limits::replay_senders`] windows and [`Limits::seen_cache`] ids.
#[derive(Debug)]
pub(crate) struct ReplayGuard {
    windows: HashMap<PeerId, Window>,
    /// Senders by when their window was last touched, oldest first: the sender to forget
    /// when full is found in O(log n), not by scanning every window.
    recency: BTreeMap<u64, PeerId>,
    seen: HashSet<ContentId>,
    /// Accepted ids in arrival order, with the sender and sequence number each came under.
    seen_order: VecDeque<(ContentId, PeerId, u64)>,
    /// Which id each recent (sender, sequence number) was accepted under: a second,
    /// different envelope under the same pair is an equivocation, provably.
    by_seq: HashMap<(PeerId, u64), ContentId>,
    width: u64,
    max_senders: usize,
    max_seen: usize,
    max_skew_ms: u64,
    clock: u64,
}

impl ReplayGuard {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            windows: HashMap::new(),
            recency: BTreeMap::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            by_seq: HashMap::new(),
            width: limits.replay_window.max(64),
            max_senders: limits.replay_senders,
            max_seen: limits.seen_cache,
            max_skew_ms: u64::try_from(limits.max_clock_skew.as_millis()).unwrap_or(u64::MAX),
            clock: 0,
        }
    }

    /// Whether a message id has been accepted already (cheap pre-check before signature
    /// verification).
    pub(crate) fn is_duplicate(&self, id: &ContentId) -> bool {
        self.seen.contains(id)
    }

    /// Whether a message would pass [`check`](Self::check), without recording it (a cheap
    /// test before its signature is verified).
    pub(crate) fn precheck(
        &self,
        id: &ContentId,
        sender: &PeerId,
        seq: u64,
        timestamp_ms: u64,
        now_ms: u64,
    ) -> Result<(), Rejection> {
        if self.seen.contains(id) {
            return Err(Rejection::Duplicate);
        }
        self.skew(timestamp_ms, now_ms)?;
        if seq == 0 {
            return Err(Rejection::Malformed("sequence number 0".into()));
        }
        if let Some(window) = self.windows.get(sender)
            && seq <= window.highest
        {
            let offset = window.highest - seq;
            if offset >= window.width() || window.get(offset) {
                return Err(Rejection::Replay {
                    sender: *sender,
                    seq,
                });
            }
        }
        Ok(())
    }

    fn skew(&self, timestamp_ms: u64, now_ms: u64) -> Result<(), Rejection> {
        let skew = i128::from(timestamp_ms) - i128::from(now_ms);
        if skew.unsigned_abs() > u128::from(self.max_skew_ms) {
            return Err(Rejection::ClockSkew {
                skew_ms: i64::try_from(skew).unwrap_or(if skew < 0 { i64::MIN } else { i64::MAX }),
                bound_ms: self.max_skew_ms,
            });
        }
        Ok(())
    }

    /// Checks a message and, when fresh, records it.
    pub(crate) fn check(
        &mut self,
        id: ContentId,
        sender: PeerId,
        seq: u64,
        timestamp_ms: u64,
        now_ms: u64,
    ) -> Result<(), Rejection> {
        if self.seen.contains(&id) {
            return Err(Rejection::Duplicate);
        }
        self.skew(timestamp_ms, now_ms)?;
        if seq == 0 {
            return Err(Rejection::Malformed("sequence number 0".into()));
        }
        self.clock += 1;
        if !self.windows.contains_key(&sender) && self.windows.len() >= self.max_senders {
            self.evict_oldest_sender();
        }
        let width = self.width;
        let window = self
            .windows
            .entry(sender)
            .or_insert_with(|| Window::new(width));
        self.recency.remove(&window.touched);
        window.touched = self.clock;
        self.recency.insert(self.clock, sender);
        if seq > window.highest {
            window.advance(seq);
            window.set(0);
        } else {
            let offset = window.highest - seq;
            if offset >= window.width() || window.get(offset) {
                return Err(Rejection::Replay { sender, seq });
            }
            window.set(offset);
        }
        self.remember(id, sender, seq);
        Ok(())
    }

    /// The id accepted under `sender`'s `seq`, while it is among the last
    /// [`Limits::seen_cache`] accepted messages.
    pub(crate) fn accepted_under(&self, sender: &PeerId, seq: u64) -> Option<ContentId> {
        self.by_seq.get(&(*sender, seq)).copied()
    }

    fn remember(&mut self, id: ContentId, sender: PeerId, seq: u64) {
        if self.seen_order.len() >= self.max_seen
            && let Some((old, old_sender, old_seq)) = self.seen_order.pop_front()
        {
            self.seen.remove(&old);
            if self.by_seq.get(&(old_sender, old_seq)) == Some(&old) {
                self.by_seq.remove(&(old_sender, old_seq));
            }
        }
        self.seen.insert(id);
        self.seen_order.push_back((id, sender, seq));
        self.by_seq.insert((sender, seq), id);
    }

    fn evict_oldest_sender(&mut self) {
        if let Some((_, oldest)) = self.recency.pop_first() {
            self.windows.remove(&oldest);
        }
    }

    /// Windows and ids held, for tests of the memory bound.
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        assert_eq!(
            self.windows.len(),
            self.recency.len(),
            "one recency entry per window"
        );
        assert!(
            self.by_seq.len() <= self.seen.len(),
            "one pair per id at most"
        );
        (self.windows.len(), self.seen.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::Keypair;

    fn id(n: u64) -> ContentId {
        ContentId::of(&n.to_le_bytes())
    }

    #[test]
    fn window_accepts_out_of_order_once() {
        let mut guard = ReplayGuard::new(&Limits::default());
        let peer = Keypair::from_index(1).peer_id();
        for seq in [5, 3, 4, 1, 2, 10, 6] {
            guard.check(id(seq), peer, seq, 0, 0).unwrap();
        }
        for seq in [5, 3, 10, 1] {
            // Same sequence number, different bytes: a replay.
            let err = guard.check(id(seq + 1000), peer, seq, 0, 0).unwrap_err();
            assert!(matches!(err, Rejection::Replay { .. }), "{seq}: {err}");
        }
        assert_eq!(guard.check(id(5), peer, 5, 0, 0), Err(Rejection::Duplicate));
        assert_eq!(guard.accepted_under(&peer, 5), Some(id(5)));
        assert_eq!(guard.accepted_under(&peer, 7), None);
    }

    #[test]
    fn too_old_is_a_replay_and_shifts_keep_bits() {
        let limits = Limits {
            replay_window: 128,
            ..Limits::default()
        };
        let mut guard = ReplayGuard::new(&limits);
        let peer = Keypair::from_index(1).peer_id();
        guard.check(id(1), peer, 1, 0, 0).unwrap();
        guard.check(id(70), peer, 70, 0, 0).unwrap();
        guard.check(id(100), peer, 100, 0, 0).unwrap();
        // 70 is still in the window (offset 30) and remembered across the shift.
        assert!(matches!(
            guard.check(id(7000), peer, 70, 0, 0),
            Err(Rejection::Replay { .. })
        ));
        // 50 is in the window and unseen.
        guard.check(id(50), peer, 50, 0, 0).unwrap();
        guard.check(id(300), peer, 300, 0, 0).unwrap();
        // 100 fell out of the 128-wide window.
        assert!(matches!(
            guard.check(id(100_000), peer, 100, 0, 0),
            Err(Rejection::Replay { .. })
        ));
    }

    #[test]
    fn clock_skew_is_bounded_both_ways() {
        let mut guard = ReplayGuard::new(&Limits::default());
        let peer = Keypair::from_index(1).peer_id();
        let now = 1_000_000;
        assert!(matches!(
            guard.check(id(1), peer, 1, now + 31_000, now),
            Err(Rejection::ClockSkew {
                skew_ms: 31_000,
                ..
            })
        ));
        assert!(matches!(
            guard.check(id(2), peer, 2, now - 31_000, now),
            Err(Rejection::ClockSkew {
                skew_ms: -31_000,
                ..
            })
        ));
        guard.check(id(3), peer, 3, now - 29_000, now).unwrap();
    }

    #[test]
    fn the_least_recently_seen_sender_is_forgotten_first() {
        let limits = Limits {
            replay_senders: 3,
            ..Limits::default()
        };
        let mut guard = ReplayGuard::new(&limits);
        let peer = |n| Keypair::from_index(n).peer_id();
        let mut next = 0;
        let mut send = |guard: &mut ReplayGuard, n: u64, seq: u64| {
            next += 1;
            guard.check(id(next), peer(n), seq, 0, 0)
        };
        send(&mut guard, 1, 10).unwrap();
        send(&mut guard, 2, 10).unwrap();
        send(&mut guard, 3, 10).unwrap();
        // Sender 1 is seen again, so 2 is now the least recent and is forgotten for 4.
        send(&mut guard, 1, 11).unwrap();
        send(&mut guard, 4, 10).unwrap();
        assert!(
            matches!(send(&mut guard, 1, 10), Err(Rejection::Replay { .. })),
            "sender 1's window was kept"
        );
        send(&mut guard, 2, 10).expect("sender 2's window was forgotten");
        assert_eq!(guard.sizes().0, 3);
    }

    #[test]
    fn memory_is_bounded() {
        let limits = Limits {
            replay_senders: 10,
            seen_cache: 100,
            ..Limits::default()
        };
        let mut guard = ReplayGuard::new(&limits);
        for n in 0..1000 {
            let peer = Keypair::from_index(n % 50).peer_id();
            guard.check(id(n), peer, n + 1, 0, 0).unwrap();
        }
        let (windows, seen) = guard.sizes();
        assert!(
            windows <= 10 && seen <= 100,
            "{windows} windows, {seen} ids"
        );
    }
}
