//! Project automation. Run `cargo xtask help` for the list of tasks.

mod bench;
mod ci;
mod codegen;
mod disk;
mod downstream;
mod fuzz;
mod layers;
mod paths;
mod prereq;
mod reuse;
mod sim;
mod util;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task> [options]

tasks:
  ci                 everything CI checks: prerequisites, fmt, codegen, layering, clippy,
                     tests (unit, integration, doc, benches in test mode), per-crate
                     build reuse, examples, downstream projects, packaging, rustdoc,
                     and every fuzz target briefly (when nightly is installed)
  devnet [flags]     start a local multi-node network and exercise it
  bench [crate...]   run the criterion benchmarks (release) and print their figures
  bench discovery --scale
                     discovery and gossip over 1,000, 3,000 and 10,000 simulated nodes
  sim [--seeds N] [--first S] [--seed S] [--nodes M] [--fail-fast] [--debug]
                     seeded whole-network scenarios (every protocol, faults, Byzantine
                     nodes) with named invariants; --seed S replays one seed twice
  fuzz [--time S] [--target NAME] [--write-seeds]
                     build the fuzz targets (nightly, AddressSanitizer) and run each
                     for S seconds (default 60); --write-seeds refreshes fuzz/corpus
  codegen [--check]  regenerate Rust from proto/ (--check: fail when stale)
  check-layers       fail if a crate depends on a crate at its own or a higher layer
  prereq             check (and as root, install) the C toolchain RocksDB needs
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => ("help", &[][..]),
    };
    let result = match task {
        "ci" => ci::run(rest),
        "devnet" => devnet(rest),
        "bench" => bench::run(rest),
        "codegen" => codegen::run(rest),
        "fuzz" => fuzz::run(rest),
        "sim" => sim::run(rest),
        "check-layers" => layers::run(),
        "prereq" => prereq::ensure(),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(anyhow::anyhow!("unknown task `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask devnet [flags]`: checks prerequisites, builds `causality-node` in release
/// mode and runs `causality-node devnet` with the given flags (`--nodes`, `--keep`,
/// `--seed`, `--dir`).
fn devnet(args: &[String]) -> anyhow::Result<()> {
    prereq::ensure()?;
    println!(
        "==> building causality-node (release; the first build compiles RocksDB and takes a while)"
    );
    util::exec(util::cargo().args(["build", "--release", "--locked", "-p", "causality-node"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| util::root().join("target"), std::path::PathBuf::from);
    let binary = target.join("release").join("causality-node");
    println!("==> {} devnet {}", binary.display(), args.join(" "));
    util::exec(std::process::Command::new(&binary).arg("devnet").args(args))
}
