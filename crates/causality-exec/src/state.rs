//! The state machine: see [`State`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use causality_hash::{ContentId, Rendezvous};
use causality_net::service::{
    CallId, Ids, InboundId, Input, OutboundId, Output, Protocol, Severity,
};
use causality_net::{
    Acceptance, Keypair, Message, PeerId, RefusalReason, RequestProtocol, Topic, TopicKind,
};
use prost::Message as _;
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;

use crate::error::{
    ClaimError, DecodeError, ExecError, RetryError, SequenceError, SubmissionError,
};
use crate::model::{
    Dag, ExecutionSequence, ExecutionSequenceMessage, ExecutionStatus, FailureReason, Limits,
    NodeClaimToken, NodeId, NodeResult, SequenceId, WorkSpec, decode_bounded,
};
use crate::proto::v1 as pb;
use crate::store::{ExecStore, MemoryStore};

/// `execution/sequence/{sequence_id}`: the leader's status statements.
pub const SEQUENCE_TOPIC: TopicKind = TopicKind::new("execution", "sequence");
/// `execution/node/{sequence_id}:{node}`: accepted results, one node each.
pub const NODE_TOPIC: TopicKind = TopicKind::new("execution", "node");
/// `execution/result/{sequence_id}`: the final statement.
pub const RESULT_TOPIC: TopicKind = TopicKind::new("execution", "result");
/// `execution/verification/{sequence_id}`: validation outcomes (rejected results).
pub const VERIFICATION_TOPIC: TopicKind = TopicKind::new("execution", "verification");

/// The payload type of status statements.
pub const STATUS_TYPE: &str = "causality.exec.v1.ExecutionSequenceMessage";
/// The payload type of results.
pub const RESULT_TYPE: &str = "causality.exec.v1.NodeResult";

fn topic(kind: TopicKind, id: String) -> Topic {
    Topic::new(kind, id).expect("ids are content ids and numbers")
}

/// The topic of a sequence's statements.
pub fn sequence_topic(id: &SequenceId) -> Topic {
    topic(SEQUENCE_TOPIC, id.to_string())
}

/// What an executor offers: the work kinds it runs and how many at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecutorInfo {
    /// Work kinds.
    pub kinds: BTreeSet<String>,
    /// Nodes it runs at once.
    pub capacity: u32,
}

/// The executors a node knows of (typically discovery's members with the executor role).
pub type ExecutorView = Arc<BTreeMap<PeerId, ExecutorInfo>>;

/// The discovery role of a node that executes work.
pub const EXECUTOR_ROLE: &str = "executor";
/// Role prefix advertising an executor's capacity: `exec.cap=4`.
const CAPACITY_ROLE: &str = "exec.cap=";
/// Role prefix advertising a work kind an executor runs: `exec.kind=wasm`.
const KIND_ROLE: &str = "exec.kind=";

impl ExecutorInfo {
    /// The discovery roles that advertise this executor: [`EXECUTOR_ROLE`], its capacity
    /// and one role per kind (each role is at most 32 bytes in a peer record, so kinds
    /// are at most 22).
    ///
    /// ```
    /// use causality_exec::ExecutorInfo;
    ///
    /// let info = ExecutorInfo { kinds: ["wasm".into()].into(), capacity: 4 };
    /// let roles = info.roles();
    /// assert_eq!(roles, ["executor", "exec.cap=4", "exec.kind=wasm"]);
    /// assert_eq!(ExecutorInfo::from_roles(&roles), Some(info));
    /// ```
    pub fn roles(&self) -> Vec<String> {
        let mut roles = vec![
            EXECUTOR_ROLE.to_owned(),
            format!("{CAPACITY_ROLE}{}", self.capacity),
        ];
        roles.extend(self.kinds.iter().map(|k| format!("{KIND_ROLE}{k}")));
        roles
    }

    /// The executor a peer's roles advertise; `None` without [`EXECUTOR_ROLE`]. A missing
    /// or unreadable capacity counts as 1; roles it does not know are ignored.
    pub fn from_roles(roles: &[String]) -> Option<Self> {
        if !roles.iter().any(|r| r == EXECUTOR_ROLE) {
            return None;
        }
        let capacity = roles
            .iter()
            .find_map(|r| r.strip_prefix(CAPACITY_ROLE)?.parse().ok())
            .unwrap_or(1);
        let kinds = roles
            .iter()
            .filter_map(|r| r.strip_prefix(KIND_ROLE))
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        Some(Self { kinds, capacity })
    }
}

/// The executor view of a set of peers and their discovery roles (typically discovery's
/// membership, this node's own record included): every peer whose roles advertise an
/// executor.
pub fn executor_view<'a>(peers: impl IntoIterator<Item = (PeerId, &'a [String])>) -> ExecutorView {
    Arc::new(
        peers
            .into_iter()
            .filter_map(|(peer, roles)| Some((peer, ExecutorInfo::from_roles(roles)?)))
            .collect(),
    )
}

/// How a node takes part. Every field has a sane default.
#[derive(Clone, Debug)]
pub struct Config {
    /// Size limits.
    pub limits: Limits,
    /// What this node executes (none: it coordinates and submits only).
    pub executor: ExecutorInfo,
    /// Lease length (default 2 s); holders renew at two thirds.
    pub lease_ms: u64,
    /// First retry delay (default 100 ms), doubled per attempt up to `retry_max_ms` (5 s),
    /// with ±50 % jitter.
    pub retry_base_ms: u64,
    /// See `retry_base_ms`.
    pub retry_max_ms: u64,
    /// Replicas of a sequence, the leader included (default 3).
    pub replicas: usize,
    /// How long a leader must stay out of reach before a replica takes over (default
    /// 3 s): long enough for connections to come back after a heal.
    pub takeover_ms: u64,
    /// Accepted results are stated at most this often (default 20 ms).
    pub status_interval_ms: u64,
    /// Seed of the retry jitter.
    pub seed: u64,
    /// Place work where it is estimated to finish first, from observed run times per
    /// executor and kind (default true); otherwise with the rendezvous-preferred executor
    /// that has a free slot.
    pub predictive: bool,
    /// Re-issue a node to a second executor when it runs past this many times its
    /// estimate (default 3; 0 disables hedging) ...
    pub hedge_factor: u64,
    /// ... within this share of extra executions (default 5 %).
    pub hedge_budget: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            executor: ExecutorInfo::default(),
            lease_ms: 2_000,
            retry_base_ms: 100,
            retry_max_ms: 5_000,
            replicas: 3,
            takeover_ms: 3_000,
            status_interval_ms: 20,
            seed: 0,
            predictive: true,
            hedge_factor: 3,
            hedge_budget: 0.05,
        }
    }
}

/// Local commands.
#[derive(Debug)]
pub enum Command {
    /// Validates a sequence and hands it to its replicas; replies with its id.
    Submit(ExecutionSequence),
    /// Asks the sequence's leader for a lease on a node (to run it here).
    Claim {
        /// The sequence.
        sequence_id: SequenceId,
        /// The node.
        node: NodeId,
    },
    /// Hands in the result of work run here under `token`.
    Complete {
        /// The lease.
        token: NodeClaimToken,
        /// The output and, for work that needs one, its proof; or why it failed.
        outcome: Result<(Vec<u8>, Option<ContentId>), String>,
    },
    /// The verdict on a proof asked for with [`Event::ProofNeeded`].
    ProofChecked {
        /// The result's token.
        token: NodeClaimToken,
        /// `Ok` when proof sharing verified it for the work.
        result: Result<(), String>,
    },
    /// Runs a failed sequence again from its last good state: its accepted results stay,
    /// its failed nodes get fresh attempts. Only its creator may.
    Retry(SequenceId),
    /// Follows a sequence's statements ([`Event::Status`]).
    Monitor(SequenceId),
    /// Stops following.
    Unmonitor(SequenceId),
    /// The latest statement known here.
    Status(SequenceId),
    /// The replicas a sequence with this id goes to now (whom to seal its witnesses to).
    Replicas(SequenceId),
    /// Counters.
    Stats,
}

/// Replies to calls.
#[derive(Debug)]
pub enum Reply {
    /// The submitted sequence's id.
    Submitted(Result<SequenceId, ExecError>),
    /// A lease.
    Claimed(Result<NodeClaimToken, ClaimError>),
    /// A result handed in.
    Completed(Result<(), SubmissionError>),
    /// A failed sequence set running again.
    Retried(Result<(), RetryError>),
    /// The latest statement.
    Status(Option<ExecutionSequenceMessage>),
    /// Peers.
    Replicas(Vec<PeerId>),
    /// Counters.
    Stats(Stats),
    /// Done.
    Done,
}

/// What the API reports.
#[derive(Clone, Debug)]
pub enum Event {
    /// Run this work (the driver calls its executor, then [`Command::Complete`]).
    Execute {
        /// The lease.
        token: NodeClaimToken,
        /// The work.
        work: WorkSpec,
        /// The predecessors' outputs, in predecessor id order.
        inputs: Vec<Vec<u8>>,
        /// The node's secret input, opened here (it travelled sealed to this node alone).
        witness: Option<Vec<u8>>,
    },
    /// A statement of a followed sequence.
    Status(Box<ExecutionSequenceMessage>),
    /// A result's proof must be checked before it is accepted: fetch it through proof
    /// sharing, check it verifies under `key` and that its public inputs are the work's
    /// input, and answer with [`Command::ProofChecked`].
    ProofNeeded {
        /// The result's lease.
        token: NodeClaimToken,
        /// The proof.
        proof_id: ContentId,
        /// The work's key.
        key: ContentId,
        /// The public inputs the proof must have (the work's input, 32 bytes each).
        public_inputs: Vec<u8>,
        /// Who has it.
        peer: PeerId,
    },
    /// This node leads a sequence (in this term).
    Leading {
        /// The sequence.
        sequence_id: SequenceId,
        /// The term.
        term: u64,
    },
}

/// Counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Leases granted (as leader).
    pub grants: u64,
    /// Leases that ran out.
    pub leases_expired: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// Results accepted (as leader).
    pub accepted: u64,
    /// Results refused as stale, forged or invalid.
    pub refused: u64,
    /// Work run here.
    pub executed: u64,
    /// Terms taken over from a lost leader.
    pub takeovers: u64,
    /// Leaderships given up on losing the majority of the replica set.
    pub step_downs: u64,
    /// Stragglers re-issued to a second executor.
    pub hedges: u64,
    /// Sequences completed (as leader).
    pub completed: u64,
    /// Sequences failed (as leader).
    pub failed: u64,
    /// Failed sequences run again at their creator's request (as leader).
    pub sequence_retries: u64,
}

/// Timer kinds.
#[derive(Debug)]
pub enum Timer {
    /// A lease may have run out.
    Lease(SequenceId, NodeId, u64),
    /// A node's retry backoff is over.
    Retry(SequenceId, NodeId),
    /// State accepted results.
    Status(SequenceId),
    /// Renew a lease held here.
    Renew(SequenceId, NodeId, u64),
    /// A lease may be running past its estimate.
    Hedge(SequenceId, NodeId, u64),
    /// The leader has been out of reach for the takeover delay: take over if still so.
    Takeover(SequenceId),
}

/// The request protocol's name.
pub const PROTOCOL_NAME: &str = "exec";

#[derive(Clone, Debug, PartialEq, Eq)]
enum NodeState {
    /// Predecessors unresolved.
    Waiting,
    /// May run.
    Ready,
    /// Leased.
    Leased(NodeClaimToken),
    /// Waiting out a backoff.
    Backoff,
    /// A result awaits validation (a proof check).
    Validating(NodeClaimToken),
    /// Done.
    Done(Box<NodeResult>),
    /// No taken incoming edge.
    Skipped,
    /// Failed for good.
    Failed(String),
}

impl NodeState {
    fn resolved(&self) -> bool {
        matches!(self, Self::Done(_) | Self::Skipped)
    }
}

/// The nodes' states, with an index of the ready ones by rank (highest first).
#[derive(Debug)]
struct Nodes {
    states: BTreeMap<NodeId, NodeState>,
    ready: BTreeSet<(std::cmp::Reverse<u64>, NodeId)>,
    rank: BTreeMap<NodeId, u64>,
    exits: BTreeSet<NodeId>,
    /// Exits not yet resolved.
    open_exits: usize,
}

impl Nodes {
    fn new(
        states: BTreeMap<NodeId, NodeState>,
        rank: BTreeMap<NodeId, u64>,
        exits: &[NodeId],
    ) -> Self {
        let ready = states
            .iter()
            .filter(|(_, s)| matches!(s, NodeState::Ready))
            .map(|(n, _)| (std::cmp::Reverse(rank[n]), *n))
            .collect();
        let exits: BTreeSet<NodeId> = exits.iter().copied().collect();
        let open_exits = exits.iter().filter(|e| !states[e].resolved()).count();
        Self {
            states,
            ready,
            rank,
            exits,
            open_exits,
        }
    }

    fn insert(&mut self, n: NodeId, state: NodeState) {
        let key = (
            std::cmp::Reverse(self.rank.get(&n).copied().unwrap_or(0)),
            n,
        );
        if matches!(state, NodeState::Ready) {
            self.ready.insert(key);
        } else {
            self.ready.remove(&key);
        }
        if self.exits.contains(&n) {
            let was = self.states.get(&n).is_some_and(NodeState::resolved);
            match (was, state.resolved()) {
                (false, true) => self.open_exits -= 1,
                (true, false) => self.open_exits += 1,
                _ => {}
            }
        }
        self.states.insert(n, state);
    }

    /// Whether every exit is resolved.
    fn exits_resolved(&self) -> bool {
        self.open_exits == 0
    }

    fn get(&self, n: &NodeId) -> Option<&NodeState> {
        self.states.get(n)
    }

    fn contains_key(&self, n: &NodeId) -> bool {
        self.states.contains_key(n)
    }

    fn iter(&self) -> impl Iterator<Item = (&NodeId, &NodeState)> {
        self.states.iter()
    }

    fn keys(&self) -> impl Iterator<Item = &NodeId> {
        self.states.keys()
    }

    fn values(&self) -> impl Iterator<Item = &NodeState> {
        self.states.values()
    }

    /// Up to `limit` ready nodes, critical path first.
    fn ready(&self, limit: usize) -> Vec<NodeId> {
        self.ready.iter().take(limit).map(|(_, n)| *n).collect()
    }
}

impl std::ops::Index<&NodeId> for Nodes {
    type Output = NodeState;

    fn index(&self, n: &NodeId) -> &NodeState {
        &self.states[n]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Leader,
    /// Asking the reachable replicas for their terms before leading (see
    /// [`State::canvass`]).
    Candidate,
    Replica,
}

/// What this node keeps of one sequence.
#[derive(Debug)]
struct Tracked {
    sequence: ExecutionSequence,
    dag: Dag,
    role: Role,
    term: u64,
    leader: Option<PeerId>,
    /// When this node last saw the leader go out of reach (cleared when it is back).
    leader_lost_at: Option<u64>,
    /// See [`State::replica_set`]; recomputed when the view changes.
    replica_set: Vec<PeerId>,
    status: ExecutionStatus,
    nodes: Nodes,
    attempts: BTreeMap<NodeId, u32>,
    grants: BTreeMap<NodeId, u32>,
    /// Executors that failed a node (avoided on its retries).
    avoid: BTreeMap<NodeId, BTreeSet<PeerId>>,
    /// Second leases of stragglers.
    hedges: BTreeMap<NodeId, NodeClaimToken>,
    /// Agreeing results so far, for work that needs several.
    votes: BTreeMap<NodeId, Vec<NodeResult>>,
    unstated: Vec<NodeResult>,
    status_scheduled: bool,
    statement_seq: u64,
    last_statement: Option<ExecutionSequenceMessage>,
    /// The last failure per node.
    failures: BTreeMap<NodeId, String>,
    /// Members of the replica set known to hold the sequence (they took it, or answered
    /// for it); a leader hands it to the others as they come within reach.
    holders: BTreeSet<PeerId>,
    /// As a candidate: the members asked, and how many answered.
    canvass: BTreeSet<PeerId>,
    answered: usize,
    canvass_until: u64,
    /// The highest term a candidate named in a canvass here: statements of earlier terms
    /// are no longer kept.
    promised: u64,
    /// As leader: the statement its replicas are asked to keep before it is published.
    keeping: Option<Keeping>,
    /// As leader: state again once the statement in `keeping` is settled.
    restate: bool,
}

/// A statement waiting for a majority of the replica set to keep it.
#[derive(Debug)]
struct Keeping {
    message: ExecutionSequenceMessage,
    need: usize,
    acks: usize,
    outstanding: usize,
}

/// A submission waiting for a majority of the sequence's replicas to take it.
#[derive(Debug)]
struct Submission {
    call: Option<CallId>,
    need: usize,
    have: usize,
    outstanding: usize,
    replicas: usize,
    refusal: Option<String>,
}

impl Tracked {
    /// Drops the statement being kept, if any: its results go first into the next one.
    fn abandon_keeping(&mut self) {
        if let Some(k) = self.keeping.take() {
            let mut results = k.message.results;
            results.append(&mut self.unstated);
            self.unstated = results;
        }
    }
}

#[derive(Debug)]
enum Pending {
    Submit {
        submission: u64,
        id: SequenceId,
    },
    /// A leader handing a sequence to a replica that lacks it.
    Forward(SequenceId, PeerId),
    /// A candidate asking a replica what it holds of a sequence.
    Canvass(SequenceId),
    /// A leader asking a replica to keep a statement (by its number).
    Keep(SequenceId, u64),
    Assign(SequenceId, NodeId, u64),
    Claim(CallId),
    Result(Option<CallId>),
    Renew(SequenceId, NodeId),
    Retry(CallId),
}

/// One executor's leases: (sequence, node, token) → (granted at, expected end).
type Leases = BTreeMap<(SequenceId, NodeId, u64), (u64, u64)>;

/// The execution-coordination state machine.
///
/// Execution coordination as a pure state machine ([`Protocol`]): no sockets, no tasks, no
/// clock — time comes in as an argument, randomness (retry jitter) from a seeded generator.
///
/// The flow: a creator submits a sequence ([`Command::Submit`]); it goes to the sequence's
/// replicas — the top `replicas` executors by rendezvous hashing of its id over the live
/// executor view — and the first of them leads it in term 1. The leader leases ready nodes
/// to executors (the rendezvous-preferred one per node with free capacity, critical path
/// first) with signed claim tokens; the executor runs the work ([`Event::Execute`]) and
/// hands in a signed result; the leader checks the token is the node's current one, the
/// work's validation (agreement of several executors, or a proof verified through proof
/// sharing), accepts it, and states the sequence's progress, signed, on
/// `execution/sequence/{sequence_id}` (the replicas keep it). A lease that runs out is
/// re-granted with a higher token after an exponential backoff with jitter, so a late
/// result under the old token is refused; a node that fails `max_attempts` times fails the
/// sequence. When the leader is lost, the next replica by rendezvous takes over in a higher
/// term from what it kept; tokens carry the term in their high bits, so every token of the
/// old term is stale and the old leader's statements are fenced out.
pub struct State {
    config: Config,
    store: Box<dyn ExecStore>,
    key: Keypair,
    local: PeerId,
    outputs: VecDeque<Output<Self>>,
    ids: Ids,
    now_ms: u64,
    rng: ChaCha20Rng,
    view: ExecutorView,
    connected: BTreeSet<PeerId>,
    sequences: HashMap<SequenceId, Tracked>,
    /// Leases held here (running work): token → when it started.
    running: HashMap<(SequenceId, NodeId), (NodeClaimToken, u64)>,
    /// Executors' leases in flight, per executor (as leader): (sequence, node, token) →
    /// (granted at, expected end).
    leases_of: HashMap<PeerId, Leases>,
    /// Highest term seen per sequence (executors that are not replicas).
    terms: HashMap<SequenceId, u64>,
    /// Observed run times (grant to result, ms), averaged, per executor and work kind.
    durations: HashMap<(PeerId, String), f64>,
    /// The same per work kind, over all executors.
    kind_durations: HashMap<String, f64>,

    monitored: BTreeSet<SequenceId>,
    inflight_requests: HashMap<OutboundId, Pending>,
    submissions: HashMap<u64, Submission>,
    next_submission: u64,
    stats: Stats,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("local", &self.local)
            .field("sequences", &self.sequences.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The largest replica set a sequence may name.
pub(crate) const MAX_REPLICAS: usize = 16;

fn offer(sequence: &ExecutionSequence, replicas: &[PeerId]) -> pb::Offer {
    pb::Offer {
        sequence: Some(sequence.to_proto()),
        replicas: replicas.iter().map(|p| p.as_bytes().to_vec()).collect(),
    }
}

fn token_number(term: u64, grant: u32) -> u64 {
    (term << 32) | u64::from(grant)
}

impl State {
    /// A state machine for the node with `key`, keeping its sequences in memory.
    pub fn new(config: Config, key: Keypair) -> Self {
        Self::with_store(config, key, Box::new(MemoryStore::new()))
    }

    /// A state machine that keeps its sequences in `store` and resumes those it kept: a
    /// restarted replica knows their results and terms, and leads them again (in a higher
    /// term) when it is the first live candidate.
    pub fn with_store(config: Config, key: Keypair, store: Box<dyn ExecStore>) -> Self {
        let mut this = Self::empty(config, key, store);
        let kept = match this.store.sequences() {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(target: "causality_exec", error = %e, "reading kept sequences failed");
                Vec::new()
            }
        };
        for sequence in kept {
            let id = sequence.id();
            let Ok(dag) = sequence.validate(&this.config.limits) else {
                tracing::warn!(target: "causality_exec", sequence = %id.short(), "a kept sequence does not validate");
                continue;
            };
            let replicas = this.store.replicas(&id).ok().flatten().unwrap_or_default();
            this.track(sequence, dag, replicas);
            let term = this.store.term(&id).unwrap_or(0);
            let results = this.store.results(&id).unwrap_or_default();
            let statement = this.store.statement(&id).ok().flatten();
            let t = this.sequences.get_mut(&id).expect("tracked");
            t.term = term;
            if let Some(m) = statement {
                t.status = m.status;
                t.last_statement = Some(m);
            }
            for r in results {
                if t.nodes.contains_key(&r.token.node) {
                    t.nodes.insert(r.token.node, NodeState::Done(Box::new(r)));
                }
            }
            this.resolve_all(id);
            let t = this.sequences.get_mut(&id).expect("tracked");
            if t.nodes.exits_resolved() {
                t.status = ExecutionStatus::Completed;
            }
        }
        this
    }

    fn empty(config: Config, key: Keypair, store: Box<dyn ExecStore>) -> Self {
        Self {
            store,
            local: key.peer_id(),
            rng: ChaCha20Rng::seed_from_u64(config.seed),
            config,
            key,
            outputs: VecDeque::new(),
            ids: Ids::default(),
            now_ms: 0,
            view: Arc::default(),
            connected: BTreeSet::new(),
            sequences: HashMap::new(),
            running: HashMap::new(),
            leases_of: HashMap::new(),
            terms: HashMap::new(),
            durations: HashMap::new(),
            kind_durations: HashMap::new(),

            monitored: BTreeSet::new(),
            inflight_requests: HashMap::new(),
            submissions: HashMap::new(),
            next_submission: 0,
            stats: Stats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The latest statement of a sequence known here: as its leader, the latest one a
    /// majority of the replicas keeps (the one the network sees).
    pub fn status(&self, id: &SequenceId) -> Option<&ExecutionSequenceMessage> {
        self.sequences.get(id)?.last_statement.as_ref()
    }

    /// Whether this node keeps sequence `id` (as its leader or a replica).
    pub fn keeps(&self, id: &SequenceId) -> bool {
        self.sequences.contains_key(id)
    }

    /// Whether this node leads a sequence, and in which term.
    pub fn leading(&self, id: &SequenceId) -> Option<u64> {
        let t = self.sequences.get(id)?;
        (t.role == Role::Leader).then_some(t.term)
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

    fn request(&mut self, peer: PeerId, request: pb::request::Kind, pending: Pending) {
        let id = self.ids.next_id();
        self.inflight_requests.insert(id, pending);
        self.outputs.push_back(Output::Request {
            id,
            peer,
            protocol: PROTOCOL_NAME.into(),
            body: pb::Request {
                kind: Some(request),
            }
            .encode_to_vec(),
        });
    }

    fn schedule(&mut self, at_ms: u64, timer: Timer) {
        self.outputs.push_back(Output::Schedule { at_ms, timer });
    }

    // ---- who leads ----

    /// Live executors (in view and connected, or this node), in rendezvous order for `id`.
    /// The reachable members of the sequence's replica set, in rendezvous order (this
    /// node counts as reachable).
    fn candidates(&self, id: &SequenceId) -> Vec<PeerId> {
        let set = match self.sequences.get(id) {
            Some(t) => t.replica_set.clone(),
            None => self.replica_set(id),
        };
        set.into_iter()
            .filter(|p| *p == self.local || self.connected.contains(p))
            .collect()
    }

    /// The sequence's replica set: its top `replicas` executors by rendezvous over the
    /// whole view, reachable or not (so both sides of a partition name the same set).
    fn replica_set(&self, id: &SequenceId) -> Vec<PeerId> {
        let all: Vec<[u8; 32]> = self.view.keys().map(|p| *p.as_bytes()).collect();
        Rendezvous::for_epoch(0)
            .top_k(
                id.as_bytes(),
                &all,
                self.config.replicas.clamp(1, MAX_REPLICAS),
            )
            .into_iter()
            .filter_map(|b| PeerId::from_bytes(b).ok())
            .collect()
    }

    /// Whether this node reaches a majority of the sequence's replica set (itself
    /// counted): a leader needs it to grant leases and accept results, a replica to take
    /// over. The two sides of a partition cannot both reach a majority of one set, so
    /// they cannot both lead and accept a node twice; the minority side waits for the
    /// heal. With no executors in view there is nothing to be split from.
    fn has_quorum(&self, t: &Tracked) -> bool {
        if t.replica_set.is_empty() {
            return true;
        }
        let live = t
            .replica_set
            .iter()
            .filter(|p| **p == self.local || self.connected.contains(*p))
            .count();
        2 * live > t.replica_set.len()
    }

    fn is_executor(&self) -> bool {
        !self.config.executor.kinds.is_empty()
    }

    // ---- submitting ----

    fn submit(&mut self, sequence: ExecutionSequence, call: Option<CallId>) {
        let dag = match sequence.validate(&self.config.limits) {
            Ok(d) => d,
            Err(e) => return self.reply(call, Reply::Submitted(Err(e.into()))),
        };
        let bytes = sequence.encode();
        if bytes.len() > self.config.limits.max_sequence_bytes {
            return self.reply(
                call,
                Reply::Submitted(Err(SequenceError::TooLarge("bytes").into())),
            );
        }
        let id = sequence.id();
        let set = match self.sequences.get(&id) {
            Some(t) => t.replica_set.clone(),
            None => self.replica_set(&id),
        };
        if set.is_empty() {
            return self.reply(call, Reply::Submitted(Err(ExecError::NoLeader)));
        }
        // Kept only once a majority of the replica set holds it: any majority that later
        // elects a leader then includes a holder, whichever side of a partition it is on.
        let need = set.len() / 2 + 1;
        let reachable = self.candidates(&id);
        if reachable.len() < need {
            tracing::info!(target: "causality_exec", sequence = %id.short(), reachable = reachable.len(), replicas = set.len(), "too few replicas within reach to submit");
            return self.reply(
                call,
                Reply::Submitted(Err(ExecError::NoQuorum {
                    reached: 0,
                    replicas: set.len(),
                })),
            );
        }
        let here = reachable.contains(&self.local);
        if here {
            self.accept_sequence(sequence.clone(), dag, set.clone());
        }
        let remote: Vec<PeerId> = reachable.into_iter().filter(|p| *p != self.local).collect();
        let have = usize::from(here);
        let call = if have >= need {
            self.reply(call, Reply::Submitted(Ok(id)));
            None
        } else {
            call
        };
        let submission = self.next_submission;
        self.next_submission += 1;
        self.submissions.insert(
            submission,
            Submission {
                call,
                need,
                have,
                outstanding: remote.len(),
                replicas: set.len(),
                refusal: None,
            },
        );
        let offer = offer(&sequence, &set);
        for p in remote {
            self.request(
                p,
                pb::request::Kind::Offer(offer.clone()),
                Pending::Submit { submission, id },
            );
        }
    }

    /// Keeps a validated sequence as a replica; leads it if this node is first.
    fn accept_sequence(&mut self, sequence: ExecutionSequence, dag: Dag, replicas: Vec<PeerId>) {
        let id = sequence.id();
        if self.sequences.contains_key(&id) {
            return;
        }
        if let Err(e) = self.store.put_sequence(&sequence) {
            tracing::error!(target: "causality_exec", sequence = %id.short(), error = %e, "keeping a sequence failed");
        }
        if let Err(e) = self.store.put_replicas(&id, &replicas) {
            tracing::error!(target: "causality_exec", sequence = %id.short(), error = %e, "keeping a replica set failed");
        }
        self.track(sequence, dag, replicas);
        self.check_leadership(id);
    }

    /// Starts tracking a validated sequence as a replica.
    /// Its replica set is fixed from then on (computed from the view if `replicas` is
    /// empty, once the view names executors).
    fn track(&mut self, sequence: ExecutionSequence, dag: Dag, replicas: Vec<PeerId>) {
        let id = sequence.id();
        let nodes = sequence
            .nodes
            .keys()
            .map(|n| {
                let ready = dag.preds.get(n).is_none_or(Vec::is_empty);
                (
                    *n,
                    if ready {
                        NodeState::Ready
                    } else {
                        NodeState::Waiting
                    },
                )
            })
            .collect();
        let nodes = Nodes::new(nodes, dag.rank.clone(), &sequence.exits);
        let replica_set = if replicas.is_empty() {
            self.replica_set(&id)
        } else {
            replicas
        };
        self.sequences.insert(
            id,
            Tracked {
                sequence,
                dag,
                role: Role::Replica,
                term: 0,
                leader: None,
                leader_lost_at: None,
                replica_set,
                status: ExecutionStatus::Pending,
                nodes,
                attempts: BTreeMap::new(),
                grants: BTreeMap::new(),
                avoid: BTreeMap::new(),
                hedges: BTreeMap::new(),
                votes: BTreeMap::new(),
                unstated: Vec::new(),
                status_scheduled: false,
                statement_seq: 0,
                last_statement: None,
                failures: BTreeMap::new(),
                holders: BTreeSet::from([self.local]),
                canvass: BTreeSet::new(),
                answered: 0,
                canvass_until: 0,
                promised: 0,
                keeping: None,
                restate: false,
            },
        );
        self.outputs
            .push_back(Output::Subscribe(sequence_topic(&id)));
    }

    /// Takes the lead of `id` when no reachable leader holds it, this node reaches a
    /// majority of the replica set, and its turn came: the first reachable member of the
    /// set leads a new sequence at once, the `r`-th after `r` takeover delays; after a
    /// lost leader each waits one delay more. A member that does not hold the sequence
    /// never leads, and the next one's turn comes. Before leading, it canvasses the
    /// reachable members ([`State::canvass`]): a later term there makes it follow instead.
    /// A leader that loses the majority steps down at once: it accepts nothing more, and
    /// leads again only through a new canvass and a new term.
    fn check_leadership(&mut self, id: SequenceId) {
        let candidates = self.candidates(&id);
        let Some(t) = self.sequences.get(&id) else {
            return;
        };
        if t.status.is_final() {
            return;
        }
        match t.role {
            Role::Leader if !self.has_quorum(t) => return self.step_down(id),
            Role::Candidate if !self.has_quorum(t) => {
                let t = self.sequences.get_mut(&id).expect("tracked");
                t.role = Role::Replica;
                t.canvass.clear();
                t.leader_lost_at = Some(self.now_ms);
                return;
            }
            Role::Candidate => {
                // Members that went out of reach will not answer; a canvass past its
                // deadline ends with the answers it has.
                let t = self.sequences.get_mut(&id).expect("tracked");
                let connected = &self.connected;
                t.canvass.retain(|p| connected.contains(p));
                if t.canvass.is_empty() || self.now_ms >= t.canvass_until {
                    self.conclude_canvass(id);
                }
                return;
            }
            Role::Leader => return,
            Role::Replica => {}
        }
        let leader_alive = t
            .leader
            .is_some_and(|l| l == self.local || self.connected.contains(&l));
        // A term was led before (its leader may be unknown here after a restart).
        let had_leader = t.leader.is_some() || t.term > 0;
        let lost_at = t.leader_lost_at;
        if leader_alive {
            if lost_at.is_some() {
                self.sequences.get_mut(&id).expect("tracked").leader_lost_at = None;
            }
            return;
        }
        let Some(rank) = candidates.iter().position(|p| *p == self.local) else {
            return;
        };
        if !self.has_quorum(t) {
            return;
        }
        // A leader out of reach may only be reconnecting (after a heal, connections come
        // back one by one): wait a delay before taking over, and one per member ahead.
        let turns = rank as u64 + u64::from(had_leader);
        let delay = turns * self.config.takeover_ms;
        let since = match lost_at {
            Some(at) => at,
            None => {
                self.sequences.get_mut(&id).expect("tracked").leader_lost_at = Some(self.now_ms);
                self.now_ms
            }
        };
        if self.now_ms < since + delay {
            self.schedule(since + delay, Timer::Takeover(id));
            return;
        }
        self.canvass(id, candidates);
    }

    /// Asks the reachable members of the replica set what they hold of `id` before
    /// leading it: one that knows a later term makes this node follow that term's leader;
    /// the results they kept are adopted. It leads (in the next term) once every member
    /// asked has answered and the answers with this node make a majority of the set — so
    /// a node back from a partition, or restarted, learns of the term led meanwhile
    /// before it grants or accepts anything.
    fn canvass(&mut self, id: SequenceId, candidates: Vec<PeerId>) {
        let others: Vec<PeerId> = candidates
            .into_iter()
            .filter(|p| *p != self.local)
            .collect();
        if others.is_empty() {
            return self.lead(id);
        }
        tracing::debug!(target: "causality_exec", sequence = %id.short(), asked = others.len(), "canvassing the replicas before leading");
        let t = self.sequences.get_mut(&id).expect("tracked");
        t.role = Role::Candidate;
        t.canvass = others.iter().copied().collect();
        t.answered = 0;
        t.canvass_until = self.now_ms + self.config.takeover_ms;
        // This node counts among the majority it asks: it keeps no earlier term either.
        let term = t.term + 1;
        t.promised = t.promised.max(term);
        let at = t.canvass_until;
        self.schedule(at, Timer::Takeover(id));
        for p in others {
            self.request(
                p,
                pb::request::Kind::Canvass(pb::Canvass {
                    sequence_id: id.as_bytes().to_vec(),
                    term,
                }),
                Pending::Canvass(id),
            );
        }
    }

    /// A canvassed member's answer: what it holds (its last statement, if any, and its
    /// results), `None` when it does not hold the sequence, or a failure.
    #[allow(clippy::type_complexity)]
    fn canvassed(
        &mut self,
        id: SequenceId,
        peer: PeerId,
        answer: Result<Option<(Option<ExecutionSequenceMessage>, Vec<NodeResult>)>, ()>,
    ) {
        let Some(t) = self.sequences.get_mut(&id) else {
            return;
        };
        let asked = t.canvass.remove(&peer);
        let answered = answer.is_ok();
        match answer {
            Ok(Some((statement, results))) => {
                t.holders.insert(peer);
                if let Some(m) = statement
                    && m.term > t.term
                {
                    tracing::info!(target: "causality_exec", sequence = %id.short(), term = m.term, leader = %m.leader.short(), "a replica knows a later term; following it");
                    self.on_statement(m, peer);
                }
                self.merge_results(id, results);
            }
            // It lacks the sequence: hand it over (a new sequence is on its way to it
            // from the submitter).
            Ok(None) if t.term > 0 => self.forward(id, peer),
            Ok(None) => {}
            Err(()) => {}
        }
        let Some(t) = self.sequences.get_mut(&id) else {
            return;
        };
        if !asked || t.role != Role::Candidate {
            // Followed a later term: its leader may itself be out of reach.
            return self.check_leadership(id);
        }
        if answered {
            t.answered += 1;
        }
        if t.canvass.is_empty() {
            self.conclude_canvass(id);
        }
    }

    /// Ends a canvass: leads when the answers with this node make a majority of the
    /// replica set, else tries again after a delay.
    fn conclude_canvass(&mut self, id: SequenceId) {
        let Some(t) = self.sequences.get_mut(&id) else {
            return;
        };
        if t.role != Role::Candidate {
            return;
        }
        if 2 * (t.answered + 1) > t.replica_set.len() {
            return self.lead(id);
        }
        tracing::debug!(target: "causality_exec", sequence = %id.short(), answered = t.answered, "too few replicas answered the canvass");
        t.role = Role::Replica;
        t.canvass.clear();
        t.leader_lost_at = Some(self.now_ms);
        let at = self.now_ms + self.config.takeover_ms;
        self.schedule(at, Timer::Takeover(id));
    }

    /// Leads `id` in the next term.
    fn lead(&mut self, id: SequenceId) {
        let t = self.sequences.get_mut(&id).expect("tracked");
        let took_over = t.term > 0;
        let term = t.term + 1;
        tracing::debug!(target: "causality_exec", sequence = %id.short(), term, "leading");
        t.role = Role::Leader;
        t.term = term;
        t.leader = Some(self.local);
        t.leader_lost_at = None;
        t.canvass.clear();
        t.status = ExecutionStatus::Running;
        t.statement_seq = 0;
        // Leases of earlier terms are unknown here: those nodes are ready again (their
        // old tokens are stale by their term).
        let ids: Vec<NodeId> = t.nodes.keys().copied().collect();
        for n in ids {
            let state = t.nodes.get(&n).cloned().expect("node");
            if matches!(
                state,
                NodeState::Leased(_) | NodeState::Validating(_) | NodeState::Backoff
            ) {
                t.nodes.insert(n, NodeState::Ready);
            }
        }
        if took_over {
            self.stats.takeovers += 1;
            tracing::info!(target: "causality_exec", sequence = %id.short(), term, "took over a sequence from a lost leader");
            // Members that came within reach while no one led may lack the sequence.
            let lacking: Vec<PeerId> = t
                .replica_set
                .iter()
                .copied()
                .filter(|p| !t.holders.contains(p) && self.connected.contains(p))
                .collect();
            for p in lacking {
                self.forward(id, p);
            }
        }
        if let Err(e) = self.store.put_term(&id, term) {
            tracing::error!(target: "causality_exec", sequence = %id.short(), error = %e, "keeping a term failed");
        }
        self.event(Event::Leading {
            sequence_id: id,
            term,
        });
        self.resolve_all(id);
        self.complete_if_done(id);
        self.state_now(id);
        self.dispatch(id);
    }

    /// A leader cut off from most of the replica set stops leading at once: the majority
    /// side may elect another leader meanwhile, and what this node would accept could be
    /// accepted there too. Its leases' slots are freed; their tokens are stale to the
    /// next term.
    fn step_down(&mut self, id: SequenceId) {
        let t = self.sequences.get_mut(&id).expect("tracked");
        t.role = Role::Replica;
        t.leader = None;
        t.leader_lost_at = Some(self.now_ms);
        t.hedges.clear();
        t.votes.clear();
        // A statement not kept by a majority is not published; its results are stated
        // again by whoever leads next if they hold (a later term's results replace them).
        t.abandon_keeping();
        t.restate = false;
        for leases in self.leases_of.values_mut() {
            leases.retain(|(s, _, _), _| *s != id);
        }
        self.stats.step_downs += 1;
        tracing::info!(target: "causality_exec", sequence = %id.short(), term = t.term, "cut off from most of the replica set; stepping down");
    }

    /// Hands the sequence to a member of its replica set that may lack it.
    fn forward(&mut self, id: SequenceId, peer: PeerId) {
        let Some(t) = self.sequences.get(&id) else {
            return;
        };
        let inflight = self
            .inflight_requests
            .values()
            .any(|p| matches!(p, Pending::Forward(s, p) if *s == id && *p == peer));
        if t.holders.contains(&peer) || inflight {
            return;
        }
        let offer = offer(&t.sequence, &t.replica_set);
        self.request(
            peer,
            pb::request::Kind::Offer(offer),
            Pending::Forward(id, peer),
        );
    }

    /// A peer came within reach: the sequences this node leads go to it if it is one of
    /// their replicas and may lack them.
    fn forward_to(&mut self, peer: PeerId) {
        let ids: Vec<SequenceId> = self
            .sequences
            .iter()
            .filter(|(_, t)| {
                t.role == Role::Leader
                    && !t.status.is_final()
                    && t.replica_set.contains(&peer)
                    && !t.holders.contains(&peer)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.forward(id, peer);
        }
    }

    // ---- leading ----

    /// As leader: the sequence is complete once its exits are resolved (results adopted
    /// from other replicas may resolve them, not only results accepted here).
    fn complete_if_done(&mut self, id: SequenceId) {
        if let Some(t) = self.sequences.get_mut(&id)
            && t.role == Role::Leader
            && !t.status.is_final()
            && t.nodes.exits_resolved()
        {
            t.status = ExecutionStatus::Completed;
            self.stats.completed += 1;
        }
    }

    /// Marks nodes ready or skipped as their predecessors resolve (all of them).
    fn resolve_all(&mut self, id: SequenceId) {
        let Some(t) = self.sequences.get(&id) else {
            return;
        };
        let all: Vec<NodeId> = t.dag.order.clone();
        self.resolve(id, all);
    }

    /// Marks the successors of newly resolved nodes ready or skipped, transitively.
    fn resolve_after(&mut self, id: SequenceId, resolved: NodeId) {
        let Some(t) = self.sequences.get(&id) else {
            return;
        };
        let next: Vec<NodeId> = t
            .dag
            .succs
            .get(&resolved)
            .map(|es| es.iter().map(|&e| t.sequence.edges[e].to).collect())
            .unwrap_or_default();
        self.resolve(id, next);
    }

    fn resolve(&mut self, id: SequenceId, candidates: Vec<NodeId>) {
        let Some(t) = self.sequences.get_mut(&id) else {
            return;
        };
        let mut work: VecDeque<NodeId> = candidates.into();
        while let Some(n) = work.pop_front() {
            if !matches!(t.nodes[&n], NodeState::Waiting) {
                continue;
            }
            let preds = t.dag.preds.get(&n).map_or(&[][..], Vec::as_slice);
            if !preds
                .iter()
                .all(|&e| t.nodes[&t.sequence.edges[e].from].resolved())
            {
                continue;
            }
            let taken = preds.iter().any(|&e| {
                let edge = &t.sequence.edges[e];
                match &t.nodes[&edge.from] {
                    NodeState::Done(r) => {
                        edge.condition.as_ref().is_none_or(|c| c.holds(&r.output))
                    }
                    _ => false,
                }
            });
            if taken {
                t.nodes.insert(n, NodeState::Ready);
            } else {
                t.nodes.insert(n, NodeState::Skipped);
                // A skipped node resolves its successors too.
                if let Some(es) = t.dag.succs.get(&n) {
                    work.extend(es.iter().map(|&e| t.sequence.edges[e].to));
                }
            }
        }
    }

    /// The estimated run time of `kind` on `executor`: its own average, else the kind's,
    /// else the creator's estimate.
    fn estimate(&self, executor: &PeerId, kind: &str, work: &WorkSpec) -> u64 {
        if let Some(e) = self.durations.get(&(*executor, kind.to_owned())) {
            return e.round() as u64;
        }
        match self.kind_durations.get(kind) {
            Some(e) => e.round() as u64,
            None => work.estimate_ms.max(1),
        }
    }

    fn observe(&mut self, executor: PeerId, kind: &str, ms: u64) {
        for e in [
            self.durations
                .entry((executor, kind.to_owned()))
                .or_insert(ms as f64),
            self.kind_durations
                .entry(kind.to_owned())
                .or_insert(ms as f64),
        ] {
            *e = 0.7 * *e + 0.3 * ms as f64;
        }
    }

    /// Leases ready nodes, critical path first. With predictive scheduling each goes where
    /// it is estimated to finish first (an executor busy now may be the better choice, and
    /// the node then waits for it); otherwise to the rendezvous-preferred executor with
    /// free capacity.
    fn dispatch(&mut self, id: SequenceId) {
        let Some(t) = self.sequences.get(&id) else {
            return;
        };
        if t.role != Role::Leader || t.status.is_final() || !self.has_quorum(t) {
            return;
        }
        // The view is shared: borrow from a handle on it rather than copy each executor's
        // kinds on every dispatch.
        let view = Arc::clone(&self.view);
        let executors: Vec<(PeerId, &ExecutorInfo)> = view
            .iter()
            .filter(|(p, _)| **p == self.local || self.connected.contains(*p))
            .map(|(p, i)| (*p, i))
            .collect();
        // At most as many nodes as there are free slots can be leased now.
        let free_slots: usize = executors
            .iter()
            .map(|(p, i)| i.capacity.max(1).saturating_sub(self.inflight(p)) as usize)
            .sum();
        let ready = t.nodes.ready(free_slots.max(1) * 4);
        if ready.is_empty() {
            return;
        }
        let r = Rendezvous::for_epoch(0);
        // Estimated next free time of executors a node chose to wait for, this round.
        let mut planned: HashMap<PeerId, u64> = HashMap::new();
        for n in ready {
            // Stop early when nobody has a free slot.
            if executors
                .iter()
                .all(|(p, i)| self.inflight(p) >= i.capacity.max(1))
            {
                return;
            }
            let t = &self.sequences[&id];
            let work = &t.sequence.nodes[&n];
            let avoid = t.avoid.get(&n);
            let voted: BTreeSet<PeerId> = t
                .votes
                .get(&n)
                .map(|v| v.iter().map(|r| r.token.holder).collect())
                .unwrap_or_default();
            let able: Vec<&(PeerId, &ExecutorInfo)> = executors
                .iter()
                .filter(|(p, i)| i.kinds.contains(&work.kind) && !voted.contains(p))
                .collect();
            if able.is_empty() {
                continue;
            }
            let free = |p: &PeerId, cap: u32| self.inflight(p) < cap.max(1);
            let choice = if self.config.predictive {
                // Earliest estimated finish: free now, or when its soonest lease ends.
                let mut best: Option<(u64, bool, PeerId)> = None;
                for (p, i) in &able {
                    let avoided = avoid.is_some_and(|a| a.contains(p));
                    let start = if free(p, i.capacity) {
                        self.now_ms
                    } else {
                        self.busy_until(p).max(self.now_ms)
                    };
                    // Nodes already waiting for it in this round go first.
                    let start = start.max(planned.get(p).copied().unwrap_or(0));
                    let finish = start + self.estimate(p, &work.kind, work);
                    let key = (finish, avoided, *p);
                    if best.is_none_or(|b| (key.1, key.0, key.2) < (b.1, b.0, b.2)) {
                        best = Some(key);
                    }
                }
                match best {
                    Some((_, _, p))
                        if able.iter().any(|(q, i)| *q == p && free(q, i.capacity))
                            && !planned.contains_key(&p) =>
                    {
                        Some(p)
                    }
                    Some((finish, _, p)) => {
                        // Worth waiting for: reserve its next slot for this node, so the
                        // next ones look elsewhere.
                        planned.insert(p, finish);
                        None
                    }
                    None => None,
                }
            } else {
                let mut key = id.as_bytes().to_vec();
                key.extend_from_slice(&n.to_le_bytes());
                let mut ordered: Vec<(u64, PeerId, u32)> = able
                    .iter()
                    .map(|(p, i)| (r.score(&key, p.as_bytes()), *p, i.capacity))
                    .collect();
                ordered.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                // Preferred order, executors that failed this node last.
                ordered.sort_by_key(|(_, p, _)| avoid.is_some_and(|a| a.contains(p)));
                ordered
                    .iter()
                    .find(|(_, p, cap)| free(p, *cap))
                    .map(|(_, p, _)| *p)
            };
            let Some(holder) = choice else { continue };
            self.grant(id, n, holder);
        }
    }

    /// A signed lease on `n` for `holder`, with the node's next token in this term.
    fn new_token(&mut self, id: SequenceId, n: NodeId, holder: PeerId) -> NodeClaimToken {
        let lease_ms = self.config.lease_ms;
        let t = self.sequences.get_mut(&id).expect("tracked");
        let grant = t.grants.entry(n).or_insert(0);
        *grant += 1;
        NodeClaimToken {
            sequence_id: id,
            node: n,
            token: token_number(t.term, *grant),
            term: t.term,
            holder,
            lease_until_ms: self.now_ms + lease_ms,
            leader: self.local,
            signature: [0; 64],
        }
        .sign(&self.key)
    }

    fn grant(&mut self, id: SequenceId, n: NodeId, holder: PeerId) -> NodeClaimToken {
        let token = self.new_token(id, n, holder);
        let t = self.sequences.get_mut(&id).expect("tracked");
        t.nodes.insert(n, NodeState::Leased(token.clone()));
        let work = t.sequence.nodes[&n].clone();
        let inputs = inputs_of(t, n);
        self.stats.grants += 1;
        let estimate = self.estimate(&holder, &work.kind, &work);
        self.hold(&token, estimate);
        self.schedule(token.lease_until_ms + 1, Timer::Lease(id, n, token.token));
        if self.config.hedge_factor > 0 {
            let at = self.now_ms + self.config.hedge_factor * estimate.max(1);
            self.schedule(at, Timer::Hedge(id, n, token.token));
        }
        self.send_work(token.clone(), work, inputs);
        token
    }

    /// Hands leased work to its holder (or runs it here).
    fn send_work(&mut self, token: NodeClaimToken, work: WorkSpec, inputs: Vec<Vec<u8>>) {
        let (id, n, holder) = (token.sequence_id, token.node, token.holder);
        // The node's witness, sealed to the replicas: opened here and sealed again to the
        // holder alone.
        let witness = self
            .sequences
            .get(&id)
            .and_then(|t| t.sequence.witnesses.get(&n))
            .and_then(|sealed| match causality_net::seal::open(sealed, &self.key) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(target: "causality_exec", sequence = %id.short(), node = n, error = %e, "cannot open a witness sealed to the replicas");
                    None
                }
            });
        if holder == self.local {
            self.start_work(token, work, inputs, witness);
        } else {
            let sealed = witness
                .and_then(|w| causality_net::seal::seal(&w, &[holder], &mut self.rng).ok())
                .unwrap_or_default();
            let number = token.token;
            self.request(
                holder,
                pb::request::Kind::Assign(pb::Assignment {
                    token: Some(token.to_proto()),
                    work: Some(work.to_proto()),
                    inputs,
                    witness: sealed,
                }),
                Pending::Assign(id, n, number),
            );
        }
    }

    fn inflight(&self, executor: &PeerId) -> u32 {
        self.leases_of.get(executor).map_or(0, |l| l.len() as u32)
    }

    /// When an executor's soonest lease is estimated to end.
    fn busy_until(&self, executor: &PeerId) -> u64 {
        self.leases_of
            .get(executor)
            .and_then(|l| l.values().map(|(_, end)| *end).min())
            .unwrap_or(self.now_ms)
    }

    fn hold(&mut self, token: &NodeClaimToken, estimate: u64) {
        self.leases_of.entry(token.holder).or_default().insert(
            (token.sequence_id, token.node, token.token),
            (self.now_ms, self.now_ms + estimate),
        );
    }

    /// Frees a lease's slot; returns when it was granted.
    fn release(&mut self, token: &NodeClaimToken) -> Option<u64> {
        let leases = self.leases_of.get_mut(&token.holder)?;
        leases
            .remove(&(token.sequence_id, token.node, token.token))
            .map(|(at, _)| at)
    }

    /// A node ran past its estimate: lease it to a second executor too, within the hedging
    /// budget; the first valid result wins.
    fn hedge(&mut self, id: SequenceId, n: NodeId, token: u64) {
        let Some(t) = self.sequences.get(&id) else {
            return;
        };
        let NodeState::Leased(current) = &t.nodes[&n] else {
            return;
        };
        if current.token != token || t.hedges.contains_key(&n) || t.role != Role::Leader {
            return;
        }
        if !self.has_quorum(t) {
            return;
        }
        let first = current.holder;
        let work = t.sequence.nodes[&n].clone();
        // An executor that already voted on the node does not get to vote again.
        let voted: BTreeSet<PeerId> = t
            .votes
            .get(&n)
            .map(|v| v.iter().map(|r| r.token.holder).collect())
            .unwrap_or_default();
        // Not now (over budget, nobody free): look again one estimate later.
        let again = self.now_ms
            + self.config.hedge_factor.max(1) * self.estimate(&first, &work.kind, &work).max(1);
        if (self.stats.hedges + 1) as f64 > self.config.hedge_budget * self.stats.grants as f64 {
            self.schedule(again, Timer::Hedge(id, n, token));
            return;
        }
        let choice = self
            .view
            .iter()
            .filter(|(p, i)| {
                **p != first
                    && !voted.contains(*p)
                    && (**p == self.local || self.connected.contains(*p))
                    && i.kinds.contains(&work.kind)
                    && self.inflight(p) < i.capacity.max(1)
            })
            .map(|(p, _)| (self.estimate(p, &work.kind, &work), *p))
            .min();
        let Some((estimate, holder)) = choice else {
            self.schedule(again, Timer::Hedge(id, n, token));
            return;
        };
        let second = self.new_token(id, n, holder);
        let t = self.sequences.get_mut(&id).expect("tracked");
        t.hedges.insert(n, second.clone());
        let inputs = inputs_of(t, n);
        self.stats.hedges += 1;
        self.stats.grants += 1;
        tracing::debug!(target: "causality_exec", sequence = %id.short(), node = n, "hedged a straggler");
        self.hold(&second, estimate);
        self.schedule(second.lease_until_ms + 1, Timer::Lease(id, n, second.token));
        self.send_work(second, work, inputs);
    }

    /// A node's attempt failed: retry after a backoff, or fail the sequence.
    fn attempt_failed(
        &mut self,
        id: SequenceId,
        n: NodeId,
        holder: Option<PeerId>,
        reason: FailureReason,
    ) {
        let base = self.config.retry_base_ms;
        let max = self.config.retry_max_ms;
        let Some(t) = self.sequences.get_mut(&id) else {
            return;
        };
        let attempts = t.attempts.entry(n).or_insert(0);
        *attempts += 1;
        let attempts = *attempts;
        if let Some(h) = holder {
            t.avoid.entry(n).or_default().insert(h);
        }
        t.failures.insert(n, reason.to_string());
        tracing::debug!(target: "causality_exec", sequence = %id.short(), node = n, attempts, reason = %reason, "attempt failed");
        if attempts >= t.sequence.max_attempts {
            t.nodes.insert(n, NodeState::Failed(reason.to_string()));
            t.status = ExecutionStatus::Failed;
            self.stats.failed += 1;
            tracing::warn!(target: "causality_exec", sequence = %id.short(), node = n, reason = %reason, "sequence failed");
            self.state_now(id);
            return;
        }
        if reason == FailureReason::LeaseExpired {
            // The lease already waited: re-grant at once, elsewhere.
            t.nodes.insert(n, NodeState::Ready);
            self.stats.retries += 1;
            return;
        }
        t.nodes.insert(n, NodeState::Backoff);
        let exp = base.saturating_mul(1 << (attempts - 1).min(20)).min(max);
        let jitter = self.rng.gen_range(exp / 2..=exp + exp / 2);
        self.stats.retries += 1;
        self.schedule(self.now_ms + jitter, Timer::Retry(id, n));
    }

    fn lease_over(&mut self, id: SequenceId, n: NodeId, token: u64) {
        let Some(t) = self.sequences.get_mut(&id) else {
            return;
        };
        if let Some(h) = t.hedges.get(&n).cloned()
            && h.token == token
        {
            if h.lease_until_ms > self.now_ms {
                self.schedule(h.lease_until_ms + 1, Timer::Lease(id, n, token));
            } else {
                t.hedges.remove(&n);
                self.release(&h);
            }
            return;
        }
        let NodeState::Leased(current) = &t.nodes[&n] else {
            return;
        };
        if current.token != token || t.role != Role::Leader {
            return;
        }
        if current.lease_until_ms <= self.now_ms
            && let Some(h) = t.hedges.remove(&n)
        {
            // The first lease ran out; its hedge carries on as the lease.
            let old = current.clone();
            t.nodes.insert(n, NodeState::Leased(h));
            self.stats.leases_expired += 1;
            self.release(&old);
            return;
        }
        let t = &self.sequences[&id];
        let NodeState::Leased(current) = &t.nodes[&n] else {
            return;
        };
        if current.lease_until_ms > self.now_ms {
            // Renewed meanwhile.
            let at = current.lease_until_ms + 1;
            self.schedule(at, Timer::Lease(id, n, token));
            return;
        }
        let expired = current.clone();
        self.stats.leases_expired += 1;
        self.release(&expired);
        self.attempt_failed(id, n, Some(expired.holder), FailureReason::LeaseExpired);
        self.dispatch(id);
    }

    fn retry(&mut self, id: SequenceId, n: NodeId) {
        let Some(t) = self.sequences.get_mut(&id) else {
            return;
        };
        if t.nodes.get(&n) == Some(&NodeState::Backoff) {
            t.nodes.insert(n, NodeState::Ready);
            self.dispatch(id);
        }
    }

    /// Judges a result handed to this leader; `signed_here` when this node made and signed
    /// it for a token it holds itself (its signature is then right by construction).
    fn on_result(
        &mut self,
        result: NodeResult,
        from: PeerId,
        signed_here: bool,
    ) -> Result<(), SubmissionError> {
        // The token is checked against the one this leader granted (below); only the
        // holder's signature needs checking here.
        let signed = signed_here && result.token.holder == self.local || result.verify_holder();
        if !signed || result.token.holder != from && from != self.local {
            self.stats.refused += 1;
            return Err(SubmissionError::Forged);
        }
        let id = result.token.sequence_id;
        let n = result.token.node;
        let Some(t) = self.sequences.get(&id) else {
            return Err(SubmissionError::UnknownSequence);
        };
        if t.role != Role::Leader || result.token.leader != self.local {
            self.stats.refused += 1;
            return Err(SubmissionError::StaleToken {
                got: result.token.token,
                current: token_number(t.term, 0),
            });
        }
        if !self.has_quorum(t) {
            self.stats.refused += 1;
            return Err(SubmissionError::NoQuorum);
        }
        let Some(state) = t.nodes.get(&n) else {
            return Err(SubmissionError::Unclaimed(n));
        };
        let hedge = t.hedges.get(&n);
        let live =
            |c: &NodeClaimToken| c.token == result.token.token && c.holder == result.token.holder;
        match state {
            NodeState::Leased(current) if live(current) || hedge.is_some_and(live) => {}
            NodeState::Done(done) if done.token.token == result.token.token => return Ok(()),
            NodeState::Leased(current) | NodeState::Validating(current) => {
                self.stats.refused += 1;
                return Err(SubmissionError::StaleToken {
                    got: result.token.token,
                    current: current.token,
                });
            }
            NodeState::Done(done) => {
                self.stats.refused += 1;
                return Err(SubmissionError::StaleToken {
                    got: result.token.token,
                    current: done.token.token,
                });
            }
            _ => {
                self.stats.refused += 1;
                return Err(SubmissionError::Unclaimed(n));
            }
        }
        let work = t.sequence.nodes[&n].clone();
        // The race is over for this node: free the other lease too (a hedge, or the first).
        let other = match (&t.nodes[&n], t.hedges.get(&n)) {
            (NodeState::Leased(c), Some(h)) => Some(if c.token == result.token.token {
                h.clone()
            } else {
                c.clone()
            }),
            _ => None,
        };
        let granted = self.release(&result.token);
        if let Some(other) = other
            && result.error.is_none()
        {
            self.release(&other);
            self.sequences
                .get_mut(&id)
                .expect("tracked")
                .hedges
                .remove(&n);
        }
        if result.error.is_none()
            && let Some(at) = granted
        {
            self.observe(
                result.token.holder,
                &work.kind,
                self.now_ms.saturating_sub(at),
            );
        }
        if let Some(error) = &result.error {
            // The executor could not run it: retry elsewhere.
            self.attempt_failed(
                id,
                n,
                Some(result.token.holder),
                FailureReason::Executor(error.clone()),
            );
            self.dispatch(id);
            return Ok(());
        }
        if let (Some(key), Some(proof_id)) = (work.proof_key, result.proof_id) {
            let t = self.sequences.get_mut(&id).expect("tracked");
            t.nodes
                .insert(n, NodeState::Validating(result.token.clone()));
            t.votes.insert(n, vec![result.clone()]);
            self.event(Event::ProofNeeded {
                token: result.token.clone(),
                proof_id,
                key,
                public_inputs: work.input.clone(),
                peer: result.token.holder,
            });
            return Ok(());
        }
        if work.proof_key.is_some() {
            let reason = "the work needs a proof and the result has none".to_owned();
            self.invalid(id, n, result, reason.clone());
            return Err(SubmissionError::Invalid(reason));
        }
        if work.agreement > 1 {
            return self.vote(id, n, result, work.agreement);
        }
        self.accept(id, n, result);
        Ok(())
    }

    /// Counts `result` towards agreement on node `n`. Votes are kept until `needed` of
    /// them agree; each comes from an executor that has not voted on the node yet. With
    /// fewer than `needed` liars, `2 · needed − 1` votes always hold `needed` agreeing
    /// honest ones, so a disagreement is not a failure before that many votes (or before
    /// the executors able to vote run out): otherwise a single liar could fail every
    /// node it is leased. Once `needed` agree, the outvoted are penalized.
    fn vote(
        &mut self,
        id: SequenceId,
        n: NodeId,
        result: NodeResult,
        needed: u32,
    ) -> Result<(), SubmissionError> {
        let t = self.sequences.get_mut(&id).expect("tracked");
        let votes = t.votes.entry(n).or_default();
        if votes.iter().any(|v| v.token.holder == result.token.holder) {
            // One executor, one vote: a second lease of the same node (a hedge, a retry)
            // must not let it agree with itself.
            tracing::debug!(target: "causality_exec", sequence = %id.short(), node = n, holder = %result.token.holder.short(), "a second vote from one executor is not counted");
            t.nodes.insert(n, NodeState::Ready);
            self.dispatch(id);
            return Ok(());
        }
        votes.push(result.clone());
        let agreeing = votes.iter().filter(|v| v.output == result.output).count();
        if agreeing as u32 >= needed {
            let votes = t.votes.remove(&n).unwrap_or_default();
            let outvoted: BTreeSet<PeerId> = votes
                .iter()
                .filter(|v| v.output != result.output)
                .map(|v| v.token.holder)
                .collect();
            for holder in outvoted {
                self.stats.refused += 1;
                self.penalize(
                    holder,
                    Severity::Moderate,
                    format!("invalid result: outvoted by {needed} agreeing executors on node {n}"),
                );
                self.publish_verification(id, n, &format!("{} was outvoted", holder.short()));
            }
            self.accept(id, n, result);
            return Ok(());
        }
        let kind = &t.sequence.nodes[&n].kind;
        let voted: BTreeSet<PeerId> = votes.iter().map(|v| v.token.holder).collect();
        let can_still_vote = self
            .view
            .iter()
            .any(|(p, i)| i.kinds.contains(kind) && !voted.contains(p));
        let most = 2 * needed.max(1) - 1;
        if votes.len() as u32 >= most || !can_still_vote {
            // More disagreement than the liars agreement is set to outvote: start over
            // with other executors.
            let holders: Vec<PeerId> = votes.iter().map(|v| v.token.holder).collect();
            t.votes.remove(&n);
            for h in holders {
                t.avoid.entry(n).or_default().insert(h);
            }
            self.publish_verification(id, n, "executors disagree");
            self.attempt_failed(
                id,
                n,
                None,
                FailureReason::Invalid("executors disagree".into()),
            );
        } else {
            t.nodes.insert(n, NodeState::Ready);
        }
        self.dispatch(id);
        Ok(())
    }

    fn invalid(&mut self, id: SequenceId, n: NodeId, result: NodeResult, reason: String) {
        self.stats.refused += 1;
        self.penalize(
            result.token.holder,
            Severity::Moderate,
            format!("invalid result: {reason}"),
        );
        self.publish_verification(id, n, &reason);
        self.attempt_failed(
            id,
            n,
            Some(result.token.holder),
            FailureReason::Invalid(reason),
        );
        self.dispatch(id);
    }

    fn publish_verification(&mut self, id: SequenceId, n: NodeId, reason: &str) {
        self.outputs.push_back(Output::Publish {
            topic: topic(VERIFICATION_TOPIC, id.to_string()),
            payload_type: "text/plain".into(),
            payload: format!("node {n}: {reason}").into_bytes(),
        });
    }

    fn proof_checked(&mut self, token: NodeClaimToken, verdict: Result<(), String>) {
        let id = token.sequence_id;
        let n = token.node;
        let Some(t) = self.sequences.get_mut(&id) else {
            return;
        };
        if t.role != Role::Leader || t.nodes.get(&n) != Some(&NodeState::Validating(token.clone()))
        {
            return;
        }
        let Some(result) = t.votes.remove(&n).and_then(|mut v| v.pop()) else {
            return;
        };
        match verdict {
            Ok(()) => self.accept(id, n, result),
            Err(reason) => self.invalid(id, n, result, reason),
        }
    }

    fn accept(&mut self, id: SequenceId, n: NodeId, result: NodeResult) {
        if let Err(e) = self.store.put_results(std::slice::from_ref(&result)) {
            tracing::error!(target: "causality_exec", sequence = %id.short(), error = %e, "keeping a result failed");
        }
        tracing::debug!(target: "causality_exec", sequence = %id.short(), node = n, token = result.token.token, "accepted a result");
        let t = self.sequences.get_mut(&id).expect("tracked");
        t.nodes.insert(n, NodeState::Done(Box::new(result.clone())));
        t.unstated.push(result.clone());
        self.stats.accepted += 1;
        self.outputs.push_back(Output::Publish {
            topic: topic(NODE_TOPIC, format!("{id}:{n}")),
            payload_type: RESULT_TYPE.into(),
            payload: result.to_proto().encode_to_vec(),
        });
        self.resolve_after(id, n);
        let t = self.sequences.get_mut(&id).expect("tracked");
        if t.nodes.exits_resolved() {
            t.status = ExecutionStatus::Completed;
            self.stats.completed += 1;
            self.state_now(id);
            return;
        }
        if !t.status_scheduled {
            t.status_scheduled = true;
            let at = self.now_ms + self.config.status_interval_ms;
            self.schedule(at, Timer::Status(id));
        }
        self.dispatch(id);
    }

    /// States the sequence's progress now (signed), and ends it on the result topic when
    /// final.
    fn state_now(&mut self, id: SequenceId) {
        let Some(t) = self.sequences.get_mut(&id) else {
            return;
        };
        if t.role != Role::Leader {
            return;
        }
        t.status_scheduled = false;
        if t.keeping.is_some() {
            t.restate = true;
            return;
        }
        t.statement_seq += 1;
        tracing::trace!(target: "causality_exec", sequence = %id.short(), seq = t.statement_seq, "stating");
        let mut completed = Vec::new();
        let mut pending = Vec::new();
        let mut failed = Vec::new();
        let mut skipped = Vec::new();
        for (n, s) in t.nodes.iter() {
            match s {
                NodeState::Done(_) => completed.push(*n),
                NodeState::Skipped => skipped.push(*n),
                NodeState::Failed(r) => failed.push((*n, r.clone())),
                _ => pending.push(*n),
            }
        }
        let message = ExecutionSequenceMessage {
            sequence_id: id,
            status: t.status,
            term: t.term,
            leader: self.local,
            completed_nodes: completed,
            pending_nodes: pending,
            failed_nodes: failed,
            skipped_nodes: skipped,
            results: std::mem::take(&mut t.unstated),
            seq: t.statement_seq,
            signature: [0; 64],
        }
        .sign(&self.key);
        // Published only once a majority of the replica set keeps it: a later leader
        // canvasses a majority, so it learns every result published.
        let need = t.replica_set.len() / 2 + 1;
        let others: Vec<PeerId> = t
            .replica_set
            .iter()
            .copied()
            .filter(|p| *p != self.local && self.connected.contains(p))
            .collect();
        if need <= 1 {
            return self.publish_statement(message);
        }
        t.keeping = Some(Keeping {
            message: message.clone(),
            need,
            acks: 1,
            outstanding: others.len(),
        });
        if others.len() + 1 < need {
            return self.kept(id, message.seq, None);
        }
        let seq = message.seq;
        let proto = message.to_proto();
        for p in others {
            self.request(
                p,
                pb::request::Kind::Keep(proto.clone()),
                Pending::Keep(id, seq),
            );
        }
    }

    /// A replica's answer to a keep request (`None`: no answer is coming).
    fn kept(&mut self, id: SequenceId, seq: u64, ok: Option<bool>) {
        let Some(t) = self.sequences.get_mut(&id) else {
            return;
        };
        let Some(k) = t.keeping.as_mut().filter(|k| k.message.seq == seq) else {
            return;
        };
        if let Some(ok) = ok {
            k.outstanding -= 1;
            k.acks += usize::from(ok);
        }
        if k.acks >= k.need {
            let k = t.keeping.take().expect("present");
            self.publish_statement(k.message);
        } else if k.outstanding == 0 || ok.is_none() {
            // Not kept: its results go out with the next statement.
            tracing::debug!(target: "causality_exec", sequence = %id.short(), seq, acks = k.acks, need = k.need, "a statement was not kept by a majority");
            t.abandon_keeping();
            if !t.status_scheduled {
                t.status_scheduled = true;
                let at = self.now_ms + self.config.status_interval_ms;
                self.schedule(at, Timer::Status(id));
            }
        } else {
            return;
        }
        let t = self.sequences.get_mut(&id).expect("tracked");
        if std::mem::take(&mut t.restate) {
            self.state_now(id);
        }
    }

    /// Publishes a statement a majority keeps: on the sequence topic, on the result topic
    /// when final, and to monitors.
    fn publish_statement(&mut self, message: ExecutionSequenceMessage) {
        let id = message.sequence_id;
        tracing::trace!(target: "causality_exec", sequence = %id.short(), seq = message.seq, status = ?message.status, "publishing a statement");
        if let Some(t) = self.sequences.get_mut(&id) {
            t.last_statement = Some(message.clone());
            if let Err(e) = self.store.put_statement(&message) {
                tracing::error!(target: "causality_exec", sequence = %id.short(), error = %e, "keeping a statement failed");
            }
        }
        let payload = message.encode();
        let status = message.status;
        self.outputs.push_back(Output::Publish {
            topic: sequence_topic(&id),
            payload_type: STATUS_TYPE.into(),
            payload: payload.clone(),
        });
        if status.is_final() {
            self.outputs.push_back(Output::Publish {
                topic: topic(RESULT_TOPIC, id.to_string()),
                payload_type: STATUS_TYPE.into(),
                payload,
            });
        }
        if self.monitored.contains(&id) {
            self.event(Event::Status(Box::new(message)));
        }
    }

    // ---- following a leader ----

    fn on_statement(&mut self, m: ExecutionSequenceMessage, via: PeerId) -> Acceptance {
        self.follow(m, via, true)
    }

    /// Takes in a leader's statement; `announce`: tell monitors (not for a statement only
    /// asked to be kept, which is announced when published).
    fn follow(&mut self, m: ExecutionSequenceMessage, via: PeerId, announce: bool) -> Acceptance {
        if !m.verify() {
            self.penalize(via, Severity::Severe, "forged execution statement".into());
            return Acceptance::Reject("forged statement".into());
        }
        let id = m.sequence_id;
        let local = self.local;
        let monitored = announce && self.monitored.contains(&id);
        let Some(t) = self.sequences.get_mut(&id) else {
            if monitored {
                self.event(Event::Status(Box::new(m)));
            }
            return Acceptance::Accept;
        };
        if m.term < t.term || m.term < t.promised && !announce || m.leader == local {
            // A stale leader's statement (or our own): fenced out.
            return Acceptance::Ignore;
        }
        if m.term > t.term && t.role == Role::Leader {
            tracing::info!(target: "causality_exec", sequence = %id.short(), term = m.term, "a later term leads; stepping down");
        }
        // A candidate keeps canvassing past a statement of the term it means to end.
        if m.term > t.term || t.role == Role::Replica {
            t.role = Role::Replica;
            t.canvass.clear();
            t.term = m.term;
            t.leader = Some(m.leader);
            t.leader_lost_at = None;
        }
        // The leader checked each result's holder signature against the token it granted;
        // its signature over the statement covers them (results from other replicas, in a
        // takeover, are checked one by one).
        for r in &m.results {
            if r.token.sequence_id == id
                && r.token.leader == m.leader
                && t.nodes.contains_key(&r.token.node)
            {
                t.nodes
                    .insert(r.token.node, NodeState::Done(Box::new(r.clone())));
            }
        }
        // Statements may arrive out of order (gossip, and the answer to a retry): each
        // one's results count, but the status is the latest one's.
        let latest = t
            .last_statement
            .as_ref()
            .is_none_or(|l| (m.term, m.seq) > (l.term, l.seq));
        if latest {
            for (n, reason) in &m.failed_nodes {
                if t.nodes.contains_key(n) {
                    t.nodes.insert(*n, NodeState::Failed(reason.clone()));
                }
            }
            // A retried sequence's failed nodes are pending again.
            if t.status == ExecutionStatus::Failed && m.status != ExecutionStatus::Failed {
                for n in &m.pending_nodes {
                    if matches!(t.nodes.get(n), Some(NodeState::Failed(_))) {
                        t.nodes.insert(*n, NodeState::Ready);
                    }
                }
            }
            t.status = m.status;
            t.last_statement = Some(m.clone());
        }
        let term = t.term;
        let stored = if latest {
            self.store.put_statement(&m)
        } else {
            Ok(())
        };
        if let Err(e) = stored
            .and_then(|()| self.store.put_term(&id, term))
            .and_then(|()| self.store.put_results(&m.results))
        {
            tracing::error!(target: "causality_exec", sequence = %id.short(), error = %e, "keeping a statement failed");
        }
        for r in &m.results {
            self.resolve_after(id, r.token.node);
        }
        if monitored {
            self.event(Event::Status(Box::new(m)));
        }
        Acceptance::Accept
    }

    // ---- executing ----

    fn start_work(
        &mut self,
        token: NodeClaimToken,
        work: WorkSpec,
        inputs: Vec<Vec<u8>>,
        witness: Option<Vec<u8>>,
    ) {
        let key = (token.sequence_id, token.node);
        self.running.insert(key, (token.clone(), self.now_ms));
        self.stats.executed += 1;
        let renew_at = self.now_ms + self.config.lease_ms * 2 / 3;
        self.schedule(
            renew_at,
            Timer::Renew(token.sequence_id, token.node, token.token),
        );
        self.event(Event::Execute {
            token,
            work,
            inputs,
            witness,
        });
    }

    fn on_assign(&mut self, a: pb::Assignment, from: PeerId) -> Result<(), String> {
        let token =
            NodeClaimToken::from_proto(a.token.ok_or("no token")?).map_err(|e| e.to_string())?;
        // The request comes authenticated from `from`; the token's signature is for third
        // parties (replicas, registers checking the fence).
        if token.holder != self.local || token.leader != from {
            self.penalize(from, Severity::Severe, "forged assignment".into());
            return Err("forged token".into());
        }
        let known = self.terms.get(&token.sequence_id).copied().unwrap_or(0);
        if token.term < known {
            return Err("stale term".into());
        }
        self.terms.insert(token.sequence_id, token.term);
        if !self.is_executor() {
            return Err("not an executor".into());
        }
        let work = WorkSpec::from_proto(a.work.ok_or("no work")?, &self.config.limits)
            .map_err(|e| e.to_string())?;
        if !self.config.executor.kinds.contains(&work.kind) {
            return Err(format!("does not run {}", work.kind));
        }
        let witness = if a.witness.is_empty() {
            None
        } else {
            Some(
                causality_net::seal::open(&a.witness, &self.key)
                    .map_err(|e| format!("witness: {e}"))?,
            )
        };
        self.start_work(token, work, a.inputs, witness);
        Ok(())
    }

    fn complete(
        &mut self,
        token: NodeClaimToken,
        outcome: Result<(Vec<u8>, Option<ContentId>), String>,
        call: Option<CallId>,
    ) {
        let key = (token.sequence_id, token.node);
        let started = match self.running.get(&key) {
            Some((t, started)) if t.token == token.token => {
                let s = *started;
                self.running.remove(&key);
                s
            }
            _ => self.now_ms,
        };
        let result = match outcome {
            Ok((output, proof_id)) => NodeResult::new(
                token.clone(),
                output,
                proof_id,
                started,
                self.now_ms,
                &self.key,
            ),
            Err(reason) => {
                tracing::info!(target: "causality_exec", sequence = %token.sequence_id.short(), node = token.node, reason = %reason, "work failed here");
                NodeResult::failure(token.clone(), &reason, self.now_ms, &self.key)
            }
        };
        if token.leader == self.local {
            let r = self.on_result(result, self.local, true);
            return self.reply(call, Reply::Completed(r));
        }
        self.request(
            token.leader,
            pb::request::Kind::Result(result.to_proto()),
            Pending::Result(call),
        );
    }

    fn renew(&mut self, id: SequenceId, n: NodeId, token: u64) {
        let Some((held, _)) = self.running.get(&(id, n)) else {
            return;
        };
        if held.token != token {
            return;
        }
        let held = held.clone();
        if held.leader == self.local {
            if let Ok(renewed) = self.renew_here(&held)
                && let Some((h, _)) = self.running.get_mut(&(id, n))
            {
                *h = renewed;
            }
        } else {
            self.request(
                held.leader,
                pb::request::Kind::Renew(held.to_proto()),
                Pending::Renew(id, n),
            );
        }
        let at = self.now_ms + self.config.lease_ms * 2 / 3;
        self.schedule(at, Timer::Renew(id, n, token));
    }

    /// Extends a current lease; returns the renewed token.
    fn renew_here(&mut self, token: &NodeClaimToken) -> Result<NodeClaimToken, ClaimError> {
        let lease_ms = self.config.lease_ms;
        let Some(t) = self.sequences.get_mut(&token.sequence_id) else {
            return Err(ClaimError::UnknownSequence);
        };
        if let Some(h) = t.hedges.get(&token.node)
            && h.token == token.token
            && h.holder == token.holder
        {
            let renewed = NodeClaimToken {
                lease_until_ms: self.now_ms + lease_ms,
                ..h.clone()
            }
            .sign(&self.key);
            t.hedges.insert(token.node, renewed.clone());
            return Ok(renewed);
        }
        match t.nodes.get(&token.node) {
            Some(NodeState::Leased(current))
                if current.token == token.token && current.holder == token.holder =>
            {
                let renewed = NodeClaimToken {
                    lease_until_ms: self.now_ms + lease_ms,
                    ..current.clone()
                }
                .sign(&self.key);
                t.nodes
                    .insert(token.node, NodeState::Leased(renewed.clone()));
                Ok(renewed)
            }
            Some(s) if s.resolved() => Err(ClaimError::Resolved(token.node)),
            _ => Err(ClaimError::Claimed(token.node)),
        }
    }

    /// A claim asked of this leader.
    fn claim_here(
        &mut self,
        id: SequenceId,
        n: NodeId,
        holder: PeerId,
    ) -> Result<NodeClaimToken, ClaimError> {
        let Some(t) = self.sequences.get(&id) else {
            return Err(ClaimError::UnknownSequence);
        };
        if t.role != Role::Leader {
            return Err(ClaimError::NotLeader);
        }
        match t.nodes.get(&n) {
            None => Err(ClaimError::UnknownNode(n)),
            Some(NodeState::Ready) => Ok(self.grant_claimed(id, n, holder)),
            Some(NodeState::Leased(_) | NodeState::Validating(_)) => Err(ClaimError::Claimed(n)),
            Some(NodeState::Waiting | NodeState::Backoff) => Err(ClaimError::NotReady(n)),
            Some(_) => Err(ClaimError::Resolved(n)),
        }
    }

    /// A lease for a claimer that runs the work itself (no assignment is sent).
    fn grant_claimed(&mut self, id: SequenceId, n: NodeId, holder: PeerId) -> NodeClaimToken {
        let lease_ms = self.config.lease_ms;
        let token = self.new_token(id, n, holder);
        let t = self.sequences.get_mut(&id).expect("tracked");
        t.nodes.insert(n, NodeState::Leased(token.clone()));
        self.stats.grants += 1;
        self.hold(&token, lease_ms);
        self.schedule(token.lease_until_ms + 1, Timer::Lease(id, n, token.token));
        token
    }

    /// The leader a request about sequence `id` goes to: the one we know of, else the
    /// first rendezvous candidate in our view (perhaps this node).
    fn leader_of(&self, id: &SequenceId) -> Option<PeerId> {
        self.sequences
            .get(id)
            .and_then(|t| t.leader)
            .or_else(|| self.candidates(id).first().copied())
    }

    fn claim(&mut self, id: SequenceId, n: NodeId, call: Option<CallId>) {
        let Some(call) = call else { return };
        match self.leader_of(&id) {
            Some(l) if l == self.local => {
                let r = self.claim_here(id, n, self.local);
                if let Ok(token) = &r {
                    self.running.insert((id, n), (token.clone(), self.now_ms));
                }
                self.reply(Some(call), Reply::Claimed(r));
            }
            Some(l) => self.request(
                l,
                pb::request::Kind::Claim(pb::ClaimRequest {
                    sequence_id: id.as_bytes().to_vec(),
                    node: n,
                }),
                Pending::Claim(call),
            ),
            None => self.reply(
                Some(call),
                Reply::Claimed(Err(ClaimError::Remote("no leader in view".into()))),
            ),
        }
    }

    /// Asks the sequence's leader (perhaps this node) to run a failed sequence again.
    fn retry_sequence(&mut self, id: SequenceId, call: Option<CallId>) {
        let Some(call) = call else { return };
        match self.leader_of(&id) {
            Some(l) if l == self.local => {
                let r = self.retry_here(id, self.local).map(|_| ());
                self.reply(Some(call), Reply::Retried(r));
            }
            Some(l) => self.request(
                l,
                pb::request::Kind::Retry(id.as_bytes().to_vec()),
                Pending::Retry(call),
            ),
            None => self.reply(
                Some(call),
                Reply::Retried(Err(RetryError::Remote("no leader in view".into()))),
            ),
        }
    }

    /// As leader: a failed sequence runs again from its last good state. Its accepted
    /// results stay; each failed node is ready again with a fresh count of attempts (the
    /// executors that failed it are still avoided).
    /// Returns the statement of the new run.
    fn retry_here(
        &mut self,
        id: SequenceId,
        from: PeerId,
    ) -> Result<ExecutionSequenceMessage, RetryError> {
        let t = self
            .sequences
            .get_mut(&id)
            .ok_or(RetryError::UnknownSequence)?;
        if t.role != Role::Leader {
            return Err(RetryError::NotLeader);
        }
        if from != t.sequence.creator {
            return Err(RetryError::NotCreator);
        }
        if t.status != ExecutionStatus::Failed {
            return Err(RetryError::NotFailed(t.status));
        }
        let failed: Vec<NodeId> = t
            .nodes
            .states
            .iter()
            .filter(|(_, s)| matches!(s, NodeState::Failed(_)))
            .map(|(n, _)| *n)
            .collect();
        for &n in &failed {
            t.nodes.insert(n, NodeState::Ready);
            t.attempts.remove(&n);
        }
        t.status = ExecutionStatus::Running;
        self.stats.sequence_retries += 1;
        tracing::info!(target: "causality_exec", sequence = %id.short(), nodes = failed.len(), "retrying a failed sequence from its last good state");
        // The answer is the new run's statement: one still being kept gives way to it (its
        // results go out with the new one).
        t.abandon_keeping();
        self.state_now(id);
        // The sequence runs again here at once (a monitor opened now follows the new
        // run), though the network hears of it once a majority keeps the statement.
        let t = self.sequences.get_mut(&id).expect("tracked");
        if let Some(k) = &t.keeping {
            t.last_statement = Some(k.message.clone());
        }
        let statement = t.last_statement.clone().expect("just stated");
        self.dispatch(id);
        Ok(statement)
    }

    // ---- the wire ----

    fn respond(&mut self, id: InboundId, kind: pb::response::Kind) {
        self.outputs.push_back(Output::Respond {
            id,
            result: Ok(pb::Response { kind: Some(kind) }.encode_to_vec()),
        });
    }

    fn on_request(&mut self, id: InboundId, peer: PeerId, body: &[u8]) {
        use pb::request::Kind;
        use pb::response::Kind as R;
        let request: pb::Request = match decode_bounded(
            body,
            "request",
            self.config.limits.max_sequence_bytes + 1024,
        ) {
            Ok(r) => r,
            Err(e) => {
                self.penalize(
                    peer,
                    Severity::Severe,
                    format!("malformed exec request: {e}"),
                );
                self.outputs.push_back(Output::Respond {
                    id,
                    result: Err((RefusalReason::BadRequest, e.to_string())),
                });
                return;
            }
        };
        let refused = |e: String| R::Refused(e);
        match request.kind {
            Some(Kind::Submit(s)) => {
                let r = ExecutionSequence::from_proto(s, &self.config.limits)
                    .map_err(SequenceError::from)
                    .and_then(|s| s.validate(&self.config.limits).map(|d| (s, d)));
                match r {
                    Ok((s, d)) => {
                        let set = self.replica_set(&s.id());
                        self.accept_sequence(s, d, set);
                        self.respond(id, R::Accepted(true));
                    }
                    Err(e) => {
                        self.penalize(peer, Severity::Moderate, format!("invalid sequence: {e}"));
                        self.respond(id, refused(e.to_string()));
                    }
                }
            }
            Some(Kind::Offer(o)) => {
                let r = o
                    .sequence
                    .ok_or(SequenceError::Decode(DecodeError::Field("sequence")))
                    .and_then(|s| {
                        ExecutionSequence::from_proto(s, &self.config.limits)
                            .map_err(SequenceError::from)
                    })
                    .and_then(|s| s.validate(&self.config.limits).map(|d| (s, d)))
                    .map_err(|e| e.to_string())
                    .and_then(|(s, d)| Ok((s, d, self.offered_set(&o.replicas)?)));
                match r {
                    Ok((s, d, set)) => {
                        self.accept_sequence(s, d, set);
                        self.respond(id, R::Accepted(true));
                    }
                    Err(e) => {
                        self.penalize(peer, Severity::Moderate, format!("invalid offer: {e}"));
                        self.respond(id, refused(e));
                    }
                }
            }
            Some(Kind::Assign(a)) => match self.on_assign(a, peer) {
                Ok(()) => self.respond(id, R::Accepted(true)),
                Err(e) => self.respond(id, refused(e)),
            },
            Some(Kind::Claim(c)) => {
                let r = match ContentId::from_slice(&c.sequence_id) {
                    Ok(seq) => self.claim_here(seq, c.node, peer),
                    Err(_) => Err(ClaimError::UnknownSequence),
                };
                match r {
                    Ok(t) => self.respond(id, R::Token(t.to_proto())),
                    Err(e) => self.respond(id, refused(e.to_string())),
                }
            }
            Some(Kind::Result(r)) => {
                let r = NodeResult::from_proto(r, &self.config.limits)
                    .map_err(SubmissionError::from)
                    .and_then(|r| self.on_result(r, peer, false));
                match r {
                    Ok(()) => self.respond(id, R::Accepted(true)),
                    Err(e) => {
                        if matches!(e, SubmissionError::Forged) {
                            self.penalize(peer, Severity::Severe, "forged result".into());
                        }
                        self.respond(id, refused(e.to_string()));
                    }
                }
            }
            Some(Kind::Renew(t)) => {
                let r = NodeClaimToken::from_proto(t)
                    .map_err(|e| ClaimError::Remote(e.to_string()))
                    .and_then(|t| {
                        if t.holder == peer && t.verify() {
                            self.renew_here(&t)
                        } else {
                            Err(ClaimError::Remote("forged token".into()))
                        }
                    });
                match r {
                    Ok(t) => self.respond(id, R::Token(t.to_proto())),
                    Err(e) => self.respond(id, refused(e.to_string())),
                }
            }
            Some(Kind::State(seq)) => {
                let held = ContentId::from_slice(&seq).ok().and_then(|s| self.held(&s));
                match held {
                    Some(h) => self.respond(id, R::Held(h)),
                    None => self.respond(id, refused("unknown sequence".into())),
                }
            }
            Some(Kind::Canvass(c)) => {
                let Ok(seq) = ContentId::from_slice(&c.sequence_id) else {
                    return self.respond(id, refused("unknown sequence".into()));
                };
                let Some(t) = self.sequences.get_mut(&seq) else {
                    return self.respond(id, refused("unknown sequence".into()));
                };
                t.promised = t.promised.max(c.term);
                // A leader asked for a later term is out of reach of the candidate's
                // side: it stops, as it could keep nothing more.
                if t.role == Role::Leader && c.term > t.term {
                    self.step_down(seq);
                }
                match self.held(&seq) {
                    Some(h) => self.respond(id, R::Held(h)),
                    None => self.respond(id, refused("unknown sequence".into())),
                }
            }
            Some(Kind::Keep(m)) => {
                let m = match ExecutionSequenceMessage::from_proto(m, &self.config.limits) {
                    Ok(m) => m,
                    Err(e) => return self.respond(id, refused(e.to_string())),
                };
                if m.leader != peer {
                    self.penalize(
                        peer,
                        Severity::Severe,
                        "a statement of another leader".into(),
                    );
                    return self.respond(id, refused("not the statement's leader".into()));
                }
                if !self.sequences.contains_key(&m.sequence_id) {
                    return self.respond(id, refused("unknown sequence".into()));
                }
                match self.follow(m, peer, false) {
                    Acceptance::Accept => self.respond(id, R::Accepted(true)),
                    Acceptance::Ignore => self.respond(id, refused("a later term".into())),
                    Acceptance::Reject(e) => self.respond(id, refused(e)),
                }
            }
            Some(Kind::Retry(seq)) => {
                let r = match ContentId::from_slice(&seq) {
                    Ok(seq) => self.retry_here(seq, peer),
                    Err(_) => Err(RetryError::UnknownSequence),
                };
                match r {
                    Ok(m) => self.respond(id, R::State(m.to_proto())),
                    Err(e) => self.respond(id, refused(e.to_string())),
                }
            }
            None => self.respond(id, refused("empty request".into())),
        }
    }

    /// A replica set as offered: distinct peer ids, at most [`MAX_REPLICAS`], this node
    /// among them.
    fn offered_set(&self, ids: &[Vec<u8>]) -> Result<Vec<PeerId>, String> {
        if ids.is_empty() || ids.len() > MAX_REPLICAS {
            return Err(format!("a replica set of {} members", ids.len()));
        }
        let mut set = Vec::with_capacity(ids.len());
        for b in ids {
            let p = PeerId::from_bytes(b).map_err(|e| format!("a replica: {e}"))?;
            if set.contains(&p) {
                return Err("a replica named twice".into());
            }
            set.push(p);
        }
        if !set.contains(&self.local) {
            return Err("this node is not one of its replicas".into());
        }
        Ok(set)
    }

    /// Everything this replica holds of a sequence: the last statement it kept (as
    /// signed) and every accepted result.
    fn held(&self, id: &SequenceId) -> Option<pb::Held> {
        let t = self.sequences.get(id)?;
        let results = t
            .nodes
            .values()
            .filter_map(|s| match s {
                NodeState::Done(r) => Some(r.to_proto()),
                _ => None,
            })
            .collect();
        Some(pb::Held {
            statement: t.last_statement.as_ref().map(|m| m.to_proto()),
            results,
        })
    }

    fn on_response(&mut self, id: OutboundId, peer: PeerId, body: Result<Vec<u8>, String>) {
        use pb::response::Kind as R;
        let Some(pending) = self.inflight_requests.remove(&id) else {
            return;
        };
        let response = body.and_then(|b| {
            decode_bounded::<pb::Response>(
                &b,
                "response",
                self.config.limits.max_sequence_bytes + 1024,
            )
            .map_err(|e| e.to_string())
            .map(|r| r.kind)
        });
        match pending {
            Pending::Submit {
                submission,
                id: seq,
            } => {
                let ok = matches!(response, Ok(Some(R::Accepted(true))));
                if ok {
                    if let Some(t) = self.sequences.get_mut(&seq) {
                        t.holders.insert(peer);
                    }
                } else {
                    tracing::info!(target: "causality_exec", sequence = %seq.short(), peer = %peer.short(), "a replica refused the sequence");
                }
                let Some(s) = self.submissions.get_mut(&submission) else {
                    return;
                };
                s.outstanding -= 1;
                if ok {
                    s.have += 1;
                } else {
                    s.refusal = Some(match response {
                        Ok(Some(R::Refused(e))) => e,
                        Ok(_) => "refused".into(),
                        Err(e) => e,
                    });
                }
                // Answer once: when a majority holds it, or when that can no longer be.
                let reached = s.have >= s.need;
                let call = if reached { s.call.take() } else { None };
                let over = s.outstanding == 0;
                if reached {
                    self.reply(call, Reply::Submitted(Ok(seq)));
                }
                if over {
                    let s = self.submissions.remove(&submission).expect("present");
                    if s.have < s.need {
                        let error = match s.refusal {
                            Some(reason) if s.have == 0 => ExecError::Net(reason),
                            _ => ExecError::NoQuorum {
                                reached: s.have,
                                replicas: s.replicas,
                            },
                        };
                        self.reply(s.call, Reply::Submitted(Err(error)));
                    }
                }
            }
            Pending::Keep(seq, n) => {
                let ok = matches!(response, Ok(Some(R::Accepted(true))));
                if !ok {
                    tracing::debug!(target: "causality_exec", sequence = %seq.short(), peer = %peer.short(), answer = ?response, "a replica did not keep a statement");
                    // It may lack the sequence (it was out of reach when it was handed out).
                    if let Ok(Some(R::Refused(e))) = &response
                        && e == "unknown sequence"
                    {
                        self.forward(seq, peer);
                    }
                }
                self.kept(seq, n, Some(ok));
            }
            Pending::Forward(seq, _) => {
                if matches!(response, Ok(Some(R::Accepted(true))))
                    && let Some(t) = self.sequences.get_mut(&seq)
                {
                    t.holders.insert(peer);
                }
            }
            Pending::Canvass(seq) => {
                let answer = match response {
                    Ok(Some(R::Held(h))) => self.decode_held(seq, peer, h).map(Some),
                    Ok(Some(R::Refused(_))) => Ok(None),
                    _ => Err(()),
                };
                self.canvassed(seq, peer, answer);
            }
            Pending::Assign(seq, n, token) => {
                if !matches!(response, Ok(Some(R::Accepted(true)))) {
                    // The executor would not (or could not) take it: another one.
                    let current = self.sequences.get(&seq).map(|t| t.nodes[&n].clone());
                    if let Some(NodeState::Leased(t)) = current
                        && t.token == token
                    {
                        self.release(&t);
                        self.attempt_failed(
                            seq,
                            n,
                            Some(t.holder),
                            FailureReason::Executor(format!("{response:?}")),
                        );
                        self.dispatch(seq);
                    }
                }
            }
            Pending::Claim(call) => {
                let r = match response {
                    Ok(Some(R::Token(t))) => NodeClaimToken::from_proto(t)
                        .map_err(|e| ClaimError::Remote(e.to_string()))
                        .and_then(|t| {
                            if t.verify() && t.holder == self.local {
                                Ok(t)
                            } else {
                                Err(ClaimError::Remote("a forged token".into()))
                            }
                        }),
                    Ok(Some(R::Refused(e))) => Err(ClaimError::Remote(e)),
                    Ok(_) => Err(ClaimError::Remote("unexpected answer".into())),
                    Err(e) => Err(ClaimError::Remote(e)),
                };
                if let Ok(t) = &r {
                    self.running
                        .insert((t.sequence_id, t.node), (t.clone(), self.now_ms));
                    let at = self.now_ms + self.config.lease_ms * 2 / 3;
                    self.schedule(at, Timer::Renew(t.sequence_id, t.node, t.token));
                }
                self.reply(Some(call), Reply::Claimed(r));
            }
            Pending::Result(call) => {
                let r = match response {
                    Ok(Some(R::Accepted(true))) => Ok(()),
                    Ok(Some(R::Refused(e))) => Err(SubmissionError::Remote(e)),
                    Ok(_) => Err(SubmissionError::Remote("unexpected answer".into())),
                    Err(e) => Err(SubmissionError::Remote(e)),
                };
                self.reply(call, Reply::Completed(r));
            }
            Pending::Retry(call) => {
                // The answer is the leader's statement of the new run: taken in at once, so
                // that this node's status (and a monitor opened next) is not the failure.
                let r = match response {
                    Ok(Some(R::State(m))) => {
                        match ExecutionSequenceMessage::from_proto(m, &self.config.limits) {
                            Ok(m) if m.verify() && m.leader == peer => {
                                self.on_statement(m, peer);
                                Ok(())
                            }
                            _ => Err(RetryError::Remote("a forged statement".into())),
                        }
                    }
                    Ok(Some(R::Refused(e))) => Err(RetryError::Remote(e)),
                    Ok(_) => Err(RetryError::Remote("unexpected answer".into())),
                    Err(e) => Err(RetryError::Remote(e)),
                };
                self.reply(Some(call), Reply::Retried(r));
            }
            Pending::Renew(seq, n) => {
                if let Ok(Some(R::Token(t))) = response
                    && let Ok(t) = NodeClaimToken::from_proto(t)
                    && t.verify()
                    && let Some((held, _)) = self.running.get_mut(&(seq, n))
                    && held.token == t.token
                {
                    *held = t;
                }
            }
        }
    }

    /// A replica's answer to a canvass, checked: its statement must be signed by the
    /// leader it names, each result by its holder and leader (a forged one is penalized
    /// and the whole answer discarded).
    fn decode_held(
        &mut self,
        id: SequenceId,
        peer: PeerId,
        held: pb::Held,
    ) -> Result<(Option<ExecutionSequenceMessage>, Vec<NodeResult>), ()> {
        let limits = &self.config.limits;
        let statement = match held.statement {
            Some(m) => match ExecutionSequenceMessage::from_proto(m, limits) {
                Ok(m) if m.sequence_id == id && m.verify() => Some(m),
                _ => {
                    self.penalize(peer, Severity::Severe, "forged execution statement".into());
                    return Err(());
                }
            },
            None => None,
        };
        if held.results.len() > limits.max_nodes {
            self.penalize(peer, Severity::Moderate, "oversized canvass answer".into());
            return Err(());
        }
        let mut results = Vec::with_capacity(held.results.len());
        for r in held.results {
            match NodeResult::from_proto(r, limits) {
                Ok(r) if r.token.sequence_id == id && r.verify() => results.push(r),
                _ => {
                    self.penalize(peer, Severity::Severe, "forged result".into());
                    return Err(());
                }
            }
        }
        Ok((statement, results))
    }

    /// Adopts results another replica kept (a new leader catching up).
    fn merge_results(&mut self, id: SequenceId, results: Vec<NodeResult>) {
        let Some(t) = self.sequences.get_mut(&id) else {
            return;
        };
        let mut changed = false;
        for r in results {
            if !r.verify() || r.token.sequence_id != id {
                continue;
            }
            // A later term's result replaces one of an earlier term that was never
            // published (a leader cut off before a majority kept it).
            let replaces = match t.nodes.get(&r.token.node) {
                Some(NodeState::Done(held)) => held.token.token < r.token.token,
                Some(s) => !s.resolved(),
                None => false,
            };
            if replaces {
                t.unstated.retain(|u| u.token.node != r.token.node);
                t.nodes
                    .insert(r.token.node, NodeState::Done(Box::new(r.clone())));
                t.unstated.push(r);
                changed = true;
            }
        }
        if changed {
            let t = &self.sequences[&id];
            let adopted: Vec<NodeResult> = t
                .nodes
                .values()
                .filter_map(|s| match s {
                    NodeState::Done(r) => Some((**r).clone()),
                    _ => None,
                })
                .collect();
            if let Err(e) = self.store.put_results(&adopted) {
                tracing::error!(target: "causality_exec", sequence = %id.short(), error = %e, "keeping results failed");
            }
            self.resolve_all(id);
            self.complete_if_done(id);
            self.state_now(id);
            self.dispatch(id);
        }
    }

    fn on_command(&mut self, command: Command, call: Option<CallId>) {
        match command {
            Command::Submit(s) => self.submit(s, call),
            Command::Claim { sequence_id, node } => self.claim(sequence_id, node, call),
            Command::Retry(id) => self.retry_sequence(id, call),
            Command::Complete { token, outcome } => self.complete(token, outcome, call),
            Command::ProofChecked { token, result } => {
                self.proof_checked(token, result);
                self.reply(call, Reply::Done);
            }
            Command::Monitor(id) => {
                if self.monitored.insert(id) && !self.sequences.contains_key(&id) {
                    self.outputs
                        .push_back(Output::Subscribe(sequence_topic(&id)));
                }
                if let Some(m) = self.status(&id).cloned() {
                    self.event(Event::Status(Box::new(m)));
                }
                self.reply(call, Reply::Done);
            }
            Command::Unmonitor(id) => {
                if self.monitored.remove(&id) && !self.sequences.contains_key(&id) {
                    self.outputs
                        .push_back(Output::Unsubscribe(sequence_topic(&id)));
                }
                self.reply(call, Reply::Done);
            }
            Command::Status(id) => {
                let s = self.status(&id).cloned();
                self.reply(call, Reply::Status(s));
            }
            Command::Replicas(id) => {
                let r: Vec<PeerId> = self
                    .candidates(&id)
                    .into_iter()
                    .take(self.config.replicas.max(1))
                    .collect();
                self.reply(call, Reply::Replicas(r));
            }
            Command::Stats => {
                let s = self.stats.clone();
                self.reply(call, Reply::Stats(s));
            }
        }
    }

    fn on_message(&mut self, message: Message) {
        if !message.topic.is(SEQUENCE_TOPIC) {
            return;
        }
        let m = match ExecutionSequenceMessage::decode(
            &message.payload,
            self.config.limits.max_sequence_bytes,
            &self.config.limits,
        ) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(target: "causality_exec", error = %e, "malformed statement");
                return;
            }
        };
        if message.topic.id() != m.sequence_id.to_string() {
            return;
        }
        self.on_statement(m, message.via);
    }

    /// Leadership may have moved: a peer left or the view changed.
    /// The view changed: the replica sets follow it.
    fn view_changed(&mut self) {
        let ids: Vec<SequenceId> = self.sequences.keys().copied().collect();
        for id in &ids {
            // A set is fixed once named; only one still empty (no executors were in view
            // when the sequence arrived) is filled in.
            if self
                .sequences
                .get(id)
                .is_some_and(|t| t.replica_set.is_empty())
            {
                let set = self.replica_set(id);
                self.sequences.get_mut(id).expect("tracked").replica_set = set;
            }
        }
        self.membership_changed();
    }

    fn membership_changed(&mut self) {
        let ids: Vec<SequenceId> = self.sequences.keys().copied().collect();
        for id in ids {
            self.check_leadership(id);
            self.dispatch(id);
        }
    }
}

/// The outputs of a node's predecessors, in predecessor id order.
fn inputs_of(t: &Tracked, n: NodeId) -> Vec<Vec<u8>> {
    let mut preds: Vec<NodeId> = t
        .dag
        .preds
        .get(&n)
        .map(|es| es.iter().map(|&e| t.sequence.edges[e].from).collect())
        .unwrap_or_default();
    preds.sort_unstable();
    preds
        .into_iter()
        .filter_map(|p| match &t.nodes[&p] {
            NodeState::Done(r) => Some(r.output.clone()),
            _ => None,
        })
        .collect()
}

impl Protocol for State {
    type Command = Command;
    type Reply = Reply;
    type Event = Event;
    type Timer = Timer;
    type View = ExecutorView;

    fn protocols(&self) -> Vec<RequestProtocol> {
        vec![crate::protocol(&self.config.limits)]
    }

    fn handle(&mut self, now_ms: u64, input: Input<Self>) {
        self.now_ms = now_ms;
        match input {
            // Sequences restored from the store may be this node's to lead.
            Input::Start => self.membership_changed(),
            Input::Message(message) => self.on_message(message),
            Input::Request { id, peer, body, .. } => self.on_request(id, peer, &body),
            Input::Response { id, peer, body } => self.on_response(id, peer, Ok(body)),
            Input::RequestFailed { id, peer, error } => {
                self.on_response(id, peer, Err(error.to_string()));
            }
            Input::Timer(Timer::Lease(id, n, token)) => self.lease_over(id, n, token),
            Input::Timer(Timer::Retry(id, n)) => self.retry(id, n),
            Input::Timer(Timer::Status(id)) => self.state_now(id),
            Input::Timer(Timer::Renew(id, n, token)) => self.renew(id, n, token),
            Input::Timer(Timer::Hedge(id, n, token)) => self.hedge(id, n, token),
            Input::Timer(Timer::Takeover(id)) => {
                self.check_leadership(id);
                self.dispatch(id);
            }
            Input::Command { command, call } => self.on_command(command, call),
            Input::PeerConnected(peer) => {
                self.connected.insert(peer);
                self.forward_to(peer);
                self.membership_changed();
            }
            Input::PeerDisconnected(peer) => {
                self.connected.remove(&peer);
                self.membership_changed();
            }
            Input::View(view) => {
                self.view = view;
                self.view_changed();
            }
            Input::DialFailed { .. } => {}
        }
    }

    fn poll_output(&mut self) -> Option<Output<Self>> {
        self.outputs.pop_front()
    }
}
