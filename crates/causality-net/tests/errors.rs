//! Errors name the operation that failed and keep the transport's reason as their source.

use std::error::Error as _;

use causality_net::{Keypair, Libp2pConfig, Libp2pNetwork, MemoryNetwork, NetError, PeerId};

#[tokio::test]
async fn a_failed_dial_keeps_its_cause() {
    let mut config = Libp2pConfig::new(Keypair::from_index(77));
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    let net = Libp2pNetwork::start(config).await.unwrap();
    // Nothing listens on a port we just bound and released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = net
        .dial(format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Dial { .. }), "{err:?}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    assert!(err.source().is_some(), "the transport's reason is kept");

    let err = net
        .listen_on("/ip4/203.0.113.1/tcp/0".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Listen { .. }), "{err:?}");
    assert!(err.source().is_some());
}

#[tokio::test(start_paused = true)]
async fn requests_to_strangers_and_bad_addresses_say_so() {
    let sim = MemoryNetwork::new(1);
    let a = sim.add_node();
    let stranger: PeerId = Keypair::from_index(999).peer_id();
    let err = a
        .request(stranger, "/causality/echo/0.1.0", vec![])
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetError::NotConnected(p) if p == stranger),
        "{err:?}"
    );
    let err = a.dial("/memory/4242".parse().unwrap()).await.unwrap_err();
    assert!(matches!(err, NetError::Address { .. }), "{err:?}");
    let err = a
        .request(stranger, "not a protocol id", vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Config(_)), "{err:?}");
}
