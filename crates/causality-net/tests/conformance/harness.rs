//! The two adapters behind one test interface.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use causality_net::{
    Keypair, Libp2pConfig, Libp2pNetwork, MemoryNetwork, Network, NetworkEvent, NodeConfig, PeerId,
    SIMULATION_EPOCH_MS, Security, TokioClock, Topic,
};
use futures::StreamExt;

/// How long any awaited condition may take: virtual time on the memory adapter, real time
/// (generous, for loaded CI machines) on libp2p.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

pub(crate) trait Harness {
    /// Whether time is virtual (tests may wait out protocol timeouts for free).
    const VIRTUAL_TIME: bool;

    /// A node configured by `configure`.
    async fn node_with(&self, configure: impl FnOnce(&mut NodeConfig)) -> Network;

    /// Waits until nothing is in flight (memory) — a no-op on real sockets.
    async fn quiesce(&self);

    async fn node(&self) -> Network {
        self.node_with(|_| {}).await
    }

    /// Dials `b` from `a` and waits until both have completed the handshake.
    async fn connect(&self, a: &Network, b: &Network) {
        let mut a_events = a.events();
        let mut b_events = b.events();
        a.dial(b.listen_addresses()[0].clone()).await.expect("dial");
        let (ap, bp) = (a.local_peer_id(), b.local_peer_id());
        wait_event(
            &mut a_events,
            |e| matches!(e, NetworkEvent::PeerConnected { peer, .. } if *peer == bp),
        )
        .await;
        wait_event(
            &mut b_events,
            |e| matches!(e, NetworkEvent::PeerConnected { peer, .. } if *peer == ap),
        )
        .await;
    }

    /// Waits until `publisher` knows `subscriber` subscribes to `topic`'s shard.
    async fn wait_subscribed(&self, publisher: &Network, topic: &Topic, subscriber: PeerId) {
        eventually("subscription to propagate", || async {
            publisher
                .topic_peers(topic)
                .await
                .unwrap()
                .contains(&subscriber)
        })
        .await;
        self.quiesce().await;
    }
}

/// Polls `condition` every 10 ms until it holds; panics after [`PATIENCE`].
pub(crate) async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for the first event matching `matches`.
pub(crate) async fn wait_event(
    events: &mut causality_net::EventStream,
    matches: impl Fn(&NetworkEvent) -> bool,
) -> NetworkEvent {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let event = events.next().await.expect("event stream ended");
            if matches(&event) {
                return event;
            }
        }
    })
    .await
    .expect("timed out waiting for an event")
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(1_000);

pub(crate) struct Memory {
    pub(crate) sim: MemoryNetwork,
}

impl Memory {
    pub(crate) fn new() -> Self {
        Self {
            sim: MemoryNetwork::new(42),
        }
    }
}

impl Harness for Memory {
    const VIRTUAL_TIME: bool = true;

    async fn node_with(&self, configure: impl FnOnce(&mut NodeConfig)) -> Network {
        let mut config = NodeConfig::new(Keypair::from_index(
            NEXT_KEY.fetch_add(1, Ordering::Relaxed),
        ));
        config.clock = Arc::new(TokioClock::new(SIMULATION_EPOCH_MS));
        configure(&mut config);
        self.sim.add_node_with(config)
    }

    async fn quiesce(&self) {
        self.sim.settle().await;
    }
}

pub(crate) struct Libp2p {
    listen: &'static str,
    security: Security,
}

impl Libp2p {
    pub(crate) fn tcp() -> Self {
        Self {
            listen: "/ip4/127.0.0.1/tcp/0",
            security: Security::Noise,
        }
    }

    pub(crate) fn tls() -> Self {
        Self {
            listen: "/ip4/127.0.0.1/tcp/0",
            security: Security::Tls,
        }
    }

    pub(crate) fn quic() -> Self {
        Self {
            listen: "/ip4/127.0.0.1/udp/0/quic-v1",
            security: Security::Noise,
        }
    }
}

impl Harness for Libp2p {
    const VIRTUAL_TIME: bool = false;

    async fn node_with(&self, configure: impl FnOnce(&mut NodeConfig)) -> Network {
        let mut config = Libp2pConfig::new(Keypair::from_index(
            NEXT_KEY.fetch_add(1, Ordering::Relaxed),
        ));
        config.listen = vec![self.listen.parse().unwrap()];
        config.security = self.security;
        config.heartbeat = Duration::from_millis(100);
        configure(&mut config.node);
        Libp2pNetwork::start(config).await.expect("node starts")
    }

    async fn quiesce(&self) {}
}
