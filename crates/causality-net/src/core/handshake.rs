//! The version handshake every connection starts with: the dialer asks, the listener
//! answers with its own `Hello`, each side negotiates. An incompatible peer is told why,
//! then disconnected a little later (a timer, not a detached sleep).

use std::time::Duration;

use causality_version::{Hello, ProtocolVersion, negotiate};
use prost::Message as _;

use super::requests::{InboundId, Internal};
use super::{Command, Core, REFUSAL_GRACE_MS};
use crate::error::{NetError, RefusalReason};
use crate::event::NetworkEvent;
use crate::peer::PeerId;
use crate::proto::v1 as pb;
use crate::protocol::{RequestLimits, RequestProtocol};

/// The protocol of the version handshake every connection starts with.
pub(crate) const HANDSHAKE_PROTOCOL: &str = "/causality/handshake/1.0.0";

fn protocol() -> RequestProtocol {
    let limits = RequestLimits::builder()
        .max_request_bytes(causality_version::MAX_HELLO_LEN + 64)
        .max_response_bytes(causality_version::MAX_HELLO_LEN + 64)
        .queue(1)
        .rate(5, 10)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("valid handshake limits");
    RequestProtocol::new("handshake", &[ProtocolVersion::new(1, 0, 0)], limits)
        .expect("valid handshake protocol")
}

pub(crate) fn decode_handshake(body: &[u8]) -> Result<Hello, NetError> {
    let malformed = |detail: String| NetError::Malformed {
        what: "handshake",
        detail,
    };
    if body.len() > causality_version::MAX_HELLO_LEN + 16 {
        return Err(malformed("too large".into()));
    }
    let handshake = pb::Handshake::decode(body).map_err(|e| malformed(e.to_string()))?;
    let hello = handshake
        .hello
        .ok_or_else(|| malformed("no hello".into()))?;
    Hello::try_from(hello).map_err(|e| malformed(e.to_string()))
}

impl Core {
    fn own_handshake(&self) -> Vec<u8> {
        pb::Handshake {
            hello: Some((&self.hello).into()),
        }
        .encode_to_vec()
    }

    pub(super) fn start_handshake(&mut self, peer: PeerId, now_ms: u64) {
        let body = self.own_handshake();
        if let Err(e) = self.send_request(peer, protocol(), body, now_ms, Some(Internal::Handshake))
        {
            tracing::info!(target: "causality_net", kind = "network", peer = %peer, error = %e, "handshake not sent");
        }
    }

    /// The answer to our handshake request.
    pub(super) fn on_handshake_result(
        &mut self,
        peer: PeerId,
        result: Result<Vec<u8>, NetError>,
        _now_ms: u64,
    ) {
        match result.and_then(|body| decode_handshake(&body)) {
            Ok(remote) => {
                if !self.complete_handshake(peer, &remote) {
                    self.transport(Command::Disconnect(peer));
                }
            }
            Err(NetError::Refused {
                reason: RefusalReason::UnsupportedProtocol,
                ..
            }) => {
                // A plain libp2p peer (no Causality handshake): it may still gossip, and
                // everything it sends is checked like anyone's.
                tracing::info!(target: "causality_net", kind = "network", peer = %peer, "peer does not speak the handshake; keeping it as a gossip-only peer");
            }
            Err(NetError::NotConnected(_)) => {}
            Err(e) => {
                tracing::info!(target: "causality_net", kind = "network", peer = %peer, error = %e, "handshake failed");
                self.transport(Command::Disconnect(peer));
            }
        }
    }

    /// Applies the remote's `Hello`; returns whether the peer is compatible.
    fn complete_handshake(&mut self, peer: PeerId, remote: &Hello) -> bool {
        match negotiate(&self.hello, remote) {
            Ok(agreement) => {
                let Some(info) = self.peers.get_mut(&peer) else {
                    return true;
                };
                let new = info.agreement.is_none();
                info.agreement = Some(agreement);
                info.agent = Some(remote.agent.clone());
                self.changed = true;
                if new {
                    tracing::info!(target: "causality_net", kind = "network", peer = %peer, version = %agreement.version, agent = %remote.agent, "peer connected");
                    self.emit(NetworkEvent::PeerConnected {
                        peer,
                        agreement,
                        agent: remote.agent.clone(),
                    });
                }
                true
            }
            Err(reason) => {
                tracing::warn!(target: "causality_net", kind = "network", peer = %peer, reason = %reason, "version mismatch; disconnecting");
                self.emit(NetworkEvent::VersionMismatch { peer, reason });
                false
            }
        }
    }

    /// A handshake request: answer with our `Hello`; when incompatible, disconnect after a
    /// grace period so the remote reads why.
    pub(super) fn on_handshake_request(
        &mut self,
        _id: InboundId,
        peer: PeerId,
        body: &[u8],
        now_ms: u64,
    ) -> Option<Vec<u8>> {
        let remote = match decode_handshake(body) {
            Ok(remote) => remote,
            Err(e) => {
                self.penalize(peer, 10, now_ms);
                return Some(self.refusal(
                    peer,
                    HANDSHAKE_PROTOCOL,
                    RefusalReason::BadRequest,
                    &e.to_string(),
                ));
            }
        };
        if !self.complete_handshake(peer, &remote) {
            self.disconnects.insert((now_ms + REFUSAL_GRACE_MS, peer));
        }
        Some(
            pb::Response {
                result: Some(pb::response::Result::Body(self.own_handshake())),
            }
            .encode_to_vec(),
        )
    }

    /// Registers the handshake protocol (every node serves it).
    pub(crate) fn register_handshake(&mut self) {
        self.register(protocol(), true).expect("registered once");
    }
}
