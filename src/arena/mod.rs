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
//!
//! # Where each part lives
//!
//! - [`access`]: reading and writing bytes, and marking the pages written;
//! - [`freeze`]: `snapshot`, freezing written pages into the store;
//! - [`restore`]: `restore`, bringing back the pages that differ;
//! - [`budget`]: shedding private copies and remapping, within the memory and mapping budgets;
//! - [`layout`]: how the memory is mapped (own, shared with proxies, proxy) and the process's
//!   count of remapped runs;
//! - [`shared`]: the layouts an arena with proxies and a proxy share a live file in;
//! - [`builder`]: settings and construction.

mod access;
mod budget;
mod builder;
mod freeze;
pub(crate) mod layout;
mod raw;
mod restore;
pub(crate) mod shared;

pub(crate) use builder::checked_capacity;
pub use builder::ArenaBuilder;
pub use freeze::REMAP_MIN_RUN;
pub use layout::MAX_REMAPPED_RUNS;
pub use raw::RawWrites;

use crate::error::Result;
use crate::page_set::PageSet;
use crate::page_table::PageTable;
use crate::snapshot::Options;
use crate::store::{Store, StoreStats};
use crate::sys::{self, Reservation};
use layout::{own_memory, Layout};
use shared::ProxyLayout;
use std::sync::Arc;

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
    /// How writes through raw pointers are found (see [`Arena::as_mut_ptr`]).
    pub raw_writes: RawWrites,
    /// Bytes of inaccessible guard after the arena's last byte (see
    /// [`ArenaBuilder::guard`]).
    pub guard_bytes: usize,
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
    /// A raw pointer was handed out ([`Arena::as_mut_ptr`]): every snapshot and restore asks
    /// the kernel what changed. It stays set for the arena's life.
    raw_armed: bool,
    /// The pages written in recent cycles, which the default private budget keeps private.
    working_set: budget::WorkingSet,
    /// The dirty pages in order, as a snapshot or restore lists them: kept between calls, so
    /// that a search loop's cycle does not allocate this list again.
    sorted_dirty: Vec<usize>,
    pub(crate) options: Options,
}

impl Arena {
    /// Reserves `capacity` bytes (rounded up to whole pages) of zeroed memory. Address space is
    /// reserved now; memory is used only as pages are touched.
    ///
    /// # Errors
    /// As [`ArenaBuilder::build`]: [`Error::InvalidCapacity`](crate::Error::InvalidCapacity), or [`Error::Os`](crate::Error::Os) if the address
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
            options: Options::default(),
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
            raw_armed: false,
            working_set: budget::WorkingSet::new(pages),
            sorted_dirty: Vec::new(),
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
            raw_armed: false,
            working_set: budget::WorkingSet::new(pages),
            sorted_dirty: Vec::new(),
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
            raw_writes: self.raw_writes(),
            guard_bytes: self.mem.guard_len(),
            store: self.store().stats(),
        }
    }
}
