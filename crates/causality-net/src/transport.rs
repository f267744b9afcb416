//! What an adapter must provide: a transport that executes the core's commands and reports
//! what arrives. Everything else (command handling, pending requests, their failure on
//! disconnect, handlers, subscribers) is written once, in `crate::driver`.

use std::sync::Arc;
use std::task::{Context, Poll};

use multiaddr::Multiaddr;

use crate::core::{Command, InboundId, RequestFailure, RequestId, Verdict};
use crate::error::NetError;
use crate::peer::PeerId;
use crate::topic::PhysicalTopic;

/// Something the transport observed.
#[derive(Debug)]
pub(crate) enum TransportEvent<G> {
    /// A listener is up on this address (libp2p: relay circuits, new interfaces).
    #[cfg_attr(not(feature = "libp2p"), allow(dead_code))]
    Listening(Multiaddr),
    /// The first connection to a peer is up; `ip` is the remote's address, when known.
    Connected {
        peer: PeerId,
        dialer: bool,
        ip: Option<std::net::IpAddr>,
    },
    /// The last connection to a peer closed.
    Disconnected { peer: PeerId },
    /// A peer joined or left a physical gossip topic.
    PeerTopic {
        peer: PeerId,
        physical: PhysicalTopic,
        subscribed: bool,
    },
    /// A gossip frame; answer with [`Transport::report`] and `token`.
    Gossip {
        via: PeerId,
        source: Option<PeerId>,
        physical: PhysicalTopic,
        bytes: Arc<[u8]>,
        token: G,
    },
    /// An inbound request frame on stream protocol `protocol`.
    Request {
        id: InboundId,
        peer: PeerId,
        protocol: String,
        bytes: Vec<u8>,
    },
    /// The response frame of an outbound request.
    Response { id: RequestId, bytes: Vec<u8> },
    /// An outbound request could not complete.
    RequestFailed {
        id: RequestId,
        failure: RequestFailure,
    },
    /// A dial finished.
    Dialed {
        token: u64,
        result: Result<(), NetError>,
    },
    /// A listen request finished.
    Listened {
        token: u64,
        result: Result<(), NetError>,
    },
    /// A publish could not be sent.
    PublishFailed,
}

/// A way of moving bytes between nodes: the in-memory hub or libp2p.
pub(crate) trait Transport: Send + 'static {
    /// What a gossip frame's verdict must be reported with.
    type GossipToken: Send;

    /// Carries out a command of the core. Never blocks.
    fn execute(&mut self, command: Command);

    /// Tells gossip what the core thought of a frame (forward, drop, penalize).
    fn report(&mut self, token: Self::GossipToken, verdict: &Verdict);

    /// Dials `address`; the outcome arrives as [`TransportEvent::Dialed`] with `token`.
    fn dial(&mut self, token: u64, address: Multiaddr);

    /// Listens on another address; the outcome arrives as [`TransportEvent::Listened`].
    fn listen(&mut self, token: u64, address: Multiaddr);

    /// The next event. `None` when the transport has stopped.
    fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<TransportEvent<Self::GossipToken>>>;

    /// Closes everything; called once when the node stops.
    fn shutdown(&mut self);
}
