//! Heap accounting for the memory invariant, with `stats_alloc`'s counting allocator: the
//! growth of the live heap over a scenario is what its simulated nodes and the network
//! model between them hold. Scenarios run one at a time per process, so the count is
//! theirs alone.
//!
//! Install the allocator in the binary or test that runs scenarios:
//!
//! ```
//! use causality_sim::memory::{INSTRUMENTED_SYSTEM, StatsAlloc, System};
//!
//! #[global_allocator]
//! static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;
//! # fn main() { assert!(causality_sim::memory::live_bytes().is_some()); }
//! ```
//!
//! Without it, [`live_bytes`] is `None` and the invariant says it was not measured.

pub use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
pub use std::alloc::System;

/// Bytes allocated and not yet freed in this process, when the counting allocator is
/// installed.
pub fn live_bytes() -> Option<i64> {
    // Something was allocated before this runs (the runtime's own setup), so a count of
    // zero means the allocator is not the global one.
    let s = INSTRUMENTED_SYSTEM.stats();
    if s.allocations == 0 {
        return None;
    }
    let live = s.bytes_allocated as i64 - s.bytes_deallocated as i64 + s.bytes_reallocated as i64;
    Some(live)
}
