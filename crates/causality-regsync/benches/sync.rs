//! Register sync's figures: delta bytes against full-state bytes for typical updates, and
//! re-synchronization after a partition heals — 100,000 registers of which 1% differ —
//! by rateless IBLT reconciliation, beside the naive full transfer, in the same run.
//! `cargo xtask bench regsync` prints them (lines starting with FIGURE); `cargo test
//! --benches` runs a small, quick version.

use std::time::Instant;

use causality_net::Keypair;
use causality_net::service::sim::{Sim, SimConfig};
use causality_net::service::{CallId, Input, Protocol};
use causality_regsync::messages::RegisterStateMessage;
use causality_regsync::{
    Command, Config, Genesis, Lifecycle, MemoryStore, Operation, Register, RegisterContents,
    RegisterDelta, RegisterId, Reply, State,
};

fn balance(amount: u64) -> RegisterContents {
    RegisterContents::TokenBalance {
        token: "CAU".into(),
        amount,
    }
}

/// Runs a command on a bare state machine, dropping its outputs.
fn run(state: &mut State, command: Command) {
    state.handle(
        0,
        Input::Command {
            command,
            call: None,
        },
    );
    while state.poll_output().is_some() {}
}

fn deltas_against_states() {
    let owner = Keypair::from_index(1);
    let genesis = Genesis::new(owner.peer_id(), "payments", "token", b"a typical nonce");
    let mut state = Register::created(genesis, balance(1_000), 1);
    let header_bytes = |delta: &RegisterDelta, next: &Register| {
        RegisterStateMessage {
            header: causality_regsync::UpdateHeader {
                register_id: next.id,
                epoch: next.epoch,
                previous_state_hash: delta.previous_state_hash,
                state_hash: next.state_hash(),
                delta_id: delta.id(),
                owner: next.owner,
                last_updated: next.last_updated,
                proof_id: None,
                fence: None,
                signature: [0; 64],
            },
            delta: None,
            full_state: None,
        }
        .encode()
        .len()
    };
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 31) as u8).collect();
    let cases: Vec<(&str, Vec<Operation>, Option<RegisterContents>)> = vec![
        (
            "balance update",
            vec![Operation::Update(balance(999))],
            None,
        ),
        (
            "ownership transfer",
            vec![Operation::TransferOwnership(
                Keypair::from_index(2).peer_id(),
            )],
            None,
        ),
        (
            "lock",
            vec![Operation::SetLifecycle {
                lifecycle: Lifecycle::Locked,
                into: None,
            }],
            None,
        ),
        (
            "split in two",
            vec![Operation::Split(vec![
                (causality_hash::ContentId::of(b"c1"), 100),
                (causality_hash::ContentId::of(b"c2"), 200),
            ])],
            None,
        ),
        (
            "1 KiB of a 4 KiB data register",
            vec![Operation::Update(RegisterContents::Data({
                let mut d = data.clone();
                d[..1024].fill(7);
                d
            }))],
            Some(RegisterContents::Data(data.clone())),
        ),
    ];
    for (label, operations, start) in cases {
        if let Some(contents) = start {
            state.contents = contents;
        } else {
            state.contents = balance(1_000);
        }
        state.lifecycle = Lifecycle::Active;
        state.owner = owner.peer_id();
        let delta = RegisterDelta {
            operations,
            previous_state_hash: Some(state.state_hash()),
        };
        let at = causality_regsync::At {
            epoch: state.epoch + 1,
            last_updated: state.last_updated + 1,
        };
        let (next, _) =
            causality_regsync::apply(Some(&state), &delta, at, &NoContext).expect("a valid update");
        let (d, s, h) = (
            delta.encode().len(),
            next.encode().len(),
            header_bytes(&delta, &next),
        );
        println!(
            "FIGURE regsync {label}: delta {d} B vs state {s} B ({:.2}x); with the signed header {} B vs {} B ({:.2}x)",
            d as f64 / s as f64,
            h + d,
            h + s,
            (h + d) as f64 / (h + s) as f64
        );
    }
    println!(
        "FIGURE regsync note: a data register's update replaces its contents, so its delta is the new data; data beyond 64 KiB travels as chunk ids (34 B per 64 KiB) and is fetched on read"
    );
}

struct NoContext;

impl causality_regsync::Context for NoContext {
    fn register(&self, _: &RegisterId) -> Option<Register> {
        None
    }
    fn split_credit(&self, _: &RegisterId) -> Option<(String, u64)> {
        None
    }
    fn merged(&self, _: &RegisterId) -> bool {
        false
    }
}

/// Two nodes holding `n` registers of one domain, `differ` of them updated at the second
/// only (a heal after a partition); the first reconciles with the second.
fn resync(n: usize, differ: usize) {
    let owner = Keypair::from_index(7);
    let build = || {
        let mut s = State::new(
            Config::default(),
            owner.clone(),
            Box::new(MemoryStore::new()),
        );
        s.handle(0, Input::Start);
        s
    };
    let started = Instant::now();
    let (mut a, mut b) = (build(), build());
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let genesis = Genesis::new(owner.peer_id(), "pay", "token", &(i as u64).to_le_bytes());
        ids.push(genesis.id());
        for s in [&mut a, &mut b] {
            run(
                s,
                Command::Create {
                    genesis: genesis.clone(),
                    contents: balance(100),
                    last_updated: 1,
                    proof_id: None,
                },
            );
        }
    }
    for id in ids.iter().step_by(n / differ).take(differ) {
        run(
            &mut b,
            Command::Update {
                register_id: *id,
                operations: vec![Operation::Update(balance(42))],
                last_updated: 2,
                proof_id: None,
            },
        );
    }
    let setup = started.elapsed();
    let mut sim = Sim::new(
        3,
        SimConfig {
            latency_ms: 10,
            keep_events: false,
            ..SimConfig::default()
        },
    );
    let mut a = Some(a);
    let mut b = Some(b);
    sim.add_node(|_| a.take().unwrap());
    sim.add_node(|_| b.take().unwrap());
    sim.connect(0, 1);
    sim.run_for(100);
    let before = sim.stats();
    let (t0, wall) = (sim.now_ms(), Instant::now());
    let call: CallId = sim.call(
        0,
        Command::Reconcile {
            peer: sim.peer_id(1),
            domain: "pay".into(),
        },
    );
    let mut report = None;
    while report.is_none() {
        sim.run_for(10);
        for (_, c, r) in sim.take_replies() {
            if c == call {
                report = Some(r);
            }
        }
    }
    let Some(Reply::Reconciled(Ok(report))) = report else {
        panic!("reconciliation failed: {report:?}")
    };
    let decoded_ms = sim.now_ms() - t0;
    let decode_wall = wall.elapsed();
    let converged = sim.run_while(600_000, |s| {
        ids.iter().all(|id| {
            s.node(0).unwrap().register(id).map(|r| r.state_hash())
                == s.node(1).unwrap().register(id).map(|r| r.state_hash())
        })
    });
    assert!(converged, "the first node catches up");
    let total_wall = wall.elapsed();
    let after = sim.stats();
    let ids_bytes = (differ * 32) as f64;
    let items = report.remote_only + report.local_only;
    println!(
        "FIGURE regsync re-sync, {n} registers, {differ} differ ({} items of the symmetric difference): reconciliation {} B in {} symbols ({:.2} per item), {} round trips, {} ms simulated ({:.1?} wall); {:.2}x the ids of the differing registers ({} B), {:.2}x per differing item; verified against the commitment: {}",
        items,
        report.symbol_bytes,
        report.symbols,
        report.symbols as f64 / items.max(1) as f64,
        report.round_trips,
        decoded_ms,
        decode_wall,
        report.symbol_bytes as f64 / ids_bytes,
        ids_bytes,
        report.symbol_bytes as f64 / (items.max(1) * 32) as f64,
        report.verified,
    );
    let moved = after.bytes - before.bytes;
    println!(
        "FIGURE regsync re-sync, {n} registers, {differ} differ: everything (reconciliation, resolution {} B, {} register syncs) {moved} B, caught up in {:.1?} wall; setup (creating {} registers twice) took {setup:.1?}",
        report.resolve_bytes, report.fetched, total_wall, n,
    );
    // The naive alternative in the same run: ship every (register id, state hash) pair,
    // or every state.
    let pairs = n * 64;
    let states: usize = ids
        .iter()
        .map(|id| sim.node(1).unwrap().register(id).unwrap().encode().len())
        .sum();
    println!(
        "FIGURE regsync naive full transfer, {n} registers: every (id, state hash) pair {pairs} B ({:.0}x the reconciliation), every state {states} B ({:.0}x)",
        pairs as f64 / report.symbol_bytes as f64,
        states as f64 / report.symbol_bytes as f64
    );
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    deltas_against_states();
    if quick {
        resync(2_000, 20);
    } else {
        resync(100_000, 1_000);
    }
}
