//! The shape every protocol above the network takes: a pure state machine ([`Protocol`])
//! plus one generic async driver over a [`Network`](crate::Network) ([`spawn`]), and a
//! tokio-free simulation runner (`sim`, feature `test-utils`) that runs many instances
//! over a seeded, virtual-time network model.
//!
//! A protocol crate is then `state.rs` (the [`Protocol`] implementation: no sockets, no
//! tasks, no clock; time comes in as an argument), `messages.rs` (its wire types and
//! conversions) and a thin `driver.rs` that calls [`spawn`] and offers a typed API. See
//! `docs/PROTOCOLS.md` for a worked example (discovery).
//!
//! The model is quinn-proto's `Endpoint` and iroh-gossip's `proto::State`: inputs in,
//! outputs pulled with [`Protocol::poll_output`], timers as data.

mod driver;
#[cfg(feature = "test-utils")]
pub mod sim;

use std::fmt::Debug;

pub use self::driver::{Service, WeakService, spawn};
use crate::envelope::{Acceptance, Message};
use crate::error::{NetError, RefusalReason};
use crate::peer::PeerId;
use crate::protocol::RequestProtocol;
use crate::topic::Topic;
use causality_hash::ContentId;
use multiaddr::Multiaddr;

/// An inbound request, numbered by the driver; answer it with [`Output::Respond`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InboundId(pub u64);

/// An outbound request, numbered by the protocol (see [`Ids`]); its answer arrives as
/// [`Input::Response`] or [`Input::RequestFailed`] with the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutboundId(pub u64);

/// A local call awaiting a reply, numbered by the driver; answer with [`Output::Reply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// A counter handing out [`OutboundId`]s.
#[derive(Clone, Debug, Default)]
pub struct Ids(u64);

impl Ids {
    /// The next id.
    pub fn next_id(&mut self) -> OutboundId {
        self.0 += 1;
        OutboundId(self.0)
    }
}

/// How bad a peer's misbehaviour is; decided by the protocol, turned into score points by
/// the network (a ban follows when enough accumulates).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Unwelcome but possibly honest (over a rate, a stale claim): 1 point.
    Minor,
    /// Probably faulty (a record that does not verify among good ones): 5 points.
    Moderate,
    /// Provably bad (malformed bytes, a forged signature, an invalid proof): 10 points.
    Severe,
    /// Proof of malice (equivocation): a ban at once (100 points).
    Fatal,
}

impl Severity {
    /// The score points this costs.
    pub fn points(self) -> u32 {
        match self {
            Self::Minor => 1,
            Self::Moderate => 5,
            Self::Severe => 10,
            Self::Fatal => 100,
        }
    }
}

/// What a protocol state machine is told.
#[derive(Debug)]
pub enum Input<P: Protocol + ?Sized> {
    /// The protocol starts: subscribe, schedule the first timers.
    Start,
    /// A message on a topic the protocol subscribed to.
    Message(Message),
    /// A request on one of the protocol's [`Protocol::protocols`].
    Request {
        /// Answer with this id.
        id: InboundId,
        /// Who asked.
        peer: PeerId,
        /// The protocol id it arrived on, e.g. `/causality/discovery/0.1.0`.
        protocol: String,
        /// The body.
        body: Vec<u8>,
    },
    /// The answer to an [`Output::Request`].
    Response {
        /// The request's id.
        id: OutboundId,
        /// Who answered.
        peer: PeerId,
        /// The body.
        body: Vec<u8>,
    },
    /// An [`Output::Request`] failed (refused, timed out, not connected).
    RequestFailed {
        /// The request's id.
        id: OutboundId,
        /// To whom.
        peer: PeerId,
        /// Why.
        error: NetError,
    },
    /// A timer set with [`Output::Schedule`] fired.
    Timer(P::Timer),
    /// A local command; `call` is set when the caller awaits an [`Output::Reply`].
    Command {
        /// The command.
        command: P::Command,
        /// The call to reply to, if any.
        call: Option<CallId>,
    },
    /// A peer connected (its handshake completed).
    PeerConnected(PeerId),
    /// A peer disconnected.
    PeerDisconnected(PeerId),
    /// An [`Output::Dial`] failed.
    DialFailed {
        /// The peer dialed, when it was known.
        peer: Option<PeerId>,
        /// Where.
        address: Multiaddr,
    },
    /// The membership a lower layer maintains changed (for protocols above discovery).
    View(P::View),
}

/// What a protocol state machine asks its driver to do.
#[derive(Debug)]
pub enum Output<P: Protocol + ?Sized> {
    /// Publish on a logical topic.
    Publish {
        /// Where.
        topic: Topic,
        /// What the payload is.
        payload_type: String,
        /// The payload.
        payload: Vec<u8>,
    },
    /// Start receiving messages on a topic.
    Subscribe(Topic),
    /// Start receiving messages on a topic that this protocol validates: gossip forwards
    /// each one only after an [`Output::Validate`] accepts it.
    SubscribeValidated(Topic),
    /// The verdict on a message of a validated topic (rejecting penalizes its relay).
    Validate {
        /// The message's id ([`Message::id`]).
        message: ContentId,
        /// The verdict.
        acceptance: Acceptance,
    },
    /// Stop.
    Unsubscribe(Topic),
    /// Send a request; the answer comes back as an input with `id`.
    Request {
        /// Numbered by the protocol.
        id: OutboundId,
        /// To whom (must be connected).
        peer: PeerId,
        /// The protocol name, one of [`Protocol::protocols`] (or a full id).
        protocol: String,
        /// The body.
        body: Vec<u8>,
    },
    /// Answer an inbound request (or refuse it).
    Respond {
        /// The request.
        id: InboundId,
        /// The body, or why not.
        result: Result<Vec<u8>, (RefusalReason, String)>,
    },
    /// Penalize a peer.
    Penalize {
        /// Whom.
        peer: PeerId,
        /// How much.
        severity: Severity,
        /// Why (logged).
        reason: String,
    },
    /// Call back with `timer` at `at_ms`.
    Schedule {
        /// When, ms on the node's clock.
        at_ms: u64,
        /// What.
        timer: P::Timer,
    },
    /// Dial an address.
    Dial {
        /// The peer, when known (reported back in [`Input::DialFailed`]).
        peer: Option<PeerId>,
        /// Where.
        address: Multiaddr,
    },
    /// Close the connections to a peer.
    Disconnect(PeerId),
    /// The reply to a call.
    Reply {
        /// The call.
        call: CallId,
        /// The reply.
        reply: P::Reply,
    },
    /// Something for the protocol's API to report.
    Event(P::Event),
}

/// A protocol as a pure state machine. See the [module docs](self).
pub trait Protocol: Send + 'static {
    /// Local commands.
    type Command: Send + 'static;
    /// Replies to calls.
    type Reply: Send + 'static;
    /// What the API reports.
    type Event: Send + 'static;
    /// Timer kinds.
    type Timer: Debug + Send + 'static;
    /// Membership from a lower layer, for [`Input::View`] (`()` when unused).
    type View: Clone + Send + Sync + 'static;

    /// The request protocols this protocol serves (and sends).
    fn protocols(&self) -> Vec<RequestProtocol>;

    /// Handles one input at `now_ms` (ms on the node's clock).
    fn handle(&mut self, now_ms: u64, input: Input<Self>);

    /// The next output. Call after every [`handle`](Self::handle) until it returns `None`.
    fn poll_output(&mut self) -> Option<Output<Self>>;
}
