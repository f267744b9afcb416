//! [`RocksLog`]: the log in RocksDB.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use causality_hash::ContentId;
use causality_hash::merkle::Hash;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Direction, IteratorMode, Options,
    WriteBatch, WriteOptions,
};

use crate::LogError;
use crate::store::{Backend, Log, ScanFn, Sealed, Tamper, Write};

/// The RocksDB handle type the log uses; share one per node.
pub type Db = DB;

/// When appended entries are forced to stable storage.
///
/// Every append is written to RocksDB's write-ahead log before it returns, so a process
/// crash loses nothing in any mode; the policy is about power loss and kernel crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync every append before it returns.
    EveryAppend,
    /// fsync once `max_batch` appends are pending or `max_delay` after the oldest pending
    /// one, whichever comes first. [`LogStore::durable_len`](crate::LogStore::durable_len)
    /// tells what has been made durable.
    GroupCommit {
        /// Appends per fsync.
        max_batch: u64,
        /// Longest an append waits to become durable.
        max_delay: Duration,
    },
    /// Never fsync on its own; call [`LogStore::sync`](crate::LogStore::sync).
    Never,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy::GroupCommit {
            max_batch: 1000,
            max_delay: Duration::from_millis(10),
        }
    }
}

/// Options of a [`RocksLog`].
#[derive(Clone, Debug)]
pub struct RocksLogOptions {
    /// Durability policy.
    pub sync: SyncPolicy,
    /// Prefix of the column family names, so several logs can share one database.
    pub namespace: String,
}

impl Default for RocksLogOptions {
    fn default() -> Self {
        Self {
            sync: SyncPolicy::default(),
            namespace: "log".into(),
        }
    }
}

impl RocksLogOptions {
    /// Sets the durability policy.
    pub fn with_sync(mut self, sync: SyncPolicy) -> Self {
        self.sync = sync;
        self
    }

    /// Sets the column family prefix.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }
}

/// A log stored in RocksDB, in four column families of its own (`<namespace>.entries`,
/// `.ids`, `.tree`, `.meta`). Each append or batch is one atomic `WriteBatch`; the tree is
/// maintained incrementally and never rebuilt on open.
///
/// ```
/// use causality_log::{Kind, Level, LogStore, NewEntry, RocksLog, RocksLogOptions};
///
/// let dir = tempfile::tempdir().unwrap();
/// let log = RocksLog::open(dir.path(), RocksLogOptions::default()).unwrap();
/// log.append(NewEntry::new(Level::Info, Kind::Effect).payload(b"x".to_vec())).unwrap();
/// let root = log.head().root;
/// drop(log);
///
/// let log = RocksLog::open(dir.path(), RocksLogOptions::default()).unwrap();
/// assert_eq!(log.head().root, root);
/// ```
pub type RocksLog = Log<RocksBackend>;

impl RocksLog {
    /// Opens (creating if needed) a database at `path` holding just this log.
    ///
    /// A second process opening the same path gets [`LogError::Storage`] (RocksDB's lock).
    pub fn open(path: impl AsRef<Path>, options: RocksLogOptions) -> Result<Self, LogError> {
        let mut db_opts = db_options();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        let db =
            Db::open_cf_descriptors(&db_opts, path, Self::column_families(&options.namespace))?;
        Self::open_in(Arc::new(db), options)
    }

    /// Opens the log inside a shared database whose column families include
    /// [`RocksLog::column_families`].
    pub fn open_in(db: Arc<Db>, options: RocksLogOptions) -> Result<Self, LogError> {
        Log::from_backend(RocksBackend::new(db, options)?)
    }

    /// The column families this log needs, for opening a shared database.
    pub fn column_families(namespace: &str) -> Vec<ColumnFamilyDescriptor> {
        Cf::names(namespace)
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, cf_options()))
            .collect()
    }

    /// The database handle.
    pub fn db(&self) -> &Arc<Db> {
        &self.backend().db
    }
}

/// Database options used by [`RocksLog::open`]; also a good base for a shared database.
pub fn db_options() -> Options {
    let mut opts = cf_options();
    opts.increase_parallelism(2);
    opts
}

fn cf_options() -> Options {
    let mut opts = Options::default();
    opts.set_compression_type(DBCompressionType::Lz4);
    opts
}

struct Cf;

impl Cf {
    const ENTRIES: usize = 0;
    const IDS: usize = 1;
    const TREE: usize = 2;
    const META: usize = 3;

    fn names(namespace: &str) -> [String; 4] {
        ["entries", "ids", "tree", "meta"].map(|n| format!("{namespace}.{n}"))
    }
}

const HEAD_KEY: &[u8] = b"head";
const CHECKPOINT_PREFIX: &[u8] = b"checkpoint/";

fn tree_key(level: u32, index: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = level as u8;
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

fn read_u64(index: u64, bytes: &[u8], what: &str) -> Result<u64, LogError> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| LogError::corrupt(index, format!("malformed {what}")))
}

/// The storage of a [`RocksLog`].
pub struct RocksBackend {
    db: Arc<Db>,
    cfs: [String; 4],
    write_options: WriteOptions,
    policy: SyncPolicy,
    durability: Arc<Durability>,
    syncer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RocksBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksBackend")
            .field("path", &self.db.path())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Shared between appenders and the group-commit thread.
#[derive(Default)]
struct Durability {
    written: AtomicU64,
    durable: AtomicU64,
    synced_at_write_count: AtomicU64,
    stop: Mutex<bool>,
    wake: Condvar,
}

impl RocksBackend {
    fn new(db: Arc<Db>, options: RocksLogOptions) -> Result<Self, LogError> {
        let cfs = Cf::names(&options.namespace);
        for name in &cfs {
            if db.cf_handle(name).is_none() {
                return Err(LogError::Storage(format!(
                    "column family {name} is missing; open the database with RocksLog::column_families"
                )));
            }
        }
        let mut write_options = WriteOptions::default();
        write_options.set_sync(options.sync == SyncPolicy::EveryAppend);
        let mut backend = Self {
            db,
            cfs,
            write_options,
            policy: options.sync,
            durability: Arc::default(),
            syncer: None,
        };
        let size = backend.stored_size()?;
        backend.durability.written.store(size, Ordering::SeqCst);
        backend.durability.durable.store(size, Ordering::SeqCst);
        backend
            .durability
            .synced_at_write_count
            .store(size, Ordering::SeqCst);
        if let SyncPolicy::GroupCommit { max_delay, .. } = options.sync {
            let (db, durability) = (backend.db.clone(), backend.durability.clone());
            backend.syncer = Some(
                std::thread::Builder::new()
                    .name("causality-log-sync".into())
                    .spawn(move || group_sync_loop(&db, &durability, max_delay))
                    .map_err(|e| LogError::Storage(format!("cannot start the sync thread: {e}")))?,
            );
        }
        Ok(backend)
    }

    fn cf(&self, which: usize) -> &ColumnFamily {
        self.db
            .cf_handle(&self.cfs[which])
            .expect("checked on open")
    }

    fn flush_wal(&self, size: u64) -> Result<(), LogError> {
        self.db.flush_wal(true)?;
        self.durability.durable.fetch_max(size, Ordering::SeqCst);
        self.durability
            .synced_at_write_count
            .store(size, Ordering::SeqCst);
        Ok(())
    }
}

/// Flushes the WAL every `max_delay` while appends are pending.
fn group_sync_loop(db: &Db, durability: &Durability, max_delay: Duration) {
    let mut stop = durability.stop.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let (guard, _) = durability
            .wake
            .wait_timeout(stop, max_delay)
            .unwrap_or_else(|e| e.into_inner());
        stop = guard;
        if *stop {
            return;
        }
        let written = durability.written.load(Ordering::SeqCst);
        if written > durability.durable.load(Ordering::SeqCst) {
            if let Err(e) = db.flush_wal(true) {
                // Durability stays where it was; the next tick retries.
                #[cfg(feature = "tracing")]
                tracing::warn!(target: "causality_log", error = %e, "group commit fsync failed");
                #[cfg(not(feature = "tracing"))]
                let _ = e;
                continue;
            }
            durability.durable.fetch_max(written, Ordering::SeqCst);
            durability
                .synced_at_write_count
                .store(written, Ordering::SeqCst);
        }
    }
}

impl Drop for RocksBackend {
    fn drop(&mut self) {
        if let Some(handle) = self.syncer.take() {
            *self
                .durability
                .stop
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = true;
            self.durability.wake.notify_all();
            let _ = handle.join();
        }
        // Make what was written durable on a clean close, whatever the policy.
        let _ = self.db.flush_wal(true);
    }
}

impl Sealed for RocksBackend {}

impl Backend for RocksBackend {
    fn stored_size(&self) -> Result<u64, LogError> {
        let head = match self.db.get_cf(self.cf(Cf::META), HEAD_KEY)? {
            Some(bytes) => read_u64(0, &bytes, "head record")?,
            None => 0,
        };
        // The last entry must be exactly at head - 1.
        let mut iter = self.db.iterator_cf(self.cf(Cf::ENTRIES), IteratorMode::End);
        let last = match iter.next().transpose()? {
            Some((key, _)) => Some(read_u64(head, &key, "entry key")?),
            None => None,
        };
        match (head, last) {
            (0, None) => Ok(0),
            (n, Some(last)) if last + 1 == n => Ok(n),
            (n, Some(last)) if last + 1 < n => Err(LogError::corrupt(
                last + 1,
                format!("log truncated: head records {n} entries, the last stored is {last}"),
            )),
            (n, last) => Err(LogError::corrupt(
                n,
                format!("entries beyond the recorded head of {n} (last stored: {last:?})"),
            )),
        }
    }

    fn commit(&self, write: Write<'_>) -> Result<(), LogError> {
        let mut batch = WriteBatch::default();
        let (entries, ids, tree) = (self.cf(Cf::ENTRIES), self.cf(Cf::IDS), self.cf(Cf::TREE));
        let mut size = 0;
        for (index, id, bytes) in write.entries {
            batch.put_cf(entries, index.to_be_bytes(), bytes);
            batch.put_cf(ids, id.as_bytes(), index.to_be_bytes());
            size = index + 1;
        }
        for (level, index, hash) in write.nodes {
            batch.put_cf(tree, tree_key(*level, *index), hash);
        }
        batch.put_cf(self.cf(Cf::META), HEAD_KEY, size.to_be_bytes());
        self.db.write_opt(batch, &self.write_options)?;
        Ok(())
    }

    fn committed(&self, size: u64) -> Result<(), LogError> {
        self.durability.written.store(size, Ordering::SeqCst);
        match self.policy {
            SyncPolicy::EveryAppend => {
                self.durability.durable.fetch_max(size, Ordering::SeqCst);
                Ok(())
            }
            SyncPolicy::GroupCommit { max_batch, .. } => {
                let synced = self.durability.synced_at_write_count.load(Ordering::SeqCst);
                if size.saturating_sub(synced) >= max_batch {
                    self.flush_wal(size)?;
                }
                Ok(())
            }
            SyncPolicy::Never => Ok(()),
        }
    }

    fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.db.get_cf(self.cf(Cf::ENTRIES), index.to_be_bytes())?)
    }

    fn index_of(&self, id: &ContentId) -> Result<Option<u64>, LogError> {
        match self.db.get_pinned_cf(self.cf(Cf::IDS), id.as_bytes())? {
            Some(bytes) => read_u64(0, &bytes, "id record").map(Some),
            None => Ok(None),
        }
    }

    fn node(&self, level: u32, index: u64) -> Result<Option<Hash>, LogError> {
        match self
            .db
            .get_pinned_cf(self.cf(Cf::TREE), tree_key(level, index))?
        {
            Some(bytes) => {
                Hash::try_from(&bytes[..])
                    .map(Some)
                    .map_err(|_| LogError::TreeCorrupt {
                        level,
                        node: index,
                        first_leaf: index << level,
                        reason: "stored node is not 32 bytes".into(),
                    })
            }
            None => Ok(None),
        }
    }

    fn scan(&self, from: u64, to: u64, f: &mut ScanFn<'_>) -> Result<(), LogError> {
        let start = from.to_be_bytes();
        let iter = self.db.iterator_cf(
            self.cf(Cf::ENTRIES),
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item?;
            let index = read_u64(from, &key, "entry key")?;
            if index >= to {
                break;
            }
            f(index, &value)?;
        }
        Ok(())
    }

    fn put_checkpoint(&self, size: u64, note: &str) -> Result<(), LogError> {
        let mut key = CHECKPOINT_PREFIX.to_vec();
        key.extend_from_slice(&size.to_be_bytes());
        self.db
            .put_cf_opt(self.cf(Cf::META), key, note.as_bytes(), &self.write_options)?;
        Ok(())
    }

    fn checkpoints(&self) -> Result<Vec<(u64, String)>, LogError> {
        let meta = self.cf(Cf::META);
        let iter = self.db.iterator_cf(
            meta,
            IteratorMode::From(CHECKPOINT_PREFIX, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (key, value) = item?;
            let Some(size) = key.strip_prefix(CHECKPOINT_PREFIX) else {
                break;
            };
            let size = read_u64(0, size, "checkpoint key")?;
            let note =
                String::from_utf8(value.into_vec()).map_err(|_| LogError::BadCheckpoint {
                    size,
                    reason: "stored note is not UTF-8".into(),
                })?;
            out.push((size, note));
        }
        Ok(out)
    }

    fn sync(&self, size: u64) -> Result<(), LogError> {
        self.flush_wal(size)
    }

    fn durable_len(&self, _size: u64) -> u64 {
        self.durability.durable.load(Ordering::SeqCst)
    }

    fn tamper(&self, target: Tamper<'_>) -> Result<(), LogError> {
        match target {
            Tamper::Entry(i, bytes) => {
                self.db
                    .put_cf(self.cf(Cf::ENTRIES), i.to_be_bytes(), bytes)?;
            }
            Tamper::DeleteEntry(i) => self.db.delete_cf(self.cf(Cf::ENTRIES), i.to_be_bytes())?,
            Tamper::Node(level, i, hash) => {
                self.db
                    .put_cf(self.cf(Cf::TREE), tree_key(level, i), hash)?;
            }
            Tamper::Checkpoint(size, note) => self.put_checkpoint(size, note)?,
        }
        Ok(())
    }
}
