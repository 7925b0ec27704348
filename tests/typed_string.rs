//! `ArenaString`: text built and read through snapshots, as a map key hashed and compared by its
//! text, and bytes made invalid UTF-8 by raw writes reported as `Error::InvalidValue`.

use cowarena::{Arena, ArenaMap, ArenaString, Error, Ptr, View};

fn arena() -> Arena {
    Arena::with_capacity(4 << 20).unwrap()
}

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
    assert!(
        matches!(m.try_view_mut(&mut a), Err(Error::Unsupported(_))),
        "not lent mutably"
    );
    let total: u64 = m.iter(&snap).map(|(_, &v)| u64::from(v)).sum();
    assert_eq!(total, (0..500).sum::<u64>() + 63 + 81);
    let keys: usize = m.iter(&snap).map(|(k, _)| k.as_str(&snap).len()).sum();
    assert_eq!(keys, words.iter().map(String::len).sum::<usize>());
}
