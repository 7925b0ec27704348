//! The live arena: a fixed range of address space whose pages are mapped copy-on-write from the
//! page store, plus the bookkeeping that makes snapshot and restore cost what changed.
//!
//! # Page states
//!
//! Every page of an arena in its usual layout ([`Layout::Own`]) is in one of three states (an
//! arena with proxies, and a proxy, are laid out as the [`proxy`](crate::proxy) module shows):
//!
//! - **clean**: the page is a private file mapping of the frozen slot `mapped[p]` (or anonymous
//!   zero memory), untouched since. Its bytes are those of `content[p] == mapped[p]`.
//! - **private, synced**: the kernel has given the page its own copy, and its bytes equal the
//!   frozen slot `content[p]`.
//! - **dirty**: written since the last snapshot or restore; `content[p]` is stale.
//!
//! The first write to a clean page is the kernel's copy-on-write fault. The safe API marks the
//! page dirty in a [`PageSet`]; after raw-pointer access the kernel is asked instead
//! (`PAGEMAP_SCAN`), so the common path never scans the arena.
//!
//! # Snapshot
//!
//! `snapshot` freezes each run of dirty pages into consecutive store slots with one `pwrite`
//! and shares the rest of the page table with the previous snapshot: `O(dirty)`. A frozen run of
//! at least [`REMAP_MIN_RUN`] pages is remapped from the store at once (one `mmap`, and the
//! private copies are returned to the kernel); shorter runs stay private-synced. Measured here,
//! an `mmap` costs about 7 us, the same as a page's copy-on-write fault, so remapping single
//! pages would double the cost of a scattered snapshot and split the mapping into many regions.
//!
//! # Restore
//!
//! `restore(s)` fixes exactly the pages that differ: the dirty pages plus
//! `diff(content, s)`, found by walking the two persistent tables and skipping shared subtrees.
//! Each such run is copied from a read-only mapping of the store chunk that holds it (no system
//! call). A page that was already private stays private, so writing it again costs no fault: a
//! fuzzer resetting the same pages pays a copy per reset, not a fault and an `madvise`.
//!
//! # Bounding memory and mappings
//!
//! Private pages duplicate frozen ones. When more than the private budget (an eighth of the
//! capacity by default, see [`ArenaBuilder::private_budget`]) are private after a snapshot or
//! restore, they are shed: pages whose mapping already shows their content are dropped with
//! `madvise(MADV_DONTNEED)`; if that is not enough, the others are remapped from the store, as
//! far as the mapping budget ([`MAX_REMAPPED_RUNS`] runs by default, see
//! [`ArenaBuilder::mapping_budget`]) allows. Each remapped run may split the arena's mapping in
//! three, so an arena holds at most `1 + 2 * budget` kernel mappings (the process limit is
//! 65530). An arena far over its private budget with no mapping room left is compacted: its
//! contents are frozen into one contiguous image and mapped again.
//!
//! This is the trade-off the kernel leaves: a page frozen apart from its neighbours costs either
//! a mapping of its own or a private copy. Mappings are the scarcer resource, so past the
//! mapping budget such pages stay private copies.
//!
//! Shedding, remapping and compaction only give memory and mappings back, so they are best
//! effort: when one of their system calls fails (out of memory or mappings), the snapshot or
//! restore that ran them still succeeds; the pages left private keep their bytes (each step
//! records only what it completed) and are shed after the next snapshot or restore
//! (`tests/anomaly.rs` fails each of these calls in turn and checks it).

use crate::error::{Error, Result};
use crate::page_set::{runs, PageSet};
use crate::page_table::PageTable;
use crate::proxy::{ProxyLayout, SharedLayout};
use crate::snapshot::{copy_table, map_table, Snapshot};
use crate::store::{SlotId, Store, StoreStats};
use crate::sys::{self, Reservation, Sharing};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

/// Frozen runs at least this long are remapped from the store at snapshot time.
pub const REMAP_MIN_RUN: usize = 16;

/// Private pages closer than this are dropped with one `madvise` call.
const DISCARD_GAP: usize = 16;

/// Remapped runs after which an arena compacts its mapping (default; see
/// [`ArenaBuilder::mapping_budget`]).
pub const MAX_REMAPPED_RUNS: usize = 4096;

/// Settings shared by an arena and everything made from it.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) private_budget_pages: Option<usize>,
    pub(crate) mapping_budget: usize,
    pub(crate) dir: Option<PathBuf>,
}

/// Builds an [`Arena`] with non-default settings.
///
/// ```
/// let arena = cowarena::Arena::builder(1 << 20)
///     .private_budget(256 << 10)
///     .build()?;
/// assert_eq!(arena.capacity(), 1 << 20);
/// # Ok::<(), cowarena::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ArenaBuilder {
    capacity: usize,
    options: Options,
}

impl ArenaBuilder {
    /// Keeps the page store's files in `dir` (for example a size-limited tmpfs, or a disk
    /// directory for heaps larger than memory) instead of anonymous memory files. When it fills,
    /// calls that need new frozen pages return an [`Error::Os`] naming `ENOSPC`.
    pub fn backing_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.options.dir = Some(dir.into());
        self
    }

    /// The most bytes of private page copies the arena keeps between snapshots and restores
    /// before it returns them to the kernel (default: an eighth of the capacity).
    pub fn private_budget(mut self, bytes: usize) -> Self {
        self.options.private_budget_pages = Some(bytes / sys::page_size());
        self
    }

    /// How many runs of pages may be remapped individually before the arena compacts its
    /// mapping into one image (default [`MAX_REMAPPED_RUNS`]). Each remapped run can add up to
    /// two kernel mappings; the process limit is 65530. At least 8.
    pub fn mapping_budget(mut self, runs: usize) -> Self {
        self.options.mapping_budget = runs.max(8);
        self
    }

    /// Reserves the address space and creates the arena.
    ///
    /// # Errors
    /// [`Error::InvalidCapacity`] for a capacity of zero or too many pages;
    /// [`Error::Os`] if the address space cannot be reserved or mapped. On `Err`, nothing is
    /// left behind (no mapping, no file).
    pub fn build(self) -> Result<Arena> {
        let page = sys::page_size();
        let capacity = checked_capacity(self.capacity, page)?;
        let store = Store::new(page, self.options.dir.clone());
        let table = PageTable::new(capacity / page, Arc::clone(&store));
        Arena::from_table(&table, self.options)
    }
}

/// Groups the (sorted) `pages` into runs of consecutive pages whose slots in `table` are
/// consecutive too (or all zero): each run is one `mmap` or one copy.
fn slot_runs(pages: &[usize], table: &PageTable) -> Vec<(Range<usize>, SlotId)> {
    let mut runs: Vec<(Range<usize>, SlotId)> = Vec::new();
    for &p in pages {
        let slot = table.get(p);
        match runs.last_mut() {
            Some((r, first))
                if r.end == p
                    && (if first.is_zero() {
                        slot.is_zero()
                    } else {
                        slot == first.offset(r.len())
                    }) =>
            {
                r.end += 1
            }
            _ => runs.push((p..p + 1, slot)),
        }
    }
    runs
}

/// Splits the (sorted, disjoint) `spans` so that none contains a page of (sorted) `keep`.
fn split_around(spans: Vec<Range<usize>>, keep: &[usize]) -> Vec<Range<usize>> {
    let mut out = Vec::with_capacity(spans.len());
    let mut k = 0;
    for span in spans {
        let mut start = span.start;
        while k < keep.len() && keep[k] < span.end {
            if keep[k] >= start {
                if keep[k] > start {
                    out.push(start..keep[k]);
                }
                start = keep[k] + 1;
            }
            k += 1;
        }
        if start < span.end {
            out.push(start..span.end);
        }
    }
    out
}

pub(crate) fn checked_capacity(requested: usize, page: usize) -> Result<usize> {
    let invalid = |reason| Error::InvalidCapacity { requested, reason };
    if requested == 0 {
        return Err(invalid("an arena needs at least one page"));
    }
    let capacity = requested
        .checked_next_multiple_of(page)
        .ok_or(invalid("rounding up to whole pages overflows"))?;
    if capacity / page > u32::MAX as usize || capacity > isize::MAX as usize {
        return Err(invalid("more pages than an arena can index"));
    }
    Ok(capacity)
}

/// How the arena's memory is mapped. Each operation states which layouts it is valid in and
/// asserts it; the shared and proxy layouts are explained in [`crate::proxy`].
#[derive(Debug)]
pub(crate) enum Layout {
    /// The usual layout (see the module docs): `mapped[p]` is the slot page `p` is mapped from
    /// (or zero), `private` the pages holding a private copy.
    Own { mapped: PageTable, private: PageSet },
    /// The arena has proxies (or had, until its next snapshot or restore).
    Shared(SharedLayout),
    /// The arena is a proxy.
    Proxy(ProxyLayout),
}

/// Counters that describe an arena and its page store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArenaStats {
    /// Capacity in bytes.
    pub capacity: usize,
    /// Pages written since the last snapshot or restore.
    pub dirty_pages: usize,
    /// Pages holding a private copy (dirty ones included).
    pub private_pages: usize,
    /// Runs remapped since the last compaction: an upper bound on the arena's kernel mappings
    /// is `1 + 2 * remapped_runs`.
    pub remapped_runs: usize,
    /// Whether the arena reads through to a source (it is a proxy).
    pub is_proxy: bool,
    /// Whether the arena's memory is shared with proxies.
    pub has_proxies: bool,
    /// The page store shared with this arena's snapshots and the arenas made from them.
    pub store: StoreStats,
}

/// A memory arena whose snapshots are copy-on-write pages (see the [crate docs](crate)).
///
/// ```
/// use cowarena::Arena;
/// let mut a = Arena::with_capacity(1 << 20)?;
/// a.write(100, b"hello")?;
/// let s = a.snapshot()?;
/// a.write(100, b"HELLO")?;
/// assert_eq!(&a.as_bytes()[100..105], b"HELLO");
/// a.restore(&s)?;
/// assert_eq!(&a.as_bytes()[100..105], b"hello");
/// # Ok::<(), cowarena::Error>(())
/// ```
#[derive(Debug)]
pub struct Arena {
    pub(crate) mem: Reservation,
    pub(crate) page: usize,
    /// `page == 1 << page_shift`.
    page_shift: u32,
    /// For every page that is not dirty, a frozen slot with the same bytes (see module docs;
    /// for a proxy, only its private pages until its first snapshot).
    pub(crate) content: PageTable,
    /// Pages written since the last snapshot or restore. Invariant: empty in the shared layout,
    /// whose written pages are kept in the layout, so that every write there takes the checked
    /// path ([`Arena::mark_dirty_pages`]).
    pub(crate) dirty: PageSet,
    pub(crate) layout: Layout,
    /// A raw pointer was handed out; the kernel must be asked what changed.
    untracked: bool,
    pub(crate) remapped_runs: usize,
    pub(crate) options: Options,
}

impl Arena {
    /// Reserves `capacity` bytes (rounded up to whole pages) of zeroed memory. Address space is
    /// reserved now; memory is used only as pages are touched.
    ///
    /// # Errors
    /// As [`ArenaBuilder::build`]: [`Error::InvalidCapacity`], or [`Error::Os`] if the address
    /// space cannot be reserved or mapped; on `Err`, nothing is left behind.
    ///
    /// ```
    /// let a = cowarena::Arena::with_capacity(1 << 30)?;
    /// assert_eq!(a.capacity(), 1 << 30);
    /// assert!(a.as_bytes().iter().take(4096).all(|&b| b == 0));
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`ArenaBuilder::build`].
    pub fn with_capacity(capacity: usize) -> Result<Arena> {
        Self::builder(capacity).build()
    }

    /// A builder for an arena of `capacity` bytes with non-default settings.
    pub fn builder(capacity: usize) -> ArenaBuilder {
        ArenaBuilder {
            capacity,
            options: Options {
                private_budget_pages: None,
                mapping_budget: MAX_REMAPPED_RUNS,
                dir: None,
            },
        }
    }

    /// A new arena showing `table`'s pages.
    pub(crate) fn from_table(table: &PageTable, options: Options) -> Result<Arena> {
        let page = sys::page_size();
        let pages = table.pages();
        let (mem, layout, remapped_runs) = own_memory(table, &options)?;
        Ok(Arena {
            mem,
            page,
            page_shift: page.trailing_zeros(),
            content: table.clone(),
            dirty: PageSet::new(pages),
            layout,
            untracked: false,
            remapped_runs,
            options,
        })
    }

    /// An arena over `mem`, laid out as `layout`, whose clean pages show `content`.
    pub(crate) fn from_parts(
        mem: Reservation,
        content: PageTable,
        layout: Layout,
        options: Options,
    ) -> Arena {
        let page = sys::page_size();
        let pages = mem.len() / page;
        Arena {
            mem,
            page,
            page_shift: page.trailing_zeros(),
            content,
            dirty: PageSet::new(pages),
            layout,
            untracked: false,
            remapped_runs: 0,
            options,
        }
    }

    /// Capacity in bytes, a multiple of [`page_size`](crate::page_size).
    pub fn capacity(&self) -> usize {
        self.mem.len()
    }

    pub(crate) fn pages(&self) -> usize {
        self.mem.len() / self.page
    }

    pub(crate) fn store(&self) -> &Arc<Store> {
        self.content.store()
    }

    pub(crate) fn options(&self) -> &Options {
        &self.options
    }

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
        self.mark_dirty_pages(first, last)
    }

    /// The rest of `mark_dirty`, out of line so that the check above inlines into the typed
    /// fast paths: this runs once per page between snapshots, next to a copy-on-write fault
    /// (and for every write in the shared layout).
    #[cold]
    #[inline(never)]
    pub(crate) fn mark_dirty_pages(&mut self, first: usize, last: usize) -> Result<()> {
        let dirty = &mut self.dirty;
        match &mut self.layout {
            Layout::Own { private, .. } | Layout::Proxy(ProxyLayout { private, .. }) => {
                for p in first..=last {
                    if dirty.insert(p) {
                        private.insert(p);
                    }
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

    fn clear_dirty(&mut self) {
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
            self.mark_dirty_pages(p, p).ok()?;
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

    /// A raw pointer to the start of the arena, for code that must write memory without the
    /// safe API (an emulator's guest memory, say).
    ///
    /// Writes through it are found by the next [`snapshot`](Arena::snapshot) or
    /// [`restore`](Arena::restore) by asking the kernel which pages hold private copies
    /// (`PAGEMAP_SCAN`); where the kernel cannot tell, every page counts as written.
    ///
    /// # Safety
    /// The pointer is valid for reads and writes of [`capacity`](Arena::capacity) bytes until the
    /// next call of any method of this arena that takes `&mut self`; it must not be used after
    /// that. It must not be written while a shared borrow of the arena lends memory: a reference
    /// from [`as_bytes`](Arena::as_bytes) or [`get`](Arena::get), or a proxy's
    /// [`with`](crate::Proxy::with), whose unwritten pages are this arena's memory.
    pub unsafe fn as_mut_ptr(&mut self) -> *mut u8 {
        self.untracked = true;
        self.mem.base()
    }

    /// Freezes the arena's current contents. Costs `O(pages written since the last snapshot or
    /// restore)`; unwritten pages are shared with the previous snapshot.
    ///
    /// # Errors
    /// [`Error::Os`] if the page store cannot take the written pages (it cannot make a file, its
    /// file system is full, the process is out of memory), or an arena whose proxies are all
    /// dropped cannot map its memory back from the store. On `Err`, no snapshot was taken, and
    /// the arena's bytes and every snapshot are unchanged: pages frozen before the failure stay
    /// frozen (they cost nothing again), the others stay marked as written, for the next
    /// snapshot. Returning private copies to the kernel afterwards (remapping, shedding and
    /// compaction, within [`ArenaBuilder::private_budget`] and [`ArenaBuilder::mapping_budget`])
    /// is best effort and never fails a snapshot: pages it leaves private keep their bytes and
    /// are shed after the next snapshot or restore.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        self.find_untracked_writes();
        self.leave_shared_if_alone()?;
        let frozen = self.freeze_dirty()?;
        match &self.layout {
            Layout::Own { .. } => {
                // The snapshot is taken once its pages are frozen. Remapping and shedding only
                // return memory and mappings; a failure leaves pages private (their bytes
                // right), to be shed again after the next snapshot or restore.
                let _ = self.remap_long_runs(&frozen);
                let _ = self.shed_private();
            }
            Layout::Proxy(_) => self.freeze_read_through()?,
            Layout::Shared(_) => {}
        }
        Ok(Snapshot::new(self.content.clone(), self.options.clone()))
    }

    /// Brings the arena back to `snapshot`: its bytes, and so every value and the allocator's
    /// state stored in it. Any live snapshot of this arena (or of an arena sharing its store)
    /// can be restored, in any order, any number of times. Costs `O(pages that differ)`.
    ///
    /// # Errors
    /// [`Error::CapacityMismatch`] and [`Error::ForeignSnapshot`]: nothing changed.
    /// [`Error::Os`] if an arena whose proxies are all dropped cannot map its memory back from
    /// the store (nothing changed), or if the copy cannot map the store's pages (out of memory
    /// or mappings). A copy that fails part-way leaves each page either as it was or as in
    /// `snapshot` (and a proxy of this arena reads through to those bytes): the arena stays
    /// consistent, its next snapshot freezes what it holds, and restoring again completes the
    /// job. Once the copy is done the restore succeeds: returning private copies to the kernel
    /// afterwards is best effort, as after [`snapshot`](Arena::snapshot).
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(4096 * 4)?;
    /// let empty = a.snapshot()?;
    /// a.write(0, b"one")?;
    /// let one = a.snapshot()?;
    /// a.write(0, b"two")?;
    /// a.restore(&empty)?;
    /// assert_eq!(&a.as_bytes()[..3], &[0, 0, 0]);
    /// a.restore(&one)?;
    /// assert_eq!(&a.as_bytes()[..3], b"one");
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::CapacityMismatch`], [`Error::ForeignSnapshot`] (see above), and [`Error::Os`] when
    /// a copy or mapping fails.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<()> {
        if snapshot.capacity() != self.capacity() {
            return Err(Error::CapacityMismatch {
                arena: self.capacity(),
                snapshot: snapshot.capacity(),
            });
        }
        if !Arc::ptr_eq(snapshot.table().store(), self.store()) {
            return Err(Error::ForeignSnapshot);
        }
        assert!(
            !matches!(self.layout, Layout::Proxy(_)),
            "a proxy's arena is never restored (`Proxy` offers no restore)"
        );
        self.find_untracked_writes();
        self.leave_shared_if_alone()?;
        let target = snapshot.table();
        let dirty = self.dirty_pages();
        let mut pages = dirty.sorted();
        let mut changed = Vec::new();
        self.content.diff(target, |p| {
            if !dirty.contains(p) {
                changed.push(p);
            }
        });
        if !changed.is_empty() {
            pages.extend(changed);
            pages.sort_unstable();
        }
        // Marked first, so that a failed copy leaves every page it may have touched dirty.
        for &p in &pages {
            self.mark_dirty(p * self.page, self.page)?;
        }
        self.copy_in(&pages, target)?;
        self.content = target.clone();
        self.clear_dirty();
        if let Layout::Own { .. } = self.layout {
            // Best effort, as after a snapshot: the restore is complete once its copy is.
            let _ = self.shed_private();
        }
        Ok(())
    }

    /// Counters describing the arena and its store.
    pub fn stats(&self) -> ArenaStats {
        let private_pages = match &self.layout {
            Layout::Own { private, .. } | Layout::Proxy(ProxyLayout { private, .. }) => {
                private.len()
            }
            Layout::Shared(_) => 0,
        };
        ArenaStats {
            capacity: self.capacity(),
            dirty_pages: self.dirty_pages().len(),
            private_pages,
            remapped_runs: self.remapped_runs,
            is_proxy: matches!(self.layout, Layout::Proxy(_)),
            has_proxies: matches!(&self.layout, Layout::Shared(shared) if shared.has_proxies()),
            store: self.store().stats(),
        }
    }

    /// The pages written since the last snapshot or restore, in increasing order (raw-pointer
    /// writes included).
    pub(crate) fn written_pages(&mut self) -> Vec<usize> {
        self.find_untracked_writes();
        self.dirty_pages().sorted()
    }

    /// Marks the pages written through a raw pointer as dirty. Raw pointers are only handed out
    /// in the own and shared layouts (a proxy offers none).
    pub(crate) fn find_untracked_writes(&mut self) {
        if !std::mem::take(&mut self.untracked) {
            return;
        }
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
        let written = found
            .unwrap_or_else(|| vec![all])
            .into_iter()
            .chain(private_before.into_iter().map(|p| p..p + 1));
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

    /// Freezes every dirty page; returns the frozen runs (page range, first slot). Pages not
    /// frozen because of an error stay dirty.
    pub(crate) fn freeze_dirty(&mut self) -> Result<Vec<(Range<usize>, SlotId)>> {
        let (frozen, result) = self.freeze_pages(&self.dirty_pages().sorted());
        let done_pages: usize = frozen.iter().map(|(r, _)| r.len()).sum();
        if done_pages == self.dirty_pages().len() {
            self.clear_dirty();
        } else {
            let done = &frozen;
            let keep = |p| {
                !done
                    .iter()
                    .any(|(r, _): &(Range<usize>, SlotId)| r.contains(&p))
            };
            match &mut self.layout {
                Layout::Shared(shared) => shared.dirty.retain(keep),
                _ => self.dirty.retain(keep),
            }
        }
        result.map(|()| frozen)
    }

    /// Copies the (sorted) `pages`' current bytes into new store slots and points `content` at
    /// them. Up to a chunk's worth of pages, scattered or not, go to the store in one `pwritev`.
    /// Returns the runs frozen (page range, first slot), and the error that stopped it, if any.
    pub(crate) fn freeze_pages(
        &mut self,
        pages: &[usize],
    ) -> (Vec<(Range<usize>, SlotId)>, Result<()>) {
        let store = Arc::clone(self.store());
        let max = store.max_run_pages();
        let page = self.page;
        let all = runs(pages, max);
        let mut frozen: Vec<(Range<usize>, SlotId)> = Vec::new();
        let mut i = 0;
        while i < all.len() {
            let mut j = i;
            let mut n = 0;
            while j < all.len() && n + all[j].len() <= max {
                n += all[j].len();
                j += 1;
            }
            let bufs: Vec<&[u8]> = all[i..j]
                .iter()
                .map(|r| &self.as_bytes()[r.start * page..r.end * page])
                .collect();
            let slots = match store.freeze(&bufs) {
                Ok(slots) => slots,
                Err(e) => return (frozen, Err(e)),
            };
            let mut updates = Vec::with_capacity(n);
            for r in &all[i..j] {
                let first = slots.first().offset(updates.len());
                frozen.push((r.clone(), first));
                updates.extend(r.clone().enumerate().map(|(k, p)| (p, first.offset(k))));
            }
            self.content.set_many(&updates);
            i = j;
        }
        (frozen, Ok(()))
    }

    /// Maps long frozen runs from the store, dropping their private copies.
    fn remap_long_runs(&mut self, frozen: &[(Range<usize>, SlotId)]) -> Result<()> {
        let long: Vec<&(Range<usize>, SlotId)> = frozen
            .iter()
            .filter(|(r, _)| r.len() >= REMAP_MIN_RUN)
            .collect();
        if long.is_empty() {
            return Ok(());
        }
        let mut mapped = 0;
        let result = long.iter().try_for_each(|(run, slot)| {
            self.map_slots(run.clone(), *slot)?;
            mapped += 1;
            Ok(())
        });
        // The runs mapped before a failure hold no private copy any more.
        let done = &long[..mapped];
        self.own_private()
            .retain(|p| !done.iter().any(|(r, _)| r.contains(&p)));
        result
    }

    /// Maps `pages` privately from consecutive slots starting at `first` and records it.
    fn map_slots(&mut self, pages: Range<usize>, first: SlotId) -> Result<()> {
        let (file, offset) = self.store().locate(first, pages.len())?;
        // SAFETY: `&mut self` guarantees no reference into the arena's memory is live, and the
        // slots hold the bytes these pages must show.
        unsafe {
            self.mem.map_file(
                pages.start * self.page,
                pages.len() * self.page,
                &file,
                offset,
                Sharing::Private,
                true,
            )?
        };
        self.remapped_runs += 1;
        let Layout::Own { mapped, .. } = &mut self.layout else {
            unreachable!("only an arena in its own layout maps store slots");
        };
        for (i, p) in pages.enumerate() {
            mapped.set(p, first.offset(i));
        }
        Ok(())
    }

    /// Copies the bytes of `target`'s slots into the (sorted) `pages` of the arena.
    fn copy_in(&mut self, pages: &[usize], target: &PageTable) -> Result<()> {
        let base = self.mem.base();
        let page = self.page;
        let store = Arc::clone(self.store());
        for (run, slot) in slot_runs(pages, target) {
            // SAFETY: the pages are in bounds and mapped writable; `&mut self` guarantees no
            // reference into the arena's memory is live.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(base.add(run.start * page), run.len() * page)
            };
            if slot.is_zero() {
                dst.fill(0);
            } else {
                let (view, offset) = store.view(slot, run.len())?;
                dst.copy_from_slice(&view.bytes()[offset..offset + dst.len()]);
            }
        }
        Ok(())
    }

    /// Returns private copies to the kernel once there are more than the budget allows.
    ///
    /// Pages whose mapping already shows their content are dropped with `madvise`, neighbours
    /// less than [`DISCARD_GAP`] pages apart in one call (dropping a clean page in between costs
    /// only a cheap refault). If that is not enough, pages whose content was frozen elsewhere
    /// are remapped from the store, as far as the mapping budget allows (each run costs an
    /// `mmap` and may split the mapping). Past four times the budget (and half the arena), the
    /// arena is compacted into one image.
    fn shed_private(&mut self) -> Result<()> {
        let budget = self
            .options
            .private_budget_pages
            .unwrap_or(self.pages() / 8)
            .max(1);
        let Layout::Own { mapped, private } = &self.layout else {
            unreachable!("only an arena in its own layout holds private copies to shed");
        };
        if private.len() <= budget {
            return Ok(());
        }
        let dirty = &self.dirty;
        let content = &self.content;
        // Pages to keep: dirty ones, and synced ones whose mapping shows other bytes.
        let (discard, keep): (Vec<usize>, Vec<usize>) = private
            .sorted()
            .into_iter()
            .partition(|&p| !dirty.contains(p) && mapped.get(p) == content.get(p));
        let remap: Vec<usize> = keep
            .iter()
            .copied()
            .filter(|&p| !dirty.contains(p))
            .collect();
        let left = keep.len();
        let mut spans: Vec<Range<usize>> = Vec::new();
        for &p in &discard {
            match spans.last_mut() {
                Some(r) if p - r.end < DISCARD_GAP => r.end = p + 1,
                _ => spans.push(p..p + 1),
            }
        }
        // A span must not drop the bytes of a kept page inside it: split it around them.
        let spans = split_around(spans, &keep);
        // Pages from here on keep their private copies (a discard failed there).
        let mut kept_from = usize::MAX;
        let mut result = Ok(());
        for span in spans {
            // SAFETY: `&mut self`: no live references. Every private page in the span shows its
            // mapping's bytes, and the other pages in it are clean file or zero pages.
            let discarded = unsafe {
                self.mem
                    .discard(span.start * self.page, span.len() * self.page)
            };
            if let Err(e) = discarded {
                kept_from = span.start;
                result = Err(e);
                break;
            }
        }
        self.own_private()
            .retain(|p| p >= kept_from || keep.binary_search(&p).is_ok());
        result?;
        if left <= budget {
            return Ok(());
        }
        if left > (4 * budget).max(self.pages() / 2) && self.dirty.is_empty() {
            // Far over budget: one fresh image costs less memory than these private copies.
            return self.compact();
        }
        self.remap_to_content(&remap)
    }

    /// Maps the (sorted) `pages` from their content slots, one `mmap` per run, for as many runs
    /// as the mapping budget has room; the pages remapped stop being private.
    fn remap_to_content(&mut self, pages: &[usize]) -> Result<()> {
        let mut runs = slot_runs(pages, &self.content);
        let room = self
            .options
            .mapping_budget
            .saturating_sub(self.remapped_runs);
        runs.truncate(room);
        let mut remapped = std::collections::HashSet::new();
        let mut result = Ok(());
        for (run, slot) in &runs {
            result = if slot.is_zero() {
                self.map_zero_run(run.clone())
            } else {
                self.map_slots(run.clone(), *slot)
            };
            if result.is_err() {
                break;
            }
            remapped.extend(run.clone());
        }
        // The runs remapped before a failure hold no private copy any more.
        self.own_private().retain(|p| !remapped.contains(&p));
        result
    }

    /// Maps fresh zero memory over `pages` and records it.
    fn map_zero_run(&mut self, pages: Range<usize>) -> Result<()> {
        // SAFETY: `&mut self`: no live references into the arena.
        unsafe {
            self.mem
                .map_zero(pages.start * self.page, pages.len() * self.page, true)?
        };
        self.remapped_runs += 1;
        let Layout::Own { mapped, .. } = &mut self.layout else {
            unreachable!("only an arena in its own layout remaps pages");
        };
        let updates: Vec<(usize, SlotId)> = pages.map(|p| (p, SlotId::ZERO)).collect();
        mapped.set_many(&updates);
        Ok(())
    }

    /// The private-page set of an arena in its own layout.
    fn own_private(&mut self) -> &mut PageSet {
        let Layout::Own { private, .. } = &mut self.layout else {
            unreachable!("only an arena in its own layout tracks private copies this way");
        };
        private
    }

    /// Freezes the arena's whole contents into contiguous slots and maps them again, so the
    /// arena is back to one mapping per store chunk plus one per long zero gap.
    ///
    /// The new mapping is built in a new reservation and swapped in only when complete, so a
    /// failure (out of mappings, say) leaves the arena's memory as it was.
    fn compact(&mut self) -> Result<()> {
        debug_assert!(self.dirty.is_empty());
        let mut extents: Vec<Range<usize>> = Vec::new();
        self.content
            .for_each_run(|first, len, _| match extents.last_mut() {
                Some(e) if e.end == first => e.end += len,
                _ => extents.push(first..first + len),
            });
        // Fill the smallest zero gaps with frozen zero pages until few mappings remain.
        let limit = (self.options.mapping_budget / 8).max(1);
        if extents.len() > limit {
            let mut gaps: Vec<usize> = extents.windows(2).map(|w| w[1].start - w[0].end).collect();
            gaps.sort_unstable();
            let max_fill = gaps[extents.len() - limit - 1];
            let mut merged: Vec<Range<usize>> = Vec::new();
            for e in extents {
                match merged.last_mut() {
                    Some(m) if e.start - m.end <= max_fill => m.end = e.end,
                    _ => merged.push(e),
                }
            }
            extents = merged;
        }
        let pages: Vec<usize> = extents.into_iter().flatten().collect();
        // Each page's new slot holds the bytes it shows, so `content` stays true even if this
        // stops part-way.
        let (_, result) = self.freeze_pages(&pages);
        result?;
        let table = self.content.clone();
        self.rebuild_from(&table)
    }

    /// Maps the whole arena afresh from `table` (a new arena, a shared arena whose proxies are
    /// gone, or a compaction): one `mmap` per run of consecutive slots, or, when that would take
    /// more runs than the mapping budget, a private copy of every page.
    ///
    /// The new memory is built in a new reservation and replaces the old one only once it is
    /// complete (the arena's address changes, which `&mut self` allows): on failure the arena
    /// keeps its memory and state.
    pub(crate) fn rebuild_from(&mut self, table: &PageTable) -> Result<()> {
        let (mem, layout, runs) = own_memory(table, &self.options)?;
        // `&mut self`: no reference into the old memory is live, so it can go.
        self.mem = mem;
        self.content = table.clone();
        self.clear_dirty();
        self.layout = layout;
        self.remapped_runs = runs;
        Ok(())
    }
}

/// New memory showing `table`'s pages, in the own layout: one `mmap` per run of consecutive
/// slots, or, when that would take more runs than the mapping budget, a private copy of every
/// page. Returns the memory, its layout and the runs mapped.
fn own_memory(table: &PageTable, options: &Options) -> Result<(Reservation, Layout, usize)> {
    let pages = table.pages();
    let mem = Reservation::new(pages * sys::page_size())?;
    let mut runs = 0;
    table.for_each_run(|_, _, _| runs += 1);
    let mut private = PageSet::new(pages);
    let mapped = if runs <= options.mapping_budget {
        // SAFETY: `mem` is new: nothing refers into it.
        unsafe { map_table(&mem, table, true)? };
        table.clone()
    } else {
        // SAFETY: `mem` is new: nothing refers into it.
        unsafe { copy_table(&mem, table)? };
        table.for_each_run(|first, len, _| {
            for p in first..first + len {
                private.insert(p);
            }
        });
        runs = 0;
        PageTable::new(pages, Arc::clone(table.store()))
    };
    Ok((mem, Layout::Own { mapped, private }, runs))
}
