//! RocksDB-specific behaviour: persistence across reopen, damaged databases, the lock, and
//! crash safety under SIGKILL.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use causality_log::{
    Kind, Level, LogError, LogStore, NewEntry, RocksLog, RocksLogOptions, SyncPolicy, Tamper,
};

fn entry(i: u64) -> NewEntry {
    NewEntry::new(Level::Info, Kind::Event)
        .at(i)
        .source("test")
        .payload(format!("entry {i}").into_bytes())
}

fn open(path: &Path, sync: SyncPolicy) -> Result<RocksLog, LogError> {
    RocksLog::open(path, RocksLogOptions::default().with_sync(sync))
}

#[test]
fn reopen_keeps_everything_without_rebuilding() {
    let dir = tempfile::tempdir().unwrap();
    let head = {
        let log = open(dir.path(), SyncPolicy::EveryAppend).unwrap();
        log.append_batch((0..1000).map(entry).collect()).unwrap();
        log.append(entry(1000)).unwrap();
        log.head()
    };
    let log = open(dir.path(), SyncPolicy::EveryAppend).unwrap();
    assert_eq!(log.head(), head);
    assert_eq!(log.durable_len(), 1001);
    log.verify(&[]).unwrap();
    // Appends continue the same chain and tree.
    let next = log.append(entry(1001)).unwrap();
    assert_eq!(next.index, 1001);
    assert_eq!(log.get(1001).unwrap().prev_id, head.last_id);
    log.consistency_proof(1001, 1002)
        .unwrap()
        .verify(&head.root, &log.head().root)
        .unwrap();
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _log = open(dir.path(), SyncPolicy::Never).unwrap();
    match open(dir.path(), SyncPolicy::Never) {
        Err(LogError::Locked { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected a lock error, got {other:?}"),
    }
}

#[test]
fn damage_on_disk_is_reported_on_open() {
    // Truncated: the last entry is gone but the head says it exists.
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), SyncPolicy::Never).unwrap();
        log.append_batch((0..10).map(entry).collect()).unwrap();
        log.tamper(Tamper::DeleteEntry(9)).unwrap();
    }
    // A failed open changes nothing: the second attempt sees the same damage.
    for _ in 0..2 {
        match open(dir.path(), SyncPolicy::Never) {
            Err(LogError::Corrupt { index: 9, reason }) => {
                assert!(reason.contains("truncated"), "{reason}");
            }
            other => panic!("expected truncation at 9, got {other:?}"),
        }
    }

    // The last entry modified in place.
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), SyncPolicy::Never).unwrap();
        log.append_batch((0..10).map(entry).collect()).unwrap();
        log.tamper(Tamper::Entry(9, b"\x08\x09garbage")).unwrap();
    }
    assert!(matches!(
        open(dir.path(), SyncPolicy::Never),
        Err(LogError::Corrupt { index: 9, .. })
    ));
}

#[test]
fn garbage_database_files_give_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), SyncPolicy::EveryAppend).unwrap();
        log.append_batch((0..100).map(entry).collect()).unwrap();
    }
    // Overwrite every table, manifest and log file with junk of the same length.
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let path = file.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("MANIFEST") || name.ends_with(".log") || name.ends_with(".sst") {
            let len = std::fs::metadata(&path).unwrap().len() as usize;
            std::fs::write(&path, vec![0x5a; len.max(1)]).unwrap();
        }
    }
    match open(dir.path(), SyncPolicy::Never) {
        Err(LogError::Storage(_) | LogError::Corrupt { .. }) => {}
        Ok(log) => panic!("junk accepted as a log of {} entries", log.len()),
        Err(other) => panic!("unexpected error {other}"),
    }
}

/// Waits (bounded) until the background thread has made `n` entries durable.
fn wait_durable(log: &RocksLog, n: u64, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while log.durable_len() < n {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn periodic_sync_becomes_durable_by_count_and_by_time() {
    // By count: with a timer that never fires in the test, the 100th append syncs.
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        SyncPolicy::Periodic {
            max_batch: 100,
            max_delay: Duration::from_secs(3600),
        },
    )
    .unwrap();
    for i in 0..99 {
        log.append(entry(i)).unwrap();
    }
    assert!(
        log.durable_len() < 99,
        "nothing forces a sync before the batch is full"
    );
    log.append(entry(99)).unwrap();
    assert!(log.durable_len() >= 100, "the 100th append syncs");
    // By time: a batch that never fills becomes durable when the timer fires.
    let timed = tempfile::tempdir().unwrap();
    let log = open(
        timed.path(),
        SyncPolicy::Periodic {
            max_batch: 1_000_000,
            max_delay: Duration::from_millis(5),
        },
    )
    .unwrap();
    log.append(entry(0)).unwrap();
    wait_durable(&log, 1, "periodic sync timer never fired");
    let never = tempfile::tempdir().unwrap();
    let log = open(never.path(), SyncPolicy::Never).unwrap();
    log.append(entry(0)).unwrap();
    assert_eq!(log.durable_len(), 0);
    assert_eq!(log.sync().unwrap(), 1);
}

/// Stored entries, read straight from RocksDB.
fn stored(log: &RocksLog) -> u64 {
    let db = log.db();
    let cf = db.cf_handle("log.entries").unwrap();
    db.iterator_cf(cf, rocksdb::IteratorMode::Start).count() as u64
}

#[test]
fn group_commit_writes_whole_groups_by_count_and_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        SyncPolicy::GroupCommit {
            max_batch: 100,
            max_delay: Duration::from_secs(3600),
        },
    )
    .unwrap();
    let appended: Vec<_> = (0..99).map(|i| log.append(entry(i)).unwrap()).collect();
    assert_eq!(log.durable_len(), 0);
    assert_eq!(stored(&log), 0, "a group is written only when it commits");
    // Waiting entries are part of the log already: reads, ids, proofs, queries.
    assert_eq!(log.get(42).unwrap().payload, b"entry 42");
    let by_id = log.get_by_id(&appended[98].id).unwrap().unwrap();
    assert_eq!(by_id.index, 98);
    assert_eq!(log.range(10..20).unwrap().len(), 10);
    let head = log.head();
    log.inclusion_proof(7, head.size)
        .unwrap()
        .verify(
            &causality_hash::merkle::leaf_hash(appended[7].id.as_bytes()),
            &head.root,
        )
        .unwrap();
    assert_eq!(log.verify(&[]).unwrap().size, 99);

    // The 100th append hands the group to the background thread, which writes it whole.
    log.append(entry(99)).unwrap();
    wait_durable(&log, 100, "the full group was never committed");
    assert_eq!(stored(&log), 100);
    assert_eq!(log.verify(&[]).unwrap().root, log.head().root);

    // A group that never fills is committed when the timer fires.
    let timed = tempfile::tempdir().unwrap();
    let log = open(
        timed.path(),
        SyncPolicy::GroupCommit {
            max_batch: 1_000_000,
            max_delay: Duration::from_millis(5),
        },
    )
    .unwrap();
    log.append(entry(0)).unwrap();
    wait_durable(&log, 1, "group commit timer never fired");
    assert_eq!(stored(&log), 1);
}

#[test]
fn group_commit_commits_on_sync_checkpoint_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let policy = SyncPolicy::GroupCommit {
        max_batch: 1_000_000,
        max_delay: Duration::from_secs(3600),
    };
    let head = {
        let log = open(dir.path(), policy).unwrap();
        log.append_batch((0..10).map(entry).collect()).unwrap();
        assert_eq!(log.sync().unwrap(), 10);
        assert_eq!(stored(&log), 10);
        // A checkpoint is stored with the entries it covers.
        log.append_batch((10..20).map(entry).collect()).unwrap();
        let signer = causality_log::CheckpointSigner::new("test/log", [7; 32]).unwrap();
        log.checkpoint("test/log", &signer).unwrap();
        assert_eq!(stored(&log), 20);
        assert_eq!(log.durable_len(), 20);
        // A clean close commits what is waiting.
        log.append_batch((20..30).map(entry).collect()).unwrap();
        log.head()
    };
    let log = open(dir.path(), policy).unwrap();
    assert_eq!(log.head(), head);
    let report = log.verify(&[]).unwrap();
    assert_eq!((report.size, report.checkpoints), (30, 1));
}

/// The child side of the crash test: appends until killed, reporting on stdout every
/// append that returned Ok and every durability acknowledgement.
#[test]
#[ignore = "run by crash_safety_under_sigkill as a child process"]
fn crash_child() {
    use std::io::Write as _;
    let path = std::env::var("CAUSALITY_CRASH_DIR").unwrap();
    let policy = match std::env::var("CAUSALITY_CRASH_POLICY").unwrap().as_str() {
        "every" => SyncPolicy::EveryAppend,
        "group" => SyncPolicy::GroupCommit {
            max_batch: 50,
            max_delay: Duration::from_millis(2),
        },
        "periodic" => SyncPolicy::Periodic {
            max_batch: 50,
            max_delay: Duration::from_millis(2),
        },
        _ => SyncPolicy::Never,
    };
    // Small id-index runs, so ingestion is under way when the kill lands.
    let log = RocksLog::open(
        Path::new(&path),
        RocksLogOptions::default()
            .with_sync(policy)
            .with_index_run(32),
    )
    .unwrap();
    let mut out = std::io::stdout().lock();
    let mut durable = 0;
    for i in 0.. {
        let appended = log.append(entry(i)).unwrap();
        writeln!(out, "ok {}", appended.index).unwrap();
        let now = log.durable_len();
        if now != durable {
            durable = now;
            writeln!(out, "durable {now}").unwrap();
        }
        out.flush().unwrap();
    }
}

#[test]
fn crash_safety_under_sigkill() {
    for policy in ["every", "periodic", "group", "never"] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CAUSALITY_CRASH_DIR", dir.path())
            .env("CAUSALITY_CRASH_POLICY", policy)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut acked, mut durable) = (None, 0u64);
        // Let it run for a while, then kill it mid-stream.
        while acked.is_none_or(|a: u64| a < 400) {
            let line = lines.next().expect("child exited early").unwrap();
            if let Some(i) = line.strip_prefix("ok ") {
                acked = Some(i.parse().unwrap());
            } else if let Some(n) = line.strip_prefix("durable ") {
                durable = n.parse().unwrap();
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acked = acked.unwrap();

        let log = open(dir.path(), SyncPolicy::Never).unwrap();
        let report = log.verify(&[]).unwrap();
        println!(
            "{policy}: {} appends acknowledged, {durable} durable, {} recovered",
            acked + 1,
            report.size
        );
        let must_have = if policy == "group" {
            durable
        } else {
            acked + 1
        };
        assert!(
            report.size >= must_have,
            "{policy}: lost acknowledged appends"
        );
        for i in 0..report.size {
            let entry = log.get(i).unwrap();
            assert_eq!(entry.payload, format!("entry {i}").into_bytes());
            assert_eq!(log.get_by_id(&entry.id).unwrap(), Some(entry));
        }
    }
}

fn open_with_runs(path: &Path, run: u64) -> Result<RocksLog, LogError> {
    RocksLog::open(
        path,
        RocksLogOptions::default()
            .with_sync(SyncPolicy::Never)
            .with_index_run(run),
    )
}

/// Ids in the `ids` column family, and its watermark (entries the ingested runs cover).
fn ingested(log: &RocksLog) -> (usize, u64) {
    let db = log.db();
    let cf = db.cf_handle("log.ids").unwrap();
    let mut ids = 0;
    let mut watermark = 0;
    for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
        let (key, value) = item.unwrap();
        match key.len() {
            32 => ids += 1,
            _ => watermark = u64::from_be_bytes(value[..].try_into().unwrap()),
        }
    }
    (ids, watermark)
}

#[test]
fn ids_are_found_in_ingested_runs_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<_> = {
        let log = open_with_runs(dir.path(), 8).unwrap();
        let mut ids: Vec<_> = log
            .append_batch((0..50).map(entry).collect())
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        for i in 50..100 {
            ids.push(log.append(entry(i)).unwrap().id);
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(log.get_by_id(id).unwrap().unwrap().index, i as u64);
        }
        ids
    };
    // Closing finished every full run: 12 runs of 8 ids are in table files; the last 4
    // ids are rebuilt from the entries.
    let log = open_with_runs(dir.path(), 8).unwrap();
    assert_eq!(ingested(&log), (96, 96));
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(log.get_by_id(id).unwrap().unwrap().index, i as u64);
    }
    let unknown = causality_hash::ContentId::of(b"not in the log");
    assert_eq!(log.get_by_id(&unknown).unwrap(), None);
    let next = log.append(entry(100)).unwrap();
    assert_eq!(log.get_by_id(&next.id).unwrap().unwrap().index, 100);
    log.verify(&[]).unwrap();
}

#[test]
fn truncation_below_the_index_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open_with_runs(dir.path(), 8).unwrap();
        log.append_batch((0..40).map(entry).collect()).unwrap();
    }
    {
        let log = open_with_runs(dir.path(), 8).unwrap();
        for i in 32..40 {
            log.tamper(Tamper::DeleteEntry(i)).unwrap();
        }
        // Without the head marker, the index alone still knows 40 entries existed.
        let db = log.db().clone();
        drop(log);
        db.delete_cf(db.cf_handle("log.meta").unwrap(), b"head")
            .unwrap();
    }
    match open_with_runs(dir.path(), 8) {
        Err(LogError::Corrupt { index: 32, reason }) => {
            assert!(
                reason.contains("truncated") && reason.contains("indexed"),
                "{reason}"
            );
        }
        other => panic!("expected truncation at 32, got {other:?}"),
    }
}

#[test]
fn a_failed_index_stops_appends_without_losing_entries() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_runs(dir.path(), 8).unwrap();
    // A directory where the first run's table file would go makes its ingestion fail.
    let blocker = dir.path().join("log-ids-00000000000000000000.ingest");
    std::fs::create_dir(&blocker).unwrap();
    // Appends go on until the failure is seen, at the latest when two runs are pending
    // and the first can never be ingested; the refused append writes nothing.
    let mut ids = Vec::new();
    let reason = loop {
        match log.append(entry(ids.len() as u64)) {
            Ok(appended) => ids.push(appended.id),
            Err(LogError::Storage(reason)) => break reason,
            Err(other) => panic!("unexpected error {other}"),
        }
        assert!(ids.len() <= 16, "appends continued past two pending runs");
    };
    assert!(reason.contains("id index"), "{reason}");
    assert!(
        ids.len() >= 8,
        "the failure can only follow the first full run"
    );
    assert_eq!(log.len(), ids.len() as u64);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(log.get_by_id(id).unwrap().unwrap().index, i as u64);
    }
    drop(log);
    std::fs::remove_dir(&blocker).unwrap();
    let log = open_with_runs(dir.path(), 8).unwrap();
    assert_eq!(log.len(), ids.len() as u64);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(log.get_by_id(id).unwrap().unwrap().index, i as u64);
    }
    log.append(entry(ids.len() as u64)).unwrap();
    log.verify(&[]).unwrap();
}

#[test]
fn leftover_ingest_files_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_with_runs(dir.path(), 8).unwrap());
    let leftover = dir.path().join("log-ids-00000000000000000008.ingest");
    std::fs::write(&leftover, b"half-written table").unwrap();
    let log = open_with_runs(dir.path(), 8).unwrap();
    assert!(!leftover.exists());
    log.append(entry(0)).unwrap();
}

#[test]
fn other_storage_formats_are_refused() {
    // A database from the earlier layout, with its separate tree column family.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut opts = causality_log::db_options();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        rocksdb::DB::open_cf(
            &opts,
            dir.path(),
            ["log.entries", "log.ids", "log.tree", "log.meta"],
        )
        .unwrap();
    }
    match open(dir.path(), SyncPolicy::Never) {
        Err(LogError::Storage(reason)) => {
            assert!(reason.contains("earlier storage layout"), "{reason}");
        }
        other => panic!("expected a layout error, got {other:?}"),
    }

    // A format this version does not know.
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), SyncPolicy::Never).unwrap();
        let db = log.db().clone();
        drop(log);
        db.put_cf(
            db.cf_handle("log.meta").unwrap(),
            b"format",
            99u64.to_be_bytes(),
        )
        .unwrap();
    }
    match open(dir.path(), SyncPolicy::Never) {
        Err(LogError::Storage(reason)) => assert!(reason.contains("format 99"), "{reason}"),
        other => panic!("expected a format error, got {other:?}"),
    }
}

/// A small tmpfs mounted at a fresh directory for the life of the value (needs root).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (after a loud notice) where mounting is not allowed; in CI, which runs as
    /// root, a failed mount fails the test rather than skipping it.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the full-disk test: mounting a {size} tmpfs failed (run as root)"
            );
            eprintln!(
                "\n*** SKIPPED: the full-disk test needs root to mount a tmpfs; \
                 run `sudo cargo test -p causality-log --test rocks` to run it ***\n"
            );
        }
        mounted.then_some(Self { dir })
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Incompressible bytes, from a fixed seed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn group_commit_on_a_full_disk_refuses_appends_and_loses_nothing_committed() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    let path = disk.dir.path().join("db");
    let policy = SyncPolicy::GroupCommit {
        max_batch: 16,
        max_delay: Duration::from_secs(3600),
    };
    let big = |i: u64| entry(i).payload(noise(i, 16 * 1024));
    let (size, durable) = {
        let log = open(&path, policy).unwrap();
        let mut failure = None;
        for i in 0..1_000 {
            if let Err(e) = log.append(big(i)) {
                failure = Some(e);
                break;
            }
        }
        let failure = failure.expect("a 4 MiB disk fills up");
        println!("append failed: {failure}");
        assert!(
            matches!(&failure, LogError::Storage(m) if m.contains("group commit")),
            "{failure}"
        );
        let (size, durable) = (log.len(), log.durable_len());
        // Bounded: at most two groups (and the append that found the disk full) wait.
        assert!(
            size - durable <= 2 * 16 + 1,
            "{size} appended, {durable} durable"
        );
        // Once a failed group waits, appends are refused and change nothing.
        let refused = log.append(big(size)).unwrap_err();
        assert!(matches!(refused, LogError::Storage(_)), "{refused}");
        assert_eq!(log.len(), size);
        // Everything appended is still readable, committed or waiting.
        for i in 0..size {
            assert_eq!(log.get(i).unwrap().payload, noise(i, 16 * 1024));
        }
        (size, durable)
    };
    // With space again, the log reopens with every committed group and takes appends.
    disk.resize("64m");
    let log = open(&path, policy).unwrap();
    let report = log.verify(&[]).unwrap();
    println!(
        "{size} appended, {durable} durable when the disk filled, {} after reopen",
        report.size
    );
    assert!(
        (durable..=size).contains(&report.size),
        "{} entries after reopen; {durable} were durable, {size} appended",
        report.size
    );
    log.append(entry(report.size)).unwrap();
    assert_eq!(log.sync().unwrap(), report.size + 1);
}

/// An application keeps its own column family beside the log; opening the database for
/// the log alone (as `causality-node log verify` does) opens that family too and leaves
/// its data as it was.
#[test]
fn a_database_with_an_applications_own_column_family_reopens_for_the_log_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let log = RocksLog::open_with(
            &path,
            RocksLogOptions::default(),
            vec![rocksdb::ColumnFamilyDescriptor::new(
                "app.state",
                rocksdb::Options::default(),
            )],
        )
        .unwrap();
        log.append(entry(1)).unwrap();
        let cf = log.db().cf_handle("app.state").unwrap();
        log.db().put_cf(cf, b"key", b"value").unwrap();
        log.sync().unwrap();
    }
    let log = RocksLog::open(&path, RocksLogOptions::default()).unwrap();
    assert_eq!(log.len(), 1);
    let cf = log.db().cf_handle("app.state").unwrap();
    assert_eq!(
        log.db().get_cf(cf, b"key").unwrap().as_deref(),
        Some(&b"value"[..])
    );
    log.verify(&[]).unwrap();
}
