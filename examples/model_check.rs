//! The intended client: a search that branches a large state and backtracks. An explicit-state
//! model checker explores every interleaving of the filter lock (Peterson's algorithm for `n`
//! processes) up to a depth, with a shared buffer of a few MiB that each critical section
//! writes a stripe of pages into; it reports whether two processes were ever in the critical
//! section together. The same search runs three times in one process: over an arena with a
//! snapshot per node and a restore per successor, over a `Vec` copied per node, and over a
//! `Vec` with an undo log, and the three must agree.
//!
//! ```text
//! cargo run --release --example model_check                  # the lock holds (about 30 s)
//! cargo run --release --example model_check -- --broken --procs 3 --depth 30  # a violation
//! cargo run --release --example model_check -- --procs 3 --buffer-mib 16 --depth 30
//! ```
//!
//! The checker itself is `model_check/checker.rs`; `tests/typed_model_check.rs` runs it on small
//! configurations.

#[path = "model_check/checker.rs"]
mod checker;

use checker::{check, replay, Config, CowArena, Outcome, Step, Strategy, Undo, VecClone};
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let mut config = Config {
        procs: 4,
        buffer_words: 1 << 20 >> 2,
        stripe: 8,
        depth: 60,
        broken: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{arg} needs a number"))
        };
        match arg.as_str() {
            "--procs" => config.procs = value(),
            "--buffer-mib" => config.buffer_words = value() << 20 >> 2,
            "--stripe" => config.stripe = value(),
            "--depth" => config.depth = value(),
            "--broken" => config.broken = true,
            other => {
                eprintln!(
                    "unknown argument {other}; expected --procs N, --buffer-mib N, --stripe N, \
                     --depth N, --broken"
                );
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "filter lock{}, {} processes, {} MiB shared buffer, a stripe of {} slots per critical \
         section, depth {}",
        if config.broken { " (broken)" } else { "" },
        config.procs,
        (config.buffer_words * 4) >> 20,
        config.stripe,
        config.depth
    );
    let runs = [
        run::<CowArena>(&config),
        run::<VecClone>(&config),
        run::<Undo>(&config),
    ];
    let (first, _, _) = &runs[0];
    if runs.iter().any(|(outcome, _, _)| outcome != first) {
        eprintln!("the strategies disagree: {runs:?}");
        return ExitCode::FAILURE;
    }
    match &first.first_violation {
        None => println!("mutual exclusion holds up to depth {}", config.depth),
        Some(trace) => {
            println!(
                "mutual exclusion violated ({} times); the first trace, by process: {trace:?}",
                first.violations
            );
            if replay(&config, trace).last() != Some(&Step::Violation) {
                eprintln!("the trace does not replay to the violation");
                return ExitCode::FAILURE;
            }
        }
    }
    let base = runs[0].2;
    println!(
        "\n{:<10} {:>10} {:>12} {:>10} {:>12} {:>8}",
        "strategy", "states", "transitions", "seconds", "nodes/s", "vs cowarena"
    );
    for (outcome, name, secs) in &runs {
        println!(
            "{name:<10} {:>10} {:>12} {secs:>10.2} {:>12.0} {:>7.2}x",
            outcome.states,
            outcome.transitions,
            outcome.states as f64 / secs,
            secs / base,
        );
    }
    ExitCode::SUCCESS
}

/// Runs the search with `S`; returns what it found, `S`'s name and the seconds it took.
fn run<S: Strategy>(config: &Config) -> (Outcome, &'static str, f64) {
    let start = Instant::now();
    let outcome = check::<S>(config);
    (outcome, S::NAME, start.elapsed().as_secs_f64())
}
