//! `causality-sim`: runs seeded whole-network scenarios and reports broken invariants.
//! `cargo xtask sim` builds and runs it.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use causality_sim::memory::{INSTRUMENTED_SYSTEM, StatsAlloc, System};
use causality_sim::{Counts, Options, Outcome, ProofPool, run};
use clap::Parser;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Seeded whole-network simulation: every protocol, faults and Byzantine nodes from the
/// seed, named invariants checked.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// How many seeds to run (from --first).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed of the range.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Run this one seed, twice, print its whole trace and check both runs alike.
    #[arg(long)]
    seed: Option<u64>,
    /// Nodes per scenario (drawn from 4 to 8 when unset).
    #[arg(long)]
    nodes: Option<usize>,
    /// Simulated ms of workload and faults per scenario.
    #[arg(long, default_value_t = 12_000)]
    workload_ms: u64,
    /// Stop at the first failing seed.
    #[arg(long)]
    fail_fast: bool,
    /// Print the protocols' log lines at this level and above (error, warn, info, debug,
    /// trace), each naming the node and the simulated ms.
    #[arg(long, value_name = "LEVEL")]
    log: Option<tracing_subscriber::filter::LevelFilter>,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("causality-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<bool> {
    let args = Args::parse();
    if let Some(level) = args.log {
        tracing_subscriber::fmt()
            .with_max_level(level)
            .without_time()
            .with_writer(std::io::stderr)
            .init();
    }
    let options = Options {
        nodes: args.nodes,
        workload_ms: args.workload_ms,
        ..Options::default()
    };
    let pool = ProofPool::new(8)?;
    if let Some(seed) = args.seed {
        return Ok(replay(seed, &options, &pool));
    }
    let started = Instant::now();
    let mut failed: Vec<Outcome> = Vec::new();
    let mut totals = Totals::default();
    let every = (args.seeds / 20).max(1);
    for (i, seed) in (args.first..args.first + args.seeds).enumerate() {
        let outcome = run(seed, &options, &pool);
        totals.add(&outcome);
        if !outcome.passed() {
            report(&outcome);
            failed.push(outcome);
            if args.fail_fast {
                break;
            }
        }
        let done = i as u64 + 1;
        if done.is_multiple_of(every) || done == args.seeds {
            println!(
                "sim: {done}/{} seeds, {} failed, {:.0} s",
                args.seeds,
                failed.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    totals.print(started.elapsed());
    if failed.is_empty() {
        println!("sim: every invariant held on every seed");
        Ok(true)
    } else {
        let seeds: Vec<String> = failed.iter().map(|o| o.seed.to_string()).collect();
        println!("sim: {} seeds failed: {}", failed.len(), seeds.join(", "));
        Ok(false)
    }
}

/// Runs `seed` twice with its whole trace; true when it passed and both runs were alike.
fn replay(seed: u64, options: &Options, pool: &ProofPool) -> bool {
    let options = Options {
        full_trace: true,
        ..options.clone()
    };
    let first = run(seed, &options, pool);
    for line in &first.trace {
        println!("{line}");
    }
    let second = run(seed, &options, pool);
    println!(
        "seed {seed}: {} nodes, byzantine {:?}, {:.1} s simulated in {:.2} s ({:.0}× real time)",
        first.nodes,
        first.byzantine,
        first.simulated_ms as f64 / 1000.0,
        first.wall.as_secs_f64(),
        first.speed()
    );
    println!("trace hash {}", hex(&first.trace_hash));
    println!("trace hash {} (second run)", hex(&second.trace_hash));
    let alike = first.trace_hash == second.trace_hash;
    if !alike {
        println!("sim: the two runs of seed {seed} differ: the run is not deterministic");
    }
    for v in &first.violations {
        println!("seed {seed}: {v}");
    }
    first.passed() && alike
}

fn report(outcome: &Outcome) {
    println!("---- seed {} FAILED", outcome.seed);
    for v in &outcome.violations {
        println!("  {v}");
    }
    println!("  trace (last {} lines):", outcome.trace.len());
    for line in &outcome.trace {
        println!("    {line}");
    }
    println!(
        "  trace hash {}; replay with: cargo xtask sim --seed {}",
        hex(&outcome.trace_hash),
        outcome.seed
    );
}

#[derive(Default)]
struct Totals {
    seeds: u64,
    nodes: u64,
    simulated_ms: u64,
    wall: Duration,
    counts: Counts,
    peak_heap: u64,
    digest: Vec<u8>,
}

impl Totals {
    fn add(&mut self, o: &Outcome) {
        self.seeds += 1;
        self.nodes += o.nodes as u64;
        self.simulated_ms += o.simulated_ms;
        self.wall += o.wall;
        let c = &o.counts;
        let t = &mut self.counts;
        t.proofs_verified += c.proofs_verified;
        t.proofs_rejected += c.proofs_rejected;
        t.updates += c.updates;
        t.nullifiers += c.nullifiers;
        t.double_uses += c.double_uses;
        t.results += c.results;
        t.crashes += c.crashes;
        t.partitions += c.partitions;
        t.attacks += c.attacks;
        t.penalties += c.penalties;
        t.log_entries += c.log_entries;
        self.peak_heap = self.peak_heap.max(o.peak_heap_per_node.unwrap_or(0));
        self.digest.extend_from_slice(&o.trace_hash);
    }

    fn print(&self, wall: Duration) {
        let c = &self.counts;
        let sim_s = self.simulated_ms as f64 / 1000.0;
        println!(
            "sim: {} seeds, {:.1} nodes on average, {sim_s:.0} s simulated in {:.0} s of scenarios \
             ({:.1} s wall in all): {:.0} simulated s per wall s",
            self.seeds,
            self.nodes as f64 / self.seeds.max(1) as f64,
            self.wall.as_secs_f64(),
            wall.as_secs_f64(),
            sim_s / self.wall.as_secs_f64().max(1e-9)
        );
        println!(
            "sim: {} proof verifications, {} proofs refused, {} register updates, {} nullifiers, \
             {} double uses caught, {} execution results, {} crashes, {} partitions, \
             {} Byzantine messages, {} penalties on Byzantine nodes, {} log entries verified",
            c.proofs_verified,
            c.proofs_rejected,
            c.updates,
            c.nullifiers,
            c.double_uses,
            c.results,
            c.crashes,
            c.partitions,
            c.attacks,
            c.penalties,
            c.log_entries
        );
        println!(
            "sim: largest heap growth per node {:.2} MiB (bound {:.0} MiB); digest of all traces {}",
            self.peak_heap as f64 / (1u64 << 20) as f64,
            causality_sim::MEMORY_PER_NODE as f64 / (1u64 << 20) as f64,
            hex(blake3::hash(&self.digest).as_bytes())
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
