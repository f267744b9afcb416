//! Where a node keeps registers: every header of every chain it follows, the states and
//! deltas it has bodies for, each register's head, split credits, merged sources,
//! nullifiers, time maps and the evidence of forks and double uses. In memory, or in
//! RocksDB (feature `rocksdb`) in its own column families, possibly inside a database the
//! node shares with other crates.
//!
//! A [`Commit`] — one accepted update with its index changes — is written atomically (one
//! RocksDB `WriteBatch`), so a crash leaves either all of it or none.

use std::collections::{BTreeMap, HashMap, HashSet};

use causality_hash::ContentId;

use crate::model::{
    NullifierUse, Register, RegisterDelta, RegisterId, StateHash, TimeMap, UpdateHeader,
};

/// A register's current head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The state at the head.
    pub state_hash: StateHash,
    /// Its epoch.
    pub epoch: u64,
}

/// Evidence of a fork: the two competing updates at the fork point, the winner first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fork {
    /// The register.
    pub register_id: RegisterId,
    /// The update kept (lower update id).
    pub winner: UpdateHeader,
    /// The update of the losing branch at the fork point.
    pub loser: UpdateHeader,
}

/// Evidence of a nullifier used twice: the kept use (lower id) first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoubleUse {
    /// The use kept.
    pub kept: NullifierUse,
    /// The use rejected.
    pub rejected: NullifierUse,
}

/// One accepted change, written atomically.
#[derive(Clone, Debug, Default)]
pub struct Commit {
    /// Headers to keep (by their state hash).
    pub headers: Vec<UpdateHeader>,
    /// Deltas to keep, by the state hash they produce.
    pub deltas: Vec<(StateHash, RegisterDelta)>,
    /// States to keep.
    pub states: Vec<Register>,
    /// New heads: register, head, domain.
    pub heads: Vec<(RegisterId, Head, String)>,
    /// Split credits granted: child, token, amount.
    pub credits: Vec<(RegisterId, String, u64)>,
    /// Credits used up.
    pub used_credits: Vec<RegisterId>,
    /// Sources merged.
    pub merged: Vec<RegisterId>,
    /// Fork evidence.
    pub forks: Vec<Fork>,
    /// Fencing tokens accepted: register, key, token (the store keeps the highest).
    pub fences: Vec<(RegisterId, ContentId, u64)>,
}

/// Storage for register sync. Implementations must be durable once a call returns `Ok`
/// (as durable as their configured sync policy), and must apply a [`Commit`] atomically.
pub trait RegisterStore: Send + 'static {
    /// Applies a commit, all or nothing.
    fn commit(&mut self, commit: Commit) -> Result<(), StoreError>;
    /// A register's head.
    fn head(&self, id: &RegisterId) -> Result<Option<Head>, StoreError>;
    /// A header by the state hash it produces.
    fn header(&self, state: &StateHash) -> Result<Option<UpdateHeader>, StoreError>;
    /// A state by hash.
    fn state(&self, state: &StateHash) -> Result<Option<Register>, StoreError>;
    /// The delta that produced a state.
    fn delta(&self, state: &StateHash) -> Result<Option<RegisterDelta>, StoreError>;
    /// A split credit not yet used.
    fn credit(&self, child: &RegisterId) -> Result<Option<(String, u64)>, StoreError>;
    /// Whether a source was merged.
    fn merged(&self, source: &RegisterId) -> Result<bool, StoreError>;
    /// The highest fencing token accepted for a register and key.
    fn fence(&self, register: &RegisterId, key: &ContentId) -> Result<Option<u64>, StoreError>;
    /// Every register of a domain with its head state hash, sorted by id.
    fn domain_heads(&self, domain: &str) -> Result<Vec<(RegisterId, StateHash)>, StoreError>;
    /// The domains with registers.
    fn domains(&self) -> Result<Vec<String>, StoreError>;
    /// Fork evidence recorded for a register.
    fn forks(&self, id: &RegisterId) -> Result<Vec<Fork>, StoreError>;
    /// The accepted use of a nullifier in a domain.
    fn nullifier(
        &self,
        domain: &str,
        nullifier: &[u8; 32],
    ) -> Result<Option<NullifierUse>, StoreError>;
    /// Records the accepted use (replacing a previous one, which must then be in a
    /// [`DoubleUse`] recorded in the same call).
    fn put_nullifier(
        &mut self,
        accepted: &NullifierUse,
        evidence: Option<&DoubleUse>,
    ) -> Result<(), StoreError>;
    /// Every accepted nullifier use of a domain, sorted by nullifier.
    fn nullifiers(&self, domain: &str) -> Result<Vec<NullifierUse>, StoreError>;
    /// Double-use evidence of a domain.
    fn double_uses(&self, domain: &str) -> Result<Vec<DoubleUse>, StoreError>;
    /// A domain's time map.
    fn time_map(&self, domain: &str) -> Result<TimeMap, StoreError>;
    /// Replaces a domain's time map.
    fn put_time_map(&mut self, domain: &str, map: &TimeMap) -> Result<(), StoreError>;
    /// A content-addressed chunk.
    fn chunk(&self, id: &ContentId) -> Result<Option<Vec<u8>>, StoreError>;
    /// Keeps a chunk under its id.
    fn put_chunk(&mut self, bytes: &[u8]) -> Result<ContentId, StoreError>;
}

/// A store failed or holds something it should not.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("register store: {0}")]
pub struct StoreError(pub String);

/// An in-memory store (tests, simulations, nodes that need no persistence).
#[derive(Debug, Default)]
pub struct MemoryStore {
    headers: HashMap<StateHash, UpdateHeader>,
    states: HashMap<StateHash, Register>,
    deltas: HashMap<StateHash, RegisterDelta>,
    heads: HashMap<RegisterId, Head>,
    domains: BTreeMap<String, BTreeMap<RegisterId, StateHash>>,
    credits: HashMap<RegisterId, (String, u64)>,
    merged: HashSet<RegisterId>,
    fences: HashMap<(RegisterId, ContentId), u64>,
    forks: HashMap<RegisterId, Vec<Fork>>,
    nullifiers: BTreeMap<(String, [u8; 32]), NullifierUse>,
    double_uses: BTreeMap<String, Vec<DoubleUse>>,
    time_maps: BTreeMap<String, TimeMap>,
    chunks: HashMap<ContentId, Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl RegisterStore for MemoryStore {
    fn commit(&mut self, commit: Commit) -> Result<(), StoreError> {
        for h in commit.headers {
            self.headers.entry(h.state_hash).or_insert(h);
        }
        for (hash, d) in commit.deltas {
            self.deltas.insert(hash, d);
        }
        for s in commit.states {
            self.states.insert(s.state_hash(), s);
        }
        for (id, head, domain) in commit.heads {
            self.heads.insert(id, head);
            self.domains
                .entry(domain)
                .or_default()
                .insert(id, head.state_hash);
        }
        for (child, token, amount) in commit.credits {
            self.credits.insert(child, (token, amount));
        }
        for child in commit.used_credits {
            self.credits.remove(&child);
        }
        self.merged.extend(commit.merged);
        for (register, key, token) in commit.fences {
            let seen = self.fences.entry((register, key)).or_insert(token);
            *seen = (*seen).max(token);
        }
        for f in commit.forks {
            let list = self.forks.entry(f.register_id).or_default();
            if !list.contains(&f) {
                list.push(f);
            }
        }
        Ok(())
    }

    fn head(&self, id: &RegisterId) -> Result<Option<Head>, StoreError> {
        Ok(self.heads.get(id).copied())
    }

    fn header(&self, state: &StateHash) -> Result<Option<UpdateHeader>, StoreError> {
        Ok(self.headers.get(state).cloned())
    }

    fn state(&self, state: &StateHash) -> Result<Option<Register>, StoreError> {
        Ok(self.states.get(state).cloned())
    }

    fn delta(&self, state: &StateHash) -> Result<Option<RegisterDelta>, StoreError> {
        Ok(self.deltas.get(state).cloned())
    }

    fn credit(&self, child: &RegisterId) -> Result<Option<(String, u64)>, StoreError> {
        Ok(self.credits.get(child).cloned())
    }

    fn merged(&self, source: &RegisterId) -> Result<bool, StoreError> {
        Ok(self.merged.contains(source))
    }

    fn fence(&self, register: &RegisterId, key: &ContentId) -> Result<Option<u64>, StoreError> {
        Ok(self.fences.get(&(*register, *key)).copied())
    }

    fn domain_heads(&self, domain: &str) -> Result<Vec<(RegisterId, StateHash)>, StoreError> {
        Ok(self
            .domains
            .get(domain)
            .map(|m| m.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default())
    }

    fn domains(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.domains.keys().cloned().collect())
    }

    fn forks(&self, id: &RegisterId) -> Result<Vec<Fork>, StoreError> {
        Ok(self.forks.get(id).cloned().unwrap_or_default())
    }

    fn nullifier(
        &self,
        domain: &str,
        nullifier: &[u8; 32],
    ) -> Result<Option<NullifierUse>, StoreError> {
        Ok(self
            .nullifiers
            .get(&(domain.to_owned(), *nullifier))
            .cloned())
    }

    fn put_nullifier(
        &mut self,
        accepted: &NullifierUse,
        evidence: Option<&DoubleUse>,
    ) -> Result<(), StoreError> {
        self.nullifiers.insert(
            (accepted.domain.clone(), accepted.nullifier),
            accepted.clone(),
        );
        if let Some(e) = evidence {
            let list = self.double_uses.entry(accepted.domain.clone()).or_default();
            if !list.contains(e) {
                list.push(e.clone());
            }
        }
        Ok(())
    }

    fn nullifiers(&self, domain: &str) -> Result<Vec<NullifierUse>, StoreError> {
        Ok(self
            .nullifiers
            .range((domain.to_owned(), [0; 32])..=(domain.to_owned(), [0xff; 32]))
            .map(|(_, u)| u.clone())
            .collect())
    }

    fn double_uses(&self, domain: &str) -> Result<Vec<DoubleUse>, StoreError> {
        Ok(self.double_uses.get(domain).cloned().unwrap_or_default())
    }

    fn time_map(&self, domain: &str) -> Result<TimeMap, StoreError> {
        Ok(self.time_maps.get(domain).cloned().unwrap_or_default())
    }

    fn put_time_map(&mut self, domain: &str, map: &TimeMap) -> Result<(), StoreError> {
        self.time_maps.insert(domain.to_owned(), map.clone());
        Ok(())
    }

    fn chunk(&self, id: &ContentId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.chunks.get(id).cloned())
    }

    fn put_chunk(&mut self, bytes: &[u8]) -> Result<ContentId, StoreError> {
        let id = ContentId::of(bytes);
        self.chunks.insert(id, bytes.to_vec());
        Ok(id)
    }
}

#[cfg(feature = "rocksdb")]
pub use self::rocks::RocksStore;

#[cfg(feature = "rocksdb")]
mod rocks {
    use std::path::Path;
    use std::sync::Arc;

    use causality_hash::ContentId;
    use prost::Message as _;
    use rocksdb::{
        ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
    };

    use super::{Commit, DoubleUse, Fork, Head, RegisterStore, StoreError};
    use crate::model::{
        Limits, NullifierUse, Register, RegisterDelta, RegisterId, StateHash, TimeMap, UpdateHeader,
    };
    use crate::proto::v1 as pb;

    /// state hash → header.
    const HEADERS: &str = "regsync.headers";
    /// state hash → register.
    const STATES: &str = "regsync.states";
    /// state hash → delta.
    const DELTAS: &str = "regsync.deltas";
    /// register id → head (state hash ‖ epoch BE).
    const HEADS: &str = "regsync.heads";
    /// domain ‖ 0 ‖ register id → state hash.
    const DOMAINS: &str = "regsync.domains";
    /// child → amount BE ‖ token; source → () under prefix `m`; register ‖ fence key →
    /// highest token (BE) under prefix `f`.
    const CREDITS: &str = "regsync.credits";
    /// register id ‖ loser update id → winner header len BE ‖ winner ‖ loser.
    const FORKS: &str = "regsync.forks";
    /// `u` domain ‖ 0 ‖ nullifier → use; `e` domain ‖ 0 ‖ nullifier ‖ rejected id → evidence.
    const NULLIFIERS: &str = "regsync.nullifiers";
    /// domain → time map; chunk id → bytes under prefix `c`.
    const MISC: &str = "regsync.misc";

    const ALL: [&str; 9] = [
        HEADERS, STATES, DELTAS, HEADS, DOMAINS, CREDITS, FORKS, NULLIFIERS, MISC,
    ];

    fn err(e: impl std::fmt::Display) -> StoreError {
        StoreError(e.to_string())
    }

    /// A RocksDB store. What it reads back is decoded and checked again (sizes, ids), so a
    /// corrupt database gives an error, never a wrong state.
    #[derive(Debug)]
    pub struct RocksStore {
        db: Arc<DB>,
        limits: Limits,
        sync: bool,
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
                sync: false,
            })
        }

        /// Whether each commit waits for fsync (default false: the write-ahead log is
        /// written, not synced, so a machine crash may lose the last commits but a process
        /// crash loses nothing).
        pub fn with_sync(mut self, sync: bool) -> Self {
            self.sync = sync;
            self
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

        fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.db.get_cf(self.cf(cf), key).map_err(err)
        }

        fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
            let mut opts = WriteOptions::default();
            opts.set_sync(self.sync);
            self.db.write_opt(batch, &opts).map_err(err)
        }

        fn prefixed(
            &self,
            cf: &str,
            prefix: &[u8],
        ) -> impl Iterator<Item = Result<Pair, StoreError>> + '_ {
            let prefix = prefix.to_vec();
            self.db
                .iterator_cf(self.cf(cf), IteratorMode::From(&prefix, Direction::Forward))
                .map(|r| r.map_err(err))
                .take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
        }
    }

    type Pair = (Box<[u8]>, Box<[u8]>);

    fn domain_key(domain: &str, rest: &[u8]) -> Vec<u8> {
        let mut k = domain.as_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(rest);
        k
    }

    fn fence_key(register: &RegisterId, key: &ContentId) -> Vec<u8> {
        let mut k = b"f".to_vec();
        k.extend_from_slice(register.as_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    fn use_key(domain: &str, nullifier: &[u8]) -> Vec<u8> {
        let mut k = b"u".to_vec();
        k.extend_from_slice(&domain_key(domain, nullifier));
        k
    }

    fn id_of(bytes: &[u8]) -> Result<ContentId, StoreError> {
        ContentId::from_slice(bytes).map_err(|_| err("stored id is not 32 bytes"))
    }

    fn encode_fork(f: &Fork) -> Vec<u8> {
        let winner = f.winner.encode();
        let mut v = (winner.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&winner);
        v.extend_from_slice(&f.loser.encode());
        v
    }

    fn decode_fork(register_id: RegisterId, v: &[u8]) -> Result<Fork, StoreError> {
        let len = v.get(..4).ok_or_else(|| err("short fork record"))?;
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        let winner = v.get(4..4 + len).ok_or_else(|| err("short fork record"))?;
        Ok(Fork {
            register_id,
            winner: UpdateHeader::decode(winner).map_err(err)?,
            loser: UpdateHeader::decode(&v[4 + len..]).map_err(err)?,
        })
    }

    fn decode_use(v: &[u8], limits: &Limits) -> Result<NullifierUse, StoreError> {
        let p = pb::NullifierUse::decode(v).map_err(err)?;
        NullifierUse::from_proto(p, limits).map_err(err)
    }

    impl RegisterStore for RocksStore {
        fn commit(&mut self, commit: Commit) -> Result<(), StoreError> {
            let mut batch = WriteBatch::default();
            for h in &commit.headers {
                if self.get(HEADERS, h.state_hash.as_bytes())?.is_none() {
                    batch.put_cf(self.cf(HEADERS), h.state_hash.as_bytes(), h.encode());
                }
            }
            for (hash, d) in &commit.deltas {
                batch.put_cf(self.cf(DELTAS), hash.as_bytes(), d.encode());
            }
            for s in &commit.states {
                batch.put_cf(self.cf(STATES), s.state_hash().as_bytes(), s.encode());
            }
            for (id, head, domain) in &commit.heads {
                let mut v = head.state_hash.as_bytes().to_vec();
                v.extend_from_slice(&head.epoch.to_be_bytes());
                batch.put_cf(self.cf(HEADS), id.as_bytes(), v);
                batch.put_cf(
                    self.cf(DOMAINS),
                    domain_key(domain, id.as_bytes()),
                    head.state_hash.as_bytes(),
                );
            }
            for (child, token, amount) in &commit.credits {
                let mut v = amount.to_be_bytes().to_vec();
                v.extend_from_slice(token.as_bytes());
                batch.put_cf(self.cf(CREDITS), child.as_bytes(), v);
            }
            for child in &commit.used_credits {
                batch.delete_cf(self.cf(CREDITS), child.as_bytes());
            }
            for source in &commit.merged {
                let mut k = b"m".to_vec();
                k.extend_from_slice(source.as_bytes());
                batch.put_cf(self.cf(CREDITS), k, []);
            }
            // The highest token per key in this commit, then only if above the stored.
            let mut fences: std::collections::BTreeMap<(RegisterId, ContentId), u64> =
                std::collections::BTreeMap::new();
            for (register, key, token) in &commit.fences {
                let highest = fences.entry((*register, *key)).or_insert(*token);
                *highest = (*highest).max(*token);
            }
            for ((register, key), token) in fences {
                if self.fence(&register, &key)?.is_none_or(|seen| seen < token) {
                    batch.put_cf(
                        self.cf(CREDITS),
                        fence_key(&register, &key),
                        token.to_be_bytes(),
                    );
                }
            }
            for f in &commit.forks {
                let mut k = f.register_id.as_bytes().to_vec();
                k.extend_from_slice(f.loser.id().as_bytes());
                batch.put_cf(self.cf(FORKS), k, encode_fork(f));
            }
            self.write(batch)
        }

        fn head(&self, id: &RegisterId) -> Result<Option<Head>, StoreError> {
            let Some(v) = self.get(HEADS, id.as_bytes())? else {
                return Ok(None);
            };
            if v.len() != 40 {
                return Err(err(format!("stored head of {id} is {} bytes", v.len())));
            }
            Ok(Some(Head {
                state_hash: id_of(&v[..32])?,
                epoch: u64::from_be_bytes(v[32..40].try_into().expect("8 bytes")),
            }))
        }

        fn header(&self, state: &StateHash) -> Result<Option<UpdateHeader>, StoreError> {
            let Some(v) = self.get(HEADERS, state.as_bytes())? else {
                return Ok(None);
            };
            let h = UpdateHeader::decode(&v).map_err(err)?;
            if h.state_hash != *state {
                return Err(err(format!(
                    "stored header under {state} is for another state"
                )));
            }
            Ok(Some(h))
        }

        fn state(&self, state: &StateHash) -> Result<Option<Register>, StoreError> {
            let Some(v) = self.get(STATES, state.as_bytes())? else {
                return Ok(None);
            };
            if ContentId::of(&v) != *state {
                return Err(err(format!("stored state {state} does not match its hash")));
            }
            Ok(Some(Register::decode(&v, &self.limits).map_err(err)?))
        }

        fn delta(&self, state: &StateHash) -> Result<Option<RegisterDelta>, StoreError> {
            self.get(DELTAS, state.as_bytes())?
                .map(|v| RegisterDelta::decode(&v, &self.limits).map_err(err))
                .transpose()
        }

        fn credit(&self, child: &RegisterId) -> Result<Option<(String, u64)>, StoreError> {
            let Some(v) = self.get(CREDITS, child.as_bytes())? else {
                return Ok(None);
            };
            let amount = v.get(..8).ok_or_else(|| err("short credit"))?;
            let token = String::from_utf8(v[8..].to_vec()).map_err(err)?;
            Ok(Some((
                token,
                u64::from_be_bytes(amount.try_into().expect("8 bytes")),
            )))
        }

        fn merged(&self, source: &RegisterId) -> Result<bool, StoreError> {
            let mut k = b"m".to_vec();
            k.extend_from_slice(source.as_bytes());
            Ok(self.get(CREDITS, &k)?.is_some())
        }

        fn fence(&self, register: &RegisterId, key: &ContentId) -> Result<Option<u64>, StoreError> {
            let Some(v) = self.get(CREDITS, &fence_key(register, key))? else {
                return Ok(None);
            };
            let bytes: [u8; 8] = v
                .as_slice()
                .try_into()
                .map_err(|_| err("stored fence is not 8 bytes"))?;
            Ok(Some(u64::from_be_bytes(bytes)))
        }

        fn domain_heads(&self, domain: &str) -> Result<Vec<(RegisterId, StateHash)>, StoreError> {
            let prefix = domain_key(domain, &[]);
            self.prefixed(DOMAINS, &prefix)
                .map(|r| {
                    let (k, v) = r?;
                    Ok((id_of(&k[prefix.len()..])?, id_of(&v)?))
                })
                .collect()
        }

        fn domains(&self) -> Result<Vec<String>, StoreError> {
            let mut out: Vec<String> = Vec::new();
            let mut from: Vec<u8> = Vec::new();
            loop {
                let mut it = self.db.iterator_cf(
                    self.cf(DOMAINS),
                    IteratorMode::From(&from, Direction::Forward),
                );
                let Some(next) = it.next() else { break };
                let (k, _) = next.map_err(err)?;
                let end = k
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or_else(|| err("domain key without separator"))?;
                let domain = String::from_utf8(k[..end].to_vec()).map_err(err)?;
                from = k[..end].to_vec();
                from.push(1);
                out.push(domain);
            }
            Ok(out)
        }

        fn forks(&self, id: &RegisterId) -> Result<Vec<Fork>, StoreError> {
            self.prefixed(FORKS, id.as_bytes())
                .map(|r| decode_fork(*id, &r?.1))
                .collect()
        }

        fn nullifier(
            &self,
            domain: &str,
            nullifier: &[u8; 32],
        ) -> Result<Option<NullifierUse>, StoreError> {
            self.get(NULLIFIERS, &use_key(domain, nullifier))?
                .map(|v| decode_use(&v, &self.limits))
                .transpose()
        }

        fn put_nullifier(
            &mut self,
            accepted: &NullifierUse,
            evidence: Option<&DoubleUse>,
        ) -> Result<(), StoreError> {
            let mut batch = WriteBatch::default();
            batch.put_cf(
                self.cf(NULLIFIERS),
                use_key(&accepted.domain, &accepted.nullifier),
                accepted.encode(),
            );
            if let Some(e) = evidence {
                let mut k = b"e".to_vec();
                k.extend_from_slice(&domain_key(&accepted.domain, &accepted.nullifier));
                k.extend_from_slice(e.rejected.id().as_bytes());
                let kept = e.kept.encode();
                let mut v = (kept.len() as u32).to_be_bytes().to_vec();
                v.extend_from_slice(&kept);
                v.extend_from_slice(&e.rejected.encode());
                batch.put_cf(self.cf(NULLIFIERS), k, v);
            }
            self.write(batch)
        }

        fn nullifiers(&self, domain: &str) -> Result<Vec<NullifierUse>, StoreError> {
            self.prefixed(NULLIFIERS, &use_key(domain, &[]))
                .map(|r| decode_use(&r?.1, &self.limits))
                .collect()
        }

        fn double_uses(&self, domain: &str) -> Result<Vec<DoubleUse>, StoreError> {
            let mut prefix = b"e".to_vec();
            prefix.extend_from_slice(&domain_key(domain, &[]));
            self.prefixed(NULLIFIERS, &prefix)
                .map(|r| {
                    let (_, v) = r?;
                    let len = v.get(..4).ok_or_else(|| err("short evidence"))?;
                    let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
                    let kept = v.get(4..4 + len).ok_or_else(|| err("short evidence"))?;
                    Ok(DoubleUse {
                        kept: decode_use(kept, &self.limits)?,
                        rejected: decode_use(&v[4 + len..], &self.limits)?,
                    })
                })
                .collect()
        }

        fn time_map(&self, domain: &str) -> Result<TimeMap, StoreError> {
            let mut k = b"t".to_vec();
            k.extend_from_slice(domain.as_bytes());
            let Some(v) = self.get(MISC, &k)? else {
                return Ok(TimeMap::default());
            };
            TimeMap::from_proto(
                pb::TimeMap::decode(v.as_slice()).map_err(err)?,
                &self.limits,
            )
            .map_err(err)
        }

        fn put_time_map(&mut self, domain: &str, map: &TimeMap) -> Result<(), StoreError> {
            let mut k = b"t".to_vec();
            k.extend_from_slice(domain.as_bytes());
            self.db
                .put_cf(self.cf(MISC), k, map.to_proto().encode_to_vec())
                .map_err(err)
        }

        fn chunk(&self, id: &ContentId) -> Result<Option<Vec<u8>>, StoreError> {
            let mut k = b"c".to_vec();
            k.extend_from_slice(id.as_bytes());
            let Some(v) = self.get(MISC, &k)? else {
                return Ok(None);
            };
            if ContentId::of(&v) != *id {
                return Err(err(format!("stored chunk {id} does not match its id")));
            }
            Ok(Some(v))
        }

        fn put_chunk(&mut self, bytes: &[u8]) -> Result<ContentId, StoreError> {
            let id = ContentId::of(bytes);
            let mut k = b"c".to_vec();
            k.extend_from_slice(id.as_bytes());
            self.db.put_cf(self.cf(MISC), k, bytes).map_err(err)?;
            Ok(id)
        }
    }
}
