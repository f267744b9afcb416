//! Stores that outlive the state machines using them: what a simulated node persisted
//! survives its crash, the way RocksDB's files do, and its restart resumes from them.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use causality_exec::{
    ExecStore, ExecutionSequence, ExecutionSequenceMessage, NodeResult, SequenceId,
    StoreError as ExecStoreError,
};
use causality_hash::ContentId;
use causality_net::PeerId;
use causality_proofshare::{Ack, ProofMessage, ProofShareError, ProofStore, VerificationKey};
use causality_regsync::{
    Commit, DoubleUse, Fork, Head, NullifierUse, Register, RegisterDelta, RegisterId,
    RegisterStore, StateHash, StoreError, TimeMap, UpdateHeader,
};

/// A store shared between the state machine that writes it and whoever keeps it across
/// restarts. Cloning shares it.
#[derive(Debug, Default)]
pub struct Shared<S>(Arc<Mutex<S>>);

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<S> Shared<S> {
    /// Shares `store`.
    pub fn new(store: S) -> Self {
        Self(Arc::new(Mutex::new(store)))
    }

    /// The store, locked. A panic while it was locked (there are none in the simulation)
    /// leaves it as the last write left it.
    pub fn lock(&self) -> MutexGuard<'_, S> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One node's persistent stores.
#[derive(Clone, Debug, Default)]
pub struct Stores {
    /// Proof sharing's keys, proofs and acknowledgements.
    pub proofs: Shared<causality_proofshare::MemoryStore>,
    /// Register sync's registers, nullifiers and evidence.
    pub registers: Shared<causality_regsync::MemoryStore>,
    /// Execution's sequences, terms and accepted results.
    pub exec: Shared<causality_exec::MemoryStore>,
}

impl<S: ProofStore> ProofStore for Shared<S> {
    fn put_key(&mut self, key: &VerificationKey) -> Result<(), ProofShareError> {
        self.lock().put_key(key)
    }
    fn key(&self, id: &ContentId) -> Result<Option<VerificationKey>, ProofShareError> {
        self.lock().key(id)
    }
    fn put_proof(&mut self, proof: &ProofMessage, received_ms: u64) -> Result<(), ProofShareError> {
        self.lock().put_proof(proof, received_ms)
    }
    fn proof(&self, id: &ContentId) -> Result<Option<ProofMessage>, ProofShareError> {
        self.lock().proof(id)
    }
    fn has_proof(&self, id: &ContentId) -> Result<bool, ProofShareError> {
        self.lock().has_proof(id)
    }
    fn proofs_since(
        &self,
        key: &ContentId,
        since_ms: u64,
        limit: usize,
    ) -> Result<(Vec<(ContentId, u64)>, bool), ProofShareError> {
        self.lock().proofs_since(key, since_ms, limit)
    }
    fn put_ack(&mut self, ack: &Ack) -> Result<bool, ProofShareError> {
        self.lock().put_ack(ack)
    }
    fn acks(&self, proof: &ContentId) -> Result<Vec<Ack>, ProofShareError> {
        self.lock().acks(proof)
    }
    fn put_batch(&mut self, id: &ContentId, encoding: &[u8]) -> Result<(), ProofShareError> {
        self.lock().put_batch(id, encoding)
    }
    fn batch(&self, id: &ContentId) -> Result<Option<Vec<u8>>, ProofShareError> {
        self.lock().batch(id)
    }
}

impl<S: RegisterStore> RegisterStore for Shared<S> {
    fn commit(&mut self, commit: Commit) -> Result<(), StoreError> {
        self.lock().commit(commit)
    }
    fn head(&self, id: &RegisterId) -> Result<Option<Head>, StoreError> {
        self.lock().head(id)
    }
    fn header(&self, state: &StateHash) -> Result<Option<UpdateHeader>, StoreError> {
        self.lock().header(state)
    }
    fn state(&self, state: &StateHash) -> Result<Option<Register>, StoreError> {
        self.lock().state(state)
    }
    fn delta(&self, state: &StateHash) -> Result<Option<RegisterDelta>, StoreError> {
        self.lock().delta(state)
    }
    fn credit(&self, child: &RegisterId) -> Result<Option<(String, u64)>, StoreError> {
        self.lock().credit(child)
    }
    fn merged(&self, source: &RegisterId) -> Result<bool, StoreError> {
        self.lock().merged(source)
    }
    fn fence(&self, register: &RegisterId, key: &ContentId) -> Result<Option<u64>, StoreError> {
        self.lock().fence(register, key)
    }
    fn domain_heads(&self, domain: &str) -> Result<Vec<(RegisterId, StateHash)>, StoreError> {
        self.lock().domain_heads(domain)
    }
    fn domains(&self) -> Result<Vec<String>, StoreError> {
        self.lock().domains()
    }
    fn forks(&self, id: &RegisterId) -> Result<Vec<Fork>, StoreError> {
        self.lock().forks(id)
    }
    fn nullifier(
        &self,
        domain: &str,
        nullifier: &[u8; 32],
    ) -> Result<Option<NullifierUse>, StoreError> {
        self.lock().nullifier(domain, nullifier)
    }
    fn put_nullifier(
        &mut self,
        accepted: &NullifierUse,
        evidence: Option<&DoubleUse>,
    ) -> Result<(), StoreError> {
        self.lock().put_nullifier(accepted, evidence)
    }
    fn nullifiers(&self, domain: &str) -> Result<Vec<NullifierUse>, StoreError> {
        self.lock().nullifiers(domain)
    }
    fn double_uses(&self, domain: &str) -> Result<Vec<DoubleUse>, StoreError> {
        self.lock().double_uses(domain)
    }
    fn time_map(&self, domain: &str) -> Result<TimeMap, StoreError> {
        self.lock().time_map(domain)
    }
    fn put_time_map(&mut self, domain: &str, map: &TimeMap) -> Result<(), StoreError> {
        self.lock().put_time_map(domain, map)
    }
    fn chunk(&self, id: &ContentId) -> Result<Option<Vec<u8>>, StoreError> {
        self.lock().chunk(id)
    }
    fn put_chunk(&mut self, bytes: &[u8]) -> Result<ContentId, StoreError> {
        self.lock().put_chunk(bytes)
    }
}

impl<S: ExecStore> ExecStore for Shared<S> {
    fn put_sequence(&mut self, sequence: &ExecutionSequence) -> Result<(), ExecStoreError> {
        self.lock().put_sequence(sequence)
    }
    fn sequences(&self) -> Result<Vec<ExecutionSequence>, ExecStoreError> {
        self.lock().sequences()
    }
    fn put_term(&mut self, id: &SequenceId, term: u64) -> Result<(), ExecStoreError> {
        self.lock().put_term(id, term)
    }
    fn term(&self, id: &SequenceId) -> Result<u64, ExecStoreError> {
        self.lock().term(id)
    }
    fn put_results(&mut self, results: &[NodeResult]) -> Result<(), ExecStoreError> {
        self.lock().put_results(results)
    }
    fn results(&self, id: &SequenceId) -> Result<Vec<NodeResult>, ExecStoreError> {
        self.lock().results(id)
    }
    fn put_replicas(&mut self, id: &SequenceId, replicas: &[PeerId]) -> Result<(), ExecStoreError> {
        self.lock().put_replicas(id, replicas)
    }
    fn replicas(&self, id: &SequenceId) -> Result<Option<Vec<PeerId>>, ExecStoreError> {
        self.lock().replicas(id)
    }
    fn put_statement(
        &mut self,
        statement: &ExecutionSequenceMessage,
    ) -> Result<(), ExecStoreError> {
        self.lock().put_statement(statement)
    }
    fn statement(
        &self,
        id: &SequenceId,
    ) -> Result<Option<ExecutionSequenceMessage>, ExecStoreError> {
        self.lock().statement(id)
    }
}
