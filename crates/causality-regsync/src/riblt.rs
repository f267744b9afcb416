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

/// Bytes of one item: 16 bytes of a BLAKE3 digest (a collision between two of a node's
/// items needs about 2⁶⁴ of them).
pub const ITEM_BYTES: usize = 16;

/// One item of a reconciled set.
pub type Item = [u8; ITEM_BYTES];

/// Bytes of one encoded symbol: the item sum, the checksum sum, the count (i32 LE).
pub const SYMBOL_BYTES: usize = ITEM_BYTES + 8 + 4;

fn checksum(item: &Item) -> u64 {
    let digest = blake3::keyed_hash(b"causality/regsync/riblt/v1\0\0\0\0\0\0", item);
    u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"))
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Symbol {
    /// XOR of the items.
    pub sum: Item,
    /// XOR of their checksums.
    pub checksum: u64,
    /// How many (the sender's minus the receiver's after subtraction).
    pub count: i64,
}

impl Symbol {
    fn add(&mut self, item: &Item, checksum: u64, sign: i64) {
        for (s, b) in self.sum.iter_mut().zip(item) {
            *s ^= b;
        }
        self.checksum ^= checksum;
        self.count += sign;
    }

    /// The fixed-size encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.sum);
        out.extend_from_slice(&self.checksum.to_le_bytes());
        out.extend_from_slice(
            &(self.count.clamp(i32::MIN.into(), i32::MAX.into()) as i32).to_le_bytes(),
        );
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
                .map(|c| Symbol {
                    sum: c[..ITEM_BYTES].try_into().expect("item"),
                    checksum: u64::from_le_bytes(
                        c[ITEM_BYTES..ITEM_BYTES + 8].try_into().expect("8"),
                    ),
                    count: i32::from_le_bytes(c[ITEM_BYTES + 8..].try_into().expect("4")).into(),
                })
                .collect(),
        )
    }

    fn is_pure(&self) -> bool {
        (self.count == 1 || self.count == -1) && checksum(&self.sum) == self.checksum
    }

    fn is_zero(&self) -> bool {
        self.count == 0 && self.checksum == 0 && self.sum == [0; ITEM_BYTES]
    }
}

/// Produces a set's coded symbols, in order, as many as asked.
#[derive(Debug, Clone)]
pub struct Encoder {
    /// (next index, item position), smallest index first.
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    items: Vec<(Item, u64, Mapping)>,
    next: u64,
}

impl Encoder {
    /// An encoder over `items` (duplicates must have been removed).
    pub fn new(items: impl IntoIterator<Item = Item>) -> Self {
        let items: Vec<(Item, u64, Mapping)> = items
            .into_iter()
            .map(|i| {
                let c = checksum(&i);
                (i, c, Mapping::new(c))
            })
            .collect();
        let heap = (0..items.len()).map(|p| Reverse((0, p))).collect();
        Self {
            heap,
            items,
            next: 0,
        }
    }

    /// The index of the next symbol [`next_symbol`](Self::next_symbol) returns.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The next coded symbol.
    pub fn next_symbol(&mut self) -> Symbol {
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
            *self = Self::new(self.items.iter().map(|(i, ..)| *i));
        }
        while self.next < index {
            self.next_symbol();
        }
    }
}

/// Recovers the difference between a remote set (whose symbols are fed in) and the local
/// set (whose encoder is given).
#[derive(Debug)]
pub struct Decoder {
    local: Encoder,
    symbols: Vec<Symbol>,
    /// Items recovered: (item, +1 remote only / −1 local only, its mapping).
    recovered: Vec<(Item, i64)>,
    /// Recovered items' mappings, to peel them from symbols that arrive later.
    peeled: Vec<(Item, u64, i64, Mapping, u64)>,
    pure: Vec<usize>,
}

impl Decoder {
    /// A decoder subtracting `local`'s symbols.
    pub fn new(local: impl IntoIterator<Item = Item>) -> Self {
        Self {
            local: Encoder::new(local),
            symbols: Vec::new(),
            recovered: Vec::new(),
            peeled: Vec::new(),
            pure: Vec::new(),
        }
    }

    /// Symbols received so far.
    pub fn received(&self) -> u64 {
        self.symbols.len() as u64
    }

    /// Adds the remote's next symbol (they must arrive in index order).
    pub fn add_symbol(&mut self, remote: Symbol) {
        let index = self.symbols.len() as u64;
        let local = self.local.next_symbol();
        let mut s = remote;
        s.add(&local.sum, local.checksum, -local.count);
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
        if s.is_pure() {
            self.pure.push(index as usize);
        }
        self.peel();
    }

    fn peel(&mut self) {
        while let Some(at) = self.pure.pop() {
            let s = self.symbols[at];
            if !s.is_pure() {
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
                if t.is_pure() {
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
    pub fn remote_only(&self) -> impl Iterator<Item = &Item> {
        self.recovered
            .iter()
            .filter(|(_, s)| *s > 0)
            .map(|(i, _)| i)
    }

    /// The items only the local set has.
    pub fn local_only(&self) -> impl Iterator<Item = &Item> {
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
