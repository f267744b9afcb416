//! Execution coordination under the tokio-free simulation runner: whole networks from a
//! seed, on virtual time. The test plays the executors' drivers: it runs the work each
//! `Event::Execute` names (a hash of the work's input and its predecessors' outputs) and
//! hands the outcome back, unless the scenario says otherwise.

mod common;

use std::collections::BTreeSet;

use causality_exec::{
    ClaimError, Command, Edge, Event, ExecError, ExecutionSequence, ExecutionStatus,
    NodeClaimToken, NodeResult, Reply, SequenceError, State, SubmissionError, WorkSpec,
};
use causality_net::service::sim::Sim;
use common::*;

#[test]
fn a_thousand_node_dag_completes_across_ten_nodes_each_node_accepted_once() {
    thousand_nodes(network(1, 10));
}

#[test]
fn the_same_with_rendezvous_placement_and_no_hedging() {
    thousand_nodes(network_with(1, 10, |c| {
        c.predictive = false;
        c.hedge_factor = 0;
    }));
}

fn thousand_nodes(mut sim: Sim<State>) {
    for n in 0..10 {
        sim.command(
            n,
            Command::Monitor(causality_hash::ContentId::of(b"placeholder")),
        );
    }
    let sequence = dag(sim.peer_id(0), 1000, 20, 7);
    let (want, skipped) = expected(&sequence);
    assert!(!skipped.is_empty(), "the DAG has skipped branches");
    let id = sequence.id();
    for n in 0..10 {
        sim.command(n, Command::Monitor(id));
    }
    submit(&mut sim, 0, sequence);
    let mut d = Driver::new();
    let done = d.run_until(&mut sim, 60_000, &never, &honest, |s| {
        final_status(s, &id) == Some(ExecutionStatus::Completed)
    });
    assert!(
        done,
        "completed; stats {:?}",
        leader_of(&sim, &id).map(|(l, _)| sim.node(l).unwrap().stats().clone())
    );
    let got = accepted(&d.statements);
    assert_eq!(got.len(), want.len(), "every node that runs is accepted");
    for (n, outputs) in &got {
        assert_eq!(outputs.len(), 1, "node {n} accepted once");
        assert_eq!(outputs.first(), want.get(n), "node {n} got its inputs");
    }
    for n in &skipped {
        assert!(!got.contains_key(n));
        assert_eq!(d.executions.get(n), None, "skipped node {n} never ran");
    }
    let executed: u32 = d.executions.values().sum();
    let (leader, _) = leader_of(&sim, &id).unwrap();
    let hedges = sim.node(leader).unwrap().stats().hedges;
    assert_eq!(
        executed as u64,
        want.len() as u64 + hedges,
        "no node ran twice but for hedged stragglers"
    );
    assert!(
        hedges as f64 <= 0.05 * want.len() as f64,
        "within the hedging budget: {hedges}"
    );
    let per_executor: BTreeSet<usize> = d.statements.iter().map(|(n, _)| *n).collect();
    assert_eq!(per_executor.len(), 10, "everyone followed");
    assert!(sim.penalties().is_empty(), "{:?}", sim.penalties());
}

#[test]
fn a_stalled_claimer_is_fenced_out_and_its_node_completes_elsewhere() {
    let mut sim = network(2, 5);
    let sequence = ExecutionSequence::new(
        sim.peer_id(0),
        b"one",
        [(0, WorkSpec::new("hash", b"x".to_vec()))],
        Vec::new(),
    );
    let id = sequence.id();
    for n in 0..5 {
        sim.command(n, Command::Monitor(id));
    }
    submit(&mut sim, 0, sequence.clone());
    let (leader, _) = leader_of(&sim, &id).unwrap();
    // Whoever is leased the node first stalls: cut off from the leader, it cannot renew.
    let mut d = Driver::new();
    let first = std::cell::Cell::new(None);
    let hold = |n: usize, t: &NodeClaimToken| {
        if first.get().is_none() {
            first.set(Some((n, t.token)));
        }
        first
            .get()
            .is_some_and(|(m, token)| m == n && token == t.token)
    };
    d.run_until(&mut sim, 100, &hold, &honest, |_| first.get().is_some());
    let (stalled, old_token) = first.get().expect("leased");
    assert_ne!(
        stalled, leader,
        "the preferred executor is not the leader here (seeded)"
    );
    let others: Vec<usize> = (0..5).filter(|n| *n != stalled).collect();
    sim.partition(&[others, vec![stalled]]);
    let done = d.run_until(&mut sim, 20_000, &hold, &honest, |s| {
        final_status(s, &id) == Some(ExecutionStatus::Completed)
    });
    assert!(done);
    let stats = sim.node(leader).unwrap().stats().clone();
    assert!(stats.leases_expired >= 1 && stats.grants >= 2, "{stats:?}");
    // The zombie comes back with its old token: refused.
    sim.heal();
    let (n, token, output) = d.held.pop().unwrap();
    assert_eq!(token.token, old_token);
    let call = sim.call(
        n,
        Command::Complete {
            token: token.clone(),
            outcome: Ok((output, None)),
        },
    );
    let Reply::Completed(Err(e)) = reply(&mut sim, call) else {
        panic!("the zombie's result was taken")
    };
    assert!(e.to_string().contains("stale token"), "{e}");
    let got = accepted(&d.statements);
    assert_eq!(got[&0].len(), 1, "accepted once");

    // Where results are written to a register, the lease's token goes with the write as a
    // fence, and the register refuses the zombie's write too.
    let winner = d
        .statements
        .iter()
        .flat_map(|(_, m)| m.results.iter())
        .find(|r| r.token.node == 0)
        .unwrap()
        .token
        .clone();
    assert!(winner.token > token.token);
    // One fence key per execution node, whoever holds it.
    assert_eq!(winner.fence().key, token.fence().key);
    let other_node = NodeClaimToken {
        node: 1,
        ..winner.clone()
    };
    assert_ne!(other_node.fence().key, winner.fence().key);
    let owner = causality_net::Keypair::from_index(77);
    let mut register = causality_regsync::State::new(
        causality_regsync::Config::default(),
        owner.clone(),
        Box::new(causality_regsync::MemoryStore::new()),
    );
    let write = |state: &mut causality_regsync::State, command| {
        use causality_net::service::{Input, Protocol};
        state.handle(
            0,
            Input::Command {
                command,
                call: Some(causality_net::service::CallId(1)),
            },
        );
        std::iter::from_fn(|| state.poll_output())
            .find_map(|o| match o {
                causality_net::service::Output::Reply {
                    reply: causality_regsync::Reply::Updated(r),
                    ..
                } => Some(r),
                _ => None,
            })
            .unwrap()
    };
    let genesis = causality_regsync::Genesis::new(owner.peer_id(), "results", "output", b"node 0");
    let rid = genesis.id();
    write(
        &mut register,
        causality_regsync::Command::Create {
            genesis,
            contents: causality_regsync::RegisterContents::Empty,
            last_updated: 1,
            proof_id: None,
        },
    )
    .unwrap();
    let fenced = |t: &causality_exec::NodeClaimToken, bytes: &[u8]| {
        causality_regsync::Command::UpdateFenced {
            register_id: rid,
            operations: vec![causality_regsync::Operation::Update(
                causality_regsync::RegisterContents::Data(bytes.to_vec()),
            )],
            last_updated: 2,
            fence: t.fence(),
        }
    };
    write(&mut register, fenced(&winner, b"the accepted result")).unwrap();
    let refused = write(&mut register, fenced(&token, b"the zombie's result")).unwrap_err();
    assert!(
        refused.to_string().contains("stale fencing token"),
        "{refused}"
    );
    let kept = register.register(&rid).unwrap().contents;
    assert_eq!(
        kept,
        causality_regsync::RegisterContents::Data(b"the accepted result".to_vec())
    );
}

#[test]
fn a_lost_leader_is_replaced_in_a_higher_term_without_duplicate_completion() {
    let mut sim = network(3, 6);
    let sequence = dag(sim.peer_id(0), 200, 10, 3);
    let (want, _) = expected(&sequence);
    let id = sequence.id();
    for n in 0..6 {
        sim.command(n, Command::Monitor(id));
    }
    submit(&mut sim, 0, sequence);
    let (leader, term) = leader_of(&sim, &id).unwrap();
    assert_eq!(term, 1);
    let mut d = Driver::new();
    // Half way, the leader crashes.
    d.run_until(&mut sim, 30_000, &never, &honest, |s| {
        s.node(leader)
            .unwrap()
            .status(&id)
            .is_some_and(|m| m.completed_nodes.len() > 60)
    });
    sim.crash(leader);
    let done = d.run_until(&mut sim, 60_000, &never, &honest, |s| {
        final_status(s, &id) == Some(ExecutionStatus::Completed)
    });
    assert!(done, "a new leader finished");
    let (new_leader, new_term) = leader_of(&sim, &id).unwrap();
    assert_ne!(new_leader, leader);
    assert_eq!(new_term, 2);
    assert_eq!(sim.node(new_leader).unwrap().stats().takeovers, 1);
    let got = accepted(&d.statements);
    for (n, outputs) in &got {
        assert_eq!(outputs.len(), 1, "node {n} completed once");
        assert_eq!(outputs.first(), want.get(n));
    }
    assert_eq!(got.len(), want.len());
    // One final statement.
    let finals: BTreeSet<(u64, u64)> = d
        .statements
        .iter()
        .filter(|(_, m)| m.status.is_final())
        .map(|(_, m)| (m.term, m.seq))
        .collect();
    assert_eq!(finals.len(), 1, "{finals:?}");
}

#[test]
fn a_wrong_result_is_outvoted_and_the_node_re_executed_elsewhere() {
    let mut sim = network(4, 5);
    let mut work = WorkSpec::new("hash", b"agree".to_vec());
    work.agreement = 2;
    let sequence = ExecutionSequence::new(sim.peer_id(0), b"vote", [(0, work.clone())], Vec::new());
    let id = sequence.id();
    for n in 0..5 {
        sim.command(n, Command::Monitor(id));
    }
    submit(&mut sim, 0, sequence);
    // Node 2 answers everything wrongly.
    let wrong = |n: usize| n == 2;
    let mut d = Driver::new();
    let done = d.run_until(&mut sim, 30_000, &never, &wrong, |s| {
        final_status(s, &id) == Some(ExecutionStatus::Completed)
    });
    assert!(done);
    let got = accepted(&d.statements);
    assert_eq!(
        got[&0].first(),
        Some(&run(&work, &[])),
        "the honest output won"
    );
    assert!(d.executions[&0] >= 2);
}

#[test]
fn two_liars_cannot_fail_work_that_needs_three_agreeing_executors() {
    // Seven executors, two of which answer everything wrongly; every node needs three
    // executors to agree. A disagreement is not a failure while honest executors remain:
    // votes are kept until three agree, and then only the outvoted are blamed.
    let mut sim = network(6, 7);
    let nodes = (0..20u32).map(|i| {
        let mut work = WorkSpec::new("hash", i.to_le_bytes().to_vec());
        work.agreement = 3;
        (i, work)
    });
    let sequence = ExecutionSequence::new(sim.peer_id(0), b"liars", nodes, Vec::new());
    let id = sequence.id();
    for n in 0..7 {
        sim.command(n, Command::Monitor(id));
    }
    submit(&mut sim, 0, sequence.clone());
    let liars = [2usize, 5];
    let wrong = |n: usize| liars.contains(&n);
    let mut d = Driver::new();
    let done = d.run_until(&mut sim, 60_000, &never, &wrong, |s| {
        final_status(s, &id) == Some(ExecutionStatus::Completed)
    });
    let (leader, _) = leader_of(&sim, &id).unwrap();
    assert!(
        done,
        "completed: {:?}",
        sim.node(leader)
            .unwrap()
            .status(&id)
            .map(|m| &m.failed_nodes)
    );
    let got = accepted(&d.statements);
    for (n, work) in &sequence.nodes {
        assert_eq!(got[n].len(), 1, "node {n} accepted once");
        assert_eq!(
            got[n].first(),
            Some(&run(work, &[])),
            "node {n}: the honest output"
        );
    }
    let liar_peers: Vec<_> = liars.iter().map(|&n| sim.peer_id(n)).collect();
    assert!(!sim.penalties().is_empty(), "the outvoted are blamed");
    for p in sim.penalties() {
        assert!(
            liar_peers.contains(&p.peer),
            "only liars are penalized: {p:?}"
        );
    }
}

#[test]
fn failing_work_is_retried_with_backoff_then_fails_the_sequence_with_its_reason() {
    let mut sim = network(5, 3);
    let sequence = ExecutionSequence::new(
        sim.peer_id(0),
        b"doomed",
        [(0, WorkSpec::new("hash", b"x".to_vec()))],
        Vec::new(),
    );
    let id = sequence.id();
    for n in 0..3 {
        sim.command(n, Command::Monitor(id));
    }
    submit(&mut sim, 0, sequence);
    let start = sim.now_ms();
    let mut failures = 0;
    let mut end = None;
    for _ in 0..2000 {
        sim.run_for(10);
        for (n, e) in sim.take_events() {
            match e {
                Event::Execute { token, .. } => {
                    failures += 1;
                    sim.command(
                        n,
                        Command::Complete {
                            token,
                            outcome: Err("out of memory".into()),
                        },
                    );
                }
                Event::Status(m) if m.status == ExecutionStatus::Failed => {
                    end = Some((sim.now_ms(), m));
                }
                _ => {}
            }
        }
        if end.is_some() {
            break;
        }
    }
    let (at, m) = end.expect("the sequence failed");
    assert_eq!(failures, 3, "max_attempts");
    assert!(
        m.failed_nodes[0].1.contains("out of memory"),
        "{:?}",
        m.failed_nodes
    );
    assert!(
        at - start >= 150,
        "two backoffs of about 100 and 200 ms (±50%)"
    );
}

#[test]
fn a_failed_sequence_is_retried_by_its_creator_from_its_last_good_state() {
    let mut sim = network(15, 3);
    // 0 and 1 feed 2; node 1's work fails until the fault is fixed.
    let sequence = ExecutionSequence::new(
        sim.peer_id(0),
        b"flaky",
        [
            (0, WorkSpec::new("hash", b"good".to_vec())),
            (1, WorkSpec::new("hash", b"flaky".to_vec())),
            (2, WorkSpec::new("hash", b"after".to_vec())),
        ],
        vec![Edge::new(0, 2), Edge::new(1, 2)],
    );
    let id = sequence.id();
    sim.command(0, Command::Monitor(id));
    submit(&mut sim, 0, sequence);
    let mut executions = std::collections::BTreeMap::<u32, u32>::new();
    let mut run = |sim: &mut Sim<State>, fixed: bool, want: ExecutionStatus| {
        for _ in 0..2000 {
            sim.run_for(10);
            for (n, e) in sim.take_events() {
                match e {
                    Event::Execute { token, work, .. } => {
                        *executions.entry(token.node).or_default() += 1;
                        let outcome = if work.input == b"flaky" && !fixed {
                            Err("disk full".to_owned())
                        } else {
                            Ok((work.input.clone(), None))
                        };
                        sim.command(n, Command::Complete { token, outcome });
                    }
                    Event::Status(m) if m.sequence_id == id && m.status == want => return m,
                    _ => {}
                }
            }
        }
        panic!("the sequence never became {want:?}");
    };
    let failed = run(&mut sim, false, ExecutionStatus::Failed);
    assert_eq!(failed.failed_nodes.len(), 1);
    assert_eq!(failed.failed_nodes[0].0, 1);
    assert!(failed.completed_nodes.contains(&0), "{failed:?}");
    let retry = |sim: &mut Sim<State>, at: usize| {
        let call = sim.call(at, Command::Retry(id));
        match reply(sim, call) {
            Reply::Retried(r) => r,
            other => panic!("{other:?}"),
        }
    };
    // Only the creator may retry it.
    let e = retry(&mut sim, 1).unwrap_err();
    assert!(e.to_string().contains("creator"), "{e}");
    retry(&mut sim, 0).expect("the creator retries its failed sequence");
    // Running again: a second retry is refused.
    let e = retry(&mut sim, 0).unwrap_err();
    assert!(e.to_string().contains("has not failed"), "{e}");
    let done = run(&mut sim, true, ExecutionStatus::Completed);
    assert_eq!(done.completed_nodes, vec![0, 1, 2]);
    assert_eq!(executions[&0], 1, "the good node kept its result");
    assert_eq!(
        executions[&1], 4,
        "three failed attempts and one after the retry"
    );
    assert_eq!(executions[&2], 1);
    let (leader, _) = leader_of(&sim, &id).unwrap();
    assert_eq!(sim.node(leader).unwrap().stats().sequence_retries, 1);
}

#[test]
fn bad_sequences_and_bad_claims_get_typed_errors() {
    let mut sim = network(6, 3);
    let creator = sim.peer_id(0);
    let work = || WorkSpec::new("hash", Vec::new());
    let mut cyclic = ExecutionSequence::new(
        creator,
        b"c",
        [(0, work()), (1, work()), (2, work())],
        vec![Edge::new(0, 1), Edge::new(1, 2), Edge::new(2, 1)],
    );
    cyclic.entries = vec![0];
    cyclic.exits = vec![];
    type Case = (ExecutionSequence, fn(&SequenceError) -> bool);
    let cases: Vec<Case> = vec![
        (cyclic, |e| {
            matches!(e, SequenceError::Cycle(_) | SequenceError::Exits)
        }),
        (
            ExecutionSequence::new(creator, b"u", [(0, work())], vec![Edge::new(0, 9)]),
            |e| matches!(e, SequenceError::UnknownNode(9)),
        ),
        (
            {
                let mut s = ExecutionSequence::new(
                    creator,
                    b"e",
                    [(0, work()), (1, work())],
                    vec![Edge::new(0, 1)],
                );
                s.entries = vec![0, 1];
                s
            },
            |e| matches!(e, SequenceError::Entries),
        ),
        (
            ExecutionSequence::new(creator, b"empty", [], Vec::new()),
            |e| matches!(e, SequenceError::Empty),
        ),
        (
            ExecutionSequence::new(
                creator,
                b"big",
                (0..70_000).map(|i| (i, work())),
                Vec::new(),
            ),
            |e| matches!(e, SequenceError::TooLarge(_)),
        ),
    ];
    for (sequence, want) in cases {
        let call = sim.call(0, Command::Submit(sequence));
        match reply(&mut sim, call) {
            Reply::Submitted(Err(ExecError::Sequence(e))) => assert!(want(&e), "{e}"),
            other => panic!("{other:?}"),
        }
    }
    // A good sequence; claims of an unknown node and of a node not ready.
    let good = ExecutionSequence::new(
        creator,
        b"good",
        [(0, work()), (1, work())],
        vec![Edge::new(0, 1)],
    );
    let id = submit(&mut sim, 0, good);
    let (leader, _) = leader_of(&sim, &id).unwrap();
    let other = (leader + 1) % 3;
    for (node, want) in [(7, "unknown node 7"), (1, "not ready")] {
        let call = sim.call(
            other,
            Command::Claim {
                sequence_id: id,
                node,
            },
        );
        match reply(&mut sim, call) {
            Reply::Claimed(Err(ClaimError::Remote(e))) => assert!(e.contains(want), "{e}"),
            r => panic!("{r:?}"),
        }
    }
    // A result under a token the leader never granted (signed by someone else).
    let forged = NodeClaimToken {
        sequence_id: id,
        node: 0,
        token: 1 << 32 | 999,
        term: 1,
        holder: sim.peer_id(other),
        lease_until_ms: u64::MAX,
        leader: sim.peer_id(leader),
        signature: [0; 64],
    }
    .sign(&Sim::<State>::keypair(other));
    let call = sim.call(
        other,
        Command::Complete {
            token: forged,
            outcome: Ok((b"x".to_vec(), None)),
        },
    );
    match reply(&mut sim, call) {
        Reply::Completed(Err(SubmissionError::Remote(e))) => {
            assert!(e.contains("stale token"), "{e}");
        }
        r => panic!("{r:?}"),
    }
    // A result signed by one peer for a lease it says another holds.
    let third = (leader + 2) % 3;
    let impersonated = NodeClaimToken {
        sequence_id: id,
        node: 0,
        token: 1 << 32 | 1,
        term: 1,
        holder: sim.peer_id(third),
        lease_until_ms: u64::MAX,
        leader: sim.peer_id(leader),
        signature: [0; 64],
    };
    let result = NodeResult::new(
        impersonated,
        b"x".to_vec(),
        None,
        0,
        0,
        &Sim::<State>::keypair(other),
    );
    assert!(
        !result.verify_holder(),
        "signed by someone other than its holder"
    );
    // The leader completing a lease another peer holds signs a result that peer never
    // signed: refused as forged, though the leader made it itself.
    // (Twelve independent nodes: the leader runs four at once, so the others get leases.)
    let wide = ExecutionSequence::new(creator, b"wide", (0..12).map(|i| (i, work())), Vec::new());
    let wide = submit(&mut sim, 0, wide);
    let (wide_leader, _) = leader_of(&sim, &wide).unwrap();
    sim.run_for(50);
    let granted = sim
        .take_events()
        .into_iter()
        .find_map(|(n, e)| match e {
            Event::Execute { token, .. } if token.sequence_id == wide && n != wide_leader => {
                Some(token)
            }
            _ => None,
        })
        .expect("a lease granted to a peer of the leader");
    let leader = wide_leader;
    let call = sim.call(
        leader,
        Command::Complete {
            token: granted,
            outcome: Ok((b"x".to_vec(), None)),
        },
    );
    match reply(&mut sim, call) {
        Reply::Completed(Err(SubmissionError::Forged)) => {}
        r => panic!("{r:?}"),
    }
}

#[test]
fn runs_replay_bit_for_bit_from_the_seed() {
    let run_once = || {
        let mut sim = network(8, 4);
        let sequence = dag(sim.peer_id(0), 60, 6, 8);
        submit(&mut sim, 0, sequence);
        let mut d = Driver::new();
        d.run_until(&mut sim, 3_000, &never, &honest, |_| false);
        sim.trace_hash()
    };
    assert_eq!(run_once(), run_once());
}

#[test]
fn a_leader_restarted_from_rocksdb_resumes_its_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let rocks = |k: &causality_net::Keypair, seed: u64| {
        let mut c = config(seed);
        c.replicas = 1;
        State::with_store(
            c,
            k.clone(),
            Box::new(causality_exec::RocksStore::open(dir.path()).unwrap()),
        )
    };
    // Find which node leads the sequence among five, and give that one RocksDB.
    let probe = network(21, 5);
    let sequence = dag(probe.peer_id(0), 120, 10, 21);
    let (want, _) = expected(&sequence);
    let id = sequence.id();
    let r = causality_hash::Rendezvous::for_epoch(0);
    let peers: Vec<[u8; 32]> = (0..5).map(|n| *probe.peer_id(n).as_bytes()).collect();
    let leader = (0..5)
        .find(|n| peers[*n] == *r.top_k(id.as_bytes(), &peers, 1)[0])
        .unwrap();
    drop(probe);
    let mut sim = network_with(21, 5, |c| c.replicas = 1);
    sim.crash(leader);
    sim.restart(leader, |k| rocks(k, 21));
    for n in 0..5 {
        if n != leader {
            sim.connect(leader, n);
        }
    }
    let view: causality_exec::ExecutorView = std::sync::Arc::new(
        (0..5)
            .map(|i| (sim.peer_id(i), config(0).executor))
            .collect(),
    );
    sim.set_view(leader, view.clone());
    sim.run_for(500);
    for n in 0..5 {
        sim.command(n, Command::Monitor(id));
    }
    submit(&mut sim, 0, sequence);
    assert_eq!(leader_of(&sim, &id).map(|(l, _)| l), Some(leader));
    let mut d = Driver::new();
    d.run_until(&mut sim, 30_000, &never, &honest, |s| {
        s.node(leader)
            .unwrap()
            .status(&id)
            .is_some_and(|m| m.completed_nodes.len() > 40)
    });
    let done_before = sim
        .node(leader)
        .unwrap()
        .status(&id)
        .unwrap()
        .completed_nodes
        .len();
    // The only replica crashes and comes back from its database.
    sim.crash(leader);
    sim.run_for(3_000);
    sim.restart(leader, |k| rocks(k, 22));
    for n in 0..5 {
        if n != leader {
            sim.connect(leader, n);
        }
    }
    sim.set_view(leader, view);
    let done = d.run_until(&mut sim, 60_000, &never, &honest, |s| {
        final_status(s, &id) == Some(ExecutionStatus::Completed)
    });
    assert!(done, "the restarted leader finished");
    assert_eq!(leader_of(&sim, &id), Some((leader, 2)), "in a higher term");
    let got = accepted(&d.statements);
    for (n, outputs) in &got {
        assert_eq!(outputs.len(), 1, "node {n} accepted once");
        assert_eq!(outputs.first(), want.get(n));
    }
    let executed: u32 = d.executions.values().sum();
    assert!(
        (executed as usize) < want.len() + 20,
        "the {done_before} results kept were not run again ({executed} runs for {} nodes)",
        want.len()
    );
}

#[test]
fn a_straggler_is_hedged_and_the_sequence_finishes_near_the_fast_executors_time() {
    let makespan = |hedge: u64| {
        let mut sim = network_with(31, 5, |c| c.hedge_factor = hedge);
        let work = |i: u32| WorkSpec::new("hash", i.to_le_bytes().to_vec());
        let sequence = ExecutionSequence::new(
            sim.peer_id(0),
            b"straggle",
            (0..200).map(|i| (i, work(i))),
            Vec::new(),
        );
        let id = sequence.id();
        submit(&mut sim, 0, sequence);
        let mut d = Driver::new();
        // Executor 3 takes 5 s per run, the others 5 ms.
        d.run_ms = vec![5, 5, 5, 5_000, 5];
        let t0 = sim.now_ms();
        let done = d.run_until(&mut sim, 60_000, &never, &honest, |s| {
            final_status(s, &id) == Some(ExecutionStatus::Completed)
        });
        assert!(done);
        let (leader, _) = leader_of(&sim, &id).unwrap();
        let stats = sim.node(leader).unwrap().stats().clone();
        (sim.now_ms() - t0, stats)
    };
    let (slow, _) = makespan(0);
    let (fast, stats) = makespan(3);
    assert!(
        slow >= 5_000,
        "unhedged, the straggler's runs set the end: {slow} ms"
    );
    assert!(
        fast < 1_000,
        "hedged, the sequence ends near the fast executors' time: {fast} ms"
    );
    assert!(stats.hedges >= 1, "{stats:?}");
    assert!(
        stats.hedges as f64 <= 0.05 * stats.grants as f64,
        "within the budget: {stats:?}"
    );
}

#[test]
fn a_leader_cut_off_alone_steps_down_and_no_node_is_accepted_twice() {
    let mut sim = network(4, 5);
    let sequence = dag(sim.peer_id(0), 150, 10, 3);
    let (want, _) = expected(&sequence);
    let id = sequence.id();
    for n in 0..5 {
        sim.command(n, Command::Monitor(id));
    }
    submit(&mut sim, 0, sequence);
    let (leader, _) = leader_of(&sim, &id).unwrap();
    let mut d = Driver::new();
    d.run_until(&mut sim, 30_000, &never, &honest, |s| {
        s.node(leader)
            .unwrap()
            .status(&id)
            .is_some_and(|m| m.completed_nodes.len() > 40)
    });
    // Mid-run, the leader is cut off from every other node; results of its leases keep
    // arriving at it from its own executor.
    let others: Vec<usize> = (0..5).filter(|&n| n != leader).collect();
    sim.partition(&[vec![leader], others.clone()]);
    for &n in &others {
        sim.disconnect(leader, n);
    }
    let finished = d.run_until(&mut sim, 60_000, &never, &honest, |s| {
        others.iter().any(|&n| {
            s.node(n)
                .and_then(|x| x.status(&id))
                .is_some_and(|m| m.status == ExecutionStatus::Completed && m.term >= 2)
        })
    });
    assert!(
        finished,
        "the majority side finished the sequence in a later term"
    );
    assert!(sim.node(leader).unwrap().stats().step_downs >= 1);
    // The old leader comes back: it follows the later term and accepts nothing of its own.
    sim.heal();
    for &n in &others {
        sim.connect(leader, n);
    }
    d.run_until(&mut sim, 15_000, &never, &honest, |_| false);
    let back = sim.node(leader).unwrap().status(&id).cloned().unwrap();
    assert_eq!(back.status, ExecutionStatus::Completed);
    assert!(back.term >= 2, "{back:?}");
    // Every node accepted under one token only, with its honest output, in all that any
    // node published.
    let mut tokens: std::collections::BTreeMap<u32, BTreeSet<u64>> = Default::default();
    for (_, m) in &d.statements {
        for r in &m.results {
            tokens
                .entry(r.token.node)
                .or_default()
                .insert(r.token.token);
            assert_eq!(Some(&r.output), want.get(&r.token.node));
        }
    }
    assert_eq!(tokens.len(), want.len(), "every node that runs is accepted");
    for (n, t) in &tokens {
        assert_eq!(t.len(), 1, "node {n} accepted under tokens {t:?}");
    }
}
