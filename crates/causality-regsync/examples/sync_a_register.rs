//! Register state sync between two nodes over the in-memory network (virtual time): one
//! creates a token balance, the other synchronizes it and follows its updates, which
//! arrive as signed deltas; both end with the same state hash, and a nullifier is
//! accepted once only. `cargo run -p causality-regsync --example sync_a_register`.

use std::time::Duration;

use causality_hash::ContentId;
use causality_regsync::{Config, Genesis, MemoryStore, Operation, RegSync, RegisterContents};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?
        .block_on(run())
}

fn balance(amount: u64) -> RegisterContents {
    RegisterContents::TokenBalance {
        token: "CAU".into(),
        amount,
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let hub = causality_net::MemoryNetwork::new(1);
    let (a, b) = (hub.add_node(), hub.add_node());
    b.dial(a.listen_addresses()[0].clone()).await?;
    let owner = a.local_peer_id();
    let alice = RegSync::start(a, Config::default(), Box::new(MemoryStore::new())).await?;
    let bob = RegSync::start(b, Config::default(), Box::new(MemoryStore::new())).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Alice creates a register (its id is the hash of its genesis); Bob fetches it.
    let genesis = Genesis::new(owner, "payments", "token", b"example");
    let id = genesis.id();
    alice.create_register(genesis, balance(100), 1).await?;
    let fetched = bob.synchronize_register(id).await?;
    println!("bob synchronized {}: {fetched:?}", id.short());

    // Bob follows it; Alice's updates reach him as deltas signed by the owner.
    let mut updates = bob.subscribe_to_registers(id).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut last = None;
    for (version, amount) in [(2, 60), (3, 45), (4, 30)] {
        let hash = alice
            .update_register(id, vec![Operation::Update(balance(amount))], version)
            .await?;
        let seen = tokio::time::timeout(Duration::from_secs(30), updates.next())
            .await?
            .ok_or("updates ended")?;
        assert_eq!(seen, hash);
        last = Some(hash);
    }
    let last = last.expect("three updates");
    assert!(bob.verify_register_state(id, last).await?);
    println!(
        "bob follows alice's updates: both at state {}",
        last.short()
    );

    // A nullifier (a spent note, say) is accepted once; its second use is refused.
    let nullifier = *ContentId::of(b"note 17 spent").as_bytes();
    alice.nullify("payments", nullifier, id).await?;
    match alice.nullify("payments", nullifier, id).await {
        Ok(_) => return Err("a nullifier was accepted twice".into()),
        Err(e) => println!("second use of the nullifier refused: {e}"),
    }
    Ok(())
}
