//! Linux 6.7+: the pages written through any pointer since the last look, from the kernel.
//!
//! A range registered with a userfaultfd in asynchronous write-protect mode
//! (`UFFD_FEATURE_WP_ASYNC`) costs a write no signal and no round trip: the first write to a
//! protected page takes a minor fault (0.9–1.2 us here, against 2.6–3 us for a copy-on-write
//! fault) in which the kernel only clears the page's protection. `PAGEMAP_SCAN` with
//! `PAGE_IS_WRITTEN` and `PM_SCAN_WP_MATCHING` then returns exactly the pages written since they
//! were protected and protects them again, atomically, in one call. wasmtime's memory reset and
//! CRIU's incremental dumps use the same ioctl.
//!
//! What a scan costs is where the page tables are: the kernel visits every entry of every page
//! table in the range (about 1.5 ns each with its fastest filter, `PAGE_IS_WRITTEN` alone, and
//! 2.5–2.8 ns with any other), and steps over a range without a page table 2 MiB at a time
//! (about 5 ns a step). Protecting a hole
//! (a page never touched) fills its page table with markers, so an arena protected whole cost
//! a scan per page of its capacity: 27 us at 64 MiB, 2.3 ms at 4 GiB, however little of it was
//! used. So only what exists is protected: the pages present (or swapped out), and the
//! mappings of files, whose unread pages must come in protected (a read would otherwise look
//! like a write) and so carry markers. Anonymous holes stay holes: a write there makes a page
//! that is present and unprotected, which every scan reports; a read maps the shared zero
//! page, which no write leaves in place, so the precise filter leaves it out. The fastest
//! filter reports holes and zero pages as written; [`WriteTracker::take_written`] uses it only
//! where it protects nothing, and scans its long runs again precisely (a short one costs a page
//! copied for nothing, never a write missed). Measured with a C program making the same calls,
//! 16 MiB present of 64 MiB: 6 us per fast scan, 12.6 us precise (25 us protected whole); of
//! 1 GiB: 20 us precise (420 us); of 4 GiB: 20 us (2.3 ms). With 256 MiB present of 1 GiB: 80
//! us fast, 165 us precise (379 us).
//!
//! A mapping placed over a registered range (`mmap(MAP_FIXED)`) is a new mapping, not registered:
//! [`WriteTracker::track`] registers it and protects what it must. `madvise(MADV_DONTNEED)`
//! keeps a file page's protection (the kernel leaves a marker) and turns an anonymous page into
//! a hole. Transparent huge pages would make a write report 2 MiB, so the tracked anonymous
//! memory is marked `MADV_NOHUGEPAGE`. A forked child inherits the descriptor but not the
//! registration, so a tracker answers only in the process that made it.
//!
//! Unprivileged processes may use `UFFD_USER_MODE_ONLY` descriptors whatever
//! `vm.unprivileged_userfaultfd` says; the protection faults here are taken in user mode.

use super::fault::{self, Call};
use super::scan::{self, Filter, PmScanArg};
use super::{os_error, Probe};
use crate::error::Result;
use crate::sys::process::{self, Pid};
use nix::errno::Errno;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `<linux/userfaultfd.h>`.
const UFFD_API: u64 = 0xAA;
const UFFD_USER_MODE_ONLY: libc::c_int = 1;
const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1;
/// The features asked for: asynchronous write-protection of private memfd (shmem) and anonymous
/// mappings. Not `WP_UNPOPULATED`: it would give anonymous holes markers, and page tables.
const FEATURES: u64 = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_HUGETLBFS_SHMEM;

/// Runs reported by the fast filter at least this long are scanned again for holes (a scan
/// costs about 1.5 us; a run that long, really written, costs far more to copy).
const REFINE_PAGES: usize = 16;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

nix::ioctl_readwrite!(uffdio_api, 0xAA, 0x3F, UffdioApi);
nix::ioctl_readwrite!(uffdio_register, 0xAA, 0x00, UffdioRegister);
nix::ioctl_readwrite!(uffdio_writeprotect, 0xAA, 0x06, UffdioWriteprotect);

/// Whether the kernel has everything this needs, known after the first try.
static SUPPORT: Probe = Probe::new();

/// Asynchronous write-protection of ranges of this process, and the scan that reads it.
#[derive(Debug)]
pub(crate) struct WriteTracker {
    uffd: OwnedFd,
    pagemap: std::fs::File,
    /// The process that registered the ranges: a forked child has no registration.
    owner: Pid,
}

impl WriteTracker {
    /// A tracker, or `None` where the kernel lacks userfaultfd write-protection in async mode or
    /// `PAGEMAP_SCAN` (known after the first call in the process), or refuses it.
    ///
    /// # Errors
    /// [`Error::Os`](crate::Error::Os) when a call fails for another reason (out of file
    /// descriptors or memory).
    pub(crate) fn new() -> Result<Option<WriteTracker>> {
        if SUPPORT.missing() {
            return Ok(None);
        }
        let refused = |op, e: Errno| {
            if SUPPORT.refused(e) {
                Ok(None)
            } else {
                Err(os_error(op, e))
            }
        };
        const OP: &str = "userfaultfd(UFFD_USER_MODE_ONLY)";
        let fd = fault::point(OP, Call::Plain).and_then(|_call| {
            // SAFETY: a plain system call with integer flags.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_userfaultfd,
                    libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY,
                )
            };
            Errno::result(fd)
        });
        let fd = match fd {
            Ok(fd) => fd as libc::c_int,
            Err(e) => return refused(OP, e),
        };
        // SAFETY: `userfaultfd` returned a fresh descriptor that nothing else owns.
        let uffd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut api = UffdioApi {
            api: UFFD_API,
            features: FEATURES,
            ioctls: 0,
        };
        let agreed = {
            const OP: &str = "ioctl(UFFDIO_API)";
            fault::point(OP, Call::Plain)
                .and_then(|_call| {
                    // SAFETY: `api` is a correctly laid out `uffdio_api` the call reads and
                    // writes.
                    unsafe { uffdio_api(uffd.as_raw_fd(), &mut api) }
                })
                .map_err(|e| (OP, e))
        };
        if let Err((op, e)) = agreed {
            return refused(op, e);
        }
        if api.features & FEATURES != FEATURES {
            SUPPORT.refused(Errno::EINVAL);
            return Ok(None);
        }
        const PAGEMAP: &str = "open(/proc/self/pagemap)";
        let pagemap = {
            let _call = fault::point(PAGEMAP, Call::Plain).map_err(|e| os_error(PAGEMAP, e))?;
            std::fs::File::open("/proc/self/pagemap").map_err(|e| crate::Error::Os {
                op: PAGEMAP,
                source: e,
            })?
        };
        Ok(Some(WriteTracker {
            uffd,
            pagemap,
            owner: process::current_pid(),
        }))
    }

    /// Whether this process is the one whose ranges the tracker registered.
    pub(crate) fn answers_here(&self) -> bool {
        process::current_pid() == self.owner
    }

    /// Registers `[addr, addr + len)` (mapped, whole pages) for asynchronous write-protection,
    /// and protects every page of it if it maps a `file` (its unread pages get markers).
    /// Anonymous memory is protected only where pages exist, which a new mapping has none of:
    /// where it may, the caller protects them ([`take_written`](Self::take_written) with
    /// `protect`). From then on a write to the range is found by `take_written`. Call it again
    /// for a mapping placed over a part.
    ///
    /// # Errors
    /// [`Error::Os`](crate::Error::Os) naming the call; the range may then be registered but not
    /// protected, so the caller must stop relying on the tracker.
    pub(crate) fn track(&self, addr: usize, len: usize, file: bool) -> Result<()> {
        let mut reg = UffdioRegister {
            range: UffdioRange {
                start: addr as u64,
                len: len as u64,
            },
            mode: UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        const OP: &str = "ioctl(UFFDIO_REGISTER)";
        {
            let _call = fault::point(OP, Call::Plain).map_err(|e| os_error(OP, e))?;
            // SAFETY: `reg` is a correctly laid out `uffdio_register`; registering changes no
            // byte of the range, only how its writes fault (asynchronously, resolved by the
            // kernel).
            unsafe { uffdio_register(self.uffd.as_raw_fd(), &mut reg) }
                .map_err(|e| os_error(OP, e))?;
        }
        if file {
            self.protect(addr, len)
        } else {
            no_huge_pages(addr, len);
            Ok(())
        }
    }

    /// Protects every page of `[addr, addr + len)` (registered) again, so that only later writes
    /// count as written.
    ///
    /// # Errors
    /// [`Error::Os`](crate::Error::Os) naming the ioctl.
    pub(crate) fn protect(&self, addr: usize, len: usize) -> Result<()> {
        let mut wp = UffdioWriteprotect {
            range: UffdioRange {
                start: addr as u64,
                len: len as u64,
            },
            mode: UFFDIO_WRITEPROTECT_MODE_WP,
        };
        const OP: &str = "ioctl(UFFDIO_WRITEPROTECT)";
        let _call = fault::point(OP, Call::Plain).map_err(|e| os_error(OP, e))?;
        // SAFETY: `wp` is a correctly laid out `uffdio_writeprotect`; protecting changes no byte,
        // and in async mode a later write is resolved by the kernel without blocking.
        unsafe { uffdio_writeprotect(self.uffd.as_raw_fd(), &mut wp) }
            .map(drop)
            .map_err(|e| os_error(OP, e))
    }

    /// The runs of pages of `[addr, addr + len)` written since they were last protected (as
    /// page-index ranges relative to `addr`), protecting them again if `protect`.
    ///
    /// With `protect`, one scan that only looks at pages that exist finds and protects them.
    /// Without, the kernel's fastest filter finds them first (about half the cost per page in
    /// a page table), which also reports holes as written; runs of [`REFINE_PAGES`] or more are
    /// then scanned again with the filter that leaves holes out. A shorter hole may count as
    /// written: a page copied for nothing, never a write missed.
    ///
    /// # Errors
    /// [`Error::Os`](crate::Error::Os) naming the ioctl (a part of the range may have been
    /// protected again before it failed, so the caller must find the written pages another way).
    pub(crate) fn take_written(
        &self,
        addr: usize,
        len: usize,
        protect: bool,
    ) -> Result<Vec<Range<usize>>> {
        if protect {
            return self.scan(addr, len, Filter::Existing, true);
        }
        let page = crate::sys::page_size();
        let mut found = Vec::new();
        for run in self.scan(addr, len, Filter::Fast, false)? {
            if run.len() < REFINE_PAGES {
                found.push(run);
                continue;
            }
            let existing = self.scan(
                addr + run.start * page,
                run.len() * page,
                Filter::Existing,
                false,
            )?;
            found.extend(
                existing
                    .into_iter()
                    .map(|r| r.start + run.start..r.end + run.start),
            );
        }
        Ok(found)
    }

    /// One pass of `PAGEMAP_SCAN` over `[addr, addr + len)`: the runs of pages `filter`
    /// reports as written, relative to `addr`, protected again if `protect`.
    fn scan(
        &self,
        addr: usize,
        len: usize,
        filter: Filter,
        protect: bool,
    ) -> Result<Vec<Range<usize>>> {
        let ask = PmScanArg::written_pages(protect, filter);
        let runs = scan::runs(&self.pagemap, addr, len, &ask).map_err(|e| {
            SUPPORT.refused(e);
            os_error("ioctl(PAGEMAP_SCAN, PAGE_IS_WRITTEN)", e)
        })?;
        SUPPORT.present();
        Ok(runs)
    }
}

/// Asks the kernel not to back `[addr, addr + len)` with transparent huge pages: a write to one
/// would count 2 MiB written, and its protection would cover 2 MiB. Only precision depends on
/// it, so a failure is ignored.
fn no_huge_pages(addr: usize, len: usize) {
    const OP: &str = "madvise(MADV_NOHUGEPAGE)";
    let Ok(_call) = fault::point(OP, Call::Plain) else {
        return;
    };
    let Some(ptr) = std::ptr::NonNull::new(addr as *mut libc::c_void) else {
        return;
    };
    // SAFETY: the range is mapped memory of the caller's reservation; the advice changes how
    // the kernel may back it later, never a byte of it.
    let _ =
        unsafe { nix::sys::mman::madvise(ptr, len, nix::sys::mman::MmapAdvise::MADV_NOHUGEPAGE) };
}
