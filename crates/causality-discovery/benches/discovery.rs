//! Discovery benchmarks: `responsible_peers` over large views (criterion), and convergence
//! time and membership traffic of whole simulated networks (printed). Under
//! `cargo test --benches` the simulations run at small sizes.

use std::time::Duration;

use causality_discovery::{Config, Discovery, PeerRecord, State};
use causality_hash::ContentId;
use causality_net::default_hello;
use causality_net::{MemoryNetwork, Multiaddr, Network};
use criterion::{BenchmarkId, Criterion};

/// A discovery state machine whose view holds `n` signed records (no traffic: the records
/// are inserted directly, as exchanges would).
fn view_of(n: usize) -> State {
    let rt = paused_runtime();
    rt.block_on(async {
        let sim = MemoryNetwork::new(1);
        let sign = |net: &Network| {
            let now = net.now_ms();
            PeerRecord::sign(
                net,
                net.listen_addresses(),
                vec![],
                1000,
                now,
                now + 3_600_000,
            )
        };
        let own_net = sim.add_node();
        let config = Config {
            max_records: n + 10,
            record_ttl: Duration::from_secs(7_200),
            ..Config::default()
        };
        let mut state = State::with_record(
            config,
            own_net.keypair().clone(),
            default_hello(),
            sign(&own_net),
        );
        for _ in 0..n {
            let net = sim.add_node();
            state.insert(&sign(&net).to_proto(), net.now_ms()).unwrap();
        }
        state
    })
}

fn responsible(c: &mut Criterion, quick: bool) {
    let mut group = c.benchmark_group("responsible_peers_k3");
    let sizes: &[usize] = if quick { &[100] } else { &[1_000, 10_000] };
    for &n in sizes {
        let state = view_of(n);
        let mut i = 0u64;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i += 1;
                state.responsible_peers(ContentId::of(&i.to_le_bytes()).as_bytes(), 3, &|_| true)
            });
        });
    }
    group.finish();
}

/// Convergence of `n` nodes joining through 3 bootstrap peers, and membership bytes per
/// node per second over the convergence period and a steady minute after it.
fn convergence(n: usize) {
    let rt = paused_runtime();
    rt.block_on(async {
        let sim = MemoryNetwork::new(n as u64);
        let nets: Vec<Network> = (0..n).map(|_| sim.add_node()).collect();
        let seeds: Vec<Multiaddr> = nets[..3].iter().map(|x| x.listen_addresses()[0].clone()).collect();
        let mut nodes: Vec<Discovery> = Vec::new();
        for (i, net) in nets.iter().enumerate() {
            let config = Config {
                bootstrap: vec![seeds[(i + 1) % 3].clone()],
                refresh_interval: Duration::from_secs(2),
                max_records: n + 10,
                seed: i as u64,
                ..Config::default()
            };
            nodes.push(Discovery::start(net.clone(), config).await.unwrap());
        }
        let start = tokio::time::Instant::now();
        loop {
            let first = nodes[0].members();
            if first.len() == n && nodes.iter().all(|d| d.members() == first) {
                break;
            }
            if start.elapsed() > Duration::from_secs(600) {
                println!("FIGURE discovery N={n}: not converged within 600 s");
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let took = start.elapsed();
        let converge_bytes = sim.stats().bytes;
        tokio::time::sleep(Duration::from_secs(60)).await;
        let steady_bytes = sim.stats().bytes - converge_bytes;
        println!(
            "FIGURE discovery N={n}: converged in {:.1} s (virtual); {:.0} B/node/s while converging, {:.0} B/node/s steady",
            took.as_secs_f64(),
            converge_bytes as f64 / n as f64 / took.as_secs_f64().max(0.001),
            steady_bytes as f64 / n as f64 / 60.0
        );
    });
}

/// The same network under the tokio-free simulation runner (20 ms links ± 10 ms), twice
/// from one seed: convergence time, membership bytes, wall time, and whether the two runs'
/// traces are identical.
fn simulated(n: usize) {
    use causality_net::service::sim::{Sim, SimConfig};
    let run = || {
        let wall = std::time::Instant::now();
        let mut sim: Sim<State> = Sim::new(
            n as u64,
            SimConfig {
                latency_ms: 20,
                jitter_ms: 10,
                keep_events: false,
                ..SimConfig::default()
            },
        );
        let start = sim.now_ms();
        for i in 0..n {
            let config = Config {
                bootstrap: vec![Sim::<State>::address((i + 1) % 3)],
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
        let mut converged = None;
        while sim.now_ms() < start + 600_000 {
            sim.run_for(500);
            if (0..n).all(|i| sim.node(i).is_some_and(|s| s.view_len() == n - 1)) {
                converged = Some(sim.now_ms() - start);
                break;
            }
        }
        (converged, sim.stats(), sim.trace_hash(), wall.elapsed())
    };
    let (took, stats, first, wall) = run();
    let (_, _, second, _) = run();
    let Some(took) = took else {
        println!("FIGURE discovery sim N={n}: not converged within 600 s");
        return;
    };
    let secs = took as f64 / 1000.0;
    println!(
        "FIGURE discovery sim N={n} (no tokio, 20±10 ms links): converged in {secs:.1} s (virtual), {:.0} B/node/s, {:.1} simulated s per wall s; two runs from one seed identical: {}",
        stats.bytes as f64 / n as f64 / secs,
        secs / wall.as_secs_f64(),
        if first == second { "yes" } else { "NO" }
    );
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let mut criterion = Criterion::default().configure_from_args();
    responsible(&mut criterion, quick);
    criterion.final_summary();
    let sizes: &[usize] = if quick { &[20] } else { &[50, 100, 500, 1000] };
    for &n in sizes {
        convergence(n);
    }
    simulated(if quick { 20 } else { 1000 });
}

/// A current-thread runtime on virtual time, for the in-memory simulations.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}
