//! Execution coordination's figures, in the simulator (5 ms ± 3 links): scheduling
//! throughput with no-op tasks on 10 and 100 nodes (tasks per wall-clock second: the state
//! machines' cost) and claim-to-start latency; the time from a claimer's crash to its
//! node's completion elsewhere, as a multiple of the lease; and the makespan of a DAG on
//! heterogeneous executors, predictive placement against rendezvous placement, in the same
//! run. `cargo xtask bench exec` prints them (lines starting with FIGURE); `cargo test
//! --benches` runs a small, quick version.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use causality_exec::{Command, Event, ExecutionSequence, ExecutionStatus, WorkSpec};
use common::*;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn throughput(nodes: usize, tasks: u32) {
    // Rendezvous placement spreads the no-op work over every executor (predictive
    // placement would keep work that takes no time at the leader, which has no round trip).
    let mut sim = network_with(11, nodes, |c| {
        c.executor.capacity = 8;
        c.hedge_factor = 0;
        c.predictive = false;
    });
    let work = |i: u32| WorkSpec::new("hash", i.to_le_bytes().to_vec());
    let sequence = ExecutionSequence::new(
        sim.peer_id(0),
        b"wide",
        (0..tasks).map(|i| (i, work(i))),
        Vec::new(),
    );
    let id = sequence.id();
    submit(&mut sim, 0, sequence);
    let started = Instant::now();
    let t0 = sim.now_ms();
    let busy0: Vec<std::time::Duration> = (0..nodes).map(|n| sim.busy(n)).collect();
    let mut latencies = Vec::new();
    let mut per_node = vec![0u32; nodes];
    let mut running: Vec<(u64, usize, causality_exec::NodeClaimToken)> = Vec::new();
    let lease = causality_exec::Config::default().lease_ms;
    loop {
        sim.run_for(1);
        let now = sim.now_ms();
        let (due, later): (Vec<_>, Vec<_>) = running.drain(..).partition(|(at, ..)| *at <= now);
        running = later;
        for (_, n, token) in due {
            sim.command(
                n,
                Command::Complete {
                    token,
                    outcome: Ok((Vec::new(), None)),
                },
            );
        }
        for (n, e) in sim.take_events() {
            if let Event::Execute { token, .. } = e {
                // Granted at lease_until − lease (the leader's clock is the simulator's).
                latencies.push(now.saturating_sub(token.lease_until_ms - lease));
                per_node[n] += 1;
                running.push((now, n, token));
            }
        }
        if final_status(&sim, &id) == Some(ExecutionStatus::Completed) {
            break;
        }
        assert!(sim.now_ms() - t0 < 600_000, "did not complete");
    }
    let wall = started.elapsed();
    latencies.sort_unstable();
    // Each node's own share: on a core of its own, the busiest one bounds the network.
    let busy: Vec<std::time::Duration> = (0..nodes).map(|n| sim.busy(n) - busy0[n]).collect();
    let (busiest, most) = busy
        .iter()
        .enumerate()
        .max_by_key(|(_, b)| **b)
        .expect("nodes");
    let all: std::time::Duration = busy.iter().sum();
    let leader = common::leader_of(&sim, &id).map(|(l, _)| l);
    println!(
        "FIGURE exec throughput, {nodes} nodes, {tasks} no-op tasks: {:.0} tasks/s of wall-clock time ({wall:.2?}, every node's state machine on one core; {all:.2?} of it in the state machines); the busiest node ({}) spent {most:.2?}: {:.0} tasks/s with a core per node; {} ms simulated; claim-to-start p50 {} ms, p99 {} ms; the busiest executor ran {:.0} % of the tasks",
        f64::from(tasks) / wall.as_secs_f64(),
        if leader == Some(busiest) {
            "the leader"
        } else {
            "not the leader"
        },
        f64::from(tasks) / most.as_secs_f64(),
        sim.now_ms() - t0,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        100.0 * f64::from(per_node.iter().copied().max().unwrap_or(0)) / f64::from(tasks),
    );
}

fn crash_to_completion() {
    let mut sim = network(12, 5);
    let lease = causality_exec::Config::default().lease_ms;
    let sequence = ExecutionSequence::new(
        sim.peer_id(0),
        b"crash",
        [(0, WorkSpec::new("hash", b"x".to_vec()))],
        Vec::new(),
    );
    let id = sequence.id();
    submit(&mut sim, 0, sequence);
    let (leader, _) = leader_of(&sim, &id).unwrap();
    let mut d = Driver::new();
    // Whoever is leased the node first (not the leader) crashes as it starts.
    let first = std::cell::Cell::new(None);
    let hold = |n: usize, _: &causality_exec::NodeClaimToken| {
        if first.get().is_none() && n != leader {
            first.set(Some(n));
        }
        first.get() == Some(n)
    };
    d.run_until(&mut sim, 10_000, &hold, &honest, |_| first.get().is_some());
    let claimer = first.get().expect("leased to a peer of the leader");
    let crashed_at = sim.now_ms();
    sim.crash(claimer);
    let done = d.run_until(&mut sim, 60_000, &never, &honest, |s| {
        final_status(s, &id) == Some(ExecutionStatus::Completed)
    });
    assert!(done);
    let took = sim.now_ms() - crashed_at;
    println!(
        "FIGURE exec claimer crash to completion elsewhere: {took} ms with a {lease} ms lease ({:.2}x the lease; target <= 1 lease + 1 round trip of ~10 ms)",
        took as f64 / lease as f64
    );
}

fn makespan(nodes: u32) {
    let run = |predictive: bool| {
        let mut sim = network_with(13, 10, |c| {
            c.predictive = predictive;
            c.hedge_factor = 0;
            c.executor.capacity = 2;
        });
        let sequence = dag(sim.peer_id(0), nodes, 25, 13);
        let id = sequence.id();
        submit(&mut sim, 0, sequence);
        let mut d = Driver::new();
        // Three of the ten executors are five times slower.
        d.run_ms = (0..10).map(|n| if n < 3 { 50 } else { 10 }).collect();
        let t0 = sim.now_ms();
        let done = d.run_until(&mut sim, 3_600_000, &never, &honest, |s| {
            final_status(s, &id) == Some(ExecutionStatus::Completed)
        });
        assert!(done);
        sim.now_ms() - t0
    };
    let (first_come, predictive) = (run(false), run(true));
    println!(
        "FIGURE exec makespan of a {nodes}-node DAG on 10 executors (3 of them 5x slower): predictive {predictive} ms vs rendezvous first-come {first_come} ms ({:.2}x)",
        predictive as f64 / first_come as f64
    );
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick {
        throughput(10, 500);
        crash_to_completion();
        makespan(100);
    } else {
        throughput(10, 20_000);
        throughput(100, 20_000);
        crash_to_completion();
        makespan(1_000);
    }
}
