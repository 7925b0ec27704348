//! The example client (`examples/model_check.rs`): its model checker finds what it should, and
//! its three strategies (arena snapshots, `Vec` copies, an undo log) agree on every count.

#[path = "../examples/model_check/checker.rs"]
mod checker;

use checker::{check, replay, Config, CowArena, Outcome, Step, Strategy, Undo, VecClone};

fn config(procs: usize, depth: usize, broken: bool) -> Config {
    Config {
        procs,
        // 256 KiB: a stripe of 8 slots lands on 8 different pages.
        buffer_words: 1 << 16,
        stripe: 8,
        depth,
        broken,
    }
}

/// Runs all three strategies; they must agree.
fn agreed(config: &Config) -> Outcome {
    let arena = check::<CowArena>(config);
    let others = [
        (VecClone::NAME, check::<VecClone>(config)),
        (Undo::NAME, check::<Undo>(config)),
    ];
    for (name, other) in others {
        assert_eq!(arena, other, "{} against {name}", CowArena::NAME);
    }
    arena
}

#[test]
fn the_filter_lock_keeps_mutual_exclusion() {
    let outcome = agreed(&config(3, 40, false));
    assert_eq!(outcome.violations, 0);
    assert_eq!(outcome.first_violation, None);
    // Every reachable state of three processes (with this encoding), found by all three.
    assert_eq!(outcome.states, 908);
    // The bound matters: a shallower search sees fewer states.
    let shallow = agreed(&config(3, 10, false));
    assert!(shallow.states < outcome.states && shallow.states > 10);
}

#[test]
fn the_broken_lock_lets_two_processes_in_and_the_trace_replays() {
    let c = config(3, 30, true);
    let outcome = agreed(&c);
    assert!(outcome.violations > 0);
    let trace = outcome.first_violation.expect("a violation has a trace");
    let steps = replay(&c, &trace);
    assert_eq!(steps.last(), Some(&Step::Violation), "{trace:?}");
    assert!(
        steps[..steps.len() - 1].iter().all(|&s| s == Step::Moved),
        "every earlier step of the trace was possible and found nothing: {steps:?}"
    );
}

#[test]
fn four_processes_agree_too() {
    let outcome = agreed(&config(4, 18, false));
    assert_eq!(outcome.violations, 0);
    assert!(outcome.states > 1000, "{outcome:?}");
}
