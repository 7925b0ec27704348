//! Raw pointers into the arena, and finding the pages written through them.
//!
//! Emulators, JITs and fuzzers write the arena's memory through a pointer the safe API never
//! sees. Once [`Arena::as_mut_ptr`] has handed one out, the arena stays *armed* for its life:
//! every snapshot and restore asks the kernel which pages were written, so no write is ever
//! missed, however long the program keeps the pointer.
//!
//! Where the kernel can (Linux 6.7+), the arena's memory is registered for asynchronous
//! userfaultfd write-protection and each snapshot or restore reads exactly the pages written since
//! the last one with `PAGEMAP_SCAN`, which protects them again ([`RawWrites::Kernel`]). Its cost
//! follows the page tables that exist and the pages written, not the capacity nor every page
//! ever written: the kernel visits each entry of each page table in the range (1.5–2.5 ns) and
//! steps over memory without one 2 MiB at a time (about 5 ns a step), so only what exists is
//! protected (see `sys/write_tracker.rs`). A reset after one raw write, in an arena holding
//! 16 MiB: 11 us at 64 MiB, 30 us at 4 GiB (when the whole capacity was protected, every scan
//! cost 27 us at 64 MiB and 2.3 ms at 4 GiB).
//! A restore scans without protecting (its own copies would fault on protected pages), then
//! protects again only what it wrote: one call per run, or one scan of the span of runs lying
//! close together (`Reservation::forget_written`).
//!
//! Elsewhere, or after any failure of those calls, every page holding a private copy counts as
//! written ([`RawWrites::PrivatePages`]): always a superset of the pages written, since a write
//! makes a page private, but one that grows with every page ever written.

use super::layout::Layout;
use super::Arena;
use crate::cost::{self, Phase};
use std::ops::Range;

/// How an arena finds the pages written through raw pointers ([`Arena::as_mut_ptr`]), as
/// [`ArenaStats::raw_writes`](crate::ArenaStats::raw_writes) reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RawWrites {
    /// No raw pointer was handed out: the pages the safe API marks are all that changed.
    #[default]
    NotArmed,
    /// The kernel reports exactly the pages written (userfaultfd write-protection in async mode
    /// and `PAGEMAP_SCAN`, Linux 6.7+).
    Kernel,
    /// Every page that holds a private copy counts as written (a scan of the arena's page
    /// tables at each snapshot and restore): where the kernel cannot tell written pages apart,
    /// after a failure of the kernel's tracking, or in an arena that has proxies.
    PrivatePages,
}

impl Arena {
    /// A raw pointer to the start of the arena, for code that must write memory without the
    /// safe API (an emulator's guest memory, say). Keep it: it stays valid, and every write
    /// through it is found by every later [`snapshot`](Arena::snapshot) and
    /// [`restore`](Arena::restore), for the arena's life (see [`RawWrites`] for how; `stats()`
    /// says which way is active).
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// // SAFETY: the pointer is used only while no reference into `a` is alive, and never
    /// // during a call of `a`'s methods.
    /// let base = unsafe { a.as_mut_ptr() };
    /// let empty = a.snapshot()?;
    /// for round in 1..=3u8 {
    ///     unsafe { base.add(5000).write(round) };   // the same pointer every round
    ///     let s = a.snapshot()?;
    ///     assert_eq!(s.as_bytes()[5000], round);
    ///     a.restore(&empty)?;
    ///     assert_eq!(a.as_bytes()[5000], 0);
    /// }
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Safety
    /// The pointer is valid for reads and writes of [`capacity`](Arena::capacity) bytes until the
    /// arena is dropped or gets a proxy: [`proxy`](Arena::proxy) moves the arena's memory into a
    /// shared file, and so does, back, the first snapshot, restore or `fork_run` after its last
    /// proxy is dropped; call `as_mut_ptr` again after those. Accesses through it must not
    /// overlap a call of any method of this arena (no other thread may use it meanwhile), nor
    /// write memory a shared borrow of the arena lends: a reference from
    /// [`as_bytes`](Arena::as_bytes) or [`get`](Arena::get), or a proxy's
    /// [`with`](crate::Proxy::with), whose unwritten pages are this arena's memory.
    pub unsafe fn as_mut_ptr(&mut self) -> *mut u8 {
        if !self.raw_armed {
            self.raw_armed = true;
            if self.options.kernel_write_tracking {
                // Where the kernel cannot track writes, the private pages count instead.
                self.track_raw_writes();
            }
        }
        self.mem.base()
    }

    /// Asks the kernel to track writes to the arena's memory, in the own layout (where raw
    /// pointers are tracked), telling it which runs of pages are mapped from the store (their
    /// unread pages must come in protected) and which are anonymous (whose holes stay holes).
    pub(crate) fn track_raw_writes(&mut self) {
        let Layout::Own { mapped, .. } = &self.layout else {
            return;
        };
        let file_runs = mapped.extents();
        self.mem.track_writes(&file_runs);
    }

    /// How this arena finds raw writes now.
    pub(crate) fn raw_writes(&self) -> RawWrites {
        match (self.raw_armed, &self.layout) {
            (false, _) => RawWrites::NotArmed,
            (true, Layout::Own { .. }) if self.mem.tracks_writes() => RawWrites::Kernel,
            (true, _) => RawWrites::PrivatePages,
        }
    }

    /// Whether the arena's memory must stay where it is: a raw pointer into it may be kept.
    pub(crate) fn keeps_its_address(&self) -> bool {
        self.raw_armed
    }

    /// Marks the pages written through a raw pointer as dirty. Raw pointers are only handed out
    /// in the own and shared layouts (a proxy offers none). The kernel protects the pages found
    /// again, unless `for_restore`: a restore is about to write them itself, which would fault
    /// on each protected page (about 1 us), and protects them once it is done
    /// ([`forget_restored_writes`](Self::forget_restored_writes)).
    pub(crate) fn find_raw_writes(&mut self, for_restore: bool) {
        if !self.raw_armed {
            return;
        }
        let _phase = cost::enter(Phase::RawWrites);
        let tracked = match &self.layout {
            Layout::Own { .. } => self.mem.take_written(!for_restore),
            _ => None,
        };
        let written = match tracked {
            Some(runs) => runs,
            None => self.private_page_runs(),
        };
        for r in written {
            // Fails only in a process that may not write this (shared) arena at all, where
            // there is nothing to freeze for it.
            if self
                .mark_dirty(r.start * self.page, r.len() * self.page)
                .is_err()
            {
                return;
            }
        }
    }

    /// The pages that may have been written through a raw pointer when the kernel cannot say
    /// which were: every page holding a private copy (and every page, where even that is
    /// unknown).
    fn private_page_runs(&self) -> Vec<Range<usize>> {
        let (found, private_before): (Option<Vec<Range<usize>>>, Vec<usize>) = match &self.layout {
            Layout::Own { private, .. } => (
                self.mem.private_page_runs(0, self.capacity()),
                private.iter().collect(),
            ),
            // Shared memory holds no private copies; only the file's data pages can be written.
            Layout::Shared(shared) => (shared.data_pages(self.page, self.pages()), Vec::new()),
            Layout::Proxy(_) => unreachable!("a proxy hands out no raw pointer"),
        };
        let all = 0..self.pages();
        // A page that was private before can have changed without a new fault.
        found
            .unwrap_or_else(|| vec![all])
            .into_iter()
            .chain(private_before.into_iter().map(|p| p..p + 1))
            .collect()
    }

    /// After a restore wrote the (sorted) `pages` itself: protects them again, so that the
    /// kernel reports only later writes. A failure only costs precision (see [`RawWrites`]).
    pub(crate) fn forget_restored_writes(&mut self, pages: &[usize]) {
        if self.raw_writes() != RawWrites::Kernel || pages.is_empty() {
            return;
        }
        let _phase = cost::enter(Phase::RawWrites);
        // Nothing but the restore wrote since the pages were found, as `forget_written` needs.
        self.mem
            .forget_written(&crate::page_set::runs(pages, usize::MAX));
    }
}
