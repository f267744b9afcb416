//! The behaviour every store must have.

use std::time::Duration;

use causality_hash::merkle::{MerkleTree, leaf_hash};
use causality_log::{
    Backend, CheckpointSigner, Filter, Kind, Level, Log, LogError, LogStore, NewEntry, Tamper,
    limits,
};
use futures::StreamExt as _;
use rand::{Rng, SeedableRng};

fn entry(i: u64) -> NewEntry {
    let level = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
    ][(i % 5) as usize];
    let kind = match i % 4 {
        0 => Kind::Event,
        1 => Kind::Network,
        2 => Kind::Effect,
        _ => Kind::Custom("register-update".into()),
    };
    NewEntry::new(level, kind)
        .at(1_000_000 + i * 1_000)
        .source(if i.is_multiple_of(2) { "net" } else { "exec" })
        .payload(format!("payload {i}").into_bytes())
        .meta("i", i.to_string())
}

fn fill<B: Backend>(log: &Log<B>, n: u64) {
    let start = log.len();
    for i in start..start + n {
        log.append(entry(i)).unwrap();
    }
}

pub(crate) fn append_and_read_back<B: Backend>(log: &Log<B>) {
    assert!(log.is_empty());
    let mut ids = Vec::new();
    for i in 0..50 {
        let appended = log.append(entry(i)).unwrap();
        assert_eq!(appended.index, i);
        ids.push(appended.id);
    }
    assert_eq!(log.len(), 50);
    assert_eq!(log.head().last_id, Some(ids[49]));
    for i in 0..50u64 {
        let e = log.get(i).unwrap();
        let expected = entry(i);
        assert_eq!(e.id, ids[i as usize]);
        assert_eq!(e.index, i);
        assert_eq!(e.prev_id, i.checked_sub(1).map(|p| ids[p as usize]));
        assert_eq!(
            (e.level, &e.kind, e.timestamp_nanos),
            (expected.level, &expected.kind, expected.timestamp_nanos)
        );
        assert_eq!(
            (&e.source, &e.payload, &e.metadata),
            (&expected.source, &expected.payload, &expected.metadata)
        );
        assert_eq!(log.get_by_id(&ids[i as usize]).unwrap().unwrap(), e);
    }
    assert!(matches!(log.get(50), Err(LogError::OutOfRange(_))));
    assert_eq!(
        log.get_by_id(&causality_hash::ContentId::of(b"absent"))
            .unwrap(),
        None
    );
    let range = log.range(10..20).unwrap();
    assert_eq!(
        range.iter().map(|e| e.index).collect::<Vec<_>>(),
        (10..20).collect::<Vec<_>>()
    );
    assert_eq!(
        log.range(45..1000).unwrap().len(),
        5,
        "ranges clamp to the end"
    );
    assert!(log.range(60..70).unwrap().is_empty());
    // The same contents at a different position have a different id.
    let again = log.append(entry(0)).unwrap();
    assert_ne!(again.id, ids[0]);
    let report = log.verify(&[]).unwrap();
    assert_eq!((report.size, report.root), (51, log.head().root));
}

pub(crate) fn batches_are_atomic<B: Backend>(log: &Log<B>) {
    fill(log, 3);
    let head = log.head();
    let appended = log.append_batch((3..10).map(entry).collect()).unwrap();
    assert_eq!(
        appended.iter().map(|a| a.index).collect::<Vec<_>>(),
        (3..10).collect::<Vec<_>>()
    );
    assert_eq!(log.len(), 10);
    assert_eq!(log.get(3).unwrap().prev_id, head.last_id);

    let head = log.head();
    let mut bad = (10..15).map(entry).collect::<Vec<_>>();
    bad[3].source = "s".repeat(limits::MAX_SOURCE_LEN + 1);
    assert!(matches!(
        log.append_batch(bad),
        Err(LogError::InvalidEntry(_))
    ));
    assert_eq!(log.head(), head, "a failed batch leaves no trace");
    assert!(log.get(10).is_err());
    log.verify(&[]).unwrap();
}

pub(crate) fn limits_are_enforced<B: Backend>(log: &Log<B>) {
    let huge = NewEntry::new(Level::Info, Kind::Event).payload(vec![0u8; limits::MAX_ENTRY_LEN]);
    assert!(matches!(log.append(huge), Err(LogError::InvalidEntry(_))));
    let empty_kind = NewEntry::new(Level::Info, Kind::Custom(String::new()));
    assert!(matches!(
        log.append(empty_kind),
        Err(LogError::InvalidEntry(_))
    ));
    let mut many = NewEntry::new(Level::Info, Kind::Event);
    for i in 0..=limits::MAX_METADATA_ENTRIES {
        many = many.meta(i.to_string(), "v");
    }
    assert!(matches!(log.append(many), Err(LogError::InvalidEntry(_))));
    let batch: Vec<_> = (0..=limits::MAX_BATCH as u64).map(entry).collect();
    assert!(matches!(
        log.append_batch(batch),
        Err(LogError::InvalidEntry(_))
    ));
    assert!(log.is_empty());
    assert!(matches!(
        log.inclusion_proof(0, 1),
        Err(LogError::OutOfRange(_))
    ));
}

pub(crate) fn filtered_queries<B: Backend>(log: &Log<B>) {
    fill(log, 100);
    let all = 0..u64::MAX;
    let warn = log
        .query(&Filter::new().min_level(Level::Warn), all.clone(), 1000)
        .unwrap();
    assert_eq!(warn.len(), 40);
    assert!(warn.iter().all(|e| e.level >= Level::Warn));
    let net = log
        .query(&Filter::new().kind(Kind::Network), all.clone(), 1000)
        .unwrap();
    assert_eq!(
        net.iter().map(|e| e.index).collect::<Vec<_>>(),
        (0..100).filter(|i| i % 4 == 1).collect::<Vec<_>>()
    );
    let custom = log
        .query(
            &Filter::new().kind(Kind::Custom("register-update".into())),
            all.clone(),
            1000,
        )
        .unwrap();
    assert_eq!(custom.len(), 25);
    let exec_errors = log
        .query(
            &Filter::new().source("exec").min_level(Level::Error),
            all.clone(),
            1000,
        )
        .unwrap();
    assert!(
        exec_errors
            .iter()
            .all(|e| e.source == "exec" && e.level == Level::Error)
    );
    assert_eq!(exec_errors.len(), 10);
    let window = log
        .query(
            &Filter::new().time_range(1_000_000 + 10_000, 1_000_000 + 20_000),
            all.clone(),
            1000,
        )
        .unwrap();
    assert_eq!(
        window.iter().map(|e| e.index).collect::<Vec<_>>(),
        (10..20).collect::<Vec<_>>()
    );
    let limited = log.query(&Filter::new(), 5..100, 3).unwrap();
    assert_eq!(
        limited.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    assert!(log.query(&Filter::new(), all, 0).unwrap().is_empty());
}

pub(crate) fn proofs_match_an_independent_tree<B: Backend>(log: &Log<B>) {
    let mut tree = MerkleTree::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..130u64 {
        let appended = log.append(entry(i)).unwrap();
        tree.push(leaf_hash(appended.id.as_bytes()));
        assert_eq!(log.head().root, tree.root());
    }
    for size in [1u64, 2, 3, 64, 65, 100, 130] {
        let root = log.root_at(size).unwrap();
        assert_eq!(root, tree.root_at(size).unwrap());
        for _ in 0..5 {
            let index = rng.gen_range(0..size);
            let proof = log.inclusion_proof(index, size).unwrap();
            assert_eq!(proof, tree.inclusion_proof(index, size).unwrap());
            let leaf = leaf_hash(log.get(index).unwrap().id.as_bytes());
            proof.verify(&leaf, &root).unwrap();
        }
        let old = rng.gen_range(1..=size);
        let proof = log.consistency_proof(old, size).unwrap();
        proof.verify(&log.root_at(old).unwrap(), &root).unwrap();
    }
    assert!(log.inclusion_proof(130, 130).is_err());
    assert!(log.consistency_proof(5, 131).is_err());
}

pub(crate) fn checkpoints_sign_store_and_verify<B: Backend>(log: &Log<B>) {
    let signer = CheckpointSigner::new("example.com/causality/test", [5; 32]).unwrap();
    fill(log, 10);
    let note = log
        .checkpoint("example.com/causality/test", &signer)
        .unwrap();
    let checkpoint = signer.verifier().verify(&note).unwrap();
    assert_eq!((checkpoint.size, checkpoint.root), (10, log.head().root));
    fill(log, 7);
    log.checkpoint("example.com/causality/test", &signer)
        .unwrap();
    assert_eq!(log.checkpoints().unwrap().len(), 2);
    let report = log.verify(&[signer.verifier()]).unwrap();
    assert_eq!((report.checkpoints, report.signed_checkpoints), (2, 2));
    // Without the key, the checkpoints are still checked against the tree.
    let report = log.verify(&[]).unwrap();
    assert_eq!((report.checkpoints, report.signed_checkpoints), (2, 0));
}

fn assert_corrupt_at<T: std::fmt::Debug>(result: Result<T, LogError>, index: u64) {
    match result {
        Err(LogError::Corrupt { index: at, reason }) => assert_eq!(at, index, "{reason}"),
        other => panic!("expected corruption at {index}, got {other:?}"),
    }
}

pub(crate) fn flipped_bytes_are_caught_everywhere<B: Backend>(log: &Log<B>) {
    fill(log, 40);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _ in 0..20 {
        let index = rng.gen_range(0..40u64);
        let original = log.get(index).unwrap();
        // Re-encode by reading raw: flip one byte of the stored encoding.
        let bytes = raw_bytes(log, index);
        let mut damaged = bytes.clone();
        let at = rng.gen_range(0..damaged.len());
        damaged[at] ^= 1 << rng.gen_range(0..8);
        log.tamper(Tamper::Entry(index, &damaged)).unwrap();
        assert_corrupt_at(log.get(index), index);
        assert_corrupt_at(log.get_by_id(&original.id), index);
        assert_corrupt_at(log.range(0..40), index);
        assert_corrupt_at(log.verify(&[]), index);
        if index > 0 {
            assert_corrupt_at(log.range(index - 1..index + 1), index);
        }
        log.tamper(Tamper::Entry(index, &bytes)).unwrap();
        assert_eq!(log.get(index).unwrap(), original);
    }
    log.verify(&[]).unwrap();
}

/// The stored encoding of entry `index`, rebuilt from the decoded entry: the encoding is
/// canonical, so this is byte for byte what the store holds (checked by its id).
fn raw_bytes<B: Backend>(log: &Log<B>, index: u64) -> Vec<u8> {
    use prost::Message as _;
    let e = log.get(index).unwrap();
    causality_log::proto::v1::LogEntry {
        index: e.index,
        prev_id: e.prev_id.map(|p| p.as_bytes().to_vec()).unwrap_or_default(),
        level: match e.level {
            Level::Trace => 1,
            Level::Debug => 2,
            Level::Info => 3,
            Level::Warn => 4,
            Level::Error => 5,
        },
        kind: match &e.kind {
            Kind::Effect => 1,
            Kind::Fact => 2,
            Kind::Message => 3,
            Kind::Event => 4,
            Kind::Network => 5,
            Kind::Custom(_) => 6,
        },
        custom_kind: match &e.kind {
            Kind::Custom(n) => n.clone(),
            _ => String::new(),
        },
        timestamp_unix_nanos: e.timestamp_nanos,
        source: e.source.clone(),
        payload: e.payload.clone(),
        metadata: e.metadata.clone(),
    }
    .encode_to_vec()
}

pub(crate) fn reordered_entries_are_caught<B: Backend>(log: &Log<B>) {
    fill(log, 20);
    let (a, b) = (raw_bytes(log, 7), raw_bytes(log, 8));
    assert_eq!(
        causality_hash::ContentId::of(&a),
        log.get(7).unwrap().id,
        "raw bytes are the stored encoding"
    );
    log.tamper(Tamper::Entry(7, &b)).unwrap();
    log.tamper(Tamper::Entry(8, &a)).unwrap();
    assert_corrupt_at(log.get(7), 7);
    assert_corrupt_at(log.get(8), 8);
    assert_corrupt_at(log.verify(&[]), 7);
    assert_corrupt_at(log.range(0..20), 7);
}

pub(crate) fn missing_entries_are_caught<B: Backend>(log: &Log<B>) {
    fill(log, 20);
    log.tamper(Tamper::DeleteEntry(12)).unwrap();
    assert_corrupt_at(log.get(12), 12);
    assert_corrupt_at(log.verify(&[]), 12);
    assert_corrupt_at(log.range(10..15), 12);
    assert_eq!(
        log.range(0..12).unwrap().len(),
        12,
        "the intact prefix still reads"
    );
}

pub(crate) fn a_damaged_id_index_is_caught<B: Backend>(log: &Log<B>) {
    fill(log, 40);
    let victim = log.get(13).unwrap();
    log.tamper(Tamper::ForgetId(victim.id)).unwrap();
    // Lookups by id cannot tell a lost mapping from an unknown id; verify() can.
    assert_eq!(log.get_by_id(&victim.id).unwrap(), None);
    assert_corrupt_at(log.verify(&[]), 13);
    assert_eq!(log.get(13).unwrap(), victim, "the entry itself is intact");
}

pub(crate) fn damaged_tree_nodes_are_caught<B: Backend>(log: &Log<B>) {
    fill(log, 16);
    log.tamper(Tamper::Node(2, 1, [0xee; 32])).unwrap();
    match log.verify(&[]) {
        Err(LogError::TreeCorrupt {
            level,
            node,
            first_leaf,
            ..
        }) => {
            assert_eq!((level, node, first_leaf), (2, 1, 4));
        }
        other => panic!("expected a tree error, got {other:?}"),
    }
    // A proof built from the damaged node no longer verifies against the true root.
    let root = log.head().root;
    let proof = log.inclusion_proof(0, 16).unwrap();
    let leaf = leaf_hash(log.get(0).unwrap().id.as_bytes());
    assert!(proof.verify(&leaf, &root).is_err());
}

pub(crate) fn bad_checkpoints_are_caught<B: Backend>(log: &Log<B>) {
    let signer = CheckpointSigner::new("example.com/log", [1; 32]).unwrap();
    fill(log, 8);
    let good = log.checkpoint("example.com/log", &signer).unwrap();
    // A note whose signature was tampered with.
    let forged = good.replace("\n8\n", "\n7\n");
    log.tamper(Tamper::Checkpoint(8, &forged)).unwrap();
    match log.verify(&[signer.verifier()]) {
        Err(LogError::BadCheckpoint { size: 8, reason }) => {
            assert!(reason.contains("does not verify"), "{reason}");
        }
        other => panic!("expected a bad checkpoint, got {other:?}"),
    }
    // A validly signed checkpoint of a different root.
    let lie = signer.sign(&causality_log::Checkpoint {
        origin: "example.com/log".into(),
        size: 8,
        root: [0; 32],
        extensions: vec![],
    });
    log.tamper(Tamper::Checkpoint(8, &lie)).unwrap();
    assert!(matches!(
        log.verify(&[signer.verifier()]),
        Err(LogError::BadCheckpoint { size: 8, .. })
    ));
    log.tamper(Tamper::Checkpoint(8, &good)).unwrap();
    log.verify(&[signer.verifier()]).unwrap();
}

pub(crate) async fn follow_streams_old_then_new_entries<B: Backend>(log: &Log<B>) {
    fill(log, 5);
    let mut stream = log.follow(2);
    for i in 2..5 {
        assert_eq!(stream.next().await.unwrap().unwrap().index, i);
    }
    let writer = log.clone();
    let task = tokio::spawn(async move {
        for i in 5..300 {
            writer.append(entry(i)).unwrap();
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    for i in 5..300 {
        let next = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .unwrap();
        assert_eq!(next.unwrap().unwrap().index, i);
    }
    task.await.unwrap();
    // Nothing more until something is appended.
    assert!(
        tokio::time::timeout(Duration::from_millis(20), stream.next())
            .await
            .is_err()
    );
}
