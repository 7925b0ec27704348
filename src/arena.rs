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
//! `snapshot` freezes the dirty pages into store slots (up to a chunk's worth with one `pwritev`;
//! short runs reuse dead slots, see the [store](crate::store) docs) and shares the rest of the
//! page table with the previous snapshot: `O(dirty)`. A frozen run of at least [`REMAP_MIN_RUN`]
//! pages is remapped from the store at once (one `mmap`, and the private copies are returned to
//! the kernel); shorter runs stay private-synced. Measured here, an `mmap` costs about 7 us, the
//! same as a page's copy-on-write fault, so remapping single pages would double the cost of a
//! scattered snapshot and split the mapping into many regions.
//!
//! A remapped run is not populated ahead (`MADV_POPULATE_READ`): right after freezing a whole
//! 1 GiB arena, the first writes to 64 scattered pages took 190–260 us with the remapped runs
//! populated and 190–240 us without, the copy-on-write fault of an unmapped file page costing
//! what the fault of a mapped one does.
//!
//! # Restore
//!
//! `restore(s)` fixes exactly the pages that differ: the dirty pages plus
//! `diff(content, s)`, found by walking the two persistent tables and skipping shared subtrees.
//! Each such run is copied from the populated read-only view of the store chunk that holds it (no
//! system call, no fault). A page that was already private stays private, so writing it again
//! costs no fault: a fuzzer resetting the same pages pays a copy per reset, not a fault and an
//! `madvise`.
//!
//! A restore of more pages than the private budget would have most of its copies shed right
//! after. It restores those pages the kernel floor's way instead: a page whose mapping already
//! shows its target is dropped (`madvise(MADV_DONTNEED)`, neighbours in one call), a run of at
//! least [`REMAP_MIN_RUN`] pages of consecutive target slots is remapped, and only the rest is
//! copied. A 16 MiB arena rewritten whole (k = 4096) cycled at 1.14–1.37x the floor when it
//! copied every page and shed them right after, and at 0.96–1.09x (parity: both pay a
//! copy-on-write fault per page) with this.
//!
//! # Bounding memory and mappings
//!
//! Private pages duplicate frozen ones. When more than the private budget (see
//! [`ArenaBuilder::private_budget`]) are private after a snapshot or restore, they are shed:
//! pages whose mapping already shows their content are dropped with `MADV_DONTNEED`, through one
//! `process_madvise` per 1024 spans where the kernel allows it (Linux 6.13+): 0.6 us per
//! scattered page here, against 1.9 us for an `madvise` each. A shed is a pause every few hundred
//! cycles (10 ms for 16384 pages at 1 GiB), so it shows in the mean cycle, not the median: cycling
//! 64 random pages of a 1 GiB arena, the mean went from 369 us to 291 us with it (median 264 us to
//! 247 us), against about 450 us for the kernel floor. If that is not enough, the others are remapped from the store, as far as the mapping budgets
//! allow: the arena's ([`MAX_REMAPPED_RUNS`] runs by default, see
//! [`ArenaBuilder::mapping_budget`]) and the process's (`MAX_PROCESS_REMAPPED_RUNS`, 16384 runs
//! for all arenas together). Each remapped run may split the arena's mapping in three, so the
//! arenas of a process hold at most about `2 * 16384` kernel mappings, half the process limit
//! (65530), which leaves room for snapshot views ([`MAX_VIEW_MAPPINGS`](crate::MAX_VIEW_MAPPINGS))
//! and the program's own. An arena far over its private budget is compacted: its contents are
//! frozen into one contiguous image and mapped again.
//!
//! This is the trade-off the kernel leaves: a page frozen apart from its neighbours costs either
//! a mapping of its own or a private copy. A mapping costs the kernel a few hundred bytes, a
//! private copy 4 KiB, so within the budgets such pages are remapped; past them they stay
//! private.
//! Measured with 1000 live snapshots of a 256 MiB arena, 16 scattered pages apart: with 4096
//! remapped runs per arena, 10,500 private pages were left (1.17x the ideal memory); with 16384,
//! 3,200 (1.07x), at 21,000 kernel mappings.
//!
//! The default private budget is 1/16 of the arena's data pages (those that are not all zero),
//! at least 1 MiB and at most 256 MiB. Relative to the data, not the capacity, so that a huge
//! reservation holding little costs little, and capped, so that no arena keeps more than 256 MiB
//! of copies unasked; 1/16 bounds the copies at about 6% of the data. The same share at every
//! size keeps the cycle's cost independent of the arena's size: a budget that held a whole small
//! arena made its cycles 5x cheaper than a large one's, where the floor's cost does not grow.

//!
//! Shedding, remapping and compaction only give memory and mappings back, so they are best
//! effort: when one of their system calls fails (out of memory or mappings), the snapshot or
//! restore that ran them still succeeds; the pages left private keep their bytes (each step
//! records only what it completed) and are shed after the next snapshot or restore
//! (`tests/anomaly.rs` fails each of these calls in turn and checks it).

use crate::error::{Error, Result};
use crate::page_set::{coalesce, runs, PageSet};
use crate::page_table::{same_run, PageTable};
use crate::proxy::{ProxyLayout, SharedLayout};
use crate::snapshot::{copy_table, map_table, Snapshot};
use crate::store::{SlotId, Store, StoreStats};
use crate::sys::{self, Reservation, Sharing};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Frozen runs at least this long are remapped from the store at snapshot time.
pub const REMAP_MIN_RUN: usize = 16;

/// Private pages closer than this are dropped with one `madvise` call.
const DISCARD_GAP: usize = 16;

/// The default private budget is this share of the arena's data pages (its pages that are not
/// all zero), within [`MIN_PRIVATE_BUDGET`] and [`MAX_PRIVATE_BUDGET`] (see the module docs).
const PRIVATE_BUDGET_SHARE: usize = 16;
/// Bytes of private copies every arena may keep, however little data it holds.
const MIN_PRIVATE_BUDGET: usize = 1 << 20;
/// Bytes of private copies no arena keeps by default, however much data it holds.
const MAX_PRIVATE_BUDGET: usize = 256 << 20;

/// Remapped runs after which an arena compacts its mapping (default; see
/// [`ArenaBuilder::mapping_budget`]).
pub const MAX_REMAPPED_RUNS: usize = 16384;

/// Runs that all arenas of the process together remap before they stop (each run may split a
/// mapping in three, and the process limit is 65530 mappings).
const MAX_PROCESS_REMAPPED_RUNS: usize = 16384;

/// Runs remapped by the arenas of the process, held by their layouts ([`Remaps`]).
static PROCESS_REMAPS: AtomicUsize = AtomicUsize::new(0);

/// The remapped runs an arena's layout counts in [`PROCESS_REMAPS`]; given back when the layout
/// is replaced (compaction, a rebuild) or dropped with the arena.
#[derive(Debug)]
pub(crate) struct Remaps(usize);

impl Remaps {
    fn new(runs: usize) -> Self {
        PROCESS_REMAPS.fetch_add(runs, Ordering::Relaxed);
        Remaps(runs)
    }

    fn add(&mut self) {
        PROCESS_REMAPS.fetch_add(1, Ordering::Relaxed);
        self.0 += 1;
    }

    fn runs(&self) -> usize {
        self.0
    }
}

impl Drop for Remaps {
    fn drop(&mut self) {
        PROCESS_REMAPS.fetch_sub(self.0, Ordering::Relaxed);
    }
}

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
    /// before it returns them to the kernel (default: 1/16 of the bytes of its pages that are not
    /// all zero, at least 1 MiB and at most 256 MiB). A page written and restored stays a private
    /// copy within the budget, so writing it again costs no page fault.
    pub fn private_budget(mut self, bytes: usize) -> Self {
        self.options.private_budget_pages = Some(bytes / sys::page_size());
        self
    }

    /// How many runs of pages may be remapped individually before the arena compacts its
    /// mapping into one image (default [`MAX_REMAPPED_RUNS`]). Each remapped run can add up to
    /// two kernel mappings; the process limit is 65530. At least 8. All arenas of the process
    /// together also stop at 16384 remapped runs.
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
    /// (or zero), `private` the pages holding a private copy, `remaps` the runs remapped (counted
    /// for the process too), `kept` the private pages the last shed left (see
    /// [`Arena::shed_private`]).
    Own {
        mapped: PageTable,
        private: PageSet,
        remaps: Remaps,
        kept: usize,
    },
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
        let (mem, layout) = own_memory(table, &options)?;
        Ok(Arena {
            mem,
            page,
            page_shift: page.trailing_zeros(),
            content: table.clone(),
            dirty: PageSet::new(pages),
            layout,
            untracked: false,
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
            Layout::Own { private, .. } => {
                for p in first..=last {
                    if dirty.insert(p) {
                        private.insert(p);
                    }
                }
            }
            Layout::Proxy(ProxyLayout { private, .. }) => {
                for p in first..=last {
                    if dirty.insert(p) && private.insert(p) {
                        // A proxy's page counts as its own from now on (its snapshots freeze
                        // it, never what the source shows), so it must be its own copy even if
                        // the caller stores to only part of what it marked: storing one byte
                        // back makes the kernel copy it now.
                        let at = p << self.page_shift;
                        // SAFETY: `p` is a page of this arena (the caller marks pages of an
                        // in-bounds range), mapped writable; `&mut self` means no reference
                        // into the arena is alive, and the byte is written back unchanged.
                        unsafe {
                            let byte = self.mem.base().add(at);
                            byte.write_volatile(byte.read_volatile());
                        }
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
        // Marked first, so that a failed restore leaves every page it may have touched dirty.
        for &p in &pages {
            self.mark_dirty(p * self.page, self.page)?;
        }
        self.restore_pages(&pages, target)?;
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
            remapped_runs: self.remapped_runs(),
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
            // Runs too short to be remapped may take scattered slots freed earlier.
            let slots = match store.freeze(&bufs, REMAP_MIN_RUN) {
                Ok(slots) => slots,
                Err(e) => return (frozen, Err(e)),
            };
            let updates: Vec<(usize, SlotId)> = all[i..j]
                .iter()
                .flat_map(|r| r.clone())
                .zip(slots.slots().iter().copied())
                .collect();
            let pieces = updates.iter().map(|&(p, slot)| (p..p + 1, slot));
            frozen.extend(coalesce(pieces, 0, same_run));
            self.content.set_many(&updates);
            i = j;
        }
        (frozen, Ok(()))
    }

    /// Maps long frozen runs from the store, dropping their private copies. On failure, the runs
    /// mapped before it are recorded; the others stay private (their bytes right).
    fn remap_long_runs(&mut self, frozen: &[(Range<usize>, SlotId)]) -> Result<()> {
        let long: Vec<&(Range<usize>, SlotId)> = frozen
            .iter()
            .filter(|(r, _)| r.len() >= REMAP_MIN_RUN)
            .collect();
        let mut remapped = Vec::with_capacity(long.len());
        let mut result = Ok(());
        for (run, slot) in long {
            result = self.map_slots(run.clone(), *slot);
            if result.is_err() {
                break;
            }
            remapped.push(run.clone());
        }
        // The runs mapped before a failure hold no private copy any more.
        self.forget_private(&remapped);
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
        self.count_remap();
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
        let parts = runs(pages, usize::MAX).into_iter().map(|run| {
            // SAFETY: the pages are in bounds and mapped writable; `&mut self` guarantees no
            // reference into the arena's memory is live, and the runs are disjoint.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(base.add(run.start * page), run.len() * page)
            };
            (run.start * page, dst)
        });
        target.read_many(parts.collect())
    }

    /// Gives the (sorted, dirty) `pages` the bytes of `target`.
    ///
    /// Each page is copied from the store and stays private, so that writing it again costs no
    /// fault; pages over the private budget are shed later in batches (see
    /// [`shed_private`](Arena::shed_private)). But a restore of more pages than the budget
    /// would only be shed right after: then a page whose mapping already shows its target is
    /// dropped instead (`madvise(MADV_DONTNEED)`, the kernel floor's own move), and a run of at
    /// least [`REMAP_MIN_RUN`] pages of consecutive target slots is remapped while the mapping
    /// budget has room; only the rest is copied. A failure part-way leaves every page as it was
    /// or as in `target`.
    fn restore_pages(&mut self, pages: &[usize], target: &PageTable) -> Result<()> {
        let budget = self.private_budget();
        let Layout::Own {
            mapped, private, ..
        } = &self.layout
        else {
            return self.copy_in(pages, target);
        };
        if pages.len() <= budget {
            return self.copy_in(pages, target);
        }
        let (drop, rest): (Vec<usize>, Vec<usize>) =
            pages.iter().partition(|&&p| mapped.get(p) == target.get(p));
        // Every page to restore is private (it is dirty): the others keep their bytes.
        let keep: Vec<usize> = private
            .sorted()
            .into_iter()
            .filter(|&p| mapped.get(p) != target.get(p))
            .collect();
        self.discard_pages(&drop, &keep)?;
        let mut room = self.remap_room();
        let mut copy = Vec::new();
        let mut remapped = Vec::new();
        let mut result = Ok(());
        for (run, first) in target.slot_runs(rest) {
            if run.len() < REMAP_MIN_RUN || room == 0 || result.is_err() {
                copy.extend(run);
                continue;
            }
            room -= 1;
            result = self.map_run(run.clone(), first);
            if result.is_ok() {
                remapped.push(run);
            }
        }
        self.forget_private(&remapped);
        result?;
        self.copy_in(&copy, target)
    }

    /// The most private pages the arena keeps (see [`ArenaBuilder::private_budget`]).
    fn private_budget(&self) -> usize {
        let default = || {
            let (min, max) = (
                MIN_PRIVATE_BUDGET / self.page,
                MAX_PRIVATE_BUDGET / self.page,
            );
            (self.content.data_pages() / PRIVATE_BUDGET_SHARE).clamp(min, max)
        };
        self.options
            .private_budget_pages
            .unwrap_or_else(default)
            .max(1)
    }

    /// Drops the private copies of the (sorted) `pages` with `madvise(MADV_DONTNEED)`,
    /// neighbours less than [`DISCARD_GAP`] pages apart in one call (dropping a clean page in
    /// between costs only a cheap refault), never dropping a page of (sorted) `keep`. The pages
    /// must show the right bytes once dropped (their mapping shows their content), and stop
    /// being private. On failure some may have been dropped and still count as private, which
    /// costs a later shed a needless call, nothing more.
    fn discard_pages(&mut self, pages: &[usize], keep: &[usize]) -> Result<()> {
        let spans = coalesce(
            pages.iter().map(|&p| (p..p + 1, ())),
            DISCARD_GAP - 1,
            |_, _| true,
        );
        // A span must not drop the bytes of a kept page inside it: split it around them.
        let spans: Vec<Range<usize>> =
            split_around(spans.into_iter().map(|(r, ())| r).collect(), keep)
                .into_iter()
                .map(|r| r.start * self.page..r.end * self.page)
                .collect();
        // SAFETY: `&mut self`: no live references. Every private page in the spans shows its
        // mapping's bytes once dropped (the caller's promise for `pages`, and the pages of `keep`
        // are left out); the other pages in them are clean file or zero pages.
        unsafe { self.mem.discard(&spans)? };
        self.own_private()
            .retain(|p| pages.binary_search(&p).is_err());
        Ok(())
    }

    /// Returns private copies to the kernel once there are more than the budget allows.
    ///
    /// Pages whose mapping already shows their content are dropped with `madvise`
    /// ([`discard_pages`](Arena::discard_pages)). If that is not enough, pages whose content was
    /// frozen elsewhere are remapped from the store, as far as the mapping budget allows (each
    /// run costs an `mmap` and may split the mapping). Past four times the budget (and half the
    /// arena), the arena is compacted into one image. A shed that leaves more than the budget
    /// (no mapping room) is not tried again before half a budget more pages are private: each
    /// try looks at every private page.
    fn shed_private(&mut self) -> Result<()> {
        let budget = self.private_budget();
        let Layout::Own {
            mapped,
            private,
            kept,
            ..
        } = &self.layout
        else {
            unreachable!("only an arena in its own layout holds private copies to shed");
        };
        if private.len() <= budget.max(kept + budget / 2) {
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
        self.discard_pages(&discard, &keep)?;
        if left > budget {
            if left > (4 * budget).max(self.pages() / 2) && self.dirty.is_empty() {
                // Far over budget: one fresh image costs less memory than these private copies.
                return self.compact();
            }
            self.remap_to_content(&remap)?;
        }
        if let Layout::Own { private, kept, .. } = &mut self.layout {
            *kept = if private.len() > budget {
                private.len()
            } else {
                0
            };
        }
        Ok(())
    }

    /// Maps the (sorted) `pages` from their content slots, one `mmap` per run, for as many runs
    /// as the mapping budget has room; the pages remapped stop being private (those remapped
    /// before a failure too).
    fn remap_to_content(&mut self, pages: &[usize]) -> Result<()> {
        let mut runs = self.content.slot_runs(pages.iter().copied());
        runs.truncate(self.remap_room());
        let mut remapped = Vec::with_capacity(runs.len());
        let mut result = Ok(());
        for (run, slot) in runs {
            result = self.map_run(run.clone(), slot);
            if result.is_err() {
                break;
            }
            remapped.push(run);
        }
        self.forget_private(&remapped);
        result
    }

    /// Runs remapped since the arena's memory was last mapped afresh (none outside the own
    /// layout).
    fn remapped_runs(&self) -> usize {
        match &self.layout {
            Layout::Own { remaps, .. } => remaps.runs(),
            _ => 0,
        }
    }

    /// Runs the arena may still remap: within its own mapping budget and the process's.
    fn remap_room(&self) -> usize {
        let own = self
            .options
            .mapping_budget
            .saturating_sub(self.remapped_runs());
        own.min(MAX_PROCESS_REMAPPED_RUNS.saturating_sub(PROCESS_REMAPS.load(Ordering::Relaxed)))
    }

    /// Counts one more remapped run, in the arena and in the process.
    fn count_remap(&mut self) {
        let Layout::Own { remaps, .. } = &mut self.layout else {
            unreachable!("only an arena in its own layout remaps pages");
        };
        remaps.add();
    }

    /// The private-page set of an arena in its own layout.
    fn own_private(&mut self) -> &mut PageSet {
        let Layout::Own { private, .. } = &mut self.layout else {
            unreachable!("only an arena in its own layout tracks private copies this way");
        };
        private
    }

    /// Removes the pages of the (sorted, disjoint) `runs` from the private set: they were
    /// mapped afresh.
    fn forget_private(&mut self, runs: &[Range<usize>]) {
        self.own_private().retain(|p| {
            let i = runs.partition_point(|r| r.end <= p);
            runs.get(i).is_none_or(|r| !r.contains(&p))
        });
    }

    /// Maps `pages` from consecutive slots starting at `first`, or fresh zero memory.
    fn map_run(&mut self, pages: Range<usize>, first: SlotId) -> Result<()> {
        if !first.is_zero() {
            return self.map_slots(pages, first);
        }
        // SAFETY: `&mut self`: no live references into the arena.
        unsafe {
            self.mem
                .map_zero(pages.start * self.page, pages.len() * self.page, true)?
        };
        self.count_remap();
        let Layout::Own { mapped, .. } = &mut self.layout else {
            unreachable!("only an arena in its own layout remaps pages");
        };
        let updates: Vec<(usize, SlotId)> = pages.map(|p| (p, SlotId::ZERO)).collect();
        mapped.set_many(&updates);
        Ok(())
    }

    /// Freezes the arena's whole contents into contiguous slots and maps them again, so the
    /// arena is back to one mapping per store chunk plus one per long zero gap.
    ///
    /// The new mapping is built in a new reservation and swapped in only when complete, so a
    /// failure (out of mappings, say) leaves the arena's memory as it was.
    fn compact(&mut self) -> Result<()> {
        debug_assert!(self.dirty.is_empty());
        let mut extents: Vec<(Range<usize>, ())> = Vec::new();
        self.content
            .for_each_run(|first, len, _| extents.push((first..first + len, ())));
        let extents = coalesce(extents, 0, |_, _| true);
        // Fill the smallest zero gaps with frozen zero pages until few mappings remain.
        let limit = (self.options.mapping_budget / 8).max(1);
        let max_fill = if extents.len() > limit {
            let mut gaps: Vec<usize> = extents
                .windows(2)
                .map(|w| w[1].0.start - w[0].0.end)
                .collect();
            gaps.sort_unstable();
            gaps[extents.len() - limit - 1]
        } else {
            0
        };
        let extents = coalesce(extents, max_fill, |_, _| true);
        let pages: Vec<usize> = extents.into_iter().flat_map(|(r, ())| r).collect();
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
        let (mem, layout) = own_memory(table, &self.options)?;
        // `&mut self`: no reference into the old memory is live, so it can go.
        self.mem = mem;
        self.content = table.clone();
        self.clear_dirty();
        self.layout = layout;
        Ok(())
    }
}

/// New memory showing `table`'s pages, in the own layout: one `mmap` per run of consecutive
/// slots, or, when that would take more runs than the mapping budget, a private copy of every
/// page. Returns the memory and its layout.
fn own_memory(table: &PageTable, options: &Options) -> Result<(Reservation, Layout)> {
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
    let layout = Layout::Own {
        mapped,
        private,
        remaps: Remaps::new(runs),
        kept: 0,
    };
    Ok((mem, layout))
}
