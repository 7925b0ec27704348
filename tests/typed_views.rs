//! The collections' fast paths (`view_mut`, `slice_mut`, `get_mut`, `entry`, `lend_mut`), their
//! constructors, and the edge cases that used to misbehave: empty vectors of aligned types,
//! zero-sized elements whose length could wrap, and elements that straddle pages.

use bytemuck::{Pod, Zeroable};
use cowarena::{
    Arena, ArenaBytes, ArenaMap, ArenaVec, Error, InvalidPtrReason, Ptr, Snapshot, ViewMut,
};
use std::collections::HashMap;
use std::ops::Bound;

mod common;
use common::Rng;

fn page() -> usize {
    cowarena::page_size()
}

/// Reading an empty `ArenaVec<u32>` once panicked in bytemuck: the empty slice was a byte slice
/// at address 1, not aligned for the element type.
#[test]
fn empty_vectors_of_aligned_types_read_as_empty_slices() {
    fn check<T: Pod + PartialEq + std::fmt::Debug>(a: &mut Arena) {
        let fresh = ArenaVec::<T>::new(a).unwrap();
        let reserved = ArenaVec::<T>::with_capacity(a, 10).unwrap();
        let cleared = ArenaVec::<T>::from_elem(a, T::zeroed(), 3).unwrap();
        cleared.clear(a);
        let s = a.snapshot().unwrap();
        for v in [fresh, reserved, cleared] {
            assert_eq!(v.try_as_slice(a).unwrap(), &[] as &[T]);
            assert!(v.as_slice(a).is_empty() && v.as_slice(&s).is_empty());
            assert_eq!(v.iter(a).count(), 0);
            assert_eq!(v.get(a, 0), None);
            assert_eq!(v.try_get(&s, 0).unwrap(), None);
            assert!(v.as_mut_slice(a).is_empty());
            assert!(v.slice_mut(a, 0..0).is_empty());
            assert_eq!(v.get_mut(a, 0), None);
            let mut w = v.view_mut(a);
            assert!(w.is_empty() && w.get_mut(0).is_none() && w.as_mut_slice().is_empty());
            let (w,) = a.lend_mut((v,));
            assert!(w.as_slice().is_empty());
            assert_eq!(v.pop(a), None);
        }
    }
    let mut a = Arena::with_capacity(1 << 20).unwrap();
    check::<u32>(&mut a);
    check::<u64>(&mut a);
    check::<u128>(&mut a);
    check::<[u64; 8]>(&mut a);
    check::<Aligned64>(&mut a);
}

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C, align(64))]
struct Aligned64([u8; 64]);

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C, align(4096))]
struct PageAligned([u8; 4096]);

#[test]
fn page_aligned_types_are_aligned_in_memory() {
    let mut a = Arena::with_capacity(1 << 20).unwrap();
    a.alloc(1u8).unwrap();
    let p = a.alloc_zeroed::<PageAligned>().unwrap();
    assert_eq!(a.get(p) as *const PageAligned as usize % 4096, 0);
    let v = ArenaVec::<PageAligned>::from_elem(&mut a, PageAligned([3; 4096]), 3).unwrap();
    assert!(v.iter(&a).all(|x| x.0[4095] == 3));
    assert_eq!(v.as_slice(&a).as_ptr() as usize % 4096, 0);
    // A Ptr forged at an offset that is not a multiple of 4096 is refused.
    let [off, stamp]: [u64; 2] = bytemuck::cast(p);
    let q: Ptr<PageAligned> = bytemuck::cast([off + 64, stamp]);
    assert!(matches!(
        a.try_get(q),
        Err(Error::InvalidPtr {
            reason: InvalidPtrReason::Misaligned { align: 4096 },
            ..
        })
    ));
}

#[test]
fn zero_sized_lengths_never_wrap() {
    let mut a = Arena::with_capacity(1 << 20).unwrap();
    let v = ArenaVec::<()>::new(&mut a).unwrap();
    v.extend_from_slice(&mut a, &[(); usize::MAX]).unwrap();
    assert_eq!(v.len(&a), usize::MAX);
    for _ in 0..2 {
        let e = v.push(&mut a, ()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::CapacityOverflow {
                    len: usize::MAX,
                    additional: 1
                }
            ),
            "{e}"
        );
    }
    assert!(v.extend_zeroed(&mut a, 5).is_err());
    assert!(v.reserve(&mut a, 1).is_err());
    assert_eq!(v.len(&a), usize::MAX, "a failed call changes nothing");
    assert_eq!(v.as_slice(&a).len(), usize::MAX);
    let mut w = v.view_mut(&mut a);
    w[usize::MAX - 1] = ();
    assert_eq!(w.get_mut(usize::MAX), None);
    assert_eq!(v.pop(&mut a), Some(()));
    v.push(&mut a, ()).unwrap();
    // Elements with a size overflow the buffer's size instead.
    let w = ArenaVec::<u64>::new(&mut a).unwrap();
    w.push(&mut a, 1).unwrap();
    assert!(matches!(
        w.extend_zeroed(&mut a, usize::MAX),
        Err(Error::CapacityOverflow { .. })
    ));
    assert!(matches!(
        w.reserve(&mut a, usize::MAX / 4),
        Err(Error::OutOfMemory { .. })
    ));
    assert_eq!(w.as_slice(&a), &[1]);
}

#[test]
fn constructors_and_length_changes() {
    let mut a = Arena::with_capacity(8 << 20).unwrap();
    let v = ArenaVec::from_elem(&mut a, [1u8, 2, 3], 1000).unwrap();
    assert_eq!(v.len(&a), 1000);
    assert!(v.iter(&a).all(|&x| x == [1, 2, 3]));
    v.resize(&mut a, 1500, [9; 3]).unwrap();
    assert_eq!(
        (v.get(&a, 999), v.get(&a, 1000)),
        (Some(&[1, 2, 3]), Some(&[9; 3]))
    );
    v.resize(&mut a, 10, [0; 3]).unwrap();
    assert_eq!(v.len(&a), 10);
    v.resize(&mut a, 12, [0; 3]).unwrap();
    assert_eq!(v.as_slice(&a)[10..], [[0; 3]; 2]);
    v.truncate(&mut a, 100);
    assert_eq!(v.len(&a), 12);
    v.truncate(&mut a, 1);
    assert_eq!(v.as_slice(&a), &[[1, 2, 3]]);
    let s = ArenaVec::from_slice(&mut a, &[5u64, 6, 7]).unwrap();
    assert_eq!(s.as_slice(&a), &[5, 6, 7]);
    let z = a.alloc_slice_zeroed::<u32>(100_000).unwrap();
    assert_eq!(z.len(&a), 100_000);
    assert!(z.iter(&a).all(|&x| x == 0));
}

#[test]
fn zeroed_vectors_are_zero_in_reused_memory_and_write_only_what_they_must() {
    let mut a = Arena::with_capacity(16 << 20).unwrap();
    let n = 64 * page() / 8;
    let dirty = ArenaVec::from_elem(&mut a, u64::MAX, n).unwrap();
    dirty.free(&mut a).unwrap();
    // The same pages come back from the free pool, holding the old bytes and run links.
    let z = ArenaVec::<u64>::with_len_zeroed(&mut a, n).unwrap();
    assert!(z.iter(&a).all(|&x| x == 0));
    // Fresh pages are zero already: making a large zeroed vector writes a few metadata pages.
    a.snapshot().unwrap();
    let big = ArenaVec::<u64>::with_len_zeroed(&mut a, 1024 * page() / 8).unwrap();
    assert!(a.stats().dirty_pages < 8, "{:?}", a.stats());
    big.extend_zeroed(&mut a, 10).unwrap();
    assert_eq!(big.len(&a), 1024 * page() / 8 + 10);
}

/// Elements of 3 bytes straddle page boundaries: a write through a view must mark both pages,
/// or a restore would not undo it.
#[test]
fn view_writes_mark_the_pages_of_straddling_elements() {
    let mut a = Arena::with_capacity(4 << 20).unwrap();
    let n = 4 * page();
    let v = ArenaVec::<[u8; 3]>::with_len_zeroed(&mut a, n).unwrap();
    let zero = a.snapshot().unwrap();
    let straddling = page() / 3; // bytes page()-1 ..= page()+1 of the buffer
    let mut w = v.view_mut(&mut a);
    w[straddling] = [7, 7, 7];
    w[3 * straddling] = [8, 8, 8];
    assert_eq!(v.as_slice(&a)[straddling], [7; 3]);
    a.restore(&zero).unwrap();
    assert!(
        v.iter(&a).all(|x| *x == [0; 3]),
        "the restore undid every write"
    );
}

#[test]
fn views_mark_only_the_pages_they_write() {
    let mut a = Arena::with_capacity(4 << 20).unwrap();
    let per_page = page() / 8;
    let v = ArenaVec::<u64>::with_len_zeroed(&mut a, 16 * per_page).unwrap();
    assert_eq!(v.as_slice(&a).as_ptr() as usize % page(), 0);
    let s = a.snapshot().unwrap();
    let mut w = v.view_mut(&mut a);
    w[0] = 1;
    w[3 * per_page] += 2;
    w[3 * per_page + 5] = 3;
    *w.get_mut(15 * per_page).unwrap() = 4;
    w.set(1, 5);
    assert_eq!(w.get(1), Some(&5));
    assert_eq!(a.stats().dirty_pages, 3);
    v.slice_mut(&mut a, 8 * per_page..8 * per_page + 1)[0] = 6;
    assert_eq!(a.stats().dirty_pages, 4);
    *v.get_mut(&mut a, 9 * per_page).unwrap() = 7;
    assert_eq!(a.stats().dirty_pages, 5);
    let t = a.snapshot().unwrap();
    assert_eq!(v.iter(&t).sum::<u64>(), 28);
    a.restore(&s).unwrap();
    assert_eq!(v.iter(&a).sum::<u64>(), 0);
    // A full pass marks every page, once.
    let mut w = v.view_mut(&mut a);
    for i in 0..w.len() {
        w[i] = i as u64;
    }
    assert_eq!(a.stats().dirty_pages, 16);
    a.restore(&t).unwrap();
    assert_eq!(v.iter(&a).sum::<u64>(), 28);
}

/// Random writes through views, slices and single-element calls, interleaved with snapshots and
/// restores, against a `Vec` model.
#[test]
fn views_match_a_vec_model_across_snapshots() {
    let mut a = Arena::with_capacity(16 << 20).unwrap();
    let mut rng = Rng(0x5eed);
    let v = ArenaVec::<u32>::from_elem(&mut a, 0, 5 * page()).unwrap();
    let mut model = vec![0u32; 5 * page()];
    let mut snaps: Vec<(Snapshot, Vec<u32>)> = Vec::new();
    for round in 0..300 {
        match rng.below(6) {
            0 => {
                let mut w = v.view_mut(&mut a);
                for _ in 0..rng.below(200) {
                    let i = rng.below(model.len());
                    let x = rng.next() as u32;
                    w[i] ^= x;
                    model[i] ^= x;
                }
            }
            1 => {
                let start = rng.below(model.len());
                let end = start + rng.below(model.len() - start);
                v.slice_mut(&mut a, start..end).fill(round);
                model[start..end].fill(round);
            }
            2 => {
                let i = rng.below(model.len());
                *v.get_mut(&mut a, i).unwrap() += 1;
                model[i] += 1;
                v.set(&mut a, model.len() - 1 - i, round);
                let j = model.len() - 1 - i;
                model[j] = round;
            }
            3 => snaps.push((a.snapshot().unwrap(), model.clone())),
            4 if !snaps.is_empty() => {
                let (s, m) = &snaps[rng.below(snaps.len())];
                a.restore(s).unwrap();
                model = m.clone();
            }
            _ => {
                let mut w = a.lend_mut(v);
                let i = rng.below(model.len());
                w[i] = w[model.len() - 1 - i];
                model[i] = model[model.len() - 1 - i];
            }
        }
        assert_eq!(v.as_slice(&a), &model[..], "round {round}");
    }
    for (s, m) in &snaps {
        assert_eq!(v.as_slice(s), &m[..]);
    }
}

#[test]
fn lend_mut_lends_disjoint_collections_and_objects_at_once() {
    #[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
    #[repr(C)]
    struct Counter {
        n: u64,
        sum: u64,
    }
    let mut a = Arena::with_capacity(4 << 20).unwrap();
    let counts = ArenaVec::<u32>::with_len_zeroed(&mut a, 10_000).unwrap();
    let marks = ArenaVec::<u8>::with_len_zeroed(&mut a, 10_000).unwrap();
    let names = ArenaMap::<u32, u64>::new(&mut a).unwrap();
    for k in 0..100 {
        names.insert(&mut a, k, 0).unwrap();
    }
    let total = a.alloc(Counter::zeroed()).unwrap();
    let log = ArenaBytes::from_slice(&mut a, b"....").unwrap();
    let s = a.snapshot().unwrap();
    {
        let ((mut c, mut m), mut n, mut t) = a.lend_mut(((counts, marks), names, total));
        for i in (0..10_000).step_by(7) {
            c[i] += 1;
            m[i] = 1;
            *n.get_mut(&((i % 100) as u32)).unwrap() += 1;
            t.n += 1;
            t.sum += i as u64;
        }
        assert_eq!(n.len(), 100);
        assert!(n.get(&1000).is_none());
    }
    let (mut l,) = a.lend_mut((log,));
    l[0] = b'!';
    assert_eq!(log.as_slice(&a), b"!...");
    assert_eq!(counts.iter(&a).sum::<u32>(), 1429);
    assert_eq!(marks.iter(&a).filter(|&&m| m == 1).count(), 1429);
    assert_eq!(names.iter(&a).map(|(_, v)| v).sum::<u64>(), 1429);
    assert_eq!(a.get(total).n, 1429);
    a.restore(&s).unwrap();
    assert_eq!(counts.iter(&a).sum::<u32>(), 0);
    assert_eq!(names.iter(&a).map(|(_, v)| v).sum::<u64>(), 0);
    assert_eq!(*a.get(total), Counter::zeroed());
}

#[test]
fn lend_mut_refuses_overlaps_and_invalid_handles() {
    let mut a = Arena::with_capacity(1 << 20).unwrap();
    let v = ArenaVec::from_slice(&mut a, &[1u64, 2, 3]).unwrap();
    let w = ArenaVec::from_slice(&mut a, &[4u64]).unwrap();
    let p = a.alloc(5u64).unwrap();
    fn overlap<T>(r: cowarena::Result<T>) -> bool {
        matches!(r.map(drop), Err(Error::Overlap { .. }))
    }
    assert!(overlap(a.try_lend_mut((v, v))));
    assert!(overlap(a.try_lend_mut((w, p, v, w))));
    assert!(overlap(a.try_lend_mut(((p, v), p))));
    let as_bytes: ArenaVec<u8> = bytemuck::cast(v);
    assert!(
        a.try_lend_mut((v, as_bytes)).is_err(),
        "cast handles are refused"
    );
    // Zero-sized objects take no memory: lending one twice lends nothing twice.
    let unit = a.alloc(()).unwrap();
    let (x, y) = a.lend_mut((unit, unit));
    assert_eq!((*x, *y), ((), ()));
    a.free(p).unwrap();
    assert!(matches!(
        a.try_lend_mut((v, p)).map(drop),
        Err(Error::InvalidPtr {
            reason: InvalidPtrReason::Freed,
            ..
        })
    ));
    let (mut vv, mut ww) = a.lend_mut((v, w));
    std::mem::swap(&mut vv[0], &mut ww[0]);
    assert_eq!((v.as_slice(&a), w.as_slice(&a)), (&[4, 2, 3][..], &[1][..]));
}

#[test]
fn map_fast_paths_match_a_hashmap_across_snapshots() {
    let mut a = Arena::with_capacity(16 << 20).unwrap();
    let m = ArenaMap::<u64, u64>::new(&mut a).unwrap();
    let mut model: HashMap<u64, u64> = HashMap::new();
    let mut rng = Rng(99);
    let mut snaps: Vec<(Snapshot, HashMap<u64, u64>)> = Vec::new();
    for step in 0..40_000u64 {
        let k = rng.below(2000) as u64;
        match rng.below(9) {
            0..=2 => {
                *m.entry(&mut a, k).or_insert(step).unwrap() += 1;
                *model.entry(k).or_insert(step) += 1;
            }
            3 => {
                let e = m.entry(&mut a, k).and_modify(|v| *v *= 3);
                assert_eq!(e.is_occupied(), model.contains_key(&k));
                assert_eq!(*e.key(), k);
                assert_eq!(
                    e.get_mut().copied(),
                    model.get_mut(&k).map(|v| {
                        *v *= 3;
                        *v
                    })
                );
            }
            4 => assert_eq!(m.remove(&mut a, &k), model.remove(&k)),
            5 => {
                if let Some(v) = m.get_mut(&mut a, &k) {
                    *v = v.wrapping_mul(7);
                }
                if let Some(v) = model.get_mut(&k) {
                    *v = v.wrapping_mul(7);
                }
            }
            6 => {
                let mut w = m.view_mut(&mut a);
                for _ in 0..20 {
                    let k = rng.below(2000) as u64;
                    assert_eq!(w.get(&k), model.get(&k));
                    assert_eq!(w.contains_key(&k), model.contains_key(&k));
                    if let Some(v) = w.get_mut(&k) {
                        *v += 1;
                        *model.get_mut(&k).unwrap() += 1;
                    }
                }
                assert_eq!(w.len(), model.len());
                assert_eq!(w.iter().count(), model.len());
            }
            7 if step % 1000 == 0 => snaps.push((a.snapshot().unwrap(), model.clone())),
            8 if step % 3001 == 0 && !snaps.is_empty() => {
                let (s, sm) = &snaps[rng.below(snaps.len())];
                a.restore(s).unwrap();
                model = sm.clone();
            }
            _ => assert_eq!(m.insert(&mut a, k, step).unwrap(), model.insert(k, step)),
        }
    }
    let seen: HashMap<u64, u64> = m.iter(&a).map(|(k, v)| (*k, *v)).collect();
    assert_eq!(seen, model);
    for (s, sm) in &snaps {
        let seen: HashMap<u64, u64> = m.iter(s).map(|(k, v)| (*k, *v)).collect();
        assert_eq!(&seen, sm);
    }
}

#[test]
fn map_writes_mark_only_their_pages() {
    let mut a = Arena::with_capacity(16 << 20).unwrap();
    let m = ArenaMap::<u64, [u64; 7]>::with_capacity(&mut a, 10_000).unwrap();
    for k in 0..10_000 {
        m.insert(&mut a, k, [k; 7]).unwrap();
    }
    let s = a.snapshot().unwrap();
    // The pages the values of `keys` lie on (a value may straddle two; where each lands depends
    // on the map's hash seed).
    let pages_of = |a: &Arena, keys: &[u64]| {
        let base = a.as_bytes().as_ptr() as usize;
        let page = cowarena::page_size();
        let mut pages: Vec<usize> = keys
            .iter()
            .flat_map(|k| {
                let at = m.get(a, k).unwrap().as_ptr() as usize - base;
                [at / page, (at + size_of::<[u64; 7]>() - 1) / page]
            })
            .collect();
        pages.sort_unstable();
        pages.dedup();
        pages.len()
    };
    *m.get_mut(&mut a, &5).unwrap() = [0; 7];
    m.entry(&mut a, 6).and_modify(|v| v[0] = 1);
    let written = pages_of(&a, &[5, 6]);
    assert!(a.stats().dirty_pages <= written, "{:?}", a.stats());
    m.remove(&mut a, &7).unwrap();
    assert!(a.stats().dirty_pages <= written + 3, "{:?}", a.stats());
    a.restore(&s).unwrap();
    let mut w = m.view_mut(&mut a);
    for k in [1, 2, 3, 1, 2, 3] {
        w.get_mut(&k).unwrap()[0] = 0;
    }
    assert!(
        a.stats().dirty_pages <= pages_of(&a, &[1, 2, 3]),
        "{:?}",
        a.stats()
    );
    a.restore(&s).unwrap();
    assert_eq!(m.get(&a, &1), Some(&[1; 7]));
}

#[test]
fn readers_and_lenders_panic_with_the_reason_and_try_forms_return_it() {
    let mut a = Arena::with_capacity(1 << 20).unwrap();
    let v = ArenaVec::from_slice(&mut a, &[1u32]).unwrap();
    let m = ArenaMap::<u32, u32>::new(&mut a).unwrap();
    v.free(&mut a).unwrap();
    m.free(&mut a).unwrap();
    let freed = |e: Error| {
        matches!(
            e,
            Error::InvalidPtr {
                reason: InvalidPtrReason::Freed,
                ..
            }
        )
    };
    assert!(freed(v.try_len(&a).unwrap_err()));
    assert!(freed(v.try_get(&a, 0).unwrap_err()));
    assert!(freed(v.try_get_mut(&mut a, 0).unwrap_err()));
    assert!(freed(v.try_as_mut_slice(&mut a).unwrap_err()));
    assert!(freed(v.try_slice_mut(&mut a, ..).unwrap_err()));
    assert!(freed(v.try_view_mut(&mut a).map(drop).unwrap_err()));
    assert!(freed(m.try_len(&a).unwrap_err()));
    assert!(freed(m.try_get_mut(&mut a, &1).unwrap_err()));
    assert!(freed(m.try_entry(&mut a, 1).map(drop).unwrap_err()));
    assert!(freed(m.try_view_mut(&mut a).map(drop).unwrap_err()));
    assert!(freed(m.try_iter(&a).map(drop).unwrap_err()));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        v.view_mut(&mut a);
    }));
    let msg = r.unwrap_err().downcast::<String>().unwrap();
    assert!(
        msg.contains("invalid pointer") && msg.contains("freed"),
        "{msg}"
    );
    let w = ArenaVec::from_slice(&mut a, &[1u32, 2]).unwrap();
    assert!(matches!(
        w.try_slice_mut(&mut a, 1..3),
        Err(Error::IndexOutOfBounds { index: 3, len: 2 })
    ));
    assert!(matches!(
        w.try_slice_mut(&mut a, (Bound::Included(2), Bound::Excluded(1))),
        Err(Error::IndexOutOfBounds { index: 2, len: 2 })
    ));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut view = w.view_mut(&mut a);
        view[2] = 0;
    }));
    let msg = r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("the len is 2 but the index is 2"), "{msg}");
}

/// An element spanning more than two 4 KiB blocks: a write to its middle is marked even when
/// its first and last blocks were marked by writes to its neighbours.
const BIG: usize = 3 * 4096 + 8;

#[test]
fn writes_to_the_middle_of_large_elements_are_snapshotted_and_restored() {
    let mut a = Arena::with_capacity(1 << 22).unwrap();
    let v = ArenaVec::<[u8; BIG]>::with_len_zeroed(&mut a, 3).unwrap();
    let before = a.snapshot().unwrap();
    {
        let mut w = v.view_mut(&mut a);
        w[0][0] = 1;
        w[2][0] = 1;
        w[1][BIG / 2] = 0xAB;
    }
    let after = a.snapshot().unwrap();
    assert_eq!(
        v.as_slice(&after)[1][BIG / 2],
        0xAB,
        "the snapshot lost the write"
    );
    a.restore(&before).unwrap();
    assert_eq!(
        v.as_slice(&a)[1][BIG / 2],
        0,
        "restore did not undo the write"
    );
}

#[test]
fn writes_to_the_middle_of_large_map_values_are_snapshotted() {
    let mut a = Arena::with_capacity(1 << 23).unwrap();
    let m = ArenaMap::<u64, [u8; BIG]>::new(&mut a).unwrap();
    for k in 0..6u64 {
        m.insert(&mut a, k, [0; BIG]).unwrap();
    }
    let before = a.snapshot().unwrap();
    for y in 0..6u64 {
        {
            let mut w = m.view_mut(&mut a);
            for k in (0..6u64).filter(|&k| k != y) {
                w.get_mut(&k).unwrap()[0] = 1;
            }
            w.get_mut(&y).unwrap()[BIG / 2] = 0xCD;
        }
        let after = a.snapshot().unwrap();
        assert_eq!(m.get(&after, &y).unwrap()[BIG / 2], 0xCD, "key {y}");
        a.restore(&before).unwrap();
        assert_eq!(m.get(&a, &y).unwrap()[BIG / 2], 0, "key {y}");
    }
}
