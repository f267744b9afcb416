//! The one driver: a task that owns the [`Core`] and a [`Transport`], feeds it commands from
//! [`Network`](crate::Network) handles, transport events and timers, and executes what it
//! outputs. Written once for both adapters.

use std::collections::{BTreeMap, HashMap};
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use causality_hash::ContentId;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use multiaddr::Multiaddr;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::clock::Clock;
use crate::core::{Command, Core, InboundId, NodeConfig, Output, PeerInfo, RequestId, Verdict};
use crate::envelope::{Acceptance, Message};
use crate::error::{NetError, RefusalReason};
use crate::event::{NetworkEvent, NetworkMetrics, lock};
use crate::network::{InboundRequest, Network};
use crate::peer::{Keypair, PeerId};
use crate::policy::Policy;
use crate::protocol::RequestProtocol;
use crate::topic::{PhysicalTopic, Topic};
use crate::transport::{Transport, TransportEvent};

/// The connected peers as one versioned snapshot: a consumer that lags sees the latest
/// set, never a hole. `version` grows by one with every change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerSet {
    /// Bumped on every change.
    pub version: u64,
    /// The connected peers, sorted.
    pub peers: Arc<[PeerInfo]>,
}

/// A reply channel.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, NetError>>;

/// What a [`Network`] handle asks of the driver.
pub(crate) enum ApiCommand {
    Publish {
        topic: Topic,
        payload_type: String,
        payload: Vec<u8>,
        reply: Reply<ContentId>,
    },
    Subscribe {
        topic: Topic,
        id: u64,
        tx: mpsc::Sender<Message>,
        validate: bool,
        reply: oneshot::Sender<()>,
    },
    Validate {
        id: ContentId,
        acceptance: Acceptance,
    },
    Serve {
        protocol: RequestProtocol,
        tx: mpsc::Sender<InboundRequest>,
        reply: Reply<()>,
    },
    Register {
        protocol: RequestProtocol,
        reply: Reply<()>,
    },
    Request {
        peer: PeerId,
        protocol: RequestProtocol,
        body: Vec<u8>,
        reply: Reply<Vec<u8>>,
    },
    Dial {
        address: Multiaddr,
        reply: Reply<()>,
    },
    Listen {
        address: Multiaddr,
        reply: Reply<()>,
    },
    Disconnect(PeerId),
    SetPolicy {
        policy: Policy,
        reply: Reply<()>,
    },
    Penalize {
        peer: PeerId,
        points: u32,
        reply: Reply<()>,
    },
    TopicPeers {
        physical: PhysicalTopic,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    #[cfg(feature = "test-utils")]
    PublishRaw {
        physical: PhysicalTopic,
        bytes: Vec<u8>,
    },
    #[cfg(feature = "test-utils")]
    RequestRaw {
        peer: PeerId,
        protocol: RequestProtocol,
        bytes: Vec<u8>,
        reply: Reply<Vec<u8>>,
    },
}

/// A handle went away: a subscription or a served protocol ends. At most one per live
/// subscription or handler, so this channel, though unbounded, is bounded by them.
pub(crate) enum Dropped {
    Subscription { topic: Topic, id: u64 },
    Handler { name: String },
}

/// What handles read without asking the driver.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) keypair: Keypair,
    pub(crate) local: PeerId,
    pub(crate) hello: causality_version::Hello,
    pub(crate) major: u32,
    pub(crate) shards: u32,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) subscription_queue: usize,
    pub(crate) metrics: Mutex<NetworkMetrics>,
    pub(crate) listen: Mutex<Vec<Multiaddr>>,
    pub(crate) bans: Mutex<BTreeMap<PeerId, u64>>,
    pub(crate) next_seq: std::sync::atomic::AtomicU64,
    pub(crate) equivocations: Mutex<Vec<crate::Equivocation>>,
    pub(crate) policy: Mutex<Policy>,
    pub(crate) events: broadcast::Sender<NetworkEvent>,
    pub(crate) peers: watch::Sender<PeerSet>,
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Message>,
    validate: bool,
}

/// A handler's answer on its way back: which request, who asked, on which protocol id.
type Answer = BoxFuture<
    'static,
    (
        InboundId,
        PeerId,
        String,
        Result<Vec<u8>, (RefusalReason, String)>,
    ),
>;

struct Driver<T: Transport> {
    core: Core,
    transport: T,
    shared: Arc<Shared>,
    subscribers: HashMap<Topic, Vec<Subscriber>>,
    handlers: HashMap<String, mpsc::Sender<InboundRequest>>,
    waiting: HashMap<RequestId, Reply<Vec<u8>>>,
    dials: HashMap<u64, Reply<()>>,
    next_token: u64,
    answers: FuturesUnordered<Answer>,
    /// Gossip tokens of messages whose verdict a protocol will give.
    deferred: HashMap<ContentId, T::GossipToken>,
}

/// Starts a node's driver over `transport`, already listening on `listening`; returns its
/// handle.
pub(crate) fn spawn<T: Transport>(
    config: &NodeConfig,
    transport: T,
    listening: Vec<Multiaddr>,
) -> Network {
    let clock = Arc::clone(&config.clock);
    let core = Core::new(config, clock.now_ms());
    let (events, _) = broadcast::channel(config.limits.event_queue);
    let (peers, _) = watch::channel(PeerSet::default());
    let shared = Arc::new(Shared {
        keypair: config.keypair.clone(),
        local: core.local(),
        hello: config.hello.clone(),
        major: config.hello.version.major,
        shards: config.limits.topic_shards,
        clock,
        subscription_queue: config.limits.subscription_queue,
        metrics: Mutex::new(NetworkMetrics::default()),
        listen: Mutex::new(listening),
        bans: Mutex::new(core.bans()),
        next_seq: std::sync::atomic::AtomicU64::new(core.next_seq()),
        equivocations: Mutex::new(Vec::new()),
        policy: Mutex::new(config.policy.clone()),
        events,
        peers,
    });
    let (commands_tx, commands_rx) = mpsc::channel(config.limits.command_queue);
    let (dropped_tx, dropped_rx) = mpsc::unbounded_channel();
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let driver = Driver {
        core,
        transport,
        shared: Arc::clone(&shared),
        subscribers: HashMap::new(),
        handlers: HashMap::new(),
        waiting: HashMap::new(),
        dials: HashMap::new(),
        next_token: 0,
        answers: FuturesUnordered::new(),
        deferred: HashMap::new(),
    };
    tokio::spawn(driver.run(commands_rx, dropped_rx, shutdown_rx));
    Network::new(shared, commands_tx, dropped_tx, shutdown_tx)
}

impl<T: Transport> Driver<T> {
    fn now(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<ApiCommand>,
        mut dropped: mpsc::UnboundedReceiver<Dropped>,
        mut shutdown: oneshot::Receiver<()>,
    ) {
        self.drain();
        loop {
            let sleep = match self.core.poll_timeout() {
                Some(at) => {
                    let wait = at.saturating_sub(self.now());
                    tokio::time::sleep(Duration::from_millis(wait)).boxed()
                }
                None => std::future::pending().boxed(),
            };
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                event = poll_fn(|cx| self.transport.poll_event(cx)) => match event {
                    Some(event) => self.on_event(event),
                    None => break,
                },
                Some(command) = commands.recv() => self.on_command(command),
                Some(dropped) = dropped.recv() => self.on_dropped(dropped),
                Some((id, peer, protocol, answer)) = self.answers.next(), if !self.answers.is_empty() => {
                    self.core.respond(id, peer, &protocol, answer);
                }
                () = sleep => {
                    let now = self.now();
                    self.core.handle_timeout(now);
                }
            }
            self.drain();
        }
        self.transport.shutdown();
        tracing::debug!(target: "causality_net", kind = "network", peer = %self.shared.local, "node stopped");
    }

    /// Executes every output of the core. What handles can read (metrics, peers, bans) is
    /// published before the messages and events of this round are handed out, so whoever
    /// receives one sees a state that already includes it.
    fn drain(&mut self) {
        let mut deliveries = Vec::new();
        let mut events = Vec::new();
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Transport(command) => self.transport.execute(command),
                Output::Deliver(message) => self.reserve(message, &mut deliveries),
                Output::Report { id, verdict } => {
                    if let Some(token) = self.deferred.remove(&id) {
                        self.transport.report(token, &verdict);
                    }
                }
                Output::Inbound {
                    id,
                    peer,
                    name,
                    protocol,
                    body,
                } => self.hand_to_handler(id, peer, &name, protocol, body),
                Output::Done { id, result } => {
                    if let Some(reply) = self.waiting.remove(&id) {
                        let _ = reply.send(result);
                    }
                }
                Output::Event(event) => events.push(event),
            }
        }
        *lock(&self.shared.metrics) = self.core.metrics().clone();
        self.shared
            .next_seq
            .store(self.core.next_seq(), std::sync::atomic::Ordering::Relaxed);
        if self.core.take_changed() {
            let now = self.now();
            let peers: Arc<[PeerInfo]> = self.core.peers(now).into();
            *lock(&self.shared.bans) = self.core.bans();
            *lock(&self.shared.equivocations) = self.core.equivocations();
            self.shared.peers.send_if_modified(|set| {
                if *set.peers == *peers {
                    return false;
                }
                set.version += 1;
                set.peers = peers;
                true
            });
        }
        for (permit, message) in deliveries {
            permit.send(message);
        }
        for event in events {
            // No receivers is fine; lagging receivers lose the oldest events.
            let _ = self.shared.events.send(event);
        }
    }

    /// Reserves room for `message` in each subscriber's queue (counting the subscribers
    /// whose queues are full as drops); the message is sent once the round's state is
    /// published.
    fn reserve(&mut self, message: Message, out: &mut Vec<(mpsc::OwnedPermit<Message>, Message)>) {
        let Some(subscribers) = self.subscribers.get_mut(&message.topic) else {
            return;
        };
        let (mut delivered, mut dropped) = (0, 0);
        subscribers.retain(|s| !s.tx.is_closed());
        for subscriber in subscribers.iter() {
            match subscriber.tx.clone().try_reserve_owned() {
                Ok(permit) => {
                    delivered += 1;
                    out.push((permit, message.clone()));
                }
                Err(_) => {
                    dropped += 1;
                    tracing::debug!(target: "causality_net", kind = "network", topic = %message.topic, "subscriber queue full; message dropped for it");
                }
            }
        }
        self.core.delivered(delivered, dropped);
    }

    fn hand_to_handler(
        &mut self,
        id: InboundId,
        peer: PeerId,
        name: &str,
        protocol: String,
        body: Vec<u8>,
    ) {
        let Some(handler) = self.handlers.get(name) else {
            self.core.handler_unavailable(id, peer, &protocol, false);
            return;
        };
        let (responder, rx) = oneshot::channel();
        let request = InboundRequest::new(peer, protocol.clone(), body, responder);
        match handler.try_send(request) {
            Ok(()) => {
                self.answers.push(
                    async move {
                        let answer = rx.await.unwrap_or_else(|_| {
                            Err((
                                RefusalReason::HandlerFailed,
                                "the handler dropped the request".to_owned(),
                            ))
                        });
                        (id, peer, protocol, answer)
                    }
                    .boxed(),
                );
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.core.handler_unavailable(id, peer, &protocol, true);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.core.handler_unavailable(id, peer, &protocol, false);
            }
        }
    }

    fn on_event(&mut self, event: TransportEvent<T::GossipToken>) {
        let now = self.now();
        match event {
            TransportEvent::Listening(address) => {
                tracing::info!(target: "causality_net", kind = "network", address = %address, "listening");
                lock(&self.shared.listen).push(address.clone());
                let _ = self.shared.events.send(NetworkEvent::Listening { address });
            }
            TransportEvent::Connected { peer, dialer, ip } => {
                if !self.core.on_connected(peer, dialer, ip, now) {
                    self.transport.execute(Command::Disconnect(peer));
                }
            }
            TransportEvent::Disconnected { peer } => self.core.on_disconnected(peer, now),
            TransportEvent::PeerTopic {
                peer,
                physical,
                subscribed,
            } => self.core.on_peer_topic(peer, physical, subscribed),
            TransportEvent::Gossip {
                via,
                source,
                physical,
                bytes,
                token,
            } => {
                let verdict = if self.core.is_subscribed_physical(&physical) {
                    self.core.on_gossip(via, source, &physical, &bytes, now)
                } else {
                    Verdict::Ignore
                };
                if let Verdict::Defer(id) = verdict {
                    // The core bounds how many wait and reports each one exactly once.
                    self.deferred.insert(id, token);
                } else {
                    self.transport.report(token, &verdict);
                }
            }
            TransportEvent::Request {
                id,
                peer,
                protocol,
                bytes,
            } => self.core.on_inbound(id, peer, &protocol, &bytes, now),
            TransportEvent::Response { id, bytes } => self.core.on_response(id, &bytes, now),
            TransportEvent::RequestFailed { id, failure } => {
                self.core.on_request_failed(id, failure, now);
            }
            TransportEvent::Dialed { token, result }
            | TransportEvent::Listened { token, result } => {
                if let Some(reply) = self.dials.remove(&token) {
                    let _ = reply.send(result);
                }
            }
            TransportEvent::PublishFailed => self.core.publish_failed(),
        }
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn on_command(&mut self, command: ApiCommand) {
        let now = self.now();
        match command {
            ApiCommand::Publish {
                topic,
                payload_type,
                payload,
                reply,
            } => {
                let _ = reply.send(self.core.publish(&topic, &payload_type, &payload, now));
            }
            ApiCommand::Subscribe {
                topic,
                id,
                tx,
                validate,
                reply,
            } => {
                self.core.subscribe(&topic, validate);
                self.subscribers
                    .entry(topic)
                    .or_default()
                    .push(Subscriber { id, tx, validate });
                let _ = reply.send(());
            }
            ApiCommand::Validate { id, acceptance } => {
                self.core.validate(id, acceptance, now);
            }
            ApiCommand::Serve {
                protocol,
                tx,
                reply,
            } => {
                let name = protocol.name().to_owned();
                if self.handlers.get(&name).is_some_and(|h| !h.is_closed()) {
                    let _ =
                        reply.send(Err(NetError::AlreadyServing(protocol.ids()[0].to_string())));
                    return;
                }
                self.core.unserve(&name);
                let result = self.core.register(protocol, true);
                if result.is_ok() {
                    self.handlers.insert(name, tx);
                }
                // The transport accepts the protocol's streams before the caller hears back.
                self.drain();
                let _ = reply.send(result);
            }
            ApiCommand::Register { protocol, reply } => {
                let _ = reply.send(self.core.register(protocol, false));
            }
            ApiCommand::Request {
                peer,
                protocol,
                body,
                reply,
            } => match self.core.request(peer, protocol, body, now) {
                Ok(id) => {
                    self.waiting.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            ApiCommand::Dial { address, reply } => {
                let token = self.token();
                self.dials.insert(token, reply);
                self.transport.dial(token, address);
            }
            ApiCommand::Listen { address, reply } => {
                let token = self.token();
                self.dials.insert(token, reply);
                self.transport.listen(token, address);
            }
            ApiCommand::Disconnect(peer) => self.transport.execute(Command::Disconnect(peer)),
            ApiCommand::SetPolicy { policy, reply } => {
                *lock(&self.shared.policy) = policy.clone();
                self.core.set_policy(policy);
                let _ = reply.send(Ok(()));
            }
            ApiCommand::Penalize {
                peer,
                points,
                reply,
            } => {
                self.core.penalize(peer, i64::from(points), now);
                // Published before the caller hears back, so `is_banned` agrees at once.
                self.drain();
                let _ = reply.send(Ok(()));
            }
            ApiCommand::TopicPeers { physical, reply } => {
                let _ = reply.send(self.core.topic_peers(&physical));
            }
            #[cfg(feature = "test-utils")]
            ApiCommand::PublishRaw { physical, bytes } => self.core.publish_raw(physical, bytes),
            #[cfg(feature = "test-utils")]
            ApiCommand::RequestRaw {
                peer,
                protocol,
                bytes,
                reply,
            } => match self.core.request_raw(peer, protocol, bytes, now) {
                Ok(id) => {
                    self.waiting.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
        }
    }

    fn on_dropped(&mut self, dropped: Dropped) {
        match dropped {
            Dropped::Subscription { topic, id } => {
                let mut validate = false;
                if let Some(subscribers) = self.subscribers.get_mut(&topic) {
                    validate = subscribers.iter().any(|s| s.id == id && s.validate);
                    subscribers.retain(|s| s.id != id);
                    if subscribers.is_empty() {
                        self.subscribers.remove(&topic);
                    }
                }
                self.core.unsubscribe(&topic, validate);
            }
            Dropped::Handler { name } => {
                if self
                    .handlers
                    .get(&name)
                    .is_some_and(mpsc::Sender::is_closed)
                {
                    self.handlers.remove(&name);
                    self.core.unserve(&name);
                }
            }
        }
    }
}

impl Shared {
    pub(crate) fn subscription_queue(&self) -> usize {
        self.subscription_queue
    }
}
