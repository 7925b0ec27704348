//! A branch that writes k = 64 pages, run three ways on a fully resident arena:
//! - `fork_run`: in a forked child (`Arena::fork_run`), the value coming back through a pipe;
//! - `fork_snapshot`: the same, and the child's pages come back as a snapshot;
//! - `snapshot_restore`: in process (snapshot, write the pages, restore);
//!
//! with `bare_fork` as the floor of the first two: `fork()` of this process, the child writes the
//! pages through a raw pointer and `_exit`s, the parent waits.
//!
//! `cargo bench --bench fork`; `COWARENA_BENCH_SIZES=16` limits the sizes (MiB).

use cowarena::{Arena, ViewMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::time::Duration;

mod common;
use common::{fork_and_write, resident_arena, sizes, Pages, K, MIB};

/// An arena of `len` bytes, every page written, frozen, and read back so that it is resident.
fn bare_fork(a: &mut Arena, pages: &[usize], page: usize) {
    // SAFETY: taken right before the fork and used only by the child, for pages inside the arena.
    let base = unsafe { a.as_mut_ptr() };
    // SAFETY: every page written lies inside the arena, which is valid for writes at `base`.
    unsafe { fork_and_write(base, pages, page) };
}

fn fork(c: &mut Criterion) {
    let page = cowarena::page_size();
    let mut group = c.benchmark_group("fork_k64");
    for mib in sizes() {
        let len = mib * MIB;
        let pages = len / page;
        let big = mib >= 256;
        group.sample_size(if big { 10 } else { 30 });
        group.measurement_time(Duration::from_secs(if big { 6 } else { 3 }));
        group.warm_up_time(Duration::from_secs(1));
        let id = |name| BenchmarkId::new(name, format!("{mib}MiB"));

        let mut gen = Pages { state: 7, pages };
        // In-process first: fork() is slower in the process criterion leaves after its first
        // analysis, so the fork variants all run after one, under the same conditions.
        let (mut a, _base) = resident_arena(len);
        group.bench_function(id("snapshot_restore"), |b| {
            b.iter(|| {
                let targets = gen.next();
                let s = a.snapshot().unwrap();
                for &p in &targets {
                    a.write(p * page, &[1]).unwrap();
                }
                a.restore(&s).unwrap();
                for &p in &targets {
                    assert_eq!(a.as_bytes()[p * page], 0xA5);
                }
            })
        });
        drop(a);

        let (mut a, _base) = resident_arena(len);
        group.bench_function(id("bare_fork"), |b| {
            b.iter(|| bare_fork(&mut a, &gen.next(), page))
        });
        group.bench_function(id("fork_run"), |b| {
            b.iter(|| {
                let targets = gen.next();
                let seen = a
                    .fork_run(|branch| {
                        for &p in &targets {
                            branch.write(p * page, &[1]).unwrap();
                        }
                        targets
                            .iter()
                            .map(|&p| u64::from(branch.as_bytes()[p * page]))
                            .sum::<u64>()
                    })
                    .unwrap();
                assert_eq!(seen, K as u64);
            })
        });
        group.bench_function(id("fork_snapshot"), |b| {
            b.iter(|| {
                let targets = gen.next();
                let (_, s) = a
                    .fork_snapshot(|branch| {
                        for &p in &targets {
                            branch.write(p * page, &[1]).unwrap();
                        }
                        0u8
                    })
                    .unwrap();
                let mut byte = [0u8];
                s.read(targets[0] * page, &mut byte).unwrap();
                assert_eq!(byte, [1]);
            })
        });
        drop(a);
    }
    group.finish();
}

criterion_group!(benches, fork);
criterion_main!(benches);
