//! Views in a solver-shaped loop, and what lending costs.
//!
//! The state of a DPLL-style search (clause literals, a value per variable, a watch slot per
//! literal, an undo trail and a 64 KiB table of activity counts, plus counters in an object) is
//! lent from an arena through a [`Loan`] as views held behind one `&mut self`; the same search
//! code, monomorphized, runs over `Vec`s, with the same random decisions, and must reach the same
//! counters. Each call makes a thousand decisions: random reads and writes over every vector,
//! pushes on the trail, and on a conflict a backtrack that pops half of it.
//!
//! Lending: `view_mut` of a 4 KiB vector and of a 1 GiB one (whose pages were never written),
//! which must cost the same.
//!
//! `cargo bench --bench solver -- --warm-up-time 1 --measurement-time 3` (the ratios print at
//! the end; `-- none` skips the criterion timings).

use bytemuck::{Pod, Zeroable};
use cowarena::{Arena, ArenaVec, Loan, Ptr, VecMut};
use criterion::{black_box, criterion_group, Criterion, Throughput};
use std::ops::{DerefMut, Index, IndexMut};

mod paired;
use paired::{paired, report};

const VARS: usize = 1 << 14;
const CLAUSES: usize = 4 * VARS;
/// 64 KiB of `u64`.
const AUX: usize = 8192;
/// Decisions per call.
const DECISIONS: usize = 1000;

/// What the search needs of its trail: a `Vec` and a [`VecMut`] alike.
trait Stack<T>: IndexMut<usize, Output = T> {
    fn push_(&mut self, value: T);
    fn pop_(&mut self) -> Option<T>;
    fn len_(&self) -> usize;
}

impl<T> Stack<T> for Vec<T> {
    #[inline(always)]
    fn push_(&mut self, value: T) {
        self.push(value);
    }
    #[inline(always)]
    fn pop_(&mut self) -> Option<T> {
        self.pop()
    }
    #[inline(always)]
    fn len_(&self) -> usize {
        self.len()
    }
}

impl<T: Pod> Stack<T> for VecMut<'_, T> {
    #[inline(always)]
    fn push_(&mut self, value: T) {
        self.push(value)
            .expect("the trail has room for every variable");
    }
    #[inline(always)]
    fn pop_(&mut self) -> Option<T> {
        self.pop()
    }
    #[inline(always)]
    fn len_(&self) -> usize {
        self.len()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Counters {
    decisions: u64,
    propagations: u64,
    conflicts: u64,
}

/// The search over any storage: the same code for the views and for the `Vec`s.
struct Solver<C, V, W, T, X, K> {
    clauses: C,
    values: V,
    watch: W,
    trail: T,
    aux: X,
    counters: K,
    rng: u64,
}

impl<C, V, W, T, X, K> Solver<C, V, W, T, X, K>
where
    C: Index<usize, Output = u32>,
    V: IndexMut<usize, Output = i8>,
    W: IndexMut<usize, Output = u32>,
    T: Stack<u32>,
    X: IndexMut<usize, Output = u64>,
    K: DerefMut<Target = Counters>,
{
    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// `DECISIONS` decisions, each propagated through a few clauses; a decision on a variable
    /// already assigned is a conflict, undone by popping half of the trail.
    #[inline(never)]
    fn run(&mut self) {
        for _ in 0..DECISIONS {
            let r = self.next();
            let var = r as usize % VARS;
            if self.values[var] != 0 {
                self.counters.conflicts += 1;
                let keep = self.trail.len_() / 2;
                while self.trail.len_() > keep {
                    let v = self.trail.pop_().expect("longer than keep");
                    self.values[v as usize] = 0;
                }
                continue;
            }
            self.counters.decisions += 1;
            let sign = (r >> 40 & 1) as usize;
            self.values[var] = if sign == 1 { -1 } else { 1 };
            self.trail.push_(var as u32);
            let lit = 2 * var + sign;
            let mut c = self.watch[lit] as usize;
            for _ in 0..4 {
                let at = c % CLAUSES * 3;
                let lits = [self.clauses[at], self.clauses[at + 1], self.clauses[at + 2]];
                let open = lits
                    .iter()
                    .filter(|&&l| self.values[l as usize >> 1] == 0)
                    .count();
                self.aux[lits[0] as usize % AUX] += open as u64;
                self.counters.propagations += 1;
                c = c.wrapping_mul(31).wrapping_add(lits[1] as usize + 7);
            }
            self.watch[lit] = c as u32;
        }
    }
}

/// The initial state, as plain vectors: random clauses and watches, nothing assigned.
fn initial() -> (Vec<u32>, Vec<u32>) {
    let mut x = 0x2545_F491_4F6C_DD1D_u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let clauses = (0..3 * CLAUSES)
        .map(|_| (next() % (2 * VARS as u64)) as u32)
        .collect();
    let watch = (0..2 * VARS)
        .map(|_| (next() % CLAUSES as u64) as u32)
        .collect();
    (clauses, watch)
}

type PlainSolver = Solver<Vec<u32>, Vec<i8>, Vec<u32>, Vec<u32>, Vec<u64>, Box<Counters>>;

fn plain_solver() -> PlainSolver {
    let (clauses, watch) = initial();
    Solver {
        clauses,
        values: vec![0; VARS],
        watch,
        trail: Vec::with_capacity(VARS),
        aux: vec![0; AUX],
        counters: Box::default(),
        rng: 7,
    }
}

/// The state's handles in the arena.
type State = (
    ArenaVec<u32>,
    ArenaVec<i8>,
    ArenaVec<u32>,
    ArenaVec<u32>,
    ArenaVec<u64>,
    Ptr<Counters>,
);

fn arena_state(a: &mut Arena) -> State {
    let (clauses, watch) = initial();
    (
        ArenaVec::from_slice(a, &clauses).unwrap(),
        ArenaVec::with_len_zeroed(a, VARS).unwrap(),
        ArenaVec::from_slice(a, &watch).unwrap(),
        ArenaVec::with_capacity(a, VARS).unwrap(),
        ArenaVec::with_len_zeroed(a, AUX).unwrap(),
        a.alloc(Counters::zeroed()).unwrap(),
    )
}

/// One call of the search over the loan's views (lent anew, as a solver does per batch of
/// decisions); the random state lives outside the arena, as the plain solver's does.
fn arena_run(loan: &mut Loan<&mut Arena, State>, rng: &mut u64) {
    let (clauses, values, watch, trail, aux, counters) = loan.views();
    let mut s = Solver {
        clauses,
        values,
        watch,
        trail,
        aux,
        counters,
        rng: *rng,
    };
    s.run();
    *rng = s.rng;
}

fn solver(c: &mut Criterion) {
    let mut g = c.benchmark_group("solver");
    g.throughput(Throughput::Elements(DECISIONS as u64));
    let mut a = Arena::with_capacity(64 << 20).unwrap();
    let state = arena_state(&mut a);
    let mut loan = a.loan(state);
    let mut rng = 7;
    g.bench_function("views of a loan", |b| {
        b.iter(|| arena_run(black_box(&mut loan), &mut rng))
    });
    let mut plain = plain_solver();
    g.bench_function("Vec", |b| b.iter(|| black_box(&mut plain).run()));
    g.finish();
}

/// A vector of `len` zeroed `u32` (its pages never written) in an arena of 2 GiB.
fn lend_vector(len: usize) -> (Arena, ArenaVec<u32>) {
    let mut a = Arena::with_capacity(1 << 31).unwrap();
    let v = ArenaVec::<u32>::with_len_zeroed(&mut a, len).unwrap();
    (a, v)
}

/// 4 KiB and 1 GiB of `u32`.
const SMALL: usize = 1 << 10;
const LARGE: usize = 1 << 28;

fn lend(c: &mut Criterion) {
    let mut g = c.benchmark_group("lend");
    let (mut a, small) = lend_vector(SMALL);
    g.bench_function("view_mut 4 KiB", |b| {
        b.iter(|| black_box(small).view_mut(&mut a).len())
    });
    let (mut a, large) = lend_vector(LARGE);
    g.bench_function("view_mut 1 GiB", |b| {
        b.iter(|| black_box(large).view_mut(&mut a).len())
    });
    g.finish();
}

/// The goals' ratios, each measured within this run.
fn print_ratios() {
    let mut a = Arena::with_capacity(64 << 20).unwrap();
    let state = arena_state(&mut a);
    let mut loan = a.loan(state);
    let mut plain = plain_solver();
    let mut rng = 7;
    // The two searches are the same: the same decisions reach the same counters.
    for _ in 0..50 {
        arena_run(&mut loan, &mut rng);
        plain.run();
    }
    assert_eq!(*loan.views().5, *plain.counters, "the searches differ");
    report(
        &format!("a solver-shaped loop of {DECISIONS} decisions over five lent vectors"),
        paired(
            || arena_run(black_box(&mut loan), &mut rng),
            || black_box(&mut plain).run(),
            100,
        ),
        ("views", "Vec"),
        1.2,
    );
    let (mut a, small) = lend_vector(SMALL);
    let (mut b, large) = lend_vector(LARGE);
    report(
        "view_mut of a 1 GiB vector against a 4 KiB one",
        paired(
            || {
                black_box(black_box(large).view_mut(&mut b).len());
            },
            || {
                black_box(black_box(small).view_mut(&mut a).len());
            },
            20_000,
        ),
        ("1 GiB", "4 KiB"),
        2.0,
    );
}

criterion_group!(benches, solver, lend);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Not in `cargo test --benches` (criterion's `--test`), nor when only listing.
    if !std::env::args().any(|a| a == "--test" || a == "--list") {
        print_ratios();
    }
}
