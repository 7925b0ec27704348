//! An explicit-state model checker for the filter lock (Peterson's algorithm for `n`
//! processes), written once over a [`Strategy`] that keeps the explored state and backtracks it:
//!
//! - [`CowArena`]: the state is an [`ArenaVec`] in an arena, lent once through a [`Loan`]; the
//!   search takes a snapshot at each node and restores it after each successor, and each step
//!   writes through the [`VecMut`] view the loan lends (checked on the first step and after each
//!   restore, so a step costs what indexing costs).
//! - [`VecClone`]: the state is a `Vec<u32>`; the search keeps a copy per node of the path and
//!   copies it back after each successor (the deep-copy baseline).
//! - [`Undo`]: the state is a `Vec<u32>` and every write logs the old value; backtracking replays
//!   the log (the hand-written undo baseline: fastest, but every write must go through the log).
//!
//! The state is a flat array of `u32` words: a 64-bit fingerprint, each process's program counter
//! and filter level, the lock's shared `level` and `victim` arrays, and a large shared buffer. A
//! process in its critical section writes its id into a stripe of slots spread over the buffer,
//! one slot per page, and checks them on its next step: if another process wrote one meanwhile,
//! mutual exclusion was violated. So every entry into the critical section writes many pages of a
//! large state, as a program under test writes its memory.
//!
//! The search is a depth-first walk of every interleaving up to a depth bound, with a visited set
//! keyed by the fingerprint (a Zobrist hash kept up to date by every write, so it costs nothing
//! per node). A state met again at a depth not smaller than before is not explored again; one met
//! at a smaller depth is, so that what lies within the bound behind it is found, but its
//! transitions are counted once.

use cowarena::{Arena, ArenaVec, Loan, Snapshot, VecMut};
use std::collections::HashMap;

/// What to check.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Processes competing for the lock.
    pub procs: usize,
    /// Words of the shared buffer (4 bytes each).
    pub buffer_words: usize,
    /// Slots each critical section writes and checks, spread evenly over the buffer.
    pub stripe: usize,
    /// Steps explored from the initial state.
    pub depth: usize,
    /// Check a broken lock: a process passes a level when no other process is at a *higher*
    /// level (`>` instead of `>=`), which lets two processes into the critical section.
    pub broken: bool,
}

/// What the search found. The counts are of the state graph within the depth bound, not of the
/// search's path through it, so every search order (and a distributed search) finds the same.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Distinct states reached.
    pub states: u64,
    /// Distinct transitions: the steps possible from each state reached below the depth bound.
    pub transitions: u64,
    /// Of those, the steps that found another process's id in the stripe.
    pub violations: u64,
    /// The first violation found: the processes that stepped, from the initial state.
    pub first_violation: Option<Vec<u8>>,
}

/// Where each variable lives in the state's words.
#[derive(Clone, Copy)]
struct Layout {
    n: usize,
}

impl Layout {
    const FINGERPRINT: usize = 0;
    fn pc(self, i: usize) -> usize {
        2 + i
    }
    /// The level process `i` is trying to pass (1 ..= n - 1).
    fn at(self, i: usize) -> usize {
        2 + self.n + i
    }
    /// The lock's `level[i]`.
    fn level(self, i: usize) -> usize {
        2 + 2 * self.n + i
    }
    /// The lock's `victim[l]`.
    fn victim(self, l: usize) -> usize {
        2 + 3 * self.n + l
    }
    fn buffer(self) -> usize {
        2 + 4 * self.n
    }
    fn words(self, config: &Config) -> usize {
        self.buffer() + config.buffer_words
    }
}

/// The state's words, as a step reads and writes them. `set` keeps the fingerprint current.
pub trait Memory {
    /// Word `i`.
    fn get(&self, i: usize) -> u32;
    /// Writes word `i` without touching the fingerprint.
    fn put(&mut self, i: usize, v: u32);

    /// Writes word `i` and updates the fingerprint.
    fn set(&mut self, i: usize, v: u32) {
        let old = self.get(i);
        if old == v {
            return;
        }
        let f = u64::from(self.get(Layout::FINGERPRINT))
            | u64::from(self.get(Layout::FINGERPRINT + 1)) << 32;
        let f = f ^ zobrist(i, old) ^ zobrist(i, v);
        self.put(Layout::FINGERPRINT, f as u32);
        self.put(Layout::FINGERPRINT + 1, (f >> 32) as u32);
        self.put(i, v);
    }
}

/// The fingerprint of a state's words: the hash of the visited set.
pub fn fingerprint(words: &[u32]) -> u64 {
    u64::from(words[Layout::FINGERPRINT]) | u64::from(words[Layout::FINGERPRINT + 1]) << 32
}

/// A random-looking 64-bit number per (word, value): the fingerprint is the XOR of those of the
/// words that are not zero.
fn zobrist(i: usize, v: u32) -> u64 {
    if v == 0 {
        return 0;
    }
    let mut x = (i as u64) << 32 | u64::from(v);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What a step of a process did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The process waits: no step, nothing written.
    Blocked,
    /// The process stepped.
    Moved,
    /// The process stepped and found its critical section's stripe overwritten.
    Violation,
}

/// One step of process `i` of the filter lock (see [`Config::broken`]).
pub fn step(m: &mut impl Memory, config: &Config, i: usize) -> Step {
    let n = config.procs;
    let lay = Layout { n };
    let slot = |j: usize| lay.buffer() + j * (config.buffer_words / config.stripe);
    let me = i as u32 + 1;
    let l = m.get(lay.at(i)) as usize;
    match m.get(lay.pc(i)) {
        // level[i] = l
        0 => {
            m.set(lay.level(i), l as u32);
            m.set(lay.pc(i), 1);
        }
        // victim[l] = i
        1 => {
            m.set(lay.victim(l), i as u32);
            m.set(lay.pc(i), 2);
        }
        // wait while (some other process is at level >= l) and victim[l] == i
        2 => {
            let contended = (0..n).any(|k| {
                let other = m.get(lay.level(k)) as usize;
                k != i && if config.broken { other > l } else { other >= l }
            });
            if contended && m.get(lay.victim(l)) == i as u32 {
                return Step::Blocked;
            }
            if l + 1 == n {
                m.set(lay.pc(i), 3);
            } else {
                m.set(lay.at(i), l as u32 + 1);
                m.set(lay.pc(i), 0);
            }
        }
        // critical section: claim the stripe
        3 => {
            for j in 0..config.stripe {
                m.set(slot(j), me);
            }
            m.set(lay.pc(i), 4);
        }
        // critical section: check the stripe
        4 => {
            let intact = (0..config.stripe).all(|j| m.get(slot(j)) == me);
            m.set(lay.pc(i), 5);
            if !intact {
                return Step::Violation;
            }
        }
        // level[i] = 0, and start over
        _ => {
            m.set(lay.level(i), 0);
            m.set(lay.at(i), 1);
            m.set(lay.pc(i), 0);
        }
    }
    Step::Moved
}

/// How a search keeps its state and goes back.
pub trait Strategy {
    /// A short name for reports.
    const NAME: &'static str;
    /// The initial state.
    fn new(config: &Config) -> Self;
    /// The current state's fingerprint.
    fn fingerprint(&mut self) -> u64;
    /// Steps process `i` in the current state.
    fn step(&mut self, config: &Config, i: usize) -> Step;
    /// Remembers the current state (a node about to be expanded).
    fn save(&mut self);
    /// Returns to the state last saved.
    fn back(&mut self);
    /// Forgets the state last saved (its node is done).
    fn forget(&mut self);
}

/// The initial words: every process at level 1, program counter 0.
pub fn initial(config: &Config) -> Vec<u32> {
    let lay = Layout { n: config.procs };
    let mut words = Plain(vec![0; lay.words(config)]);
    for i in 0..config.procs {
        words.set(lay.at(i), 1);
    }
    words.0
}

/// A `Vec<u32>` as the state's memory.
struct Plain(Vec<u32>);

impl Memory for Plain {
    fn get(&self, i: usize) -> u32 {
        self.0[i]
    }
    fn put(&mut self, i: usize, v: u32) {
        self.0[i] = v;
    }
}

impl Memory for VecMut<'_, u32> {
    fn get(&self, i: usize) -> u32 {
        self[i]
    }
    fn put(&mut self, i: usize, v: u32) {
        self[i] = v;
    }
}

/// The state in an arena, a snapshot per node: the loop a search writes with a [`Loan`] (lend the
/// state once; snapshot, step through its view, restore).
pub struct CowArena {
    state: Loan<Arena, ArenaVec<u32>>,
    saved: Vec<Snapshot>,
}

impl Strategy for CowArena {
    const NAME: &'static str = "cowarena";

    fn new(config: &Config) -> Self {
        let init = initial(config);
        // Capacity reserves address space only; the allocator's metadata and the words need a
        // few pages more than the words themselves.
        let mut arena = Arena::with_capacity(init.len() * 4 + (1 << 20)).unwrap();
        let words = ArenaVec::from_slice(&mut arena, &init).unwrap();
        CowArena {
            state: Loan::new(arena, words),
            saved: Vec::new(),
        }
    }

    fn fingerprint(&mut self) -> u64 {
        fingerprint(&self.state.views())
    }

    fn step(&mut self, config: &Config, i: usize) -> Step {
        step(&mut self.state.views(), config, i)
    }

    fn save(&mut self) {
        self.saved.push(self.state.snapshot().unwrap());
    }

    fn back(&mut self) {
        let s = self.saved.last().expect("a saved state");
        self.state.restore(s).unwrap();
    }

    fn forget(&mut self) {
        self.saved.pop();
    }
}

/// The state in a `Vec<u32>`, a copy per node.
pub struct VecClone {
    words: Plain,
    saved: Vec<Vec<u32>>,
}

impl Strategy for VecClone {
    const NAME: &'static str = "Vec clone";

    fn new(config: &Config) -> Self {
        VecClone {
            words: Plain(initial(config)),
            saved: Vec::new(),
        }
    }

    fn fingerprint(&mut self) -> u64 {
        fingerprint(&self.words.0)
    }

    fn step(&mut self, config: &Config, i: usize) -> Step {
        step(&mut self.words, config, i)
    }

    fn save(&mut self) {
        self.saved.push(self.words.0.clone());
    }

    fn back(&mut self) {
        let s = self.saved.last().expect("a saved state");
        self.words.0.copy_from_slice(s);
    }

    fn forget(&mut self) {
        self.saved.pop();
    }
}

/// The state in a `Vec<u32>` whose writes log the old values.
pub struct Undo {
    words: Vec<u32>,
    log: Vec<(u32, u32)>,
    marks: Vec<usize>,
}

/// `Undo`'s memory during a step: writes go through the log.
struct Logged<'a> {
    words: &'a mut Vec<u32>,
    log: &'a mut Vec<(u32, u32)>,
}

impl Memory for Logged<'_> {
    fn get(&self, i: usize) -> u32 {
        self.words[i]
    }
    fn put(&mut self, i: usize, v: u32) {
        self.log.push((i as u32, self.words[i]));
        self.words[i] = v;
    }
}

impl Strategy for Undo {
    const NAME: &'static str = "undo log";

    fn new(config: &Config) -> Self {
        Undo {
            words: initial(config),
            log: Vec::new(),
            marks: Vec::new(),
        }
    }

    fn fingerprint(&mut self) -> u64 {
        fingerprint(&self.words)
    }

    fn step(&mut self, config: &Config, i: usize) -> Step {
        let mut m = Logged {
            words: &mut self.words,
            log: &mut self.log,
        };
        step(&mut m, config, i)
    }

    fn save(&mut self) {
        self.marks.push(self.log.len());
    }

    fn back(&mut self) {
        let mark = *self.marks.last().expect("a saved state");
        for (i, old) in self.log.drain(mark..).rev() {
            self.words[i as usize] = old;
        }
    }

    fn forget(&mut self) {
        self.marks.pop();
    }
}

/// Replays `trace` (the processes that step, in order) from the initial state: what each step
/// did. An independent check of a reported violation.
pub fn replay(config: &Config, trace: &[u8]) -> Vec<Step> {
    let mut words = Plain(initial(config));
    trace
        .iter()
        .map(|&i| step(&mut words, config, usize::from(i)))
        .collect()
}

/// Explores every interleaving of `config` up to its depth with strategy `S`.
pub fn check<S: Strategy>(config: &Config) -> Outcome {
    assert!(config.procs >= 2 && config.stripe >= 1 && config.buffer_words >= config.stripe);
    let mut search = Search {
        config,
        strategy: S::new(config),
        visited: HashMap::new(),
        trace: Vec::new(),
        outcome: Outcome::default(),
    };
    search.visit(0);
    search.outcome
}

struct Search<'c, S> {
    config: &'c Config,
    strategy: S,
    /// Fingerprint -> the smallest depth the state was reached at.
    visited: HashMap<u64, usize>,
    trace: Vec<u8>,
    outcome: Outcome,
}

impl<S: Strategy> Search<'_, S> {
    fn visit(&mut self, depth: usize) {
        let f = self.strategy.fingerprint();
        let expanded_before = match self.visited.get(&f) {
            Some(&d) if d <= depth => return,
            Some(&d) => d < self.config.depth,
            None => {
                self.outcome.states += 1;
                false
            }
        };
        self.visited.insert(f, depth);
        if depth == self.config.depth {
            return;
        }
        self.strategy.save();
        for i in 0..self.config.procs {
            let step = self.strategy.step(self.config, i);
            if step == Step::Blocked {
                continue;
            }
            self.outcome.transitions += u64::from(!expanded_before);
            self.trace.push(i as u8);
            if step == Step::Violation {
                self.outcome.violations += u64::from(!expanded_before);
                if self.outcome.first_violation.is_none() {
                    self.outcome.first_violation = Some(self.trace.clone());
                }
            }
            self.visit(depth + 1);
            self.trace.pop();
            self.strategy.back();
        }
        self.strategy.forget();
    }
}
