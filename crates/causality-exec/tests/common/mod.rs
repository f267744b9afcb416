//! The simulation harness shared by the tests and the benchmarks: networks of
//! coordinators, DAGs, and a driver that plays the executors.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use causality_exec::{
    Command, Condition, Config, Edge, Event, ExecutionSequence, ExecutionStatus, ExecutorInfo,
    ExecutorView, NodeClaimToken, NodeId, Reply, State, WorkSpec,
};
use causality_net::service::CallId;
use causality_net::service::sim::{Sim, SimConfig};
use rand::{Rng as _, SeedableRng as _};

pub fn config(seed: u64) -> Config {
    Config {
        executor: ExecutorInfo {
            kinds: ["hash".to_owned()].into(),
            capacity: 4,
        },
        seed,
        hedge_factor: std::env::var("HEDGE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3),
        predictive: std::env::var("PREDICTIVE").map_or(true, |v| v == "1"),
        ..Config::default()
    }
}

/// `n` nodes, all connected, all executors, each seeing all.
pub fn network(seed: u64, n: usize) -> Sim<State> {
    network_with(seed, n, |_| {})
}

/// [`network`] with each node's configuration adjusted by `adjust`.
pub fn network_with(seed: u64, n: usize, adjust: impl Fn(&mut Config)) -> Sim<State> {
    let mut sim = Sim::new(
        seed,
        SimConfig {
            latency_ms: 5,
            jitter_ms: 3,
            keep_events: true,
            ..SimConfig::default()
        },
    );
    for i in 0..n {
        let mut c = config(seed + i as u64);
        adjust(&mut c);
        sim.add_node(|k| State::new(c, k.clone()));
    }
    for i in 0..n {
        for j in i + 1..n {
            sim.connect(i, j);
        }
    }
    let view: ExecutorView = Arc::new(
        (0..n)
            .map(|i| (sim.peer_id(i), config(0).executor))
            .collect(),
    );
    for i in 0..n {
        sim.set_view(i, view.clone());
    }
    sim.run_for(500);
    sim
}

/// The work's output: a hash of its input and its predecessors' outputs.
pub fn run(work: &WorkSpec, inputs: &[Vec<u8>]) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(&work.input);
    for i in inputs {
        h.update(i);
    }
    h.finalize().as_bytes()[..8].to_vec()
}

/// Runs the simulation, executing what is leased (except where `hold` says to keep a
/// node's work back, or `wrong` to answer it wrongly), until `done` or `limit_ms`.
pub struct Driver {
    /// (executor index, token) of work not handed back yet.
    pub held: Vec<(usize, NodeClaimToken, Vec<u8>)>,
    /// Work running: (due, executor, token, output); every run takes `run_ms`.
    running: Vec<(u64, usize, NodeClaimToken, Vec<u8>)>,
    /// How long a run takes at each executor (virtual ms; 5 when absent).
    pub run_ms: Vec<u64>,
    /// Executions per (sequence node).
    pub executions: BTreeMap<NodeId, u32>,
    pub statements: Vec<(usize, causality_exec::ExecutionSequenceMessage)>,
}

impl Driver {
    pub fn new() -> Self {
        Self {
            held: Vec::new(),
            running: Vec::new(),
            run_ms: Vec::new(),
            executions: BTreeMap::new(),
            statements: Vec::new(),
        }
    }

    pub fn step(
        &mut self,
        sim: &mut Sim<State>,
        hold: &dyn Fn(usize, &NodeClaimToken) -> bool,
        wrong: &dyn Fn(usize) -> bool,
    ) {
        sim.run_for(5);
        let now = sim.now_ms();
        let (due, later): (Vec<_>, Vec<_>) =
            self.running.drain(..).partition(|(at, ..)| *at <= now);
        self.running = later;
        for (_, n, token, output) in due {
            sim.command(
                n,
                Command::Complete {
                    token,
                    outcome: Ok((output, None)),
                },
            );
        }
        loop {
            let events = sim.take_events();
            if events.is_empty() {
                break;
            }
            for (n, e) in events {
                match e {
                    Event::Execute {
                        token,
                        work,
                        inputs,
                        ..
                    } => {
                        *self.executions.entry(token.node).or_insert(0) += 1;
                        let mut output = run(&work, &inputs);
                        if wrong(n) {
                            output = b"wrong".to_vec();
                        }
                        if hold(n, &token) {
                            self.held.push((n, token, output));
                        } else {
                            self.running.push((
                                sim.now_ms() + self.run_ms.get(n).copied().unwrap_or(5),
                                n,
                                token,
                                output,
                            ));
                        }
                    }
                    Event::Status(m) => self.statements.push((n, *m)),
                    _ => {}
                }
            }
        }
    }

    pub fn run_until(
        &mut self,
        sim: &mut Sim<State>,
        limit_ms: u64,
        hold: &dyn Fn(usize, &NodeClaimToken) -> bool,
        wrong: &dyn Fn(usize) -> bool,
        mut done: impl FnMut(&Sim<State>) -> bool,
    ) -> bool {
        let until = sim.now_ms() + limit_ms;
        while sim.now_ms() < until {
            if done(sim) {
                return true;
            }
            self.step(sim, hold, wrong);
        }
        done(sim)
    }
}

pub fn never(_: usize, _: &NodeClaimToken) -> bool {
    false
}

pub fn honest(_: usize) -> bool {
    false
}

pub fn reply(sim: &mut Sim<State>, call: CallId) -> Reply {
    for _ in 0..200 {
        sim.run_for(10);
        if let Some((_, _, r)) = sim.take_replies().into_iter().find(|(_, c, _)| *c == call) {
            return r;
        }
    }
    panic!("call {call:?} was not answered");
}

/// A layered DAG of `n` nodes: fan-out, fan-in and diamonds between layers of `width`,
/// a few conditional edges (some never taken, so some nodes are skipped).
pub fn dag(creator: causality_net::PeerId, n: u32, width: u32, seed: u64) -> ExecutionSequence {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let nodes = (0..n).map(|i| (i, WorkSpec::new("hash", i.to_le_bytes().to_vec())));
    let mut edges = Vec::new();
    let mut seen = BTreeSet::new();
    for i in width..n {
        let layer = i / width;
        let below = (layer - 1) * width..layer * width;
        let preds = rng.gen_range(1..=3);
        for _ in 0..preds {
            let from = rng.gen_range(below.clone());
            if seen.insert((from, i)) {
                let condition = match rng.gen_range(0..40) {
                    0 => Some(Condition::Equals(b"never".to_vec())),
                    1..=3 => Some(Condition::NonEmpty),
                    _ => None,
                };
                edges.push(Edge {
                    from,
                    to: i,
                    condition,
                    weight: 0,
                });
            }
        }
    }
    ExecutionSequence::new(creator, &seed.to_le_bytes(), nodes, edges)
}

pub fn submit(
    sim: &mut Sim<State>,
    at: usize,
    sequence: ExecutionSequence,
) -> causality_exec::SequenceId {
    let call = sim.call(at, Command::Submit(sequence));
    let id = match reply(sim, call) {
        Reply::Submitted(Ok(id)) => id,
        other => panic!("submission refused: {other:?}"),
    };
    // Its first leader canvasses the other replicas (a round trip) before it leads.
    let led = sim.run_while(5_000, |s| leader_of(s, &id).is_some());
    assert!(led, "a leader took the sequence");
    id
}

pub fn leader_of(sim: &Sim<State>, id: &causality_exec::SequenceId) -> Option<(usize, u64)> {
    (0..sim.len()).find_map(|n| sim.node(n)?.leading(id).map(|t| (n, t)))
}

pub fn final_status(sim: &Sim<State>, id: &causality_exec::SequenceId) -> Option<ExecutionStatus> {
    let (l, _) = leader_of(sim, id)?;
    sim.node(l)?.status(id).map(|s| s.status)
}

/// Every node's accepted result, from the statements the replicas kept.
pub fn accepted(
    statements: &[(usize, causality_exec::ExecutionSequenceMessage)],
) -> BTreeMap<NodeId, BTreeSet<Vec<u8>>> {
    let mut out: BTreeMap<NodeId, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for (_, m) in statements {
        for r in &m.results {
            out.entry(r.token.node)
                .or_default()
                .insert(r.output.clone());
        }
    }
    out
}

/// The outputs an honest run gives, and which nodes are skipped.
pub fn expected(sequence: &ExecutionSequence) -> (BTreeMap<NodeId, Vec<u8>>, BTreeSet<NodeId>) {
    let dag = sequence.validate(&Default::default()).unwrap();
    let mut outputs: BTreeMap<NodeId, Vec<u8>> = BTreeMap::new();
    let mut skipped = BTreeSet::new();
    for &n in &dag.order {
        let preds = dag.preds.get(&n).cloned().unwrap_or_default();
        if preds.iter().any(|&e| {
            !outputs.contains_key(&sequence.edges[e].from)
                && !skipped.contains(&sequence.edges[e].from)
        }) {
            unreachable!("topological order");
        }
        let taken = preds.is_empty()
            || preds.iter().any(|&e| {
                let edge = &sequence.edges[e];
                outputs
                    .get(&edge.from)
                    .is_some_and(|o| edge.condition.as_ref().is_none_or(|c| c.holds(o)))
            });
        if !taken {
            skipped.insert(n);
            continue;
        }
        let mut from: Vec<NodeId> = preds.iter().map(|&e| sequence.edges[e].from).collect();
        from.sort_unstable();
        let inputs: Vec<Vec<u8>> = from
            .iter()
            .filter_map(|p| outputs.get(p).cloned())
            .collect();
        outputs.insert(n, run(&sequence.nodes[&n], &inputs));
    }
    (outputs, skipped)
}
