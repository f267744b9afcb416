//! Properties of version negotiation and round trips of the wire forms.

use causality_version::{
    Error, FeatureSet, Hello, Incompatibility, ProtocolId, ProtocolVersion, negotiate,
};
use proptest::prelude::*;

fn version() -> impl Strategy<Value = ProtocolVersion> {
    (0u32..3, 0u32..5, 0u32..3).prop_map(|(a, b, c)| ProtocolVersion::new(a, b, c))
}

fn features() -> impl Strategy<Value = FeatureSet> {
    // Mostly known bits, sometimes unknown high bits.
    prop_oneof![
        (0u64..(1 << 11)).prop_map(FeatureSet::from_bits),
        any::<u64>().prop_map(FeatureSet::from_bits),
    ]
}

fn hello() -> impl Strategy<Value = Hello> {
    (
        version(),
        0u32..5,
        0u32..3,
        features(),
        features(),
        "[a-z/0-9.]{0,20}",
    )
        .prop_map(|(v, min_minor, min_patch, f, req, agent)| {
            Hello::new(v, f)
                .with_min_peer_version(ProtocolVersion::new(v.major, min_minor, min_patch))
                .with_required_features(FeatureSet::from_bits(req.bits() & (f.bits() | 0b1111)))
                .with_agent(agent)
        })
}

proptest! {
    #[test]
    fn success_and_agreement_are_symmetric(a in hello(), b in hello()) {
        let ab = negotiate(&a, &b);
        let ba = negotiate(&b, &a);
        prop_assert_eq!(ab.is_ok(), ba.is_ok());
        if let (Ok(x), Ok(y)) = (&ab, &ba) {
            prop_assert_eq!(x, y);
            prop_assert!(x.version <= a.version && x.version <= b.version);
            prop_assert!(a.features.contains(x.features) && b.features.contains(x.features));
        }
        if let Err(Incompatibility::MajorMismatch { .. }) = &ab {
            prop_assert_eq!(ab.clone().unwrap_err().mirrored(), ba.clone().unwrap_err());
        }
    }

    #[test]
    fn a_node_is_compatible_with_itself(a in hello()) {
        // Reflexive whenever the node meets its own requirements.
        let own_ok = a.min_peer_version <= a.version && a.features.contains(a.required_features);
        let agreed = negotiate(&a, &a);
        prop_assert_eq!(agreed.is_ok(), own_ok);
        if let Ok(agreed) = agreed {
            prop_assert_eq!(agreed.version, a.version);
            prop_assert_eq!(agreed.features, a.features);
        }
    }

    #[test]
    fn upgrading_a_compatible_peer_keeps_it_compatible(
        a in hello(), b in hello(), extra_minor in 0u32..3, extra in features()
    ) {
        // Monotonicity: a newer minor and more features never break a working pair.
        if negotiate(&a, &b).is_ok() {
            let mut newer = b.clone();
            newer.version.minor += extra_minor;
            newer.features |= extra;
            prop_assert!(negotiate(&a, &newer).is_ok());
        }
    }

    #[test]
    fn hello_round_trips_and_keeps_unknown_bits(a in hello()) {
        let decoded = Hello::decode(&a.encode()).unwrap();
        prop_assert_eq!(&decoded, &a);
        prop_assert_eq!(decoded.features.unknown(), a.features.unknown());
    }

    #[test]
    fn hello_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Hello::decode(&bytes);
    }

    #[test]
    fn version_text_round_trips(v in version()) {
        prop_assert_eq!(v.to_string().parse::<ProtocolVersion>().unwrap(), v);
        let id = ProtocolId::new("regsync", v).unwrap();
        prop_assert_eq!(id.to_string().parse::<ProtocolId>().unwrap(), id);
    }
}

#[test]
fn incompatibilities_say_exactly_what_is_missing() {
    let v = |a, b, c| ProtocolVersion::new(a, b, c);
    let base = Hello::new(v(1, 4, 0), FeatureSet::PUB_SUB | FeatureSet::PEER_AUTH);

    let other_major = Hello::new(v(2, 0, 0), base.features);
    assert_eq!(
        negotiate(&base, &other_major),
        Err(Incompatibility::MajorMismatch {
            local: v(1, 4, 0),
            remote: v(2, 0, 0)
        })
    );

    let picky = base.clone().with_min_peer_version(v(1, 5, 0));
    assert_eq!(
        negotiate(&picky, &base),
        Err(Incompatibility::RemoteTooOld {
            required: v(1, 5, 0),
            offered: v(1, 4, 0)
        })
    );
    assert_eq!(
        negotiate(&base, &picky),
        Err(Incompatibility::LocalTooOld {
            required: v(1, 5, 0),
            offered: v(1, 4, 0)
        })
    );

    let needs = base.clone().with_required_features(
        FeatureSet::PUB_SUB | FeatureSet::REGISTER_SYNC | FeatureSet::COMPRESSION,
    );
    let err = negotiate(&needs, &base).unwrap_err();
    assert_eq!(
        err,
        Incompatibility::RemoteMissingFeatures(FeatureSet::REGISTER_SYNC | FeatureSet::COMPRESSION)
    );
    assert_eq!(
        err.to_string(),
        "the remote peer lacks required features: Compression|RegisterSync"
    );
    assert_eq!(negotiate(&base, &needs), Err(err.mirrored()));
}

#[test]
fn bad_wire_input_is_a_typed_error() {
    assert!(matches!(Hello::decode(&[0xff; 10]), Err(Error::Decode(_))));
    assert!(matches!(
        Hello::decode(&vec![0; 2000]),
        Err(Error::TooLarge {
            len: 2000,
            max: 1024
        })
    ));
    // An empty message lacks the version.
    assert_eq!(
        Hello::decode(&[]),
        Err(Error::InvalidHello("missing version"))
    );
    let mut h = Hello::new(ProtocolVersion::new(1, 0, 0), FeatureSet::EMPTY);
    h.min_peer_version = ProtocolVersion::new(0, 9, 0);
    assert!(matches!(
        Hello::decode(&h.encode()),
        Err(Error::InvalidHello(_))
    ));
    let long =
        Hello::new(ProtocolVersion::new(1, 0, 0), FeatureSet::EMPTY).with_agent("x".repeat(300));
    assert!(matches!(
        Hello::decode(&long.encode()),
        Err(Error::InvalidHello(_))
    ));
}

#[test]
fn protocol_ids_and_versions_reject_bad_text() {
    for bad in [
        "1.2",
        "1.2.3.4",
        "01.2.3",
        "1.-2.3",
        "a.b.c",
        "",
        "1..3",
        "1.2.3-rc1",
    ] {
        assert!(bad.parse::<ProtocolVersion>().is_err(), "{bad}");
    }
    for bad in [
        "/causality/",
        "/causality/net",
        "/other/net/1.0.0",
        "/causality/Net/1.0.0",
        "/causality//1.0.0",
        "/causality/net/1.0",
        "/causality/net/sub/1.0.0",
    ] {
        let err = bad.parse::<ProtocolId>().unwrap_err();
        assert!(
            matches!(err, Error::InvalidProtocolId { .. }),
            "{bad}: {err}"
        );
    }
    let ids = ProtocolId::all_versions(
        "proofshare",
        &[ProtocolVersion::new(1, 0, 0), ProtocolVersion::new(1, 2, 0)],
    )
    .unwrap();
    assert_eq!(ids[0].to_string(), "/causality/proofshare/1.2.0");
    assert!(ProtocolId::new(&"x".repeat(65), ProtocolVersion::new(1, 0, 0)).is_err());
}

#[test]
fn feature_names() {
    assert_eq!(
        FeatureSet::from_name("proofsharing"),
        Some(FeatureSet::PROOF_SHARING)
    );
    assert_eq!(FeatureSet::from_name("nope"), None);
    assert_eq!(FeatureSet::KNOWN.names().count(), 11);
    assert_eq!(FeatureSet::EMPTY.to_string(), "none");
    assert!(FeatureSet::KNOWN.unknown().is_empty());
}
