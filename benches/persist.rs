//! Reopening a saved 1 GiB snapshot: `open` + the first read of 64 random pages, against reading
//! the whole file and against `fork()` of a process whose state is a 1 GiB resident heap (the
//! in-memory way to hand a state to another process; the child writes 64 pages of it). Also
//! `open` + `to_arena`, which brings every page in. `COWARENA_BENCH_SIZES` picks another size
//! (its largest entry, in MiB).
//!
//! Before the timings it prints, once, what `save` of the 1 GiB snapshot and of a 64-page delta
//! cost (each includes `fsync`), beside its baseline: writing a plain file of the same length
//! and syncing it. The file goes to `COWARENA_BENCH_DIR` (default: the system's
//! temporary directory); it is in the page cache while the benchmark runs, so these are the
//! costs of a warm file, as when a state was just written or is read repeatedly.

mod common;

use common::{fork_and_write, resident_arena, sizes, Pages, MIB};
use cowarena::Snapshot;
use criterion::{criterion_group, criterion_main, Criterion};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Writes a new file of `len` bytes at `path` in 1 MiB `pwrite`s, `fsync`s and removes it;
/// returns the time up to the end of the `fsync`.
fn write_and_sync(path: &Path, len: u64) -> Duration {
    let chunk = vec![0xA5u8; MIB];
    let t = Instant::now();
    let file = std::fs::File::create(path).unwrap();
    let mut at = 0;
    while at < len {
        let n = chunk.len().min((len - at) as usize);
        file.write_all_at(&chunk[..n], at).unwrap();
        at += n as u64;
    }
    file.sync_all().unwrap();
    let took = t.elapsed();
    std::fs::remove_file(path).unwrap();
    took
}

fn persist(c: &mut Criterion) {
    let page = cowarena::page_size();
    // The largest of `COWARENA_BENCH_SIZES` (default 1024 MiB).
    let mib = sizes().into_iter().max().unwrap_or(1024);
    let len = mib * MIB;
    let dir = std::env::var_os("COWARENA_BENCH_DIR")
        .map_or_else(std::env::temp_dir, Into::into)
        .join(format!("cowarena-bench-persist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("base.snap");
    let (mut a, base) = resident_arena(len);

    let t = Instant::now();
    let stats = base.save(&path).unwrap();
    println!(
        "save of {mib} MiB ({} pages): {:?}",
        stats.pages_written,
        t.elapsed()
    );
    println!(
        "baseline: write + fsync of a {} MiB file: {:?}",
        stats.file_bytes as usize / MIB,
        write_and_sync(&dir.join("plain"), stats.file_bytes)
    );
    let mut gen = Pages {
        state: 0x9e37_79b9_7f4a_7c15,
        pages: len / page,
    };
    for &p in &gen.next() {
        a.write(p * page, b"delta").unwrap();
    }
    let next = a.snapshot().unwrap();
    let t = Instant::now();
    let stats = next.save_delta(dir.join("delta.snap"), &base).unwrap();
    println!(
        "save_delta of {} pages: {:?}",
        stats.pages_written,
        t.elapsed()
    );
    println!(
        "baseline: write + fsync of a {} KiB file: {:?}",
        stats.file_bytes / 1024,
        write_and_sync(&dir.join("plain"), stats.file_bytes)
    );

    let mut group = c.benchmark_group(format!("persist_{mib}MiB"));
    group.sample_size(20);
    let mut buf = vec![0u8; page];
    group.bench_function("open_read_64_pages", |b| {
        b.iter(|| {
            let s = Snapshot::open(&path).unwrap();
            for p in gen.next() {
                s.read(p * page, &mut buf).unwrap();
            }
        })
    });
    group.bench_function("open_delta_read_64_pages", |b| {
        b.iter(|| {
            let s = Snapshot::open(dir.join("delta.snap")).unwrap();
            for p in gen.next() {
                s.read(p * page, &mut buf).unwrap();
            }
        })
    });
    let file = std::fs::File::open(&path).unwrap();
    let file_len = file.metadata().unwrap().len() as usize;
    let mut whole = vec![0u8; file_len];
    group.bench_function("read_whole_file", |b| {
        b.iter(|| file.read_exact_at(&mut whole, 0).unwrap())
    });
    // `whole` is now a resident heap of the snapshot's size: the state a program without
    // cowarena would fork.
    let heap = whole.as_mut_ptr();
    group.bench_function("fork_heap_write_64_pages", |b| {
        // SAFETY: `heap` covers `whole`, which lives for the whole benchmark; only the child
        // writes through it, into its own copy.
        b.iter(|| unsafe { fork_and_write(heap, &gen.next(), page) })
    });
    group.sample_size(10);
    group.bench_function("open_to_arena", |b| {
        b.iter(|| Snapshot::open(&path).unwrap().to_arena().unwrap())
    });
    group.finish();
    drop(a);
    std::fs::remove_dir_all(&dir).unwrap();
}

criterion_group!(benches, persist);
criterion_main!(benches);
