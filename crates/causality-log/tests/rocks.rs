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
        Err(LogError::Storage(msg)) => assert!(msg.to_lowercase().contains("lock"), "{msg}"),
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
    match open(dir.path(), SyncPolicy::Never) {
        Err(LogError::Corrupt { index: 9, reason }) => {
            assert!(reason.contains("truncated"), "{reason}");
        }
        other => panic!("expected truncation at 9, got {other:?}"),
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

#[test]
fn group_commit_becomes_durable_by_count_and_by_time() {
    // By count: with a timer that never fires in the test, the 100th append commits.
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        SyncPolicy::GroupCommit {
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
    assert!(
        log.durable_len() >= 100,
        "the 100th append commits the group"
    );
    // By time: a batch that never fills becomes durable when the timer fires.
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
    // The timer thread makes the straggler durable; wait for it (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while log.durable_len() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "group commit timer never fired"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let never = tempfile::tempdir().unwrap();
    let log = open(never.path(), SyncPolicy::Never).unwrap();
    log.append(entry(0)).unwrap();
    assert_eq!(log.durable_len(), 0);
    assert_eq!(log.sync().unwrap(), 1);
}

/// The child side of the crash test: appends until killed, reporting on stdout every
/// append that returned Ok and, for group commit, every durability acknowledgement.
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
        _ => SyncPolicy::Never,
    };
    let log = open(Path::new(&path), policy).unwrap();
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
    for policy in ["every", "group", "never"] {
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
            assert_eq!(
                log.get(i).unwrap().payload,
                format!("entry {i}").into_bytes()
            );
        }
    }
}
