//! The gossip validation pipeline: checks in a fixed order, cheap before expensive, each
//! failure a typed [`Rejection`] that is counted, logged and penalized.

use causality_hash::ContentId;

use super::{Core, Verdict};
use crate::envelope;
use crate::error::{Blame, Rejection};
use crate::event::NetworkEvent;
use crate::peer::PeerId;
use crate::topic::PhysicalTopic;

impl Core {
    /// A gossip frame arrived on `physical` from `via`; `source` is the originator the
    /// transport authenticated, when it does. Order, cheap before expensive: relay banned →
    /// relay byte budget → size → duplicate → envelope fields (canonical encoding, limits,
    /// version, topic, sender key) → sender matches the transport's source → shard →
    /// originator banned → clock skew and replay → signature → originator's rate → record
    /// as seen.
    ///
    /// Blame follows [`Rejection::blame`]: the relay pays only for what it could have
    /// checked before forwarding; the originator, once its signature verified, for its
    /// clock, its rate and its equivocations; nobody for replays and our own limits.
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
            return self.reject(via, None, Rejection::Banned, now_ms);
        }
        if !self
            .relays
            .check_n(&via, now_ms, (bytes.len() as u64).div_ceil(1024))
        {
            return self.reject(via, None, Rejection::RelayOverBudget, now_ms);
        }
        if bytes.len() > self.limits.max_envelope_bytes {
            let limit = self.limits.max_envelope_bytes;
            let reason = Rejection::Oversize {
                size: bytes.len(),
                limit,
            };
            return self.reject(via, None, reason, now_ms);
        }
        let id = ContentId::of(bytes);
        if self.replay.is_duplicate(&id) {
            return self.reject(via, None, Rejection::Duplicate, now_ms);
        }
        let unverified = match envelope::decode(bytes, &self.limits, self.hello.version.major, via)
        {
            Ok(unverified) => unverified,
            Err(reason) => return self.reject(via, None, reason, now_ms),
        };
        let message = unverified.message();
        let sender = message.sender;
        if let Some(source) = source
            && source != sender
        {
            let reason = Rejection::WrongSender {
                claimed: sender,
                actual: source,
            };
            return self.reject(via, None, reason, now_ms);
        }
        if &self.physical_of(&message.topic) != physical {
            let reason =
                Rejection::BadTopic(format!("{} does not travel on {physical}", message.topic));
            return self.reject(via, None, reason, now_ms);
        }
        if self.scores.is_banned(&sender, now_ms) {
            return self.reject(via, None, Rejection::Banned, now_ms);
        }
        let (seq, timestamp_ms) = (message.seq, message.timestamp_ms);
        // What the cheap checks leave for after the signature: a rejection that blames the
        // originator (only a verified signature says who that is), or an equivocation.
        let mut after_signature = None;
        match self
            .replay
            .precheck(&message.id, &sender, seq, timestamp_ms, now_ms)
        {
            Ok(()) => {}
            Err(reason @ Rejection::Replay { .. }) => {
                if self
                    .replay
                    .accepted_under(&sender, seq)
                    .is_none_or(|first| first == id)
                {
                    // A replay (or too old to tell): nobody can be blamed for it.
                    return self.reject(via, None, reason, now_ms);
                }
                after_signature = Some(Rejection::Equivocation { sender, seq });
            }
            Err(reason) if reason.blame() == Blame::Originator => after_signature = Some(reason),
            Err(reason) => return self.reject(via, None, reason, now_ms),
        }
        let message = match unverified.verify() {
            Ok(message) => message,
            Err(reason) => return self.reject(via, None, reason, now_ms),
        };
        match after_signature {
            Some(Rejection::Equivocation { .. }) => {
                return self.on_equivocation(via, &message, bytes, now_ms);
            }
            Some(reason) => return self.reject(via, Some(sender), reason, now_ms),
            None => {}
        }
        if !self.messages.check(&sender, now_ms) {
            return self.reject(via, Some(sender), Rejection::RateLimited, now_ms);
        }
        let checked = self
            .replay
            .check(message.id, sender, seq, timestamp_ms, now_ms);
        if let Err(reason) = checked {
            return self.reject(via, Some(sender), reason, now_ms);
        }
        self.recent.insert(message.id, bytes);
        self.metrics.accepted += 1;
        if self.is_validated(&message.topic) {
            let id = message.id;
            self.deliver(message);
            return self.defer(id, via, now_ms);
        }
        self.deliver(message);
        Verdict::Accept
    }

    /// Counts, reports and logs a rejection, and penalizes whoever `reason.blame()` names:
    /// `via` (the relay) or `originator` (given only once its signature verified).
    pub(super) fn reject(
        &mut self,
        via: PeerId,
        originator: Option<PeerId>,
        reason: Rejection,
        now_ms: u64,
    ) -> Verdict {
        *self.metrics.rejected.entry(reason.label()).or_default() += 1;
        if reason == Rejection::Duplicate {
            return Verdict::Ignore;
        }
        if self.rejection_logs.check(&(via, reason.label()), now_ms) {
            tracing::warn!(target: "causality_net", kind = "network", peer = %via, reason = %reason, "message rejected");
        } else {
            tracing::debug!(target: "causality_net", kind = "network", peer = %via, reason = %reason, "message rejected");
        }
        let blamed = match reason.blame() {
            Blame::Relay => Some(via),
            Blame::Originator => originator,
            Blame::Nobody => None,
        };
        if let Some(peer) = blamed {
            self.penalize(peer, reason.penalty(), now_ms);
        }
        self.emit(NetworkEvent::MessageRejected {
            from: via,
            reason: reason.clone(),
        });
        if reason.is_fault() {
            Verdict::Reject(reason)
        } else {
            Verdict::Ignore
        }
    }
}
