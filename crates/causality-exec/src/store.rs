//! What a replica keeps of its sequences so that a restarted node resumes them: the
//! sequences, the highest term seen, and every accepted result. In memory, or in RocksDB
//! (feature `rocksdb`) in its own column families, possibly inside a shared database.

use std::collections::{BTreeMap, HashMap};

use crate::model::{ExecutionSequence, NodeId, NodeResult, SequenceId};

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
}

/// An in-memory store (tests, nodes that need no persistence).
#[derive(Debug, Default)]
pub struct MemoryStore {
    sequences: BTreeMap<SequenceId, ExecutionSequence>,
    terms: HashMap<SequenceId, u64>,
    results: HashMap<SequenceId, BTreeMap<NodeId, NodeResult>>,
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
}

#[cfg(feature = "rocksdb")]
pub use self::rocks::RocksStore;

#[cfg(feature = "rocksdb")]
mod rocks {
    use std::path::Path;
    use std::sync::Arc;

    use prost::Message as _;
    use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch};

    use super::{ExecStore, StoreError};
    use crate::model::{ExecutionSequence, Limits, NodeResult, SequenceId};
    use crate::proto::v1 as pb;

    /// sequence id → encoding.
    const SEQUENCES: &str = "exec.sequences";
    /// sequence id → highest term (BE).
    const TERMS: &str = "exec.terms";
    /// sequence id ‖ node (BE) → result.
    const RESULTS: &str = "exec.results";
    const ALL: [&str; 3] = [SEQUENCES, TERMS, RESULTS];

    fn err(e: impl std::fmt::Display) -> StoreError {
        StoreError(e.to_string())
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
