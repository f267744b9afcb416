//! What the node keeps across restarts beside its log, in the column family `node.state`
//! of the node's database: the sequence-number reservation and the bans in force.
//!
//! Sequence numbers are reserved in blocks (hi/lo): before the network starts, the node
//! durably records a ceiling [`SEQ_RESERVE`] above anything it will sign with, and raises it
//! whenever its next sequence number comes within half a block. A restart (even after a
//! crash, even with a clock that stepped back) starts at the recorded ceiling, above every
//! number the previous run used, so peers never take the node for a replayer.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use causality_log::Db;
use causality_net::PeerId;
use rocksdb::{ColumnFamilyDescriptor, Options, WriteOptions};

/// The column family.
pub(crate) const CF: &str = "node.state";
const SEQ_KEY: &[u8] = b"seq_ceiling";
const BANS_KEY: &[u8] = b"bans";
/// Sequence numbers reserved per durable write: far more than a node signs between two
/// checks of its reservation (once a second).
pub(crate) const SEQ_RESERVE: u64 = 1 << 24;

/// The node's persisted state.
#[derive(Clone)]
pub(crate) struct NodeState {
    db: Arc<Db>,
}

impl std::fmt::Debug for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeState")
    }
}

impl NodeState {
    /// The column family to open the database with.
    pub(crate) fn descriptor() -> ColumnFamilyDescriptor {
        ColumnFamilyDescriptor::new(CF, Options::default())
    }

    /// The state in `db`, which was opened with [`NodeState::descriptor`].
    pub(crate) fn new(db: Arc<Db>) -> Result<Self> {
        if db.cf_handle(CF).is_none() {
            bail!("the database has no column family {CF}");
        }
        Ok(Self { db })
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let cf = self.db.cf_handle(CF).context("column family node.state")?;
        Ok(self.db.get_cf(cf, key)?)
    }

    fn put_synced(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let cf = self.db.cf_handle(CF).context("column family node.state")?;
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.put_cf_opt(cf, key, value, &options)?;
        Ok(())
    }

    /// The ceiling the last run reserved: every sequence number it signed with is below it
    /// (0 for a new data directory). A damaged record is an error, not a zero: starting
    /// from zero could reuse numbers.
    pub(crate) fn seq_ceiling(&self) -> Result<u64> {
        match self.get(SEQ_KEY)? {
            None => Ok(0),
            Some(bytes) => {
                let bytes: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                    anyhow::anyhow!(
                        "the stored sequence reservation is damaged ({} bytes, expected 8)",
                        bytes.len()
                    )
                })?;
                Ok(u64::from_be_bytes(bytes))
            }
        }
    }

    /// Durably reserves the sequence numbers below `next + SEQ_RESERVE`; returns the new
    /// ceiling.
    pub(crate) fn reserve_seq(&self, next: u64) -> Result<u64> {
        let ceiling = next.saturating_add(SEQ_RESERVE);
        self.put_synced(SEQ_KEY, &ceiling.to_be_bytes())
            .context("cannot record the sequence reservation")?;
        Ok(ceiling)
    }

    /// The bans saved last: peer → end of the ban (ms since the epoch). A damaged record
    /// is reported and treated as no bans (bans protect us; losing them costs nothing that
    /// a misbehaving peer would not earn again).
    pub(crate) fn bans(&self) -> Result<BTreeMap<PeerId, u64>> {
        let Some(bytes) = self.get(BANS_KEY)? else {
            return Ok(BTreeMap::new());
        };
        let decoded: Result<BTreeMap<String, u64>, _> = serde_json::from_slice(&bytes);
        let Ok(decoded) = decoded else {
            tracing::warn!(target: "causality_node", "the stored ban list is damaged; starting without it");
            return Ok(BTreeMap::new());
        };
        let mut bans = BTreeMap::new();
        for (peer, until) in decoded {
            match peer.parse::<PeerId>() {
                Ok(peer) => {
                    bans.insert(peer, until);
                }
                Err(_) => {
                    tracing::warn!(target: "causality_node", peer, "a stored ban names no valid peer id; skipped");
                }
            }
        }
        Ok(bans)
    }

    /// Saves the bans in force.
    pub(crate) fn save_bans(&self, bans: &BTreeMap<PeerId, u64>) -> Result<()> {
        let encoded: BTreeMap<String, u64> = bans
            .iter()
            .map(|(p, until)| (p.to_string(), *until))
            .collect();
        self.put_synced(BANS_KEY, &serde_json::to_vec(&encoded)?)
            .context("cannot save the bans")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causality_log::{RocksLog, RocksLogOptions};

    fn open(dir: &std::path::Path) -> (RocksLog, NodeState) {
        let log = RocksLog::open_with(
            dir,
            RocksLogOptions::default(),
            vec![NodeState::descriptor()],
        )
        .unwrap();
        let state = NodeState::new(Arc::clone(log.db())).unwrap();
        (log, state)
    }

    #[test]
    fn reservations_and_bans_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let peer = causality_net::Keypair::from_index(5).peer_id();
        {
            let (_log, state) = open(dir.path());
            assert_eq!(state.seq_ceiling().unwrap(), 0);
            assert!(state.bans().unwrap().is_empty());
            assert_eq!(state.reserve_seq(1000).unwrap(), 1000 + SEQ_RESERVE);
            state.save_bans(&BTreeMap::from([(peer, 42)])).unwrap();
        }
        let (_log, state) = open(dir.path());
        assert_eq!(state.seq_ceiling().unwrap(), 1000 + SEQ_RESERVE);
        assert_eq!(state.bans().unwrap(), BTreeMap::from([(peer, 42)]));
    }

    #[test]
    fn a_damaged_reservation_is_an_error_and_damaged_bans_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, state) = open(dir.path());
        state.put_synced(SEQ_KEY, b"\x01\x02").unwrap();
        let err = state.seq_ceiling().unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
        state.put_synced(BANS_KEY, b"{not json").unwrap();
        assert!(state.bans().unwrap().is_empty());
        state.put_synced(BANS_KEY, br#"{"not-a-peer": 5}"#).unwrap();
        assert!(state.bans().unwrap().is_empty());
    }
}
