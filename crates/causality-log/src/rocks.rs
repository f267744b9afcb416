//! [`RocksLog`]: the log in RocksDB.
//!
//! # Layout
//!
//! Three column families per log, named after its namespace:
//!
//! - `<ns>.entries`: index (8 bytes, big-endian) → the entry's canonical encoding, then the
//!   id recorded for it (32 bytes), then the tree nodes this entry completes (levels
//!   `1..=trailing_ones(index)`, 32 bytes each). An append writes exactly this one key, so
//!   its cost stays close to a plain RocksDB put.
//! - `<ns>.ids`: id → index. Ids are written in sorted runs of
//!   [`RocksLogOptions::index_run`] entries that a background thread turns into table
//!   files and ingests, so random ids never go through the memtable. Each run also stores
//!   a watermark, the number of entries the ingested runs cover; ids above it are held in
//!   memory and rebuilt from the entries on open (at most a few runs' worth).
//! - `<ns>.meta`: the format version, the head marker (entries known durable, written at
//!   every sync point) and signed checkpoints.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use causality_hash::ContentId;
use causality_hash::merkle::Hash;
use hashbrown::HashTable;
use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Direction,
    IngestExternalFileOptions, IteratorMode, Options, SstFileWriter, WriteBatch, WriteOptions,
};

use crate::LogError;
use crate::store::{Backend, Log, ScanFn, Sealed, Tamper, Write};

/// The RocksDB handle type the log uses; share one per node.
pub type Db = DB;

/// When appended entries are written and forced to stable storage.
///
/// Under [`EveryAppend`](Self::EveryAppend), [`Periodic`](Self::Periodic) and
/// [`Never`](Self::Never) every append is in RocksDB's write-ahead log before it returns,
/// so a process crash loses nothing; they differ on power loss and kernel crashes.
/// [`GroupCommit`](Self::GroupCommit) trades that for throughput: an append is in the
/// log (readable, proven, followed) when it returns, and stored once its group commits.
/// [`LogStore::durable_len`](crate::LogStore::durable_len) tells what has been made
/// durable in every mode.
///
/// ```
/// use std::time::Duration;
/// use causality_log::{Kind, Level, LogStore, NewEntry, RocksLog, RocksLogOptions, SyncPolicy};
///
/// let dir = tempfile::tempdir().unwrap();
/// let policy = SyncPolicy::GroupCommit {
///     max_batch: 1000,
///     max_delay: Duration::from_millis(5),
/// };
/// let log = RocksLog::open(dir.path(), RocksLogOptions::default().with_sync(policy)).unwrap();
/// let appended = log
///     .append(NewEntry::new(Level::Info, Kind::Event).payload(b"x".to_vec()))
///     .unwrap();
/// // In the log at once; durable once its group commits, or on `sync`.
/// assert_eq!(log.get(appended.index).unwrap().payload, b"x");
/// assert_eq!(log.sync().unwrap(), 1);
/// assert_eq!(log.durable_len(), 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Write and fsync every append before it returns.
    EveryAppend,
    /// Gather appends in memory and write each group as one atomic, fsynced batch once
    /// `max_batch` appends are waiting or `max_delay` after the oldest, whichever comes
    /// first. Full groups are committed by a background thread while appends go on; an
    /// append waits only when a whole further group has gathered meanwhile. A crash (even
    /// of the process alone) loses the appends not yet committed, never part of a group;
    /// the log reopens at the last committed group. Memory stays bounded: if a group
    /// cannot be written, appends are refused (with the reason) once it is retried and
    /// fails again.
    GroupCommit {
        /// Appends per group.
        max_batch: u64,
        /// Longest an append waits to be committed.
        max_delay: Duration,
    },
    /// Write every append before it returns; fsync once `max_batch` appends are
    /// unsynced or `max_delay` after the oldest of them, whichever comes first.
    Periodic {
        /// Appends per fsync.
        max_batch: u64,
        /// Longest an append waits to become durable.
        max_delay: Duration,
    },
    /// Write every append before it returns, never fsync on its own; call
    /// [`LogStore::sync`](crate::LogStore::sync).
    Never,
}

impl SyncPolicy {
    /// How often the policies that sync in the background wake up.
    fn background_interval(self) -> Option<Duration> {
        match self {
            SyncPolicy::GroupCommit { max_delay, .. } | SyncPolicy::Periodic { max_delay, .. } => {
                Some(max_delay)
            }
            SyncPolicy::EveryAppend | SyncPolicy::Never => None,
        }
    }
}

impl Default for SyncPolicy {
    /// Periodic fsync: every 1000 appends or 10 ms.
    fn default() -> Self {
        SyncPolicy::Periodic {
            max_batch: 1000,
            max_delay: Duration::from_millis(10),
        }
    }
}

/// Entries per id-index run unless set otherwise.
pub const DEFAULT_INDEX_RUN: u64 = 65_536;

/// The largest id-index run.
pub const MAX_INDEX_RUN: u64 = 1 << 22;

/// Options of a [`RocksLog`].
#[derive(Clone, Debug)]
pub struct RocksLogOptions {
    /// Durability policy.
    pub sync: SyncPolicy,
    /// Prefix of the column family names, so several logs can share one database.
    pub namespace: String,
    /// Entries per id-index run (see the module docs), 1 to [`MAX_INDEX_RUN`]. Larger
    /// runs mean fewer, larger index files and more ids held in memory (about 40 bytes
    /// each, at most three runs) and replayed on open.
    pub index_run: u64,
}

impl Default for RocksLogOptions {
    fn default() -> Self {
        Self {
            sync: SyncPolicy::default(),
            namespace: "log".into(),
            index_run: DEFAULT_INDEX_RUN,
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

    /// Sets the entries per id-index run (clamped to 1..=[`MAX_INDEX_RUN`]).
    pub fn with_index_run(mut self, entries: u64) -> Self {
        self.index_run = entries.clamp(1, MAX_INDEX_RUN);
        self
    }
}

/// A log stored in RocksDB, in three column families of its own (`<namespace>.entries`,
/// `.ids`, `.meta`). Each append or batch is one atomic `WriteBatch` of one key per
/// entry; the tree is maintained incrementally and never rebuilt on open.
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
    /// Opens (creating if needed) a database at `path` holding this log. Column families
    /// other code keeps in the same database are opened too (with default options) and
    /// left alone.
    ///
    /// A second process opening the same path gets [`LogError::Locked`].
    pub fn open(path: impl AsRef<Path>, options: RocksLogOptions) -> Result<Self, LogError> {
        Self::open_with(path, options, Vec::new())
    }

    /// Opens (creating if needed) a database at `path` holding this log and the column
    /// families `extra` (created when missing), for an application that keeps its own
    /// state beside the log; [`RocksLog::db`] reaches them.
    ///
    /// A second process opening the same path gets [`LogError::Locked`].
    pub fn open_with(
        path: impl AsRef<Path>,
        options: RocksLogOptions,
        extra: Vec<ColumnFamilyDescriptor>,
    ) -> Result<Self, LogError> {
        let path = path.as_ref();
        let mut db_opts = db_options();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        let mut families = Self::column_families(&options.namespace);
        families.extend(extra);
        // A new database has no column families to list.
        let existing = Db::list_cf(&db_opts, path).unwrap_or_default();
        let legacy = format!("{}.tree", options.namespace);
        if existing.contains(&legacy) {
            return Err(LogError::Storage(format!(
                "{} holds a log in an earlier storage layout (column family {legacy}); \
                 this version cannot read it",
                path.display()
            )));
        }
        // RocksDB opens a database only with all its column families: those an
        // application keeps beside the log (and we were not told of) open with defaults.
        for name in existing {
            if name != rocksdb::DEFAULT_COLUMN_FAMILY_NAME
                && !families.iter().any(|f| f.name() == name)
            {
                families.push(ColumnFamilyDescriptor::new(name, cf_options()));
            }
        }
        let db =
            Db::open_cf_descriptors(&db_opts, path, families).map_err(|e| locked_or(e, path))?;
        Self::open_in(Arc::new(db), options)
    }

    /// Opens the log inside a shared database whose column families include
    /// [`RocksLog::column_families`].
    pub fn open_in(db: Arc<Db>, options: RocksLogOptions) -> Result<Self, LogError> {
        Log::from_backend(RocksBackend::new(db, options)?)
    }

    /// The column families this log needs, for opening a shared database.
    pub fn column_families(namespace: &str) -> Vec<ColumnFamilyDescriptor> {
        let names = Cf::names(namespace);
        vec![
            ColumnFamilyDescriptor::new(&names[Cf::ENTRIES], cf_options()),
            ColumnFamilyDescriptor::new(&names[Cf::IDS], ids_cf_options()),
            ColumnFamilyDescriptor::new(&names[Cf::META], cf_options()),
        ]
    }

    /// The database handle.
    pub fn db(&self) -> &Arc<Db> {
        &self.backend().shared.db
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

/// Ids are random: compression gains nothing; a Bloom filter makes misses cheap. Every
/// ingested run spans the whole key space, so it lands in level 0 and is merged into
/// level 1 by compaction; merging eight runs at a time instead of four cut the CPU of an
/// append by 11–20 % at 2–5M entries (lookups by id pay one Bloom probe per level-0 file).
fn ids_cf_options() -> Options {
    let mut opts = Options::default();
    opts.set_level_zero_file_num_compaction_trigger(8);
    opts.set_compression_type(DBCompressionType::None);
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    opts.set_block_based_table_factory(&table);
    opts
}

struct Cf;

impl Cf {
    const ENTRIES: usize = 0;
    const IDS: usize = 1;
    const META: usize = 2;

    fn names(namespace: &str) -> [String; 3] {
        ["entries", "ids", "meta"].map(|n| format!("{namespace}.{n}"))
    }
}

const FORMAT_KEY: &[u8] = b"format";
const FORMAT: u64 = 2;
const HEAD_KEY: &[u8] = b"head";
const CHECKPOINT_PREFIX: &[u8] = b"checkpoint/";
/// Sorts after every 32-byte id.
const WATERMARK_KEY: [u8; 33] = [0xff; 33];
const HASH_LEN: usize = 32;
/// Runs handed to the ingester before appends wait for it.
const MAX_PENDING_RUNS: usize = 2;

fn read_u64(index: u64, bytes: &[u8], what: &str) -> Result<u64, LogError> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| LogError::corrupt(index, format!("malformed {what}")))
}

/// A stored record split into its parts.
struct Record<'a> {
    entry: &'a [u8],
    id: ContentId,
    /// Nodes of levels `1..=trailing_ones(index)`, in order.
    nodes: &'a [u8],
}

fn nodes_completed_by(index: u64) -> usize {
    index.trailing_ones() as usize
}

fn split_record(index: u64, value: &[u8]) -> Result<Record<'_>, LogError> {
    let suffix = HASH_LEN * (1 + nodes_completed_by(index));
    if value.len() < suffix {
        return Err(LogError::corrupt(
            index,
            "stored record is shorter than its id and tree nodes",
        ));
    }
    let (entry, rest) = value.split_at(value.len() - suffix);
    let (id, nodes) = rest.split_at(HASH_LEN);
    Ok(Record {
        entry,
        id: ContentId::from_slice(id).expect("32 bytes"),
        nodes,
    })
}

/// Where in the record of `leaf` its node of `level` (1..=trailing_ones(leaf)) is stored.
fn node_range(leaf: u64, level: u32, value: &[u8]) -> Result<std::ops::Range<usize>, LogError> {
    let record = split_record(leaf, value)?;
    let start = value.len() - record.nodes.len() + (level as usize - 1) * HASH_LEN;
    Ok(start..start + HASH_LEN)
}

fn join_record(entry: &[u8], id: &ContentId, nodes: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(entry.len() + HASH_LEN + nodes.len());
    value.extend_from_slice(entry);
    value.extend_from_slice(id.as_bytes());
    value.extend_from_slice(nodes);
    value
}

/// The leaf whose append completed node `(level, index)`, if it exists.
fn completing_leaf(level: u32, index: u64) -> Option<u64> {
    let n = index.checked_add(1)?;
    (level < 64 && n.leading_zeros() >= level).then(|| (n << level) - 1)
}

fn warn(message: &str) {
    #[cfg(feature = "tracing")]
    tracing::warn!(target: "causality_log", "{message}");
    #[cfg(not(feature = "tracing"))]
    let _ = message;
}

/// Ids of consecutive entries not yet in the `ids` column family.
///
/// Ids are kept in append order, looked up through a table of 4-byte positions: an insert
/// is a sequential 32-byte write plus one slot in a table a tenth the size of a map of
/// ids, which keeps the append path out of cache misses.
struct Run {
    start: u64,
    /// `ids[i]` is the id of entry `start + i`.
    ids: Vec<ContentId>,
    /// Positions in `ids`, hashed by id.
    slots: HashTable<u32>,
}

/// Ids are uniformly random: their first eight bytes are a hash already. Nobody can grind
/// ids that collide in the table: an id covers the previous entry's id, unknown until that
/// entry is appended.
fn id_hash(id: &ContentId) -> u64 {
    u64::from_le_bytes(id.as_bytes()[..8].try_into().expect("8 bytes"))
}

impl Run {
    fn new(start: u64, capacity: u64) -> Self {
        let capacity = usize::try_from(capacity.min(MAX_INDEX_RUN)).unwrap_or(0);
        Self {
            start,
            ids: Vec::with_capacity(capacity),
            slots: HashTable::with_capacity(capacity),
        }
    }

    fn end(&self) -> u64 {
        self.start + self.ids.len() as u64
    }

    /// Adds the id of entry `self.end()`.
    fn push(&mut self, id: ContentId) {
        let position = u32::try_from(self.ids.len()).expect("runs hold at most MAX_INDEX_RUN ids");
        let ids = &self.ids;
        self.slots
            .insert_unique(id_hash(&id), position, |&p| id_hash(&ids[p as usize]));
        self.ids.push(id);
    }

    fn get(&self, id: &ContentId) -> Option<u64> {
        self.slots
            .find(id_hash(id), |&p| self.ids[p as usize] == *id)
            .map(|&p| self.start + u64::from(p))
    }

    /// Ids and their indexes (those not forgotten).
    fn iter(&self) -> impl Iterator<Item = (&ContentId, u64)> {
        self.slots
            .iter()
            .map(|&p| (&self.ids[p as usize], self.start + u64::from(p)))
    }

    /// Drops `id` from the lookup (corruption tests only).
    fn forget(&mut self, id: &ContentId) {
        if let Ok(slot) = self
            .slots
            .find_entry(id_hash(id), |&p| self.ids[p as usize] == *id)
        {
            slot.remove();
        }
    }
}

/// The in-memory part of the id index.
struct Tail {
    /// Runs handed to the ingester, oldest first; removed once ingested.
    pending: VecDeque<Arc<Run>>,
    /// The run being filled.
    open: Run,
    /// Why ingestion stopped, if it did.
    failed: Option<String>,
    to_ingester: Option<Sender<Arc<Run>>>,
}

/// Appends waiting for their group commit ([`SyncPolicy::GroupCommit`]).
struct Group {
    max_batch: u64,
    /// Set while the last group commit failed; appends retry it before adding more.
    failed: AtomicBool,
    gathered: Mutex<Gathered>,
    /// Held while a group is written, so groups land in order.
    turn: Mutex<()>,
}

struct Gathered {
    /// Index of `open[0]`.
    start: u64,
    /// Stored records (see the module docs) of the appends not yet handed to RocksDB.
    open: Vec<Vec<u8>>,
    /// The group being written: its first index and records, readable until it lands.
    writing: Option<(u64, Arc<Vec<Vec<u8>>>)>,
}

impl Group {
    fn gathered(&self) -> MutexGuard<'_, Gathered> {
        self.gathered.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Gathered {
    /// The first index not yet in RocksDB.
    fn stored_end(&self) -> u64 {
        self.writing
            .as_ref()
            .map_or(self.start, |(start, _)| *start)
    }

    /// The waiting record of entry `index`.
    fn record(&self, index: u64) -> Option<&[u8]> {
        let (start, records) = match &self.writing {
            Some((start, records)) if index < self.start => (*start, &***records),
            _ => (self.start, &*self.open),
        };
        let at = usize::try_from(index.checked_sub(start)?).ok()?;
        records.get(at).map(Vec::as_slice)
    }
}

#[derive(Default)]
struct SyncRequests {
    stop: bool,
    commit_now: bool,
}

/// Shared between the log, the group-commit thread and the ingester.
struct Shared {
    db: Arc<Db>,
    /// Present under [`SyncPolicy::GroupCommit`].
    group: Option<Group>,
    cfs: [String; 3],
    namespace: String,
    run_len: u64,
    tail: Mutex<Tail>,
    /// Signalled when a run is ingested or ingestion fails.
    progress: Condvar,
    /// `tail.pending.len()` and whether `tail.failed` is set, readable without the lock.
    pending_runs: AtomicUsize,
    index_failed: AtomicBool,
    /// Entries appended (in RocksDB, or waiting for their group commit).
    written: AtomicU64,
    /// Entries known to be fsynced.
    durable: AtomicU64,
    /// Requests to the sync thread.
    sync_requests: Mutex<SyncRequests>,
    wake: Condvar,
    /// Whether a group commit was requested and not yet started (saves the lock).
    commit_requested: AtomicBool,
}

impl Shared {
    fn cf(&self, which: usize) -> &ColumnFamily {
        self.db
            .cf_handle(&self.cfs[which])
            .expect("checked on open")
    }

    fn tail(&self) -> MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the head marker and fsyncs the WAL (under group commit: commits the waiting
    /// group): everything appended so far is durable.
    fn make_durable(&self) -> Result<(), LogError> {
        if let Some(group) = &self.group {
            return self.commit_group(group);
        }
        let written = self.written.load(Ordering::SeqCst);
        self.db
            .put_cf(self.cf(Cf::META), HEAD_KEY, written.to_be_bytes())?;
        self.db.flush_wal(true)?;
        self.durable.fetch_max(written, Ordering::SeqCst);
        Ok(())
    }

    /// Writes the waiting appends and the head marker as one fsynced batch. On failure
    /// they stay waiting (and readable) for the next attempt.
    fn commit_group(&self, group: &Group) -> Result<(), LogError> {
        let _turn = group.turn.lock().unwrap_or_else(|e| e.into_inner());
        let (start, records) = {
            let mut gathered = group.gathered();
            if gathered.open.is_empty() {
                return Ok(());
            }
            let capacity = gathered.open.len();
            let records = Arc::new(std::mem::replace(
                &mut gathered.open,
                Vec::with_capacity(capacity),
            ));
            let start = gathered.start;
            gathered.start += records.len() as u64;
            gathered.writing = Some((start, records.clone()));
            (start, records)
        };
        let end = start + records.len() as u64;
        let bytes: usize = records.iter().map(|r| r.len() + 24).sum();
        let mut batch = WriteBatch::with_capacity_bytes(bytes + 64);
        let entries = self.cf(Cf::ENTRIES);
        for (index, record) in (start..).zip(records.iter()) {
            batch.put_cf(entries, index.to_be_bytes(), record);
        }
        batch.put_cf(self.cf(Cf::META), HEAD_KEY, end.to_be_bytes());
        drop(records);
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        let result = self.db.write_opt(batch, &sync);

        let mut gathered = group.gathered();
        let (_, records) = gathered.writing.take().expect("set by this writer");
        match result {
            Ok(()) => {
                drop(gathered);
                group.failed.store(false, Ordering::SeqCst);
                self.durable.fetch_max(end, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => {
                // Back in front of the appends made meanwhile, to be retried in order.
                let mut back = Arc::try_unwrap(records).unwrap_or_else(|r| (*r).clone());
                back.append(&mut gathered.open);
                gathered.open = back;
                gathered.start = start;
                group.failed.store(true, Ordering::SeqCst);
                let reason = format!("group commit of entries {start}..{end} failed: {e}");
                warn(&reason);
                Err(LogError::Storage(reason))
            }
        }
    }

    /// Runs `f` on the record of entry `index`, waiting for its group commit or stored.
    fn with_record<R>(
        &self,
        index: u64,
        f: impl FnOnce(&[u8]) -> Result<R, LogError>,
    ) -> Result<Option<R>, LogError> {
        if let Some(group) = &self.group
            && let Some(record) = group.gathered().record(index)
        {
            return f(record).map(Some);
        }
        match self
            .db
            .get_pinned_cf(self.cf(Cf::ENTRIES), index.to_be_bytes())?
        {
            Some(value) => f(&value).map(Some),
            None => Ok(None),
        }
    }

    /// The first index not in RocksDB yet, and copies of the waiting records in
    /// `from..to`.
    fn waiting_range(&self, from: u64, to: u64) -> (u64, Vec<(u64, Vec<u8>)>) {
        let Some(group) = &self.group else {
            return (u64::MAX, Vec::new());
        };
        let gathered = group.gathered();
        let stored_end = gathered.stored_end();
        let records = (from.max(stored_end)..to)
            .map_while(|index| Some((index, gathered.record(index)?.to_vec())))
            .collect();
        (stored_end, records)
    }

    fn sync_requests(&self) -> MutexGuard<'_, SyncRequests> {
        self.sync_requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the sync thread to commit the waiting group now.
    fn request_commit(&self) {
        if !self.commit_requested.swap(true, Ordering::SeqCst) {
            self.sync_requests().commit_now = true;
            self.wake.notify_all();
        }
    }

    /// Waits until the ingester has room, or reports why it stopped.
    fn wait_for_index(&self) -> Result<(), LogError> {
        if !self.index_failed.load(Ordering::Acquire)
            && self.pending_runs.load(Ordering::Acquire) < MAX_PENDING_RUNS
        {
            return Ok(());
        }
        let mut tail = self.tail();
        loop {
            if let Some(reason) = &tail.failed {
                return Err(LogError::Storage(format!(
                    "id index: {reason}; reopen the log to rebuild it"
                )));
            }
            if tail.pending.len() < MAX_PENDING_RUNS {
                return Ok(());
            }
            tail = self.progress.wait(tail).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Records why the index stopped (the first reason only) and wakes waiting appenders.
    fn fail(&self, tail: &mut Tail, reason: String) {
        if tail.failed.is_none() {
            tail.failed = Some(reason);
            self.index_failed.store(true, Ordering::Release);
        }
        self.progress.notify_all();
    }

    /// Adds freshly written ids to the in-memory index, handing full runs to the ingester.
    fn record<'a>(&self, ids: impl Iterator<Item = (u64, &'a ContentId)>) {
        let mut tail = self.tail();
        for (index, id) in ids {
            debug_assert_eq!(index, tail.open.end());
            tail.open.push(*id);
            if tail.open.ids.len() as u64 >= self.run_len {
                let next = Run::new(index + 1, self.run_len);
                let run = Arc::new(std::mem::replace(&mut tail.open, next));
                tail.pending.push_back(run.clone());
                self.pending_runs
                    .store(tail.pending.len(), Ordering::Release);
                let sent = tail
                    .to_ingester
                    .as_ref()
                    .is_some_and(|tx| tx.send(run).is_ok());
                if !sent {
                    self.fail(&mut tail, "the index thread has stopped".into());
                }
            }
        }
    }

    fn lookup(&self, id: &ContentId) -> Result<Option<u64>, LogError> {
        {
            let tail = self.tail();
            let found = tail
                .open
                .get(id)
                .or_else(|| tail.pending.iter().find_map(|run| run.get(id)));
            if let Some(index) = found {
                return Ok(Some(index));
            }
        }
        match self.db.get_pinned_cf(self.cf(Cf::IDS), id.as_bytes())? {
            Some(bytes) => read_u64(0, &bytes, "id record").map(Some),
            None => Ok(None),
        }
    }

    fn ingest_path(&self, run: &Run) -> PathBuf {
        self.db.path().join(format!(
            "{}{:020}.ingest",
            ingest_prefix(&self.namespace),
            run.start
        ))
    }

    /// Writes `run` as a sorted table file and ingests it into the `ids` column family.
    fn ingest(&self, run: &Run) -> Result<(), LogError> {
        // The entries a run covers become durable before their index does, so a power
        // loss can never leave the index ahead of the log.
        self.make_durable()?;
        let mut sorted: Vec<(&ContentId, u64)> = run.iter().collect();
        sorted.sort_unstable_by_key(|(id, _)| *id);
        let path = self.ingest_path(run);
        let options = ids_cf_options();
        let result = (|| {
            let mut writer = SstFileWriter::create(&options);
            writer.open(&path)?;
            for (id, index) in sorted {
                writer.put(id.as_bytes(), index.to_be_bytes())?;
            }
            writer.put(WATERMARK_KEY, run.end().to_be_bytes())?;
            writer.finish()?;
            let mut ingest = IngestExternalFileOptions::default();
            ingest.set_move_files(true);
            self.db
                .ingest_external_file_cf_opts(self.cf(Cf::IDS), &ingest, vec![&path])
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        Ok(result?)
    }
}

/// Ingests runs in order until the log closes; stops at the first failure.
fn ingest_loop(shared: &Shared, runs: Receiver<Arc<Run>>) {
    /// Unblocks appenders if this thread ends without being asked to (a panic).
    struct Exit<'a>(&'a Shared);
    impl Drop for Exit<'_> {
        fn drop(&mut self) {
            let mut tail = self.0.tail();
            if tail.to_ingester.is_some() {
                self.0
                    .fail(&mut tail, "the index thread stopped unexpectedly".into());
            }
        }
    }
    let _exit = Exit(shared);
    for run in runs {
        match shared.ingest(&run) {
            Ok(()) => {
                let mut tail = shared.tail();
                if tail.pending.front().is_some_and(|r| Arc::ptr_eq(r, &run)) {
                    tail.pending.pop_front();
                }
                shared
                    .pending_runs
                    .store(tail.pending.len(), Ordering::Release);
                drop(tail);
                shared.progress.notify_all();
            }
            Err(e) => {
                let reason = format!(
                    "ingesting the ids of entries {}..{} failed: {e}",
                    run.start,
                    run.end()
                );
                warn(&reason);
                shared.fail(&mut shared.tail(), reason);
                return;
            }
        }
    }
}

/// Makes appends durable (commits the waiting group) every `max_delay` while some are not,
/// and whenever a group is full.
fn sync_loop(shared: &Shared, max_delay: Duration) {
    let mut requests = shared.sync_requests();
    loop {
        // Checked before waiting too: a stop requested during a commit must not be missed.
        if !requests.commit_now && !requests.stop {
            requests = shared
                .wake
                .wait_timeout(requests, max_delay)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if requests.stop {
            return;
        }
        requests.commit_now = false;
        shared.commit_requested.store(false, Ordering::SeqCst);
        drop(requests);
        let written = shared.written.load(Ordering::SeqCst);
        if written > shared.durable.load(Ordering::SeqCst)
            && let Err(e) = shared.make_durable()
        {
            // Durability stays where it was; the next tick (or append) retries.
            warn(&format!("background fsync failed: {e}"));
        }
        requests = shared.sync_requests();
    }
}

/// The storage of a [`RocksLog`].
pub struct RocksBackend {
    shared: Arc<Shared>,
    write_options: WriteOptions,
    policy: SyncPolicy,
    size_on_open: u64,
    syncer: Option<JoinHandle<()>>,
    ingester: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RocksBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksBackend")
            .field("path", &self.shared.db.path())
            .field("namespace", &self.shared.namespace)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
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
        let (to_ingester, runs) = std::sync::mpsc::channel();
        let group = match options.sync {
            SyncPolicy::GroupCommit { max_batch, .. } => Some(Group {
                max_batch: max_batch.max(1),
                failed: AtomicBool::new(false),
                gathered: Mutex::new(Gathered {
                    start: 0,
                    open: Vec::new(),
                    writing: None,
                }),
                turn: Mutex::new(()),
            }),
            _ => None,
        };
        let shared = Arc::new(Shared {
            db,
            group,
            cfs,
            namespace: options.namespace.clone(),
            run_len: options.index_run.clamp(1, MAX_INDEX_RUN),
            tail: Mutex::new(Tail {
                pending: VecDeque::new(),
                open: Run::new(0, 0),
                failed: None,
                to_ingester: Some(to_ingester),
            }),
            progress: Condvar::new(),
            pending_runs: AtomicUsize::new(0),
            index_failed: AtomicBool::new(false),
            written: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            sync_requests: Mutex::default(),
            wake: Condvar::new(),
            commit_requested: AtomicBool::new(false),
        });
        check_format(&shared)?;
        remove_stale_ingest_files(&shared);

        let mut write_options = WriteOptions::default();
        // Group commits write with their own fsynced options; checkpoints are synced too.
        write_options.set_sync(matches!(
            options.sync,
            SyncPolicy::EveryAppend | SyncPolicy::GroupCommit { .. }
        ));
        let mut backend = Self {
            shared: shared.clone(),
            write_options,
            policy: options.sync,
            size_on_open: 0,
            syncer: None,
            ingester: None,
        };
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| LogError::Storage(format!("cannot start the {name} thread: {e}")))
        };
        let ingesting = shared.clone();
        backend.ingester = Some(spawn(
            "causality-log-index",
            Box::new(move || ingest_loop(&ingesting, runs)),
        )?);

        let (size, indexed) = stored_bounds(&shared)?;
        backend.size_on_open = size;
        for counter in [&shared.written, &shared.durable] {
            counter.store(size, Ordering::SeqCst);
        }
        if let Some(group) = &shared.group {
            group.gathered().start = size;
        }
        replay_tail(&shared, indexed, size)?;
        if let Some(max_delay) = options.sync.background_interval() {
            let syncing = shared.clone();
            backend.syncer = Some(spawn(
                "causality-log-sync",
                Box::new(move || sync_loop(&syncing, max_delay)),
            )?);
        }
        Ok(backend)
    }
}

/// Checks (or, for a new log, writes) the storage format version.
fn check_format(shared: &Shared) -> Result<(), LogError> {
    let meta = shared.cf(Cf::META);
    match shared.db.get_cf(meta, FORMAT_KEY)? {
        Some(bytes) => match read_u64(0, &bytes, "format record")? {
            FORMAT => Ok(()),
            other => Err(LogError::Storage(format!(
                "log {} is in storage format {other}; this version reads format {FORMAT}",
                shared.namespace
            ))),
        },
        None => {
            let mut entries = shared
                .db
                .iterator_cf(shared.cf(Cf::ENTRIES), IteratorMode::Start);
            if entries.next().is_some() {
                return Err(LogError::Storage(format!(
                    "log {} has entries but no format record; it was written by an \
                     incompatible version",
                    shared.namespace
                )));
            }
            let mut write = WriteOptions::default();
            write.set_sync(true);
            shared
                .db
                .put_cf_opt(meta, FORMAT_KEY, FORMAT.to_be_bytes(), &write)?;
            Ok(())
        }
    }
}

/// The start of the names of this log's table files waiting to be ingested; the namespace
/// is reduced to characters safe in a file name.
fn ingest_prefix(namespace: &str) -> String {
    let safe: String = namespace
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}-ids-")
}

/// Table files left behind by an ingestion a crash interrupted.
fn remove_stale_ingest_files(shared: &Shared) {
    let prefix = ingest_prefix(&shared.namespace);
    let Ok(dir) = std::fs::read_dir(shared.db.path()) else {
        return;
    };
    for file in dir.flatten() {
        let name = file.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".ingest") {
            let _ = std::fs::remove_file(file.path());
        }
    }
}

/// The number of stored entries and of entries the ingested id runs cover, checked against
/// the head marker.
fn stored_bounds(shared: &Shared) -> Result<(u64, u64), LogError> {
    let mut iter = shared
        .db
        .iterator_cf(shared.cf(Cf::ENTRIES), IteratorMode::End);
    let size = match iter.next().transpose()? {
        Some((key, _)) => read_u64(0, &key, "entry key")?
            .checked_add(1)
            .ok_or_else(|| LogError::corrupt(u64::MAX, "entry key out of range"))?,
        None => 0,
    };
    let read_marker = |value: Option<Vec<u8>>, what: &str| match value {
        Some(bytes) => read_u64(size, &bytes, what),
        None => Ok(0),
    };
    let head = read_marker(
        shared.db.get_cf(shared.cf(Cf::META), HEAD_KEY)?,
        "head record",
    )?;
    let indexed = read_marker(
        shared.db.get_cf(shared.cf(Cf::IDS), WATERMARK_KEY)?,
        "id index watermark",
    )?;
    for (recorded, what) in [(head, "were recorded as durable"), (indexed, "are indexed")] {
        if recorded > size {
            return Err(LogError::corrupt(
                size,
                format!("log truncated: {recorded} entries {what}, only {size} are stored"),
            ));
        }
    }
    Ok((size, indexed))
}

/// Rebuilds the in-memory ids of entries `from..to` (those not yet ingested), checking
/// each stored entry against the id recorded with it.
fn replay_tail(shared: &Shared, from: u64, to: u64) -> Result<(), LogError> {
    shared.tail().open = Run::new(from, shared.run_len);
    let mut expected = from;
    let iter = shared.db.iterator_cf(
        shared.cf(Cf::ENTRIES),
        IteratorMode::From(&from.to_be_bytes(), Direction::Forward),
    );
    for item in iter {
        let (key, value) = item?;
        let index = read_u64(expected, &key, "entry key")?;
        if index != expected {
            return Err(LogError::corrupt(expected, "entry missing"));
        }
        let record = split_record(index, &value)?;
        if ContentId::of(record.entry) != record.id {
            return Err(LogError::corrupt(
                index,
                "entry bytes do not hash to the id recorded when it was appended",
            ));
        }
        shared.record(std::iter::once((index, &record.id)));
        expected += 1;
    }
    if expected != to {
        return Err(LogError::corrupt(expected, "entry missing"));
    }
    Ok(())
}

impl Drop for RocksBackend {
    fn drop(&mut self) {
        if let Some(handle) = self.syncer.take() {
            self.shared.sync_requests().stop = true;
            self.shared.wake.notify_all();
            let _ = handle.join();
        }
        // The ingester finishes the runs it was handed, then stops; the open run is
        // rebuilt from the entries on the next open.
        self.shared.tail().to_ingester = None;
        if let Some(handle) = self.ingester.take() {
            let _ = handle.join();
        }
        // Make what was written durable on a clean close, whatever the policy. A log that
        // appended nothing (or failed to open) leaves its head marker as it found it.
        let result = if self.shared.written.load(Ordering::SeqCst) > self.size_on_open {
            self.shared.make_durable()
        } else {
            self.shared.db.flush_wal(true).map_err(LogError::from)
        };
        if let Err(e) = result {
            let shared = &self.shared;
            warn(&format!(
                "final sync on close failed: {e}; entries {}..{} may not have been made durable",
                shared.durable.load(Ordering::SeqCst),
                shared.written.load(Ordering::SeqCst)
            ));
        }
    }
}

impl Sealed for RocksBackend {}

impl Backend for RocksBackend {
    fn stored_size(&self) -> Result<u64, LogError> {
        Ok(self.size_on_open)
    }

    fn commit(&self, write: Write<'_>) -> Result<(), LogError> {
        let shared = &self.shared;
        // Checked before anything is written: once the batch lands, the ids must be kept.
        shared.wait_for_index()?;
        if let Some(group) = &shared.group
            && group.failed.load(Ordering::SeqCst)
            && group.gathered().open.len() as u64 >= group.max_batch
        {
            // A group commit failed and a group is waiting: retry it before taking more.
            shared.commit_group(group)?;
        }
        let mut nodes = write.nodes.iter();
        let mut size = 0;
        for (index, id, record) in write.entries.iter_mut() {
            // The record is the encoding, its id and the nodes it completes; the encoding
            // was given room for them.
            record.extend_from_slice(id.as_bytes());
            for level in 1..=nodes_completed_by(*index) as u32 {
                match nodes.next() {
                    Some((l, i, hash)) if *l == level && *i == *index >> level => {
                        record.extend_from_slice(hash);
                    }
                    other => {
                        return Err(LogError::Storage(format!(
                            "internal error: entry {index} completes node ({level}, {}), \
                             the tree produced {other:?}",
                            *index >> level
                        )));
                    }
                }
            }
            size = *index + 1;
        }
        match &shared.group {
            Some(group) => {
                let mut gathered = group.gathered();
                gathered
                    .open
                    .extend(write.entries.iter_mut().map(|(_, _, r)| std::mem::take(r)));
            }
            None => {
                let entries_cf = shared.cf(Cf::ENTRIES);
                // Each record: key, entry, id, nodes, plus RocksDB's few bytes of framing.
                let bytes: usize = write.entries.iter().map(|(_, _, r)| r.len() + 24).sum();
                let mut batch = WriteBatch::with_capacity_bytes(bytes + 64);
                for (index, _, record) in write.entries.iter() {
                    batch.put_cf(entries_cf, index.to_be_bytes(), record);
                }
                if self.policy == SyncPolicy::EveryAppend {
                    batch.put_cf(shared.cf(Cf::META), HEAD_KEY, size.to_be_bytes());
                }
                shared.db.write_opt(batch, &self.write_options)?;
            }
        }
        shared.record(write.entries.iter().map(|(index, id, _)| (*index, id)));
        Ok(())
    }

    fn record_suffix(&self, index: u64) -> usize {
        HASH_LEN * (1 + nodes_completed_by(index))
    }

    fn committed(&self, size: u64) -> Result<(), LogError> {
        let shared = &self.shared;
        shared.written.store(size, Ordering::SeqCst);
        match self.policy {
            SyncPolicy::EveryAppend => {
                shared.durable.fetch_max(size, Ordering::SeqCst);
                Ok(())
            }
            SyncPolicy::GroupCommit { max_batch, .. } => {
                // A full group is committed by the sync thread while appends go on; if it
                // falls a whole group behind, the appender commits (and so waits).
                let synced = shared.durable.load(Ordering::SeqCst);
                let unsynced = size.saturating_sub(synced);
                if unsynced >= max_batch.max(1).saturating_mul(2) {
                    shared.make_durable()?;
                } else if unsynced >= max_batch.max(1) {
                    shared.request_commit();
                }
                Ok(())
            }
            SyncPolicy::Periodic { max_batch, .. } => {
                let synced = shared.durable.load(Ordering::SeqCst);
                if size.saturating_sub(synced) >= max_batch.max(1) {
                    shared.make_durable()?;
                }
                Ok(())
            }
            SyncPolicy::Never => Ok(()),
        }
    }

    fn entry(&self, index: u64) -> Result<Option<(Vec<u8>, ContentId)>, LogError> {
        self.shared.with_record(index, |value| {
            let record = split_record(index, value)?;
            Ok((record.entry.to_vec(), record.id))
        })
    }

    fn index_of(&self, id: &ContentId) -> Result<Option<u64>, LogError> {
        self.shared.lookup(id)
    }

    fn node(&self, level: u32, index: u64) -> Result<Option<Hash>, LogError> {
        let Some(leaf) = completing_leaf(level, index) else {
            return Ok(None);
        };
        self.shared.with_record(leaf, |value| {
            let at = node_range(leaf, level, value)?;
            Ok(value[at].try_into().expect("32 bytes"))
        })
    }

    fn scan(&self, from: u64, to: u64, f: &mut ScanFn<'_>) -> Result<(), LogError> {
        let shared = &self.shared;
        // Taken first: entries below `stored_end` are in RocksDB for good.
        let (stored_end, waiting) = shared.waiting_range(from, to);
        let start = from.to_be_bytes();
        let iter = shared.db.iterator_cf(
            shared.cf(Cf::ENTRIES),
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item?;
            let index = read_u64(from, &key, "entry key")?;
            if index >= to.min(stored_end) {
                break;
            }
            let record = split_record(index, &value)?;
            f(index, record.entry, &record.id)?;
        }
        for (index, value) in waiting {
            let record = split_record(index, &value)?;
            f(index, record.entry, &record.id)?;
        }
        Ok(())
    }

    fn put_checkpoint(&self, size: u64, note: &str) -> Result<(), LogError> {
        if self.shared.group.is_some() {
            // A checkpoint is stored with the entries it covers, never ahead of them.
            self.shared.make_durable()?;
        }
        let mut key = CHECKPOINT_PREFIX.to_vec();
        key.extend_from_slice(&size.to_be_bytes());
        self.shared.db.put_cf_opt(
            self.shared.cf(Cf::META),
            key,
            note.as_bytes(),
            &self.write_options,
        )?;
        Ok(())
    }

    fn checkpoints(&self) -> Result<Vec<(u64, String)>, LogError> {
        let shared = &self.shared;
        let iter = shared.db.iterator_cf(
            shared.cf(Cf::META),
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

    fn sync(&self, _size: u64) -> Result<(), LogError> {
        self.shared.make_durable()
    }

    fn durable_len(&self, _size: u64) -> u64 {
        self.shared.durable.load(Ordering::SeqCst)
    }

    fn tamper(&self, target: Tamper<'_>) -> Result<(), LogError> {
        let shared = &self.shared;
        if shared.group.is_some() {
            // Damage is done to stored data.
            shared.make_durable()?;
        }
        let entries = shared.cf(Cf::ENTRIES);
        let stored = |leaf: u64| -> Result<Vec<u8>, LogError> {
            shared
                .db
                .get_cf(entries, leaf.to_be_bytes())?
                .ok_or_else(|| LogError::corrupt(leaf, "entry missing"))
        };
        match target {
            Tamper::Entry(i, bytes) => {
                let value = stored(i)?;
                let record = split_record(i, &value)?;
                let value = join_record(bytes, &record.id, record.nodes);
                shared.db.put_cf(entries, i.to_be_bytes(), value)?;
            }
            Tamper::DeleteEntry(i) => shared.db.delete_cf(entries, i.to_be_bytes())?,
            Tamper::Node(level, i, hash) => {
                let leaf = completing_leaf(level, i)
                    .ok_or_else(|| LogError::OutOfRange(format!("node ({level}, {i})")))?;
                let mut value = stored(leaf)?;
                let at = node_range(leaf, level, &value)?;
                value[at].copy_from_slice(&hash);
                shared.db.put_cf(entries, leaf.to_be_bytes(), value)?;
            }
            Tamper::Checkpoint(size, note) => self.put_checkpoint(size, note)?,
            Tamper::ForgetId(id) => {
                // Once no run is in flight, the id is in the open run or in a table.
                let mut tail = shared.tail();
                while !tail.pending.is_empty() && tail.failed.is_none() {
                    tail = shared
                        .progress
                        .wait(tail)
                        .unwrap_or_else(|e| e.into_inner());
                }
                tail.open.forget(&id);
                drop(tail);
                shared.db.delete_cf(shared.cf(Cf::IDS), id.as_bytes())?;
            }
        }
        Ok(())
    }
}

/// RocksDB reports a held lock file as an I/O error whose text names the lock; that text is
/// read here, once, so callers get a typed [`LogError::Locked`].
fn locked_or(err: rocksdb::Error, path: &Path) -> LogError {
    let text = err.as_ref().to_lowercase();
    if text.contains("lock")
        && (text.contains("temporarily unavailable")
            || text.contains("no locks available")
            || text.contains("lock hold"))
    {
        LogError::Locked {
            path: path.to_path_buf(),
        }
    } else {
        LogError::from(err)
    }
}
