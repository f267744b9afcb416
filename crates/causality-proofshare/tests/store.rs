//! One conformance suite for both stores, and a node restarted from RocksDB that catches up
//! on what it missed.

mod common;

use std::time::Duration;

use causality_hash::ContentId;
use causality_net::{Keypair, MemoryNetwork};
use causality_proofshare::RocksStore;
use causality_proofshare::{
    Ack, Config, MemoryStore, ProofMessage, ProofShare, ProofStore, ProofSystem, VerificationKey,
    Verifiers,
};

fn proof(key: ContentId, n: u8) -> ProofMessage {
    ProofMessage::new(
        key,
        ProofSystem::GROTH16_BN254,
        vec![vec![n; 32]],
        vec![n; 128],
        [("n".to_owned(), serde_json::json!(n))].into(),
    )
    .unwrap()
}

fn conformance(store: &mut dyn ProofStore) {
    let key = VerificationKey {
        system: ProofSystem::GROTH16_BN254,
        key: vec![7; 296],
    };
    let key_id = key.id();
    assert_eq!(store.key(&key_id).unwrap(), None);
    store.put_key(&key).unwrap();
    assert_eq!(store.key(&key_id).unwrap(), Some(key));

    let other = ContentId::of(b"another key");
    let proofs: Vec<_> = (0..5).map(|n| proof(key_id, n)).collect();
    for (i, p) in proofs.iter().enumerate() {
        store.put_proof(p, 1000 + i as u64 * 10).unwrap();
    }
    store.put_proof(&proof(other, 9), 1005).unwrap();
    // Storing again changes nothing (not even the receipt time).
    store.put_proof(&proofs[0], 5000).unwrap();
    assert_eq!(
        store.proof(&proofs[2].proof_id).unwrap().as_ref(),
        Some(&proofs[2])
    );
    assert!(store.has_proof(&proofs[4].proof_id).unwrap());
    assert!(!store.has_proof(&ContentId::of(b"nothing")).unwrap());

    let (ids, more) = store.proofs_since(&key_id, 0, 10).unwrap();
    let want: Vec<_> = proofs
        .iter()
        .enumerate()
        .map(|(i, p)| (p.proof_id, 1000 + i as u64 * 10))
        .collect();
    assert_eq!(ids, want);
    assert!(!more);
    let (ids, more) = store.proofs_since(&key_id, 1015, 2).unwrap();
    assert_eq!(ids, want[2..4].to_vec());
    assert!(more);
    assert_eq!(store.proofs_since(&other, 0, 10).unwrap().0.len(), 1);

    let target = proofs[1].proof_id;
    let ack = |i: u64| Ack::sign(&Keypair::from_index(i), target, 77);
    assert!(store.put_ack(&ack(1)).unwrap());
    assert!(!store.put_ack(&ack(1)).unwrap(), "one per verifier");
    assert!(store.put_ack(&ack(2)).unwrap());
    let mut acks = store.acks(&target).unwrap();
    acks.sort_by_key(|a| a.verifier);
    let mut want = vec![ack(1), ack(2)];
    want.sort_by_key(|a| a.verifier);
    assert_eq!(acks, want);
    for i in 3..100 {
        store.put_ack(&ack(i)).unwrap();
    }
    assert_eq!(
        store.acks(&target).unwrap().len(),
        causality_proofshare::MAX_ACKS_PER_PROOF
    );
    assert!(store.acks(&proofs[0].proof_id).unwrap().is_empty());

    let batch = causality_proofshare::Batch::new(proofs.clone()).unwrap();
    assert_eq!(store.batch(&batch.id()).unwrap(), None);
    store.put_batch(&batch.id(), &batch.encode()).unwrap();
    assert_eq!(store.batch(&batch.id()).unwrap(), Some(batch.encode()));
}

#[test]
fn memory_store_conforms() {
    conformance(&mut MemoryStore::new());
}

#[test]
fn rocks_store_conforms_and_keeps_everything_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RocksStore::open(dir.path()).unwrap();
    conformance(&mut store);
    let key_id = VerificationKey {
        system: ProofSystem::GROTH16_BN254,
        key: vec![7; 296],
    }
    .id();
    drop(store);
    let store = RocksStore::open(dir.path()).unwrap();
    assert_eq!(store.proofs_since(&key_id, 0, 100).unwrap().0.len(), 5);
    assert!(store.key(&key_id).unwrap().is_some());
}

#[test]
fn a_corrupt_record_is_an_error_not_a_wrong_proof() {
    let dir = tempfile::tempdir().unwrap();
    let key_id = ContentId::of(b"k");
    let p = proof(key_id, 1);
    {
        let mut store = RocksStore::open(dir.path()).unwrap();
        store.put_proof(&p, 1).unwrap();
    }
    // Overwrite the body with another proof's bytes behind the store's back.
    {
        let cfs = RocksStore::column_families();
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        let db = rocksdb::DB::open_cf_descriptors(&opts, dir.path(), cfs).unwrap();
        let cf = db.cf_handle("proofshare.proofs").unwrap();
        db.put_cf(cf, p.proof_id.as_bytes(), proof(key_id, 2).encode())
            .unwrap();
        let cf = db.cf_handle("proofshare.keys").unwrap();
        db.put_cf(cf, key_id.as_bytes(), b"\xff\xff not a key")
            .unwrap();
    }
    let store = RocksStore::open(dir.path()).unwrap();
    assert!(store.proof(&p.proof_id).is_err());
    assert!(store.key(&key_id).is_err());
}

/// The next verified proof's id, within a minute of virtual time.
async fn next(proofs: &mut causality_proofshare::ProofSubscription, what: &str) -> ContentId {
    tokio::time::timeout(Duration::from_secs(60), proofs.next())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap()
        .proof_id
}

async fn start(net: &causality_net::Network, store: Box<dyn ProofStore>, seed: u8) -> ProofShare {
    let config = Config {
        seed: [seed; 32],
        ..Config::default()
    };
    ProofShare::start(net.clone(), config, Verifiers::standard(), store)
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_node_restarted_from_rocksdb_catches_up_on_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let sim = MemoryNetwork::new(3);
    let prover_net = sim.add_node();
    let mut prover = common::Prover::new(4);
    let a = start(&prover_net, Box::new(MemoryStore::new()), 1).await;
    let key_id = a
        .store_key(VerificationKey {
            system: ProofSystem::GROTH16_BN254,
            key: prover.key.clone(),
        })
        .await
        .unwrap();
    let mut publish = async |a: &ProofShare, x: u64| {
        let m = prover.prove(x, 3);
        let p = ProofMessage::new(
            key_id,
            ProofSystem::GROTH16_BN254,
            m.public_inputs,
            m.proof,
            Default::default(),
        )
        .unwrap();
        let id = a.store_proof(p).await.unwrap();
        a.announce_proof(id).await.unwrap();
        id
    };

    // The follower's first life: it receives one proof and keeps it in RocksDB.
    let first = {
        let net = sim.add_node();
        net.dial(prover_net.listen_addresses()[0].clone())
            .await
            .unwrap();
        let b = start(&net, Box::new(RocksStore::open(dir.path()).unwrap()), 2).await;
        let mut proofs = b.subscribe_to_proofs(key_id).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let id = publish(&a, 10).await;
        assert_eq!(next(&mut proofs, "the first proof").await, id);
        drop(proofs);
        drop(b);
        net.disconnect(prover_net.local_peer_id()).await.unwrap();
        id
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    // While it is down, two more proofs are announced.
    let missed = [publish(&a, 11).await, publish(&a, 12).await];
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Its second life, from the same database: it still has the first proof, and pulls
    // the two it missed once it follows the key again.
    let net = sim.add_node();
    let b = start(&net, Box::new(RocksStore::open(dir.path()).unwrap()), 3).await;
    assert!(b.request_proof(first, vec![]).await.is_ok(), "kept on disk");
    let mut proofs = b.subscribe_to_proofs(key_id).await.unwrap();
    net.dial(prover_net.listen_addresses()[0].clone())
        .await
        .unwrap();
    let mut got = vec![
        next(&mut proofs, "a missed proof").await,
        next(&mut proofs, "the other missed proof").await,
    ];
    got.sort();
    let mut want = missed.to_vec();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(b.stats().await.unwrap().proofs_pulled, 2);
}
