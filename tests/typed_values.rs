//! Values with invalid bit patterns (`bool`, `char`, `NonZero*`, enums with and without data,
//! structs of them) in objects, vectors and maps: they read back through snapshots, arenas made
//! from them, proxies and files, and bytes changed by raw writes into an invalid pattern are an
//! `Error::InvalidValue` from the `try_` methods and a panic from the others.

mod common;
use bytemuck::{CheckedBitPattern, NoUninit};
use common::values::{arena, is_invalid_value, offset_in, panic_message, Op};
use common::TempDir;
use cowarena::{Arena, ArenaMap, ArenaVec, Error, Pad, Ptr, Snapshot, View, ViewMut};
use std::num::NonZeroU32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, NoUninit, CheckedBitPattern)]
#[repr(u32)]
enum Shape {
    Dot(Pad<8>),
    Circle(u32, Pad<4>),
    Rect(u32, u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, NoUninit, CheckedBitPattern)]
#[repr(C)]
struct Cell {
    id: Option<NonZeroU32>,
    glyph: char,
    shape: Shape,
    op: Op,
    live: bool,
    pad: Pad<2>,
}

fn cell(i: u32) -> Cell {
    Cell {
        id: NonZeroU32::new(i),
        glyph: char::from_u32(0x41 + i % 26).unwrap(),
        shape: match i % 3 {
            0 => Shape::Dot(Pad::ZERO),
            1 => Shape::Circle(i, Pad::ZERO),
            _ => Shape::Rect(i, i + 1),
        },
        op: [Op::Add, Op::Sub, Op::Jump][i as usize % 3],
        live: i % 2 == 0,
        pad: Pad::ZERO,
    }
}

#[test]
fn values_of_every_kind_alloc_get_and_free() {
    let mut a = arena();
    let b = a.alloc(true).unwrap();
    let c = a.alloc('é').unwrap();
    let n = a.alloc(NonZeroU32::new(9).unwrap()).unwrap();
    let o = a.alloc(None::<NonZeroU32>).unwrap();
    let e = a.alloc(Op::Jump).unwrap();
    let s = a.alloc(Shape::Rect(3, 4)).unwrap();
    let x = a.alloc(cell(5)).unwrap();
    assert_eq!((*a.get(b), *a.get(c), a.get(n).get()), (true, 'é', 9));
    assert_eq!(
        (*a.get(o), *a.get(e), *a.get(s)),
        (None, Op::Jump, Shape::Rect(3, 4))
    );
    assert_eq!(*a.try_get(x).unwrap(), cell(5));
    *a.get_mut(b) = false;
    *a.get_mut(s) = Shape::Circle(1, Pad::ZERO);
    a.get_mut(x).shape = Shape::Dot(Pad::ZERO);
    assert!(!*a.get(b));
    assert_eq!(*a.get(s), Shape::Circle(1, Pad::ZERO));
    assert_eq!(a.get(x).shape, Shape::Dot(Pad::ZERO));
    a.free(x).unwrap();
    assert!(matches!(a.try_get(x), Err(Error::InvalidPtr { .. })));
    a.free(e).unwrap();
    let z = a.alloc_zeroed::<bool>().unwrap();
    assert!(!*a.get(z));
}

#[test]
fn an_invalid_pattern_is_an_error_or_a_panic() {
    let mut a = arena();
    let b = a.alloc(true).unwrap();
    let e = a.alloc(Op::Add).unwrap();
    let s = a.alloc(Shape::Rect(1, 2)).unwrap();
    let x = a.alloc(cell(1)).unwrap();
    let n = a.alloc(NonZeroU32::new(1).unwrap()).unwrap();
    a.write(b.offset(), &[2]).unwrap();
    a.write(e.offset(), &[3]).unwrap();
    a.write(s.offset(), &9u32.to_ne_bytes()).unwrap();
    a.write(x.offset() + 4, &0xD800u32.to_ne_bytes()).unwrap(); // a surrogate: no char
    a.write(n.offset(), &[0; 4]).unwrap();
    assert!(is_invalid_value(&a.try_get(b).unwrap_err(), b.offset()));
    assert!(is_invalid_value(&a.try_get(e).unwrap_err(), e.offset()));
    assert!(is_invalid_value(&a.try_get(s).unwrap_err(), s.offset()));
    assert!(is_invalid_value(&a.try_get(x).unwrap_err(), x.offset()));
    assert!(is_invalid_value(&a.try_get(n).unwrap_err(), n.offset()));
    assert!(is_invalid_value(&a.try_get_mut(s).unwrap_err(), s.offset()));
    assert!(a.try_lend((b, e)).is_err());
    assert!(a.try_lend_mut(s).is_err());
    let msg = panic_message(|| {
        a.get(e);
    });
    assert!(msg.contains("invalid value") && msg.contains("Op"), "{msg}");
    // The same through a snapshot, whose `get` is the `View` trait's.
    let snap = a.snapshot().unwrap();
    assert!(is_invalid_value(&snap.try_get(s).unwrap_err(), s.offset()));
    let msg = panic_message(|| {
        snap.get(s);
    });
    assert!(
        msg.contains("invalid value") && msg.contains("Shape"),
        "{msg}"
    );
    let msg = panic_message(|| {
        snap.get(Ptr::<Op>::null());
    });
    assert!(msg.contains("invalid pointer"), "{msg}");
    let msg = panic_message(|| {
        a.get_mut(x);
    });
    assert!(
        msg.contains("invalid value") && msg.contains("Cell"),
        "{msg}"
    );
    // A non-zero `Pad` is refused too: equal values keep equal bytes.
    let p = a.alloc(Shape::Dot(Pad::ZERO)).unwrap();
    a.write(p.offset() + 4, &[1]).unwrap();
    assert!(a.try_get(p).is_err());
    // Writing a valid value again makes it readable; freeing never reads it.
    a.write(b.offset(), &[1]).unwrap();
    assert!(*a.get(b));
    a.free(s).unwrap();
}

#[test]
fn vectors_of_values_validate_reads_and_views() {
    let mut a = arena();
    let flags = ArenaVec::from_elem(&mut a, false, 5000).unwrap();
    let cells = ArenaVec::from_slice(&mut a, &(1..100).map(cell).collect::<Vec<_>>()).unwrap();
    flags.set(&mut a, 10, true);
    {
        let mut w = flags.view_mut(&mut a);
        w[20] = true;
        w.push(true).unwrap();
    }
    assert_eq!(flags.iter(&a).filter(|&&f| f).count(), 3);
    assert_eq!(cells.get(&a, 4), Some(&cell(5)));
    let s = a.snapshot().unwrap();

    // Element 7 of `flags` becomes 2 and element 3 of `cells` gets tag 9.
    let at = offset_in(&a, &flags.as_slice(&a)[0]);
    a.write(at + 7, &[2]).unwrap();
    let cat = offset_in(&a, &cells.as_slice(&a)[0]);
    let shape_at = cat + 3 * size_of::<Cell>() + 8;
    a.write(shape_at, &9u32.to_ne_bytes()).unwrap();

    assert!(is_invalid_value(
        &flags.try_as_slice(&a).unwrap_err(),
        at + 7
    ));
    assert!(is_invalid_value(
        &cells.try_as_slice(&a).unwrap_err(),
        cat + 3 * size_of::<Cell>()
    ));
    assert!(flags.try_get(&a, 7).is_err());
    assert_eq!(
        flags.try_get(&a, 8).unwrap(),
        Some(&false),
        "one element checks one element"
    );
    assert!(flags.try_get_mut(&mut a, 7).is_err());
    assert!(flags.try_slice_mut(&mut a, 0..10).is_err());
    assert!(flags.try_slice_mut(&mut a, 8..10).is_ok());
    assert!(flags.try_view_mut(&mut a).is_err());
    assert!(cells.try_view_mut(&mut a).is_err());
    assert!(a.try_lend((flags, cells)).is_err());
    let msg = panic_message(|| {
        flags.iter(&a).count();
    });
    assert!(
        msg.contains("invalid value") && msg.contains("bool"),
        "{msg}"
    );
    // A valid value written over it repairs it; popping and truncating need no read of it.
    flags.set(&mut a, 7, false);
    assert_eq!(flags.iter(&a).filter(|&&f| f).count(), 3);
    cells.truncate(&mut a, 3);
    assert_eq!(
        cells.as_slice(&a),
        &(1..4).map(cell).collect::<Vec<_>>()[..]
    );
    // The snapshot kept the valid bytes.
    assert_eq!(cells.len(&s), 99);
    assert_eq!(cells.get(&s, 3), Some(&cell(4)));
    assert!(!flags.as_slice(&s)[7]);
}

#[test]
fn maps_of_values_validate_reads_and_views() {
    let mut a = arena();
    let m = ArenaMap::<Op, Shape>::new(&mut a).unwrap();
    let by_char = ArenaMap::<char, bool>::new(&mut a).unwrap();
    m.insert(&mut a, Op::Add, Shape::Rect(1, 1)).unwrap();
    m.insert(&mut a, Op::Jump, Shape::Dot(Pad::ZERO)).unwrap();
    for (i, ch) in "snapshot".chars().enumerate() {
        by_char.insert(&mut a, ch, i % 2 == 0).unwrap();
    }
    *m.entry(&mut a, Op::Sub)
        .or_insert(Shape::Circle(2, Pad::ZERO))
        .unwrap() = Shape::Circle(3, Pad::ZERO);
    assert_eq!(m.get(&a, &Op::Sub), Some(&Shape::Circle(3, Pad::ZERO)));
    assert_eq!(by_char.len(&a), 7);
    assert_eq!(by_char.get(&a, &'p'), Some(&false));
    let s = a.snapshot().unwrap();
    {
        let mut w = m.view_mut(&mut a);
        *w.get_mut(&Op::Add).unwrap() = Shape::Rect(5, 5);
    }
    assert_eq!(m.get(&s, &Op::Add), Some(&Shape::Rect(1, 1)));
    assert_eq!(m.iter(&a).count(), 3);

    // Overwrite the value of `Op::Jump` with a tag no variant has.
    let at = offset_in(&a, m.get(&a, &Op::Jump).unwrap());
    a.write(at, &9u32.to_ne_bytes()).unwrap();
    assert!(is_invalid_value(&m.try_get(&a, &Op::Jump).unwrap_err(), at));
    assert_eq!(m.try_get(&a, &Op::Add).unwrap(), Some(&Shape::Rect(5, 5)));
    assert!(m.try_iter(&a).is_err());
    assert!(m.try_view_mut(&mut a).is_err());
    assert!(a.try_lend(m).is_err());
    assert!(m.try_get_mut(&mut a, &Op::Jump).is_err());
    assert!(m.try_entry(&mut a, Op::Jump).is_err());
    assert!(m.try_remove(&mut a, &Op::Jump).is_err());
    // Inserting over it writes a valid value without reading the old one through a reference.
    assert!(m.insert(&mut a, Op::Jump, Shape::Dot(Pad::ZERO)).is_err());
    m.get_mut(&mut a, &Op::Add).unwrap();
    a.restore(&s).unwrap();
    assert_eq!(m.iter(&a).count(), 3);
    assert_eq!(m.remove(&mut a, &Op::Jump), Some(Shape::Dot(Pad::ZERO)));
}

fn build(a: &mut Arena) -> (Ptr<Cell>, ArenaVec<Cell>, ArenaMap<char, Op>) {
    let p = a.alloc(cell(7)).unwrap();
    let v = ArenaVec::from_slice(a, &(1..50).map(cell).collect::<Vec<_>>()).unwrap();
    let m = ArenaMap::new(a).unwrap();
    for (i, ch) in ('a'..='z').enumerate() {
        m.insert(a, ch, [Op::Add, Op::Sub, Op::Jump][i % 3])
            .unwrap();
    }
    (p, v, m)
}

fn check(view: &impl View, (p, v, m): (Ptr<Cell>, ArenaVec<Cell>, ArenaMap<char, Op>)) {
    assert_eq!(*view.get(p), cell(7));
    assert_eq!(v.as_slice(view), &(1..50).map(cell).collect::<Vec<_>>()[..]);
    assert_eq!(m.get(view, &'d'), Some(&Op::Add));
    assert_eq!(m.iter(view).count(), 26);
}

#[test]
fn values_read_through_snapshots_arenas_proxies_and_files() {
    let mut a = arena();
    let h = build(&mut a);
    let s = a.snapshot().unwrap();
    check(&s, h);
    let mut fork = s.to_arena().unwrap();
    check(&fork, h);
    fork.get_mut(h.0).live = true;
    h.1.set(&mut fork, 0, cell(9));
    check(&a, h);

    let proxy = a.proxy().unwrap();
    check(&*proxy.with(&a).unwrap(), h);
    drop(proxy);

    let dir = TempDir::new("values");
    let path = dir.join("values.snap");
    s.save(&path).unwrap();
    check(&Snapshot::open(&path).unwrap(), h);
    check(&Snapshot::open(&path).unwrap().to_arena().unwrap(), h);
    let image = dir.join("values.img");
    std::fs::write(&image, s.as_bytes()).unwrap();
    check(&Arena::from_file(&image).unwrap(), h);

    // A file whose bytes hold an invalid value: reading it is an error, never undefined
    // behaviour.
    a.write(h.0.offset() + 8, &5u32.to_ne_bytes()).unwrap();
    let bad = a.snapshot().unwrap();
    let bad_path = dir.join("bad.snap");
    bad.save(&bad_path).unwrap();
    let opened = Snapshot::open(&bad_path).unwrap();
    assert!(is_invalid_value(
        &opened.try_get(h.0).unwrap_err(),
        h.0.offset()
    ));
    std::fs::write(&image, bad.as_bytes()).unwrap();
    let mut b = Arena::from_file(&image).unwrap();
    assert!(b.try_get_mut(h.0).is_err());
    assert!(b.try_lend_mut(h).is_err());
}

#[test]
fn a_loan_checks_values_again_after_a_restore() {
    let mut a = arena();
    let flags = ArenaVec::from_elem(&mut a, true, 100).unwrap();
    let at = offset_in(&a, &flags.as_slice(&a)[0]);
    a.write(at + 50, &[7]).unwrap();
    let bad = a.snapshot().unwrap();
    flags.set(&mut a, 50, false);
    let mut loan = a.loan(flags);
    loan.views()[3] = false;
    let good = loan.snapshot().unwrap();
    loan.restore(&bad).unwrap();
    assert!(is_invalid_value(&loan.try_views().unwrap_err(), at + 50));
    loan.restore(&good).unwrap();
    assert_eq!(loan.views().iter().filter(|&&f| !f).count(), 2);
}

#[test]
fn pod_types_work_as_before() {
    let mut a = arena();
    let p = a.alloc([1u64, 2, 3]).unwrap();
    let v = ArenaVec::<u32>::with_len_zeroed(&mut a, 10).unwrap();
    let m = ArenaMap::<u64, [u8; 3]>::new(&mut a).unwrap();
    m.insert(&mut a, 1, *b"one").unwrap();
    a.write(p.offset(), &[0xFF; 8]).unwrap();
    let at = offset_in(&a, &v.as_slice(&a)[0]);
    a.write(at, &[0xFF; 4]).unwrap();
    assert_eq!(a.get(p)[0], u64::MAX);
    assert_eq!(v.as_slice(&a)[0], u32::MAX);
    assert_eq!(m.get(&a, &1), Some(b"one"));
    *ViewMut::get_mut(&mut a, p) = [0; 3];
    assert_eq!(*a.get(p), [0; 3]);
}
