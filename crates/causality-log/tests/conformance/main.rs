//! One conformance suite, run against every store: `MemoryLog` and `RocksLog` (under
//! several layouts and durability policies).

mod suite;

use causality_log::{MemoryLog, RocksLog, RocksLogOptions, SyncPolicy};

/// A store plus whatever keeps it alive (a temporary directory).
struct Fixture<B: causality_log::Backend> {
    log: causality_log::Log<B>,
    _dir: Option<tempfile::TempDir>,
}

fn memory() -> Fixture<causality_log::MemoryBackend> {
    Fixture {
        log: MemoryLog::new(),
        _dir: None,
    }
}

fn rocks() -> Fixture<causality_log::RocksBackend> {
    let dir = tempfile::tempdir().unwrap();
    let log = RocksLog::open(
        dir.path(),
        RocksLogOptions::default().with_sync(SyncPolicy::Never),
    )
    .unwrap();
    Fixture {
        log,
        _dir: Some(dir),
    }
}

/// RocksLog with id-index runs of 4 entries, so most ids are read back from ingested
/// table files rather than from memory.
fn rocks_small_runs() -> Fixture<causality_log::RocksBackend> {
    let dir = tempfile::tempdir().unwrap();
    let log = RocksLog::open(
        dir.path(),
        RocksLogOptions::default()
            .with_sync(SyncPolicy::Never)
            .with_index_run(4),
    )
    .unwrap();
    Fixture {
        log,
        _dir: Some(dir),
    }
}

/// RocksLog under group commit in groups of 8: reads meet entries both stored and still
/// waiting for their group, committed meanwhile by the background thread.
fn rocks_group_commit() -> Fixture<causality_log::RocksBackend> {
    let dir = tempfile::tempdir().unwrap();
    let log = RocksLog::open(
        dir.path(),
        RocksLogOptions::default()
            .with_sync(SyncPolicy::GroupCommit {
                max_batch: 8,
                max_delay: std::time::Duration::from_secs(3600),
            })
            .with_index_run(16),
    )
    .unwrap();
    Fixture {
        log,
        _dir: Some(dir),
    }
}

macro_rules! conformance {
    ($store:ident: $($test:ident),* $(,)?) => {
        mod $store {
            $(
                #[test]
                fn $test() {
                    let fixture = super::$store();
                    super::suite::$test(&fixture.log);
                }
            )*
        }
    };
}

macro_rules! conformance_async {
    ($store:ident: $($test:ident),* $(,)?) => {
        mod $store {
            $(
                #[tokio::test(start_paused = true)]
                async fn $test() {
                    let fixture = super::super::$store();
                    super::super::suite::$test(&fixture.log).await;
                }
            )*
        }
    };
}

macro_rules! suite {
    ($($store:ident),*) => {
        $(conformance!($store:
            append_and_read_back,
            batches_are_atomic,
            limits_are_enforced,
            filtered_queries,
            proofs_match_an_independent_tree,
            checkpoints_sign_store_and_verify,
            flipped_bytes_are_caught_everywhere,
            reordered_entries_are_caught,
            missing_entries_are_caught,
            a_damaged_id_index_is_caught,
            damaged_tree_nodes_are_caught,
            bad_checkpoints_are_caught,
        );)*
        mod follow {
            $(conformance_async!($store: follow_streams_old_then_new_entries);)*
        }
    };
}

suite!(memory, rocks, rocks_small_runs, rocks_group_commit);
