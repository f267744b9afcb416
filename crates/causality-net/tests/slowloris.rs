//! Slow loris on real sockets: a stock libp2p peer opens hundreds of request streams, each
//! announcing a 4 MiB frame, and trickles one byte a second into every one. The node holds a
//! bounded share of streams for that peer (and allocates frames only as bytes arrive), so
//! its memory stays bounded and an honest peer's requests are still answered.

use std::time::Duration;

use causality_net::{Keypair, Libp2pConfig, Libp2pNetwork, Network};
use futures::{AsyncWriteExt as _, StreamExt as _};
use libp2p::swarm::SwarmEvent;
use libp2p::{StreamProtocol, noise, tcp, yamux};

const ECHO: &str = "/causality/echo/0.1.0";
/// Streams the attacker opens: more than the node's whole inbound budget (256).
const STREAMS: usize = 300;
/// The frame length each attacker stream announces (the protocol's default limit).
const ANNOUNCED: usize = 4 * 1024 * 1024;

/// Resident memory of this process (both nodes and the attacker), from /proc.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn tcp_address(network: &Network) -> libp2p::Multiaddr {
    network
        .listen_addresses()
        .into_iter()
        .find(|a| a.to_string().contains("/tcp/"))
        .expect("a TCP listen address")
}

fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_streams_hold_bounded_memory_and_honest_requests_are_served() {
    let victim = Libp2pNetwork::start(Libp2pConfig::new(Keypair::from_index(90)))
        .await
        .unwrap();
    let mut requests = victim.serve(ECHO).await.unwrap();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let body = request.body.clone();
            request.respond(body);
        }
    });
    let honest = Libp2pNetwork::start(Libp2pConfig::new(Keypair::from_index(91)))
        .await
        .unwrap();
    honest.dial(tcp_address(&victim)).await.unwrap();
    let answer = honest
        .request(victim.local_peer_id(), ECHO, b"warm-up".to_vec())
        .await
        .unwrap();
    assert_eq!(answer, b"warm-up");

    // The attacker: a stock libp2p peer with nothing but raw streams.
    let mut attacker = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let mut control = attacker.behaviour().new_control();
    attacker.dial(tcp_address(&victim)).unwrap();
    let target = loop {
        if let SwarmEvent::ConnectionEstablished { peer_id, .. } = attacker.select_next_some().await
        {
            break peer_id;
        }
    };
    tokio::spawn(async move {
        loop {
            attacker.select_next_some().await;
        }
    });

    let before = resident_bytes();
    let protocol = StreamProtocol::new(ECHO);
    let mut trickles = Vec::new();
    for _ in 0..STREAMS {
        let Ok(mut stream) = control.open_stream(target, protocol.clone()).await else {
            continue;
        };
        trickles.push(tokio::spawn(async move {
            if stream.write_all(&varint(ANNOUNCED)).await.is_err() {
                return;
            }
            let _ = stream.flush().await;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if stream.write_all(&[0u8]).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
            }
        }));
    }
    assert!(
        trickles.len() > 256,
        "the attacker opened {} streams",
        trickles.len()
    );

    // While every stream trickles, the honest peer's requests are answered.
    for i in 0..10u8 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let body = vec![i; 1000];
        let answer = honest
            .request(victim.local_peer_id(), ECHO, body.clone())
            .await
            .unwrap_or_else(|e| panic!("honest request {i} failed during the attack: {e}"));
        assert_eq!(answer, body);
    }
    let grown = resident_bytes().saturating_sub(before);
    let announced = (STREAMS * ANNOUNCED) as u64;
    println!("resident memory grew by {grown} bytes; the streams announced {announced}");
    assert!(
        grown < 64 * 1024 * 1024,
        "memory grew by {grown} bytes under {STREAMS} streams announcing {announced} bytes in all"
    );
    for trickle in trickles {
        trickle.abort();
    }
}
