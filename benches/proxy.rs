//! Proxies: making one (the first moves the source into a shared file), reading through one next
//! to reading the source itself, and a proxy's snapshot, for a source with 16 MiB of data in a
//! 64 MiB arena.
//!
//! `cargo bench --bench proxy -- --warm-up-time 1 --measurement-time 3`

use cowarena::{Arena, Ptr};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const CAPACITY: usize = 64 << 20;
const DATA: usize = 16 << 20;
/// Objects read per iteration, one per page of the data.
const READS: usize = DATA / 4096;

/// A source arena whose first `DATA` bytes are written and frozen, and one `u64` per page there.
fn source() -> (Arena, Vec<Ptr<[u64; 511]>>) {
    let mut a = Arena::with_capacity(CAPACITY).unwrap();
    let ptrs: Vec<Ptr<[u64; 511]>> = (0..READS)
        .map(|i| a.alloc([i as u64; 511]).unwrap())
        .collect();
    a.snapshot().unwrap();
    (a, ptrs)
}

fn proxies(c: &mut Criterion) {
    let mut g = c.benchmark_group("proxy");
    g.sample_size(20);
    g.bench_function("first proxy (16 MiB data)", |b| {
        b.iter_batched(
            source,
            |(mut a, _)| black_box(a.proxy().unwrap()),
            BatchSize::PerIteration,
        )
    });
    let (mut a, ptrs) = source();
    let first = a.proxy().unwrap();
    g.bench_function("another proxy", |b| {
        b.iter(|| black_box(a.proxy().unwrap()))
    });

    g.throughput(Throughput::Elements(READS as u64));
    g.bench_function("read through a proxy", |b| {
        b.iter(|| {
            let view = first.with(&a).unwrap();
            ptrs.iter().map(|&p| view.get(p)[7]).sum::<u64>()
        })
    });
    g.bench_function("read the source (baseline)", |b| {
        b.iter(|| ptrs.iter().map(|&p| a.get(p)[7]).sum::<u64>())
    });

    g.throughput(Throughput::Bytes(DATA as u64));
    let mut proxy = a.proxy().unwrap();
    g.bench_function("proxy snapshot (16 MiB data)", |b| {
        b.iter(|| black_box(proxy.with_mut(&a).unwrap().snapshot().unwrap()))
    });
    g.bench_function("source snapshot after 1 write (baseline)", |b| {
        b.iter(|| {
            a.write(0, &[1]).unwrap();
            black_box(a.snapshot().unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, proxies);
criterion_main!(benches);
