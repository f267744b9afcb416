//! The gossip validation pipeline: checks in a fixed order, cheap before expensive, each
//! failure a typed [`Rejection`] that is counted, logged and penalized.

use causality_hash::ContentId;

use super::{Core, Verdict};
use crate::envelope;
use crate::error::Rejection;
use crate::event::NetworkEvent;
use crate::peer::PeerId;
use crate::topic::PhysicalTopic;

impl Core {
    /// A gossip frame arrived on `physical` from `via`; `source` is the originator the
    /// transport authenticated, when it does. Order, cheap before expensive: ban → rate →
    /// size → duplicate → envelope fields (canonical encoding, limits, version, topic,
    /// sender key) → sender matches the transport's source → shard → clock skew and replay
    /// → signature → record as seen.
    pub(crate) fn on_gossip(
        &mut self,
        via: PeerId,
        source: Option<PeerId>,
        physical: &PhysicalTopic,
        bytes: &[u8],
        now_ms: u64,
    ) -> Verdict {
        self.metrics.bytes_in += bytes.len() as u64;
        if self.scores.is_banned(&via, now_ms) {
            return self.reject(via, Rejection::Banned, now_ms);
        }
        if !self.messages.check(&via, now_ms) {
            return self.reject(via, Rejection::RateLimited, now_ms);
        }
        if bytes.len() > self.limits.max_envelope_bytes {
            let limit = self.limits.max_envelope_bytes;
            return self.reject(
                via,
                Rejection::Oversize {
                    size: bytes.len(),
                    limit,
                },
                now_ms,
            );
        }
        let id = ContentId::of(bytes);
        if self.replay.is_duplicate(&id) {
            return self.reject(via, Rejection::Duplicate, now_ms);
        }
        let unverified = match envelope::decode(bytes, &self.limits, self.hello.version.major, via)
        {
            Ok(unverified) => unverified,
            Err(reason) => return self.reject(via, reason, now_ms),
        };
        let message = unverified.message();
        if let Some(source) = source
            && source != message.sender
        {
            return self.reject(
                via,
                Rejection::WrongSender {
                    claimed: message.sender,
                    actual: source,
                },
                now_ms,
            );
        }
        if &self.physical_of(&message.topic) != physical {
            let reason =
                Rejection::BadTopic(format!("{} does not travel on {physical}", message.topic));
            return self.reject(via, reason, now_ms);
        }
        let fresh = self.replay.precheck(
            &message.id,
            &message.sender,
            message.seq,
            message.timestamp_ms,
            now_ms,
        );
        if let Err(reason) = fresh {
            return self.reject(via, reason, now_ms);
        }
        let message = match unverified.verify() {
            Ok(message) => message,
            Err(reason) => return self.reject(via, reason, now_ms),
        };
        let checked = self.replay.check(
            message.id,
            message.sender,
            message.seq,
            message.timestamp_ms,
            now_ms,
        );
        if let Err(reason) = checked {
            return self.reject(via, reason, now_ms);
        }
        self.metrics.accepted += 1;
        if self.is_validated(&message.topic) {
            let id = message.id;
            self.deliver(message);
            return self.defer(id, via, now_ms);
        }
        self.deliver(message);
        Verdict::Accept
    }

    fn reject(&mut self, from: PeerId, reason: Rejection, now_ms: u64) -> Verdict {
        *self.metrics.rejected.entry(reason.label()).or_default() += 1;
        if reason == Rejection::Duplicate {
            return Verdict::Ignore;
        }
        tracing::warn!(target: "causality_net", kind = "network", peer = %from, reason = %reason, "message rejected");
        self.penalize(from, reason.penalty(), now_ms);
        self.emit(NetworkEvent::MessageRejected {
            from,
            reason: reason.clone(),
        });
        if reason.is_fault() {
            Verdict::Reject(reason)
        } else {
            Verdict::Ignore
        }
    }
}
