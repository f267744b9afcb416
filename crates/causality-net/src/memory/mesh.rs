//! The simulated hub's gossip, shaped like gossipsub's: a mesh of degree D per topic
//! (kept between D_low and D_high at every heartbeat), eager forwarding to the mesh only,
//! lazy gossip (IHAVE / IWANT) of recent message ids to a few peers outside it, and
//! IDONTWANT for large messages, so simulated bandwidth resembles the real thing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use causality_hash::ContentId;
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use rand_chacha::ChaCha20Rng;

use crate::peer::PeerId;
use crate::topic::PhysicalTopic;

/// Target mesh degree (gossipsub's default).
pub(super) const D: usize = 6;
/// Below this, the heartbeat grafts up to D.
pub(super) const D_LOW: usize = 5;
/// Above this, the heartbeat prunes down to D.
pub(super) const D_HIGH: usize = 12;
/// Peers outside the mesh told of recent ids at each heartbeat.
pub(super) const D_LAZY: usize = 6;
/// Messages of at least this size get an IDONTWANT to the mesh (rust-libp2p's threshold).
pub(super) const IDONTWANT_BYTES: usize = 1000;
/// Heartbeats a message stays available for IWANT.
const HISTORY: usize = 5;
/// Heartbeats whose ids are gossiped.
const GOSSIP_WINDOWS: usize = 3;
/// Message ids remembered to drop duplicates.
const SEEN: usize = 65_536;
/// Most ids asked for per IHAVE.
pub(super) const MAX_IWANT: usize = 500;

/// A gossip message's id: BLAKE3 of its source and its bytes, as the libp2p adapter's
/// gossipsub ids are. Binding the source means a peer that republishes someone else's
/// envelope under its own source cannot get its (rejected) copy's id into the duplicate
/// cache ahead of the genuine one.
pub(super) fn gossip_id(source: &PeerId, bytes: &[u8]) -> ContentId {
    let mut hasher = blake3::Hasher::new();
    hasher.update(source.as_bytes());
    hasher.update(bytes);
    ContentId::from_bytes(*hasher.finalize().as_bytes())
}

/// Mesh state of one node.
#[derive(Debug)]
pub(super) struct Mesh {
    meshes: BTreeMap<PhysicalTopic, BTreeSet<PeerId>>,
    /// Recent messages for IWANT, by heartbeat window (newest first).
    windows: VecDeque<Vec<ContentId>>,
    store: HashMap<ContentId, (PhysicalTopic, PeerId, Arc<[u8]>)>,
    seen: HashSet<ContentId>,
    seen_order: VecDeque<ContentId>,
    /// Ids each peer said it does not want; cleared every few heartbeats.
    dont_want: HashMap<PeerId, HashSet<ContentId>>,
    heartbeats: u64,
    rng: ChaCha20Rng,
}

impl Mesh {
    pub(super) fn new(local: PeerId) -> Self {
        let seed = u64::from_le_bytes(local.as_bytes()[..8].try_into().expect("8 bytes"));
        let mut windows = VecDeque::new();
        windows.push_front(Vec::new());
        Self {
            meshes: BTreeMap::new(),
            windows,
            store: HashMap::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            dont_want: HashMap::new(),
            heartbeats: 0,
            rng: ChaCha20Rng::seed_from_u64(seed),
        }
    }

    /// Records `id` as seen; `false` when it already was.
    pub(super) fn first_sight(&mut self, id: ContentId) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.seen_order.push_back(id);
        if self.seen_order.len() > SEEN
            && let Some(old) = self.seen_order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }

    pub(super) fn has_seen(&self, id: &ContentId) -> bool {
        self.seen.contains(id)
    }

    /// Keeps a message available for IWANT.
    pub(super) fn remember(
        &mut self,
        id: ContentId,
        physical: PhysicalTopic,
        source: PeerId,
        bytes: Arc<[u8]>,
    ) {
        if self.store.insert(id, (physical, source, bytes)).is_none() {
            self.windows[0].push(id);
        }
    }

    pub(super) fn stored(&self, id: &ContentId) -> Option<&(PhysicalTopic, PeerId, Arc<[u8]>)> {
        self.store.get(id)
    }

    pub(super) fn mesh(&self, physical: &PhysicalTopic) -> Option<&BTreeSet<PeerId>> {
        self.meshes.get(physical)
    }

    pub(super) fn join(&mut self, physical: PhysicalTopic) {
        self.meshes.entry(physical).or_default();
    }

    /// Leaves a topic; returns the mesh peers to prune.
    pub(super) fn leave(&mut self, physical: &PhysicalTopic) -> Vec<PeerId> {
        self.meshes
            .remove(physical)
            .map(|m| m.into_iter().collect())
            .unwrap_or_default()
    }

    /// Adds `peer` to the mesh of `physical` if we are in it; whether it was added.
    pub(super) fn graft(&mut self, physical: &PhysicalTopic, peer: PeerId) -> bool {
        self.meshes
            .get_mut(physical)
            .is_some_and(|m| m.insert(peer))
    }

    /// A peer asks to join our mesh: accepted below D_high, as gossipsub v1.1 does (a full
    /// mesh answers with a prune); the heartbeat trims meshes above D_high back to D.
    pub(super) fn accept_graft(&mut self, physical: &PhysicalTopic, peer: PeerId) -> bool {
        self.meshes.get_mut(physical).is_some_and(|m| {
            if m.contains(&peer) {
                return true;
            }
            m.len() < D_HIGH && m.insert(peer)
        })
    }

    pub(super) fn prune(&mut self, physical: &PhysicalTopic, peer: &PeerId) {
        if let Some(m) = self.meshes.get_mut(physical) {
            m.remove(peer);
        }
    }

    pub(super) fn forget_peer(&mut self, peer: &PeerId) {
        for m in self.meshes.values_mut() {
            m.remove(peer);
        }
        self.dont_want.remove(peer);
    }

    /// Whether the mesh of `physical` has room for another peer.
    pub(super) fn wants_more(&self, physical: &PhysicalTopic) -> bool {
        self.meshes.get(physical).is_some_and(|m| m.len() < D)
    }

    pub(super) fn dont_want(&mut self, peer: PeerId, ids: impl IntoIterator<Item = ContentId>) {
        let set = self.dont_want.entry(peer).or_default();
        for id in ids {
            if set.len() < SEEN {
                set.insert(id);
            }
        }
    }

    pub(super) fn is_unwanted_by(&self, peer: &PeerId, id: &ContentId) -> bool {
        self.dont_want.get(peer).is_some_and(|s| s.contains(id))
    }

    /// Up to `n` of `candidates`, chosen at random (deterministically from our seed).
    pub(super) fn choose(&mut self, mut candidates: Vec<PeerId>, n: usize) -> Vec<PeerId> {
        candidates.shuffle(&mut self.rng);
        candidates.truncate(n);
        candidates.sort();
        candidates
    }

    /// One heartbeat: returns (grafts, prunes, ihaves) to send, given each topic's
    /// subscribed connected peers.
    pub(super) fn heartbeat(
        &mut self,
        subscribers: &BTreeMap<PhysicalTopic, Vec<PeerId>>,
    ) -> Heartbeat {
        let mut out = Heartbeat::default();
        let topics: Vec<PhysicalTopic> = self.meshes.keys().cloned().collect();
        for physical in topics {
            let candidates = subscribers.get(&physical).cloned().unwrap_or_default();
            let mesh = self.meshes.get(&physical).cloned().unwrap_or_default();
            // Peers that left the topic leave the mesh.
            let live: BTreeSet<PeerId> = mesh
                .iter()
                .copied()
                .filter(|p| candidates.contains(p))
                .collect();
            let mut mesh = live;
            if mesh.len() < D_LOW {
                let outside: Vec<PeerId> = candidates
                    .iter()
                    .copied()
                    .filter(|p| !mesh.contains(p))
                    .collect();
                for peer in self.choose(outside, D - mesh.len()) {
                    mesh.insert(peer);
                    out.grafts.push((physical.clone(), peer));
                }
            } else if mesh.len() > D_HIGH {
                let members: Vec<PeerId> = mesh.iter().copied().collect();
                let keep: BTreeSet<PeerId> = self.choose(members, D).into_iter().collect();
                for peer in mesh.iter().filter(|p| !keep.contains(p)) {
                    out.prunes.push((physical.clone(), *peer));
                }
                mesh = keep;
            }
            // Lazy gossip of this topic's recent ids to a few peers outside the mesh.
            let ids: Vec<ContentId> = self
                .windows
                .iter()
                .take(GOSSIP_WINDOWS)
                .flatten()
                .filter(|id| self.store.get(id).is_some_and(|(t, ..)| *t == physical))
                .copied()
                .collect();
            if !ids.is_empty() {
                let outside: Vec<PeerId> = candidates
                    .iter()
                    .copied()
                    .filter(|p| !mesh.contains(p))
                    .collect();
                for peer in self.choose(outside, D_LAZY) {
                    out.ihaves.push((peer, ids.clone()));
                }
            }
            self.meshes.insert(physical, mesh);
        }
        // Shift the history.
        self.windows.push_front(Vec::new());
        while self.windows.len() > HISTORY {
            for id in self.windows.pop_back().unwrap_or_default() {
                self.store.remove(&id);
            }
        }
        self.heartbeats += 1;
        if self.heartbeats.is_multiple_of(GOSSIP_WINDOWS as u64) {
            self.dont_want.clear();
        }
        out
    }
}

/// What a heartbeat sends.
#[derive(Debug, Default)]
pub(super) struct Heartbeat {
    pub(super) grafts: Vec<(PhysicalTopic, PeerId)>,
    pub(super) prunes: Vec<(PhysicalTopic, PeerId)>,
    pub(super) ihaves: Vec<(PeerId, Vec<ContentId>)>,
}
