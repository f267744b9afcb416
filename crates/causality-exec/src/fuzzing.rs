//! The contracts the fuzz targets in `fuzz/` check, over every decoder of execution bytes
//! a peer or the store controls. Compiled with `--cfg fuzzing` (as `cargo fuzz` builds)
//! and in tests, never into a normal build. A function panics only when a decoder breaks
//! its contract: a typed error, or a value whose re-encoding decodes to the same value.

use causality_hash::ContentId;
use causality_hash::fuzzing::{round_trip, selected};
use causality_net::Keypair;
use prost::Message as _;

use crate::model::decode_bounded;
use crate::proto::v1 as pb;
use crate::{
    Edge, ExecutionSequence, ExecutionSequenceMessage, ExecutionStatus, Limits, NodeClaimToken,
    NodeResult, WorkSpec,
};

/// The byte limit the size-bounded decoders are given.
const LIMIT: usize = 1 << 20;

/// One execution message; the first byte picks the decoder (sequence, status message,
/// node result, claim token), the rest is its input.
pub fn messages(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let limits = Limits::default();
    match which % 4 {
        0 => {
            round_trip(
                bytes,
                |b| ExecutionSequence::decode(b, &limits),
                ExecutionSequence::encode,
            );
        }
        1 => {
            round_trip(
                bytes,
                |b| ExecutionSequenceMessage::decode(b, LIMIT, &limits),
                ExecutionSequenceMessage::encode,
            );
        }
        2 => {
            let decode = |b: &[u8]| {
                decode_bounded::<pb::NodeResult>(b, "result", LIMIT)
                    .and_then(|r| NodeResult::from_proto(r, &limits))
            };
            round_trip(bytes, decode, |r| r.to_proto().encode_to_vec());
        }
        _ => {
            let decode = |b: &[u8]| {
                decode_bounded::<pb::NodeClaimToken>(b, "token", LIMIT)
                    .and_then(NodeClaimToken::from_proto)
            };
            round_trip(bytes, decode, |t| t.to_proto().encode_to_vec());
        }
    }
}

/// Valid inputs for each target, the starting corpus: `(target, bytes)`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let leader = Keypair::from_index(5);
    let executor = Keypair::from_index(6);
    let sequence = ExecutionSequence::new(
        leader.peer_id(),
        b"nonce",
        [
            (0, WorkSpec::new("noop", b"in".to_vec())),
            (1, WorkSpec::new("wasm", b"code".to_vec())),
        ],
        vec![Edge::new(0, 1)],
    );
    let token = NodeClaimToken {
        sequence_id: sequence.id(),
        node: 0,
        token: 1,
        term: 1,
        holder: executor.peer_id(),
        lease_until_ms: 10_000,
        leader: leader.peer_id(),
        signature: [0; 64],
    }
    .sign(&leader);
    let result = NodeResult::new(
        token.clone(),
        b"out".to_vec(),
        Some(ContentId::of(b"proof")),
        1_000,
        2_000,
        &executor,
    );
    let status = ExecutionSequenceMessage {
        sequence_id: sequence.id(),
        status: ExecutionStatus::Running,
        term: 1,
        leader: leader.peer_id(),
        completed_nodes: vec![0],
        pending_nodes: vec![1],
        failed_nodes: Vec::new(),
        skipped_nodes: Vec::new(),
        results: vec![result.clone()],
        seq: 1,
        signature: [0; 64],
    }
    .sign(&leader);
    vec![
        ("messages", selected(0, sequence.encode())),
        ("messages", selected(1, status.encode())),
        ("messages", selected(2, result.to_proto().encode_to_vec())),
        ("messages", selected(3, token.to_proto().encode_to_vec())),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the seeds into the committed corpus, `fuzz/corpus/exec_<target>/`.
    #[test]
    #[ignore = "writes into fuzz/corpus; run by `cargo xtask fuzz --write-seeds`"]
    fn write_seeds() {
        let new =
            causality_hash::fuzzing::write_seeds(env!("CARGO_MANIFEST_DIR"), "exec", &seeds());
        println!("{} new seeds", new.unwrap());
    }

    /// The contract holds on valid inputs and on every truncation and bit flip of them.
    #[test]
    fn contracts_hold_on_seeds_and_their_neighbours() {
        for (target, seed) in seeds() {
            assert_eq!(target, "messages");
            causality_hash::fuzzing::neighbours(&seed, 8, messages);
        }
    }
}
