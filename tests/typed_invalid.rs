//! Every kind of bad `Ptr` is refused with `Error::InvalidPtr` and a reason saying why (or a
//! panic with that message from `get`/`get_mut`), and raw writes into allocator-owned memory
//! make operations fail, never misbehave.

use bytemuck::{Pod, Zeroable};
use cowarena::{Arena, ArenaBytes, ArenaMap, ArenaVec, Error, InvalidPtrReason as Why, Ptr};
use std::panic::{catch_unwind, AssertUnwindSafe};

mod common;
use common::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Point {
    x: i32,
    y: i32,
}

fn forge<T: 'static>(offset: usize, stamp: u64) -> Ptr<T> {
    bytemuck::cast([offset as u64, stamp])
}

fn parts<T: 'static>(p: Ptr<T>) -> [u64; 2] {
    bytemuck::cast(p)
}

/// The reason of an `InvalidPtr` error (panics on any other result).
fn reason<T: std::fmt::Debug>(r: cowarena::Result<T>) -> Why {
    match r {
        Err(Error::InvalidPtr { reason, .. }) => reason,
        other => panic!("expected InvalidPtr, got {other:?}"),
    }
}

fn arena() -> Arena {
    Arena::with_capacity(1 << 20).unwrap()
}

#[test]
fn null() {
    let mut a = arena();
    let p = Ptr::<Point>::null();
    assert!(p.is_null());
    assert_eq!(p, Ptr::default());
    assert_eq!(reason(a.try_get(p)), Why::Null);
    a.alloc(Point { x: 0, y: 0 }).unwrap();
    assert_eq!(reason(a.try_get(p)), Why::Null);
    assert_eq!(reason(a.try_get_mut(p)), Why::Null);
    assert_eq!(reason(a.free(p)), Why::Null);
    let e = a.try_get(p).unwrap_err().to_string();
    assert!(e.contains("null pointer") && e.contains("Point"), "{e}");
}

#[test]
fn out_of_range() {
    let mut big = Arena::with_capacity(16 << 20).unwrap();
    let mut far = Ptr::null();
    for _ in 0..4 {
        far = big.alloc_zeroed::<[[u8; 4096]; 256]>().unwrap();
    }
    assert!(far.offset() > 1 << 20);
    let mut small = arena();
    small.alloc(1u8).unwrap();
    let range = Why::OutOfRange {
        size: 1 << 20,
        capacity: 1 << 20,
    };
    assert_eq!(reason(small.try_get(far)), range);
    let e = small.try_get(far).unwrap_err().to_string();
    assert!(
        e.contains("out of range") && e.contains("another capacity"),
        "{e}"
    );
    assert_eq!(reason(small.free(far)), range);
    let p: Ptr<u64> = forge(usize::MAX - 3, 1);
    assert!(matches!(reason(small.try_get(p)), Why::OutOfRange { .. }));
    let p: Ptr<u64> = forge((1 << 20) - 8, 1);
    assert!(matches!(
        reason(small.try_get_mut(p)),
        Why::OutOfRange { .. }
    ));
}

#[test]
fn misaligned() {
    let mut a = arena();
    let p = a.alloc(7u64).unwrap();
    let [off, stamp] = parts(p);
    let q: Ptr<u64> = forge(off as usize + 4, stamp);
    assert_eq!(reason(a.try_get(q)), Why::Misaligned { align: 8 });
    assert_eq!(reason(a.free(q)), Why::Misaligned { align: 8 });
    assert_eq!(*a.get(p), 7, "the real object is untouched");
}

#[test]
fn never_allocated() {
    let mut a = arena();
    let p = a.alloc(7u64).unwrap();
    let [off, stamp] = parts(p);
    // The next slot of the same slab: allocated by nobody.
    let q: Ptr<u64> = forge(off as usize + 16, stamp);
    assert_eq!(reason(a.try_get(q)), Why::NeverAllocated);
    assert_eq!(reason(a.free(q)), Why::NeverAllocated);
    // A forged stamp that is even was never handed out.
    let q: Ptr<u64> = forge(off as usize, stamp + 1);
    assert_eq!(reason(a.try_get(q)), Why::NotFromAlloc);
    // Offset 0 is the allocator's header.
    let q: Ptr<u64> = forge(0, stamp);
    assert_eq!(reason(a.try_get(q)), Why::NotAnObject { size: 8 });
}

/// A `Ptr` forged to name a slab's own header or bitmap, the middle of a slot, or the page's tail
/// past its last slot, carrying the very bytes that sit where its stamp would be, is refused like
/// any other: the allocator's metadata and a neighbour's bytes are never lent as an object.
#[test]
fn forged_ptrs_into_a_slab_off_its_slots() {
    let page = cowarena::page_size();
    let mut a = arena();
    // 16-byte objects in 24-byte slots: the slab of a fresh arena gives its first slot first.
    let objects: Vec<Ptr<[u64; 2]>> = (0..2).map(|i| a.alloc([2 * i + 1; 2]).unwrap()).collect();
    let first = objects[0].offset();
    let slab = first & !(page - 1);
    let slot = objects[1].offset() - first;
    assert_eq!(slot, 24);
    let slots = (slab + page - first) / slot;
    // Fill the slab, so that the next page is a slab too and its header follows the tail.
    for _ in 2..=slots {
        a.alloc([1u64; 2]).unwrap();
    }
    let tail = first + slots * slot;
    assert!(tail + 8 <= slab + page && tail + slot > slab + page);
    let header = (slab..first).step_by(8);
    let middles = [first + 8, first + 16, objects[1].offset() + 8];
    for at in header.chain(middles).chain([tail]) {
        let found = &a.as_bytes()[at + 16..at + 24];
        let p: Ptr<[u64; 2]> = forge(at, u64::from_ne_bytes(found.try_into().unwrap()));
        let not_an_object = Why::NotAnObject { size: 16 };
        assert_eq!(reason(a.try_get(p)), not_an_object, "offset {at:#x}");
        assert_eq!(reason(a.try_get_mut(p)), not_an_object, "offset {at:#x}");
        let get = catch_unwind(AssertUnwindSafe(|| *a.get(p)));
        assert!(get.is_err(), "get lends offset {at:#x}");
        assert_eq!(reason(a.free(p)), not_an_object, "offset {at:#x}");
    }
    for (i, &p) in objects.iter().enumerate() {
        assert_eq!(*a.get(p), [2 * i as u64 + 1; 2]);
    }
}

#[test]
fn uninitialized_allocator() {
    let a = arena();
    let p: Ptr<u64> = forge(8192, 1);
    assert_eq!(reason(a.try_get(p)), Why::NoAllocator);
}

#[test]
fn already_freed_and_reused() {
    let mut a = arena();
    let p = a.alloc(Point { x: 1, y: 2 }).unwrap();
    a.free(p).unwrap();
    assert_eq!(reason(a.try_get(p)), Why::Freed);
    assert_eq!(reason(a.try_get_mut(p)), Why::Freed);
    assert_eq!(reason(a.free(p)), Why::Freed, "double free");
    let q = a.alloc(Point { x: 3, y: 4 }).unwrap();
    assert_eq!(q.offset(), p.offset());
    assert_eq!(reason(a.try_get(p)), Why::Reused);
    assert_eq!(reason(a.free(p)), Why::Reused);
    assert_eq!(*a.get(q), Point { x: 3, y: 4 });
    let big = a.alloc_zeroed::<[[u8; 4096]; 2]>().unwrap();
    a.free(big).unwrap();
    assert_eq!(reason(a.try_get(big)), Why::Freed);
    assert_eq!(reason(a.free(big)), Why::Freed);
}

#[test]
fn from_another_arena_of_the_same_capacity() {
    let mut a = arena();
    let mut b = arena();
    let pa = a.alloc(1u64).unwrap();
    let pb = b.alloc(2u64).unwrap();
    assert_eq!(pa.offset(), pb.offset());
    assert_eq!(reason(b.try_get(pa)), Why::Reused);
    assert!(b
        .try_get(pa)
        .unwrap_err()
        .to_string()
        .contains("another arena"));
    assert!(b.free(pa).is_err());
    assert_eq!(*b.get(pb), 2);
}

#[test]
fn undone_by_restore() {
    let mut a = arena();
    let s = a.snapshot().unwrap();
    let p = a.alloc(1u64).unwrap();
    a.restore(&s).unwrap();
    assert_eq!(reason(a.try_get(p)), Why::NoAllocator);
    a.alloc(0u8).unwrap();
    let s = a.snapshot().unwrap();
    let p = a.alloc(1u64).unwrap();
    a.restore(&s).unwrap();
    assert_eq!(reason(a.try_get(p)), Why::NeverAllocated);
    assert!(a
        .try_get(p)
        .unwrap_err()
        .to_string()
        .contains("restored away"));
    let q = a.alloc(2u64).unwrap();
    assert_eq!(p.offset(), q.offset(), "the slot is reused");
    assert!(
        a.try_get(p).is_err(),
        "but the old Ptr is not mistaken for the new object"
    );
    assert!(s.try_get(p).is_err());
}

/// A large object a restore undid, on a page an earlier object was freed from, is not called
/// freed: it never was.
#[test]
fn undone_by_restore_is_not_called_freed() {
    let mut a = arena();
    let y: Ptr<[u64; 200]> = a.alloc([0; 200]).unwrap();
    a.free(y).unwrap();
    let before = a.snapshot().unwrap();
    let x: Ptr<[u64; 200]> = a.alloc([0; 200]).unwrap();
    assert_eq!(x.offset(), y.offset());
    a.restore(&before).unwrap();
    assert_eq!(reason(a.try_get(y)), Why::Freed);
    assert_ne!(reason(a.try_get(x)), Why::Freed);
}

#[test]
fn wrong_type_for_free() {
    let mut a = arena();
    let p = a.alloc(1u64).unwrap();
    let [off, stamp] = parts(p);
    let q: Ptr<[u8; 64]> = forge(off as usize, stamp);
    assert!(a.free(q).is_err());
    assert_eq!(*a.get(p), 1);
    a.free(p).unwrap();
}

#[test]
fn get_panics_with_the_reason() {
    let mut a = arena();
    let p = a.alloc(1u64).unwrap();
    a.free(p).unwrap();
    let msg = |r: std::thread::Result<()>| {
        let e = r.unwrap_err();
        e.downcast_ref::<String>().cloned().unwrap_or_default()
    };
    let m = msg(catch_unwind(AssertUnwindSafe(|| {
        a.get(p);
    })));
    assert!(
        m.contains("invalid pointer") && m.contains("was freed"),
        "{m}"
    );
    let m = msg(catch_unwind(AssertUnwindSafe(|| {
        *a.get_mut(p) = 3;
    })));
    assert!(m.contains("was freed"), "{m}");
    let s = a.snapshot().unwrap();
    let m = msg(catch_unwind(AssertUnwindSafe(|| {
        s.get(p);
    })));
    assert!(m.contains("was freed"), "{m}");
}

#[test]
fn raw_bytes_before_first_typed_use_are_refused() {
    let mut a = arena();
    a.write(16, b"raw").unwrap();
    let e = a.alloc(1u8).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    // Raw bytes past the allocator's metadata are simply taken over.
    let mut b = arena();
    b.write(1 << 19, b"raw").unwrap();
    b.alloc(1u8).unwrap();
}

#[test]
fn corrupted_header_is_an_error() {
    let mut a = arena();
    let p = a.alloc(5u64).unwrap();
    a.write(0, &[0xff; 64]).unwrap();
    assert!(matches!(a.alloc(1u64), Err(Error::Corrupt(_))));
    assert!(a.free(p).is_err());
    assert_eq!(*a.get(p), 5, "objects are checked by their own stamps");
    assert!(a.alloc_stats().is_err());
}

#[test]
fn random_raw_writes_never_cause_panics_in_fallible_calls() {
    let page = cowarena::page_size();
    for seed in 1..300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut a = Arena::with_capacity(1 << 20).unwrap();
        let mut ptrs = Vec::new();
        let v = ArenaVec::<u32>::new(&mut a).unwrap();
        let m = ArenaMap::<u32, u32>::new(&mut a).unwrap();
        let s = ArenaBytes::new(&mut a).unwrap();
        for i in 0..200u32 {
            ptrs.push(a.alloc(i).unwrap());
            v.push(&mut a, i).unwrap();
            m.insert(&mut a, i, i).unwrap();
            s.append(&mut a, &[i as u8]).unwrap();
            if i % 3 == 0 {
                a.alloc_zeroed::<[[u8; 4096]; 2]>().unwrap();
            }
        }
        // Scribble over metadata and objects alike: the header, the page map, slab headers.
        let used = a.alloc_stats().unwrap().heap_pages + 2;
        for _ in 0..(1 + rng.below(40)) {
            let at = if rng.below(2) == 0 {
                rng.below(2048)
            } else {
                rng.below(used) * page + rng.below(256)
            };
            let len = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let at = at.min((1 << 20) - len);
            a.write(at, &bytes).unwrap();
        }
        let r = catch_unwind(AssertUnwindSafe(|| {
            for (i, &p) in ptrs.iter().enumerate() {
                let _ = a.try_get(p);
                let _ = a.try_get_mut(p);
                if i % 2 == 0 {
                    let _ = a.free(p);
                }
                let _ = a.alloc(i as u64);
                let _ = a.alloc_zeroed::<[[u8; 4096]; 3]>();
            }
            let _ = v.try_as_slice(&a);
            let _ = v.push(&mut a, 1);
            let _ = v.try_pop(&mut a);
            let _ = m.try_get(&a, &3);
            let _ = m.insert(&mut a, 1000, 1);
            let _ = m.try_remove(&mut a, &5);
            let _ = s.try_as_slice(&a);
            let _ = s.append(&mut a, b"more");
            let _ = a.alloc_stats();
            let snap = a.snapshot().unwrap();
            for &p in &ptrs {
                let _ = snap.try_get(p);
            }
        }));
        assert!(r.is_ok(), "seed {seed}: a fallible call panicked");
    }
}

/// Allocates objects of `M` words, each filled with `stamp`, until `used` pages of the arena
/// have been handed out again: whatever reuses a stale `Ptr`'s memory holds its stamp at every
/// aligned word.
fn cover_with<const M: usize>(a: &mut Arena, stamp: u64, objects: usize) -> Vec<Ptr<[u64; M]>> {
    (0..objects).map(|_| a.alloc([stamp; M]).unwrap()).collect()
}

/// A freed `Ptr`, or one a restore undid, is refused (and cannot be freed) whatever the objects
/// that reuse its memory hold, even its own stamp at every word.
fn stale_ptrs_stay_stale<const N: usize>() {
    for undo in [false, true] {
        let mut a = Arena::with_capacity(1 << 22).unwrap();
        let before = a.snapshot().unwrap();
        let x: Ptr<[u64; N]> = a.alloc([1; N]).unwrap();
        let stamp = u64::from_ne_bytes(bytemuck::bytes_of(&x)[8..16].try_into().unwrap());
        if undo {
            a.restore(&before).unwrap();
        } else {
            a.free(x).unwrap();
        }
        let small = cover_with::<2>(&mut a, stamp, 300);
        let medium = cover_with::<100>(&mut a, stamp, 20);
        let large = cover_with::<600>(&mut a, stamp, 4);
        let larger = cover_with::<1100>(&mut a, stamp, 4);
        assert!(
            a.try_get(x).is_err(),
            "N = {N}, undo = {undo}: the stale Ptr is accepted"
        );
        assert!(
            a.free(x).is_err(),
            "N = {N}, undo = {undo}: the stale Ptr frees memory"
        );
        for p in &large {
            a.free(*p).unwrap();
        }
        let again = cover_with::<1100>(&mut a, stamp, 2);
        assert!(a.try_get(x).is_err(), "N = {N}, undo = {undo}, after reuse");
        let objects = small.len() + medium.len() + larger.len() + again.len();
        let stats = a.alloc_stats().unwrap();
        assert_eq!(stats.small_objects + stats.large_objects, objects);
    }
}

#[test]
fn stale_ptrs_stay_stale_whatever_reuses_their_memory() {
    stale_ptrs_stay_stale::<1>();
    stale_ptrs_stay_stale::<3>();
    stale_ptrs_stay_stale::<40>();
    stale_ptrs_stay_stale::<127>();
    stale_ptrs_stay_stale::<129>();
    stale_ptrs_stay_stale::<511>();
    stale_ptrs_stay_stale::<512>();
    stale_ptrs_stay_stale::<700>();
    stale_ptrs_stay_stale::<1100>();
}
