//! Twenty nodes join through one bootstrap node, converge on one view, and one of them
//! finds who provides a piece of content — by rendezvous hashing, no DHT walk. The nodes
//! run over the in-memory network on virtual time, so this takes a moment of wall time.
//! `cargo run -p causality-discovery --example find_a_provider`.

use std::time::Duration;

use causality_discovery::{Config, Discovery};
use causality_hash::ContentId;
use causality_net::MemoryNetwork;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?
        .block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let hub = MemoryNetwork::new(7);
    let networks: Vec<_> = (0..20).map(|_| hub.add_node()).collect();
    let bootstrap = networks[0].listen_addresses()[0].clone();
    let mut nodes = Vec::new();
    for (i, network) in networks.iter().enumerate() {
        let config = Config {
            bootstrap: if i == 0 {
                vec![]
            } else {
                vec![bootstrap.clone()]
            },
            refresh_interval: Duration::from_secs(2),
            seed: i as u64,
            ..Config::default()
        };
        nodes.push(Discovery::start(network.clone(), config).await?);
    }
    let started = tokio::time::Instant::now();
    while !nodes.iter().all(|d| d.members().len() == nodes.len()) {
        if started.elapsed() > Duration::from_secs(120) {
            return Err("the view did not converge".into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "{} nodes agree on the membership after {:.1} s (virtual)",
        nodes.len(),
        started.elapsed().as_secs_f64()
    );

    // Node 5 provides some content: it tells the content's rendezvous peers.
    let content = ContentId::of(b"a proof everyone wants");
    let told = nodes[5].provide(content).await?;
    println!(
        "node 5 provides {}: {told} rendezvous peers recorded it",
        content.short()
    );

    // Node 17 asks the same rendezvous peers (every node computes the same ones).
    let providers = nodes[17].find_providers(content).await?;
    let found: Vec<_> = providers.iter().map(|r| r.peer).collect();
    assert!(found.contains(&nodes[5].local_peer_id()));
    println!(
        "node 17 found the provider {} (at {:?})",
        nodes[5].local_peer_id().short(),
        providers[0].addresses
    );
    Ok(())
}
