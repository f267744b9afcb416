//! What the network reports: events and counters.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use causality_version::{Agreement, Incompatibility};
use multiaddr::Multiaddr;

use crate::error::{RefusalReason, Rejection};
use crate::peer::PeerId;

/// Something that happened on the network.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetworkEvent {
    /// The node listens on a new address.
    Listening {
        /// The address.
        address: Multiaddr,
    },
    /// A peer connected and the version handshake succeeded.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// The version and features agreed with it.
        agreement: Agreement,
        /// The peer's implementation string.
        agent: String,
    },
    /// The last connection to a peer closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A peer's score fell below the ban threshold; it is disconnected and refused.
    PeerBanned {
        /// The peer.
        peer: PeerId,
        /// For how long.
        duration: Duration,
    },
    /// A peer speaks an incompatible version or lacks required features; it is disconnected.
    VersionMismatch {
        /// The peer.
        peer: PeerId,
        /// What is incompatible, from our side.
        reason: Incompatibility,
    },
    /// A message from a peer was rejected.
    MessageRejected {
        /// The peer that delivered it.
        from: PeerId,
        /// Why.
        reason: Rejection,
    },
    /// A sender was proven to have equivocated (two envelopes under one sequence number):
    /// it is banned, and the evidence was passed to our peers.
    Equivocation {
        /// The checked evidence.
        evidence: crate::Equivocation,
    },
    /// A request from a peer was refused.
    RequestRefused {
        /// The requester.
        from: PeerId,
        /// The protocol asked for.
        protocol: String,
        /// Why.
        reason: RefusalReason,
    },
}

/// Counters of what the network has done, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkMetrics {
    /// Envelopes this node published.
    pub published: u64,
    /// Published envelopes the transport could not send (no subscribed peer, or its send
    /// queues full).
    pub publish_failures: u64,
    /// Inbound messages accepted (each once).
    pub accepted: u64,
    /// Inbound messages rejected, by reason label (see [`Rejection::label`]).
    pub rejected: BTreeMap<&'static str, u64>,
    /// Messages handed to local subscribers.
    pub delivered: u64,
    /// Messages dropped because a subscriber's queue was full.
    pub subscriber_drops: u64,
    /// Messages on validated topics that got no verdict in time (or were pushed out by
    /// newer ones) and so were not forwarded.
    pub validation_timeouts: u64,
    /// Requests sent.
    pub requests_sent: u64,
    /// Requests answered by a local handler.
    pub requests_served: u64,
    /// Requests refused, by reason.
    pub requests_refused: BTreeMap<String, u64>,
    /// Peers banned.
    pub bans: u64,
    /// Inbound peers evicted to make room for a newcomer.
    pub evictions: u64,
    /// Equivocations proven (by us or by evidence we checked).
    pub equivocations: u64,
    /// Bytes of envelopes and requests received.
    pub bytes_in: u64,
    /// Bytes of envelopes and requests sent.
    pub bytes_out: u64,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (every critical
/// section here leaves the data consistent).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
