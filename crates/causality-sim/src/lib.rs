//! Seeded whole-network simulation of Causality, in the manner of FoundationDB's simulator
//! and TigerBeetle's VOPR: the real protocol state machines — discovery, proof sharing,
//! register sync and execution coordination, composed into one node by [`Stack`] — run
//! under the tokio-free simulation runner of `causality-net`, with a workload, faults and
//! Byzantine nodes drawn from a seed, while named invariants are checked.
//!
//! A failing seed is reproduced from the seed and the commit: [`run`] is a function of
//! both, and [`Outcome::trace_hash`] is equal for equal runs.
//!
//! ```no_run
//! use causality_sim::{Options, ProofPool, run};
//!
//! let pool = ProofPool::new(4)?;
//! let outcome = run(7, &Options::default(), &pool);
//! for v in &outcome.violations {
//!     eprintln!("seed 7: {v}");
//! }
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! The invariants (each failure names one):
//!
//! | name | what holds |
//! |---|---|
//! | `proofs.accepted_verify` | every proof an honest node accepts verifies (arkworks decides, not the code under test) |
//! | `proofs.no_invalid_forwarded` | no honest node sends on or announces a proof that does not verify |
//! | `proofs.valid_accepted` | an honest node accepts its own valid proofs |
//! | `registers.agree` | after heal and quiescence, every honest node holds the same head of every register |
//! | `registers.no_lost_update` | that head is the last update its honest owner saw accepted |
//! | `nullifiers.once` | no honest node accepts two uses of one nullifier; no honest owner is blamed for one |
//! | `nullifiers.agree` | every honest node keeps the same use of every nullifier, every accepted honest use included |
//! | `exec.completes` | every submitted DAG completes once the network has healed |
//! | `exec.exactly_once` | every execution node's result is accepted once, and it is the honest output |
//! | `exec.no_stale_token` | a result handed in again under a spent token never replaces the accepted one |
//! | `net.honest_not_penalized` | no honest node penalizes an honest node |
//! | `log.verifies` | every honest node's event log verifies |
//! | `memory.bounded` | the heap grows by at most [`MEMORY_PER_NODE`] per node over a run |

pub mod memory;
mod proofs;
mod scenario;
mod shared;
mod stack;

pub use crate::proofs::ProofPool;
pub use crate::scenario::{
    Counts, DOMAIN, MEMORY_PER_NODE, Options, Outcome, Sabotage, TRACE_TAIL, Violation, WORK_KIND,
    run, work_output,
};
pub use crate::shared::{Shared, Stores};
pub use crate::stack::{
    Command, EXECUTOR_ROLE, Event, Injection, Part, Reply, Stack, StackConfig, Timer, VERIFIER_ROLE,
};
