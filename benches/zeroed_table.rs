//! The zeroed-table case of the private budget: a search program whose state is a large table
//! made with `ArenaVec::with_len_zeroed`, a snapshot at every decision. The table's pages are all
//! zero, so they are not data pages and count for nothing in the default budget's share; only
//! the working set's growth can keep them private. Pages the arena sheds fault again at their
//! next write, so the budget decides what a decision costs.
//!
//! Each arena holds the table (`u32`, 64 MiB) and a small trail vector, lent through one
//! [`Loan`]. A decision, timed whole: `s = loan.snapshot()`, then through the views d entries of
//! d distinct pseudo-random table pages (so the whole table is the working set) are read and
//! overwritten and their indices pushed on the trail, `loan.restore(&s)`, `drop(s)`. Outside the
//! clock, every entry written must read back its old value and the trail must be empty again.
//!
//! Variants, each on its own arena, with the same sequence of entries, interleaved in batches:
//! the default budget and hand-set budgets of 1, 16, 64 and 128 MiB. Each first runs enough
//! unrecorded decisions to write nearly every table page, so that every budget has settled. The
//! table gives per variant the median decision, the median of its views-and-writes part (where
//! the copy-on-write faults land), the minor faults per decision, and its memory: the private
//! pages after each decision, their median and range. The goal: the default within 1.25x of the
//! best hand-set budget.
//!
//! `cargo bench --bench zeroed_table`. Settings: `COWARENA_BENCH_TABLE_MIB` (default 64),
//! `COWARENA_BENCH_DS` (default `4,16,64`), `COWARENA_BENCH_SECS` (measured seconds per d,
//! default 3), `COWARENA_BENCH_WARM` (unrecorded decisions per variant; default 4096, or enough
//! to write each table page about four times over, whichever is more). Without `--bench`
//! (`cargo test --benches`) every case runs two batches only, on a 1 MiB table unless the size
//! is set.

mod sampling;
use cowarena::{Arena, ArenaVec, Loan};
use sampling::{env_list, median, us, Scatter};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
/// Decisions a variant runs before the next one takes its turn.
const BATCH: usize = 32;
/// Hand-set private budgets, in MiB.
const HAND_SET: [usize; 4] = [1, 16, 64, 128];
/// The goal: the default budget's decision within this factor of the best hand-set one.
const GOAL: f64 = 1.25;

struct Settings {
    table_bytes: usize,
    ds: Vec<usize>,
    case_time: Duration,
    /// Unrecorded decisions per variant; `None` for the default, which depends on d.
    warm: Option<usize>,
    quick: bool,
}

fn settings() -> Settings {
    let quick = !std::env::args().any(|a| a == "--bench");
    let number = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<f64>().ok());
    Settings {
        // An unoptimized build checks every element of a vector it lends (optimized, the check
        // of a `u32` vanishes), so a quick run lends a small table.
        table_bytes: number("COWARENA_BENCH_TABLE_MIB")
            .map_or(if quick { 1 } else { 64 }, |m| m as usize)
            * MIB,
        ds: env_list("COWARENA_BENCH_DS").unwrap_or_else(|| vec![4, 16, 64]),
        case_time: Duration::from_secs_f64(if quick {
            0.0
        } else {
            number("COWARENA_BENCH_SECS").unwrap_or(3.0)
        }),
        warm: number("COWARENA_BENCH_WARM").map(|w| w as usize),
        quick,
    }
}

/// The entries each decision writes: d distinct table pages, an entry at a pseudo-random offset
/// in each. The same seed gives every variant the same sequence.
struct Picks {
    pages: Scatter,
    state: u64,
    per_page: usize,
    entries: Vec<usize>,
}

impl Picks {
    fn new(table_len: usize, page: usize) -> Self {
        let per_page = page / size_of::<u32>();
        Picks {
            pages: Scatter::new(table_len / per_page, 0x2E40),
            state: 0x9E37_79B9_7F4A_7C15,
            per_page,
            entries: Vec::new(),
        }
    }

    fn next(&mut self, d: usize) -> &[usize] {
        self.entries.clear();
        for &p in self.pages.next(d) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            self.entries
                .push(p * self.per_page + self.state as usize % self.per_page);
        }
        &self.entries
    }
}

/// Minor page faults of the process so far (the bench runs on one thread), counted around each
/// batch: the faults the budget is meant to spare (a shed page costs one when read and one when
/// written).
fn minor_faults() -> u64 {
    // SAFETY: `getrusage` writes the struct it is given, which is plain integers.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    usage.ru_minflt as u64
}

/// One arena with its table and trail, under one budget.
struct Variant {
    /// The hand-set budget in MiB, `None` for the default.
    budget_mib: Option<usize>,
    loan: Loan<Arena, (ArenaVec<u32>, ArenaVec<u32>)>,
    picks: Picks,
    /// The entries written by the current decision and their values before it.
    old: Vec<(usize, u32)>,
    /// Per decision: the whole decision and its views-and-writes part, in microseconds.
    total: Vec<f64>,
    writes: Vec<f64>,
    faults: u64,
    /// Private MiB after each recorded decision.
    private: Vec<f64>,
}

impl Variant {
    fn new(budget_mib: Option<usize>, table_bytes: usize, max_d: usize) -> Variant {
        let table_len = table_bytes / size_of::<u32>();
        // Address space only: room for the table, the trail and the allocator's own pages.
        let builder = Arena::builder(2 * table_bytes + MIB);
        let mut arena = match budget_mib {
            Some(mib) => builder.private_budget(mib * MIB),
            None => builder,
        }
        .build()
        .unwrap();
        let table = ArenaVec::<u32>::with_len_zeroed(&mut arena, table_len).unwrap();
        // Views lent together cannot grow a vector: the trail's room is reserved up front.
        let trail = ArenaVec::<u32>::with_capacity(&mut arena, max_d).unwrap();
        Variant {
            budget_mib,
            loan: Loan::new(arena, (table, trail)),
            picks: Picks::new(table_len, cowarena::page_size()),
            old: Vec::with_capacity(max_d),
            total: Vec::new(),
            writes: Vec::new(),
            faults: 0,
            private: Vec::new(),
        }
    }

    fn name(&self) -> String {
        match self.budget_mib {
            Some(mib) => format!("{mib} MiB"),
            None => "default".to_string(),
        }
    }

    /// A batch of decisions writing `d` entries each; their times are kept if `record`.
    fn batch(&mut self, d: usize, record: bool) {
        for _ in 0..BATCH {
            let entries = self.picks.next(d);
            // Faults of the decision only, not of the checks after it.
            let faults = minor_faults();
            let t0 = Instant::now();
            let s = self.loan.snapshot().unwrap();
            let t1 = Instant::now();
            {
                let (mut table, mut trail) = self.loan.views();
                self.old.clear();
                for &i in entries {
                    let old = table[i];
                    self.old.push((i, old));
                    table[i] = !old;
                    trail.push(i as u32).unwrap();
                }
            }
            let t2 = Instant::now();
            self.loan.restore(&s).unwrap();
            drop(s);
            let t3 = Instant::now();
            let faults = minor_faults() - faults;
            let (table, trail) = self.loan.handles();
            let a = self.loan.arena();
            let values = table.as_slice(a);
            for &(i, old) in &self.old {
                assert_eq!(values[i], old, "entry {i} not restored");
            }
            assert!(trail.is_empty(a), "trail not restored");
            if record {
                self.faults += faults;
                self.total.push(us(t3 - t0));
                self.writes.push(us(t2 - t1));
                let private = a.stats().private_pages * cowarena::page_size();
                self.private.push(private as f64 / MIB as f64);
            }
        }
    }
}

/// One row of the final table.
struct Row {
    d: usize,
    name: String,
    total: f64,
    writes: f64,
    faults: f64,
    /// Private MiB after a decision: the median, the least and the most.
    private: f64,
    private_min: f64,
    private_max: f64,
}

fn main() {
    let settings = settings();
    let page = cowarena::page_size();
    let table_pages = settings.table_bytes / page;
    let max_d = settings
        .ds
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .min(table_pages);
    println!(
        "zeroed table: {} MiB of u32 ({table_pages} pages of {page} bytes)",
        settings.table_bytes / MIB
    );
    let mut rows = Vec::new();
    for &d in &settings.ds {
        let d = d.min(table_pages);
        // Fresh arenas for each d, so that no budget starts from another d's working set.
        let mut variants: Vec<Variant> = std::iter::once(None)
            .chain(HAND_SET.map(Some))
            .map(|b| Variant::new(b, settings.table_bytes, max_d))
            .collect();
        // Four writes per table page on average leave about 2% of them never written.
        let warm = if settings.quick {
            BATCH
        } else {
            settings.warm.unwrap_or((4 * table_pages / d).max(4096))
        };
        let t = Instant::now();
        for _ in 0..warm.div_ceil(BATCH) {
            for v in &mut variants {
                v.batch(d, false);
            }
        }
        let warmed = t.elapsed();
        let until = Instant::now() + settings.case_time;
        loop {
            for v in &mut variants {
                v.batch(d, true);
            }
            if Instant::now() >= until {
                break;
            }
        }
        println!(
            "  d = {d:>3}: {} decisions each after {} unrecorded ({:.1} s)",
            variants[0].total.len(),
            warm.div_ceil(BATCH) * BATCH,
            warmed.as_secs_f64()
        );
        rows.extend(variants.iter().map(|v| Row {
            d,
            name: v.name(),
            total: median(&v.total),
            writes: median(&v.writes),
            faults: v.faults as f64 / v.total.len() as f64,
            private: median(&v.private),
            private_min: v.private.iter().copied().fold(f64::INFINITY, f64::min),
            private_max: v.private.iter().copied().fold(0.0, f64::max),
        }));
    }

    println!();
    println!("median us per decision (snapshot, views and writes, restore, drop)");
    println!(
        "{:>3} {:>8} | {:>9} {:>8} {:>7} | {:>20}",
        "d", "budget", "decision", "writes", "faults", "private MiB"
    );
    for r in &rows {
        println!(
            "{:>3} {:>8} | {:>9.2} {:>8.2} {:>7.1} | {:>6.1} ({:>4.1}-{:>4.1})",
            r.d, r.name, r.total, r.writes, r.faults, r.private, r.private_min, r.private_max
        );
    }
    println!("(writes: views and writes alone, copy-on-write faults included; faults: minor");
    println!(" faults per decision; private MiB: private pages after a decision, median (range))");
    println!();
    println!("default / best hand-set, goal <= {GOAL}x");
    for group in rows.chunk_by(|a, b| a.d == b.d) {
        let default = &group[0];
        let best = group[1..]
            .iter()
            .min_by(|a, b| a.total.total_cmp(&b.total))
            .expect("hand-set variants");
        let ratio = default.total / best.total;
        println!(
            "  d = {:>3}: {ratio:.2}x (best: {}, {:.1} MiB private; default {:.1} MiB) {}",
            default.d,
            best.name,
            best.private,
            default.private,
            if settings.quick {
                "(a quick run: no verdict)"
            } else if ratio <= GOAL {
                "met"
            } else {
                "missed"
            }
        );
    }
}
