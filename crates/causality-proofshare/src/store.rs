//! Where a node keeps proofs, verification keys and acknowledgements: in memory, or in
//! RocksDB (feature `rocksdb`) in its own column families, possibly inside a database the
//! node shares with other crates.
//!
//! Only verified proofs and checked keys are stored; the store trusts its caller for that
//! and checks nothing itself. Writes of one proof (body and index entry) are atomic.

use std::collections::{BTreeMap, HashMap};

use causality_hash::ContentId;
use causality_net::PeerId;

use crate::error::ProofShareError;
use crate::messages::{Ack, ProofMessage, VerificationKey};

/// Most acknowledgements kept per proof (one per distinct verifier).
pub const MAX_ACKS_PER_PROOF: usize = 64;

/// Storage for proof sharing. Implementations must be durable once a call returns `Ok`
/// (as durable as their configured sync policy).
pub trait ProofStore: Send + 'static {
    /// Stores a checked verification key under its id.
    fn put_key(&mut self, key: &VerificationKey) -> Result<(), ProofShareError>;
    /// A key by id.
    fn key(&self, id: &ContentId) -> Result<Option<VerificationKey>, ProofShareError>;
    /// Stores a verified proof, received at `received_ms`, and indexes it under its key.
    fn put_proof(&mut self, proof: &ProofMessage, received_ms: u64) -> Result<(), ProofShareError>;
    /// A proof by id.
    fn proof(&self, id: &ContentId) -> Result<Option<ProofMessage>, ProofShareError>;
    /// Whether the proof is stored.
    fn has_proof(&self, id: &ContentId) -> Result<bool, ProofShareError> {
        Ok(self.proof(id)?.is_some())
    }
    /// Up to `limit` proof ids under `key` received at or after `since_ms`, oldest first,
    /// with their receipt times; and whether more follow.
    fn proofs_since(
        &self,
        key: &ContentId,
        since_ms: u64,
        limit: usize,
    ) -> Result<(Vec<(ContentId, u64)>, bool), ProofShareError>;
    /// Records a checked acknowledgement (one per verifier per proof; at most
    /// [`MAX_ACKS_PER_PROOF`]). Returns whether it was new.
    fn put_ack(&mut self, ack: &Ack) -> Result<bool, ProofShareError>;
    /// The acknowledgements of a proof.
    fn acks(&self, proof: &ContentId) -> Result<Vec<Ack>, ProofShareError>;
    /// Stores a verified batch's canonical encoding under its id (its proofs are stored
    /// one by one too).
    fn put_batch(&mut self, id: &ContentId, encoding: &[u8]) -> Result<(), ProofShareError>;
    /// A batch's encoding by id.
    fn batch(&self, id: &ContentId) -> Result<Option<Vec<u8>>, ProofShareError>;
}

/// An in-memory store (tests, simulations, nodes that need no persistence).
#[derive(Debug, Default)]
pub struct MemoryStore {
    keys: HashMap<ContentId, VerificationKey>,
    proofs: HashMap<ContentId, ProofMessage>,
    index: BTreeMap<(ContentId, u64, ContentId), ()>,
    acks: HashMap<ContentId, BTreeMap<PeerId, Ack>>,
    batches: HashMap<ContentId, Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ProofStore for MemoryStore {
    fn put_key(&mut self, key: &VerificationKey) -> Result<(), ProofShareError> {
        self.keys.insert(key.id(), key.clone());
        Ok(())
    }

    fn key(&self, id: &ContentId) -> Result<Option<VerificationKey>, ProofShareError> {
        Ok(self.keys.get(id).cloned())
    }

    fn put_proof(&mut self, proof: &ProofMessage, received_ms: u64) -> Result<(), ProofShareError> {
        if self.proofs.insert(proof.proof_id, proof.clone()).is_none() {
            self.index
                .insert((proof.verification_key_id, received_ms, proof.proof_id), ());
        }
        Ok(())
    }

    fn proof(&self, id: &ContentId) -> Result<Option<ProofMessage>, ProofShareError> {
        Ok(self.proofs.get(id).cloned())
    }

    fn proofs_since(
        &self,
        key: &ContentId,
        since_ms: u64,
        limit: usize,
    ) -> Result<(Vec<(ContentId, u64)>, bool), ProofShareError> {
        let lowest = ContentId::from_bytes([0; 32]);
        let highest = ContentId::from_bytes([0xff; 32]);
        let mut range = self
            .index
            .range((*key, since_ms, lowest)..=(*key, u64::MAX, highest))
            .map(|((_, at, id), ())| (*id, *at));
        let ids: Vec<_> = range.by_ref().take(limit).collect();
        Ok((ids, range.next().is_some()))
    }

    fn put_ack(&mut self, ack: &Ack) -> Result<bool, ProofShareError> {
        let acks = self.acks.entry(ack.proof_id).or_default();
        if acks.contains_key(&ack.verifier) || acks.len() >= MAX_ACKS_PER_PROOF {
            return Ok(false);
        }
        acks.insert(ack.verifier, ack.clone());
        Ok(true)
    }

    fn acks(&self, proof: &ContentId) -> Result<Vec<Ack>, ProofShareError> {
        Ok(self
            .acks
            .get(proof)
            .map(|a| a.values().cloned().collect())
            .unwrap_or_default())
    }

    fn put_batch(&mut self, id: &ContentId, encoding: &[u8]) -> Result<(), ProofShareError> {
        self.batches.insert(*id, encoding.to_vec());
        Ok(())
    }

    fn batch(&self, id: &ContentId) -> Result<Option<Vec<u8>>, ProofShareError> {
        Ok(self.batches.get(id).cloned())
    }
}

#[cfg(feature = "rocksdb")]
pub use self::rocks::RocksStore;

#[cfg(feature = "rocksdb")]
mod rocks {
    use std::path::Path;
    use std::sync::Arc;

    use causality_hash::ContentId;
    use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch};

    use super::{MAX_ACKS_PER_PROOF, ProofStore};
    use crate::error::ProofShareError;
    use crate::messages::{Ack, Limits, ProofMessage, VerificationKey};

    const KEYS: &str = "proofshare.keys";
    const PROOFS: &str = "proofshare.proofs";
    /// key id ‖ received ms (BE) ‖ proof id → ().
    const INDEX: &str = "proofshare.index";
    /// proof id ‖ verifier → ack.
    const ACKS: &str = "proofshare.acks";
    /// batch id → canonical encoding.
    const BATCHES: &str = "proofshare.batches";

    fn err(e: impl std::fmt::Display) -> ProofShareError {
        ProofShareError::Store(e.to_string())
    }

    /// A RocksDB store. Reading back what it wrote re-checks sizes and ids, so a corrupt
    /// database gives an error, not a wrong proof.
    #[derive(Debug)]
    pub struct RocksStore {
        db: Arc<DB>,
        limits: Limits,
    }

    impl RocksStore {
        /// Opens (creating if needed) a database at `path` holding just this store.
        pub fn open(path: impl AsRef<Path>) -> Result<Self, ProofShareError> {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            let db = DB::open_cf_descriptors(&opts, path.as_ref(), Self::column_families())
                .map_err(err)?;
            Self::open_in(Arc::new(db))
        }

        /// Uses a shared database opened with [`RocksStore::column_families`] among its own.
        pub fn open_in(db: Arc<DB>) -> Result<Self, ProofShareError> {
            for cf in [KEYS, PROOFS, INDEX, ACKS, BATCHES] {
                if db.cf_handle(cf).is_none() {
                    return Err(err(format!("database lacks column family {cf}")));
                }
            }
            Ok(Self {
                db,
                limits: Limits::default(),
            })
        }

        /// The column families this store needs.
        pub fn column_families() -> Vec<ColumnFamilyDescriptor> {
            [KEYS, PROOFS, INDEX, ACKS, BATCHES]
                .into_iter()
                .map(|cf| ColumnFamilyDescriptor::new(cf, Options::default()))
                .collect()
        }

        fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
            self.db.cf_handle(name).expect("checked at open")
        }
    }

    fn index_key(key: &ContentId, at: u64, proof: &ContentId) -> Vec<u8> {
        let mut k = Vec::with_capacity(72);
        k.extend_from_slice(key.as_bytes());
        k.extend_from_slice(&at.to_be_bytes());
        k.extend_from_slice(proof.as_bytes());
        k
    }

    impl ProofStore for RocksStore {
        fn put_key(&mut self, key: &VerificationKey) -> Result<(), ProofShareError> {
            self.db
                .put_cf(self.cf(KEYS), key.id().as_bytes(), key.encode())
                .map_err(err)
        }

        fn key(&self, id: &ContentId) -> Result<Option<VerificationKey>, ProofShareError> {
            let Some(bytes) = self.db.get_cf(self.cf(KEYS), id.as_bytes()).map_err(err)? else {
                return Ok(None);
            };
            let key = VerificationKey::decode(&bytes, &self.limits).map_err(err)?;
            if key.id() != *id {
                return Err(err(format!("stored key {id} does not match its id")));
            }
            Ok(Some(key))
        }

        fn put_proof(
            &mut self,
            proof: &ProofMessage,
            received_ms: u64,
        ) -> Result<(), ProofShareError> {
            if self.has_proof(&proof.proof_id)? {
                return Ok(());
            }
            let mut batch = WriteBatch::default();
            batch.put_cf(self.cf(PROOFS), proof.proof_id.as_bytes(), proof.encode());
            batch.put_cf(
                self.cf(INDEX),
                index_key(&proof.verification_key_id, received_ms, &proof.proof_id),
                [],
            );
            self.db.write(batch).map_err(err)
        }

        fn proof(&self, id: &ContentId) -> Result<Option<ProofMessage>, ProofShareError> {
            let Some(bytes) = self
                .db
                .get_cf(self.cf(PROOFS), id.as_bytes())
                .map_err(err)?
            else {
                return Ok(None);
            };
            let proof = ProofMessage::decode(&bytes, &self.limits).map_err(err)?;
            if proof.proof_id != *id {
                return Err(err(format!("stored proof {id} does not match its id")));
            }
            Ok(Some(proof))
        }

        fn has_proof(&self, id: &ContentId) -> Result<bool, ProofShareError> {
            Ok(self
                .db
                .get_pinned_cf(self.cf(PROOFS), id.as_bytes())
                .map_err(err)?
                .is_some())
        }

        fn proofs_since(
            &self,
            key: &ContentId,
            since_ms: u64,
            limit: usize,
        ) -> Result<(Vec<(ContentId, u64)>, bool), ProofShareError> {
            let start = index_key(key, since_ms, &ContentId::from_bytes([0; 32]));
            let iter = self.db.iterator_cf(
                self.cf(INDEX),
                IteratorMode::From(&start, Direction::Forward),
            );
            let mut ids = Vec::new();
            for item in iter {
                let (k, _) = item.map_err(err)?;
                if k.len() != 72 || &k[..32] != key.as_bytes() {
                    break;
                }
                if ids.len() == limit {
                    return Ok((ids, true));
                }
                let at = u64::from_be_bytes(k[32..40].try_into().expect("8 bytes"));
                let id = ContentId::from_slice(&k[40..]).map_err(err)?;
                ids.push((id, at));
            }
            Ok((ids, false))
        }

        fn put_ack(&mut self, ack: &Ack) -> Result<bool, ProofShareError> {
            let mut k = ack.proof_id.as_bytes().to_vec();
            k.extend_from_slice(ack.verifier.as_bytes());
            if self
                .db
                .get_pinned_cf(self.cf(ACKS), &k)
                .map_err(err)?
                .is_some()
                || self.acks(&ack.proof_id)?.len() >= MAX_ACKS_PER_PROOF
            {
                return Ok(false);
            }
            self.db
                .put_cf(self.cf(ACKS), k, ack.encode())
                .map_err(err)?;
            Ok(true)
        }

        fn acks(&self, proof: &ContentId) -> Result<Vec<Ack>, ProofShareError> {
            let iter = self.db.iterator_cf(
                self.cf(ACKS),
                IteratorMode::From(proof.as_bytes(), Direction::Forward),
            );
            let mut acks = Vec::new();
            for item in iter {
                let (k, v) = item.map_err(err)?;
                if &k[..32.min(k.len())] != proof.as_bytes() {
                    break;
                }
                acks.push(Ack::decode(&v).map_err(err)?);
            }
            Ok(acks)
        }

        fn put_batch(&mut self, id: &ContentId, encoding: &[u8]) -> Result<(), ProofShareError> {
            self.db
                .put_cf(self.cf(BATCHES), id.as_bytes(), encoding)
                .map_err(err)
        }

        fn batch(&self, id: &ContentId) -> Result<Option<Vec<u8>>, ProofShareError> {
            let Some(bytes) = self
                .db
                .get_cf(self.cf(BATCHES), id.as_bytes())
                .map_err(err)?
            else {
                return Ok(None);
            };
            if ContentId::of(&bytes) != *id {
                return Err(err(format!("stored batch {id} does not match its id")));
            }
            Ok(Some(bytes))
        }
    }
}
