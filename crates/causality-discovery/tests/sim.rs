//! Discovery under the tokio-free simulation runner: whole networks from a seed, on
//! virtual time, reproducible bit for bit.

use std::time::Duration;

use causality_discovery::{Config, State};
use causality_net::default_hello;
use causality_net::service::sim::{Sim, SimConfig};

/// `n` nodes joining through three bootstrap peers; runs until every view holds every node
/// (or `limit_ms` passes). Returns the simulation and the time it took.
fn converge(seed: u64, n: usize, limit_ms: u64) -> (Sim<State>, Option<u64>) {
    let mut sim = Sim::new(
        seed,
        SimConfig {
            latency_ms: 20,
            jitter_ms: 10,
            keep_events: false,
            ..SimConfig::default()
        },
    );
    let start = sim.now_ms();
    for i in 0..n {
        let bootstrap = vec![Sim::<State>::address((i + 1) % 3)];
        let config = Config {
            bootstrap,
            refresh_interval: Duration::from_secs(2),
            max_records: n + 10,
            seed: i as u64,
            ..Config::default()
        };
        sim.add_node(|keypair| {
            State::new(
                config,
                keypair.clone(),
                default_hello(),
                vec![Sim::<State>::address(i)],
                start,
            )
        });
    }
    let took = until(&mut sim, limit_ms, |s| s.view_len() == n - 1).then(|| sim.now_ms() - start);
    (sim, took)
}

/// Runs in steps of 500 ms until `done` holds for every running node; whether it did
/// within `limit_ms`.
fn until(sim: &mut Sim<State>, limit_ms: u64, done: impl Fn(&State) -> bool) -> bool {
    let deadline = sim.now_ms() + limit_ms;
    while sim.now_ms() < deadline {
        sim.run_for(500);
        if (0..sim.len()).all(|i| sim.node(i).is_none_or(&done)) {
            return true;
        }
    }
    false
}

/// `n` nodes of [`converge`], run for `ms` of virtual time only.
fn run_for(seed: u64, n: usize, ms: u64) -> [u8; 32] {
    converge(seed, n, ms).0.trace_hash()
}

#[test]
fn a_thousand_nodes_converge_from_a_seed_twice_alike() {
    // The same seed gives the same run: identical traces over the first 10 s (a few
    // hundred thousand inputs), then the whole convergence.
    assert_eq!(
        run_for(7, 1000, 10_000),
        run_for(7, 1000, 10_000),
        "same seed, same run"
    );
    let (first, took) = converge(7, 1000, 300_000);
    let took = took.expect("1,000 nodes converged within 300 s of virtual time");
    let stats = first.stats();
    println!(
        "1,000 nodes: full views after {:.1} s (virtual); {} requests, {:.0} B/node/s",
        took as f64 / 1000.0,
        stats.requests,
        stats.bytes as f64 / 1000.0 / (took as f64 / 1000.0)
    );
    // A different seed is a different run.
    let (other, _) = converge(8, 50, 300_000);
    let (same, _) = converge(7, 50, 300_000);
    assert_ne!(other.trace_hash(), same.trace_hash());
}

#[test]
fn a_partition_splits_views_and_healing_merges_them() {
    let first = partition_and_heal();
    assert_eq!(
        first,
        partition_and_heal(),
        "crashes and partitions replay alike"
    );
}

/// Converges 20 nodes, splits them, heals, restarts one; returns the trace hash.
fn partition_and_heal() -> [u8; 32] {
    let (mut sim, took) = converge(3, 20, 200_000);
    took.expect("20 nodes converged");
    let left: Vec<usize> = (0..10).collect();
    let right: Vec<usize> = (10..20).collect();
    sim.partition(&[left.clone(), right.clone()]);
    let split = until(&mut sim, 300_000, |s| s.view_len() == 9);
    assert!(split, "each half forgot the other once its records expired");
    sim.heal();
    // Each half has forgotten the other's addresses, and no node is alone (which would
    // make it dial its bootstrap peers again): a right-hand node restarts and re-joins
    // through a bootstrap peer on the left, and the views merge through it.
    sim.crash(15);
    let now = sim.now_ms();
    sim.restart(15, |keypair| {
        State::new(
            Config {
                bootstrap: vec![Sim::<State>::address(0)],
                refresh_interval: Duration::from_secs(2),
                ..Config::default()
            },
            keypair.clone(),
            default_hello(),
            vec![Sim::<State>::address(15)],
            now,
        )
    });
    let merged = until(&mut sim, 300_000, |s| s.view_len() == 19);
    assert!(merged, "views merged again after the heal");
    sim.trace_hash()
}
