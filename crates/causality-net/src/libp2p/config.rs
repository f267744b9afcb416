//! Configuration of a libp2p node.

use std::path::PathBuf;
#[cfg(feature = "metrics")]
use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;

use crate::core::NodeConfig;
use crate::error::{ConfigError, NetError};
use crate::peer::Keypair;

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
    /// Inbound request streams open at once per node, all protocols; beyond it new
    /// streams are reset. Default 256.
    pub max_inbound_streams: usize,
    /// Inbound request streams open at once from one peer. Default 32.
    pub max_inbound_streams_per_peer: usize,
    /// How long an inbound stream may take to deliver its request frame before it is
    /// closed. Default 10 s.
    pub request_read_timeout: Duration,
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
            max_inbound_streams: 256,
            max_inbound_streams_per_peer: 32,
            request_read_timeout: Duration::from_secs(10),
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

    /// Checks the configuration; the first field out of range is named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.node.limits.validate()?;
        if self.listen.is_empty() {
            return Err(ConfigError::new("listen", "needs at least one address"));
        }
        if self.heartbeat.is_zero() {
            return Err(ConfigError::new("heartbeat", "must be greater than zero"));
        }
        if self.max_inbound_streams == 0 {
            return Err(ConfigError::new(
                "max_inbound_streams",
                "must be greater than zero",
            ));
        }
        if self.max_inbound_streams_per_peer == 0
            || self.max_inbound_streams_per_peer > self.max_inbound_streams
        {
            return Err(ConfigError::new(
                "max_inbound_streams_per_peer",
                "must be between 1 and max_inbound_streams",
            ));
        }
        if self.request_read_timeout.is_zero() {
            return Err(ConfigError::new(
                "request_read_timeout",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}
