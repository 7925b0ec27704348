//! Linux: page-store files are memfds (sealable, close-on-exec); a user-chosen directory gets
//! `O_TMPFILE` files instead. Private pages are found with the `PAGEMAP_SCAN` ioctl (kernel 6.7+),
//! falling back to `/proc/self/pagemap`.

use super::fault::{self, Call};
use super::{os_error, retry_interrupted};
use crate::error::Result;
use nix::fcntl::{fallocate, fcntl, open, FallocateFlags, FcntlArg, OFlag, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::stat::Mode;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// A new empty file for pages: a memfd, or an unnamed file in `dir` when one is given.
pub(crate) fn create_backing_file(dir: Option<&Path>) -> Result<OwnedFd> {
    match dir {
        None => fault::point("memfd_create", Call::Plain)
            .and_then(|()| {
                memfd_create(
                    c"cowarena",
                    MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
                )
            })
            .map_err(|e| os_error("memfd_create", e)),
        Some(dir) => {
            const OP: &str = "open(O_TMPFILE) in the backing directory";
            let raw = retry_interrupted(|| {
                fault::point(OP, Call::Interruptible)?;
                open(
                    dir,
                    OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
                    Mode::S_IRUSR | Mode::S_IWUSR,
                )
            })
            .map_err(|e| os_error(OP, e))?;
            // SAFETY: `open` returned a fresh descriptor that nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(raw) })
        }
    }
}

fn add_seals(fd: &OwnedFd, seals: SealFlag) -> Result<bool> {
    let added = fault::point("fcntl(F_ADD_SEALS)", Call::Plain)
        .and_then(|()| fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals)));
    match added {
        Ok(_) => Ok(true),
        // Files not created by memfd_create(MFD_ALLOW_SEALING) cannot be sealed.
        Err(nix::errno::Errno::EPERM | nix::errno::Errno::EINVAL) => Ok(false),
        Err(e) => Err(os_error("fcntl(F_ADD_SEALS)", e)),
    }
}

/// Forbids growing and shrinking the file. Returns whether the kernel applied the seals.
pub(crate) fn seal_size(fd: &OwnedFd) -> Result<bool> {
    add_seals(fd, SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK)
}

/// Forbids every further write to the file (private mappings stay possible).
pub(crate) fn seal_write(fd: &OwnedFd) -> Result<bool> {
    add_seals(fd, SealFlag::F_SEAL_WRITE)
}

/// Frees the file's blocks in the range; it reads as zeros afterwards.
pub(crate) fn punch_hole(fd: &OwnedFd, offset: usize, len: usize) -> Result<()> {
    const OP: &str = "fallocate(PUNCH_HOLE)";
    retry_interrupted(|| {
        fault::point(OP, Call::Interruptible)?;
        fallocate(
            fd.as_raw_fd(),
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    })
    .map_err(|e| os_error(OP, e))
}

pub(crate) fn allocate(fd: &OwnedFd, offset: usize, len: usize) -> Result<()> {
    retry_interrupted(|| {
        fault::point("fallocate", Call::Interruptible)?;
        fallocate(
            fd.as_raw_fd(),
            FallocateFlags::empty(),
            offset as libc::off_t,
            len as libc::off_t,
        )
    })
    .map_err(|e| os_error("fallocate", e))
}

/// Byte ranges of `[0, len)` where the file holds data (everything else is a hole).
pub(crate) fn data_ranges(fd: &OwnedFd, len: usize) -> Result<Vec<Range<usize>>> {
    use nix::unistd::{lseek, Whence};
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < len {
        let found = fault::point("lseek(SEEK_DATA)", Call::Plain)
            .and_then(|()| lseek(fd.as_raw_fd(), pos as libc::off_t, Whence::SeekData));
        let start = match found {
            Ok(s) => s as usize,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(os_error("lseek(SEEK_DATA)", e)),
        };
        if start >= len {
            break;
        }
        let found = fault::point("lseek(SEEK_HOLE)", Call::Plain)
            .and_then(|()| lseek(fd.as_raw_fd(), start as libc::off_t, Whence::SeekHole));
        let end = match found {
            Ok(e) => (e as usize).min(len),
            Err(e) => return Err(os_error("lseek(SEEK_HOLE)", e)),
        };
        out.push(start..end);
        pos = end;
    }
    Ok(out)
}

/// Page-index runs in `[addr, addr + len)` that are present and private: not a file page and not
/// the shared zero page. `None` when neither the ioctl nor `/proc/self/pagemap` is available.
pub(crate) fn private_page_runs(addr: usize, len: usize) -> Option<Vec<Range<usize>>> {
    #[cfg(cowarena_pagemap_scan)]
    if let Some(runs) = pagemap_scan(addr, len) {
        return Some(runs);
    }
    proc_pagemap(addr, len)
}

#[cfg(cowarena_pagemap_scan)]
fn pagemap_scan(addr: usize, len: usize) -> Option<Vec<Range<usize>>> {
    /// `struct pm_scan_arg` from `<linux/fs.h>`.
    #[repr(C)]
    struct PmScanArg {
        size: u64,
        flags: u64,
        start: u64,
        end: u64,
        walk_end: u64,
        vec: u64,
        vec_len: u64,
        max_pages: u64,
        category_inverted: u64,
        category_mask: u64,
        category_anyof_mask: u64,
        return_mask: u64,
    }
    /// `struct page_region` from `<linux/fs.h>`.
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct PageRegion {
        start: u64,
        end: u64,
        categories: u64,
    }
    const PAGE_IS_FILE: u64 = 1 << 2;
    const PAGE_IS_PRESENT: u64 = 1 << 3;
    const PAGE_IS_PFNZERO: u64 = 1 << 5;
    // _IOWR('f', 16, struct pm_scan_arg)
    const PAGEMAP_SCAN: u64 =
        (3 << 30) | ((size_of::<PmScanArg>() as u64) << 16) | (0x66 << 8) | 16;

    fault::point("open(/proc/self/pagemap) for PAGEMAP_SCAN", Call::Plain).ok()?;
    let file = std::fs::File::open("/proc/self/pagemap").ok()?;
    let page = super::page_size();
    let mut regions = vec![PageRegion::default(); 512];
    let mut runs: Vec<Range<usize>> = Vec::new();
    let mut start = addr as u64;
    let end = (addr + len) as u64;
    while start < end {
        let mut arg = PmScanArg {
            size: size_of::<PmScanArg>() as u64,
            flags: 0,
            start,
            end,
            walk_end: 0,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            max_pages: 0,
            category_inverted: PAGE_IS_FILE | PAGE_IS_PFNZERO,
            category_mask: PAGE_IS_PRESENT | PAGE_IS_FILE | PAGE_IS_PFNZERO,
            category_anyof_mask: 0,
            return_mask: PAGE_IS_PRESENT,
        };
        fault::point("ioctl(PAGEMAP_SCAN)", Call::Plain).ok()?;
        // SAFETY: `arg` is a correctly sized `pm_scan_arg` whose `vec` points at `regions`, which
        // outlives the call and has room for `vec_len` entries; the ioctl only reads page tables.
        let n = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                PAGEMAP_SCAN as _,
                &mut arg as *mut PmScanArg,
            )
        };
        if n < 0 {
            return None;
        }
        for r in &regions[..n as usize] {
            let first = (r.start as usize - addr) / page;
            let last = (r.end as usize - addr) / page;
            match runs.last_mut() {
                Some(prev) if prev.end == first => prev.end = last,
                _ => runs.push(first..last),
            }
        }
        if arg.walk_end <= start {
            return None;
        }
        start = arg.walk_end;
    }
    Some(runs)
}

fn proc_pagemap(addr: usize, len: usize) -> Option<Vec<Range<usize>>> {
    use std::os::unix::fs::FileExt;
    const PRESENT: u64 = 1 << 63;
    const FILE_OR_SHARED: u64 = 1 << 61;
    fault::point("open(/proc/self/pagemap)", Call::Plain).ok()?;
    let file = std::fs::File::open("/proc/self/pagemap").ok()?;
    let page = super::page_size();
    let pages = len / page;
    let mut runs: Vec<Range<usize>> = Vec::new();
    let mut buf = vec![0u8; 8 * 4096];
    let mut done = 0;
    while done < pages {
        let count = (pages - done).min(4096);
        let bytes = &mut buf[..count * 8];
        fault::point("pread(/proc/self/pagemap)", Call::Plain).ok()?;
        file.read_exact_at(bytes, ((addr / page + done) * 8) as u64)
            .ok()?;
        for (i, entry) in bytes.chunks_exact(8).enumerate() {
            let entry = u64::from_ne_bytes(entry.try_into().expect("8-byte chunk"));
            if entry & PRESENT != 0 && entry & FILE_OR_SHARED == 0 {
                let p = done + i;
                match runs.last_mut() {
                    Some(prev) if prev.end == p => prev.end = p + 1,
                    _ => runs.push(p..p + 1),
                }
            }
        }
        done += count;
    }
    Some(runs)
}
