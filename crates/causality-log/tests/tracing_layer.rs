//! `LogLayer`: tracing events land in the content-addressed log.

use std::sync::{Arc, Barrier};

use causality_log::{
    Appended, EntryStream, Filter, Head, Kind, Level, LogEntry, LogError, LogLayer, LogStore,
    MemoryLog, NewEntry, RocksLog, RocksLogOptions, SyncPolicy, VerifyReport,
};
use tracing_subscriber::layer::SubscriberExt as _;

#[test]
fn events_are_recorded_with_levels_fields_and_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let log = RocksLog::open(
        dir.path(),
        RocksLogOptions::default().with_sync(SyncPolicy::Never),
    )
    .unwrap();
    let (layer, guard) = LogLayer::new(Arc::new(log.clone()));
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        tracing::trace!(target: "causality_net::swarm", "trace line");
        tracing::debug!(target: "causality_net::swarm", n = 3, "debug line");
        tracing::info!(target: "causality_net::swarm", peer = "12D3KooWabc", addr = ?("127.0.0.1", 4001), "peer connected");
        tracing::warn!(target: "causality_net::gossip", kind = "network", reason = "bad signature", "message rejected");
        tracing::error!(target: "causality_exec", kind = "sequence-failure", seq = 7u64, "gave up");
    });
    guard.flush();
    assert_eq!(log.len(), 5);
    let levels: Vec<Level> = log.range(0..5).unwrap().iter().map(|e| e.level).collect();
    assert_eq!(
        levels,
        [
            Level::Trace,
            Level::Debug,
            Level::Info,
            Level::Warn,
            Level::Error
        ]
    );

    let connected = log.get(2).unwrap();
    assert_eq!(connected.source, "causality_net::swarm");
    assert_eq!(connected.kind, Kind::Event);
    assert_eq!(connected.payload, b"peer connected");
    assert_eq!(connected.metadata["peer"], "12D3KooWabc");
    assert_eq!(connected.metadata["addr"], "(\"127.0.0.1\", 4001)");

    let rejected = log
        .query(&Filter::new().kind(Kind::Network), 0..5, 10)
        .unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].metadata["reason"], "bad signature");
    let failed = log.get(4).unwrap();
    assert_eq!(failed.kind, Kind::Custom("sequence-failure".into()));
    assert_eq!(failed.metadata["seq"], "7");
    assert_eq!((guard.dropped(), guard.failed()), (0, 0));
    log.verify(&[]).unwrap();
}

/// A store whose first append blocks until released, to fill the layer's queue.
struct Gate {
    inner: MemoryLog,
    barrier: Arc<Barrier>,
    first: std::sync::atomic::AtomicBool,
}

impl LogStore for Gate {
    fn append(&self, entry: NewEntry) -> Result<Appended, LogError> {
        self.inner.append(entry)
    }
    fn append_batch(&self, entries: Vec<NewEntry>) -> Result<Vec<Appended>, LogError> {
        if self.first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.barrier.wait();
        }
        self.inner.append_batch(entries)
    }
    fn head(&self) -> Head {
        self.inner.head()
    }
    fn get(&self, index: u64) -> Result<LogEntry, LogError> {
        self.inner.get(index)
    }
    fn get_by_id(&self, id: &causality_hash::ContentId) -> Result<Option<LogEntry>, LogError> {
        self.inner.get_by_id(id)
    }
    fn range(&self, range: std::ops::Range<u64>) -> Result<Vec<LogEntry>, LogError> {
        self.inner.range(range)
    }
    fn query(
        &self,
        f: &Filter,
        r: std::ops::Range<u64>,
        l: usize,
    ) -> Result<Vec<LogEntry>, LogError> {
        self.inner.query(f, r, l)
    }
    fn follow(&self, from: u64) -> EntryStream {
        self.inner.follow(from)
    }
    fn root_at(&self, size: u64) -> Result<causality_hash::merkle::Hash, LogError> {
        self.inner.root_at(size)
    }
    fn inclusion_proof(
        &self,
        i: u64,
        s: u64,
    ) -> Result<causality_hash::merkle::InclusionProof, LogError> {
        self.inner.inclusion_proof(i, s)
    }
    fn consistency_proof(
        &self,
        o: u64,
        n: u64,
    ) -> Result<causality_hash::merkle::ConsistencyProof, LogError> {
        self.inner.consistency_proof(o, n)
    }
    fn checkpoint(&self, o: &str, s: &causality_log::CheckpointSigner) -> Result<String, LogError> {
        self.inner.checkpoint(o, s)
    }
    fn checkpoints(&self) -> Result<Vec<String>, LogError> {
        self.inner.checkpoints()
    }
    fn verify(&self, v: &[causality_log::CheckpointVerifier]) -> Result<VerifyReport, LogError> {
        self.inner.verify(v)
    }
    fn sync(&self) -> Result<u64, LogError> {
        self.inner.sync()
    }
    fn durable_len(&self) -> u64 {
        self.inner.durable_len()
    }
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let barrier = Arc::new(Barrier::new(2));
    let store = Arc::new(Gate {
        inner: MemoryLog::new(),
        barrier: barrier.clone(),
        first: true.into(),
    });
    let (layer, guard) = LogLayer::with_queue(store.clone(), 4);
    let subscriber = tracing_subscriber::registry().with(layer);
    let mut sent = 0u64;
    tracing::subscriber::with_default(subscriber, || {
        // The writer takes the first events (as one batch) and blocks in the store; the
        // queue of 4 fills and the rest is dropped.
        tracing::info!("first");
        sent += 1;
        while guard.dropped() == 0 {
            tracing::info!("flood");
            sent += 1;
        }
    });
    assert!(guard.dropped() > 0, "overflow is counted");
    barrier.wait();
    guard.flush();
    let recorded = store.inner.len();
    // Nothing is lost silently: every event was either recorded or counted as dropped.
    assert_eq!(
        recorded + guard.dropped(),
        sent,
        "recorded {recorded}, sent {sent}"
    );
    assert_eq!(store.inner.get(0).unwrap().payload, b"first");
}
