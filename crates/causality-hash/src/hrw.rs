//! Rendezvous (highest-random-weight) hashing.
//!
//! `score(key, peer)` is the first 8 bytes, read little-endian, of
//! `BLAKE3(salt ‖ key ‖ peer)`, where `salt` is the network epoch as 8 big-endian bytes
//! (see [`Rendezvous::for_epoch`]). The peer with the highest score is responsible for
//! the key; equal scores are ordered by the peer bytes, greater first. Keys should have
//! a fixed length within one use (content ids are 32 bytes), so that `key ‖ peer` is
//! unambiguous.
//!
//! The weighted variant uses the logarithmic method: with `u` the score mapped into
//! the open interval (0, 1), a peer of weight `w` scores `-w / ln(u)`, so it wins a
//! share of keys proportional to `w`. The logarithm comes from `libm`, a pure-Rust
//! port of musl, so every platform gets the same bits and the same winners.

use std::cmp::Ordering;

/// Longest key plus peer id that is hashed without a heap allocation.
const INLINE_INPUT: usize = 256;

/// Rendezvous hashing under one salt (normally the network epoch).
///
/// # Example
///
/// ```
/// use causality_hash::{ContentId, Rendezvous};
///
/// let peers: Vec<Vec<u8>> = (0u8..10).map(|i| vec![i; 32]).collect();
/// let hrw = Rendezvous::for_epoch(7);
/// let key = ContentId::of(b"some proof");
/// let top = hrw.top_k(key.as_bytes(), &peers, 3);
/// assert_eq!(top.len(), 3);
/// // The winner is the peer with the highest score.
/// let best = peers.iter().max_by_key(|p| (hrw.score(key.as_bytes(), p), p.to_vec())).unwrap();
/// assert_eq!(top[0], best);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendezvous {
    salt: Vec<u8>,
}

impl Rendezvous {
    /// Salted by a network epoch: the salt is `epoch.to_be_bytes()`.
    pub fn for_epoch(epoch: u64) -> Self {
        Self::with_salt(&epoch.to_be_bytes())
    }

    /// Salted by arbitrary bytes.
    pub fn with_salt(salt: &[u8]) -> Self {
        Self {
            salt: salt.to_vec(),
        }
    }

    /// The salt in use.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// The score of `peer` for `key`: higher wins.
    pub fn score(&self, key: &[u8], peer: &[u8]) -> u64 {
        let mut prefix = Prefix::new(&self.salt, key);
        prefix.score(peer)
    }

    /// The weighted score of `peer` (weight `weight` > 0) for `key`: higher wins.
    ///
    /// A weight that is not a positive finite number scores `0.0`, so that peer never wins
    /// over a peer with a proper weight.
    pub fn weighted_score(&self, key: &[u8], peer: &[u8], weight: f64) -> f64 {
        weighted(self.score(key, peer), weight)
    }

    /// The `k` peers with the highest scores for `key`, best first.
    pub fn top_k<'a, P: AsRef<[u8]>>(&self, key: &[u8], peers: &'a [P], k: usize) -> Vec<&'a P> {
        let mut prefix = Prefix::new(&self.salt, key);
        let mut best = TopK::new(k);
        for (i, peer) in peers.iter().enumerate() {
            let peer = peer.as_ref();
            let score = prefix.score(peer);
            best.offer(score, i, |a, b| peers[a].as_ref().cmp(peers[b].as_ref()));
        }
        best.into_indices().map(|i| &peers[i]).collect()
    }

    /// The `k` peers with the highest weighted scores for `key`, best first.
    ///
    /// `weight` gives each peer's weight; see [`Rendezvous::weighted_score`].
    pub fn top_k_weighted<'a, P: AsRef<[u8]>>(
        &self,
        key: &[u8],
        peers: &'a [P],
        k: usize,
        weight: impl Fn(&P) -> f64,
    ) -> Vec<&'a P> {
        let mut prefix = Prefix::new(&self.salt, key);
        let mut best = TopK::new(k);
        for (i, peer) in peers.iter().enumerate() {
            let score = weighted(prefix.score(peer.as_ref()), weight(peer));
            best.offer(OrdF64(score), i, |a, b| {
                peers[a].as_ref().cmp(peers[b].as_ref())
            });
        }
        best.into_indices().map(|i| &peers[i]).collect()
    }

    /// The index of the single best peer, or `None` when `peers` is empty.
    pub fn winner<P: AsRef<[u8]>>(&self, key: &[u8], peers: &[P]) -> Option<usize> {
        let mut prefix = Prefix::new(&self.salt, key);
        let mut best: Option<(u64, usize)> = None;
        for (i, peer) in peers.iter().enumerate() {
            let score = prefix.score(peer.as_ref());
            let better = match best {
                None => true,
                Some((s, j)) => {
                    (score, peer.as_ref()).cmp(&(s, peers[j].as_ref())) == Ordering::Greater
                }
            };
            if better {
                best = Some((score, i));
            }
        }
        best.map(|(_, i)| i)
    }
}

/// Maps a raw score into the weighted score `-w / ln(u)`, `u` in (0, 1).
fn weighted(score: u64, weight: f64) -> f64 {
    if !(weight.is_finite() && weight > 0.0) {
        return 0.0;
    }
    // The 52 high bits, centred in their cell: exact in an f64, never 0 and never 1.
    let u = ((score >> 12) as f64 + 0.5) / (1u64 << 52) as f64;
    -weight / libm::log(u)
}

/// `salt ‖ key` already laid out in a buffer; each peer is appended in place.
struct Prefix {
    buf: [u8; INLINE_INPUT],
    len: usize,
    spill: Vec<u8>,
}

impl Prefix {
    fn new(salt: &[u8], key: &[u8]) -> Self {
        let len = salt.len() + key.len();
        let mut buf = [0u8; INLINE_INPUT];
        let mut spill = Vec::new();
        if len <= INLINE_INPUT {
            buf[..salt.len()].copy_from_slice(salt);
            buf[salt.len()..len].copy_from_slice(key);
        } else {
            spill.extend_from_slice(salt);
            spill.extend_from_slice(key);
        }
        Self { buf, len, spill }
    }

    fn score(&mut self, peer: &[u8]) -> u64 {
        let total = self.len + peer.len();
        let digest = if total <= INLINE_INPUT {
            self.buf[self.len..total].copy_from_slice(peer);
            blake3::hash(&self.buf[..total])
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.buf[..self.len]);
            }
            self.spill.truncate(self.len);
            self.spill.extend_from_slice(peer);
            blake3::hash(&self.spill)
        };
        let first: [u8; 8] = digest.as_bytes()[..8].try_into().expect("8 bytes");
        u64::from_le_bytes(first)
    }
}

/// `f64` ordered by `total_cmp`; the weighted scores are never NaN.
#[derive(Clone, Copy, PartialEq)]
struct OrdF64(f64);

impl Eq for OrdF64 {}

impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The best `k` of a stream of `(score, index)`, kept sorted best first.
///
/// `k` is small in practice (replication factors), so a sorted vector with insertion beats
/// a heap; each offer that does not beat the current k-th costs one comparison.
struct TopK<S> {
    k: usize,
    items: Vec<(S, usize)>,
}

impl<S: Ord + Copy> TopK<S> {
    fn new(k: usize) -> Self {
        Self {
            k,
            items: Vec::with_capacity(k.min(1024) + 1),
        }
    }

    fn offer(&mut self, score: S, index: usize, tie: impl Fn(usize, usize) -> Ordering) {
        if self.k == 0 {
            return;
        }
        let better = |a: &(S, usize), b: &(S, usize)| a.0.cmp(&b.0).then_with(|| tie(a.1, b.1));
        let item = (score, index);
        if self.items.len() == self.k {
            let last = self.items.last().expect("k > 0");
            if better(&item, last) != Ordering::Greater {
                return;
            }
            self.items.pop();
        }
        let pos = self
            .items
            .partition_point(|existing| better(existing, &item) == Ordering::Greater);
        self.items.insert(pos, item);
    }

    fn into_indices(self) -> impl Iterator<Item = usize> {
        self.items.into_iter().map(|(_, i)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: u32) -> Vec<[u8; 32]> {
        (0..n)
            .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
            .collect()
    }

    #[test]
    fn score_is_blake3_of_salt_key_peer() {
        let hrw = Rendezvous::for_epoch(3);
        let (key, peer) = (b"key-bytes", b"peer-bytes");
        let mut input = 3u64.to_be_bytes().to_vec();
        input.extend_from_slice(key);
        input.extend_from_slice(peer);
        let digest = blake3::hash(&input);
        let expected = u64::from_le_bytes(digest.as_bytes()[..8].try_into().unwrap());
        assert_eq!(hrw.score(key, peer), expected);
    }

    #[test]
    fn top_k_matches_full_sort() {
        let hrw = Rendezvous::for_epoch(1);
        let peers = peers(500);
        for key in 0u32..50 {
            let key = key.to_be_bytes();
            let mut all: Vec<_> = peers.iter().collect();
            all.sort_by(|a, b| (hrw.score(&key, *b), *b).cmp(&(hrw.score(&key, *a), *a)));
            for k in [0, 1, 3, 10, 600] {
                let top = hrw.top_k(&key, &peers, k);
                assert_eq!(top, all[..k.min(all.len())].to_vec());
            }
            assert_eq!(hrw.winner(&key, &peers).map(|i| &peers[i]), Some(all[0]));
        }
    }

    #[test]
    fn long_inputs_spill_to_the_heap_identically() {
        let hrw = Rendezvous::with_salt(&[9; 200]);
        let key = [1u8; 100];
        let peer = [2u8; 100];
        let mut input = vec![9u8; 200];
        input.extend_from_slice(&key);
        input.extend_from_slice(&peer);
        let digest = blake3::hash(&input);
        let expected = u64::from_le_bytes(digest.as_bytes()[..8].try_into().unwrap());
        assert_eq!(hrw.score(&key, &peer), expected);
        let ps = [peer, [3u8; 100], [4u8; 100]];
        assert_eq!(hrw.top_k(&key, &ps, 3).len(), 3);
    }

    #[test]
    fn salt_changes_the_winner_for_some_keys() {
        let peers = peers(20);
        let a = Rendezvous::for_epoch(1);
        let b = Rendezvous::for_epoch(2);
        let moved = (0u32..200)
            .filter(|k| a.winner(&k.to_be_bytes(), &peers) != b.winner(&k.to_be_bytes(), &peers))
            .count();
        assert!(
            moved > 100,
            "a new epoch reshuffles keys: moved {moved} of 200"
        );
    }

    #[test]
    fn weights_shift_the_share_of_keys() {
        let hrw = Rendezvous::for_epoch(0);
        let peers = peers(4);
        let weight = |p: &[u8; 32]| if *p == peers[0] { 3.0 } else { 1.0 };
        let keys = 30_000u32;
        let heavy = (0..keys)
            .filter(|k| hrw.top_k_weighted(&k.to_be_bytes(), &peers, 1, weight)[0] == &peers[0])
            .count();
        // Expected share 3 / (3 + 1 + 1 + 1) = 0.5.
        let share = heavy as f64 / f64::from(keys);
        assert!((share - 0.5).abs() < 0.02, "share {share}");
    }

    #[test]
    fn bad_weights_never_win() {
        for w in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(weighted(u64::MAX, w), 0.0);
        }
        assert!(weighted(0, 1.0) > 0.0);
        assert!(weighted(u64::MAX, 1.0) > weighted(u64::MAX / 2, 1.0));
    }
}
