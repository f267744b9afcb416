//! NAT traversal (feature `nat`): two nodes that cannot reach each other directly talk
//! through a third node's circuit relay, on loopback.

use std::time::Duration;

use causality_net::{Keypair, Libp2pConfig, Libp2pNetwork, Multiaddr, Network, NetworkEvent};
use futures::StreamExt as _;

const PATIENCE: Duration = Duration::from_secs(20);

async fn node(index: u64, relay_server: bool) -> Network {
    let mut config = Libp2pConfig::new(Keypair::from_index(index));
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.relay_server = relay_server;
    Libp2pNetwork::start(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_talk_through_a_relay_circuit() {
    let relay = node(301, true).await;
    let (a, b) = (node(302, false).await, node(303, false).await);
    let relay_addr = relay.listen_addresses()[0].clone();

    // A reserves a slot on the relay and listens through it.
    let circuit: Multiaddr = format!("{relay_addr}/p2p/{}/p2p-circuit", relay.local_peer_id())
        .parse()
        .unwrap();
    a.listen_on(circuit.clone()).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !a
        .listen_addresses()
        .iter()
        .any(|addr| addr.to_string().contains("p2p-circuit"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no relay reservation: {:?}",
            a.listen_addresses()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // B knows only the circuit address of A.
    let mut events = b.events();
    let via_relay: Multiaddr = format!("{circuit}/p2p/{}", a.local_peer_id())
        .parse()
        .unwrap();
    b.dial(via_relay).await.unwrap();
    let ap = a.local_peer_id();
    tokio::time::timeout(PATIENCE, async {
        while let Some(event) = events.next().await {
            if matches!(event, NetworkEvent::PeerConnected { peer, .. } if peer == ap) {
                return;
            }
        }
    })
    .await
    .expect("handshake over the relay circuit");

    let mut requests = a.serve("/causality/echo/0.1.0").await.unwrap();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let body = request.body.clone();
            request.respond(body);
        }
    });
    let answer = b
        .request(ap, "/causality/echo/0.1.0", b"through the relay".to_vec())
        .await
        .unwrap();
    assert_eq!(answer, b"through the relay");
}
