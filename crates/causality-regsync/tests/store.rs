//! One conformance suite for both register stores, and what only RocksDB must survive:
//! reopening, corruption, a crash in the middle of a sync.

mod common;

use causality_hash::ContentId;
use causality_net::Keypair;
use causality_net::service::sim::{Sim, SimConfig};
use causality_regsync::{
    Command, Config, DoubleUse, Fork, Genesis, MemoryStore, NullifierUse, Operation, Register,
    RegisterDelta, RegisterStore, RocksStore, State, TimeMap, UpdateHeader,
};
use causality_regsync::{Commit, Head};
use common::balance;

fn register(owner: &Keypair, nonce: &str, amount: u64, epoch: u64) -> Register {
    let genesis = Genesis::new(owner.peer_id(), "pay", "token", nonce.as_bytes());
    Register {
        id: genesis.id(),
        genesis,
        owner: owner.peer_id(),
        contents: balance(amount),
        lifecycle: causality_regsync::Lifecycle::Active,
        epoch,
        last_updated: epoch + 1,
        consumed_into: None,
    }
}

fn header(owner: &Keypair, state: &Register, previous: Option<&Register>) -> UpdateHeader {
    UpdateHeader {
        register_id: state.id,
        epoch: state.epoch,
        previous_state_hash: previous.map(Register::state_hash),
        state_hash: state.state_hash(),
        delta_id: ContentId::of(b"delta"),
        owner: state.owner,
        last_updated: state.last_updated,
        proof_id: None,
        fence: None,
        signature: [0; 64],
    }
    .sign(owner)
}

fn conformance(store: &mut dyn RegisterStore) {
    let owner = Keypair::from_index(1);
    let a0 = register(&owner, "a", 10, 0);
    let a1 = register(&owner, "a", 7, 1);
    let b0 = register(&owner, "b", 3, 0);
    let (h0, h1, hb) = (
        header(&owner, &a0, None),
        header(&owner, &a1, Some(&a0)),
        header(&owner, &b0, None),
    );
    let delta = RegisterDelta {
        operations: vec![Operation::Update(balance(7))],
        previous_state_hash: Some(a0.state_hash()),
    };
    let child = ContentId::of(b"child");
    store
        .commit(Commit {
            headers: vec![h0.clone(), h1.clone(), hb.clone()],
            deltas: vec![(a1.state_hash(), delta.clone())],
            states: vec![a0.clone(), a1.clone(), b0.clone()],
            heads: vec![
                (
                    a1.id,
                    Head {
                        state_hash: a1.state_hash(),
                        epoch: 1,
                    },
                    "pay".into(),
                ),
                (
                    b0.id,
                    Head {
                        state_hash: b0.state_hash(),
                        epoch: 0,
                    },
                    "pay".into(),
                ),
            ],
            credits: vec![(child, "CAU".into(), 3)],
            used_credits: Vec::new(),
            merged: vec![b0.id],
            forks: vec![Fork {
                register_id: a1.id,
                winner: h1.clone(),
                loser: h0.clone(),
            }],
            fences: vec![(a1.id, child, 7), (a1.id, child, 5)],
        })
        .unwrap();
    assert_eq!(
        store.head(&a1.id).unwrap(),
        Some(Head {
            state_hash: a1.state_hash(),
            epoch: 1
        })
    );
    assert_eq!(store.state(&a0.state_hash()).unwrap(), Some(a0.clone()));
    assert_eq!(store.header(&a1.state_hash()).unwrap(), Some(h1.clone()));
    assert_eq!(store.delta(&a1.state_hash()).unwrap(), Some(delta));
    assert_eq!(store.delta(&a0.state_hash()).unwrap(), None);
    let mut heads = vec![(a1.id, a1.state_hash()), (b0.id, b0.state_hash())];
    heads.sort();
    assert_eq!(store.domain_heads("pay").unwrap(), heads);
    assert!(
        store.domain_heads("pa").unwrap().is_empty(),
        "domains are not prefixes of each other"
    );
    assert_eq!(store.domains().unwrap(), vec!["pay".to_owned()]);
    assert_eq!(store.credit(&child).unwrap(), Some(("CAU".into(), 3)));
    assert!(store.merged(&b0.id).unwrap() && !store.merged(&a1.id).unwrap());
    assert_eq!(store.forks(&a1.id).unwrap().len(), 1);
    assert_eq!(
        store.fence(&a1.id, &child).unwrap(),
        Some(7),
        "the highest token is kept"
    );
    assert_eq!(store.fence(&b0.id, &child).unwrap(), None);
    assert_eq!(
        store.fence(&a1.id, &child).unwrap(),
        Some(7),
        "the highest token is kept"
    );
    assert_eq!(store.fence(&b0.id, &child).unwrap(), None);
    // A used credit goes; a header is never replaced.
    let mut other = h1.clone();
    other.last_updated += 1;
    store
        .commit(Commit {
            used_credits: vec![child],
            headers: vec![other],
            ..Commit::default()
        })
        .unwrap();
    assert_eq!(store.credit(&child).unwrap(), None);
    assert_eq!(store.header(&a1.state_hash()).unwrap(), Some(h1));

    let first = NullifierUse::new("pay", [1; 32], a1.id, &owner);
    let second = NullifierUse::new("pay", [1; 32], b0.id, &owner);
    store.put_nullifier(&first, None).unwrap();
    store
        .put_nullifier(&NullifierUse::new("pay2", [1; 32], a1.id, &owner), None)
        .unwrap();
    assert_eq!(
        store.nullifier("pay", &[1; 32]).unwrap(),
        Some(first.clone())
    );
    let evidence = DoubleUse {
        kept: second.clone(),
        rejected: first.clone(),
    };
    store.put_nullifier(&second, Some(&evidence)).unwrap();
    assert_eq!(
        store.nullifier("pay", &[1; 32]).unwrap(),
        Some(second.clone())
    );
    assert_eq!(store.nullifiers("pay").unwrap(), vec![second]);
    assert_eq!(store.double_uses("pay").unwrap(), vec![evidence]);
    assert!(store.double_uses("pay2").unwrap().is_empty());

    let mut map = TimeMap::default();
    map.entries.insert("eth".into(), (100, 7));
    store.put_time_map("pay", &map).unwrap();
    assert_eq!(store.time_map("pay").unwrap(), map);
    assert_eq!(store.time_map("nowhere").unwrap(), TimeMap::default());
    let chunk = store.put_chunk(b"some bytes").unwrap();
    assert_eq!(
        store.chunk(&chunk).unwrap().as_deref(),
        Some(&b"some bytes"[..])
    );
}

#[test]
fn the_memory_store_conforms() {
    conformance(&mut MemoryStore::new());
}

#[test]
fn the_rocksdb_store_conforms_and_keeps_everything_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = RocksStore::open(dir.path()).unwrap();
        conformance(&mut store);
    }
    let store = RocksStore::open(dir.path()).unwrap();
    assert_eq!(store.domain_heads("pay").unwrap().len(), 2);
    assert_eq!(store.nullifiers("pay").unwrap().len(), 1);
    assert_eq!(store.double_uses("pay").unwrap().len(), 1);
    assert_eq!(store.time_map("pay").unwrap().entries.len(), 1);
}

#[test]
fn a_corrupt_database_gives_errors_not_wrong_states() {
    let dir = tempfile::tempdir().unwrap();
    let owner = Keypair::from_index(1);
    let a0 = register(&owner, "a", 10, 0);
    {
        let mut store = RocksStore::open(dir.path()).unwrap();
        store
            .commit(Commit {
                headers: vec![header(&owner, &a0, None)],
                states: vec![a0.clone()],
                heads: vec![(
                    a0.id,
                    Head {
                        state_hash: a0.state_hash(),
                        epoch: 0,
                    },
                    "pay".into(),
                )],
                ..Commit::default()
            })
            .unwrap();
    }
    {
        // Flip the stored state and the head behind the store's back.
        let cfs = RocksStore::column_families();
        let names: Vec<String> = cfs.iter().map(|c| c.name().to_owned()).collect();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), &names).unwrap();
        let states = db.cf_handle("regsync.states").unwrap();
        let mut other = a0.clone();
        other.contents = balance(1_000_000);
        db.put_cf(states, a0.state_hash().as_bytes(), other.encode())
            .unwrap();
        let heads = db.cf_handle("regsync.heads").unwrap();
        db.put_cf(heads, a0.id.as_bytes(), b"short").unwrap();
    }
    let store = RocksStore::open(dir.path()).unwrap();
    let e = store.state(&a0.state_hash()).unwrap_err();
    assert!(e.to_string().contains("does not match its hash"), "{e}");
    assert!(store.head(&a0.id).is_err());
}

fn rocks_node(dir: &std::path::Path, key: &Keypair) -> State {
    State::new(
        Config::default(),
        key.clone(),
        Box::new(RocksStore::open(dir).unwrap()),
    )
}

#[test]
fn a_node_restarted_from_rocksdb_mid_sync_keeps_its_state_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = Sim::new(
        11,
        SimConfig {
            latency_ms: 20,
            jitter_ms: 10,
            ..SimConfig::default()
        },
    );
    for _ in 0..2 {
        sim.add_node(|k| State::new(Config::default(), k.clone(), Box::new(MemoryStore::new())));
    }
    sim.add_node(|k| rocks_node(dir.path(), k));
    for i in 0..3 {
        sim.connect(i, (i + 1) % 3);
    }
    sim.run_for(1_000);
    common::follow_domain(&mut sim, "pay");
    let owner = Sim::<State>::keypair(0);
    let (small, first) = common::create(&mut sim, 0, &owner, "pay", "a", 100);
    let call = sim.call(
        0,
        Command::Nullify {
            domain: "pay".into(),
            nullifier: [9; 32],
            register_id: small,
        },
    );
    common::reply(&mut sim, call);
    assert!(sim.run_while(5_000, |s| common::head(s, 2, &small) == Some(first)));
    let call = sim.call(2, Command::Commitment("pay".into()));
    let before = common::reply(&mut sim, call);

    // Node 2 stops following; a register outside the domain gets a long chain: a full
    // sync of it takes two pages of headers (256 per page).
    let genesis = Genesis::new(owner.peer_id(), "elsewhere", "token", b"long");
    let long = genesis.id();
    let call = sim.call(
        0,
        Command::Create {
            genesis,
            contents: balance(1),
            last_updated: 1,
            proof_id: None,
        },
    );
    common::reply(&mut sim, call);
    let mut middle = None;
    let mut last = None;
    for h in 2..300 {
        let hash = common::set(&mut sim, 0, long, h, h);
        if h == 100 {
            middle = Some(hash);
        }
        last = Some(hash);
    }
    let (middle, last) = (middle.unwrap(), last.unwrap());
    sim.command(
        2,
        Command::Synchronize {
            register_id: long,
            peers: vec![sim.peer_id(0)],
        },
    );
    let paged = sim.run_while(5_000, |s| {
        s.node(2)
            .unwrap()
            .store()
            .header(&middle)
            .unwrap()
            .is_some()
    });
    assert!(paged, "the first page arrived");
    assert_eq!(
        common::head(&sim, 2, &long),
        None,
        "not applied before the last page"
    );
    sim.crash(2);
    let newer = common::set(&mut sim, 0, small, 5, 400);
    sim.run_for(2_000);
    sim.restart(2, |k| rocks_node(dir.path(), k));
    sim.run_for(100);
    assert_eq!(common::head(&sim, 2, &small), Some(first), "state survives");
    let call = sim.call(2, Command::Commitment("pay".into()));
    let after = common::reply(&mut sim, call);
    assert_eq!(
        format!("{before:?}"),
        format!("{after:?}"),
        "the commitment survives"
    );
    assert!(
        sim.node(2)
            .unwrap()
            .store()
            .nullifier("pay", &[9; 32])
            .unwrap()
            .is_some(),
        "nullifiers survive"
    );
    assert!(
        sim.node(2)
            .unwrap()
            .store()
            .header(&middle)
            .unwrap()
            .is_some(),
        "the checked page survives"
    );
    // Reconnected, it resumes: the domain reconciles, the long register completes.
    sim.command(2, Command::FollowDomain("pay".into()));
    sim.connect(2, 0);
    sim.connect(2, 1);
    sim.run_for(1_000);
    let call = sim.call(
        2,
        Command::Synchronize {
            register_id: long,
            peers: Vec::new(),
        },
    );
    let causality_regsync::Reply::Register(Ok(r)) = common::reply(&mut sim, call) else {
        panic!("sync did not resume")
    };
    assert_eq!(r.state_hash(), last);
    assert!(
        sim.run_while(10_000, |s| common::head(s, 2, &small) == Some(newer)),
        "the domain caught up"
    );
}
