//! Settings and construction of an arena.

use super::layout::MAX_REMAPPED_RUNS;
use super::Arena;
use crate::error::{Error, Result};
use crate::page_table::PageTable;
use crate::snapshot::Options;
use crate::store::Store;
use crate::sys;
use std::path::PathBuf;
use std::sync::Arc;

impl Default for Options {
    /// The settings of an arena made with [`Arena::with_capacity`].
    fn default() -> Self {
        Options {
            private_budget_pages: None,
            mapping_budget: MAX_REMAPPED_RUNS,
            dir: None,
            guard_bytes: 0,
            kernel_write_tracking: true,
        }
    }
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
    pub(super) capacity: usize,
    pub(super) options: Options,
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
    /// before it returns them to the kernel. A page written and restored stays a private copy
    /// within the budget, so writing it again costs no page fault. By default the budget follows
    /// the working set: 1/16 of the bytes of the pages that are not all zero (at least 1 MiB, at
    /// most 256 MiB), or 5/4 of the pages written in recent snapshots and restores if that is
    /// more, those grown by up to 256 MiB while the pages it returns keep being written again. Set it to bound the
    /// memory of copies, or to keep more than that.
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

    /// Follows the arena's memory with `bytes` (rounded up to whole pages) of address space that
    /// is never accessible, in the arena and in every arena made from its snapshots: an access
    /// just past the end faults instead of reaching other memory, so a virtual machine whose
    /// guest memory is the arena can rely on the fault for bounds, as wasmtime does with its
    /// guard regions. Costs address space only.
    ///
    /// ```
    /// let a = cowarena::Arena::builder(1 << 16).guard(1 << 20).build()?;
    /// assert_eq!(a.stats().guard_bytes, 1 << 20);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn guard(mut self, bytes: usize) -> Self {
        self.options.guard_bytes =
            bytes.saturating_add(sys::page_size() - 1) / sys::page_size() * sys::page_size();
        self
    }

    /// Whether the kernel tracks the pages written through raw pointers where it can (the
    /// default; see [`RawWrites`](crate::RawWrites)), or every private page counts as written.
    /// The kernel's tracking costs each first write to a page after a snapshot or restore a
    /// minor fault (about 1 us), which the precise answer repays unless nearly every private
    /// page is rewritten every time.
    pub fn track_raw_writes(mut self, kernel: bool) -> Self {
        self.options.kernel_write_tracking = kernel;
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
