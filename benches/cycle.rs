//! The core operations on fully resident arenas, each with its baseline in the same run:
//!
//! - `cycle_k64`: snapshot, write 64 pages, restore, verify; against `fork()` (the child does
//!   the writes), a deep copy (`Vec` clone as the snapshot), and the kernel's own floor for this
//!   work (memfd + `MAP_PRIVATE`, write, `madvise(MADV_DONTNEED)`, verify).
//! - `cold_k64`: the same cycle on 64 pages never written since the arena was filled and frozen
//!   whole (a new arena is made, outside the timing, once the fresh pages run out); against the
//!   kernel floor on pages it never wrote either.
//! - `snapshot_k64`: the snapshot call alone after 64 pages were written; against copying those
//!   64 pages into a `Vec` (what any snapshot must at least do).
//! - `restore_k64`: the restore call alone after 64 pages were written; against `madvise` of
//!   the 64 pages in the kernel floor.
//! - `first_write`: the first write to a page after a snapshot; against the kernel's
//!   copy-on-write fault on a private memfd mapping.
//!
//! `cargo bench --bench cycle`; `COWARENA_BENCH_SIZES=16` limits the sizes (MiB).

use cowarena::Arena;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::time::Duration;

mod common;
use common::{fork_and_write, resident_arena, sizes, Pages, K, MIB};

/// The kernel floor: a private mapping of a memfd holding the state; writes fault copies in,
/// `MADV_DONTNEED` drops them again (elsewhere: an unlinked file, and a remap drops them).
struct KernelFloor {
    ptr: *mut u8,
    len: usize,
    fd: libc::c_int,
}

impl KernelFloor {
    fn new(len: usize) -> Self {
        // SAFETY: plain syscalls with checked results; the mapping is owned by the value.
        unsafe {
            let fd = floor_file();
            assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0);
            let chunk = vec![0xA5u8; MIB];
            for off in (0..len).step_by(MIB) {
                assert_eq!(
                    libc::pwrite(fd, chunk.as_ptr().cast(), MIB, off as libc::off_t),
                    MIB as isize
                );
            }
            let ptr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                fd,
                0,
            );
            assert_ne!(ptr, libc::MAP_FAILED);
            KernelFloor {
                ptr: ptr.cast(),
                len,
                fd,
            }
        }
    }

    /// Maps every page for reading, as a resident arena has its pages mapped.
    fn touch(&mut self, page: usize) {
        for off in (0..self.len).step_by(page) {
            // SAFETY: in bounds, mapped readable.
            std::hint::black_box(unsafe { std::ptr::read_volatile(self.ptr.add(off)) });
        }
    }

    fn write(&mut self, pages: &[usize], page: usize) {
        for &p in pages {
            // SAFETY: `p < len / page`; the mapping is writable.
            unsafe { std::ptr::write_volatile(self.ptr.add(p * page), 1) };
        }
    }

    #[cfg(target_os = "linux")]
    fn reset(&mut self, pages: &[usize], page: usize) {
        for &p in pages {
            // SAFETY: drops this private page; the memfd still holds its original bytes.
            unsafe {
                libc::madvise(self.ptr.add(p * page).cast(), page, libc::MADV_DONTNEED);
            }
        }
    }

    /// Elsewhere `MADV_DONTNEED` may keep a private page, so the page is mapped from the file
    /// again, which drops the copy.
    #[cfg(not(target_os = "linux"))]
    fn reset(&mut self, pages: &[usize], page: usize) {
        for &p in pages {
            // SAFETY: replaces one page of this value's own mapping with the file's page.
            let ptr = unsafe {
                libc::mmap(
                    self.ptr.add(p * page).cast(),
                    page,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_FIXED,
                    self.fd,
                    (p * page) as libc::off_t,
                )
            };
            assert_ne!(ptr, libc::MAP_FAILED);
        }
    }

    fn cycle(&mut self, pages: &[usize], page: usize) {
        self.write(pages, page);
        self.reset(pages, page);
        for &p in pages {
            // SAFETY: in bounds, mapped readable.
            assert_eq!(unsafe { *self.ptr.add(p * page) }, 0xA5);
        }
    }
}

/// The floor's file: a memfd.
#[cfg(target_os = "linux")]
fn floor_file() -> libc::c_int {
    // SAFETY: plain system call; the name is a C string.
    let fd = unsafe { libc::memfd_create(c"floor".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    fd
}

/// The floor's file where there is no memfd: a temporary file, unlinked at once.
#[cfg(not(target_os = "linux"))]
fn floor_file() -> libc::c_int {
    use std::os::fd::IntoRawFd;
    let path = std::env::temp_dir().join(format!("cowarena-floor-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file.into_raw_fd()
}

impl Drop for KernelFloor {
    fn drop(&mut self) {
        // SAFETY: the mapping and the fd belong to this value.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
            libc::close(self.fd);
        }
    }
}

fn fork_cycle(state: &mut [u8], pages: &[usize], page: usize) {
    assert!(pages.iter().all(|&p| (p + 1) * page <= state.len()));
    // SAFETY: every page written lies inside `state` (checked above).
    unsafe { fork_and_write(state.as_mut_ptr(), pages, page) };
    for &p in pages {
        assert_eq!(state[p * page], 0xA5);
    }
}

fn cycle(c: &mut Criterion) {
    let page = cowarena::page_size();
    let mut group = c.benchmark_group("cycle_k64");
    for mib in sizes() {
        let len = mib * MIB;
        let pages = len / page;
        by_size(&mut group, mib);

        {
            let mut a = Arena::with_capacity(len).unwrap();
            a.bytes_mut(0..len).unwrap().fill(0xA5);
            let _base = a.snapshot().unwrap();
            let mut gen = Pages { state: 7, pages };
            group.bench_function(BenchmarkId::new("cowarena", format!("{mib}MiB")), |b| {
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
        }
        {
            let mut floor = KernelFloor::new(len);
            let mut gen = Pages { state: 7, pages };
            group.bench_function(BenchmarkId::new("kernel_floor", format!("{mib}MiB")), |b| {
                b.iter(|| floor.cycle(&gen.next(), page))
            });
        }
        {
            let mut state = vec![0xA5u8; len];
            let mut gen = Pages { state: 7, pages };
            group.bench_function(BenchmarkId::new("fork", format!("{mib}MiB")), |b| {
                b.iter(|| fork_cycle(&mut state, &gen.next(), page))
            });
        }
        {
            let mut state = vec![0xA5u8; len];
            let mut gen = Pages { state: 7, pages };
            group.bench_function(BenchmarkId::new("deep_copy", format!("{mib}MiB")), |b| {
                b.iter(|| {
                    let targets = gen.next();
                    let snap = state.clone();
                    for &p in &targets {
                        state[p * page] = 1;
                    }
                    state.copy_from_slice(&snap);
                    for &p in &targets {
                        assert_eq!(black_box(&state)[p * page], 0xA5);
                    }
                })
            });
        }
    }
    group.finish();
}

/// `K` distinct pages spread over the arena that no earlier call returned; `None` once fewer
/// than `K` are left.
struct FreshPages {
    perm: Vec<usize>,
    used: usize,
    state: u64,
}

impl FreshPages {
    fn new(pages: usize, seed: u64) -> Self {
        FreshPages {
            perm: (0..pages).collect(),
            used: 0,
            state: seed | 1,
        }
    }
}

impl Iterator for FreshPages {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        let n = self.perm.len();
        if n - self.used < K {
            return None;
        }
        for i in self.used..self.used + K {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let j = i + self.state as usize % (n - i);
            self.perm.swap(i, j);
        }
        self.used += K;
        Some(self.perm[self.used - K..self.used].to_vec())
    }
}

/// Cold cycles: each on `K` pages that no cycle of the arena wrote before, a new arena (filled
/// and frozen, or a fresh floor) whenever they run out.
fn cold(c: &mut Criterion) {
    let page = cowarena::page_size();
    let mut group = c.benchmark_group("cold_k64");
    for mib in sizes() {
        let len = mib * MIB;
        let pages = len / page;
        by_size(&mut group, mib);
        group.bench_function(BenchmarkId::new("cowarena", format!("{mib}MiB")), |b| {
            b.iter_custom(|iters| {
                cold_cycles(
                    iters,
                    pages,
                    || resident_arena(len),
                    |(a, _), targets| {
                        let s = a.snapshot().unwrap();
                        for &p in targets {
                            a.write(p * page, &[1]).unwrap();
                        }
                        a.restore(&s).unwrap();
                        for &p in targets {
                            assert_eq!(a.as_bytes()[p * page], 0xA5);
                        }
                    },
                )
            })
        });
        group.bench_function(BenchmarkId::new("kernel_floor", format!("{mib}MiB")), |b| {
            b.iter_custom(|iters| {
                let fresh_floor = || {
                    let mut floor = KernelFloor::new(len);
                    floor.touch(page);
                    floor
                };
                cold_cycles(iters, pages, fresh_floor, |floor, targets| {
                    floor.cycle(targets, page)
                })
            })
        });
    }
    group.finish();
}

/// Times `iters` runs of `cycle` on fresh pages of a state from `make`, a new one (outside the
/// clock) whenever the fresh pages run out.
fn cold_cycles<S>(
    iters: u64,
    pages: usize,
    mut make: impl FnMut() -> S,
    mut cycle: impl FnMut(&mut S, &[usize]),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let mut state = make();
        let mut fresh = FreshPages::new(pages, 7 + done);
        while let (true, Some(targets)) = (done < iters, fresh.next()) {
            let start = std::time::Instant::now();
            cycle(&mut state, &targets);
            total += start.elapsed();
            done += 1;
        }
    }
    total
}

/// Fewer, longer samples for big arenas, whose cycles vary more.
fn by_size(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    mib: usize,
) {
    let big = mib >= 256;
    group.sample_size(if big { 10 } else { 30 });
    group.measurement_time(Duration::from_secs(if big { 8 } else { 4 }));
    group.warm_up_time(Duration::from_secs(1));
}

/// Times `routine` only, running `setup` before each call outside the clock.
fn timed<S>(iters: u64, mut setup: impl FnMut() -> S, mut routine: impl FnMut(S)) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let input = setup();
        let start = std::time::Instant::now();
        routine(input);
        total += start.elapsed();
    }
    total
}

fn snapshot_and_restore(c: &mut Criterion) {
    let page = cowarena::page_size();
    let mut group = c.benchmark_group("snapshot_k64");
    for mib in sizes() {
        let len = mib * MIB;
        let pages = len / page;
        group.sample_size(20);
        let (mut a, base) = resident_arena(len);
        let mut gen = Pages { state: 11, pages };
        let a = std::cell::RefCell::new(&mut a);
        group.bench_function(BenchmarkId::new("cowarena", format!("{mib}MiB")), |b| {
            b.iter_custom(|iters| {
                timed(
                    iters,
                    || {
                        let mut a = a.borrow_mut();
                        a.restore(&base).unwrap();
                        for p in gen.next() {
                            a.write(p * page, &[1]).unwrap();
                        }
                    },
                    |()| drop(black_box(a.borrow_mut().snapshot().unwrap())),
                )
            })
        });
        let state = vec![0xA5u8; len];
        group.bench_function(
            BenchmarkId::new("copy_64_pages", format!("{mib}MiB")),
            |b| {
                b.iter(|| {
                    let mut out = Vec::with_capacity(K * page);
                    for p in gen.next() {
                        out.extend_from_slice(&state[p * page..(p + 1) * page]);
                    }
                    black_box(out)
                })
            },
        );
    }
    group.finish();

    let mut group = c.benchmark_group("restore_k64");
    for mib in sizes() {
        let len = mib * MIB;
        let pages = len / page;
        group.sample_size(20);
        let (mut a, base) = resident_arena(len);
        let mut gen = Pages { state: 13, pages };
        let a = std::cell::RefCell::new(&mut a);
        group.bench_function(BenchmarkId::new("cowarena", format!("{mib}MiB")), |b| {
            b.iter_custom(|iters| {
                timed(
                    iters,
                    || {
                        for p in gen.next() {
                            a.borrow_mut().write(p * page, &[1]).unwrap();
                        }
                    },
                    |()| a.borrow_mut().restore(&base).unwrap(),
                )
            })
        });
        let floor = std::cell::RefCell::new(KernelFloor::new(len));
        group.bench_function(BenchmarkId::new("kernel_floor", format!("{mib}MiB")), |b| {
            b.iter_custom(|iters| {
                timed(
                    iters,
                    || {
                        let targets = gen.next();
                        floor.borrow_mut().write(&targets, page);
                        targets
                    },
                    |targets| floor.borrow_mut().reset(&targets, page),
                )
            })
        });
    }
    group.finish();
}

/// Pages written per timed batch in `first_write`.
const FIRST_WRITE_PAGES: usize = 256;

fn first_write(c: &mut Criterion) {
    let page = cowarena::page_size();
    let len = 16 * MIB;
    let targets: Vec<usize> = (0..FIRST_WRITE_PAGES)
        .map(|i| i * 61 % (len / page))
        .collect();
    let mut group = c.benchmark_group("first_write_256_pages");
    group.sample_size(30);
    // A one-page private budget makes every restore return the copies to the kernel, so each
    // batch writes clean file pages, as the kernel floor does after its `madvise`.
    let mut a = Arena::builder(len).private_budget(page).build().unwrap();
    a.bytes_mut(0..len).unwrap().fill(0xA5);
    let base = a.snapshot().unwrap();
    let a = std::cell::RefCell::new(&mut a);
    group.bench_function("cowarena", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || a.borrow_mut().restore(&base).unwrap(),
                |()| {
                    let mut a = a.borrow_mut();
                    for &p in &targets {
                        a.write(p * page, &[2]).unwrap();
                    }
                },
            )
        })
    });
    let floor = std::cell::RefCell::new(KernelFloor::new(len));
    group.bench_function("kernel_cow_fault", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || floor.borrow_mut().reset(&targets, page),
                |()| floor.borrow_mut().write(&targets, page),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, cycle, cold, snapshot_and_restore, first_write);
criterion_main!(benches);
