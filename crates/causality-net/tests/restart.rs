//! What a node keeps across a restart: the sequence floor (so a clock that stepped back
//! does not make it a replayer in its peers' eyes) and its bans. Simulated network,
//! virtual time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};

use causality_net::{
    Keypair, MemoryNetwork, Network, NodeConfig, SIMULATION_EPOCH_MS, Subscription, TokioClock,
    Topic,
};

fn topic() -> Topic {
    "register/update/restart".parse().unwrap()
}

/// A node with key `index` whose clock reads `epoch_ms` now.
fn node(
    sim: &MemoryNetwork,
    index: u64,
    epoch_ms: u64,
    configure: impl FnOnce(&mut NodeConfig),
) -> Network {
    let mut config = NodeConfig::new(Keypair::from_index(index));
    config.clock = Arc::new(TokioClock::new(epoch_ms));
    configure(&mut config);
    sim.add_node_with(config)
}

async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// Publishes `payload` from `from` and says whether `subscription` receives it.
async fn delivered(from: &Network, subscription: &mut Subscription, payload: &[u8]) -> bool {
    from.publish(&topic(), "test.Text", payload.to_vec())
        .await
        .unwrap();
    settle().await;
    let mut got = false;
    while let Some(Some(message)) = subscription.next().now_or_never() {
        got |= message.payload == payload;
    }
    got
}

/// A node whose clock ran 20 s fast is corrected (the clock steps back) while it is down.
/// Its sequence numbers come from the clock, so after the restart they are below what its
/// peers remember: without a floor every message it sends is dropped as a replay until the
/// clock catches up; with the saved `next_seq` as the floor they are accepted at once.
#[tokio::test(start_paused = true)]
async fn a_restart_with_a_clock_stepped_back_stays_above_what_peers_remember() {
    let sim = MemoryNetwork::new(1);
    let receiver = node(&sim, 1, SIMULATION_EPOCH_MS, |_| {});
    let mut subscription = receiver.subscribe(&topic()).await.unwrap();

    let fast = node(&sim, 2, SIMULATION_EPOCH_MS + 20_000, |_| {});
    fast.dial(receiver.listen_addresses()[0].clone())
        .await
        .unwrap();
    settle().await;
    assert!(delivered(&fast, &mut subscription, b"before the restart").await);
    let saved = fast.next_seq();
    drop(fast);
    settle().await;

    // Restarted on a corrected clock, no floor: its peers take it for a replayer.
    let corrected = node(&sim, 2, SIMULATION_EPOCH_MS + 4_000, |_| {});
    corrected
        .dial(receiver.listen_addresses()[0].clone())
        .await
        .unwrap();
    settle().await;
    assert!(
        corrected.next_seq() < saved,
        "the clock-derived sequence number went back"
    );
    assert!(
        !delivered(
            &corrected,
            &mut subscription,
            b"after the restart, no floor"
        )
        .await,
        "a sequence number below the remembered window is a replay"
    );
    drop(corrected);
    settle().await;

    // Restarted with the saved sequence number as the floor: accepted.
    let restored = node(&sim, 2, SIMULATION_EPOCH_MS + 8_000, |c| {
        c.seq_floor = saved;
    });
    assert_eq!(restored.next_seq(), saved);
    restored
        .dial(receiver.listen_addresses()[0].clone())
        .await
        .unwrap();
    settle().await;
    assert!(
        delivered(
            &restored,
            &mut subscription,
            b"after the restart, with a floor"
        )
        .await
    );
    assert!(!receiver.is_banned(&restored.local_peer_id()));
}

/// Bans a node reported are restored by passing them back: the banned peer cannot connect
/// to the restarted node, and an expired ban is not restored.
#[tokio::test(start_paused = true)]
async fn bans_survive_a_restart_and_expired_ones_do_not() {
    let sim = MemoryNetwork::new(2);
    let guard = node(&sim, 1, SIMULATION_EPOCH_MS, |_| {});
    let villain = node(&sim, 2, SIMULATION_EPOCH_MS, |_| {});
    let reformed = Keypair::from_index(3).peer_id();
    villain
        .dial(guard.listen_addresses()[0].clone())
        .await
        .unwrap();
    settle().await;
    guard
        .penalize(villain.local_peer_id(), 1000, "forged record")
        .await
        .unwrap();
    settle().await;
    assert!(guard.is_banned(&villain.local_peer_id()));
    let mut bans = guard.bans();
    assert_eq!(
        bans.keys().copied().collect::<Vec<_>>(),
        vec![villain.local_peer_id()]
    );
    // One ban that ended while the node was down.
    bans.insert(reformed, SIMULATION_EPOCH_MS + 1_000);
    drop(guard);
    settle().await;

    let restarted = node(&sim, 1, SIMULATION_EPOCH_MS + 10_000, |c| {
        c.bans = bans.clone();
    });
    assert!(restarted.is_banned(&villain.local_peer_id()));
    assert!(!restarted.is_banned(&reformed));
    assert_eq!(
        restarted.bans(),
        bans.into_iter()
            .filter(|(p, _)| *p != reformed)
            .collect::<BTreeMap<_, _>>()
    );
    let _ = villain.dial(restarted.listen_addresses()[0].clone()).await;
    settle().await;
    assert!(
        !restarted
            .peers()
            .iter()
            .any(|p| p.peer == villain.local_peer_id()),
        "a restored ban refuses the banned peer"
    );
}
