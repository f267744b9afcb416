//! A key no connected peer has is found at its rendezvous providers through discovery.

mod common;

use std::time::Duration;

use causality_discovery::{Config as DiscoveryConfig, Discovery};
use causality_net::{MemoryNetwork, Network};
use causality_proofshare::ANNOUNCEMENT_TYPE;
use causality_proofshare::{
    Announcement, Config, MemoryStore, Options, ProofMessage, ProofShare, ProofSystem,
    VerificationKey, Verifiers, proof_topic,
};

async fn discovery(net: &Network, bootstrap: &Network) -> Discovery {
    Discovery::start(
        net.clone(),
        DiscoveryConfig {
            bootstrap: vec![bootstrap.listen_addresses()[0].clone()],
            ..DiscoveryConfig::default()
        },
    )
    .await
    .unwrap()
}

async fn share(net: &Network, discovery: Discovery, seed: u8) -> ProofShare {
    ProofShare::start_with(
        net.clone(),
        Config {
            seed: [seed; 32],
            ..Config::default()
        },
        Verifiers::standard(),
        Box::new(MemoryStore::new()),
        Options {
            view: None,
            discovery: Some(discovery),
        },
    )
    .await
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_unknown_key_is_fetched_from_its_providers() {
    let sim = MemoryNetwork::new(21);
    // `hub` relays and announces but holds no keys and speaks no proof sharing;
    // `holder` has the key; `verifier` follows it. Only the hub knows both.
    let (hub, holder, verifier) = (sim.add_node(), sim.add_node(), sim.add_node());
    let hub_discovery = Discovery::start(hub.clone(), DiscoveryConfig::default())
        .await
        .unwrap();
    let holder_share = share(&holder, discovery(&holder, &hub).await, 1).await;
    let verifier_share = share(&verifier, discovery(&verifier, &hub).await, 2).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(hub_discovery.members().len(), 3, "discovery converged");

    let mut prover = common::Prover::new(8);
    let key_id = holder_share
        .store_key(VerificationKey {
            system: ProofSystem::GROTH16_BN254,
            key: prover.key.clone(),
        })
        .await
        .unwrap();
    let mut proofs = verifier_share.subscribe_to_proofs(key_id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Discovery may have connected the two; cut that, so only the hub links them.
    verifier.disconnect(holder.local_peer_id()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let connected: Vec<_> = verifier.peers().iter().map(|p| p.peer).collect();
    assert!(!connected.contains(&holder.local_peer_id()));

    let made = prover.prove(4, 9);
    let proof = ProofMessage::new(
        key_id,
        ProofSystem::GROTH16_BN254,
        made.public_inputs,
        made.proof,
        Default::default(),
    )
    .unwrap();
    hub.publish(
        &proof_topic(&key_id),
        ANNOUNCEMENT_TYPE,
        Announcement::Inline(proof.clone()).encode(),
    )
    .await
    .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), proofs.next())
        .await
        .expect("the key was not found at its providers")
        .unwrap();
    assert_eq!(got.proof_id, proof.proof_id);
    assert_eq!(verifier_share.stats().await.unwrap().keys_fetched, 1);
    // It came from the holder, dialed for it.
    let connected: Vec<_> = verifier.peers().iter().map(|p| p.peer).collect();
    assert!(connected.contains(&holder.local_peer_id()));
}

#[tokio::test(start_paused = true)]
async fn a_batch_its_announcer_cannot_serve_is_pulled_from_its_providers() {
    let sim = MemoryNetwork::new(22);
    let (hub, holder, verifier) = (sim.add_node(), sim.add_node(), sim.add_node());
    let _hub_discovery = Discovery::start(hub.clone(), DiscoveryConfig::default())
        .await
        .unwrap();
    let holder_share = share(&holder, discovery(&holder, &hub).await, 1).await;
    let verifier_share = share(&verifier, discovery(&verifier, &hub).await, 2).await;
    tokio::time::sleep(Duration::from_secs(30)).await;

    let mut prover = common::Prover::new(9);
    let key = VerificationKey {
        system: ProofSystem::GROTH16_BN254,
        key: prover.key.clone(),
    };
    let key_id = holder_share.store_key(key.clone()).await.unwrap();
    verifier_share.store_key(key).await.unwrap();
    let proofs: Vec<ProofMessage> = (0..8u64)
        .map(|i| {
            let m = prover.prove(i + 2, 7);
            ProofMessage::new(
                key_id,
                ProofSystem::GROTH16_BN254,
                m.public_inputs,
                m.proof,
                Default::default(),
            )
            .unwrap()
        })
        .collect();
    // The holder stores (and so provides) the batch; the hub announces it without
    // being able to serve it.
    let info = holder_share.store_batch(proofs.clone()).await.unwrap();
    let mut at_verifier = verifier_share.subscribe_to_proofs(key_id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    verifier.disconnect(holder.local_peer_id()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let batch = causality_proofshare::Batch::new(proofs.clone()).unwrap();
    let announcement = Announcement::Batch {
        batch_id: info.id,
        verification_key_id: key_id,
        root: batch.root(),
        count: 8,
        size: batch.encode().len() as u64,
    };
    hub.publish(
        &proof_topic(&key_id),
        ANNOUNCEMENT_TYPE,
        announcement.encode(),
    )
    .await
    .unwrap();
    for _ in 0..8 {
        tokio::time::timeout(Duration::from_secs(30), at_verifier.next())
            .await
            .expect("the batch was not found at its providers")
            .unwrap();
    }
    assert_eq!(verifier_share.stats().await.unwrap().batches_pulled, 1);
}
