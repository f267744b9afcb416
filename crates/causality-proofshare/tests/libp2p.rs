//! Proof sharing over real sockets: three libp2p nodes on 127.0.0.1 in a line. A proof
//! announced at one end is verified at both others (which fetch the key they lack) and
//! acknowledged back; an invalid one is refused by the middle node and never reaches the end.

mod common;

use std::time::Duration;

use causality_net::{Keypair, Libp2pConfig, Libp2pNetwork, Network};
use causality_proofshare::ANNOUNCEMENT_TYPE;
use causality_proofshare::{
    Announcement, Config, MemoryStore, ProofMessage, ProofShare, ProofSystem, VerificationKey,
    Verifiers, groth16, proof_topic,
};

const PATIENCE: Duration = Duration::from_secs(30);

async fn node(i: u64) -> (Network, ProofShare) {
    let mut config = Libp2pConfig::new(Keypair::from_index(700 + i));
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    let net = Libp2pNetwork::start(config).await.unwrap();
    let share = ProofShare::start(
        net.clone(),
        Config::default(),
        Verifiers::standard(),
        Box::new(MemoryStore::new()),
    )
    .await
    .unwrap();
    (net, share)
}

async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_verify_and_acknowledge_over_loopback() {
    let (a_net, a) = node(0).await;
    let (b_net, b) = node(1).await;
    let (c_net, c) = node(2).await;
    b_net
        .dial(a_net.listen_addresses()[0].clone())
        .await
        .unwrap();
    c_net
        .dial(b_net.listen_addresses()[0].clone())
        .await
        .unwrap();

    let mut prover = common::Prover::new(31);
    let key_id = a
        .store_key(VerificationKey {
            system: ProofSystem::GROTH16_BN254,
            key: prover.key.clone(),
        })
        .await
        .unwrap();
    let mut at_b = b.subscribe_to_proofs(key_id).await.unwrap();
    let mut at_c = c.subscribe_to_proofs(key_id).await.unwrap();
    let topic = proof_topic(&key_id);
    eventually("the mesh to form", || async {
        a_net
            .topic_peers(&topic)
            .await
            .unwrap()
            .contains(&b_net.local_peer_id())
            && b_net
                .topic_peers(&topic)
                .await
                .unwrap()
                .contains(&c_net.local_peer_id())
    })
    .await;

    let made = prover.prove(12, 12);
    let proof = ProofMessage::new(
        key_id,
        ProofSystem::GROTH16_BN254,
        made.public_inputs,
        made.proof,
        Default::default(),
    )
    .unwrap();
    let id = a.store_proof(proof).await.unwrap();
    a.announce_proof(id).await.unwrap();
    for (name, sub) in [("b", &mut at_b), ("c", &mut at_c)] {
        let got = tokio::time::timeout(PATIENCE, sub.next())
            .await
            .unwrap_or_else(|_| panic!("{name} did not verify"))
            .unwrap();
        assert_eq!(got.proof_id, id);
    }
    eventually("both acks to reach the announcer", || async {
        a.acks(id).await.unwrap().len() == 2
    })
    .await;
    let verifiers: Vec<_> = a
        .acks(id)
        .await
        .unwrap()
        .iter()
        .map(|k| k.verifier)
        .collect();
    assert!(verifiers.contains(&b_net.local_peer_id()));
    assert!(verifiers.contains(&c_net.local_peer_id()));

    // A false proof, signed and published by `a` past its own checks.
    let made = prover.prove(3, 3);
    let bad = ProofMessage::new(
        key_id,
        ProofSystem::GROTH16_BN254,
        vec![groth16::encode_fr(10)],
        made.proof,
        Default::default(),
    )
    .unwrap();
    a_net
        .publish(
            &topic,
            ANNOUNCEMENT_TYPE,
            Announcement::Inline(bad.clone()).encode(),
        )
        .await
        .unwrap();
    eventually("b to refuse it", || async {
        b.stats().await.unwrap().rejected.get("invalid") == Some(&1)
    })
    .await;
    // Then an honest one from `c`'s side: once it reached `a`, the bad one would have too.
    let made = prover.prove(5, 5);
    let honest = ProofMessage::new(
        key_id,
        ProofSystem::GROTH16_BN254,
        made.public_inputs,
        made.proof,
        Default::default(),
    )
    .unwrap();
    let honest_id = c.store_proof(honest).await.unwrap();
    c.announce_proof(honest_id).await.unwrap();
    let got = tokio::time::timeout(PATIENCE, at_b.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.proof_id, honest_id);
    let seen = c.stats().await.unwrap();
    assert!(
        seen.rejected.is_empty(),
        "the bad proof was forwarded: {seen:?}"
    );
    assert_eq!(seen.verified, 2, "a's proof and its own");
    assert!(
        c.request_proof(bad.proof_id, vec![]).await.is_err(),
        "nobody holds it"
    );
}
