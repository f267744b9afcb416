//! The in-memory network as a simulator: many nodes, link properties, partitions, and
//! reproducibility.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use causality_net::{LinkConfig, MemoryNetwork, Network, Topic};
use futures::StreamExt as _;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn topic() -> Topic {
    "register/update/sim".parse().unwrap()
}

/// `n` nodes, each dialing `degree` random others (seeded).
async fn mesh(sim: &MemoryNetwork, n: usize, degree: usize, seed: u64) -> Vec<Network> {
    let nodes: Vec<Network> = (0..n).map(|_| sim.add_node()).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    for (i, node) in nodes.iter().enumerate() {
        // A ring keeps the graph connected; random chords make it an expander.
        node.dial(nodes[(i + 1) % n].listen_addresses()[0].clone())
            .await
            .unwrap();
        for _ in 1..degree {
            let j = rng.gen_range(0..n);
            if j != i {
                node.dial(nodes[j].listen_addresses()[0].clone())
                    .await
                    .unwrap();
            }
        }
    }
    sim.settle().await;
    nodes
}

/// Drains what a subscription holds right now.
fn drain(sub: &mut causality_net::Subscription) -> Vec<causality_net::Message> {
    std::iter::from_fn(|| sub.try_next()).collect()
}

#[tokio::test(start_paused = true)]
async fn hundred_nodes_receive_every_message_exactly_once() {
    let sim = MemoryNetwork::new(1);
    sim.set_default_link(LinkConfig {
        latency: Duration::from_millis(20),
        ..LinkConfig::default()
    });
    let nodes = mesh(&sim, 100, 4, 1).await;
    let mut subs = Vec::new();
    for node in &nodes {
        subs.push(node.subscribe(&topic()).await.unwrap());
    }
    sim.settle().await;
    let mut published = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate().step_by(10) {
        let id = node.publish(&topic(), "sim", vec![i as u8]).await.unwrap();
        published.insert(id, node.local_peer_id());
    }
    sim.settle().await;
    for (node, sub) in nodes.iter().zip(&mut subs) {
        let got = drain(sub);
        let ids: BTreeSet<_> = got.iter().map(|m| m.id).collect();
        assert_eq!(ids.len(), got.len(), "a message was delivered twice");
        let want: BTreeSet<_> = published
            .iter()
            .filter(|(_, sender)| **sender != node.local_peer_id())
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(
            ids,
            want,
            "node {} missed messages",
            node.local_peer_id().short()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_thousand_nodes_fit_in_one_process() {
    let sim = MemoryNetwork::new(2);
    let nodes = mesh(&sim, 1000, 3, 2).await;
    let mut subs = Vec::new();
    for node in &nodes {
        subs.push(node.subscribe(&topic()).await.unwrap());
    }
    sim.settle().await;
    nodes[0]
        .publish(&topic(), "sim", b"hello".to_vec())
        .await
        .unwrap();
    sim.settle().await;
    let reached = subs
        .iter_mut()
        .skip(1)
        .map(drain)
        .filter(|got| got.len() == 1)
        .count();
    assert_eq!(reached, 999);
}

#[tokio::test(start_paused = true)]
async fn latency_bandwidth_and_loss_are_applied() {
    let sim = MemoryNetwork::new(3);
    let (a, b) = (sim.add_node(), sim.add_node());
    a.dial(b.listen_addresses()[0].clone()).await.unwrap();
    sim.set_link(
        a.local_peer_id(),
        b.local_peer_id(),
        LinkConfig {
            latency: Duration::from_millis(40),
            jitter: Duration::ZERO,
            loss: 0.0,
            bandwidth: Some(1_000_000),
        },
    );
    let mut sub = b.subscribe(&topic()).await.unwrap();
    sim.settle().await;

    let start = tokio::time::Instant::now();
    a.publish(&topic(), "sim", vec![0; 100]).await.unwrap();
    sub.next().await.unwrap();
    let small = start.elapsed();
    assert!(
        small >= Duration::from_millis(40) && small < Duration::from_millis(42),
        "{small:?}"
    );

    // 50 KB at 1 MB/s: 50 ms on the wire plus 40 ms latency.
    let start = tokio::time::Instant::now();
    a.publish(&topic(), "sim", vec![0; 50_000]).await.unwrap();
    sub.next().await.unwrap();
    let large = start.elapsed();
    assert!(
        large >= Duration::from_millis(90) && large < Duration::from_millis(92),
        "{large:?}"
    );

    // Total loss drops gossip; requests (a reliable stream) still work.
    sim.set_link(
        a.local_peer_id(),
        b.local_peer_id(),
        LinkConfig {
            loss: 1.0,
            ..LinkConfig::default()
        },
    );
    a.publish(&topic(), "sim", b"lost".to_vec()).await.unwrap();
    sim.settle().await;
    assert!(drain(&mut sub).is_empty());
    assert!(sim.stats().dropped >= 1);
}

#[tokio::test(start_paused = true)]
async fn partitions_split_and_heal() {
    let sim = MemoryNetwork::new(4);
    let nodes = mesh(&sim, 10, 3, 4).await;
    let mut subs = Vec::new();
    for node in &nodes {
        subs.push(node.subscribe(&topic()).await.unwrap());
    }
    sim.settle().await;
    let (left, right): (Vec<_>, Vec<_>) = nodes
        .iter()
        .map(Network::local_peer_id)
        .enumerate()
        .partition(|(i, _)| *i < 5);
    sim.partition(&[
        left.into_iter().map(|(_, p)| p).collect(),
        right.into_iter().map(|(_, p)| p).collect(),
    ]);
    nodes[0]
        .publish(&topic(), "sim", b"split".to_vec())
        .await
        .unwrap();
    sim.settle().await;
    for (i, sub) in subs.iter_mut().enumerate().skip(1) {
        let got = drain(sub).len();
        if i >= 5 {
            assert_eq!(got, 0, "node {i} across the partition received it");
        }
    }
    sim.heal();
    nodes[0]
        .publish(&topic(), "sim", b"healed".to_vec())
        .await
        .unwrap();
    sim.settle().await;
    for sub in subs.iter_mut().skip(1) {
        assert_eq!(drain(sub).len(), 1);
    }
}

async fn scenario(seed: u64) -> (causality_net::SimStats, Vec<Vec<u8>>) {
    let sim = MemoryNetwork::new(seed);
    sim.set_default_link(LinkConfig {
        latency: Duration::from_millis(10),
        jitter: Duration::from_millis(15),
        loss: 0.05,
        bandwidth: None,
    });
    let nodes = mesh(&sim, 20, 3, seed).await;
    let mut sub = nodes[19].subscribe(&topic()).await.unwrap();
    let mut others = Vec::new();
    for node in &nodes[..19] {
        others.push(node.subscribe(&topic()).await.unwrap());
    }
    sim.settle().await;
    for (i, node) in nodes.iter().take(10).enumerate() {
        node.publish(&topic(), "sim", vec![i as u8]).await.unwrap();
    }
    sim.settle().await;
    (
        sim.stats(),
        drain(&mut sub).into_iter().map(|m| m.payload).collect(),
    )
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_run() {
    let first = scenario(9).await;
    let second = scenario(9).await;
    assert_eq!(first, second);
    assert!(first.0.frames > 0);
}

/// Gossip travels over a bounded mesh, as gossipsub's does: with 100 nodes of about 24
/// connections each, every node still receives every message exactly once, while the
/// copies each node receives are bounded by the mesh degree (D = 6, at most D_high = 12),
/// not by the connections (flooding sends one copy per subscribed neighbour, ~23).
#[tokio::test(start_paused = true)]
async fn gossip_uses_a_bounded_mesh_not_flooding() {
    let sim = MemoryNetwork::new(5);
    sim.set_default_link(LinkConfig {
        latency: Duration::from_millis(20),
        ..LinkConfig::default()
    });
    let nodes = mesh(&sim, 100, 12, 5).await;
    let mut subs = Vec::new();
    for node in &nodes {
        subs.push(node.subscribe(&topic()).await.unwrap());
    }
    // A few heartbeats so the meshes form.
    tokio::time::sleep(Duration::from_secs(5)).await;
    sim.settle().await;
    let before = sim.stats();
    let messages = 20;
    for (i, node) in nodes.iter().enumerate().take(messages) {
        node.publish(&topic(), "sim", vec![i as u8; 64])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    sim.settle().await;
    for (i, sub) in subs.iter_mut().enumerate() {
        let got = drain(sub);
        let from_others = messages - usize::from(i < messages);
        assert_eq!(got.len(), from_others, "node {i} got every message once");
    }
    let copies = (sim.stats().gossip_frames - before.gossip_frames) as f64
        / (messages * (nodes.len() - 1)) as f64;
    println!("{copies:.2} gossip copies received per message per node");
    assert!(
        copies < 9.0,
        "{copies:.2} copies per message per node: not a bounded mesh"
    );
    assert!(copies >= 1.0);
}
