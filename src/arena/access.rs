//! Reading and writing the arena's bytes, and marking the pages written.
//!
//! The safe API marks every page it lends for writing in the arena's dirty set
//! ([`Arena::mark_dirty`]), so that a snapshot knows what changed without asking the kernel. Raw
//! pointers ([`Arena::as_mut_ptr`]) cannot be followed; the next snapshot or restore asks the
//! kernel instead (see [`freeze`](super::freeze)).

use super::layout::Layout;
use super::shared::ProxyLayout;
use super::Arena;
use crate::error::{Error, Result};
use crate::page_set::PageSet;
use std::ops::Range;

impl Arena {
    pub(crate) fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.capacity() => Ok(()),
            _ => Err(Error::OutOfBounds {
                offset,
                len,
                capacity: self.capacity(),
            }),
        }
    }

    /// Records that `[offset, offset + len)` (in bounds) is about to be written. Fails only
    /// in the shared layout, in a process other than the one that made it (see
    /// [`SharedLayout::check_writer`]).
    #[inline(always)]
    pub(crate) fn mark_dirty(&mut self, offset: usize, len: usize) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let first = offset >> self.page_shift;
        let last = (offset + len - 1) >> self.page_shift;
        if first == last && self.dirty.contains(first) {
            return Ok(());
        }
        self.mark_dirty_pages(offset, len)
    }

    /// The rest of `mark_dirty`, out of line so that the check above inlines into the typed
    /// fast paths: this runs once per page between snapshots, next to a copy-on-write fault
    /// (and for every write in the shared layout).
    #[cold]
    #[inline(never)]
    pub(crate) fn mark_dirty_pages(&mut self, offset: usize, len: usize) -> Result<()> {
        let (first, last) = (
            offset >> self.page_shift,
            (offset + len - 1) >> self.page_shift,
        );
        let dirty = &mut self.dirty;
        match &mut self.layout {
            Layout::Own { private, .. } => {
                for p in first..=last {
                    if dirty.insert(p) {
                        let copied = private.insert(p);
                        self.working_set.note(p, copied);
                    }
                }
            }
            Layout::Proxy(ProxyLayout { private, .. }) => {
                let own: Vec<usize> = (first..=last)
                    .filter(|&p| dirty.insert(p) && private.insert(p))
                    .collect();
                for run in crate::page_set::runs(&own, usize::MAX) {
                    self.make_own_copies(run, offset);
                }
            }
            Layout::Shared(shared) => {
                shared.check_writer()?;
                for p in first..=last {
                    shared.dirty.insert(p);
                }
            }
        }
        Ok(())
    }

    /// Makes the proxy's pages of `run` its own copies now: a proxy's page counts as its own
    /// from the time it is marked (its snapshots freeze it, never what the source shows), even
    /// if the caller stores to only part of what it marked. The kernel copies the run
    /// (`MADV_POPULATE_WRITE`, one call); where it cannot (before Linux 5.14, macOS), one byte of
    /// each page is stored back: the first byte at or after `offset`, the start of the range
    /// being marked. A loan marks a page while references it lent elsewhere may cover other bytes
    /// of it, never the bytes it is about to write.
    fn make_own_copies(&self, run: Range<usize>, offset: usize) {
        let shift = self.page_shift;
        if self
            .mem
            .populate_write(run.start << shift, run.len() << shift)
        {
            return;
        }
        for p in run {
            let at = (p << shift).max(offset);
            // SAFETY: `at` lies in page `p` of this arena (the caller marks pages of an
            // in-bounds range starting at `offset`), mapped writable, and in the range being
            // marked, which no live reference covers: the caller holds the arena (or the view
            // lent the range) mutably and is about to write it. The byte is written back
            // unchanged, and no other thread can access the arena meanwhile.
            unsafe {
                let byte = self.mem.base().add(at);
                byte.write_volatile(byte.read_volatile());
            }
        }
    }

    /// Whether this process may write the arena (see [`mark_dirty`](Arena::mark_dirty)): views
    /// that mark pages lazily check it once, when they are made.
    pub(crate) fn check_writable(&self) -> Result<()> {
        match &self.layout {
            Layout::Shared(shared) => shared.check_writer(),
            _ => Ok(()),
        }
    }

    /// The pages written since the last snapshot or restore.
    pub(crate) fn dirty_pages(&self) -> &PageSet {
        match &self.layout {
            Layout::Shared(shared) => &shared.dirty,
            _ => &self.dirty,
        }
    }

    pub(super) fn clear_dirty(&mut self) {
        self.dirty.clear();
        if let Layout::Shared(shared) = &mut self.layout {
            shared.dirty.clear();
        }
    }

    /// Copies `bytes` into the arena at `offset`. Makes no system call.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] past the capacity ([`Error::Unsupported`] in a forked child, for
    /// an arena whose memory is shared with proxies); on `Err`, nothing is written.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(4096)?;
    /// a.write(10, &[1, 2, 3])?;
    /// assert!(matches!(a.write(4095, &[1, 2]), Err(cowarena::Error::OutOfBounds { .. })));
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if the range does not fit in the arena.
    pub fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<()> {
        self.bytes_mut(offset..offset.saturating_add(bytes.len()))?
            .copy_from_slice(bytes);
        Ok(())
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if the range does not fit in the arena.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        buf.copy_from_slice(&self.as_bytes()[offset..offset + buf.len()]);
        Ok(())
    }

    /// The whole arena as bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: the whole reservation is mapped readable for as long as `self` lives (every
        // remap replaces pages with readable ones). Its bytes change only through `&mut self`,
        // so not while this borrow lives, with one exception: a proxy's pages that read through
        // to its source change when the source is written. A proxy's arena is reachable only
        // through `ProxyRef`/`ProxyMut`, which hold the source borrowed (or exist once it is
        // gone) for as long as they lend this arena, so the source is not written meanwhile.
        unsafe { std::slice::from_raw_parts(self.mem.base(), self.capacity()) }
    }

    /// A mutable view of `range`, whose pages are marked as written. Makes no system call.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] for a range past the capacity or reversed ([`Error::Unsupported`]
    /// as for [`write`](Arena::write)); on `Err`, nothing changed.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(8192)?;
    /// a.bytes_mut(4000..4200)?.fill(9);
    /// assert_eq!(a.as_bytes()[4100], 9);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if the range is reversed or does not fit in the arena.
    #[inline]
    pub fn bytes_mut(&mut self, range: Range<usize>) -> Result<&mut [u8]> {
        let len = range
            .end
            .checked_sub(range.start)
            // `_else`: an `Error` built eagerly is also dropped on success, a call per write.
            .ok_or_else(|| Error::OutOfBounds {
                offset: range.start,
                len: 0,
                capacity: self.capacity(),
            })?;
        self.check_range(range.start, len)?;
        self.mark_dirty(range.start, len)?;
        // SAFETY: in bounds (checked), mapped writable for the life of `self`, and `&mut self`
        // guarantees no other reference into the arena's memory is live.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.mem.base().add(range.start), len) })
    }

    /// The arena's first byte, writable: for the typed views, which lend `&mut` references into
    /// the memory and mark the pages they write themselves (`mark_dirty`).
    #[inline(always)]
    pub(crate) fn base_mut(&mut self) -> *mut u8 {
        self.mem.base()
    }

    /// `log2` of the page size.
    #[inline(always)]
    pub(crate) fn page_shift(&self) -> u32 {
        self.page_shift
    }

    /// Page `p` for writing, marked as written, or `None` past the arena's end (or where
    /// [`mark_dirty`](Arena::mark_dirty) fails): for the typed
    /// allocator's fast paths, which then fall back to their slow path (and its error), so that
    /// they build no `Result` and inline the whole write.
    #[inline(always)]
    pub(crate) fn page_mut(&mut self, p: usize) -> Option<&mut [u8]> {
        if p >= self.capacity() >> self.page_shift {
            return None;
        }
        if !self.dirty.contains(p) {
            self.mark_dirty_pages(p << self.page_shift, 1 << self.page_shift)
                .ok()?;
        }
        // The length is spelled `1 << page_shift` (equal to `page`) so that callers' checks
        // against their own page size, if computed from the same shift, remove bounds checks.
        let len = 1 << self.page_shift;
        // SAFETY: as in `bytes_mut`: page `p` is within the arena (checked above), mapped
        // writable for the life of `self`, and `&mut self` guarantees no other reference into the
        // arena's memory is live.
        Some(unsafe {
            std::slice::from_raw_parts_mut(self.mem.base().add(p << self.page_shift), len)
        })
    }

    /// The runs of pages of `pages` that may hold a non-zero byte, in increasing order: pages
    /// frozen with data and pages written since (through raw pointers too), or all of them where
    /// the layout does not say (an arena with proxies, or a proxy). Costs the arena's data pages,
    /// not its capacity.
    pub(crate) fn maybe_nonzero(&mut self, pages: Range<usize>) -> Vec<Range<usize>> {
        if !matches!(self.layout, Layout::Own { .. }) {
            return vec![pages];
        }
        self.find_raw_writes(false);
        let mut found: Vec<usize> = self.dirty.iter().filter(|p| pages.contains(p)).collect();
        self.content.for_each_run(|first, len, _| {
            let run = first.max(pages.start)..(first + len).min(pages.end);
            found.extend(run);
        });
        found.sort_unstable();
        found.dedup();
        crate::page_set::runs(&found, usize::MAX)
    }
}
