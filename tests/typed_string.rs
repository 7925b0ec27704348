//! `ArenaString`: text built and read through snapshots, as a map key hashed and compared by its
//! text, and bytes made invalid UTF-8 by raw writes reported as `Error::InvalidValue`; a map
//! keyed by text lent mutably with other handles in a loan, against a plain model, and what
//! lending it checks and refuses.

use cowarena::{
    Arena, ArenaMap, ArenaString, ArenaVec, Error, InvalidPtrReason, Ptr, Snapshot, View, ViewMut,
};
use std::collections::HashMap;

mod common;
use common::values::{arena, panic_message};
use common::Rng;

/// The offset in `a` of the first byte of `text`.
fn offset_of_text(a: &Arena, text: ArenaString) -> usize {
    text.as_vec().as_slice(a).as_ptr() as usize - a.as_bytes().as_ptr() as usize
}

#[test]
fn text_is_built_and_read_through_snapshots() {
    let mut a = arena();
    let s = ArenaString::from_str(&mut a, "héllo").unwrap();
    let empty = ArenaString::new(&mut a).unwrap();
    assert!(empty.is_empty(&a));
    let before = a.snapshot().unwrap();
    s.push_str(&mut a, ", wörld").unwrap();
    for i in 0..100 {
        empty.push_str(&mut a, &i.to_string()).unwrap();
    }
    assert_eq!(s.as_str(&a), "héllo, wörld");
    assert_eq!(s.as_str(&before), "héllo");
    assert_eq!(s.len(&before), 6);
    assert_eq!(empty.len(&a), 190);
    let root = a.alloc(s).unwrap();
    a.set_root(root);
    let snap = a.snapshot().unwrap();
    let b = snap.to_arena().unwrap();
    let r: Ptr<ArenaString> = b.root().unwrap();
    assert_eq!(b.get(r).as_str(&b), "héllo, wörld");
    s.clear(&mut a);
    assert_eq!(s.as_str(&a), "");
    s.free(&mut a).unwrap();
    assert!(s.try_as_str(&a).is_err());
}

#[test]
fn corrupt_utf8_is_an_error() {
    let mut a = arena();
    let s = ArenaString::from_str(&mut a, "abcé").unwrap();
    let at = offset_of_text(&a, s);
    a.write(at + 4, &[0xC3, 0x28]).unwrap(); // 'é' cut into an invalid sequence
    match s.try_as_str(&a) {
        Err(Error::InvalidValue { offset, type_name }) => {
            assert_eq!((offset, type_name), (at + 3, "str"));
        }
        other => panic!("{other:?}"),
    }
    let snap = a.snapshot().unwrap();
    assert!(s.try_as_str(&snap).is_err());
    let e = std::panic::catch_unwind(|| s.as_str(&snap).len()).unwrap_err();
    let msg = e.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("invalid value") && msg.contains("str"),
        "{msg}"
    );
    a.write(at + 3, "é".as_bytes()).unwrap();
    assert_eq!(s.as_str(&a), "abcé");
}

#[test]
fn a_map_keyed_by_text_hashes_and_compares_the_text() {
    let mut a = arena();
    let m = ArenaMap::<ArenaString, u32>::new(&mut a).unwrap();
    let words: Vec<String> = (0..500).map(|i| format!("word{i}")).collect();
    for (i, w) in words.iter().enumerate() {
        assert_eq!(m.insert_str(&mut a, w, i as u32).unwrap(), None);
    }
    assert_eq!(m.insert_str(&mut a, "word7", 70).unwrap(), Some(7));
    let key = ArenaString::from_str(&mut a, "word9").unwrap();
    assert_eq!(
        m.insert(&mut a, key, 90).unwrap(),
        Some(9),
        "same text, same key"
    );
    assert_eq!(m.len(&a), 500);
    let snap = a.snapshot().unwrap();
    let other = ArenaString::from_str(&mut a, "word12").unwrap();
    *m.get_mut(&mut a, &other).unwrap() += 1;
    *m.entry(&mut a, other).or_insert(0).unwrap() += 1;
    assert_eq!(m.get_str(&a, "word12"), Some(&14));
    assert_eq!(m.get_str(&snap, "word12"), Some(&12));
    assert_eq!(m.get_str(&snap, "word7"), Some(&70));
    assert_eq!(m.get_str(&snap, "nope"), None);
    let r = snap.lend(m);
    assert_eq!(
        (r.get(&key), r.get(&other), r.len()),
        (Some(&90), None, 500)
    ); // `other` is newer
    assert_eq!(m.remove(&mut a, &other), Some(14));
    assert_eq!(m.get_str(&a, "word12"), None);
    let mut w = m.view_mut(&mut a);
    *w.get_str_mut("word7").unwrap() += 1;
    assert_eq!(w.get_str("word7"), Some(&71));
    let total: u64 = m.iter(&snap).map(|(_, &v)| u64::from(v)).sum();
    assert_eq!(total, (0..500).sum::<u64>() + 63 + 81);
    let keys: usize = m.iter(&snap).map(|(k, _)| k.as_str(&snap).len()).sum();
    assert_eq!(keys, words.iter().map(String::len).sum::<usize>());
}

type Vars = ArenaMap<ArenaString, i64>;

/// A map of `n` names (`v0`, `v1`, ...) to their index, and the same in a `HashMap`.
fn vars(a: &mut Arena, n: usize) -> (Vars, HashMap<String, i64>) {
    let m = Vars::new(a).unwrap();
    let mut model = HashMap::new();
    for i in 0..n {
        m.insert_str(a, &format!("v{i}"), i as i64).unwrap();
        model.insert(format!("v{i}"), i as i64);
    }
    (m, model)
}

/// The map's entries through a view, sorted.
fn entries(w: &cowarena::MapMut<'_, ArenaString, i64>) -> Vec<(String, i64)> {
    let mut e: Vec<(String, i64)> = w.iter_str().map(|(k, &v)| (k.to_owned(), v)).collect();
    e.sort();
    e
}

fn sorted(model: &HashMap<String, i64>) -> Vec<(String, i64)> {
    let mut e: Vec<(String, i64)> = model.iter().map(|(k, &v)| (k.clone(), v)).collect();
    e.sort();
    e
}

/// The offsets in `a` where `needle` occurs.
fn find_all(a: &Arena, needle: &[u8]) -> Vec<usize> {
    let at: Vec<usize> = (a.as_bytes().windows(needle.len()).enumerate())
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert!(!at.is_empty());
    at
}

/// A symbolic executor's loop: a map from variable names to values and a trail of undo records
/// lent together by a loan, looked up and updated by name, with snapshots at decisions, restores
/// on conflicts and new names declared through the loan between views; after every step the
/// views equal the model, and every snapshot keeps its own.
#[test]
fn a_map_keyed_by_text_is_lent_with_a_vector_across_snapshots_and_restores() {
    for seed in 1..5 {
        let mut rng = Rng::new(seed);
        let mut a = arena();
        let (m, mut model) = vars(&mut a, 50 + rng.below(200));
        let trail = ArenaVec::<i64>::with_capacity(&mut a, 4096).unwrap();
        let mut trail_model: Vec<i64> = Vec::new();
        let mut declared = model.len();
        let mut loan = a.loan((m, trail));
        let mut saved: Vec<(Snapshot, HashMap<String, i64>, Vec<i64>)> = Vec::new();
        for _ in 0..300 {
            match rng.below(10) {
                0 => saved.push((loan.snapshot().unwrap(), model.clone(), trail_model.clone())),
                1 if !saved.is_empty() => {
                    let (s, mm, tm) = saved.swap_remove(rng.below(saved.len()));
                    loan.restore(&s).unwrap();
                    (model, trail_model) = (mm, tm);
                }
                2 => {
                    // A new name: declared through the loan, checked again before the views.
                    let name = format!("v{declared}");
                    declared += 1;
                    assert_eq!(m.insert_str(&mut loan, &name, -1).unwrap(), None);
                    model.insert(name, -1);
                }
                _ => {
                    let (mut w, mut t) = loan.views();
                    for _ in 0..20 {
                        let name = format!("v{}", rng.below(declared + 10));
                        let step = rng.below(100) as i64;
                        match rng.below(3) {
                            0 => assert_eq!(w.get_str(&name), model.get(&name)),
                            1 => match (w.get_str_mut(&name), model.get_mut(&name)) {
                                (Some(v), Some(mv)) => {
                                    t.push(*v).unwrap();
                                    trail_model.push(*mv);
                                    *v += step;
                                    *mv += step;
                                }
                                (None, None) => assert!(!w.contains_str(&name)),
                                other => panic!("{name}: {other:?}"),
                            },
                            _ => match w.insert_str(&name, step) {
                                Ok(old) => {
                                    assert_eq!(old, model.insert(name, step));
                                }
                                Err(Error::CannotInsert { key }) => {
                                    assert_eq!(key, name);
                                    assert!(!model.contains_key(&key));
                                }
                                Err(e) => panic!("{e}"),
                            },
                        }
                    }
                    assert_eq!(w.len(), model.len());
                    assert_eq!(entries(&w), sorted(&model));
                    assert_eq!(t.as_slice(), &trail_model[..]);
                }
            }
        }
        let a = loan.into_inner();
        for (s, mm, tm) in &saved {
            assert_eq!(m.len(s), mm.len());
            for (k, v) in mm {
                assert_eq!(m.get_str(s, k), Some(v), "{k}");
            }
            assert_eq!(trail.as_slice(s), &tm[..]);
        }
        assert_eq!(m.len(a), model.len());
    }
}

/// Lookups by text read the keys' strings and write nothing: a loan whose views only look up
/// leaves nothing for the next snapshot to freeze, and an update marks the value's page only.
#[test]
fn lookups_by_text_mark_nothing() {
    let mut a = arena();
    let (m, _) = vars(&mut a, 300);
    let p = a.alloc(0u64).unwrap();
    let mut loan = a.loan((m, p));
    loan.snapshot().unwrap();
    let (w, mut q) = loan.views();
    let sum: i64 = (0..300)
        .map(|i| *w.get_str(&format!("v{i}")).unwrap())
        .sum();
    *q = sum as u64;
    assert_eq!(
        loan.arena().stats().dirty_pages,
        1,
        "the object's page only"
    );
    loan.snapshot().unwrap();
    let (mut w, _) = loan.views();
    *w.get_str_mut("v7").unwrap() = 70;
    assert_eq!(loan.arena().stats().dirty_pages, 1, "the value's page only");
}

/// Lending a map keyed by text checks every key's string: bytes made invalid UTF-8 by a raw
/// write are `Error::InvalidValue` (and a panic from `views`), a header overwritten is
/// `Error::InvalidPtr`, through `view_mut`, `lend_mut` and loans, and after a restore to a
/// state that holds them; never undefined behaviour.
#[test]
fn lending_a_map_keyed_by_text_checks_the_keys() {
    let mut a = arena();
    let (m, _) = vars(&mut a, 100);
    let key = *m.iter(&a).find(|(k, _)| k.as_str(&a) == "v42").unwrap().0;
    let text = offset_of_text(&a, key);
    let good = a.snapshot().unwrap();
    a.write(text + 1, &[0xFF]).unwrap(); // "v42" -> "v\xFF2"
    let bad = a.snapshot().unwrap();
    let invalid = |e: Error| match e {
        Error::InvalidValue { offset, type_name } => offset == text + 1 && type_name == "str",
        _ => false,
    };
    let v = ArenaVec::<u8>::new(&mut a).unwrap();
    assert!(invalid(m.try_view_mut(&mut a).unwrap_err()));
    assert!(invalid(a.try_lend_mut((m, v)).map(drop).unwrap_err()));
    let mut loan = a.loan(m);
    assert!(invalid(loan.try_views().map(drop).unwrap_err()));
    let msg = panic_message(|| {
        loan.views();
    });
    assert!(
        msg.contains("invalid value") && msg.contains("str"),
        "{msg}"
    );
    // Reading by text needs no valid text: the read-only map still finds the others.
    assert_eq!(m.get_str(&bad, "v41"), Some(&41));

    loan.restore(&good).unwrap();
    assert_eq!(loan.views().get_str("v42"), Some(&42));
    loan.restore(&bad).unwrap();
    assert!(invalid(loan.try_views().map(drop).unwrap_err()));
    loan.restore(&good).unwrap();

    // The string's header: its length past its capacity.
    let a = loan.into_inner();
    let head = u64::from_ne_bytes(bytemuck::bytes_of(&key)[..8].try_into().unwrap()) as usize;
    a.write(head, &u64::MAX.to_ne_bytes()).unwrap();
    assert!(matches!(
        a.loan(m).try_views().map(drop),
        Err(Error::InvalidPtr {
            reason: InvalidPtrReason::CollectionType,
            ..
        })
    ));
    // The key's handle in the table: a stamp no string has.
    a.restore(&good).unwrap();
    // Every copy of the handle (the table's, and an old table's, freed when it grew).
    for at in find_all(a, bytemuck::bytes_of(&key)) {
        a.write(at + 8, &3u64.to_ne_bytes()).unwrap();
    }
    assert!(matches!(
        m.try_view_mut(a).map(drop),
        Err(Error::InvalidPtr { .. })
    ));
    a.restore(&good).unwrap();
    assert_eq!(m.view_mut(a).get_str("v42"), Some(&42));
}

/// The keys' strings are read by the map's view, so nothing lent with it may write them: a
/// string lent mutably beside the map that it keys is `Error::Overlap`; two maps sharing keys
/// may be lent together, since both only read them.
#[test]
fn the_keys_strings_are_not_lent_mutably_beside_the_map() {
    let mut a = arena();
    let (m, _) = vars(&mut a, 20);
    let key = *m.iter(&a).next().unwrap().0;
    let name = key.as_str(&a).to_owned();
    let value = *m.get(&a, &key).unwrap();
    let overlap = |r: cowarena::Result<()>| matches!(r, Err(Error::Overlap { .. }));
    assert!(overlap(a.try_lend_mut((m, key.as_vec())).map(drop)));
    assert!(overlap(a.loan((key.as_vec(), m)).try_views().map(drop)));
    assert!(overlap(a.loan((m, m)).try_views().map(drop)));
    let p = a.alloc(key).unwrap(); // a copy of the handle: not the string's memory
    let other = Vars::new(&mut a).unwrap();
    other.insert(&mut a, key, 7).unwrap(); // the same string keys both maps
    let mut loan = a.loan((m, other, p));
    let (mut w, mut o, q) = loan.views();
    *o.get_str_mut(&name).unwrap() += 1;
    *w.get_str_mut(&name).unwrap() -= 1;
    assert_eq!((o.get_str(&name), *q), (Some(&8), key));
    // Reading them all at once overlaps nothing that is written.
    let a = loan.into_inner();
    let (r, s) = a.lend((m, key.as_vec()));
    assert_eq!((r.get_str(&name), s), (Some(&(value - 1)), name.as_bytes()));
    assert!(r.contains_str(&name) && !r.contains_str("nope"));
}

/// A view of a map keyed by text cannot look keys up by handle (the handle's text may lie in
/// memory lent to another view): it panics and names the lookups by text.
#[test]
fn a_view_of_a_map_keyed_by_text_looks_up_by_text_only() {
    let mut a = arena();
    let (m, _) = vars(&mut a, 3);
    let key = *m.iter(&a).next().unwrap().0;
    let mut w = m.view_mut(&mut a);
    for msg in [
        panic_message(|| {
            w.get(&key);
        }),
        panic_message(|| {
            w.contains_key(&key);
        }),
        panic_message(|| {
            w.get_mut(&key);
        }),
    ] {
        assert!(msg.contains("get_str"), "{msg}");
    }
    assert_eq!((w.len(), w.iter().count(), w.iter_str().count()), (3, 3, 3));
    // The empty text is a key like any other.
    m.insert_str(&mut a, "", 9).unwrap();
    let mut w = m.view_mut(&mut a);
    assert_eq!(w.insert_str("", 10).unwrap(), Some(9));
    assert_eq!(
        (
            w.get_str(""),
            w.iter_str().filter(|(k, _)| k.is_empty()).count()
        ),
        (Some(&10), 1)
    );
}
