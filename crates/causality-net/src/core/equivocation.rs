//! Equivocations: a sender proven to have signed two envelopes under one sequence number is
//! banned, and the evidence goes to every connected peer on the evidence protocol; each
//! checks it, bans the sender itself and passes it on once. Honest relays are never blamed
//! for carrying either envelope: neither could have known of the other.

use std::time::Duration;

use causality_version::ProtocolVersion;

use super::requests::{Internal, encode_body};
use super::{Core, Verdict};
use crate::envelope::Message;
use crate::error::{RefusalReason, Rejection};
use crate::event::NetworkEvent;
use crate::evidence::Equivocation;
use crate::peer::PeerId;
use crate::protocol::{RequestLimits, RequestProtocol};

/// The protocol equivocation evidence travels on.
pub(crate) const EVIDENCE_PROTOCOL: &str = "/causality/evidence/1.0.0";

pub(super) fn protocol(max_envelope_bytes: usize) -> RequestProtocol {
    let limits = RequestLimits::builder()
        .max_request_bytes(2 * max_envelope_bytes + 64)
        // An empty body, or a refusal with its reason (at most 256 bytes of detail).
        .max_response_bytes(512)
        .queue(16)
        .rate(10, 50)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("valid evidence limits");
    RequestProtocol::new("evidence", &[ProtocolVersion::new(1, 0, 0)], limits)
        .expect("valid evidence protocol")
}

impl Core {
    /// `message` (whose signature verified) reuses a sequence number its sender used for
    /// another envelope we accepted.
    pub(super) fn on_equivocation(
        &mut self,
        via: PeerId,
        message: &Message,
        bytes: &[u8],
        now_ms: u64,
    ) -> Verdict {
        let (sender, seq) = (message.sender, message.seq);
        let evidence = self
            .replay
            .accepted_under(&sender, seq)
            .and_then(|first| self.recent.get(&first))
            .and_then(|first| {
                Equivocation::check_with(first, bytes, &self.limits, self.hello.version.major).ok()
            });
        let verdict = self.reject(
            via,
            Some(sender),
            Rejection::Equivocation { sender, seq },
            now_ms,
        );
        self.convict(sender, seq, evidence, Some(via), now_ms);
        verdict
    }

    /// Bans an equivocating `sender`; with evidence, records it, reports it and passes it
    /// to every connected peer but `from` and the sender. (Without evidence — the first
    /// envelope no longer held — the ban is ours alone: we checked both signatures.)
    fn convict(
        &mut self,
        sender: PeerId,
        seq: u64,
        evidence: Option<Equivocation>,
        from: Option<PeerId>,
        now_ms: u64,
    ) {
        if sender == self.local {
            return;
        }
        self.changed = true;
        let duration = self.limits.equivocation_ban;
        if self.scores.ban(sender, duration, now_ms) {
            tracing::info!(target: "causality_net", kind = "network", peer = %sender, seq, "equivocation proven");
            self.on_banned(sender, duration, "equivocation");
        }
        let Some(evidence) = evidence else {
            return;
        };
        if !self.equivocators.insert(evidence.clone()) {
            return;
        }
        self.metrics.equivocations += 1;
        let body = evidence.to_bytes();
        self.emit(NetworkEvent::Equivocation { evidence });
        let protocol = protocol(self.limits.max_envelope_bytes);
        let peers: Vec<PeerId> = self
            .peers
            .keys()
            .filter(|p| Some(**p) != from && **p != sender)
            .copied()
            .collect();
        for peer in peers {
            let sent = self.send_request(
                peer,
                protocol.clone(),
                body.clone(),
                now_ms,
                Some(Internal::Evidence),
            );
            if let Err(e) = sent {
                tracing::debug!(target: "causality_net", kind = "network", peer = %peer, error = %e, "evidence not sent");
            }
        }
    }

    /// Evidence from `peer`: checked; when it holds and is new to us, the sender is banned
    /// and the evidence passed on. Evidence that does not hold penalizes `peer`.
    pub(super) fn on_evidence_request(
        &mut self,
        peer: PeerId,
        body: &[u8],
        now_ms: u64,
    ) -> Vec<u8> {
        let checked = crate::evidence::decode(body).and_then(|(a, b)| {
            Equivocation::check_with(&a, &b, &self.limits, self.hello.version.major)
        });
        match checked {
            Ok(evidence) => {
                if !self.equivocators.contains(&evidence.sender()) {
                    let (sender, seq) = (evidence.sender(), evidence.seq());
                    tracing::info!(target: "causality_net", kind = "network", peer = %peer, sender = %sender, seq, "equivocation evidence received and checked");
                    self.convict(sender, seq, Some(evidence), Some(peer), now_ms);
                }
                encode_body(Vec::new())
            }
            Err(e) => self.penalized_refusal(
                peer,
                10,
                now_ms,
                EVIDENCE_PROTOCOL,
                RefusalReason::BadRequest,
                &e.to_string(),
            ),
        }
    }

    /// Registers the evidence protocol (every node serves it).
    pub(super) fn register_evidence(&mut self) {
        let protocol = protocol(self.limits.max_envelope_bytes);
        self.register(protocol, true).expect("registered once");
    }

    /// Equivocations proven to us, oldest first.
    pub(crate) fn equivocations(&self) -> Vec<Equivocation> {
        self.equivocators.all()
    }
}
