//! The seed's Proxy examples, and what a proxy sees of typed values when it or its source
//! allocates, snapshots, restores or is dropped.

use bytemuck::{Pod, Zeroable};
use cowarena::{page_size, Arena, ArenaMap, ArenaVec, Ptr};

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Point {
    x: i32,
    y: i32,
}

/// Holds its points by reference, as the Python original does.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct TwoPoints {
    a: Ptr<Point>,
    b: Ptr<Point>,
}

/// A point with a page of its own (objects over 1016 bytes are page runs).
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct PagePoint {
    p: Point,
    _fill: [u8; 2048],
}

fn arena() -> Arena {
    Arena::with_capacity(1 << 20).unwrap()
}

#[test]
fn seed_example_proxy_of_a_point() {
    // a = Point(1, 2); b = Proxy(a)
    let mut arena = arena();
    let a = arena.alloc(Point { x: 1, y: 2 }).unwrap();
    let mut b = arena.proxy().unwrap();
    // b.x == 1;  a.x = 42;  b.x == 42
    assert_eq!(b.get(a).x, 1);
    arena.get_mut(a).x = 42;
    assert_eq!(b.get(a).x, 42);
    // b.x = 420; a.x == 42; b.x == 420
    b.get_mut(a).x = 420;
    assert_eq!(arena.get(a).x, 42);
    assert_eq!(b.get(a).x, 420);
}

#[test]
fn seed_example_nested_proxy() {
    // a = Point(1, 2); b = Point(3, 4); c = TwoPoints(a, b); d = Proxy(c)
    let mut arena = arena();
    let a = arena.alloc(Point { x: 1, y: 2 }).unwrap();
    let b = arena.alloc(Point { x: 3, y: 4 }).unwrap();
    let c = arena.alloc(TwoPoints { a, b }).unwrap();
    let mut d = arena.proxy().unwrap();
    // a.x = 10 shows as d.a.x == 10
    arena.get_mut(a).x = 10;
    let d_a = d.get(c).a;
    assert_eq!(d.get(d_a).x, 10);
    // b.y = 20 shows as d.b.y == 20
    arena.get_mut(b).y = 20;
    let d_b = d.get(c).b;
    assert_eq!(d.get(d_b).y, 20);
    // d.a.x = 100: d.a.x == 100, d.a.y == a.y, a.x == 10, c.a.x == 10
    d.get_mut(d_a).x = 100;
    assert_eq!(d.get(d_a).x, 100);
    assert_eq!(d.get(d_a).y, arena.get(a).y);
    assert_eq!(arena.get(a).x, 10);
    let c_a = arena.get(c).a;
    assert_eq!(arena.get(c_a).x, 10);
    // d's TwoPoints still names the same objects, and c is untouched by d.
    assert_eq!(*d.get(c), *arena.get(c));
}

#[test]
fn a_proxy_write_copies_the_whole_page() {
    let mut arena = arena();
    let a = arena.alloc(Point { x: 1, y: 2 }).unwrap();
    let b = arena.alloc(Point { x: 3, y: 4 }).unwrap();
    assert_eq!(a.offset() / page_size(), b.offset() / page_size());
    let far = arena.alloc(PagePoint::zeroed()).unwrap();
    let mut d = arena.proxy().unwrap();
    d.get_mut(a).x = 100;
    // b shares a's page: d no longer sees the source's writes to it.
    arena.get_mut(b).y = 30;
    assert_eq!(d.get(b).y, 4);
    // An object on a page d never wrote still reads through.
    arena.get_mut(far).p.x = 7;
    assert_eq!(d.get(far).p.x, 7);
}

#[test]
fn what_a_proxy_sees_when_its_source_snapshots_restores_and_drops() {
    let mut arena = arena();
    let p = arena.alloc(PagePoint::zeroed()).unwrap();
    let q = arena.alloc(PagePoint::zeroed()).unwrap();
    arena.get_mut(p).p = Point { x: 1, y: 1 };
    let d = arena.proxy().unwrap();
    let s = arena.snapshot().unwrap();
    assert_eq!(d.get(p).p.x, 1, "a snapshot of the source changes nothing");
    arena.get_mut(p).p.x = 2;
    arena.get_mut(q).p.x = 5;
    assert_eq!((d.get(p).p.x, d.get(q).p.x), (2, 5));
    arena.restore(&s).unwrap();
    assert_eq!(
        (d.get(p).p.x, d.get(q).p.x),
        (1, 0),
        "the restored values show"
    );
    arena.get_mut(p).p.x = 3;
    drop(arena);
    assert_eq!(d.get(p).p.x, 3, "a dropped source leaves its last values");
}

#[test]
fn restoring_a_proxy_detaches_it() {
    let mut arena = arena();
    let p = arena.alloc(PagePoint::zeroed()).unwrap();
    let mut d = arena.proxy().unwrap();
    let s = d.snapshot().unwrap();
    d.get_mut(p).p.x = 9;
    d.restore(&s).unwrap();
    assert!(!d.stats().is_proxy);
    arena.get_mut(p).p.x = 4;
    assert_eq!(d.get(p).p.x, 0, "no longer reads through");
}

#[test]
fn a_proxy_allocates_on_its_own() {
    let mut arena = arena();
    let root = arena.alloc(TwoPoints::zeroed()).unwrap();
    let v = ArenaVec::<Point>::new(&mut arena).unwrap();
    let m = ArenaMap::<u32, Point>::new(&mut arena).unwrap();
    v.push(&mut arena, Point { x: 1, y: 1 }).unwrap();
    m.insert(&mut arena, 1, Point { x: 1, y: 1 }).unwrap();
    let mut d = arena.proxy().unwrap();
    // The source is left alone while the proxy works, as with a scratch copy.
    let a = d.alloc(Point { x: 5, y: 6 }).unwrap();
    let b = d.alloc(Point { x: 7, y: 8 }).unwrap();
    *d.get_mut(root) = TwoPoints { a, b };
    for i in 0..1000 {
        v.push(&mut d, Point { x: i, y: i }).unwrap();
        m.insert(&mut d, i as u32, Point { x: -i, y: 0 }).unwrap();
    }
    let big = d.alloc(PagePoint::zeroed()).unwrap();
    d.free(big).unwrap();
    assert_eq!(*d.get(d.get(root).b), Point { x: 7, y: 8 });
    assert_eq!(v.len(&d), 1001);
    assert_eq!(m.get(&d, &999), Some(&Point { x: -999, y: 0 }));
    // None of it is in the source, whose allocator never saw it.
    assert!(arena.try_get(a).is_err());
    assert_eq!(*arena.get(root), TwoPoints::zeroed());
    assert_eq!(v.as_slice(&arena), &[Point { x: 1, y: 1 }]);
    assert_eq!(m.len(&arena), 1);
    // A snapshot of the proxy freezes what it sees, and forks from it.
    let s = d.snapshot().unwrap();
    let f = s.to_arena().unwrap();
    assert_eq!(v.len(&f), 1001);
    assert_eq!(f.get(f.get(root).a).x, 5);
}
