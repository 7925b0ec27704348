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

use super::freeze::REMAP_MIN_RUN;
use super::layout::Layout;
use super::Arena;
use crate::cost::{self, Phase};
use crate::error::{Error, Result};
use crate::page_set::coalesced;
use crate::page_table::PageTable;
use crate::snapshot::Snapshot;
use crate::store::SlotId;
use std::ops::Range;
use std::sync::Arc;

impl Arena {
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
        self.find_raw_writes(true);
        self.leave_shared_if_alone()?;
        let target = snapshot.table();
        let walk = cost::enter(Phase::RestoreWalk);
        let mut pages = std::mem::take(&mut self.sorted_dirty);
        let dirty = self.dirty_pages();
        dirty.sorted_into(&mut pages);
        let written = pages.len();
        self.content.diff(target, |p| {
            if !dirty.contains(p) {
                pages.push(p);
            }
        });
        if pages.len() > written {
            pages.sort_unstable();
        }
        // Marked first, so that a failed restore leaves every page it may have touched dirty.
        for &p in &pages {
            self.mark_dirty(p * self.page, self.page)?;
        }
        drop(walk);
        cost::enter(Phase::Copies).then(|| self.restore_pages(&pages, target))?;
        self.forget_restored_writes(&pages);
        self.sorted_dirty = pages;
        let table = cost::enter(Phase::PageTable);
        self.content = target.clone();
        self.clear_dirty();
        drop(table);
        if let Layout::Own { .. } = self.layout {
            // Best effort, as after a snapshot: the restore is complete once its copy is.
            self.working_set.tick();
            let _ = self.shed_private();
        }
        Ok(())
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
    pub(super) fn restore_pages(&mut self, pages: &[usize], target: &PageTable) -> Result<()> {
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

    /// Copies the bytes of `target`'s slots into the (sorted) `pages` of the arena.
    pub(super) fn copy_in(&mut self, pages: &[usize], target: &PageTable) -> Result<()> {
        let base = self.mem.base();
        let page = self.page;
        let runs = coalesced(pages.iter().map(|&p| (p..p + 1, ())), 0, |_, _| true);
        let parts = runs.map(|(run, ())| {
            // SAFETY: the pages are in bounds and mapped writable; `&mut self` guarantees no
            // reference into the arena's memory is live, and the runs are disjoint.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(base.add(run.start * page), run.len() * page)
            };
            (run.start * page, dst)
        });
        target.read_many(parts)
    }

    /// Maps `pages` from consecutive slots starting at `first`, or fresh zero memory.
    pub(super) fn map_run(&mut self, pages: Range<usize>, first: SlotId) -> Result<()> {
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
}
