//! Baselines that need no crate: a deep copy, fork(), and the raw kernel floor.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::strategy::{fill, Res, Strategy, Workload};
use crate::sys::{self, Mapping};

fn read_u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// The snapshot is a `Vec<u8>` clone; restore copies it back.
///
/// Released snapshot buffers are kept and cloned into again (`clone_from`), so a snapshot costs a
/// memcpy and not also a page fault per page. Without this the cost depends on the allocator's
/// state: glibc serves a big clone from a fresh mmap (faults on every page) unless an earlier free
/// left a large enough chunk in its heap (no faults), which made the figures depend on which
/// strategy ran before.
pub struct DeepCopy {
    live: Vec<u8>,
    stack: Vec<Vec<u8>>,
    spare: Vec<Vec<u8>>,
}

impl Strategy for DeepCopy {
    const NAME: &'static str = "deep_copy";
    const FULL_COPY: bool = true;

    fn setup(bytes: usize) -> Res<Self> {
        let mut live = vec![0u8; bytes];
        fill(&mut live, 0);
        Ok(Self {
            live,
            stack: Vec::new(),
            spare: Vec::new(),
        })
    }
    fn capacity(&self) -> usize {
        self.live.len()
    }
    fn read_u8(&self, off: usize) -> u8 {
        self.live[off]
    }
    fn read_u64(&self, off: usize) -> u64 {
        read_u64_at(&self.live, off)
    }
    fn write_u8(&mut self, off: usize, v: u8) -> Res<()> {
        self.live[off] = v;
        Ok(())
    }
    fn write_u64(&mut self, off: usize, v: u64) -> Res<()> {
        self.live[off..off + 8].copy_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn snapshot(&mut self) -> Res<()> {
        let mut copy = self.spare.pop().unwrap_or_default();
        copy.clone_from(&self.live);
        self.stack.push(copy);
        Ok(())
    }
    fn restore(&mut self) -> Res<()> {
        let top = self.stack.last().ok_or("no snapshot")?;
        self.live.copy_from_slice(top);
        Ok(())
    }
    fn release(&mut self) -> Res<()> {
        let copy = self.stack.pop().ok_or("no snapshot")?;
        self.spare.push(copy);
        Ok(())
    }
    fn restore_and_release(&mut self) -> Res<()> {
        // The copy is no longer needed as a snapshot, so it becomes the live state: no copy back.
        let copy = self.stack.pop().ok_or("no snapshot")?;
        let old = std::mem::replace(&mut self.live, copy);
        self.spare.push(old);
        Ok(())
    }
}

/// A branch is a child process: it does the branch's writes and exits, the parent waits.
pub struct Fork {
    map: Mapping,
    /// True in a child: its state is thrown away when it exits, so its last branch runs in place
    /// (one fork per decision, as fork-based executors do).
    disposable: bool,
}

impl Fork {
    fn fork_and_wait(&mut self, child: impl FnOnce(&mut Self) -> Res<()>) -> Res<()> {
        debug_assert_eq!(sys::thread_count(), 1);
        // SAFETY: the process is single-threaded (checked in setup; nothing here starts threads), so
        // the child owns a consistent copy of every lock and allocator state.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error().into());
        }
        if pid == 0 {
            self.disposable = true;
            let code = match catch_unwind(AssertUnwindSafe(|| child(self))) {
                Ok(Ok(())) => 0,
                Ok(Err(e)) => {
                    eprintln!("fork child: {e}");
                    1
                }
                Err(_) => 2,
            };
            // SAFETY: _exit ends the child without running the parent's atexit handlers or
            // destructors, which belong to the parent.
            unsafe { libc::_exit(code) };
        }
        wait_ok(pid)
    }
}

fn wait_ok(pid: libc::pid_t) -> Res<()> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer and `pid` is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e.into());
        }
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(format!("fork child failed (wait status {status:#x})").into())
    }
}

const FORK_NO_HANDLE: &str = "fork has no snapshot handle: a branch is a child process";

impl Strategy for Fork {
    const NAME: &'static str = "fork";

    fn setup(bytes: usize) -> Res<Self> {
        if sys::thread_count() != 1 {
            return Err("fork needs a single-threaded process".into());
        }
        let mut map = Mapping::anon(bytes, false)?;
        fill(map.as_mut_slice(), 0);
        Ok(Self {
            map,
            disposable: false,
        })
    }
    fn capacity(&self) -> usize {
        self.map.len()
    }
    fn read_u8(&self, off: usize) -> u8 {
        self.map.as_slice()[off]
    }
    fn read_u64(&self, off: usize) -> u64 {
        read_u64_at(self.map.as_slice(), off)
    }
    fn write_u8(&mut self, off: usize, v: u8) -> Res<()> {
        self.map.as_mut_slice()[off] = v;
        Ok(())
    }
    fn write_u64(&mut self, off: usize, v: u64) -> Res<()> {
        self.map.as_mut_slice()[off..off + 8].copy_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn snapshot(&mut self) -> Res<()> {
        Err(FORK_NO_HANDLE.into())
    }
    fn restore(&mut self) -> Res<()> {
        Err(FORK_NO_HANDLE.into())
    }
    fn release(&mut self) -> Res<()> {
        Err(FORK_NO_HANDLE.into())
    }
    fn branches(&mut self, n: usize, f: &mut dyn FnMut(&mut Self, usize) -> Res<()>) -> Res<()> {
        for i in 0..n {
            if self.disposable && i + 1 == n {
                return f(self, i);
            }
            self.fork_and_wait(|s| f(s, i))?;
        }
        Ok(())
    }
    /// The fork() call as seen by the parent; the child exits at once.
    fn timed_snapshot(&mut self, _written: &[(usize, u8)]) -> Res<Duration> {
        let t = Instant::now();
        // SAFETY: single-threaded process (see `fork_and_wait`); the child only calls _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: ends the child without touching the parent's state.
            unsafe { libc::_exit(0) };
        }
        let dt = t.elapsed();
        if pid < 0 {
            return Err(io::Error::last_os_error().into());
        }
        wait_ok(pid)?;
        Ok(dt)
    }
    fn unsupported(w: Workload) -> Option<&'static str> {
        (w == Workload::Memory)
            .then_some("a fork snapshot is a whole process; 1000 live processes are not measured")
    }
}

/// The floor a kernel-COW arena can reach: the snapshot is a memfd, the state a MAP_PRIVATE mapping of
/// it; writes take the kernel's COW fault, restore is MADV_DONTNEED of the written pages (coalesced
/// into runs). One level only: a snapshot taken with written pages stores them into the memfd.
pub struct KernelFloor {
    fd: OwnedFd,
    map: Mapping,
    page: usize,
    dirty: Vec<u32>,
    dirty_bits: Vec<u64>,
    live: bool,
}

impl KernelFloor {
    fn mark(&mut self, off: usize) {
        let p = off / self.page;
        let (w, b) = (p / 64, 1u64 << (p % 64));
        if self.dirty_bits[w] & b == 0 {
            self.dirty_bits[w] |= b;
            self.dirty.push(p as u32);
        }
    }

    fn discard_dirty(&mut self) -> Res<()> {
        self.dirty.sort_unstable();
        let mut i = 0;
        while i < self.dirty.len() {
            let start = self.dirty[i] as usize;
            let mut end = start + 1;
            i += 1;
            while i < self.dirty.len() && self.dirty[i] as usize == end {
                end += 1;
                i += 1;
            }
            self.map
                .discard(start * self.page, (end - start) * self.page)?;
        }
        for &p in &self.dirty {
            self.dirty_bits[p as usize / 64] = 0;
        }
        self.dirty.clear();
        Ok(())
    }
}

impl Strategy for KernelFloor {
    const NAME: &'static str = "kernel_floor";

    fn setup(bytes: usize) -> Res<Self> {
        let page = sys::page_size();
        let bytes = bytes.div_ceil(page) * page;
        let fd = sys::memfd(c"kernel_floor", bytes)?;
        {
            let mut shared = Mapping::file(fd.as_fd(), bytes, true)?;
            fill(shared.as_mut_slice(), 0);
        }
        let map = Mapping::file(fd.as_fd(), bytes, false)?;
        // Map every page, as the other strategies have theirs mapped after writing them.
        let mut s = 0u8;
        for p in (0..bytes).step_by(page) {
            s ^= map.as_slice()[p];
        }
        std::hint::black_box(s);
        let pages = bytes / page;
        Ok(Self {
            fd,
            map,
            page,
            dirty: Vec::new(),
            dirty_bits: vec![0; pages.div_ceil(64)],
            live: false,
        })
    }
    fn capacity(&self) -> usize {
        self.map.len()
    }
    fn read_u8(&self, off: usize) -> u8 {
        self.map.as_slice()[off]
    }
    fn read_u64(&self, off: usize) -> u64 {
        read_u64_at(self.map.as_slice(), off)
    }
    fn write_u8(&mut self, off: usize, v: u8) -> Res<()> {
        self.mark(off);
        self.map.as_mut_slice()[off] = v;
        Ok(())
    }
    fn write_u64(&mut self, off: usize, v: u64) -> Res<()> {
        self.mark(off);
        self.map.as_mut_slice()[off..off + 8].copy_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn snapshot(&mut self) -> Res<()> {
        if self.live {
            return Err("kernel_floor keeps one snapshot (the memfd itself)".into());
        }
        if !self.dirty.is_empty() {
            for i in 0..self.dirty.len() {
                let off = self.dirty[i] as usize * self.page;
                sys::pwrite_all(
                    self.fd.as_fd(),
                    &self.map.as_slice()[off..off + self.page],
                    off,
                )?;
            }
            self.discard_dirty()?;
        }
        self.live = true;
        Ok(())
    }
    fn restore(&mut self) -> Res<()> {
        if !self.live {
            return Err("no snapshot".into());
        }
        self.discard_dirty()
    }
    fn release(&mut self) -> Res<()> {
        self.live = false;
        Ok(())
    }
    fn unsupported(w: Workload) -> Option<&'static str> {
        match w {
            Workload::Memory => Some("one snapshot at a time (the memfd itself)"),
            Workload::Dfs => Some("nested snapshots need a page store; the floor has one level"),
            _ => None,
        }
    }
}
