//! Proof sharing under the tokio-free simulation runner: whole networks from a seed, on
//! virtual time, with real Groth16 proofs.

mod common;

use causality_hash::ContentId;
use causality_net::service::CallId;
use causality_net::service::sim::{Sim, SimConfig};
use causality_proofshare::{
    Command, Config, Event, MemoryStore, ProofMessage, ProofSystem, Reply, State, VerificationKey,
    Verifiers,
};

const GROTH16: ProofSystem = ProofSystem::GROTH16_BN254;

/// `n` nodes, each connected to the next and to the one three further on (a ring with
/// chords), running for a second so every connection is up.
fn network(seed: u64, n: usize, config: impl Fn(usize) -> Config) -> Sim<State> {
    let mut sim = Sim::new(
        seed,
        SimConfig {
            latency_ms: 20,
            jitter_ms: 10,
            keep_events: true,
            ..SimConfig::default()
        },
    );
    for i in 0..n {
        let config = config(i);
        sim.add_node(|keypair| {
            State::new(
                config,
                keypair.clone(),
                Verifiers::standard(),
                Box::new(MemoryStore::new()),
            )
        });
    }
    for i in 0..n {
        sim.connect(i, (i + 1) % n);
        if n > 6 {
            sim.connect(i, (i + 3) % n);
        }
    }
    sim.run_for(1000);
    sim
}

fn seeded(i: usize) -> Config {
    Config {
        seed: [i as u8; 32],
        ..Config::default()
    }
}

fn reply(sim: &mut Sim<State>, call: CallId) -> Reply {
    sim.run_for(100);
    let mut replies = sim.take_replies();
    let at = replies
        .iter()
        .position(|(_, c, _)| *c == call)
        .expect("the call was answered");
    replies.swap_remove(at).2
}

/// Stores `prover`'s key at node `n`; returns its id.
fn store_key(sim: &mut Sim<State>, n: usize, prover: &common::Prover) -> ContentId {
    let key = VerificationKey {
        system: GROTH16,
        key: prover.key.clone(),
    };
    let call = sim.call(n, Command::StoreKey(key));
    let Reply::Key(Ok(key_id)) = reply(sim, call) else {
        panic!("key refused")
    };
    key_id
}

/// Stores a fresh proof of `a · b` at node `n`.
fn store_proof(
    sim: &mut Sim<State>,
    n: usize,
    prover: &mut common::Prover,
    key_id: ContentId,
    (a, b): (u64, u64),
) -> ProofMessage {
    let made = prover.prove(a, b);
    let proof = ProofMessage::new(
        key_id,
        GROTH16,
        made.public_inputs,
        made.proof,
        Default::default(),
    )
    .unwrap();
    let call = sim.call(n, Command::StoreProof(proof.clone()));
    assert!(matches!(reply(sim, call), Reply::Proof(Ok(_))));
    proof
}

/// Stores a batch of 64 fresh proofs of `(i + 3) · b` at node `n`.
fn store_batch(
    sim: &mut Sim<State>,
    n: usize,
    prover: &mut common::Prover,
    key_id: ContentId,
    b: u64,
) -> (causality_proofshare::BatchInfo, Vec<ProofMessage>) {
    let proofs: Vec<ProofMessage> = (0..64u64)
        .map(|i| {
            let m = prover.prove(i + 3, b);
            ProofMessage::new(
                key_id,
                GROTH16,
                m.public_inputs,
                m.proof,
                Default::default(),
            )
            .unwrap()
        })
        .collect();
    let call = sim.call(n, Command::StoreBatch(proofs.clone()));
    let Reply::Batch(Ok(info)) = reply(sim, call) else {
        panic!("batch refused")
    };
    (info, proofs)
}

fn verified_at(events: &[(usize, Event)], proof: ContentId) -> Vec<usize> {
    let mut nodes: Vec<usize> = events
        .iter()
        .filter_map(|(n, e)| match e {
            Event::Verified { proof: p, .. } if p.proof_id == proof => Some(*n),
            _ => None,
        })
        .collect();
    nodes.sort_unstable();
    nodes
}

#[test]
fn a_proof_announced_by_one_node_is_verified_and_acked_by_every_follower() {
    let n = 20;
    let mut sim = network(1, n, seeded);
    let mut prover = common::Prover::new(5);
    let key_id = store_key(&mut sim, 0, &prover);
    for i in 1..n {
        sim.command(i, Command::Follow(key_id));
    }
    sim.run_for(1000);
    let proof = store_proof(&mut sim, 0, &mut prover, key_id, (6, 7));
    sim.command(0, Command::Announce(proof.proof_id));
    sim.run_for(3000);

    let events = sim.take_events();
    assert_eq!(
        verified_at(&events, proof.proof_id),
        (1..n).collect::<Vec<_>>()
    );
    let call = sim.call(0, Command::Acks(proof.proof_id));
    let Reply::Acks(Ok(acks)) = reply(&mut sim, call) else {
        panic!("no acks")
    };
    assert_eq!(acks.len(), n - 1, "one signed ack per follower");
    for ack in &acks {
        ack.verify().unwrap();
    }
    // Every follower fetched the key once, from a peer, and verified the proof once.
    for i in 1..n {
        let stats = sim.node(i).unwrap().stats();
        assert_eq!(stats.verified, 1, "node {i}");
        assert_eq!(stats.keys_fetched, 1, "node {i}");
        assert!(stats.rejected.is_empty(), "node {i}: {:?}", stats.rejected);
    }
    assert!(sim.penalties().is_empty(), "{:?}", sim.penalties());
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = || {
        let mut sim = network(9, 12, seeded);
        let mut prover = common::Prover::new(5);
        let key_id = store_key(&mut sim, 3, &prover);
        for i in (0..12).filter(|i| *i != 3) {
            sim.command(i, Command::Follow(key_id));
        }
        sim.run_for(500);
        let proof = store_proof(&mut sim, 3, &mut prover, key_id, (6, 7));
        sim.command(3, Command::Announce(proof.proof_id));
        sim.run_for(2000);
        sim.trace_hash()
    };
    assert_eq!(run(), run());
}

#[test]
fn a_node_that_missed_announcements_catches_up_when_it_reconnects() {
    let n = 6;
    let mut sim = network(3, n, seeded);
    let mut prover = common::Prover::new(5);
    let key_id = store_key(&mut sim, 0, &prover);
    for i in 1..n {
        sim.command(i, Command::Follow(key_id));
    }
    sim.run_for(500);
    sim.crash(4);
    let first = store_proof(&mut sim, 0, &mut prover, key_id, (6, 7));
    sim.command(0, Command::Announce(first.proof_id));
    sim.run_for(2000);
    assert_eq!(
        verified_at(&sim.take_events(), first.proof_id),
        vec![1, 2, 3, 5]
    );

    // Node 4 comes back with an empty store, follows the key again and reconnects.
    sim.restart(4, |keypair| {
        State::new(
            seeded(4),
            keypair.clone(),
            Verifiers::standard(),
            Box::new(MemoryStore::new()),
        )
    });
    sim.command(4, Command::Follow(key_id));
    sim.connect(4, 5);
    sim.connect(3, 4);
    sim.run_for(3000);
    assert_eq!(verified_at(&sim.take_events(), first.proof_id), vec![4]);
}

#[test]
fn a_batch_of_64_reaches_every_follower_as_one_pull_each() {
    let n = 12;
    let mut sim = network(6, n, seeded);
    let mut prover = common::Prover::new(5);
    let key_id = store_key(&mut sim, 0, &prover);
    for i in 1..n {
        sim.command(i, Command::Follow(key_id));
    }
    sim.run_for(1000);
    let (info, proofs) = store_batch(&mut sim, 0, &mut prover, key_id, 11);
    assert_eq!(info.count, 64);
    sim.command(0, Command::AnnounceBatch(info.id));
    sim.run_for(5000);
    let events = sim.take_events();
    for p in &proofs {
        assert_eq!(verified_at(&events, p.proof_id), (1..n).collect::<Vec<_>>());
    }
    for i in 1..n {
        let stats = sim.node(i).unwrap().stats();
        assert_eq!(stats.batches_pulled, 1, "node {i}");
        assert_eq!(stats.verified, 64, "node {i}");
        assert!(
            stats.batches <= 2,
            "node {i}: {} verification batches",
            stats.batches
        );
    }
    assert!(sim.penalties().is_empty(), "{:?}", sim.penalties());
}

fn attested(i: usize) -> Config {
    Config {
        accept: causality_proofshare::AcceptPolicy::Attested {
            k: 2,
            part_size: 16,
            timeout_ms: 3000,
        },
        ..seeded(i)
    }
}

/// Eight verifiers, a batch of 64 in parts of 16, two attestations per part: each follower
/// verifies only its parts and accepts the rest on attestations; crashed assignees only
/// delay a part until the timeout, after which it is verified locally.
fn attested_run(crash: &[usize]) -> (Sim<State>, Vec<ProofMessage>) {
    let n = 8;
    let mut sim = network(12, n, attested);
    let view: causality_proofshare::VerifierView =
        std::sync::Arc::new((0..n).map(|i| sim.peer_id(i)).collect());
    for i in 0..n {
        sim.set_view(i, view.clone());
    }
    let mut prover = common::Prover::new(5);
    let key_id = store_key(&mut sim, 0, &prover);
    for i in 1..n {
        sim.command(i, Command::Follow(key_id));
    }
    sim.run_for(1000);
    let (info, proofs) = store_batch(&mut sim, 0, &mut prover, key_id, 13);
    for &c in crash {
        sim.crash(c);
    }
    sim.command(0, Command::AnnounceBatch(info.id));
    sim.run_for(8000);
    (sim, proofs)
}

#[test]
fn attested_batches_spread_the_verification_work() {
    let (mut sim, proofs) = attested_run(&[]);
    let events = sim.take_events();
    for p in &proofs {
        assert_eq!(verified_at(&events, p.proof_id), (1..8).collect::<Vec<_>>());
    }
    let mut verified_here = 0;
    for i in 1..8 {
        let stats = sim.node(i).unwrap().stats();
        assert_eq!(stats.verified + stats.attested, 64, "node {i}: {stats:?}");
        verified_here += stats.verified;
    }
    // Four parts, two assignees each: 128 verifications of 16 proofs' worth at most
    // (the announcer's own parts it attests without verifying again), not 7 × 64 = 448.
    for i in 0..8 {
        let s = sim.node(i).unwrap().stats();
        eprintln!("node {i} {}: verified", sim.peer_id(i).short());
        eprintln!(
            "node {i}: verified {} attested {} sent {} received {} batches {}",
            s.verified, s.attested, s.attestations_sent, s.attestations_received, s.batches
        );
    }
    assert!(verified_here <= 128, "{verified_here} local verifications");
    assert!(sim.penalties().is_empty(), "{:?}", sim.penalties());
}

#[test]
fn attested_parts_whose_verifiers_are_down_are_verified_locally_after_the_timeout() {
    // Crash two nodes: the parts they were assigned reach fewer than k attestations.
    let (mut sim, proofs) = attested_run(&[3, 6]);
    let events = sim.take_events();
    let alive: Vec<usize> = [1, 2, 4, 5, 7].to_vec();
    for p in &proofs {
        assert_eq!(verified_at(&events, p.proof_id), alive);
    }
    let verified_here: u64 = alive
        .iter()
        .map(|i| sim.node(*i).unwrap().stats().verified)
        .sum();
    assert!(verified_here > 0);
}
