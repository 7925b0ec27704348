//! The seed's Proxy examples, and what a proxy sees of typed values when it or its source
//! allocates, snapshots, restores or is dropped.

use bytemuck::{Pod, Zeroable};
use cowarena::{page_size, Arena, ArenaMap, ArenaVec, Error, Ptr, View, ViewMut};

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
    assert_eq!(b.with(&arena).unwrap().get(a).x, 1);
    arena.get_mut(a).x = 42;
    assert_eq!(b.with(&arena).unwrap().get(a).x, 42);
    // b.x = 420; a.x == 42; b.x == 420
    b.with_mut(&arena).unwrap().get_mut(a).x = 420;
    assert_eq!(arena.get(a).x, 42);
    assert_eq!(b.with(&arena).unwrap().get(a).x, 420);
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
    let d_a = d.with(&arena).unwrap().get(c).a;
    assert_eq!(d.with(&arena).unwrap().get(d_a).x, 10);
    // b.y = 20 shows as d.b.y == 20
    arena.get_mut(b).y = 20;
    let d_b = d.with(&arena).unwrap().get(c).b;
    assert_eq!(d.with(&arena).unwrap().get(d_b).y, 20);
    // d.a.x = 100: d.a.x == 100, d.a.y == a.y, a.x == 10, c.a.x == 10
    d.with_mut(&arena).unwrap().get_mut(d_a).x = 100;
    let view = d.with(&arena).unwrap();
    assert_eq!(view.get(d_a).x, 100);
    assert_eq!(view.get(d_a).y, arena.get(a).y);
    assert_eq!(arena.get(a).x, 10);
    let c_a = arena.get(c).a;
    assert_eq!(arena.get(c_a).x, 10);
    // d's TwoPoints still names the same objects, and c is untouched by d.
    assert_eq!(*view.get(c), *arena.get(c));
}

#[test]
fn a_proxy_write_copies_the_whole_page() {
    let mut arena = arena();
    let a = arena.alloc(Point { x: 1, y: 2 }).unwrap();
    let b = arena.alloc(Point { x: 3, y: 4 }).unwrap();
    assert_eq!(a.offset() / page_size(), b.offset() / page_size());
    let far = arena.alloc(PagePoint::zeroed()).unwrap();
    let mut d = arena.proxy().unwrap();
    d.with_mut(&arena).unwrap().get_mut(a).x = 100;
    // b shares a's page: d no longer sees the source's writes to it.
    arena.get_mut(b).y = 30;
    assert_eq!(d.with(&arena).unwrap().get(b).y, 4);
    // An object on a page d never wrote still reads through.
    arena.get_mut(far).p.x = 7;
    assert_eq!(d.with(&arena).unwrap().get(far).p.x, 7);
}

#[test]
fn what_a_proxy_sees_when_its_source_snapshots_restores_and_drops() {
    let mut arena = arena();
    let p = arena.alloc(PagePoint::zeroed()).unwrap();
    let q = arena.alloc(PagePoint::zeroed()).unwrap();
    arena.get_mut(p).p = Point { x: 1, y: 1 };
    let d = arena.proxy().unwrap();
    let s = arena.snapshot().unwrap();
    let seen = |arena: &Arena| {
        let v = d.with(arena).unwrap();
        (v.get(p).p.x, v.get(q).p.x)
    };
    assert_eq!(
        seen(&arena).0,
        1,
        "a snapshot of the source changes nothing"
    );
    arena.get_mut(p).p.x = 2;
    arena.get_mut(q).p.x = 5;
    assert_eq!(seen(&arena), (2, 5));
    arena.restore(&s).unwrap();
    assert_eq!(seen(&arena), (1, 0), "the restored values show");
    arena.get_mut(p).p.x = 3;
    assert!(matches!(d.without_source(), Err(Error::SourceAlive)));
    drop(arena);
    assert!(d.source_dropped());
    let v = d.without_source().unwrap();
    assert_eq!(v.get(p).p.x, 3, "a dropped source leaves its last values");
}

#[test]
fn a_proxy_reads_only_through_its_own_source() {
    let mut source = arena();
    let mut other = arena();
    let d = source.proxy().unwrap();
    let mut e = other.proxy().unwrap();
    assert!(d.is_proxy_of(&source) && !d.is_proxy_of(&other));
    assert!(matches!(d.with(&other), Err(Error::NotTheSource)));
    assert!(matches!(e.with_mut(&source), Err(Error::NotTheSource)));
    // A proxy's own arena is not a source either.
    let view = e.with(&other).unwrap();
    assert!(matches!(d.with(&view), Err(Error::NotTheSource)));
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
    let mut w = d.with_mut(&arena).unwrap();
    let a = w.alloc(Point { x: 5, y: 6 }).unwrap();
    let b = w.alloc(Point { x: 7, y: 8 }).unwrap();
    *w.get_mut(root) = TwoPoints { a, b };
    let big = w.alloc(PagePoint::zeroed()).unwrap();
    w.free(big).unwrap();
    assert_eq!(*w.get(w.get(root).b), Point { x: 7, y: 8 });
    // Collections read and grow through the proxy like in any arena.
    for i in 0..1000 {
        v.push(&mut w, Point { x: i, y: i }).unwrap();
        m.insert(&mut w, i as u32 + 1, Point { x: -i, y: 0 })
            .unwrap();
    }
    assert_eq!(v.len(&w), 1001);
    assert_eq!(v.as_slice(&w)[0], Point { x: 1, y: 1 });
    assert_eq!(m.get(&w, &1), Some(&Point { x: 0, y: 0 }));
    assert_eq!(m.get(&w, &1000), Some(&Point { x: -999, y: 0 }));
    v.view_mut(&mut w)[5].x = 55;
    assert_eq!(v.as_slice(&w)[5].x, 55);
    // None of it is in the source, whose allocator never saw it.
    let s = w.snapshot().unwrap();
    assert!(arena.try_get(a).is_err());
    assert_eq!(*arena.get(root), TwoPoints::zeroed());
    assert_eq!(v.as_slice(&arena), &[Point { x: 1, y: 1 }]);
    assert_eq!(m.len(&arena), 1);
    // A snapshot of the proxy freezes what it sees, and forks from it.
    let f = s.to_arena().unwrap();
    assert_eq!(f.get(f.get(root).a).x, 5);
    assert_eq!(v.len(&f), 1001);
    // The source can take the proxy's state by restoring its snapshot.
    arena.restore(&s).unwrap();
    assert_eq!(arena.get(arena.get(root).b).y, 8);
}

#[test]
fn readers_on_other_threads_see_whole_writes_under_a_lock() {
    // The two-thread experiment: a writer changes an object of the source in a loop while
    // readers read it through a proxy. Sharing them takes a lock; no read is ever torn.
    let mut arena = arena();
    let p = arena.alloc([0u64; 64]).unwrap();
    let proxy = arena.proxy().unwrap();
    let source = std::sync::RwLock::new(arena);
    let torn = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 1..=20_000u64 {
                source.write().unwrap().get_mut(p).fill(i);
            }
        });
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..20_000 {
                    let a = source.read().unwrap();
                    let v = proxy.with(&a).unwrap();
                    let obj = v.get(p);
                    if obj.iter().any(|&x| x != obj[0]) {
                        torn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(torn.into_inner(), 0);
    let a = source.into_inner().unwrap();
    assert_eq!(proxy.with(&a).unwrap().get(p)[63], 20_000);
}
