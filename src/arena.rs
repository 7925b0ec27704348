//! The live arena: a fixed range of address space whose pages are mapped copy-on-write from the
//! page store, plus the bookkeeping that makes snapshot and restore cost what changed.
//!
//! # Page states
//!
//! Every page of an arena in its usual layout ([`Layout::Own`]) is in one of three states:
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

use crate::error::{Error, Result};
use crate::page_set::{coalesce, runs, PageSet};
use crate::page_table::{same_run, PageTable};
use crate::snapshot::{copy_table, map_table, Snapshot};
use crate::store::{SlotId, Store, StoreStats};
use crate::sys::{self, BackingFile, Reservation, Sharing};
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
struct Remaps(usize);

impl Remaps {
    fn new(runs: usize) -> Self {
        PROCESS_REMAPS.fetch_add(runs, Ordering::Relaxed);
        Remaps(runs)
    }

    fn add(&mut self) {
        PROCESS_REMAPS.fetch_add(1, Ordering::Relaxed);
        self.0 += 1;
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

fn checked_capacity(requested: usize, page: usize) -> Result<usize> {
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

/// An arena's live file when it has proxies: its memory is a shared mapping of this file, which
/// the proxies map privately.
#[derive(Debug)]
pub(crate) struct LiveFile {
    file: BackingFile,
}

#[derive(Debug)]
enum Layout {
    /// The usual layout (see the module docs).
    Own {
        mapped: PageTable,
        private: PageSet,
        remaps: Remaps,
        /// Private pages the last shed left (see [`Arena::shed_private`]).
        kept: usize,
    },
    /// The arena has (or had) proxies; its memory is a shared mapping of `live`, so writes go to
    /// the file and proxies see them.
    Shared { live: Arc<LiveFile> },
    /// A proxy: a private mapping of its source's live file. Pages in `private` were written by
    /// the proxy; the others read through to the source.
    Proxy {
        source: Arc<LiveFile>,
        private: PageSet,
    },
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
    mem: Reservation,
    page: usize,
    /// `page == 1 << page_shift`.
    page_shift: u32,
    /// For every page that is not dirty, a frozen slot with the same bytes (see module docs;
    /// for a proxy, only its private pages).
    content: PageTable,
    dirty: PageSet,
    layout: Layout,
    /// A raw pointer was handed out; the kernel must be asked what changed.
    untracked: bool,
    remapped_runs: usize,
    options: Options,
}

impl Arena {
    /// Reserves `capacity` bytes (rounded up to whole pages) of zeroed memory. Address space is
    /// reserved now; memory is used only as pages are touched.
    ///
    /// ```
    /// let a = cowarena::Arena::with_capacity(1 << 30)?;
    /// assert_eq!(a.capacity(), 1 << 30);
    /// assert!(a.as_bytes().iter().take(4096).all(|&b| b == 0));
    /// # Ok::<(), cowarena::Error>(())
    /// ```
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
        let empty = PageTable::new(pages, Arc::clone(table.store()));
        let mut arena = Arena {
            mem: Reservation::new(pages * page)?,
            page,
            page_shift: page.trailing_zeros(),
            content: empty.clone(),
            dirty: PageSet::new(pages),
            layout: Layout::Own {
                mapped: empty,
                private: PageSet::new(pages),
                remaps: Remaps::new(0),
                kept: 0,
            },
            untracked: false,
            remapped_runs: 0,
            options,
        };
        arena.rebuild_from(table)?;
        Ok(arena)
    }

    /// Capacity in bytes, a multiple of [`page_size`](crate::page_size).
    pub fn capacity(&self) -> usize {
        self.mem.len()
    }

    fn pages(&self) -> usize {
        self.mem.len() / self.page
    }

    pub(crate) fn store(&self) -> &Arc<Store> {
        self.content.store()
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

    /// Records that `[offset, offset + len)` (in bounds) is about to be written.
    #[inline(always)]
    pub(crate) fn mark_dirty(&mut self, offset: usize, len: usize) {
        if len == 0 {
            return;
        }
        let first = offset >> self.page_shift;
        let last = (offset + len - 1) >> self.page_shift;
        if first == last && self.dirty.contains(first) {
            return;
        }
        self.mark_dirty_pages(first, last);
    }

    /// The rest of `mark_dirty`, out of line so that the check above inlines into the typed
    /// fast paths: this runs once per page between snapshots, next to a copy-on-write fault.
    #[cold]
    #[inline(never)]
    fn mark_dirty_pages(&mut self, first: usize, last: usize) {
        for p in first..=last {
            if self.dirty.insert(p) {
                match &mut self.layout {
                    Layout::Own { private, .. } | Layout::Proxy { private, .. } => {
                        private.insert(p);
                    }
                    Layout::Shared { .. } => {}
                }
            }
        }
    }

    /// Copies `bytes` into the arena at `offset`.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(4096)?;
    /// a.write(10, &[1, 2, 3])?;
    /// assert!(matches!(a.write(4095, &[1, 2]), Err(cowarena::Error::OutOfBounds { .. })));
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<()> {
        self.bytes_mut(offset..offset.saturating_add(bytes.len()))?
            .copy_from_slice(bytes);
        Ok(())
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        buf.copy_from_slice(&self.as_bytes()[offset..offset + buf.len()]);
        Ok(())
    }

    /// The whole arena as bytes.
    ///
    /// For a proxy, the pages it has not written show its source's current bytes, which change
    /// when the source is written: do not hold this slice across writes to the source (see
    /// [`Arena::proxy`]).
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: the whole reservation is mapped readable for as long as `self` lives (every
        // remap replaces pages with readable ones); writes need `&mut self`, so no `&mut` alias
        // exists while this borrow lives.
        unsafe { std::slice::from_raw_parts(self.mem.base(), self.capacity()) }
    }

    /// A mutable view of `range`, whose pages are marked as written.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(8192)?;
    /// a.bytes_mut(4000..4200)?.fill(9);
    /// assert_eq!(a.as_bytes()[4100], 9);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
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
        self.mark_dirty(range.start, len);
        // SAFETY: in bounds (checked), mapped writable for the life of `self`, and `&mut self`
        // guarantees no other reference into the arena's memory is live.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.mem.base().add(range.start), len) })
    }

    /// `log2` of the page size.
    #[inline(always)]
    pub(crate) fn page_shift(&self) -> u32 {
        self.page_shift
    }

    /// Page `p` for writing, marked as written, or `None` past the arena's end: for the typed
    /// allocator's fast paths, which then fall back to their slow path (and its error), so that
    /// they build no `Result` and inline the whole write.
    #[inline(always)]
    pub(crate) fn page_mut(&mut self, p: usize) -> Option<&mut [u8]> {
        if p >= self.capacity() >> self.page_shift {
            return None;
        }
        if !self.dirty.contains(p) {
            self.mark_dirty_pages(p, p);
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
    /// that, nor while a reference from [`as_bytes`](Arena::as_bytes) is live.
    pub unsafe fn as_mut_ptr(&mut self) -> *mut u8 {
        self.untracked = true;
        self.mem.base()
    }

    /// Freezes the arena's current contents. Costs `O(pages written since the last snapshot or
    /// restore)`; unwritten pages are shared with the previous snapshot.
    ///
    /// On error (the page store's file system is full, say) the arena and every snapshot keep
    /// their contents; pages not frozen stay marked as written.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        self.find_untracked_writes();
        self.leave_shared_if_alone()?;
        let frozen = self.freeze_dirty()?;
        match &self.layout {
            Layout::Own { .. } => {
                self.remap_long_runs(&frozen)?;
                self.shed_private()?;
            }
            Layout::Proxy { .. } => self.freeze_read_through()?,
            Layout::Shared { .. } => {}
        }
        Ok(Snapshot::new(self.content.clone(), self.options.clone()))
    }

    /// Brings the arena back to `snapshot`: its bytes, and so every value and the allocator's
    /// state stored in it. Any live snapshot of this arena (or of an arena sharing its store)
    /// can be restored, in any order, any number of times. Costs `O(pages that differ)`.
    ///
    /// Errors: [`Error::CapacityMismatch`] and [`Error::ForeignSnapshot`] leave the arena
    /// untouched. If copying fails part-way (the system is out of memory), some pages already
    /// hold the snapshot's bytes: the arena stays consistent (its next snapshot freezes what it
    /// holds) and restoring again completes the job.
    ///
    /// A proxy that is restored stops reading through to its source: it becomes an ordinary
    /// arena holding the snapshot's contents.
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
        self.find_untracked_writes();
        if let Layout::Proxy { .. } = self.layout {
            return self.rebuild_from(snapshot.table());
        }
        self.leave_shared_if_alone()?;
        let target = snapshot.table();
        let mut pages = self.dirty.sorted();
        let dirty = &self.dirty;
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
            self.mark_dirty(p * self.page, self.page);
        }
        self.restore_pages(&pages, target)?;
        self.content = target.clone();
        self.dirty.clear();
        self.shed_private()
    }

    /// A copy-on-write proxy of this arena: it reads through to this arena's current bytes until
    /// it writes a page; its writes are its own.
    ///
    /// The unit is the page, not the object: once the proxy writes a page it no longer sees this
    /// arena's later writes to that page (other objects on the page included). What the proxy
    /// sees, for the pages it has not written:
    /// - when this arena is written or [restored](Arena::restore): the new bytes;
    /// - when this arena takes a snapshot: nothing changes;
    /// - when this arena is dropped: the bytes it had last, for as long as the proxy lives.
    ///
    /// A snapshot of the proxy freezes what it sees at that moment, which costs a copy of every
    /// page its source holds data in (the proxy cannot know which of them its source changed).
    /// Restoring a snapshot into the proxy detaches it: it becomes an ordinary arena.
    ///
    /// While an arena has proxies its memory is a shared file, so its snapshots copy written
    /// pages instead of remapping them and its memory is counted twice (live file and store);
    /// it returns to its usual layout at the first snapshot or restore after the last proxy is
    /// dropped. Slices from the proxy's [`as_bytes`](Arena::as_bytes) show the source's bytes:
    /// hold them only while the source is not being written, as with any shared memory.
    ///
    /// A proxy of a proxy is [`Error::Unsupported`]; take a snapshot's
    /// [`to_arena`](Snapshot::to_arena) instead.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(4096 * 2)?;
    /// a.write(0, &[1])?;
    /// let mut b = a.proxy()?;
    /// assert_eq!(b.as_bytes()[0], 1);
    /// a.write(0, &[42])?;
    /// assert_eq!(b.as_bytes()[0], 42);
    /// b.write(0, &[7])?;
    /// assert_eq!((a.as_bytes()[0], b.as_bytes()[0]), (42, 7));
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn proxy(&mut self) -> Result<Arena> {
        if let Layout::Proxy { .. } = self.layout {
            return Err(Error::Unsupported(
                "a proxy of a proxy; take to_arena() of the proxy's snapshot instead",
            ));
        }
        self.find_untracked_writes();
        let live = match &self.layout {
            Layout::Shared { live } => Arc::clone(live),
            _ => self.enter_shared()?,
        };
        let mem = Reservation::new(self.capacity())?;
        let file = &live.file;
        // SAFETY: the reservation is new; nothing refers into it.
        unsafe { mem.map_file(0, self.capacity(), file, 0, Sharing::Private, true)? };
        let pages = self.pages();
        Ok(Arena {
            page: self.page,
            page_shift: self.page_shift,
            content: PageTable::new(pages, Arc::clone(self.store())),
            dirty: PageSet::new(pages),
            layout: Layout::Proxy {
                source: live,
                private: PageSet::new(pages),
            },
            untracked: false,
            remapped_runs: 0,
            options: self.options.clone(),
            mem,
        })
    }

    /// Counters describing the arena and its store.
    pub fn stats(&self) -> ArenaStats {
        let private_pages = match &self.layout {
            Layout::Own { private, .. } | Layout::Proxy { private, .. } => private.len(),
            Layout::Shared { .. } => 0,
        };
        ArenaStats {
            capacity: self.capacity(),
            dirty_pages: self.dirty.len(),
            private_pages,
            remapped_runs: self.remapped_runs,
            is_proxy: matches!(self.layout, Layout::Proxy { .. }),
            has_proxies: matches!(self.layout, Layout::Shared { .. }),
            store: self.store().stats(),
        }
    }

    /// The pages written since the last snapshot or restore, in increasing order (raw-pointer
    /// writes included).
    pub(crate) fn written_pages(&mut self) -> Vec<usize> {
        self.find_untracked_writes();
        self.dirty.sorted()
    }

    /// Marks the pages written through a raw pointer as dirty.
    fn find_untracked_writes(&mut self) {
        if !std::mem::take(&mut self.untracked) {
            return;
        }
        let pages = self.pages();
        let found = match &self.layout {
            Layout::Own { .. } | Layout::Proxy { .. } => {
                self.mem.private_page_runs(0, self.capacity())
            }
            Layout::Shared { .. } => None,
        };
        let private_before: Vec<usize> = match &self.layout {
            Layout::Own { private, .. } | Layout::Proxy { private, .. } => private.iter().collect(),
            Layout::Shared { .. } => Vec::new(),
        };
        match found {
            Some(runs) => {
                for r in runs {
                    self.mark_dirty(r.start * self.page, r.len() * self.page);
                }
                // A page that was private before can have changed without a new fault.
                for p in private_before {
                    self.mark_dirty(p * self.page, self.page);
                }
            }
            None => self.mark_dirty(0, pages * self.page),
        }
    }

    /// Freezes every dirty page; returns the frozen runs (page range, first slot). Pages not
    /// frozen because of an error stay dirty.
    fn freeze_dirty(&mut self) -> Result<Vec<(Range<usize>, SlotId)>> {
        let (frozen, result) = self.freeze_pages(&self.dirty.sorted());
        let done_pages: usize = frozen.iter().map(|(r, _)| r.len()).sum();
        if done_pages == self.dirty.len() {
            self.dirty.clear();
        } else {
            let done = &frozen;
            self.dirty
                .retain(|p| !done.iter().any(|(r, _)| r.contains(&p)));
        }
        result.map(|()| frozen)
    }

    /// Copies the (sorted) `pages`' current bytes into new store slots and points `content` at
    /// them. Up to a chunk's worth of pages, scattered or not, go to the store in one `pwritev`.
    /// Returns the runs frozen (page range, first slot), and the error that stopped it, if any.
    fn freeze_pages(&mut self, pages: &[usize]) -> (Vec<(Range<usize>, SlotId)>, Result<()>) {
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

    /// Maps long frozen runs from the store, dropping their private copies.
    fn remap_long_runs(&mut self, frozen: &[(Range<usize>, SlotId)]) -> Result<()> {
        let long: Vec<&(Range<usize>, SlotId)> = frozen
            .iter()
            .filter(|(r, _)| r.len() >= REMAP_MIN_RUN)
            .collect();
        if long.is_empty() {
            return Ok(());
        }
        for (run, slot) in &long {
            self.map_slots(run.clone(), *slot)?;
        }
        let remapped: Vec<Range<usize>> = long.into_iter().map(|(r, _)| r.clone()).collect();
        self.forget_private(&remapped);
        Ok(())
    }

    /// Maps `pages` privately from consecutive slots starting at `first` and records it.
    fn map_slots(&mut self, pages: Range<usize>, first: SlotId) -> Result<()> {
        let (file, offset) = self.store().locate(first);
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
        if let Layout::Own { mapped, .. } = &mut self.layout {
            for (i, p) in pages.enumerate() {
                mapped.set(p, first.offset(i));
            }
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
    /// budget has room; only the rest is copied.
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
        for (run, first) in target.slot_runs(rest) {
            if run.len() < REMAP_MIN_RUN || room == 0 {
                copy.extend(run);
                continue;
            }
            room -= 1;
            self.map_run(run.clone(), first)?;
            remapped.push(run);
        }
        self.forget_private(&remapped);
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
    /// being private.
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
        if let Layout::Own { private, .. } = &mut self.layout {
            private.retain(|p| pages.binary_search(&p).is_err());
        }
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
            return Ok(());
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
    /// as the mapping budget has room; the pages remapped stop being private.
    fn remap_to_content(&mut self, pages: &[usize]) -> Result<()> {
        let mut runs = self.content.slot_runs(pages.iter().copied());
        runs.truncate(self.remap_room());
        for (run, slot) in &runs {
            self.map_run(run.clone(), *slot)?;
        }
        let remapped: Vec<Range<usize>> = runs.into_iter().map(|(r, _)| r).collect();
        self.forget_private(&remapped);
        Ok(())
    }

    /// Runs the arena may still remap: within its own mapping budget and the process's.
    fn remap_room(&self) -> usize {
        let own = self
            .options
            .mapping_budget
            .saturating_sub(self.remapped_runs);
        own.min(MAX_PROCESS_REMAPPED_RUNS.saturating_sub(PROCESS_REMAPS.load(Ordering::Relaxed)))
    }

    /// Counts one more remapped run, in the arena and in the process.
    fn count_remap(&mut self) {
        self.remapped_runs += 1;
        if let Layout::Own { remaps, .. } = &mut self.layout {
            remaps.add();
        }
    }

    /// Removes the pages of the (sorted, disjoint) `runs` from the private set: they were
    /// mapped afresh.
    fn forget_private(&mut self, runs: &[Range<usize>]) {
        if let Layout::Own { private, .. } = &mut self.layout {
            private.retain(|p| {
                let i = runs.partition_point(|r| r.end <= p);
                runs.get(i).is_none_or(|r| !r.contains(&p))
            });
        }
    }

    /// Maps `pages` from consecutive slots starting at `first`, or fresh zero memory.
    fn map_run(&mut self, pages: Range<usize>, first: SlotId) -> Result<()> {
        if first.is_zero() {
            // SAFETY: `&mut self`: no live references into the arena.
            unsafe {
                self.mem
                    .map_zero(pages.start * self.page, pages.len() * self.page, true)?
            };
            self.count_remap();
            if let Layout::Own { mapped, .. } = &mut self.layout {
                let updates: Vec<(usize, SlotId)> =
                    pages.clone().map(|p| (p, SlotId::ZERO)).collect();
                mapped.set_many(&updates);
            }
        } else {
            self.map_slots(pages, first)?;
        }
        Ok(())
    }

    /// Freezes the arena's whole contents into contiguous slots and maps them again, so the
    /// arena is back to one mapping per store chunk plus one per long zero gap.
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
        let (pieces, result) = self.freeze_pages(&pages);
        result?;
        // SAFETY: `&mut self`: no live references into the arena; the new mappings below restore
        // every non-zero page's bytes from `content`.
        unsafe { self.mem.map_zero(0, self.capacity(), true)? };
        self.layout = Layout::Own {
            mapped: PageTable::new(self.pages(), Arc::clone(self.store())),
            private: PageSet::new(self.pages()),
            remaps: Remaps::new(0),
            kept: 0,
        };
        self.remapped_runs = 0;
        for (pages, slot) in pieces {
            self.map_slots(pages, slot)?;
        }
        Ok(())
    }

    /// Maps the whole arena afresh from `table` (a new arena, a proxy detaching, or a shared
    /// arena whose proxies are gone): one `mmap` per run of consecutive slots, or, when that
    /// would take more runs than the mapping budget, a private copy of every page.
    fn rebuild_from(&mut self, table: &PageTable) -> Result<()> {
        let pages = self.pages();
        let mut runs = 0;
        table.for_each_run(|_, _, _| runs += 1);
        let mut private = PageSet::new(pages);
        let mapped = if runs <= self.options.mapping_budget {
            // SAFETY: `&mut self`: no live references into the arena.
            unsafe { map_table(&self.mem, table, true)? };
            table.clone()
        } else {
            // SAFETY: `&mut self`: no live references into the arena.
            unsafe { copy_table(&self.mem, table)? };
            table.for_each_run(|first, len, _| {
                for p in first..first + len {
                    private.insert(p);
                }
            });
            runs = 0;
            PageTable::new(pages, Arc::clone(table.store()))
        };
        self.content = table.clone();
        self.dirty.clear();
        self.layout = Layout::Own {
            mapped,
            private,
            remaps: Remaps::new(runs),
            kept: 0,
        };
        self.remapped_runs = runs;
        Ok(())
    }

    /// Moves the arena's memory into a shared live file that proxies can map.
    fn enter_shared(&mut self) -> Result<Arc<LiveFile>> {
        let fd = sys::create_backing_file(self.options.dir.as_deref())?;
        let file = BackingFile::new(fd);
        file.set_len(self.capacity())?;
        if self.options.dir.is_some() {
            // A full file system must fail here, not as SIGBUS on a later page fault.
            file.allocate(0, self.capacity())?;
        }
        let mut data: Vec<usize> = Vec::new();
        self.content
            .for_each_run(|first, len, _| data.extend(first..first + len));
        if let Layout::Own { private, .. } = &self.layout {
            data.extend(private.iter());
        }
        data.sort_unstable();
        data.dedup();
        for run in runs(&data, usize::MAX) {
            let bytes = &self.as_bytes()[run.start * self.page..run.end * self.page];
            file.write_all_at(bytes, run.start * self.page)?;
        }
        // SAFETY: `&mut self`: no live references into the arena; the file holds every page's
        // current bytes.
        unsafe {
            self.mem
                .map_file(0, self.capacity(), &file, 0, Sharing::Shared, true)?
        };
        let live = Arc::new(LiveFile { file });
        self.layout = Layout::Shared {
            live: Arc::clone(&live),
        };
        self.remapped_runs = 0;
        Ok(live)
    }

    /// Returns a shared arena whose proxies are all gone to its usual layout. Dirty pages must be
    /// frozen first, as their bytes live only in the shared file.
    fn leave_shared_if_alone(&mut self) -> Result<()> {
        let Layout::Shared { live } = &self.layout else {
            return Ok(());
        };
        if Arc::strong_count(live) > 1 {
            return Ok(());
        }
        self.freeze_dirty()?;
        let table = self.content.clone();
        self.rebuild_from(&table)
    }

    /// For a proxy: freezes every page it reads through, as its source may have changed it.
    fn freeze_read_through(&mut self) -> Result<()> {
        let Layout::Proxy { source, private } = &self.layout else {
            return Ok(());
        };
        let data = sys::data_ranges(source.file.owned_fd(), self.capacity())?;
        let page = self.page;
        let mut pages: Vec<usize> = Vec::new();
        for r in data {
            let first = r.start / page;
            let last = r.end.div_ceil(page).min(self.pages());
            pages.extend((first..last).filter(|&p| !private.contains(p)));
        }
        let zero: Vec<usize> = (0..self.pages())
            .filter(|&p| !private.contains(p) && pages.binary_search(&p).is_err())
            .collect();
        let (_, result) = self.freeze_pages(&pages);
        result?;
        let updates: Vec<(usize, SlotId)> = zero.into_iter().map(|p| (p, SlotId::ZERO)).collect();
        self.content.set_many(&updates);
        Ok(())
    }
}
