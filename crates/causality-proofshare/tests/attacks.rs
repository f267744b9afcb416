//! Bad proofs from the network, over the real driver on the in-memory adapter (virtual
//! time): in the line `attacker — victim — observer`, each kind of bad proof is refused by
//! the victim for its own reason, never reaches the observer, and costs the attacker score.

mod common;

use std::time::Duration;

use ark_bn254::{Fq, Fq2, G2Affine};
use ark_serialize::CanonicalSerialize;
use causality_hash::ContentId;
use causality_net::{MemoryNetwork, Network};
use causality_proofshare::ANNOUNCEMENT_TYPE;
use causality_proofshare::groth16::{self, decode_proof, proof_bytes};
use causality_proofshare::proto::v1 as pb;
use causality_proofshare::{
    Announcement, Batch, Config, Event, MemoryStore, PROTOCOL, ProofMessage, ProofShare,
    ProofSystem, VerificationKey, Verifiers, proof_topic,
};
use futures::StreamExt;
use prost::Message as _;

const GROTH16: ProofSystem = ProofSystem::GROTH16_BN254;

struct Line {
    _sim: MemoryNetwork,
    attacker: Network,
    victim_net: Network,
    victim: ProofShare,
    observer_net: Network,
    observer: ProofShare,
    key: VerificationKey,
    key_id: ContentId,
    prover: common::Prover,
}

async fn start(net: &Network, seed: u8, max_per_originator: usize) -> ProofShare {
    let config = Config {
        seed: [seed; 32],
        max_per_originator,
        ..Config::default()
    };
    ProofShare::start(
        net.clone(),
        config,
        Verifiers::standard(),
        Box::new(MemoryStore::new()),
    )
    .await
    .unwrap()
}

/// The line, with the victim and the observer holding and following the key.
async fn line() -> Line {
    line_with(Config::default().max_per_originator).await
}

/// [`line`], with at most `max_per_originator` proofs of one originator per batch.
async fn line_with(max_per_originator: usize) -> Line {
    let sim = MemoryNetwork::new(7);
    let (attacker, victim_net, observer_net) = (sim.add_node(), sim.add_node(), sim.add_node());
    attacker
        .dial(victim_net.listen_addresses()[0].clone())
        .await
        .unwrap();
    observer_net
        .dial(victim_net.listen_addresses()[0].clone())
        .await
        .unwrap();
    let victim = start(&victim_net, 1, max_per_originator).await;
    let observer = start(&observer_net, 2, max_per_originator).await;
    let prover = common::Prover::new(21);
    let key = VerificationKey {
        system: GROTH16,
        key: prover.key.clone(),
    };
    let key_id = victim.store_key(key.clone()).await.unwrap();
    observer.store_key(key.clone()).await.unwrap();
    // The subscriptions are held for the whole test.
    std::mem::forget(victim.subscribe_to_proofs(key_id).await.unwrap());
    std::mem::forget(observer.subscribe_to_proofs(key_id).await.unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    Line {
        _sim: sim,
        attacker,
        victim_net,
        victim,
        observer_net,
        observer,
        key,
        key_id,
        prover,
    }
}

impl Line {
    async fn publish(&self, announcement: Vec<u8>, key_id: ContentId) {
        self.attacker
            .publish(&proof_topic(&key_id), ANNOUNCEMENT_TYPE, announcement)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    async fn publish_proof(&self, proof: ProofMessage) {
        let key_id = proof.verification_key_id;
        self.publish(Announcement::Inline(proof).encode(), key_id)
            .await;
    }

    fn proof(&mut self, inputs: Option<Vec<Vec<u8>>>, data: Option<Vec<u8>>) -> ProofMessage {
        let made = self.prover.prove(5, 8);
        ProofMessage::new(
            self.key_id,
            GROTH16,
            inputs.unwrap_or(made.public_inputs),
            data.unwrap_or(made.proof),
            Default::default(),
        )
        .unwrap()
    }

    /// The victim refused for `reason`, the observer saw nothing, the attacker lost score.
    async fn assert_refused(&self, reason: &str) {
        let stats = self.victim.stats().await.unwrap();
        assert_eq!(stats.rejected.get(reason), Some(&1), "{:?}", stats.rejected);
        assert_eq!(stats.verified, 0);
        let seen = self.observer.stats().await.unwrap();
        assert_eq!(seen.verified, 0);
        assert!(seen.rejected.is_empty(), "forwarded: {:?}", seen.rejected);
        assert_eq!(self.observer_net.metrics().delivered, 0, "forwarded");
        let score = self
            .victim_net
            .peers()
            .into_iter()
            .find(|p| p.peer == self.attacker.local_peer_id())
            .map(|p| p.score);
        assert!(
            score.is_none_or(|s| s < 0),
            "attacker not penalized: {score:?}"
        );
        assert!(score.is_some() || self.victim_net.is_banned(&self.attacker.local_peer_id()));
    }
}

#[tokio::test(start_paused = true)]
async fn an_honest_proof_crosses_the_line() {
    let mut line = line().await;
    let proof = line.proof(None, None);
    let mut events = line.observer.events();
    line.publish_proof(proof.clone()).await;
    assert_eq!(line.victim.stats().await.unwrap().verified, 1);
    let Ok(Event::Verified { proof: got, .. }) = events.recv().await else {
        panic!("observer did not verify")
    };
    assert_eq!(got.proof_id, proof.proof_id);
}

#[tokio::test(start_paused = true)]
async fn a_tampered_proof_is_refused() {
    let mut line = line().await;
    let made = line.prover.prove(5, 8);
    let mut p = decode_proof(&made.proof).unwrap();
    p.a = -p.a;
    let proof = line.proof(Some(made.public_inputs), Some(proof_bytes(&p)));
    line.publish_proof(proof).await;
    line.assert_refused("invalid").await;
}

#[tokio::test(start_paused = true)]
async fn a_wrong_public_input_is_refused() {
    let mut line = line().await;
    let proof = line.proof(Some(vec![groth16::encode_fr(41)]), None);
    line.publish_proof(proof).await;
    line.assert_refused("invalid").await;
}

#[tokio::test(start_paused = true)]
async fn a_proof_under_the_wrong_key_is_refused() {
    let mut line = line().await;
    let made = common::Prover::new(99).prove(5, 8);
    let proof = line.proof(Some(made.public_inputs), Some(made.proof));
    line.publish_proof(proof).await;
    line.assert_refused("invalid").await;
}

#[tokio::test(start_paused = true)]
async fn malformed_bytes_are_refused() {
    let line = line().await;
    line.publish(b"\x0a\xff\xff\xff junk".to_vec(), line.key_id)
        .await;
    line.assert_refused("malformed").await;
}

#[tokio::test(start_paused = true)]
async fn a_point_off_the_curve_is_refused() {
    let mut line = line().await;
    let mut data = line.prover.prove(5, 8).proof;
    // Move C's x until no y exists for it.
    loop {
        data[96] = data[96].wrapping_add(1);
        if decode_proof(&data).is_err_and(|e| e.reason() == "not_on_curve") {
            break;
        }
    }
    let proof = line.proof(None, Some(data));
    line.publish_proof(proof).await;
    line.assert_refused("not_on_curve").await;
}

#[tokio::test(start_paused = true)]
async fn a_point_outside_the_subgroup_is_refused() {
    let mut line = line().await;
    let mut data = line.prover.prove(5, 8).proof;
    let off = (1u64..)
        .filter_map(|i| {
            G2Affine::get_point_from_x_unchecked(Fq2::new(Fq::from(i), Fq::from(1u8)), false)
        })
        .find(|p| !p.is_in_correct_subgroup_assuming_on_curve())
        .unwrap();
    let mut b = Vec::new();
    off.serialize_compressed(&mut b).unwrap();
    data[32..96].copy_from_slice(&b);
    let proof = line.proof(None, Some(data));
    line.publish_proof(proof).await;
    line.assert_refused("not_in_subgroup").await;
}

#[tokio::test(start_paused = true)]
async fn a_non_canonical_field_element_is_refused() {
    let mut line = line().await;
    let r =
        hex::decode("010000f093f5e1439170b97948e833285d588181b64550b829a031e1724e6430").unwrap();
    let proof = line.proof(Some(vec![r]), None);
    line.publish_proof(proof).await;
    line.assert_refused("non_canonical_field").await;
}

/// Serves `answer` to every proof-sharing request the attacker receives.
async fn serve(attacker: &Network, answer: impl Fn(&[u8]) -> Vec<u8> + Send + 'static) {
    let mut requests = attacker.serve(PROTOCOL).await.unwrap();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let body = answer(&request.body);
            request.respond(body);
        }
    });
}

#[tokio::test(start_paused = true)]
async fn a_body_that_does_not_match_its_id_is_refused() {
    let mut line = line().await;
    let other = line.proof(None, None);
    serve(&line.attacker, move |_| {
        pb::Response {
            kind: Some(pb::response::Kind::Proof(
                pb::Proof::decode(other.encode().as_slice()).unwrap(),
            )),
        }
        .encode_to_vec()
    })
    .await;
    let claimed = ContentId::of(b"some other proof");
    let announcement = Announcement::Reference {
        proof_id: claimed,
        verification_key_id: line.key_id,
        size: 300,
    };
    line.publish(announcement.encode(), line.key_id).await;
    line.assert_refused("id_mismatch").await;
}

#[tokio::test(start_paused = true)]
async fn a_proof_of_an_unknown_system_is_refused() {
    let mut line = line().await;
    // A key of system 99, served by the attacker when the victim asks for it.
    let foreign = VerificationKey {
        system: ProofSystem(99),
        key: line.key.key.clone(),
    };
    let foreign_id = foreign.id();
    serve(&line.attacker, move |_| {
        pb::Response {
            kind: Some(pb::response::Kind::VerificationKey(pb::VerificationKey {
                system: 99,
                key: foreign.key.clone(),
            })),
        }
        .encode_to_vec()
    })
    .await;
    // The victim follows that key too (it does not hold it).
    std::mem::forget(line.victim.subscribe_to_proofs(foreign_id).await.unwrap());
    std::mem::forget(line.observer.subscribe_to_proofs(foreign_id).await.unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let made = line.prover.prove(5, 8);
    let proof = ProofMessage::new(
        foreign_id,
        ProofSystem(99),
        made.public_inputs,
        made.proof,
        Default::default(),
    )
    .unwrap();
    line.publish_proof(proof).await;
    line.assert_refused("unknown_system").await;
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_invalid_proofs_is_never_forwarded_and_honest_proofs_still_pass() {
    let mut line = line().await;
    let honest_net = line.observer_net.clone();
    let _ = honest_net;
    // The attacker floods; an honest prover behind the observer publishes meanwhile.
    let made: Vec<_> = (0..40).map(|i| line.prover.prove(i + 2, 3)).collect();
    for m in &made {
        let proof = line.proof(Some(vec![groth16::encode_fr(1)]), Some(m.proof.clone()));
        line.attacker
            .publish(
                &proof_topic(&line.key_id),
                ANNOUNCEMENT_TYPE,
                Announcement::Inline(proof).encode(),
            )
            .await
            .unwrap();
    }
    let honest: Vec<ContentId> = {
        let mut ids = Vec::new();
        for i in 0..10 {
            let m = line.prover.prove(i + 100, 7);
            let proof = ProofMessage::new(
                line.key_id,
                GROTH16,
                m.public_inputs,
                m.proof,
                Default::default(),
            )
            .unwrap();
            ids.push(line.observer.store_proof(proof).await.unwrap());
        }
        for id in &ids {
            line.observer.announce_proof(*id).await.unwrap();
        }
        ids
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let victim = line.victim.stats().await.unwrap();
    assert_eq!(victim.verified, 10, "every honest proof verified");
    for id in honest {
        assert!(line.victim.request_proof(id, vec![]).await.is_ok());
    }
    // The observer saw only its own proofs: nothing of the flood was forwarded.
    let observer = line.observer.stats().await.unwrap();
    assert!(observer.rejected.is_empty(), "{:?}", observer.rejected);
    // The attacker was banned after a few, so most of the flood cost no verification.
    assert!(line.victim_net.is_banned(&line.attacker.local_peer_id()));
    let refused: u64 = victim.rejected.values().sum();
    assert!(refused <= 16, "verified {refused} of the flood");
    assert!(victim.quarantined > 0);
}

#[tokio::test(start_paused = true)]
async fn a_batch_of_64_with_one_bad_proof_accepts_the_63() {
    // Let one originator fill a batch (the default caps it at 16).
    let mut line = line_with(64).await;
    let mut events = line.observer.events();
    let mut good = Vec::new();
    for i in 0..64u64 {
        let mut proof = line.proof(None, None);
        if i == 41 {
            proof = line.proof(Some(vec![groth16::encode_fr(3)]), None);
        } else {
            good.push(proof.proof_id);
        }
        line.attacker
            .publish(
                &proof_topic(&line.key_id),
                ANNOUNCEMENT_TYPE,
                Announcement::Inline(proof).encode(),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = line.victim.stats().await.unwrap();
    assert_eq!(stats.verified, 63);
    assert_eq!(stats.rejected.get("invalid"), Some(&1));
    assert!(stats.batches <= 2, "{} batches", stats.batches);
    // The observer got exactly the 63, verified them, and nothing else.
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::Verified { proof, .. } = event {
            seen.push(proof.proof_id);
        }
    }
    seen.sort();
    good.sort();
    assert_eq!(seen, good);
    assert!(line.observer.stats().await.unwrap().rejected.is_empty());
}

/// Serves `batch` (its encoding, as is) to every request.
async fn serve_batch(attacker: &Network, encoding: Vec<u8>) {
    serve(attacker, move |_| {
        pb::Response {
            kind: Some(pb::response::Kind::Batch(pb::PackedBatch {
                codec: 0,
                size: encoding.len() as u64,
                data: encoding.clone(),
            })),
        }
        .encode_to_vec()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_batch_with_one_false_proof_keeps_the_63_and_is_not_forwarded() {
    let mut line = line().await;
    let mut proofs: Vec<ProofMessage> = (0..64).map(|_| line.proof(None, None)).collect();
    proofs[20] = line.proof(Some(vec![groth16::encode_fr(2)]), None);
    let batch = Batch::new(proofs.clone()).unwrap();
    serve_batch(&line.attacker, batch.encode()).await;
    let announcement = Announcement::Batch {
        batch_id: batch.id(),
        verification_key_id: line.key_id,
        root: batch.root(),
        count: 64,
        size: batch.encode().len() as u64,
    };
    line.publish(announcement.encode(), line.key_id).await;
    let stats = line.victim.stats().await.unwrap();
    assert_eq!(stats.batches_pulled, 1);
    assert_eq!(stats.verified, 63);
    assert_eq!(stats.rejected.get("invalid"), Some(&1));
    for (i, p) in proofs.iter().enumerate() {
        let kept = line.victim.request_proof(p.proof_id, vec![]).await.is_ok();
        assert_eq!(kept, i != 20, "proof {i}");
    }
    // The batch announcement went no further.
    assert_eq!(line.observer_net.metrics().delivered, 0);
    assert_eq!(line.observer.stats().await.unwrap().batches_pulled, 0);
}

#[tokio::test(start_paused = true)]
async fn a_batch_whose_root_or_id_does_not_match_is_refused() {
    let mut line = line().await;
    let proofs: Vec<ProofMessage> = (0..4).map(|_| line.proof(None, None)).collect();
    let batch = Batch::new(proofs).unwrap();
    serve_batch(&line.attacker, batch.encode()).await;
    let announcement = Announcement::Batch {
        batch_id: batch.id(),
        verification_key_id: line.key_id,
        root: [7; 32],
        count: 4,
        size: 1000,
    };
    line.publish(announcement.encode(), line.key_id).await;
    line.assert_refused("id_mismatch").await;
}

/// Under the attested policy, attestations from a verifier the view does not assign a part
/// to do not count: a batch with a false proof, "attested" by the attacker itself, is still
/// judged (here, verified locally once the real assignees' attestations are overdue).
#[tokio::test(start_paused = true)]
async fn attestations_from_unassigned_keys_do_not_count() {
    use causality_proofshare::part_id;
    use causality_proofshare::{AcceptPolicy, Ack};
    let sim = MemoryNetwork::new(9);
    // Two identities of one attacker (a Sybil pair: k = 2 attestations per part).
    let (attacker, sybil, victim_net) = (sim.add_node(), sim.add_node(), sim.add_node());
    for a in [&attacker, &sybil] {
        a.dial(victim_net.listen_addresses()[0].clone())
            .await
            .unwrap();
    }
    // The victim's verifier view: itself and ten peers that are not online (so most parts
    // are assigned to others, whose attestations never come).
    let absent: Vec<_> = (0..10)
        .map(|i| causality_net::Keypair::from_index(900 + i).peer_id())
        .collect();
    let mut view: std::collections::BTreeSet<_> = absent.iter().copied().collect();
    view.insert(victim_net.local_peer_id());
    let (_tx, rx) = tokio::sync::watch::channel(std::sync::Arc::new(view));
    let victim = ProofShare::start_with(
        victim_net.clone(),
        Config {
            accept: AcceptPolicy::Attested {
                k: 2,
                part_size: 2,
                timeout_ms: 2000,
            },
            seed: [4; 32],
            ..Config::default()
        },
        Verifiers::standard(),
        Box::new(MemoryStore::new()),
        causality_proofshare::Options {
            view: Some(rx),
            discovery: None,
        },
    )
    .await
    .unwrap();
    let mut prover = common::Prover::new(21);
    let key_id = victim
        .store_key(VerificationKey {
            system: GROTH16,
            key: prover.key.clone(),
        })
        .await
        .unwrap();
    std::mem::forget(victim.subscribe_to_proofs(key_id).await.unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut proofs: Vec<ProofMessage> = (0..8)
        .map(|i| {
            let m = prover.prove(i + 2, 3);
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
    proofs[5].public_inputs = vec![groth16::encode_fr(9)];
    let proofs: Vec<ProofMessage> = proofs
        .into_iter()
        .map(|p| {
            ProofMessage::new(
                key_id,
                GROTH16,
                p.public_inputs,
                p.proof_data,
                Default::default(),
            )
            .unwrap()
        })
        .collect();
    let batch = Batch::new(proofs).unwrap();
    serve_batch(&attacker, batch.encode()).await;
    // Both identities "attest" every part, then one announces the batch.
    for identity in [&attacker, &sybil] {
        for part in 0..4u32 {
            let ack = Ack::sign(identity.keypair(), part_id(&batch.id(), part), 0);
            let attestation = Announcement::Attestation {
                batch_id: batch.id(),
                verification_key_id: key_id,
                part,
                ack,
            };
            identity
                .publish(
                    &proof_topic(&key_id),
                    ANNOUNCEMENT_TYPE,
                    attestation.encode(),
                )
                .await
                .unwrap();
        }
    }
    let announcement = Announcement::Batch {
        batch_id: batch.id(),
        verification_key_id: key_id,
        root: batch.root(),
        count: 8,
        size: batch.encode().len() as u64,
    };
    attacker
        .publish(
            &proof_topic(&key_id),
            ANNOUNCEMENT_TYPE,
            announcement.encode(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stats = victim.stats().await.unwrap();
    assert!(stats.attestations_received >= 8, "{stats:?}");
    assert_eq!(
        stats.attested, 0,
        "an unassigned attestation counted: {stats:?}"
    );
    assert_eq!(stats.rejected.get("invalid"), Some(&1), "{stats:?}");
    assert_eq!(stats.verified, 7);
}
