//! Two nodes agree on a protocol version and features from their hellos, and a third is
//! refused with the reason: `cargo run -p causality-version --example negotiate`.

use causality_version::{FeatureSet, Hello, ProtocolId, ProtocolVersion, negotiate};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ours = Hello::new(
        ProtocolVersion::new(1, 2, 0),
        FeatureSet::PUB_SUB | FeatureSet::PROOF_SHARING,
    )
    .with_required_features(FeatureSet::PUB_SUB)
    .with_agent("example/0.1.0");
    // A peer on an older minor version with a different feature set; its hello arrives
    // as bytes.
    let older = Hello::new(
        ProtocolVersion::new(1, 1, 3),
        FeatureSet::PUB_SUB | FeatureSet::REGISTER_SYNC,
    );
    let theirs = Hello::decode(&older.encode())?;
    let agreed = negotiate(&ours, &theirs)?;
    println!(
        "agreed: version {}, features {:?}",
        agreed.version,
        agreed.features.names().collect::<Vec<_>>()
    );
    assert_eq!(agreed.version, ProtocolVersion::new(1, 1, 3));
    assert_eq!(agreed.features, FeatureSet::PUB_SUB);

    // A peer without pub/sub, which we require: refused, and the reason says why.
    let without = Hello::new(ProtocolVersion::new(1, 2, 0), FeatureSet::BASIC_MESSAGING);
    match negotiate(&ours, &without) {
        Ok(_) => return Err("a peer without a required feature was accepted".into()),
        Err(e) => println!("refused: {e} (the peer sees: {})", e.mirrored()),
    }

    // Request protocols carry their version in their id.
    let id = ProtocolId::new("proofs", agreed.version)?;
    println!("protocol id: {id}");
    Ok(())
}
