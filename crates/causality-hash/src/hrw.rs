//! Rendezvous (highest-random-weight) hashing, rule version 2.
//!
//! Two digests, both salted by the network epoch (`salt` = the epoch as 8 big-endian bytes,
//! see [`Rendezvous::for_epoch`]):
//!
//! - `kd = u64_le(BLAKE3(salt ‖ key)[0..8])`, once per lookup;
//! - `pd = u64_le(BLAKE3(salt ‖ peer)[0..8])`, once per peer per epoch ([`PeerDigest`], kept
//!   with the view);
//!
//! and `score(key, peer) = mix(kd ⊕ pd)`, where `mix` is the SplitMix64 finalizer (a
//! bijection on 64-bit words with full avalanche). The peer with the highest score is
//! responsible for the key; equal scores are ordered by the peer bytes, greater first.
//! A lookup over prepared peers costs a few nanoseconds per peer instead of one BLAKE3.
//!
//! The weighted variant uses the logarithmic method: with `u` the score mapped into the
//! open interval (0, 1), a peer of weight `w` scores `-w / ln(u)`, so it wins a share of keys
//! proportional to `w`. The logarithm comes from `libm`, a pure-Rust port of musl, so every
//! platform gets the same bits and the same winners.
//!
//! Grinding: the salt is in both digests, so identities ground against one epoch are worth
//! nothing in the next; within an epoch, winning a chosen key still takes about N fresh
//! identities against N honest peers (`mix` leaves no structure to aim at). See
//! `docs/DECISIONS.md`.

use std::cmp::Ordering;

/// The scoring rule's version, recorded in the test vectors.
pub const HRW_RULE_VERSION: u32 = 2;

/// A peer's digest under one salt, computed once per epoch: see [`Rendezvous::peer_digest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerDigest(pub u64);

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
/// // With digests computed once per epoch, a lookup hashes only the key.
/// let digests: Vec<_> = peers.iter().map(|p| (hrw.peer_digest(p), p.as_slice())).collect();
/// let prepared = hrw.top_k_prepared(key.as_bytes(), &digests, 3, |(d, p)| (*d, *p));
/// assert_eq!(prepared[0].1, best.as_slice());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendezvous {
    salt: Vec<u8>,
}

/// The SplitMix64 finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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

    fn digest(&self, bytes: &[u8]) -> u64 {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.salt);
        hasher.update(bytes);
        let digest = hasher.finalize();
        u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"))
    }

    /// The key's digest, `u64_le(BLAKE3(salt ‖ key)[0..8])`.
    pub fn key_digest(&self, key: &[u8]) -> u64 {
        self.digest(key)
    }

    /// The peer's digest, `u64_le(BLAKE3(salt ‖ peer)[0..8])`: compute it once per epoch and
    /// keep it with the peer.
    pub fn peer_digest(&self, peer: &[u8]) -> PeerDigest {
        PeerDigest(self.digest(peer))
    }

    /// The score of a peer with digest `peer` for a key with digest `key`: higher wins.
    pub fn combine(key: u64, peer: PeerDigest) -> u64 {
        mix(key ^ peer.0)
    }

    /// The score of `peer` for `key`: higher wins.
    pub fn score(&self, key: &[u8], peer: &[u8]) -> u64 {
        Self::combine(self.key_digest(key), self.peer_digest(peer))
    }

    /// The weighted score of `peer` (weight `weight` > 0) for `key`: higher wins.
    ///
    /// A weight that is not a positive finite number scores `0.0`, so that peer never wins
    /// over a peer with a proper weight.
    pub fn weighted_score(&self, key: &[u8], peer: &[u8], weight: f64) -> f64 {
        weighted(self.score(key, peer), weight)
    }

    /// The `k` peers with the highest scores for `key`, best first. Computes every peer's
    /// digest; over a view that changes rarely, keep the digests and use
    /// [`top_k_prepared`](Self::top_k_prepared).
    pub fn top_k<'a, P: AsRef<[u8]>>(&self, key: &[u8], peers: &'a [P], k: usize) -> Vec<&'a P> {
        let digests: Vec<(PeerDigest, &[u8])> = peers
            .iter()
            .map(|p| (self.peer_digest(p.as_ref()), p.as_ref()))
            .collect();
        self.top_k_indices(key, &digests, k, |(d, p)| (*d, *p))
            .into_iter()
            .map(|i| &peers[i])
            .collect()
    }

    /// The `k` items with the highest scores for `key`, best first, where `prepared` gives
    /// each item's digest and peer bytes (for ties). One BLAKE3 per lookup, a multiply-xorshift
    /// per item.
    pub fn top_k_prepared<'a, T>(
        &self,
        key: &[u8],
        items: &'a [T],
        k: usize,
        prepared: impl Fn(&T) -> (PeerDigest, &[u8]),
    ) -> Vec<&'a T> {
        self.top_k_indices(key, items, k, prepared)
            .into_iter()
            .map(|i| &items[i])
            .collect()
    }

    fn top_k_indices<T>(
        &self,
        key: &[u8],
        items: &[T],
        k: usize,
        prepared: impl Fn(&T) -> (PeerDigest, &[u8]),
    ) -> Vec<usize> {
        let kd = self.key_digest(key);
        let mut best = TopK::new(k);
        for (i, item) in items.iter().enumerate() {
            let (digest, _) = prepared(item);
            best.offer(Self::combine(kd, digest), i, |&a, &b| {
                prepared(&items[a]).1.cmp(prepared(&items[b]).1)
            });
        }
        best.into_items().collect()
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
        let digests: Vec<(PeerDigest, f64, &'a P)> = peers
            .iter()
            .map(|p| (self.peer_digest(p.as_ref()), weight(p), p))
            .collect();
        self.top_k_weighted_iter(key, digests, k, |(d, w, p)| (*d, *w, p.as_ref()))
            .into_iter()
            .map(|(_, _, p)| p)
            .collect()
    }

    /// The `k` items with the highest weighted scores for `key`, best first, where
    /// `prepared` gives each item's digest, weight and peer bytes.
    pub fn top_k_weighted_prepared<'a, T>(
        &self,
        key: &[u8],
        items: &'a [T],
        k: usize,
        prepared: impl Fn(&T) -> (PeerDigest, f64, &[u8]),
    ) -> Vec<&'a T> {
        self.top_k_weighted_iter(key, items, k, |item| prepared(item))
    }

    /// [`top_k_weighted_prepared`](Self::top_k_weighted_prepared) over any sequence of
    /// items (a view's map, a filtered iterator), without collecting it first.
    ///
    /// Once `k` items are held, an item whose raw score cannot reach the k-th weighted
    /// score for its weight is skipped without computing its logarithm; the bound keeps a
    /// margin far above the rounding of `exp` and `ln`, so the result is exactly that of
    /// scoring every item.
    ///
    /// ```
    /// use causality_hash::Rendezvous;
    ///
    /// let hrw = Rendezvous::for_epoch(1);
    /// let peers: Vec<[u8; 32]> = (0u8..50).map(|i| [i; 32]).collect();
    /// let view = peers.iter().map(|p| (hrw.peer_digest(p), 1.0, p));
    /// let best = hrw.top_k_weighted_iter(b"key", view, 3, |(d, w, p)| (*d, *w, p.as_slice()));
    /// assert_eq!(best.len(), 3);
    /// ```
    pub fn top_k_weighted_iter<T>(
        &self,
        key: &[u8],
        items: impl IntoIterator<Item = T>,
        k: usize,
        prepared: impl Fn(&T) -> (PeerDigest, f64, &[u8]),
    ) -> Vec<T> {
        let kd = self.key_digest(key);
        let mut best = TopK::new(k);
        let mut floor = Floor::default();
        for item in items {
            let (digest, weight, _) = prepared(&item);
            let raw = Self::combine(kd, digest);
            if let Some(OrdF64(kth)) = best.kth()
                && floor.below(raw, weight, kth)
            {
                continue;
            }
            best.offer(OrdF64(weighted(raw, weight)), item, |a, b| {
                prepared(a).2.cmp(prepared(b).2)
            });
        }
        best.into_items().collect()
    }

    /// The index of the single best peer, or `None` when `peers` is empty.
    pub fn winner<P: AsRef<[u8]>>(&self, key: &[u8], peers: &[P]) -> Option<usize> {
        let kd = self.key_digest(key);
        let mut best: Option<(u64, usize)> = None;
        for (i, peer) in peers.iter().enumerate() {
            let score = Self::combine(kd, self.peer_digest(peer.as_ref()));
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

/// The raw scores below which an item cannot reach the k-th best weighted score, for one
/// weight and one k-th score (both change rarely during a scan, so `exp` runs rarely).
#[derive(Default)]
struct Floor {
    weight: f64,
    kth: f64,
    /// Skip when `(raw >> 12) + 0.5` is below this.
    limit: f64,
}

impl Floor {
    /// Relative margin on `u`: some 10⁻¹² on the weighted score, where `exp`, `ln` and the
    /// division round by 10⁻¹⁶.
    const MARGIN: f64 = 1e-9;

    /// Whether an item of raw score `raw` and weight `weight` surely scores below `kth`.
    #[inline]
    fn below(&mut self, raw: u64, weight: f64, kth: f64) -> bool {
        if weight.to_bits() != self.weight.to_bits() || kth.to_bits() != self.kth.to_bits() {
            self.weight = weight;
            self.kth = kth;
            self.limit = if !(weight.is_finite() && weight > 0.0) {
                // Scores 0: below any positive k-th, and never above it.
                if kth > 0.0 { f64::INFINITY } else { 0.0 }
            } else if kth > 0.0 {
                // -w / ln(u) < kth  ⟺  u < exp(-w / kth).
                libm::exp(-weight / kth) * (1.0 - Self::MARGIN) * (1u64 << 52) as f64
            } else {
                0.0
            };
        }
        ((raw >> 12) as f64 + 0.5) < self.limit
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

/// The best `k` of a stream of `(score, item)`, kept sorted best first.
///
/// `k` is small in practice (replication factors), so a sorted vector with insertion beats
/// a heap; each offer that does not beat the current k-th costs one comparison.
struct TopK<S, T> {
    k: usize,
    items: Vec<(S, T)>,
}

impl<S: Ord + Copy, T> TopK<S, T> {
    fn new(k: usize) -> Self {
        Self {
            k,
            items: Vec::with_capacity(k.min(1024) + 1),
        }
    }

    /// The k-th best score, once `k` items are held.
    fn kth(&self) -> Option<S> {
        (self.k > 0 && self.items.len() == self.k).then(|| self.items[self.k - 1].0)
    }

    fn offer(&mut self, score: S, item: T, tie: impl Fn(&T, &T) -> Ordering) {
        if self.k == 0 {
            return;
        }
        let better = |a: &(S, T), b: &(S, T)| a.0.cmp(&b.0).then_with(|| tie(&a.1, &b.1));
        let item = (score, item);
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

    fn into_items(self) -> impl Iterator<Item = T> {
        self.items.into_iter().map(|(_, item)| item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Skipping items below the floor changes nothing: for many keys, sizes and weight
    /// mixes (equal, alternating, wide, invalid), the result is that of scoring every item
    /// and sorting.
    #[test]
    fn the_floor_skips_only_what_cannot_win() {
        let hrw = Rendezvous::for_epoch(9);
        let all = peers(2_000);
        let mixes: [&dyn Fn(usize) -> f64; 4] = [
            &|_| 1.0,
            &|i| if i % 2 == 0 { 1.0 } else { 2.5 },
            &|i| 0.01 + (i % 97) as f64,
            &|i| {
                if i % 13 == 0 {
                    f64::NAN
                } else if i % 17 == 0 {
                    0.0
                } else {
                    1.0
                }
            },
        ];
        for (m, weight) in mixes.iter().enumerate() {
            for n in [1, 5, 200, 2_000] {
                for key in 0u32..40 {
                    let key = key.to_le_bytes();
                    let items: Vec<(PeerDigest, f64, &[u8; 32])> = all[..n]
                        .iter()
                        .enumerate()
                        .map(|(i, p)| (hrw.peer_digest(p), weight(i), p))
                        .collect();
                    let mut naive: Vec<(f64, &[u8; 32])> = items
                        .iter()
                        .map(|(d, w, p)| {
                            (
                                weighted(Rendezvous::combine(hrw.key_digest(&key), *d), *w),
                                *p,
                            )
                        })
                        .collect();
                    naive.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| b.1.cmp(a.1)));
                    for k in [1, 3, 8] {
                        let fast: Vec<&[u8; 32]> = hrw
                            .top_k_weighted_iter(&key, items.iter(), k, |(d, w, p)| {
                                (*d, *w, p.as_slice())
                            })
                            .into_iter()
                            .map(|(_, _, p)| *p)
                            .collect();
                        let expected: Vec<&[u8; 32]> =
                            naive.iter().take(k).map(|(_, p)| *p).collect();
                        assert_eq!(fast, expected, "mix {m}, n {n}, k {k}");
                    }
                }
            }
        }
    }

    fn peers(n: u32) -> Vec<[u8; 32]> {
        (0..n)
            .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
            .collect()
    }

    fn le8(bytes: &[u8]) -> u64 {
        u64::from_le_bytes(blake3::hash(bytes).as_bytes()[..8].try_into().unwrap())
    }

    #[test]
    fn score_mixes_the_two_salted_digests() {
        let hrw = Rendezvous::for_epoch(3);
        let (key, peer) = (b"key-bytes", b"peer-bytes");
        let salted = |x: &[u8]| {
            let mut input = 3u64.to_be_bytes().to_vec();
            input.extend_from_slice(x);
            le8(&input)
        };
        let (kd, pd) = (salted(key), salted(peer));
        assert_eq!(hrw.key_digest(key), kd);
        assert_eq!(hrw.peer_digest(peer), PeerDigest(pd));
        // SplitMix64's finalizer, written out.
        let mut z = kd ^ pd;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^= z >> 31;
        assert_eq!(hrw.score(key, peer), z);
    }

    #[test]
    fn prepared_lookups_agree_with_plain_ones() {
        let hrw = Rendezvous::for_epoch(9);
        let peers = peers(300);
        let prepared: Vec<(PeerDigest, f64, &[u8])> = peers
            .iter()
            .map(|p| (hrw.peer_digest(p), f64::from(p[0] % 3 + 1), p.as_slice()))
            .collect();
        for key in 0u32..50 {
            let key = key.to_be_bytes();
            let plain: Vec<&[u8]> = hrw
                .top_k(&key, &peers, 5)
                .iter()
                .map(|p| p.as_slice())
                .collect();
            let fast: Vec<&[u8]> = hrw
                .top_k_prepared(&key, &prepared, 5, |(d, _, p)| (*d, *p))
                .iter()
                .map(|(_, _, p)| *p)
                .collect();
            assert_eq!(plain, fast);
            let weight = |p: &[u8; 32]| f64::from(p[0] % 3 + 1);
            let plain: Vec<&[u8]> = hrw
                .top_k_weighted(&key, &peers, 5, weight)
                .iter()
                .map(|p| p.as_slice())
                .collect();
            let fast: Vec<&[u8]> = hrw
                .top_k_weighted_prepared(&key, &prepared, 5, |(d, w, p)| (*d, *w, *p))
                .iter()
                .map(|(_, _, p)| *p)
                .collect();
            assert_eq!(plain, fast);
        }
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
