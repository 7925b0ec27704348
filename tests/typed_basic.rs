//! The typed API: allocation, access, free and reuse, roots, large and zero-sized objects, and
//! values across snapshot, restore and to_arena.

use bytemuck::{Pod, Zeroable};
use cowarena::{page_size, Arena, Error, Ptr, View};

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Point {
    x: i32,
    y: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([u8; 64]);

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C, align(128))]
struct Wide([u64; 16]);

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Empty;

fn arena() -> Arena {
    Arena::with_capacity(4 << 20).unwrap()
}

#[test]
fn alloc_get_get_mut() {
    let mut a = arena();
    let p = a.alloc(Point { x: 1, y: 2 }).unwrap();
    assert_eq!(*a.get(p), Point { x: 1, y: 2 });
    a.get_mut(p).y = 5;
    assert_eq!(a.try_get(p).unwrap().y, 5);
    assert_eq!(
        &a.as_bytes()[p.offset()..p.offset() + 8],
        bytemuck::bytes_of(a.get(p))
    );
}

#[test]
fn many_objects_keep_their_values() {
    let mut a = arena();
    let ptrs: Vec<Ptr<u64>> = (0..20_000u64).map(|i| a.alloc(i * 3).unwrap()).collect();
    for (i, &p) in ptrs.iter().enumerate() {
        assert_eq!(*a.get(p), i as u64 * 3);
    }
    let mut offsets: Vec<usize> = ptrs.iter().map(|p| p.offset()).collect();
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(offsets.len(), ptrs.len(), "distinct objects never overlap");
}

#[test]
fn alignment_is_honoured_for_every_size_class() {
    let mut a = arena();
    let l = a.alloc(Line([7; 64])).unwrap();
    assert_eq!(l.offset() % 64, 0);
    let w = a.alloc(Wide([9; 16])).unwrap();
    assert_eq!(w.offset() % 128, 0);
    let q = a.alloc(7u128).unwrap();
    assert_eq!(q.offset() % align_of::<u128>(), 0);
    assert_eq!(a.get(l).0[63], 7);
    assert_eq!(a.get(w).0[15], 9);
    assert_eq!(*a.get(q), 7);
    for size in [1usize, 7, 8, 9, 24, 100, 500, 1000, 1016, 1017, 5000] {
        let bytes = vec![size as u8; size];
        let v = cowarena::ArenaBytes::from_slice(&mut a, &bytes).unwrap();
        assert_eq!(v.as_slice(&a), &bytes[..]);
    }
}

#[test]
fn freed_space_is_reused() {
    let mut a = arena();
    let p = a.alloc(1u64).unwrap();
    a.free(p).unwrap();
    let q = a.alloc(2u64).unwrap();
    assert_eq!(p.offset(), q.offset());
    assert_ne!(p, q, "a reused slot gets a new stamp");
    assert!(a.try_get(p).is_err());
    assert_eq!(*a.get(q), 2);
}

#[test]
fn filling_freeing_and_refilling_reaches_the_same_count() {
    let mut a = Arena::with_capacity(1 << 20).unwrap();
    let fill = |a: &mut Arena| {
        let mut v = Vec::new();
        loop {
            match a.alloc([0u8; 256]) {
                Ok(p) => v.push(p),
                Err(Error::OutOfMemory {
                    requested, align, ..
                }) => {
                    assert_eq!((requested, align), (256, 1));
                    return v;
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    };
    let first = fill(&mut a);
    assert!(first.len() > 1000);
    for &p in &first {
        a.free(p).unwrap();
    }
    let stats = a.alloc_stats().unwrap();
    assert_eq!(stats.small_objects, 0);
    // Large objects can now use the pages the emptied slabs gave back.
    let big = a.alloc([[1u8; 4096]; 24]).unwrap();
    a.free(big).unwrap();
    let second = fill(&mut a);
    assert!(
        second.len() + 3 >= first.len(),
        "{} after refill vs {} at first",
        second.len(),
        first.len()
    );
}

#[test]
fn large_objects_free_and_merge() {
    let mut a = arena();
    let page = page_size();
    let big: Vec<Ptr<[[u8; 1024]; 10]>> = (0..50)
        .map(|i| a.alloc([[i as u8; 1024]; 10]).unwrap())
        .collect();
    for (i, &p) in big.iter().enumerate() {
        assert_eq!(p.offset() % page, 0);
        assert_eq!(a.get(p)[9][1023], i as u8);
    }
    // Free every other one, then the rest: neighbours merge into long runs, and `top` falls.
    for &p in big.iter().step_by(2) {
        a.free(p).unwrap();
    }
    for &p in big.iter().skip(1).step_by(2) {
        a.free(p).unwrap();
    }
    let s = a.alloc_stats().unwrap();
    assert_eq!((s.large_objects, s.large_pages, s.free_pages), (0, 0, 0));
    assert_eq!(s.heap_pages, 0);
    // Something as large as all of them together fits where they were.
    let huge = a.alloc_zeroed::<[[u8; 4096]; 128]>().unwrap();
    assert_eq!(huge.offset(), big[0].offset());
}

#[test]
fn out_of_memory_names_the_request() {
    let mut a = Arena::with_capacity(64 << 10).unwrap();
    let err = a.alloc_zeroed::<[[u8; 4096]; 256]>().unwrap_err();
    match err {
        Error::OutOfMemory {
            requested,
            align,
            capacity,
        } => assert_eq!((requested, align, capacity), (1 << 20, 1, 64 << 10)),
        e => panic!("unexpected {e}"),
    }
    assert!(err_string(a.alloc([[0u8; 4096]; 16])).contains("65536 bytes"));
}

fn err_string<T: std::fmt::Debug>(r: cowarena::Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn zero_sized_types_are_distinct_objects() {
    let mut a = arena();
    let p = a.alloc(Empty).unwrap();
    let q = a.alloc(Empty).unwrap();
    assert_ne!(p.offset(), q.offset());
    assert_eq!(*a.get(p), Empty);
    *a.get_mut(q) = Empty;
    a.free(p).unwrap();
    assert!(a.try_get(p).is_err());
    assert!(a.try_get(q).is_ok());
}

#[test]
fn root_round_trips_through_snapshots_and_forks() {
    let mut a = arena();
    assert_eq!(a.root::<Point>(), None);
    let p = a.alloc(Point { x: 3, y: 4 }).unwrap();
    a.set_root(p);
    assert_eq!(a.root::<Point>(), Some(p));
    assert_eq!(a.root::<u64>(), None, "a root of another type is not found");
    let s = a.snapshot().unwrap();
    assert_eq!(s.root::<Point>(), Some(p));
    let b = s.to_arena().unwrap();
    assert_eq!(*b.get(b.root::<Point>().unwrap()), Point { x: 3, y: 4 });
    a.set_root(Ptr::<Point>::null());
    assert_eq!(a.root::<Point>(), None);
    a.restore(&s).unwrap();
    assert_eq!(a.root::<Point>(), Some(p));
}

#[test]
#[should_panic(expected = "was freed")]
fn set_root_refuses_a_freed_object() {
    let mut a = arena();
    let p = a.alloc(1u8).unwrap();
    a.free(p).unwrap();
    a.set_root(p);
}

#[test]
fn restore_brings_back_values_and_allocator() {
    let mut a = arena();
    let p = a.alloc(Point { x: 1, y: 1 }).unwrap();
    let before = a.snapshot().unwrap();
    let stats_before = a.alloc_stats().unwrap();
    let later: Vec<Ptr<Point>> = (0..1000)
        .map(|i| a.alloc(Point { x: i, y: i }).unwrap())
        .collect();
    let big = a.alloc([[5u8; 4096]; 12]).unwrap();
    a.get_mut(p).x = 99;
    a.free(p).unwrap();
    a.restore(&before).unwrap();
    assert_eq!(a.alloc_stats().unwrap(), stats_before);
    assert_eq!(*a.get(p), Point { x: 1, y: 1 });
    for &q in &later {
        let e = a.try_get(q).unwrap_err();
        assert!(matches!(e, Error::InvalidPtr { .. }), "{e}");
    }
    assert!(a.try_get(big).is_err());
    // The space they took is free again, and new objects there are not mistaken for old ones.
    let again: Vec<Ptr<Point>> = (0..1000)
        .map(|i| a.alloc(Point { x: -i, y: 0 }).unwrap())
        .collect();
    assert_eq!(again[0].offset(), later[0].offset());
    assert!(a.try_get(later[0]).is_err());
    assert_eq!(a.get(again[5]).x, -5);
}

#[test]
fn snapshot_reads_and_forks_are_independent() {
    let mut a = arena();
    let p = a.alloc(Point { x: 1, y: 2 }).unwrap();
    let s = a.snapshot().unwrap();
    a.get_mut(p).x = 10;
    let mut f1 = s.to_arena().unwrap();
    let mut f2 = s.to_arena().unwrap();
    f1.get_mut(p).x = 11;
    let q1 = f1.alloc(Point { x: 5, y: 5 }).unwrap();
    let q2 = f2.alloc(Point { x: 6, y: 6 }).unwrap();
    assert_eq!(q1.offset(), q2.offset(), "forks allocate alike");
    assert!(
        f2.try_get(q1).is_err(),
        "but a Ptr of one fork is refused in the other"
    );
    assert_eq!(
        (s.get(p).x, a.get(p).x, f1.get(p).x, f2.get(p).x),
        (1, 10, 11, 1)
    );
    // Snapshots are readable from other threads while the arena changes.
    let reader = std::thread::spawn({
        let s = s.clone();
        move || s.get(p).x
    });
    a.get_mut(p).x = 12;
    assert_eq!(reader.join().unwrap(), 1);
}

#[test]
fn pages_dirtied_per_allocation_are_few() {
    let mut a = Arena::with_capacity(16 << 20).unwrap();
    let mut total = 0;
    let n = 5000;
    let mut live = Vec::new();
    for i in 0..n {
        a.snapshot().unwrap();
        live.push(a.alloc(i as u64).unwrap());
        total += a.stats().dirty_pages;
        assert!(
            a.stats().dirty_pages <= 4,
            "one alloc dirtied {}",
            a.stats().dirty_pages
        );
    }
    assert!(total <= n + n / 10, "{total} pages for {n} allocations");
    for p in live {
        a.snapshot().unwrap();
        a.free(p).unwrap();
        assert!(
            a.stats().dirty_pages <= 6,
            "one free dirtied {}",
            a.stats().dirty_pages
        );
    }
}

#[test]
fn generic_readers_work_on_arenas_and_snapshots() {
    fn total(v: &impl View, ps: &[Ptr<Point>]) -> i32 {
        ps.iter()
            .map(|&p| v.get(p).x + v.try_get(p).unwrap().y)
            .sum()
    }
    let mut a = arena();
    let ps: Vec<Ptr<Point>> = (0..10)
        .map(|i| a.alloc(Point { x: i, y: 1 }).unwrap())
        .collect();
    let s = a.snapshot().unwrap();
    a.get_mut(ps[0]).x = 100;
    assert_eq!(total(&s, &ps), 55);
    assert_eq!(total(&a, &ps), 155);
}
