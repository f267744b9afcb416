//! The state machine: see [`State`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use causality_hash::ContentId;
use causality_net::service::{
    CallId, Ids, InboundId, Input, OutboundId, Output, Protocol, Severity,
};
use causality_net::{
    Acceptance, Keypair, Message, PeerId, RefusalReason, RequestProtocol, Topic, TopicKind,
};
use rand::{RngCore as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;

use crate::error::{ProofShareError, VerifyError};
use crate::messages::{
    Ack, Announcement, Batch, Limits, MAX_ACKS_PER_REQUEST, MessageError, ProofMessage, Request,
    Response, VerificationKey, part_id,
};
use crate::store::ProofStore;
use crate::system::{Claim, PreparedKey, Verifiers};

/// The topic family proofs are announced on: `register/proof/{verification_key_id}`.
pub const PROOF_TOPIC: TopicKind = TopicKind::new("register", "proof");

/// The payload type of announcements.
pub const ANNOUNCEMENT_TYPE: &str = "causality.proofshare.v1.Announcement";

/// The topic proofs under `key` are announced on.
pub fn proof_topic(key: &ContentId) -> Topic {
    Topic::new(PROOF_TOPIC, key.to_string()).expect("a content id is a valid topic id")
}

/// How a node accepts the proofs of a batch it pulls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptPolicy {
    /// Verify every proof here (the default).
    VerifyAll,
    /// Split each batch into parts of `part_size` proofs. Verify here only the parts that
    /// rendezvous hashing assigns to this node among the verifier view (top `k` per part),
    /// publishing a signed attestation for each; accept every other part on `k` valid
    /// attestations from distinct verifiers assigned to it, or verify it here when they
    /// have not come within `timeout_ms`.
    ///
    /// Trust: a part accepted this way is only as sound as one of its `k` assigned
    /// verifiers is honest. With a fraction `f` of the view's verifiers malicious, a part
    /// is wrongly accepted with probability about `f^k`; Sybils in the view raise `f`, so
    /// the view must come from a membership whose weights are local policy (discovery's)
    /// and `k` should be at least 3. Liveness does not depend on the assignees.
    Attested {
        /// Attestations needed per part.
        k: usize,
        /// Proofs per part.
        part_size: usize,
        /// How long to wait for attestations before verifying a part here.
        timeout_ms: u64,
    },
}

/// The verifiers proof sharing assigns batch parts to (with [`AcceptPolicy::Attested`]):
/// a set of peers, usually discovery's members with the `verifier` role. This node is
/// counted in whether or not it is listed.
pub type VerifierView = Arc<BTreeSet<PeerId>>;

/// The discovery role of a node that verifies proofs for others.
pub const VERIFIER_ROLE: &str = "verifier";

/// The verifier view of a set of peers and their discovery roles (typically discovery's
/// membership, this node's own record included): the peers with [`VERIFIER_ROLE`].
pub fn verifier_view<'a>(peers: impl IntoIterator<Item = (PeerId, &'a [String])>) -> VerifierView {
    Arc::new(
        peers
            .into_iter()
            .filter(|(_, roles)| roles.iter().any(|r| r == VERIFIER_ROLE))
            .map(|(peer, _)| peer)
            .collect(),
    )
}

/// How a node runs proof sharing. Every field has a sane default.
#[derive(Clone, Debug)]
pub struct Config {
    /// Size limits.
    pub limits: Limits,
    /// Proofs whose encoding is at most this many bytes travel inline in the announcement
    /// (default 1024: a Groth16 proof with a few inputs is ~250 B, smaller than the
    /// announcement plus pull round trip that would point to it, and libp2p-gossipsub sends
    /// IDONTWANT only above 1000 B, so larger inline bodies would be duplicated freely).
    pub inline_max_bytes: usize,
    /// Proofs received within this window are verified as one batch (default 5 ms).
    pub batch_window_ms: u64,
    /// A batch is verified at once when it reaches this size (default 256).
    pub max_batch: usize,
    /// Verifications per second each originator may cost us (default 100, burst 400);
    /// beyond it its proofs are ignored, not verified.
    pub verify_rate: (u32, u32),
    /// Acknowledge verified proofs to their announcer (default true). Acks travel back
    /// along the path the proof came by: each node sends its own, and those it receives,
    /// to the peer that delivered the proof to it, batched every `ack_delay_ms`.
    pub send_acks: bool,
    /// See `send_acks` (default 50 ms).
    pub ack_delay_ms: u64,
    /// Proof ids remembered as verified (default 65,536) and as invalid (16,384).
    pub verified_cache: usize,
    /// See `verified_cache`.
    pub rejected_cache: usize,
    /// Proofs that may wait for a key or a pull at once (default 4096).
    pub max_waiting: usize,
    /// Catch-up asks for proofs received at most this long ago (default 24 h).
    pub catch_up_window_ms: u64,
    /// Peers a fetch tries, at most (default 8).
    pub max_candidates: usize,
    /// Proofs of one originator in one batch, at most (default 16); the rest wait for the
    /// next batch. With `max_strikes` this bounds the verification an attacker's flood
    /// costs before it is quarantined.
    pub max_per_originator: usize,
    /// An originator with this many invalid proofs (default 3) is quarantined: its proofs
    /// are not verified (nor forwarded) for `quarantine_ms` (default 10 min, the network's
    /// ban).
    pub max_strikes: u32,
    /// See `max_strikes`.
    pub quarantine_ms: u64,
    /// How batches are accepted (default [`AcceptPolicy::VerifyAll`]).
    pub accept: AcceptPolicy,
    /// When no connected peer has a key, ask the driver for its rendezvous providers
    /// ([`Event::Wanted`]) and wait `provider_wait_ms` (default 5 s) for them. Set by
    /// the driver when discovery is attached.
    pub ask_for_providers: bool,
    /// See `ask_for_providers`.
    pub provider_wait_ms: u64,
    /// Seed of the batch weights' generator. Must be secret: whoever knows it can craft
    /// invalid proofs that pass a batch. The default draws it from the OS.
    pub seed: [u8; 32],
}

impl Default for Config {
    fn default() -> Self {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        Self {
            limits: Limits::default(),
            inline_max_bytes: 1024,
            batch_window_ms: 5,
            max_batch: 256,
            verify_rate: (100, 400),
            send_acks: true,
            ack_delay_ms: 50,
            verified_cache: 65_536,
            rejected_cache: 16_384,
            max_waiting: 4096,
            catch_up_window_ms: 24 * 3600 * 1000,
            max_candidates: 8,
            max_per_originator: 16,
            max_strikes: 3,
            quarantine_ms: 600_000,
            accept: AcceptPolicy::VerifyAll,
            ask_for_providers: false,
            provider_wait_ms: 5000,
            seed,
        }
    }
}

/// Local commands.
#[derive(Debug)]
pub enum Command {
    /// Check a verification key and keep it. Replies [`Reply::Key`].
    StoreKey(VerificationKey),
    /// Verify a proof made here and keep it (its key must be known or fetchable). Replies
    /// [`Reply::Proof`].
    StoreProof(ProofMessage),
    /// Announce a stored proof. Replies [`Reply::Done`].
    Announce(ContentId),
    /// Verify proofs made here (all under one key) and keep them as one batch. Replies
    /// [`Reply::Batch`].
    StoreBatch(Vec<ProofMessage>),
    /// Announce a stored batch by id. Replies [`Reply::Done`].
    AnnounceBatch(ContentId),
    /// A proof by id: from the store, else pulled from `from` then connected peers, checked
    /// and verified. Replies [`Reply::Proof`].
    Fetch {
        /// The proof.
        proof_id: ContentId,
        /// Peers to ask first (an announcer, say).
        from: Vec<PeerId>,
    },
    /// Verify a proof (fetching its key if needed). Replies [`Reply::Proof`].
    Verify(ProofMessage),
    /// Receive and verify proofs under a key (counted: each `Follow` needs an `Unfollow`).
    Follow(ContentId),
    /// Stop following a key.
    Unfollow(ContentId),
    /// The acknowledgements recorded for a proof. Replies [`Reply::Acks`].
    Acks(ContentId),
    /// Counters. Replies [`Reply::Stats`].
    Stats,
    /// Peers said to hold a key, batch or proof (its rendezvous providers, after
    /// [`Event::Wanted`]).
    Sources {
        /// What they hold.
        id: ContentId,
        /// Who to ask (they must be connected).
        peers: Vec<PeerId>,
    },
}

/// Replies to commands.
#[derive(Debug)]
pub enum Reply {
    /// A key was stored: its id.
    Key(Result<ContentId, ProofShareError>),
    /// A verified proof.
    Proof(Result<ProofMessage, ProofShareError>),
    /// Done.
    Done(Result<(), ProofShareError>),
    /// Acknowledgements.
    Acks(Result<Vec<Ack>, ProofShareError>),
    /// Counters.
    Stats(Stats),
    /// A batch was verified and stored: its id, Merkle root and size.
    Batch(Result<BatchInfo, ProofShareError>),
}

/// What identifies a stored batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    /// Its content id.
    pub id: ContentId,
    /// The Merkle root over its proof ids.
    pub root: [u8; 32],
    /// How many proofs it holds.
    pub count: u32,
}

/// What the protocol reports.
#[derive(Clone, Debug)]
pub enum Event {
    /// A proof from the network verified and was stored.
    Verified {
        /// The proof.
        proof: Arc<ProofMessage>,
        /// Who announced (or served) it.
        from: PeerId,
    },
    /// A proof from the network was refused.
    Rejected {
        /// Its id, when it had one.
        proof_id: Option<ContentId>,
        /// Who announced or served it.
        from: PeerId,
        /// Why.
        reason: String,
    },
    /// A verifier acknowledged one of our proofs.
    Acked(Ack),
    /// No connected peer supplied this key, batch or proof: look up its rendezvous
    /// providers and answer with [`Command::Sources`] (the driver does when discovery is
    /// attached).
    Wanted(ContentId),
    /// A key, batch or large proof was checked and stored here: the driver provides it
    /// through discovery.
    Provide(ContentId),
}

/// Timers.
#[derive(Debug)]
pub enum Timer {
    /// Verify the queued batch.
    Flush,
    /// Attestations for a part are overdue: verify it here.
    Part(ContentId),
    /// Providers of a key, batch or proof did not come in time.
    Wanted(ContentId),
    /// Send the queued acknowledgements.
    Acks,
}

/// Counters of what the protocol did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Proofs verified valid (each once).
    pub verified: u64,
    /// Proofs refused, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Proofs that arrived again after being judged (no work done).
    pub cache_hits: u64,
    /// Batches verified, and the proofs in them.
    pub batches: u64,
    /// See `batches`.
    pub batched_proofs: u64,
    /// Keys fetched from peers.
    pub keys_fetched: u64,
    /// Proof bodies pulled from peers.
    pub proofs_pulled: u64,
    /// Batches pulled from peers.
    pub batches_pulled: u64,
    /// Bytes of response bodies received for key pulls and batch pulls (failed and
    /// refused attempts included): what fetching those objects cost this node.
    pub key_bytes: u64,
    /// See `key_bytes`.
    pub batch_bytes: u64,
    /// Proofs accepted on attestations instead of verified here.
    pub attested: u64,
    /// Attestations this node published, and valid ones it received.
    pub attestations_sent: u64,
    /// See `attestations_sent`.
    pub attestations_received: u64,
    /// Acknowledgements of our own announcements received and recorded.
    pub acks_received: u64,
    /// Acknowledgements passed on towards an announcer.
    pub acks_relayed: u64,
    /// Proofs not verified because their originator was over its budget.
    pub over_budget: u64,
    /// Proofs not verified because their originator is quarantined.
    pub quarantined: u64,
    /// Store failures.
    pub store_errors: u64,
}

/// A gossip message awaiting the verdict on its proof.
#[derive(Clone, Copy, Debug)]
struct GossipRef {
    message: ContentId,
    sender: PeerId,
    via: PeerId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallKind {
    /// `StoreProof`: keep it.
    Store,
    /// `Verify`: only answer.
    Verify,
    /// `Fetch`: keep it and answer.
    Fetch,
}

/// A proof to verify, with everyone waiting for the verdict.
#[derive(Debug)]
struct Job {
    proof: ProofMessage,
    /// Who gave it to us (penalized if it is invalid, acknowledged if not), when a peer did.
    from: Option<PeerId>,
    gossip: Vec<GossipRef>,
    calls: Vec<(CallId, CallKind)>,
    /// The batches it belongs to.
    batches: Vec<ContentId>,
    /// Accepted on attestations, not verified here.
    attested: bool,
    /// The part of a batch assigned to us that it belongs to.
    part: Option<ContentId>,
}

impl Job {
    fn new(proof: ProofMessage, from: Option<PeerId>) -> Self {
        Self {
            proof,
            from,
            gossip: Vec::new(),
            calls: Vec::new(),
            batches: Vec::new(),
            attested: false,
            part: None,
        }
    }

    fn keep(&self) -> bool {
        self.from.is_some()
            || !self.batches.is_empty()
            || self.calls.iter().any(|(_, k)| *k != CallKind::Verify)
    }

    fn merge(&mut self, other: Job) {
        self.gossip.extend(other.gossip);
        self.calls.extend(other.calls);
        self.batches.extend(other.batches);
        self.part = self.part.or(other.part);
        if self.from.is_none() {
            self.from = other.from;
        }
    }
}

/// A key being fetched, and the proofs waiting for it.
#[derive(Debug, Default)]
struct KeyFetch {
    candidates: VecDeque<PeerId>,
    asked: BTreeSet<PeerId>,
    waiting: Vec<Job>,
    /// A request for it is out.
    in_flight: bool,
    /// Rendezvous providers were asked for (once per fetch).
    asked_providers: bool,
}

/// A proof body being pulled, and who waits for it.
#[derive(Debug, Default)]
struct ProofFetch {
    candidates: VecDeque<PeerId>,
    asked: BTreeSet<PeerId>,
    gossip: Vec<GossipRef>,
    calls: Vec<CallId>,
    /// The key the announcement named, checked against the body.
    key: Option<ContentId>,
    in_flight: bool,
    asked_providers: bool,
}

/// A batch being pulled.
#[derive(Debug)]
struct BatchFetch {
    candidates: VecDeque<PeerId>,
    asked: BTreeSet<PeerId>,
    gossip: Vec<GossipRef>,
    key: ContentId,
    root: [u8; 32],
    count: u32,
    in_flight: bool,
    asked_providers: bool,
}

/// A part of a batch waiting for attestations.
#[derive(Debug)]
struct Part {
    batch: ContentId,
    proofs: Vec<ProofMessage>,
    from: Option<PeerId>,
    assigned: Vec<PeerId>,
}

/// A part of a batch assigned to us, being verified.
#[derive(Debug)]
struct OwnPart {
    remaining: usize,
    failed: bool,
    batch: ContentId,
    key: ContentId,
    part: u32,
}

/// A batch whose proofs are being judged.
#[derive(Debug)]
struct Tracker {
    remaining: usize,
    invalid: usize,
    unjudged: usize,
    gossip: Vec<GossipRef>,
    calls: Vec<CallId>,
    encoding: Vec<u8>,
    key: ContentId,
    root: [u8; 32],
    count: u32,
}

#[derive(Debug)]
enum Pending {
    Key(ContentId),
    Proof(ContentId),
    Batch(ContentId),
    Inventory { key: ContentId, pages: u32 },
    Ack,
}

/// A bounded set that forgets its oldest member.
#[derive(Debug)]
struct Recent {
    set: HashSet<ContentId>,
    order: VecDeque<ContentId>,
    capacity: usize,
}

impl Recent {
    fn new(capacity: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn contains(&self, id: &ContentId) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: ContentId) {
        if self.set.insert(id) {
            self.order.push_back(id);
            if self.order.len() > self.capacity
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }
}

/// Originators whose budgets or strikes are tracked at once, at most (memory stays bounded
/// under a flood of fresh keys).
const MAX_TRACKED_ORIGINATORS: usize = 65_536;

/// Per-originator verification budget (GCRA on the injected clock).
#[derive(Debug)]
struct Budget {
    interval_ms: u64,
    tolerance_ms: u64,
    tat: HashMap<PeerId, u64>,
}

impl Budget {
    fn new((per_second, burst): (u32, u32)) -> Self {
        let interval_ms = 1000 / u64::from(per_second.max(1));
        Self {
            interval_ms: interval_ms.max(1),
            tolerance_ms: interval_ms.max(1) * u64::from(burst.max(1)),
            tat: HashMap::new(),
        }
    }

    fn allow(&mut self, peer: PeerId, now_ms: u64) -> bool {
        if self.tat.len() > 4096 {
            self.tat.retain(|_, tat| *tat > now_ms);
            // Still too many: more originators are busy at once than any honest network
            // has; forgetting their budgets costs only a burst each.
            if self.tat.len() > MAX_TRACKED_ORIGINATORS {
                self.tat.clear();
            }
        }
        let tat = self.tat.get(&peer).copied().unwrap_or(now_ms).max(now_ms);
        if tat > now_ms + self.tolerance_ms {
            return false;
        }
        self.tat.insert(peer, tat + self.interval_ms);
        true
    }
}

/// Proof sharing's state machine.
///
/// Proof sharing as a pure state machine ([`Protocol`]): no sockets, no tasks, no clock —
/// time comes in as an argument, randomness from a seeded generator, storage through the
/// synchronous [`ProofStore`] it owns.
///
/// The flow: a node stores a proof it made ([`Command::StoreProof`], which verifies it)
/// and announces it ([`Command::Announce`]) on `register/proof/{verification_key_id}`.
/// Small proofs travel inline; larger ones by id. A node following that key receives the
/// announcement before gossip forwards it (a validated topic), fetches the key if it lacks
/// it, pulls the body if it came by id, checks every id against its content, verifies the
/// proof (in batches, every `batch_window_ms`), and only then lets gossip forward it, stores
/// it, reports it ([`Event::Verified`]) and acknowledges it to its announcer with a signed
/// [`Ack`]. An invalid proof is never forwarded: its relay and its originator are penalized
/// and its id remembered, so copies cost nothing.
pub struct State {
    config: Config,
    keypair: Keypair,
    local: PeerId,
    verifiers: Verifiers,
    store: Box<dyn ProofStore>,
    keys: HashMap<ContentId, Arc<dyn PreparedKey>>,
    verified: Recent,
    rejected: Recent,
    budget: Budget,
    /// Invalid proofs per originator: (count, when the quarantine or the count ends).
    strikes: HashMap<PeerId, (u32, u64)>,
    /// Proofs ready to verify (their key is prepared), in arrival order.
    queue: Vec<Job>,
    flush_scheduled: bool,
    key_fetches: BTreeMap<ContentId, KeyFetch>,
    proof_fetches: BTreeMap<ContentId, ProofFetch>,
    batch_fetches: BTreeMap<ContentId, BatchFetch>,
    trackers: HashMap<ContentId, Tracker>,
    view: VerifierView,
    /// Parts waiting for attestations, by part id.
    parts: HashMap<ContentId, Part>,
    /// Parts assigned to us, being verified, by part id.
    own_parts: HashMap<ContentId, OwnPart>,
    /// Valid attestations seen, by part id (bounded: oldest parts forgotten first).
    attestations: HashMap<ContentId, BTreeMap<PeerId, Ack>>,
    attestation_order: VecDeque<ContentId>,
    outbound: HashMap<OutboundId, Pending>,
    ids: Ids,
    following: BTreeMap<ContentId, usize>,
    peers: BTreeSet<PeerId>,
    /// Proofs we announced (their acks end here).
    announced: Recent,
    /// Who delivered each proof to us first (where its acks go), bounded.
    upstream: HashMap<ContentId, PeerId>,
    upstream_order: VecDeque<ContentId>,
    /// Acks seen (proof ‖ verifier), so each is passed on once.
    acks_seen: Recent,
    /// Acks waiting to go, by next hop.
    acks_out: BTreeMap<PeerId, Vec<Ack>>,
    acks_scheduled: bool,
    rng: ChaCha20Rng,
    /// The time of the input being handled.
    now_ms: u64,
    stats: Stats,
    outputs: VecDeque<Output<Self>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("local", &self.local)
            .field("following", &self.following.len())
            .field("queued", &self.queue.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl State {
    /// A state machine for the node of `keypair` (which signs acknowledgements), verifying
    /// with `verifiers` and keeping what it accepts in `store`.
    pub fn new(
        config: Config,
        keypair: Keypair,
        verifiers: Verifiers,
        store: Box<dyn ProofStore>,
    ) -> Self {
        Self {
            local: keypair.peer_id(),
            keypair,
            verifiers,
            store,
            keys: HashMap::new(),
            verified: Recent::new(config.verified_cache),
            rejected: Recent::new(config.rejected_cache),
            budget: Budget::new(config.verify_rate),
            strikes: HashMap::new(),
            queue: Vec::new(),
            flush_scheduled: false,
            key_fetches: BTreeMap::new(),
            proof_fetches: BTreeMap::new(),
            batch_fetches: BTreeMap::new(),
            trackers: HashMap::new(),
            view: Arc::new(BTreeSet::new()),
            parts: HashMap::new(),
            own_parts: HashMap::new(),
            attestations: HashMap::new(),
            attestation_order: VecDeque::new(),
            outbound: HashMap::new(),
            ids: Ids::default(),
            following: BTreeMap::new(),
            peers: BTreeSet::new(),
            announced: Recent::new(config.verified_cache),
            upstream: HashMap::new(),
            upstream_order: VecDeque::new(),
            acks_seen: Recent::new(config.verified_cache),
            acks_out: BTreeMap::new(),
            acks_scheduled: false,
            rng: ChaCha20Rng::from_seed(config.seed),
            now_ms: 0,
            stats: Stats::default(),
            outputs: VecDeque::new(),
            config,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn push(&mut self, output: Output<Self>) {
        self.outputs.push_back(output);
    }

    fn reply(&mut self, call: CallId, reply: Reply) {
        self.push(Output::Reply { call, reply });
    }

    fn penalize(&mut self, peer: PeerId, severity: Severity, reason: String) {
        if peer != self.local {
            self.push(Output::Penalize {
                peer,
                severity,
                reason,
            });
        }
    }

    fn request(&mut self, peer: PeerId, request: &Request, pending: Pending) {
        let id = self.ids.next_id();
        self.outbound.insert(id, pending);
        self.push(Output::Request {
            id,
            peer,
            protocol: crate::PROTOCOL_NAME.to_owned(),
            body: request.encode(),
        });
    }

    /// The prepared key `id`, from the cache or the store; `None` when it is not known here.
    fn prepared(&mut self, id: &ContentId) -> Option<Result<Arc<dyn PreparedKey>, VerifyError>> {
        if let Some(key) = self.keys.get(id) {
            return Some(Ok(Arc::clone(key)));
        }
        let key = match self.store.key(id) {
            Ok(Some(key)) => key,
            Ok(None) => return None,
            Err(e) => {
                self.stats.store_errors += 1;
                tracing::error!(target: "causality_proofshare", key = %id, error = %e, "reading a key failed");
                return None;
            }
        };
        Some(self.prepare(&key))
    }

    fn prepare(&mut self, key: &VerificationKey) -> Result<Arc<dyn PreparedKey>, VerifyError> {
        let prepared = self.verifiers.prepare(key.system, &key.key)?;
        if self.keys.len() >= 1024 {
            // Prepared keys are a cache over the store; start again rather than grow.
            self.keys.clear();
        }
        self.keys.insert(key.id(), Arc::clone(&prepared));
        Ok(prepared)
    }

    // ----- judging proofs -----

    /// Routes a proof to its verdict: at once when already judged, else into the batch
    /// queue, or behind a key fetch.
    fn submit(&mut self, job: Job, now_ms: u64) {
        let id = job.proof.proof_id;
        if self.verified.contains(&id) {
            self.stats.cache_hits += 1;
            self.finish(job, Ok(()), now_ms);
            return;
        }
        if self.rejected.contains(&id) {
            self.stats.cache_hits += 1;
            self.finish(job, Err(VerifyError::Invalid), now_ms);
            return;
        }
        if let Some(queued) = self.queue.iter_mut().find(|j| j.proof.proof_id == id) {
            queued.merge(job);
            return;
        }
        let key_id = job.proof.verification_key_id;
        if let Some(fetch) = self.key_fetches.get_mut(&key_id)
            && let Some(waiting) = fetch.waiting.iter_mut().find(|j| j.proof.proof_id == id)
        {
            waiting.merge(job);
            return;
        }
        match self.prepared(&key_id) {
            Some(Ok(key)) => {
                if key.system() != job.proof.system {
                    let error = VerifyError::SystemMismatch {
                        proof: job.proof.system,
                        key: key.system(),
                    };
                    self.finish(job, Err(error), now_ms);
                    return;
                }
                self.enqueue(job, now_ms);
            }
            Some(Err(e)) => {
                // A stored key that no longer decodes: nothing verifies under it.
                tracing::error!(target: "causality_proofshare", key = %key_id, error = %e, "stored key is invalid");
                self.fail_unjudged(job, ProofShareError::UnknownKey(key_id));
            }
            None => self.await_key(job),
        }
    }

    fn enqueue(&mut self, job: Job, now_ms: u64) {
        self.queue.push(job);
        if self.queue.len() >= self.config.max_batch {
            self.flush(now_ms);
        } else if !self.flush_scheduled {
            self.flush_scheduled = true;
            let at_ms = now_ms + self.config.batch_window_ms;
            self.push(Output::Schedule {
                at_ms,
                timer: Timer::Flush,
            });
        }
    }

    fn waiting(&self) -> usize {
        self.key_fetches
            .values()
            .map(|f| f.waiting.len())
            .sum::<usize>()
            + self.proof_fetches.len()
            + self.batch_fetches.len()
            + self.trackers.len()
    }

    fn await_key(&mut self, job: Job) {
        let key_id = job.proof.verification_key_id;
        if self.waiting() >= self.config.max_waiting {
            self.fail_unjudged(job, ProofShareError::UnknownKey(key_id));
            return;
        }
        let mut candidates: Vec<PeerId> = job.from.into_iter().collect();
        candidates.extend(job.gossip.iter().flat_map(|g| [g.sender, g.via]));
        candidates.extend(self.peers.iter().copied());
        let max = self.config.max_candidates;
        let fetch = self.key_fetches.entry(key_id).or_default();
        let fresh = fetch.asked.is_empty() && fetch.candidates.is_empty();
        add_candidates(
            &mut fetch.candidates,
            &fetch.asked,
            candidates,
            self.local,
            max,
        );
        fetch.waiting.push(job);
        if fresh {
            self.next_key_candidate(key_id);
        }
    }

    fn next_key_candidate(&mut self, key_id: ContentId) {
        let Some(fetch) = self.key_fetches.get_mut(&key_id) else {
            return;
        };
        let Some(peer) = fetch.candidates.pop_front() else {
            fetch.in_flight = false;
            // The driver looks the key's rendezvous providers up and hands them back as
            // `Command::Sources`; without an answer the fetch fails on time.
            let mut asked = fetch.asked_providers;
            let waiting = self.ask_providers(key_id, &mut asked);
            if let Some(fetch) = self.key_fetches.get_mut(&key_id) {
                fetch.asked_providers = asked;
            }
            if waiting {
                return;
            }
            let fetch = self.key_fetches.remove(&key_id).expect("present");
            tracing::debug!(target: "causality_proofshare", key = %key_id, "no peer supplied the key");
            for job in fetch.waiting {
                self.fail_unjudged(job, ProofShareError::UnknownKey(key_id));
            }
            return;
        };
        fetch.asked.insert(peer);
        fetch.in_flight = true;
        self.request(peer, &Request::Key(key_id), Pending::Key(key_id));
    }

    /// Peers said to hold a key, batch or proof (its rendezvous providers): try them.
    fn sources(&mut self, id: ContentId, peers: Vec<PeerId>) {
        let local = self.local;
        // Providers were looked up for this fetch: they are not held to `max_candidates`.
        let add = |candidates: &mut VecDeque<PeerId>, asked: &BTreeSet<PeerId>| {
            add_candidates(candidates, asked, peers.iter().copied(), local, usize::MAX);
        };
        if let Some(f) = self.key_fetches.get_mut(&id) {
            add(&mut f.candidates, &f.asked);
            if !f.in_flight {
                self.next_key_candidate(id);
            }
        } else if let Some(f) = self.batch_fetches.get_mut(&id) {
            add(&mut f.candidates, &f.asked);
            if !f.in_flight {
                self.next_batch_candidate(id);
            }
        } else if let Some(f) = self.proof_fetches.get_mut(&id) {
            add(&mut f.candidates, &f.asked);
            if !f.in_flight {
                self.next_proof_candidate(id);
            }
        }
    }

    /// The providers did not come in time: a fetch with nothing in flight gives up.
    fn wait_over(&mut self, id: ContentId) {
        if self.key_fetches.get(&id).is_some_and(|f| !f.in_flight) {
            self.next_key_candidate(id);
        }
        if self.batch_fetches.get(&id).is_some_and(|f| !f.in_flight) {
            self.next_batch_candidate(id);
        }
        if self.proof_fetches.get(&id).is_some_and(|f| !f.in_flight) {
            self.next_proof_candidate(id);
        }
    }

    /// When a fetch ran out of peers: asks for providers once (true: wait for them).
    fn ask_providers(&mut self, id: ContentId, asked_providers: &mut bool) -> bool {
        if !self.config.ask_for_providers || *asked_providers {
            return false;
        }
        *asked_providers = true;
        self.push(Output::Event(Event::Wanted(id)));
        let at_ms = self.now_ms + self.config.provider_wait_ms;
        self.push(Output::Schedule {
            at_ms,
            timer: Timer::Wanted(id),
        });
        true
    }

    fn on_key(
        &mut self,
        peer: PeerId,
        key_id: ContentId,
        response: Result<Response, String>,
        now_ms: u64,
    ) {
        let key = match response {
            Ok(Response::Key(key)) => key,
            Ok(Response::NotFound) | Err(_) => return self.next_key_candidate(key_id),
            Ok(other) => {
                self.penalize(
                    peer,
                    Severity::Moderate,
                    format!("answered a key request with {other:?}"),
                );
                return self.next_key_candidate(key_id);
            }
        };
        if key.id() != key_id {
            self.penalize(
                peer,
                Severity::Severe,
                format!("served key {} for {key_id}", key.id()),
            );
            return self.next_key_candidate(key_id);
        }
        if let Err(e) = self.prepare(&key) {
            *self.stats.rejected.entry(e.reason()).or_default() += 1;
            self.push(Output::Event(Event::Rejected {
                proof_id: None,
                from: peer,
                reason: format!("key {key_id}: {e}"),
            }));
            self.penalize(
                peer,
                Severity::Severe,
                format!("served an invalid key {key_id}: {e}"),
            );
            return self.next_key_candidate(key_id);
        }
        self.stats.keys_fetched += 1;
        if let Err(e) = self.store.put_key(&key) {
            self.stats.store_errors += 1;
            tracing::error!(target: "causality_proofshare", key = %key_id, error = %e, "storing a key failed");
        } else {
            self.push(Output::Event(Event::Provide(key_id)));
        }
        if let Some(fetch) = self.key_fetches.remove(&key_id) {
            for job in fetch.waiting {
                self.submit(job, now_ms);
            }
        }
    }

    fn is_quarantined(&self, peer: &PeerId, now_ms: u64) -> bool {
        self.strikes
            .get(peer)
            .is_some_and(|(count, until)| *count >= self.config.max_strikes && *until > now_ms)
    }

    fn strike(&mut self, peer: PeerId, now_ms: u64) {
        if self.strikes.len() > 4096 {
            let max = self.config.max_strikes;
            self.strikes.retain(|_, (_, until)| *until > now_ms);
            if self.strikes.len() > MAX_TRACKED_ORIGINATORS {
                // Keep the quarantined; forget those with only a strike or two.
                self.strikes.retain(|_, (count, _)| *count >= max);
            }
            if self.strikes.len() > MAX_TRACKED_ORIGINATORS {
                self.strikes.clear();
            }
        }
        let entry = self.strikes.entry(peer).or_insert((0, 0));
        if entry.1 <= now_ms {
            *entry = (0, 0);
        }
        entry.0 += 1;
        entry.1 = now_ms + self.config.quarantine_ms;
        if entry.0 == self.config.max_strikes {
            tracing::warn!(target: "causality_proofshare", peer = %peer, "originator quarantined after repeated invalid proofs");
        }
    }

    /// Verifies the queue, one batch per key; each originator contributes at most
    /// `max_per_originator` proofs, the rest wait for the next batch.
    fn flush(&mut self, now_ms: u64) {
        let jobs = std::mem::take(&mut self.queue);
        let mut by_key: BTreeMap<ContentId, Vec<Job>> = BTreeMap::new();
        let mut per_originator: HashMap<PeerId, usize> = HashMap::new();
        let mut later = Vec::new();
        for job in jobs {
            if let Some(from) = job.from {
                if self.is_quarantined(&from, now_ms) {
                    self.stats.quarantined += 1;
                    self.fail_unjudged(job, ProofShareError::Quarantined(from));
                    continue;
                }
                // A batch is one object: its proofs may fill a whole verification batch.
                let cap = if job.batches.is_empty() {
                    self.config.max_per_originator
                } else {
                    self.config.max_batch
                };
                let n = per_originator.entry(from).or_default();
                if *n >= cap {
                    later.push(job);
                    continue;
                }
                *n += 1;
            }
            by_key
                .entry(job.proof.verification_key_id)
                .or_default()
                .push(job);
        }
        if !later.is_empty() {
            self.queue = later;
            self.flush_scheduled = true;
            let at_ms = now_ms + self.config.batch_window_ms;
            self.push(Output::Schedule {
                at_ms,
                timer: Timer::Flush,
            });
        }
        for (key_id, jobs) in by_key {
            let Some(Ok(key)) = self.prepared(&key_id) else {
                for job in jobs {
                    self.fail_unjudged(job, ProofShareError::UnknownKey(key_id));
                }
                continue;
            };
            let mut seed = [0u8; 32];
            self.rng.fill_bytes(&mut seed);
            let results = {
                let claims: Vec<Claim<'_>> = jobs
                    .iter()
                    .map(|j| Claim {
                        proof: &j.proof.proof_data,
                        public_inputs: &j.proof.public_inputs,
                    })
                    .collect();
                key.verify_batch(&claims, seed)
            };
            self.stats.batches += 1;
            self.stats.batched_proofs += jobs.len() as u64;
            for (job, result) in jobs.into_iter().zip(results) {
                self.finish(job, result, now_ms);
            }
        }
    }

    /// Delivers a verdict to everyone waiting for it.
    fn finish(&mut self, mut job: Job, result: Result<(), VerifyError>, now_ms: u64) {
        let batches = std::mem::take(&mut job.batches);
        let part = job.part.take();
        if let Some(part) = part {
            self.part_progress(part, result.is_ok(), now_ms);
        }
        let verdict = if result.is_ok() {
            Verdict::Valid
        } else {
            Verdict::Invalid
        };
        self.judge_proof(job, result, now_ms);
        for batch in batches {
            self.batch_progress(batch, verdict);
        }
    }

    fn judge_proof(&mut self, job: Job, result: Result<(), VerifyError>, now_ms: u64) {
        let id = job.proof.proof_id;
        match result {
            Ok(()) => {
                let first = !self.verified.contains(&id);
                self.verified.insert(id);
                if first && job.attested {
                    self.stats.attested += 1;
                } else if first {
                    self.stats.verified += 1;
                }
                if job.keep() {
                    let stored = self.store.has_proof(&id).unwrap_or(false);
                    if !stored {
                        if let Err(e) = self.store.put_proof(&job.proof, now_ms) {
                            self.stats.store_errors += 1;
                            tracing::error!(target: "causality_proofshare", proof = %id, error = %e, "storing a proof failed");
                        }
                        if let Some(from) = job.from {
                            self.push(Output::Event(Event::Verified {
                                proof: Arc::new(job.proof.clone()),
                                from,
                            }));
                        }
                    }
                }
                self.judge_gossip(&job.gossip, Acceptance::Accept);
                if first && let Some(g) = job.gossip.first() {
                    let via = g.via;
                    self.remember_upstream(id, via);
                    if self.config.send_acks {
                        let ack = Ack::sign(&self.keypair, id, now_ms);
                        self.acks_seen.insert(ack_key(&ack));
                        self.queue_ack(via, ack, now_ms);
                    }
                }
                for (call, _) in job.calls {
                    self.reply(call, Reply::Proof(Ok(job.proof.clone())));
                }
            }
            Err(error) => {
                *self.stats.rejected.entry(error.reason()).or_default() += 1;
                self.rejected.insert(id);
                if let Some(from) = job.from {
                    self.strike(from, now_ms);
                }
                let reason = format!("proof {id}: {error}");
                tracing::warn!(target: "causality_proofshare", proof = %id, reason = %error, "proof rejected");
                // The network penalizes the relay; the originator signed it.
                self.judge_gossip(&job.gossip, Acceptance::Reject(reason.clone()));
                if let Some(from) = job.from {
                    if job.gossip.is_empty() {
                        self.penalize(from, Severity::Severe, reason.clone());
                    }
                    self.push(Output::Event(Event::Rejected {
                        proof_id: Some(id),
                        from,
                        reason: reason.clone(),
                    }));
                }
                for (call, _) in job.calls {
                    self.reply(
                        call,
                        Reply::Proof(Err(ProofShareError::Verify(error.clone()))),
                    );
                }
            }
        }
    }

    /// Gives gossip one verdict on every message in `gossip`. Rejecting also charges each
    /// message's originator when it was not the relay (the network charges the relay).
    fn judge_gossip(&mut self, gossip: &[GossipRef], acceptance: Acceptance) {
        for g in gossip {
            self.push(Output::Validate {
                message: g.message,
                acceptance: acceptance.clone(),
            });
            if let Acceptance::Reject(reason) = &acceptance
                && g.sender != g.via
            {
                self.penalize(g.sender, Severity::Severe, reason.clone());
            }
        }
    }

    /// No verdict could be reached (no key, no body): nobody is blamed; gossip does not
    /// forward what it cannot vouch for.
    fn fail_unjudged(&mut self, job: Job, error: ProofShareError) {
        if let Some(part) = job.part {
            self.part_progress(part, false, 0);
        }
        for batch in &job.batches {
            self.batch_progress(*batch, Verdict::Unjudged);
        }
        self.judge_gossip(&job.gossip, Acceptance::Ignore);
        let text = error.to_string();
        for (call, _) in job.calls {
            self.reply(call, Reply::Proof(Err(clone_error(&error, &text))));
        }
    }

    // ----- pulling bodies -----

    fn fetch_proof(
        &mut self,
        proof_id: ContentId,
        from: Vec<PeerId>,
        gossip: Option<GossipRef>,
        call: Option<CallId>,
        key: Option<ContentId>,
    ) {
        let over = !self.proof_fetches.contains_key(&proof_id)
            && self.waiting() >= self.config.max_waiting;
        if over {
            if let Some(g) = gossip {
                self.push(Output::Validate {
                    message: g.message,
                    acceptance: Acceptance::Ignore,
                });
            }
            if let Some(call) = call {
                self.reply(call, Reply::Proof(Err(ProofShareError::NotFound(proof_id))));
            }
            return;
        }
        let max = self.config.max_candidates;
        let peers: Vec<PeerId> = self.peers.iter().copied().collect();
        let local = self.local;
        let fetch = self.proof_fetches.entry(proof_id).or_default();
        let fresh = fetch.asked.is_empty() && fetch.candidates.is_empty();
        if fetch.key.is_none() {
            fetch.key = key;
        }
        add_candidates(
            &mut fetch.candidates,
            &fetch.asked,
            from.into_iter().chain(peers),
            local,
            max,
        );
        fetch.gossip.extend(gossip);
        fetch.calls.extend(call);
        if fresh {
            self.next_proof_candidate(proof_id);
        }
    }

    fn next_proof_candidate(&mut self, proof_id: ContentId) {
        let Some(fetch) = self.proof_fetches.get_mut(&proof_id) else {
            return;
        };
        let Some(peer) = fetch.candidates.pop_front() else {
            fetch.in_flight = false;
            let mut asked = fetch.asked_providers;
            let waiting = self.ask_providers(proof_id, &mut asked);
            if let Some(fetch) = self.proof_fetches.get_mut(&proof_id) {
                fetch.asked_providers = asked;
            }
            if waiting {
                return;
            }
            let fetch = self.proof_fetches.remove(&proof_id).expect("present");
            self.judge_gossip(&fetch.gossip, Acceptance::Ignore);
            for call in fetch.calls {
                self.reply(call, Reply::Proof(Err(ProofShareError::NotFound(proof_id))));
            }
            return;
        };
        fetch.asked.insert(peer);
        fetch.in_flight = true;
        self.request(peer, &Request::Proof(proof_id), Pending::Proof(proof_id));
    }

    fn on_proof(
        &mut self,
        peer: PeerId,
        proof_id: ContentId,
        response: Result<Response, String>,
        now_ms: u64,
    ) {
        let proof = match response {
            Ok(Response::Proof(proof)) => proof,
            Ok(Response::NotFound) | Err(_) => return self.next_proof_candidate(proof_id),
            Ok(other) => {
                self.penalize(
                    peer,
                    Severity::Moderate,
                    format!("answered a proof request with {other:?}"),
                );
                return self.next_proof_candidate(proof_id);
            }
        };
        let expected_key = self.proof_fetches.get(&proof_id).and_then(|f| f.key);
        if proof.proof_id != proof_id
            || expected_key.is_some_and(|k| k != proof.verification_key_id)
        {
            let error = VerifyError::IdMismatch {
                what: "proof",
                expected: proof_id,
                actual: proof.proof_id,
            };
            *self.stats.rejected.entry(error.reason()).or_default() += 1;
            self.penalize(peer, Severity::Severe, error.to_string());
            self.push(Output::Event(Event::Rejected {
                proof_id: Some(proof_id),
                from: peer,
                reason: error.to_string(),
            }));
            return self.next_proof_candidate(proof_id);
        }
        self.stats.proofs_pulled += 1;
        let fetch = self.proof_fetches.remove(&proof_id).unwrap_or_default();
        let job = Job {
            proof,
            from: Some(peer),
            gossip: fetch.gossip,
            calls: fetch
                .calls
                .into_iter()
                .map(|c| (c, CallKind::Fetch))
                .collect(),
            batches: Vec::new(),
            attested: false,
            part: None,
        };
        self.submit(job, now_ms);
    }

    // ----- gossip -----

    fn on_message(&mut self, message: Message, now_ms: u64) {
        let gossip = GossipRef {
            message: message.id,
            sender: message.sender,
            via: message.via,
        };
        let judge = |this: &mut Self, acceptance: Acceptance| {
            this.push(Output::Validate {
                message: gossip.message,
                acceptance,
            });
        };
        if message.payload_type != ANNOUNCEMENT_TYPE {
            return judge(
                self,
                Acceptance::Reject(format!("unexpected payload type {}", message.payload_type)),
            );
        }
        let announcement = match Announcement::decode(&message.payload, &self.config.limits) {
            Ok(a) => a,
            Err(e) => {
                self.note_bad_announcement(&gossip, &e);
                return judge(self, Acceptance::Reject(format!("bad announcement: {e}")));
            }
        };
        let key_id = announcement.verification_key_id();
        if message.topic != proof_topic(&key_id) {
            let e = MessageError::Malformed(format!("key {key_id} announced on {}", message.topic));
            self.note_bad_announcement(&gossip, &e);
            return judge(self, Acceptance::Reject(e.to_string()));
        }
        let proof_id = announcement.proof_id();
        if self.is_quarantined(&message.sender, now_ms) {
            self.stats.quarantined += 1;
            return judge(self, Acceptance::Ignore);
        }
        let judged = self.verified.contains(&proof_id) || self.rejected.contains(&proof_id);
        if !judged && !self.budget.allow(message.sender, now_ms) {
            self.stats.over_budget += 1;
            return judge(self, Acceptance::Ignore);
        }
        match announcement {
            Announcement::Inline(proof) => {
                let job = Job {
                    proof,
                    from: Some(message.sender),
                    gossip: vec![gossip],
                    calls: Vec::new(),
                    batches: Vec::new(),
                    attested: false,
                    part: None,
                };
                self.submit(job, now_ms);
            }
            Announcement::Reference {
                proof_id,
                verification_key_id,
                ..
            } => {
                if self.verified.contains(&proof_id) {
                    self.stats.cache_hits += 1;
                    return judge(self, Acceptance::Accept);
                }
                if self.rejected.contains(&proof_id) {
                    self.stats.cache_hits += 1;
                    return judge(
                        self,
                        Acceptance::Reject(format!("proof {proof_id} is known invalid")),
                    );
                }
                self.fetch_proof(
                    proof_id,
                    vec![message.sender, message.via],
                    Some(gossip),
                    None,
                    Some(verification_key_id),
                );
            }
            Announcement::Attestation {
                batch_id,
                part,
                ack,
                ..
            } => {
                // Signed by its verifier, over this part: worth passing on. Whether it
                // counts is decided against the assignment.
                if ack.verifier != message.sender {
                    return judge(
                        self,
                        Acceptance::Reject("attestation relayed under another key".into()),
                    );
                }
                judge(self, Acceptance::Accept);
                self.on_attestation(part_id(&batch_id, part), ack, now_ms);
            }
            Announcement::Batch {
                batch_id,
                verification_key_id,
                root,
                count,
                ..
            } => {
                if self.verified.contains(&batch_id) {
                    self.stats.cache_hits += 1;
                    return judge(self, Acceptance::Accept);
                }
                if self.rejected.contains(&batch_id) {
                    self.stats.cache_hits += 1;
                    return judge(
                        self,
                        Acceptance::Reject(format!("batch {batch_id} is known invalid")),
                    );
                }
                if let Some(tracker) = self.trackers.get_mut(&batch_id) {
                    tracker.gossip.push(gossip);
                    return;
                }
                if let Some(fetch) = self.batch_fetches.get_mut(&batch_id) {
                    fetch.gossip.push(gossip);
                    return;
                }
                if self.waiting() >= self.config.max_waiting {
                    return judge(self, Acceptance::Ignore);
                }
                let mut candidates = VecDeque::from([message.sender]);
                if message.via != message.sender {
                    candidates.push_back(message.via);
                }
                self.batch_fetches.insert(
                    batch_id,
                    BatchFetch {
                        candidates,
                        asked: BTreeSet::new(),
                        gossip: vec![gossip],
                        key: verification_key_id,
                        root,
                        count,
                        in_flight: false,
                        asked_providers: false,
                    },
                );
                self.next_batch_candidate(batch_id);
            }
        }
    }

    // ----- batches -----

    fn next_batch_candidate(&mut self, batch_id: ContentId) {
        let Some(fetch) = self.batch_fetches.get_mut(&batch_id) else {
            return;
        };
        let Some(peer) = fetch.candidates.pop_front() else {
            fetch.in_flight = false;
            let mut asked = fetch.asked_providers;
            let waiting = self.ask_providers(batch_id, &mut asked);
            if let Some(fetch) = self.batch_fetches.get_mut(&batch_id) {
                fetch.asked_providers = asked;
            }
            if waiting {
                return;
            }
            let fetch = self.batch_fetches.remove(&batch_id).expect("present");
            self.judge_gossip(&fetch.gossip, Acceptance::Ignore);
            return;
        };
        fetch.asked.insert(peer);
        fetch.in_flight = true;
        self.request(peer, &Request::Batch(batch_id), Pending::Batch(batch_id));
    }

    fn on_batch(
        &mut self,
        peer: PeerId,
        batch_id: ContentId,
        response: Result<Response, String>,
        now_ms: u64,
    ) {
        let encoding = match response {
            Ok(Response::Batch(encoding)) => encoding,
            Ok(Response::NotFound) | Err(_) => return self.next_batch_candidate(batch_id),
            Ok(other) => {
                self.penalize(
                    peer,
                    Severity::Moderate,
                    format!("answered a batch request with {other:?}"),
                );
                return self.next_batch_candidate(batch_id);
            }
        };
        let Some(fetch) = self.batch_fetches.get(&batch_id) else {
            return;
        };
        let (key, root, count) = (fetch.key, fetch.root, fetch.count);
        let checked = Batch::decode(&encoding, &self.config.limits)
            .map_err(|e| e.to_string())
            .and_then(|batch| {
                let actual = batch.id();
                if actual != batch_id {
                    return Err(VerifyError::IdMismatch {
                        what: "batch",
                        expected: batch_id,
                        actual,
                    }
                    .to_string());
                }
                if batch.verification_key_id != key
                    || batch.root() != root
                    || batch.proofs.len() != count as usize
                {
                    return Err(format!(
                        "batch {batch_id} does not match its announcement (key, root or count)"
                    ));
                }
                Ok(batch)
            });
        let batch = match checked {
            Ok(batch) => batch,
            Err(reason) => {
                *self.stats.rejected.entry("id_mismatch").or_default() += 1;
                self.penalize(peer, Severity::Severe, reason.clone());
                self.push(Output::Event(Event::Rejected {
                    proof_id: Some(batch_id),
                    from: peer,
                    reason,
                }));
                return self.next_batch_candidate(batch_id);
            }
        };
        self.stats.batches_pulled += 1;
        let mut fetch = self.batch_fetches.remove(&batch_id).expect("present");
        if matches!(self.config.accept, AcceptPolicy::Attested { .. }) {
            // The verifiers its parts are assigned to may be downstream of us: pass the
            // announcement on and serve the body once it matches its id and root. Its
            // proofs are still judged (attested or verified) before anyone accepts them.
            self.judge_gossip(&std::mem::take(&mut fetch.gossip), Acceptance::Accept);
            if let Err(e) = self.store.put_batch(&batch_id, &batch.encode()) {
                self.stats.store_errors += 1;
                tracing::error!(target: "causality_proofshare", batch = %batch_id, error = %e, "storing a batch failed");
            }
        }
        self.track(
            batch_id,
            batch,
            fetch.gossip,
            Vec::new(),
            Some(peer),
            now_ms,
        );
    }

    /// Judges every proof of a batch; the batch's verdict follows the last one.
    fn track(
        &mut self,
        batch_id: ContentId,
        batch: Batch,
        gossip: Vec<GossipRef>,
        calls: Vec<CallId>,
        from: Option<PeerId>,
        now_ms: u64,
    ) {
        let root = batch.root();
        let count = batch.proofs.len() as u32;
        self.trackers.insert(
            batch_id,
            Tracker {
                remaining: batch.proofs.len(),
                invalid: 0,
                unjudged: 0,
                gossip,
                calls,
                encoding: batch.encode(),
                key: batch.verification_key_id,
                root,
                count,
            },
        );
        let attested = match self.config.accept {
            AcceptPolicy::Attested {
                k,
                part_size,
                timeout_ms,
            } if from.is_some() && part_size > 0 => Some((k.max(1), part_size, timeout_ms)),
            _ => None,
        };
        let Some((k, part_size, timeout_ms)) = attested else {
            for proof in batch.proofs {
                let mut job = Job::new(proof, from);
                job.batches.push(batch_id);
                self.submit(job, now_ms);
            }
            return;
        };
        let key_id = batch.verification_key_id;
        let mut proofs = batch.proofs;
        let mut part = 0u32;
        while !proofs.is_empty() {
            let rest = proofs.split_off(part_size.min(proofs.len()));
            let chunk = std::mem::replace(&mut proofs, rest);
            let id = part_id(&batch_id, part);
            let assigned = self.assigned(&id, k);
            if assigned.contains(&self.local) {
                self.own_parts.insert(
                    id,
                    OwnPart {
                        remaining: chunk.len(),
                        failed: false,
                        batch: batch_id,
                        key: key_id,
                        part,
                    },
                );
                for proof in chunk {
                    let mut job = Job::new(proof, from);
                    job.batches.push(batch_id);
                    job.part = Some(id);
                    self.submit(job, now_ms);
                }
            } else {
                self.parts.insert(
                    id,
                    Part {
                        batch: batch_id,
                        proofs: chunk,
                        from,
                        assigned,
                    },
                );
                self.push(Output::Schedule {
                    at_ms: now_ms + timeout_ms,
                    timer: Timer::Part(id),
                });
                self.try_accept_part(id, now_ms);
            }
            part += 1;
        }
    }

    /// The `k` verifiers rendezvous hashing assigns a part to, among the view and us.
    fn assigned(&self, part: &ContentId, k: usize) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = self.view.iter().copied().collect();
        if !self.view.contains(&self.local) {
            peers.push(self.local);
        }
        let bytes: Vec<[u8; 32]> = peers.iter().map(|p| *p.as_bytes()).collect();
        let hrw = causality_hash::Rendezvous::with_salt(b"causality/proofshare/parts/v1");
        hrw.top_k(part.as_bytes(), &bytes, k)
            .into_iter()
            .filter_map(|b| PeerId::from_bytes(b).ok())
            .collect()
    }

    /// One proof of a part assigned to us was judged; when all of it is valid, attest it.
    fn part_progress(&mut self, id: ContentId, valid: bool, now_ms: u64) {
        let Some(own) = self.own_parts.get_mut(&id) else {
            return;
        };
        own.remaining = own.remaining.saturating_sub(1);
        own.failed |= !valid;
        if own.remaining > 0 {
            return;
        }
        let own = self.own_parts.remove(&id).expect("present");
        if own.failed {
            return;
        }
        let ack = Ack::sign(&self.keypair, id, now_ms);
        self.stats.attestations_sent += 1;
        self.push(Output::Publish {
            topic: proof_topic(&own.key),
            payload_type: ANNOUNCEMENT_TYPE.to_owned(),
            payload: Announcement::Attestation {
                batch_id: own.batch,
                verification_key_id: own.key,
                part: own.part,
                ack,
            }
            .encode(),
        });
    }

    /// Accepts a waiting part once `k` of its assigned verifiers attested it.
    fn try_accept_part(&mut self, id: ContentId, now_ms: u64) {
        let Some(part) = self.parts.get(&id) else {
            return;
        };
        let AcceptPolicy::Attested { k, .. } = self.config.accept else {
            return;
        };
        let count = self.attestations.get(&id).map_or(0, |acks| {
            acks.keys().filter(|v| part.assigned.contains(v)).count()
        });
        if count < k.max(1).min(part.assigned.len()) {
            return;
        }
        let part = self.parts.remove(&id).expect("present");
        for proof in part.proofs {
            let mut job = Job::new(proof, part.from);
            job.batches.push(part.batch);
            job.attested = true;
            self.finish(job, Ok(()), now_ms);
        }
    }

    /// The attestations did not come in time: verify the part here.
    fn part_overdue(&mut self, id: ContentId, now_ms: u64) {
        let Some(part) = self.parts.remove(&id) else {
            return;
        };
        tracing::debug!(target: "causality_proofshare", part = %id, "attestations overdue; verifying the part here");
        for proof in part.proofs {
            let mut job = Job::new(proof, part.from);
            job.batches.push(part.batch);
            self.submit(job, now_ms);
        }
    }

    fn on_attestation(&mut self, id: ContentId, ack: Ack, now_ms: u64) {
        if !self.attestations.contains_key(&id) {
            self.attestation_order.push_back(id);
            if self.attestation_order.len() > 4096
                && let Some(old) = self.attestation_order.pop_front()
            {
                self.attestations.remove(&old);
            }
        }
        let acks = self.attestations.entry(id).or_default();
        if acks.len() < 64 && !acks.contains_key(&ack.verifier) {
            self.stats.attestations_received += 1;
            acks.insert(ack.verifier, ack);
        }
        self.try_accept_part(id, now_ms);
    }

    fn batch_progress(&mut self, batch_id: ContentId, verdict: Verdict) {
        let Some(tracker) = self.trackers.get_mut(&batch_id) else {
            return;
        };
        tracker.remaining = tracker.remaining.saturating_sub(1);
        match verdict {
            Verdict::Valid => {}
            Verdict::Invalid => tracker.invalid += 1,
            Verdict::Unjudged => tracker.unjudged += 1,
        }
        if tracker.remaining > 0 {
            return;
        }
        let tracker = self.trackers.remove(&batch_id).expect("present");
        let info = BatchInfo {
            id: batch_id,
            root: tracker.root,
            count: tracker.count,
        };
        if tracker.invalid == 0 && tracker.unjudged == 0 {
            self.verified.insert(batch_id);
            if let Err(e) = self.store.put_batch(&batch_id, &tracker.encoding) {
                self.stats.store_errors += 1;
                tracing::error!(target: "causality_proofshare", batch = %batch_id, error = %e, "storing a batch failed");
            } else {
                self.push(Output::Event(Event::Provide(batch_id)));
            }
            self.judge_gossip(&tracker.gossip, Acceptance::Accept);
            for call in tracker.calls {
                self.reply(call, Reply::Batch(Ok(info)));
            }
        } else if tracker.invalid > 0 {
            self.rejected.insert(batch_id);
            let reason = format!(
                "batch {batch_id}: {} of {} proofs invalid",
                tracker.invalid, tracker.count
            );
            // The network penalizes the relay; the originator signed it.
            self.judge_gossip(&tracker.gossip, Acceptance::Reject(reason.clone()));
            for call in tracker.calls {
                self.reply(
                    call,
                    Reply::Batch(Err(ProofShareError::Verify(VerifyError::Invalid))),
                );
            }
        } else {
            self.judge_gossip(&tracker.gossip, Acceptance::Ignore);
            for call in tracker.calls {
                self.reply(
                    call,
                    Reply::Batch(Err(ProofShareError::UnknownKey(tracker.key))),
                );
            }
        }
    }

    fn note_bad_announcement(&mut self, gossip: &GossipRef, error: &MessageError) {
        *self.stats.rejected.entry("malformed").or_default() += 1;
        tracing::warn!(target: "causality_proofshare", sender = %gossip.sender, error = %error, "bad announcement");
        if gossip.sender != gossip.via {
            self.penalize(
                gossip.sender,
                Severity::Severe,
                format!("bad announcement: {error}"),
            );
        }
        self.push(Output::Event(Event::Rejected {
            proof_id: None,
            from: gossip.sender,
            reason: error.to_string(),
        }));
    }

    // ----- acknowledgements -----

    fn remember_upstream(&mut self, proof: ContentId, via: PeerId) {
        if self.upstream.insert(proof, via).is_none() {
            self.upstream_order.push_back(proof);
            if self.upstream_order.len() > self.config.verified_cache
                && let Some(old) = self.upstream_order.pop_front()
            {
                self.upstream.remove(&old);
            }
        }
    }

    fn queue_ack(&mut self, to: PeerId, ack: Ack, now_ms: u64) {
        if to == self.local {
            return;
        }
        let queue = self.acks_out.entry(to).or_default();
        // A peer that stops draining does not make us hold acks without bound.
        if queue.len() < 16 * MAX_ACKS_PER_REQUEST {
            queue.push(ack);
        }
        if !self.acks_scheduled {
            self.acks_scheduled = true;
            let at_ms = now_ms + self.config.ack_delay_ms;
            self.push(Output::Schedule {
                at_ms,
                timer: Timer::Acks,
            });
        }
    }

    fn send_acks(&mut self) {
        for (peer, acks) in std::mem::take(&mut self.acks_out) {
            for chunk in acks.chunks(MAX_ACKS_PER_REQUEST) {
                self.request(peer, &Request::Acks(chunk.to_vec()), Pending::Ack);
            }
        }
    }

    /// A checked acknowledgement from a peer: recorded when we hold the proof, reported
    /// when we announced it, and otherwise passed on towards the announcer.
    fn on_ack(&mut self, ack: Ack, now_ms: u64) -> Result<(), ProofShareError> {
        let key = ack_key(&ack);
        if self.acks_seen.contains(&key) {
            return Ok(());
        }
        self.acks_seen.insert(key);
        if !self.store.has_proof(&ack.proof_id)? {
            return Ok(());
        }
        let new = self.store.put_ack(&ack)?;
        if self.announced.contains(&ack.proof_id) {
            if new {
                self.stats.acks_received += 1;
                self.push(Output::Event(Event::Acked(ack)));
            }
        } else if let Some(&up) = self.upstream.get(&ack.proof_id) {
            self.stats.acks_relayed += 1;
            self.queue_ack(up, ack, now_ms);
        }
        Ok(())
    }

    // ----- serving -----

    fn on_request(&mut self, id: InboundId, peer: PeerId, body: &[u8], now_ms: u64) {
        let request = match Request::decode(body, &self.config.limits) {
            Ok(r) => r,
            Err(e) => {
                self.penalize(peer, Severity::Severe, format!("bad request: {e}"));
                self.push(Output::Respond {
                    id,
                    result: Err((RefusalReason::BadRequest, e.to_string())),
                });
                return;
            }
        };
        let response = match request {
            Request::Proof(proof_id) => match self.store.proof(&proof_id) {
                Ok(Some(p)) => Response::Proof(p),
                Ok(None) => Response::NotFound,
                Err(e) => return self.store_failed(id, &e),
            },
            Request::Batch(batch_id) => match self.store.batch(&batch_id) {
                Ok(Some(encoding)) => Response::Batch(encoding),
                Ok(None) => Response::NotFound,
                Err(e) => return self.store_failed(id, &e),
            },
            Request::Key(key_id) => match self.store.key(&key_id) {
                Ok(Some(k)) => Response::Key(k),
                Ok(None) => Response::NotFound,
                Err(e) => return self.store_failed(id, &e),
            },
            Request::Acks(acks) => {
                for ack in acks {
                    if let Err(e) = self.on_ack(ack, now_ms) {
                        return self.store_failed(id, &e);
                    }
                }
                Response::Acked
            }
            Request::Inventory {
                key,
                since_ms,
                limit,
            } => {
                let limit = limit.min(self.config.limits.max_inventory);
                match self.store.proofs_since(&key, since_ms, limit) {
                    Ok((ids, more)) => Response::Ids { ids, more },
                    Err(e) => return self.store_failed(id, &e),
                }
            }
        };
        self.push(Output::Respond {
            id,
            result: Ok(response.encode()),
        });
    }

    fn store_failed(&mut self, id: InboundId, error: &ProofShareError) {
        self.stats.store_errors += 1;
        tracing::error!(target: "causality_proofshare", error = %error, "store failed while serving");
        self.push(Output::Respond {
            id,
            result: Err((RefusalReason::HandlerFailed, "store failure".into())),
        });
    }

    fn on_response(
        &mut self,
        id: OutboundId,
        peer: PeerId,
        result: Result<Vec<u8>, String>,
        now_ms: u64,
    ) {
        let Some(pending) = self.outbound.remove(&id) else {
            return;
        };
        let received = result.as_ref().map_or(0, |body| body.len() as u64);
        match pending {
            Pending::Key(_) => self.stats.key_bytes += received,
            Pending::Batch(_) => self.stats.batch_bytes += received,
            _ => {}
        }
        let decoded = match result {
            Ok(body) => match Response::decode(&body, &self.config.limits) {
                Ok(response) => Ok(response),
                Err(e) => {
                    self.penalize(peer, Severity::Severe, format!("malformed response: {e}"));
                    Err(e.to_string())
                }
            },
            Err(e) => Err(e),
        };
        match pending {
            Pending::Key(key) => self.on_key(peer, key, decoded, now_ms),
            Pending::Proof(proof) => self.on_proof(peer, proof, decoded, now_ms),
            Pending::Inventory { key, pages } => self.on_inventory(peer, key, pages, decoded),
            Pending::Batch(batch) => self.on_batch(peer, batch, decoded, now_ms),
            Pending::Ack => {}
        }
    }

    // ----- catch-up -----

    fn ask_inventory(&mut self, peer: PeerId, key: ContentId, since_ms: u64, pages: u32) {
        let request = Request::Inventory {
            key,
            since_ms,
            limit: self.config.limits.max_inventory,
        };
        self.request(peer, &request, Pending::Inventory { key, pages });
    }

    fn on_inventory(
        &mut self,
        peer: PeerId,
        key: ContentId,
        pages: u32,
        response: Result<Response, String>,
    ) {
        let Ok(Response::Ids { ids, more }) = response else {
            return;
        };
        if !self.following.contains_key(&key) {
            return;
        }
        let last = ids.last().map(|(_, at)| *at);
        for (proof_id, _) in ids {
            let known = self.verified.contains(&proof_id)
                || self.rejected.contains(&proof_id)
                || self.store.has_proof(&proof_id).unwrap_or(false);
            if !known {
                self.fetch_proof(proof_id, vec![peer], None, None, Some(key));
            }
        }
        // Follow pages while they come, a bounded number of times.
        if more
            && pages < 16
            && let Some(last) = last
        {
            self.ask_inventory(peer, key, last, pages + 1);
        }
    }

    fn catch_up(&mut self, peer: PeerId, key: ContentId, now_ms: u64) {
        let since = now_ms.saturating_sub(self.config.catch_up_window_ms);
        self.ask_inventory(peer, key, since, 0);
    }

    // ----- commands -----

    fn on_command(&mut self, command: Command, call: Option<CallId>, now_ms: u64) {
        match command {
            Command::StoreKey(key) => {
                let result = self
                    .prepare(&key)
                    .map_err(ProofShareError::Verify)
                    .and_then(|_| self.store.put_key(&key).map(|()| key.id()));
                if let Ok(id) = result {
                    self.push(Output::Event(Event::Provide(id)));
                }
                if let Some(call) = call {
                    self.reply(call, Reply::Key(result));
                }
            }
            Command::StoreProof(proof) => {
                let job = Job {
                    proof,
                    from: None,
                    gossip: Vec::new(),
                    calls: call.map(|c| (c, CallKind::Store)).into_iter().collect(),
                    batches: Vec::new(),
                    attested: false,
                    part: None,
                };
                self.submit_local(job, now_ms);
            }
            Command::Verify(proof) => {
                let job = Job {
                    proof,
                    from: None,
                    gossip: Vec::new(),
                    calls: call.map(|c| (c, CallKind::Verify)).into_iter().collect(),
                    batches: Vec::new(),
                    attested: false,
                    part: None,
                };
                self.submit_local(job, now_ms);
            }
            Command::StoreBatch(proofs) => {
                let batch = Batch::new(proofs);
                match batch {
                    Ok(batch) => {
                        let id = batch.id();
                        if let Some(tracker) = self.trackers.get_mut(&id) {
                            // Being judged: answer with the verdict.
                            tracker.calls.extend(call);
                        } else if self.verified.contains(&id) {
                            // Already stored.
                            let info = BatchInfo {
                                id,
                                root: batch.root(),
                                count: batch.proofs.len() as u32,
                            };
                            if let Some(call) = call {
                                self.reply(call, Reply::Batch(Ok(info)));
                            }
                        } else {
                            self.track(
                                id,
                                batch,
                                Vec::new(),
                                call.into_iter().collect(),
                                None,
                                now_ms,
                            );
                        }
                    }
                    Err(e) => {
                        if let Some(call) = call {
                            self.reply(call, Reply::Batch(Err(e.into())));
                        }
                    }
                }
            }
            Command::AnnounceBatch(batch_id) => {
                let result = self.announce_batch(batch_id);
                if let Some(call) = call {
                    self.reply(call, Reply::Done(result));
                }
            }
            Command::Announce(proof_id) => {
                let result = self.announce(proof_id);
                if let Some(call) = call {
                    self.reply(call, Reply::Done(result));
                }
            }
            Command::Fetch { proof_id, from } => match self.store.proof(&proof_id) {
                Ok(Some(proof)) => {
                    if let Some(call) = call {
                        self.reply(call, Reply::Proof(Ok(proof)));
                    }
                }
                Ok(None) => self.fetch_proof(proof_id, from, None, call, None),
                Err(e) => {
                    if let Some(call) = call {
                        self.reply(call, Reply::Proof(Err(e)));
                    }
                }
            },
            Command::Follow(key) => {
                let count = self.following.entry(key).or_default();
                *count += 1;
                if *count == 1 {
                    self.push(Output::SubscribeValidated(proof_topic(&key)));
                    let peers: Vec<PeerId> = self.peers.iter().copied().collect();
                    for peer in peers {
                        self.catch_up(peer, key, now_ms);
                    }
                }
            }
            Command::Unfollow(key) => {
                if let Some(count) = self.following.get_mut(&key) {
                    *count -= 1;
                    if *count == 0 {
                        self.following.remove(&key);
                        self.push(Output::Unsubscribe(proof_topic(&key)));
                    }
                }
            }
            Command::Acks(proof_id) => {
                let acks = self.store.acks(&proof_id);
                if let Some(call) = call {
                    self.reply(call, Reply::Acks(acks));
                }
            }
            Command::Sources { id, peers } => self.sources(id, peers),
            Command::Stats => {
                if let Some(call) = call {
                    self.reply(call, Reply::Stats(self.stats.clone()));
                }
            }
        }
    }

    /// Local proofs are recomputed from their fields first: the caller's `proof_id` is not
    /// trusted either.
    fn submit_local(&mut self, mut job: Job, now_ms: u64) {
        let recomputed = ContentId::of(&job.proof.encode());
        if recomputed != job.proof.proof_id {
            let error = VerifyError::IdMismatch {
                what: "proof",
                expected: job.proof.proof_id,
                actual: recomputed,
            };
            for (call, _) in std::mem::take(&mut job.calls) {
                self.reply(
                    call,
                    Reply::Proof(Err(ProofShareError::Verify(error.clone()))),
                );
            }
            return;
        }
        self.submit(job, now_ms);
    }

    fn announce_batch(&mut self, batch_id: ContentId) -> Result<(), ProofShareError> {
        let encoding = self
            .store
            .batch(&batch_id)?
            .ok_or(ProofShareError::UnknownProof(batch_id))?;
        let batch = Batch::decode(&encoding, &self.config.limits)?;
        let announcement = Announcement::Batch {
            batch_id,
            verification_key_id: batch.verification_key_id,
            root: batch.root(),
            count: batch.proofs.len() as u32,
            size: encoding.len() as u64,
        };
        self.verified.insert(batch_id);
        self.push(Output::Publish {
            topic: proof_topic(&batch.verification_key_id),
            payload_type: ANNOUNCEMENT_TYPE.to_owned(),
            payload: announcement.encode(),
        });
        // It verified when it was stored: attest the parts assigned to us.
        if let AcceptPolicy::Attested { k, part_size, .. } = self.config.accept
            && part_size > 0
        {
            let parts = batch.proofs.len().div_ceil(part_size) as u32;
            for part in 0..parts {
                let id = part_id(&batch_id, part);
                if self.assigned(&id, k.max(1)).contains(&self.local) {
                    let ack = Ack::sign(&self.keypair, id, 0);
                    self.stats.attestations_sent += 1;
                    self.push(Output::Publish {
                        topic: proof_topic(&batch.verification_key_id),
                        payload_type: ANNOUNCEMENT_TYPE.to_owned(),
                        payload: Announcement::Attestation {
                            batch_id,
                            verification_key_id: batch.verification_key_id,
                            part,
                            ack,
                        }
                        .encode(),
                    });
                }
            }
        }
        Ok(())
    }

    fn announce(&mut self, proof_id: ContentId) -> Result<(), ProofShareError> {
        let proof = self
            .store
            .proof(&proof_id)?
            .ok_or(ProofShareError::UnknownProof(proof_id))?;
        let topic = proof_topic(&proof.verification_key_id);
        let size = proof.encoded_len();
        let announcement = if size <= self.config.inline_max_bytes {
            Announcement::Inline(proof)
        } else {
            Announcement::Reference {
                proof_id,
                verification_key_id: proof.verification_key_id,
                size: size as u64,
            }
        };
        self.verified.insert(proof_id);
        self.announced.insert(proof_id);
        self.push(Output::Publish {
            topic,
            payload_type: ANNOUNCEMENT_TYPE.to_owned(),
            payload: announcement.encode(),
        });
        Ok(())
    }
}

/// Queues `peers` to be asked, skipping ourselves and peers asked or queued already, while
/// fewer than `max` have been asked or queued.
fn add_candidates(
    candidates: &mut VecDeque<PeerId>,
    asked: &BTreeSet<PeerId>,
    peers: impl IntoIterator<Item = PeerId>,
    local: PeerId,
    max: usize,
) {
    for peer in peers {
        if peer != local
            && !asked.contains(&peer)
            && !candidates.contains(&peer)
            && asked.len() + candidates.len() < max
        {
            candidates.push_back(peer);
        }
    }
}

/// What a proof's judgement means for the batches it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Valid,
    Invalid,
    /// No key, no budget: neither valid nor invalid.
    Unjudged,
}

/// What identifies an acknowledgement for de-duplication: one per verifier per proof.
fn ack_key(ack: &Ack) -> ContentId {
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(ack.proof_id.as_bytes());
    bytes[32..].copy_from_slice(ack.verifier.as_bytes());
    ContentId::of(&bytes)
}

/// `ProofShareError` holds a `NetError`, which is not `Clone`; waiters each get their own.
fn clone_error(error: &ProofShareError, text: &str) -> ProofShareError {
    match error {
        ProofShareError::UnknownProof(id) => ProofShareError::UnknownProof(*id),
        ProofShareError::UnknownKey(id) => ProofShareError::UnknownKey(*id),
        ProofShareError::NotFound(id) => ProofShareError::NotFound(*id),
        ProofShareError::Quarantined(p) => ProofShareError::Quarantined(*p),
        ProofShareError::Verify(e) => ProofShareError::Verify(e.clone()),
        ProofShareError::Message(e) => ProofShareError::Message(e.clone()),
        ProofShareError::Net(_) | ProofShareError::Store(_) => {
            ProofShareError::Store(text.to_owned())
        }
    }
}

impl Protocol for State {
    type Command = Command;
    type Reply = Reply;
    type Event = Event;
    type Timer = Timer;
    type View = VerifierView;

    fn protocols(&self) -> Vec<RequestProtocol> {
        vec![crate::protocol(&self.config.limits)]
    }

    fn handle(&mut self, now_ms: u64, input: Input<Self>) {
        self.now_ms = now_ms;
        match input {
            Input::Start => {}
            Input::Message(message) => self.on_message(message, now_ms),
            Input::Request { id, peer, body, .. } => self.on_request(id, peer, &body, now_ms),
            Input::Response { id, peer, body } => self.on_response(id, peer, Ok(body), now_ms),
            Input::RequestFailed { id, peer, error } => {
                self.on_response(id, peer, Err(error.to_string()), now_ms);
            }
            Input::Timer(Timer::Flush) => {
                self.flush_scheduled = false;
                self.flush(now_ms);
            }
            Input::Timer(Timer::Part(id)) => self.part_overdue(id, now_ms),
            Input::Timer(Timer::Wanted(id)) => self.wait_over(id),
            Input::Timer(Timer::Acks) => {
                self.acks_scheduled = false;
                self.send_acks();
            }
            Input::Command { command, call } => self.on_command(command, call, now_ms),
            Input::PeerConnected(peer) => {
                self.peers.insert(peer);
                let keys: Vec<ContentId> = self.following.keys().copied().collect();
                for key in keys {
                    self.catch_up(peer, key, now_ms);
                }
            }
            Input::PeerDisconnected(peer) => {
                self.peers.remove(&peer);
            }
            Input::View(view) => self.view = view,
            Input::DialFailed { .. } => {}
        }
    }

    fn poll_output(&mut self) -> Option<Output<Self>> {
        self.outputs.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_admits_a_burst_then_the_rate() {
        let mut budget = Budget::new((10, 5));
        let peer = Keypair::from_index(1).peer_id();
        let admitted = (0..20).filter(|_| budget.allow(peer, 0)).count();
        assert_eq!(admitted, 6, "the burst (and the first)");
        assert!(!budget.allow(peer, 50));
        assert!(budget.allow(peer, 200), "one interval later");
    }

    #[test]
    fn budgets_of_a_key_flood_stay_bounded() {
        let mut budget = Budget::new((100, 400));
        for i in 0..(MAX_TRACKED_ORIGINATORS as u64 + 10_000) {
            budget.allow(Keypair::from_index(i).peer_id(), 0);
        }
        assert!(budget.tat.len() <= MAX_TRACKED_ORIGINATORS + 1);
    }

    #[test]
    fn strikes_of_a_key_flood_stay_bounded_and_keep_the_quarantined() {
        let mut state = State::new(
            Config::default(),
            Keypair::from_index(0),
            Verifiers::empty(),
            Box::new(crate::store::MemoryStore::new()),
        );
        let worst = Keypair::from_index(1).peer_id();
        for _ in 0..3 {
            state.strike(worst, 0);
        }
        for i in 2..(MAX_TRACKED_ORIGINATORS as u64 + 10_000) {
            state.strike(Keypair::from_index(i).peer_id(), 0);
        }
        assert!(state.strikes.len() <= MAX_TRACKED_ORIGINATORS + 1);
        assert!(state.is_quarantined(&worst, 1), "the quarantined are kept");
    }
}
