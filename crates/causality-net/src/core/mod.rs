//! The network core: everything adapter-independent, as a state machine.
//!
//! [`Core`] knows nothing about sockets, tasks or clocks. Its inputs are transport events
//! (a connection, a gossip frame, a request frame) and local commands (publish, request,
//! serve), each with the time as an argument in milliseconds; its outputs are queued and
//! pulled with [`Core::poll_output`]: commands for the transport, messages and requests to
//! hand to local subscribers and handlers, finished requests and events.
//! [`Core::poll_timeout`] says when [`Core::handle_timeout`] must next be called. The one
//! driver (`crate::driver`) runs it over either transport.
//!
//! Split by concern: `validate.rs` (the gossip pipeline), `scores.rs` (scores and bans),
//! `rate.rs` (rate limits), `handshake.rs` (the version handshake), `requests.rs`
//! (registered protocols, inbound and outbound requests).

mod admission;
mod equivocation;
mod handshake;
#[cfg(any(fuzzing, test))]
pub(crate) use handshake::decode_handshake;
mod rate;
mod requests;
mod scores;
mod validate;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use causality_hash::ContentId;
use causality_version::{Agreement, Hello};

use crate::envelope::{self, Acceptance, Message};
use crate::error::{NetError, RefusalReason, Rejection};
use crate::event::{NetworkEvent, NetworkMetrics};
use crate::evidence::{Known, Recent};
use crate::limits::Limits;
use crate::peer::{Keypair, PeerId};
use crate::policy::Policy;
use crate::protocol::RequestProtocol;
use crate::replay::ReplayGuard;
use crate::topic::{PhysicalTopic, Topic};

pub(crate) use self::equivocation::EVIDENCE_PROTOCOL;
pub(crate) use self::handshake::HANDSHAKE_PROTOCOL;
use self::rate::Gcra;
pub(crate) use self::requests::{InboundId, RequestFailure, RequestId};
use self::requests::{Outbound, Registry};
use self::scores::Scores;

/// What the transport is told to do. (The memory hub needs fewer of the details than
/// libp2p does.)
#[derive(Debug)]
#[cfg_attr(not(feature = "libp2p"), allow(dead_code))]
pub(crate) enum Command {
    /// Publish an envelope on a physical gossip topic.
    Publish {
        physical: PhysicalTopic,
        bytes: Arc<[u8]>,
    },
    /// Join a physical gossip topic.
    Subscribe(PhysicalTopic),
    /// Leave it.
    Unsubscribe(PhysicalTopic),
    /// Send a request frame on stream protocol `protocol`; answer with
    /// [`Core::on_response`] or [`Core::on_request_failed`] for `id`.
    Request {
        id: RequestId,
        peer: PeerId,
        protocol: String,
        bytes: Vec<u8>,
        /// Largest response frame to read.
        max_response: usize,
        /// Give up after this long (the core fails the request then too).
        timeout: std::time::Duration,
    },
    /// Accept inbound streams of these protocol ids, reading request frames of at most
    /// `max_request` bytes.
    Serve {
        protocols: Vec<String>,
        max_request: usize,
    },
    /// Stop accepting them.
    Unserve { protocols: Vec<String> },
    /// Answer the inbound request `id` with this encoded `Response`.
    Respond { id: InboundId, bytes: Vec<u8> },
    /// Close every connection to the peer.
    Disconnect(PeerId),
}

/// What the core asks of its driver.
#[derive(Debug)]
pub(crate) enum Output {
    /// For the transport.
    Transport(Command),
    /// Hand to the local subscribers of `message.topic`.
    Deliver(Message),
    /// Hand to the local handler of the protocol; answer with [`Core::respond`].
    Inbound {
        id: InboundId,
        peer: PeerId,
        /// The protocol name (its key among the handlers).
        name: String,
        /// The full id it arrived on, e.g. `/causality/echo/0.1.0`.
        protocol: String,
        body: Vec<u8>,
    },
    /// An outbound request finished.
    Done {
        id: RequestId,
        result: Result<Vec<u8>, NetError>,
    },
    /// For event subscribers.
    Event(NetworkEvent),
    /// The verdict on a message whose verdict was deferred ([`Verdict::Defer`]).
    Report { id: ContentId, verdict: Verdict },
}

/// What the adapter should tell gossip about a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Valid: deliver and forward.
    Accept,
    /// Do not forward, do not penalize the relay (already seen, or unwelcome for a reason
    /// only we hold: our clock, our rate limits, our bans).
    Ignore,
    /// Invalid in a way the relay could have checked: do not forward; it was penalized.
    Reject(Rejection),
    /// Valid as an envelope and delivered; the protocol that validates its topic decides,
    /// and the verdict follows as [`Output::Report`].
    Defer(ContentId),
}

/// What we know about a connected peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer.
    pub peer: PeerId,
    /// What the handshake agreed, once it completed.
    pub agreement: Option<Agreement>,
    /// The peer's implementation string, once known.
    pub agent: Option<String>,
    /// Its current score (0 is neutral; penalties lower it).
    pub score: i64,
}

#[derive(Debug)]
struct Peer {
    agreement: Option<Agreement>,
    agent: Option<String>,
    /// Physical topics it subscribes to, as its transport reported.
    topics: BTreeSet<PhysicalTopic>,
    /// We dialed it.
    dialer: bool,
    /// Its address, when the transport knows it.
    ip: Option<std::net::IpAddr>,
    /// When it connected.
    since_ms: u64,
}

/// Everything a node is configured with, whichever adapter carries it.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node's identity.
    pub keypair: Keypair,
    /// Our version, features and requirements, sent in the handshake.
    pub hello: Hello,
    /// Size, rate and count limits.
    pub limits: Limits,
    /// Who may connect and do what.
    pub policy: Policy,
    /// Wall-clock source for envelope timestamps and every timer.
    pub clock: Arc<dyn crate::Clock>,
    /// The lowest sequence number this node may sign with. Sequence numbers start from the
    /// clock (µs since the epoch) or from here, whichever is higher; a node that persists
    /// [`Network::next_seq`](crate::Network::next_seq) (plus a margin for what it may
    /// publish before the next save) and passes it back on restart stays above what its
    /// peers remember even when its clock stepped backwards. Default 0.
    pub seq_floor: u64,
    /// Bans to restore at start: peer and the wall-clock time (ms since the epoch) the ban
    /// ends, as [`Network::bans`](crate::Network::bans) reported them. Expired ones are
    /// ignored. Default none.
    pub bans: BTreeMap<PeerId, u64>,
}

impl NodeConfig {
    /// A node with `keypair`, the current protocol version with every known feature, default
    /// limits, an open policy and the system clock.
    pub fn new(keypair: Keypair) -> Self {
        Self {
            keypair,
            hello: crate::default_hello(),
            limits: Limits::default(),
            policy: Policy::open(),
            clock: Arc::new(crate::clock::SystemClock::new()),
            seq_floor: 0,
            bans: BTreeMap::new(),
        }
    }
}

/// Messages awaiting a protocol's verdict at once; beyond it the oldest is ignored.
pub(crate) const MAX_PENDING_VALIDATIONS: usize = 4096;
/// A message whose protocol gives no verdict within this long is ignored (not forwarded).
pub(crate) const VALIDATION_TIMEOUT_MS: u64 = 10_000;

/// Housekeeping (expired bans, idle rate buckets) runs at most this often.
const MAINTENANCE_MS: u64 = 10_000;
/// Rejections of one relay for one reason are logged at warning level this often at most
/// (after a burst), at debug level otherwise.
const REJECTION_LOG_INTERVAL_MS: u64 = 10_000;
const REJECTION_LOG_BURST: u32 = 5;
/// A peer refused at the handshake is told why, then disconnected this much later.
const REFUSAL_GRACE_MS: u64 = 500;

/// The adapter-independent node.
#[derive(Debug)]
pub(crate) struct Core {
    keypair: Keypair,
    local: PeerId,
    hello: Hello,
    limits: Limits,
    policy: Policy,
    replay: ReplayGuard,
    scores: Scores,
    /// Messages per originator.
    messages: Gcra<PeerId>,
    /// Gossip KiB per relay.
    relays: Gcra<PeerId>,
    /// Recently accepted envelopes, for evidence.
    recent: Recent,
    /// Senders proven to have equivocated.
    equivocators: Known,
    /// Rejection log lines per (relay, reason): the counters stay exact, the log is bounded.
    rejection_logs: Gcra<(PeerId, &'static str)>,
    /// Requests per peer over all protocols.
    requests: Gcra<PeerId>,
    peers: BTreeMap<PeerId, Peer>,
    /// Local subscriptions: logical topic → count, physical topic → logical topics on it.
    logical: HashMap<Topic, usize>,
    /// Logical topics whose messages a local protocol validates before they are forwarded.
    validated: HashMap<Topic, usize>,
    /// Messages awaiting that verdict: id → (relay, deadline), and by deadline.
    pending: HashMap<ContentId, (PeerId, u64)>,
    pending_by_deadline: BTreeSet<(u64, ContentId)>,
    physical: HashMap<PhysicalTopic, usize>,
    registry: Registry,
    outbound: Outbound,
    /// Refused peers to disconnect once they have read why.
    disconnects: BTreeSet<(u64, PeerId)>,
    seq: u64,
    next_maintenance_ms: u64,
    metrics: NetworkMetrics,
    /// Peers, scores or bans changed since the last [`Core::take_changed`].
    changed: bool,
    outputs: VecDeque<Output>,
}

impl Core {
    pub(crate) fn new(config: &NodeConfig, now_ms: u64) -> Self {
        let limits = config.limits.clone();
        let mut core = Self {
            local: config.keypair.peer_id(),
            keypair: config.keypair.clone(),
            hello: config.hello.clone(),
            policy: config.policy.clone(),
            replay: ReplayGuard::new(&limits),
            scores: Scores::new(&limits),
            messages: Gcra::new(limits.messages_per_second, limits.message_burst),
            relays: Gcra::new(limits.relay_kib_per_second, limits.relay_kib_burst),
            recent: Recent::new(limits.evidence_bytes),
            equivocators: Known::default(),
            rejection_logs: Gcra::per_interval(
                REJECTION_LOG_INTERVAL_MS * 1000,
                REJECTION_LOG_BURST,
            ),
            requests: Gcra::new(limits.requests_per_second, limits.request_burst),
            peers: BTreeMap::new(),
            logical: HashMap::new(),
            validated: HashMap::new(),
            pending: HashMap::new(),
            pending_by_deadline: BTreeSet::new(),
            physical: HashMap::new(),
            registry: Registry::new(),
            outbound: Outbound::default(),
            disconnects: BTreeSet::new(),
            // Sequence numbers start from the clock (µs), so a restarted node continues
            // above what its peers remember; the floor covers a clock that stepped back.
            seq: now_ms.saturating_mul(1000).max(config.seq_floor).max(1),
            next_maintenance_ms: now_ms + MAINTENANCE_MS,
            metrics: NetworkMetrics::default(),
            changed: true,
            outputs: VecDeque::new(),
            limits,
        };
        for (peer, until) in &config.bans {
            if let Some(duration) = until.checked_sub(now_ms).filter(|ms| *ms > 0) {
                core.scores
                    .ban(*peer, std::time::Duration::from_millis(duration), now_ms);
            }
        }
        core.register_handshake();
        core.register_evidence();
        core
    }

    /// The sequence number the next envelope will carry.
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq
    }

    pub(crate) fn local(&self) -> PeerId {
        self.local
    }

    /// The next output, if any. Call after every input until it returns `None`.
    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Core::handle_timeout`] must next be called (ms), if ever.
    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        [
            self.outbound.next_deadline(),
            self.disconnects.first().map(|(at, _)| *at),
            self.pending_by_deadline.first().map(|(at, _)| *at),
            Some(self.next_maintenance_ms),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Timers due at `now_ms`: request timeouts, delayed disconnects, housekeeping.
    pub(crate) fn handle_timeout(&mut self, now_ms: u64) {
        for id in self.outbound.expired(now_ms) {
            self.fail_request(id, now_ms, RequestFailure::Timeout);
        }
        while let Some(&(at, peer)) = self.disconnects.first() {
            if at > now_ms {
                break;
            }
            self.disconnects.pop_first();
            self.outputs
                .push_back(Output::Transport(Command::Disconnect(peer)));
        }
        while let Some(&(at, id)) = self.pending_by_deadline.first() {
            if at > now_ms {
                break;
            }
            self.settle(id, Verdict::Ignore);
            self.metrics.validation_timeouts += 1;
        }
        if now_ms >= self.next_maintenance_ms {
            self.next_maintenance_ms = now_ms + MAINTENANCE_MS;
            let peers = &self.peers;
            self.scores.prune(now_ms, |p| peers.contains_key(p));
            self.messages.prune(now_ms);
            self.relays.prune(now_ms);
            self.rejection_logs.prune(now_ms);
            self.requests.prune(now_ms);
            self.registry.prune(now_ms);
            self.changed = true;
        }
    }

    /// Counters so far.
    pub(crate) fn metrics(&self) -> &NetworkMetrics {
        &self.metrics
    }

    /// Whether peers, scores or bans changed since the last call.
    pub(crate) fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Connected peers with their scores, sorted.
    pub(crate) fn peers(&self, now_ms: u64) -> Vec<PeerInfo> {
        self.peers
            .iter()
            .map(|(peer, p)| PeerInfo {
                peer: *peer,
                agreement: p.agreement,
                agent: p.agent.clone(),
                score: self.scores.score(peer, now_ms),
            })
            .collect()
    }

    /// Bans in force, with the time each ends.
    pub(crate) fn bans(&self) -> BTreeMap<PeerId, u64> {
        self.scores.bans().collect()
    }

    pub(crate) fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    pub(crate) fn physical_of(&self, topic: &Topic) -> PhysicalTopic {
        topic.physical(self.hello.version.major, self.limits.topic_shards)
    }

    fn emit(&mut self, event: NetworkEvent) {
        self.outputs.push_back(Output::Event(event));
    }

    fn transport(&mut self, command: Command) {
        self.outputs.push_back(Output::Transport(command));
    }

    // ----- connections, scores, bans -----

    /// A connection to `peer` was established (we dialed it when `dialer`; `ip` is the
    /// remote's address when the transport knows it). Returns whether to keep it; the
    /// transport closes it otherwise. The dialer starts the handshake. Admission (slots,
    /// per-address caps, eviction) is in `admission.rs`.
    pub(crate) fn on_connected(
        &mut self,
        peer: PeerId,
        dialer: bool,
        ip: Option<std::net::IpAddr>,
        now_ms: u64,
    ) -> bool {
        if self.scores.is_banned(&peer, now_ms) {
            tracing::debug!(target: "causality_net", kind = "network", peer = %peer, "refused connection from banned peer");
            return false;
        }
        if !self.policy.may_connect(&peer) {
            tracing::info!(target: "causality_net", kind = "network", peer = %peer, "refused connection: not allowed by policy");
            return false;
        }
        if !self.peers.contains_key(&peer) && !self.admit(peer, dialer, ip, now_ms) {
            return false;
        }
        self.peers.entry(peer).or_insert_with(|| Peer {
            agreement: None,
            agent: None,
            topics: BTreeSet::new(),
            dialer,
            ip,
            since_ms: now_ms,
        });
        self.changed = true;
        if dialer {
            self.start_handshake(peer, now_ms);
        }
        true
    }

    /// The last connection to `peer` closed: its pending requests fail.
    pub(crate) fn on_disconnected(&mut self, peer: PeerId, now_ms: u64) {
        for id in self.outbound.to_peer(&peer) {
            self.fail_request(id, now_ms, RequestFailure::NotConnected);
        }
        self.registry.forget_peer(&peer);
        self.scores.on_disconnected(&peer, now_ms);
        if self.peers.remove(&peer).is_some() {
            self.changed = true;
            tracing::info!(target: "causality_net", kind = "network", peer = %peer, "peer disconnected");
            self.emit(NetworkEvent::PeerDisconnected { peer });
        }
    }

    /// The transport reports that `peer` joined or left a physical topic.
    pub(crate) fn on_peer_topic(
        &mut self,
        peer: PeerId,
        physical: PhysicalTopic,
        subscribed: bool,
    ) {
        if let Some(p) = self.peers.get_mut(&peer) {
            if subscribed {
                p.topics.insert(physical);
            } else {
                p.topics.remove(&physical);
            }
        }
    }

    /// Connected peers subscribed to `physical`, sorted.
    pub(crate) fn topic_peers(&self, physical: &PhysicalTopic) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.topics.contains(physical))
            .map(|(peer, _)| *peer)
            .collect()
    }

    /// Lowers `peer`'s score; bans and disconnects it when the score reaches the threshold.
    pub(crate) fn penalize(&mut self, peer: PeerId, points: i64, now_ms: u64) {
        if points <= 0 {
            return;
        }
        self.changed = true;
        if self.scores.penalize(peer, points, now_ms) {
            let duration = self.scores.ban_duration();
            self.on_banned(peer, duration, "score");
        }
    }

    /// `peer` has just been banned for `duration`: counted, logged, reported and
    /// disconnected.
    fn on_banned(&mut self, peer: PeerId, duration: std::time::Duration, cause: &'static str) {
        self.metrics.bans += 1;
        tracing::warn!(target: "causality_net", kind = "network", peer = %peer, duration_s = duration.as_secs(), cause, "peer banned");
        self.emit(NetworkEvent::PeerBanned { peer, duration });
        self.transport(Command::Disconnect(peer));
    }

    // ----- publishing and subscriptions -----

    /// Signs `payload` into an envelope for `topic` and publishes it; returns the id.
    pub(crate) fn publish(
        &mut self,
        topic: &Topic,
        payload_type: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<ContentId, NetError> {
        if payload_type.len() > self.limits.max_payload_type_bytes {
            return Err(NetError::TooLarge {
                what: "payload type",
                size: payload_type.len(),
                limit: self.limits.max_payload_type_bytes,
            });
        }
        let seq = self.seq;
        let (id, bytes) = envelope::seal(
            &self.keypair,
            &envelope::Draft {
                version: self.hello.version,
                topic,
                seq,
                timestamp_ms: now_ms,
                payload_type,
                payload,
            },
        );
        if bytes.len() > self.limits.max_envelope_bytes {
            return Err(NetError::TooLarge {
                what: "envelope",
                size: bytes.len(),
                limit: self.limits.max_envelope_bytes,
            });
        }
        self.seq += 1;
        // Remember our own message so an echo is ignored.
        let _ = self.replay.check(id, self.local, seq, now_ms, now_ms);
        self.metrics.published += 1;
        self.metrics.bytes_out += bytes.len() as u64;
        let physical = self.physical_of(topic);
        self.transport(Command::Publish {
            physical,
            bytes: bytes.into(),
        });
        Ok(id)
    }

    /// Publishes raw bytes on a physical topic (tests of how peers treat bad input).
    #[cfg(feature = "test-utils")]
    pub(crate) fn publish_raw(&mut self, physical: PhysicalTopic, bytes: Vec<u8>) {
        self.transport(Command::Publish {
            physical,
            bytes: bytes.into(),
        });
    }

    /// A local subscription to `topic` begins; joins its physical topic when it is the first.
    /// With `validate`, the subscriber judges each message before it is forwarded.
    pub(crate) fn subscribe(&mut self, topic: &Topic, validate: bool) {
        *self.logical.entry(topic.clone()).or_default() += 1;
        if validate {
            *self.validated.entry(topic.clone()).or_default() += 1;
        }
        let physical = self.physical_of(topic);
        let count = self.physical.entry(physical.clone()).or_default();
        *count += 1;
        if *count == 1 {
            self.transport(Command::Subscribe(physical));
        }
    }

    /// A local subscription to `topic` ended; leaves its physical topic when it was the last.
    pub(crate) fn unsubscribe(&mut self, topic: &Topic, validate: bool) {
        if validate && let Some(count) = self.validated.get_mut(topic) {
            *count -= 1;
            if *count == 0 {
                self.validated.remove(topic);
            }
        }
        if let Some(count) = self.logical.get_mut(topic) {
            *count -= 1;
            if *count == 0 {
                self.logical.remove(topic);
            }
        }
        let physical = self.physical_of(topic);
        if let Some(count) = self.physical.get_mut(&physical) {
            *count -= 1;
            if *count == 0 {
                self.physical.remove(&physical);
                self.transport(Command::Unsubscribe(physical));
            }
        }
    }

    /// Whether a local subscriber listens on `physical`.
    pub(crate) fn is_subscribed_physical(&self, physical: &PhysicalTopic) -> bool {
        self.physical.contains_key(physical)
    }

    /// Whether a local protocol validates messages on `topic`.
    pub(crate) fn is_validated(&self, topic: &Topic) -> bool {
        self.validated.contains_key(topic)
    }

    /// Holds a delivered message's verdict until its protocol judges it.
    pub(crate) fn defer(&mut self, id: ContentId, via: PeerId, now_ms: u64) -> Verdict {
        if self.pending.len() >= MAX_PENDING_VALIDATIONS
            && let Some(&(_, oldest)) = self.pending_by_deadline.first()
        {
            self.settle(oldest, Verdict::Ignore);
            self.metrics.validation_timeouts += 1;
        }
        let deadline = now_ms + VALIDATION_TIMEOUT_MS;
        self.pending.insert(id, (via, deadline));
        self.pending_by_deadline.insert((deadline, id));
        Verdict::Defer(id)
    }

    /// A protocol's verdict on message `id`: forward it, drop it, or drop it and penalize
    /// the relay that delivered it (for an invalid payload it should have checked itself).
    /// Unknown or already settled ids are ignored.
    pub(crate) fn validate(&mut self, id: ContentId, acceptance: Acceptance, now_ms: u64) {
        let Some(&(via, _)) = self.pending.get(&id) else {
            return;
        };
        let verdict = match acceptance {
            Acceptance::Accept => Verdict::Accept,
            Acceptance::Ignore => Verdict::Ignore,
            Acceptance::Reject(reason) => {
                let reason = Rejection::Invalid(reason);
                *self.metrics.rejected.entry(reason.label()).or_default() += 1;
                tracing::warn!(target: "causality_net", kind = "network", peer = %via, reason = %reason, "message rejected by its protocol");
                self.penalize(via, reason.penalty(), now_ms);
                self.emit(NetworkEvent::MessageRejected {
                    from: via,
                    reason: reason.clone(),
                });
                Verdict::Reject(reason)
            }
        };
        self.settle(id, verdict);
    }

    fn settle(&mut self, id: ContentId, verdict: Verdict) {
        if let Some((_, deadline)) = self.pending.remove(&id) {
            self.pending_by_deadline.remove(&(deadline, id));
            self.outputs.push_back(Output::Report { id, verdict });
        }
    }

    fn deliver(&mut self, message: Message) {
        if self.logical.contains_key(&message.topic) {
            self.outputs.push_back(Output::Deliver(message));
        }
    }

    /// The driver handed a message to `delivered` subscribers and dropped it for
    /// `dropped` whose queues were full.
    pub(crate) fn delivered(&mut self, delivered: u64, dropped: u64) {
        self.metrics.delivered += delivered;
        self.metrics.subscriber_drops += dropped;
    }

    /// The transport could not publish an envelope.
    pub(crate) fn publish_failed(&mut self) {
        self.metrics.publish_failures += 1;
    }

    // ----- requests: see requests.rs -----

    /// Registers `protocol` for outbound use and, with `serve`, for inbound requests.
    pub(crate) fn register(
        &mut self,
        protocol: RequestProtocol,
        serve: bool,
    ) -> Result<(), NetError> {
        self.registry.register(protocol.clone(), serve)?;
        if serve {
            self.transport(Command::Serve {
                protocols: protocol.ids().iter().map(ToString::to_string).collect(),
                max_request: protocol.limits().max_request_bytes() + 64,
            });
        }
        Ok(())
    }

    /// Stops serving the protocol `name`.
    pub(crate) fn unserve(&mut self, name: &str) {
        if let Some(protocols) = self.registry.unserve(name) {
            self.transport(Command::Unserve { protocols });
        }
    }

    fn refusal(
        &mut self,
        peer: PeerId,
        protocol: &str,
        reason: RefusalReason,
        detail: &str,
    ) -> Vec<u8> {
        *self
            .metrics
            .requests_refused
            .entry(reason.to_string())
            .or_default() += 1;
        tracing::info!(target: "causality_net", kind = "network", peer = %peer, protocol, reason = %reason, detail, "request refused");
        self.emit(NetworkEvent::RequestRefused {
            from: peer,
            protocol: protocol.to_owned(),
            reason,
        });
        requests::encode_refusal(reason, detail)
    }
}
