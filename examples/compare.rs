//! Side-by-side comparison of cowarena with the other ways to snapshot a big mutable state.
//!
//! ```text
//! cargo run --release --example compare            # 16 MiB and 1 GiB: under 3 minutes on 2 cores
//! cargo run --release --example compare -- --full  # thorough: 16 MiB .. 4 GiB, 5 rounds
//! cargo run --release --example compare -- --json target/compare.json
//! ```
//!
//! Every strategy runs the identical workload code (`compare/workloads.rs`) through one small trait
//! (`compare/strategy.rs`), in one process. Strategies are interleaved: each round sets every
//! strategy up afresh for each arena size, measures it and tears it down before the next one, so only
//! one strategy's memory is alive at a time (fork() copies the page tables of everything resident, and
//! 4 GiB arenas would not fit side by side). The order of strategies rotates between rounds.
//!
//! Figures are medians over all samples of all rounds. A wrong restore or a DFS checksum that differs
//! between strategies stops the run with an error.
//!
//! It needs Linux (memfd for the kernel floor, and the `memsnap` crate); elsewhere it says so.

#[cfg(target_os = "linux")]
#[path = "compare/baselines.rs"]
mod baselines;
#[cfg(target_os = "linux")]
#[path = "compare/cowarena_strategy.rs"]
mod cowarena_strategy;
#[cfg(target_os = "linux")]
#[path = "compare/peers.rs"]
mod peers;
#[cfg(target_os = "linux")]
#[path = "compare/report.rs"]
mod report;
#[cfg(target_os = "linux")]
#[path = "compare/run.rs"]
mod run;
#[cfg(target_os = "linux")]
#[path = "compare/strategy.rs"]
mod strategy;
#[cfg(target_os = "linux")]
#[path = "compare/sys.rs"]
mod sys;
#[cfg(target_os = "linux")]
#[path = "compare/workloads.rs"]
mod workloads;

#[cfg(target_os = "linux")]
use run::{Cfg, Key, Results, GIB, MIB};

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    run::main()
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!("the comparison runs on Linux only: its kernel floor needs memfd, and memsnap Linux");
    std::process::ExitCode::FAILURE
}
