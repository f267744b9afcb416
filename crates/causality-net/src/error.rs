//! Errors of the network layer, and the reasons inbound traffic is rejected.

use std::fmt;

use crate::peer::PeerId;

/// Why an operation on the [`Network`](crate::Network) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The network has been shut down (its driver task ended).
    #[error("the network is shut down")]
    Closed,
    /// The peer did not answer in time.
    #[error("request `{protocol}` to {peer} timed out")]
    Timeout {
        /// Who was asked.
        peer: PeerId,
        /// The protocol of the request.
        protocol: String,
    },
    /// No connection to the peer, and none could be made.
    #[error("not connected to {0}")]
    NotConnected(PeerId),
    /// The remote refused the request.
    #[error("{peer} refused `{protocol}`: {reason} ({detail})")]
    Refused {
        /// Who refused.
        peer: PeerId,
        /// The protocol of the request.
        protocol: String,
        /// Why.
        reason: RefusalReason,
        /// The remote's explanation.
        detail: String,
    },
    /// Something is larger than the configured limit.
    #[error("{what} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit (see [`Limits`](crate::Limits)).
        limit: usize,
    },
    /// Bytes received could not be decoded.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's complaint.
        detail: String,
    },
    /// A logical topic string did not parse.
    #[error("invalid topic `{topic}`: {reason}")]
    InvalidTopic {
        /// The offending text (truncated to 128 bytes).
        topic: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A peer id did not parse.
    #[error("invalid peer id: {0}")]
    InvalidPeerId(String),
    /// A configuration value is out of range, or a protocol id is malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The authorization policy forbids the operation.
    #[error("{peer} is not authorized to {operation}")]
    Unauthorized {
        /// Who asked.
        peer: PeerId,
        /// What they asked for.
        operation: String,
    },
    /// A handler for this protocol is already registered.
    #[error("a handler for `{0}` is already registered")]
    AlreadyServing(String),
    /// Dialing failed: no connection to the address could be made.
    #[error("dial {address} failed")]
    Dial {
        /// Where.
        address: String,
        /// The transport's reason.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Listening on an address failed.
    #[error("listen on {address} failed")]
    Listen {
        /// Where.
        address: String,
        /// The transport's reason.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A request's stream failed (reset, closed early, a malformed frame).
    #[error("request `{protocol}` to {peer}: stream failed")]
    Stream {
        /// To whom.
        peer: PeerId,
        /// The protocol id.
        protocol: String,
        /// What went wrong on the stream.
        #[source]
        source: std::io::Error,
    },
    /// A dial or listen address could not be used at all (wrong form, no such node).
    #[error("address {address}: {detail}")]
    Address {
        /// The address.
        address: String,
        /// What went wrong.
        detail: String,
    },
    /// The node identity could not be loaded or stored.
    #[error("identity: {0}")]
    Identity(String),
    /// Sealing or opening an end-to-end encrypted payload failed.
    #[error("sealed payload: {0}")]
    Seal(&'static str),
    /// Transport-level failure.
    #[error("transport: {0}")]
    Transport(String),
}

/// A configuration value that a builder refused, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: `{field}` {reason}")]
pub struct ConfigError {
    field: &'static str,
    reason: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }

    /// The field at fault.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// `Ok` when `ok`, else an error saying `field` must be greater than zero.
    pub fn positive(field: &'static str, ok: bool) -> Result<(), Self> {
        if ok {
            Ok(())
        } else {
            Err(Self::new(field, "must be greater than zero"))
        }
    }
}

/// Why a remote refused a request. Mirrors `Refusal.Reason` in `proto/causality/net/v1/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalReason {
    /// No handler for the protocol.
    UnsupportedProtocol,
    /// The handler's queue is full.
    Busy,
    /// The requester exceeded its request rate.
    RateLimited,
    /// The requester is not authorized.
    Unauthorized,
    /// The handler failed or dropped the request.
    HandlerFailed,
    /// The request was malformed or too large.
    BadRequest,
}

impl RefusalReason {
    pub(crate) fn to_proto(self) -> i32 {
        use crate::proto::v1::refusal::Reason;
        (match self {
            Self::UnsupportedProtocol => Reason::UnsupportedProtocol,
            Self::Busy => Reason::Busy,
            Self::RateLimited => Reason::RateLimited,
            Self::Unauthorized => Reason::Unauthorized,
            Self::HandlerFailed => Reason::HandlerFailed,
            Self::BadRequest => Reason::BadRequest,
        }) as i32
    }

    pub(crate) fn from_proto(value: i32) -> Self {
        use crate::proto::v1::refusal::Reason;
        match Reason::try_from(value) {
            Ok(Reason::UnsupportedProtocol) => Self::UnsupportedProtocol,
            Ok(Reason::Busy) => Self::Busy,
            Ok(Reason::RateLimited) => Self::RateLimited,
            Ok(Reason::Unauthorized) => Self::Unauthorized,
            Ok(Reason::BadRequest) => Self::BadRequest,
            Ok(Reason::HandlerFailed | Reason::Unspecified) | Err(_) => Self::HandlerFailed,
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnsupportedProtocol => "unsupported protocol",
            Self::Busy => "busy",
            Self::RateLimited => "rate limited",
            Self::Unauthorized => "unauthorized",
            Self::HandlerFailed => "handler failed",
            Self::BadRequest => "bad request",
        })
    }
}

/// Why an inbound message or request was rejected. Each rejection is counted and (except
/// [`Rejection::Duplicate`]) reported as a
/// [`NetworkEvent::MessageRejected`](crate::NetworkEvent) and logged (rate-limited); who
/// is penalized, if anyone, is [`Rejection::blame`]'s answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The bytes are not a valid protobuf message of the expected type, or not in the
    /// canonical encoding (which would let one signed message take many ids).
    #[error("malformed: {0}")]
    Malformed(String),
    /// Larger than the configured limit.
    #[error("oversize: {size} bytes, limit {limit}")]
    Oversize {
        /// Size received.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The envelope's signature does not verify against its sender.
    #[error("bad signature")]
    BadSignature,
    /// The transport says the message came from one peer, the envelope claims another.
    #[error("wrong sender: envelope names {claimed}, transport authenticated {actual}")]
    WrongSender {
        /// The sender named in the envelope.
        claimed: PeerId,
        /// The originator authenticated by the transport.
        actual: PeerId,
    },
    /// A sequence number already used by its sender, or too old for its replay window. A
    /// relay cannot know what we have seen, so nobody is blamed; a second, different
    /// envelope under a sequence number we accepted is [`Rejection::Equivocation`].
    #[error("replay: sequence {seq} of {sender} already seen or too old")]
    Replay {
        /// The sender.
        sender: PeerId,
        /// The reused sequence number.
        seq: u64,
    },
    /// Exactly this message was already received (normal in gossip; not penalized).
    #[error("duplicate message")]
    Duplicate,
    /// The envelope's timestamp is too far from our clock.
    #[error("timestamp {skew_ms} ms from our clock (bound {bound_ms} ms)")]
    ClockSkew {
        /// Signed difference, envelope minus local, in milliseconds.
        skew_ms: i64,
        /// The configured bound.
        bound_ms: u64,
    },
    /// The originator exceeded its message rate (counted per originator, after its
    /// signature verified, so a busy relay of many originators is never limited for them).
    #[error("rate limited")]
    RateLimited,
    /// The relay exceeded its byte budget (a cheap guard before any decoding); not
    /// forwarded, nobody penalized.
    #[error("relay over its byte budget")]
    RelayOverBudget,
    /// Two validly signed envelopes from one sender under one sequence number with
    /// different content: the sender is banned and the pair kept as
    /// [`Equivocation`](crate::Equivocation) evidence.
    #[error("equivocation: {sender} signed two envelopes under sequence {seq}")]
    Equivocation {
        /// The equivocating sender.
        sender: PeerId,
        /// The sequence number it used twice.
        seq: u64,
    },
    /// The envelope's logical topic is invalid or does not belong to the physical topic it
    /// arrived on.
    #[error("bad topic: {0}")]
    BadTopic(String),
    /// The envelope's protocol version is incompatible with ours.
    #[error("incompatible version {0}")]
    Version(String),
    /// The relay, or the originator, is banned.
    #[error("peer is banned")]
    Banned,
    /// The protocol that validates the topic found the payload invalid (an invalid proof,
    /// say) — something the relay should have checked before forwarding.
    #[error("invalid payload: {0}")]
    Invalid(String),
}

/// Who is penalized for a rejected message (see [`Rejection::blame`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The peer that delivered it: it could have checked this before forwarding
    /// (malformed, oversize, bad signature, wrong sender, wrong topic, invalid payload).
    Relay,
    /// The envelope's signed sender, once its signature verified: what it did depends on
    /// our state (its rate, its clock), not on anything a relay could check.
    Originator,
    /// Nobody: normal in gossip (duplicates), unprovable (replays), or about us (our
    /// version, our bans, our byte budget).
    Nobody,
}

impl Rejection {
    /// A short stable label, for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Oversize { .. } => "oversize",
            Self::BadSignature => "bad_signature",
            Self::WrongSender { .. } => "wrong_sender",
            Self::Replay { .. } => "replay",
            Self::Duplicate => "duplicate",
            Self::ClockSkew { .. } => "clock_skew",
            Self::RateLimited => "rate_limited",
            Self::RelayOverBudget => "relay_over_budget",
            Self::Equivocation { .. } => "equivocation",
            Self::BadTopic(_) => "bad_topic",
            Self::Version(_) => "version",
            Self::Banned => "banned",
            Self::Invalid(_) => "invalid_payload",
        }
    }

    /// Who is penalized: a relay only for what it could have checked before forwarding;
    /// what depends on our own state is charged to the originator or to nobody, so honest
    /// relays between an attacker and us never pay for it.
    pub fn blame(&self) -> Blame {
        match self {
            Self::Malformed(_)
            | Self::Oversize { .. }
            | Self::BadSignature
            | Self::WrongSender { .. }
            | Self::BadTopic(_)
            | Self::Invalid(_) => Blame::Relay,
            Self::ClockSkew { .. } | Self::RateLimited | Self::Equivocation { .. } => {
                Blame::Originator
            }
            Self::Duplicate
            | Self::Replay { .. }
            | Self::RelayOverBudget
            | Self::Version(_)
            | Self::Banned => Blame::Nobody,
        }
    }

    /// Whether the relay that delivered the message is at fault ([`Blame::Relay`]): only
    /// then is the message reported to gossip as invalid (which penalizes the relay there
    /// too); otherwise it is ignored.
    pub fn is_fault(&self) -> bool {
        self.blame() == Blame::Relay
    }

    /// The score penalty for whoever [`blame`](Self::blame) names.
    pub(crate) fn penalty(&self) -> i64 {
        match self {
            Self::Duplicate
            | Self::Banned
            | Self::RelayOverBudget
            | Self::Replay { .. }
            | Self::Version(_) => 0,
            Self::RateLimited => 1,
            Self::ClockSkew { .. } => 5,
            Self::Malformed(_)
            | Self::Oversize { .. }
            | Self::BadSignature
            | Self::WrongSender { .. }
            | Self::BadTopic(_)
            | Self::Invalid(_) => 10,
            // Banned outright; the score is not what decides.
            Self::Equivocation { .. } => 0,
        }
    }
}
