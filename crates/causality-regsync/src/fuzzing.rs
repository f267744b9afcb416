//! The contracts the fuzz targets in `fuzz/` check, over every decoder of register bytes a
//! peer controls (gossip, requests, responses, reconciliation symbols). Compiled with
//! `--cfg fuzzing` (as `cargo fuzz` builds) and in tests, never into a normal build. A
//! function panics only when a decoder breaks its contract: a typed error, or a value
//! whose re-encoding decodes to the same value.

use causality_hash::ContentId;
use causality_hash::fuzzing::{round_trip, selected};
use causality_net::Keypair;

use crate::messages::{
    Commitment, RegisterStateMessage, Request, Response, SetKind, decode_nullifier,
    decode_time_map, encode_time_map,
};
use crate::riblt::Symbol;
use crate::{Genesis, Limits, Register, RegisterContents, RegisterDelta, TimeMap, UpdateHeader};

/// The byte limit the size-bounded decoders are given.
const LIMIT: usize = 1 << 20;

/// One register message; the first byte picks the decoder (state message, commitment,
/// nullifier use, time map, request, response, register, delta, header, symbols).
pub fn messages(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let limits = Limits::default();
    match which % 10 {
        0 => {
            round_trip(
                bytes,
                |b| RegisterStateMessage::decode(b, LIMIT, &limits),
                RegisterStateMessage::encode,
            );
        }
        1 => {
            round_trip(bytes, Commitment::decode, Commitment::encode);
        }
        2 => {
            round_trip(
                bytes,
                |b| decode_nullifier(b, &limits),
                crate::NullifierUse::encode,
            );
        }
        3 => {
            round_trip(
                bytes,
                |b| decode_time_map(b, &limits),
                |(domain, map)| encode_time_map(domain, map),
            );
        }
        4 => {
            round_trip(bytes, Request::decode, Request::encode);
        }
        5 => {
            round_trip(
                bytes,
                |b| Response::decode(b, LIMIT, &limits),
                Response::encode,
            );
        }
        6 => {
            round_trip(bytes, |b| Register::decode(b, &limits), Register::encode);
        }
        7 => {
            round_trip(
                bytes,
                |b| RegisterDelta::decode(b, &limits),
                RegisterDelta::encode,
            );
        }
        8 => {
            round_trip(bytes, UpdateHeader::decode, UpdateHeader::encode);
        }
        _ => {
            if let Some(symbols) = Symbol::<{ crate::riblt::ITEM_BYTES }>::decode_all(bytes) {
                let mut again = Vec::new();
                for s in &symbols {
                    s.encode(&mut again);
                }
                assert_eq!(again, bytes, "symbols have one encoding");
            }
        }
    }
}

/// Valid inputs for each target, the starting corpus: `(target, bytes)`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let key = Keypair::from_index(4);
    let genesis = Genesis::new(key.peer_id(), "fuzz", "token", b"nonce");
    let register = Register::created(genesis, RegisterContents::default(), 7);
    let header = UpdateHeader {
        register_id: register.id,
        epoch: 1,
        previous_state_hash: None,
        state_hash: register.state_hash(),
        delta_id: ContentId::of(b"delta"),
        owner: key.peer_id(),
        last_updated: 7,
        proof_id: None,
        fence: None,
        signature: [0; 64],
    }
    .sign(&key);
    let message = RegisterStateMessage {
        header: header.clone(),
        delta: None,
        full_state: Some(register.clone()),
    };
    let commitment = Commitment::new("fuzz", ContentId::of(b"root"), 3, None, &key);
    let nullifier = crate::NullifierUse::new("fuzz", [5; 32], register.id, &key);
    let time_map = TimeMap {
        entries: [("fuzz".to_owned(), (7, 9))].into(),
    };
    let request = Request::Reconcile {
        domain: "fuzz".into(),
        kind: SetKind::Registers,
        start: 0,
        count: 16,
    };
    let response = Response::Sync {
        headers: vec![header.clone()],
        deltas: Vec::new(),
        full_state: Some(register.clone()),
        more: false,
    };
    let symbols = [0u8; 3 * crate::riblt::SYMBOL_BYTES].to_vec();
    vec![
        ("messages", selected(0, message.encode())),
        ("messages", selected(1, commitment.encode())),
        ("messages", selected(2, nullifier.encode())),
        ("messages", selected(3, encode_time_map("fuzz", &time_map))),
        ("messages", selected(4, request.encode())),
        ("messages", selected(5, response.encode())),
        ("messages", selected(6, register.encode())),
        ("messages", selected(8, header.encode())),
        ("messages", selected(9, symbols)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the seeds into the committed corpus, `fuzz/corpus/regsync_<target>/`.
    #[test]
    #[ignore = "writes into fuzz/corpus; run by `cargo xtask fuzz --write-seeds`"]
    fn write_seeds() {
        let new =
            causality_hash::fuzzing::write_seeds(env!("CARGO_MANIFEST_DIR"), "regsync", &seeds());
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
