//! Apply throughput on RocksDB: a follower checking (signature, chain link, delta, state
//! hash) and storing 1,000 announced updates, against the raw RocksDB write of the same
//! bytes (header, delta, state and index entries in one `WriteBatch` per update), and
//! against the floor: that write plus what cannot be skipped (decoding the announcement,
//! one signature check, hashing the new state).

use causality_net::service::{Input, Output, Protocol};
use causality_net::{Keypair, Message, PROTOCOL_VERSION};
use causality_regsync::messages::{self, RegisterStateMessage};
use causality_regsync::{
    Command, Config, Genesis, MemoryStore, Operation, RegisterContents, RocksStore, State,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rocksdb::{DB, Options, WriteBatch, WriteOptions};

const UPDATES: u64 = 1_000;

/// One raw write: column family, key, value.
type Put = (&'static str, Vec<u8>, Vec<u8>);

fn balance(amount: u64) -> RegisterContents {
    RegisterContents::TokenBalance {
        token: "CAU".into(),
        amount,
    }
}

/// The owner's announcements: a creation and `UPDATES` updates.
fn announcements() -> Vec<Message> {
    let owner = Keypair::from_index(1);
    let mut s = State::new(
        Config::default(),
        owner.clone(),
        Box::new(MemoryStore::new()),
    );
    let genesis = Genesis::new(owner.peer_id(), "pay", "token", b"bench");
    let id = genesis.id();
    let mut out = Vec::new();
    let mut issue = |s: &mut State, command| {
        s.handle(
            0,
            Input::Command {
                command,
                call: None,
            },
        );
        while let Some(o) = s.poll_output() {
            if let Output::Publish { topic, payload, .. } = o
                && topic.is(messages::UPDATE_TOPIC)
            {
                let n = out.len() as u64;
                out.push(Message {
                    id: causality_hash::ContentId::of(&n.to_le_bytes()),
                    topic,
                    sender: owner.peer_id(),
                    seq: n,
                    timestamp_ms: 0,
                    version: PROTOCOL_VERSION,
                    payload_type: messages::STATE_MESSAGE_TYPE.into(),
                    payload,
                    via: owner.peer_id(),
                });
            }
        }
    };
    issue(
        &mut s,
        Command::Create {
            genesis,
            contents: balance(1 << 40),
            last_updated: 1,
            proof_id: None,
        },
    );
    for h in 0..UPDATES {
        issue(
            &mut s,
            Command::Update {
                register_id: id,
                operations: vec![Operation::Update(balance(h))],
                last_updated: h + 2,
                proof_id: None,
            },
        );
    }
    out
}

fn bench(c: &mut Criterion) {
    let messages = announcements();
    let id = RegisterStateMessage::decode(&messages[0].payload, 1 << 20, &Default::default())
        .unwrap()
        .register_id();
    let mut group = c.benchmark_group("regsync_apply");
    group.throughput(Throughput::Elements(UPDATES));
    group.sample_size(10);
    group.bench_function("rocksdb", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let store = RocksStore::open(dir.path()).unwrap();
                let mut s = State::new(Config::default(), Keypair::from_index(2), Box::new(store));
                s.handle(
                    0,
                    Input::Command {
                        command: Command::Follow(id),
                        call: None,
                    },
                );
                s.handle(0, Input::Message(messages[0].clone()));
                while s.poll_output().is_some() {}
                (dir, s)
            },
            |(dir, mut s)| {
                for m in &messages[1..] {
                    s.handle(0, Input::Message(m.clone()));
                    while s.poll_output().is_some() {}
                }
                assert_eq!(s.stats().deltas_applied, UPDATES + 1);
                (dir, s)
            },
            BatchSize::PerIteration,
        );
    });
    // The same bytes written raw: for each update its header, delta and state, the head
    // and the domain index, one batch each, no fsync (the store's default).
    let decoded: Vec<RegisterStateMessage> = messages[1..]
        .iter()
        .map(|m| RegisterStateMessage::decode(&m.payload, 1 << 20, &Default::default()).unwrap())
        .collect();
    let mut state = None;
    let writes: Vec<Vec<Put>> = decoded
        .iter()
        .map(|m| {
            let h = &m.header;
            let delta = m.delta.as_ref().unwrap();
            let mut s: causality_regsync::Register = state.take().unwrap_or_else(|| {
                RegisterStateMessage::decode(&messages[0].payload, 1 << 20, &Default::default())
                    .unwrap()
                    .full_state
                    .unwrap()
            });
            if let Operation::Update(c) = &delta.operations[0] {
                s.contents = c.clone();
            }
            s.epoch = h.epoch;
            s.last_updated = h.last_updated;
            let out = vec![
                (
                    "regsync.headers",
                    h.state_hash.as_bytes().to_vec(),
                    h.encode(),
                ),
                (
                    "regsync.deltas",
                    h.state_hash.as_bytes().to_vec(),
                    delta.encode(),
                ),
                (
                    "regsync.states",
                    h.state_hash.as_bytes().to_vec(),
                    s.encode(),
                ),
                (
                    "regsync.heads",
                    id.as_bytes().to_vec(),
                    [h.state_hash.as_bytes().as_slice(), &h.epoch.to_be_bytes()].concat(),
                ),
                (
                    "regsync.domains",
                    [b"pay\0".as_slice(), id.as_bytes()].concat(),
                    h.state_hash.as_bytes().to_vec(),
                ),
            ];
            state = Some(s);
            out
        })
        .collect();
    group.bench_function("raw_rocksdb", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let mut opts = Options::default();
                opts.create_if_missing(true);
                opts.create_missing_column_families(true);
                let db = DB::open_cf_descriptors(&opts, dir.path(), RocksStore::column_families())
                    .unwrap();
                (dir, db)
            },
            |(dir, db)| {
                let mut wo = WriteOptions::default();
                wo.set_sync(false);
                for update in &writes {
                    let mut batch = WriteBatch::default();
                    for (cf, k, v) in update {
                        batch.put_cf(db.cf_handle(cf).unwrap(), k, v);
                    }
                    db.write_opt(batch, &wo).unwrap();
                }
                (dir, db)
            },
            BatchSize::PerIteration,
        );
    });
    let owner = Keypair::from_index(1).peer_id();
    group.bench_function("floor_rocksdb", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let mut opts = Options::default();
                opts.create_if_missing(true);
                opts.create_missing_column_families(true);
                let db = DB::open_cf_descriptors(&opts, dir.path(), RocksStore::column_families())
                    .unwrap();
                (dir, db)
            },
            |(dir, db)| {
                let mut wo = WriteOptions::default();
                wo.set_sync(false);
                for (m, update) in messages[1..].iter().zip(&writes) {
                    let decoded =
                        RegisterStateMessage::decode(&m.payload, 1 << 20, &Default::default())
                            .unwrap();
                    assert!(decoded.header.verify(&owner));
                    let (_, _, state) = &update[2];
                    assert_eq!(
                        causality_hash::ContentId::of(state),
                        decoded.header.state_hash
                    );
                    let mut batch = WriteBatch::default();
                    for (cf, k, v) in update {
                        batch.put_cf(db.cf_handle(cf).unwrap(), k, v);
                    }
                    db.write_opt(batch, &wo).unwrap();
                }
                (dir, db)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
