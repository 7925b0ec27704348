//! The only module that makes raw system calls. Everything above it speaks in safe types:
//! [`Reservation`] owns a range of address space, [`BackingFile`] owns a page-store or live file.
//!
//! The calls that replace mappings inside a reservation are `unsafe fn`: replacing memory that a
//! live reference points into would change it under that reference. Callers hold `&mut` on the
//! owner of the reservation (or own it exclusively) when they call them.
//!
//! Platform differences (memfd and seals, hole punching, the kernel's page scan) live in
//! `linux.rs` / `macos.rs` behind one set of function names.

pub(crate) mod fault;
pub(crate) mod file;
#[cfg_attr(cowarena_memfd, path = "linux.rs")]
#[cfg_attr(not(cowarena_memfd), path = "macos.rs")]
mod os;
pub(crate) mod process;

pub(crate) use os::{
    create_backing_file, data_ranges, discard_ranges, private_page_runs, punch_hole,
    seal_for_owners, seal_full, seal_future_writes, seal_size,
};

use crate::error::{Error, Result};
use fault::Call;
use nix::sys::mman::{madvise, mmap, mmap_anonymous, MapFlags, MmapAdvise, ProtFlags};
use os::write_tracker::WriteTracker;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

/// The runtime page size: 4 KiB on x86-64 Linux, 16 KiB on Apple Silicon.
pub fn page_size() -> usize {
    region::page::size()
}

pub(crate) fn os_error(op: &'static str, errno: nix::errno::Errno) -> Error {
    Error::Os {
        op,
        source: std::io::Error::from(errno),
    }
}

/// An error from `region`, keeping the operating system's error (and so its errno) when there
/// is one.
fn region_error(op: &'static str, e: region::Error) -> Error {
    let source = match e {
        region::Error::SystemCall(source) => source,
        other => std::io::Error::other(other.to_string()),
    };
    Error::Os { op, source }
}

/// A file holding pages: a page-store chunk or an arena's live file (when it has proxies).
#[derive(Debug)]
pub(crate) struct BackingFile {
    fd: OwnedFd,
}

impl BackingFile {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        BackingFile { fd }
    }

    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn owned_fd(&self) -> &OwnedFd {
        &self.fd
    }

    pub(crate) fn set_len(&self, len: usize) -> Result<()> {
        retry_interrupted(|| {
            let _call = fault::point("ftruncate", Call::Interruptible)?;
            nix::unistd::ftruncate(&self.fd, len as libc::off_t)
        })
        .map_err(|e| os_error("ftruncate", e))
    }

    /// Writes all of `buf` at `offset`. A full file system is `ENOSPC` here, never a later SIGBUS.
    pub(crate) fn write_all_at(&self, buf: &[u8], offset: usize) -> Result<()> {
        write_all_at(&self.fd, buf, offset)
    }

    /// Writes the buffers back to back starting at `offset`, with as few `pwritev` calls as the
    /// kernel's iovec limit allows.
    pub(crate) fn write_all_vectored_at(&self, bufs: &[&[u8]], mut offset: usize) -> Result<()> {
        const IOV_MAX: usize = 1024;
        for group in bufs.chunks(IOV_MAX) {
            let slices: Vec<std::io::IoSlice<'_>> =
                group.iter().map(|b| std::io::IoSlice::new(b)).collect();
            let total: usize = group.iter().map(|b| b.len()).sum();
            let written = retry_interrupted(|| {
                let _call = fault::point("pwritev", Call::Interruptible)?;
                nix::sys::uio::pwritev(&self.fd, &slices, offset as libc::off_t)
            })
            .map_err(|e| os_error("pwritev", e))?;
            if written < total {
                // A short write: finish the group buffer by buffer.
                let mut pos = 0;
                for b in group {
                    let end = pos + b.len();
                    if end > written {
                        let from = written.saturating_sub(pos);
                        self.write_all_at(&b[from..], offset + pos + from)?;
                    }
                    pos = end;
                }
            }
            offset += total;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset`, for tests that check stored pages without mapping
    /// them. No failure point: it is the checker, not a call the crate makes for its users.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn read_exact_at(&self, mut buf: &mut [u8], mut offset: usize) -> Result<()> {
        while !buf.is_empty() {
            let n =
                retry_interrupted(|| nix::sys::uio::pread(&self.fd, buf, offset as libc::off_t))
                    .map_err(|e| os_error("pread", e))?;
            if n == 0 {
                return Err(os_error("pread", nix::errno::Errno::EIO));
            }
            buf = &mut buf[n..];
            offset += n;
        }
        Ok(())
    }

    /// Allocates backing blocks for `[offset, offset + len)` now, so that touching them through a
    /// mapping later cannot fail with SIGBUS on a full file system.
    pub(crate) fn allocate(&self, offset: usize, len: usize) -> Result<()> {
        os::allocate(&self.fd, offset, len)
    }
}

fn write_all_at(fd: &OwnedFd, mut buf: &[u8], mut offset: usize) -> Result<()> {
    while !buf.is_empty() {
        let n = retry_interrupted(|| {
            let _call = fault::point("pwrite", Call::Interruptible)?;
            nix::sys::uio::pwrite(fd, buf, offset as libc::off_t)
        })
        .map_err(|e| os_error("pwrite", e))?;
        if n == 0 {
            return Err(os_error("pwrite", nix::errno::Errno::ENOSPC));
        }
        buf = &buf[n..];
        offset += n;
    }
    Ok(())
}

/// Runs `call` again for as long as a signal interrupts it (`EINTR`), as POSIX asks of callers
/// of interruptible calls; any other result is returned.
pub(crate) fn retry_interrupted<T>(mut call: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    loop {
        match call() {
            Err(nix::errno::Errno::EINTR) => {}
            other => return other,
        }
    }
}

/// A private read-only mapping of a file, read only by copying out of it.
///
/// It never lends a slice (the `Mmap` is never dereferenced): other parts of the file may be
/// written while it lives, and a `&[u8]` over the whole mapping would promise that they do not
/// change.
#[derive(Debug)]
pub(crate) struct FileView {
    map: memmap2::Mmap,
}

impl FileView {
    /// Maps the first `len` bytes of `file` privately and read-only. Private, so it does not
    /// count as a writable shared mapping when the file is sealed.
    pub(crate) fn new(file: &BackingFile, len: usize) -> Result<Self> {
        const OP: &str = "mmap (read-only view of a store chunk)";
        let _call = fault::point(OP, Call::Plain).map_err(|e| os_error(OP, e))?;
        // SAFETY: memmap2 makes this `unsafe` because the file may change under a slice of the
        // mapping; this view never makes one: every read is a `copy_out` of a range whose bytes
        // the caller vouches for.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .len(len)
                .map_copy_read_only(file.owned_fd())
        }
        .map_err(|e| Error::Os { op: OP, source: e })?;
        Ok(FileView { map })
    }

    /// Maps the file pages of `[offset, offset + len)` into the view now, so that copying them
    /// later takes no page fault. The range should hold no hole: reading a hole of a memory file
    /// allocates a page for it. Returns whether the kernel did it (`MADV_POPULATE_READ` needs
    /// Linux 5.14).
    pub(crate) fn populate(&self, offset: usize, len: usize) -> bool {
        assert!(offset
            .checked_add(len)
            .is_some_and(|end| end <= self.map.len()));
        #[cfg(target_os = "linux")]
        {
            const OP: &str = "madvise(MADV_POPULATE_READ)";
            retry_interrupted(|| {
                let _call = fault::point(OP, Call::Interruptible)?;
                self.map
                    .advise_range(memmap2::Advice::PopulateRead, offset, len)
                    .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)))
            })
            .is_ok()
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// Asks the processor to start loading the line at `offset` (and the page walk to it);
    /// changes nothing and reads nothing the program can see.
    #[inline]
    pub(crate) fn prefetch(&self, offset: usize) {
        assert!(offset < self.map.len());
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint: it never faults and its result is not observable; the
        // address lies inside the mapping anyway (checked above).
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(self.map.as_ptr().add(offset).cast::<i8>());
        }
    }

    /// Copies `dst.len()` bytes at `offset` of the file into `dst`.
    ///
    /// # Safety
    /// No one writes or punches that range of the file while the call runs.
    pub(crate) unsafe fn copy_out(&self, offset: usize, dst: &mut [u8]) {
        assert!(offset
            .checked_add(dst.len())
            .is_some_and(|end| end <= self.map.len()));
        // SAFETY: the source lies inside the mapping (checked above), which is readable; the
        // caller guarantees its bytes do not change during the copy; `dst` is a distinct
        // exclusive buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_ptr().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            )
        }
    }
}

/// A shared, writable mapping of a whole file whose pages are allocated (and, where the
/// writer prepares them, mapped) ahead, so that writing a page into the file is a `memcpy`: no
/// system call, no look-up of the file's page, and no fault for a prepared page. For the page store's open chunk, where a `pwritev` cost 1.6–2.1 us per
/// scattered page (`shmem_file_write_iter` finding, locking and copying each page) against
/// 0.1–0.3 us for the copy itself.
///
/// Like [`FileView`], it never lends a slice: it is written and read only by copies of ranges
/// the caller owns.
#[derive(Debug)]
pub(crate) struct FileWriter {
    map: memmap2::MmapRaw,
}

impl FileWriter {
    /// Maps the first `len` bytes of `file` shared and writable. Nothing may be written through
    /// it to a range whose pages the file does not hold yet: [`prepare`](Self::prepare) makes a
    /// range ready, and pages written before (a full chunk's slots) are ready already. A write
    /// to a hole would allocate on fault, and fail with SIGBUS where memory is short.
    ///
    /// # Errors
    /// [`Error::Os`] naming `mmap` (out of address space, say).
    pub(crate) fn new(file: &BackingFile, len: usize) -> Result<Self> {
        const OP: &str = "mmap (shared writable view of a store chunk)";
        let _call = fault::point(OP, Call::Plain).map_err(|e| os_error(OP, e))?;
        let map = memmap2::MmapOptions::new()
            .len(len)
            .map_raw(file.owned_fd())
            .map_err(|e| Error::Os { op: OP, source: e })?;
        Ok(FileWriter { map })
    }

    /// Allocates `[offset, offset + len)` of `file` (the file this maps), so that a write through
    /// the mapping can never fault for want of memory (that would be SIGBUS, where this returns
    /// an error), and maps its pages now (`MADV_POPULATE_WRITE`, Linux 5.14), so that writing
    /// them later takes no fault.
    ///
    /// # Errors
    /// [`Error::Os`] naming `fallocate` or `madvise` (out of memory, say).
    pub(crate) fn prepare(&self, file: &BackingFile, offset: usize, len: usize) -> Result<()> {
        assert!(offset
            .checked_add(len)
            .is_some_and(|end| end <= self.map.len()));
        file.allocate(offset, len)?;
        #[cfg(target_os = "linux")]
        {
            const OP: &str = "madvise(MADV_POPULATE_WRITE)";
            retry_interrupted(|| {
                let _call = fault::point(OP, Call::Interruptible)?;
                self.map
                    .advise_range(memmap2::Advice::PopulateWrite, offset, len)
                    .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)))
            })
            .map_err(|e| os_error(OP, e))?;
        }
        Ok(())
    }

    /// Copies `src` into the file at `offset`.
    ///
    /// # Safety
    /// No one else reads or writes that range of the file while the call runs.
    pub(crate) unsafe fn copy_in(&self, offset: usize, src: &[u8]) {
        assert!(offset
            .checked_add(src.len())
            .is_some_and(|end| end <= self.map.len()));
        // SAFETY: the range lies inside the mapping (checked above), which is writable; the
        // caller guarantees no one else touches it meanwhile; `src` is a distinct buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.map.as_mut_ptr().add(offset),
                src.len(),
            )
        }
    }
}

/// Whether a file mapping is private (copy-on-write) or shared with the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sharing {
    Private,
    Shared,
}

/// A reserved range of address space, unmapped as a whole on drop.
///
/// Invariant: `base..base + len` belongs to this value alone; every mapping placed inside it with
/// the functions below is removed with it.
pub(crate) struct Reservation {
    alloc: region::Allocation,
    /// Usable bytes from the base; the rest of `alloc` is a guard that stays inaccessible.
    len: usize,
    /// Finds the pages written through any pointer, where the kernel can (see
    /// [`track_writes`](Reservation::track_writes)).
    tracker: Option<WriteTracker>,
    /// Set when a mapping placed inside could not be registered with `tracker`: from then on
    /// its answers are incomplete, and [`take_written`](Reservation::take_written) says so.
    untracked_mapping: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("base", &self.base())
            .field("len", &self.len())
            .finish()
    }
}

// SAFETY: the reservation is plain address space owned by this value; the pointers it holds are
// not tied to the creating thread.
unsafe impl Send for Reservation {}
// SAFETY: `&Reservation` gives out only the base address; reading the memory behind it is governed
// by the owners' borrow rules (`&`/`&mut` on the arena or snapshot that owns the reservation).
unsafe impl Sync for Reservation {}

impl Reservation {
    /// Reserves `len` bytes (a multiple of the page size) of inaccessible address space.
    pub(crate) fn new(len: usize) -> Result<Self> {
        Self::with_guard(len, 0)
    }

    /// Reserves `len` usable bytes followed by `guard` bytes (multiples of the page size) that
    /// stay inaccessible for the reservation's life, so that an access past the end faults.
    pub(crate) fn with_guard(len: usize, guard: usize) -> Result<Self> {
        const OP: &str = "mmap (reserve address space)";
        let _call = fault::point(OP, Call::Plain).map_err(|e| os_error(OP, e))?;
        let total = len.checked_add(guard).ok_or_else(|| Error::Os {
            op: OP,
            source: std::io::Error::from_raw_os_error(libc::ENOMEM),
        })?;
        let alloc =
            region::alloc(total, region::Protection::NONE).map_err(|e| region_error(OP, e))?;
        Ok(Reservation {
            alloc,
            len,
            tracker: None,
            untracked_mapping: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Bytes of guard after the usable range.
    pub(crate) fn guard_len(&self) -> usize {
        self.alloc.len() - self.len
    }

    pub(crate) fn base(&self) -> *mut u8 {
        self.alloc.as_ptr::<u8>() as *mut u8
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn addr(&self, offset: usize, len: usize) -> (NonZeroUsize, NonZeroUsize) {
        assert!(
            len > 0 && offset.checked_add(len).is_some_and(|end| end <= self.len()),
            "mapping {len} bytes at offset {offset} outside a reservation of {} bytes",
            self.len()
        );
        let addr = self.base() as usize + offset;
        (
            NonZeroUsize::new(addr).expect("reservation is not at address 0"),
            NonZeroUsize::new(len).expect("len checked above"),
        )
    }

    /// Maps `[file_offset, file_offset + len)` of `file` at `offset`, replacing what was there.
    ///
    /// # Safety
    /// No reference may point into `[offset, offset + len)` of this reservation.
    pub(crate) unsafe fn map_file(
        &self,
        offset: usize,
        len: usize,
        file: &BackingFile,
        file_offset: usize,
        sharing: Sharing,
        writable: bool,
    ) -> Result<()> {
        let (addr, length) = self.addr(offset, len);
        let prot = if writable {
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
        } else {
            ProtFlags::PROT_READ
        };
        let flags = MapFlags::MAP_FIXED
            | match sharing {
                Sharing::Private => MapFlags::MAP_PRIVATE,
                Sharing::Shared => MapFlags::MAP_SHARED,
            };
        const OP: &str = "mmap (map file pages)";
        {
            let _call = fault::point(OP, Call::Plain).map_err(|e| os_error(OP, e))?;
            // SAFETY: the range lies inside this reservation (checked by `addr`), so MAP_FIXED
            // replaces only memory this value owns; no reference points into it (forwarded to
            // caller).
            unsafe {
                mmap(
                    Some(addr),
                    length,
                    prot,
                    flags,
                    file.fd(),
                    file_offset as libc::off_t,
                )
            }
            .map_err(|e| os_error(OP, e))?;
        }
        self.track_new_mapping(addr.get(), length.get(), true);
        Ok(())
    }

    /// Maps fresh zero-filled anonymous memory at `offset`, replacing what was there.
    ///
    /// # Safety
    /// No reference may point into `[offset, offset + len)` of this reservation.
    pub(crate) unsafe fn map_zero(&self, offset: usize, len: usize, writable: bool) -> Result<()> {
        let (addr, length) = self.addr(offset, len);
        let prot = if writable {
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
        } else {
            ProtFlags::PROT_READ
        };
        const OP: &str = "mmap (map zero pages)";
        {
            let _call = fault::point(OP, Call::Plain).map_err(|e| os_error(OP, e))?;
            // SAFETY: as in `map_file`: inside this reservation, no live references (forwarded).
            unsafe {
                mmap_anonymous(
                    Some(addr),
                    length,
                    prot,
                    MapFlags::MAP_FIXED | MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
                )
            }
            .map_err(|e| os_error(OP, e))?;
        }
        self.track_new_mapping(addr.get(), length.get(), false);
        Ok(())
    }

    /// Drops the private copies of the pages in the byte ranges `spans`: a private file mapping
    /// reads the file again, an anonymous one reads zeros. Many ranges at once where the kernel
    /// can (`process_madvise`), one `madvise` per range elsewhere.
    ///
    /// # Safety
    /// No reference may point into any of the ranges.
    pub(crate) unsafe fn discard(&self, spans: &[std::ops::Range<usize>]) -> Result<()> {
        let ranges: Vec<(usize, usize)> = spans
            .iter()
            .map(|s| {
                let (addr, len) = self.addr(s.start, s.len());
                (addr.get(), len.get())
            })
            .collect();
        // SAFETY: the ranges lie inside this reservation (checked by `addr`), which is mapped;
        // the caller guarantees no references into them (forwarded).
        let done = unsafe { discard_ranges(&ranges) };
        const OP: &str = "madvise(MADV_DONTNEED)";
        for &(addr, len) in &ranges[done..] {
            let ptr = NonNull::new(addr as *mut libc::c_void).expect("non-zero address");
            let _call = fault::point(OP, Call::Plain).map_err(|e| os_error(OP, e))?;
            // SAFETY: as above, for this one range.
            unsafe { madvise(ptr, len, MmapAdvise::MADV_DONTNEED) }.map_err(|e| os_error(OP, e))?;
        }
        Ok(())
    }

    /// Asks the kernel to report every page written from now on, through any pointer (see
    /// `write_tracker.rs`), where it can: [`tracks_writes`](Self::tracks_writes) says whether it
    /// does (not where the kernel lacks the features, nor after a failure). `file_pages`: the
    /// sorted runs of pages (indices from the base) mapped from files; the rest is anonymous.
    pub(crate) fn track_writes(&mut self, file_pages: &[std::ops::Range<usize>]) {
        if self.tracker.is_some() {
            return;
        }
        let Ok(Some(tracker)) = WriteTracker::new() else {
            return;
        };
        let (base, page) = (self.base() as usize, page_size());
        // Registered and the pages present protected, then the file mappings protected whole.
        let tracked = tracker.track(base, self.len, false).is_ok()
            && tracker.take_written(base, self.len, true).is_ok()
            && file_pages.iter().all(|r| {
                let (addr, len) = self.addr(r.start * page, r.len() * page);
                tracker.protect(addr.get(), len.get()).is_ok()
            });
        if tracked {
            self.tracker = Some(tracker);
        }
    }

    /// Whether [`take_written`](Self::take_written) can answer here.
    pub(crate) fn tracks_writes(&self) -> bool {
        self.tracker
            .as_ref()
            .is_some_and(WriteTracker::answers_here)
            && !self.untracked_mapping.load(Ordering::Relaxed)
    }

    /// A mapping (of a `file`, or anonymous) just placed at `addr` replaced a registered one:
    /// register it too, or record that the tracker's answers are no longer complete.
    fn track_new_mapping(&self, addr: usize, len: usize, file: bool) {
        if let Some(tracker) = &self.tracker {
            if !tracker.answers_here() || tracker.track(addr, len, file).is_err() {
                self.untracked_mapping.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The runs of pages (indices from the base) written since they were last protected; with
    /// `protect`, they are protected again (without, the caller protects them once it has
    /// written them itself: see [`forget_written`](Self::forget_written)). `None` when the
    /// reservation does not track writes (see [`track_writes`](Self::track_writes)) or the kernel
    /// failed to answer (then some pages may have been protected again: use another way to find
    /// the writes).
    pub(crate) fn take_written(&self, protect: bool) -> Option<Vec<std::ops::Range<usize>>> {
        if !self.tracks_writes() {
            return None;
        }
        let tracker = self.tracker.as_ref().expect("checked above");
        match tracker.take_written(self.base() as usize, self.len, protect) {
            Ok(runs) => Some(runs),
            Err(_) => {
                self.untracked_mapping.store(true, Ordering::Relaxed);
                None
            }
        }
    }

    /// Protects the pages of `runs` (sorted page indices) again after the crate wrote them
    /// itself, so that only later writes count. The caller must have written nothing outside
    /// `runs` since the last [`take_written`](Self::take_written): the pages between nearby runs
    /// are protected by a scan that drops its answer, which would hide another write there. A
    /// failure leaves the tracker's answers incomplete, which
    /// [`tracks_writes`](Self::tracks_writes) says from then on.
    ///
    /// Each group of runs takes the cheaper of one `UFFDIO_WRITEPROTECT` per run
    /// ([`PROTECT_CALL`]) and one `PAGEMAP_SCAN` over the group's whole span ([`SCAN_CALL`] plus
    /// [`SCAN_PAGE`] per page of the span that has a page table, written or not). Runs closer
    /// than [`SCAN_GAP_PAGES`] share a group. 64 pages scattered over 16 MiB: one scan of their
    /// span, 12 us, where one call per page costs 64 us. The scan protects only pages that
    /// exist: a page the restore dropped (`MADV_DONTNEED`, when it restores more pages than the
    /// private budget) keeps no protection, so its next read counts it as written once (a page
    /// copied for nothing), where one call per run leaves a marker.
    pub(crate) fn forget_written(&self, runs: &[std::ops::Range<usize>]) {
        let Some(tracker) = &self.tracker else {
            return;
        };
        let page = page_size();
        let base = self.base() as usize;
        let done = span_groups(runs).all(|group| {
            let span = group[0].start..group[group.len() - 1].end;
            if protect_by_scan(group.len(), span.len()) {
                tracker
                    .take_written(base + span.start * page, span.len() * page, true)
                    .is_ok()
            } else {
                group.iter().all(|r| {
                    tracker
                        .protect(base + r.start * page, r.len() * page)
                        .is_ok()
                })
            }
        });
        if !done {
            self.untracked_mapping.store(true, Ordering::Relaxed);
        }
    }

    /// Makes the pages of `[offset, offset + len)` (mapped privately and writable) the process's
    /// own copies now, as a write would, without touching a byte (`MADV_POPULATE_WRITE`, Linux
    /// 5.14): no reference into them is read or written. Returns whether the kernel did it.
    pub(crate) fn populate_write(&self, offset: usize, len: usize) -> bool {
        let (addr, len) = self.addr(offset, len);
        // SAFETY: the range lies inside this reservation (checked by `addr`), which is mapped.
        unsafe { os::populate_write(addr.get(), len.get()) }
    }

    /// Makes the whole reservation read-only.
    pub(crate) fn protect_read_only(&self) -> Result<()> {
        let _call = fault::point("mprotect", Call::Plain).map_err(|e| os_error("mprotect", e))?;
        // SAFETY: the range is this reservation's own; removing write access cannot invalidate
        // any reference (only `&[u8]` views are handed out for read-only reservations).
        unsafe { region::protect(self.base(), self.len(), region::Protection::READ) }
            .map_err(|e| region_error("mprotect", e))
    }

    /// Runs of pages in `[offset, offset + len)` that hold private (copied or anonymous) contents,
    /// as page-index ranges relative to `offset`, or `None` when the kernel cannot tell.
    pub(crate) fn private_page_runs(
        &self,
        offset: usize,
        len: usize,
    ) -> Option<Vec<std::ops::Range<usize>>> {
        let (addr, _) = self.addr(offset, len);
        private_page_runs(addr.get(), len)
    }
}

/// What protecting pages again costs here, in tenths of a nanosecond: a `UFFDIO_WRITEPROTECT`
/// call, a `PAGEMAP_SCAN` call, and a scan's cost per page of its span (measured with a C
/// program making the same calls).
const PROTECT_CALL: usize = 10_000;
const SCAN_CALL: usize = 15_000;
const SCAN_PAGE: usize = 25;

/// Runs at most this many pages apart are protected again together by one scan of their span
/// rather than by two calls: a scan's fixed cost over its cost per page.
const SCAN_GAP_PAGES: usize = SCAN_CALL / SCAN_PAGE;

/// Sorted runs cut where the gap between two exceeds [`SCAN_GAP_PAGES`].
fn span_groups(runs: &[std::ops::Range<usize>]) -> impl Iterator<Item = &[std::ops::Range<usize>]> {
    runs.chunk_by(|a, b| b.start - a.end <= SCAN_GAP_PAGES)
}

/// Whether one scan of a span of `span_pages` protects `runs` runs again more cheaply than one
/// call per run.
fn protect_by_scan(runs: usize, span_pages: usize) -> bool {
    SCAN_CALL + span_pages * SCAN_PAGE < runs * PROTECT_CALL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restored_runs_are_protected_by_the_cheaper_call() {
        let runs = [0..1, 10..12, 500..501, 1200..1201, 1203..1204];
        let groups: Vec<&[std::ops::Range<usize>]> = span_groups(&runs).collect();
        assert_eq!(groups, [&runs[..3], &runs[3..]]);
        // One run: one call. Runs packed together: one scan of their span. Few runs spread
        // over many pages: one call each.
        assert!(!protect_by_scan(1, 1));
        assert!(protect_by_scan(64, 4096));
        assert!(!protect_by_scan(2, 501));
    }

    #[test]
    fn failed_reservations_keep_their_errno() {
        // More address space than any x86-64 or aarch64 process has.
        let e = Reservation::new(1 << 62).unwrap_err();
        match e {
            crate::Error::Os { source, .. } => {
                assert_eq!(source.raw_os_error(), Some(libc::ENOMEM), "{source}")
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn discard_drops_exactly_the_spans() {
        let page = page_size();
        let pages = 3000;
        let mem = Reservation::new(pages * page).unwrap();
        // SAFETY: the reservation is new; nothing refers into it.
        unsafe { mem.map_zero(0, pages * page, true).unwrap() };
        // SAFETY: mapped writable above, and only this test touches it.
        let bytes = unsafe { std::slice::from_raw_parts_mut(mem.base(), pages * page) };
        bytes.fill(7);
        // More spans than one batched call takes, scattered, some longer than a page.
        let spans: Vec<std::ops::Range<usize>> = (0..pages)
            .step_by(2)
            .map(|p| p * page..(p + 1 + p % 3 / 2) * page)
            .collect();
        // SAFETY: no reference into the reservation is used across the call.
        unsafe { mem.discard(&spans).unwrap() };
        // SAFETY: as above, read after the call.
        let bytes = unsafe { std::slice::from_raw_parts(mem.base(), pages * page) };
        for p in 0..pages {
            let dropped = spans.iter().any(|s| s.contains(&(p * page)));
            let want = if dropped { 0 } else { 7 };
            assert!(
                bytes[p * page..(p + 1) * page].iter().all(|&b| b == want),
                "page {p} should read {want}"
            );
        }
    }
}
