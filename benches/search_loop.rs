//! The search loop: a snapshot at every decision, a few pages written, and back. An arena of
//! 64 MiB (and 1 GiB) whose working set, its first quarter, was written once and frozen; each
//! iteration takes `s = snapshot()`, writes 8 bytes in each of d distinct pseudo-random
//! working-set pages through `Arena::write`, `restore(&s)`, and drops `s`.
//!
//! Every step is timed on its own, so the figure that matters, snapshot + restore + drop, leaves
//! the writes out (their median, copy-on-write faults included, is printed beside it). The
//! split: `snapshot()` alone, `restore()` alone, the drop. References in the same run,
//! interleaved, each on its own `Vec<u8>` holding the same working set:
//!
//! - `copy`: copying the d pages out into a buffer and back with `copy_from_slice`, the limit a
//!   page-granular snapshot meets (about 0.5 us a page);
//! - `undo log`: a fresh `Vec` per decision holding the d pages' old bytes, saved before the
//!   writes and copied back to restore.
//!
//! The goal is 1 us + 0.5 us * d for snapshot + restore.
//!
//! `cargo bench --bench search_loop`; `COWARENA_BENCH_FULL=1` adds the 1 GiB arena. Settings:
//! `COWARENA_BENCH_SIZES` (arena sizes in MiB, working set a quarter of each; default `64`),
//! `COWARENA_BENCH_DS` (default `1,4,16,64`), `COWARENA_BENCH_SECS` (seconds per case, default
//! 2). Without `--bench` (`cargo test --benches`) every case runs a few iterations only.

mod sampling;
use cowarena::{Arena, Snapshot};
use sampling::{env_list, median, us, Scatter};
use std::hint::black_box;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
/// Iterations a variant runs before the next one takes its turn.
const BATCH: usize = 32;

struct Settings {
    /// Arena sizes in MiB; the working set is the first quarter of each.
    sizes: Vec<usize>,
    ds: Vec<usize>,
    case_time: Duration,
}

fn settings() -> Settings {
    let quick = !std::env::args().any(|a| a == "--bench");
    let full = std::env::var_os("COWARENA_BENCH_FULL").is_some_and(|v| v != "0");
    let secs = std::env::var("COWARENA_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(2.0);
    Settings {
        sizes: env_list("COWARENA_BENCH_SIZES").unwrap_or_else(|| {
            if full {
                vec![64, 1024]
            } else {
                vec![64]
            }
        }),
        ds: env_list("COWARENA_BENCH_DS").unwrap_or_else(|| vec![1, 4, 16, 64]),
        case_time: Duration::from_secs_f64(if quick { 0.0 } else { secs }),
    }
}

/// The first `u64` of working-set page `p` as written once; every decision writes its
/// complement there.
fn marker(p: usize) -> u64 {
    (p as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

/// Fills `ws` with the working set: a marker at the head of every page, a byte pattern after it.
fn fill(ws: &mut [u8], page: usize) {
    for (p, chunk) in ws.chunks_mut(page).enumerate() {
        chunk.fill(p as u8 ^ 0xA5);
        chunk[..8].copy_from_slice(&marker(p).to_le_bytes());
    }
}

/// Per-iteration times of a cowarena decision, in microseconds.
#[derive(Default)]
struct CowTimes {
    snapshot: Vec<f64>,
    writes: Vec<f64>,
    restore: Vec<f64>,
    drop: Vec<f64>,
    /// snapshot + restore + drop.
    total: Vec<f64>,
}

/// Per-iteration times of a reference on a `Vec`, in microseconds.
#[derive(Default)]
struct Reference {
    /// Saving and restoring, the writes left out.
    total: Vec<f64>,
    writes: Vec<f64>,
}

/// One cowarena decision on `pages`; checks the restore outside the clock.
fn decide(a: &mut Arena, pages: &[usize], page: usize, t: &mut CowTimes) {
    let t0 = Instant::now();
    let s: Snapshot = a.snapshot().unwrap();
    let t1 = Instant::now();
    for &p in pages {
        a.write(p * page, &(!marker(p)).to_le_bytes()).unwrap();
    }
    let t2 = Instant::now();
    a.restore(&s).unwrap();
    let t3 = Instant::now();
    drop(s);
    let t4 = Instant::now();
    for &p in pages {
        let at = p * page;
        let v = u64::from_le_bytes(a.as_bytes()[at..at + 8].try_into().unwrap());
        assert_eq!(v, marker(p));
    }
    t.snapshot.push(us(t1 - t0));
    t.writes.push(us(t2 - t1));
    t.restore.push(us(t3 - t2));
    t.drop.push(us(t4 - t3));
    t.total.push(us(t1 - t0) + us(t4 - t2));
}

/// Writes the decision's bytes into the `Vec` working set.
fn write_vec(ws: &mut [u8], pages: &[usize], page: usize) {
    for &p in pages {
        let at = p * page;
        ws[at..at + 8].copy_from_slice(&(!marker(p)).to_le_bytes());
    }
    black_box(&mut *ws);
}

/// Checks the `Vec` working set was restored.
fn check_vec(ws: &[u8], pages: &[usize], page: usize) {
    for &p in pages {
        let at = p * page;
        assert_eq!(
            u64::from_le_bytes(ws[at..at + 8].try_into().unwrap()),
            marker(p)
        );
    }
}

/// The copy reference: the d pages copied into `buf` and back.
fn copy_decision(ws: &mut [u8], buf: &mut [u8], pages: &[usize], page: usize, t: &mut Reference) {
    let t0 = Instant::now();
    for (i, &p) in pages.iter().enumerate() {
        buf[i * page..(i + 1) * page].copy_from_slice(&ws[p * page..(p + 1) * page]);
    }
    black_box(&mut *buf);
    let t1 = Instant::now();
    write_vec(ws, pages, page);
    let t2 = Instant::now();
    for (i, &p) in pages.iter().enumerate() {
        ws[p * page..(p + 1) * page].copy_from_slice(&buf[i * page..(i + 1) * page]);
    }
    black_box(&mut *ws);
    let t3 = Instant::now();
    check_vec(ws, pages, page);
    t.total.push(us(t1 - t0) + us(t3 - t2));
    t.writes.push(us(t2 - t1));
}

/// The undo-log reference: a new log per decision, the pages' old bytes saved before the writes
/// and copied back, newest first, to restore.
fn undo_decision(ws: &mut [u8], pages: &[usize], page: usize, t: &mut Reference) {
    let t0 = Instant::now();
    let mut log: Vec<(usize, Vec<u8>)> = Vec::with_capacity(pages.len());
    for &p in pages {
        log.push((p, ws[p * page..(p + 1) * page].to_vec()));
    }
    black_box(&mut log);
    let t1 = Instant::now();
    write_vec(ws, pages, page);
    let t2 = Instant::now();
    for (p, old) in log.into_iter().rev() {
        ws[p * page..(p + 1) * page].copy_from_slice(&old);
    }
    black_box(&mut *ws);
    let t3 = Instant::now();
    check_vec(ws, pages, page);
    t.total.push(us(t1 - t0) + us(t3 - t2));
    t.writes.push(us(t2 - t1));
}

/// The timer's own cost: the median gap between two consecutive readings, in nanoseconds.
fn timer_ns() -> f64 {
    let gaps: Vec<f64> = (0..10_000)
        .map(|_| {
            let t = Instant::now();
            (t.elapsed().as_secs_f64()) * 1e9
        })
        .collect();
    median(&gaps)
}

fn main() {
    let settings = settings();
    let page = cowarena::page_size();
    println!(
        "search loop, {page}-byte pages; the timer reads in {:.0} ns",
        timer_ns()
    );
    let mut rows = Vec::new();
    #[cfg(feature = "cost-split")]
    let mut splits = Vec::new();
    for &mib in &settings.sizes {
        let len = mib * MIB;
        let ws_len = len / 4;
        let ws_pages = ws_len / page;
        let mut a = Arena::with_capacity(len).unwrap();
        fill(a.bytes_mut(0..ws_len).unwrap(), page);
        let _frozen = a.snapshot().unwrap();
        // Each reference has its own copy of the working set, so that none finds the pages in
        // the cache because another just copied them.
        let mut ws = vec![0u8; ws_len];
        fill(&mut ws, page);
        let mut ws_undo = ws.clone();
        // Every working set mapped and in the page tables before the first decision.
        black_box(a.as_bytes()[..ws_len].iter().step_by(page).count());
        for &d in &settings.ds {
            let d = d.min(ws_pages);
            let mut buf = vec![0u8; d * page];
            let mut scatters: Vec<Scatter> =
                (0..3).map(|_| Scatter::new(ws_pages, 0xD1CE)).collect();
            let (mut ca, mut copy, mut undo) = (
                CowTimes::default(),
                Reference::default(),
                Reference::default(),
            );
            // The first turn of each variant warms up: its times are not kept.
            let (mut warm_ca, mut warm_copy, mut warm_undo) = (
                CowTimes::default(),
                Reference::default(),
                Reference::default(),
            );
            let until = Instant::now() + settings.case_time;
            let mut turn = 0;
            while turn < 6 || Instant::now() < until {
                let (ca, copy, undo) = if turn < 3 {
                    (&mut warm_ca, &mut warm_copy, &mut warm_undo)
                } else {
                    (&mut ca, &mut copy, &mut undo)
                };
                let scatter = &mut scatters[turn % 3];
                for _ in 0..BATCH {
                    let pages = scatter.next(d);
                    match turn % 3 {
                        0 => decide(&mut a, pages, page, ca),
                        1 => copy_decision(&mut ws, &mut buf, pages, page, copy),
                        _ => undo_decision(&mut ws_undo, pages, page, undo),
                    }
                }
                turn += 1;
            }
            println!("  {mib} MiB, d = {d:>2}: {} decisions each", ca.total.len());
            #[cfg(feature = "cost-split")]
            splits.push((
                mib,
                d,
                split::measure(&mut a, &mut scatters[0], d, page, settings.case_time / 2),
            ));
            rows.push((mib, d, ca, copy, undo));
        }
    }

    println!();
    println!("median us per decision; cowarena's snapshot + restore + drop leaves the writes out,");
    println!("and so do the references' save + restore");
    println!(
        "{:>6} {:>2} | {:>9} {:>6} | {:>8} {:>7} {:>5} | {:>7} | {:>6} {:>8} {:>8} | {:>9}",
        "arena",
        "d",
        "snap+rest",
        "goal",
        "snapshot",
        "restore",
        "drop",
        "writes",
        "copy",
        "undo log",
        "Vec wr.",
        "vs copy"
    );
    for (mib, d, ca, copy, undo) in &rows {
        let total = median(&ca.total);
        let copy_total = median(&copy.total);
        println!(
            "{:>4}Mi {:>2} | {:>9.2} {:>6.1} | {:>8.2} {:>7.2} {:>5.2} | {:>7.2} | {:>6.2} {:>8.2} {:>8.2} | {:>8.2}x",
            mib,
            d,
            total,
            1.0 + 0.5 * *d as f64,
            median(&ca.snapshot),
            median(&ca.restore),
            median(&ca.drop),
            median(&ca.writes),
            copy_total,
            median(&undo.total),
            median(&copy.writes),
            total / copy_total
        );
    }
    println!("(arena: size, its first quarter the working set; goal: 1 us + 0.5 us * d;");
    println!(" writes: cowarena's writes of the decision; Vec wr.: the same writes into the Vec)");
    #[cfg(feature = "cost-split")]
    split::print(&splits);
    #[cfg(not(feature = "cost-split"))]
    println!("(where the time goes: `cargo bench --bench search_loop --features cost-split`)");
}

/// Where a decision's snapshot and restore spend their time, with the `cost-split` feature: a
/// separate pass after each case, since timing the phases costs two clock reads per phase.
#[cfg(feature = "cost-split")]
mod split {
    use super::{CowTimes, Scatter};
    use cowarena::cost_split::{self, CostSplit, Phase};
    use cowarena::Arena;
    use std::time::{Duration, Instant};

    /// Sums over a pass: the decisions, their snapshot + restore time, and its split.
    pub struct Pass {
        decisions: usize,
        timed: Duration,
        phases: [Duration; Phase::ALL.len()],
        system_calls: u64,
    }

    impl Pass {
        fn add(&mut self, split: CostSplit) {
            for (sum, phase) in self.phases.iter_mut().zip(Phase::ALL) {
                *sum += split.time(phase);
            }
            self.system_calls += split.system_calls();
        }
    }

    /// Runs decisions of `d` pages for `time` (at least 100), timing the phases of each
    /// snapshot and restore (not of the writes or the drop).
    pub fn measure(
        a: &mut Arena,
        scatter: &mut Scatter,
        d: usize,
        page: usize,
        time: Duration,
    ) -> Pass {
        let mut pass = Pass {
            decisions: 0,
            timed: Duration::ZERO,
            phases: [Duration::ZERO; Phase::ALL.len()],
            system_calls: 0,
        };
        let until = Instant::now() + time;
        while pass.decisions < 100 || Instant::now() < until {
            let pages = scatter.next(d);
            let mut times = CowTimes::default();
            let mut splits = Vec::with_capacity(2);
            decide_timed(a, pages, page, &mut times, &mut splits);
            pass.timed += Duration::from_secs_f64((times.snapshot[0] + times.restore[0]) / 1e6);
            for split in splits {
                pass.add(split);
            }
            pass.decisions += 1;
        }
        pass
    }

    /// `decide` with the phases of the snapshot and of the restore timed.
    fn decide_timed(
        a: &mut Arena,
        pages: &[usize],
        page: usize,
        times: &mut CowTimes,
        splits: &mut Vec<CostSplit>,
    ) {
        let t0 = Instant::now();
        cost_split::start();
        let s = a.snapshot().unwrap();
        splits.push(cost_split::stop());
        let t1 = Instant::now();
        for &p in pages {
            a.write(p * page, &(!super::marker(p)).to_le_bytes())
                .unwrap();
        }
        let t2 = Instant::now();
        cost_split::start();
        a.restore(&s).unwrap();
        splits.push(cost_split::stop());
        let t3 = Instant::now();
        drop(s);
        times.snapshot.push(super::us(t1 - t0));
        times.restore.push(super::us(t3 - t2));
    }

    pub fn print(splits: &[(usize, usize, Pass)]) {
        println!();
        println!(
            "where snapshot + restore spend their time: mean us per decision (the drop and the"
        );
        println!("writes left out; phases nested in others count in the innermost only)");
        print!("{:>6} {:>2} | {:>6} |", "arena", "d", "total");
        for phase in Phase::ALL {
            print!(" {:>12}", phase.name());
        }
        println!(" | {:>6} {:>6}", "other", "calls");
        for (mib, d, pass) in splits {
            let per = |t: Duration| t.as_secs_f64() * 1e6 / pass.decisions as f64;
            let phases: Duration = pass.phases.iter().sum();
            print!("{:>4}Mi {:>2} | {:>6.2} |", mib, d, per(pass.timed));
            for t in pass.phases {
                print!(" {:>12.2}", per(t));
            }
            println!(
                " | {:>6.2} {:>6.2}",
                per(pass.timed.saturating_sub(phases)),
                pass.system_calls as f64 / pass.decisions as f64
            );
        }
        println!(
            "(calls: system calls per decision; other: the rest of snapshot() and restore(), and"
        );
        println!(" the timing's own cost, two clock reads per phase: compare total with the table above)");
    }
}
