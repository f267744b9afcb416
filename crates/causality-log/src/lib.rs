#![doc = include_str!("../README.md")]
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]

mod checkpoint;
mod entry;
mod error;
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "tracing")]
mod layer;
pub mod limits;
mod memory;
#[cfg(feature = "rocksdb")]
mod rocks;
mod store;

/// Raw protobuf wire types generated from `proto/causality/log/`. Prefer [`LogEntry`].
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
#[path = "generated/mod.rs"]
pub mod proto;

pub use checkpoint::{Checkpoint, CheckpointError, CheckpointSigner, CheckpointVerifier};
pub use entry::{Filter, Kind, Level, LogEntry, NewEntry};
pub use error::LogError;
#[cfg(feature = "tracing")]
pub use layer::{Budget, DEFAULT_QUEUE, LogLayer, LogLayerGuard};
pub use memory::{MemoryBackend, MemoryLog};
#[cfg(feature = "rocksdb")]
pub use rocks::{
    DEFAULT_INDEX_RUN, Db, MAX_INDEX_RUN, RocksBackend, RocksLog, RocksLogOptions, SyncPolicy,
    db_options,
};
pub use store::{
    Appended, Backend, EntryStream, Head, Log, LogStore, ScanFn, Tamper, VerifyReport, Write,
};
