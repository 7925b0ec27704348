//! Typed values: allocation, access, read-modify-write loops over a vector and the hash map, each
//! next to its std baseline, plus the pages one allocation or free dirties (printed before the
//! timings) and, after them, the ratios to the baselines that the project's goals name, measured
//! in alternating rounds of one run.
//!
//! `cargo bench --bench typed -- --warm-up-time 1 --measurement-time 3`

use bytemuck::{Pod, Zeroable};
use cowarena::{Arena, ArenaMap, ArenaVec, Ptr, VecMut};
use criterion::{black_box, criterion_group, Criterion, Throughput};
use slotmap::{DefaultKey, SlotMap};
use std::collections::HashMap;

mod paired;
use paired::{paired, report};

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Point {
    x: i64,
    y: i64,
}

const OBJECTS: usize = 1000;

/// One allocation and free of a 16-byte object, and the same with `Box`: both see the value and
/// the handle through `black_box`, so neither can be optimized away or folded.
#[inline(always)]
fn arena_one(a: &mut Arena) {
    let p = a.alloc(black_box(Point { x: 1, y: 2 })).unwrap();
    a.free(black_box(p)).unwrap();
}

#[inline(always)]
fn box_one() {
    let p = Box::new(black_box(Point { x: 1, y: 2 }));
    drop(black_box(p));
}

/// A field of every object, through `get` and through plain references.
#[inline(always)]
fn arena_get_sum(a: &Arena, ptrs: &[Ptr<Point>]) -> i64 {
    let a = black_box(a);
    ptrs.iter().map(|&p| a.get(p).x).sum()
}

#[inline(always)]
fn ref_sum(refs: &[&Point]) -> i64 {
    black_box(refs).iter().map(|r| r.x).sum()
}

/// The same through a generational slot map's checked `get` (an index and a version compare),
/// the usual safe alternative to an arena's checked handle.
#[inline(always)]
fn slotmap_sum(map: &SlotMap<DefaultKey, Point>, keys: &[DefaultKey]) -> i64 {
    let map = black_box(map);
    keys.iter().map(|&k| map.get(k).expect("live key").x).sum()
}

/// `OBJECTS` points in a slot map, and their keys.
fn slotmap_points() -> (SlotMap<DefaultKey, Point>, Vec<DefaultKey>) {
    let mut map = SlotMap::new();
    let keys = (0..OBJECTS as i64)
        .map(|i| map.insert(Point { x: i, y: -i }))
        .collect();
    (map, keys)
}

fn alloc_free(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc_free");
    g.throughput(Throughput::Elements(1));
    let mut a = Arena::with_capacity(64 << 20).unwrap();
    g.bench_function("cowarena one", |b| b.iter(|| arena_one(&mut a)));
    g.bench_function("Box one", |b| b.iter(box_one));
    g.throughput(Throughput::Elements(OBJECTS as u64));
    let mut ptrs = Vec::with_capacity(OBJECTS);
    g.bench_function("cowarena 1000 then free", |b| {
        b.iter(|| {
            for i in 0..OBJECTS as i64 {
                ptrs.push(a.alloc(Point { x: i, y: i }).unwrap());
            }
            for p in ptrs.drain(..) {
                a.free(p).unwrap();
            }
        })
    });
    let mut boxes = Vec::with_capacity(OBJECTS);
    g.bench_function("Box 1000 then free", |b| {
        b.iter(|| {
            for i in 0..OBJECTS as i64 {
                boxes.push(Box::new(Point { x: i, y: i }));
            }
            boxes.drain(..).for_each(|p| drop(black_box(p)));
        })
    });
    g.finish();
}

fn get(c: &mut Criterion) {
    let mut g = c.benchmark_group("get");
    g.throughput(Throughput::Elements(OBJECTS as u64));
    let mut a = Arena::with_capacity(64 << 20).unwrap();
    let ptrs: Vec<Ptr<Point>> = (0..OBJECTS as i64)
        .map(|i| a.alloc(Point { x: i, y: -i }).unwrap())
        .collect();
    let boxes: Vec<Box<Point>> = (0..OBJECTS as i64)
        .map(|i| Box::new(Point { x: i, y: -i }))
        .collect();
    let refs: Vec<&Point> = boxes.iter().map(|b| &**b).collect();
    g.bench_function("cowarena get", |b| b.iter(|| arena_get_sum(&a, &ptrs)));
    g.bench_function("plain reference", |b| b.iter(|| ref_sum(&refs)));
    let (slots, keys) = slotmap_points();
    g.bench_function("slotmap get", |b| b.iter(|| slotmap_sum(&slots, &keys)));
    let s = a.snapshot().unwrap();
    g.bench_function("snapshot get", |b| {
        b.iter(|| {
            let s = black_box(&s);
            ptrs.iter().map(|&p| s.get(p).x).sum::<i64>()
        })
    });
    g.bench_function("cowarena get_mut", |b| {
        b.iter(|| {
            for &p in &ptrs {
                a.get_mut(p).y += 1;
            }
        })
    });
    let mut boxes = boxes;
    g.bench_function("plain mutable reference", |b| {
        b.iter(|| {
            for p in black_box(&mut boxes).iter_mut() {
                p.y += 1;
            }
        })
    });
    g.finish();
}

/// Elements of the read-modify-write loops: 256 KiB of `u32`, 64 pages.
const ELEMS: usize = 1 << 16;
/// Random indices each loop visits.
const VISITS: usize = 4096;

/// `VISITS` indices below `ELEMS`, scattered over the whole vector.
fn indices() -> Vec<u32> {
    let mut x = 0x2545_F491_4F6C_DD1D_u64;
    (0..VISITS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % ELEMS as u64) as u32
        })
        .collect()
}

/// The read-modify-write loop: a counter per visited index, as a solver's per-clause counters.
#[inline(always)]
fn rmw_view(v: &mut VecMut<'_, u32>, idx: &[u32]) {
    for &i in idx {
        v[i as usize] += 1;
    }
}

#[inline(always)]
fn rmw_vec(v: &mut [u32], idx: &[u32]) {
    for &i in idx {
        v[i as usize] += 1;
    }
}

/// The same loop as it had to be written before the views: validate the vector twice per step.
#[inline(always)]
fn rmw_as_slice_and_set(a: &mut Arena, v: ArenaVec<u32>, idx: &[u32]) {
    for &i in idx {
        let k = v.as_slice(a)[i as usize];
        v.set(a, i as usize, k + 1);
    }
}

/// A full pass rewriting every element.
#[inline(always)]
fn pass(v: &mut [u32]) {
    for x in v {
        *x = x.wrapping_mul(3).wrapping_add(1);
    }
}

fn rmw(c: &mut Criterion) {
    let mut g = c.benchmark_group("rmw");
    g.throughput(Throughput::Elements(VISITS as u64));
    let idx = indices();
    let mut a = Arena::with_capacity(64 << 20).unwrap();
    let v = ArenaVec::<u32>::with_len_zeroed(&mut a, ELEMS).unwrap();
    let mut plain = vec![0u32; ELEMS];
    g.bench_function("VecMut index", |b| {
        b.iter(|| rmw_view(&mut v.view_mut(&mut a), black_box(&idx)))
    });
    g.bench_function("Vec index", |b| {
        b.iter(|| rmw_vec(black_box(&mut plain), black_box(&idx)))
    });
    g.bench_function("as_slice + set", |b| {
        b.iter(|| rmw_as_slice_and_set(&mut a, v, black_box(&idx)))
    });
    g.throughput(Throughput::Elements(ELEMS as u64));
    g.bench_function("slice_mut pass", |b| {
        b.iter(|| pass(v.slice_mut(&mut a, ..)))
    });
    g.bench_function("Vec pass", |b| b.iter(|| pass(black_box(&mut plain))));
    g.finish();
}

const KEYS: u64 = 10_000;

fn keys() -> Vec<u64> {
    (0..KEYS)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .collect()
}

fn map(c: &mut Criterion) {
    let mut g = c.benchmark_group("map");
    g.throughput(Throughput::Elements(KEYS));
    let keys = keys();
    let mut a = Arena::with_capacity(256 << 20).unwrap();
    g.bench_function("ArenaMap insert 10k", |b| {
        b.iter(|| {
            let m = ArenaMap::<u64, u64>::new(&mut a).unwrap();
            for &k in &keys {
                m.insert(&mut a, k, k).unwrap();
            }
            m.free(&mut a).unwrap();
        })
    });
    g.bench_function("std HashMap insert 10k", |b| {
        b.iter(|| {
            let mut m = HashMap::new();
            for &k in &keys {
                m.insert(k, k);
            }
            black_box(m)
        })
    });
    let m = ArenaMap::<u64, u64>::new(&mut a).unwrap();
    let mut std_map = HashMap::new();
    for &k in &keys {
        m.insert(&mut a, k, k).unwrap();
        std_map.insert(k, k);
    }
    g.bench_function("ArenaMap get 10k", |b| {
        b.iter(|| {
            let a = black_box(&a);
            keys.iter().map(|k| *m.get(a, k).unwrap()).sum::<u64>()
        })
    });
    g.bench_function("std HashMap get 10k", |b| {
        b.iter(|| {
            let m = black_box(&std_map);
            keys.iter().map(|k| m[k]).sum::<u64>()
        })
    });
    g.finish();
}

/// Average pages dirtied by one allocation and one free, over a mix of sizes: a snapshot before
/// each operation clears the dirty set, and the arena's stats count what the operation wrote.
fn print_dirty_pages() {
    let mut a = Arena::with_capacity(256 << 20).unwrap();
    let mut live: Vec<(u8, usize, u64)> = Vec::new();
    let (mut alloc_pages, mut allocs, mut free_pages, mut frees) = (0, 0, 0, 0);
    let mut max_alloc = 0;
    let mut x = 0x2545_F491_4F6C_DD1D_u64;
    for i in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        a.snapshot().unwrap();
        if i < 2000 || x % 3 != 0 || live.is_empty() {
            let (kind, p) = match x % 10 {
                0..=5 => (
                    0,
                    bytemuck::cast::<Ptr<Point>, [u64; 2]>(a.alloc(Point::zeroed()).unwrap()),
                ),
                6..=8 => (1, bytemuck::cast(a.alloc([0u64; 32]).unwrap())),
                _ => (2, bytemuck::cast(a.alloc_zeroed::<[u64; 1024]>().unwrap())),
            };
            live.push((kind, p[0] as usize, p[1]));
            let d = a.stats().dirty_pages;
            alloc_pages += d;
            max_alloc = max_alloc.max(d);
            allocs += 1;
        } else {
            let (kind, off, stamp) = live.swap_remove((x as usize / 7) % live.len());
            let raw = [off as u64, stamp];
            match kind {
                0 => a.free(bytemuck::cast::<[u64; 2], Ptr<Point>>(raw)).unwrap(),
                1 => a
                    .free(bytemuck::cast::<[u64; 2], Ptr<[u64; 32]>>(raw))
                    .unwrap(),
                _ => a
                    .free(bytemuck::cast::<[u64; 2], Ptr<[u64; 1024]>>(raw))
                    .unwrap(),
            }
            free_pages += a.stats().dirty_pages;
            frees += 1;
        }
    }
    println!(
        "pages dirtied: {:.3} per allocation (max {max_alloc}, {allocs} allocations: 60% 16-byte, \
         30% 320-byte, 10% 8 KiB objects), {:.3} per free ({frees} frees); 8 KiB objects write \
         their own 2-3 pages",
        alloc_pages as f64 / allocs as f64,
        free_pages as f64 / frees as f64,
    );
    let mut a = Arena::with_capacity(64 << 20).unwrap();
    let mut small = 0;
    for _ in 0..10_000 {
        a.snapshot().unwrap();
        a.alloc(Point::zeroed()).unwrap();
        small += a.stats().dirty_pages;
    }
    println!(
        "pages dirtied: {:.3} per 16-byte allocation (10000 in a row)",
        small as f64 / 10_000.0
    );
}

/// A data-carrying enum: `get` validates its tag.
#[derive(Clone, Copy, bytemuck::NoUninit, bytemuck::CheckedBitPattern)]
#[repr(u64)]
enum Op {
    Const(i64),
    Neg(i64),
}

fn op_sum(a: &Arena, ptrs: &[Ptr<Op>]) -> i64 {
    ptrs.iter()
        .map(|&p| match *a.get(p) {
            Op::Const(v) => v,
            Op::Neg(v) => -v,
        })
        .sum()
}

fn pod_sum(a: &Arena, ptrs: &[Ptr<[i64; 2]>]) -> i64 {
    ptrs.iter()
        .map(|&p| {
            let [tag, v] = *a.get(p);
            if tag == 0 {
                v
            } else {
                -v
            }
        })
        .sum()
}

fn count_view(v: &VecMut<'_, bool>, idx: &[u32]) -> usize {
    idx.iter().filter(|&&i| v[i as usize]).count()
}

fn count_vec(v: &[bool], idx: &[u32]) -> usize {
    idx.iter().filter(|&&i| v[i as usize]).count()
}

/// Values with invalid bit patterns: a validated `get` of an enum against a Pod `get` of the
/// same bytes, and a view of `bool`s (validated once, when made) against a `Vec<bool>`.
fn print_value_ratios(a: &mut Arena) {
    let ops: Vec<Ptr<Op>> = (0..OBJECTS as i64)
        .map(|i| {
            a.alloc(if i % 3 == 0 { Op::Neg(i) } else { Op::Const(i) })
                .unwrap()
        })
        .collect();
    let pods: Vec<Ptr<[i64; 2]>> = (0..OBJECTS as i64)
        .map(|i| a.alloc([i64::from(i % 3 == 0), i]).unwrap())
        .collect();
    report(
        &format!("get of {OBJECTS} data-carrying enums"),
        paired(
            || {
                black_box(op_sum(a, &ops));
            },
            || {
                black_box(pod_sum(a, &pods));
            },
            2_000,
        ),
        ("validated enum", "Pod"),
        1.3,
    );
    let idx = indices();
    let flags: Vec<bool> = (0..ELEMS).map(|i| i % 7 == 0).collect();
    let v = ArenaVec::from_slice(a, &flags).unwrap();
    let view = v.view_mut(a);
    report(
        &format!("{VISITS} scattered reads of a view of bools"),
        paired(
            || {
                black_box(count_view(&view, black_box(&idx)));
            },
            || {
                black_box(count_vec(black_box(&flags), black_box(&idx)));
            },
            200,
        ),
        ("VecMut<bool>", "Vec<bool>"),
        1.2,
    );
}

/// The ratios the project's goals are stated in, each measured within this run.
fn print_ratios() {
    let mut a = Arena::with_capacity(64 << 20).unwrap();
    report(
        "alloc+free of one 16-byte object",
        paired(|| arena_one(&mut a), box_one, 200_000),
        ("cowarena", "Box"),
        2.0,
    );
    let ptrs: Vec<Ptr<Point>> = (0..OBJECTS as i64)
        .map(|i| a.alloc(Point { x: i, y: -i }).unwrap())
        .collect();
    let boxes: Vec<Box<Point>> = (0..OBJECTS as i64)
        .map(|i| Box::new(Point { x: i, y: -i }))
        .collect();
    let refs: Vec<&Point> = boxes.iter().map(|b| &**b).collect();
    report(
        &format!("get of {OBJECTS} objects"),
        paired(
            || {
                black_box(arena_get_sum(&a, &ptrs));
            },
            || {
                black_box(ref_sum(&refs));
            },
            2_000,
        ),
        ("cowarena", "plain references"),
        1.2,
    );
    let (slots, slot_keys) = slotmap_points();
    report(
        &format!("get of {OBJECTS} objects, against a slot map"),
        paired(
            || {
                black_box(arena_get_sum(&a, &ptrs));
            },
            || {
                black_box(slotmap_sum(&slots, &slot_keys));
            },
            2_000,
        ),
        ("cowarena", "slotmap"),
        1.2,
    );
    let (_, _, ratio) = paired(
        || {
            black_box(slotmap_sum(&slots, &slot_keys));
        },
        || {
            black_box(ref_sum(&refs));
        },
        2_000,
    );
    println!("  slotmap's get against plain references: {ratio:.2}x");

    let idx = indices();
    let v = ArenaVec::<u32>::with_len_zeroed(&mut a, ELEMS).unwrap();
    let mut plain = vec![0u32; ELEMS];
    report(
        &format!("read-modify-write of {VISITS} scattered elements"),
        paired(
            || rmw_view(&mut v.view_mut(&mut a), black_box(&idx)),
            || rmw_vec(black_box(&mut plain), black_box(&idx)),
            200,
        ),
        ("VecMut", "Vec"),
        1.5,
    );
    let (old, _, ratio) = paired(
        || rmw_as_slice_and_set(&mut a, v, black_box(&idx)),
        || rmw_vec(black_box(&mut plain), black_box(&idx)),
        20,
    );
    println!("  the same through as_slice + set: {old:.0} ns, {ratio:.1}x the Vec");
    report(
        &format!("a pass rewriting all {ELEMS} elements"),
        paired(
            || pass(v.slice_mut(&mut a, ..)),
            || pass(black_box(&mut plain)),
            200,
        ),
        ("slice_mut", "Vec"),
        1.5,
    );

    print_value_ratios(&mut a);

    let keys = keys();
    let mut a = Arena::with_capacity(256 << 20).unwrap();
    report(
        &format!("insert of {KEYS} keys into a new map"),
        paired(
            || {
                let m = ArenaMap::<u64, u64>::new(&mut a).unwrap();
                for &k in &keys {
                    m.insert(&mut a, k, k).unwrap();
                }
                m.free(&mut a).unwrap();
            },
            || {
                let mut m = HashMap::new();
                for &k in &keys {
                    m.insert(k, k);
                }
                black_box(m);
            },
            20,
        ),
        ("ArenaMap", "std HashMap"),
        1.5,
    );
    let m = ArenaMap::<u64, u64>::new(&mut a).unwrap();
    let mut std_map = HashMap::new();
    for &k in &keys {
        m.insert(&mut a, k, k).unwrap();
        std_map.insert(k, k);
    }
    report(
        &format!("get of {KEYS} keys"),
        paired(
            || {
                let a = black_box(&a);
                black_box(keys.iter().map(|k| *m.get(a, k).unwrap()).sum::<u64>());
            },
            || {
                let m = black_box(&std_map);
                black_box(keys.iter().map(|k| m[k]).sum::<u64>());
            },
            20,
        ),
        ("ArenaMap", "std HashMap"),
        1.5,
    );
}

criterion_group!(benches, alloc_free, get, rmw, map);

fn main() {
    print_dirty_pages();
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Not in `cargo test --benches` (criterion's `--test`), nor when only listing.
    if !std::env::args().any(|a| a == "--test" || a == "--list") {
        print_ratios();
    }
}
