//! What a replica keeps of its sequences so that a restarted node resumes them: the
//! sequences, their replica sets, the highest term seen, and every accepted result. In memory, or in RocksDB
//! (feature `rocksdb`) in its own column families, possibly inside a shared database.

use std::collections::{BTreeMap, HashMap};

use causality_net::PeerId;

use crate::model::{ExecutionSequence, ExecutionSequenceMessage, NodeId, NodeResult, SequenceId};

/// A store failed or holds something it should not.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("execution store: {0}")]
pub struct StoreError(pub String);

/// Storage for execution coordination. Writes must be durable once they return `Ok`.
pub trait ExecStore: Send + 'static {
    /// Keeps a (validated) sequence.
    fn put_sequence(&mut self, sequence: &ExecutionSequence) -> Result<(), StoreError>;
    /// Every sequence kept.
    fn sequences(&self) -> Result<Vec<ExecutionSequence>, StoreError>;
    /// Records the highest term seen for a sequence.
    fn put_term(&mut self, id: &SequenceId, term: u64) -> Result<(), StoreError>;
    /// The highest term recorded.
    fn term(&self, id: &SequenceId) -> Result<u64, StoreError>;
    /// Keeps accepted results.
    fn put_results(&mut self, results: &[NodeResult]) -> Result<(), StoreError>;
    /// The accepted results of a sequence, by node.
    fn results(&self, id: &SequenceId) -> Result<Vec<NodeResult>, StoreError>;
    /// Records a sequence's replica set (fixed when it is submitted).
    fn put_replicas(&mut self, id: &SequenceId, replicas: &[PeerId]) -> Result<(), StoreError>;
    /// The replica set recorded, if any.
    fn replicas(&self, id: &SequenceId) -> Result<Option<Vec<PeerId>>, StoreError>;
    /// Records the latest statement kept of a sequence (replacing the one before).
    fn put_statement(&mut self, statement: &ExecutionSequenceMessage) -> Result<(), StoreError>;
    /// The latest statement recorded, if any.
    fn statement(&self, id: &SequenceId) -> Result<Option<ExecutionSequenceMessage>, StoreError>;
}

/// An in-memory store (tests, nodes that need no persistence).
#[derive(Debug, Default)]
pub struct MemoryStore {
    sequences: BTreeMap<SequenceId, ExecutionSequence>,
    terms: HashMap<SequenceId, u64>,
    results: HashMap<SequenceId, BTreeMap<NodeId, NodeResult>>,
    replicas: HashMap<SequenceId, Vec<PeerId>>,
    statements: HashMap<SequenceId, ExecutionSequenceMessage>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ExecStore for MemoryStore {
    fn put_sequence(&mut self, sequence: &ExecutionSequence) -> Result<(), StoreError> {
        self.sequences.insert(sequence.id(), sequence.clone());
        Ok(())
    }

    fn sequences(&self) -> Result<Vec<ExecutionSequence>, StoreError> {
        Ok(self.sequences.values().cloned().collect())
    }

    fn put_term(&mut self, id: &SequenceId, term: u64) -> Result<(), StoreError> {
        let t = self.terms.entry(*id).or_insert(term);
        *t = (*t).max(term);
        Ok(())
    }

    fn term(&self, id: &SequenceId) -> Result<u64, StoreError> {
        Ok(self.terms.get(id).copied().unwrap_or(0))
    }

    fn put_results(&mut self, results: &[NodeResult]) -> Result<(), StoreError> {
        for r in results {
            self.results
                .entry(r.token.sequence_id)
                .or_default()
                .insert(r.token.node, r.clone());
        }
        Ok(())
    }

    fn results(&self, id: &SequenceId) -> Result<Vec<NodeResult>, StoreError> {
        Ok(self
            .results
            .get(id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }

    fn put_replicas(&mut self, id: &SequenceId, replicas: &[PeerId]) -> Result<(), StoreError> {
        self.replicas.insert(*id, replicas.to_vec());
        Ok(())
    }

    fn replicas(&self, id: &SequenceId) -> Result<Option<Vec<PeerId>>, StoreError> {
        Ok(self.replicas.get(id).cloned())
    }

    fn put_statement(&mut self, statement: &ExecutionSequenceMessage) -> Result<(), StoreError> {
        self.statements
            .insert(statement.sequence_id, statement.clone());
        Ok(())
    }

    fn statement(&self, id: &SequenceId) -> Result<Option<ExecutionSequenceMessage>, StoreError> {
        Ok(self.statements.get(id).cloned())
    }
}

#[cfg(feature = "rocksdb")]
pub use self::rocks::RocksStore;

#[cfg(feature = "rocksdb")]
mod rocks {
    use std::path::Path;
    use std::sync::Arc;

    use prost::Message as _;
    use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch};

    use causality_net::PeerId;

    use super::{ExecStore, StoreError};
    use crate::model::{
        ExecutionSequence, ExecutionSequenceMessage, Limits, NodeResult, SequenceId,
    };
    use crate::proto::v1 as pb;

    /// sequence id → encoding.
    const SEQUENCES: &str = "exec.sequences";
    /// sequence id → highest term (BE); sequence id ‖ `replicas` → the replica set (peer
    /// ids, 32 bytes each); sequence id ‖ `statement` → the latest statement kept.
    const TERMS: &str = "exec.terms";
    /// sequence id ‖ node (BE) → result.
    const RESULTS: &str = "exec.results";
    const ALL: [&str; 3] = [SEQUENCES, TERMS, RESULTS];

    fn err(e: impl std::fmt::Display) -> StoreError {
        StoreError(e.to_string())
    }

    fn replicas_key(id: &SequenceId) -> Vec<u8> {
        [id.as_bytes().as_slice(), b"replicas"].concat()
    }

    fn statement_key(id: &SequenceId) -> Vec<u8> {
        [id.as_bytes().as_slice(), b"statement"].concat()
    }

    /// A RocksDB store; what it reads back is decoded and checked again.
    #[derive(Debug)]
    pub struct RocksStore {
        db: Arc<DB>,
        limits: Limits,
    }

    impl RocksStore {
        /// Opens (creating if needed) a database at `path` holding just this store.
        pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            let db = DB::open_cf_descriptors(&opts, path.as_ref(), Self::column_families())
                .map_err(err)?;
            Self::open_in(Arc::new(db))
        }

        /// Uses a shared database opened with [`RocksStore::column_families`] among its own.
        pub fn open_in(db: Arc<DB>) -> Result<Self, StoreError> {
            for cf in ALL {
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
            ALL.into_iter()
                .map(|cf| ColumnFamilyDescriptor::new(cf, Options::default()))
                .collect()
        }

        fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
            self.db.cf_handle(name).expect("checked at open")
        }
    }

    impl ExecStore for RocksStore {
        fn put_sequence(&mut self, sequence: &ExecutionSequence) -> Result<(), StoreError> {
            self.db
                .put_cf(
                    self.cf(SEQUENCES),
                    sequence.id().as_bytes(),
                    sequence.encode(),
                )
                .map_err(err)
        }

        fn sequences(&self) -> Result<Vec<ExecutionSequence>, StoreError> {
            self.db
                .iterator_cf(self.cf(SEQUENCES), IteratorMode::Start)
                .map(|r| {
                    let (k, v) = r.map_err(err)?;
                    let s = ExecutionSequence::decode(&v, &self.limits).map_err(err)?;
                    if s.id().as_bytes() != &*k {
                        return Err(err("a stored sequence does not match its id"));
                    }
                    Ok(s)
                })
                .collect()
        }

        fn put_term(&mut self, id: &SequenceId, term: u64) -> Result<(), StoreError> {
            if self.term(id)? >= term {
                return Ok(());
            }
            self.db
                .put_cf(self.cf(TERMS), id.as_bytes(), term.to_be_bytes())
                .map_err(err)
        }

        fn term(&self, id: &SequenceId) -> Result<u64, StoreError> {
            match self.db.get_cf(self.cf(TERMS), id.as_bytes()).map_err(err)? {
                None => Ok(0),
                Some(v) => Ok(u64::from_be_bytes(
                    v.as_slice()
                        .try_into()
                        .map_err(|_| err("a stored term is not 8 bytes"))?,
                )),
            }
        }

        fn put_replicas(&mut self, id: &SequenceId, replicas: &[PeerId]) -> Result<(), StoreError> {
            let value: Vec<u8> = replicas.iter().flat_map(|p| *p.as_bytes()).collect();
            self.db
                .put_cf(self.cf(TERMS), replicas_key(id), value)
                .map_err(err)
        }

        fn replicas(&self, id: &SequenceId) -> Result<Option<Vec<PeerId>>, StoreError> {
            let Some(v) = self
                .db
                .get_cf(self.cf(TERMS), replicas_key(id))
                .map_err(err)?
            else {
                return Ok(None);
            };
            if v.len() % 32 != 0 {
                return Err(err("a stored replica set is not a list of peer ids"));
            }
            v.chunks(32)
                .map(|c| PeerId::from_bytes(c).map_err(err))
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        }

        fn put_statement(
            &mut self,
            statement: &ExecutionSequenceMessage,
        ) -> Result<(), StoreError> {
            self.db
                .put_cf(
                    self.cf(TERMS),
                    statement_key(&statement.sequence_id),
                    statement.encode(),
                )
                .map_err(err)
        }

        fn statement(
            &self,
            id: &SequenceId,
        ) -> Result<Option<ExecutionSequenceMessage>, StoreError> {
            let Some(v) = self
                .db
                .get_cf(self.cf(TERMS), statement_key(id))
                .map_err(err)?
            else {
                return Ok(None);
            };
            let limits = Limits::default();
            let m = ExecutionSequenceMessage::decode(&v, limits.max_sequence_bytes, &limits)
                .map_err(|e| err(format!("a stored statement: {e}")))?;
            if m.sequence_id != *id || !m.verify() {
                return Err(err(
                    "a stored statement is not of its sequence or not signed",
                ));
            }
            Ok(Some(m))
        }

        fn put_results(&mut self, results: &[NodeResult]) -> Result<(), StoreError> {
            let mut batch = WriteBatch::default();
            for r in results {
                let mut k = r.token.sequence_id.as_bytes().to_vec();
                k.extend_from_slice(&r.token.node.to_be_bytes());
                batch.put_cf(self.cf(RESULTS), k, r.to_proto().encode_to_vec());
            }
            self.db.write(batch).map_err(err)
        }

        fn results(&self, id: &SequenceId) -> Result<Vec<NodeResult>, StoreError> {
            let prefix = id.as_bytes().to_vec();
            self.db
                .iterator_cf(
                    self.cf(RESULTS),
                    IteratorMode::From(&prefix, Direction::Forward),
                )
                .map(|r| r.map_err(err))
                .take_while(|r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
                .map(|r| {
                    let (_, v) = r?;
                    let p = pb::NodeResult::decode(v.as_ref()).map_err(err)?;
                    let result = NodeResult::from_proto(p, &self.limits).map_err(err)?;
                    if !result.verify() {
                        return Err(err("a stored result does not verify"));
                    }
                    Ok(result)
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use causality_net::Keypair;

    use super::*;
    use crate::model::{ExecutionStatus, WorkSpec};

    struct Kept {
        id: SequenceId,
        replicas: Vec<PeerId>,
        statement: ExecutionSequenceMessage,
    }

    fn write(store: &mut dyn ExecStore) -> Kept {
        let key = Keypair::from_index(1);
        let sequence = ExecutionSequence::new(
            key.peer_id(),
            b"kept",
            [(0, WorkSpec::new("hash", b"x".to_vec()))],
            Vec::new(),
        );
        let id = sequence.id();
        let replicas = vec![key.peer_id(), Keypair::from_index(2).peer_id()];
        let statement = ExecutionSequenceMessage {
            sequence_id: id,
            status: ExecutionStatus::Running,
            term: 3,
            leader: key.peer_id(),
            completed_nodes: Vec::new(),
            pending_nodes: vec![0],
            failed_nodes: Vec::new(),
            skipped_nodes: Vec::new(),
            results: Vec::new(),
            seq: 7,
            signature: [0; 64],
        }
        .sign(&key);
        assert_eq!(store.replicas(&id).unwrap(), None);
        assert_eq!(store.statement(&id).unwrap(), None);
        store.put_sequence(&sequence).unwrap();
        store.put_replicas(&id, &replicas).unwrap();
        store.put_statement(&statement).unwrap();
        store.put_term(&id, 3).unwrap();
        Kept {
            id,
            replicas,
            statement,
        }
    }

    fn check(store: &dyn ExecStore, kept: Kept) {
        assert_eq!(store.replicas(&kept.id).unwrap(), Some(kept.replicas));
        assert_eq!(store.statement(&kept.id).unwrap(), Some(kept.statement));
        // They live beside the term and the sequence, not in their place.
        assert_eq!(store.term(&kept.id).unwrap(), 3);
        assert_eq!(store.sequences().unwrap().len(), 1);
    }

    #[test]
    fn replica_sets_and_statements_are_kept() {
        let mut store = MemoryStore::new();
        let kept = write(&mut store);
        check(&store, kept);
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn replica_sets_and_statements_survive_reopening_rocksdb() {
        let dir = tempfile::tempdir().unwrap();
        let kept = write(&mut RocksStore::open(dir.path()).unwrap());
        check(&RocksStore::open(dir.path()).unwrap(), kept);
    }
}
