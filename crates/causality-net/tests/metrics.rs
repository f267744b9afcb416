//! libp2p's metrics (feature `metrics`): with a registry configured, a node counts the bytes
//! of every connection by protocol stack and direction.

use std::sync::{Arc, Mutex};

use causality_net::{Keypair, Libp2pConfig, Libp2pNetwork, MetricsRegistry, Network};
use futures::StreamExt as _;

async fn node(index: u64, registry: Option<Arc<Mutex<MetricsRegistry>>>) -> Network {
    let mut config = Libp2pConfig::new(Keypair::from_index(index));
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.metrics = registry;
    Libp2pNetwork::start(config).await.unwrap()
}

/// `libp2p_bandwidth_bytes_total` by direction, summed over protocol stacks.
fn bandwidth(registry: &Mutex<MetricsRegistry>) -> (u64, u64) {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry.lock().unwrap()).unwrap();
    let (mut inbound, mut outbound) = (0, 0);
    for line in text
        .lines()
        .filter(|l| l.starts_with("libp2p_bandwidth_bytes_total{"))
    {
        let value: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        if line.contains("direction=\"Inbound\"") {
            inbound += value;
        } else if line.contains("direction=\"Outbound\"") {
            outbound += value;
        }
    }
    (inbound, outbound)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_is_counted_per_direction() {
    let registry = Arc::new(Mutex::new(MetricsRegistry::default()));
    let a = node(401, Some(registry.clone())).await;
    let b = node(402, None).await;
    assert_eq!(
        bandwidth(&registry),
        (0, 0),
        "nothing sent before a connection"
    );

    let mut requests = b.serve("/causality/echo/0.1.0").await.unwrap();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let body = request.body.clone();
            request.respond(body);
        }
    });
    a.dial(b.listen_addresses()[0].clone()).await.unwrap();
    let body = vec![0x5a; 64 * 1024];
    let answer = a
        .request(b.local_peer_id(), "/causality/echo/0.1.0", body.clone())
        .await
        .unwrap();
    assert_eq!(answer, body);

    // The request went out and its echo came back over the counted connection.
    let (inbound, outbound) = bandwidth(&registry);
    assert!(outbound >= body.len() as u64, "outbound {outbound}");
    assert!(inbound >= body.len() as u64, "inbound {inbound}");
}
