//! [`Libp2pNetwork`]: the [`Network`] over real sockets with rust-libp2p.
//!
//! TCP and QUIC transports; noise or TLS (or both, negotiated) on TCP; yamux; identify;
//! ping; gossipsub v1.1/v1.2 with peer scoring, IDONTWANT and application-level validation
//! (a message is forwarded only after our core accepts it); one stream protocol per
//! registered request protocol (`/causality/<name>/<version>`, every version offered),
//! with length-delimited frames and the protocol's own size limits; connection limits. All
//! protocols are the standard ones, unmodified, so stock libp2p peers interoperate.
//!
//! `config.rs` holds the configuration, `swarm.rs` builds the swarm, `crate::frame` the
//! frames, `nat.rs` NAT traversal, `transport.rs` the transport the shared driver runs.

mod config;
#[cfg(feature = "nat")]
mod nat;
mod swarm;
mod transport;

use std::time::Duration;

use futures::StreamExt as _;
use libp2p::swarm::SwarmEvent;

pub use self::config::{Libp2pConfig, Security};
use self::transport::{Libp2pTransport, StreamSlots};
use crate::error::NetError;
use crate::network::Network;

/// Starts libp2p nodes.
#[derive(Debug)]
pub struct Libp2pNetwork;

impl Libp2pNetwork {
    /// Starts a node: checks the configuration, binds every listen address, then returns
    /// its [`Network`] handle. Must be called inside a tokio runtime.
    pub async fn start(config: Libp2pConfig) -> Result<Network, NetError> {
        config.validate()?;
        let mut swarm = swarm::build_swarm(&config)?;
        for address in &config.listen {
            swarm
                .listen_on(address.clone())
                .map_err(|e| NetError::Listen {
                    address: address.to_string(),
                    source: Box::new(e),
                })?;
        }
        let mut transport = Libp2pTransport::new(
            swarm,
            StreamSlots::new(
                config.max_inbound_streams,
                config.max_inbound_streams_per_peer,
            ),
            config.request_read_timeout,
        );
        #[cfg(feature = "metrics")]
        {
            transport.metrics = config.metrics.as_ref().map(|registry| {
                let mut registry = registry
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                libp2p::metrics::Metrics::new(&mut registry)
            });
        }
        #[cfg(feature = "nat")]
        {
            transport.advertise_listen = config.relay_server;
        }
        // Wait until every listener reports an address, so callers can hand it out.
        let mut listening = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while listening.len() < config.listen.len() {
            let event = tokio::time::timeout_at(deadline, transport.swarm_mut().select_next_some())
                .await
                .map_err(|_| NetError::Transport("listeners did not come up within 10 s".into()))?;
            match &event {
                SwarmEvent::NewListenAddr { address, .. } => listening.push(address.clone()),
                SwarmEvent::ListenerError { error, .. }
                | SwarmEvent::ListenerClosed {
                    reason: Err(error), ..
                } => {
                    return Err(NetError::Transport(format!("listener failed: {error}")));
                }
                _ => {}
            }
            transport.on_swarm_event(event);
        }
        // Those addresses are known now; the queued events about them are not needed.
        transport.forget_listening();
        Ok(crate::driver::spawn(&config.node, transport, listening))
    }
}
