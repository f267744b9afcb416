//! Proof-carrying register classes with real Groth16 proofs: an update applies only once
//! proof sharing has fetched and verified its proof under the class's key and the proof
//! binds that very update.

use std::time::Duration;

use ark_bn254::{Bn254, Fr};
use ark_ff::PrimeField;
use ark_groth16::{Groth16, ProvingKey};
use ark_relations::lc;
use ark_relations::r1cs::{ConstraintSynthesizer, ConstraintSystemRef, SynthesisError, Variable};
use ark_snark::SNARK;
use ark_std::rand::SeedableRng;
use ark_std::rand::rngs::StdRng;
use causality_hash::ContentId;
use causality_net::{MemoryNetwork, Network};
use causality_proofshare::groth16::{fr_bytes, key_bytes_of, proof_bytes};
use causality_proofshare::{ProofMessage, ProofShare, ProofSystem, VerificationKey, Verifiers};
use causality_regsync::{
    ClassRules, Config, Genesis, MemoryStore, Operation, Options, RegSync, Register,
    RegisterContents, SyncError, UpdateError, binding,
};

/// Knowledge of `w` with `w · 1 = x`, `x` public: the smallest circuit whose proofs carry
/// one chosen public input (the update's binding).
#[derive(Clone, Copy)]
struct Bind {
    x: Option<Fr>,
}

impl ConstraintSynthesizer<Fr> for Bind {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let w = cs.new_witness_variable(|| self.x.ok_or(SynthesisError::AssignmentMissing))?;
        let x = cs.new_input_variable(|| self.x.ok_or(SynthesisError::AssignmentMissing))?;
        cs.enforce_constraint(lc!() + w, lc!() + Variable::One, lc!() + x)?;
        Ok(())
    }
}

struct Prover {
    pk: ProvingKey<Bn254>,
    rng: StdRng,
    key: VerificationKey,
}

impl Prover {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let (pk, vk) =
            Groth16::<Bn254>::circuit_specific_setup(Bind { x: None }, &mut rng).unwrap();
        Self {
            pk,
            rng,
            key: VerificationKey {
                system: ProofSystem::GROTH16_BN254,
                key: key_bytes_of(&vk),
            },
        }
    }

    fn prove(&mut self, binding: [u8; 32]) -> ProofMessage {
        let x = Fr::from_le_bytes_mod_order(&binding);
        assert_eq!(
            fr_bytes(&x),
            binding.to_vec(),
            "a binding is a canonical field element"
        );
        let proof = Groth16::<Bn254>::prove(&self.pk, Bind { x: Some(x) }, &mut self.rng).unwrap();
        ProofMessage::new(
            self.key.id(),
            ProofSystem::GROTH16_BN254,
            vec![fr_bytes(&x)],
            proof_bytes(&proof),
            Default::default(),
        )
        .unwrap()
    }
}

fn balance(amount: u64) -> RegisterContents {
    RegisterContents::TokenBalance {
        token: "ZK".into(),
        amount,
    }
}

async fn start(net: &Network, key: ContentId) -> (ProofShare, RegSync) {
    let share = ProofShare::start(
        net.clone(),
        causality_proofshare::Config::default(),
        Verifiers::standard(),
        Box::new(causality_proofshare::MemoryStore::new()),
    )
    .await
    .unwrap();
    let config = Config {
        classes: [(
            "zk".to_owned(),
            ClassRules {
                critical: false,
                proof_key: Some(key),
            },
        )]
        .into(),
        ..Config::default()
    };
    let sync = RegSync::start_with(
        net.clone(),
        config,
        Box::new(MemoryStore::new()),
        Options {
            proofs: Some(share.clone()),
        },
    )
    .await
    .unwrap();
    (share, sync)
}

async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_of_a_proof_carrying_class_apply_only_with_a_proof_that_binds_them() {
    let mut prover = Prover::new(5);
    let key_id = prover.key.id();
    let sim = MemoryNetwork::new(9);
    let (a_net, b_net) = (sim.add_node(), sim.add_node());
    b_net
        .dial(a_net.listen_addresses()[0].clone())
        .await
        .unwrap();
    let (a_share, a) = start(&a_net, key_id).await;
    let (_b_share, b) = start(&b_net, key_id).await;
    a_share.store_key(prover.key.clone()).await.unwrap();
    b.follow_domain("zk-pay").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The creation, with a proof bound to the state it creates.
    let genesis = Genesis::new(a.local_peer_id(), "zk-pay", "zk", b"first");
    let id = genesis.id();
    let created = Register::created(genesis.clone(), balance(10), 1);
    let proof = a_share
        .store_proof(prover.prove(binding(&id, &created.state_hash())))
        .await
        .unwrap();
    let refused = a.create_register(genesis.clone(), balance(10), 1).await;
    assert!(
        matches!(
            refused,
            Err(SyncError::Update(UpdateError::MissingProof(_)))
        ),
        "{refused:?}"
    );
    let hash = a
        .create_register_with_proof(genesis, balance(10), 1, Some(proof))
        .await
        .unwrap();
    assert_eq!(hash, created.state_hash());
    eventually("b verifies the proof and applies the creation", || async {
        b.verify_register_state(id, hash).await.unwrap()
    })
    .await;

    // A valid proof of another update does not carry this one — here or anywhere.
    let ops = vec![Operation::Update(balance(7))];
    let next = a.preview_update(id, ops.clone(), 2).await.unwrap();
    let stale = a_share
        .store_proof(prover.prove(binding(&id, &hash)))
        .await
        .unwrap();
    let refused = a
        .update_register_with_proof(id, ops.clone(), 2, Some(stale))
        .await;
    assert!(
        matches!(&refused, Err(SyncError::Update(UpdateError::InvalidProof { reason, .. })) if reason.contains("bind")),
        "{refused:?}"
    );
    // A proof under another key does not either.
    let mut other = Prover::new(6);
    a_share.store_key(other.key.clone()).await.unwrap();
    let foreign = a_share
        .store_proof(other.prove(binding(&id, &next)))
        .await
        .unwrap();
    let refused = a
        .update_register_with_proof(id, ops.clone(), 2, Some(foreign))
        .await;
    assert!(
        matches!(
            refused,
            Err(SyncError::Update(UpdateError::InvalidProof { .. }))
        ),
        "{refused:?}"
    );
    assert!(
        a.verify_register_state(id, hash).await.unwrap(),
        "state unchanged"
    );

    // The right proof: applied here and at b.
    let good = a_share
        .store_proof(prover.prove(binding(&id, &next)))
        .await
        .unwrap();
    let applied = a
        .update_register_with_proof(id, ops, 2, Some(good))
        .await
        .unwrap();
    assert_eq!(applied, next);
    eventually("b applies the update", || async {
        b.verify_register_state(id, next).await.unwrap()
    })
    .await;
    let stats = b.stats().await.unwrap();
    assert_eq!(stats.rejected, 0);
}
