//! NAT traversal (feature `nat`): AutoNAT, circuit relay v2 client (and server on relay
//! nodes), and DCUtR to upgrade relayed connections to direct ones.

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
