//! Register sync as a pure state machine ([`Protocol`]): no sockets, no tasks, no clock —
//! time comes in as an argument, storage through the synchronous [`RegisterStore`] it owns.
//!
//! The flow: an owner applies an update here ([`Command::Update`]), which signs a header
//! linking the previous state hash to the new one and announces it on
//! `register/update/{register_id}`, with the delta inline when small. A follower holding
//! the previous state checks the owner's signature, applies the delta, checks that the
//! result hashes to the announced state and stores it (one atomic write). A follower that
//! is behind buffers the update briefly and asks a peer for the missing chain — signed
//! headers, then the deltas from what it holds, or the full state when that is smaller.
//!
//! Rules (docs/PROTOCOLS.md §9):
//! - a header is valid when signed by the owner of the state it follows (a creation by its
//!   genesis owner), its epoch is the previous one plus one and its block height does not
//!   go back; a state is valid when it hashes to its header's state hash and agrees with it;
//! - forks (two valid updates of one state) resolve by the lower update id at the fork
//!   point; the losing branch stays stored, recorded as [`Fork`] evidence;
//! - a nullifier is accepted once per domain; of two uses the lower use id is kept, and
//!   both are kept as [`DoubleUse`] evidence;
//! - a class may need a proof for its updates: the update is applied only once proof
//!   sharing has verified the proof under the class's key and it binds the new state
//!   ([`binding`]).

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
    At, Context, Effects, Genesis, Limits, NullifierUse, Operation, Register, RegisterContents,
    RegisterDelta, RegisterId, StateHash, TimeMap, UpdateHeader, apply,
};
use crate::riblt::{Decoder, Encoder, ITEM_BYTES, Item, Symbol};
use crate::store::{Commit, DoubleUse, Fork, Head, RegisterStore, StoreError};

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

/// The register sync state machine. See the [module docs](self).
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

    // ---- local updates ----

    fn create(
        &mut self,
        genesis: Genesis,
        contents: RegisterContents,
        height: u64,
        proof_id: Option<ContentId>,
        call: Option<CallId>,
    ) -> Result<Option<StateHash>, SyncError> {
        if genesis.owner != self.local {
            return Err(UpdateError::Unauthorized.into());
        }
        if !messages::valid_domain(&genesis.domain) {
            return Err(UpdateError::Decode(DecodeError::Field("domain")).into());
        }
        let contents = self.chunk_contents(contents, true)?;
        let delta = RegisterDelta {
            operations: vec![Operation::Create { genesis, contents }],
            previous_state_hash: None,
        };
        self.local_update(None, delta, height, proof_id, call)
    }

    fn update(
        &mut self,
        id: RegisterId,
        operations: Vec<Operation>,
        height: u64,
        proof_id: Option<ContentId>,
        call: Option<CallId>,
    ) -> Result<Option<StateHash>, SyncError> {
        let head = self
            .store
            .head(&id)
            .map_err(store_err)?
            .ok_or(SyncError::NotFound(id))?;
        let previous = self
            .store
            .state(&head.state_hash)
            .map_err(store_err)?
            .ok_or(SyncError::NotFound(id))?;
        if previous.owner != self.local {
            return Err(UpdateError::Unauthorized.into());
        }
        let operations = self.chunk_operations(operations, true)?;
        let delta = RegisterDelta {
            operations,
            previous_state_hash: Some(head.state_hash),
        };
        self.local_update(Some(previous), delta, height, proof_id, call)
    }

    fn local_update(
        &mut self,
        previous: Option<Register>,
        delta: RegisterDelta,
        height: u64,
        proof_id: Option<ContentId>,
        call: Option<CallId>,
    ) -> Result<Option<StateHash>, SyncError> {
        // What we would refuse from a peer we refuse here: the delta must survive its own
        // decoding (sizes, names) and apply.
        let encoded = delta.encode();
        RegisterDelta::decode(&encoded, &self.config.limits).map_err(UpdateError::from)?;
        let epoch = previous.as_ref().map_or(0, |p| p.epoch + 1);
        let at = At {
            epoch,
            last_updated: height,
        };
        let (next, effects) = apply(
            previous.as_ref(),
            &delta,
            at,
            &StoreContext(self.store.as_ref()),
        )
        .map_err(UpdateError::from)?;
        if next.encode().len() > self.config.limits.max_state_bytes {
            return Err(UpdateError::Decode(DecodeError::TooLarge {
                what: "register",
                size: next.encode().len(),
                limit: self.config.limits.max_state_bytes,
            })
            .into());
        }
        let rules = self.class(next.class());
        if rules.proof_key.is_some() && proof_id.is_none() {
            return Err(UpdateError::MissingProof(next.class().to_owned()).into());
        }
        let header = UpdateHeader {
            register_id: next.id,
            epoch,
            previous_state_hash: delta.previous_state_hash,
            state_hash: next.state_hash(),
            delta_id: delta.id(),
            owner: next.owner,
            last_updated: height,
            proof_id,
            signature: [0; 64],
        }
        .sign(&self.key);
        if let (Some(key), Some(proof_id)) = (rules.proof_key, proof_id) {
            // Our own proof is checked like anyone's before the update applies.
            self.event(Event::ProofNeeded {
                proof_id,
                key,
                binding: binding(&next.id, &header.state_hash),
                peer: self.local,
            });
            let domain = next.domain().to_owned();
            self.parked.insert(
                proof_id,
                Parked {
                    commit: Commit::default(),
                    header,
                    domain,
                    via: Via::Local,
                    peer: self.local,
                    message: None,
                    waiters: Vec::new(),
                    local: Some(Box::new(LocalUpdate {
                        call,
                        delta,
                        state: next,
                        effects,
                    })),
                },
            );
            return Ok(None);
        }
        self.commit_local(header, delta, next, effects).map(Some)
    }

    fn commit_local(
        &mut self,
        header: UpdateHeader,
        delta: RegisterDelta,
        next: Register,
        effects: Effects,
    ) -> Result<StateHash, SyncError> {
        let hash = header.state_hash;
        let commit = self.commit_for(&header, Some(delta.clone()), &next, effects);
        self.store.commit(commit).map_err(store_err)?;
        self.stats.local_updates += 1;
        self.subscribe_register(next.id);
        self.event(Event::Applied {
            register_id: next.id,
            state_hash: hash,
            epoch: header.epoch,
            via: Via::Local,
        });
        self.announce_header(&header, Some(&delta), Some(&next));
        self.release_buffered(next.id);
        Ok(hash)
    }

    /// Replaces data larger than a chunk by its chunks' ids, keeping the chunks when
    /// `keep`.
    fn chunk_operations(
        &mut self,
        ops: Vec<Operation>,
        keep: bool,
    ) -> Result<Vec<Operation>, SyncError> {
        ops.into_iter()
            .map(|op| self.chunk_operation(op, keep))
            .collect()
    }

    fn chunk_operation(&mut self, op: Operation, keep: bool) -> Result<Operation, SyncError> {
        Ok(match op {
            Operation::Create { genesis, contents } => Operation::Create {
                genesis,
                contents: self.chunk_contents(contents, keep)?,
            },
            Operation::Update(contents) => Operation::Update(self.chunk_contents(contents, keep)?),
            Operation::Composite(ops) => Operation::Composite(self.chunk_operations(ops, keep)?),
            other => other,
        })
    }

    fn chunk_contents(
        &mut self,
        contents: RegisterContents,
        keep: bool,
    ) -> Result<RegisterContents, SyncError> {
        let size = self.config.limits.chunk_bytes;
        match contents {
            RegisterContents::Data(bytes) if bytes.len() > size => {
                if bytes.len() as u64 > self.config.limits.max_data_bytes {
                    return Err(UpdateError::Decode(DecodeError::TooLarge {
                        what: "data",
                        size: bytes.len(),
                        limit: usize::try_from(self.config.limits.max_data_bytes)
                            .unwrap_or(usize::MAX),
                    })
                    .into());
                }
                let mut chunks = Vec::with_capacity(bytes.len().div_ceil(size));
                for chunk in bytes.chunks(size) {
                    chunks.push(if keep {
                        self.store.put_chunk(chunk).map_err(store_err)?
                    } else {
                        ContentId::of(chunk)
                    });
                }
                Ok(RegisterContents::Chunked {
                    len: bytes.len() as u64,
                    chunks,
                })
            }
            other => Ok(other),
        }
    }

    fn read_data(&mut self, id: RegisterId, peers: Vec<PeerId>, call: Option<CallId>) {
        let Some(register) = self.register(&id) else {
            return self.reply(call, Reply::Data(Err(SyncError::NotFound(id))));
        };
        match register.contents {
            RegisterContents::Data(bytes) => self.reply(call, Reply::Data(Ok(bytes))),
            RegisterContents::Chunked { len, chunks } => {
                let mut candidates: VecDeque<PeerId> = VecDeque::new();
                for p in peers.into_iter().chain(self.peers.iter().copied()) {
                    if !candidates.contains(&p) {
                        candidates.push_back(p);
                    }
                }
                let fetch = Box::new(ChunkFetch {
                    call,
                    register: id,
                    len,
                    chunks,
                    peers: candidates,
                    asked: Vec::new(),
                });
                self.next_chunks(fetch);
            }
            _ => self.reply(
                call,
                Reply::Data(Err(SyncError::Invalid {
                    register: id,
                    reason: "the register holds no data".into(),
                })),
            ),
        }
    }

    /// Asks for the next missing chunks, or assembles the data when none is missing.
    fn next_chunks(&mut self, mut fetch: Box<ChunkFetch>) {
        let mut missing = Vec::new();
        for c in &fetch.chunks {
            match self.store.chunk(c) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    if !missing.contains(c) {
                        missing.push(*c);
                    }
                }
                Err(e) => return self.reply(fetch.call, Reply::Data(Err(store_err(e)))),
            }
            if missing.len() == messages::MAX_CHUNKS {
                break;
            }
        }
        if missing.is_empty() {
            let mut data = Vec::with_capacity(usize::try_from(fetch.len).unwrap_or(0));
            for c in &fetch.chunks {
                match self.store.chunk(c) {
                    Ok(Some(bytes)) => data.extend_from_slice(&bytes),
                    Ok(None) => {
                        return self.reply(
                            fetch.call,
                            Reply::Data(Err(SyncError::Store(format!("chunk {c} vanished")))),
                        );
                    }
                    Err(e) => return self.reply(fetch.call, Reply::Data(Err(store_err(e)))),
                }
            }
            if data.len() as u64 != fetch.len {
                let e = SyncError::Invalid {
                    register: fetch.register,
                    reason: "the chunks do not add up to the data's length".into(),
                };
                return self.reply(fetch.call, Reply::Data(Err(e)));
            }
            return self.reply(fetch.call, Reply::Data(Ok(data)));
        }
        let Some(peer) = fetch.peers.front().copied() else {
            let e = SyncError::Invalid {
                register: fetch.register,
                reason: "no peer provided the missing chunks".into(),
            };
            return self.reply(fetch.call, Reply::Data(Err(e)));
        };
        fetch.asked = missing.clone();
        self.send(
            peer,
            &Request::Chunks(missing),
            Pending::Chunks(fetch, peer),
        );
    }

    fn on_chunks(
        &mut self,
        mut fetch: Box<ChunkFetch>,
        from: PeerId,
        body: Result<Vec<u8>, String>,
    ) {
        let response = body.and_then(|b| {
            Response::decode(&b, self.max_response_bytes(), &self.config.limits)
                .map_err(|e| e.to_string())
        });
        let mut progress = false;
        match response {
            Ok(Response::Chunks(chunks)) => {
                for chunk in chunks {
                    let id = ContentId::of(&chunk);
                    if !fetch.asked.contains(&id) || chunk.len() > self.config.limits.chunk_bytes {
                        self.penalize(
                            from,
                            Severity::Severe,
                            "a chunk that was not asked for".into(),
                        );
                        progress = false;
                        break;
                    }
                    if let Err(e) = self.store.put_chunk(&chunk) {
                        return self.reply(fetch.call, Reply::Data(Err(store_err(e))));
                    }
                    progress = true;
                }
            }
            Ok(_) | Err(_) => {}
        }
        if !progress {
            // This peer has none of them (or lied): the next one.
            fetch.peers.pop_front();
        }
        self.next_chunks(fetch);
    }

    /// The state hash an update of a register here would produce (to make its proof).
    fn preview(
        &mut self,
        id: RegisterId,
        operations: Vec<Operation>,
        height: u64,
    ) -> Result<StateHash, SyncError> {
        let previous = self.register(&id).ok_or(SyncError::NotFound(id))?;
        let operations = self.chunk_operations(operations, false)?;
        let delta = RegisterDelta {
            operations,
            previous_state_hash: Some(previous.state_hash()),
        };
        let at = At {
            epoch: previous.epoch + 1,
            last_updated: height,
        };
        let (next, _) = apply(
            Some(&previous),
            &delta,
            at,
            &StoreContext(self.store.as_ref()),
        )
        .map_err(UpdateError::from)?;
        Ok(next.state_hash())
    }

    fn commit_for(
        &self,
        header: &UpdateHeader,
        delta: Option<RegisterDelta>,
        state: &Register,
        effects: Effects,
    ) -> Commit {
        Commit {
            headers: vec![header.clone()],
            deltas: delta.map(|d| (header.state_hash, d)).into_iter().collect(),
            states: vec![state.clone()],
            heads: vec![(
                state.id,
                Head {
                    state_hash: header.state_hash,
                    epoch: header.epoch,
                },
                state.domain().to_owned(),
            )],
            credits: effects.credits,
            used_credits: effects.used_credit.into_iter().collect(),
            merged: effects.merged,
            forks: Vec::new(),
        }
    }

    fn announce_header(
        &mut self,
        header: &UpdateHeader,
        delta: Option<&RegisterDelta>,
        state: Option<&Register>,
    ) {
        let creation = header.previous_state_hash.is_none();
        let delta = delta.filter(|d| !creation && d.encode().len() <= self.config.inline_max_bytes);
        let state = state.filter(|s| creation && s.encode().len() <= self.config.inline_max_bytes);
        let message = RegisterStateMessage {
            header: header.clone(),
            delta: delta.cloned(),
            full_state: state.cloned(),
        };
        let payload = message.encode();
        if creation
            && let Some(s) = state
            && let Some(topic) = domain_topic(CREATION_TOPIC, s.domain())
        {
            self.publish(topic, messages::STATE_MESSAGE_TYPE, payload.clone());
        }
        self.publish(
            update_topic(&header.register_id),
            messages::STATE_MESSAGE_TYPE,
            payload,
        );
    }

    fn announce(&mut self, id: RegisterId, hash: StateHash) -> Result<(), SyncError> {
        let header = self
            .store
            .header(&hash)
            .map_err(store_err)?
            .ok_or(SyncError::NotFound(id))?;
        if header.register_id != id {
            return Err(SyncError::NotFound(id));
        }
        let delta = self.store.delta(&hash).map_err(store_err)?;
        let state = self.store.state(&hash).map_err(store_err)?;
        self.announce_header(&header, delta.as_ref(), state.as_ref());
        Ok(())
    }

    // ---- updates from peers ----

    fn max_message_bytes(&self) -> usize {
        2 * self.config.inline_max_bytes + 2048
    }

    fn on_state_message(&mut self, message: Message) {
        let parsed = RegisterStateMessage::decode(
            &message.payload,
            self.max_message_bytes(),
            &self.config.limits,
        );
        let m = match parsed {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(target: "causality_regsync", peer = %message.via.short(), error = %e, "malformed register update");
                return self.validate(Some(message.id), Acceptance::Reject(e.to_string()));
            }
        };
        let topic_ok = if message.topic.is(UPDATE_TOPIC) {
            message.topic.id() == m.register_id().to_string()
        } else {
            m.header.previous_state_hash.is_none()
                && m.full_state
                    .as_ref()
                    .is_some_and(|s| s.domain() == message.topic.id())
        };
        if !topic_ok {
            return self.validate(
                Some(message.id),
                Acceptance::Reject("update on the wrong topic".into()),
            );
        }
        if message.topic.is(CREATION_TOPIC) {
            if !self.domains.contains(message.topic.id()) {
                return self.validate(Some(message.id), Acceptance::Ignore);
            }
        } else if !self.registers.contains(&m.register_id()) {
            return self.validate(Some(message.id), Acceptance::Ignore);
        }
        self.offer(m, message.sender, message.via, Some(message.id));
    }

    /// The owner of the state `previous` (a stored header's owner), or for a creation the
    /// header's own owner.
    fn signer_of(&self, header: &UpdateHeader) -> Result<Option<PeerId>, StoreError> {
        match header.previous_state_hash {
            None => Ok(Some(header.owner)),
            Some(p) => Ok(self.store.header(&p)?.map(|h| h.owner)),
        }
    }

    fn reject(
        &mut self,
        register: RegisterId,
        peer: PeerId,
        error: UpdateError,
        message: Option<ContentId>,
    ) {
        tracing::info!(target: "causality_regsync", register = %register.short(), peer = %peer.short(), error = %error, "update refused");
        self.stats.rejected += 1;
        self.penalize(peer, Severity::Severe, format!("register update: {error}"));
        self.validate(message, Acceptance::Ignore);
        self.event(Event::Rejected {
            register_id: register,
            peer,
            error,
        });
    }

    /// Handles an update from gossip (or the buffer): checks, applies, or buffers it.
    fn offer(
        &mut self,
        m: RegisterStateMessage,
        originator: PeerId,
        via: PeerId,
        message: Option<ContentId>,
    ) {
        let id = m.register_id();
        let header = m.header.clone();
        match self.store.header(&header.state_hash) {
            Ok(Some(_)) => return self.validate(message, Acceptance::Accept),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(target: "causality_regsync", error = %e, "store read failed");
                return self.validate(message, Acceptance::Ignore);
            }
        }
        let signer = match self.signer_of(&header) {
            Ok(Some(s)) => s,
            Ok(None) => {
                self.buffer(m, via);
                return self.validate(message, Acceptance::Ignore);
            }
            Err(e) => {
                tracing::warn!(target: "causality_regsync", error = %e, "store read failed");
                return self.validate(message, Acceptance::Ignore);
            }
        };
        if !header.verify(&signer) {
            return self.reject(id, originator, UpdateError::Unauthorized, message);
        }
        if let Err(e) = self.check_link(&header) {
            return self.reject(id, originator, e, message);
        }
        // The state, from the inline delta on the previous body or the inline state.
        let previous = match header.previous_state_hash {
            Some(p) => self.store.state(&p).unwrap_or_default(),
            None => None,
        };
        let built = match (&m.delta, &m.full_state, header.previous_state_hash) {
            (Some(delta), _, Some(_)) if previous.is_some() => self
                .build_from_delta(previous.as_ref(), delta, &header)
                .map(|(s, e)| (s, e, Some(delta.clone()), Via::Delta)),
            (_, Some(state), None) => {
                let delta = RegisterDelta {
                    operations: vec![Operation::Create {
                        genesis: state.genesis.clone(),
                        contents: state.contents.clone(),
                    }],
                    previous_state_hash: None,
                };
                self.build_from_delta(None, &delta, &header)
                    .map(|(s, e)| (s, e, Some(delta), Via::Delta))
            }
            _ => {
                // Valid header, body to be pulled: forward it, fetch it.
                self.validate(message, Acceptance::Accept);
                self.enqueue(id, Some(header.state_hash), vec![via, originator], None);
                return;
            }
        };
        match built {
            Ok((state, effects, delta, how)) => {
                self.validate_later_or_now(
                    header,
                    delta,
                    state,
                    effects,
                    how,
                    via,
                    message,
                    Vec::new(),
                );
            }
            Err(UpdateError::Op(OpError::MissingDependency(dep))) => {
                // The operation needs another register first: fetch it, retry later.
                self.validate(message, Acceptance::Accept);
                self.enqueue(dep, None, vec![via, originator], None);
                self.buffer(m, via);
            }
            Err(e) => self.reject(id, originator, e, message),
        }
    }

    fn check_link(&self, header: &UpdateHeader) -> Result<(), UpdateError> {
        let Some(p) = header.previous_state_hash else {
            return if header.epoch == 0 {
                Ok(())
            } else {
                Err(OpError::Epoch {
                    expected: 0,
                    got: header.epoch,
                }
                .into())
            };
        };
        let previous = self
            .store
            .header(&p)
            .ok()
            .flatten()
            .ok_or(UpdateError::Op(OpError::UnknownPrevious))?;
        check_link_to(&previous, header)
    }

    fn build_from_delta(
        &self,
        previous: Option<&Register>,
        delta: &RegisterDelta,
        header: &UpdateHeader,
    ) -> Result<(Register, Effects), UpdateError> {
        if delta.id() != header.delta_id {
            return Err(UpdateError::WrongDelta);
        }
        let at = At {
            epoch: header.epoch,
            last_updated: header.last_updated,
        };
        let (state, effects) = apply(previous, delta, at, &StoreContext(self.store.as_ref()))?;
        check_state(&state, header)?;
        Ok((state, effects))
    }

    /// Stores a checked update now, or once its proof is verified.
    #[allow(clippy::too_many_arguments)]
    fn validate_later_or_now(
        &mut self,
        header: UpdateHeader,
        delta: Option<RegisterDelta>,
        state: Register,
        effects: Effects,
        via_kind: Via,
        peer: PeerId,
        message: Option<ContentId>,
        waiters: Vec<CallId>,
    ) {
        let rules = self.class(state.class());
        let domain = state.domain().to_owned();
        let commit = self.commit_for(&header, delta, &state, effects);
        if let Some(key) = rules.proof_key {
            let Some(proof_id) = header.proof_id else {
                let e = UpdateError::MissingProof(state.class().to_owned());
                for w in waiters {
                    self.reply(Some(w), Reply::Register(Err(e.clone().into())));
                }
                return self.reject(state.id, peer, e, message);
            };
            if self.parked.len() >= self.config.max_buffered {
                self.validate(message, Acceptance::Ignore);
                return;
            }
            self.event(Event::ProofNeeded {
                proof_id,
                key,
                binding: binding(&state.id, &header.state_hash),
                peer,
            });
            self.parked.insert(
                proof_id,
                Parked {
                    commit,
                    header,
                    domain,
                    via: via_kind,
                    peer,
                    message,
                    waiters,
                    local: None,
                },
            );
            return;
        }
        self.validate(message, Acceptance::Accept);
        self.finish(commit, header, domain, via_kind, waiters);
    }

    /// Commits a checked update, choosing between it and the current head by the fork
    /// rule.
    fn finish(
        &mut self,
        mut commit: Commit,
        header: UpdateHeader,
        domain: String,
        via: Via,
        waiters: Vec<CallId>,
    ) {
        let id = header.register_id;
        let current = self.store.head(&id).ok().flatten();
        let mut moved = true;
        if let Some(current) = current
            && Some(current.state_hash) != header.previous_state_hash
        {
            // Store the headers first so the fork point can be found through them.
            match self.choose(current.state_hash, &commit.headers) {
                Ok(Choice::Extends) => {}
                Ok(Choice::Stale) => moved = false,
                Ok(Choice::Fork {
                    winner,
                    loser,
                    candidate_wins,
                }) => {
                    let fork = Fork {
                        register_id: id,
                        winner,
                        loser,
                    };
                    let known = self.store.forks(&id).is_ok_and(|f| f.contains(&fork));
                    moved = candidate_wins;
                    if !known {
                        tracing::warn!(target: "causality_regsync", register = %id.short(), winner = %fork.winner.id().short(), loser = %fork.loser.id().short(), "register fork resolved");
                        self.stats.forks += 1;
                        commit.forks.push(fork.clone());
                        self.event(Event::Fork(Box::new(fork)));
                    }
                }
                Err(e) => {
                    tracing::warn!(target: "causality_regsync", register = %id.short(), error = %e, "fork choice failed");
                    moved = false;
                }
            }
        }
        if !moved {
            // Kept (as evidence, or an old state), but not the head; its effects do not
            // apply.
            commit.heads.clear();
            commit.credits.clear();
            commit.used_credits.clear();
            commit.merged.clear();
        }
        if let Err(e) = self.store.commit(commit) {
            tracing::error!(target: "causality_regsync", register = %id.short(), error = %e, "storing an update failed");
            for w in waiters {
                self.reply(Some(w), Reply::Register(Err(store_err(e.clone()))));
            }
            return;
        }
        if moved {
            match via {
                Via::Full => self.stats.full_fetches += 1,
                Via::Delta => self.stats.deltas_applied += 1,
                Via::Local => {}
            }
            if self.domains.contains(&domain) {
                self.subscribe_register(id);
            }
            self.event(Event::Applied {
                register_id: id,
                state_hash: header.state_hash,
                epoch: header.epoch,
                via,
            });
        }
        let result = self.register(&id).ok_or(SyncError::NotFound(id));
        for w in waiters {
            self.reply(Some(w), Reply::Register(result.clone()));
        }
        self.release_buffered(id);
        self.retry_nullifiers(id);
    }

    /// Where `candidate` (the last of `headers`, not yet stored) stands against the head
    /// `current`.
    fn choose(&self, current: StateHash, headers: &[UpdateHeader]) -> Result<Choice, StoreError> {
        let new: HashMap<StateHash, &UpdateHeader> =
            headers.iter().map(|h| (h.state_hash, h)).collect();
        let get = |s: &StateHash| -> Result<UpdateHeader, StoreError> {
            if let Some(h) = new.get(s) {
                return Ok((*h).clone());
            }
            self.store
                .header(s)?
                .ok_or_else(|| StoreError(format!("missing header {s}")))
        };
        let candidate = headers
            .last()
            .ok_or_else(|| StoreError("no header".into()))?;
        let mut a = get(&current)?;
        if candidate.epoch <= a.epoch && candidate.state_hash == current {
            return Ok(Choice::Stale);
        }
        let mut b = candidate.clone();
        while a.epoch > b.epoch {
            a = get(&a
                .previous_state_hash
                .ok_or_else(|| StoreError("epoch without previous".into()))?)?;
        }
        while b.epoch > a.epoch {
            b = get(&b
                .previous_state_hash
                .ok_or_else(|| StoreError("epoch without previous".into()))?)?;
        }
        if a.state_hash == b.state_hash {
            // One is the other's ancestor: the candidate extends the head, or is behind it.
            return Ok(if b.state_hash == current {
                Choice::Extends
            } else {
                Choice::Stale
            });
        }
        loop {
            if a.previous_state_hash == b.previous_state_hash {
                let candidate_wins = wins(&b, &a);
                let (winner, loser) = if candidate_wins { (b, a) } else { (a, b) };
                return Ok(Choice::Fork {
                    winner,
                    loser,
                    candidate_wins,
                });
            }
            a = get(&a
                .previous_state_hash
                .ok_or_else(|| StoreError("chains without a common root".into()))?)?;
            b = get(&b
                .previous_state_hash
                .ok_or_else(|| StoreError("chains without a common root".into()))?)?;
        }
    }

    fn buffer(&mut self, m: RegisterStateMessage, from: PeerId) {
        let id = m.register_id();
        if self.buffered_count >= self.config.max_buffered {
            self.stats.buffer_dropped += 1;
            return;
        }
        let list = self.buffered.entry(id).or_default();
        if list.len() >= self.config.max_buffered_per_register
            || list.iter().any(|b| b.message.header == m.header)
        {
            self.stats.buffer_dropped += 1;
            return;
        }
        let first = list.is_empty();
        list.push(Buffered { message: m, from });
        self.buffered_count += 1;
        self.stats.buffered += 1;
        if first {
            self.outputs.push_back(Output::Schedule {
                at_ms: self.now_ms + self.config.reorder_ms,
                timer: Timer::Reorder(id),
            });
        }
    }

    /// Offers again the buffered updates of `id` that now connect.
    fn release_buffered(&mut self, id: RegisterId) {
        loop {
            let Some(list) = self.buffered.get_mut(&id) else {
                return;
            };
            let store = &self.store;
            let Some(pos) = list.iter().position(|b| {
                b.message
                    .header
                    .previous_state_hash
                    .is_some_and(|p| store.state(&p).ok().flatten().is_some())
            }) else {
                return;
            };
            let b = list.remove(pos);
            if list.is_empty() {
                self.buffered.remove(&id);
            }
            self.buffered_count -= 1;
            self.offer(b.message, b.from, b.from, None);
        }
    }

    fn reorder_timeout(&mut self, id: RegisterId) {
        let Some(list) = self.buffered.remove(&id) else {
            return;
        };
        self.buffered_count -= list.len();
        // Fetch the newest announced state; what connects is applied on the way.
        let mut peers = Vec::new();
        let mut want = None;
        let mut best = 0;
        for b in &list {
            if b.message.header.epoch >= best {
                best = b.message.header.epoch;
                want = Some(b.message.header.state_hash);
            }
            peers.push(b.from);
        }
        self.enqueue(id, want, peers, None);
    }

    // ---- fetching ----

    fn enqueue(
        &mut self,
        id: RegisterId,
        want: Option<StateHash>,
        peers: Vec<PeerId>,
        waiter: Option<CallId>,
    ) {
        if let Some(job) = self.queue.iter_mut().find(|j| j.register == id) {
            if want.is_some() {
                job.want = want;
            }
            for p in peers {
                if !job.peers.contains(&p) {
                    job.peers.push_front(p);
                }
            }
            job.waiters.extend(waiter);
            return;
        }
        if self.queue.len() >= self.config.max_queued {
            self.stats.queue_dropped += 1;
            if let Some(w) = waiter {
                self.reply(
                    Some(w),
                    Reply::Register(Err(SyncError::Invalid {
                        register: id,
                        reason: "sync queue full".into(),
                    })),
                );
            }
            return;
        }
        let mut candidates: VecDeque<PeerId> = VecDeque::new();
        for p in peers.into_iter().chain(self.peers.iter().copied()) {
            if p != self.local && !candidates.contains(&p) {
                candidates.push_back(p);
            }
        }
        let critical = self
            .register(&id)
            .is_some_and(|r| self.class(r.class()).critical);
        let job = Box::new(Job {
            register: id,
            want,
            peers: candidates,
            waiters: waiter.into_iter().collect(),
            critical,
            last_error: None,
            sent_have: None,
            known: None,
        });
        self.queued.insert(id);
        if critical {
            // Behind the other critical jobs, ahead of the rest.
            let at = self
                .queue
                .iter()
                .position(|j| !j.critical)
                .unwrap_or(self.queue.len());
            self.queue.insert(at, job);
        } else {
            self.queue.push_back(job);
        }
        self.pump();
    }

    fn pump(&mut self) {
        while self.inflight_syncs < self.config.max_inflight {
            let Some(mut job) = self.queue.pop_front() else {
                return;
            };
            self.queued.remove(&job.register);
            let peer = loop {
                match job.peers.pop_front() {
                    Some(p) if self.peers.contains(&p) => break Some(p),
                    Some(_) => continue,
                    None => break None,
                }
            };
            let Some(peer) = peer else {
                let reason = job.last_error.take();
                let error = match reason {
                    Some(reason) => SyncError::Invalid {
                        register: job.register,
                        reason,
                    },
                    None => SyncError::NotFound(job.register),
                };
                let found = self.register(&job.register);
                for w in job.waiters {
                    // A register known here is the answer when no peer has anything newer.
                    let reply = match (&found, job.want) {
                        (Some(r), None) => Ok(r.clone()),
                        _ => Err(error.clone()),
                    };
                    self.reply(Some(w), Reply::Register(reply));
                }
                continue;
            };
            self.send_sync(job, peer);
        }
    }

    fn send_sync(&mut self, mut job: Box<Job>, peer: PeerId) {
        let head = self
            .store
            .head(&job.register)
            .ok()
            .flatten()
            .map(|h| h.state_hash);
        job.sent_have = head;
        // Ask from the last page's end, or our head.
        let request = Request::Sync {
            register_id: job.register,
            known: job.known.or(head),
            have: head,
            want: job.want,
        };
        let body = request.encode();
        self.stats.sync_requests += 1;
        self.stats.sync_bytes += body.len() as u64;
        let id = self.ids.next_id();
        self.inflight_syncs += 1;
        self.inflight.insert(id, Pending::Sync(job, peer));
        self.outputs.push_back(Output::Request {
            id,
            peer,
            protocol: crate::PROTOCOL_NAME.into(),
            body,
        });
    }

    fn send(&mut self, peer: PeerId, request: &Request, pending: Pending) -> usize {
        let body = request.encode();
        let len = body.len();
        let id = self.ids.next_id();
        self.inflight.insert(id, pending);
        self.outputs.push_back(Output::Request {
            id,
            peer,
            protocol: crate::PROTOCOL_NAME.into(),
            body,
        });
        len
    }

    fn on_sync_response(&mut self, mut job: Box<Job>, peer: PeerId, body: Result<Vec<u8>, String>) {
        self.inflight_syncs -= 1;
        let outcome = body.and_then(|body| {
            self.stats.sync_bytes += body.len() as u64;
            Response::decode(&body, self.max_response_bytes(), &self.config.limits).map_err(|e| {
                self.penalize(
                    peer,
                    Severity::Severe,
                    format!("malformed sync response: {e}"),
                );
                e.to_string()
            })
        });
        let result = match outcome {
            Ok(Response::Sync {
                headers,
                deltas,
                full_state,
                more,
            }) => self.absorb(&mut job, peer, headers, deltas, full_state, more),
            // Not having it is no fault; another peer may.
            Ok(Response::Error(e)) if e == UNKNOWN_REGISTER => Ok(Absorbed::NotHere),
            Ok(Response::Error(e)) => Err(e),
            Ok(_) => Err("unexpected response".into()),
            Err(e) => Err(e),
        };
        match result {
            Ok(Absorbed::NotHere) => self.queue.push_front(job),
            Ok(Absorbed::Done) => {}
            Ok(Absorbed::More) => {
                job.peers.push_front(peer);
                self.queue.push_front(job);
            }
            Err(e) => {
                tracing::debug!(target: "causality_regsync", register = %job.register.short(), peer = %peer.short(), error = %e, "sync failed");
                job.last_error = Some(e);
                self.queue.push_front(job);
            }
        }
        self.pump();
    }

    fn max_response_bytes(&self) -> usize {
        crate::max_response_bytes(&self.config.limits)
    }

    /// Checks and applies a sync response.
    fn absorb(
        &mut self,
        job: &mut Job,
        peer: PeerId,
        headers: Vec<UpdateHeader>,
        deltas: Vec<RegisterDelta>,
        full_state: Option<Register>,
        more: bool,
    ) -> Result<Absorbed, String> {
        let id = job.register;
        let bad = |this: &mut Self, e: UpdateError| -> Result<Absorbed, String> {
            this.stats.rejected += 1;
            this.penalize(peer, Severity::Severe, format!("sync response: {e}"));
            this.event(Event::Rejected {
                register_id: id,
                peer,
                error: e.clone(),
            });
            Err(e.to_string())
        };
        // The chain: each header follows the one before (stored or in the list).
        let mut checked: Vec<UpdateHeader> = Vec::new();
        for h in &headers {
            if h.register_id != id {
                return bad(self, UpdateError::HeaderMismatch("register id"));
            }
            let previous = match h.previous_state_hash {
                None => None,
                Some(p) => match checked.iter().rev().find(|c| c.state_hash == p) {
                    Some(c) => Some(c.clone()),
                    None => match self.store.header(&p) {
                        Ok(Some(c)) => Some(c),
                        _ => return bad(self, UpdateError::Op(OpError::UnknownPrevious)),
                    },
                },
            };
            let link = match &previous {
                Some(p) => check_link_to(p, h),
                None if h.epoch == 0 => Ok(()),
                None => Err(OpError::Epoch {
                    expected: 0,
                    got: h.epoch,
                }
                .into()),
            };
            if let Err(e) = link {
                return bad(self, e);
            }
            let signer = previous.as_ref().map_or(h.owner, |p| p.owner);
            if !h.verify(&signer) {
                return bad(self, UpdateError::Unauthorized);
            }
            checked.push(h.clone());
        }
        if more {
            if checked.is_empty() {
                return Err("an empty page with more to come".into());
            }
            job.known = checked.last().map(|h| h.state_hash);
            let commit = Commit {
                headers: checked,
                ..Commit::default()
            };
            self.store.commit(commit).map_err(|e| e.0)?;
            return Ok(Absorbed::More);
        }
        let Some(target) = checked.last().cloned() else {
            // Nothing newer at this peer.
            let found = self.register(&id);
            if job
                .want
                .is_some_and(|w| found.as_ref().is_none_or(|f| f.state_hash() != w))
            {
                return Err("the peer does not have the wanted state".into());
            }
            let reply = found.ok_or(SyncError::NotFound(id));
            for w in job.waiters.drain(..) {
                self.reply(Some(w), Reply::Register(reply.clone()));
            }
            return Ok(Absorbed::Done);
        };
        // The bodies: deltas from the state the request said we hold, or the target's full
        // state. (The head may have moved since; the fork rule then places the result.)
        let head = match job.sent_have {
            Some(h) => self.store.header(&h).map_err(|e| e.0)?.map(|h| Head {
                state_hash: h.state_hash,
                epoch: h.epoch,
            }),
            None => None,
        };
        let mut states: Vec<Register> = Vec::new();
        let mut stored_deltas: Vec<(StateHash, RegisterDelta)> = Vec::new();
        let mut effects = Effects::default();
        let via;
        if let Some(state) = full_state {
            if state.state_hash() != target.state_hash {
                return bad(
                    self,
                    UpdateError::WrongStateHash {
                        announced: target.state_hash,
                        got: state.state_hash(),
                    },
                );
            }
            if let Err(e) = check_state(&state, &target) {
                return bad(self, e);
            }
            if head.is_none() {
                let creation = self.creation_header(&checked);
                match creation.as_ref() {
                    Some(c) if c.owner == state.genesis.owner && state.id == id => {}
                    _ => {
                        return bad(
                            self,
                            UpdateError::HeaderMismatch(
                                "the chain does not start at the register's genesis",
                            ),
                        );
                    }
                }
            }
            states.push(state);
            via = Via::Full;
        } else {
            let mut previous = match head {
                Some(h) => self.store.state(&h.state_hash).map_err(|e| e.0)?,
                None => None,
            };
            let chain: Vec<&UpdateHeader> = checked
                .iter()
                .skip_while(|h| h.previous_state_hash != head.map(|h| h.state_hash))
                .collect();
            if chain.len() != deltas.len() || deltas.is_empty() {
                return bad(
                    self,
                    UpdateError::HeaderMismatch("deltas do not match the chain"),
                );
            }
            let mut all = Effects::default();
            for (h, d) in chain.into_iter().zip(&deltas) {
                match self.build_from_delta(previous.as_ref(), d, h) {
                    Ok((s, e)) => {
                        all.credits.extend(e.credits);
                        all.used_credit = all.used_credit.or(e.used_credit);
                        all.merged.extend(e.merged);
                        stored_deltas.push((h.state_hash, d.clone()));
                        states.push(s.clone());
                        previous = Some(s);
                    }
                    Err(UpdateError::Op(OpError::MissingDependency(dep))) => {
                        self.enqueue(dep, None, vec![peer], None);
                        return Err(format!("needs register {dep} first"));
                    }
                    Err(e) => return bad(self, e),
                }
            }
            effects = all;
            via = Via::Delta;
        }
        let state = states.last().cloned().expect("a state");
        let domain = state.domain().to_owned();
        let commit = Commit {
            headers: checked.clone(),
            deltas: stored_deltas,
            states,
            heads: vec![(
                id,
                Head {
                    state_hash: target.state_hash,
                    epoch: target.epoch,
                },
                domain.clone(),
            )],
            credits: effects.credits,
            used_credits: effects.used_credit.into_iter().collect(),
            merged: effects.merged,
            forks: Vec::new(),
        };
        let waiters: Vec<CallId> = job.waiters.drain(..).collect();
        if let Some(key) = self.class(state.class()).proof_key {
            // The whole commit waits for the target's proof.
            let Some(proof_id) = target.proof_id else {
                let e = UpdateError::MissingProof(state.class().to_owned());
                for w in waiters {
                    self.reply(Some(w), Reply::Register(Err(e.clone().into())));
                }
                return bad(self, e);
            };
            self.event(Event::ProofNeeded {
                proof_id,
                key,
                binding: binding(&id, &target.state_hash),
                peer,
            });
            self.parked.insert(
                proof_id,
                Parked {
                    commit,
                    header: target,
                    domain,
                    via,
                    peer,
                    message: None,
                    waiters,
                    local: None,
                },
            );
            return Ok(Absorbed::Done);
        }
        self.finish(commit, target, domain, via, waiters);
        Ok(Absorbed::Done)
    }

    /// The creation header of the chain `checked` continues (in it, or stored: earlier
    /// pages).
    fn creation_header(&self, checked: &[UpdateHeader]) -> Option<UpdateHeader> {
        let mut at = checked.first()?.clone();
        while let Some(previous) = at.previous_state_hash {
            at = match checked.iter().find(|h| h.state_hash == previous) {
                Some(h) => h.clone(),
                None => self.store.header(&previous).ok()??,
            };
        }
        Some(at)
    }

    fn proof_checked(&mut self, proof_id: ContentId, result: Result<(), String>) {
        let Some(mut p) = self.parked.remove(&proof_id) else {
            return;
        };
        if let Some(local) = p.local.take() {
            let LocalUpdate {
                call,
                delta,
                state,
                effects,
            } = *local;
            let reply = match result {
                Ok(()) => self.commit_local(p.header, delta, state, effects),
                Err(reason) => {
                    tracing::info!(target: "causality_regsync", proof = %proof_id.short(), reason = %reason, "our own update's proof does not check");
                    Err(UpdateError::InvalidProof {
                        proof: proof_id,
                        reason,
                    }
                    .into())
                }
            };
            return self.reply(call, Reply::Updated(reply));
        }
        match result {
            Ok(()) => {
                self.validate(p.message, Acceptance::Accept);
                self.finish(p.commit, p.header, p.domain, p.via, p.waiters);
            }
            Err(reason) => {
                let e = UpdateError::InvalidProof {
                    proof: proof_id,
                    reason,
                };
                for w in &p.waiters {
                    self.reply(Some(*w), Reply::Register(Err(e.clone().into())));
                }
                self.reject(p.header.register_id, p.peer, e, p.message);
            }
        }
    }

    // ---- serving ----

    fn on_request(&mut self, id: InboundId, peer: PeerId, body: &[u8]) {
        let request = match Request::decode(body) {
            Ok(r) => r,
            Err(e) => {
                self.penalize(
                    peer,
                    Severity::Severe,
                    format!("malformed regsync request: {e}"),
                );
                self.outputs.push_back(Output::Respond {
                    id,
                    result: Err((RefusalReason::BadRequest, e.to_string())),
                });
                return;
            }
        };
        let response = match request {
            Request::Sync {
                register_id,
                known,
                have,
                want,
            } => self.serve_sync(register_id, known, have, want),
            Request::Chunks(ids) => Response::Chunks(
                ids.iter()
                    .filter_map(|i| self.store.chunk(i).ok().flatten())
                    .collect(),
            ),
            Request::Prove {
                domain,
                register_id,
            } => match self.prove_here(&domain, &register_id) {
                Ok((root, count, proof)) => Response::Prove { count, root, proof },
                Err(e) => Response::Error(e.to_string()),
            },
            Request::Reconcile {
                domain,
                kind,
                start,
                count,
            } => self.serve_symbols(peer, domain, kind, start, count),
            Request::Resolve {
                domain,
                kind,
                items,
            } => self.serve_resolve(&domain, kind, &items),
        };
        self.outputs.push_back(Output::Respond {
            id,
            result: Ok(response.encode()),
        });
    }

    fn serve_sync(
        &self,
        register: RegisterId,
        known: Option<StateHash>,
        have: Option<StateHash>,
        want: Option<StateHash>,
    ) -> Response {
        let Ok(Some(head)) = self.store.head(&register) else {
            return Response::Error(UNKNOWN_REGISTER.into());
        };
        let want = want.unwrap_or(head.state_hash);
        // Walk back from `want` to `known` (or the creation).
        let mut chain: Vec<UpdateHeader> = Vec::new();
        let mut at = Some(want);
        let mut reached_known = false;
        while let Some(s) = at {
            if Some(s) == known {
                reached_known = true;
                break;
            }
            let Ok(Some(h)) = self.store.header(&s) else {
                return Response::Error("unknown state".into());
            };
            at = h.previous_state_hash;
            chain.push(h);
            if chain.len() > crate::MAX_CHAIN_WALK {
                return Response::Error("chain too long to serve".into());
            }
        }
        chain.reverse();
        if chain.len() > MAX_HEADERS {
            chain.truncate(MAX_HEADERS);
            return Response::Sync {
                headers: chain,
                deltas: Vec::new(),
                full_state: None,
                more: true,
            };
        }
        if chain.is_empty() {
            return Response::Sync {
                headers: chain,
                deltas: Vec::new(),
                full_state: None,
                more: false,
            };
        }
        let Ok(Some(state)) = self.store.state(&want) else {
            return Response::Error("no body for that state".into());
        };
        let state_bytes = state.encode().len();
        // Deltas when the asker holds the start of this chain and they are smaller.
        if reached_known && have == known && have.is_some() {
            let mut deltas = Vec::new();
            let mut bytes = 0;
            for h in &chain {
                match self.store.delta(&h.state_hash) {
                    Ok(Some(d)) => {
                        bytes += d.encode().len();
                        deltas.push(d);
                    }
                    _ => break,
                }
                if bytes >= state_bytes {
                    break;
                }
            }
            if deltas.len() == chain.len() && bytes < state_bytes {
                return Response::Sync {
                    headers: chain,
                    deltas,
                    full_state: None,
                    more: false,
                };
            }
        }
        Response::Sync {
            headers: chain,
            deltas: Vec::new(),
            full_state: Some(state),
            more: false,
        }
    }

    fn prove_here(
        &self,
        domain: &str,
        register: &RegisterId,
    ) -> Result<(ContentId, u64, MembershipProof), SyncError> {
        let set = SetCommitment::new(self.store.domain_heads(domain).map_err(store_err)?);
        Ok((set.root(), set.len(), set.prove(register)))
    }

    fn items(
        &self,
        domain: &str,
        kind: SetKind,
    ) -> Result<HashMap<Item, ResolvedItem>, StoreError> {
        Ok(match kind {
            SetKind::Registers => self
                .store
                .domain_heads(domain)?
                .into_iter()
                .map(|(id, s)| (register_item(&id, &s), ResolvedItem::Register(id, s)))
                .collect(),
            SetKind::Nullifiers => self
                .store
                .nullifiers(domain)?
                .into_iter()
                .map(|u| (nullifier_item(&u), ResolvedItem::Nullifier(u)))
                .collect(),
        })
    }

    fn serve_symbols(
        &mut self,
        peer: PeerId,
        domain: String,
        kind: SetKind,
        start: u64,
        count: u32,
    ) -> Response {
        let key = (peer, domain.clone(), kind);
        if start == 0 || !self.served.contains_key(&key) {
            let items = match self.items(&domain, kind) {
                Ok(i) => i,
                Err(e) => return Response::Error(e.0),
            };
            let root = if kind == SetKind::Registers {
                let set: Vec<(RegisterId, StateHash)> = items
                    .values()
                    .filter_map(|r| match r {
                        ResolvedItem::Register(id, s) => Some((*id, *s)),
                        ResolvedItem::Nullifier(_) => None,
                    })
                    .collect();
                SetCommitment::new(set).root()
            } else {
                ContentId::from_bytes([0; 32])
            };
            if self.served.len() >= MAX_SERVED_SESSIONS
                && let Some(k) = self.served.keys().next().cloned()
            {
                self.served.remove(&k);
            }
            let size = items.len() as u64;
            let mut keys: Vec<Item> = items.into_keys().collect();
            keys.sort_unstable();
            self.served.insert(
                key.clone(),
                Served {
                    encoder: Encoder::new(keys),
                    root,
                    size,
                },
            );
        }
        let served = self.served.get_mut(&key).expect("inserted");
        served.encoder.seek(start);
        let mut symbols = Vec::with_capacity(count as usize * crate::riblt::SYMBOL_BYTES);
        for _ in 0..count.min(MAX_SYMBOLS) {
            served.encoder.next_symbol().encode(&mut symbols);
        }
        Response::Reconcile {
            symbols,
            set_size: served.size,
            root: served.root,
        }
    }

    fn serve_resolve(&self, domain: &str, kind: SetKind, items: &[Item]) -> Response {
        let all = match self.items(domain, kind) {
            Ok(a) => a,
            Err(e) => return Response::Error(e.0),
        };
        let mut registers = Vec::new();
        let mut nullifiers = Vec::new();
        for i in items.iter().take(MAX_RESOLVE) {
            match all.get(i) {
                Some(ResolvedItem::Register(id, s)) => registers.push((*id, *s)),
                Some(ResolvedItem::Nullifier(u)) => nullifiers.push(u.clone()),
                None => {}
            }
        }
        Response::Resolve {
            registers,
            nullifiers,
        }
    }

    // ---- reconciliation ----

    fn start_reconcile(
        &mut self,
        peer: PeerId,
        domain: String,
        kind: SetKind,
        call: Option<CallId>,
        report: ReconcileReport,
    ) {
        let local = match self.items(&domain, kind) {
            Ok(l) => l,
            Err(e) => return self.reply(call, Reply::Reconciled(Err(store_err(e)))),
        };
        let mut keys: Vec<Item> = local.keys().copied().collect();
        keys.sort_unstable();
        let session = Box::new(Session {
            peer,
            domain: domain.clone(),
            kind,
            decoder: Decoder::new(keys),
            local,
            remote_root: None,
            report,
            call,
            unresolved: Vec::new(),
            resolved: Vec::new(),
            then_nullifiers: kind == SetKind::Registers,
        });
        let request = Request::Reconcile {
            domain,
            kind,
            start: 0,
            count: self.config.first_symbols.clamp(1, MAX_SYMBOLS),
        };
        self.send_reconcile(session, &request);
    }

    fn send_reconcile(&mut self, mut session: Box<Session>, request: &Request) {
        session.report.round_trips += 1;
        let peer = session.peer;
        let len = request.encode().len() as u64;
        session.report.symbol_bytes += len;
        self.send(peer, request, Pending::Reconcile(session));
    }

    fn on_symbols(&mut self, mut session: Box<Session>, body: Result<Vec<u8>, String>) {
        let response = body.and_then(|b| {
            session.report.symbol_bytes += b.len() as u64;
            Response::decode(&b, self.max_response_bytes(), &self.config.limits)
                .map_err(|e| e.to_string())
        });
        let (symbols, set_size, root) = match response {
            Ok(Response::Reconcile {
                symbols,
                set_size,
                root,
            }) => (symbols, set_size, root),
            Ok(Response::Error(e)) => return self.end_session(session, Err(e)),
            Ok(_) => return self.end_session(session, Err("unexpected response".into())),
            Err(e) => return self.end_session(session, Err(e)),
        };
        if session.remote_root.is_none() {
            session.remote_root = Some((root, set_size));
        }
        let Some(symbols) = Symbol::decode_all(&symbols) else {
            return self.end_session(session, Err("bad symbols".into()));
        };
        if symbols.is_empty() {
            return self.end_session(session, Err("no symbols".into()));
        }
        for s in symbols {
            session.decoder.add_symbol(s);
            session.report.symbols += 1;
            if session.decoder.is_decoded() {
                break;
            }
        }
        if !session.decoder.is_decoded() {
            let received = session.decoder.received();
            // Sets of n items differ in at most n + local; past that the peer is lying.
            let bound = 2 * (set_size + session.local.len() as u64) + 1024;
            if received > bound {
                return self.end_session(session, Err("reconciliation did not converge".into()));
            }
            let count = ((received / 4).max(u64::from(self.config.first_symbols)))
                .min(u64::from(MAX_SYMBOLS)) as u32;
            let request = Request::Reconcile {
                domain: session.domain.clone(),
                kind: session.kind,
                start: received,
                count,
            };
            return self.send_reconcile(session, &request);
        }
        session.unresolved = session.decoder.remote_only().copied().collect();
        session.report.remote_only += session.unresolved.len() as u64;
        session.report.local_only += session.decoder.local_only().count() as u64;
        self.resolve_next(session);
    }

    fn resolve_next(&mut self, mut session: Box<Session>) {
        if session.unresolved.is_empty() {
            return self.session_decoded(session);
        }
        let take = session.unresolved.len().min(MAX_RESOLVE);
        let items: Vec<Item> = session.unresolved.drain(..take).collect();
        let request = Request::Resolve {
            domain: session.domain.clone(),
            kind: session.kind,
            items,
        };
        session.report.round_trips += 1;
        session.report.resolve_bytes += request.encode().len() as u64;
        let peer = session.peer;
        self.send(peer, &request, Pending::Resolve(session));
    }

    fn on_resolved(&mut self, mut session: Box<Session>, body: Result<Vec<u8>, String>) {
        let response = body.and_then(|b| {
            session.report.resolve_bytes += b.len() as u64;
            Response::decode(&b, self.max_response_bytes(), &self.config.limits)
                .map_err(|e| e.to_string())
        });
        match response {
            Ok(Response::Resolve {
                registers,
                nullifiers,
            }) => {
                let peer = session.peer;
                for (id, state) in registers {
                    session.resolved.push((id, state));
                    let ours = self.store.head(&id).ok().flatten().map(|h| h.state_hash);
                    if ours != Some(state) && self.store.header(&state).ok().flatten().is_none() {
                        session.report.fetched += 1;
                        self.enqueue(id, Some(state), vec![peer], None);
                    }
                }
                for u in nullifiers {
                    self.offer_nullifier(u, peer, None);
                }
                self.resolve_next(session);
            }
            Ok(Response::Error(e)) => self.end_session(session, Err(e)),
            Ok(_) => self.end_session(session, Err("unexpected response".into())),
            Err(e) => self.end_session(session, Err(e)),
        }
    }

    fn session_decoded(&mut self, mut session: Box<Session>) {
        if session.kind == SetKind::Registers {
            // Rebuild the peer's set from ours and the difference; it must have its root.
            let local_only: BTreeSet<Item> = session.decoder.local_only().copied().collect();
            let mut set: Vec<(RegisterId, StateHash)> = session
                .local
                .iter()
                .filter(|(i, _)| !local_only.contains(*i))
                .filter_map(|(_, r)| match r {
                    ResolvedItem::Register(id, s) => Some((*id, *s)),
                    ResolvedItem::Nullifier(_) => None,
                })
                .collect();
            set.extend(session.resolved.iter().copied());
            let rebuilt = SetCommitment::new(set);
            session.report.verified = session
                .remote_root
                .is_some_and(|(root, size)| root == rebuilt.root() && size == rebuilt.len());
            if !session.report.verified {
                tracing::info!(target: "causality_regsync", peer = %session.peer.short(), domain = %session.domain, "reconciled set does not match the peer's commitment (it changed meanwhile, or the peer lied)");
            }
        }
        if session.then_nullifiers {
            let report = std::mem::take(&mut session.report);
            return self.start_reconcile(
                session.peer,
                session.domain.clone(),
                SetKind::Nullifiers,
                session.call,
                report,
            );
        }
        self.end_session(session, Ok(()));
    }

    fn end_session(&mut self, session: Box<Session>, result: Result<(), String>) {
        let reply = match result {
            Ok(()) => {
                self.stats.reconciliations += 1;
                if session.report.remote_only > 0 {
                    // What we learned changes our commitment: state it again (once the
                    // fetches are done), so our other neighbours reconcile with us.
                    self.schedule_commitment(&session.domain);
                }
                Ok(session.report)
            }
            Err(reason) => {
                tracing::debug!(target: "causality_regsync", peer = %session.peer.short(), domain = %session.domain, reason = %reason, "reconciliation failed");
                Err(SyncError::Remote(reason))
            }
        };
        self.reply(session.call, Reply::Reconciled(reply));
    }

    // ---- nullifiers ----

    fn on_nullifier_message(&mut self, message: Message) {
        let u = match messages::decode_nullifier(&message.payload, &self.config.limits) {
            Ok(u) => u,
            Err(e) => return self.validate(Some(message.id), Acceptance::Reject(e.to_string())),
        };
        if u.domain != message.topic.id() {
            return self.validate(
                Some(message.id),
                Acceptance::Reject("nullifier on the wrong topic".into()),
            );
        }
        if !u.verify() {
            return self.validate(
                Some(message.id),
                Acceptance::Reject("bad nullifier signature".into()),
            );
        }
        if !self.domains.contains(&u.domain) {
            return self.validate(Some(message.id), Acceptance::Ignore);
        }
        self.offer_nullifier(u, message.via, Some(message.id));
    }

    /// Accepts a signed nullifier use, or records it as a double use.
    fn offer_nullifier(&mut self, u: NullifierUse, from: PeerId, message: Option<ContentId>) {
        if !u.verify() {
            self.penalize(from, Severity::Severe, "bad nullifier signature".into());
            return self.validate(message, Acceptance::Ignore);
        }
        match self.register(&u.register_id) {
            None => {
                // Who may spend it is known once the register is.
                if self.pending_nullifiers.len() >= self.config.max_buffered {
                    self.pending_nullifiers.pop_front();
                }
                self.pending_nullifiers.push_back((u.clone(), from));
                self.enqueue(u.register_id, None, vec![from], None);
                return self.validate(message, Acceptance::Ignore);
            }
            Some(r) if r.owner != u.spender || r.domain() != u.domain => {
                tracing::info!(target: "causality_regsync", register = %u.register_id.short(), "nullifier not signed by the register's owner");
                self.penalize(
                    from,
                    Severity::Minor,
                    "nullifier not signed by the register's owner".into(),
                );
                return self.validate(message, Acceptance::Ignore);
            }
            Some(_) => {}
        }
        let existing = match self.store.nullifier(&u.domain, &u.nullifier) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(target: "causality_regsync", error = %e, "store read failed");
                return self.validate(message, Acceptance::Ignore);
            }
        };
        match existing {
            None => {
                if let Err(e) = self.store.put_nullifier(&u, None) {
                    tracing::error!(target: "causality_regsync", error = %e, "storing a nullifier failed");
                    return self.validate(message, Acceptance::Ignore);
                }
                self.stats.nullifiers += 1;
                self.validate(message, Acceptance::Accept);
                self.event(Event::Nullified(Box::new(u)));
            }
            Some(e) if e.id() == u.id() => self.validate(message, Acceptance::Accept),
            Some(e) => {
                let (kept, rejected) = if u.id() < e.id() {
                    (u.clone(), e)
                } else {
                    (e, u.clone())
                };
                let evidence = DoubleUse {
                    kept: kept.clone(),
                    rejected,
                };
                let known = self
                    .store
                    .double_uses(&u.domain)
                    .map(|d| d.contains(&evidence))
                    .unwrap_or(false);
                if known {
                    return self.validate(message, Acceptance::Ignore);
                }
                tracing::warn!(target: "causality_regsync", domain = %u.domain, register = %u.register_id.short(), kept = %evidence.kept.id().short(), rejected = %evidence.rejected.id().short(), "nullifier used twice");
                if let Err(e) = self.store.put_nullifier(&kept, Some(&evidence)) {
                    tracing::error!(target: "causality_regsync", error = %e, "storing double-use evidence failed");
                    return self.validate(message, Acceptance::Ignore);
                }
                self.stats.double_uses += 1;
                // Forwarded once, so every node sees both uses and keeps the same one;
                // learned by reconciliation, both are published.
                self.validate(message, Acceptance::Accept);
                if message.is_none()
                    && let Some(topic) = domain_topic(NULLIFIER_TOPIC, &u.domain)
                {
                    self.publish(
                        topic.clone(),
                        messages::NULLIFIER_TYPE,
                        evidence.kept.encode(),
                    );
                    self.publish(topic, messages::NULLIFIER_TYPE, evidence.rejected.encode());
                }
                self.event(Event::DoubleUse(Box::new(evidence)));
            }
        }
    }

    fn retry_nullifiers(&mut self, id: RegisterId) {
        let (ready, rest): (Vec<_>, Vec<_>) = self
            .pending_nullifiers
            .drain(..)
            .partition(|(u, _)| u.register_id == id);
        self.pending_nullifiers = rest.into();
        for (u, from) in ready {
            self.offer_nullifier(u, from, None);
        }
    }

    fn nullify(
        &mut self,
        domain: String,
        nullifier: [u8; 32],
        register_id: RegisterId,
    ) -> Result<(), SyncError> {
        let register = self
            .register(&register_id)
            .ok_or(SyncError::NotFound(register_id))?;
        if register.owner != self.local || register.domain() != domain {
            return Err(UpdateError::Unauthorized.into());
        }
        if let Some(existing) = self
            .store
            .nullifier(&domain, &nullifier)
            .map_err(store_err)?
        {
            return Err(SyncError::NullifierUsed(Box::new(existing)));
        }
        let u = NullifierUse::new(domain.clone(), nullifier, register_id, &self.key);
        self.store.put_nullifier(&u, None).map_err(store_err)?;
        self.stats.nullifiers += 1;
        if let Some(topic) = domain_topic(NULLIFIER_TOPIC, &domain) {
            self.publish(topic, messages::NULLIFIER_TYPE, u.encode());
        }
        self.event(Event::Nullified(Box::new(u)));
        Ok(())
    }

    // ---- time maps and commitments ----

    fn merge_time_map(&mut self, domain: &str, map: &TimeMap) -> Result<bool, StoreError> {
        let mut current = self.store.time_map(domain)?;
        let changed = current.merge(map);
        if changed {
            self.store.put_time_map(domain, &current)?;
            self.event(Event::TimeMapChanged {
                domain: domain.to_owned(),
                commitment: current.commitment(),
            });
        }
        Ok(changed)
    }

    fn on_time_map_message(&mut self, message: Message) {
        match messages::decode_time_map(&message.payload, &self.config.limits) {
            Ok((domain, map)) if domain == message.topic.id() => {
                if !self.domains.contains(&domain) {
                    return self.validate(Some(message.id), Acceptance::Ignore);
                }
                match self.merge_time_map(&domain, &map) {
                    Ok(_) => self.validate(Some(message.id), Acceptance::Accept),
                    Err(e) => {
                        tracing::warn!(target: "causality_regsync", error = %e, "storing a time map failed");
                        self.validate(Some(message.id), Acceptance::Ignore);
                    }
                }
            }
            Ok(_) => self.validate(
                Some(message.id),
                Acceptance::Reject("time map on the wrong topic".into()),
            ),
            Err(e) => self.validate(Some(message.id), Acceptance::Reject(e.to_string())),
        }
    }

    fn on_commitment_message(&mut self, message: Message) {
        let c = match Commitment::decode(&message.payload) {
            Ok(c) => c,
            Err(e) => return self.validate(Some(message.id), Acceptance::Reject(e.to_string())),
        };
        if !c.verify() {
            return self.validate(
                Some(message.id),
                Acceptance::Reject("bad commitment signature".into()),
            );
        }
        let topic_domain = message.topic.id().to_owned();
        if !self.domains.contains(&c.domain)
            || (!message.topic.is(COMMITMENT_TOPIC)
                && !message.topic.is(TIMEMAP_VERIFICATION_TOPIC))
            || c.domain != topic_domain
        {
            return self.validate(Some(message.id), Acceptance::Ignore);
        }
        self.validate(Some(message.id), Acceptance::Accept);
        let same = if message.topic.is(COMMITMENT_TOPIC) {
            let registers = self
                .store
                .domain_heads(&c.domain)
                .map(|h| SetCommitment::new(h).root());
            let nullifiers = self.nullifier_set(&c.domain).map(|n| (n.root(), n.len()));
            match (registers, nullifiers) {
                (Ok(r), Ok(n)) => r == c.root && Some(n) == c.nullifiers,
                _ => return,
            }
        } else {
            match self.store.time_map(&c.domain) {
                Ok(m) => m.commitment() == c.root,
                Err(_) => return,
            }
        };
        if same || c.signer == self.local {
            return;
        }
        self.event(Event::CommitmentMismatch {
            domain: c.domain.clone(),
            peer: c.signer,
            root: c.root,
        });
        if message.topic.is(COMMITMENT_TOPIC)
            && self.config.reconcile_on_mismatch
            && self.peers.contains(&c.signer)
        {
            self.start_reconcile(
                c.signer,
                c.domain,
                SetKind::Registers,
                None,
                ReconcileReport::default(),
            );
        }
    }

    fn schedule_commitment(&mut self, domain: &str) {
        if self.commitment_scheduled.insert(domain.to_owned()) {
            self.outputs.push_back(Output::Schedule {
                at_ms: self.now_ms + COMMITMENT_DELAY_MS,
                timer: Timer::Commitment(domain.to_owned()),
            });
        }
    }

    /// The commitment to a domain's accepted nullifier uses: leaves nullifier ‖ use id.
    fn nullifier_set(&self, domain: &str) -> Result<SetCommitment, StoreError> {
        Ok(SetCommitment::new(
            self.store
                .nullifiers(domain)?
                .into_iter()
                .map(|u| (ContentId::from_bytes(u.nullifier), u.id()))
                .collect(),
        ))
    }

    fn publish_commitment(&mut self, domain: &str) -> Result<(), SyncError> {
        let set = SetCommitment::new(self.store.domain_heads(domain).map_err(store_err)?);
        let nullifiers = self.nullifier_set(domain).map_err(store_err)?;
        let c = Commitment::new(
            domain,
            set.root(),
            set.len(),
            Some((nullifiers.root(), nullifiers.len())),
            &self.key,
        );
        if let Some(topic) = domain_topic(COMMITMENT_TOPIC, domain) {
            self.publish(topic, messages::COMMITMENT_TYPE, c.encode());
        }
        let map = self.store.time_map(domain).map_err(store_err)?;
        let t = Commitment::new(
            domain,
            map.commitment(),
            map.entries.len() as u64,
            None,
            &self.key,
        );
        if let Some(topic) = domain_topic(TIMEMAP_VERIFICATION_TOPIC, domain) {
            self.publish(topic, messages::COMMITMENT_TYPE, t.encode());
        }
        Ok(())
    }

    fn domain_topics(domain: &str) -> Vec<Topic> {
        [
            CREATION_TOPIC,
            NULLIFIER_TOPIC,
            COMMITMENT_TOPIC,
            TIMEMAP_UPDATE_TOPIC,
            TIMEMAP_VERIFICATION_TOPIC,
        ]
        .into_iter()
        .filter_map(|k| domain_topic(k, domain))
        .collect()
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
                let r = self.update(register_id, operations, last_updated, proof_id, call);
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
pub fn register_item(id: &RegisterId, state: &StateHash) -> Item {
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
