//! The crate's error type.

use causality_hash::merkle::MerkleError;

use crate::checkpoint::CheckpointError;

/// Everything that can go wrong reading, writing or verifying a log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// An entry the caller built breaks a limit in [`crate::limits`].
    #[error("invalid entry: {0}")]
    InvalidEntry(String),
    /// Stored data is damaged: the entry at `index` (or the structure around it) does not
    /// match what the log committed to.
    #[error("log corrupt at index {index}: {reason}")]
    Corrupt {
        /// The first index found bad.
        index: u64,
        /// What is wrong there.
        reason: String,
    },
    /// The Merkle tree does not match the entries.
    #[error(
        "Merkle tree corrupt at level {level}, node {node} (leaves from {first_leaf}): {reason}"
    )]
    TreeCorrupt {
        /// Level of the bad node (0 = leaves).
        level: u32,
        /// Index of the node within its level.
        node: u64,
        /// The first leaf the node covers.
        first_leaf: u64,
        /// What is wrong.
        reason: String,
    },
    /// A stored checkpoint disagrees with the log.
    #[error("checkpoint at size {size} is invalid: {reason}")]
    BadCheckpoint {
        /// The checkpoint's tree size.
        size: u64,
        /// What is wrong.
        reason: String,
    },
    /// A request beyond the end of the log, or an inverted range.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// A Merkle proof could not be built.
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    /// A signed checkpoint could not be parsed, signed or verified.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The storage engine failed (I/O error, corruption it detected itself, …).
    #[error("storage error: {0}")]
    Storage(String),
    /// The database is open in another process (RocksDB holds a lock file).
    #[error("database {path} is in use by another process")]
    Locked {
        /// The database directory.
        path: std::path::PathBuf,
    },
}

impl LogError {
    pub(crate) fn corrupt(index: u64, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            index,
            reason: reason.into(),
        }
    }
}

#[cfg(feature = "rocksdb")]
impl From<rocksdb::Error> for LogError {
    fn from(err: rocksdb::Error) -> Self {
        Self::Storage(err.into_string())
    }
}
