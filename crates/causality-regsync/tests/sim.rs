//! Register sync under the tokio-free simulation runner: whole networks from a seed, on
//! virtual time.

mod common;

use causality_net::service::sim::Sim;
use causality_regsync::{ClassRules, Command, Config, Event, Operation, Reply, State, Via};
use common::*;

#[test]
fn three_nodes_converge_by_deltas() {
    let mut sim = network(1, 3, |_| Config::default(), own_key);
    follow_domain(&mut sim, "pay");
    let owner = own_key(0);
    let (id, first) = create(&mut sim, 0, &owner, "pay", "a", 100);
    assert!(
        sim.run_while(5_000, |s| all_at(s, 0..3, &id, first)),
        "the creation reaches everyone"
    );
    let mut hash = first;
    for (height, amount) in (2..12u64).zip((0..10u64).map(|i| 90 - 10 * i)) {
        hash = set(&mut sim, 0, id, amount, height);
    }
    assert!(
        sim.run_while(5_000, |s| all_at(s, 0..3, &id, hash)),
        "every update reaches everyone"
    );
    for n in 1..3 {
        let stats = sim.node(n).unwrap().stats().clone();
        assert_eq!(
            stats.deltas_applied, 11,
            "node {n}: the creation and ten deltas, all inline"
        );
        assert_eq!(stats.full_fetches, 0);
        assert_eq!(stats.rejected, 0);
    }
    assert!(sim.penalties().is_empty(), "{:?}", sim.penalties());
}

#[test]
fn fifty_nodes_converge_and_agree_on_the_commitment() {
    let mut sim = network(2, 50, |_| Config::default(), own_key);
    follow_domain(&mut sim, "pay");
    let mut registers = Vec::new();
    for owner in [0, 11, 23, 37, 49] {
        let key = own_key(owner);
        for r in 0..4 {
            let (id, _) = create(&mut sim, owner, &key, "pay", &format!("{owner}-{r}"), 1000);
            registers.push((owner, id));
        }
    }
    sim.run_for(2_000);
    let mut want = Vec::new();
    for round in 0..5u64 {
        for &(owner, id) in &registers {
            let hash = set(&mut sim, owner, id, 1000 - round * 7, round + 2);
            if round == 4 {
                want.push((id, hash));
            }
        }
    }
    let converged = sim.run_while(20_000, |s| {
        want.iter().all(|(id, h)| all_at(s, 0..50, id, *h))
    });
    assert!(
        converged,
        "all 50 nodes hold all 20 registers at their last state"
    );
    let roots: std::collections::BTreeSet<_> = (0..50)
        .map(|n| {
            let call = sim.call(n, Command::Commitment("pay".into()));
            match reply(&mut sim, call) {
                Reply::Commitment(root, size) => (root, size),
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(roots.len(), 1, "one commitment everywhere");
    assert_eq!(roots.first().unwrap().1, 20);
    assert!(
        sim.penalties().is_empty(),
        "honest nodes are never penalized: {:?}",
        sim.penalties()
    );
}

#[test]
fn a_lagging_node_catches_up_with_the_chain() {
    let mut sim = network(3, 3, |_| Config::default(), own_key);
    follow_domain(&mut sim, "pay");
    let owner = own_key(0);
    let (id, _) = create(&mut sim, 0, &owner, "pay", "a", 100);
    sim.run_for(2_000);
    // Node 2 is cut off while one update happens.
    sim.partition(&[vec![0, 1], vec![2]]);
    let hash = set(&mut sim, 0, id, 99, 2);
    sim.run_for(2_000);
    assert!(all_at(&sim, 0..2, &id, hash));
    assert_ne!(head(&sim, 2, &id), Some(hash));
    sim.heal();
    // The next update cannot apply at node 2 (its previous state is missing): it is
    // buffered, then the chain is fetched from a peer — as deltas, the cheaper form.
    let last = set(&mut sim, 0, id, 1, 3);
    assert!(sim.run_while(5_000, |s| all_at(s, 0..3, &id, last)));
    let stats = sim.node(2).unwrap().stats().clone();
    assert!(stats.buffered >= 1, "{stats:?}");
    assert!(stats.sync_requests >= 1, "{stats:?}");
    assert_eq!(
        stats.full_fetches, 0,
        "deltas are smaller than the state: {stats:?}"
    );
}

#[test]
fn a_new_node_synchronizes_a_register_by_full_state() {
    let mut sim = network(4, 3, |_| Config::default(), own_key);
    let owner = own_key(0);
    let (id, _) = create(&mut sim, 0, &owner, "pay", "a", 100);
    let mut hash = None;
    for h in 2..30 {
        hash = Some(set(&mut sim, 0, id, 100 - h, h));
    }
    let call = sim.call(
        2,
        Command::Synchronize {
            register_id: id,
            peers: vec![sim.peer_id(0)],
        },
    );
    let Reply::Register(Ok(register)) = reply(&mut sim, call) else {
        panic!("synchronize failed")
    };
    assert_eq!(Some(register.state_hash()), hash);
    let stats = sim.node(2).unwrap().stats().clone();
    assert_eq!(
        stats.full_fetches, 1,
        "one full state beats 29 deltas: {stats:?}"
    );
    // The whole chain of headers came along, so later deltas apply on top.
    sim.command(2, Command::Follow(id));
    sim.run_for(1_000);
    let next = set(&mut sim, 0, id, 5, 40);
    assert!(sim.run_while(5_000, |s| head(s, 2, &id) == Some(next)));
}

#[test]
fn unknown_registers_are_not_found() {
    let mut sim = network(5, 3, |_| Config::default(), own_key);
    let missing = causality_hash::ContentId::of(b"nobody made this");
    let call = sim.call(
        1,
        Command::Synchronize {
            register_id: missing,
            peers: Vec::new(),
        },
    );
    match reply(&mut sim, call) {
        Reply::Register(Err(causality_regsync::SyncError::NotFound(id))) => assert_eq!(id, missing),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_partition_with_a_fork_heals_to_one_state_everywhere_with_the_evidence_kept() {
    // Nodes 0 and 5 sign with one key: the register's owner runs two machines, one in
    // each half of the partition, and updates on both (an equivocation, or two devices).
    let shared = own_key(0);
    let owner_of = |i: usize| if i == 5 { shared.clone() } else { own_key(i) };
    let mut sim = network(6, 10, |_| Config::default(), owner_of);
    follow_domain(&mut sim, "pay");
    let (forked, _) = create(&mut sim, 0, &shared, "pay", "shared", 500);
    let (a_only, _) = create(&mut sim, 2, &own_key(2), "pay", "left", 10);
    let (b_only, _) = create(&mut sim, 7, &own_key(7), "pay", "right", 10);
    sim.run_for(3_000);
    let left: Vec<usize> = (0..5).collect();
    let right: Vec<usize> = (5..10).collect();
    sim.partition(&[left.clone(), right.clone()]);
    let l1 = set(&mut sim, 0, forked, 400, 2);
    let l2 = set(&mut sim, 0, forked, 300, 3);
    let r1 = set(&mut sim, 5, forked, 450, 2);
    let a = set(&mut sim, 2, a_only, 11, 2);
    let b = set(&mut sim, 7, b_only, 12, 2);
    sim.run_for(3_000);
    assert!(all_at(&sim, left.clone(), &forked, l2));
    assert!(all_at(&sim, right.clone(), &forked, r1));
    sim.heal();
    // Anti-entropy: each node states its commitment; a differing one starts a
    // reconciliation with its signer.
    for n in 0..10 {
        sim.command(n, Command::PublishCommitment("pay".into()));
    }
    let heads = |s: &Sim<State>| -> Vec<_> { (0..10).map(|n| head(s, n, &forked)).collect() };
    let converged = sim.run_while(30_000, |s| {
        let h = heads(s);
        h.iter().all(|x| *x == h[0]) && all_at(s, 0..10, &a_only, a) && all_at(s, 0..10, &b_only, b)
    });
    assert!(converged, "heads after heal: {:?}", heads(&sim));
    // The rule: at the fork point (the creation) the update with the lower id wins.
    let winner = head(&sim, 0, &forked).unwrap();
    let l1_id = sim
        .node(0)
        .unwrap()
        .store()
        .header(&l1)
        .unwrap()
        .unwrap()
        .id();
    let r1_id = sim
        .node(5)
        .unwrap()
        .store()
        .header(&r1)
        .unwrap()
        .unwrap()
        .id();
    assert_eq!(
        winner,
        if l1_id < r1_id { l2 } else { r1 },
        "the lower update id's branch"
    );
    for n in 0..10 {
        let forks = sim.node(n).unwrap().store().forks(&forked).unwrap();
        assert_eq!(
            forks.len(),
            1,
            "node {n} keeps the losing branch as evidence"
        );
        let f = &forks[0];
        assert!(f.winner.id() < f.loser.id());
        let store = sim.node(n).unwrap().store();
        assert!(
            store.header(&l1).unwrap().is_some() && store.header(&r1).unwrap().is_some(),
            "both branches stored at {n}"
        );
    }
    assert!(sim.penalties().is_empty(), "{:?}", sim.penalties());
}

#[test]
fn a_nullifier_used_twice_keeps_one_use_everywhere_and_both_as_evidence() {
    let shared = own_key(0);
    let owner_of = |i: usize| if i == 3 { shared.clone() } else { own_key(i) };
    let mut sim = network(7, 6, |_| Config::default(), owner_of);
    follow_domain(&mut sim, "pay");
    let (r1, _) = create(&mut sim, 0, &shared, "pay", "one", 5);
    let (r2, _) = create(&mut sim, 3, &shared, "pay", "two", 5);
    sim.run_for(2_000);
    let n = [7u8; 32];
    sim.partition(&[vec![0, 1, 2], vec![3, 4, 5]]);
    let c1 = sim.call(
        0,
        Command::Nullify {
            domain: "pay".into(),
            nullifier: n,
            register_id: r1,
        },
    );
    assert!(matches!(reply(&mut sim, c1), Reply::Done(Ok(()))));
    let c2 = sim.call(
        3,
        Command::Nullify {
            domain: "pay".into(),
            nullifier: n,
            register_id: r2,
        },
    );
    assert!(matches!(reply(&mut sim, c2), Reply::Done(Ok(()))));
    // A second local use is refused outright.
    let again = sim.call(
        0,
        Command::Nullify {
            domain: "pay".into(),
            nullifier: n,
            register_id: r1,
        },
    );
    assert!(matches!(
        reply(&mut sim, again),
        Reply::Done(Err(causality_regsync::SyncError::NullifierUsed(_)))
    ));
    sim.run_for(2_000);
    sim.heal();
    for i in 0..6 {
        sim.command(i, Command::PublishCommitment("pay".into()));
    }
    let kept = |s: &Sim<State>, i: usize| {
        s.node(i)
            .unwrap()
            .store()
            .nullifier("pay", &n)
            .unwrap()
            .map(|u| u.id())
    };
    let converged = sim.run_while(30_000, |s| {
        (0..6).all(|i| {
            kept(s, i) == kept(s, 0)
                && s.node(i).unwrap().store().double_uses("pay").unwrap().len() == 1
        })
    });
    assert!(
        converged,
        "kept: {:?}",
        (0..6).map(|i| kept(&sim, i)).collect::<Vec<_>>()
    );
    let evidence = sim.node(4).unwrap().store().double_uses("pay").unwrap();
    assert_eq!(Some(evidence[0].kept.id()), kept(&sim, 4));
    assert!(evidence[0].kept.id() < evidence[0].rejected.id());
    let events = sim.take_events();
    assert!(events.iter().any(|(_, e)| matches!(e, Event::DoubleUse(_))));
}

#[test]
fn critical_registers_are_synchronized_first_under_load() {
    let critical = |_: usize| Config {
        max_inflight: 1,
        classes: [(
            "vital".to_owned(),
            ClassRules {
                critical: true,
                proof_key: None,
            },
        )]
        .into(),
        ..Config::default()
    };
    let mut sim = network(8, 2, critical, own_key);
    let owner = own_key(0);
    let mut normal = Vec::new();
    for r in 0..30 {
        normal.push(create(&mut sim, 0, &owner, "pay", &format!("n{r}"), 1).0);
    }
    let genesis = causality_regsync::Genesis::new(owner.peer_id(), "pay", "vital", b"v");
    let vital = genesis.id();
    let call = sim.call(
        0,
        Command::Create {
            genesis,
            contents: balance(1),
            last_updated: 1,
            proof_id: None,
        },
    );
    reply(&mut sim, call);
    // Node 1 knows the vital register already (an old state), so it knows its class; it
    // then asks for all 31 at once, the vital one last.
    let c = sim.call(
        1,
        Command::Synchronize {
            register_id: vital,
            peers: Vec::new(),
        },
    );
    reply(&mut sim, c);
    set(&mut sim, 0, vital, 2, 2);
    let _ = sim.take_events();
    for id in &normal {
        sim.command(
            1,
            Command::Synchronize {
                register_id: *id,
                peers: Vec::new(),
            },
        );
    }
    sim.command(
        1,
        Command::Synchronize {
            register_id: vital,
            peers: Vec::new(),
        },
    );
    sim.run_for(10_000);
    let order: Vec<_> = sim
        .take_events()
        .into_iter()
        .filter_map(|(n, e)| match e {
            Event::Applied {
                register_id,
                via: Via::Full | Via::Delta,
                ..
            } if n == 1 => Some(register_id),
            _ => None,
        })
        .collect();
    assert_eq!(order.len(), 31, "all synchronized");
    let at = order.iter().position(|id| *id == vital).unwrap();
    assert!(
        at <= 1,
        "the vital register jumps the queue of 30 (applied {at}th)"
    );
}

#[test]
fn splits_and_merges_conserve_the_balance_across_nodes() {
    let mut sim = network(9, 3, |_| Config::default(), own_key);
    follow_domain(&mut sim, "pay");
    let owner = own_key(0);
    let (parent, _) = create(&mut sim, 0, &owner, "pay", "parent", 100);
    // Split 30 off into a child: the parent's update grants the credit, the child's
    // creation uses it.
    let mut child_genesis =
        causality_regsync::Genesis::new(owner.peer_id(), "pay", "token", b"child");
    child_genesis.parent = Some(parent);
    let child = child_genesis.id();
    let call = sim.call(
        0,
        Command::Update {
            register_id: parent,
            operations: vec![Operation::Split(vec![(child, 30)])],
            last_updated: 2,
            proof_id: None,
        },
    );
    assert!(matches!(reply(&mut sim, call), Reply::Updated(Ok(_))));
    let wrong = {
        let mut g = child_genesis.clone();
        g.nonce = b"greedy".to_vec();
        g
    };
    let call = sim.call(
        0,
        Command::Create {
            genesis: wrong,
            contents: balance(30),
            last_updated: 2,
            proof_id: None,
        },
    );
    assert!(
        matches!(reply(&mut sim, call), Reply::Updated(Err(_))),
        "no credit for an unnamed child"
    );
    let call = sim.call(
        0,
        Command::Create {
            genesis: child_genesis.clone(),
            contents: balance(31),
            last_updated: 2,
            proof_id: None,
        },
    );
    assert!(
        matches!(reply(&mut sim, call), Reply::Updated(Err(_))),
        "more than the credit"
    );
    let call = sim.call(
        0,
        Command::Create {
            genesis: child_genesis,
            contents: balance(30),
            last_updated: 2,
            proof_id: None,
        },
    );
    assert!(matches!(reply(&mut sim, call), Reply::Updated(Ok(_))));
    // Consume the child into the parent, then merge it back.
    let call = sim.call(
        0,
        Command::Update {
            register_id: child,
            operations: vec![Operation::SetLifecycle {
                lifecycle: causality_regsync::Lifecycle::Consumed,
                into: Some(parent),
            }],
            last_updated: 3,
            proof_id: None,
        },
    );
    assert!(matches!(reply(&mut sim, call), Reply::Updated(Ok(_))));
    let call = sim.call(
        0,
        Command::Update {
            register_id: parent,
            operations: vec![Operation::Merge(vec![child])],
            last_updated: 4,
            proof_id: None,
        },
    );
    let Reply::Updated(Ok(merged)) = reply(&mut sim, call) else {
        panic!("merge refused")
    };
    let call = sim.call(
        0,
        Command::Update {
            register_id: parent,
            operations: vec![Operation::Merge(vec![child])],
            last_updated: 5,
            proof_id: None,
        },
    );
    assert!(
        matches!(reply(&mut sim, call), Reply::Updated(Err(_))),
        "a source merges once"
    );
    assert!(sim.run_while(5_000, |s| all_at(s, 0..3, &parent, merged)));
    for n in 0..3 {
        let p = sim.node(n).unwrap().register(&parent).unwrap();
        assert_eq!(p.contents, balance(100), "node {n}");
        let c = sim.node(n).unwrap().register(&child).unwrap();
        assert_eq!(c.lifecycle, causality_regsync::Lifecycle::Consumed);
    }
}

#[test]
fn runs_replay_bit_for_bit_from_the_seed() {
    let run = || {
        let mut sim = network(10, 8, |_| Config::default(), own_key);
        follow_domain(&mut sim, "pay");
        let owner = own_key(1);
        let (id, _) = create(&mut sim, 1, &owner, "pay", "a", 9);
        for h in 2..6 {
            set(&mut sim, 1, id, h, h);
        }
        sim.run_for(3_000);
        sim.trace_hash()
    };
    assert_eq!(run(), run());
}

#[test]
fn large_data_travels_as_chunks_fetched_on_first_read() {
    let mut sim = network(12, 3, |_| Config::default(), own_key);
    follow_domain(&mut sim, "pay");
    let owner = own_key(0);
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let genesis = causality_regsync::Genesis::new(owner.peer_id(), "pay", "blob", b"big");
    let id = genesis.id();
    let call = sim.call(
        0,
        Command::Create {
            genesis,
            contents: causality_regsync::RegisterContents::Data(data.clone()),
            last_updated: 1,
            proof_id: None,
        },
    );
    let Reply::Updated(Ok(hash)) = reply(&mut sim, call) else {
        panic!("refused")
    };
    let bytes_before = sim.stats().bytes;
    assert!(sim.run_while(5_000, |s| all_at(s, 0..3, &id, hash)));
    let moved = sim.stats().bytes - bytes_before;
    assert!(
        moved < 20_000,
        "the state (chunk ids) travels, not the data: {moved} bytes"
    );
    let causality_regsync::RegisterContents::Chunked { len, chunks } =
        sim.node(2).unwrap().register(&id).unwrap().contents
    else {
        panic!("held as chunks")
    };
    assert_eq!((len, chunks.len()), (300_000, 5));
    let call = sim.call(
        2,
        Command::ReadData {
            register_id: id,
            peers: Vec::new(),
        },
    );
    let Reply::Data(Ok(read)) = reply(&mut sim, call) else {
        panic!("read failed")
    };
    assert_eq!(read, data);
    // Kept: a second read asks nobody.
    let requests = sim.stats().requests;
    let call = sim.call(
        2,
        Command::ReadData {
            register_id: id,
            peers: Vec::new(),
        },
    );
    let Reply::Data(Ok(again)) = reply(&mut sim, call) else {
        panic!("read failed")
    };
    assert_eq!(again, data);
    assert_eq!(sim.stats().requests, requests);
}

#[test]
fn time_maps_merge_by_maximum_and_agree_on_their_commitment() {
    let mut sim = network(13, 4, |_| Config::default(), own_key);
    follow_domain(&mut sim, "pay");
    let map = |entries: &[(&str, u64, u64)]| causality_regsync::TimeMap {
        entries: entries
            .iter()
            .map(|(d, h, l)| ((*d).to_owned(), (*h, *l)))
            .collect(),
    };
    sim.command(
        0,
        Command::UpdateTimeMap {
            domain: "pay".into(),
            map: map(&[("eth", 100, 1), ("sol", 5, 1)]),
        },
    );
    sim.command(
        2,
        Command::UpdateTimeMap {
            domain: "pay".into(),
            map: map(&[("eth", 90, 2), ("btc", 7, 1)]),
        },
    );
    sim.run_for(3_000);
    let want = map(&[("eth", 100, 2), ("sol", 5, 1), ("btc", 7, 1)]);
    for n in 0..4 {
        let call = sim.call(n, Command::TimeMap("pay".into()));
        let Reply::TimeMap(got) = reply(&mut sim, call) else {
            panic!()
        };
        assert_eq!(got, want, "node {n}");
        assert_eq!(got.commitment(), want.commitment());
    }
    // An older map changes nothing (merging is idempotent and monotone).
    sim.command(
        1,
        Command::UpdateTimeMap {
            domain: "pay".into(),
            map: map(&[("eth", 1, 1)]),
        },
    );
    sim.run_for(1_000);
    let call = sim.call(3, Command::TimeMap("pay".into()));
    let Reply::TimeMap(got) = reply(&mut sim, call) else {
        panic!()
    };
    assert_eq!(got, want);
}

#[test]
fn time_map_commitments_are_checked_against_ours() {
    let cfg = Config {
        reconcile_on_mismatch: false,
        ..Config::default()
    };
    let mut sim = network(14, 3, move |_| cfg.clone(), own_key);
    follow_domain(&mut sim, "pay");
    let map = causality_regsync::TimeMap {
        entries: [("eth".to_owned(), (10, 1))].into(),
    };
    // Partitioned: node 0's map is not node 2's; its stated commitment is found to differ.
    sim.partition(&[vec![0, 1], vec![2]]);
    sim.command(
        0,
        Command::UpdateTimeMap {
            domain: "pay".into(),
            map: map.clone(),
        },
    );
    sim.run_for(1_000);
    sim.heal();
    let _ = sim.take_events();
    sim.command(0, Command::PublishCommitment("pay".into()));
    sim.run_for(1_000);
    let mismatches = |events: Vec<(usize, Event)>| -> Vec<usize> {
        events
            .into_iter()
            .filter_map(|(n, e)| {
                matches!(e, Event::CommitmentMismatch { root, .. } if root == map.commitment())
                    .then_some(n)
            })
            .collect()
    };
    assert_eq!(
        mismatches(sim.take_events()),
        vec![2],
        "only the node without the map sees a different commitment"
    );
    // Once node 2 has merged the map, the same statement checks out everywhere.
    sim.command(
        0,
        Command::UpdateTimeMap {
            domain: "pay".into(),
            map: map.clone(),
        },
    );
    sim.run_for(1_000);
    let _ = sim.take_events();
    sim.command(0, Command::PublishCommitment("pay".into()));
    sim.run_for(1_000);
    assert!(mismatches(sim.take_events()).is_empty());
}
