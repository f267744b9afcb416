//! The contracts the fuzz targets in `fuzz/` check, one function per family of decoders of
//! bytes a peer or a file controls. Compiled with `--cfg fuzzing` (as `cargo fuzz` builds)
//! and in tests, never into a normal build. A function panics only when a decoder breaks
//! its contract: a typed error, or a value whose re-encoding decodes to the same value
//! (and, for the compressed curve encodings, which admit one form only, is the input).

use causality_hash::fuzzing::{round_trip, selected};
use causality_net::Keypair;

use crate::messages::{Request, Response};
use crate::{Ack, Announcement, Batch, Limits, ProofMessage, ProofSystem, VerificationKey};

/// A gossip or request-response message; the first byte picks the decoder (key, proof,
/// announcement, batch, acknowledgement, request, response), the rest is its input.
pub fn messages(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let limits = Limits::default();
    match which % 7 {
        0 => {
            round_trip(
                bytes,
                |b| VerificationKey::decode(b, &limits),
                VerificationKey::encode,
            );
        }
        1 => {
            if let Some(proof) = round_trip(
                bytes,
                |b| ProofMessage::decode(b, &limits),
                ProofMessage::encode,
            ) {
                assert_eq!(
                    proof.proof_id,
                    causality_hash::ContentId::of(&proof.encode())
                );
            }
        }
        2 => {
            round_trip(
                bytes,
                |b| Announcement::decode(b, &limits),
                Announcement::encode,
            );
        }
        3 => {
            round_trip(bytes, |b| Batch::decode(b, &limits), Batch::encode);
        }
        4 => {
            round_trip(bytes, Ack::decode, Ack::encode);
        }
        5 => {
            round_trip(bytes, |b| Request::decode(b, &limits), Request::encode);
        }
        _ => {
            round_trip(bytes, |b| Response::decode(b, &limits), Response::encode);
        }
    }
}

/// Compressed Groth16/BN254 encodings; the first byte picks a verification key, a proof
/// or a scalar. The curve decoders admit one encoding per value: what they accept
/// re-encodes to the input itself.
#[cfg(feature = "groth16")]
pub fn groth16(data: &[u8]) {
    use crate::groth16::{Key, decode_fr, decode_proof, fr_bytes, key_bytes_of, proof_bytes};
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(key) = Key::decode(bytes, 64) {
                assert_eq!(key_bytes_of(key.vk()), bytes, "a second encoding of a key");
            }
        }
        1 => {
            if let Ok(proof) = decode_proof(bytes) {
                assert_eq!(proof_bytes(&proof), bytes, "a second encoding of a proof");
            }
        }
        _ => {
            if let Ok(fr) = decode_fr(bytes) {
                assert_eq!(fr_bytes(&fr), bytes, "a second encoding of a scalar");
            }
        }
    }
}

/// snarkjs JSON files (UTF-8); the first byte picks `verification_key.json`, `proof.json`
/// or `public.json`. What an import accepts, the binary decoders accept.
#[cfg(feature = "groth16")]
pub fn snarkjs(data: &[u8]) {
    use crate::groth16::{Groth16Bn254, Key, decode_fr, decode_proof, snarkjs};
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let Ok(json) = std::str::from_utf8(bytes) else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(key) = snarkjs::import_key(json) {
                Key::decode(&key, Groth16Bn254::default().max_public_inputs)
                    .expect("an imported key decodes");
            }
        }
        1 => {
            if let Ok(proof) = snarkjs::import_proof(json) {
                decode_proof(&proof).expect("an imported proof decodes");
            }
        }
        _ => {
            if let Ok(inputs) = snarkjs::import_public(json) {
                for input in inputs {
                    decode_fr(&input).expect("an imported input decodes");
                }
            }
        }
    }
}

/// Valid inputs for each target, the starting corpus: `(target, bytes)`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let key = VerificationKey {
        system: ProofSystem::GROTH16_BN254,
        key: vec![1; 96],
    };
    let proof = ProofMessage::new(
        key.id(),
        ProofSystem::GROTH16_BN254,
        vec![vec![2; 32]],
        vec![3; 128],
        [("circuit".to_owned(), serde_json::json!("multiplier"))].into(),
    )
    .expect("a valid proof message");
    let ack = Ack::sign(&Keypair::from_index(3), proof.proof_id, 1_000);
    let batch = Batch::new(vec![proof.clone()]).expect("a valid batch");
    let mut seeds = vec![
        ("messages", selected(0, key.encode())),
        ("messages", selected(1, proof.encode())),
        (
            "messages",
            selected(2, Announcement::Inline(proof.clone()).encode()),
        ),
        ("messages", selected(3, batch.encode())),
        ("messages", selected(4, ack.encode())),
        ("messages", selected(5, Request::Acks(vec![ack]).encode())),
        (
            "messages",
            selected(6, Response::Batch(batch.encode()).encode()),
        ),
        ("messages", selected(6, Response::Proof(proof).encode())),
    ];
    #[cfg(feature = "groth16")]
    {
        use crate::groth16::snarkjs;
        let key = include_str!("../tests/vectors/groth16/verification_key.json");
        let proof = include_str!("../tests/vectors/groth16/proof_1.json");
        let public = include_str!("../tests/vectors/groth16/public_1.json");
        seeds.extend([
            ("snarkjs", selected(0, key.into())),
            ("snarkjs", selected(1, proof.into())),
            ("snarkjs", selected(2, public.into())),
            (
                "groth16",
                selected(0, snarkjs::import_key(key).expect("the key")),
            ),
            (
                "groth16",
                selected(1, snarkjs::import_proof(proof).expect("the proof")),
            ),
        ]);
        for input in snarkjs::import_public(public).expect("the inputs") {
            seeds.push(("groth16", selected(2, input)));
        }
    }
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the seeds into the committed corpus, `fuzz/corpus/proofshare_<target>/`.
    #[test]
    #[ignore = "writes into fuzz/corpus; run by `cargo xtask fuzz --write-seeds`"]
    fn write_seeds() {
        let new = causality_hash::fuzzing::write_seeds(
            env!("CARGO_MANIFEST_DIR"),
            "proofshare",
            &seeds(),
        );
        println!("{} new seeds", new.unwrap());
    }

    /// The contracts hold on valid inputs and on every truncation and bit flip of them.
    #[test]
    fn contracts_hold_on_seeds_and_their_neighbours() {
        for (target, seed) in seeds() {
            let check: fn(&[u8]) = match target {
                "messages" => messages,
                #[cfg(feature = "groth16")]
                "groth16" => groth16,
                #[cfg(feature = "groth16")]
                "snarkjs" => snarkjs,
                other => panic!("unknown target {other}"),
            };
            // Bit flips of the JSON files mostly test UTF-8, at a curve check each:
            // truncations only.
            let first_bit = if target == "snarkjs" { usize::MAX } else { 8 };
            causality_hash::fuzzing::neighbours(&seed, first_bit, check);
        }
    }
}
