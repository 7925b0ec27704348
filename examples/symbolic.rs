//! A small symbolic executor for a toy register machine, with its state in a cowarena arena.
//!
//! Inputs are symbolic, each ranging over a small domain; registers hold expression trees
//! (`Expr` values in the arena, hash-consed through an `ArenaMap`); the path condition is an
//! `ArenaVec` of them; memory is arena bytes. At every branch on a symbolic value the state forks:
//! snapshot, explore one side, restore, explore the other. Feasibility is decided by brute force
//! over the inputs' domains.
//!
//! The same exploration runs with the state deep-cloned at each fork and with `imbl` persistent
//! structures; the three must find the same paths. Prints paths/s and memory for each.
//!
//! `cargo run --release --example symbolic [-- --small]`

use bytemuck::{CheckedBitPattern, NoUninit};
use cowarena::{Arena, ArenaBytes, ArenaMap, ArenaVec, Pad, Ptr, Snapshot};
use std::rc::Rc;
use std::time::Instant;

/// One instruction of the machine: eight registers, a byte memory, and the inputs.
#[derive(Clone, Copy, Debug)]
enum Insn {
    /// `r = input i`.
    Input(usize, u32),
    /// `r = c`.
    Const(usize, u64),
    /// `r = a + b`.
    Add(usize, usize, usize),
    /// `r = a < b`.
    Lt(usize, usize, usize),
    /// Jump to the target when `r` is non-zero.
    Br(usize, usize),
    /// `mem[(base + 4096 * r) % len] += 1` for a concrete `r` (a symbolic one writes at `base`).
    Touch(usize, usize),
    /// The path ends.
    Halt,
}

/// A program, its inputs' count and domain, and the memory it needs.
struct Program {
    name: &'static str,
    code: Vec<Insn>,
    inputs: u32,
    domain: u64,
    memory: usize,
}

/// `n` independent branches `x_i < 1`, each touching memory: 2^n paths.
fn independent(n: u32, memory: usize) -> Program {
    use Insn::*;
    let mut code = vec![Const(1, 1)];
    for i in 0..n {
        let at = code.len();
        code.extend([
            Input(0, i),
            Lt(2, 0, 1),
            Br(2, at + 5),
            Touch(i as usize * 8, 0),
        ]);
        code.push(Touch(i as usize * 8 + 1, 0));
    }
    code.push(Halt);
    Program {
        name: "independent",
        code,
        inputs: n,
        domain: 2,
        memory,
    }
}

/// Branches on `x_i + x_(i+1) < 3` around a ring of `n` inputs: neighbouring decisions
/// constrain each other, and some paths are infeasible.
fn pairs(n: u32) -> Program {
    use Insn::*;
    let mut code = vec![Const(1, 3)];
    for i in 0..n {
        let at = code.len();
        code.extend([
            Input(3, i),
            Input(4, (i + 1) % n),
            Add(5, 3, 4),
            Lt(2, 5, 1),
            Br(2, at + 6),
            Touch(16 + i as usize, 5),
        ]);
    }
    code.push(Halt);
    Program {
        name: "pairs",
        code,
        inputs: n,
        domain: 3,
        memory: 1 << 16,
    }
}

/// The operations an exploration needs from a state, whatever holds it.
trait Machine {
    type Val: Clone;
    type Saved;
    fn konst(&mut self, c: u64) -> Self::Val;
    fn sym(&mut self, i: u32) -> Self::Val;
    fn add(&mut self, a: &Self::Val, b: &Self::Val) -> Self::Val;
    fn lt(&mut self, a: &Self::Val, b: &Self::Val) -> Self::Val;
    fn concrete(&self, v: &Self::Val) -> Option<u64>;
    fn reg(&self, r: usize) -> Self::Val;
    fn set_reg(&mut self, r: usize, v: Self::Val);
    /// Adds `v != 0` (or `v == 0`) to the path condition.
    fn assume(&mut self, v: &Self::Val, taken: bool);
    /// Whether some input values satisfy the path condition.
    fn feasible(&self, inputs: u32, domain: u64) -> bool;
    fn touch(&mut self, at: usize);
    fn mem_sum(&self) -> u64;
    fn save(&mut self) -> Self::Saved;
    fn restore(&mut self, saved: Self::Saved);
}

/// Whether some assignment of `inputs` values in `0..domain` makes `holds` true.
fn any_assignment(inputs: u32, domain: u64, mut holds: impl FnMut(&[u64]) -> bool) -> bool {
    let mut env = vec![0u64; inputs as usize];
    loop {
        if holds(&env) {
            return true;
        }
        let mut i = 0;
        loop {
            if i == env.len() {
                return false;
            }
            env[i] += 1;
            if env[i] < domain {
                break;
            }
            env[i] = 0;
            i += 1;
        }
    }
}

/// Explores every feasible path from instruction `ip`; records each path's branch decisions
/// and the sum of its memory.
fn explore<M: Machine>(
    m: &mut M,
    p: &Program,
    mut ip: usize,
    trail: &mut Vec<bool>,
    out: &mut Vec<(Vec<bool>, u64)>,
) {
    loop {
        match p.code[ip] {
            Insn::Input(r, i) => {
                let v = m.sym(i);
                m.set_reg(r, v);
            }
            Insn::Const(r, c) => {
                let v = m.konst(c);
                m.set_reg(r, v);
            }
            Insn::Add(r, a, b) => {
                let v = m.add(&m.reg(a), &m.reg(b));
                m.set_reg(r, v);
            }
            Insn::Lt(r, a, b) => {
                let v = m.lt(&m.reg(a), &m.reg(b));
                m.set_reg(r, v);
            }
            Insn::Br(r, target) => {
                let v = m.reg(r);
                if let Some(c) = m.concrete(&v) {
                    ip = if c != 0 { target } else { ip + 1 };
                    continue;
                }
                let saved = m.save();
                m.assume(&v, true);
                if m.feasible(p.inputs, p.domain) {
                    trail.push(true);
                    explore(m, p, target, trail, out);
                    trail.pop();
                }
                m.restore(saved);
                m.assume(&v, false);
                if !m.feasible(p.inputs, p.domain) {
                    return;
                }
                trail.push(false);
                explore(m, p, ip + 1, trail, out);
                trail.pop();
                return;
            }
            Insn::Touch(base, r) => {
                let at = match m.concrete(&m.reg(r)) {
                    Some(c) => base.wrapping_add(4096 * c as usize),
                    None => base,
                };
                m.touch(at % p.memory);
            }
            Insn::Halt => {
                out.push((trail.clone(), m.mem_sum()));
                return;
            }
        }
        ip += 1;
    }
}

// ---- The arena machine ----

#[derive(Clone, Copy, Debug, PartialEq, Eq, NoUninit, CheckedBitPattern)]
#[repr(u64)]
enum Expr {
    Const(u64, Pad<24>),
    Sym(u32, Pad<28>),
    Add(Ptr<Expr>, Ptr<Expr>),
    Lt(Ptr<Expr>, Ptr<Expr>),
    Not(Ptr<Expr>, Pad<16>),
}

struct ArenaMachine {
    a: Arena,
    nodes: ArenaMap<Expr, Ptr<Expr>>,
    regs: ArenaVec<Ptr<Expr>>,
    pc: ArenaVec<Ptr<Expr>>,
    mem: ArenaBytes,
    peak_frozen: usize,
}

impl ArenaMachine {
    fn new(memory: usize) -> Self {
        let mut a = Arena::with_capacity(memory * 2 + (64 << 20)).unwrap();
        let nodes = ArenaMap::new(&mut a).unwrap();
        let regs = ArenaVec::from_elem(&mut a, Ptr::null(), 8).unwrap();
        let pc = ArenaVec::new(&mut a).unwrap();
        let mem = ArenaBytes::new(&mut a).unwrap();
        mem.as_vec().extend_zeroed(&mut a, memory).unwrap();
        ArenaMachine {
            a,
            nodes,
            regs,
            pc,
            mem,
            peak_frozen: 0,
        }
    }

    fn node(&mut self, e: Expr) -> Ptr<Expr> {
        if let Some(&p) = self.nodes.get(&self.a, &e) {
            return p;
        }
        let p = self.a.alloc(e).unwrap();
        self.nodes.insert(&mut self.a, e, p).unwrap();
        p
    }

    fn eval(&self, e: Ptr<Expr>, env: &[u64]) -> u64 {
        match *self.a.get(e) {
            Expr::Const(c, _) => c,
            Expr::Sym(i, _) => env[i as usize],
            Expr::Add(l, r) => self.eval(l, env).wrapping_add(self.eval(r, env)),
            Expr::Lt(l, r) => u64::from(self.eval(l, env) < self.eval(r, env)),
            Expr::Not(x, _) => u64::from(self.eval(x, env) == 0),
        }
    }
}

impl Machine for ArenaMachine {
    type Val = Ptr<Expr>;
    type Saved = Snapshot;
    fn konst(&mut self, c: u64) -> Ptr<Expr> {
        self.node(Expr::Const(c, Pad::ZERO))
    }
    fn sym(&mut self, i: u32) -> Ptr<Expr> {
        self.node(Expr::Sym(i, Pad::ZERO))
    }
    fn add(&mut self, a: &Ptr<Expr>, b: &Ptr<Expr>) -> Ptr<Expr> {
        match (self.concrete(a), self.concrete(b)) {
            (Some(x), Some(y)) => self.konst(x.wrapping_add(y)),
            _ => self.node(Expr::Add(*a, *b)),
        }
    }
    fn lt(&mut self, a: &Ptr<Expr>, b: &Ptr<Expr>) -> Ptr<Expr> {
        match (self.concrete(a), self.concrete(b)) {
            (Some(x), Some(y)) => self.konst(u64::from(x < y)),
            _ => self.node(Expr::Lt(*a, *b)),
        }
    }
    fn concrete(&self, v: &Ptr<Expr>) -> Option<u64> {
        match *self.a.get(*v) {
            Expr::Const(c, _) => Some(c),
            _ => None,
        }
    }
    fn reg(&self, r: usize) -> Ptr<Expr> {
        self.regs.as_slice(&self.a)[r]
    }
    fn set_reg(&mut self, r: usize, v: Ptr<Expr>) {
        self.regs.set(&mut self.a, r, v);
    }
    fn assume(&mut self, v: &Ptr<Expr>, taken: bool) {
        let c = if taken {
            *v
        } else {
            self.node(Expr::Not(*v, Pad::ZERO))
        };
        self.pc.push(&mut self.a, c).unwrap();
    }
    fn feasible(&self, inputs: u32, domain: u64) -> bool {
        let pc = self.pc.as_slice(&self.a);
        any_assignment(inputs, domain, |env| {
            pc.iter().all(|&c| self.eval(c, env) != 0)
        })
    }
    fn touch(&mut self, at: usize) {
        self.mem.as_vec().slice_mut(&mut self.a, at..at + 1)[0] += 1;
    }
    fn mem_sum(&self) -> u64 {
        self.mem
            .as_slice(&self.a)
            .iter()
            .map(|&b| u64::from(b))
            .sum()
    }
    fn save(&mut self) -> Snapshot {
        let s = self.a.snapshot().unwrap();
        self.peak_frozen = self.peak_frozen.max(self.a.stats().store.held_bytes);
        s
    }
    fn restore(&mut self, s: Snapshot) {
        self.a.restore(&s).unwrap();
    }
}

// ---- The deep-cloned and the imbl machines share an expression tree of `Rc`s ----

#[derive(Debug, PartialEq)]
enum Tree {
    Const(u64),
    Sym(u32),
    Add(Rc<Tree>, Rc<Tree>),
    Lt(Rc<Tree>, Rc<Tree>),
    Not(Rc<Tree>),
}

fn eval_tree(t: &Tree, env: &[u64]) -> u64 {
    match t {
        Tree::Const(c) => *c,
        Tree::Sym(i) => env[*i as usize],
        Tree::Add(l, r) => eval_tree(l, env).wrapping_add(eval_tree(r, env)),
        Tree::Lt(l, r) => u64::from(eval_tree(l, env) < eval_tree(r, env)),
        Tree::Not(x) => u64::from(eval_tree(x, env) == 0),
    }
}

fn concrete_tree(t: &Tree) -> Option<u64> {
    match t {
        Tree::Const(c) => Some(*c),
        _ => None,
    }
}

fn add_tree(a: &Rc<Tree>, b: &Rc<Tree>) -> Rc<Tree> {
    match (concrete_tree(a), concrete_tree(b)) {
        (Some(x), Some(y)) => Rc::new(Tree::Const(x.wrapping_add(y))),
        _ => Rc::new(Tree::Add(a.clone(), b.clone())),
    }
}

fn lt_tree(a: &Rc<Tree>, b: &Rc<Tree>) -> Rc<Tree> {
    match (concrete_tree(a), concrete_tree(b)) {
        (Some(x), Some(y)) => Rc::new(Tree::Const(u64::from(x < y))),
        _ => Rc::new(Tree::Lt(a.clone(), b.clone())),
    }
}

/// A state held in ordinary structures, deep-cloned at each fork.
#[derive(Clone)]
struct CloneState {
    regs: Vec<Rc<Tree>>,
    pc: Vec<Rc<Tree>>,
    mem: Vec<u8>,
}

/// The expression half of a [`Machine`] whose values are `Rc<Tree>` and whose state `s` has
/// `regs`: the same for the deep-clone and the `imbl` explorers.
macro_rules! rc_tree_values {
    () => {
        fn konst(&mut self, c: u64) -> Rc<Tree> {
            Rc::new(Tree::Const(c))
        }
        fn sym(&mut self, i: u32) -> Rc<Tree> {
            Rc::new(Tree::Sym(i))
        }
        fn add(&mut self, a: &Rc<Tree>, b: &Rc<Tree>) -> Rc<Tree> {
            add_tree(a, b)
        }
        fn lt(&mut self, a: &Rc<Tree>, b: &Rc<Tree>) -> Rc<Tree> {
            lt_tree(a, b)
        }
        fn concrete(&self, v: &Rc<Tree>) -> Option<u64> {
            concrete_tree(v)
        }
        fn reg(&self, r: usize) -> Rc<Tree> {
            self.s.regs[r].clone()
        }
    };
}

struct CloneMachine {
    s: CloneState,
    live_saved: usize,
    peak_saved: usize,
}

impl Machine for CloneMachine {
    type Val = Rc<Tree>;
    type Saved = CloneState;
    rc_tree_values!();
    fn set_reg(&mut self, r: usize, v: Rc<Tree>) {
        self.s.regs[r] = v;
    }
    fn assume(&mut self, v: &Rc<Tree>, taken: bool) {
        let c = if taken {
            v.clone()
        } else {
            Rc::new(Tree::Not(v.clone()))
        };
        self.s.pc.push(c);
    }
    fn feasible(&self, inputs: u32, domain: u64) -> bool {
        any_assignment(inputs, domain, |env| {
            self.s.pc.iter().all(|c| eval_tree(c, env) != 0)
        })
    }
    fn touch(&mut self, at: usize) {
        self.s.mem[at] += 1;
    }
    fn mem_sum(&self) -> u64 {
        self.s.mem.iter().map(|&b| u64::from(b)).sum()
    }
    fn save(&mut self) -> CloneState {
        self.live_saved += self.s.mem.len() + 8 * (self.s.pc.len() + self.s.regs.len());
        self.peak_saved = self.peak_saved.max(self.live_saved);
        self.s.clone()
    }
    fn restore(&mut self, saved: CloneState) {
        self.live_saved -= saved.mem.len() + 8 * (saved.pc.len() + saved.regs.len());
        self.s = saved;
    }
}

/// A state in `imbl` persistent structures: a fork is an O(1) clone sharing their chunks.
#[derive(Clone)]
struct ImblState {
    regs: imbl::Vector<Rc<Tree>>,
    pc: imbl::Vector<Rc<Tree>>,
    mem: imbl::Vector<u8>,
}

struct ImblMachine {
    s: ImblState,
}

impl Machine for ImblMachine {
    type Val = Rc<Tree>;
    type Saved = ImblState;
    rc_tree_values!();
    fn set_reg(&mut self, r: usize, v: Rc<Tree>) {
        self.s.regs.set(r, v);
    }
    fn assume(&mut self, v: &Rc<Tree>, taken: bool) {
        let c = if taken {
            v.clone()
        } else {
            Rc::new(Tree::Not(v.clone()))
        };
        self.s.pc.push_back(c);
    }
    fn feasible(&self, inputs: u32, domain: u64) -> bool {
        any_assignment(inputs, domain, |env| {
            self.s.pc.iter().all(|c| eval_tree(c, env) != 0)
        })
    }
    fn touch(&mut self, at: usize) {
        if let Some(b) = self.s.mem.get_mut(at) {
            *b += 1;
        }
    }
    fn mem_sum(&self) -> u64 {
        self.s.mem.iter().map(|&b| u64::from(b)).sum()
    }
    fn save(&mut self) -> ImblState {
        self.s.clone()
    }
    fn restore(&mut self, saved: ImblState) {
        self.s = saved;
    }
}

/// Peak resident memory since the last reset, in bytes (Linux; 0 elsewhere).
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// One exploration: its paths (sorted) and a row of the table.
fn run<M: Machine>(
    name: &str,
    p: &Program,
    m: &mut M,
    extra: impl Fn(&M) -> usize,
) -> Vec<(Vec<bool>, u64)> {
    reset_peak_rss();
    let before = peak_rss();
    let t = Instant::now();
    let mut paths = Vec::new();
    explore(m, p, 0, &mut Vec::new(), &mut paths);
    let secs = t.elapsed().as_secs_f64();
    let rss = peak_rss().saturating_sub(before);
    println!(
        "| {:<12} | {:<8} | {:>6} | {:>10.0} | {:>9.1} | {:>12.1} |",
        p.name,
        name,
        paths.len(),
        paths.len() as f64 / secs,
        rss as f64 / (1 << 20) as f64,
        extra(m) as f64 / (1 << 20) as f64,
    );
    paths.sort();
    paths
}

/// Explores `p` with the three machines; panics unless they find the same paths. Returns the
/// number of paths.
fn compare(p: &Program) -> usize {
    let mut arena = ArenaMachine::new(p.memory);
    let a = run("arena", p, &mut arena, |m| m.peak_frozen);
    let zero = Rc::new(Tree::Const(0));
    let mut clone = CloneMachine {
        s: CloneState {
            regs: vec![zero.clone(); 8],
            pc: Vec::new(),
            mem: vec![0; p.memory],
        },
        live_saved: 0,
        peak_saved: 0,
    };
    let c = run("clone", p, &mut clone, |m| m.peak_saved);
    let mut imbl_m = ImblMachine {
        s: ImblState {
            regs: std::iter::repeat_n(zero, 8).collect(),
            pc: imbl::Vector::new(),
            mem: std::iter::repeat_n(0u8, p.memory).collect(),
        },
    };
    let i = run("imbl", p, &mut imbl_m, |_| 0);
    assert_eq!(
        a, c,
        "{}: the arena and the deep clones found other paths",
        p.name
    );
    assert_eq!(a, i, "{}: the arena and imbl found other paths", p.name);
    a.len()
}

/// Explores the programs (small ones for a quick check) with the three machines, printing the
/// table; returns each program's number of paths.
pub fn explore_all(small: bool) -> Vec<usize> {
    let programs = if small {
        vec![independent(5, 1 << 16), pairs(5), independent(4, 4 << 20)]
    } else {
        vec![independent(10, 1 << 16), pairs(8), independent(8, 64 << 20)]
    };
    println!("| program | state | paths | paths/s | peak RSS MiB | saved/frozen MiB |");
    println!("|---|---|---:|---:|---:|---:|");
    programs.iter().map(compare).collect()
}

fn main() {
    let small = std::env::args().any(|a| a == "--small");
    explore_all(small);
}
