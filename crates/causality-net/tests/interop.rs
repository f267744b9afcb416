//! A stock rust-libp2p peer — identify, ping and gossipsub with default settings, no
//! Causality code — connects to our node, identifies it, pings it and joins its gossip
//! topics in both directions.

use std::time::Duration;

use causality_net::{Keypair, Libp2pConfig, Libp2pNetwork, Topic, sign_envelope};
use futures::StreamExt as _;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{gossipsub, identify, noise, ping, tcp, yamux};

#[derive(NetworkBehaviour)]
struct Stock {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    gossipsub: gossipsub::Behaviour,
}

const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_libp2p_peer_connects_identifies_pings_and_gossips() {
    let ours = Libp2pNetwork::start(Libp2pConfig::new(Keypair::from_index(77)))
        .await
        .unwrap();
    let our_addr = ours
        .listen_addresses()
        .into_iter()
        .find(|a| a.to_string().contains("/tcp/"))
        .unwrap();

    // The stock peer's key, also usable to sign our envelope format.
    let stock_keys = Keypair::from_index(78);
    let identity = libp2p::identity::Keypair::ed25519_from_bytes(stock_keys.secret()).unwrap();
    let mut stock = libp2p::SwarmBuilder::with_existing_identity(identity)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| Stock {
            identify: identify::Behaviour::new(identify::Config::new(
                "/stock/1.0.0".into(),
                key.public(),
            )),
            ping: ping::Behaviour::new(
                ping::Config::new().with_interval(Duration::from_millis(200)),
            ),
            gossipsub: gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossipsub::Config::default(),
            )
            .unwrap(),
        })
        .unwrap()
        .build();

    let topic: Topic = "register/proof/vk-interop".parse().unwrap();
    let physical = gossipsub::IdentTopic::new(ours.physical_topic(&topic).as_str());
    stock
        .behaviour_mut()
        .gossipsub
        .subscribe(&physical)
        .unwrap();
    let mut our_sub = ours.subscribe(&topic).await.unwrap();
    stock.dial(our_addr).unwrap();

    let (mut identified, mut pinged, mut received, mut sent) = (false, false, false, false);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !(identified && pinged && received && sent) {
        let event = tokio::select! {
            event = stock.select_next_some() => event,
            // Our node publishes until the stock peer has one; it is then the stock
            // peer's turn to publish to us.
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if !received {
                    ours.publish(&topic, "test.Announce", b"from causality".to_vec()).await.unwrap();
                } else if !sent {
                    let envelope = sign_envelope(&stock_keys, &topic, 1, ours.now_ms(), b"from stock");
                    let _ = stock.behaviour_mut().gossipsub.publish(physical.clone(), envelope);
                }
                if let Some(message) = our_sub.try_next() {
                    assert_eq!(message.sender, stock_keys.peer_id());
                    assert_eq!(message.payload, b"from stock");
                    sent = true;
                }
                assert!(tokio::time::Instant::now() < deadline, "identified {identified}, pinged {pinged}, received {received}, sent {sent}");
                continue;
            }
        };
        match event {
            SwarmEvent::Behaviour(StockEvent::Identify(identify::Event::Received {
                info, ..
            })) => {
                assert!(
                    info.agent_version.starts_with("causality-net/"),
                    "{}",
                    info.agent_version
                );
                assert!(
                    info.protocols
                        .iter()
                        .any(|p| p.as_ref() == "/meshsub/1.1.0")
                );
                identified = true;
            }
            SwarmEvent::Behaviour(StockEvent::Ping(ping::Event { result: Ok(_), .. })) => {
                pinged = true;
            }
            SwarmEvent::Behaviour(StockEvent::Gossipsub(gossipsub::Event::Message {
                message,
                ..
            })) => {
                // Our wire format, readable by anyone with the schema.
                let envelope = <causality_net::proto::v1::Envelope as prost::Message>::decode(
                    message.data.as_slice(),
                )
                .unwrap();
                assert_eq!(envelope.topic, topic.to_string());
                assert_eq!(envelope.payload, b"from causality");
                received = true;
            }
            _ => {}
        }
    }
    assert!(
        ours.peers().iter().any(|p| p.peer == stock_keys.peer_id()),
        "the stock peer stays connected"
    );
}
