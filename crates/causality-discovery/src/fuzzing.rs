//! The contracts the fuzz targets in `fuzz/` check. Compiled with `--cfg fuzzing` (as
//! `cargo fuzz` builds) and in tests, never into a normal build. A function panics only
//! when a decoder breaks its contract: a typed error, or a value whose re-encoding decodes
//! to the same value.

use causality_net::{Keypair, Multiaddr};

use crate::messages::{decode_request, decode_response, encode_request, encode_response};
use crate::proto::v1 as pb;
use crate::{PeerRecord, RecordCache};

/// Records per message the targets allow (the protocol's own bound).
const MAX_RECORDS: usize = 64;

/// The time records are checked at, ms since the Unix epoch.
const NOW_MS: u64 = 1_000_000;

/// A peer exchange request or response body, then every record in it: a record is
/// refused with a typed error or verifies to one whose own encoding verifies equal, and
/// the cache never accepts what a full check refuses (nor refuses what it accepts).
pub fn exchange(data: &[u8]) {
    let mut records = Vec::new();
    if let Ok(request) = decode_request(data, MAX_RECORDS) {
        let again = decode_request(
            &encode_request(request.kind.clone().expect("a kind")),
            MAX_RECORDS,
        )
        .expect("a re-encoded request decodes");
        assert_eq!(again, request);
        if let Some(pb::request::Kind::Exchange(exchange)) = request.kind {
            records.extend(exchange.records);
        }
    }
    if let Ok(response) = decode_response(data, MAX_RECORDS) {
        let again = decode_response(&encode_response(&response), MAX_RECORDS)
            .expect("a re-encoded response");
        assert_eq!(again, response);
        records.extend(response.records);
    }
    let cache = RecordCache::new();
    for record in &records {
        let checked = PeerRecord::verify(record, NOW_MS);
        let cached = cache.verify(record, NOW_MS);
        assert_eq!(
            checked.as_ref().ok().map(PeerRecord::encoded),
            cached.as_ref().ok().map(|r| r.encoded()),
            "the cache and a full check disagree"
        );
        // Twice: the second answer comes from the cache.
        let again = cache.verify(record, NOW_MS);
        assert_eq!(
            cached.is_ok(),
            again.is_ok(),
            "a cache hit changed the verdict"
        );
        if let Ok(record) = checked {
            let back = PeerRecord::verify(&record.to_proto(), NOW_MS).expect("re-encoded");
            assert_eq!(back.encoded(), record.encoded());
            assert_eq!(back.peer, record.peer);
            assert_eq!(back.seq, record.seq);
        }
    }
}

/// Valid inputs for each target, the starting corpus: `(target, bytes)`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let record = |n: u64| {
        let address: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", 4000 + n)
            .parse()
            .expect("an address");
        PeerRecord::sign_with(
            &Keypair::from_index(n),
            &causality_net::default_hello(),
            vec![address],
            vec!["prover".into()],
            1_000,
            n,
            NOW_MS + 60_000,
        )
        .to_proto()
    };
    let exchange = encode_request(pb::request::Kind::Exchange(pb::Exchange {
        records: vec![record(1), record(2)],
    }));
    let provide = encode_request(pb::request::Kind::Provide(pb::Provide {
        content_id: vec![7; 32],
    }));
    let response = encode_response(&pb::Response {
        records: vec![record(3)],
    });
    vec![
        ("exchange", exchange),
        ("exchange", provide),
        ("exchange", response),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the seeds into the committed corpus, `fuzz/corpus/discovery_<target>/`.
    #[test]
    #[ignore = "writes into fuzz/corpus; run by `cargo xtask fuzz --write-seeds`"]
    fn write_seeds() {
        let new =
            causality_hash::fuzzing::write_seeds(env!("CARGO_MANIFEST_DIR"), "discovery", &seeds());
        println!("{} new seeds", new.unwrap());
    }

    /// The contract holds on valid inputs and on every truncation and bit flip of them.
    #[test]
    fn contracts_hold_on_seeds_and_their_neighbours() {
        for (target, seed) in seeds() {
            assert_eq!(target, "exchange");
            causality_hash::fuzzing::neighbours(&seed, 0, exchange);
        }
    }
}
