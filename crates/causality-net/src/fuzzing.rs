//! The contracts the fuzz targets in `fuzz/` check, one function per decoder of bytes a
//! peer controls. Compiled with `--cfg fuzzing` (as `cargo fuzz` builds) and in tests,
//! never into a normal build. Each function decodes the input the way the network does
//! and panics only when the decoder breaks its contract: it must return a typed error, or
//! a value whose re-encoding decodes to the same value (and, where the decoder insists on
//! canonical bytes, is the input itself).

use causality_hash::ContentId;
use prost::Message as _;

use crate::proto::v1 as pb;
use crate::{Equivocation, Keypair, Limits, PROTOCOL_VERSION, PeerId};

/// Largest frame the `frame` target reads (a request protocol's usual limit).
const MAX_FRAME: usize = 64 * 1024;

fn via() -> PeerId {
    Keypair::from_index(1).peer_id()
}

/// A gossip envelope: decoding is canonical (the bytes are the value's only encoding) and
/// the message id is the BLAKE3 of those bytes; the signature then verifies or is refused.
pub fn envelope(data: &[u8]) {
    let Ok(unverified) =
        crate::envelope::decode(data, &Limits::default(), PROTOCOL_VERSION.major, via())
    else {
        return;
    };
    let decoded = pb::Envelope::decode(data).expect("a decoded envelope decodes");
    assert_eq!(
        decoded.encode_to_vec(),
        data,
        "accepted a non-canonical envelope"
    );
    assert_eq!(unverified.message().id, ContentId::of(data));
    if let Ok(message) = unverified.verify() {
        assert_eq!(message.payload, decoded.payload);
        assert_eq!(
            message.sender.as_bytes().as_slice(),
            decoded.sender.as_slice()
        );
    }
}

/// The handshake request body: a `Hello` that re-encodes to itself.
pub fn handshake(data: &[u8]) {
    let Ok(hello) = crate::core::decode_handshake(data) else {
        return;
    };
    let again = pb::Handshake {
        hello: Some((&hello).into()),
    }
    .encode_to_vec();
    let back = crate::core::decode_handshake(&again).expect("a re-encoded hello decodes");
    assert_eq!(back, hello, "hello changed through a re-encoding");
}

/// A request frame on a stream, then the request or response inside it: the frame never
/// exceeds its limit, writing it back reads back the same bytes, and the protobuf inside
/// re-encodes to a value that decodes the same.
pub fn frame(data: &[u8]) {
    let read = futures::executor::block_on(crate::frame::read_frame(
        &mut futures::io::Cursor::new(data),
        MAX_FRAME,
    ));
    let Ok(body) = read else {
        return;
    };
    assert!(body.len() <= MAX_FRAME, "frame over its limit");
    let mut wire = Vec::new();
    futures::executor::block_on(crate::frame::write_frame(
        &mut futures::io::Cursor::new(&mut wire),
        &body,
    ))
    .expect("writing to memory succeeds");
    let back = futures::executor::block_on(crate::frame::read_frame(
        &mut futures::io::Cursor::new(&wire),
        MAX_FRAME,
    ))
    .expect("a written frame reads back");
    assert_eq!(back, body);
    if let Ok(request) = pb::Request::decode(body.as_slice()) {
        let again = pb::Request::decode(request.encode_to_vec().as_slice());
        assert_eq!(again.as_ref(), Ok(&request));
    }
    if let Ok(response) = pb::Response::decode(body.as_slice()) {
        let again = pb::Response::decode(response.encode_to_vec().as_slice());
        assert_eq!(again.as_ref(), Ok(&response));
    }
}

/// Equivocation evidence passed on by a peer: accepted only as two validly signed,
/// different envelopes from one sender with one sequence number, and its re-encoding is
/// accepted as the same evidence.
pub fn evidence(data: &[u8]) {
    let Ok(evidence) = Equivocation::from_bytes(data) else {
        return;
    };
    let (first, second) = evidence.envelopes();
    assert_ne!(first, second, "evidence of one envelope twice");
    let again = Equivocation::from_bytes(&evidence.to_bytes()).expect("re-encoded evidence");
    assert_eq!(again.sender(), evidence.sender());
    assert_eq!(again.seq(), evidence.seq());
    assert_eq!(again.envelopes(), evidence.envelopes());
}

/// A payload sealed to recipients: opening with a key that is not a recipient, or after
/// any change, is refused; it never panics.
pub fn sealed(data: &[u8]) {
    let _ = crate::seal::open(data, &Keypair::from_index(2));
}

/// Valid inputs for each target, the starting corpus: `(target, bytes)`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let keypair = Keypair::from_index(7);
    let topic = crate::Topic::new(crate::TopicKind::new("fuzz", "seed"), "one").expect("topic");
    let envelope = |payload: &[u8]| {
        crate::envelope::seal(
            &keypair,
            &crate::envelope::Draft {
                version: PROTOCOL_VERSION,
                topic: &topic,
                seq: 1,
                timestamp_ms: 1_000,
                payload_type: "fuzz",
                payload,
            },
        )
        .1
    };
    let (a, b) = (envelope(b"first"), envelope(b"second"));
    let evidence = Equivocation::check(&a, &b)
        .expect("an equivocation")
        .to_bytes();
    let hello = pb::Handshake {
        hello: Some((&crate::default_hello()).into()),
    }
    .encode_to_vec();
    let request = pb::Request {
        protocol: "/causality/fuzz/1.0.0".into(),
        body: b"body".to_vec(),
    }
    .encode_to_vec();
    let mut frame = vec![request.len() as u8];
    frame.extend_from_slice(&request);
    let sealed = crate::seal::seal(
        b"secret",
        &[Keypair::from_index(2).peer_id(), keypair.peer_id()],
        &mut <rand_chacha::ChaCha20Rng as rand::SeedableRng>::seed_from_u64(1),
    )
    .expect("sealed");
    vec![
        ("envelope", a),
        ("envelope", b),
        ("handshake", hello),
        ("frame", frame),
        ("evidence", evidence),
        ("sealed", sealed),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the seeds into the committed corpus, `fuzz/corpus/net_<target>/`.
    #[test]
    #[ignore = "writes into fuzz/corpus; run by `cargo xtask fuzz --write-seeds`"]
    fn write_seeds() {
        let new = causality_hash::fuzzing::write_seeds(env!("CARGO_MANIFEST_DIR"), "net", &seeds());
        println!("{} new seeds", new.unwrap());
    }

    /// The contracts hold on valid inputs and on every one-byte truncation and bit flip
    /// of them (what the fuzzer tries first).
    #[test]
    fn contracts_hold_on_seeds_and_their_neighbours() {
        for (target, seed) in seeds() {
            let check = match target {
                "envelope" => envelope,
                "handshake" => handshake,
                "frame" => frame,
                "evidence" => evidence,
                "sealed" => sealed,
                other => panic!("unknown target {other}"),
            };
            causality_hash::fuzzing::neighbours(&seed, 0, check);
        }
    }
}
