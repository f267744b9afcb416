//! [`Libp2pNetwork`]: the [`Network`] over real sockets with rust-libp2p.
//!
//! TCP and QUIC transports; noise or TLS (or both, negotiated) on TCP; yamux; identify;
//! ping; gossipsub v1.1/v1.2 with peer scoring, IDONTWANT and application-level validation
//! (a message is forwarded only after our core accepts it); request-response with a
//! length-delimited codec and explicit size limits; connection limits. All protocols are
//! the standard ones, unmodified, so stock libp2p peers interoperate.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{
    AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, FutureExt as _, StreamExt as _,
};
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageAuthenticity};
use libp2p::request_response::{self, OutboundFailure, ProtocolSupport, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, StreamProtocol, Swarm, connection_limits, identify, noise, ping, tcp, tls, yamux,
};
use tokio::sync::{mpsc, oneshot};

use crate::core::{Answer, Command, Core, NodeConfig, Verdict};
use crate::error::NetError;
use crate::network::Network;
use crate::peer::{Keypair, PeerId};

/// The request-response protocol carrying every `Request`/`Response` frame.
pub const REQUEST_PROTOCOL: &str = "/causality/request/0.1.0";

/// Which secure channel TCP connections use. QUIC always uses TLS 1.3.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Security {
    /// Noise XX (libp2p's default).
    #[default]
    Noise,
    /// TLS 1.3 per the libp2p TLS spec.
    Tls,
    /// Offer both; the dialer's preference (noise first) wins.
    Both,
}

/// Configuration of a libp2p node.
#[derive(Clone, Debug)]
pub struct Libp2pConfig {
    /// Identity, version, limits, policy and clock.
    pub node: NodeConfig,
    /// Addresses to listen on. Default: TCP and QUIC on 127.0.0.1, ports chosen by the OS.
    pub listen: Vec<Multiaddr>,
    /// Secure channel for TCP.
    pub security: Security,
    /// Connections with no open stream close after this long. Default 60 s.
    pub idle_timeout: Duration,
    /// Gossipsub heartbeat. Default 700 ms (shorter than gossipsub's 1 s, for fast meshes).
    pub heartbeat: Duration,
    /// Record libp2p's own metrics (prefixed `libp2p_`) into this registry (feature
    /// `metrics`): swarm, identify, ping and gossipsub events, and the bytes of every
    /// connection by protocol stack and direction (`libp2p_bandwidth_bytes_total`).
    /// Default none.
    #[cfg(feature = "metrics")]
    pub metrics: Option<Arc<std::sync::Mutex<libp2p::metrics::Registry>>>,
    /// Serve as a circuit relay for other peers (feature `nat`). Default off.
    #[cfg(feature = "nat")]
    pub relay_server: bool,
}

impl Libp2pConfig {
    /// A node with `keypair` listening on loopback TCP and QUIC.
    pub fn new(keypair: Keypair) -> Self {
        Self {
            node: NodeConfig::new(keypair),
            listen: vec![
                "/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr"),
                "/ip4/127.0.0.1/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
            ],
            security: Security::Noise,
            idle_timeout: Duration::from_secs(60),
            heartbeat: Duration::from_millis(700),
            #[cfg(feature = "metrics")]
            metrics: None,
            #[cfg(feature = "nat")]
            relay_server: false,
        }
    }

    /// A node whose identity is stored in `data_dir/identity.key` (created when missing).
    pub fn from_data_dir(data_dir: impl Into<PathBuf>) -> Result<Self, NetError> {
        let path = data_dir.into().join("identity.key");
        Ok(Self::new(Keypair::load_or_create(&path)?))
    }
}

/// Starts libp2p nodes.
#[derive(Debug)]
pub struct Libp2pNetwork;

impl Libp2pNetwork {
    /// Starts a node: binds every listen address, then returns its [`Network`] handle. Must
    /// be called inside a tokio runtime.
    pub async fn start(config: Libp2pConfig) -> Result<Network, NetError> {
        let (commands_tx, commands_rx) = mpsc::channel(config.node.limits.command_queue.max(1));
        let core = Arc::new(Core::new(config.node.clone(), commands_tx));
        let mut swarm = build_swarm(&config, &core)?;
        for address in &config.listen {
            swarm
                .listen_on(address.clone())
                .map_err(|e| NetError::Address {
                    address: address.to_string(),
                    detail: e.to_string(),
                })?;
        }
        // Wait until every listener reports an address, so callers can hand it out.
        let mut driver = Driver {
            swarm,
            #[cfg(feature = "metrics")]
            metrics: config.metrics.as_ref().map(|registry| {
                let mut registry = registry
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                libp2p::metrics::Metrics::new(&mut registry)
            }),
            #[cfg(feature = "nat")]
            advertise_listen: config.relay_server,
            #[cfg(not(feature = "nat"))]
            advertise_listen: false,
            core: Arc::clone(&core),
            requests: HashMap::new(),
            dials: HashMap::new(),
            responses: FuturesUnordered::new(),
        };
        let mut listening = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while listening < config.listen.len() {
            let event = tokio::time::timeout_at(deadline, driver.swarm.select_next_some())
                .await
                .map_err(|_| NetError::Transport("listeners did not come up within 10 s".into()))?;
            match event {
                SwarmEvent::NewListenAddr { .. } => listening += 1,
                SwarmEvent::ListenerError { error, .. }
                | SwarmEvent::ListenerClosed {
                    reason: Err(error), ..
                } => {
                    return Err(NetError::Transport(format!("listener failed: {error}")));
                }
                _ => {}
            }
            driver.on_swarm_event(event);
        }
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        tokio::spawn(driver.run(commands_rx, shutdown_rx));
        Ok(Network::new(core, shutdown_tx))
    }
}

fn libp2p_keypair(keypair: &Keypair) -> libp2p::identity::Keypair {
    libp2p::identity::Keypair::ed25519_from_bytes(keypair.secret())
        .expect("32 bytes are a valid ed25519 secret key")
}

fn to_libp2p(peer: &PeerId) -> libp2p::PeerId {
    libp2p::PeerId::from_bytes(&peer.to_libp2p_bytes()).expect("an identity multihash")
}

fn from_libp2p(peer: &libp2p::PeerId) -> Option<PeerId> {
    PeerId::from_libp2p_bytes(&peer.to_bytes()).ok()
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    gossipsub: gossipsub::Behaviour,
    requests: request_response::Behaviour<FrameCodec>,
    nat: Nat,
}

#[cfg(not(feature = "nat"))]
type Nat = libp2p::swarm::dummy::Behaviour;
#[cfg(feature = "nat")]
use nat::Nat;

/// NAT traversal (feature `nat`): AutoNAT, circuit relay v2 client (and server on relay
/// nodes), and DCUtR to upgrade relayed connections to direct ones.
#[cfg(feature = "nat")]
mod nat {
    use libp2p::swarm::NetworkBehaviour;
    use libp2p::swarm::behaviour::toggle::Toggle;
    use libp2p::{autonat, dcutr, relay};

    #[derive(NetworkBehaviour)]
    pub(super) struct Nat {
        relay_client: relay::client::Behaviour,
        relay_server: Toggle<relay::Behaviour>,
        dcutr: dcutr::Behaviour,
        autonat: autonat::Behaviour,
    }

    pub(super) fn behaviour(
        key: &libp2p::identity::Keypair,
        relay_client: relay::client::Behaviour,
        serve_relay: bool,
    ) -> Nat {
        let peer_id = key.public().to_peer_id();
        let relay_config = relay::Config {
            // Enough for version handshakes and announcements; bulk transfers should
            // go direct (DCUtR) rather than through someone else's relay.
            max_circuit_bytes: 1 << 20,
            ..relay::Config::default()
        };
        Nat {
            relay_client,
            relay_server: Toggle::from(
                serve_relay.then(|| relay::Behaviour::new(peer_id, relay_config)),
            ),
            dcutr: dcutr::Behaviour::new(peer_id),
            autonat: autonat::Behaviour::new(peer_id, autonat::Config::default()),
        }
    }
}

fn build_swarm(config: &Libp2pConfig, core: &Core) -> Result<Swarm<Behaviour>, NetError> {
    let keypair = libp2p_keypair(&core.keypair);
    let limits = &core.limits;
    let gossip_config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(config.heartbeat)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        // Room above our own limit so an oversize envelope reaches our validator and gets a
        // precise rejection; anything larger is cut by the codec.
        .max_transmit_size(limits.max_envelope_bytes * 2 + 4096)
        .message_id_fn(|message: &gossipsub::Message| {
            gossipsub::MessageId::from(blake3::hash(&message.data).as_bytes().to_vec())
        })
        .build()
        .map_err(|e| NetError::Transport(format!("gossipsub config: {e}")))?;
    let mut gossipsub =
        gossipsub::Behaviour::new(MessageAuthenticity::Signed(keypair.clone()), gossip_config)
            .map_err(|e| NetError::Transport(format!("gossipsub: {e}")))?;
    gossipsub
        .with_peer_score(
            gossipsub::PeerScoreParams::default(),
            gossipsub::PeerScoreThresholds::default(),
        )
        .map_err(|e| NetError::Transport(format!("gossipsub scoring: {e}")))?;
    let connection_limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(
            u32::try_from(limits.max_peers * 2).unwrap_or(u32::MAX),
        ))
        .with_max_established_per_peer(Some(2))
        .with_max_pending_incoming(Some(64));
    let requests = request_response::Behaviour::with_codec(
        FrameCodec {
            max_bytes: limits.max_request_bytes,
        },
        [(StreamProtocol::new(REQUEST_PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(limits.request_timeout)
            .with_max_concurrent_streams(256),
    );
    let agent = core.hello.agent.clone();
    let make_behaviour = move |key: &libp2p::identity::Keypair, nat: Nat| Behaviour {
        limits: connection_limits::Behaviour::new(connection_limits),
        identify: identify::Behaviour::new(
            identify::Config::new("/causality/0.1.0".into(), key.public())
                .with_agent_version(agent),
        ),
        ping: ping::Behaviour::new(ping::Config::new()),
        gossipsub,
        requests,
        nat,
    };
    #[cfg(feature = "nat")]
    let relay_server = config.relay_server;
    let idle = config.idle_timeout;
    let transport_err = |e: &dyn std::fmt::Display| NetError::Transport(e.to_string());
    let builder = libp2p::SwarmBuilder::with_existing_identity(keypair).with_tokio();
    // With a metrics registry, every connection's bytes are counted per protocol stack and
    // direction (`libp2p_bandwidth_bytes_total`).
    #[cfg(feature = "metrics")]
    let registry = config.metrics.clone();
    #[cfg(not(feature = "metrics"))]
    let registry: Option<()> = None;
    macro_rules! bandwidth {
        ($builder:expr, |$b:ident| $rest:expr) => {{
            #[cfg(feature = "metrics")]
            {
                if let Some(registry) = &registry {
                    let mut registry = registry.lock().unwrap_or_else(|e| e.into_inner());
                    let $b = $builder.with_bandwidth_metrics(&mut registry);
                    $rest
                } else {
                    let $b = $builder;
                    $rest
                }
            }
            #[cfg(not(feature = "metrics"))]
            {
                let _ = &registry;
                let $b = $builder;
                $rest
            }
        }};
    }
    #[cfg(not(feature = "nat"))]
    macro_rules! finish {
        ($with_tcp:expr) => {
            bandwidth!($with_tcp.map_err(|e| transport_err(&e))?.with_quic(), |b| b
                .with_behaviour(|key| make_behaviour(key, libp2p::swarm::dummy::Behaviour))
                .map_err(|e| transport_err(&e))?
                .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
                .build())
        };
    }
    #[cfg(feature = "nat")]
    macro_rules! finish {
        ($with_tcp:expr) => {
            bandwidth!(
                $with_tcp
                    .map_err(|e| transport_err(&e))?
                    .with_quic()
                    .with_relay_client(noise::Config::new, yamux::Config::default)
                    .map_err(|e| transport_err(&e))?,
                |b| b
                    .with_behaviour(|key, relay_client| {
                        make_behaviour(key, nat::behaviour(key, relay_client, relay_server))
                    })
                    .map_err(|e| transport_err(&e))?
                    .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
                    .build()
            )
        };
    }
    let tcp_config = tcp::Config::default().nodelay(true);
    Ok(match config.security {
        Security::Noise => {
            finish!(builder.with_tcp(tcp_config, noise::Config::new, yamux::Config::default))
        }
        Security::Tls => {
            finish!(builder.with_tcp(tcp_config, tls::Config::new, yamux::Config::default))
        }
        Security::Both => finish!(builder.with_tcp(
            tcp_config,
            (noise::Config::new, tls::Config::new),
            yamux::Config::default
        )),
    })
}

/// Request and response frames: an unsigned-varint length, then that many bytes.
#[derive(Clone, Debug)]
struct FrameCodec {
    max_bytes: usize,
}

async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> std::io::Result<Vec<u8>> {
    let mut len: u64 = 0;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8; 1];
        io.read_exact(&mut byte).await?;
        len |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
        if shift >= 56 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "length varint too long",
            ));
        }
    }
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: &[u8],
    max: usize,
) -> std::io::Result<()> {
    if bytes.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds the limit of {max}", bytes.len()),
        ));
    }
    let mut len = bytes.len() as u64;
    let mut prefix = Vec::with_capacity(10);
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            prefix.push(byte);
            break;
        }
        prefix.push(byte | 0x80);
    }
    io.write_all(&prefix).await?;
    io.write_all(bytes).await?;
    io.close().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        read_frame(io, self.max_bytes).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        read_frame(io, self.max_bytes).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()> {
        write_frame(io, &req, self.max_bytes).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> std::io::Result<()> {
        write_frame(io, &res, self.max_bytes).await
    }
}

type Reply<T> = oneshot::Sender<Result<T, NetError>>;

/// A handler's answer on its way to the requester's response channel.
type PendingAnswer = BoxFuture<'static, (ResponseChannel<Vec<u8>>, Vec<u8>)>;

struct Driver {
    swarm: Swarm<Behaviour>,
    #[cfg(feature = "metrics")]
    metrics: Option<libp2p::metrics::Metrics>,
    /// Confirm listen addresses as external (relay servers).
    advertise_listen: bool,
    core: Arc<Core>,
    requests: HashMap<request_response::OutboundRequestId, (PeerId, Reply<Vec<u8>>)>,
    dials: HashMap<ConnectionId, Reply<()>>,
    responses: FuturesUnordered<PendingAnswer>,
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: oneshot::Receiver<()>,
    ) {
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(command) = commands.recv() => self.on_command(command),
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some((channel, bytes)) = self.responses.next(), if !self.responses.is_empty() => {
                    if self.swarm.behaviour_mut().requests.send_response(channel, bytes).is_err() {
                        tracing::debug!(target: "causality_net", kind = "network", "response not sent: the requester went away");
                    }
                }
            }
        }
        let peers: Vec<_> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        tracing::debug!(target: "causality_net", kind = "network", peer = %self.core.local, "libp2p node stopped");
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish { physical, bytes } | Command::PublishRaw { physical, bytes } => {
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(IdentTopic::new(&physical), bytes)
                {
                    crate::event::Counters::add(&self.core.counters.publish_failures, 1);
                    tracing::debug!(target: "causality_net", kind = "network", topic = %physical, error = %e, "gossip publish failed");
                }
            }
            Command::Subscribe(physical) => {
                let topic = IdentTopic::new(&physical);
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
                    .unsubscribe(&IdentTopic::new(&physical));
            }
            Command::Request { peer, bytes, reply } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .requests
                    .send_request(&to_libp2p(&peer), bytes);
                self.requests.insert(id, (peer, reply));
            }
            Command::Dial { address, reply } => {
                let opts = DialOpts::unknown_peer_id().address(address.clone()).build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dials.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetError::Address {
                            address: address.to_string(),
                            detail: e.to_string(),
                        }));
                    }
                }
            }
            Command::Disconnect(peer) => {
                let _ = self.swarm.disconnect_peer_id(to_libp2p(&peer));
            }
            Command::Listen { address, reply } => {
                let result = self
                    .swarm
                    .listen_on(address.clone())
                    .map(drop)
                    .map_err(|e| NetError::Address {
                        address: address.to_string(),
                        detail: e.to_string(),
                    });
                let _ = reply.send(result);
            }
            Command::TopicPeers { physical, reply } => {
                let hash = IdentTopic::new(&physical).hash();
                let peers = self
                    .swarm
                    .behaviour()
                    .gossipsub
                    .all_peers()
                    .filter(|(_, topics)| topics.contains(&&hash))
                    .filter_map(|(peer, _)| from_libp2p(peer))
                    .collect();
                let _ = reply.send(peers);
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
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
                self.core.on_listening(address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                connection_id,
                ..
            } => {
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Ok(()));
                }
                let Some(peer) = from_libp2p(&peer_id) else {
                    tracing::info!(target: "causality_net", kind = "network", peer = %peer_id, "closing connection: only ed25519 identities are supported");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                };
                if num_established.get() == 1 && !self.core.on_connected(peer, endpoint.is_dialer())
                {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                if let Some(peer) = from_libp2p(&peer_id) {
                    self.core.on_disconnected(peer);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(NetError::Transport(format!("dial failed: {error}"))));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let acceptance = match from_libp2p(&propagation_source) {
                    None => MessageAcceptance::Reject,
                    Some(via) => {
                        // With strict validation every message has a signed source; one that is
                        // not an ed25519 identity cannot have signed our envelope.
                        let source = message.source.as_ref().and_then(from_libp2p);
                        match self.core.on_gossip(
                            via,
                            source,
                            message.topic.as_str(),
                            &message.data,
                        ) {
                            Verdict::Accept => MessageAcceptance::Accept,
                            Verdict::Ignore => MessageAcceptance::Ignore,
                            Verdict::Reject(reason) if reason.is_fault() => {
                                MessageAcceptance::Reject
                            }
                            Verdict::Reject(_) => MessageAcceptance::Ignore,
                        }
                    }
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Requests(event)) => self.on_request_event(event),
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

    fn on_request_event(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let Some(from) = from_libp2p(&peer) else {
                        return;
                    };
                    match self.core.on_request(from, &request) {
                        Answer::Now(bytes) => {
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .requests
                                .send_response(channel, bytes);
                        }
                        Answer::Later(pending) => {
                            self.responses
                                .push(pending.wait().map(move |bytes| (channel, bytes)).boxed());
                        }
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some((_, reply)) = self.requests.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some((peer, reply)) = self.requests.remove(&request_id) {
                    let error = match error {
                        OutboundFailure::DialFailure | OutboundFailure::ConnectionClosed => {
                            NetError::NotConnected(peer)
                        }
                        OutboundFailure::UnsupportedProtocols => NetError::Refused {
                            peer,
                            protocol: REQUEST_PROTOCOL.into(),
                            reason: crate::RefusalReason::UnsupportedProtocol,
                            detail: "the peer does not speak the request protocol".into(),
                        },
                        OutboundFailure::Timeout => NetError::Timeout {
                            peer,
                            protocol: REQUEST_PROTOCOL.into(),
                        },
                        other => NetError::Transport(other.to_string()),
                    };
                    let _ = reply.send(Err(error));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(target: "causality_net", kind = "network", peer = %peer, error = %error, "inbound request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}

/// Gossipsub v1.1 topic scoring: invalid messages (those our validator rejects) weigh
/// heavily; time in mesh and first deliveries earn credit. Mesh delivery-rate penalties
/// (P3, P3b) are off: our topics are often quiet, and a quiet topic must not graylist
/// honest peers.
fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_quantum: Duration::from_secs(1),
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.5,
        ..gossipsub::TopicScoreParams::default()
    }
}
