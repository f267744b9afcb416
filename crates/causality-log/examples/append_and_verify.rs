//! Append to a log on disk (RocksDB), prove an entry's inclusion, sign a checkpoint, reopen
//! the log and verify it: `cargo run -p causality-log --example append_and_verify`.

use causality_hash::merkle::leaf_hash;
use causality_log::{
    CheckpointSigner, Filter, Kind, Level, LogStore as _, NewEntry, RocksLog, RocksLogOptions,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let signer = CheckpointSigner::new("example-node", [7; 32])?;
    let appended = {
        let log = RocksLog::open(dir.path(), RocksLogOptions::default())?;
        let mut appended = Vec::new();
        for i in 0..100 {
            let level = if i % 10 == 0 {
                Level::Warn
            } else {
                Level::Info
            };
            let entry = NewEntry::new(level, Kind::Network)
                .source("example")
                .payload(format!("event {i}").into_bytes());
            appended.push(log.append(entry)?);
        }
        let head = log.head();
        println!("appended {} entries; root {}", head.size, hex(&head.root));

        // Entry 42 is in the log whose root is `head.root`: anyone holding the root can check.
        log.inclusion_proof(42, head.size)?
            .verify(&leaf_hash(appended[42].id.as_bytes()), &head.root)?;
        println!("entry 42 ({}) is included", appended[42].id.short());

        let warnings = log.query(&Filter::new().min_level(Level::Warn), 0..u64::MAX, 100)?;
        println!("{} warnings", warnings.len());

        let note = log.checkpoint("example-node", &signer)?;
        println!("signed checkpoint:\n{note}");
        log.sync()?;
        appended
    };

    // Reopened, the log recomputes its tree and checks the signed checkpoint against it.
    let log = RocksLog::open(dir.path(), RocksLogOptions::default())?;
    let report = log.verify(&[signer.verifier()])?;
    assert_eq!(report.size, appended.len() as u64);
    assert_eq!(report.signed_checkpoints, 1);
    println!(
        "reopened: {} entries verify, {} signed checkpoint matches",
        report.size, report.signed_checkpoints
    );
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}
