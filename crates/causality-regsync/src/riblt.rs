//! Rateless invertible Bloom lookup tables (Yang, Gilad, Alizadeh: "Practical Rateless
//! Set Reconciliation", SIGCOMM 2024), written from the paper.
//!
//! Each side turns its set of fixed-size items into an endless sequence of coded symbols;
//! the receiver subtracts its own symbols from the sender's and peels the difference out.
//! About 1.35 symbols per item of the symmetric difference suffice once the difference is
//! large, whatever the sets' sizes, so the cost of reconciling two sets follows the
//! difference, not the sets.
//!
//! Item `x` goes into symbol 0 and then into the indices of a pseudo-random sequence seeded
//! by its checksum whose gaps grow like the index (the paper's mapping: index `i` is hit
//! with probability about `1 / (1 + i/2)`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Bytes of one item: 12 bytes of a BLAKE3 digest (a collision between two of a node's
/// items needs about 2⁴⁸ of them; a reconciled set is checked against its Merkle root
/// besides).
pub const ITEM_BYTES: usize = 12;

/// One item of a reconciled set.
pub type Item = [u8; ITEM_BYTES];

/// Bytes of a checksum on the wire: 40 bits. A symbol is taken for pure when its count is
/// ±1 and its checksum matches its sum's, so a false peel needs a 40-bit collision (about
/// 10⁻⁷ for the ~10⁵ checks of a 2,000-item difference), and the reconciled set is checked
/// against the answerer's Merkle root besides.
pub const CHECKSUM_BYTES: usize = 5;

/// Bytes of one encoded symbol: the item sum, the checksum sum (LE), and the count modulo
/// 256. The receiver needs the count only after subtracting its own, where a symbol is
/// pure at ±1 (and its checksum then confirms it), so its low byte suffices.
pub const SYMBOL_BYTES: usize = ITEM_BYTES + CHECKSUM_BYTES + 1;

/// The checksum of an item of the reconciled sets: 8 bytes of keyed BLAKE3 (items are
/// already digests; the key keeps the checksum independent of them).
pub fn checksum(item: &Item) -> u64 {
    let digest = blake3::keyed_hash(b"causality/regsync/riblt/v1\0\0\0\0\0\0", item);
    let mut bytes = [0u8; 8];
    bytes[..CHECKSUM_BYTES].copy_from_slice(&digest.as_bytes()[..CHECKSUM_BYTES]);
    u64::from_le_bytes(bytes)
}

/// The sequence of symbol indices an item is mapped to.
#[derive(Clone, Copy, Debug)]
struct Mapping {
    prng: u64,
    last: u64,
}

impl Mapping {
    fn new(checksum: u64) -> Self {
        Self {
            prng: checksum,
            last: 0,
        }
    }

    fn next_index(&mut self) -> u64 {
        let r = self.prng.wrapping_mul(0xda94_2042_e4dd_58b5);
        self.prng = r;
        let gap = ((self.last as f64 + 1.5)
            * ((1u64 << 32) as f64 / ((r as f64) + 1.0).sqrt() - 1.0))
            .ceil();
        self.last = self.last.saturating_add(if gap.is_finite() && gap >= 1.0 {
            gap as u64
        } else {
            1
        });
        self.last
    }
}

/// A coded symbol: the XOR of the items mapped to it, of their checksums, and their count.
/// Items are `N` bytes (the reconciled sets' are [`ITEM_BYTES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol<const N: usize = ITEM_BYTES> {
    /// XOR of the items.
    pub sum: [u8; N],
    /// XOR of their checksums.
    pub checksum: u64,
    /// How many (the sender's minus the receiver's after subtraction).
    pub count: i64,
}

impl<const N: usize> Default for Symbol<N> {
    fn default() -> Self {
        Self {
            sum: [0; N],
            checksum: 0,
            count: 0,
        }
    }
}

impl<const N: usize> Symbol<N> {
    fn add(&mut self, item: &[u8; N], checksum: u64, sign: i64) {
        for (s, b) in self.sum.iter_mut().zip(item) {
            *s ^= b;
        }
        self.checksum ^= checksum;
        self.count += sign;
    }

    fn is_pure(&self, hash: fn(&[u8; N]) -> u64) -> bool {
        (self.count == 1 || self.count == -1) && hash(&self.sum) == self.checksum
    }

    fn is_zero(&self) -> bool {
        self.count == 0 && self.checksum == 0 && self.sum == [0; N]
    }
}

impl Symbol {
    /// The fixed-size encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.sum);
        out.extend_from_slice(&self.checksum.to_le_bytes()[..CHECKSUM_BYTES]);
        out.push(self.count as u8);
    }

    /// Decodes symbols packed by [`encode`](Self::encode); `None` when the length is not a
    /// multiple of [`SYMBOL_BYTES`].
    pub fn decode_all(bytes: &[u8]) -> Option<Vec<Symbol>> {
        if !bytes.len().is_multiple_of(SYMBOL_BYTES) {
            return None;
        }
        Some(
            bytes
                .chunks_exact(SYMBOL_BYTES)
                .map(|c| {
                    let mut checksum = [0u8; 8];
                    checksum[..CHECKSUM_BYTES]
                        .copy_from_slice(&c[ITEM_BYTES..ITEM_BYTES + CHECKSUM_BYTES]);
                    Symbol {
                        sum: c[..ITEM_BYTES].try_into().expect("item"),
                        checksum: u64::from_le_bytes(checksum),
                        count: i64::from(c[ITEM_BYTES + CHECKSUM_BYTES]),
                    }
                })
                .collect(),
        )
    }
}

/// Produces a set's coded symbols, in order, as many as asked.
#[derive(Debug, Clone)]
pub struct Encoder<const N: usize = ITEM_BYTES> {
    /// (next index, item position), smallest index first.
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    items: Vec<([u8; N], u64, Mapping)>,
    next: u64,
    hash: fn(&[u8; N]) -> u64,
}

impl Encoder {
    /// An encoder over `items` (duplicates must have been removed).
    pub fn new(items: impl IntoIterator<Item = Item>) -> Self {
        Self::with_hash(items, checksum)
    }
}

impl<const N: usize> Encoder<N> {
    /// An encoder over `items` of `N` bytes with the checksum `hash` (both sides must use
    /// the same).
    pub fn with_hash(items: impl IntoIterator<Item = [u8; N]>, hash: fn(&[u8; N]) -> u64) -> Self {
        let items: Vec<([u8; N], u64, Mapping)> = items
            .into_iter()
            .map(|i| {
                let c = hash(&i);
                (i, c, Mapping::new(c))
            })
            .collect();
        let heap = (0..items.len()).map(|p| Reverse((0, p))).collect();
        Self {
            heap,
            items,
            next: 0,
            hash,
        }
    }

    /// The index of the next symbol [`next_symbol`](Self::next_symbol) returns.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The next coded symbol.
    pub fn next_symbol(&mut self) -> Symbol<N> {
        let index = self.next;
        self.next += 1;
        let mut symbol = Symbol::default();
        while let Some(&Reverse((at, p))) = self.heap.peek() {
            if at != index {
                break;
            }
            self.heap.pop();
            let (item, c, mapping) = &mut self.items[p];
            symbol.add(item, *c, 1);
            self.heap.push(Reverse((mapping.next_index(), p)));
        }
        symbol
    }

    /// Skips to symbol `index` (used to serve a request for symbols from `index` on).
    pub fn seek(&mut self, index: u64) {
        if index < self.next {
            *self = Self::with_hash(self.items.iter().map(|(i, ..)| *i), self.hash);
        }
        while self.next < index {
            self.next_symbol();
        }
    }
}

/// Recovers the difference between a remote set (whose symbols are fed in) and the local
/// set (whose encoder is given).
#[derive(Debug)]
pub struct Decoder<const N: usize = ITEM_BYTES> {
    local: Encoder<N>,
    symbols: Vec<Symbol<N>>,
    /// Items recovered: (item, +1 remote only / −1 local only).
    recovered: Vec<([u8; N], i64)>,
    /// Recovered items' mappings, to peel them from symbols that arrive later.
    peeled: Vec<([u8; N], u64, i64, Mapping, u64)>,
    pure: Vec<usize>,
    /// Whether counts arrive whole (not modulo 256).
    exact: bool,
}

impl Decoder {
    /// A decoder subtracting `local`'s symbols, for symbols that travelled encoded
    /// ([`Symbol::encode`]: counts modulo 256).
    pub fn new(local: impl IntoIterator<Item = Item>) -> Self {
        let mut d = Self::with_hash(local, checksum);
        d.exact = false;
        d
    }
}

impl<const N: usize> Decoder<N> {
    /// A decoder over `N`-byte items with the checksum `hash`, for symbols handed over
    /// whole.
    pub fn with_hash(local: impl IntoIterator<Item = [u8; N]>, hash: fn(&[u8; N]) -> u64) -> Self {
        Self {
            local: Encoder::with_hash(local, hash),
            symbols: Vec::new(),
            recovered: Vec::new(),
            peeled: Vec::new(),
            pure: Vec::new(),
            exact: true,
        }
    }

    /// Symbols received so far.
    pub fn received(&self) -> u64 {
        self.symbols.len() as u64
    }

    /// Adds the remote's next symbol (they must arrive in index order).
    pub fn add_symbol(&mut self, remote: Symbol<N>) {
        let index = self.symbols.len() as u64;
        let local = self.local.next_symbol();
        let mut s = remote;
        s.add(&local.sum, local.checksum, -local.count);
        if !self.exact {
            // The remote count came modulo 256: the difference, in −128..=127.
            s.count = i64::from(s.count as u8 as i8);
        }
        // Items already peeled that map here.
        for (item, c, sign, mapping, next) in &mut self.peeled {
            while *next < index {
                *next = mapping.next_index();
            }
            if *next == index {
                s.add(item, *c, -*sign);
                *next = mapping.next_index();
            }
        }
        self.symbols.push(s);
        if s.is_pure(self.local.hash) {
            self.pure.push(index as usize);
        }
        self.peel();
    }

    fn peel(&mut self) {
        while let Some(at) = self.pure.pop() {
            let s = self.symbols[at];
            if !s.is_pure(self.local.hash) {
                continue;
            }
            let item = s.sum;
            let sign = s.count;
            let c = s.checksum;
            let mut mapping = Mapping::new(c);
            let mut index = 0u64;
            let len = self.symbols.len() as u64;
            while index < len {
                let t = &mut self.symbols[index as usize];
                t.add(&item, c, -sign);
                if t.is_pure(self.local.hash) {
                    self.pure.push(index as usize);
                }
                index = mapping.next_index();
            }
            self.recovered.push((item, sign));
            self.peeled.push((item, c, sign, mapping, index));
        }
    }

    /// Whether the whole difference is recovered (symbol 0, which holds every item, is
    /// empty after peeling).
    pub fn is_decoded(&self) -> bool {
        self.symbols.first().is_some_and(Symbol::is_zero)
    }

    /// The items only the remote has.
    pub fn remote_only(&self) -> impl Iterator<Item = &[u8; N]> {
        self.recovered
            .iter()
            .filter(|(_, s)| *s > 0)
            .map(|(i, _)| i)
    }

    /// The items only the local set has.
    pub fn local_only(&self) -> impl Iterator<Item = &[u8; N]> {
        self.recovered
            .iter()
            .filter(|(_, s)| *s < 0)
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u64) -> Item {
        blake3::hash(&n.to_le_bytes()).as_bytes()[..ITEM_BYTES]
            .try_into()
            .unwrap()
    }

    /// The reference implementation's example (github.com/yangl1996/riblt,
    /// `example_test.go`): 64-bit items, SipHash-2-4 with keys 123 and 456. Alice holds
    /// 1..=10, Bob 1, 3..=11; Bob decodes from exactly 2 coded symbols that 2 is Alice's
    /// and 11 his own.
    #[test]
    fn the_reference_example_decodes_from_two_symbols() {
        #[allow(deprecated)]
        fn siphash(item: &[u8; 8]) -> u64 {
            use std::hash::Hasher as _;
            let mut h = std::hash::SipHasher::new_with_keys(123, 456);
            h.write(item);
            h.finish()
        }
        let alice: Vec<[u8; 8]> = (1..=10u64).map(u64::to_le_bytes).collect();
        let bob: Vec<[u8; 8]> = [1u64, 3, 4, 5, 6, 7, 8, 9, 10, 11]
            .map(u64::to_le_bytes)
            .to_vec();
        let mut enc = Encoder::with_hash(alice, siphash);
        let mut dec = Decoder::with_hash(bob, siphash);
        let mut cost = 0;
        while !dec.is_decoded() {
            dec.add_symbol(enc.next_symbol());
            cost += 1;
            assert!(cost < 100);
        }
        assert_eq!(cost, 2);
        assert_eq!(
            dec.remote_only().copied().collect::<Vec<_>>(),
            vec![2u64.to_le_bytes()]
        );
        assert_eq!(
            dec.local_only().copied().collect::<Vec<_>>(),
            vec![11u64.to_le_bytes()]
        );
    }

    fn reconcile(common: u64, a_only: u64, b_only: u64) -> (u64, Vec<Item>, Vec<Item>) {
        let a: Vec<Item> = (0..common)
            .chain(1_000_000..1_000_000 + a_only)
            .map(item)
            .collect();
        let b: Vec<Item> = (0..common)
            .chain(2_000_000..2_000_000 + b_only)
            .map(item)
            .collect();
        let mut enc = Encoder::new(a);
        let mut dec = Decoder::new(b);
        while !dec.is_decoded() {
            dec.add_symbol(enc.next_symbol());
            assert!(dec.received() < 100_000, "did not converge");
        }
        let mut remote: Vec<Item> = dec.remote_only().copied().collect();
        let mut local: Vec<Item> = dec.local_only().copied().collect();
        remote.sort();
        local.sort();
        (dec.received(), remote, local)
    }

    #[test]
    fn equal_sets_need_one_symbol() {
        assert_eq!(reconcile(1000, 0, 0).0, 1);
    }

    #[test]
    fn the_difference_is_recovered_exactly_from_both_sides() {
        let (_, remote, local) = reconcile(5000, 37, 11);
        let mut want_remote: Vec<Item> = (1_000_000..1_000_037).map(item).collect();
        let mut want_local: Vec<Item> = (2_000_000..2_000_011).map(item).collect();
        want_remote.sort();
        want_local.sort();
        assert_eq!(remote, want_remote);
        assert_eq!(local, want_local);
    }

    #[test]
    fn overhead_approaches_the_papers_figure() {
        let (symbols, remote, local) = reconcile(20_000, 500, 500);
        assert_eq!(remote.len() + local.len(), 1000);
        let overhead = symbols as f64 / 1000.0;
        assert!(overhead < 1.6, "{overhead} symbols per difference");
    }

    #[test]
    fn symbols_round_trip_and_bad_lengths_are_refused() {
        let mut enc = Encoder::new((0..10).map(item));
        let symbols: Vec<Symbol> = (0..5).map(|_| enc.next_symbol()).collect();
        let mut bytes = Vec::new();
        for s in &symbols {
            s.encode(&mut bytes);
        }
        assert_eq!(Symbol::decode_all(&bytes).unwrap(), symbols);
        assert!(Symbol::decode_all(&bytes[1..]).is_none());
    }

    #[test]
    fn seeking_gives_the_same_symbols() {
        let mut a = Encoder::new((0..100).map(item));
        let all: Vec<Symbol> = (0..40).map(|_| a.next_symbol()).collect();
        let mut b = Encoder::new((0..100).map(item));
        b.seek(25);
        assert_eq!(b.next_symbol(), all[25]);
        b.seek(3);
        assert_eq!(b.next_symbol(), all[3]);
    }
}
