//! Arena-resident collections against std's, across snapshots, restores and forks.

use bytemuck::{Pod, Zeroable};
use cowarena::{Arena, ArenaBytes, ArenaMap, ArenaVec, Error, Snapshot};
use std::collections::HashMap;

mod common;
use common::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
struct Key {
    a: u64,
    b: [u32; 3],
    c: u32,
}

#[test]
fn vec_matches_std_and_snapshots_keep_old_contents() {
    let mut a = Arena::with_capacity(8 << 20).unwrap();
    let v = ArenaVec::<u64>::new(&mut a).unwrap();
    let mut model: Vec<u64> = Vec::new();
    let mut snaps: Vec<(Snapshot, Vec<u64>)> = Vec::new();
    let mut rng = Rng(7);
    for step in 0..20_000u64 {
        match rng.below(10) {
            0..=5 => {
                v.push(&mut a, step).unwrap();
                model.push(step);
            }
            6 => assert_eq!(v.pop(&mut a), model.pop()),
            7 if !model.is_empty() => {
                let i = rng.below(model.len());
                v.set(&mut a, i, !step);
                model[i] = !step;
            }
            8 if step % 50 == 0 => snaps.push((a.snapshot().unwrap(), model.clone())),
            9 if step % 97 == 0 && !snaps.is_empty() => {
                let (s, m) = &snaps[rng.below(snaps.len())];
                a.restore(s).unwrap();
                model = m.clone();
            }
            _ => {}
        }
    }
    assert_eq!(v.as_slice(&a), &model[..]);
    assert_eq!(v.len(&a), model.len());
    for (s, m) in &snaps {
        assert_eq!(v.as_slice(s), &m[..]);
        assert_eq!(v.iter(s).count(), m.len());
    }
    let f = snaps[3].0.to_arena().unwrap();
    assert_eq!(v.as_slice(&f), &snaps[3].1[..]);
}

#[test]
fn vec_extend_reserve_clear_free() {
    let mut a = Arena::with_capacity(4 << 20).unwrap();
    let v = ArenaVec::<[u8; 3]>::with_capacity(&mut a, 2).unwrap();
    v.extend_from_slice(&mut a, &[[1; 3]; 1000]).unwrap();
    v.reserve(&mut a, 100_000).unwrap();
    assert_eq!(v.len(&a), 1000);
    assert_eq!(v.get(&a, 999), Some(&[1; 3]));
    assert_eq!(v.get(&a, 1000), None);
    v.clear(&mut a);
    assert!(v.is_empty(&a));
    let stats = a.alloc_stats().unwrap();
    assert!(stats.large_objects == 1);
    v.free(&mut a).unwrap();
    assert_eq!(a.alloc_stats().unwrap().large_objects, 0);
    let e = v.try_as_slice(&a).unwrap_err();
    assert!(matches!(e, Error::InvalidPtr { .. }), "{e}");
    assert!(v.push(&mut a, [0; 3]).is_err());
}

#[test]
fn vec_set_past_the_end_is_an_error() {
    let mut a = Arena::with_capacity(1 << 20).unwrap();
    let v = ArenaVec::<u8>::new(&mut a).unwrap();
    v.push(&mut a, 1).unwrap();
    let e = v.try_set(&mut a, 1, 2).unwrap_err();
    assert!(
        matches!(e, Error::IndexOutOfBounds { index: 1, len: 1 }),
        "{e}"
    );
    assert_eq!(v.as_slice(&a), &[1]);
}

#[test]
fn an_empty_vec_of_aligned_elements_is_an_empty_slice() {
    let mut a = Arena::with_capacity(1 << 20).unwrap();
    let v = ArenaVec::<u64>::new(&mut a).unwrap();
    assert_eq!(v.as_slice(&a), &[] as &[u64]);
    let s = a.snapshot().unwrap();
    assert_eq!(v.iter(&s).count(), 0);
}

#[test]
fn vec_of_zero_sized_elements() {
    let mut a = Arena::with_capacity(1 << 20).unwrap();
    let v = ArenaVec::<()>::new(&mut a).unwrap();
    for _ in 0..1000 {
        v.push(&mut a, ()).unwrap();
    }
    assert_eq!(v.len(&a), 1000);
    assert_eq!(v.pop(&mut a), Some(()));
    assert_eq!(v.as_slice(&a).len(), 999);
    v.free(&mut a).unwrap();
}

#[test]
fn map_matches_std_under_inserts_and_removes() {
    let mut a = Arena::with_capacity(16 << 20).unwrap();
    let m = ArenaMap::<u64, u64>::new(&mut a).unwrap();
    let mut model: HashMap<u64, u64> = HashMap::new();
    let mut rng = Rng(11);
    let mut snaps: Vec<(Snapshot, HashMap<u64, u64>)> = Vec::new();
    for step in 0..60_000u64 {
        let k = rng.below(3000) as u64;
        match rng.below(8) {
            0..=3 => assert_eq!(m.insert(&mut a, k, step).unwrap(), model.insert(k, step)),
            4..=5 => assert_eq!(m.remove(&mut a, &k), model.remove(&k)),
            6 => assert_eq!(m.get(&a, &k), model.get(&k)),
            _ => {
                if let Some(v) = m.get_mut(&mut a, &k) {
                    *v += 1;
                }
                if let Some(v) = model.get_mut(&k) {
                    *v += 1;
                }
            }
        }
        if step % 5000 == 0 {
            snaps.push((a.snapshot().unwrap(), model.clone()));
        }
    }
    assert_eq!(m.len(&a), model.len());
    for k in 0..3000 {
        assert_eq!(m.get(&a, &k), model.get(&k), "key {k}");
        assert_eq!(m.contains_key(&a, &k), model.contains_key(&k));
    }
    let from_iter: HashMap<u64, u64> = m.iter(&a).map(|(k, v)| (*k, *v)).collect();
    assert_eq!(from_iter, model);
    for (s, snap_model) in &snaps {
        let seen: HashMap<u64, u64> = m.iter(s).map(|(k, v)| (*k, *v)).collect();
        assert_eq!(&seen, snap_model);
    }
    let (s, snap_model) = &snaps[5];
    a.restore(s).unwrap();
    for k in 0..3000 {
        assert_eq!(m.get(&a, &k), snap_model.get(&k));
    }
    m.clear(&mut a);
    assert!(m.is_empty(&a));
    assert_eq!(m.get(&a, &1), None);
    m.free(&mut a).unwrap();
    assert!(m.try_get(&a, &1).is_err());
}

#[test]
fn map_with_wide_keys_and_unit_values_is_a_set() {
    let mut a = Arena::with_capacity(4 << 20).unwrap();
    let set = ArenaMap::<Key, ()>::with_capacity(&mut a, 100).unwrap();
    let key = |i: u64| Key {
        a: i,
        b: [i as u32; 3],
        c: 7,
    };
    for i in 0..5000 {
        assert_eq!(set.insert(&mut a, key(i), ()).unwrap(), None);
    }
    assert_eq!(set.insert(&mut a, key(3), ()).unwrap(), Some(()));
    for i in (0..5000).step_by(2) {
        assert_eq!(set.remove(&mut a, &key(i)), Some(()));
    }
    assert_eq!(set.len(&a), 2500);
    assert!(set.contains_key(&a, &key(4999)));
    assert!(!set.contains_key(&a, &key(4998)));
}

#[test]
fn bytes_append_and_views() {
    let mut a = Arena::with_capacity(4 << 20).unwrap();
    let log = ArenaBytes::new(&mut a).unwrap();
    let mut model = Vec::new();
    let mut snaps = Vec::new();
    for i in 0..2000u32 {
        let piece = format!("entry {i};");
        log.append(&mut a, piece.as_bytes()).unwrap();
        model.extend_from_slice(piece.as_bytes());
        if i % 500 == 0 {
            snaps.push((a.snapshot().unwrap(), model.clone()));
        }
    }
    assert_eq!(log.as_slice(&a), &model[..]);
    for (s, m) in &snaps {
        assert_eq!(log.as_slice(s), &m[..]);
        assert_eq!(log.len(s), m.len());
    }
    log.clear(&mut a);
    assert!(log.is_empty(&a));
    log.free(&mut a).unwrap();
    assert!(log.try_as_slice(&a).is_err());
}

#[test]
fn collections_as_root_fields_survive_forks() {
    #[derive(Clone, Copy, Pod, Zeroable)]
    #[repr(C)]
    struct World {
        names: ArenaMap<u32, ArenaBytes>,
        order: ArenaVec<u32>,
    }
    let mut a = Arena::with_capacity(4 << 20).unwrap();
    let world = World {
        names: ArenaMap::new(&mut a).unwrap(),
        order: ArenaVec::new(&mut a).unwrap(),
    };
    let root = a.alloc(world).unwrap();
    a.set_root(root);
    for i in 0..100u32 {
        let name = ArenaBytes::from_slice(&mut a, format!("n{i}").as_bytes()).unwrap();
        world.names.insert(&mut a, i, name).unwrap();
        world.order.push(&mut a, i).unwrap();
    }
    let s = a.snapshot().unwrap();
    let mut fork = s.to_arena().unwrap();
    let w: World = *fork.get(fork.root().unwrap());
    let n7 = *w.names.get(&fork, &7).unwrap();
    n7.append(&mut fork, b"-forked").unwrap();
    assert_eq!(n7.as_slice(&fork), b"n7-forked");
    assert_eq!(n7.as_slice(&a), b"n7");
    assert_eq!(n7.as_slice(&s), b"n7");
    assert_eq!(w.order.iter(&fork).sum::<u32>(), 4950);
}

#[test]
fn a_handle_cast_to_other_types_is_refused() {
    let mut a = Arena::with_capacity(1 << 20).unwrap();
    let v = ArenaVec::<u64>::new(&mut a).unwrap();
    v.push(&mut a, 1).unwrap();
    let w: ArenaVec<u32> = bytemuck::cast(v);
    let e = w.try_as_slice(&a).unwrap_err();
    assert!(e.to_string().contains("another type"), "{e}");
    let m: ArenaMap<u64, u64> = bytemuck::cast(v);
    assert!(m.try_get(&a, &1).is_err());
    let null = ArenaVec::<u64>::zeroed();
    assert!(null.try_as_slice(&a).is_err());
}

#[test]
fn a_panicking_or_insert_with_leaves_the_map_as_it_was() {
    let mut a = Arena::with_capacity(1 << 20).unwrap();
    let m = ArenaMap::<u32, u32>::new(&mut a).unwrap();
    m.insert(&mut a, 1, 1).unwrap();
    for k in 100..103 {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = m.entry(&mut a, k).or_insert_with(|| panic!("no value"));
        }));
        assert!(r.is_err());
    }
    assert_eq!(m.len(&a), 1);
    assert_eq!(m.iter(&a).count(), 1);
    m.remove(&mut a, &1).unwrap();
    assert!(m.is_empty(&a));
    assert_eq!(*m.entry(&mut a, 7).or_insert_with(|| 70).unwrap(), 70);
    assert_eq!(m.len(&a), 1);
}
