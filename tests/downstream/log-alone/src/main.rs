//! The log alone: the same program against the memory store and RocksDB.

use causality_hash::merkle::leaf_hash;
use causality_log::{
    CheckpointSigner, Kind, Level, LogStore, MemoryLog, NewEntry, RocksLog, RocksLogOptions,
};

fn exercise(
    log: &impl LogStore,
    signer: &CheckpointSigner,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut ids = Vec::new();
    for i in 0..50 {
        let entry = NewEntry::new(Level::Info, Kind::Fact)
            .source("downstream")
            .payload(format!("record {i}").into_bytes());
        ids.push(log.append(entry)?.id);
    }
    let head = log.head();
    log.inclusion_proof(17, head.size)?
        .verify(&leaf_hash(ids[17].as_bytes()), &head.root)?;
    log.checkpoint("downstream", signer)?;
    let report = log.verify(&[signer.verifier()])?;
    assert_eq!(report.size, 50);
    assert_eq!(report.signed_checkpoints, 1);
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let signer = CheckpointSigner::new("downstream", [3; 32])?;
    exercise(&MemoryLog::new(), &signer)?;
    println!("memory log: 50 entries, inclusion proof and signed checkpoint verify");
    let dir = tempfile::tempdir()?;
    {
        let log = RocksLog::open(dir.path(), RocksLogOptions::default())?;
        exercise(&log, &signer)?;
        log.sync()?;
    }
    let reopened = RocksLog::open(dir.path(), RocksLogOptions::default())?;
    assert_eq!(reopened.verify(&[signer.verifier()])?.size, 50);
    println!("RocksDB log: the same, and it verifies again after reopening");
    Ok(())
}
