//! The view's storage, laid out for large networks: one slot per record, the records
//! themselves shared (`Arc`) with the published snapshot and, through a
//! [`RecordCache`](crate::RecordCache), with every other state machine in the process; what
//! each exchange partner already holds as one bit per slot; expiry checked against a
//! watermark instead of a scan per tick.
//!
//! A record costs the view a snapshot entry (which is also the index) and a slot, about
//! 130 bytes, whatever the record's size.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use causality_hash::PeerDigest;
use causality_net::PeerId;

use crate::record::PeerRecord;

/// A record of the view and what we know of its peer.
#[derive(Debug)]
pub(crate) struct Known {
    pub(crate) record: Arc<PeerRecord>,
    /// When we last received a newer version (or first learned it), ms.
    pub(crate) updated_ms: u64,
    pub(crate) next_dial_ms: u64,
    /// The source whose exchange introduced the record (`None`: its owner, or inserted
    /// directly); counted against that source's quota while the record is held.
    source: Option<SourceId>,
    pub(crate) failures: u32,
    /// We dialed it (an outbound connection): never shed, so what we chose ourselves keeps
    /// us connected whoever else connects to us.
    pub(crate) dialed: bool,
}

/// A record as published in the membership snapshot, with its rendezvous digest.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub(crate) record: Arc<PeerRecord>,
    pub(crate) digest: PeerDigest,
    /// Where the view keeps the rest of what it knows of the peer (this map is also the
    /// view's index).
    slot: u32,
}

/// A small number standing for a source peer, so each record stores 4 bytes, not 33.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SourceId(u32);

/// Sources that introduced records we hold, with how many each introduced.
#[derive(Debug, Default)]
struct Sources {
    ids: HashMap<PeerId, SourceId>,
    /// By id: the peer and its count (zero: free).
    slots: Vec<(PeerId, usize)>,
    free: Vec<SourceId>,
}

impl Sources {
    fn count(&self, peer: &PeerId) -> usize {
        self.ids
            .get(peer)
            .map_or(0, |id| self.slots[id.0 as usize].1)
    }

    fn acquire(&mut self, peer: PeerId) -> SourceId {
        if let Some(&id) = self.ids.get(&peer) {
            self.slots[id.0 as usize].1 += 1;
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id.0 as usize] = (peer, 1);
                id
            }
            None => {
                let id =
                    SourceId(u32::try_from(self.slots.len()).expect("fewer sources than records"));
                self.slots.push((peer, 1));
                id
            }
        };
        self.ids.insert(peer, id);
        id
    }

    fn release(&mut self, id: SourceId) {
        let slot = &mut self.slots[id.0 as usize];
        slot.1 -= 1;
        if slot.1 == 0 {
            self.ids.remove(&slot.0);
            self.free.push(id);
        }
    }
}

/// One bit per slot.
#[derive(Debug, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn word(&self, i: usize) -> u64 {
        self.0.get(i).copied().unwrap_or(0)
    }

    fn set(&mut self, slot: u32) {
        let word = slot as usize / 64;
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (slot % 64);
    }

    fn clear(&mut self, slot: u32) {
        if let Some(w) = self.0.get_mut(slot as usize / 64) {
            *w &= !(1 << (slot % 64));
        }
    }
}

/// What one connected exchange partner holds: a bit per slot, set when it holds the
/// version of that slot's record we hold, and the newest of our own records it holds.
#[derive(Debug, Default)]
struct Told {
    holds: Bits,
    own_seq: u64,
}

/// The view: records by peer, in slots.
#[derive(Debug, Default)]
pub(crate) struct View {
    slots: Vec<Option<Known>>,
    /// A bit per slot: whether it holds a record.
    live: Bits,
    free: Vec<u32>,
    /// The view as last published, shared with membership snapshots; also the index of
    /// the slots.
    members: Arc<BTreeMap<PeerId, Member>>,
    told: HashMap<PeerId, Told>,
    /// Peers of the view that are connected.
    linked: BTreeSet<PeerId>,
    /// No record expires before this (a lower bound, raised by each expiry scan).
    next_expiry: u64,
    sources: Sources,
}

impl View {
    pub(crate) fn new() -> Self {
        Self {
            next_expiry: u64::MAX,
            ..Self::default()
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn get(&self, peer: &PeerId) -> Option<&Known> {
        let slot = self.members.get(peer)?.slot;
        self.slots[slot as usize].as_ref()
    }

    pub(crate) fn get_mut(&mut self, peer: &PeerId) -> Option<&mut Known> {
        let slot = self.members.get(peer)?.slot;
        self.slots[slot as usize].as_mut()
    }

    /// The records, by peer id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&PeerId, &Known)> {
        self.members.iter().map(|(peer, member)| {
            let known = self.slots[member.slot as usize]
                .as_ref()
                .expect("indexed slot");
            (peer, known)
        })
    }

    /// The published snapshot.
    pub(crate) fn members(&self) -> &Arc<BTreeMap<PeerId, Member>> {
        &self.members
    }

    /// How many records `source` introduced that we still hold.
    pub(crate) fn introduced_by(&self, source: &PeerId) -> usize {
        self.sources.count(source)
    }

    /// Peers of the view that are connected, by peer id.
    pub(crate) fn linked(&self) -> &BTreeSet<PeerId> {
        &self.linked
    }

    /// Adds a record we do not hold yet.
    pub(crate) fn insert(
        &mut self,
        record: Arc<PeerRecord>,
        digest: PeerDigest,
        now_ms: u64,
        source: Option<PeerId>,
        connected: bool,
    ) {
        let peer = record.peer;
        debug_assert!(!self.members.contains_key(&peer));
        self.next_expiry = self.next_expiry.min(record.expires_at_ms);
        let member_record = Arc::clone(&record);
        let known = Known {
            record,
            updated_ms: now_ms,
            next_dial_ms: 0,
            source: source.map(|s| self.sources.acquire(s)),
            failures: 0,
            dialed: false,
        };
        if connected {
            self.linked.insert(peer);
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(known);
                slot
            }
            None => {
                if self.slots.len() == self.slots.capacity() {
                    // Grow by an eighth, not double: at 10,000 records the spare room of
                    // a doubled vector would be a third of the view's memory.
                    self.slots.reserve_exact(self.slots.len() / 8 + 16);
                }
                self.slots.push(Some(known));
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 records")
            }
        };
        for told in self.told.values_mut() {
            told.holds.clear(slot);
        }
        self.live.set(slot);
        Arc::make_mut(&mut self.members).insert(
            peer,
            Member {
                record: member_record,
                digest,
                slot,
            },
        );
    }

    /// Replaces a held record by a newer version: no partner is known to hold it yet.
    pub(crate) fn update(&mut self, record: Arc<PeerRecord>, now_ms: u64) {
        let Some(member) = Arc::make_mut(&mut self.members).get_mut(&record.peer) else {
            return;
        };
        member.record = Arc::clone(&record);
        let slot = member.slot;
        self.next_expiry = self.next_expiry.min(record.expires_at_ms);
        let known = self.slots[slot as usize].as_mut().expect("indexed slot");
        known.record = record;
        known.updated_ms = now_ms;
        for told in self.told.values_mut() {
            told.holds.clear(slot);
        }
    }

    /// Removes `peer`'s record; returns whether its peer was connected.
    pub(crate) fn remove(&mut self, peer: &PeerId) -> Option<bool> {
        let slot = Arc::make_mut(&mut self.members).remove(peer)?.slot;
        let known = self.slots[slot as usize].take().expect("indexed slot");
        self.free.push(slot);
        self.live.clear(slot);
        for told in self.told.values_mut() {
            told.holds.clear(slot);
        }
        if let Some(source) = known.source {
            self.sources.release(source);
        }
        Some(self.linked.remove(peer))
    }

    /// Marks `peer` connected or not; whether the view holds it.
    pub(crate) fn set_connected(&mut self, peer: &PeerId, connected: bool) -> bool {
        if !self.members.contains_key(peer) {
            return false;
        }
        if connected {
            self.linked.insert(*peer);
        } else {
            self.linked.remove(peer);
        }
        true
    }

    /// Peers whose records expired by `now_ms` (cheap until the earliest expiry).
    pub(crate) fn expired(&mut self, now_ms: u64) -> Vec<PeerId> {
        if now_ms < self.next_expiry {
            return Vec::new();
        }
        let mut expired = Vec::new();
        let mut next = u64::MAX;
        for (peer, known) in self.iter() {
            if known.record.expires_at_ms <= now_ms {
                expired.push(*peer);
            } else {
                next = next.min(known.record.expires_at_ms);
            }
        }
        self.next_expiry = next;
        expired
    }

    // ----- what partners hold -----

    /// Starts remembering what `partner` holds (it is connected).
    pub(crate) fn track(&mut self, partner: PeerId) {
        self.told.entry(partner).or_default();
    }

    /// Forgets what `partner` holds and stops tracking it (disconnected).
    pub(crate) fn forget(&mut self, partner: &PeerId) {
        self.told.remove(partner);
    }

    /// Forgets what `partner` holds, still tracking it (an exchange failed: it may not
    /// hold what we sent).
    pub(crate) fn reset(&mut self, partner: &PeerId) {
        if let Some(told) = self.told.get_mut(partner) {
            *told = Told::default();
        }
    }

    /// `partner` (if tracked) holds version `seq` of our own record, or a newer one.
    pub(crate) fn holds_own(&mut self, partner: &PeerId, seq: u64) {
        if let Some(told) = self.told.get_mut(partner) {
            told.own_seq = told.own_seq.max(seq);
        }
    }

    /// `partner` (if tracked) holds version `seq` of `owner`'s record, or a newer one.
    pub(crate) fn holds(&mut self, partner: &PeerId, owner: &PeerId, seq: u64) {
        let Some(told) = self.told.get_mut(partner) else {
            return;
        };
        if let Some(slot) = self.members.get(owner).map(|m| m.slot)
            && self.slots[slot as usize]
                .as_ref()
                .is_some_and(|k| k.record.seq <= seq)
        {
            told.holds.set(slot);
        }
    }

    /// Whether `partner` may lack our record of version `seq`.
    pub(crate) fn lacks_own(&self, partner: &PeerId, seq: u64) -> bool {
        self.told.get(partner).is_none_or(|t| t.own_seq < seq)
    }

    /// The records `partner` may lack (not its own), as (last update, slot): a word of
    /// slots at a time, so a partner that holds nearly everything costs almost nothing.
    pub(crate) fn lacking(&self, partner: &PeerId) -> Vec<(u64, u32)> {
        let told = self.told.get(partner);
        let partner_slot = self.members.get(partner).map(|m| m.slot);
        let mut out = Vec::new();
        for (i, &live) in self.live.0.iter().enumerate() {
            let held = told.map_or(0, |t| t.holds.word(i));
            let mut word = live & !held;
            while word != 0 {
                let bit = word.trailing_zeros();
                word &= word - 1;
                let slot = u32::try_from(i * 64).expect("fewer than 2^32 slots") + bit;
                if Some(slot) != partner_slot {
                    let known = self.slots[slot as usize].as_ref().expect("live slot");
                    out.push((known.updated_ms, slot));
                }
            }
        }
        out
    }

    /// The record in `slot`.
    pub(crate) fn at(&self, slot: u32) -> &Arc<PeerRecord> {
        &self.slots[slot as usize]
            .as_ref()
            .expect("live slot")
            .record
    }
}
