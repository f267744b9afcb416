//! Blame the right peer: attacks in which an honest relay carries what an attacker signed.
//! A relay pays only for what it could have checked before forwarding; what depends on our
//! own state (the replay window, our clock, an originator's rate) is charged to the
//! originator or to nobody. Simulated networks, virtual time.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};

use causality_net::{
    Keypair, Limits, LinkConfig, MemoryNetwork, Network, NetworkEvent, NodeConfig, PeerId,
    SIMULATION_EPOCH_MS, TokioClock, Topic,
};

fn topic() -> Topic {
    "register/update/blame".parse().unwrap()
}

fn node(sim: &MemoryNetwork, index: u64, configure: impl FnOnce(&mut NodeConfig)) -> Network {
    let mut config = NodeConfig::new(Keypair::from_index(index));
    config.clock = Arc::new(TokioClock::new(SIMULATION_EPOCH_MS));
    configure(&mut config);
    sim.add_node_with(config)
}

async fn dial(a: &Network, b: &Network) {
    a.dial(b.listen_addresses()[0].clone()).await.unwrap();
}

fn link(ms: u64) -> LinkConfig {
    LinkConfig {
        latency: Duration::from_millis(ms),
        ..LinkConfig::default()
    }
}

/// A link that loses every gossip frame.
fn lossy() -> LinkConfig {
    LinkConfig {
        loss: 1.0,
        ..link(10)
    }
}

/// No honest node banned or penalized another.
fn assert_no_honest_peer_blamed(honest: &[Network]) {
    let ids: Vec<PeerId> = honest.iter().map(Network::local_peer_id).collect();
    for (i, node) in honest.iter().enumerate() {
        for other in &ids {
            assert!(
                !node.is_banned(other),
                "honest node {i} banned honest {}",
                other.short()
            );
        }
        for info in node.peers().iter().filter(|p| ids.contains(&p.peer)) {
            assert!(
                info.score >= 0,
                "honest node {i} penalized honest {} (score {})",
                info.peer.short(),
                info.score
            );
        }
    }
}

/// One key signs two payloads under each sequence number and sends one to each end of a
/// line of honest nodes (each version reaches its own half only). Where the halves meet,
/// honest relays deliver the other version. Before, each such delivery counted as a replay
/// against the relay (−10, rejected to gossip), and after ten sequence numbers the halves
/// banned each other. Now the equivocation is proven, the key banned everywhere through the
/// evidence, and no honest relay pays.
#[tokio::test(start_paused = true)]
async fn an_equivocator_splitting_the_network_is_banned_everywhere_and_no_relay_is_blamed() {
    let sim = MemoryNetwork::new(7);
    sim.set_default_link(link(10));
    let honest: Vec<Network> = (1..=6).map(|i| node(&sim, i, |_| {})).collect();
    let attacker = node(&sim, 66, |_| {});
    for pair in honest.windows(2) {
        dial(&pair[0], &pair[1]).await;
    }
    let (left, right) = (&honest[0], &honest[5]);
    // The halves meet over a slow link, so each has its version before the other's arrives.
    sim.set_link(
        honest[2].local_peer_id(),
        honest[3].local_peer_id(),
        link(1_000),
    );
    dial(&attacker, left).await;
    dial(&attacker, right).await;
    let mut subs = Vec::new();
    for node in &honest {
        subs.push(node.subscribe(&topic()).await.unwrap());
    }
    let mut events: Vec<_> = honest.iter().map(Network::events).collect();
    sim.settle().await;

    let physical = attacker.physical_topic(&topic());
    let k = attacker.local_peer_id();
    for seq in 1..=12u64 {
        let now = attacker.now_ms();
        let to_left = attacker.sign_own_envelope(&topic(), seq, now, b"left");
        let to_right = attacker.sign_own_envelope(&topic(), seq, now, b"right");
        // Each version reaches its own end only.
        sim.set_link(k, left.local_peer_id(), link(10));
        sim.set_link(k, right.local_peer_id(), lossy());
        attacker
            .publish_raw(physical.clone(), to_left)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        sim.set_link(k, left.local_peer_id(), lossy());
        sim.set_link(k, right.local_peer_id(), link(10));
        attacker
            .publish_raw(physical.clone(), to_right)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2_000)).await;
    }
    sim.settle().await;

    assert_no_honest_peer_blamed(&honest);
    for (i, node) in honest.iter().enumerate() {
        assert!(node.is_banned(&k), "node {i} did not ban the equivocator");
        let proven = node.equivocations();
        assert_eq!(proven.len(), 1, "node {i} holds one piece of evidence");
        assert_eq!(proven[0].sender(), k);
        // The evidence stands on its own: anyone can check it.
        let checked = causality_net::Equivocation::from_bytes(&proven[0].to_bytes()).unwrap();
        assert_eq!(checked, proven[0]);
        let seen: Vec<NetworkEvent> =
            std::iter::from_fn(|| events[i].next().now_or_never().flatten()).collect();
        assert!(
            seen.iter().any(
                |e| matches!(e, NetworkEvent::Equivocation { evidence } if evidence.sender() == k)
            ),
            "node {i} reported no equivocation"
        );
    }
    // The relays in the middle, never connected to the attacker, caught it themselves.
    let caught_in_the_middle: u64 = honest[1..5]
        .iter()
        .map(|n| {
            n.metrics()
                .rejected
                .get("equivocation")
                .copied()
                .unwrap_or(0)
        })
        .sum();
    assert!(
        caught_in_the_middle >= 1,
        "the halves never met through honest relays: {:?}",
        honest
            .iter()
            .map(|n| n.metrics().rejected)
            .collect::<Vec<_>>()
    );
}

/// A sender whose timestamps are within the bound for the relay but beyond it for us (our
/// clock is ahead): before, every message cost the relay 5 points and the relay was banned;
/// now the originator pays and the relay keeps its standing.
#[tokio::test(start_paused = true)]
async fn a_timestamp_beyond_our_bound_is_charged_to_its_originator_not_the_relay() {
    let sim = MemoryNetwork::new(8);
    let originator = node(&sim, 1, |_| {});
    let relay = node(&sim, 2, |_| {});
    // Twenty seconds ahead of the others.
    let victim = node(&sim, 3, |c| {
        c.clock = Arc::new(TokioClock::new(SIMULATION_EPOCH_MS + 20_000));
    });
    dial(&originator, &relay).await;
    dial(&relay, &victim).await;
    let _relay_sub = relay.subscribe(&topic()).await.unwrap();
    let _victim_sub = victim.subscribe(&topic()).await.unwrap();
    sim.settle().await;

    let physical = originator.physical_topic(&topic());
    for seq in 1..=30u64 {
        // Fifteen seconds behind: fine for the relay, 35 s behind the victim's clock.
        let stamp = originator.now_ms() - 15_000;
        let envelope = originator.sign_own_envelope(&topic(), seq, stamp, b"late");
        originator
            .publish_raw(physical.clone(), envelope)
            .await
            .unwrap();
    }
    sim.settle().await;

    // Judged for its clock until the originator's penalties ban it (20 × 5 points); what
    // follows is refused as coming from a banned key.
    let rejected = victim.metrics().rejected;
    assert_eq!(rejected.get("clock_skew"), Some(&20));
    assert_eq!(rejected.get("banned"), Some(&10));
    assert_eq!(relay.metrics().accepted, 30, "the relay accepted them all");
    assert_no_honest_peer_blamed(&[relay.clone(), victim.clone()]);
    assert!(
        victim.is_banned(&originator.local_peer_id()),
        "the originator pays for its clock"
    );
}

/// A relay forwarding many originators, each within its own rate: before, the victim
/// counted the rate per relay, penalized the relay for every message over 40 and banned it;
/// now the rate is per originator and everything arrives.
#[tokio::test(start_paused = true)]
async fn a_relay_of_many_originators_is_not_rate_limited_for_them() {
    let sim = MemoryNetwork::new(9);
    let relay = node(&sim, 100, |_| {});
    let victim = node(&sim, 101, |c| {
        c.limits = Limits::builder().messages(20, 40).build().unwrap();
    });
    dial(&relay, &victim).await;
    let originators: Vec<Network> = (1..=10).map(|i| node(&sim, i, |_| {})).collect();
    for o in &originators {
        dial(o, &relay).await;
    }
    let _relay_sub = relay.subscribe(&topic()).await.unwrap();
    let mut victim_sub = victim.subscribe(&topic()).await.unwrap();
    sim.settle().await;

    for o in &originators {
        for i in 0..30u8 {
            o.publish(&topic(), "test", vec![i]).await.unwrap();
        }
    }
    sim.settle().await;

    let received = std::iter::from_fn(|| victim_sub.try_next()).count();
    assert_eq!(received, 300, "every originator stayed within its rate");
    assert_no_honest_peer_blamed(&[relay.clone(), victim.clone()]);
    assert_eq!(victim.metrics().rejected.get("rate_limited"), None);
}

/// An originator over its own rate is limited and charged, through any relay; the relay is
/// not.
#[tokio::test(start_paused = true)]
async fn an_originator_over_its_rate_pays_through_a_relay() {
    let sim = MemoryNetwork::new(10);
    let flooder = node(&sim, 1, |_| {});
    let relay = node(&sim, 2, |_| {});
    let victim = node(&sim, 3, |c| {
        c.limits = Limits::builder().messages(20, 40).build().unwrap();
    });
    dial(&flooder, &relay).await;
    dial(&relay, &victim).await;
    let _relay_sub = relay.subscribe(&topic()).await.unwrap();
    let mut victim_sub = victim.subscribe(&topic()).await.unwrap();
    sim.settle().await;

    for i in 0..300u16 {
        flooder
            .publish(&topic(), "test", i.to_le_bytes().to_vec())
            .await
            .unwrap();
    }
    sim.settle().await;

    let received = std::iter::from_fn(|| victim_sub.try_next()).count();
    assert!(
        (40..=50).contains(&received),
        "the burst passes, the rest is dropped ({received})"
    );
    assert!(victim.is_banned(&flooder.local_peer_id()));
    assert_no_honest_peer_blamed(&[relay.clone(), victim.clone()]);
}
