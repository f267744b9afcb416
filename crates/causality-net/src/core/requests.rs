//! Request-response in the core: registered protocols with their own limits, inbound
//! requests checked and handed to handlers, outbound requests with their deadlines, version
//! fallback and failure when the peer goes away.

use std::collections::{BTreeSet, HashMap};

use prost::Message as _;

use super::rate::Gcra;
use super::scores::duration_ms;
use super::{Command, Core, Output};
use crate::error::{NetError, RefusalReason};
use crate::peer::PeerId;
use crate::proto::v1 as pb;
use crate::protocol::RequestProtocol;

/// An outbound request, numbered by the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RequestId(pub(crate) u64);

/// An inbound request, numbered by the transport that received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct InboundId(pub(crate) u64);

/// Why the transport could not complete an outbound request.
#[derive(Debug)]
#[cfg_attr(not(feature = "libp2p"), allow(dead_code))]
pub(crate) enum RequestFailure {
    /// No connection, or it closed before the response.
    NotConnected,
    /// The peer does not speak this protocol id.
    UnsupportedProtocol,
    /// No response in time.
    Timeout,
    /// Something else on the stream.
    Io(std::io::Error),
}

/// Requests the core sends itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Internal {
    /// The version handshake.
    Handshake,
    /// Equivocation evidence passed on.
    Evidence,
}

/// Every known request protocol, by name.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    protocols: HashMap<String, Registered>,
    /// Full id string → protocol name.
    by_id: HashMap<String, String>,
    /// The version last agreed with a peer per protocol (index into `ids`).
    agreed: HashMap<(PeerId, String), usize>,
}

#[derive(Debug)]
struct Registered {
    protocol: RequestProtocol,
    serving: bool,
    rate: Gcra<PeerId>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn register(
        &mut self,
        protocol: RequestProtocol,
        serve: bool,
    ) -> Result<(), NetError> {
        let name = protocol.name().to_owned();
        if let Some(existing) = self.protocols.get_mut(&name) {
            if serve && existing.serving {
                return Err(NetError::AlreadyServing(protocol.ids()[0].to_string()));
            }
            existing.serving |= serve;
            if serve {
                // The server's registration decides the limits and versions.
                existing.protocol = protocol.clone();
                existing.rate = Gcra::new(
                    protocol.limits().requests_per_second(),
                    protocol.limits().burst(),
                );
            }
        } else {
            let rate = Gcra::new(
                protocol.limits().requests_per_second(),
                protocol.limits().burst(),
            );
            self.protocols.insert(
                name.clone(),
                Registered {
                    protocol: protocol.clone(),
                    serving: serve,
                    rate,
                },
            );
        }
        for id in protocol.ids() {
            self.by_id.insert(id.to_string(), name.clone());
        }
        Ok(())
    }

    /// Stops serving `name`; returns its ids when it was served.
    pub(crate) fn unserve(&mut self, name: &str) -> Option<Vec<String>> {
        let registered = self.protocols.get_mut(name)?;
        if !std::mem::take(&mut registered.serving) {
            return None;
        }
        Some(
            registered
                .protocol
                .ids()
                .iter()
                .map(ToString::to_string)
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&RequestProtocol> {
        self.protocols.get(name).map(|r| &r.protocol)
    }

    pub(crate) fn forget_peer(&mut self, peer: &PeerId) {
        self.agreed.retain(|(p, _), _| p != peer);
    }

    pub(crate) fn prune(&mut self, now_ms: u64) {
        for registered in self.protocols.values_mut() {
            registered.rate.prune(now_ms);
        }
    }
}

#[derive(Debug)]
struct Pending {
    peer: PeerId,
    protocol: RequestProtocol,
    /// Index of the version being tried in `protocol.ids()`.
    attempt: usize,
    /// Kept while a lower version could still be tried.
    body: Option<Vec<u8>>,
    deadline_ms: u64,
    /// Sent by the core itself; its result goes back to the core, not to a caller.
    internal: Option<Internal>,
    /// The caller wants the response frame as it came (tests of bad input).
    raw: bool,
}

/// Outbound requests in flight.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    pending: HashMap<RequestId, Pending>,
    deadlines: BTreeSet<(u64, RequestId)>,
    next: u64,
}

impl Outbound {
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    pub(crate) fn expired(&self, now_ms: u64) -> Vec<RequestId> {
        self.deadlines
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .map(|(_, id)| *id)
            .collect()
    }

    pub(crate) fn to_peer(&self, peer: &PeerId) -> Vec<RequestId> {
        let mut ids: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.peer == *peer)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    fn remove(&mut self, id: RequestId) -> Option<Pending> {
        let pending = self.pending.remove(&id)?;
        self.deadlines.remove(&(pending.deadline_ms, id));
        Some(pending)
    }

    fn internal(&self, id: RequestId) -> Option<Internal> {
        self.pending.get(&id).and_then(|p| p.internal)
    }
}

pub(crate) fn encode_refusal(reason: RefusalReason, detail: &str) -> Vec<u8> {
    pb::Response {
        result: Some(pb::response::Result::Refused(pb::Refusal {
            reason: reason.to_proto(),
            detail: detail.chars().take(256).collect(),
        })),
    }
    .encode_to_vec()
}

pub(super) fn encode_body(body: Vec<u8>) -> Vec<u8> {
    pb::Response {
        result: Some(pb::response::Result::Body(body)),
    }
    .encode_to_vec()
}

/// Bytes of a `Request` frame around a body of `len` bytes, at most.
fn framing(protocol: &str) -> usize {
    protocol.len() + 16
}

impl Core {
    /// Sends `body` to `peer` on `protocol` (its registered limits when registered, else
    /// the ones given). Returns the id the result will carry in [`Output::Done`].
    pub(crate) fn request(
        &mut self,
        peer: PeerId,
        protocol: RequestProtocol,
        body: Vec<u8>,
        now_ms: u64,
    ) -> Result<RequestId, NetError> {
        self.send_request(peer, protocol, body, now_ms, None)
    }

    pub(super) fn send_request(
        &mut self,
        peer: PeerId,
        protocol: RequestProtocol,
        body: Vec<u8>,
        now_ms: u64,
        internal: Option<Internal>,
    ) -> Result<RequestId, NetError> {
        let protocol = self
            .registry
            .get(protocol.name())
            .cloned()
            .unwrap_or(protocol);
        let limit = protocol.limits().max_request_bytes();
        let size = body.len() + framing(&protocol.ids()[0].to_string());
        if size > limit {
            return Err(NetError::TooLarge {
                what: "request",
                size,
                limit,
            });
        }
        if !self.peers.contains_key(&peer) {
            return Err(NetError::NotConnected(peer));
        }
        let attempt = self
            .registry
            .agreed
            .get(&(peer, protocol.name().to_owned()))
            .copied()
            .unwrap_or(0);
        self.outbound.next += 1;
        let id = RequestId(self.outbound.next);
        let deadline_ms = now_ms.saturating_add(duration_ms(protocol.limits().timeout()));
        let keep = attempt + 1 < protocol.ids().len();
        let pending = Pending {
            peer,
            attempt,
            body: keep.then(|| body.clone()),
            deadline_ms,
            internal,
            raw: false,
            protocol,
        };
        self.metrics.requests_sent += 1;
        self.transmit(id, &pending, body);
        self.outbound.deadlines.insert((deadline_ms, id));
        self.outbound.pending.insert(id, pending);
        Ok(id)
    }

    /// Sends raw frame bytes on `protocol`'s stream; the result is the raw response frame.
    #[cfg(feature = "test-utils")]
    pub(crate) fn request_raw(
        &mut self,
        peer: PeerId,
        protocol: RequestProtocol,
        bytes: Vec<u8>,
        now_ms: u64,
    ) -> Result<RequestId, NetError> {
        if !self.peers.contains_key(&peer) {
            return Err(NetError::NotConnected(peer));
        }
        self.outbound.next += 1;
        let id = RequestId(self.outbound.next);
        let deadline_ms = now_ms.saturating_add(duration_ms(protocol.limits().timeout()));
        let pending = Pending {
            peer,
            attempt: 0,
            body: None,
            deadline_ms,
            internal: None,
            raw: true,
            protocol,
        };
        self.transmit_frame(id, &pending, bytes);
        self.outbound.deadlines.insert((deadline_ms, id));
        self.outbound.pending.insert(id, pending);
        Ok(id)
    }

    fn transmit(&mut self, id: RequestId, pending: &Pending, body: Vec<u8>) {
        let protocol = pending.protocol.ids()[pending.attempt].to_string();
        let bytes = pb::Request { protocol, body }.encode_to_vec();
        self.transmit_frame(id, pending, bytes);
    }

    fn transmit_frame(&mut self, id: RequestId, pending: &Pending, bytes: Vec<u8>) {
        let protocol = pending.protocol.ids()[pending.attempt].to_string();
        self.metrics.bytes_out += bytes.len() as u64;
        self.transport(Command::Request {
            id,
            peer: pending.peer,
            protocol,
            bytes,
            max_response: pending.protocol.limits().max_response_bytes() + 16,
            timeout: pending.protocol.limits().timeout(),
        });
    }

    /// The response frame of request `id` arrived.
    pub(crate) fn on_response(&mut self, id: RequestId, bytes: &[u8], now_ms: u64) {
        let Some(pending) = self.outbound.pending.get(&id) else {
            return;
        };
        let limit = pending.protocol.limits().max_response_bytes() + 16;
        let (peer, protocol) = (
            pending.peer,
            pending.protocol.ids()[pending.attempt].to_string(),
        );
        let result = if pending.raw {
            Ok(bytes.to_vec())
        } else if bytes.len() > limit {
            Err(NetError::TooLarge {
                what: "response",
                size: bytes.len(),
                limit,
            })
        } else {
            match pb::Response::decode(bytes) {
                Err(e) => Err(NetError::Malformed {
                    what: "response",
                    detail: e.to_string(),
                }),
                Ok(pb::Response {
                    result: Some(pb::response::Result::Body(body)),
                }) => Ok(body),
                Ok(pb::Response {
                    result: Some(pb::response::Result::Refused(refusal)),
                }) => {
                    let reason = RefusalReason::from_proto(refusal.reason);
                    if reason == RefusalReason::UnsupportedProtocol && self.retry_lower(id, now_ms)
                    {
                        return;
                    }
                    Err(NetError::Refused {
                        peer,
                        protocol,
                        reason,
                        detail: refusal.detail,
                    })
                }
                Ok(pb::Response { result: None }) => Err(NetError::Malformed {
                    what: "response",
                    detail: "empty".into(),
                }),
            }
        };
        self.metrics.bytes_in += bytes.len() as u64;
        if result.is_ok()
            && let Some(p) = self.outbound.pending.get(&id)
        {
            let key = (p.peer, p.protocol.name().to_owned());
            self.registry.agreed.insert(key, p.attempt);
        }
        self.finish(id, result, now_ms);
    }

    /// Tries the next lower version of the protocol; `false` when there is none.
    fn retry_lower(&mut self, id: RequestId, now_ms: u64) -> bool {
        let Some(mut pending) = self.outbound.remove(id) else {
            return false;
        };
        let Some(body) = pending.body.take() else {
            self.outbound.deadlines.insert((pending.deadline_ms, id));
            self.outbound.pending.insert(id, pending);
            return false;
        };
        pending.attempt += 1;
        if pending.attempt + 1 < pending.protocol.ids().len() {
            pending.body = Some(body.clone());
        }
        pending.deadline_ms =
            now_ms.saturating_add(duration_ms(pending.protocol.limits().timeout()));
        self.transmit(id, &pending, body);
        self.outbound.deadlines.insert((pending.deadline_ms, id));
        self.outbound.pending.insert(id, pending);
        true
    }

    /// The transport could not complete request `id`.
    pub(crate) fn on_request_failed(
        &mut self,
        id: RequestId,
        failure: RequestFailure,
        now_ms: u64,
    ) {
        if matches!(failure, RequestFailure::UnsupportedProtocol) && self.retry_lower(id, now_ms) {
            return;
        }
        self.fail_request(id, now_ms, failure);
    }

    pub(super) fn fail_request(&mut self, id: RequestId, now_ms: u64, failure: RequestFailure) {
        let Some(pending) = self.outbound.pending.get(&id) else {
            return;
        };
        let (peer, protocol) = (
            pending.peer,
            pending.protocol.ids()[pending.attempt].to_string(),
        );
        let error = match failure {
            RequestFailure::NotConnected => NetError::NotConnected(peer),
            RequestFailure::Timeout => NetError::Timeout { peer, protocol },
            RequestFailure::UnsupportedProtocol => NetError::Refused {
                peer,
                protocol,
                reason: RefusalReason::UnsupportedProtocol,
                detail: "the peer does not speak the protocol".into(),
            },
            RequestFailure::Io(source) => NetError::Stream {
                peer,
                protocol,
                source,
            },
        };
        self.finish(id, Err(error), now_ms);
    }

    fn finish(&mut self, id: RequestId, result: Result<Vec<u8>, NetError>, now_ms: u64) {
        if let Some(internal) = self.outbound.internal(id) {
            let pending = self.outbound.remove(id).expect("checked");
            match internal {
                Internal::Handshake => self.on_handshake_result(pending.peer, result, now_ms),
                Internal::Evidence => {
                    if let Err(e) = result {
                        tracing::debug!(target: "causality_net", kind = "network", peer = %pending.peer, error = %e, "evidence not delivered");
                    }
                }
            }
            return;
        }
        self.outbound.remove(id);
        self.outputs.push_back(Output::Done { id, result });
    }

    /// An inbound request frame from `peer` on stream protocol `protocol`.
    pub(crate) fn on_inbound(
        &mut self,
        id: InboundId,
        peer: PeerId,
        protocol: &str,
        bytes: &[u8],
        now_ms: u64,
    ) {
        self.metrics.bytes_in += bytes.len() as u64;
        let answer = self.check_inbound(id, peer, protocol, bytes, now_ms);
        if let Some(bytes) = answer {
            self.metrics.bytes_out += bytes.len() as u64;
            self.transport(Command::Respond { id, bytes });
        }
    }

    /// Checks an inbound request; returns the refusal to send now, or `None` when it went
    /// to a handler (or the handshake answered it).
    fn check_inbound(
        &mut self,
        id: InboundId,
        peer: PeerId,
        protocol: &str,
        bytes: &[u8],
        now_ms: u64,
    ) -> Option<Vec<u8>> {
        if self.scores.is_banned(&peer, now_ms) {
            return Some(self.refusal(peer, protocol, RefusalReason::Unauthorized, "banned"));
        }
        let name = self.registry.by_id.get(protocol).cloned();
        let limit = name
            .as_deref()
            .and_then(|n| self.registry.get(n))
            .map_or(4096, |p| p.limits().max_request_bytes());
        if bytes.len() > limit + framing(protocol) {
            return Some(self.penalized_refusal(
                peer,
                10,
                now_ms,
                protocol,
                RefusalReason::BadRequest,
                "request too large",
            ));
        }
        let Ok(request) = pb::Request::decode(bytes) else {
            return Some(self.penalized_refusal(
                peer,
                10,
                now_ms,
                protocol,
                RefusalReason::BadRequest,
                "malformed request",
            ));
        };
        if request.protocol != protocol {
            return Some(self.penalized_refusal(
                peer,
                10,
                now_ms,
                protocol,
                RefusalReason::BadRequest,
                "request names another protocol than its stream",
            ));
        }
        if !self.requests.check(&peer, now_ms) {
            return Some(self.penalized_refusal(
                peer,
                1,
                now_ms,
                protocol,
                RefusalReason::RateLimited,
                "request rate exceeded",
            ));
        }
        if protocol == super::HANDSHAKE_PROTOCOL {
            return self.on_handshake_request(id, peer, &request.body, now_ms);
        }
        if protocol == super::EVIDENCE_PROTOCOL {
            return Some(self.on_evidence_request(peer, &request.body, now_ms));
        }
        let Some(name) = name.filter(|n| self.registry.protocols.get(n).is_some_and(|r| r.serving))
        else {
            return Some(self.refusal(
                peer,
                protocol,
                RefusalReason::UnsupportedProtocol,
                "no handler",
            ));
        };
        let registered = self.registry.protocols.get_mut(&name).expect("looked up");
        if !registered.rate.check(&peer, now_ms) {
            return Some(self.penalized_refusal(
                peer,
                1,
                now_ms,
                protocol,
                RefusalReason::RateLimited,
                "request rate exceeded",
            ));
        }
        if let Err(e) = self.policy.authorize(&peer, protocol) {
            return Some(self.refusal(peer, protocol, RefusalReason::Unauthorized, &e.to_string()));
        }
        self.outputs.push_back(Output::Inbound {
            id,
            peer,
            name,
            protocol: protocol.to_owned(),
            body: request.body,
        });
        None
    }

    /// Penalizes `peer` by `points` and refuses its request with `reason`.
    pub(super) fn penalized_refusal(
        &mut self,
        peer: PeerId,
        points: i64,
        now_ms: u64,
        protocol: &str,
        reason: RefusalReason,
        detail: &str,
    ) -> Vec<u8> {
        self.penalize(peer, points, now_ms);
        self.refusal(peer, protocol, reason, detail)
    }

    /// The local handler answered inbound request `id` (or refused it).
    pub(crate) fn respond(
        &mut self,
        id: InboundId,
        peer: PeerId,
        protocol: &str,
        answer: Result<Vec<u8>, (RefusalReason, String)>,
    ) {
        let bytes = match answer {
            Ok(body) => {
                let limit = self
                    .registry
                    .by_id
                    .get(protocol)
                    .and_then(|n| self.registry.get(n))
                    .map_or(usize::MAX, |p| p.limits().max_response_bytes());
                if body.len() > limit {
                    tracing::warn!(target: "causality_net", kind = "network", protocol, size = body.len(), limit, "handler response over the protocol's limit; refused instead");
                    self.refusal(
                        peer,
                        protocol,
                        RefusalReason::HandlerFailed,
                        "response too large",
                    )
                } else {
                    self.metrics.requests_served += 1;
                    encode_body(body)
                }
            }
            Err((reason, detail)) => self.refusal(peer, protocol, reason, &detail),
        };
        self.metrics.bytes_out += bytes.len() as u64;
        self.transport(Command::Respond { id, bytes });
    }

    /// The handler's queue is full (or it went away): refuse inbound request `id`.
    pub(crate) fn handler_unavailable(
        &mut self,
        id: InboundId,
        peer: PeerId,
        protocol: &str,
        busy: bool,
    ) {
        let (reason, detail) = if busy {
            (RefusalReason::Busy, "handler queue full")
        } else {
            (RefusalReason::UnsupportedProtocol, "no handler")
        };
        let bytes = self.refusal(peer, protocol, reason, detail);
        self.transport(Command::Respond { id, bytes });
    }
}
