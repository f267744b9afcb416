//! Our CID text must be what the reference `cid` crate produces and parses.

use causality_hash::ContentId;
use cid::Cid;
use cid::multihash::Multihash;

const RAW: u64 = 0x55;
const BLAKE3: u64 = 0x1e;

#[test]
fn cid_crate_parses_our_text_and_we_parse_its() {
    for input in [&b""[..], b"hello", &[0u8; 4096]] {
        let id = ContentId::of(input);
        let text = id.to_string();

        let parsed = Cid::try_from(text.as_str()).expect("the cid crate parses our text");
        assert_eq!(parsed.version(), cid::Version::V1);
        assert_eq!(parsed.codec(), RAW);
        assert_eq!(parsed.hash().code(), BLAKE3);
        assert_eq!(parsed.hash().digest(), id.as_bytes());
        assert_eq!(parsed.to_bytes(), id.to_cid_bytes());

        let theirs = Cid::new_v1(
            RAW,
            Multihash::<64>::wrap(BLAKE3, blake3::hash(input).as_bytes()).unwrap(),
        );
        assert_eq!(theirs.to_string(), text, "same text both ways");
        assert_eq!(theirs.to_string().parse::<ContentId>().unwrap(), id);
    }
}

#[test]
fn other_cids_are_refused_with_a_reason() {
    let sha256 = Cid::new_v1(RAW, Multihash::<64>::wrap(0x12, &[7; 32]).unwrap());
    let err = sha256.to_string().parse::<ContentId>().unwrap_err();
    assert!(err.to_string().contains("blake3"), "{err}");
    let dag_pb = Cid::new_v1(0x70, Multihash::<64>::wrap(BLAKE3, &[7; 32]).unwrap());
    let err = dag_pb.to_string().parse::<ContentId>().unwrap_err();
    assert!(err.to_string().contains("raw"), "{err}");
}
