//! The libp2p transport: a swarm (gossipsub, identify, ping, connection limits, NAT
//! traversal) plus one stream protocol per registered request protocol, opened and
//! accepted through `libp2p-stream`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncWriteExt as _, StreamExt as _};
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, StreamProtocol, Swarm, identify};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::swarm::{Behaviour, BehaviourEvent, from_libp2p, to_libp2p, topic_score_params};
use crate::core::{Command, InboundId, RequestFailure, RequestId, Verdict};
use crate::error::NetError;
use crate::frame::{read_frame, write_frame};
use crate::peer::PeerId;
use crate::topic::PhysicalTopic;
use crate::transport::{Transport, TransportEvent};

/// Fresh streams tried after the first fails.
const RETRIES: u32 = 4;

/// One request on a new stream: write the frame, read the answer.
async fn exchange(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    protocol: &StreamProtocol,
    bytes: &[u8],
    max_response: usize,
) -> Result<Vec<u8>, RequestFailure> {
    let mut stream = control
        .open_stream(to_libp2p(&peer), protocol.clone())
        .await
        .map_err(|e| match e {
            libp2p_stream::OpenStreamError::UnsupportedProtocol(_) => {
                RequestFailure::UnsupportedProtocol
            }
            libp2p_stream::OpenStreamError::Io(e) => RequestFailure::Io(e),
            other => RequestFailure::Io(std::io::Error::other(other.to_string())),
        })?;
    write_frame(&mut stream, bytes)
        .await
        .map_err(RequestFailure::Io)?;
    let response = read_frame(&mut stream, max_response)
        .await
        .map_err(RequestFailure::Io)?;
    let _ = stream.close().await;
    Ok(response)
}

/// Inbound stream slots: a cap for the node and a smaller one per peer, so one peer that
/// opens streams and trickles their bytes (slow loris) holds a bounded share and the
/// others are still served.
#[derive(Debug)]
pub(crate) struct StreamSlots {
    total: Arc<Semaphore>,
    per_peer: usize,
    open: std::sync::Mutex<HashMap<PeerId, usize>>,
}

/// One inbound stream's claim on [`StreamSlots`]; released on drop.
struct Slot {
    slots: Arc<StreamSlots>,
    peer: PeerId,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl StreamSlots {
    pub(crate) fn new(total: usize, per_peer: usize) -> Arc<Self> {
        Arc::new(Self {
            total: Arc::new(Semaphore::new(total)),
            per_peer,
            open: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a new stream from `peer`, unless it or the node is at its cap.
    fn claim(self: &Arc<Self>, peer: PeerId) -> Option<Slot> {
        let mut open = crate::event::lock(&self.open);
        let count = open.entry(peer).or_insert(0);
        if *count >= self.per_peer {
            return None;
        }
        let permit = Arc::clone(&self.total).try_acquire_owned().ok()?;
        *count += 1;
        Some(Slot {
            slots: Arc::clone(self),
            peer,
            _permit: permit,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = crate::event::lock(&self.slots.open);
        if let Some(count) = open.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

/// What stream tasks report back.
enum TaskResult {
    Inbound {
        peer: PeerId,
        protocol: String,
        bytes: Vec<u8>,
        respond: oneshot::Sender<Vec<u8>>,
    },
    Response {
        id: RequestId,
        result: Result<Vec<u8>, RequestFailure>,
    },
}

/// A gossip message's id and the peer it came through, to report its verdict.
pub(crate) type GossipToken = (MessageId, libp2p::PeerId);

pub(crate) struct Libp2pTransport {
    swarm: Swarm<Behaviour>,
    control: libp2p_stream::Control,
    #[cfg(feature = "metrics")]
    pub(super) metrics: Option<libp2p::metrics::Metrics>,
    /// Confirm listen addresses as external (relay servers).
    pub(super) advertise_listen: bool,
    events: VecDeque<TransportEvent<GossipToken>>,
    results_tx: mpsc::Sender<TaskResult>,
    results_rx: mpsc::Receiver<TaskResult>,
    inbound: HashMap<u64, oneshot::Sender<Vec<u8>>>,
    next_inbound: u64,
    accepting: HashMap<String, JoinHandle<()>>,
    streams: Arc<StreamSlots>,
    /// How long an inbound stream may take to deliver its request frame.
    read_timeout: Duration,
    dials: HashMap<ConnectionId, (u64, Multiaddr)>,
}

impl Libp2pTransport {
    pub(super) fn new(
        mut swarm: Swarm<Behaviour>,
        streams: Arc<StreamSlots>,
        read_timeout: Duration,
    ) -> Self {
        let control = swarm.behaviour_mut().streams.new_control();
        let (results_tx, results_rx) = mpsc::channel(1024);
        Self {
            swarm,
            control,
            #[cfg(feature = "metrics")]
            metrics: None,
            advertise_listen: false,
            events: VecDeque::new(),
            results_tx,
            results_rx,
            inbound: HashMap::new(),
            next_inbound: 0,
            accepting: HashMap::new(),
            streams,
            read_timeout,
            dials: HashMap::new(),
        }
    }

    /// Drops queued listen events (their addresses were handed to the driver at start).
    pub(super) fn forget_listening(&mut self) {
        self.events
            .retain(|e| !matches!(e, TransportEvent::Listening(_)));
    }

    pub(super) fn swarm_mut(&mut self) -> &mut Swarm<Behaviour> {
        &mut self.swarm
    }

    /// Handles one swarm event, queueing what the core must hear of.
    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            use libp2p::metrics::Recorder as _;
            metrics.record(&event);
            match &event {
                SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => metrics.record(e),
                SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => metrics.record(e),
                SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => metrics.record(e),
                _ => {}
            }
        }
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                if self.advertise_listen
                    && !address
                        .iter()
                        .any(|p| p == libp2p::multiaddr::Protocol::P2pCircuit)
                {
                    // A relay hands its addresses out in reservations; on a relay node the
                    // addresses it listens on are the ones to hand out.
                    self.swarm.add_external_address(address.clone());
                }
                self.events.push_back(TransportEvent::Listening(address));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                connection_id,
                ..
            } => {
                if let Some((token, _)) = self.dials.remove(&connection_id) {
                    self.events.push_back(TransportEvent::Dialed {
                        token,
                        result: Ok(()),
                    });
                }
                let Some(peer) = from_libp2p(&peer_id) else {
                    tracing::info!(target: "causality_net", kind = "network", peer = %peer_id, "closing connection: only ed25519 identities are supported");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                };
                if num_established.get() == 1 {
                    let ip = endpoint.get_remote_address().iter().find_map(|p| match p {
                        multiaddr::Protocol::Ip4(ip) => Some(std::net::IpAddr::V4(ip)),
                        multiaddr::Protocol::Ip6(ip) => Some(std::net::IpAddr::V6(ip)),
                        _ => None,
                    });
                    self.events.push_back(TransportEvent::Connected {
                        peer,
                        dialer: endpoint.is_dialer(),
                        ip,
                    });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                if let Some(peer) = from_libp2p(&peer_id) {
                    self.events.push_back(TransportEvent::Disconnected { peer });
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some((token, address)) = self.dials.remove(&connection_id) {
                    self.events.push_back(TransportEvent::Dialed {
                        token,
                        result: Err(NetError::Dial {
                            address: address.to_string(),
                            source: Box::new(error),
                        }),
                    });
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.on_gossip_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                tracing::debug!(target: "causality_net", kind = "network", peer = %peer_id, agent = %info.agent_version, "identified");
            }
            _ => {}
        }
    }

    fn on_gossip_event(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let Some(via) = from_libp2p(&propagation_source) else {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            MessageAcceptance::Reject,
                        );
                    return;
                };
                // With strict validation every message has a signed source; one that is
                // not an ed25519 identity cannot have signed our envelope.
                let source = message.source.as_ref().and_then(from_libp2p);
                self.events.push_back(TransportEvent::Gossip {
                    via,
                    source,
                    physical: PhysicalTopic::from_wire(message.topic.as_str()),
                    bytes: message.data.into(),
                    token: (message_id, propagation_source),
                });
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                if let Some(peer) = from_libp2p(&peer_id) {
                    self.events.push_back(TransportEvent::PeerTopic {
                        peer,
                        physical: PhysicalTopic::from_wire(topic.as_str()),
                        subscribed: true,
                    });
                }
            }
            gossipsub::Event::Unsubscribed { peer_id, topic } => {
                if let Some(peer) = from_libp2p(&peer_id) {
                    self.events.push_back(TransportEvent::PeerTopic {
                        peer,
                        physical: PhysicalTopic::from_wire(topic.as_str()),
                        subscribed: false,
                    });
                }
            }
            _ => {}
        }
    }

    fn on_result(&mut self, result: TaskResult) -> TransportEvent<GossipToken> {
        match result {
            TaskResult::Inbound {
                peer,
                protocol,
                bytes,
                respond,
            } => {
                self.next_inbound += 1;
                self.inbound.insert(self.next_inbound, respond);
                TransportEvent::Request {
                    id: InboundId(self.next_inbound),
                    peer,
                    protocol,
                    bytes,
                }
            }
            TaskResult::Response { id, result } => match result {
                Ok(bytes) => TransportEvent::Response { id, bytes },
                Err(failure) => TransportEvent::RequestFailed { id, failure },
            },
        }
    }

    fn send_request(
        &mut self,
        id: RequestId,
        peer: PeerId,
        protocol: String,
        bytes: Vec<u8>,
        max_response: usize,
        timeout: Duration,
    ) {
        let Ok(stream_protocol) = StreamProtocol::try_from_owned(protocol) else {
            self.events.push_back(TransportEvent::RequestFailed {
                id,
                failure: RequestFailure::UnsupportedProtocol,
            });
            return;
        };
        let mut control = self.control.clone();
        let results = self.results_tx.clone();
        tokio::spawn(async move {
            let exchange = async {
                // libp2p-stream drops an inbound stream when the server's accept queue for
                // the protocol is full (a burst of streams in one poll); the server never
                // saw it, so the request is tried again on a fresh stream, a few times at most.
                let mut attempt = 0;
                loop {
                    match exchange(&mut control, peer, &stream_protocol, &bytes, max_response).await
                    {
                        Err(RequestFailure::Io(e)) if attempt < RETRIES => {
                            attempt += 1;
                            tracing::debug!(target: "causality_net", kind = "network", peer = %peer, attempt, error = %e, "request stream failed; retrying");
                            tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                        }
                        other => return other,
                    }
                }
            };
            let result = tokio::time::timeout(timeout, exchange)
                .await
                .unwrap_or(Err(RequestFailure::Timeout));
            let _ = results.send(TaskResult::Response { id, result }).await;
        });
    }

    fn serve(&mut self, protocol: String, max_request: usize) {
        let Ok(stream_protocol) = StreamProtocol::try_from_owned(protocol.clone()) else {
            tracing::warn!(target: "causality_net", kind = "network", protocol, "not a valid stream protocol; not served");
            return;
        };
        let Ok(mut incoming) = self.control.accept(stream_protocol) else {
            return;
        };
        let results = self.results_tx.clone();
        let streams = Arc::clone(&self.streams);
        let read_timeout = self.read_timeout;
        let name = protocol.clone();
        let task = tokio::spawn(async move {
            while let Some((peer_id, mut stream)) = incoming.next().await {
                let Some(peer) = from_libp2p(&peer_id) else {
                    continue;
                };
                let Some(slot) = streams.claim(peer) else {
                    tracing::debug!(target: "causality_net", kind = "network", peer = %peer, "too many inbound streams; stream reset");
                    continue;
                };
                let (results, protocol) = (results.clone(), name.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let read =
                        tokio::time::timeout(read_timeout, read_frame(&mut stream, max_request))
                            .await;
                    let bytes = match read {
                        Ok(Ok(bytes)) => bytes,
                        Ok(Err(e)) => {
                            tracing::debug!(target: "causality_net", kind = "network", peer = %peer, protocol, error = %e, "inbound request not read");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(target: "causality_net", kind = "network", peer = %peer, protocol, "inbound request too slow; stream closed");
                            return;
                        }
                    };
                    let (respond, answer) = oneshot::channel();
                    let inbound = TaskResult::Inbound {
                        peer,
                        protocol,
                        bytes,
                        respond,
                    };
                    if results.send(inbound).await.is_err() {
                        return;
                    }
                    if let Ok(response) = answer.await {
                        let _ = write_frame(&mut stream, &response).await;
                        let _ = stream.close().await;
                    }
                });
            }
        });
        if let Some(old) = self.accepting.insert(protocol, task) {
            old.abort();
        }
    }
}

impl Transport for Libp2pTransport {
    type GossipToken = GossipToken;

    fn execute(&mut self, command: Command) {
        match command {
            Command::Publish { physical, bytes } => {
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(IdentTopic::new(physical.as_str()), bytes.to_vec())
                {
                    self.events.push_back(TransportEvent::PublishFailed);
                    tracing::debug!(target: "causality_net", kind = "network", topic = %physical, error = %e, "gossip publish failed");
                }
            }
            Command::Subscribe(physical) => {
                let topic = IdentTopic::new(physical.as_str());
                let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
                if let Err(e) = gossipsub.subscribe(&topic) {
                    tracing::warn!(target: "causality_net", kind = "network", topic = %physical, error = %e, "gossip subscribe failed");
                }
                let _ = gossipsub.set_topic_params(topic, topic_score_params());
            }
            Command::Unsubscribe(physical) => {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .unsubscribe(&IdentTopic::new(physical.as_str()));
            }
            Command::Request {
                id,
                peer,
                protocol,
                bytes,
                max_response,
                timeout,
            } => self.send_request(id, peer, protocol, bytes, max_response, timeout),
            Command::Respond { id, bytes } => {
                if let Some(respond) = self.inbound.remove(&id.0) {
                    let _ = respond.send(bytes);
                }
            }
            Command::Disconnect(peer) => {
                let _ = self.swarm.disconnect_peer_id(to_libp2p(&peer));
            }
            Command::Serve {
                protocols,
                max_request,
            } => {
                for protocol in protocols {
                    self.serve(protocol, max_request);
                }
            }
            Command::Unserve { protocols } => {
                for protocol in protocols {
                    if let Some(task) = self.accepting.remove(&protocol) {
                        task.abort();
                    }
                }
            }
        }
    }

    fn report(&mut self, (message_id, source): GossipToken, verdict: &Verdict) {
        let acceptance = match verdict {
            Verdict::Accept => MessageAcceptance::Accept,
            // A deferred verdict is reported when it is known, never as itself.
            Verdict::Ignore | Verdict::Defer(_) => MessageAcceptance::Ignore,
            Verdict::Reject(_) => MessageAcceptance::Reject,
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &source, acceptance);
    }

    fn dial(&mut self, token: u64, address: Multiaddr) {
        let opts = DialOpts::unknown_peer_id().address(address.clone()).build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.insert(id, (token, address));
            }
            Err(e) => self.events.push_back(TransportEvent::Dialed {
                token,
                result: Err(NetError::Dial {
                    address: address.to_string(),
                    source: Box::new(e),
                }),
            }),
        }
    }

    fn listen(&mut self, token: u64, address: Multiaddr) {
        let result = self
            .swarm
            .listen_on(address.clone())
            .map(drop)
            .map_err(|e| NetError::Listen {
                address: address.to_string(),
                source: Box::new(e),
            });
        self.events
            .push_back(TransportEvent::Listened { token, result });
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<TransportEvent<GossipToken>>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(Some(event));
            }
            if let Poll::Ready(Some(result)) = self.results_rx.poll_recv(cx) {
                return Poll::Ready(Some(self.on_result(result)));
            }
            match self.swarm.poll_next_unpin(cx) {
                Poll::Ready(Some(event)) => self.on_swarm_event(event),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn shutdown(&mut self) {
        for (_, task) in self.accepting.drain() {
            task.abort();
        }
        let peers: Vec<_> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }
}
