//! How an arena's memory is mapped, and the remapped runs the arenas of the process hold.

use super::shared::{ProxyLayout, SharedLayout};
use super::Arena;
use crate::error::Result;
use crate::page_set::PageSet;
use crate::page_table::PageTable;
use crate::snapshot::{copy_table, map_table, Options};
use crate::sys::{self, Reservation};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Remapped runs after which an arena compacts its mapping (default; see
/// [`ArenaBuilder::mapping_budget`](crate::ArenaBuilder::mapping_budget)).
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
    /// Counts `runs` mapped runs of a new layout, if the process has room for them: every arena
    /// counts, however it was made (`with_capacity`, `to_arena`, a file, a compaction), so that
    /// all of them together stay within [`MAX_PROCESS_REMAPPED_RUNS`].
    pub(super) fn reserve(runs: usize) -> Option<Self> {
        PROCESS_REMAPS
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                (held + runs <= MAX_PROCESS_REMAPPED_RUNS).then_some(held + runs)
            })
            .ok()
            .map(|_| Remaps(runs))
    }

    pub(super) fn add(&mut self) {
        PROCESS_REMAPS.fetch_add(1, Ordering::Relaxed);
        self.0 += 1;
    }

    pub(super) fn runs(&self) -> usize {
        self.0
    }
}

impl Drop for Remaps {
    fn drop(&mut self) {
        PROCESS_REMAPS.fetch_sub(self.0, Ordering::Relaxed);
    }
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

impl Arena {
    /// Runs remapped since the arena's memory was last mapped afresh (none outside the own
    /// layout).
    pub(super) fn remapped_runs(&self) -> usize {
        match &self.layout {
            Layout::Own { remaps, .. } => remaps.runs(),
            _ => 0,
        }
    }

    /// Runs the arena may still remap: within its own mapping budget and the process's.
    pub(super) fn remap_room(&self) -> usize {
        let own = self
            .options
            .mapping_budget
            .saturating_sub(self.remapped_runs());
        own.min(MAX_PROCESS_REMAPPED_RUNS.saturating_sub(PROCESS_REMAPS.load(Ordering::Relaxed)))
    }

    /// Counts one more remapped run, in the arena and in the process.
    pub(super) fn count_remap(&mut self) {
        let Layout::Own { remaps, .. } = &mut self.layout else {
            unreachable!("only an arena in its own layout remaps pages");
        };
        remaps.add();
    }
}

/// New memory showing `table`'s pages, in the own layout: one `mmap` per run of consecutive
/// slots, or, when that would take more runs than the arena's mapping budget or the process has
/// room for ([`MAX_PROCESS_REMAPPED_RUNS`] for all arenas together), a private copy of every
/// page (memory instead of mappings). Returns the memory and its layout.
pub(super) fn own_memory(table: &PageTable, options: &Options) -> Result<(Reservation, Layout)> {
    let pages = table.pages();
    let mem = Reservation::with_guard(pages * sys::page_size(), options.guard_bytes)?;
    let mut runs = 0;
    table.for_each_run(|_, _, _| runs += 1);
    let mut private = PageSet::new(pages);
    let room = if runs <= options.mapping_budget {
        Remaps::reserve(runs)
    } else {
        None
    };
    let (mapped, remaps) = match room {
        Some(remaps) => {
            // SAFETY: `mem` is new: nothing refers into it.
            unsafe { map_table(&mem, table, true)? };
            (table.clone(), remaps)
        }
        None => {
            // SAFETY: `mem` is new: nothing refers into it.
            unsafe { copy_table(&mem, table)? };
            table.for_each_run(|first, len, _| {
                for p in first..first + len {
                    private.insert(p);
                }
            });
            (PageTable::new(pages, Arc::clone(table.store())), Remaps(0))
        }
    };
    let layout = Layout::Own {
        mapped,
        private,
        remaps,
        kept: 0,
    };
    Ok((mem, layout))
}
