//! The fuzzer's and emulator's loop: a guest memory written through one long-lived raw pointer
//! and reset to its starting state after every run, next to the other ways to reset it, all in
//! one run and interleaved:
//!
//! - `raw`: a cowarena arena whose pointer was taken once with `as_mut_ptr()` before the loop;
//!   the k pages are written through it and `restore(&start)` resets (the arena finds the written
//!   pages itself, the way `stats().raw_writes` names);
//! - `told`: the same arena set up the same way but never given a raw pointer; the k pages are
//!   written through `bytes_mut`, which marks them, so the restore is told what changed: the gap
//!   to `raw` is the cost of finding raw writes;
//! - `image`: wasmtime's reset, the best the kernel does without knowing the written pages: the
//!   data image in a memfd mapped `MAP_PRIVATE` over the start of an anonymous guest mapping, and
//!   one `madvise(MADV_DONTNEED)` of the whole guest to reset (the guest's next reads refault the
//!   image's pages).
//!
//! The guest is 64 MiB with 16 MiB of data (and 1 GiB with 256 MiB). Each iteration writes 8
//! bytes in each of k distinct pseudo-random data pages (the same sequence for every variant),
//! resets, then the guest reads again, in one of two ways:
//!
//! - `pages`: it reads the k pages it wrote (and checks they were reset);
//! - `data`: it reads one `u64` of every data page (and checks their sum), as a guest reading
//!   its whole data does: after an image reset every one of those pages refaults, and the next
//!   `madvise` has all of them to unmap again.
//!
//! Printed first, on the raw arena: a snapshot taken mid-run after 64 raw writes (and dropped),
//! the arena reset to its start after each, beside copying those 64 pages into a `Vec`; then
//! two stress runs of 10,000 such snapshots, all kept (2.5 GiB of frozen pages), each in a new
//! arena: one reset to its start after every snapshot, one never reset (its contents drift, so
//! every page shed from its private copy must be remapped from the store); each prints the
//! arena's remapped runs and the process's `/proc/self/maps` lines at its end. Last, two
//! tables: the median reset, and the median (and mean) whole iteration: writes, reset and reads.
//!
//! `cargo bench --bench raw_reset`; `COWARENA_BENCH_FULL=1` adds the 1 GiB guest. Settings:
//! `COWARENA_BENCH_SIZES` (guest sizes in MiB, data a quarter of each; default `64`),
//! `COWARENA_BENCH_KS` (default `1,64,1024`), `COWARENA_BENCH_SECS` (seconds per case, default
//! 1.5), `COWARENA_BENCH_STRESS` (snapshots in each stress run, default 10000). Without `--bench`
//! (`cargo test --benches`) every case runs a few iterations only.

#[cfg(target_os = "linux")]
mod sampling;

#[cfg(target_os = "linux")]
mod linux {
    use super::sampling::{env_list, median, us, Scatter};
    use cowarena::{Arena, Snapshot};
    use std::fs::File;
    use std::hint::black_box;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::FileExt;
    use std::time::{Duration, Instant};

    const MIB: usize = 1 << 20;
    /// Iterations a variant runs before the next one takes its turn.
    const BATCH: usize = 16;
    /// Pages written before each mid-run snapshot.
    const MID_RUN_K: usize = 64;

    struct Settings {
        /// Guest sizes in MiB; the data is the first quarter of each.
        sizes: Vec<usize>,
        ks: Vec<usize>,
        case_time: Duration,
        stress: usize,
    }

    fn settings() -> Settings {
        let quick = !std::env::args().any(|a| a == "--bench");
        let full = std::env::var_os("COWARENA_BENCH_FULL").is_some_and(|v| v != "0");
        let default_sizes = if full { vec![64, 1024] } else { vec![64] };
        let secs = std::env::var("COWARENA_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(1.5);
        let stress = std::env::var("COWARENA_BENCH_STRESS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10_000);
        Settings {
            sizes: env_list("COWARENA_BENCH_SIZES").unwrap_or(default_sizes),
            ks: env_list("COWARENA_BENCH_KS").unwrap_or_else(|| vec![1, 64, 1024]),
            case_time: Duration::from_secs_f64(if quick { 0.0 } else { secs }),
            stress: if quick { 100 } else { stress },
        }
    }

    /// The first `u64` of data page `p` at the start; every write puts its complement there.
    fn marker(p: usize) -> u64 {
        (p as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
    }

    /// The starting data: a marker at the head of every page, a byte pattern after it.
    fn image_bytes(data_len: usize, page: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; data_len];
        for (p, chunk) in bytes.chunks_mut(page).enumerate() {
            chunk.fill(p as u8 ^ 0xA5);
            chunk[..8].copy_from_slice(&marker(p).to_le_bytes());
        }
        bytes
    }

    /// A guest memory that can be written, reset to its start, and read.
    trait Guest {
        /// Writes the complement of the marker at the head of each page.
        fn write(&mut self, pages: &[usize], page: usize);
        fn reset(&mut self);
        /// The data region, for reading between calls.
        fn data(&self) -> &[u8];
    }

    /// A cowarena arena written through one raw pointer taken before the loop.
    struct Raw {
        arena: Arena,
        start: Snapshot,
        base: *mut u8,
        data_len: usize,
    }

    impl Raw {
        /// An arena as [`arena`] makes, and the raw pointer the whole run uses.
        fn new(guest: usize, image: &[u8], page: usize) -> Raw {
            let (mut arena, start) = arena(guest, image, page);
            // SAFETY: the pointer is used only between calls of the arena's methods, while no
            // borrow of it lives (see `write` and `data`).
            let base = unsafe { arena.as_mut_ptr() };
            Raw {
                arena,
                start,
                base,
                data_len: image.len(),
            }
        }
    }

    impl Guest for Raw {
        fn write(&mut self, pages: &[usize], page: usize) {
            for &p in pages {
                // SAFETY: `p` is a data page, inside the arena, which stays valid for writes at
                // `base` for its life; no method of the arena runs meanwhile and no borrow of it
                // is alive.
                unsafe {
                    self.base
                        .add(p * page)
                        .cast::<u64>()
                        .write_volatile(!marker(p))
                };
            }
        }

        fn reset(&mut self) {
            self.arena.restore(&self.start).unwrap();
        }

        fn data(&self) -> &[u8] {
            // SAFETY: the data region lies inside the arena, valid for reads at `base`; nothing
            // writes it while the returned borrow of `self` lives.
            unsafe { std::slice::from_raw_parts(self.base, self.data_len) }
        }
    }

    /// The same arena, never given a raw pointer: writes go through `bytes_mut`.
    struct Told {
        arena: Arena,
        start: Snapshot,
        data_len: usize,
    }

    impl Guest for Told {
        fn write(&mut self, pages: &[usize], page: usize) {
            for &p in pages {
                let at = p * page;
                self.arena
                    .bytes_mut(at..at + 8)
                    .unwrap()
                    .copy_from_slice(&(!marker(p)).to_le_bytes());
            }
        }

        fn reset(&mut self) {
            self.arena.restore(&self.start).unwrap();
        }

        fn data(&self) -> &[u8] {
            &self.arena.as_bytes()[..self.data_len]
        }
    }

    /// An arena of `guest` bytes holding `image` at its start, frozen as its start, and read
    /// once so that the data is mapped.
    fn arena(guest: usize, image: &[u8], page: usize) -> (Arena, Snapshot) {
        let mut arena = Arena::with_capacity(guest).unwrap();
        arena
            .bytes_mut(0..image.len())
            .unwrap()
            .copy_from_slice(image);
        let start = arena.snapshot().unwrap();
        black_box(sum_markers(&arena.as_bytes()[..image.len()], page));
        (arena, start)
    }

    /// wasmtime's image reset: the image in a memfd, mapped private over the start of an
    /// anonymous guest mapping; one `madvise(MADV_DONTNEED)` of the whole guest resets it.
    struct Image {
        ptr: *mut u8,
        len: usize,
        data_len: usize,
        /// The memfd; it must outlive the mapping of it.
        _file: File,
    }

    impl Image {
        fn new(guest: usize, image: &[u8], page: usize) -> Image {
            // SAFETY: a plain system call; the name is a C string.
            let fd = unsafe { libc::memfd_create(c"image".as_ptr(), libc::MFD_CLOEXEC) };
            assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
            // SAFETY: `fd` was just opened and is owned by nothing else.
            let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            file.write_all_at(image, 0).unwrap();
            // SAFETY: a new anonymous mapping, then the file mapped over its start with
            // MAP_FIXED: both ranges belong to this value alone, and are unmapped on drop.
            let ptr = unsafe {
                let ptr = libc::mmap(
                    std::ptr::null_mut(),
                    guest,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                );
                assert_ne!(ptr, libc::MAP_FAILED);
                let over = libc::mmap(
                    ptr,
                    image.len(),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_FIXED,
                    file.as_raw_fd(),
                    0,
                );
                assert_eq!(over, ptr);
                ptr.cast::<u8>()
            };
            let img = Image {
                ptr,
                len: guest,
                data_len: image.len(),
                _file: file,
            };
            black_box(sum_markers(img.data(), page));
            img
        }
    }

    impl Guest for Image {
        fn write(&mut self, pages: &[usize], page: usize) {
            for &p in pages {
                // SAFETY: `p` is a data page, inside the mapping, which is writable.
                unsafe {
                    self.ptr
                        .add(p * page)
                        .cast::<u64>()
                        .write_volatile(!marker(p))
                };
            }
        }

        fn reset(&mut self) {
            // SAFETY: drops the private copies and zero-filled pages of this value's own
            // mapping; the file pages come back on the next access.
            let r = unsafe { libc::madvise(self.ptr.cast(), self.len, libc::MADV_DONTNEED) };
            assert_eq!(r, 0);
        }

        fn data(&self) -> &[u8] {
            // SAFETY: the data region lies inside the mapping, readable; nothing writes it
            // while the returned borrow of `self` lives.
            unsafe { std::slice::from_raw_parts(self.ptr, self.data_len) }
        }
    }

    impl Drop for Image {
        fn drop(&mut self) {
            // SAFETY: the mapping belongs to this value and no borrow of it outlives it.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }

    /// The wrapping sum of the marker at the head of every page of `data`.
    fn sum_markers(data: &[u8], page: usize) -> u64 {
        data.chunks(page)
            .map(|c| u64::from_le_bytes(c[..8].try_into().unwrap()))
            .fold(0, u64::wrapping_add)
    }

    /// What the guest reads after each reset.
    #[derive(Clone, Copy)]
    enum Reads {
        /// The k pages it wrote.
        Pages,
        /// One `u64` of every data page.
        Data,
    }

    impl Reads {
        fn name(self) -> &'static str {
            match self {
                Reads::Pages => "pages",
                Reads::Data => "data",
            }
        }
    }

    /// Per-iteration times of one variant, in microseconds.
    #[derive(Default)]
    struct Samples {
        reset: Vec<f64>,
        iteration: Vec<f64>,
    }

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    /// Runs the variants in turns of `BATCH` iterations (the first turn of each unrecorded)
    /// for at least `time` and three turns each; returns their samples in order.
    fn run_case(
        guests: &mut [&mut dyn Guest],
        k: usize,
        reads: Reads,
        page: usize,
        time: Duration,
    ) -> Vec<Samples> {
        let data_pages = guests[0].data().len() / page;
        let expected = (0..data_pages).map(marker).fold(0, u64::wrapping_add);
        let mut scatters: Vec<Scatter> = guests
            .iter()
            .map(|_| Scatter::new(data_pages, 0x5EED + k as u64))
            .collect();
        let mut samples: Vec<Samples> = guests.iter().map(|_| Samples::default()).collect();
        let n = guests.len();
        let until = Instant::now() + time;
        let mut turn = 0;
        while turn < 4 * n || Instant::now() < until {
            let g = turn % n;
            let (guest, scatter) = (&mut *guests[g], &mut scatters[g]);
            for _ in 0..BATCH {
                let pages = scatter.next(k);
                let t0 = Instant::now();
                guest.write(pages, page);
                let t1 = Instant::now();
                guest.reset();
                let t2 = Instant::now();
                let data = guest.data();
                match reads {
                    Reads::Pages => {
                        for &p in pages {
                            let at = p * page;
                            let v = u64::from_le_bytes(data[at..at + 8].try_into().unwrap());
                            assert_eq!(v, marker(p));
                        }
                    }
                    Reads::Data => assert_eq!(sum_markers(data, page), expected),
                }
                let t3 = Instant::now();
                if turn >= n {
                    samples[g].reset.push(us(t2 - t1));
                    samples[g].iteration.push(us(t3 - t0));
                }
            }
            turn += 1;
        }
        samples
    }

    /// One row of each table.
    struct Row {
        guest_mib: usize,
        k: usize,
        reads: Reads,
        /// raw, told, image.
        samples: Vec<Samples>,
    }

    fn goal(k: usize) -> &'static str {
        match k {
            1 => "<= 0.50",
            64 => "<= 0.75",
            1024 => "<= 1.00",
            _ => "",
        }
    }

    fn print_tables(rows: &[Row]) {
        println!();
        println!(
            "reset: median us per reset (raw = restore after raw writes, told = restore after"
        );
        println!("bytes_mut writes, image = madvise(MADV_DONTNEED) of the whole guest)");
        println!(
            "{:>6} {:>5} {:>5} {:>5} | {:>8} {:>8} {:>8} | {:>9} {:>8} | {:>7}",
            "guest", "data", "reads", "k", "raw", "told", "image", "raw/image", "raw/told", "goal"
        );
        for r in rows {
            let m: Vec<f64> = r.samples.iter().map(|s| median(&s.reset)).collect();
            println!(
                "{:>4}Mi {:>3}Mi {:>5} {:>5} | {:>8.1} {:>8.1} {:>8.1} | {:>9.2} {:>8.2} | {:>7}",
                r.guest_mib,
                r.guest_mib / 4,
                r.reads.name(),
                r.k,
                m[0],
                m[1],
                m[2],
                m[0] / m[2],
                m[0] / m[1],
                goal(r.k)
            );
        }
        println!();
        println!("iteration: k writes + reset + the reads, median us (mean us)");
        println!(
            "{:>6} {:>5} {:>5} {:>5} | {:>17} {:>17} {:>17} | {:>9} {:>8}",
            "guest", "data", "reads", "k", "raw", "told", "image", "raw/image", "raw/told"
        );
        for r in rows {
            let m: Vec<f64> = r.samples.iter().map(|s| median(&s.iteration)).collect();
            let a: Vec<f64> = r.samples.iter().map(|s| mean(&s.iteration)).collect();
            let cell = |i: usize| format!("{:.1} ({:.1})", m[i], a[i]);
            println!(
                "{:>4}Mi {:>3}Mi {:>5} {:>5} | {:>17} {:>17} {:>17} | {:>9.2} {:>8.2}",
                r.guest_mib,
                r.guest_mib / 4,
                r.reads.name(),
                r.k,
                cell(0),
                cell(1),
                cell(2),
                m[0] / m[2],
                m[0] / m[1]
            );
        }
    }

    /// Lines of `/proc/self/maps`: the process's mappings.
    fn maps_lines() -> usize {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .count()
    }

    /// A snapshot taken mid-run (after `MID_RUN_K` raw writes) and dropped, the arena reset to
    /// its start after each; beside it, copying the same pages into a `Vec`.
    fn mid_run_snapshot(raw: &mut Raw, page: usize, time: Duration) {
        let mut scatter = Scatter::new(raw.data_len / page, 0xC0FFEE);
        let (mut snap, mut dropped, mut copy) = (Vec::new(), Vec::new(), Vec::new());
        let until = Instant::now() + time;
        let mut turn = 0;
        while turn < 4 || Instant::now() < until {
            for _ in 0..BATCH {
                let pages = scatter.next(MID_RUN_K);
                raw.write(pages, page);
                let t0 = Instant::now();
                let s = raw.arena.snapshot().unwrap();
                let t1 = Instant::now();
                drop(s);
                let t2 = Instant::now();
                let data = raw.data();
                let mut out = Vec::with_capacity(MID_RUN_K * page);
                for &p in pages {
                    out.extend_from_slice(&data[p * page..(p + 1) * page]);
                }
                black_box(out);
                let t3 = Instant::now();
                raw.reset();
                if turn > 0 {
                    snap.push(us(t1 - t0));
                    dropped.push(us(t2 - t0));
                    copy.push(us(t3 - t2));
                }
            }
            turn += 1;
        }
        println!(
            "mid-run snapshot after {MID_RUN_K} raw writes: snapshot() {:.1} us, with its drop {:.1} us \
             (goal <= 100 us); copying the {MID_RUN_K} pages into a Vec {:.1} us (medians, {} iterations)",
            median(&snap),
            median(&dropped),
            median(&copy),
            snap.len()
        );
    }

    /// `count` snapshots, each after `MID_RUN_K` more raw writes, all kept, in a new arena:
    /// with `reset`, the arena is restored to its start after each (the fuzzer's loop); without,
    /// it drifts, so that every page shed from its private copy must be remapped from the store.
    fn stress(guest: usize, image: &[u8], page: usize, count: usize, reset: bool) {
        let maps_before = maps_lines();
        let mut raw = Raw::new(guest, image, page);
        let mut scatter = Scatter::new(image.len() / page, 0xFEED);
        let mut kept = Vec::with_capacity(count);
        let mut times = Vec::with_capacity(count);
        let t = Instant::now();
        for _ in 0..count {
            raw.write(scatter.next(MID_RUN_K), page);
            let t = Instant::now();
            kept.push(raw.arena.snapshot().unwrap());
            times.push(us(t.elapsed()));
            if reset {
                raw.reset();
            }
        }
        let took = t.elapsed();
        let stats = raw.arena.stats();
        let maps = maps_lines();
        times.sort_by(f64::total_cmp);
        println!(
            "  {}: snapshot median {:.1} us, p99 {:.1} us, max {:.1} us ({:.1} s in all)",
            if reset {
                "reset to the start after each"
            } else {
                "never reset"
            },
            median(&times),
            times[times.len() * 99 / 100],
            times[times.len() - 1],
            took.as_secs_f64()
        );
        println!(
            "    remapped_runs {} (process limit 16384), private_pages {}, /proc/self/maps lines \
             {maps} ({maps_before} before the arena; limit 65530)",
            stats.remapped_runs, stats.private_pages
        );
        drop(kept);
        // Every snapshot above grew from the start.
        raw.reset();
        assert_eq!(
            sum_markers(raw.data(), page),
            (0..image.len() / page)
                .map(marker)
                .fold(0, u64::wrapping_add)
        );
    }

    pub fn main() {
        let settings = settings();
        let page = cowarena::page_size();
        let mut rows = Vec::new();
        for &mib in &settings.sizes {
            let guest = mib * MIB;
            let image = image_bytes(guest / 4, page);
            let mut raw = Raw::new(guest, &image, page);
            let (arena, start) = arena(guest, &image, page);
            let mut told = Told {
                arena,
                start,
                data_len: image.len(),
            };
            let mut img = Image::new(guest, &image, page);
            println!(
                "{mib} MiB guest, {} MiB data, {page}-byte pages: raw writes found by {:?}",
                mib / 4,
                raw.arena.stats().raw_writes
            );
            for reads in [Reads::Pages, Reads::Data] {
                for &k in &settings.ks {
                    let k = k.min(image.len() / page);
                    let t = Instant::now();
                    let samples = run_case(
                        &mut [&mut raw, &mut told, &mut img],
                        k,
                        reads,
                        page,
                        settings.case_time,
                    );
                    println!(
                        "  k = {k:>4}, reads {:>5}: {} iterations each in {:.1} s",
                        reads.name(),
                        samples[0].reset.len(),
                        t.elapsed().as_secs_f64()
                    );
                    rows.push(Row {
                        guest_mib: mib,
                        k,
                        reads,
                        samples,
                    });
                }
            }
            mid_run_snapshot(&mut raw, page, settings.case_time);
            drop((raw, told, img));
            println!(
                "stress, {mib} MiB guest: {} snapshots, each after {MID_RUN_K} raw writes, all kept",
                settings.stress
            );
            for reset in [true, false] {
                stress(guest, &image, page, settings.stress, reset);
            }
        }
        print_tables(&rows);
    }
}

fn main() {
    #[cfg(target_os = "linux")]
    linux::main();
    #[cfg(not(target_os = "linux"))]
    println!("raw_reset: Linux only (memfd, madvise(MADV_DONTNEED) on private file mappings)");
}
