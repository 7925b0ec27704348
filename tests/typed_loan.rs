//! Loans and the views they lend: views lent again across snapshots and restores against a plain
//! model, length changes within the capacity and growth, what lending marks, the errors, and the
//! read-only loans.

use bytemuck::{Pod, Zeroable};
use cowarena::{
    Arena, ArenaBytes, ArenaMap, ArenaVec, Error, InvalidPtrReason, Loan, Ptr, Snapshot, View,
    ViewMut,
};

mod common;
use common::Rng;

#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Counters {
    decisions: u64,
    conflicts: u64,
}

/// The plain state the arena's is checked against.
#[derive(Clone, Debug, PartialEq)]
struct Model {
    values: Vec<i8>,
    trail: Vec<u32>,
    aux: Vec<u64>,
    counters: Counters,
}

type State = (ArenaVec<i8>, ArenaVec<u32>, ArenaVec<u64>, Ptr<Counters>);

fn read(view: &impl View, state: State) -> Model {
    let (values, trail, aux, counters) = view.lend(state);
    Model {
        values: values.to_vec(),
        trail: trail.to_vec(),
        aux: aux.to_vec(),
        counters: *counters,
    }
}

/// A search's loop, written as a user writes it: lend the state, snapshot at decisions, write,
/// push and pop the trail, restore on conflicts, and sometimes grow the trail through the loan;
/// after every step the arena's state equals the model's, and every snapshot keeps its own.
#[test]
fn views_lent_again_across_snapshots_and_restores_match_a_plain_model() {
    for seed in 1..6 {
        let mut rng = Rng::new(seed);
        let mut a = Arena::with_capacity(64 << 20).unwrap();
        let n = 3000 + rng.below(3000);
        let state: State = (
            ArenaVec::with_len_zeroed(&mut a, n).unwrap(),
            ArenaVec::with_capacity(&mut a, 16).unwrap(),
            ArenaVec::with_len_zeroed(&mut a, 8192).unwrap(),
            a.alloc(Counters::zeroed()).unwrap(),
        );
        let mut model = Model {
            values: vec![0; n],
            trail: Vec::new(),
            aux: vec![0; 8192],
            counters: Counters::zeroed(),
        };
        let mut loan = a.loan(state);
        let mut saved: Vec<(Snapshot, Model)> = Vec::new();
        for step in 0..400 {
            match rng.below(10) {
                0..=1 => saved.push((loan.snapshot().unwrap(), model.clone())),
                2 if !saved.is_empty() => {
                    let (s, m) = saved.swap_remove(rng.below(saved.len()));
                    loan.restore(&s).unwrap();
                    model = m;
                }
                3 => {
                    // Room for the trail, through the loan: checked again before the views.
                    let more = rng.below(64);
                    state.1.reserve(&mut loan, more).unwrap();
                    model.trail.reserve(more);
                }
                _ => {
                    let (mut values, mut trail, mut aux, mut counters) = loan.views();
                    for _ in 0..rng.below(50) {
                        let v = rng.below(n);
                        if values[v] == 0 {
                            if trail.push(v as u32).is_err() {
                                assert_eq!(trail.len(), trail.capacity(), "fails only when full");
                                break;
                            }
                            model.trail.push(v as u32);
                            values[v] = 1 + (step % 100) as i8;
                            model.values[v] = 1 + (step % 100) as i8;
                            counters.decisions += 1;
                            model.counters.decisions += 1;
                        } else {
                            counters.conflicts += 1;
                            model.counters.conflicts += 1;
                            let keep = rng.below(trail.len() + 1);
                            while trail.len() > keep {
                                let u = trail.pop().unwrap();
                                assert_eq!(Some(u), model.trail.pop());
                                values[u as usize] = 0;
                                model.values[u as usize] = 0;
                            }
                        }
                        let k = rng.below(8192);
                        aux[k] = aux[k].wrapping_add(v as u64);
                        model.aux[k] = model.aux[k].wrapping_add(v as u64);
                    }
                }
            }
            assert_eq!(read(&loan, state), model, "seed {seed}, step {step}");
        }
        let a = loan.into_inner();
        assert_eq!(read(a, state), model);
        for (s, m) in &saved {
            assert_eq!(&read(s, state), m, "seed {seed}: a snapshot changed");
        }
    }
}

#[test]
fn views_change_the_length_within_the_capacity_and_write_it_through() {
    let mut a = Arena::with_capacity(1 << 20).unwrap();
    let v = ArenaVec::<u32>::with_capacity(&mut a, 4).unwrap();
    let w = ArenaVec::from_slice(&mut a, &[9u32; 3]).unwrap();
    let (mut vv, mut ww) = a.lend_mut((v, w));
    assert_eq!((vv.len(), vv.capacity(), vv.pop()), (0, 4, None));
    vv.push(1).unwrap();
    vv.extend_from_slice(&[2, 3, 4]).unwrap();
    assert_eq!(vv.as_slice(), &[1, 2, 3, 4]);
    // Lent with another vector, it cannot allocate: the push fails and changes nothing.
    let e = vv.push(5).unwrap_err();
    assert!(
        matches!(
            e,
            Error::CannotGrow {
                len: 4,
                additional: 1,
                capacity: 4
            }
        ),
        "{e}"
    );
    assert!(matches!(
        vv.extend_from_slice(&[5, 6]),
        Err(Error::CannotGrow { .. })
    ));
    assert!(vv.reserve(0).is_ok() && vv.reserve(1).is_err());
    assert_eq!(vv.swap_remove(0), 1);
    vv.swap(0, 1);
    assert_eq!(&*vv, &[2, 4, 3]);
    assert_eq!(ww.pop(), Some(9));
    ww.truncate(1);
    ww.push(8).unwrap();
    assert_eq!(ww.as_slice(), &[9, 8]);
    assert_eq!(
        (v.as_slice(&a), w.as_slice(&a)),
        (&[2, 4, 3][..], &[9, 8][..])
    );
    let mut vv = v.view_mut(&mut a);
    vv.clear();
    assert!(vv.is_empty());
    assert_eq!(v.len(&a), 0);
}

#[test]
fn a_view_lent_alone_grows() {
    let mut a = Arena::with_capacity(16 << 20).unwrap();
    let v = ArenaVec::<u64>::new(&mut a).unwrap();
    let other = ArenaVec::from_slice(&mut a, &[7u64; 100]).unwrap();
    let before = a.snapshot().unwrap();
    let mut w = v.view_mut(&mut a);
    for i in 0..100_000u64 {
        w.push(i).unwrap();
    }
    w.extend_from_slice(&[1; 1000]).unwrap();
    w.reserve(50_000).unwrap();
    assert!(w.capacity() >= 151_000);
    w[3] = 33;
    assert_eq!((w.len(), w[3], w[99_999]), (101_000, 33, 99_999));
    let (mut w,) = a.lend_mut((v,));
    assert!(w.push(0).is_ok(), "room was reserved");
    assert_eq!(v.len(&a), 101_001);
    assert_eq!(other.as_slice(&a), &[7; 100], "growth moved nothing else");
    let after = a.snapshot().unwrap();
    a.restore(&before).unwrap();
    assert!(v.as_slice(&a).is_empty());
    a.restore(&after).unwrap();
    assert_eq!(v.as_slice(&a)[..4], [0, 1, 2, 33]);
    // Zero-sized elements: the length is all there is, and it cannot wrap.
    let units = ArenaVec::<()>::new(&mut a).unwrap();
    units
        .extend_from_slice(&mut a, &[(); usize::MAX - 1])
        .unwrap();
    let mut u = units.view_mut(&mut a);
    u.push(()).unwrap();
    assert!(matches!(
        u.push(()),
        Err(Error::CapacityOverflow {
            len: usize::MAX,
            additional: 1
        })
    ));
    assert_eq!(units.len(&a), usize::MAX);
}

/// Lending costs nothing in memory: only pages written are marked, and an object lent and only
/// read is not marked at all.
#[test]
fn lending_marks_only_what_is_written() {
    let page = cowarena::page_size();
    let mut a = Arena::with_capacity(1 << 30).unwrap();
    let big = ArenaVec::<u32>::with_len_zeroed(&mut a, 64 << 20).unwrap();
    let log = ArenaVec::<u32>::with_capacity(&mut a, 10).unwrap();
    let p = a.alloc(1u64).unwrap();
    let q = a.alloc([2u64; 1024]).unwrap();
    a.snapshot().unwrap();
    let mut loan = a.loan((big, log, p, q));
    let (big_w, _, p_w, q_w) = loan.views();
    assert_eq!(big_w[12345] + *p_w as u32 + q_w[3] as u32, 3);
    assert_eq!(loan.arena().stats().dirty_pages, 0);
    let (mut big_w, _, mut p_w, _) = loan.views();
    big_w[12345] = 1;
    big_w[12346] = 1;
    *p_w += 1;
    *p_w += 1;
    assert_eq!(loan.arena().stats().dirty_pages, 2);
    let (_, mut log_w, ..) = loan.views();
    log_w.push(1).unwrap();
    log_w.push(2).unwrap();
    let dirty = loan.arena().stats().dirty_pages;
    assert!(
        (3..=4).contains(&dirty),
        "its buffer and its header: {dirty}"
    );
    let a = loan.into_inner();
    assert_eq!((big.as_slice(a)[12346], *a.get(p)), (1, 3));
    assert!(big.as_slice(a).len() * 4 / page > 60_000);
}

/// After a restore the loan checks its handles again: one may name nothing in the state
/// restored, and a vector's length and buffer may differ.
#[test]
fn a_restore_makes_the_loan_check_again() {
    let mut a = Arena::with_capacity(4 << 20).unwrap();
    let v = ArenaVec::from_slice(&mut a, &[1u32, 2]).unwrap();
    let old = a.snapshot().unwrap();
    v.extend_from_slice(&mut a, &[3; 1000]).unwrap(); // moves the buffer
    let late = ArenaVec::from_slice(&mut a, &[5u8]).unwrap();
    let mut loan = a.loan((v, late));
    let (mut vv, mut ll) = loan.views();
    vv[1000] = 4;
    ll[0] = 6;
    let now = loan.snapshot().unwrap();
    loan.restore(&old).unwrap();
    let e = loan.try_views().map(drop).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidPtr {
                reason: InvalidPtrReason::NeverAllocated | InvalidPtrReason::NotLive,
                ..
            }
        ),
        "{e}"
    );
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        loan.views();
    }));
    let msg = r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("invalid pointer"), "{msg}");
    loan.restore(&now).unwrap();
    let (vv, ll) = loan.views();
    assert_eq!((vv.len(), vv[1000], ll[0]), (1002, 4, 6));
    // Alone in a loan of its own, the old vector lends its old length.
    let mut alone = loan.into_inner().loan(v);
    alone.restore(&old).unwrap();
    assert_eq!(alone.views().as_slice(), &[1, 2]);
}

/// Anything else done to the arena through the loan (it is a `ViewMut`) makes it check again.
#[test]
fn other_uses_of_the_arena_through_the_loan_make_it_check_again() {
    let mut a = Arena::with_capacity(4 << 20).unwrap();
    let v = ArenaVec::<u64>::with_capacity(&mut a, 2).unwrap();
    let m = ArenaMap::<u32, u32>::new(&mut a).unwrap();
    let mut loan = Loan::new(a, (v, m));
    let (mut vv, mm) = loan.views();
    vv.push(1).unwrap();
    assert!(mm.is_empty());
    // Growth and inserts through the loan move the buffer and the table.
    v.extend_from_slice(&mut loan, &[2; 5000]).unwrap();
    for k in 0..100 {
        m.insert(&mut loan, k, k).unwrap();
    }
    let (mut vv, mut mm) = loan.views();
    vv[4000] = 3;
    *mm.get_mut(&50).unwrap() += 1;
    assert_eq!((vv.len(), mm.len(), mm.get(&50)), (5001, 100, Some(&51)));
    v.free(&mut loan).unwrap();
    assert!(matches!(
        loan.try_views().map(drop),
        Err(Error::InvalidPtr {
            reason: InvalidPtrReason::Freed,
            ..
        })
    ));
    let a = loan.into_inner();
    assert_eq!(m.get(&a, &50), Some(&51));
}

#[test]
fn loans_refuse_overlaps_empty_vectors_included() {
    let mut a = Arena::with_capacity(1 << 20).unwrap();
    let empty = ArenaVec::<u32>::new(&mut a).unwrap();
    let bytes = ArenaBytes::new(&mut a).unwrap();
    let p = a.alloc(1u64).unwrap();
    let overlap = |r: cowarena::Result<()>| matches!(r, Err(Error::Overlap { .. }));
    // Two views of one empty vector would both push into the same buffer.
    assert!(overlap(a.try_lend_mut((empty, empty)).map(drop)));
    assert!(overlap(a.loan((empty, empty)).try_views().map(drop)));
    assert!(overlap(a.loan((bytes, (p, bytes))).try_views().map(drop)));
    // Reading may overlap.
    let (x, y, z) = a.lend((empty, empty, bytes));
    assert!(x.is_empty() && y.is_empty() && z.is_empty());
}

#[test]
fn reading_several_handles_at_once() {
    let mut a = Arena::with_capacity(1 << 20).unwrap();
    let v = ArenaVec::from_slice(&mut a, &[1u16, 2, 3]).unwrap();
    let b = ArenaBytes::from_slice(&mut a, b"abc").unwrap();
    let m = ArenaMap::<u8, u8>::new(&mut a).unwrap();
    m.insert(&mut a, 1, 2).unwrap();
    let p = a.alloc(4u32).unwrap();
    let s = a.snapshot().unwrap();
    v.push(&mut a, 4).unwrap();
    let (vs, bs, ms, ps) = s.lend((v, b, m, p));
    assert_eq!(
        (vs, bs, ms.get(&1), *ps),
        (&[1, 2, 3][..], &b"abc"[..], Some(&2), 4)
    );
    assert_eq!(ms.iter().count(), 1);
    let (va, (pa, pb)) = a.lend((v, (p, p)));
    assert_eq!((va.len(), *pa, *pb), (4, 4, 4));
    a.free(p).unwrap();
    assert!(matches!(
        a.try_lend((v, p)).map(drop),
        Err(Error::InvalidPtr {
            reason: InvalidPtrReason::Freed,
            ..
        })
    ));
}
