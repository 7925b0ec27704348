//! Recursive values: an expression type whose nodes point to each other with `Ptr`s, hash-consed
//! through an `ArenaMap` (one node per distinct expression, shared between states), evaluated
//! through snapshots, restores, arenas made from snapshots, and files.

use bytemuck::{CheckedBitPattern, NoUninit};
use cowarena::{Arena, ArenaMap, Pad, Ptr, Snapshot, View};

#[derive(Clone, Copy, Debug, PartialEq, Eq, NoUninit, CheckedBitPattern)]
#[repr(u64)]
enum Expr {
    Const(u64, Pad<24>),
    Sym(u32, Pad<28>),
    Add(Ptr<Expr>, Ptr<Expr>),
    Lt(Ptr<Expr>, Ptr<Expr>),
    Not(Ptr<Expr>, Pad<16>),
}

/// The hash-consing table, kept as the arena's root.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Exprs {
    nodes: ArenaMap<Expr, Ptr<Expr>>,
}

/// The one node of `e`.
fn node(a: &mut Arena, exprs: Exprs, e: Expr) -> Ptr<Expr> {
    if let Some(&p) = exprs.nodes.get(a, &e) {
        return p;
    }
    let p = a.alloc(e).unwrap();
    exprs.nodes.insert(a, e, p).unwrap();
    p
}

fn eval(view: &impl View, e: Ptr<Expr>, env: &[u64]) -> u64 {
    match *view.get(e) {
        Expr::Const(c, _) => c,
        Expr::Sym(s, _) => env[s as usize],
        Expr::Add(l, r) => eval(view, l, env).wrapping_add(eval(view, r, env)),
        Expr::Lt(l, r) => u64::from(eval(view, l, env) < eval(view, r, env)),
        Expr::Not(x, _) => u64::from(eval(view, x, env) == 0),
    }
}

/// `x0 + x1 + ... + x(n-1) < bound`, built left to right.
fn sum_below(a: &mut Arena, exprs: Exprs, n: u32, bound: u64) -> Ptr<Expr> {
    let mut acc = node(a, exprs, Expr::Const(0, Pad::ZERO));
    for i in 0..n {
        let x = node(a, exprs, Expr::Sym(i, Pad::ZERO));
        acc = node(a, exprs, Expr::Add(acc, x));
    }
    let b = node(a, exprs, Expr::Const(bound, Pad::ZERO));
    node(a, exprs, Expr::Lt(acc, b))
}

#[test]
fn expressions_are_shared_and_read_through_snapshots_and_files() {
    let mut a = Arena::with_capacity(16 << 20).unwrap();
    let exprs = Exprs {
        nodes: ArenaMap::new(&mut a).unwrap(),
    };
    let root = a.alloc(exprs).unwrap();
    a.set_root(root);

    let c5 = sum_below(&mut a, exprs, 5, 10);
    let nodes5 = exprs.nodes.len(&a);
    assert_eq!(
        nodes5,
        1 + 5 + 5 + 2,
        "0, x0..x4, five sums, 10, the comparison"
    );
    let base = a.snapshot().unwrap();

    // A second state shares the prefix `0 + x0 + x1 + x2 + x3 + x4` with the first.
    let c8 = sum_below(&mut a, exprs, 8, 10);
    let not8 = node(&mut a, exprs, Expr::Not(c8, Pad::ZERO));
    assert_eq!(exprs.nodes.len(&a), nodes5 + 3 + 3 + 1 + 1);
    assert_eq!(
        sum_below(&mut a, exprs, 5, 10),
        c5,
        "hash-consed: the same node"
    );
    let Expr::Lt(sum8, _) = *a.get(c8) else {
        panic!()
    };
    let mut p = sum8;
    for _ in 0..3 {
        let Expr::Add(l, _) = *a.get(p) else { panic!() };
        p = l;
    }
    let Expr::Lt(sum5, _) = *a.get(c5) else {
        panic!()
    };
    assert_eq!(p, sum5, "the longer sum starts with the shorter one's node");

    let env = [1, 2, 3, 0, 1, 5, 0, 0];
    assert_eq!(
        (eval(&a, c5, &env), eval(&a, c8, &env), eval(&a, not8, &env)),
        (1, 0, 1)
    );
    let s = a.snapshot().unwrap();
    assert_eq!(eval(&s, not8, &env), 1);
    assert!(base.try_get(c8).is_err(), "made after the base snapshot");

    // An arena made from the snapshot, and one read back from a file, hold the same trees.
    let dir = std::env::temp_dir().join(format!("cowarena-expr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("exprs.snap");
    s.save(&path).unwrap();
    let opened = Snapshot::open(&path).unwrap();
    let mut fork = opened.to_arena().unwrap();
    let exprs2 = *fork.get(fork.root::<Exprs>().unwrap());
    assert_eq!(node(&mut fork, exprs2, Expr::Not(c8, Pad::ZERO)), not8);
    let extra = node(&mut fork, exprs2, Expr::Add(c5, c8));
    assert_eq!(eval(&fork, extra, &env), 1);
    assert_eq!(eval(&opened, not8, &[0; 8]), 0);
    std::fs::remove_dir_all(&dir).unwrap();

    // Restoring the base drops the second state's nodes, and the table with them.
    a.restore(&base).unwrap();
    assert_eq!(exprs.nodes.len(&a), nodes5);
    assert!(a.try_get(not8).is_err());
    assert_eq!(eval(&a, c5, &env), 1);
    assert_eq!(
        exprs
            .nodes
            .iter(&a)
            .filter(|(e, _)| matches!(e, Expr::Sym(..)))
            .count(),
        5
    );
}
