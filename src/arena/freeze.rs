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

use super::layout::Layout;
use super::Arena;
use crate::cost::{self, Phase};
use crate::error::Result;
use crate::page_set::{coalesced, Coalesce};
use crate::page_table::same_run;
use crate::snapshot::Snapshot;
use crate::store::SlotId;
use crate::sys::Sharing;
use std::ops::Range;
use std::sync::Arc;

/// Frozen runs at least this long are remapped from the store at snapshot time.
pub const REMAP_MIN_RUN: usize = 16;

impl Arena {
    /// Freezes the arena's current contents. Costs `O(pages written since the last snapshot or
    /// restore)`; unwritten pages are shared with the previous snapshot.
    ///
    /// # Errors
    /// [`Error::Os`](crate::Error::Os) if the page store cannot take the written pages (it cannot make a file, its
    /// file system is full, the process is out of memory), or an arena whose proxies are all
    /// dropped cannot map its memory back from the store. On `Err`, no snapshot was taken, and
    /// the arena's bytes and every snapshot are unchanged: pages frozen before the failure stay
    /// frozen (they cost nothing again), the others stay marked as written, for the next
    /// snapshot. Returning private copies to the kernel afterwards (remapping, shedding and
    /// compaction, within [`ArenaBuilder::private_budget`](crate::ArenaBuilder::private_budget) and [`ArenaBuilder::mapping_budget`](crate::ArenaBuilder::mapping_budget))
    /// is best effort and never fails a snapshot: pages it leaves private keep their bytes and
    /// are shed after the next snapshot or restore.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        self.find_raw_writes(false);
        self.leave_shared_if_alone()?;
        let frozen = self.freeze_dirty()?;
        match &self.layout {
            Layout::Own { .. } => {
                // The snapshot is taken once its pages are frozen. Remapping and shedding only
                // return memory and mappings; a failure leaves pages private (their bytes
                // right), to be shed again after the next snapshot or restore.
                let _ = self.remap_long_runs(&frozen);
                self.working_set.tick();
                let _ = self.shed_private();
            }
            Layout::Proxy(_) => self.freeze_read_through()?,
            Layout::Shared(_) => {}
        }
        let _table = cost::enter(Phase::PageTable);
        Ok(Snapshot::new(self.content.clone(), self.options.clone()))
    }

    /// The pages written since the last snapshot or restore, in increasing order (raw-pointer
    /// writes included).
    pub(crate) fn written_pages(&mut self) -> Vec<usize> {
        self.find_raw_writes(false);
        self.dirty_pages().sorted()
    }

    /// Freezes every dirty page; returns the frozen runs (page range, first slot). Pages not
    /// frozen because of an error stay dirty.
    pub(crate) fn freeze_dirty(&mut self) -> Result<Vec<(Range<usize>, SlotId)>> {
        let _phase = cost::enter(Phase::Freeze);
        let mut pages = std::mem::take(&mut self.sorted_dirty);
        self.dirty_pages().sorted_into(&mut pages);
        let (frozen, result) = self.freeze_pages(&pages);
        self.sorted_dirty = pages;
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
        let mut frozen: Vec<(Range<usize>, SlotId)> = Vec::new();
        // Each batch is the runs of `pages[start..end]`, at most a chunk's worth.
        let mut start = 0;
        while start < pages.len() {
            let mut end = start;
            let mut bufs: Vec<&[u8]> = Vec::new();
            let pieces = pages[start..].iter().map(|&p| (p..p + 1, ()));
            for (run, ()) in coalesced(pieces, 0, |(run, ()), _| run.len() < max) {
                if end - start + run.len() > max {
                    break;
                }
                end += run.len();
                bufs.push(&self.as_bytes()[run.start * page..run.end * page]);
            }
            // Runs too short to be remapped may take scattered slots freed earlier.
            let slots = match cost::enter(Phase::Store).then(|| store.freeze(&bufs, REMAP_MIN_RUN))
            {
                Ok(slots) => slots,
                Err(e) => return (frozen, Err(e)),
            };
            let batch = &pages[start..end];
            let mut runs = Coalesce::new(0, same_run);
            for (&p, &slot) in batch.iter().zip(slots.slots()) {
                frozen.extend(runs.push((p..p + 1, slot)));
            }
            frozen.extend(runs.finish());
            let _table = cost::enter(Phase::PageTable);
            self.content.set_frozen(batch.iter().copied(), slots);
            start = end;
        }
        (frozen, Ok(()))
    }

    /// Maps long frozen runs from the store, dropping their private copies. On failure, the runs
    /// mapped before it are recorded; the others stay private (their bytes right).
    pub(super) fn remap_long_runs(&mut self, frozen: &[(Range<usize>, SlotId)]) -> Result<()> {
        let _phase = cost::enter(Phase::Shedding);
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
    pub(super) fn map_slots(&mut self, pages: Range<usize>, first: SlotId) -> Result<()> {
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
}

impl Snapshot {
    /// A new, independent, writable arena that starts from this snapshot and shares its pages
    /// copy-on-write. Snapshots of it can be restored into it, and its snapshots can be made
    /// into arenas in turn, without limit.
    ///
    /// # Errors
    /// [`Error::Os`](crate::Error::Os) if the arena's address space cannot be reserved or mapped
    /// (or, past its mapping budget, its pages copied). On `Err`, nothing is left behind and the
    /// snapshot is unchanged.
    pub fn to_arena(&self) -> Result<Arena> {
        Arena::from_table(self.table(), self.options().clone())
    }
}
