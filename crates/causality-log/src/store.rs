//! The [`LogStore`] trait and [`Log`], the log logic shared by every storage backend.

use std::collections::VecDeque;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use causality_hash::ContentId;
use causality_hash::merkle::{self, Frontier, Hash, NewNode, NodeSource, leaf_hash};
use causality_hash::merkle::{ConsistencyProof, InclusionProof};
use futures::Stream;
use tokio::sync::Notify;

use crate::LogError;
use crate::checkpoint::{Checkpoint, CheckpointSigner, CheckpointVerifier};
use crate::entry::{Filter, LogEntry, NewEntry};
use crate::limits::{MAX_BATCH, MAX_QUERY_RESULTS};

/// A stream of entries, as returned by [`LogStore::follow`].
pub type EntryStream = Pin<Box<dyn Stream<Item = Result<LogEntry, LogError>> + Send>>;

/// Where an appended entry landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Its position.
    pub index: u64,
    /// Its content id.
    pub id: ContentId,
}

/// The state of a log: size, Merkle root and last entry id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Number of entries.
    pub size: u64,
    /// Merkle root over the entry ids (RFC 9162 leaves are the 32 id bytes).
    pub root: Hash,
    /// Id of the last entry.
    pub last_id: Option<ContentId>,
}

/// What [`LogStore::verify`] checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked.
    pub size: u64,
    /// The recomputed root, equal to the stored one.
    pub root: Hash,
    /// Stored checkpoints that matched the tree.
    pub checkpoints: usize,
    /// Of those, how many carried a valid signature from one of the given verifiers.
    pub signed_checkpoints: usize,
}

/// A content-addressed, append-only, verifiable log.
///
/// Each entry's id is the BLAKE3 of its canonical protobuf encoding, which includes the
/// previous entry's id (a hash chain); a Merkle tree over the ids (RFC 9162 shape) gives
/// inclusion and consistency proofs and signed checkpoints. Implemented by [`MemoryLog`]
/// and (feature `rocksdb`) `RocksLog`, which pass one conformance suite.
///
/// [`MemoryLog`]: crate::MemoryLog
///
/// ```
/// use causality_log::{Kind, Level, LogStore, MemoryLog, NewEntry};
///
/// let log = MemoryLog::new();
/// let first = log.append(NewEntry::new(Level::Info, Kind::Event).payload(b"hello".to_vec())).unwrap();
/// log.append(NewEntry::new(Level::Warn, Kind::Network).source("net")).unwrap();
///
/// let head = log.head();
/// assert_eq!(head.size, 2);
/// let proof = log.inclusion_proof(first.index, head.size).unwrap();
/// proof.verify(&causality_hash::merkle::leaf_hash(first.id.as_bytes()), &head.root).unwrap();
/// log.verify(&[]).unwrap();
/// ```
pub trait LogStore: Send + Sync {
    /// Appends one entry.
    fn append(&self, entry: NewEntry) -> Result<Appended, LogError>;
    /// Appends entries atomically: all of them or none.
    fn append_batch(&self, entries: Vec<NewEntry>) -> Result<Vec<Appended>, LogError>;
    /// Size, root and last id.
    fn head(&self) -> Head;
    /// Number of entries.
    fn len(&self) -> u64 {
        self.head().size
    }
    /// Whether the log is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The entry at `index`.
    fn get(&self, index: u64) -> Result<LogEntry, LogError>;
    /// The entry with id `id`, if the log has it.
    fn get_by_id(&self, id: &ContentId) -> Result<Option<LogEntry>, LogError>;
    /// Entries in `range` (clamped to the log's end).
    fn range(&self, range: Range<u64>) -> Result<Vec<LogEntry>, LogError>;
    /// Entries in `range` that pass `filter`, at most `limit` of them.
    fn query(
        &self,
        filter: &Filter,
        range: Range<u64>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, LogError>;
    /// Every entry from `from` on, then each new entry as it is appended. Never ends.
    fn follow(&self, from: u64) -> EntryStream;
    /// The Merkle root of the first `size` entries.
    fn root_at(&self, size: u64) -> Result<Hash, LogError>;
    /// Proof that entry `index` is in the tree of the first `size` entries.
    fn inclusion_proof(&self, index: u64, size: u64) -> Result<InclusionProof, LogError>;
    /// Proof that the first `old` entries are a prefix of the first `new`.
    fn consistency_proof(&self, old: u64, new: u64) -> Result<ConsistencyProof, LogError>;
    /// Signs a checkpoint of the current head as `origin`, stores it and returns the note.
    fn checkpoint(&self, origin: &str, signer: &CheckpointSigner) -> Result<String, LogError>;
    /// Stored checkpoint notes, oldest first.
    fn checkpoints(&self) -> Result<Vec<String>, LogError>;
    /// Re-checks everything: each entry's encoding, position and recorded id, the hash
    /// chain, the id index, every stored tree node and the root, and the stored checkpoints (signatures too when a
    /// matching verifier is given). Reports the first bad index.
    fn verify(&self, verifiers: &[CheckpointVerifier]) -> Result<VerifyReport, LogError>;
    /// Makes every appended entry durable (fsync); returns the durable size.
    fn sync(&self) -> Result<u64, LogError>;
    /// Entries known to be durable. For [`MemoryLog`](crate::MemoryLog), every entry.
    fn durable_len(&self) -> u64;
}

/// Entries and nodes to write atomically.
#[derive(Debug)]
pub struct Write<'a> {
    /// `(index, id, encoded entry)`. The backend may take or extend the encodings; each
    /// has [`Backend::record_suffix`] bytes of spare capacity.
    pub entries: &'a mut [(u64, ContentId, Vec<u8>)],
    /// Tree nodes of level 1 and up that became complete (level 0 is derived from entries).
    pub nodes: &'a [NewNode],
}

mod sealed {
    pub trait Sealed {}
}
pub(crate) use sealed::Sealed;

/// A visitor of stored entries: index, encoded bytes and the id recorded for them when
/// they were appended.
pub type ScanFn<'a> = dyn FnMut(u64, &[u8], &ContentId) -> Result<(), LogError> + 'a;

/// Storage under a [`Log`]: entries by index (each with the id recorded when it was
/// appended), index by id, tree nodes, checkpoints. Implemented by this crate's backends
/// only.
pub trait Backend: Sealed + Send + Sync + 'static {
    /// Number of entries stored.
    fn stored_size(&self) -> Result<u64, LogError>;
    /// Writes atomically.
    fn commit(&self, write: Write<'_>) -> Result<(), LogError>;
    /// Bytes the backend stores after the encoding of entry `index` (a capacity hint, so
    /// it can extend the encoding in place).
    fn record_suffix(&self, _index: u64) -> usize {
        0
    }
    /// Called after each commit with the new size (durability policies hook in here).
    fn committed(&self, size: u64) -> Result<(), LogError>;
    /// The encoded entry at `index` and the id recorded for it.
    fn entry(&self, index: u64) -> Result<Option<(Vec<u8>, ContentId)>, LogError>;
    /// The index of the entry with id `id`.
    fn index_of(&self, id: &ContentId) -> Result<Option<u64>, LogError>;
    /// A stored tree node of level 1 or more.
    fn node(&self, level: u32, index: u64) -> Result<Option<Hash>, LogError>;
    /// Calls `f` for each stored entry in `from..to`, in order.
    fn scan(&self, from: u64, to: u64, f: &mut ScanFn<'_>) -> Result<(), LogError>;
    /// Stores a checkpoint note for tree size `size`.
    fn put_checkpoint(&self, size: u64, note: &str) -> Result<(), LogError>;
    /// Stored checkpoint notes by size.
    fn checkpoints(&self) -> Result<Vec<(u64, String)>, LogError>;
    /// Makes everything written so far durable; `size` is the log size at the call.
    fn sync(&self, size: u64) -> Result<(), LogError>;
    /// Entries known to be durable.
    fn durable_len(&self, size: u64) -> u64;
    /// Overwrites or deletes raw data, bypassing every check (corruption tests only).
    #[doc(hidden)]
    fn tamper(&self, target: Tamper<'_>) -> Result<(), LogError>;
}

/// Raw damage to inject, for corruption tests.
#[doc(hidden)]
#[derive(Debug)]
pub enum Tamper<'a> {
    /// Replace the stored bytes of an entry (its recorded id stays).
    Entry(u64, &'a [u8]),
    /// Remove an entry.
    DeleteEntry(u64),
    /// Replace a tree node.
    Node(u32, u64, Hash),
    /// Replace a stored checkpoint note.
    Checkpoint(u64, &'a str),
    /// Remove an id from the id index.
    ForgetId(ContentId),
}

struct State {
    frontier: Frontier,
    last_id: Option<ContentId>,
    /// Buffers reused by every append.
    sealed: Vec<(u64, ContentId, Vec<u8>)>,
    nodes: Vec<NewNode>,
}

struct Inner<B> {
    backend: B,
    state: Mutex<State>,
    /// Wakes followers after an append; only touched while someone follows.
    appended: Notify,
    followers: AtomicUsize,
}

/// The log over a storage backend; see [`LogStore`] for what it does. Cheap to clone:
/// clones share the same log.
pub struct Log<B: Backend> {
    inner: Arc<Inner<B>>,
}

impl<B: Backend> Clone for Log<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<B: Backend> std::fmt::Debug for Log<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("head", &self.head()).finish()
    }
}

/// The tree of the first `size` entries, as a [`NodeSource`] over a backend.
struct Tree<'a, B> {
    backend: &'a B,
    size: u64,
}

impl<B: Backend> NodeSource for Tree<'_, B> {
    type Error = LogError;

    fn size(&self) -> u64 {
        self.size
    }

    fn node(&self, level: u32, index: u64) -> Result<Hash, LogError> {
        if level == 0 {
            return Ok(leaf_hash(read_checked(self.backend, index)?.id.as_bytes()));
        }
        self.backend
            .node(level, index)?
            .ok_or_else(|| LogError::TreeCorrupt {
                level,
                node: index,
                first_leaf: index << level,
                reason: "node missing".into(),
            })
    }
}

/// Reads entry `index` and checks that its bytes are the ones recorded at append time.
fn read_checked<B: Backend>(backend: &B, index: u64) -> Result<LogEntry, LogError> {
    let (bytes, recorded) = backend
        .entry(index)?
        .ok_or_else(|| LogError::corrupt(index, "entry missing"))?;
    let entry = LogEntry::decode(index, &bytes)?;
    check_recorded(&entry, &recorded)?;
    Ok(entry)
}

fn check_recorded(entry: &LogEntry, recorded: &ContentId) -> Result<(), LogError> {
    if entry.id == *recorded {
        Ok(())
    } else {
        Err(LogError::corrupt(
            entry.index,
            "entry bytes do not hash to the id recorded when it was appended (modified in place)",
        ))
    }
}

impl<B: Backend> Log<B> {
    /// Opens a log over `backend`, loading its head in O(log n) reads. Fails with
    /// [`LogError::Corrupt`] / [`LogError::TreeCorrupt`] if the stored head is damaged.
    pub(crate) fn from_backend(backend: B) -> Result<Self, LogError> {
        let size = backend.stored_size()?;
        let frontier = Frontier::load(
            &Tree {
                backend: &backend,
                size,
            },
            size,
        )?;
        let last_id = match size {
            0 => None,
            n => Some(read_checked(&backend, n - 1)?.id),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                state: Mutex::new(State {
                    frontier,
                    last_id,
                    sealed: Vec::new(),
                    nodes: Vec::new(),
                }),
                appended: Notify::new(),
                followers: AtomicUsize::new(0),
            }),
        })
    }

    #[cfg(feature = "rocksdb")]
    pub(crate) fn backend(&self) -> &B {
        &self.inner.backend
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated: it is only
        // replaced after a successful commit.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tree(&self, size: u64) -> Result<Tree<'_, B>, LogError> {
        let len = self.len();
        if size > len {
            return Err(LogError::OutOfRange(format!(
                "tree size {size} is beyond the log's {len} entries"
            )));
        }
        Ok(Tree {
            backend: &self.inner.backend,
            size,
        })
    }

    /// Injects raw damage (corruption tests only).
    #[doc(hidden)]
    pub fn tamper(&self, target: Tamper<'_>) -> Result<(), LogError> {
        self.inner.backend.tamper(target)
    }

    /// Appends `entries` atomically, reporting each one's place to `appended`.
    fn append_all(
        &self,
        entries: impl ExactSizeIterator<Item = NewEntry>,
        mut appended: impl FnMut(Appended),
    ) -> Result<(), LogError> {
        if entries.len() > MAX_BATCH {
            return Err(LogError::InvalidEntry(format!(
                "batch of {} entries; the limit is {MAX_BATCH}",
                entries.len()
            )));
        }
        let backend = &self.inner.backend;
        let mut guard = self.state();
        let state = &mut *guard;
        let mut frontier = state.frontier.clone();
        let mut last_id = state.last_id;
        state.sealed.clear();
        state.nodes.clear();
        for entry in entries {
            let index = frontier.size();
            let (id, bytes) = entry.seal(index, last_id, backend.record_suffix(index))?;
            frontier.push(leaf_hash(id.as_bytes()), |node| {
                if node.0 > 0 {
                    state.nodes.push(node);
                }
            });
            state.sealed.push((index, id, bytes));
            last_id = Some(id);
        }
        backend.commit(Write {
            entries: &mut state.sealed,
            nodes: &state.nodes,
        })?;
        let size = frontier.size();
        state.frontier = frontier;
        state.last_id = last_id;
        for (index, id, _) in state.sealed.drain(..) {
            appended(Appended { index, id });
        }
        let durability = backend.committed(size);
        drop(guard);
        if self.inner.followers.load(Ordering::SeqCst) > 0 {
            self.inner.appended.notify_waiters();
        }
        durability
    }

    /// Reads `range`, checking each entry against its recorded id and the hash chain between
    /// consecutive entries.
    fn read_range(
        &self,
        range: Range<u64>,
        mut f: impl FnMut(LogEntry) -> bool,
    ) -> Result<(), LogError> {
        let end = range.end.min(self.len());
        if range.start >= end {
            return Ok(());
        }
        let backend = &self.inner.backend;
        let mut prev: Option<ContentId> = None;
        let mut expected = range.start;
        let mut stop = false;
        backend.scan(range.start, end, &mut |index, bytes, recorded| {
            if stop {
                return Ok(());
            }
            if index != expected {
                return Err(LogError::corrupt(expected, "entry missing"));
            }
            expected += 1;
            let entry = LogEntry::decode(index, bytes)?;
            check_recorded(&entry, recorded)?;
            if let Some(p) = prev
                && entry.prev_id != Some(p)
            {
                return Err(LogError::corrupt(
                    index,
                    "previous-entry id breaks the hash chain",
                ));
            }
            prev = Some(entry.id);
            stop = !f(entry);
            Ok(())
        })?;
        if !stop && expected != end {
            return Err(LogError::corrupt(expected, "entry missing"));
        }
        Ok(())
    }
}

impl<B: Backend> LogStore for Log<B> {
    fn append(&self, entry: NewEntry) -> Result<Appended, LogError> {
        let mut result = None;
        self.append_all(std::iter::once(entry), |a| result = Some(a))?;
        Ok(result.expect("one entry was appended"))
    }

    fn append_batch(&self, entries: Vec<NewEntry>) -> Result<Vec<Appended>, LogError> {
        let mut result = Vec::with_capacity(entries.len());
        self.append_all(entries.into_iter(), |a| result.push(a))?;
        Ok(result)
    }

    fn head(&self) -> Head {
        let state = self.state();
        Head {
            size: state.frontier.size(),
            root: state.frontier.root(),
            last_id: state.last_id,
        }
    }

    fn len(&self) -> u64 {
        self.state().frontier.size()
    }

    fn get(&self, index: u64) -> Result<LogEntry, LogError> {
        let len = self.len();
        if index >= len {
            return Err(LogError::OutOfRange(format!(
                "index {index} in a log of {len} entries"
            )));
        }
        read_checked(&self.inner.backend, index)
    }

    fn get_by_id(&self, id: &ContentId) -> Result<Option<LogEntry>, LogError> {
        let Some(index) = self.inner.backend.index_of(id)? else {
            return Ok(None);
        };
        let entry = self.get(index)?;
        if entry.id != *id {
            return Err(LogError::corrupt(
                index,
                "entry does not hash to the id recorded for it",
            ));
        }
        Ok(Some(entry))
    }

    fn range(&self, range: Range<u64>) -> Result<Vec<LogEntry>, LogError> {
        let len = range.end.min(self.len()).saturating_sub(range.start);
        if len > MAX_QUERY_RESULTS as u64 {
            return Err(LogError::OutOfRange(format!(
                "range of {len} entries; read at most {MAX_QUERY_RESULTS} at once"
            )));
        }
        let mut out = Vec::with_capacity(len as usize);
        self.read_range(range, |e| {
            out.push(e);
            true
        })?;
        Ok(out)
    }

    fn query(
        &self,
        filter: &Filter,
        range: Range<u64>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, LogError> {
        let limit = limit.min(MAX_QUERY_RESULTS);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.read_range(range, |e| {
            if filter.matches(&e) {
                out.push(e);
            }
            out.len() < limit
        })?;
        Ok(out)
    }

    fn follow(&self, from: u64) -> EntryStream {
        const CHUNK: u64 = 256;
        let follower = Follower::new(self.clone());
        let state = (follower, from, VecDeque::new(), false);
        Box::pin(futures::stream::unfold(
            state,
            |(follower, mut next, mut buf, failed)| async move {
                if failed {
                    return None;
                }
                loop {
                    if let Some(entry) = buf.pop_front() {
                        return Some((Ok(entry), (follower, next, buf, false)));
                    }
                    let read = {
                        let log = &follower.0;
                        // Register for the wake-up before looking, so no append is missed.
                        let appended = log.inner.appended.notified();
                        tokio::pin!(appended);
                        appended.as_mut().enable();
                        let size = log.len();
                        if next < size {
                            let to = size.min(next + CHUNK);
                            Some(log.range(next..to).map(|entries| (to, entries)))
                        } else {
                            appended.await;
                            None
                        }
                    };
                    match read {
                        Some(Ok((to, entries))) => {
                            next = to;
                            buf.extend(entries);
                        }
                        Some(Err(e)) => return Some((Err(e), (follower, next, buf, true))),
                        None => {}
                    }
                }
            },
        ))
    }

    fn root_at(&self, size: u64) -> Result<Hash, LogError> {
        merkle::root_at(&self.tree(size)?, size)
    }

    fn inclusion_proof(&self, index: u64, size: u64) -> Result<InclusionProof, LogError> {
        merkle::inclusion_proof(&self.tree(size)?, index, size)
    }

    fn consistency_proof(&self, old: u64, new: u64) -> Result<ConsistencyProof, LogError> {
        merkle::consistency_proof(&self.tree(new)?, old, new)
    }

    fn checkpoint(&self, origin: &str, signer: &CheckpointSigner) -> Result<String, LogError> {
        let head = self.head();
        let note = signer.sign(&Checkpoint {
            origin: origin.to_owned(),
            size: head.size,
            root: head.root,
            extensions: Vec::new(),
        });
        self.inner.backend.put_checkpoint(head.size, &note)?;
        Ok(note)
    }

    fn checkpoints(&self) -> Result<Vec<String>, LogError> {
        Ok(self
            .inner
            .backend
            .checkpoints()?
            .into_iter()
            .map(|(_, note)| note)
            .collect())
    }

    fn verify(&self, verifiers: &[CheckpointVerifier]) -> Result<VerifyReport, LogError> {
        let head = self.head();
        let backend = &self.inner.backend;
        let mut frontier = Frontier::new();
        let mut prev: Option<ContentId> = None;
        let mut expected = 0u64;
        let mut bad_node: Option<LogError> = None;
        backend.scan(0, head.size, &mut |index, bytes, recorded| {
            if index != expected {
                return Err(LogError::corrupt(expected, "entry missing"));
            }
            expected += 1;
            let entry = LogEntry::decode(index, bytes)?;
            check_recorded(&entry, recorded)?;
            if entry.prev_id != prev {
                return Err(LogError::corrupt(
                    index,
                    "previous-entry id breaks the hash chain",
                ));
            }
            match backend.index_of(&entry.id)? {
                Some(i) if i == index => {}
                other => {
                    return Err(LogError::corrupt(
                        index,
                        format!("the id index maps this entry's id to {other:?}"),
                    ));
                }
            }
            prev = Some(entry.id);
            let mut result = Ok(());
            frontier.push(leaf_hash(entry.id.as_bytes()), |(level, node, hash)| {
                if level == 0 || result.is_err() {
                    return;
                }
                let reason = match backend.node(level, node) {
                    Ok(Some(stored)) if stored == hash => return,
                    Ok(Some(_)) => "stored node differs from the recomputed one",
                    Ok(None) => "node missing",
                    Err(e) => {
                        result = Err(e);
                        return;
                    }
                };
                result = Err(LogError::TreeCorrupt {
                    level,
                    node,
                    first_leaf: node << level,
                    reason: reason.into(),
                });
            });
            if let Err(e) = result {
                bad_node.get_or_insert(e);
            }
            Ok(())
        })?;
        if expected != head.size {
            return Err(LogError::corrupt(expected, "entry missing"));
        }
        if let Some(e) = bad_node {
            return Err(e);
        }
        if frontier.root() != head.root || prev != head.last_id {
            return Err(LogError::corrupt(
                head.size.saturating_sub(1),
                "head does not match the entries",
            ));
        }

        let mut report = VerifyReport {
            size: head.size,
            root: head.root,
            checkpoints: 0,
            signed_checkpoints: 0,
        };
        for (size, note) in backend.checkpoints()? {
            let bad = |reason: String| LogError::BadCheckpoint { size, reason };
            let mut checkpoint = None;
            for verifier in verifiers {
                match verifier.verify(&note) {
                    Ok(c) => {
                        checkpoint = Some(c);
                        report.signed_checkpoints += 1;
                        break;
                    }
                    Err(crate::CheckpointError::UnknownKey(_)) => continue,
                    Err(e) => return Err(bad(e.to_string())),
                }
            }
            let checkpoint = match checkpoint {
                Some(c) => c,
                None => unsigned_body(&note).map_err(|e| bad(e.to_string()))?,
            };
            if checkpoint.size != size || size > head.size {
                return Err(bad(format!(
                    "records size {} beyond or apart from the log",
                    checkpoint.size
                )));
            }
            let root = merkle::root_at(
                &Tree {
                    backend,
                    size: head.size,
                },
                size,
            )?;
            if root != checkpoint.root {
                return Err(bad("root differs from the log's root at that size".into()));
            }
            report.checkpoints += 1;
        }
        Ok(report)
    }

    fn sync(&self) -> Result<u64, LogError> {
        let size = self.len();
        self.inner.backend.sync(size)?;
        Ok(self.inner.backend.durable_len(size))
    }

    fn durable_len(&self) -> u64 {
        self.inner.backend.durable_len(self.len())
    }
}

/// A log being followed; counted so appends only wake anyone while someone follows.
struct Follower<B: Backend>(Log<B>);

impl<B: Backend> Follower<B> {
    fn new(log: Log<B>) -> Self {
        log.inner.followers.fetch_add(1, Ordering::SeqCst);
        Self(log)
    }
}

impl<B: Backend> Drop for Follower<B> {
    fn drop(&mut self) {
        self.0.inner.followers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The checkpoint in a note whose signer we cannot check (the structure is still parsed).
fn unsigned_body(note: &str) -> Result<Checkpoint, crate::CheckpointError> {
    let split = note.rfind("\n\n").ok_or(crate::CheckpointError::Malformed(
        "no blank line before the signatures",
    ))?;
    Checkpoint::parse_body(&note[..=split])
}
