//! The adapter-independent part of a node: validation, replay protection, rate limits,
//! scores and bans, subscriptions, request handlers and the version handshake. Adapters
//! move bytes; they call into [`Core`] for every decision.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use causality_hash::ContentId;
use causality_version::{Agreement, Hello, negotiate};
use multiaddr::Multiaddr;
use prost::Message as _;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::envelope::{self, Message};
use crate::error::{NetError, RefusalReason, Rejection};
use crate::event::{Counters, NetworkEvent, lock};
use crate::limits::Limits;
use crate::peer::{Keypair, PeerId};
use crate::policy::Policy;
use crate::proto::v1 as pb;
use crate::ratelimit::PeerLimiter;
use crate::replay::ReplayGuard;
use crate::topic::Topic;

/// The protocol of the version handshake every connection starts with.
pub const HANDSHAKE_PROTOCOL: &str = "/causality/handshake/1.0.0";

/// What an adapter is told to do.
#[derive(Debug)]
pub(crate) enum Command {
    Publish {
        physical: String,
        bytes: Vec<u8>,
    },
    Subscribe(String),
    Unsubscribe(String),
    Request {
        peer: PeerId,
        /// An encoded `Request`.
        bytes: Vec<u8>,
        /// The encoded `Response`, or why there is none.
        reply: oneshot::Sender<Result<Vec<u8>, NetError>>,
    },
    Dial {
        address: Multiaddr,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Disconnect(PeerId),
    Listen {
        address: Multiaddr,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    TopicPeers {
        physical: String,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    /// Raw bytes on a physical topic, bypassing the envelope (tests of bad input only).
    PublishRaw {
        physical: String,
        bytes: Vec<u8>,
    },
}

/// What the adapter should tell gossip about a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Valid: deliver and forward.
    Accept,
    /// Already seen: do not forward, do not penalize.
    Ignore,
    /// Invalid: do not forward; the peer has been penalized.
    Reject(Rejection),
}

/// How an inbound request is to be answered.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Right away, with this encoded `Response`.
    Now(Vec<u8>),
    /// When the handler responds.
    Later(PendingResponse),
}

/// A response a local handler is still working on.
#[derive(Debug)]
pub(crate) struct PendingResponse {
    rx: oneshot::Receiver<Vec<u8>>,
}

impl PendingResponse {
    /// Waits for the handler; a dropped responder becomes a `HandlerFailed` refusal.
    pub(crate) async fn wait(self) -> Vec<u8> {
        self.rx.await.unwrap_or_else(|_| {
            refusal(
                RefusalReason::HandlerFailed,
                "the handler dropped the request",
            )
        })
    }
}

pub(crate) fn refusal(reason: RefusalReason, detail: &str) -> Vec<u8> {
    pb::Response {
        result: Some(pb::response::Result::Refused(pb::Refusal {
            reason: reason.to_proto(),
            detail: detail.chars().take(256).collect(),
        })),
    }
    .encode_to_vec()
}

/// A request for a local handler.
#[derive(Debug)]
pub struct InboundRequest {
    /// Who asked (authenticated by the transport).
    pub peer: PeerId,
    /// The protocol.
    pub protocol: String,
    /// The request body.
    pub body: Vec<u8>,
    responder: oneshot::Sender<Vec<u8>>,
}

impl InboundRequest {
    /// Answers the request.
    pub fn respond(self, body: Vec<u8>) {
        let response = pb::Response {
            result: Some(pb::response::Result::Body(body)),
        };
        let _ = self.responder.send(response.encode_to_vec());
    }

    /// Refuses the request with a reason the requester sees.
    pub fn refuse(self, reason: RefusalReason, detail: &str) {
        let _ = self.responder.send(refusal(reason, detail));
    }
}

#[derive(Debug)]
struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Message>,
}

#[derive(Debug)]
struct Score {
    value: i64,
    updated: Instant,
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

#[derive(Debug, Default)]
struct State {
    subscribers: HashMap<Topic, Vec<Subscriber>>,
    /// Physical topic → number of logical topics subscribed on it.
    physical: HashMap<String, usize>,
    handlers: HashMap<String, mpsc::Sender<InboundRequest>>,
    peers: HashMap<PeerId, PeerInfo>,
    scores: HashMap<PeerId, Score>,
    bans: HashMap<PeerId, Instant>,
    last_maintenance: Option<Instant>,
}

/// The adapter-independent node.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) keypair: Keypair,
    pub(crate) local: PeerId,
    pub(crate) hello: Hello,
    pub(crate) limits: Limits,
    pub(crate) policy: RwLock<Policy>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) counters: Counters,
    events: broadcast::Sender<NetworkEvent>,
    replay: Mutex<ReplayGuard>,
    state: Mutex<State>,
    messages: PeerLimiter,
    requests: PeerLimiter,
    seq: AtomicU64,
    next_subscriber: AtomicU64,
    pub(crate) listen: Mutex<Vec<Multiaddr>>,
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
    /// Wall-clock source for envelope timestamps.
    pub clock: Arc<dyn Clock>,
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
            clock: Arc::new(crate::clock::SystemClock),
        }
    }
}

impl Core {
    pub(crate) fn new(config: NodeConfig, commands: mpsc::Sender<Command>) -> Self {
        let limits = config.limits;
        let (events, _) = broadcast::channel(limits.event_queue.max(1));
        let start_seq = config.clock.now_ms().saturating_mul(1000).max(1);
        Self {
            local: config.keypair.peer_id(),
            keypair: config.keypair,
            hello: config.hello,
            policy: RwLock::new(config.policy),
            clock: config.clock,
            commands,
            counters: Counters::default(),
            events,
            replay: Mutex::new(ReplayGuard::new(&limits)),
            state: Mutex::new(State::default()),
            messages: PeerLimiter::new(limits.messages_per_second, limits.message_burst),
            requests: PeerLimiter::new(limits.requests_per_second, limits.request_burst),
            seq: AtomicU64::new(start_seq),
            next_subscriber: AtomicU64::new(0),
            listen: Mutex::new(Vec::new()),
            limits,
        }
    }

    pub(crate) fn emit(&self, event: NetworkEvent) {
        // No receivers is fine; lagging receivers lose the oldest events.
        let _ = self.events.send(event);
    }

    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<NetworkEvent> {
        self.events.subscribe()
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn physical(&self, topic: &Topic) -> String {
        topic.physical(self.hello.version.major, self.limits.topic_shards)
    }

    /// Records our own message so an echo is ignored.
    pub(crate) fn remember_own(&self, id: ContentId, seq: u64, timestamp_ms: u64) {
        let _ = lock(&self.replay).check(id, self.local, seq, timestamp_ms, timestamp_ms);
    }

    // ----- peers, scores, bans -----

    pub(crate) fn is_banned(&self, peer: &PeerId) -> bool {
        let mut state = lock(&self.state);
        match state.bans.get(peer) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                state.bans.remove(peer);
                false
            }
            None => false,
        }
    }

    /// A connection to `peer` was established. Returns whether to keep it; the adapter
    /// closes it otherwise. When we dialed, we start the handshake.
    pub(crate) fn on_connected(self: &Arc<Self>, peer: PeerId, dialer: bool) -> bool {
        if self.is_banned(&peer) {
            tracing::debug!(target: "causality_net", kind = "network", peer = %peer, "refused connection from banned peer");
            return false;
        }
        if !self.policy_read().may_connect(&peer) {
            tracing::info!(target: "causality_net", kind = "network", peer = %peer, "refused connection: not allowed by policy");
            return false;
        }
        {
            let mut state = lock(&self.state);
            if !state.peers.contains_key(&peer) && state.peers.len() >= self.limits.max_peers {
                tracing::info!(target: "causality_net", kind = "network", peer = %peer, max = self.limits.max_peers, "refused connection: peer limit reached");
                return false;
            }
            state.peers.entry(peer).or_insert_with(|| PeerInfo {
                peer,
                agreement: None,
                agent: None,
                score: 0,
            });
        }
        if dialer {
            let core = Arc::clone(self);
            tokio::spawn(async move { core.handshake(peer).await });
        }
        true
    }

    async fn handshake(self: Arc<Self>, peer: PeerId) {
        let hello = pb::Handshake {
            hello: Some((&self.hello).into()),
        };
        let reply = self
            .send_request(peer, HANDSHAKE_PROTOCOL, hello.encode_to_vec())
            .await;
        match reply.and_then(|body| decode_handshake(&body)) {
            Ok(remote) => {
                self.complete_handshake(peer, &remote);
            }
            Err(NetError::Refused {
                reason: RefusalReason::UnsupportedProtocol,
                ..
            }) => {
                // A plain libp2p peer (no Causality handshake): it may still gossip, and
                // everything it sends is checked like anyone's.
                tracing::info!(target: "causality_net", kind = "network", peer = %peer, "peer does not speak the handshake; keeping it as a gossip-only peer");
            }
            Err(e) => {
                tracing::info!(target: "causality_net", kind = "network", peer = %peer, error = %e, "handshake failed");
                let _ = self.commands.try_send(Command::Disconnect(peer));
            }
        }
    }

    /// Applies the remote's `Hello`; returns whether the peer is compatible.
    fn complete_handshake(&self, peer: PeerId, remote: &Hello) -> bool {
        match negotiate(&self.hello, remote) {
            Ok(agreement) => {
                let new = {
                    let mut state = lock(&self.state);
                    let info = state.peers.entry(peer).or_insert_with(|| PeerInfo {
                        peer,
                        agreement: None,
                        agent: None,
                        score: 0,
                    });
                    let new = info.agreement.is_none();
                    info.agreement = Some(agreement);
                    info.agent = Some(remote.agent.clone());
                    new
                };
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

    pub(crate) fn on_disconnected(&self, peer: PeerId) {
        let known = {
            let mut state = lock(&self.state);
            // Keep a negative score so reconnecting does not wash it out.
            if state.scores.get(&peer).is_some_and(|s| s.value >= 0) {
                state.scores.remove(&peer);
            }
            state.peers.remove(&peer).is_some()
        };
        if known {
            tracing::info!(target: "causality_net", kind = "network", peer = %peer, "peer disconnected");
            self.emit(NetworkEvent::PeerDisconnected { peer });
        }
    }

    pub(crate) fn on_listening(&self, address: Multiaddr) {
        tracing::info!(target: "causality_net", kind = "network", address = %address, "listening");
        lock(&self.listen).push(address.clone());
        self.emit(NetworkEvent::Listening { address });
    }

    pub(crate) fn peers(&self) -> Vec<PeerInfo> {
        let state = lock(&self.state);
        let mut peers: Vec<PeerInfo> = state
            .peers
            .values()
            .map(|info| PeerInfo {
                score: state.scores.get(&info.peer).map_or(0, |s| s.value),
                ..info.clone()
            })
            .collect();
        peers.sort_by_key(|p| p.peer);
        peers
    }

    fn policy_read(&self) -> std::sync::RwLockReadGuard<'_, Policy> {
        self.policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lowers `peer`'s score; bans it when the score reaches the threshold.
    pub(crate) fn penalize(&self, peer: PeerId, points: i64) {
        if points == 0 {
            return;
        }
        let now = Instant::now();
        let banned = {
            let mut state = lock(&self.state);
            self.maintain(&mut state, now);
            let decay = self.limits.score_decay_per_second;
            let score = state.scores.entry(peer).or_insert(Score {
                value: 0,
                updated: now,
            });
            let elapsed =
                i64::try_from(now.duration_since(score.updated).as_secs()).unwrap_or(i64::MAX);
            score.value = (score.value + elapsed.saturating_mul(decay)).min(0) - points;
            score.updated = now;
            if score.value <= self.limits.ban_threshold && !state.bans.contains_key(&peer) {
                state.scores.remove(&peer);
                state.bans.insert(peer, now + self.limits.ban_duration);
                true
            } else {
                false
            }
        };
        if banned {
            Counters::add(&self.counters.bans, 1);
            tracing::warn!(target: "causality_net", kind = "network", peer = %peer, duration_s = self.limits.ban_duration.as_secs(), "peer banned");
            self.emit(NetworkEvent::PeerBanned {
                peer,
                duration: self.limits.ban_duration,
            });
            let _ = self.commands.try_send(Command::Disconnect(peer));
        }
    }

    /// Periodic housekeeping, run inline at most every ten seconds: expired bans and idle
    /// rate-limit buckets are dropped.
    fn maintain(&self, state: &mut State, now: Instant) {
        if state
            .last_maintenance
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10))
        {
            return;
        }
        state.last_maintenance = Some(now);
        state.bans.retain(|_, until| *until > now);
        let decay = self.limits.score_decay_per_second.max(1);
        let peers = &state.peers;
        state.scores.retain(|peer, s| {
            let elapsed =
                i64::try_from(now.duration_since(s.updated).as_secs()).unwrap_or(i64::MAX);
            peers.contains_key(peer) || s.value + elapsed.saturating_mul(decay) < 0
        });
        self.messages.prune();
        self.requests.prune();
    }

    fn reject(&self, from: PeerId, reason: Rejection) -> Verdict {
        self.counters.reject(&reason);
        if reason == Rejection::Duplicate {
            return Verdict::Ignore;
        }
        tracing::warn!(target: "causality_net", kind = "network", peer = %from, reason = %reason, "message rejected");
        self.penalize(from, reason.penalty());
        self.emit(NetworkEvent::MessageRejected {
            from,
            reason: reason.clone(),
        });
        Verdict::Reject(reason)
    }

    // ----- gossip -----

    /// A gossip message arrived on `physical` from `via`. `source` is the originator the
    /// transport authenticated, when it does.
    pub(crate) fn on_gossip(
        &self,
        via: PeerId,
        source: Option<PeerId>,
        physical: &str,
        bytes: &[u8],
    ) -> Verdict {
        Counters::add(&self.counters.bytes_in, bytes.len() as u64);
        if self.is_banned(&via) {
            return self.reject(via, Rejection::Banned);
        }
        if !self.messages.check(&via) {
            return self.reject(via, Rejection::RateLimited);
        }
        if bytes.len() > self.limits.max_envelope_bytes {
            return self.reject(
                via,
                Rejection::Oversize {
                    size: bytes.len(),
                    limit: self.limits.max_envelope_bytes,
                },
            );
        }
        let id = ContentId::of(bytes);
        if lock(&self.replay).is_duplicate(&id) {
            return self.reject(via, Rejection::Duplicate);
        }
        let message = match envelope::open(bytes, &self.limits, self.hello.version.major, via) {
            Ok(message) => message,
            Err(reason) => return self.reject(via, reason),
        };
        if let Some(source) = source
            && source != message.sender
        {
            return self.reject(
                via,
                Rejection::WrongSender {
                    claimed: message.sender,
                    actual: source,
                },
            );
        }
        if self.physical(&message.topic) != physical {
            return self.reject(
                via,
                Rejection::BadTopic(format!("{} does not travel on {physical}", message.topic)),
            );
        }
        let checked = lock(&self.replay).check(
            message.id,
            message.sender,
            message.seq,
            message.timestamp_ms,
            self.clock.now_ms(),
        );
        if let Err(reason) = checked {
            return self.reject(via, reason);
        }
        Counters::add(&self.counters.accepted, 1);
        self.deliver(message);
        Verdict::Accept
    }

    fn deliver(&self, message: Message) {
        let mut state = lock(&self.state);
        let Some(subscribers) = state.subscribers.get_mut(&message.topic) else {
            return;
        };
        subscribers.retain(|s| !s.tx.is_closed());
        for subscriber in subscribers.iter() {
            // Counted before the send, so a reader never sees a message the count lacks.
            Counters::add(&self.counters.delivered, 1);
            match subscriber.tx.try_send(message.clone()) {
                Ok(()) => {}
                Err(_) => {
                    self.counters.delivered.fetch_sub(1, Ordering::Relaxed);
                    Counters::add(&self.counters.subscriber_drops, 1);
                    tracing::debug!(target: "causality_net", kind = "network", topic = %message.topic, "subscriber queue full; message dropped for it");
                }
            }
        }
    }

    /// Registers a subscriber; returns its id, its receiver, and the physical topic when
    /// this is the first subscription on it.
    pub(crate) fn add_subscriber(
        &self,
        topic: &Topic,
    ) -> (u64, mpsc::Receiver<Message>, Option<String>) {
        let (tx, rx) = mpsc::channel(self.limits.subscription_queue.max(1));
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        let physical = self.physical(topic);
        let mut state = lock(&self.state);
        state
            .subscribers
            .entry(topic.clone())
            .or_default()
            .push(Subscriber { id, tx });
        let count = state.physical.entry(physical.clone()).or_default();
        *count += 1;
        (id, rx, (*count == 1).then_some(physical))
    }

    /// Removes a subscriber; returns the physical topic when nothing is left on it.
    pub(crate) fn remove_subscriber(&self, topic: &Topic, id: u64) -> Option<String> {
        let physical = self.physical(topic);
        let mut state = lock(&self.state);
        if let Some(subscribers) = state.subscribers.get_mut(topic) {
            subscribers.retain(|s| s.id != id);
            if subscribers.is_empty() {
                state.subscribers.remove(topic);
            }
        }
        let count = state.physical.get_mut(&physical)?;
        *count -= 1;
        if *count == 0 {
            state.physical.remove(&physical);
            Some(physical)
        } else {
            None
        }
    }

    /// Physical topics with at least one subscriber, sorted.
    pub(crate) fn subscribed_physical(&self) -> Vec<String> {
        let mut topics: Vec<String> = lock(&self.state).physical.keys().cloned().collect();
        topics.sort();
        topics
    }

    /// Whether a local subscriber listens on `physical`.
    pub(crate) fn is_subscribed_physical(&self, physical: &str) -> bool {
        lock(&self.state).physical.contains_key(physical)
    }

    // ----- requests -----

    pub(crate) fn add_handler(
        &self,
        protocol: &str,
    ) -> Result<mpsc::Receiver<InboundRequest>, NetError> {
        let mut state = lock(&self.state);
        if state
            .handlers
            .get(protocol)
            .is_some_and(|tx| !tx.is_closed())
        {
            return Err(NetError::AlreadyServing(protocol.to_owned()));
        }
        let (tx, rx) = mpsc::channel(self.limits.request_queue.max(1));
        state.handlers.insert(protocol.to_owned(), tx);
        Ok(rx)
    }

    pub(crate) fn remove_handler(&self, protocol: &str) {
        lock(&self.state).handlers.remove(protocol);
    }

    fn refuse(&self, from: PeerId, protocol: &str, reason: RefusalReason, detail: &str) -> Answer {
        self.counters.refuse(reason);
        tracing::info!(target: "causality_net", kind = "network", peer = %from, protocol, reason = %reason, detail, "request refused");
        self.emit(NetworkEvent::RequestRefused {
            from,
            protocol: protocol.to_owned(),
            reason,
        });
        Answer::Now(refusal(reason, detail))
    }

    /// An inbound request frame from `peer`.
    pub(crate) fn on_request(&self, peer: PeerId, bytes: &[u8]) -> Answer {
        Counters::add(&self.counters.bytes_in, bytes.len() as u64);
        if self.is_banned(&peer) {
            return self.refuse(peer, "", RefusalReason::Unauthorized, "banned");
        }
        if bytes.len() > self.limits.max_request_bytes {
            self.penalize(peer, 10);
            return self.refuse(peer, "", RefusalReason::BadRequest, "request too large");
        }
        let Ok(request) = pb::Request::decode(bytes) else {
            self.penalize(peer, 10);
            return self.refuse(peer, "", RefusalReason::BadRequest, "malformed request");
        };
        let protocol = request.protocol;
        if !self.requests.check(&peer) {
            self.penalize(peer, 1);
            return self.refuse(
                peer,
                &protocol,
                RefusalReason::RateLimited,
                "request rate exceeded",
            );
        }
        if protocol == HANDSHAKE_PROTOCOL {
            return self.on_handshake_request(peer, &request.body);
        }
        if let Err(e) = self.policy_read().authorize(&peer, &protocol) {
            return self.refuse(peer, &protocol, RefusalReason::Unauthorized, &e.to_string());
        }
        let handler = lock(&self.state).handlers.get(&protocol).cloned();
        let Some(handler) = handler else {
            return self.refuse(
                peer,
                &protocol,
                RefusalReason::UnsupportedProtocol,
                "no handler",
            );
        };
        let (responder, rx) = oneshot::channel();
        let inbound = InboundRequest {
            peer,
            protocol: protocol.clone(),
            body: request.body,
            responder,
        };
        match handler.try_send(inbound) {
            Ok(()) => {
                Counters::add(&self.counters.requests_served, 1);
                Answer::Later(PendingResponse { rx })
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.refuse(peer, &protocol, RefusalReason::Busy, "handler queue full")
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.refuse(
                peer,
                &protocol,
                RefusalReason::UnsupportedProtocol,
                "no handler",
            ),
        }
    }

    fn on_handshake_request(&self, peer: PeerId, body: &[u8]) -> Answer {
        let remote = match decode_handshake(body) {
            Ok(remote) => remote,
            Err(e) => {
                self.penalize(peer, 10);
                return self.refuse(
                    peer,
                    HANDSHAKE_PROTOCOL,
                    RefusalReason::BadRequest,
                    &e.to_string(),
                );
            }
        };
        if !self.complete_handshake(peer, &remote) {
            // Answer first so the remote learns why; then close.
            let commands = self.commands.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = commands.send(Command::Disconnect(peer)).await;
            });
        }
        let response = pb::Response {
            result: Some(pb::response::Result::Body(
                pb::Handshake {
                    hello: Some((&self.hello).into()),
                }
                .encode_to_vec(),
            )),
        };
        Answer::Now(response.encode_to_vec())
    }

    /// Sends a request through the adapter and decodes the response.
    pub(crate) async fn send_request(
        &self,
        peer: PeerId,
        protocol: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, NetError> {
        let request = pb::Request {
            protocol: protocol.to_owned(),
            body,
        }
        .encode_to_vec();
        if request.len() > self.limits.max_request_bytes {
            return Err(NetError::TooLarge {
                what: "request",
                size: request.len(),
                limit: self.limits.max_request_bytes,
            });
        }
        Counters::add(&self.counters.requests_sent, 1);
        Counters::add(&self.counters.bytes_out, request.len() as u64);
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Request {
                peer,
                bytes: request,
                reply,
            })
            .await
            .map_err(|_| NetError::Closed)?;
        let timeout = self.limits.request_timeout;
        let response = match tokio::time::timeout(timeout, rx).await {
            Err(_) => {
                return Err(NetError::Timeout {
                    peer,
                    protocol: protocol.to_owned(),
                });
            }
            Ok(Err(_)) => return Err(NetError::Closed),
            Ok(Ok(response)) => response?,
        };
        if response.len() > self.limits.max_request_bytes {
            return Err(NetError::TooLarge {
                what: "response",
                size: response.len(),
                limit: self.limits.max_request_bytes,
            });
        }
        let response =
            pb::Response::decode(response.as_slice()).map_err(|e| NetError::Malformed {
                what: "response",
                detail: e.to_string(),
            })?;
        match response.result {
            Some(pb::response::Result::Body(body)) => Ok(body),
            Some(pb::response::Result::Refused(refusal)) => Err(NetError::Refused {
                peer,
                protocol: protocol.to_owned(),
                reason: RefusalReason::from_proto(refusal.reason),
                detail: refusal.detail,
            }),
            None => Err(NetError::Malformed {
                what: "response",
                detail: "empty".into(),
            }),
        }
    }
}

fn decode_handshake(body: &[u8]) -> Result<Hello, NetError> {
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
