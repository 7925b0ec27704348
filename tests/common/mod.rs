//! What the integration tests share: process-level counters they compare before and after
//! (open files, kernel mappings, resident memory, the pagemap state of pages; Linux `/proc`), a
//! lock for tests that must not overlap, and a deterministic generator; in `values`, what the
//! tests of values with invalid bit patterns share.
#![allow(dead_code)]

pub mod values;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Tests that look at process-wide state (files, mappings, limits, children) hold this lock so
/// they do not overlap. A test that failed while holding it poisons nothing they rely on.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

use std::os::unix::fs::FileExt;

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Kernel mappings (VMAs) of this process.
pub fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

/// A field of /proc/self/status, in KiB.
pub fn status_kib(field: &str) -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Resident memory of this process: anonymous plus shared-memory (memfd) pages, in KiB.
pub fn rss_kib() -> usize {
    status_kib("RssAnon:") + status_kib("RssShmem:")
}

/// Per page of `bytes`: (present, private), from /proc/self/pagemap. A page is private when it
/// is present and not a file page (bit 61 clear), i.e. the kernel has copied it.
pub fn page_states(bytes: &[u8]) -> Vec<(bool, bool)> {
    let page = cowarena::page_size();
    let f = std::fs::File::open("/proc/self/pagemap").unwrap();
    let first = bytes.as_ptr() as usize / page;
    let n = bytes.len() / page;
    let mut buf = vec![0u8; n * 8];
    f.read_exact_at(&mut buf, (first * 8) as u64).unwrap();
    buf.chunks_exact(8)
        .map(|e| {
            let e = u64::from_ne_bytes(e.try_into().unwrap());
            (e >> 63 & 1 == 1, e >> 63 & 1 == 1 && e >> 61 & 1 == 0)
        })
        .collect()
}

pub fn private_pages(bytes: &[u8]) -> usize {
    page_states(bytes).iter().filter(|s| s.1).count()
}

/// A small deterministic generator (xorshift64), so that a failure reproduces from its seed.
pub struct Rng(pub u64);

impl Rng {
    /// A generator for `seed`, spread so that nearby seeds start far apart (never zero).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03 | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with `pct` percent probability.
    pub fn chance(&mut self, pct: usize) -> bool {
        self.below(100) < pct
    }

    /// `n` bytes: one value repeated, a ramp, or noise.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let fill = self.next() as u8;
        let mode = self.below(3);
        (0..n)
            .map(|i| match mode {
                0 => fill,
                1 => fill.wrapping_add(i as u8),
                _ => self.next() as u8,
            })
            .collect()
    }
}

/// The address range of `bytes`, to look for mappings there after its owner is gone.
pub fn addresses(bytes: &[u8]) -> std::ops::Range<usize> {
    let start = bytes.as_ptr() as usize;
    start..start + bytes.len()
}

/// Kernel mappings (VMAs) of this process that overlap `range`.
pub fn mappings_in(range: std::ops::Range<usize>) -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| {
            let (lo, hi) = l
                .split_whitespace()
                .next()
                .unwrap()
                .split_once('-')
                .unwrap();
            let lo = usize::from_str_radix(lo, 16).unwrap();
            let hi = usize::from_str_radix(hi, 16).unwrap();
            lo < range.end && hi > range.start
        })
        .count()
}

/// Kernel mappings of this process whose line in `/proc/self/maps` contains `name` (a file's
/// path).
pub fn mappings_of(name: &str) -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains(name))
        .count()
}

/// Kernel mappings of this process whose file is one of the page store's memfds.
pub fn memfd_mappings() -> usize {
    mappings_of("/memfd:cowarena")
}

/// The open file descriptors whose target (`/proc/self/fd/N`) starts with `prefix`.
pub fn fds_to(prefix: &str) -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let fd = e.file_name().to_str()?.parse().ok()?;
            target.to_str()?.starts_with(prefix).then_some(fd)
        })
        .collect()
}

/// The open file descriptors that are the page store's memfds (`/memfd:cowarena (deleted)`).
pub fn cowarena_memfds() -> Vec<i32> {
    fds_to("/memfd:cowarena")
}

/// No child process, running or zombie.
pub fn no_children() -> Result<(), String> {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer; WNOHANG never blocks.
    let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    if r == -1 && errno == Some(libc::ECHILD) {
        Ok(())
    } else {
        Err(format!("a child process is left (waitpid: {r})"))
    }
}

/// Bytes of memory the process's cowarena memfds occupy (their allocated blocks).
pub fn memfd_bytes() -> usize {
    use std::os::unix::fs::MetadataExt;
    cowarena_memfds()
        .into_iter()
        .filter_map(|fd| std::fs::metadata(format!("/proc/self/fd/{fd}")).ok())
        .map(|m| m.blocks() as usize * 512)
        .sum()
}

/// Where the sections of an encoded snapshot (a file or bytes in memory) lie: the boundaries
/// between header fields, base name, index, checksums, metadata checksum, padding and each stored
/// page, up to the end; and the index's start, the end of the metadata, the start of the data and
/// the counts of index entries and stored pages (see the format in `src/persist/mod.rs`).
pub struct Sections {
    pub boundaries: Vec<usize>,
    pub index: usize,
    pub meta_end: usize,
    pub data_offset: usize,
    pub entries: usize,
}

pub fn sections(bytes: &[u8], page: usize) -> Sections {
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
    let (entries, stored, data_offset, name_len) = (u64_at(32), u64_at(40), u64_at(48), u64_at(88));
    let index = 128 + name_len;
    let sums = index + 8 * entries;
    let meta_end = sums + 8 * stored + 8;
    let mut boundaries = vec![
        0,
        8,
        12,
        16,
        24,
        32,
        40,
        48,
        56,
        72,
        88,
        96,
        128,
        index,
        sums,
        meta_end - 8,
        meta_end,
    ];
    boundaries.extend((0..=stored).map(|k| data_offset + k * page));
    assert_eq!(*boundaries.last().unwrap(), bytes.len());
    Sections {
        boundaries,
        index,
        meta_end,
        data_offset,
        entries,
    }
}

/// A directory of its own for one test, removed when dropped (a failing test's too).
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cowarena-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
