//! Execution sequences and what travels about them: the DAG and its validation, claim
//! tokens (leases with fencing tokens), results and the leader's status statements.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use causality_hash::ContentId;
use causality_net::{Keypair, PeerId};
use prost::Message as _;

use crate::error::{DecodeError, SequenceError};
use crate::proto::v1 as pb;

/// A sequence's id: the [`ContentId`] of its encoding (its commitment).
pub type SequenceId = ContentId;

/// An execution node's id within its sequence.
pub type NodeId = u32;

/// Size limits on sequences and messages. One place; every decoder checks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most execution nodes in a sequence (default 65,536).
    pub max_nodes: usize,
    /// Most edges (default 262,144).
    pub max_edges: usize,
    /// Largest encoded sequence (default 8 MiB).
    pub max_sequence_bytes: usize,
    /// Largest work input or result output (default 1 MiB).
    pub max_output_bytes: usize,
    /// Longest work kind (default 128 bytes: room for `prove:` and a key id).
    pub max_kind_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_nodes: 65_536,
            max_edges: 262_144,
            max_sequence_bytes: 8 << 20,
            max_output_bytes: 1 << 20,
            max_kind_bytes: 128,
        }
    }
}

/// A set of node ids as runs: first id and length of each maximal ascending run, in turn.
/// Statements name every node of a sequence, and ids run in long stretches (a layer of a
/// DAG completes together), so this is far smaller than a list.
fn runs(ids: &[NodeId]) -> Vec<u32> {
    let sorted;
    let ids = if ids.is_sorted() {
        ids
    } else {
        let mut v = ids.to_vec();
        v.sort_unstable();
        sorted = v;
        &sorted
    };
    let mut out = Vec::new();
    let mut iter = ids.iter().copied();
    let Some(mut start) = iter.next() else {
        return out;
    };
    let mut len: u32 = 1;
    for id in iter {
        let end = u64::from(start) + u64::from(len);
        if u64::from(id) == end {
            len += 1;
        } else if u64::from(id) < end {
            // A repeat: sets hold each id once.
        } else {
            out.extend([start, len]);
            (start, len) = (id, 1);
        }
    }
    out.extend([start, len]);
    out
}

/// The ids of [`runs`], spending at most `budget` of them: well-formed runs only (pairs,
/// non-empty, no overflow, ascending without overlap).
fn expand(runs: &[u32], budget: &mut usize, limits: &Limits) -> Result<Vec<NodeId>, DecodeError> {
    if !runs.len().is_multiple_of(2) {
        return Err(DecodeError::Field("node runs: an odd count"));
    }
    let mut out = Vec::new();
    let mut next: u64 = 0;
    for pair in runs.chunks_exact(2) {
        let (start, len) = (u64::from(pair[0]), u64::from(pair[1]));
        if len == 0 || start < next || start + len > u64::from(u32::MAX) + 1 {
            return Err(DecodeError::Field(
                "node runs: empty, overlapping or out of range",
            ));
        }
        let len = len as usize;
        if len > *budget {
            return Err(too_large(
                "status nodes",
                limits.max_nodes - *budget + len,
                limits.max_nodes,
            ));
        }
        *budget -= len;
        out.extend(pair[0]..=pair[0] + (len as u32 - 1));
        next = start + len as u64;
    }
    Ok(out)
}

fn too_large(what: &'static str, size: usize, limit: usize) -> DecodeError {
    DecodeError::TooLarge { what, size, limit }
}

fn id(bytes: &[u8], what: &'static str) -> Result<ContentId, DecodeError> {
    ContentId::from_slice(bytes).map_err(|_| DecodeError::Field(what))
}

fn optional_id(bytes: &[u8], what: &'static str) -> Result<Option<ContentId>, DecodeError> {
    if bytes.is_empty() {
        Ok(None)
    } else {
        id(bytes, what).map(Some)
    }
}

fn peer(bytes: &[u8], what: &'static str) -> Result<PeerId, DecodeError> {
    PeerId::from_bytes(bytes).map_err(|_| DecodeError::Field(what))
}

fn signature(bytes: &[u8], what: &'static str) -> Result<[u8; 64], DecodeError> {
    bytes.try_into().map_err(|_| DecodeError::Field(what))
}

/// Decodes a protobuf message of at most `limit` bytes.
pub(crate) fn decode_bounded<M: prost::Message + Default>(
    bytes: &[u8],
    what: &'static str,
    limit: usize,
) -> Result<M, DecodeError> {
    if bytes.len() > limit {
        return Err(too_large(what, bytes.len(), limit));
    }
    M::decode(bytes).map_err(|e| DecodeError::Malformed {
        what,
        reason: e.to_string(),
    })
}

/// What an execution node does.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct WorkSpec {
    /// Which executor runs it (e.g. `wasm`, `prove`, `noop`).
    pub kind: String,
    /// Its input (the predecessors' outputs come beside it).
    pub input: Vec<u8>,
    /// When set, the result must carry a proof verified under this proof-sharing key.
    pub proof_key: Option<ContentId>,
    /// Distinct executors that must produce the same output before it is accepted (0 and 1:
    /// the first valid result).
    pub agreement: u32,
    /// The creator's estimate of its run time, ms (0: unknown).
    pub estimate_ms: u64,
}

impl WorkSpec {
    /// Work of `kind` on `input`.
    pub fn new(kind: impl Into<String>, input: impl Into<Vec<u8>>) -> Self {
        Self {
            kind: kind.into(),
            input: input.into(),
            ..Self::default()
        }
    }

    pub(crate) fn to_proto(&self) -> pb::WorkSpec {
        pb::WorkSpec {
            kind: self.kind.clone(),
            input: self.input.clone(),
            proof_key: self
                .proof_key
                .map(|k| k.as_bytes().to_vec())
                .unwrap_or_default(),
            agreement: self.agreement,
            estimate_ms: self.estimate_ms,
        }
    }

    pub(crate) fn from_proto(w: pb::WorkSpec, limits: &Limits) -> Result<Self, DecodeError> {
        if w.kind.is_empty() || w.kind.len() > limits.max_kind_bytes {
            return Err(DecodeError::Field("work kind"));
        }
        if w.input.len() > limits.max_output_bytes {
            return Err(too_large(
                "work input",
                w.input.len(),
                limits.max_output_bytes,
            ));
        }
        Ok(Self {
            kind: w.kind,
            input: w.input,
            proof_key: optional_id(&w.proof_key, "proof key")?,
            agreement: w.agreement.min(16),
            estimate_ms: w.estimate_ms,
        })
    }
}

/// When an edge is taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The source's output equals these bytes.
    Equals(Vec<u8>),
    /// The source's output is not empty.
    NonEmpty,
}

impl Condition {
    /// Whether an output takes the edge.
    pub fn holds(&self, output: &[u8]) -> bool {
        match self {
            Self::Equals(b) => output == b.as_slice(),
            Self::NonEmpty => !output.is_empty(),
        }
    }
}

/// A dependency: `to` runs after `from`, if the condition holds on `from`'s output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// The predecessor.
    pub from: NodeId,
    /// The successor.
    pub to: NodeId,
    /// `None`: always taken.
    pub condition: Option<Condition>,
    /// Scheduling weight (e.g. bytes moved).
    pub weight: u32,
}

impl Edge {
    /// An unconditional edge.
    pub fn new(from: NodeId, to: NodeId) -> Self {
        Self {
            from,
            to,
            condition: None,
            weight: 0,
        }
    }
}

/// An execution sequence: a DAG of work. Its [`id`](Self::id) is its commitment.
///
/// A node runs when every predecessor is resolved (done or skipped) and at least one of
/// its incoming edges is taken (a done source whose condition holds); when every
/// incoming edge is untaken it is skipped, and so are the nodes that then have no taken
/// edge. Entries (no predecessors) always run. The sequence completes when every exit is
/// resolved and fails when a node fails `max_attempts` times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutionSequence {
    /// Who made it.
    pub creator: PeerId,
    /// Makes ids unique.
    pub nonce: Vec<u8>,
    /// The nodes, by id.
    pub nodes: BTreeMap<NodeId, WorkSpec>,
    /// The edges.
    pub edges: Vec<Edge>,
    /// The nodes without predecessors.
    pub entries: Vec<NodeId>,
    /// The nodes without successors.
    pub exits: Vec<NodeId>,
    /// Failures of one node that fail the sequence (default 3).
    pub max_attempts: u32,
    /// Secret inputs per node (e.g. proving witnesses), sealed with HPKE to the sequence's
    /// replicas (see `Coordinator::seal_witnesses`); the leader re-seals each to the holder
    /// of its lease alone. Not covered by the id.
    pub witnesses: BTreeMap<NodeId, Vec<u8>>,
}

impl ExecutionSequence {
    /// A sequence of `nodes` and `edges` by `creator`, its entries and exits derived.
    pub fn new(
        creator: PeerId,
        nonce: &[u8],
        nodes: impl IntoIterator<Item = (NodeId, WorkSpec)>,
        edges: Vec<Edge>,
    ) -> Self {
        let nodes: BTreeMap<NodeId, WorkSpec> = nodes.into_iter().collect();
        let has_pred: BTreeSet<NodeId> = edges.iter().map(|e| e.to).collect();
        let has_succ: BTreeSet<NodeId> = edges.iter().map(|e| e.from).collect();
        Self {
            creator,
            nonce: nonce.to_vec(),
            entries: nodes
                .keys()
                .copied()
                .filter(|n| !has_pred.contains(n))
                .collect(),
            exits: nodes
                .keys()
                .copied()
                .filter(|n| !has_succ.contains(n))
                .collect(),
            nodes,
            edges,
            max_attempts: 3,
            witnesses: BTreeMap::new(),
        }
    }

    pub(crate) fn to_proto(&self) -> pb::ExecutionSequence {
        pb::ExecutionSequence {
            creator: self.creator.as_bytes().to_vec(),
            nonce: self.nonce.clone(),
            nodes: self
                .nodes
                .iter()
                .map(|(id, w)| pb::ExecNode {
                    id: *id,
                    work: Some(w.to_proto()),
                })
                .collect(),
            edges: self
                .edges
                .iter()
                .map(|e| pb::Edge {
                    from: e.from,
                    to: e.to,
                    condition: e.condition.as_ref().map(|c| pb::Condition {
                        kind: Some(match c {
                            Condition::Equals(b) => pb::condition::Kind::Equals(b.clone()),
                            Condition::NonEmpty => pb::condition::Kind::NonEmpty(true),
                        }),
                    }),
                    weight: e.weight,
                })
                .collect(),
            entries: self.entries.clone(),
            exits: self.exits.clone(),
            max_attempts: self.max_attempts,
            witnesses: self.witnesses.clone(),
        }
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// The id: BLAKE3 of the encoding without the sealed witnesses.
    pub fn id(&self) -> SequenceId {
        let mut p = self.to_proto();
        p.witnesses.clear();
        ContentId::of(&p.encode_to_vec())
    }

    /// Decodes a sequence (not yet validated: see [`validate`](Self::validate)).
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let s: pb::ExecutionSequence =
            decode_bounded(bytes, "sequence", limits.max_sequence_bytes)?;
        Self::from_proto(s, limits)
    }

    pub(crate) fn from_proto(
        s: pb::ExecutionSequence,
        limits: &Limits,
    ) -> Result<Self, DecodeError> {
        if s.nodes.len() > limits.max_nodes {
            return Err(too_large("nodes", s.nodes.len(), limits.max_nodes));
        }
        if s.edges.len() > limits.max_edges {
            return Err(too_large("edges", s.edges.len(), limits.max_edges));
        }
        let mut nodes = BTreeMap::new();
        for n in s.nodes {
            let work = WorkSpec::from_proto(n.work.ok_or(DecodeError::Field("work"))?, limits)?;
            if nodes.insert(n.id, work).is_some() {
                return Err(DecodeError::Field("duplicate node id"));
            }
        }
        let edges = s
            .edges
            .into_iter()
            .map(|e| {
                let condition = match e.condition.and_then(|c| c.kind) {
                    None => None,
                    Some(pb::condition::Kind::Equals(b)) => Some(Condition::Equals(b)),
                    Some(pb::condition::Kind::NonEmpty(_)) => Some(Condition::NonEmpty),
                };
                Edge {
                    from: e.from,
                    to: e.to,
                    condition,
                    weight: e.weight,
                }
            })
            .collect();
        Ok(Self {
            creator: peer(&s.creator, "creator")?,
            nonce: s.nonce,
            nodes,
            edges,
            entries: s.entries,
            exits: s.exits,
            max_attempts: s.max_attempts.clamp(1, 100),
            witnesses: {
                if s.witnesses.len() > limits.max_nodes {
                    return Err(too_large("witnesses", s.witnesses.len(), limits.max_nodes));
                }
                if let Some(w) = s
                    .witnesses
                    .values()
                    .find(|w| w.len() > limits.max_output_bytes + 4096)
                {
                    return Err(too_large(
                        "witness",
                        w.len(),
                        limits.max_output_bytes + 4096,
                    ));
                }
                s.witnesses
            },
        })
    }

    /// Checks the sequence is a well-formed DAG: not empty, every edge between known nodes
    /// and no self-loop, acyclic, and its entries and exits exactly the nodes without
    /// predecessors and without successors. Returns the DAG's indexes.
    pub fn validate(&self, limits: &Limits) -> Result<Dag, SequenceError> {
        if self.nodes.is_empty() {
            return Err(SequenceError::Empty);
        }
        if self.nodes.len() > limits.max_nodes {
            return Err(SequenceError::TooLarge("nodes"));
        }
        if self.edges.len() > limits.max_edges {
            return Err(SequenceError::TooLarge("edges"));
        }
        // What decoding checks, checked for sequences made here too.
        for w in self.nodes.values() {
            if w.kind.is_empty() || w.kind.len() > limits.max_kind_bytes {
                return Err(SequenceError::Decode(DecodeError::Field("work kind")));
            }
            if w.input.len() > limits.max_output_bytes {
                return Err(SequenceError::TooLarge("work input"));
            }
        }
        let mut preds: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
        let mut succs: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
        let mut seen_edges = BTreeSet::new();
        for (i, e) in self.edges.iter().enumerate() {
            for n in [e.from, e.to] {
                if !self.nodes.contains_key(&n) {
                    return Err(SequenceError::UnknownNode(n));
                }
            }
            if e.from == e.to {
                return Err(SequenceError::Cycle(e.from));
            }
            if !seen_edges.insert((e.from, e.to)) {
                return Err(SequenceError::DuplicateEdge(e.from, e.to));
            }
            preds.entry(e.to).or_default().push(i);
            succs.entry(e.from).or_default().push(i);
        }
        let entries: BTreeSet<NodeId> = self
            .nodes
            .keys()
            .copied()
            .filter(|n| !preds.contains_key(n))
            .collect();
        let exits: BTreeSet<NodeId> = self
            .nodes
            .keys()
            .copied()
            .filter(|n| !succs.contains_key(n))
            .collect();
        if self.entries.iter().copied().collect::<BTreeSet<_>>() != entries
            || self.entries.len() != entries.len()
        {
            return Err(SequenceError::Entries);
        }
        if self.exits.iter().copied().collect::<BTreeSet<_>>() != exits
            || self.exits.len() != exits.len()
        {
            return Err(SequenceError::Exits);
        }
        // Kahn's algorithm: every node ordered, or a cycle.
        let mut indegree: BTreeMap<NodeId, usize> = self
            .nodes
            .keys()
            .map(|n| (*n, preds.get(n).map_or(0, Vec::len)))
            .collect();
        let mut queue: VecDeque<NodeId> = entries.iter().copied().collect();
        let mut order = Vec::with_capacity(self.nodes.len());
        while let Some(n) = queue.pop_front() {
            order.push(n);
            for &e in succs.get(&n).map_or(&[][..], Vec::as_slice) {
                let to = self.edges[e].to;
                let d = indegree.get_mut(&to).expect("known node");
                *d -= 1;
                if *d == 0 {
                    queue.push_back(to);
                }
            }
        }
        if order.len() != self.nodes.len() {
            let stuck = indegree
                .iter()
                .find(|(_, d)| **d > 0)
                .map_or(0, |(n, _)| *n);
            return Err(SequenceError::Cycle(stuck));
        }
        // Upward rank (the longest path to an exit, by estimate, at least 1 ms per node):
        // the critical path first.
        let mut rank: BTreeMap<NodeId, u64> = BTreeMap::new();
        for &n in order.iter().rev() {
            let own = self.nodes[&n].estimate_ms.max(1);
            let below = succs
                .get(&n)
                .map(|es| {
                    es.iter()
                        .map(|&e| rank[&self.edges[e].to] + u64::from(self.edges[e].weight))
                        .max()
                        .unwrap_or(0)
                })
                .unwrap_or(0);
            rank.insert(n, own + below);
        }
        Ok(Dag {
            preds,
            succs,
            order,
            rank,
        })
    }
}

/// A validated sequence's indexes.
#[derive(Clone, Debug)]
pub struct Dag {
    /// Incoming edges (indexes into the sequence's edges) per node.
    pub preds: BTreeMap<NodeId, Vec<usize>>,
    /// Outgoing edges per node.
    pub succs: BTreeMap<NodeId, Vec<usize>>,
    /// A topological order.
    pub order: Vec<NodeId>,
    /// Upward rank: the estimated time from a node's start to the end of the sequence.
    pub rank: BTreeMap<NodeId, u64>,
}

const TOKEN_CONTEXT: &[u8] = b"causality/exec/token/v1";
const RESULT_CONTEXT: &[u8] = b"causality/exec/result/v1";
const STATUS_CONTEXT: &[u8] = b"causality/exec/status/v1";

fn signing_bytes(context: &[u8], unsigned: &[u8]) -> Vec<u8> {
    let mut b = context.to_vec();
    b.extend_from_slice(unsigned);
    b
}

/// A lease on one execution node: whoever holds it may run the node until
/// `lease_until_ms`; its `token` fences out every earlier holder.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeClaimToken {
    /// The sequence.
    pub sequence_id: SequenceId,
    /// The node.
    pub node: NodeId,
    /// Monotonic per node across leader terms: `(term << 32) | grants`.
    pub token: u64,
    /// The granting leader's term.
    pub term: u64,
    /// Who may run it.
    pub holder: PeerId,
    /// Until when (leader's clock, ms).
    pub lease_until_ms: u64,
    /// The granting leader.
    pub leader: PeerId,
    /// ed25519 by the leader.
    pub signature: [u8; 64],
}

/// Domain separation of the fence keys of execution nodes.
const FENCE_CONTEXT: &[u8] = b"causality/exec/fence/v1";

impl NodeClaimToken {
    /// The fencing token to write registers with under this lease: its key names the
    /// execution node (one key per node of a sequence), its number is the lease's token.
    /// A register written with it through `RegSync::update_register_fenced` refuses a
    /// later write under a lower token, so a lapsed holder (a zombie) cannot overwrite
    /// the result of the lease that replaced it.
    ///
    /// ```
    /// # use causality_exec::NodeClaimToken;
    /// # fn f(old: &NodeClaimToken, new: &NodeClaimToken) {
    /// let (a, b) = (old.fence(), new.fence());
    /// assert_eq!(a.key, b.key); // same node
    /// # }
    /// ```
    pub fn fence(&self) -> causality_regsync::Fence {
        let mut key = FENCE_CONTEXT.to_vec();
        key.extend_from_slice(self.sequence_id.as_bytes());
        key.extend_from_slice(&self.node.to_le_bytes());
        causality_regsync::Fence {
            key: ContentId::of(&key),
            token: self.token,
        }
    }

    pub(crate) fn to_proto(&self) -> pb::NodeClaimToken {
        pb::NodeClaimToken {
            sequence_id: self.sequence_id.as_bytes().to_vec(),
            node: self.node,
            token: self.token,
            term: self.term,
            holder: self.holder.as_bytes().to_vec(),
            lease_until_ms: self.lease_until_ms,
            leader: self.leader.as_bytes().to_vec(),
            signature: self.signature.to_vec(),
        }
    }

    pub(crate) fn from_proto(t: pb::NodeClaimToken) -> Result<Self, DecodeError> {
        Ok(Self {
            sequence_id: id(&t.sequence_id, "token sequence")?,
            node: t.node,
            token: t.token,
            term: t.term,
            holder: peer(&t.holder, "token holder")?,
            lease_until_ms: t.lease_until_ms,
            leader: peer(&t.leader, "token leader")?,
            signature: signature(&t.signature, "token signature")?,
        })
    }

    fn unsigned(&self) -> Vec<u8> {
        let mut p = self.to_proto();
        p.signature.clear();
        p.encode_to_vec()
    }

    /// Signs as the leader.
    pub fn sign(mut self, leader: &Keypair) -> Self {
        self.signature = leader.sign(&signing_bytes(TOKEN_CONTEXT, &self.unsigned()));
        self
    }

    /// Whether its leader signed it.
    pub fn verify(&self) -> bool {
        self.leader.verify(
            &signing_bytes(TOKEN_CONTEXT, &self.unsigned()),
            &self.signature,
        )
    }
}

/// What an executor hands in for a node it holds a lease on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeResult {
    /// The lease it ran under.
    pub token: NodeClaimToken,
    /// The output (at most [`Limits::max_output_bytes`]).
    pub output: Vec<u8>,
    /// The proof, for work that needs one.
    pub proof_id: Option<ContentId>,
    /// When it started (executor's clock, ms).
    pub started_ms: u64,
    /// When it finished.
    pub finished_ms: u64,
    /// Why the work failed, when it did (the output is then empty).
    pub error: Option<String>,
    /// ed25519 by the token's holder.
    pub signature: [u8; 64],
}

impl NodeResult {
    /// A result signed by `executor` (the token's holder).
    pub fn new(
        token: NodeClaimToken,
        output: Vec<u8>,
        proof_id: Option<ContentId>,
        started_ms: u64,
        finished_ms: u64,
        executor: &Keypair,
    ) -> Self {
        let mut r = Self {
            token,
            output,
            proof_id,
            started_ms,
            finished_ms,
            error: None,
            signature: [0; 64],
        };
        r.signature = executor.sign(&signing_bytes(RESULT_CONTEXT, &r.unsigned()));
        r
    }

    /// A report, signed by `executor` (the token's holder), that the work failed.
    pub fn failure(token: NodeClaimToken, error: &str, at_ms: u64, executor: &Keypair) -> Self {
        let mut r = Self {
            token,
            output: Vec::new(),
            proof_id: None,
            started_ms: at_ms,
            finished_ms: at_ms,
            error: Some(error.chars().take(256).collect()),
            signature: [0; 64],
        };
        r.signature = executor.sign(&signing_bytes(RESULT_CONTEXT, &r.unsigned()));
        r
    }

    pub(crate) fn to_proto(&self) -> pb::NodeResult {
        pb::NodeResult {
            token: Some(self.token.to_proto()),
            output: self.output.clone(),
            proof_id: self
                .proof_id
                .map(|p| p.as_bytes().to_vec())
                .unwrap_or_default(),
            started_ms: self.started_ms,
            finished_ms: self.finished_ms,
            signature: self.signature.to_vec(),
            error: self.error.clone().unwrap_or_default(),
        }
    }

    pub(crate) fn from_proto(r: pb::NodeResult, limits: &Limits) -> Result<Self, DecodeError> {
        if r.output.len() > limits.max_output_bytes {
            return Err(too_large("output", r.output.len(), limits.max_output_bytes));
        }
        Ok(Self {
            token: NodeClaimToken::from_proto(r.token.ok_or(DecodeError::Field("token"))?)?,
            output: r.output,
            proof_id: optional_id(&r.proof_id, "proof id")?,
            started_ms: r.started_ms,
            finished_ms: r.finished_ms,
            error: (!r.error.is_empty()).then(|| r.error.chars().take(256).collect()),
            signature: signature(&r.signature, "result signature")?,
        })
    }

    fn unsigned(&self) -> Vec<u8> {
        let mut p = self.to_proto();
        p.signature.clear();
        p.encode_to_vec()
    }

    /// Whether the token's holder signed it (and the leader the token).
    pub fn verify(&self) -> bool {
        self.token.verify() && self.verify_holder()
    }

    /// Whether the token's holder signed it (for the leader, which compares the token with
    /// the one it granted instead of checking its own signature).
    pub fn verify_holder(&self) -> bool {
        self.token.holder.verify(
            &signing_bytes(RESULT_CONTEXT, &self.unsigned()),
            &self.signature,
        )
    }

    /// The output's content id.
    pub fn output_id(&self) -> ContentId {
        ContentId::of(&self.output)
    }
}

/// Where a sequence is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExecutionStatus {
    /// Known, not started.
    Pending,
    /// Nodes are running.
    Running,
    /// Every exit resolved.
    Completed,
    /// A node failed for good.
    Failed,
}

impl ExecutionStatus {
    /// Whether it ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }

    fn to_proto(self) -> pb::Status {
        match self {
            Self::Pending => pb::Status::Pending,
            Self::Running => pb::Status::Running,
            Self::Completed => pb::Status::Completed,
            Self::Failed => pb::Status::Failed,
        }
    }

    fn from_proto(v: i32) -> Result<Self, DecodeError> {
        Ok(
            match pb::Status::try_from(v).map_err(|_| DecodeError::Field("status"))? {
                pb::Status::Pending => Self::Pending,
                pb::Status::Running => Self::Running,
                pb::Status::Completed => Self::Completed,
                pb::Status::Failed => Self::Failed,
            },
        )
    }
}

/// Why a node failed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The executor reported an error.
    Executor(String),
    /// Its lease expired without a result.
    LeaseExpired,
    /// Its result did not validate (wrong proof, disagreement).
    Invalid(String),
    /// No executor runs its kind.
    NoExecutor,
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Executor(e) => write!(f, "executor: {e}"),
            Self::LeaseExpired => f.write_str("lease expired"),
            Self::Invalid(e) => write!(f, "invalid result: {e}"),
            Self::NoExecutor => f.write_str("no executor runs this kind"),
        }
    }
}

/// The leader's signed statement of a sequence's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutionSequenceMessage {
    /// The sequence.
    pub sequence_id: SequenceId,
    /// Its status.
    pub status: ExecutionStatus,
    /// The leader's term.
    pub term: u64,
    /// The leader.
    pub leader: PeerId,
    /// Nodes done.
    pub completed_nodes: Vec<NodeId>,
    /// Nodes not yet resolved.
    pub pending_nodes: Vec<NodeId>,
    /// Nodes failed for good, with why (the last failure).
    pub failed_nodes: Vec<(NodeId, String)>,
    /// Nodes skipped (no taken incoming edge).
    pub skipped_nodes: Vec<NodeId>,
    /// Results accepted since the previous statement.
    pub results: Vec<NodeResult>,
    /// Statement number within the term.
    pub seq: u64,
    /// ed25519 by the leader.
    pub signature: [u8; 64],
}

impl ExecutionSequenceMessage {
    pub(crate) fn to_proto(&self) -> pb::ExecutionSequenceMessage {
        pb::ExecutionSequenceMessage {
            sequence_id: self.sequence_id.as_bytes().to_vec(),
            status: self.status.to_proto() as i32,
            term: self.term,
            leader: self.leader.as_bytes().to_vec(),
            completed_runs: runs(&self.completed_nodes),
            pending_runs: runs(&self.pending_nodes),
            failed_nodes: self
                .failed_nodes
                .iter()
                .map(|(node, reason)| pb::Failure {
                    node: *node,
                    reason: reason.clone(),
                })
                .collect(),
            skipped_runs: runs(&self.skipped_nodes),
            results: self.results.iter().map(NodeResult::to_proto).collect(),
            seq: self.seq,
            signature: self.signature.to_vec(),
        }
    }

    pub(crate) fn from_proto(
        m: pb::ExecutionSequenceMessage,
        limits: &Limits,
    ) -> Result<Self, DecodeError> {
        // Each node is in one list at most: the lists together name at most `max_nodes`
        // (a few bytes of runs cannot expand into more).
        let mut budget = limits.max_nodes.saturating_sub(m.failed_nodes.len());
        if m.failed_nodes.len() > limits.max_nodes {
            return Err(too_large(
                "status nodes",
                m.failed_nodes.len(),
                limits.max_nodes,
            ));
        }
        let completed_nodes = expand(&m.completed_runs, &mut budget, limits)?;
        let pending_nodes = expand(&m.pending_runs, &mut budget, limits)?;
        let skipped_nodes = expand(&m.skipped_runs, &mut budget, limits)?;
        Ok(Self {
            sequence_id: id(&m.sequence_id, "sequence id")?,
            status: ExecutionStatus::from_proto(m.status)?,
            term: m.term,
            leader: peer(&m.leader, "leader")?,
            completed_nodes,
            pending_nodes,
            failed_nodes: m
                .failed_nodes
                .into_iter()
                .map(|f| (f.node, f.reason.chars().take(256).collect()))
                .collect(),
            skipped_nodes,
            results: m
                .results
                .into_iter()
                .map(|r| NodeResult::from_proto(r, limits))
                .collect::<Result<_, _>>()?,
            seq: m.seq,
            signature: signature(&m.signature, "status signature")?,
        })
    }

    fn unsigned(&self) -> Vec<u8> {
        let mut p = self.to_proto();
        p.signature.clear();
        p.encode_to_vec()
    }

    /// Signs as the leader.
    pub fn sign(mut self, leader: &Keypair) -> Self {
        self.signature = leader.sign(&signing_bytes(STATUS_CONTEXT, &self.unsigned()));
        self
    }

    /// Whether its leader signed it.
    pub fn verify(&self) -> bool {
        self.leader.verify(
            &signing_bytes(STATUS_CONTEXT, &self.unsigned()),
            &self.signature,
        )
    }

    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Decodes one (at most `limit` bytes).
    pub fn decode(bytes: &[u8], limit: usize, limits: &Limits) -> Result<Self, DecodeError> {
        Self::from_proto(decode_bounded(bytes, "status", limit)?, limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng as _, SeedableRng as _};

    #[test]
    fn node_sets_round_trip_through_runs() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let limits = Limits::default();
        for _ in 0..200 {
            let mut ids: Vec<NodeId> = (0..rng.gen_range(0..300))
                .map(|_| rng.gen_range(0..400))
                .collect();
            let r = runs(&ids);
            ids.sort_unstable();
            ids.dedup();
            let mut budget = limits.max_nodes;
            assert_eq!(expand(&r, &mut budget, &limits).unwrap(), ids);
            assert_eq!(budget, limits.max_nodes - ids.len());
        }
        assert_eq!(
            runs(&[0, 1, 2, 3, 7, 8, u32::MAX]),
            vec![0, 4, 7, 2, u32::MAX, 1]
        );
    }

    #[test]
    fn malformed_or_oversize_runs_are_refused_without_expanding_them() {
        let limits = Limits::default();
        let refused = |r: &[u32]| expand(r, &mut limits.max_nodes.clone(), &limits).unwrap_err();
        assert!(matches!(refused(&[1]), DecodeError::Field(_)));
        assert!(matches!(refused(&[5, 0]), DecodeError::Field(_)));
        assert!(
            matches!(refused(&[5, 3, 6, 1]), DecodeError::Field(_)),
            "overlap"
        );
        assert!(
            matches!(refused(&[9, 1, 5, 1]), DecodeError::Field(_)),
            "descending"
        );
        assert!(
            matches!(refused(&[u32::MAX, 2]), DecodeError::Field(_)),
            "overflow"
        );
        // Four billion ids in eight bytes: refused by the budget, not allocated.
        assert!(matches!(
            refused(&[0, u32::MAX]),
            DecodeError::TooLarge { .. }
        ));
        // The budget is shared by the lists of one statement.
        let mut budget = 10;
        expand(&[0, 6], &mut budget, &limits).unwrap();
        assert!(expand(&[100, 5], &mut budget, &limits).is_err());
    }
}
