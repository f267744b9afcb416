//! Discovery on the in-memory network, under virtual time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use causality_discovery::{Config, Discovery, PROTOCOL, PeerRecord, proto::v1 as pb};
use causality_hash::ContentId;
use causality_net::{MemoryNetwork, Multiaddr, NetError, Network, PeerId, RefusalReason};
use prost::Message as _;

fn config(bootstrap: Vec<Multiaddr>, seed: u64) -> Config {
    Config {
        bootstrap,
        refresh_interval: Duration::from_secs(2),
        record_ttl: Duration::from_secs(40),
        seed,
        ..Config::default()
    }
}

/// `n` nodes: the first three bootstrap from each other, the rest from one of them.
async fn cluster(sim: &MemoryNetwork, n: usize) -> Vec<(Network, Discovery)> {
    let nets: Vec<Network> = (0..n).map(|_| sim.add_node()).collect();
    let seeds: Vec<Multiaddr> = nets[..3]
        .iter()
        .map(|n| n.listen_addresses()[0].clone())
        .collect();
    let mut nodes = Vec::new();
    for (i, net) in nets.into_iter().enumerate() {
        let bootstrap = if i < 3 {
            vec![seeds[(i + 1) % 3].clone()]
        } else {
            vec![seeds[i % 3].clone()]
        };
        let discovery = Discovery::start(net.clone(), config(bootstrap, i as u64))
            .await
            .unwrap();
        nodes.push((net, discovery));
    }
    nodes
}

fn agreed(nodes: &[(Network, Discovery)], size: usize) -> bool {
    let first = nodes[0].1.members();
    first.len() == size && nodes.iter().all(|(_, d)| d.members() == first)
}

/// Steps virtual time a second at a time until `done`; returns the time taken.
async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = tokio::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "not converged within {limit:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    start.elapsed()
}

/// Winner per key for each distinct view among `nodes`; nodes with equal views agree.
fn winners(nodes: &[(Network, Discovery)], keys: &[ContentId]) -> Vec<Vec<PeerId>> {
    let mut by_view: BTreeMap<Vec<PeerId>, Vec<PeerId>> = BTreeMap::new();
    for (_, d) in nodes {
        by_view.entry(d.members()).or_insert_with(|| {
            keys.iter()
                .map(|k| d.responsible_peers(k.as_bytes(), 1, |_| true)[0].peer)
                .collect()
        });
    }
    by_view.into_values().collect()
}

fn agreement(nodes: &[(Network, Discovery)], keys: &[ContentId]) -> f64 {
    let views = winners(nodes, keys);
    let agreeing = (0..keys.len())
        .filter(|&i| views.iter().all(|w| w[i] == views[0][i]))
        .count();
    agreeing as f64 / keys.len() as f64
}

#[tokio::test(start_paused = true)]
async fn hundred_nodes_converge_then_survive_churn() {
    let sim = MemoryNetwork::new(1);
    let mut nodes = cluster(&sim, 100).await;
    let took = until(Duration::from_secs(300), || agreed(&nodes, 100)).await;
    println!("100 nodes from 3 bootstrap peers: identical full views after {took:?} (virtual)");

    let keys: Vec<ContentId> = (0u32..10_000)
        .map(|i| ContentId::of(&i.to_le_bytes()))
        .collect();
    let before = winners(&nodes, &keys).remove(0);

    // 20% leave (their tasks and connections end), 10% join.
    let left: BTreeSet<PeerId> = nodes
        .drain(80..)
        .map(|(net, _)| net.local_peer_id())
        .collect();
    let seed = nodes[0].0.listen_addresses()[0].clone();
    for i in 0..10 {
        let net = sim.add_node();
        let discovery = Discovery::start(net.clone(), config(vec![seed.clone()], 1000 + i))
            .await
            .unwrap();
        nodes.push((net, discovery));
    }
    let joined: BTreeSet<PeerId> = nodes[80..].iter().map(|(n, _)| n.local_peer_id()).collect();
    let start = tokio::time::Instant::now();
    let mut timeline = Vec::new();
    while !agreed(&nodes, 90) {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no agreement after churn"
        );
        timeline.push((start.elapsed().as_secs(), agreement(&nodes, &keys)));
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    timeline.push((start.elapsed().as_secs(), agreement(&nodes, &keys)));
    println!(
        "agreement on responsible_peers over 10,000 keys after churn (s, fraction): {timeline:?}"
    );
    assert!(
        nodes
            .iter()
            .all(|(_, d)| d.members().iter().all(|p| !left.contains(p)))
    );

    let after = winners(&nodes, &keys).remove(0);
    let owned_by_leavers =
        before.iter().filter(|b| left.contains(b)).count() as f64 / keys.len() as f64;
    let won_by_joiners =
        after.iter().filter(|a| joined.contains(a)).count() as f64 / keys.len() as f64;
    println!(
        "keys owned by leavers before: {owned_by_leavers:.4}; won by joiners after: {won_by_joiners:.4}"
    );
    let moved =
        before.iter().zip(&after).filter(|(b, a)| b != a).count() as f64 / keys.len() as f64;
    // A key keeps its owner exactly when, among the 100 old and 10 new peers, its top
    // scorer is one of the 80 that stayed: the minimum fraction that must move is
    // 1 - 80/110.
    let expected = 1.0 - 80.0 / 110.0;
    println!("keys moved: {moved:.4}; theoretical minimum {expected:.4}");
    assert!(
        (moved - expected).abs() <= 0.05 * expected,
        "moved {moved}, expected {expected}"
    );
    // Every key that moved had to: its old owner left, or a newcomer now wins it.
    for (b, a) in before.iter().zip(&after) {
        if b != a {
            assert!(left.contains(b) || joined.contains(a));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn partition_splits_views_and_healing_merges_them() {
    let sim = MemoryNetwork::new(2);
    let nodes = cluster(&sim, 20).await;
    until(Duration::from_secs(200), || agreed(&nodes, 20)).await;
    let ids: Vec<PeerId> = nodes.iter().map(|(n, _)| n.local_peer_id()).collect();
    sim.partition(&[ids[..10].to_vec(), ids[10..].to_vec()]);
    // Records of the other half are no longer refreshed and expire.
    until(Duration::from_secs(200), || {
        agreed(&nodes[..10], 10) && agreed(&nodes[10..], 10)
    })
    .await;
    sim.heal();
    let took = until(Duration::from_secs(200), || agreed(&nodes, 20)).await;
    println!("views re-merged {took:?} after the partition healed");
}

#[tokio::test(start_paused = true)]
async fn a_provided_content_id_is_found_by_every_node() {
    let sim = MemoryNetwork::new(3);
    let nodes = cluster(&sim, 30).await;
    until(Duration::from_secs(200), || agreed(&nodes, 30)).await;
    let id = ContentId::of(b"verification key 42");
    let accepted = nodes[5].1.provide(id).await.unwrap();
    assert_eq!(accepted, 3);
    for (net, d) in &nodes {
        let providers = d.find_providers(id).await.unwrap();
        assert_eq!(
            providers.iter().map(|r| r.peer).collect::<Vec<_>>(),
            vec![nodes[5].0.local_peer_id()],
            "lookup from {}",
            net.local_peer_id().short()
        );
    }
    // Role filters narrow the rendezvous set.
    assert!(
        nodes[0]
            .1
            .responsible_peers(id.as_bytes(), 3, |r| r.has_role("prover"))
            .is_empty()
    );
}

fn exchange(records: Vec<pb::PeerRecord>) -> Vec<u8> {
    pb::Request {
        kind: Some(pb::request::Kind::Exchange(pb::Exchange { records })),
    }
    .encode_to_vec()
}

#[tokio::test(start_paused = true)]
async fn bad_records_are_refused_and_their_sender_penalized() {
    let sim = MemoryNetwork::new(4);
    let victim_net = sim.add_node();
    let victim = Discovery::start(victim_net.clone(), config(vec![], 1))
        .await
        .unwrap();
    let attacker = sim.add_node();
    attacker
        .dial(victim_net.listen_addresses()[0].clone())
        .await
        .unwrap();
    sim.settle().await;
    let vp = victim_net.local_peer_id();
    let ap = attacker.local_peer_id();
    let now = attacker.now_ms();
    let addr = attacker.listen_addresses();

    // A valid record at seq 10 is accepted.
    let good = PeerRecord::sign(&attacker, addr.clone(), vec![], 1000, 10, now + 60_000);
    attacker
        .request(vp, PROTOCOL, exchange(vec![good.to_proto()]))
        .await
        .unwrap();
    assert_eq!(
        victim.view().iter().find(|r| r.peer == ap).map(|r| r.seq),
        Some(10)
    );

    // Stale: seq 5 does not replace seq 10.
    let stale = PeerRecord::sign(
        &attacker,
        vec![],
        vec!["prover".into()],
        1000,
        5,
        now + 60_000,
    );
    attacker
        .request(vp, PROTOCOL, exchange(vec![stale.to_proto()]))
        .await
        .unwrap();
    assert_eq!(
        victim.view().iter().find(|r| r.peer == ap).map(|r| r.seq),
        Some(10)
    );

    // Expired: refused.
    let other = sim.add_node();
    let expired = PeerRecord::sign(&other, vec![], vec![], 1000, 1, now - 1);
    attacker
        .request(vp, PROTOCOL, exchange(vec![expired.to_proto()]))
        .await
        .unwrap();
    assert!(
        victim
            .view()
            .iter()
            .all(|r| r.peer != other.local_peer_id())
    );

    // Forged: a record of `other` with its signature corrupted.
    let mut forged = PeerRecord::sign(&other, vec![], vec![], 1000, 2, now + 60_000).to_proto();
    forged.roles.push("admin".into());
    attacker
        .request(vp, PROTOCOL, exchange(vec![forged]))
        .await
        .unwrap();
    assert!(
        victim
            .view()
            .iter()
            .all(|r| r.peer != other.local_peer_id())
    );
    let score = victim_net
        .peers()
        .iter()
        .find(|p| p.peer == ap)
        .map(|p| p.score)
        .unwrap();
    assert!(score < 0, "forgery not penalized: {score}");

    // 10,000 junk records: rate-limited, memory bounded, and the sender is banned.
    let junk: Vec<pb::PeerRecord> = (0..64u8)
        .map(|i| {
            let mut r = PeerRecord::sign(
                &other,
                vec![],
                vec![],
                1000,
                100 + u64::from(i),
                now + 60_000,
            )
            .to_proto();
            r.signature[0] ^= 0xff;
            r
        })
        .collect();
    let mut refused = 0;
    let mut sent = 0;
    while sent < 10_000 {
        match attacker.request(vp, PROTOCOL, exchange(junk.clone())).await {
            Ok(_) => {}
            Err(NetError::Refused {
                reason: RefusalReason::RateLimited | RefusalReason::Unauthorized,
                ..
            }) => refused += 1,
            Err(NetError::NotConnected(_)) => break,
            Err(e) => panic!("{e}"),
        }
        sent += 64;
    }
    assert!(
        refused > 0 || victim_net.is_banned(&ap),
        "the flood was neither limited nor banned"
    );
    assert!(victim_net.is_banned(&ap), "the junk sender was not banned");
    assert_eq!(victim.view().len(), 1, "junk entered the view");
}
