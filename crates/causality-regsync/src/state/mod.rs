//! The state machine: see [`State`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use causality_hash::ContentId;
use causality_net::service::{
    CallId, Ids, InboundId, Input, OutboundId, Output, Protocol, Severity,
};
use causality_net::{Acceptance, Keypair, Message, PeerId, RefusalReason, RequestProtocol, Topic};

use crate::commitment::{MembershipProof, SetCommitment, leaf};
use crate::error::{DecodeError, OpError, SyncError, UpdateError};
use crate::messages::{
    self, COMMITMENT_TOPIC, CREATION_TOPIC, Commitment, MAX_HEADERS, MAX_RESOLVE, MAX_SYMBOLS,
    NULLIFIER_TOPIC, RegisterStateMessage, Request, Response, SetKind, TIMEMAP_COMMITMENT_TOPIC,
    TIMEMAP_UPDATE_TOPIC, TIMEMAP_VERIFICATION_TOPIC, UPDATE_TOPIC, domain_topic, update_topic,
};
use crate::model::{
    At, Context, Effects, Fence, Genesis, Limits, NullifierUse, Operation, Register,
    RegisterContents, RegisterDelta, RegisterId, StateHash, TimeMap, UpdateHeader, apply,
};
use crate::riblt::{Decoder, Encoder, ITEM_BYTES, Item, Symbol};
use crate::store::{Commit, DoubleUse, Fork, Head, RegisterStore, StoreError};

mod domain;
mod fetch;
mod local;
mod reconcile;
mod updates;

/// What a register class requires.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassRules {
    /// Synchronized before other classes when fetches queue up.
    pub critical: bool,
    /// Updates must carry a proof verified under this key (a proof-sharing key id) whose
    /// first public input is the update's [`binding`].
    pub proof_key: Option<ContentId>,
}

/// How a node runs register sync. Every field has a sane default.
#[derive(Clone, Debug)]
pub struct Config {
    /// Size limits.
    pub limits: Limits,
    /// Deltas (and creation states) of at most this many bytes travel inline in the
    /// announcement (default 1024, the gossip IDONTWANT threshold); larger ones are pulled.
    pub inline_max_bytes: usize,
    /// Rules per register class; classes not listed have none.
    pub classes: BTreeMap<String, ClassRules>,
    /// How long an update whose previous state is missing waits for it before the node
    /// fetches the chain (default 500 ms).
    pub reorder_ms: u64,
    /// Updates buffered at once (default 4096) and per register (default 32).
    pub max_buffered: usize,
    /// See `max_buffered`.
    pub max_buffered_per_register: usize,
    /// Sync requests in flight at once (default 8); the rest queue, critical classes first.
    pub max_inflight: usize,
    /// Syncs queued at once (default 65,536); beyond, new ones are dropped (and retried by
    /// the next announcement or reconciliation).
    pub max_queued: usize,
    /// Reconcile a followed domain with every peer that connects (default true).
    pub reconcile_on_connect: bool,
    /// Reconcile with the signer of a differing commitment (default true).
    pub reconcile_on_mismatch: bool,
    /// Symbols asked for in a reconciliation's first request (default 64); later requests
    /// ask for a quarter of what was received so far (the rateless code needs about 1.35 per
    /// difference).
    pub first_symbols: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            inline_max_bytes: 1024,
            classes: BTreeMap::new(),
            reorder_ms: 500,
            max_buffered: 4096,
            max_buffered_per_register: 32,
            max_inflight: 8,
            max_queued: 65_536,
            reconcile_on_connect: true,
            reconcile_on_mismatch: true,
            first_symbols: 64,
        }
    }
}

/// The value a proof for a proof-carrying update must carry as its first public input:
/// BLAKE3("causality/regsync/binding/v1" ‖ register id ‖ new state hash), as a
/// little-endian field element with its top three bits cleared (so it is below the BN254
/// scalar modulus).
pub fn binding(register: &RegisterId, state: &StateHash) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"causality/regsync/binding/v1");
    h.update(register.as_bytes());
    h.update(state.as_bytes());
    let mut out = *h.finalize().as_bytes();
    out[31] &= 0x1f;
    out
}

/// Checks that a (verified) proof is under `key` and binds `binding`.
pub fn proof_binds(
    proof: &causality_proofshare::ProofMessage,
    key: &ContentId,
    binding: &[u8; 32],
) -> Result<(), String> {
    if proof.verification_key_id != *key {
        return Err(format!(
            "proof is under key {}, the class needs {key}",
            proof.verification_key_id
        ));
    }
    match proof.public_inputs.first() {
        Some(input) if input.as_slice() == binding => Ok(()),
        _ => Err("the proof's first public input does not bind this update".into()),
    }
}

/// Local commands.
#[derive(Debug)]
pub enum Command {
    /// Creates a register owned by this node (`genesis.owner` must be this node).
    Create {
        /// Its identity.
        genesis: Genesis,
        /// Its first contents.
        contents: RegisterContents,
        /// The block height.
        last_updated: u64,
        /// For proof-carrying classes.
        proof_id: Option<ContentId>,
    },
    /// Applies operations to a register this node owns and announces the result.
    Update {
        /// The register.
        register_id: RegisterId,
        /// The operations.
        operations: Vec<Operation>,
        /// The block height.
        last_updated: u64,
        /// For proof-carrying classes.
        proof_id: Option<ContentId>,
    },
    /// [`Update`](Self::Update) carrying a fencing token: refused here and everywhere
    /// when a higher token for the same key was accepted for the register.
    UpdateFenced {
        /// The register.
        register_id: RegisterId,
        /// The operations.
        operations: Vec<Operation>,
        /// The block height.
        last_updated: u64,
        /// The fence.
        fence: Fence,
    },
    /// The state hash an update would produce (to bind a proof to it), without applying
    /// it.
    Preview {
        /// The register.
        register_id: RegisterId,
        /// The operations.
        operations: Vec<Operation>,
        /// The block height.
        last_updated: u64,
    },
    /// Announces a stored state again (its header, and its delta when small).
    Announce {
        /// The register.
        register_id: RegisterId,
        /// The state.
        state_hash: StateHash,
    },
    /// Follows a register's updates.
    Follow(RegisterId),
    /// Stops following a register.
    Unfollow(RegisterId),
    /// Follows a domain: its creations, nullifiers, commitments and time maps, and every
    /// register in it.
    FollowDomain(String),
    /// Stops following a domain.
    UnfollowDomain(String),
    /// Brings a register up to date from connected peers (`peers` first) and replies with
    /// its state.
    Synchronize {
        /// The register.
        register_id: RegisterId,
        /// Ask these first.
        peers: Vec<PeerId>,
    },
    /// A register's current state here.
    Get(RegisterId),
    /// A register's opaque data, fetching the chunks not held here (from `peers` first,
    /// then connected peers) and checking each against its id.
    ReadData {
        /// The register.
        register_id: RegisterId,
        /// Ask these first.
        peers: Vec<PeerId>,
    },
    /// Whether `state_hash` is the register's current, stored, checked state here.
    Verify {
        /// The register.
        register_id: RegisterId,
        /// The state.
        state_hash: StateHash,
    },
    /// Uses a nullifier of a register this node owns.
    Nullify {
        /// The domain.
        domain: String,
        /// The nullifier.
        nullifier: [u8; 32],
        /// The register it spends.
        register_id: RegisterId,
    },
    /// Merges heights into a domain's time map and announces it.
    UpdateTimeMap {
        /// The domain.
        domain: String,
        /// Domain → (height, Lamport time).
        map: TimeMap,
    },
    /// A domain's time map.
    TimeMap(String),
    /// Announces this node's commitment to a domain's register set (and time map).
    PublishCommitment(String),
    /// This node's commitment to a domain's register set: root and size.
    Commitment(String),
    /// A membership proof for a register against a commitment: this node's, or a peer's.
    Prove {
        /// The domain.
        domain: String,
        /// The register.
        register_id: RegisterId,
        /// Ask this peer (its commitment) instead of proving here.
        peer: Option<PeerId>,
    },
    /// Reconciles a domain's registers and nullifiers with a peer.
    Reconcile {
        /// The peer.
        peer: PeerId,
        /// The domain.
        domain: String,
    },
    /// The verdict on a proof asked for with [`Event::ProofNeeded`].
    ProofChecked {
        /// The proof.
        proof_id: ContentId,
        /// `Ok` when proof sharing verified it and it binds the update.
        result: Result<(), String>,
    },
    /// Fork evidence of a register.
    Forks(RegisterId),
    /// Double-use evidence of a domain.
    DoubleUses(String),
    /// Counters.
    Stats,
}

/// Replies to calls.
#[derive(Debug)]
pub enum Reply {
    /// The new state's hash.
    Updated(Result<StateHash, SyncError>),
    /// A register's state.
    Register(Result<Register, SyncError>),
    /// Maybe a register.
    Found(Option<Register>),
    /// A register's data.
    Data(Result<Vec<u8>, SyncError>),
    /// Yes or no.
    Verified(bool),
    /// Done.
    Done(Result<(), SyncError>),
    /// A time map.
    TimeMap(TimeMap),
    /// A commitment: root and size.
    Commitment(ContentId, u64),
    /// A membership proof, the root and size it is against.
    Proof(Result<(ContentId, u64, MembershipProof), SyncError>),
    /// What a reconciliation did.
    Reconciled(Result<ReconcileReport, SyncError>),
    /// Fork evidence.
    Forks(Vec<Fork>),
    /// Double-use evidence.
    DoubleUses(Vec<DoubleUse>),
    /// Counters.
    Stats(Stats),
}

/// What a reconciliation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Coded symbols received (both sets).
    pub symbols: u64,
    /// Request round trips (symbols and resolution).
    pub round_trips: u32,
    /// Bytes of the reconciliation requests and responses (symbols only).
    pub symbol_bytes: u64,
    /// Bytes of the resolution requests and responses.
    pub resolve_bytes: u64,
    /// Items only the peer had (registers at states we lack, nullifier uses).
    pub remote_only: u64,
    /// Items only we had.
    pub local_only: u64,
    /// Registers queued for sync as a result.
    pub fetched: u64,
    /// Whether the peer's register set, rebuilt from ours and the difference, has the root
    /// the peer committed to.
    pub verified: bool,
}

/// How an update was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Made here.
    Local,
    /// A delta from gossip or a sync.
    Delta,
    /// A full state from a sync.
    Full,
}

/// What the API reports.
#[derive(Clone, Debug)]
pub enum Event {
    /// A register moved to a new head.
    Applied {
        /// The register.
        register_id: RegisterId,
        /// The new head.
        state_hash: StateHash,
        /// Its epoch.
        epoch: u64,
        /// How.
        via: Via,
    },
    /// An update from a peer was refused.
    Rejected {
        /// The register.
        register_id: RegisterId,
        /// Who sent it.
        peer: PeerId,
        /// Why.
        error: UpdateError,
    },
    /// A fork was resolved.
    Fork(Box<Fork>),
    /// A nullifier was accepted.
    Nullified(Box<NullifierUse>),
    /// A nullifier was used twice.
    DoubleUse(Box<DoubleUse>),
    /// A proof must be checked before an update applies: fetch it through proof sharing
    /// (from `peer`), check it verifies under `key` and binds `binding`, and answer with
    /// [`Command::ProofChecked`].
    ProofNeeded {
        /// The proof.
        proof_id: ContentId,
        /// The class's key.
        key: ContentId,
        /// What its first public input must be.
        binding: [u8; 32],
        /// Who has it.
        peer: PeerId,
    },
    /// A peer's commitment to a domain differs from ours.
    CommitmentMismatch {
        /// The domain.
        domain: String,
        /// The signer.
        peer: PeerId,
        /// Its root.
        root: ContentId,
    },
    /// A domain's time map changed.
    TimeMapChanged {
        /// The domain.
        domain: String,
        /// Its new commitment.
        commitment: ContentId,
    },
}

/// Counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Updates applied from deltas (gossip or sync).
    pub deltas_applied: u64,
    /// Registers brought up to date from a full state.
    pub full_fetches: u64,
    /// Updates made here.
    pub local_updates: u64,
    /// Updates refused.
    pub rejected: u64,
    /// Updates buffered for a missing previous state.
    pub buffered: u64,
    /// Buffered updates dropped (buffer full).
    pub buffer_dropped: u64,
    /// Forks resolved.
    pub forks: u64,
    /// Nullifiers accepted.
    pub nullifiers: u64,
    /// Nullifier uses refused as second uses.
    pub double_uses: u64,
    /// Sync requests sent.
    pub sync_requests: u64,
    /// Bytes of sync requests sent and responses received.
    pub sync_bytes: u64,
    /// Syncs dropped because the queue was full.
    pub queue_dropped: u64,
    /// Reconciliations completed.
    pub reconciliations: u64,
}

/// Timer kinds.
#[derive(Debug)]
pub enum Timer {
    /// Buffered updates of a register waited long enough.
    Reorder(RegisterId),
    /// State this node's commitment to a domain (after a reconciliation taught it more).
    Commitment(String),
}

/// How long after a reconciliation that taught it something a node states its commitment
/// again.
const COMMITMENT_DELAY_MS: u64 = 1_000;

/// A sync waiting to be sent or answered.
#[derive(Debug)]
struct Job {
    register: RegisterId,
    want: Option<StateHash>,
    peers: VecDeque<PeerId>,
    waiters: Vec<CallId>,
    critical: bool,
    last_error: Option<String>,
    /// The state whose body the last request said we hold (deltas apply to it).
    sent_have: Option<StateHash>,
    /// The last header of the pages received so far (the next page starts after it).
    known: Option<StateHash>,
}

/// A read of chunked data in progress.
#[derive(Debug)]
struct ChunkFetch {
    call: Option<CallId>,
    register: RegisterId,
    len: u64,
    chunks: Vec<ContentId>,
    peers: VecDeque<PeerId>,
    asked: Vec<ContentId>,
}

#[derive(Debug)]
enum Pending {
    Sync(Box<Job>, PeerId),
    Chunks(Box<ChunkFetch>, PeerId),
    Prove(CallId),
    Reconcile(Box<Session>),
    Resolve(Box<Session>),
}

#[derive(Debug)]
struct Session {
    peer: PeerId,
    domain: String,
    kind: SetKind,
    decoder: Decoder,
    local: HashMap<Item, ResolvedItem>,
    remote_root: Option<(ContentId, u64)>,
    report: ReconcileReport,
    call: Option<CallId>,
    unresolved: Vec<Item>,
    resolved: Vec<(RegisterId, StateHash)>,
    /// When it was a register session, the nullifier session to run after it.
    then_nullifiers: bool,
}

#[derive(Clone, Debug)]
enum ResolvedItem {
    Register(RegisterId, StateHash),
    Nullifier(NullifierUse),
}

/// An update that waits for its proof.
#[derive(Debug)]
struct Parked {
    commit: Commit,
    header: UpdateHeader,
    domain: String,
    via: Via,
    peer: PeerId,
    message: Option<ContentId>,
    waiters: Vec<CallId>,
    /// For an update made here: what to commit and whom to answer.
    local: Option<Box<LocalUpdate>>,
}

/// An update made here that waits for its own proof's check.
#[derive(Debug)]
struct LocalUpdate {
    call: Option<CallId>,
    delta: RegisterDelta,
    state: Register,
    effects: Effects,
}

/// A buffered update whose previous state is missing.
#[derive(Debug)]
struct Buffered {
    message: RegisterStateMessage,
    from: PeerId,
}

/// Registers followed outside domains that catch up from each peer that connects.
const MAX_CATCH_UP: usize = 1024;

/// Served encoders, per asker and set.
const MAX_SERVED_SESSIONS: usize = 64;

/// A set being served to one peer: its encoder, and the commitment it was built from.
#[derive(Debug)]
struct Served {
    encoder: Encoder,
    root: ContentId,
    size: u64,
}

/// The register sync state machine.
///
/// Register sync as a pure state machine ([`Protocol`]): no sockets, no tasks, no clock —
/// time comes in as an argument, storage through the synchronous [`RegisterStore`] it owns.
///
/// The flow: an owner applies an update here ([`Command::Update`]), which signs a header
/// linking the previous state hash to the new one and announces it on
/// `register/update/{register_id}`, with the delta inline when small. A follower holding
/// the previous state checks the owner's signature, applies the delta, checks that the
/// result hashes to the announced state and stores it (one atomic write). A follower that
/// is behind buffers the update briefly and asks a peer for the missing chain — signed
/// headers, then the deltas from what it holds, or the full state when that is smaller.
///
/// Rules (docs/PROTOCOLS.md §9):
/// - a header is valid when signed by the owner of the state it follows (a creation by its
///   genesis owner), its epoch is the previous one plus one and its block height does not
///   go back; a state is valid when it hashes to its header's state hash and agrees with it;
/// - forks (two valid updates of one state) resolve by the lower update id at the fork
///   point; the losing branch stays stored, recorded as [`Fork`] evidence;
/// - a nullifier is accepted once per domain; of two uses the lower use id is kept, and
///   both are kept as [`DoubleUse`] evidence;
/// - a class may need a proof for its updates: the update is applied only once proof
///   sharing has verified the proof under the class's key and it binds the new state
///   ([`binding`]).
pub struct State {
    config: Config,
    key: Keypair,
    local: PeerId,
    store: Box<dyn RegisterStore>,
    outputs: VecDeque<Output<Self>>,
    ids: Ids,
    now_ms: u64,
    peers: BTreeSet<PeerId>,
    /// Registers whose update topics we subscribe to (followed, in a followed domain, or
    /// our own).
    registers: BTreeSet<RegisterId>,
    /// Registers followed on their own ([`Command::Follow`]).
    followed: BTreeSet<RegisterId>,
    domains: BTreeSet<String>,
    buffered: BTreeMap<RegisterId, Vec<Buffered>>,
    buffered_count: usize,
    queue: VecDeque<Box<Job>>,
    queued: BTreeSet<RegisterId>,
    inflight: HashMap<OutboundId, Pending>,
    inflight_syncs: usize,
    parked: HashMap<ContentId, Parked>,
    pending_nullifiers: VecDeque<(NullifierUse, PeerId)>,
    served: HashMap<(PeerId, String, SetKind), Served>,
    commitment_scheduled: BTreeSet<String>,
    stats: Stats,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("local", &self.local)
            .field("registers", &self.registers.len())
            .field("domains", &self.domains)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The store seen as the [`Context`] of operations.
struct StoreContext<'a>(&'a dyn RegisterStore);

impl Context for StoreContext<'_> {
    fn register(&self, id: &RegisterId) -> Option<Register> {
        let head = self.0.head(id).ok()??;
        self.0.state(&head.state_hash).ok()?
    }

    fn split_credit(&self, child: &RegisterId) -> Option<(String, u64)> {
        self.0.credit(child).ok()?
    }

    fn merged(&self, source: &RegisterId) -> bool {
        self.0.merged(source).unwrap_or(true)
    }
}

fn store_err(e: StoreError) -> SyncError {
    SyncError::Store(e.0)
}

/// Ordering of competing updates at a fork point: the lower update id wins.
fn wins(a: &UpdateHeader, b: &UpdateHeader) -> bool {
    a.id() < b.id()
}

impl State {
    /// A state machine signing with `key` and keeping what it accepts in `store`.
    pub fn new(config: Config, key: Keypair, store: Box<dyn RegisterStore>) -> Self {
        Self {
            local: key.peer_id(),
            config,
            key,
            store,
            outputs: VecDeque::new(),
            ids: Ids::default(),
            now_ms: 0,
            peers: BTreeSet::new(),
            registers: BTreeSet::new(),
            followed: BTreeSet::new(),
            domains: BTreeSet::new(),
            buffered: BTreeMap::new(),
            buffered_count: 0,
            queue: VecDeque::new(),
            queued: BTreeSet::new(),
            inflight: HashMap::new(),
            inflight_syncs: 0,
            parked: HashMap::new(),
            pending_nullifiers: VecDeque::new(),
            served: HashMap::new(),
            commitment_scheduled: BTreeSet::new(),
            stats: Stats::default(),
        }
    }

    /// The store.
    pub fn store(&self) -> &dyn RegisterStore {
        self.store.as_ref()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// A register's current state here.
    pub fn register(&self, id: &RegisterId) -> Option<Register> {
        StoreContext(self.store.as_ref()).register(id)
    }

    fn reply(&mut self, call: Option<CallId>, reply: Reply) {
        if let Some(call) = call {
            self.outputs.push_back(Output::Reply { call, reply });
        }
    }

    fn event(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    fn penalize(&mut self, peer: PeerId, severity: Severity, reason: String) {
        if peer != self.local {
            self.outputs.push_back(Output::Penalize {
                peer,
                severity,
                reason,
            });
        }
    }

    fn validate(&mut self, message: Option<ContentId>, acceptance: Acceptance) {
        if let Some(message) = message {
            self.outputs.push_back(Output::Validate {
                message,
                acceptance,
            });
        }
    }

    fn class(&self, class: &str) -> ClassRules {
        self.config.classes.get(class).cloned().unwrap_or_default()
    }

    fn publish(&mut self, topic: Topic, payload_type: &str, payload: Vec<u8>) {
        self.outputs.push_back(Output::Publish {
            topic,
            payload_type: payload_type.to_owned(),
            payload,
        });
    }

    fn subscribe_register(&mut self, id: RegisterId) {
        if self.registers.insert(id) {
            self.outputs
                .push_back(Output::SubscribeValidated(update_topic(&id)));
        }
    }

    fn on_command(&mut self, command: Command, call: Option<CallId>) {
        match command {
            Command::Create {
                genesis,
                contents,
                last_updated,
                proof_id,
            } => {
                let r = self.create(genesis, contents, last_updated, proof_id, call);
                self.reply_update(call, r);
            }
            Command::Update {
                register_id,
                operations,
                last_updated,
                proof_id,
            } => {
                let r = self.update(register_id, operations, last_updated, proof_id, None, call);
                self.reply_update(call, r);
            }
            Command::UpdateFenced {
                register_id,
                operations,
                last_updated,
                fence,
            } => {
                let r = self.update(
                    register_id,
                    operations,
                    last_updated,
                    None,
                    Some(fence),
                    call,
                );
                self.reply_update(call, r);
            }
            Command::Preview {
                register_id,
                operations,
                last_updated,
            } => {
                let r = self.preview(register_id, operations, last_updated);
                self.reply(call, Reply::Updated(r));
            }
            Command::Announce {
                register_id,
                state_hash,
            } => {
                let r = self.announce(register_id, state_hash);
                self.reply(call, Reply::Done(r));
            }
            Command::Follow(id) => {
                self.followed.insert(id);
                self.subscribe_register(id);
                self.enqueue(id, None, Vec::new(), None);
                self.reply(call, Reply::Done(Ok(())));
            }
            Command::Unfollow(id) => {
                self.followed.remove(&id);
                if self.registers.remove(&id) {
                    self.outputs
                        .push_back(Output::Unsubscribe(update_topic(&id)));
                }
                self.reply(call, Reply::Done(Ok(())));
            }
            Command::FollowDomain(domain) => {
                if !messages::valid_domain(&domain) {
                    return self.reply(
                        call,
                        Reply::Done(Err(UpdateError::Decode(DecodeError::Field("domain")).into())),
                    );
                }
                if self.domains.insert(domain.clone()) {
                    for t in Self::domain_topics(&domain) {
                        self.outputs.push_back(Output::SubscribeValidated(t));
                    }
                    if let Ok(heads) = self.store.domain_heads(&domain) {
                        for (id, _) in heads {
                            self.subscribe_register(id);
                        }
                    }
                    if self.config.reconcile_on_connect {
                        let peers: Vec<PeerId> = self.peers.iter().copied().collect();
                        for p in peers {
                            self.start_reconcile(
                                p,
                                domain.clone(),
                                SetKind::Registers,
                                None,
                                ReconcileReport::default(),
                            );
                        }
                    }
                }
                self.reply(call, Reply::Done(Ok(())));
            }
            Command::UnfollowDomain(domain) => {
                if self.domains.remove(&domain) {
                    for t in Self::domain_topics(&domain) {
                        self.outputs.push_back(Output::Unsubscribe(t));
                    }
                }
                self.reply(call, Reply::Done(Ok(())));
            }
            Command::Synchronize { register_id, peers } => {
                self.enqueue(register_id, None, peers, call);
            }
            Command::Get(id) => {
                let r = self.register(&id);
                self.reply(call, Reply::Found(r));
            }
            Command::ReadData { register_id, peers } => self.read_data(register_id, peers, call),
            Command::Verify {
                register_id,
                state_hash,
            } => {
                let ok = self
                    .store
                    .head(&register_id)
                    .ok()
                    .flatten()
                    .is_some_and(|h| h.state_hash == state_hash)
                    && self
                        .store
                        .state(&state_hash)
                        .ok()
                        .flatten()
                        .is_some_and(|s| s.id == register_id && s.state_hash() == state_hash);
                self.reply(call, Reply::Verified(ok));
            }
            Command::Nullify {
                domain,
                nullifier,
                register_id,
            } => {
                let r = self.nullify(domain, nullifier, register_id);
                self.reply(call, Reply::Done(r));
            }
            Command::UpdateTimeMap { domain, map } => {
                let r = self
                    .merge_time_map(&domain, &map)
                    .map_err(store_err)
                    .map(|_| ());
                if r.is_ok()
                    && let (Ok(current), Some(topic)) = (
                        self.store.time_map(&domain),
                        domain_topic(TIMEMAP_UPDATE_TOPIC, &domain),
                    )
                {
                    self.publish(
                        topic,
                        messages::TIMEMAP_TYPE,
                        messages::encode_time_map(&domain, &current),
                    );
                    if let Some(t) =
                        domain_topic(TIMEMAP_COMMITMENT_TOPIC, &current.commitment().to_string())
                    {
                        let c = Commitment::new(
                            &domain,
                            current.commitment(),
                            current.entries.len() as u64,
                            None,
                            &self.key,
                        );
                        self.publish(t, messages::COMMITMENT_TYPE, c.encode());
                    }
                }
                self.reply(call, Reply::Done(r));
            }
            Command::TimeMap(domain) => {
                let m = self.store.time_map(&domain).unwrap_or_default();
                self.reply(call, Reply::TimeMap(m));
            }
            Command::PublishCommitment(domain) => {
                let r = self.publish_commitment(&domain);
                self.reply(call, Reply::Done(r));
            }
            Command::Commitment(domain) => {
                let set = SetCommitment::new(self.store.domain_heads(&domain).unwrap_or_default());
                self.reply(call, Reply::Commitment(set.root(), set.len()));
            }
            Command::Prove {
                domain,
                register_id,
                peer,
            } => match peer {
                None => {
                    let r = self.prove_here(&domain, &register_id);
                    self.reply(call, Reply::Proof(r));
                }
                Some(peer) => {
                    let Some(call) = call else { return };
                    self.send(
                        peer,
                        &Request::Prove {
                            domain,
                            register_id,
                        },
                        Pending::Prove(call),
                    );
                }
            },
            Command::Reconcile { peer, domain } => {
                self.start_reconcile(
                    peer,
                    domain,
                    SetKind::Registers,
                    call,
                    ReconcileReport::default(),
                );
            }
            Command::ProofChecked { proof_id, result } => self.proof_checked(proof_id, result),
            Command::Forks(id) => {
                let f = self.store.forks(&id).unwrap_or_default();
                self.reply(call, Reply::Forks(f));
            }
            Command::DoubleUses(domain) => {
                let d = self.store.double_uses(&domain).unwrap_or_default();
                self.reply(call, Reply::DoubleUses(d));
            }
            Command::Stats => {
                let s = self.stats.clone();
                self.reply(call, Reply::Stats(s));
            }
        }
    }

    /// Answers a local update now, unless it waits for its proof (answered then).
    fn reply_update(&mut self, call: Option<CallId>, result: Result<Option<StateHash>, SyncError>) {
        match result {
            Ok(Some(hash)) => self.reply(call, Reply::Updated(Ok(hash))),
            Ok(None) => {}
            Err(e) => self.reply(call, Reply::Updated(Err(e))),
        }
    }

    fn on_response(&mut self, id: OutboundId, peer: PeerId, body: Result<Vec<u8>, String>) {
        let Some(pending) = self.inflight.remove(&id) else {
            return;
        };
        match pending {
            Pending::Sync(job, to) => {
                debug_assert_eq!(to, peer);
                self.on_sync_response(job, peer, body);
            }
            Pending::Prove(call) => {
                let r = body.and_then(|b| {
                    Response::decode(&b, self.max_response_bytes(), &self.config.limits)
                        .map_err(|e| e.to_string())
                });
                let reply = match r {
                    Ok(Response::Prove { count, root, proof }) => Ok((root, count, proof)),
                    Ok(Response::Error(e)) => Err(SyncError::Remote(e)),
                    Ok(_) => Err(SyncError::Remote("unexpected response".into())),
                    Err(e) => Err(SyncError::Remote(e)),
                };
                self.reply(Some(call), Reply::Proof(reply));
            }
            Pending::Chunks(fetch, from) => self.on_chunks(fetch, from, body),
            Pending::Reconcile(session) => self.on_symbols(session, body),
            Pending::Resolve(session) => self.on_resolved(session, body),
        }
    }

    fn on_message(&mut self, message: Message) {
        let topic = &message.topic;
        if topic.is(UPDATE_TOPIC) || topic.is(CREATION_TOPIC) {
            self.on_state_message(message);
        } else if topic.is(NULLIFIER_TOPIC) {
            self.on_nullifier_message(message);
        } else if topic.is(TIMEMAP_UPDATE_TOPIC) {
            self.on_time_map_message(message);
        } else if topic.is(COMMITMENT_TOPIC) || topic.is(TIMEMAP_VERIFICATION_TOPIC) {
            self.on_commitment_message(message);
        } else {
            self.validate(Some(message.id), Acceptance::Ignore);
        }
    }
}

/// Checks that `header` follows `previous`: one epoch later, not below its height.
fn check_link_to(previous: &UpdateHeader, header: &UpdateHeader) -> Result<(), UpdateError> {
    if previous.register_id != header.register_id {
        return Err(UpdateError::HeaderMismatch("register id"));
    }
    if header.epoch != previous.epoch + 1 {
        return Err(OpError::Epoch {
            expected: previous.epoch + 1,
            got: header.epoch,
        }
        .into());
    }
    if header.last_updated < previous.last_updated {
        return Err(OpError::HeightWentBack {
            previous: previous.last_updated,
            got: header.last_updated,
        }
        .into());
    }
    Ok(())
}

/// Checks that a state is the one its header names.
fn check_state(state: &Register, header: &UpdateHeader) -> Result<(), UpdateError> {
    let got = state.state_hash();
    if got != header.state_hash {
        return Err(UpdateError::WrongStateHash {
            announced: header.state_hash,
            got,
        });
    }
    if state.id != header.register_id {
        return Err(UpdateError::HeaderMismatch("register id"));
    }
    if state.owner != header.owner {
        return Err(UpdateError::HeaderMismatch("owner"));
    }
    if state.epoch != header.epoch || state.last_updated != header.last_updated {
        return Err(UpdateError::HeaderMismatch("epoch or height"));
    }
    Ok(())
}

/// A register's reconciliation item: the first bytes of its leaf.
pub(crate) fn register_item(id: &RegisterId, state: &StateHash) -> Item {
    leaf(id, state)[..ITEM_BYTES]
        .try_into()
        .expect("item bytes")
}

fn nullifier_item(u: &NullifierUse) -> Item {
    u.id().as_bytes()[..ITEM_BYTES]
        .try_into()
        .expect("item bytes")
}

#[allow(clippy::large_enum_variant)] // short-lived, never stored
enum Choice {
    Extends,
    Stale,
    Fork {
        winner: UpdateHeader,
        loser: UpdateHeader,
        candidate_wins: bool,
    },
}

enum Absorbed {
    Done,
    More,
    NotHere,
}

const UNKNOWN_REGISTER: &str = "unknown register";

impl Protocol for State {
    type Command = Command;
    type Reply = Reply;
    type Event = Event;
    type Timer = Timer;
    type View = ();

    fn protocols(&self) -> Vec<RequestProtocol> {
        vec![crate::protocol(&self.config.limits)]
    }

    fn handle(&mut self, now_ms: u64, input: Input<Self>) {
        self.now_ms = now_ms;
        match input {
            Input::Start => {}
            Input::Message(message) => self.on_message(message),
            Input::Request { id, peer, body, .. } => self.on_request(id, peer, &body),
            Input::Response { id, peer, body } => self.on_response(id, peer, Ok(body)),
            Input::RequestFailed { id, peer, error } => {
                self.on_response(id, peer, Err(error.to_string()));
            }
            Input::Timer(Timer::Reorder(id)) => self.reorder_timeout(id),
            Input::Timer(Timer::Commitment(domain)) => {
                self.commitment_scheduled.remove(&domain);
                if self.domains.contains(&domain)
                    && let Err(e) = self.publish_commitment(&domain)
                {
                    tracing::warn!(target: "causality_regsync", domain = %domain, error = %e, "stating a commitment failed");
                }
            }
            Input::Command { command, call } => self.on_command(command, call),
            Input::PeerConnected(peer) => {
                self.peers.insert(peer);
                if self.config.reconcile_on_connect {
                    let domains: Vec<String> = self.domains.iter().cloned().collect();
                    for d in domains {
                        self.start_reconcile(
                            peer,
                            d,
                            SetKind::Registers,
                            None,
                            ReconcileReport::default(),
                        );
                    }
                }
                // Registers followed on their own (outside followed domains) catch up.
                let alone: Vec<RegisterId> = self
                    .followed
                    .iter()
                    .filter(|id| {
                        self.register(id)
                            .is_none_or(|r| !self.domains.contains(r.domain()))
                    })
                    .take(MAX_CATCH_UP)
                    .copied()
                    .collect();
                for id in alone {
                    self.enqueue(id, None, vec![peer], None);
                }
                self.pump();
            }
            Input::PeerDisconnected(peer) => {
                self.peers.remove(&peer);
                self.served.retain(|(p, ..), _| *p != peer);
            }
            Input::View(()) | Input::DialFailed { .. } => {}
        }
    }

    fn poll_output(&mut self) -> Option<Output<Self>> {
        self.outputs.pop_front()
    }
}
