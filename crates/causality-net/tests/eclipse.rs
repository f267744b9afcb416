//! No eclipse: inbound connections from a few hosts cannot take every slot, block our own
//! dials, or push out honest inbound peers. Simulated network with simulated addresses.

use std::net::{IpAddr, Ipv4Addr};

use causality_net::{Keypair, Limits, MemoryNetwork, Network, NodeConfig, PeerId};

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn connected(node: &Network) -> Vec<PeerId> {
    node.peers().iter().map(|p| p.peer).collect()
}

#[tokio::test(start_paused = true)]
async fn sybils_from_a_few_hosts_cannot_eclipse_a_node() {
    let sim = MemoryNetwork::new(11);
    let mut config = NodeConfig::new(Keypair::from_index(1));
    config.clock = std::sync::Arc::new(causality_net::TokioClock::new(
        causality_net::SIMULATION_EPOCH_MS,
    ));
    // 16 slots, 8 of them kept for our own dials; at most 4 inbound per address and 6 per
    // subnet.
    config.limits = Limits::builder()
        .max_peers(16)
        .connections(8, 4, 6)
        .build()
        .unwrap();
    let victim = sim.add_node_with(config);
    sim.set_ip(victim.local_peer_id(), ip(192, 0, 2, 1));

    // Forty Sybils on one host, then forty spread over one /24.
    let mut sybils = Vec::new();
    for i in 0..80u8 {
        let sybil = sim.add_node();
        let address = if i < 40 {
            ip(10, 0, 0, 5)
        } else {
            ip(10, 0, 1, i)
        };
        sim.set_ip(sybil.local_peer_id(), address);
        let _ = sybil.dial(victim.listen_addresses()[0].clone()).await;
        sybils.push(sybil);
    }
    sim.settle().await;
    let sybil_ids: Vec<PeerId> = sybils.iter().map(Network::local_peer_id).collect();
    let held = connected(&victim)
        .iter()
        .filter(|p| sybil_ids.contains(p))
        .count();
    assert!(
        held <= 8,
        "Sybils hold {held} slots, the inbound ones at most"
    );

    // Our own dials still get through: eight honest peers, each elsewhere.
    let mut chosen = Vec::new();
    for i in 0..8u8 {
        let honest = sim.add_node();
        sim.set_ip(honest.local_peer_id(), ip(198, 51, i, 7));
        victim
            .dial(honest.listen_addresses()[0].clone())
            .await
            .unwrap();
        chosen.push(honest);
    }
    // And honest peers dialing in from their own subnets displace Sybils from crowded ones.
    let mut inbound = Vec::new();
    for i in 0..3u8 {
        let honest = sim.add_node();
        sim.set_ip(honest.local_peer_id(), ip(203, 0, i, 9));
        honest
            .dial(victim.listen_addresses()[0].clone())
            .await
            .unwrap();
        inbound.push(honest);
    }
    sim.settle().await;

    let now = connected(&victim);
    for honest in chosen.iter().chain(&inbound) {
        assert!(
            now.contains(&honest.local_peer_id()),
            "an honest peer was kept out; connected: {} of which Sybils {}",
            now.len(),
            now.iter().filter(|p| sybil_ids.contains(p)).count()
        );
    }
    assert!(now.len() <= 16);
    assert!(victim.metrics().evictions >= 3);
}
