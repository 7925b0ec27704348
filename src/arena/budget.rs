//! Private pages duplicate frozen ones. When more than the private budget (see
//! [`ArenaBuilder::private_budget`]) are private after a snapshot or restore, they are shed:
//! pages whose mapping already shows their content are dropped with `MADV_DONTNEED`, through one
//! `process_madvise` per 1024 spans where the kernel allows it (Linux 6.13+): 0.6 us per
//! scattered page here, against 1.9 us for an `madvise` each. A shed is a pause every few hundred
//! cycles (10 ms for 16384 pages at 1 GiB), so it shows in the mean cycle, not the median: cycling
//! 64 random pages of a 1 GiB arena, the mean went from 369 us to 291 us with it (median 264 us to
//! 247 us), against about 450 us for the kernel floor. If that is not enough, the others are
//! remapped from the store (while the kernel tracks raw writes, only runs of at least
//! [`REMAP_MIN_RUN`] pages: see [`Arena::remap_to_content`]), as far as the mapping budgets
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
//! The default private budget starts as 1/16 of the arena's data pages (those that are not all
//! zero), at least 1 MiB and at most 256 MiB: relative to the data, not the capacity, so that a
//! huge reservation holding little costs little; 1/16 bounds the copies at about 6% of the data
//! for a program that moves forward through its heap. It then follows the working set (see
//! [`WorkingSet`]): it is at least 5/4 of the pages written in the last 64–128 cycles plus an
//! allowance, up to 256 MiB, that grows when the faults show that shed pages keep being written
//! again and holds the pages the program returns to. A 64 MiB table written at a few random entries per decision ends up
//! private whole (3.2 us per decision at d = 4, against 10–11 us with 1 MiB of copies); a state
//! that writes fresh pages keeps its share.
//!
//! Shedding, remapping and compaction only give memory and mappings back, so they are best
//! effort: when one of their system calls fails (out of memory or mappings), the snapshot or
//! restore that ran them still succeeds; the pages left private keep their bytes (each step
//! records only what it completed) and are shed after the next snapshot or restore
//! (`tests/anomaly.rs` fails each of these calls in turn and checks it).

use super::freeze::REMAP_MIN_RUN;
use super::layout::{own_memory, Layout};
use super::raw::RawWrites;
use super::Arena;
use crate::cost::{self, Phase};
use crate::error::Result;
use crate::page_set::{coalesce, PageSet};
use crate::page_table::PageTable;
use std::ops::Range;

/// Private pages closer than this are dropped with one `madvise` call.
const DISCARD_GAP: usize = 16;

/// The default private budget is this share of the arena's data pages (its pages that are not
/// all zero), within [`MIN_PRIVATE_BUDGET`] and [`MAX_PRIVATE_BUDGET`] (see the module docs).
const PRIVATE_BUDGET_SHARE: usize = 16;
/// Bytes of private copies every arena may keep, however little data it holds.
const MIN_PRIVATE_BUDGET: usize = 1 << 20;
/// Bytes of private copies no arena keeps by default, however much data it holds.
const MAX_PRIVATE_BUDGET: usize = 256 << 20;

/// Snapshots and restores per generation of the working set: the pages written in the last 64
/// to 128 cycles count as the arena's working set.
const WORKING_SET_CYCLES: u32 = 64;

/// Copy-on-write faults after which the budget judges whether shedding paid (see
/// [`WorkingSet::judge_shedding`]).
const FAULTS_JUDGED: usize = 256;

/// The pages the arena wrote recently: shedding keeps them private, and the default private
/// budget grows to hold them, so that the budget follows the working set. A page written again
/// every few cycles that is shed pays a copy-on-write fault (about 5 us here) at its next write
/// and, if it was remapped, an `mmap` (7 us) and a split mapping, where keeping it private costs
/// 4 KiB. Pages written rarely (a state moving forward through a large heap) are still shed, so
/// that many live snapshots stay near the ideal memory. A search program that rewrites a 64 MiB
/// table ran 2–4x slower with the table's pages shed each cycle than with a budget that held them.
///
/// The generations see a page written at most every 64–128 cycles. A working set rewritten less
/// often but still over and over (a table written at a few random entries per decision, each of
/// its pages every few thousand cycles) is caught by judging shedding itself: every shed page is
/// remembered, and when half of the copy-on-write faults since the last judgement were on pages
/// shedding had given back, the program keeps returning to what is shed, each return a fault
/// spent for nothing; the allowance then grows to hold the private pages there are (up to
/// [`MAX_PRIVATE_BUDGET`]; the budget is at least 5/4 of the working set and the allowance). A program moving forward faults on pages it never
/// had, and keeps its budget. Measured: cycling 64 random pages of a 16 MiB arena, 96 to
/// 23–28 us per cycle once settled; a search loop over a 16 MiB working set at d = 64, writes
/// included, about 180 us to 33 us per decision.
#[derive(Debug)]
pub(crate) struct WorkingSet {
    current: PageSet,
    previous: PageSet,
    cycles: u32,
    /// Every page shedding ever dropped or remapped.
    shed: PageSet,
    /// Since the last judgement: pages that became private (a copy-on-write fault each), and
    /// how many of them shedding had given back.
    faults: usize,
    returns: usize,
    /// Private pages the budget allows beyond its share, grown while shedding is undone.
    extra: usize,
}

impl WorkingSet {
    pub(crate) fn new(pages: usize) -> Self {
        WorkingSet {
            current: PageSet::new(pages),
            previous: PageSet::new(pages),
            cycles: 0,
            shed: PageSet::new(pages),
            faults: 0,
            returns: 0,
            extra: 0,
        }
    }

    /// Page `p` was written (once per cycle at most: the caller notes newly dirty pages);
    /// `copied` says whether it became private by this write.
    #[inline]
    pub(crate) fn note(&mut self, p: usize, copied: bool) {
        self.current.insert(p);
        if copied {
            self.faults += 1;
            self.returns += usize::from(self.shed.contains(p));
        }
    }

    /// Shedding dropped or remapped `pages`.
    fn shed(&mut self, pages: impl IntoIterator<Item = usize>) {
        for p in pages {
            self.shed.insert(p);
        }
    }

    /// Judges the faults since the last judgement, once there are enough of them: when half of
    /// them were on pages shedding gave back, shedding costs more than it saves, so the
    /// allowance grows to hold the `private` pages there are (at most `cap`); when few were,
    /// it halves.
    fn judge_shedding(&mut self, private: usize, cap: usize) {
        if self.faults < FAULTS_JUDGED {
            return;
        }
        if self.returns * 2 >= self.faults {
            self.extra = (self.extra * 2).max(private).min(cap);
        } else if self.returns * 8 < self.faults {
            self.extra /= 2;
        }
        self.faults = 0;
        self.returns = 0;
    }

    /// A snapshot or restore ended a cycle.
    pub(super) fn tick(&mut self) {
        self.cycles += 1;
        if self.cycles >= WORKING_SET_CYCLES {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
            self.cycles = 0;
        }
    }

    /// Pages the budget holds for the working set: those written in the current or the previous
    /// generation (an upper bound: a page written in both counts twice), and the extra allowance.
    pub(super) fn pages(&self) -> usize {
        self.current.len() + self.previous.len() + self.extra
    }

    /// Whether page `p` was written in the current or the previous generation.
    pub(super) fn contains(&self, p: usize) -> bool {
        self.current.contains(p) || self.previous.contains(p)
    }
}

impl Arena {
    /// The most private pages the arena keeps (see [`ArenaBuilder::private_budget`]).
    pub(super) fn private_budget(&self) -> usize {
        let default = || {
            let (min, max) = (
                MIN_PRIVATE_BUDGET / self.page,
                MAX_PRIVATE_BUDGET / self.page,
            );
            let share = (self.content.data_pages() / PRIVATE_BUDGET_SHARE).clamp(min, max);
            share.max(self.working_set.pages() / 4 * 5)
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
    pub(super) fn discard_pages(&mut self, pages: &[usize], keep: &[usize]) -> Result<()> {
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
    pub(super) fn shed_private(&mut self) -> Result<()> {
        let _phase = cost::enter(Phase::Shedding);
        let Layout::Own {
            mapped,
            private,
            kept,
            ..
        } = &self.layout
        else {
            unreachable!("only an arena in its own layout holds private copies to shed");
        };
        let (private_pages, kept) = (private.len(), *kept);
        let budget = self.private_budget();
        if private_pages <= budget.max(kept + budget / 2) {
            return Ok(());
        }
        // Whether the last sheds paid decides whether these pages are shed at all.
        let cap = MAX_PRIVATE_BUDGET / self.page;
        self.working_set.judge_shedding(private_pages, cap);
        let budget = self.private_budget();
        if private_pages <= budget {
            return Ok(());
        }
        let dirty = &self.dirty;
        let content = &self.content;
        let hot = &self.working_set;
        // Pages to keep: dirty ones, recently written ones (shed, they would be copied again at
        // their next write), and synced ones whose mapping shows other bytes.
        let cold = |p: usize| !dirty.contains(p) && !hot.contains(p);
        let (discard, keep): (Vec<usize>, Vec<usize>) = private
            .sorted()
            .into_iter()
            .partition(|&p| cold(p) && mapped.get(p) == content.get(p));
        let remap: Vec<usize> = keep.iter().copied().filter(|&p| cold(p)).collect();
        let left = keep.len();
        self.discard_pages(&discard, &keep)?;
        self.working_set.shed(discard.iter().copied());
        if left > budget {
            // Far over budget: one fresh image costs less memory than these private copies
            // (but moves the memory, which a kept raw pointer forbids).
            let far_over = left > (4 * budget).max(self.pages() / 2);
            if far_over && self.dirty.is_empty() && !self.keeps_its_address() {
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
    ///
    /// While the kernel tracks raw writes, only runs of at least [`REMAP_MIN_RUN`] pages are
    /// remapped: each mapping costs every later `PAGEMAP_SCAN` about 0.25 us (1,000 single
    /// pages mapped apart in a 64 MiB range: 300 us per scan instead of 25, measured with a C
    /// program doing the same calls), which a page remapped alone never pays back; those pages
    /// stay private, at most one copy per page written. A 1 GiB arena frozen after every 64
    /// scattered raw writes, its contents drifting, reached 16,384 remapped runs and 27,000
    /// mappings within 500 snapshots and then took 11 ms per snapshot.
    pub(super) fn remap_to_content(&mut self, pages: &[usize]) -> Result<()> {
        let min_run = if self.raw_writes() == RawWrites::Kernel {
            REMAP_MIN_RUN
        } else {
            1
        };
        let mut runs = self.content.slot_runs(pages.iter().copied());
        runs.retain(|(run, _)| run.len() >= min_run);
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
        self.working_set.shed(remapped.into_iter().flatten());
        result
    }

    /// The private-page set of an arena in its own layout.
    pub(super) fn own_private(&mut self) -> &mut PageSet {
        let Layout::Own { private, .. } = &mut self.layout else {
            unreachable!("only an arena in its own layout tracks private copies this way");
        };
        private
    }

    /// Removes the pages of the (sorted, disjoint) `runs` from the private set: they were
    /// mapped afresh.
    pub(super) fn forget_private(&mut self, runs: &[Range<usize>]) {
        self.own_private().retain(|p| {
            let i = runs.partition_point(|r| r.end <= p);
            runs.get(i).is_none_or(|r| !r.contains(&p))
        });
    }

    /// Freezes the arena's whole contents into contiguous slots and maps them again, so the
    /// arena is back to one mapping per store chunk plus one per long zero gap.
    ///
    /// The new mapping is built in a new reservation and swapped in only when complete, so a
    /// failure (out of mappings, say) leaves the arena's memory as it was.
    pub(super) fn compact(&mut self) -> Result<()> {
        debug_assert!(self.dirty.is_empty());
        let extents = self.content.extents();
        // Fill the smallest zero gaps with frozen zero pages until few mappings remain.
        let limit = (self.options.mapping_budget / 8).max(1);
        let max_fill = if extents.len() > limit {
            let mut gaps: Vec<usize> = extents.windows(2).map(|w| w[1].start - w[0].end).collect();
            gaps.sort_unstable();
            gaps[extents.len() - limit - 1]
        } else {
            0
        };
        let extents = coalesce(extents.into_iter().map(|r| (r, ())), max_fill, |_, _| true);
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
        if self.raw_writes() != RawWrites::NotArmed && self.options.kernel_write_tracking {
            // The new memory is tracked too (where the kernel can), or its private pages count.
            self.track_raw_writes();
        }
        Ok(())
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
