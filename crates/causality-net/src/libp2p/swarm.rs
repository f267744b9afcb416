//! Building the swarm: transports, security, behaviours.

use std::time::Duration;

use libp2p::gossipsub::{self, MessageAuthenticity};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Swarm, connection_limits, identify, noise, ping, tcp, tls, yamux};

use super::config::{Libp2pConfig, Security};
use crate::error::NetError;
use crate::peer::{Keypair, PeerId};

pub(super) fn libp2p_keypair(keypair: &Keypair) -> libp2p::identity::Keypair {
    libp2p::identity::Keypair::ed25519_from_bytes(keypair.secret())
        .expect("32 bytes are a valid ed25519 secret key")
}

pub(super) fn to_libp2p(peer: &PeerId) -> libp2p::PeerId {
    libp2p::PeerId::from_bytes(&peer.to_libp2p_bytes()).expect("an identity multihash")
}

pub(super) fn from_libp2p(peer: &libp2p::PeerId) -> Option<PeerId> {
    PeerId::from_libp2p_bytes(&peer.to_bytes()).ok()
}

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    pub(super) gossipsub: gossipsub::Behaviour,
    pub(super) streams: libp2p_stream::Behaviour,
    nat: Nat,
}

#[cfg(not(feature = "nat"))]
type Nat = libp2p::swarm::dummy::Behaviour;
#[cfg(feature = "nat")]
use super::nat::{self, Nat};

pub(super) fn build_swarm(config: &Libp2pConfig) -> Result<Swarm<Behaviour>, NetError> {
    let keypair = libp2p_keypair(&config.node.keypair);
    let limits = &config.node.limits;
    let gossip_config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(config.heartbeat)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        // Room above our own limit so an oversize envelope reaches our validator and gets a
        // precise rejection; anything larger is cut by the codec.
        .max_transmit_size(limits.max_envelope_bytes * 2 + 4096)
        // The id binds the signed gossip source as well as the data: a peer that
        // republishes an honest envelope under its own source gets its copy rejected, and
        // the genuine copy is not then dropped as a duplicate of it.
        .message_id_fn(|message: &gossipsub::Message| {
            let mut hasher = blake3::Hasher::new();
            if let Some(source) = &message.source {
                hasher.update(&source.to_bytes());
            }
            hasher.update(&message.data);
            gossipsub::MessageId::from(hasher.finalize().as_bytes().to_vec())
        })
        .build()
        .map_err(|e| NetError::Transport(format!("gossipsub config: {e}")))?;
    let mut gossipsub =
        gossipsub::Behaviour::new(MessageAuthenticity::Signed(keypair.clone()), gossip_config)
            .map_err(|e| NetError::Transport(format!("gossipsub: {e}")))?;
    // Gossipsub's own metrics (mesh sizes, messages received with and without duplicates,
    // per topic) beside libp2p's, under `gossipsub_`.
    #[cfg(feature = "metrics")]
    if let Some(registry) = &config.metrics {
        let mut registry = registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        gossipsub = gossipsub.with_metrics(
            registry.sub_registry_with_prefix("gossipsub"),
            gossipsub::MetricsConfig::default(),
        );
    }
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
    let agent = config.node.hello.agent.clone();
    let make_behaviour = move |key: &libp2p::identity::Keypair, nat: Nat| Behaviour {
        limits: connection_limits::Behaviour::new(connection_limits),
        identify: identify::Behaviour::new(
            identify::Config::new("/causality/0.1.0".into(), key.public())
                .with_agent_version(agent),
        ),
        ping: ping::Behaviour::new(ping::Config::new()),
        gossipsub,
        streams: libp2p_stream::Behaviour::new(),
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

/// Gossipsub v1.1 topic scoring: invalid messages (those our validator rejects) weigh
/// heavily; time in mesh and first deliveries earn credit. Mesh delivery-rate penalties
/// (P3, P3b) are off: our topics are often quiet, and a quiet topic must not graylist
/// honest peers.
pub(super) fn topic_score_params() -> gossipsub::TopicScoreParams {
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
