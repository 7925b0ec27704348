//! Process-level counters the tests compare before and after: open files, kernel mappings,
//! resident memory, and the pagemap state of pages.
#![allow(dead_code)]

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
