//! `Array<T, N>`, the arrays of values with invalid bit patterns: as values, as fields of derived
//! structs and enums, in vectors and maps; they read back through snapshots, arenas made from
//! them and files, and an invalid element read is an `Error::InvalidValue` from the `try_`
//! methods and a panic from the others. (Branches returning and changing them: tests/fork.rs.)

mod common;
use bytemuck::{CheckedBitPattern, NoUninit, Zeroable};
use common::values::{arena, is_invalid_value, offset_in, panic_message, Op};
use common::TempDir;
use cowarena::{Arena, ArenaMap, ArenaVec, Array, Error, Pad, Ptr, Snapshot, View, ViewMut};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;

/// The struct of the crate's promise: fields that are arrays of non-`Pod` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, NoUninit, CheckedBitPattern)]
#[repr(C)]
struct Flags {
    flags: Array<bool, 8>,
    ops: Array<Op, 4>,
    ids: Array<Option<NonZeroU32>, 2>,
}

/// A data-carrying enum with a one-byte tag, an array right after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, NoUninit, CheckedBitPattern)]
#[repr(u8)]
enum Step {
    Idle(Pad<3>),
    Run(Array<Op, 3>),
    Mark(Array<bool, 3>),
}

/// A data-carrying enum with a four-byte tag and arrays of different sizes, padded alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, NoUninit, CheckedBitPattern)]
#[repr(u32)]
enum Glyphs {
    None(Pad<8>),
    One(char, Pad<4>),
    Two(Array<char, 2>),
    Mask(Array<bool, 5>, Pad<3>),
}

fn flags(i: u32) -> Flags {
    Flags {
        flags: Array(std::array::from_fn(|b| (i >> b) & 1 == 1)),
        ops: Array(std::array::from_fn(|k| {
            [Op::Add, Op::Sub, Op::Jump][(i as usize + k) % 3]
        })),
        ids: Array([NonZeroU32::new(i), NonZeroU32::new(i + 1)]),
    }
}

fn hash_of(x: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    x.hash(&mut h);
    h.finish()
}

#[test]
fn arrays_have_the_layout_of_their_array() {
    assert_eq!(size_of::<Array<bool, 8>>(), 8);
    assert_eq!(size_of::<Array<Op, 0>>(), 0);
    assert_eq!(align_of::<Array<char, 3>>(), align_of::<char>());
    assert_eq!(size_of::<Flags>(), 8 + 4 + 8);
    assert_eq!((size_of::<Step>(), size_of::<Glyphs>()), (4, 12));
    let f = flags(0b1010_0101);
    assert_eq!(
        bytemuck::bytes_of(&f)[..12],
        [1, 0, 1, 0, 0, 1, 0, 1, 1, 2, 7, 1]
    );
}

#[test]
fn arrays_behave_as_arrays() {
    let mut x: Array<bool, 4> = [true, false, false, true].into();
    assert_eq!(x.len(), 4);
    assert!(x[0] && !x[1]);
    x[1] = true;
    for b in &mut x {
        *b = !*b;
    }
    let mut set = Vec::new();
    for (i, &b) in (&x).into_iter().enumerate() {
        if b {
            set.push(i);
        }
    }
    assert_eq!(set, [2]);
    assert_eq!(
        x.into_iter().collect::<Vec<_>>(),
        [false, false, true, false]
    );
    let back: [bool; 4] = x.into();
    assert_eq!(back, x.0);
    assert_eq!(x.as_ref(), &back[..]);
    x.as_mut()[0] = true;
    assert!(x[0]);
    assert_eq!(format!("{x:?}"), "[true, false, true, false]");
    assert_eq!(hash_of(&x), hash_of(&x.0), "it hashes as its array");
    assert!(Array([Op::Add, Op::Jump]) < Array([Op::Sub, Op::Add]));
    assert_eq!(
        Array([Op::Sub; 2]).max(Array([Op::Add; 2])),
        Array([Op::Sub; 2])
    );
    // `Default` for any length, also past the 32 of std's arrays.
    let long = Array::<Option<NonZeroU32>, 40>::default();
    assert!(long.iter().all(Option::is_none));
    assert_eq!(Array::<char, 2>::zeroed(), Array(['\0'; 2]));
}

#[test]
fn arrays_alloc_get_and_free() {
    let mut a = arena();
    let b = a.alloc(Array([true, false, true])).unwrap();
    let c = a.alloc(Array(['α', 'β'])).unwrap();
    let n = a.alloc(Array([NonZeroU32::new(3).unwrap(); 4])).unwrap();
    let f = a.alloc(flags(0b1100)).unwrap();
    let s = a
        .alloc(Step::Run(Array([Op::Jump, Op::Add, Op::Sub])))
        .unwrap();
    let g = a.alloc(Glyphs::Mask(Array([true; 5]), Pad::ZERO)).unwrap();
    let nested = a.alloc(Array([Array([Op::Add, Op::Sub]); 3])).unwrap();
    let empty = a.alloc(Array::<bool, 0>([])).unwrap();
    assert_eq!(*a.get(b), Array([true, false, true]));
    assert_eq!(a.get(c)[1], 'β');
    assert_eq!(a.get(n).iter().map(|x| x.get()).sum::<u32>(), 12);
    assert_eq!(*a.try_get(f).unwrap(), flags(0b1100));
    assert_eq!(*a.get(s), Step::Run(Array([Op::Jump, Op::Add, Op::Sub])));
    assert_eq!(*a.get(g), Glyphs::Mask(Array([true; 5]), Pad::ZERO));
    assert_eq!(a.get(nested)[2][1], Op::Sub);
    assert!(a.get(empty).is_empty());

    a.get_mut(b)[1] = true;
    a.get_mut(f).ops[0] = Op::Jump;
    a.get_mut(f).ids.0 = [None; 2];
    *a.get_mut(s) = Step::Mark(Array([false, true, false]));
    *a.get_mut(g) = Glyphs::Two(Array(['x', 'y']));
    a.get_mut(nested)[0][0] = Op::Jump;
    assert_eq!(*a.get(b), Array([true; 3]));
    assert_eq!((a.get(f).ops[0], a.get(f).ids[1]), (Op::Jump, None));
    assert_eq!(*a.get(s), Step::Mark(Array([false, true, false])));
    assert_eq!(*a.get(g), Glyphs::Two(Array(['x', 'y'])));
    assert_eq!(a.get(nested)[0], Array([Op::Jump, Op::Sub]));

    a.free(f).unwrap();
    assert!(matches!(a.try_get(f), Err(Error::InvalidPtr { .. })));
    a.free(s).unwrap();
    let z = a.alloc_zeroed::<Array<bool, 9>>().unwrap();
    assert_eq!(*a.get(z), Array([false; 9]));
}

#[test]
fn an_invalid_element_is_an_error_or_a_panic() {
    let mut a = arena();
    let b = a.alloc(Array([true; 6])).unwrap();
    let f = a.alloc(flags(3)).unwrap();
    let s = a.alloc(Step::Run(Array([Op::Add; 3]))).unwrap();
    let g = a.alloc(Glyphs::Two(Array(['a', 'b']))).unwrap();
    let nested = a.alloc(Array([Array([Op::Add; 2]); 2])).unwrap();

    a.write(b.offset() + 5, &[2]).unwrap(); // the last element, not the first
    a.write(f.offset() + 8 + 2, &[3]).unwrap(); // ops[2]: no `Op` is 3
    a.write(s.offset() + 3, &[0]).unwrap(); // Run's last op
    a.write(g.offset() + 8, &0x11_0000u32.to_ne_bytes())
        .unwrap(); // past the last char
    a.write(nested.offset() + 3, &[9]).unwrap(); // [1][1]
    for (at, e) in [
        (b.offset(), a.try_get(b).map(drop).unwrap_err()),
        (f.offset(), a.try_get(f).map(drop).unwrap_err()),
        (s.offset(), a.try_get(s).map(drop).unwrap_err()),
        (g.offset(), a.try_get(g).map(drop).unwrap_err()),
        (nested.offset(), a.try_get(nested).map(drop).unwrap_err()),
        (f.offset(), a.try_get_mut(f).map(drop).unwrap_err()),
    ] {
        assert!(is_invalid_value(&e, at), "{e}");
    }
    assert!(a.try_lend((b, s)).is_err());
    assert!(a.try_lend_mut(g).is_err());
    let msg = panic_message(|| {
        a.get(b);
    });
    assert!(
        msg.contains("invalid value") && msg.contains("Array<bool, 6>"),
        "{msg}"
    );
    let msg = panic_message(|| {
        a.get_mut(f);
    });
    assert!(
        msg.contains("invalid value") && msg.contains("Flags"),
        "{msg}"
    );
    // The `Pad` after a short array is checked as well.
    let m = a.alloc(Glyphs::Mask(Array([false; 5]), Pad::ZERO)).unwrap();
    a.write(m.offset() + 4 + 5 + 1, &[1]).unwrap();
    assert!(a.try_get(m).is_err());

    // Valid bytes written again make it readable; freeing never reads it.
    a.write(b.offset() + 5, &[0]).unwrap();
    assert_eq!(*a.get(b), Array([true, true, true, true, true, false]));
    a.free(f).unwrap();
    a.free(nested).unwrap();
}

#[test]
fn vectors_of_arrays_validate_reads_and_views() {
    let mut a = arena();
    let v = ArenaVec::from_elem(&mut a, Array([false; 4]), 1000).unwrap();
    let steps = ArenaVec::<Step>::new(&mut a).unwrap();
    v.set(&mut a, 10, Array([true, false, false, true]));
    {
        let mut w = v.view_mut(&mut a);
        w[20][3] = true;
        w.push(Array([true; 4])).unwrap();
    }
    for i in 0..50u8 {
        let step = match i % 3 {
            0 => Step::Idle(Pad::ZERO),
            1 => Step::Run(Array([Op::Add, Op::Sub, Op::Jump])),
            _ => Step::Mark(Array([i % 2 == 0, true, false])),
        };
        steps.push(&mut a, step).unwrap();
    }
    let set = |x: &Array<bool, 4>| x.iter().filter(|&&b| b).count();
    assert_eq!(v.iter(&a).map(set).sum::<usize>(), 2 + 1 + 4);
    assert_eq!(v.len(&a), 1001);
    assert_eq!(
        steps.get(&a, 4),
        Some(&Step::Run(Array([Op::Add, Op::Sub, Op::Jump])))
    );
    let s = a.snapshot().unwrap();

    // Element 7's third flag becomes 5, and step 2's (a `Mark`) second flag 2.
    let at = offset_in(&a, &v.as_slice(&a)[0]);
    a.write(at + 7 * 4 + 2, &[5]).unwrap();
    let sat = offset_in(&a, &steps.as_slice(&a)[0]);
    a.write(sat + 2 * 4 + 2, &[2]).unwrap();
    assert!(is_invalid_value(
        &v.try_as_slice(&a).unwrap_err(),
        at + 7 * 4
    ));
    assert!(is_invalid_value(
        &steps.try_as_slice(&a).unwrap_err(),
        sat + 2 * 4
    ));
    assert!(v.try_get(&a, 7).is_err());
    assert_eq!(v.try_get(&a, 8).unwrap(), Some(&Array([false; 4])));
    assert!(v.try_get_mut(&mut a, 7).is_err());
    assert!(v.try_slice_mut(&mut a, 0..10).is_err());
    assert!(v.try_slice_mut(&mut a, 8..10).is_ok());
    assert!(v.try_view_mut(&mut a).is_err());
    assert!(a.try_lend((v, steps)).is_err());
    let msg = panic_message(|| {
        v.iter(&a).count();
    });
    assert!(
        msg.contains("invalid value") && msg.contains("Array"),
        "{msg}"
    );

    // A valid value written over it repairs it; the snapshot kept the valid bytes.
    v.set(&mut a, 7, Array([false; 4]));
    assert_eq!(v.iter(&a).map(set).sum::<usize>(), 7);
    steps.truncate(&mut a, 2);
    assert_eq!(steps.as_slice(&a).len(), 2);
    assert_eq!(steps.len(&s), 50);
    assert_eq!(
        steps.get(&s, 2),
        Some(&Step::Mark(Array([true, true, false])))
    );
    assert_eq!(v.as_slice(&s)[20], Array([false, false, false, true]));
}

#[test]
fn maps_with_array_keys_and_values() {
    let mut a = arena();
    let m = ArenaMap::<Array<Op, 2>, Array<bool, 3>>::new(&mut a).unwrap();
    let ops = [Op::Add, Op::Sub, Op::Jump];
    for (i, &x) in ops.iter().enumerate() {
        for (j, &y) in ops.iter().enumerate() {
            m.insert(&mut a, Array([x, y]), Array([i == j, i < j, i > j]))
                .unwrap();
        }
    }
    assert_eq!(m.len(&a), 9);
    assert_eq!(
        m.get(&a, &Array([Op::Add, Op::Jump])),
        Some(&Array([false, true, false]))
    );
    *m.entry(&mut a, Array([Op::Jump, Op::Jump]))
        .or_insert(Array([false; 3]))
        .unwrap() = Array([true; 3]);
    assert_eq!(m.get(&a, &Array([Op::Jump; 2])), Some(&Array([true; 3])));
    let s = a.snapshot().unwrap();
    assert_eq!(
        m.remove(&mut a, &Array([Op::Sub, Op::Add])),
        Some(Array([false, false, true]))
    );
    assert_eq!((m.len(&a), m.len(&s)), (8, 9));

    // A value that raw writes broke is refused; the others still read.
    let at = offset_in(&a, m.get(&a, &Array([Op::Add, Op::Add])).unwrap());
    a.write(at + 1, &[4]).unwrap();
    assert!(is_invalid_value(
        &m.try_get(&a, &Array([Op::Add, Op::Add])).unwrap_err(),
        at
    ));
    assert!(m.try_get(&a, &Array([Op::Sub, Op::Sub])).is_ok());
    assert!(m.try_iter(&a).is_err());
    assert!(m.try_view_mut(&mut a).is_err());
    a.restore(&s).unwrap();
    assert_eq!(m.iter(&a).count(), 9);
}

type Handles = (Ptr<Flags>, ArenaVec<Glyphs>, ArenaMap<Array<char, 2>, Step>);

fn build(a: &mut Arena) -> Handles {
    let p = a.alloc(flags(0b1011_0110)).unwrap();
    let v = ArenaVec::new(a).unwrap();
    let m = ArenaMap::new(a).unwrap();
    for (i, ch) in ('a'..='z').enumerate() {
        let glyphs = match i % 4 {
            0 => Glyphs::None(Pad::ZERO),
            1 => Glyphs::One(ch, Pad::ZERO),
            2 => Glyphs::Two(Array([ch, '!'])),
            _ => Glyphs::Mask(Array([i % 2 == 0; 5]), Pad::ZERO),
        };
        v.push(a, glyphs).unwrap();
        let step = Step::Run(Array([[Op::Add, Op::Sub, Op::Jump][i % 3]; 3]));
        m.insert(a, Array([ch, ch]), step).unwrap();
    }
    (p, v, m)
}

fn check(view: &impl View, (p, v, m): Handles) {
    assert_eq!(*view.get(p), flags(0b1011_0110));
    assert_eq!(v.len(view), 26);
    assert_eq!(v.get(view, 2), Some(&Glyphs::Two(Array(['c', '!']))));
    assert_eq!(
        m.get(view, &Array(['d', 'd'])),
        Some(&Step::Run(Array([Op::Add; 3])))
    );
    assert_eq!(m.iter(view).count(), 26);
}

#[test]
fn arrays_read_through_snapshots_arenas_and_files() {
    let mut a = arena();
    let h = build(&mut a);
    let s = a.snapshot().unwrap();
    check(&s, h);
    let mut fork = s.to_arena().unwrap();
    check(&fork, h);
    fork.get_mut(h.0).flags[0] = true;
    h.1.set(&mut fork, 2, Glyphs::None(Pad::ZERO));
    check(&a, h);
    assert!(fork.get(h.0).flags[0]);

    let dir = TempDir::new("arrays");
    let path = dir.join("arrays.snap");
    s.save(&path).unwrap();
    check(&Snapshot::open(&path).unwrap(), h);
    check(&Snapshot::open(&path).unwrap().to_arena().unwrap(), h);

    // A file whose bytes hold an invalid element: reading it is an error, never undefined
    // behaviour.
    a.write(h.0.offset() + 3, &[0xFF]).unwrap(); // flags[3]
    let bad = a.snapshot().unwrap();
    let bad_path = dir.join("bad.snap");
    bad.save(&bad_path).unwrap();
    let opened = Snapshot::open(&bad_path).unwrap();
    assert!(is_invalid_value(
        &opened.try_get(h.0).unwrap_err(),
        h.0.offset()
    ));
    let mut b = opened.to_arena().unwrap();
    assert!(b.try_get_mut(h.0).is_err());
    assert!(b.try_lend_mut(h).is_err());
    check(&s, h);
}
