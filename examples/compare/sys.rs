//! Raw mappings and /proc readings used by the baselines and the memory workload.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::AtomicU64;

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

/// An mmap'd region, unmapped on drop.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    pub fn anon(len: usize, shared: bool) -> io::Result<Self> {
        let kind = if shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        Self::map(len, kind | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1)
    }

    pub fn file(fd: BorrowedFd<'_>, len: usize, shared: bool) -> io::Result<Self> {
        let kind = if shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        Self::map(len, kind, fd.as_raw_fd())
    }

    fn map(len: usize, flags: libc::c_int, fd: libc::c_int) -> io::Result<Self> {
        // SAFETY: a new mapping at an address chosen by the kernel; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Self { ptr, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is readable for `len` bytes and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is writable for `len` bytes, lives as long as `self`, and `&mut self`
        // makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// MADV_DONTNEED on `[off, off + len)`: a private file mapping drops its private copies there.
    pub fn discard(&mut self, off: usize, len: usize) -> io::Result<()> {
        assert!(off + len <= self.len && off % page_size() == 0);
        // SAFETY: the range lies inside this mapping; `&mut self` guarantees no slice borrowed from
        // it is alive while its contents change.
        let r =
            unsafe { libc::madvise(self.ptr.as_ptr().add(off).cast(), len, libc::MADV_DONTNEED) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value owns, and no borrow of it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

pub fn memfd(name: &std::ffi::CStr, len: usize) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let file = std::fs::File::from(fd);
    file.set_len(len as u64)?;
    Ok(OwnedFd::from(file))
}

pub fn pwrite_all(fd: BorrowedFd<'_>, buf: &[u8], off: usize) -> io::Result<()> {
    let file = std::mem::ManuallyDrop::new(
        // SAFETY: the fd stays open for the duration (borrowed), and ManuallyDrop stops the
        // temporary File from closing it.
        unsafe { std::fs::File::from_raw_fd(fd.as_raw_fd()) },
    );
    std::os::unix::fs::FileExt::write_all_at(&*file, buf, off as u64)
}

/// A small MAP_SHARED anonymous region: forked children report results through it.
pub struct Shared {
    map: Mapping,
}

impl Shared {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            map: Mapping::anon(page_size(), true)?,
        })
    }

    pub fn slot(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.map.len() / 8);
        // SAFETY: the mapping is page-aligned and at least (i + 1) * 8 bytes long, AtomicU64 has the
        // layout of u64, and the mapping outlives the returned reference. Atomics on MAP_SHARED
        // memory are coherent across processes.
        unsafe { &*self.map.ptr.as_ptr().cast::<AtomicU64>().add(i) }
    }
}

/// Gives freed heap pages back to the kernel, so that one strategy's leftovers do not inflate the
/// next one's measurements (fork copies the page tables of every resident page).
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| field_kb(&s, "Threads:"))
        .unwrap_or(0) as usize
}

/// Memory in use, as the memory workload counts it:
/// - `anon`: `Anonymous` of /proc/self/smaps_rollup: heap, anonymous mappings, and the private
///   copies that writes make in MAP_PRIVATE file mappings.
/// - `shmem`: the allocated size (st_blocks) of every memfd or /dev/shm file this process holds
///   open or mapped, each file once. smaps' `Rss_Shmem` would miss memfd pages that are not mapped,
///   and /proc/meminfo's `Shmem` is machine-wide (other processes' tmpfs use would leak in).
/// - `pte`: `VmPTE` of /proc/self/status: page tables are memory too.
///
/// `Rss_File` is left out: those pages are the binary and libraries, the same before and after.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemSample {
    pub anon: u64,
    pub shmem: u64,
    pub pte: u64,
}

impl MemSample {
    pub fn now() -> io::Result<Self> {
        let rollup = std::fs::read_to_string("/proc/self/smaps_rollup")?;
        let status = std::fs::read_to_string("/proc/self/status")?;
        let get = |text: &str, key: &str| {
            field_kb(text, key)
                .map(|kb| kb * 1024)
                .ok_or_else(|| io::Error::other(format!("no {key} in /proc")))
        };
        Ok(Self {
            anon: get(&rollup, "Anonymous:")?,
            shmem: own_shmem(),
            pte: get(&status, "VmPTE:")?,
        })
    }

    pub fn total(&self) -> u64 {
        self.anon + self.shmem + self.pte
    }

    pub fn minus(&self, before: &Self) -> Self {
        Self {
            anon: self.anon.saturating_sub(before.anon),
            shmem: self.shmem.saturating_sub(before.shmem),
            pte: self.pte.saturating_sub(before.pte),
        }
    }
}

/// Bytes allocated to the memfd and /dev/shm files reachable from this process's fds and mappings.
fn own_shmem() -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for dir in ["/proc/self/fd", "/proc/self/map_files"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(target) = std::fs::read_link(e.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if !(t.starts_with("/memfd:") || t.starts_with("/dev/shm/")) {
                continue;
            }
            if let Ok(m) = std::fs::metadata(e.path()) {
                if seen.insert((m.dev(), m.ino())) {
                    total += m.blocks() * 512;
                }
            }
        }
    }
    total
}

fn field_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}
