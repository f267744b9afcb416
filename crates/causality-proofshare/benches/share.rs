//! Proof sharing across 100 in-memory nodes (the gossipsub-shaped mesh, 20 ms links,
//! degree ~12, virtual time, deterministic): bytes each node receives per object as a ratio
//! to the object's size, announce-to-all-verified latency, and the latency of honest proofs
//! while one peer floods invalid ones. `cargo xtask bench proofshare` prints the figures
//! (lines starting with FIGURE); `cargo test --benches` runs a small, quick version.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use causality_hash::ContentId;
use causality_net::{LinkConfig, MemoryNetwork, Network};
use causality_proofshare::ANNOUNCEMENT_TYPE;
use causality_proofshare::{
    Announcement, Config, Event, MemoryStore, ProofMessage, ProofShare, ProofSystem,
    VerificationKey, Verifiers, groth16, proof_topic,
};
use rand::{Rng as _, SeedableRng as _};

const GROTH16: ProofSystem = ProofSystem::GROTH16_BN254;

struct Net {
    sim: MemoryNetwork,
    nets: Vec<Network>,
    nodes: Vec<ProofShare>,
    /// (node, proof, when verified)
    verified: Arc<Mutex<Vec<(usize, ContentId, tokio::time::Instant)>>>,
}

async fn build(n: usize, config: impl Fn(usize) -> Config) -> Net {
    let sim = MemoryNetwork::new(17);
    sim.set_default_link(LinkConfig {
        latency: Duration::from_millis(20),
        ..LinkConfig::default()
    });
    let nets: Vec<Network> = (0..n).map(|_| sim.add_node()).collect();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(17);
    for (i, net) in nets.iter().enumerate() {
        net.dial(nets[(i + 1) % n].listen_addresses()[0].clone())
            .await
            .unwrap();
        for _ in 0..5 {
            let j = rng.gen_range(0..n);
            if j != i {
                net.dial(nets[j].listen_addresses()[0].clone())
                    .await
                    .unwrap();
            }
        }
    }
    let verified = Arc::new(Mutex::new(Vec::new()));
    let mut nodes = Vec::new();
    for (i, net) in nets.iter().enumerate() {
        let node = ProofShare::start(
            net.clone(),
            config(i),
            Verifiers::standard(),
            Box::new(MemoryStore::new()),
        )
        .await
        .unwrap();
        let mut events = node.events();
        let verified = Arc::clone(&verified);
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                if let Event::Verified { proof, .. } = event {
                    verified
                        .lock()
                        .unwrap()
                        .push((i, proof.proof_id, tokio::time::Instant::now()));
                }
            }
        });
        nodes.push(node);
    }
    sim.settle().await;
    Net {
        sim,
        nets,
        nodes,
        verified,
    }
}

fn config(seed: usize, inline_max_bytes: usize) -> Config {
    Config {
        seed: [seed as u8; 32],
        inline_max_bytes,
        // Object traffic only; acks are measured on their own below.
        send_acks: false,
        ..Config::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Latencies from each announcement to each other node's verification.
fn latencies(net: &Net, sent: &[(ContentId, tokio::time::Instant)]) -> Vec<Duration> {
    let verified = net.verified.lock().unwrap();
    let mut out: Vec<Duration> = verified
        .iter()
        .filter_map(|(_, id, at)| {
            sent.iter()
                .find(|(s, _)| s == id)
                .map(|(_, t)| at.saturating_duration_since(*t))
        })
        .collect();
    out.sort();
    out
}

async fn proofs(prover: &mut common::Prover, key: ContentId, n: usize) -> Vec<ProofMessage> {
    (0..n as u64)
        .map(|i| {
            let m = prover.prove(i + 2, 5);
            ProofMessage::new(key, GROTH16, m.public_inputs, m.proof, Default::default()).unwrap()
        })
        .collect()
}

/// Proofs (inline or pulled, by `inline_max_bytes`) announced one at a time by random
/// nodes that all hold the key: bytes per node per proof, and latency.
async fn sharing(n: usize, count: usize, inline_max_bytes: usize, label: &str) {
    let net = build(n, |i| config(i, inline_max_bytes)).await;
    let mut prover = common::Prover::new(2);
    let key = VerificationKey {
        system: GROTH16,
        key: prover.key.clone(),
    };
    let mut key_id = key.id();
    for node in &net.nodes {
        key_id = node.store_key(key.clone()).await.unwrap();
    }
    let subs: Vec<_> = {
        let mut subs = Vec::new();
        for node in &net.nodes {
            subs.push(node.subscribe_to_proofs(key_id).await.unwrap());
        }
        subs
    };
    net.sim.settle().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let made = proofs(&mut prover, key_id, count).await;
    let size = made[0].encoded_len();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
    let idle = idle_bytes(&net, Duration::from_secs(2 * count as u64)).await;
    let before = net.sim.stats();
    let mut sent = Vec::new();
    for proof in made {
        let at = rng.gen_range(0..n);
        let id = net.nodes[at].store_proof(proof).await.unwrap();
        let t = tokio::time::Instant::now();
        net.nodes[at].announce_proof(id).await.unwrap();
        sent.push((id, t));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let after = net.sim.stats();
    let lat = latencies(&net, &sent);
    let per_node = (after.bytes - before.bytes).saturating_sub(idle) as f64 / (count * n) as f64;
    println!(
        "FIGURE proofshare {label}, {n} nodes: {} of {} verified; {per_node:.0} B received per node per proof of {size} B ({:.2}x); announce-to-verified p50 {:?}, p99 {:?}",
        lat.len(),
        count * (n - 1),
        per_node / size as f64,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    );
    drop(subs);
}

/// Bytes the network moves with nothing announced (heartbeats, gossip control) over
/// `window`: subtracted so each figure counts what the object cost.
async fn idle_bytes(net: &Net, window: Duration) -> u64 {
    let before = net.sim.stats();
    tokio::time::sleep(window).await;
    net.sim.stats().bytes - before.bytes
}

/// One batch of `size` proofs announced by one node: bytes per node per batch byte.
async fn batch(n: usize, size: usize) {
    let net = build(n, |i| config(i, 1024)).await;
    let mut prover = common::Prover::new(6);
    let key = VerificationKey {
        system: GROTH16,
        key: prover.key.clone(),
    };
    let mut key_id = key.id();
    for node in &net.nodes {
        key_id = node.store_key(key.clone()).await.unwrap();
    }
    let mut subs = Vec::new();
    for node in &net.nodes[1..] {
        subs.push(node.subscribe_to_proofs(key_id).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let made = proofs(&mut prover, key_id, size).await;
    let ids: Vec<ContentId> = made.iter().map(|p| p.proof_id).collect();
    let encoding = causality_proofshare::Batch::new(made.clone())
        .unwrap()
        .encode();
    let packed = lz4_flex::block::compress(&encoding).len();
    let info = net.nodes[0].store_batch(made).await.unwrap();
    let idle = idle_bytes(&net, Duration::from_secs(4)).await;
    let before = net.sim.stats();
    let t = tokio::time::Instant::now();
    net.nodes[0].announce_batch(info.id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = net.sim.stats();
    let sent: Vec<_> = ids.iter().map(|id| (*id, t)).collect();
    let lat = latencies(&net, &sent);
    let per_node = (after.bytes - before.bytes).saturating_sub(idle) as f64 / n as f64;
    println!(
        "FIGURE proofshare batch of {size}, {n} nodes: {} of {} proofs verified; {per_node:.0} B received per node for a {} B batch ({:.2}x); LZ4 would make it {packed} B ({:.2}x, kept only when smaller); announce-to-verified p50 {:?}, p99 {:?}",
        lat.len(),
        size * (n - 1),
        encoding.len(),
        per_node / encoding.len() as f64,
        packed as f64 / encoding.len() as f64,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    );
    drop(subs);
}

/// One proof under a key nobody else holds: every follower fetches the key by id. The
/// key's circuit has `extra` public inputs beyond the first.
async fn key_distribution(n: usize, extra: u64) {
    let net = build(n, |i| Config {
        send_acks: false,
        ..config(i, 1024)
    })
    .await;
    let mut prover = common::Prover::with_extra_inputs(3, extra);
    let key = VerificationKey {
        system: GROTH16,
        key: prover.key.clone(),
    };
    let key_size = key.encode().len();
    let key_id = net.nodes[0].store_key(key).await.unwrap();
    let mut subs = Vec::new();
    for node in &net.nodes[1..] {
        subs.push(node.subscribe_to_proofs(key_id).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let proof = proofs(&mut prover, key_id, 1).await.remove(0);
    let size = proof.encoded_len();
    let id = net.nodes[0].store_proof(proof).await.unwrap();
    let idle = idle_bytes(&net, Duration::from_secs(3)).await;
    let before = net.sim.stats();
    let t = tokio::time::Instant::now();
    net.nodes[0].announce_proof(id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = net.sim.stats();
    let lat = latencies(&net, &[(id, t)]);
    let per_node = (after.bytes - before.bytes).saturating_sub(idle) as f64 / n as f64;
    let mut key_bytes = 0;
    for node in &net.nodes[1..] {
        key_bytes += node.stats().await.unwrap().key_bytes;
    }
    let key_per_node = key_bytes as f64 / (n - 1) as f64;
    println!(
        "FIGURE proofshare key fetch ({} public inputs), {n} nodes: {} of {} verified; key responses {key_per_node:.0} B per node for a {key_size} B key ({:.2}x); all traffic {per_node:.0} B per node with the {size} B inline proof; p50 {:?}, p99 {:?}",
        extra + 1,
        lat.len(),
        n - 1,
        key_per_node / key_size as f64,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    );
}

/// Honest proofs while one node floods invalid ones, against the same without the flood.
async fn flood(n: usize, count: usize) {
    let mut p50 = Vec::new();
    let mut wall = Vec::new();
    for flooding in [false, true] {
        let mut prover = common::Prover::new(4);
        // Proving is not what is measured: make every proof first.
        let junk = if flooding {
            proofs(&mut prover, ContentId::of(b"placeholder"), 400).await
        } else {
            Vec::new()
        };
        let honest_made: Vec<_> = (0..count as u64).map(|i| prover.prove(i + 50, 5)).collect();
        let started = std::time::Instant::now();
        let net = build(n, |i| Config {
            send_acks: false,
            ..config(i, 1024)
        })
        .await;
        let key = VerificationKey {
            system: GROTH16,
            key: prover.key.clone(),
        };
        let mut key_id = key.id();
        for node in &net.nodes {
            key_id = node.store_key(key.clone()).await.unwrap();
        }
        let mut subs = Vec::new();
        for node in &net.nodes[1..] {
            subs.push(node.subscribe_to_proofs(key_id).await.unwrap());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        if flooding {
            // Node 0 floods: 400 false proofs, signed by it, straight onto the topic.
            let attacker = net.nets[0].clone();
            tokio::spawn(async move {
                for proof in junk {
                    let bad = ProofMessage::new(
                        key_id,
                        GROTH16,
                        vec![groth16::encode_fr(1)],
                        proof.proof_data,
                        Default::default(),
                    )
                    .unwrap();
                    let _ = attacker
                        .publish(
                            &proof_topic(&key_id),
                            ANNOUNCEMENT_TYPE,
                            Announcement::Inline(bad).encode(),
                        )
                        .await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        let mut sent = Vec::new();
        for m in honest_made {
            let proof = ProofMessage::new(
                key_id,
                GROTH16,
                m.public_inputs,
                m.proof,
                Default::default(),
            )
            .unwrap();
            let at = 1 + sent.len() % (n - 1);
            let id = net.nodes[at].store_proof(proof).await.unwrap();
            let t = tokio::time::Instant::now();
            net.nodes[at].announce_proof(id).await.unwrap();
            sent.push((id, t));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let lat = latencies(&net, &sent);
        println!(
            "FIGURE proofshare {} {n} nodes: {} of {} honest verifications; p50 {:?}, p99 {:?}",
            if flooding {
                "under an invalid-proof flood,"
            } else {
                "quiet,"
            },
            lat.len(),
            count * (n - 2),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
        );
        p50.push(percentile(&lat, 0.5));
        wall.push(started.elapsed());
        drop(subs);
    }
    // Virtual time does not charge CPU: the wall-clock time of each run is what the
    // flood's verification work cost this process (100 nodes on one core).
    println!(
        "FIGURE proofshare flood run took {:.2?} of wall-clock time against {:.2?} quiet ({:.2}x): the verification work the flood cost",
        wall[1],
        wall[0],
        wall[1].as_secs_f64() / wall[0].as_secs_f64()
    );
    println!(
        "FIGURE proofshare flood / quiet honest latency p50: {:.2}x (target <= 2)",
        p50[1].as_secs_f64() / p50[0].as_secs_f64()
    );
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (n, count) = if quick { (12, 3) } else { (100, 20) };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        sharing(n, count, 1024, "inline proofs").await;
        sharing(n, count, 0, "proofs pulled by id").await;
        batch(n, if quick { 16 } else { 64 }).await;
        key_distribution(n, 0).await;
        key_distribution(n, 15).await;
        flood(n, count).await;
    });
}
