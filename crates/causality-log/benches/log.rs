//! Append throughput against raw RocksDB (and against the least a content-addressed append
//! costs), proofs at 1M entries, and `verify()` throughput.
//!
//! `cargo xtask bench log` runs this in release mode and prints the RocksLog / raw RocksDB
//! ratios. Under `cargo test --benches` (no `--bench` flag) the logs are scaled down so the
//! run only checks that every benchmark works.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use causality_hash::ContentId;
use causality_hash::merkle::leaf_hash;
use causality_log::{
    Kind, Level, LogStore, MemoryLog, NewEntry, RocksLog, RocksLogOptions, SyncPolicy, db_options,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rocksdb::{WriteBatch, WriteOptions};

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn entry(payload: &[u8]) -> NewEntry {
    NewEntry::new(Level::Info, Kind::Event)
        .at(1)
        .source("bench")
        .payload(payload.to_vec())
}

/// How a RocksDB baseline writes and makes its writes durable, mirroring `SyncPolicy`.
#[derive(Clone, Copy)]
enum Raw {
    /// A put each, never synced (`SyncPolicy::Never`).
    NoSync,
    /// A put each, fsync after every `n` (`SyncPolicy::Periodic`).
    SyncEvery(u64),
    /// `n` puts gathered into one fsynced write batch (`SyncPolicy::GroupCommit`).
    Batch(u64),
    /// A synced put each (`SyncPolicy::EveryAppend`).
    Sync,
}

/// A RocksDB of the same options, storing at key `i` the value `value(i, buf)` leaves in
/// `buf`, written and synced as `mode` says.
fn rocksdb_baseline(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mode: Raw,
    mut value: impl FnMut(u64, &mut Vec<u8>),
) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = db_options();
    opts.create_if_missing(true);
    let db = rocksdb::DB::open(&opts, dir.path()).unwrap();
    let mut write = WriteOptions::default();
    write.set_sync(matches!(mode, Raw::Sync | Raw::Batch(_)));
    let mut batch = WriteBatch::default();
    let mut buf = Vec::with_capacity(512);
    let mut i = 0u64;
    c.bench_function(name, |b| {
        b.iter(|| {
            buf.clear();
            value(i, &mut buf);
            let key = i.to_be_bytes();
            i += 1;
            match mode {
                Raw::NoSync | Raw::Sync => db.put_opt(key, &buf, &write).unwrap(),
                Raw::SyncEvery(n) => {
                    db.put_opt(key, &buf, &write).unwrap();
                    if i.is_multiple_of(n) {
                        db.flush_wal(true).unwrap();
                    }
                }
                Raw::Batch(n) => {
                    batch.put(key, &buf);
                    if i.is_multiple_of(n) {
                        db.write_opt(std::mem::take(&mut batch), &write).unwrap();
                    }
                }
            }
        });
    });
}

/// A plain put of the 256-byte payload.
fn raw_rocksdb(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mode: Raw,
) {
    let payload = vec![0xabu8; 256];
    rocksdb_baseline(c, name, mode, |_, buf| buf.extend_from_slice(&payload));
}

/// The least any content-addressed, hash-chained log must do per append: build the entry,
/// encode it with its index and the previous id, hash it and put the encoding with its id.
/// No Merkle tree, no id index, no state. Its gap to [`raw_rocksdb`] is inherent to
/// content addressing; the gap between RocksLog and it is what the log's own features cost.
fn floor_rocksdb(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mode: Raw,
) {
    use prost::Message as _;
    let payload = vec![0xabu8; 256];
    let mut prev = ContentId::default();
    rocksdb_baseline(c, name, mode, |i, buf| {
        causality_log::proto::v1::LogEntry {
            index: i,
            prev_id: prev.as_bytes().to_vec(),
            level: 3,
            kind: 4,
            custom_kind: String::new(),
            timestamp_unix_nanos: 1,
            source: "bench".into(),
            payload: payload.to_vec(),
            metadata: Default::default(),
        }
        .encode(buf)
        .unwrap();
        prev = ContentId::of(buf);
        buf.extend_from_slice(prev.as_bytes());
    });
}

fn rocks_log(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    sync: SyncPolicy,
) {
    let dir = tempfile::tempdir().unwrap();
    let log = RocksLog::open(dir.path(), RocksLogOptions::default().with_sync(sync)).unwrap();
    let payload = vec![0xabu8; 256];
    c.bench_function(name, |b| b.iter(|| log.append(entry(&payload)).unwrap()));
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_256B");
    group.throughput(Throughput::Elements(1));
    let payload = vec![0xabu8; 256];
    let memory = MemoryLog::new();
    group.bench_function("memory_log", |b| {
        b.iter(|| memory.append(entry(&payload)).unwrap());
    });
    drop(memory);

    let (max_batch, max_delay) = (1000, Duration::from_secs(1));
    // Pairs measured back to back so the ratio sees the same machine state.
    rocks_log(&mut group, "rocks_log_nosync", SyncPolicy::Never);
    raw_rocksdb(&mut group, "raw_rocksdb_nosync", Raw::NoSync);
    floor_rocksdb(&mut group, "floor_rocksdb_nosync", Raw::NoSync);
    let group_commit = SyncPolicy::GroupCommit {
        max_batch,
        max_delay,
    };
    rocks_log(&mut group, "rocks_log_group1000", group_commit);
    raw_rocksdb(
        &mut group,
        "raw_rocksdb_group1000",
        Raw::SyncEvery(max_batch),
    );
    raw_rocksdb(&mut group, "raw_rocksdb_batch1000", Raw::Batch(max_batch));
    floor_rocksdb(&mut group, "floor_rocksdb_batch1000", Raw::Batch(max_batch));
    let periodic = SyncPolicy::Periodic {
        max_batch,
        max_delay,
    };
    rocks_log(&mut group, "rocks_log_periodic1000", periodic);
    raw_rocksdb(
        &mut group,
        "raw_rocksdb_periodic1000",
        Raw::SyncEvery(max_batch),
    );
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    rocks_log(&mut group, "rocks_log_sync", SyncPolicy::EveryAppend);
    raw_rocksdb(&mut group, "raw_rocksdb_sync", Raw::Sync);
    group.finish();
}

fn filled(n: u64) -> (tempfile::TempDir, RocksLog) {
    let dir = tempfile::tempdir().unwrap();
    let log = RocksLog::open(
        dir.path(),
        RocksLogOptions::default().with_sync(SyncPolicy::Never),
    )
    .unwrap();
    let payload = vec![0x11u8; 256];
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(10_000);
        log.append_batch((0..batch).map(|_| entry(&payload)).collect())
            .unwrap();
        done += batch;
    }
    (dir, log)
}

fn proofs(c: &mut Criterion) {
    let n: u64 = if full_run() { 1 << 20 } else { 1 << 10 };
    let (_dir, log) = filled(n);
    let head = log.head();
    let mut group = c.benchmark_group("proofs_1M");
    let mut i = 0u64;
    group.bench_function("inclusion_proof", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            black_box(log.inclusion_proof(i, n).unwrap())
        });
    });
    let proofs: Vec<_> = (0..256u64)
        .map(|j| {
            let index = j * 4099 % n;
            (
                leaf_hash(log.get(index).unwrap().id.as_bytes()),
                log.inclusion_proof(index, n).unwrap(),
            )
        })
        .collect();
    let mut j = 0;
    group.bench_function("inclusion_verify", |b| {
        b.iter(|| {
            j = (j + 1) % proofs.len();
            proofs[j].1.verify(&proofs[j].0, &head.root).unwrap();
        });
    });
    group.bench_function("consistency_proof", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            black_box(log.consistency_proof(i.max(1), n).unwrap())
        });
    });
    group.finish();
}

fn verify(c: &mut Criterion) {
    let n: u64 = if full_run() { 100_000 } else { 1_000 };
    let (_dir, rocks) = filled(n);
    let memory = Arc::new(MemoryLog::new());
    memory
        .append_batch((0..n.min(10_000)).map(|_| entry(&[0x22; 256])).collect())
        .unwrap();
    let mut group = c.benchmark_group("verify");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n));
    group.bench_function("rocks_log", |b| b.iter(|| rocks.verify(&[]).unwrap()));
    group.throughput(Throughput::Elements(memory.len()));
    group.bench_function("memory_log", |b| b.iter(|| memory.verify(&[]).unwrap()));
    group.finish();
}

criterion_group!(benches, append, proofs, verify);
criterion_main!(benches);
