//! [`MemoryLog`]: the log held in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use causality_hash::ContentId;
use causality_hash::merkle::Hash;

use crate::LogError;
use crate::store::{Backend, Log, ScanFn, Sealed, Tamper, Write};

/// A log kept in memory: for tests, simulations and short-lived processes. Nothing
/// survives the process. About 100 bytes per entry beyond the entry itself.
///
/// ```
/// use causality_log::{Kind, Level, LogStore, MemoryLog, NewEntry};
///
/// let log = MemoryLog::new();
/// log.append(NewEntry::new(Level::Info, Kind::Fact).payload(b"x".to_vec())).unwrap();
/// assert_eq!(log.get(0).unwrap().payload, b"x");
/// ```
pub type MemoryLog = Log<MemoryBackend>;

impl MemoryLog {
    /// An empty in-memory log.
    pub fn new() -> Self {
        Log::from_backend(MemoryBackend::default()).expect("an empty memory log opens")
    }
}

impl Default for MemoryLog {
    fn default() -> Self {
        Self::new()
    }
}

/// The storage of a [`MemoryLog`].
#[derive(Debug, Default)]
pub struct MemoryBackend {
    data: RwLock<Data>,
}

/// An encoded entry and the id recorded for it.
type Stored = (Vec<u8>, ContentId);

#[derive(Debug, Default)]
struct Data {
    /// Encoded entries with the id recorded when each was appended.
    entries: Vec<Option<Stored>>,
    ids: HashMap<ContentId, u64>,
    /// `nodes[l - 1][i]` is node `(l, i)`.
    nodes: Vec<Vec<Hash>>,
    checkpoints: BTreeMap<u64, String>,
}

impl MemoryBackend {
    fn read(&self) -> RwLockReadGuard<'_, Data> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Data> {
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Sealed for MemoryBackend {}

impl Backend for MemoryBackend {
    fn stored_size(&self) -> Result<u64, LogError> {
        Ok(self.read().entries.len() as u64)
    }

    fn commit(&self, write: Write<'_>) -> Result<(), LogError> {
        let mut data = self.write();
        for (index, id, bytes) in write.entries.iter_mut() {
            debug_assert_eq!(*index, data.entries.len() as u64);
            data.entries.push(Some((std::mem::take(bytes), *id)));
            data.ids.insert(*id, *index);
        }
        for &(level, index, hash) in write.nodes {
            let level = level as usize - 1;
            if data.nodes.len() <= level {
                data.nodes.resize_with(level + 1, Vec::new);
            }
            debug_assert_eq!(data.nodes[level].len() as u64, index);
            data.nodes[level].push(hash);
        }
        Ok(())
    }

    fn committed(&self, _size: u64) -> Result<(), LogError> {
        Ok(())
    }

    fn entry(&self, index: u64) -> Result<Option<(Vec<u8>, ContentId)>, LogError> {
        let data = self.read();
        Ok(usize::try_from(index)
            .ok()
            .and_then(|i| data.entries.get(i))
            .and_then(Clone::clone))
    }

    fn index_of(&self, id: &ContentId) -> Result<Option<u64>, LogError> {
        Ok(self.read().ids.get(id).copied())
    }

    fn node(&self, level: u32, index: u64) -> Result<Option<Hash>, LogError> {
        let data = self.read();
        Ok(data
            .nodes
            .get(level as usize - 1)
            .and_then(|l| l.get(usize::try_from(index).ok()?))
            .copied())
    }

    fn scan(&self, from: u64, to: u64, f: &mut ScanFn<'_>) -> Result<(), LogError> {
        // Copy in chunks so appends are not blocked for the length of a long scan.
        const CHUNK: u64 = 1024;
        let mut at = from;
        while at < to {
            let end = to.min(at + CHUNK);
            let chunk: Vec<(u64, Option<Stored>)> = {
                let data = self.read();
                (at..end)
                    .map(|i| (i, data.entries.get(i as usize).cloned().flatten()))
                    .collect()
            };
            for (i, stored) in chunk {
                if let Some((bytes, id)) = stored {
                    f(i, &bytes, &id)?;
                }
            }
            at = end;
        }
        Ok(())
    }

    fn put_checkpoint(&self, size: u64, note: &str) -> Result<(), LogError> {
        self.write().checkpoints.insert(size, note.to_owned());
        Ok(())
    }

    fn checkpoints(&self) -> Result<Vec<(u64, String)>, LogError> {
        Ok(self
            .read()
            .checkpoints
            .iter()
            .map(|(s, n)| (*s, n.clone()))
            .collect())
    }

    fn sync(&self, _size: u64) -> Result<(), LogError> {
        Ok(())
    }

    fn durable_len(&self, size: u64) -> u64 {
        size
    }

    fn tamper(&self, target: Tamper<'_>) -> Result<(), LogError> {
        let mut data = self.write();
        match target {
            Tamper::Entry(i, bytes) => {
                if let Some((stored, _)) = &mut data.entries[i as usize] {
                    *stored = bytes.to_vec();
                }
            }
            Tamper::DeleteEntry(i) => data.entries[i as usize] = None,
            Tamper::Node(level, i, hash) => data.nodes[level as usize - 1][i as usize] = hash,
            Tamper::Checkpoint(size, note) => {
                data.checkpoints.insert(size, note.to_owned());
            }
            Tamper::ForgetId(id) => {
                data.ids.remove(&id);
            }
        }
        Ok(())
    }
}
