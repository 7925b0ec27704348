//! Linux: page-store files are memfds (sealable, close-on-exec); a user-chosen directory gets
//! `O_TMPFILE` files instead. Private pages are found with the `PAGEMAP_SCAN` ioctl (kernel 6.7+,
//! probed once per process), falling back to `/proc/self/pagemap`.

use super::fault::{self, Call};
use super::{os_error, retry_interrupted};
use crate::error::Result;
use crate::page_set::Coalesce;
use nix::errno::Errno;
use nix::fcntl::{fallocate, fcntl, open, FallocateFlags, FcntlArg, OFlag, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::stat::Mode;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

#[path = "write_tracker.rs"]
pub(crate) mod write_tracker;

/// A new empty file for pages: a memfd, or an unnamed file in `dir` when one is given.
pub(crate) fn create_backing_file(dir: Option<&Path>) -> Result<OwnedFd> {
    match dir {
        None => fault::point("memfd_create", Call::Plain)
            .and_then(|_call| {
                memfd_create(
                    c"cowarena",
                    MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
                )
            })
            .map_err(|e| os_error("memfd_create", e)),
        Some(dir) => {
            const OP: &str = "open(O_TMPFILE) in the backing directory";
            let raw = retry_interrupted(|| {
                let _call = fault::point(OP, Call::Interruptible)?;
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
        .and_then(|_call| fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals)));
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

/// Forbids every new way to write the file (`write`, a new shared writable mapping, punching a
/// hole) while the shared writable mappings that exist keep working: only their owner can change
/// the file from now on. Returns whether the kernel applied the seal (Linux 5.1+).
pub(crate) fn seal_future_writes(fd: &OwnedFd) -> Result<bool> {
    add_seals(fd, SealFlag::F_SEAL_FUTURE_WRITE)
}

/// [`seal_future_writes`] for good: also forbids any change of the seals, so the shared writable
/// mappings that exist stay the only writers the file will ever have. Returns whether the kernel
/// applied the seals.
pub(crate) fn seal_for_owners(fd: &OwnedFd) -> Result<bool> {
    add_seals(fd, SealFlag::F_SEAL_FUTURE_WRITE | SealFlag::F_SEAL_SEAL)
}

/// Forbids every further write to the file (private mappings stay possible) and any change of
/// its seals. Returns whether the kernel applied the seals.
pub(crate) fn seal_full(fd: &OwnedFd) -> Result<bool> {
    add_seals(fd, SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SEAL)
}

/// A kernel feature probed by its first use, so that later calls neither retry nor fall back
/// on every call.
pub(super) struct Probe(AtomicU8);

impl Probe {
    const UNKNOWN: u8 = 0;
    const PRESENT: u8 = 1;
    const MISSING: u8 = 2;

    pub(super) const fn new() -> Self {
        Probe(AtomicU8::new(Self::UNKNOWN))
    }

    pub(super) fn missing(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::MISSING
    }

    pub(super) fn present(&self) {
        self.0.store(Self::PRESENT, Ordering::Relaxed);
    }

    /// Records that the kernel refused the call with `errno`; returns whether that means it lacks
    /// the feature (only a first call's `ENOSYS`, `ENOTTY`, `EINVAL` or, under a seccomp filter,
    /// `EPERM` does).
    pub(super) fn refused(&self, errno: Errno) -> bool {
        let lacks = matches!(
            errno,
            Errno::ENOSYS | Errno::ENOTTY | Errno::EINVAL | Errno::EPERM
        ) && self.0.load(Ordering::Relaxed) == Self::UNKNOWN;
        if lacks {
            self.0.store(Self::MISSING, Ordering::Relaxed);
        }
        lacks
    }
}

/// Whether `madvise(MADV_POPULATE_WRITE)` works (Linux 5.14+).
static POPULATE_WRITE: Probe = Probe::new();

/// Makes the pages of `[addr, addr + len)` the process's own copies now, as a write fault would,
/// without a byte changing; returns whether the kernel did it (never asked again once it showed
/// it lacks the call).
///
/// # Safety
/// The range lies in a private writable mapping the caller owns.
pub(super) unsafe fn populate_write(addr: usize, len: usize) -> bool {
    if POPULATE_WRITE.missing() {
        return false;
    }
    const OP: &str = "madvise(MADV_POPULATE_WRITE) of arena pages";
    let done = retry_interrupted(|| {
        let _call = fault::point(OP, Call::Interruptible)?;
        // SAFETY: the range lies in a private writable mapping (the caller's promise);
        // populating only makes the kernel copy the pages as a write fault would: no byte
        // changes, and no reference is read or written by the process.
        let rc =
            unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) };
        Errno::result(rc)
    });
    match done {
        Ok(_) => {
            POPULATE_WRITE.present();
            true
        }
        Err(e) => {
            POPULATE_WRITE.refused(e);
            false
        }
    }
}

/// Whether `process_madvise(MADV_DONTNEED)` on this process works (Linux 6.13+).
static DISCARD_MANY: Probe = Probe::new();

/// Drops the private copies of the pages of every `(address, length)` range, up to 1024 ranges
/// (the kernel's iovec limit) per `process_madvise` call: about 0.6 us per scattered page here,
/// against 1.9 us for one `madvise` per page. Returns how many leading ranges are done; the
/// caller drops the others itself (all of them where the kernel lacks the call).
///
/// # Safety
/// Every range lies in mappings the caller owns, and no reference points into any of them.
pub(crate) unsafe fn discard_ranges(ranges: &[(usize, usize)]) -> usize {
    if DISCARD_MANY.missing() || ranges.is_empty() {
        return 0;
    }
    let raw = match fault::point("pidfd_open", Call::Plain) {
        // SAFETY: plain system call; the descriptor it returns is owned below.
        Ok(_call) => unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) },
        Err(e) => {
            DISCARD_MANY.refused(e);
            return 0;
        }
    };
    if raw < 0 {
        DISCARD_MANY.refused(Errno::last());
        return 0;
    }
    // SAFETY: `pidfd_open` returned a fresh descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    let mut done = 0;
    for group in ranges.chunks(1024) {
        let iov: Vec<libc::iovec> = group
            .iter()
            .map(|&(addr, len)| libc::iovec {
                iov_base: addr as *mut libc::c_void,
                iov_len: len,
            })
            .collect();
        let _call = match fault::point("process_madvise(MADV_DONTNEED)", Call::Plain) {
            Ok(call) => call,
            Err(e) => {
                DISCARD_MANY.refused(e);
                return done;
            }
        };
        // SAFETY: `iov` describes ranges the caller vouches for (forwarded); the call reads only
        // the iovec array, which outlives it.
        let n = unsafe {
            libc::syscall(
                libc::SYS_process_madvise,
                pidfd.as_raw_fd(),
                iov.as_ptr(),
                iov.len(),
                libc::MADV_DONTNEED,
                0,
            )
        };
        if n < 0 {
            DISCARD_MANY.refused(Errno::last());
            return done;
        }
        DISCARD_MANY.present();
        // A short count stops at a range boundary or inside one; the caller redoes the rest.
        let mut left = n as usize;
        let complete = group
            .iter()
            .take_while(|&&(_, len)| {
                let whole = left >= len;
                left = left.saturating_sub(len);
                whole
            })
            .count();
        done += complete;
        if complete < group.len() {
            return done;
        }
    }
    done
}

/// Frees the file's blocks in the range; it reads as zeros afterwards.
pub(crate) fn punch_hole(fd: &OwnedFd, offset: usize, len: usize) -> Result<()> {
    const OP: &str = "fallocate(PUNCH_HOLE)";
    retry_interrupted(|| {
        let _call = fault::point(OP, Call::Interruptible)?;
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
        let _call = fault::point("fallocate", Call::Interruptible)?;
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
            .and_then(|_call| lseek(fd.as_raw_fd(), pos as libc::off_t, Whence::SeekData));
        let start = match found {
            Ok(s) => s as usize,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(os_error("lseek(SEEK_DATA)", e)),
        };
        if start >= len {
            break;
        }
        let found = fault::point("lseek(SEEK_HOLE)", Call::Plain)
            .and_then(|_call| lseek(fd.as_raw_fd(), start as libc::off_t, Whence::SeekHole));
        let end = match found {
            Ok(e) => (e as usize).min(len),
            Err(e) => return Err(os_error("lseek(SEEK_HOLE)", e)),
        };
        out.push(start..end);
        pos = end;
    }
    Ok(out)
}

/// Page-index runs in `[addr, addr + len)` whose pages hold private contents: present and
/// neither a file page nor the shared zero page, or swapped out (or being migrated) anonymous
/// pages, which were private when they left. `None` when neither the ioctl nor
/// `/proc/self/pagemap` is available.
pub(crate) fn private_page_runs(addr: usize, len: usize) -> Option<Vec<Range<usize>>> {
    let file = {
        let _call = fault::point("open(/proc/self/pagemap)", Call::Plain).ok()?;
        std::fs::File::open("/proc/self/pagemap").ok()?
    };
    if let Some(runs) = scan::private_page_runs(&file, addr, len) {
        return Some(runs);
    }
    proc_pagemap(&file, addr, len)
}

/// The `PAGEMAP_SCAN` ioctl (Linux 6.7+): the kernel walks the page tables and returns ranges of
/// pages in the asked categories, far faster than reading one `/proc/self/pagemap` entry per page.
pub(super) mod scan {
    use super::*;

    /// `struct pm_scan_arg` from `<linux/fs.h>`. Made by [`PmScanArg::private_pages`] or
    /// [`PmScanArg::written_pages`] with what to ask; [`runs`] fills in the range and buffer.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub(super) struct PmScanArg {
        size: u64,
        flags: u64,
        start: u64,
        end: u64,
        walk_end: u64,
        vec: u64,
        vec_len: u64,
        max_pages: u64,
        pub(super) category_inverted: u64,
        pub(super) category_mask: u64,
        pub(super) category_anyof_mask: u64,
        return_mask: u64,
    }

    /// `struct page_region` from `<linux/fs.h>`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    struct PageRegion {
        start: u64,
        end: u64,
        categories: u64,
    }

    pub(super) const PAGE_IS_WRITTEN: u64 = 1 << 1;
    pub(super) const PAGE_IS_FILE: u64 = 1 << 2;
    pub(super) const PAGE_IS_PRESENT: u64 = 1 << 3;
    pub(super) const PAGE_IS_SWAPPED: u64 = 1 << 4;
    pub(super) const PAGE_IS_PFNZERO: u64 = 1 << 5;

    /// `PAGEMAP_SCAN` flags: protect the pages reported again (userfaultfd async mode), and
    /// fail unless every mapping of the range is registered for it.
    const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
    const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

    /// Runs one call returns at most. The kernel copies them through a buffer it allocates per
    /// call; up to about 170 of them it comes from the slab allocator, past it from the page
    /// allocator, which cost 0.5 us more per call here.
    const REGIONS: usize = 128;

    nix::ioctl_readwrite!(pagemap_scan, b'f', 16, PmScanArg);

    /// Whether the running kernel has the ioctl.
    static SCAN: Probe = Probe::new();

    /// Which pages a scan for written pages looks at.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Filter {
        /// Every page not protected: the kernel's fastest path (`PAGE_IS_WRITTEN` alone), which
        /// reports (and would protect) holes and zero pages as written too.
        Fast,
        /// Only pages that exist (present or swapped out) and are not the shared zero page: a
        /// hole, anonymous memory never touched, is neither reported nor protected, so it keeps
        /// having no page table and the kernel steps over it a page table at a time (see
        /// `write_tracker.rs`); the zero page, mapped where such memory was only read, cannot
        /// have been written (a write replaces it).
        Existing,
    }

    impl PmScanArg {
        /// Pages that hold private contents: not a file page, not the zero page, and present or
        /// swapped out.
        pub(super) fn private_pages() -> Self {
            PmScanArg {
                category_inverted: PAGE_IS_FILE | PAGE_IS_PFNZERO,
                category_mask: PAGE_IS_FILE | PAGE_IS_PFNZERO,
                category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                ..PmScanArg::default()
            }
        }

        /// Pages written since they were write-protected (userfaultfd, async mode), as `filter`
        /// sees them, which the call protects again if `protect`.
        pub(super) fn written_pages(protect: bool, filter: Filter) -> Self {
            let matching = if protect { PM_SCAN_WP_MATCHING } else { 0 };
            let (anyof, not_zero) = match filter {
                Filter::Existing => (PAGE_IS_PRESENT | PAGE_IS_SWAPPED, PAGE_IS_PFNZERO),
                Filter::Fast => (0, 0),
            };
            PmScanArg {
                flags: matching | PM_SCAN_CHECK_WPASYNC,
                category_inverted: not_zero,
                category_mask: PAGE_IS_WRITTEN | not_zero,
                category_anyof_mask: anyof,
                return_mask: PAGE_IS_WRITTEN,
                ..PmScanArg::default()
            }
        }
    }

    /// The runs of pages of `[addr, addr + len)` that `ask` selects, as page-index ranges
    /// relative to `addr`: as many ioctls on `pagemap` (`/proc/self/pagemap`) as the answer
    /// needs, [`REGIONS`] runs each. `Err` is a call's errno, or `EIO` if the kernel stopped
    /// making progress.
    pub(super) fn runs(
        pagemap: &std::fs::File,
        addr: usize,
        len: usize,
        ask: &PmScanArg,
    ) -> nix::Result<Vec<Range<usize>>> {
        let page = crate::sys::page_size();
        let mut regions = [PageRegion::default(); REGIONS];
        let mut runs = Coalesce::new(0, |_: &_, _: &_| true);
        let mut out = Vec::new();
        let (mut start, end) = (addr as u64, (addr + len) as u64);
        while start < end {
            let mut arg = PmScanArg {
                size: size_of::<PmScanArg>() as u64,
                start,
                end,
                vec: regions.as_mut_ptr() as u64,
                vec_len: REGIONS as u64,
                ..*ask
            };
            let n = {
                let _call = fault::point("ioctl(PAGEMAP_SCAN)", Call::Plain)?;
                // SAFETY: `arg` is a correctly sized `pm_scan_arg` whose `vec` points at
                // `regions`, which outlives the call and has room for `vec_len` entries; the
                // ioctl only reads page tables (and protects pages, which changes no byte) and
                // writes `arg` and `regions`.
                unsafe { pagemap_scan(pagemap.as_raw_fd(), &mut arg) }? as usize
            };
            for r in &regions[..n.min(REGIONS)] {
                let first = (r.start as usize - addr) / page;
                let last = (r.end as usize - addr) / page;
                out.extend(runs.push((first..last, ())));
            }
            if arg.walk_end <= start {
                return Err(Errno::EIO);
            }
            start = arg.walk_end;
        }
        out.extend(runs.finish());
        Ok(out.into_iter().map(|(r, ())| r).collect())
    }

    /// Whether the kernel reports a page with `categories` for `arg` (its rule, from
    /// `pagemap_scan_is_interesting_page` in `fs/proc/task_mmu.c`).
    #[cfg(test)]
    pub(super) fn selects(arg: &PmScanArg, categories: u64) -> bool {
        let c = categories ^ arg.category_inverted;
        c & arg.category_mask == arg.category_mask
            && (arg.category_anyof_mask == 0 || c & arg.category_anyof_mask != 0)
    }

    /// `None` when the kernel has no `PAGEMAP_SCAN` (known after the first call).
    pub(super) fn private_page_runs(
        file: &std::fs::File,
        addr: usize,
        len: usize,
    ) -> Option<Vec<Range<usize>>> {
        if SCAN.missing() {
            return None;
        }
        // Kernels without the ioctl refuse it with ENOTTY (before 6.7) or EINVAL.
        match runs(file, addr, len, &PmScanArg::private_pages()) {
            Ok(runs) => {
                SCAN.present();
                Some(runs)
            }
            Err(e) => {
                SCAN.refused(e);
                None
            }
        }
    }
}

/// `/proc/self/pagemap` entry bits (see the kernel's `Documentation/admin-guide/mm/pagemap.rst`).
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
/// A file page or shared anonymous memory; also set for the shared zero page.
const PM_FILE_OR_SHARED: u64 = 1 << 61;

/// Whether a pagemap entry describes a page with private contents: present or swapped (or under
/// migration), and not a file, shared or zero page.
fn pagemap_entry_is_private(entry: u64) -> bool {
    entry & (PM_PRESENT | PM_SWAPPED) != 0 && entry & PM_FILE_OR_SHARED == 0
}

fn proc_pagemap(file: &std::fs::File, addr: usize, len: usize) -> Option<Vec<Range<usize>>> {
    use std::os::unix::fs::FileExt;
    let page = super::page_size();
    let pages = len / page;
    let mut runs = Coalesce::new(0, |_: &_, _: &_| true);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8 * 4096];
    let mut done = 0;
    while done < pages {
        let count = (pages - done).min(4096);
        let bytes = &mut buf[..count * 8];
        {
            let _call = fault::point("pread(/proc/self/pagemap)", Call::Plain).ok()?;
            file.read_exact_at(bytes, ((addr / page + done) * 8) as u64)
                .ok()?;
        }
        for (i, entry) in bytes.chunks_exact(8).enumerate() {
            let entry = u64::from_ne_bytes(entry.try_into().expect("8-byte chunk"));
            if pagemap_entry_is_private(entry) {
                let p = done + i;
                out.extend(runs.push((p..p + 1, ())));
            }
        }
        done += count;
    }
    out.extend(runs.finish());
    Some(out.into_iter().map(|(r, ())| r).collect())
}

#[cfg(test)]
mod tests {
    use super::scan::*;
    use super::*;

    #[test]
    fn pagemap_entries_of_private_pages() {
        let pfn = 0x1234;
        assert!(pagemap_entry_is_private(PM_PRESENT | pfn));
        assert!(pagemap_entry_is_private(PM_SWAPPED | 0x55));
        assert!(!pagemap_entry_is_private(
            PM_PRESENT | PM_FILE_OR_SHARED | pfn
        ));
        // A file page being migrated: a swap entry with the file bit.
        assert!(!pagemap_entry_is_private(PM_SWAPPED | PM_FILE_OR_SHARED));
        assert!(!pagemap_entry_is_private(0));
    }

    #[test]
    fn scan_request_selects_private_pages() {
        let arg = PmScanArg::private_pages();
        assert!(selects(&arg, PAGE_IS_PRESENT));
        assert!(selects(&arg, PAGE_IS_SWAPPED));
        assert!(!selects(&arg, PAGE_IS_PRESENT | PAGE_IS_FILE));
        assert!(!selects(&arg, PAGE_IS_PRESENT | PAGE_IS_PFNZERO));
        assert!(!selects(&arg, PAGE_IS_SWAPPED | PAGE_IS_FILE));
        assert!(!selects(&arg, 0));
    }

    #[test]
    fn scan_request_selects_written_pages() {
        let written = PAGE_IS_WRITTEN;
        let existing = PmScanArg::written_pages(true, Filter::Existing);
        assert!(selects(&existing, written | PAGE_IS_PRESENT));
        assert!(selects(&existing, written | PAGE_IS_PRESENT | PAGE_IS_FILE));
        assert!(selects(&existing, written | PAGE_IS_SWAPPED));
        assert!(!selects(&existing, written), "a hole");
        assert!(!selects(
            &existing,
            written | PAGE_IS_PRESENT | PAGE_IS_PFNZERO
        ));
        assert!(!selects(&existing, PAGE_IS_PRESENT), "protected");
        let fast = PmScanArg::written_pages(false, Filter::Fast);
        assert!(selects(&fast, written));
        assert!(!selects(&fast, PAGE_IS_PRESENT));
        // The kernel's fast path takes exactly this filter.
        assert_eq!(
            (
                fast.category_mask,
                fast.category_anyof_mask,
                fast.category_inverted
            ),
            (PAGE_IS_WRITTEN, 0, 0)
        );
    }
}
