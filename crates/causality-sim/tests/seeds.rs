//! The simulator on a fixed set of seeds (what CI runs), its determinism, and that its
//! invariants do catch what they name.

use std::sync::OnceLock;

use causality_sim::memory::{INSTRUMENTED_SYSTEM, StatsAlloc, System};
use causality_sim::{Options, ProofPool, Sabotage, run};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn pool() -> &'static ProofPool {
    static POOL: OnceLock<ProofPool> = OnceLock::new();
    POOL.get_or_init(|| ProofPool::new(4).expect("a proof pool"))
}

/// The seeds CI runs (`cargo xtask sim` runs as many as asked).
const SEEDS: std::ops::Range<u64> = 0..6;

#[test]
fn a_fixed_set_of_seeds_holds_every_invariant() {
    let mut failures = Vec::new();
    for seed in SEEDS {
        let o = run(seed, &Options::default(), pool());
        println!(
            "seed {seed}: {} nodes, byzantine {:?}, {:.1} s simulated in {:.2} s, {:?}",
            o.nodes,
            o.byzantine,
            o.simulated_ms as f64 / 1000.0,
            o.wall.as_secs_f64(),
            o.counts
        );
        assert!(
            o.peak_heap_per_node.is_some(),
            "the heap is measured under the counting allocator"
        );
        if !o.passed() {
            for v in &o.violations {
                failures.push(format!("seed {seed}: {v}"));
            }
            for line in &o.trace {
                println!("    {line}");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Seeds that found bugs, kept so the bugs stay fixed.
const REGRESSIONS: &[(u64, &str)] = &[
    (
        9,
        "one executor that lies failed work needing agreement (votes were dropped at the first disagreement)",
    ),
    (
        507,
        "a hedge went to an executor that had voted, which then agreed with itself",
    ),
    (
        103,
        "both sides of a partition led a sequence and accepted its nodes twice",
    ),
    (
        6,
        "a leader back from a partition accepted results under its old term after the majority side had led a later one",
    ),
    (
        33,
        "a sequence submitted during a partition reached only a Byzantine replica and was never run",
    ),
    (
        183,
        "a replica restarted from its store forgot the sequence's last statement",
    ),
    (
        276,
        "the bootstrap node, cut off alone, dropped every peer as unreachable and stayed alone after the heal",
    ),
];

#[test]
fn seeds_that_found_bugs_pass() {
    let mut failures = Vec::new();
    for (seed, found) in REGRESSIONS {
        let o = run(*seed, &Options::default(), pool());
        for v in &o.violations {
            failures.push(format!("seed {seed} (found: {found}): {v}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_seed_replays_bit_for_bit() {
    let options = Options::default();
    let a = run(3, &options, pool());
    let b = run(3, &options, pool());
    assert_eq!(
        a.trace_hash, b.trace_hash,
        "the same seed gives the same run"
    );
    assert_eq!(a.counts, b.counts);
    let c = run(4, &options, pool());
    assert_ne!(a.trace_hash, c.trace_hash, "another seed gives another run");
}

#[test]
fn a_node_that_never_follows_the_domain_breaks_register_agreement() {
    let options = Options {
        sabotage: Some(Sabotage::NeverFollows(1)),
        ..Options::default()
    };
    let o = run(1, &options, pool());
    assert!(
        o.violations
            .iter()
            .any(|v| v.invariant == "registers.agree"),
        "{:?}",
        o.violations
    );
}

#[test]
fn a_byzantine_node_counted_as_honest_is_caught_forwarding_an_invalid_proof() {
    let options = Options {
        sabotage: Some(Sabotage::TrustAnInvalidProofSender),
        ..Options::default()
    };
    let o = run(2, &options, pool());
    assert!(
        o.violations
            .iter()
            .any(|v| v.invariant == "proofs.no_invalid_forwarded"),
        "{:?}",
        o.violations
    );
}
