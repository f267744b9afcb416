//! Two nodes on loopback with the libp2p adapter (TCP, noise, yamux, gossipsub): a topic
//! message and a request-response round trip.
//! `cargo run -p causality-net --example two_nodes`.

use std::time::Duration;

use causality_net::{Keypair, Libp2pConfig, Libp2pNetwork, Network, Topic};
use futures::StreamExt as _;

const ECHO: &str = "/causality/echo/0.1.0";

async fn node() -> Result<Network, Box<dyn std::error::Error>> {
    let mut config = Libp2pConfig::new(Keypair::generate(&mut rand::rngs::OsRng));
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    config.heartbeat = Duration::from_millis(100);
    Ok(Libp2pNetwork::start(config).await?)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (alice, bob) = (node().await?, node().await?);
    println!(
        "alice {} listens on {}",
        alice.local_peer_id().short(),
        alice.listen_addresses()[0]
    );
    bob.dial(alice.listen_addresses()[0].clone()).await?;
    // Each side has the connection once it finished its handshake (versions and features
    // agreed); Alice's request below needs hers.
    let mut peers = alice.peer_set();
    tokio::time::timeout(
        Duration::from_secs(20),
        peers.wait_for(|set| {
            set.peers
                .iter()
                .any(|p| p.peer == bob.local_peer_id() && p.agreement.is_some())
        }),
    )
    .await??;
    println!(
        "bob {} connected (handshake: versions and features agreed)",
        bob.local_peer_id().short()
    );

    // Bob answers echo requests.
    let mut requests = bob.serve(ECHO).await?;
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let body = request.body.clone();
            request.respond(body);
        }
    });
    let answer = alice
        .request(bob.local_peer_id(), ECHO, b"ping".to_vec())
        .await?;
    println!("echo answered {:?}", String::from_utf8_lossy(&answer));

    // Alice subscribes; Bob publishes once Alice's subscription has reached him.
    let topic: Topic = "execution/result/example".parse()?;
    let mut messages = alice.subscribe(&topic).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !bob
        .topic_peers(&topic)
        .await?
        .contains(&alice.local_peer_id())
    {
        if tokio::time::Instant::now() > deadline {
            return Err("alice's subscription never reached bob".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bob.publish(&topic, "example.Text", b"hello over gossipsub".to_vec())
        .await?;
    let message = tokio::time::timeout(Duration::from_secs(20), messages.next())
        .await?
        .ok_or("subscription ended")?;
    println!(
        "alice received {:?} from {} (signed envelope, seq {})",
        String::from_utf8_lossy(&message.payload),
        message.sender.short(),
        message.seq
    );
    Ok(())
}
