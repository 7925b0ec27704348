//! What the benchmarks share: the arena sizes to run, the random pages each cycle writes, a
//! fully resident arena, and the bare `fork()` baseline.

use cowarena::{Arena, Snapshot};

/// Pages written per cycle.
pub const K: usize = 64;
pub const MIB: usize = 1 << 20;

/// Arena sizes in MiB: `COWARENA_BENCH_SIZES=16,1024` (the default) or any list.
pub fn sizes() -> Vec<usize> {
    std::env::var("COWARENA_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![16, 1024])
}

/// `K` distinct pages spread over the arena, different each call.
pub struct Pages {
    pub state: u64,
    pub pages: usize,
}

impl Pages {
    pub fn next(&mut self) -> Vec<usize> {
        let mut out = Vec::with_capacity(K);
        while out.len() < K {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let p = self.state as usize % self.pages;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }
}

/// An arena of `len` bytes with every page written (0xA5), frozen, and read back so that it is
/// resident; the snapshot is its frozen state.
pub fn resident_arena(len: usize) -> (Arena, Snapshot) {
    let page = cowarena::page_size();
    let mut a = Arena::with_capacity(len).unwrap();
    a.bytes_mut(0..len).unwrap().fill(0xA5);
    let base = a.snapshot().unwrap();
    let sum: u64 = a
        .as_bytes()
        .iter()
        .step_by(page)
        .map(|&b| u64::from(b))
        .sum();
    assert_eq!(sum, 0xA5 * (len / page) as u64);
    (a, base)
}

/// `fork()`s a child that writes one byte in each of `pages` at `base` and `_exit`s; waits for it.
///
/// # Safety
/// `base` must be valid for writes of every page in `pages` (the child writes its own copy).
pub unsafe fn fork_and_write(base: *mut u8, pages: &[usize], page: usize) {
    // SAFETY: the child makes only async-signal-safe calls (raw writes into its copy of memory the
    // caller vouched for, `_exit`); the parent reaps it.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            for &p in pages {
                base.add(p * page).write_volatile(1);
            }
            libc::_exit(0);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}
