//! `cargo xtask sim`: builds `causality-sim` and runs seeded whole-network scenarios
//! (every protocol, faults and Byzantine nodes from the seed, named invariants checked).
//! A failing seed prints its invariant, its trace and the command that replays it.

use anyhow::Result;

use crate::util::{cargo, exec};

const USAGE: &str = "usage: cargo xtask sim [--seeds N] [--first S] [--seed S] [--nodes M] \
                     [--workload-ms MS] [--fail-fast] [--debug]";

/// Runs the simulator with `args` (release unless `--debug`); `--help` lists its flags.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let debug = args.iter().any(|a| a == "--debug");
    let rest: Vec<&String> = args.iter().filter(|a| *a != "--debug").collect();
    if rest.iter().any(|a| *a == "help") {
        println!("{USAGE}");
        return Ok(());
    }
    let mut command = cargo();
    command.args(["run", "-q", "-p", "causality-sim"]);
    if !debug {
        command.arg("--release");
    }
    if std::env::var_os("CI").is_some() {
        command.arg("--locked");
    }
    command.arg("--").args(rest);
    exec(&mut command)
}
