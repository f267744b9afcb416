//! Distributed proof generation with real Groth16 proofs: proving work is leased to
//! prover executors, whose proofs are verified through proof sharing before a result is
//! accepted; a prover that proves the wrong statement is refused and the job re-issued.

use std::sync::Arc;
use std::time::Duration;

use ark_bn254::{Bn254, Fr};
use ark_ff::PrimeField;
use ark_groth16::{Groth16, ProvingKey};
use ark_relations::lc;
use ark_relations::r1cs::{ConstraintSynthesizer, ConstraintSystemRef, SynthesisError, Variable};
use ark_snark::SNARK;
use ark_std::rand::SeedableRng;
use ark_std::rand::rngs::StdRng;
use causality_exec::{
    Config, Coordinator, ExecOutput, ExecutionSequence, ExecutionStatus, Executor, ExecutorInfo,
    ExecutorView, Options, WorkSpec,
};
use causality_net::MemoryNetwork;
use causality_proofshare::groth16::{fr_bytes, key_bytes_of, proof_bytes};
use causality_proofshare::{ProofMessage, ProofShare, ProofSystem, VerificationKey, Verifiers};

/// Knowledge of `w` with `w · 1 = x`, `x` public.
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

/// Proves the work's input (one field element) and stores the proof in proof sharing.
struct Prover {
    pk: ProvingKey<Bn254>,
    key_id: causality_hash::ContentId,
    share: ProofShare,
    /// Proves another statement than the one asked (a faulty prover).
    lies: bool,
}

#[async_trait::async_trait]
impl Executor for Prover {
    async fn execute(&self, _: &WorkSpec, _: &[Vec<u8>]) -> Result<ExecOutput, String> {
        Err("a proving job needs its witness".into())
    }

    /// Proves with the witness that travelled sealed to this prover alone.
    async fn execute_with_witness(
        &self,
        work: &WorkSpec,
        _: &[Vec<u8>],
        witness: Option<&[u8]>,
    ) -> Result<ExecOutput, String> {
        let witness = witness.ok_or("no witness")?;
        let mut input = Fr::from_le_bytes_mod_order(witness);
        if input != Fr::from_le_bytes_mod_order(&work.input) {
            return Err("the witness does not satisfy the statement".into());
        }
        if self.lies {
            input += Fr::from(1u64);
        }
        let mut rng = StdRng::seed_from_u64(7);
        let proof = Groth16::<Bn254>::prove(&self.pk, Bind { x: Some(input) }, &mut rng)
            .map_err(|e| e.to_string())?;
        let message = ProofMessage::new(
            self.key_id,
            ProofSystem::GROTH16_BN254,
            vec![fr_bytes(&input)],
            proof_bytes(&proof),
            Default::default(),
        )
        .map_err(|e| e.to_string())?;
        let proof_id = self
            .share
            .store_proof(message)
            .await
            .map_err(|e| e.to_string())?;
        Ok(ExecOutput {
            output: proof_id.as_bytes().to_vec(),
            proof_id: Some(proof_id),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proving_jobs_are_accepted_only_with_a_proof_that_verifies_for_their_inputs() {
    let mut rng = StdRng::seed_from_u64(3);
    let (pk, vk) = Groth16::<Bn254>::circuit_specific_setup(Bind { x: None }, &mut rng).unwrap();
    let key = VerificationKey {
        system: ProofSystem::GROTH16_BN254,
        key: key_bytes_of(&vk),
    };
    let key_id = key.id();
    let sim = MemoryNetwork::new(4);
    let nets: Vec<_> = (0..3).map(|_| sim.add_node()).collect();
    for i in 1..3 {
        nets[i]
            .dial(nets[0].listen_addresses()[0].clone())
            .await
            .unwrap();
    }
    nets[2]
        .dial(nets[1].listen_addresses()[0].clone())
        .await
        .unwrap();
    let kind = format!("prove:{key_id}");
    let info = ExecutorInfo {
        kinds: [kind.clone()].into(),
        capacity: 2,
    };
    let view: ExecutorView = Arc::new(
        nets.iter()
            .map(|n| (n.local_peer_id(), info.clone()))
            .collect(),
    );
    let (_tx, rx) = tokio::sync::watch::channel(view);
    let mut nodes = Vec::new();
    for (i, net) in nets.iter().enumerate() {
        let share = ProofShare::start(
            net.clone(),
            Default::default(),
            Verifiers::standard(),
            Box::new(causality_proofshare::MemoryStore::new()),
        )
        .await
        .unwrap();
        share.store_key(key.clone()).await.unwrap();
        // Node 1 proves the wrong statement.
        let prover = Prover {
            pk: pk.clone(),
            key_id,
            share: share.clone(),
            lies: i == 1,
        };
        let config = Config {
            executor: info.clone(),
            hedge_factor: 0,
            ..Config::default()
        };
        let options = Options {
            proofs: Some(share),
            ..Options::default()
        };
        nodes.push(
            Coordinator::start_with(net.clone(), config, rx.clone(), Arc::new(prover), options)
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let jobs = (0..6u64).map(|i| {
        let x = fr_bytes(&Fr::from(1000 + i));
        let mut work = WorkSpec::new(kind.clone(), x);
        work.proof_key = Some(key_id);
        (i as u32, work)
    });
    let mut sequence = ExecutionSequence::new(nets[0].local_peer_id(), b"proofs", jobs, Vec::new());
    // The witnesses travel sealed: to the replicas, then to each lease's holder alone.
    let secrets = (0..6u64)
        .map(|i| (i as u32, fr_bytes(&Fr::from(1000 + i))))
        .collect();
    nodes[0]
        .seal_witnesses(&mut sequence, secrets)
        .await
        .unwrap();
    let outsider = causality_net::Keypair::from_index(999);
    for sealed in sequence.witnesses.values() {
        assert!(
            causality_net::seal::open(sealed, &outsider).is_err(),
            "only the replicas can open a witness"
        );
        assert!(causality_net::seal::open(sealed, nets[2].keypair()).is_ok());
    }
    let id = sequence.id();
    let mut monitor = nodes[0].monitor_sequence(id).await.unwrap();
    nodes[0].announce_sequence(sequence).await.unwrap();
    let mut statements = Vec::new();
    while let Some(s) = tokio::time::timeout(Duration::from_secs(60), monitor.next())
        .await
        .unwrap()
    {
        statements.push(s);
    }
    let last = statements.last().cloned().unwrap();
    assert_eq!(last.status, ExecutionStatus::Completed, "{last:?}");
    let liar = nets[1].local_peer_id();
    let accepted: Vec<_> = statements.iter().flat_map(|s| s.results.iter()).collect();
    assert_eq!(accepted.len(), 6, "every job accepted once");
    for r in &accepted {
        assert_ne!(
            r.token.holder, liar,
            "no proof of the wrong statement accepted"
        );
        assert!(r.proof_id.is_some());
    }
    let stats: Vec<_> = futures::future::join_all(nodes.iter().map(|n| n.stats())).await;
    let refused: u64 = stats.iter().map(|s| s.as_ref().unwrap().refused).sum();
    let retries: u64 = stats.iter().map(|s| s.as_ref().unwrap().retries).sum();
    // The liar was leased some jobs (rendezvous spreads them), each refused and re-issued.
    assert!(refused >= 1 && retries >= 1, "{stats:?}");
}
