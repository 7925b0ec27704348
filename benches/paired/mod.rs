//! Side-by-side timing for the benches that state goals as ratios: each ratio is the median of
//! per-round ratios of alternating rounds, so that the two sides of a round see the same load on
//! a shared machine.

use std::time::Instant;

/// Nanoseconds per call of `f`, over `calls` calls (inlined into the loop, like criterion's).
fn time(f: &mut impl FnMut(), calls: u32) -> f64 {
    let t = Instant::now();
    for _ in 0..calls {
        f();
    }
    t.elapsed().as_secs_f64() * 1e9 / f64::from(calls)
}

/// Nanoseconds per call of `a` and of `b` (medians), and the median of their ratio per round:
/// rounds alternate the two, so the two halves of a round see the same load on a shared
/// machine, and the median ratio is stable even when the absolute times are not.
pub fn paired(mut a: impl FnMut(), mut b: impl FnMut(), calls: u32) -> (f64, f64, f64) {
    const ROUNDS: usize = 61;
    time(&mut a, calls);
    time(&mut b, calls);
    let rounds: Vec<(f64, f64)> = (0..ROUNDS)
        .map(|_| (time(&mut a, calls), time(&mut b, calls)))
        .collect();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (
        median(rounds.iter().map(|r| r.0).collect()),
        median(rounds.iter().map(|r| r.1).collect()),
        median(rounds.iter().map(|r| r.0 / r.1).collect()),
    )
}

/// One goal's line: both timings, their ratio and the goal.
pub fn report(what: &str, (ours, base, ratio): (f64, f64, f64), names: (&str, &str), goal: f64) {
    println!(
        "{what}: {} {ours:.1} ns, {} {base:.1} ns: {ratio:.2}x (goal: at most {goal}x, {})",
        names.0,
        names.1,
        if ratio <= goal { "met" } else { "MISSED" }
    );
}
