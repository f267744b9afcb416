//! The crate's errors, each variant a reason a caller or an operator can act on.

use causality_net::NetError;
use thiserror::Error;

use crate::model::NodeId;

/// Bytes that are not a valid message.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Larger than its limit.
    #[error("{what} is {size} (limit {limit})")]
    TooLarge {
        /// Which object or count.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not protobuf of the expected message.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which message.
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// A field missing or of the wrong form.
    #[error("bad or missing field: {0}")]
    Field(&'static str),
}

/// Why a sequence is not a valid DAG.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum SequenceError {
    /// It has no nodes.
    #[error("the sequence has no nodes")]
    Empty,
    /// Over a limit.
    #[error("the sequence has too many {0}")]
    TooLarge(&'static str),
    /// An edge, entry or exit names a node that is not in it.
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    /// Two edges between the same nodes.
    #[error("duplicate edge {0} → {1}")]
    DuplicateEdge(NodeId, NodeId),
    /// A cycle (through this node).
    #[error("the graph has a cycle through node {0}")]
    Cycle(NodeId),
    /// The entries are not exactly the nodes without predecessors.
    #[error("the entries are not exactly the nodes without predecessors")]
    Entries,
    /// The exits are not exactly the nodes without successors.
    #[error("the exits are not exactly the nodes without successors")]
    Exits,
    /// Bad bytes.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Why a claim was not granted.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ClaimError {
    /// The sequence is not known to its leader (or here).
    #[error("unknown sequence")]
    UnknownSequence,
    /// No such node in the sequence.
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    /// Its predecessors are not all done.
    #[error("node {0} is not ready")]
    NotReady(NodeId),
    /// Someone else holds a live lease on it.
    #[error("node {0} is claimed")]
    Claimed(NodeId),
    /// It is done (or skipped, or failed).
    #[error("node {0} is resolved")]
    Resolved(NodeId),
    /// The peer asked is not the sequence's leader.
    #[error("not the leader")]
    NotLeader,
    /// The leader could not be reached or answered badly.
    #[error("leader: {0}")]
    Remote(String),
}

/// Why a result was not accepted.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum SubmissionError {
    /// Its token is older than the node's current one (a newer holder was granted it).
    #[error("stale token {got} (current {current})")]
    StaleToken {
        /// The result's.
        got: u64,
        /// The node's current.
        current: u64,
    },
    /// Its token or its signature does not verify, or it names another holder.
    #[error("forged token or result")]
    Forged,
    /// The node has no lease (never claimed, or resolved).
    #[error("node {0} is not claimed")]
    Unclaimed(NodeId),
    /// The sequence is not known.
    #[error("unknown sequence")]
    UnknownSequence,
    /// The result did not validate.
    #[error("invalid result: {0}")]
    Invalid(String),
    /// Bad bytes.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The leader is cut off from most executors it knows of (a partition's minority
    /// side): it accepts nothing until it reconnects, or a leader on the majority side
    /// takes the node over.
    #[error("the leader is cut off from most executors")]
    NoQuorum,
    /// The leader could not be reached or answered badly.
    #[error("leader: {0}")]
    Remote(String),
}

/// Why a failed sequence was not retried.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RetryError {
    /// The sequence is not known to its leader.
    #[error("unknown sequence")]
    UnknownSequence,
    /// Only the peer that created a sequence may retry it.
    #[error("only the sequence's creator may retry it")]
    NotCreator,
    /// The sequence has not failed (it is running, pending or completed).
    #[error("the sequence has not failed (it is {0:?})")]
    NotFailed(crate::model::ExecutionStatus),
    /// The peer asked is not the sequence's leader.
    #[error("not the leader")]
    NotLeader,
    /// The leader could not be reached or answered badly.
    #[error("leader: {0}")]
    Remote(String),
}

/// What the coordinator API's callers get beyond the above.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ExecError {
    /// The sequence is invalid.
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    /// A claim failed.
    #[error(transparent)]
    Claim(#[from] ClaimError),
    /// A submission failed.
    #[error(transparent)]
    Submission(#[from] SubmissionError),
    /// No executor to lead the sequence.
    #[error("no executor in view to lead the sequence")]
    NoLeader,
    /// Fewer than a majority of the sequence's replicas took it (a partition, or replicas
    /// out of reach): it is not kept safely yet. Submitting the same sequence again is
    /// safe — its id is its content — once more replicas are reachable.
    #[error("the sequence reached {reached} of its {replicas} replicas, not a majority")]
    NoQuorum {
        /// Replicas that took it.
        reached: usize,
        /// The size of its replica set.
        replicas: usize,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// The network failed.
    #[error("network: {0}")]
    Net(String),
    /// The service stopped.
    #[error("the execution service stopped")]
    Stopped,
}

impl From<NetError> for ExecError {
    fn from(e: NetError) -> Self {
        match e {
            NetError::Closed => Self::Stopped,
            other => Self::Net(other.to_string()),
        }
    }
}
