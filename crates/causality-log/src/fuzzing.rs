//! The contracts the fuzz targets in `fuzz/` check, one function per decoder of bytes
//! read back from disk or received from a peer. Compiled with `--cfg fuzzing` (as
//! `cargo fuzz` builds) and in tests, never into a normal build. A function panics only
//! when its decoder breaks the contract: a typed error, or a value whose re-encoding
//! decodes to the same value.

use prost::Message as _;

use crate::proto::v1 as pb;
use crate::{Checkpoint, CheckpointSigner, Kind, LogEntry, NewEntry};

/// The name of the checkpoint key the `checkpoint` target verifies against.
const KEY_NAME: &str = "fuzz.example/log";

fn signer() -> CheckpointSigner {
    CheckpointSigner::new(KEY_NAME, [9; 32]).expect("a valid key name")
}

/// A stored entry (the first byte is the index it is read at, the rest the stored bytes):
/// decoded, it is either reported corrupt or re-encodes to an entry that decodes equal,
/// with an id that is the hash of the re-encoding.
pub fn entry(data: &[u8]) {
    let Some((&index, bytes)) = data.split_first() else {
        return;
    };
    let index = u64::from(index);
    let Ok(entry) = LogEntry::decode(index, bytes) else {
        return;
    };
    let new = NewEntry {
        level: entry.level,
        kind: entry.kind.clone(),
        timestamp_nanos: entry.timestamp_nanos,
        source: entry.source.clone(),
        payload: entry.payload.clone(),
        metadata: entry.metadata.clone(),
    };
    // An entry read back may break what a writer is held to (a source too long, say):
    // then there is no re-encoding to compare.
    let Ok((id, again)) = new.seal(index, entry.prev_id, 0) else {
        return;
    };
    let back = LogEntry::decode(index, &again).expect("a re-encoded entry decodes");
    assert_eq!(back.id, id);
    assert_eq!(
        LogEntry {
            id,
            ..entry.clone()
        },
        back,
        "entry changed through a re-encoding"
    );
    if pb::LogEntry::decode(bytes)
        .map(|m| m.encode_to_vec())
        .as_deref()
        == Ok(bytes)
    {
        assert_eq!(entry.id, id, "canonical bytes, different id");
    }
}

/// A signed checkpoint note (UTF-8): verified against a fixed key, it is refused or it
/// yields a checkpoint whose body is the note's body, byte for byte, and whose re-signed
/// note verifies to the same checkpoint.
pub fn checkpoint(data: &[u8]) {
    let Ok(note) = std::str::from_utf8(data) else {
        return;
    };
    let signer = signer();
    let verifier = signer.verifier();
    let _ = crate::CheckpointVerifier::parse(note);
    let Ok(checkpoint) = verifier.verify(note) else {
        return;
    };
    assert!(
        note.starts_with(&checkpoint.body()),
        "the body read is not the body signed"
    );
    let again = verifier
        .verify(&signer.sign(&checkpoint))
        .expect("a re-signed checkpoint verifies");
    assert_eq!(again, checkpoint);
    let parsed = Checkpoint::parse_body(&checkpoint.body()).expect("a body parses");
    assert_eq!(parsed, checkpoint);
}

/// Valid inputs for each target, the starting corpus: `(target, bytes)`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let entry = |index: u8, kind: Kind| {
        let prev = (index > 0).then(|| causality_hash::ContentId::of(b"previous"));
        let (_, bytes) = NewEntry::new(crate::Level::Info, kind)
            .source("fuzz")
            .payload(b"payload".to_vec())
            .meta("key", "value")
            .at(1_000)
            .seal(u64::from(index), prev, 0)
            .expect("a valid entry");
        let mut seed = vec![index];
        seed.extend(bytes);
        seed
    };
    let checkpoint = Checkpoint {
        origin: "fuzz.example/log".into(),
        size: 12,
        root: [3; 32],
        extensions: vec!["extension".into()],
    };
    vec![
        ("entry", entry(0, Kind::Fact)),
        ("entry", entry(5, Kind::Custom("custom".into()))),
        ("checkpoint", signer().sign(&checkpoint).into_bytes()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the seeds into the committed corpus, `fuzz/corpus/log_<target>/`.
    #[test]
    #[ignore = "writes into fuzz/corpus; run by `cargo xtask fuzz --write-seeds`"]
    fn write_seeds() {
        let new = causality_hash::fuzzing::write_seeds(env!("CARGO_MANIFEST_DIR"), "log", &seeds());
        println!("{} new seeds", new.unwrap());
    }

    /// The contracts hold on valid inputs and on every truncation and bit flip of them.
    #[test]
    fn contracts_hold_on_seeds_and_their_neighbours() {
        for (target, seed) in seeds() {
            let check = match target {
                "entry" => entry,
                "checkpoint" => checkpoint,
                other => panic!("unknown target {other}"),
            };
            causality_hash::fuzzing::neighbours(&seed, 0, check);
        }
    }

    /// A built-in kind that also carries a custom name is a second encoding of the same
    /// entry under another id; it is read as corrupt (the `entry` contract found it).
    #[test]
    fn a_builtin_kind_with_a_custom_name_is_corrupt() {
        let bytes = pb::LogEntry {
            index: 0,
            level: pb::Level::Info as i32,
            kind: pb::Kind::Fact as i32,
            custom_kind: "stray".into(),
            source: "fuzz".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let err = LogEntry::decode(0, &bytes).unwrap_err();
        assert!(err.to_string().contains("unknown kind"), "{err}");
        let mut seed = vec![0];
        seed.extend(bytes);
        entry(&seed);
    }
}
