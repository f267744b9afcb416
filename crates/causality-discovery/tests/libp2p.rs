//! Discovery over real sockets: five libp2p nodes on 127.0.0.1 join through one bootstrap
//! node, converge, and locate a provided content id.

use std::time::Duration;

use causality_discovery::{Config, Discovery};
use causality_hash::ContentId;
use causality_net::{Keypair, Libp2pConfig, Libp2pNetwork};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_and_provider_lookup_over_loopback() {
    let mut nodes = Vec::new();
    let mut bootstrap = Vec::new();
    for i in 0..5u64 {
        let mut config = Libp2pConfig::new(Keypair::from_index(500 + i));
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        let net = Libp2pNetwork::start(config).await.unwrap();
        if i == 0 {
            bootstrap = net.listen_addresses();
        }
        let discovery = Discovery::start(
            net,
            Config {
                bootstrap: if i == 0 { vec![] } else { bootstrap.clone() },
                refresh_interval: Duration::from_millis(200),
                seed: i,
                ..Config::default()
            },
        )
        .await
        .unwrap();
        nodes.push(discovery);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let first = nodes[0].members();
        if first.len() == 5 && nodes.iter().all(|d| d.members() == first) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "views did not converge: {:?}",
            nodes.iter().map(|d| d.members().len()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = ContentId::of(b"a register snapshot");
    assert!(nodes[3].provide(id).await.unwrap() >= 1);
    for node in &nodes {
        let providers = node.find_providers(id).await.unwrap();
        assert_eq!(
            providers.iter().map(|r| r.peer).collect::<Vec<_>>(),
            vec![nodes[3].local_peer_id()]
        );
    }
}
