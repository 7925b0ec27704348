//! The layouts of an arena with proxies and of a proxy: both map one live file, the source
//! shared and writable, each proxy privately (see the [`proxy`](crate::proxy) module for the
//! picture and what a proxy sees). They live here, below both the arena and the proxy, because
//! the arena's snapshot, restore and page marking work in them too.

use super::layout::Layout;
use super::Arena;
use crate::error::{Error, Result};
use crate::page_set::{runs, PageSet};
use crate::page_table::PageTable;
use crate::store::SlotId;
use crate::sys::process::{self, SharedMemoryGuard};
use crate::sys::{self, BackingFile, Reservation, Sharing};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The file behind a source arena and its proxies.
#[derive(Debug)]
pub(crate) struct LiveFile {
    file: BackingFile,
    /// The process that made the file: the only one whose writes to the source may reach it.
    owner: process::Pid,
    /// Cleared when the source leaves the shared layout or is dropped: from then on nothing
    /// writes the file, and proxies need no source to read it.
    source_alive: AtomicBool,
}

impl LiveFile {
    /// The runs of the first `pages` pages that hold data in the file (all others are zero).
    pub(super) fn data_pages(&self, page: usize, pages: usize) -> Result<Vec<Range<usize>>> {
        let data = sys::data_ranges(self.file.owned_fd(), pages * page)?;
        Ok(data
            .into_iter()
            .map(|r| r.start / page..r.end.div_ceil(page).min(pages))
            .collect())
    }
}

/// The layout of an arena with proxies: its memory is a shared mapping of `live`.
#[derive(Debug)]
pub(crate) struct SharedLayout {
    live: Arc<LiveFile>,
    /// The pages written since the last snapshot or restore (see `Arena::dirty`).
    pub(crate) dirty: PageSet,
    _fork_guard: SharedMemoryGuard,
}

impl SharedLayout {
    /// Refuses a write from a process other than the file's maker (a child of `fork()`): its
    /// writes would change its parent's memory.
    pub(crate) fn check_writer(&self) -> Result<()> {
        if process::current_pid() == self.live.owner {
            Ok(())
        } else {
            Err(Error::Unsupported(
                "writing an arena whose memory is shared with proxies from a forked child: the \
                 write would change the parent's memory",
            ))
        }
    }

    /// Whether a proxy of this arena is alive.
    pub(crate) fn has_proxies(&self) -> bool {
        Arc::strong_count(&self.live) > 1
    }

    /// The page runs holding data in the file (all others are zero), or `None` if unknown.
    pub(crate) fn data_pages(&self, page: usize, pages: usize) -> Option<Vec<Range<usize>>> {
        self.live.data_pages(page, pages).ok()
    }
}

impl SharedLayout {
    /// Whether `proxy` reads through to this arena.
    pub(crate) fn is_source_of(&self, proxy: &ProxyLayout) -> bool {
        Arc::ptr_eq(&self.live, &proxy.live)
    }
}

impl ProxyLayout {
    /// Whether the source is gone, so that nothing writes the file any more.
    pub(crate) fn source_dropped(&self) -> bool {
        // Acquire: pairs with the source's release, so its last writes are visible.
        !self.live.source_alive.load(Ordering::Acquire)
    }
}

impl Drop for SharedLayout {
    fn drop(&mut self) {
        // Release: the source's last writes happen before a proxy that sees `false` reads.
        self.live.source_alive.store(false, Ordering::Release);
    }
}

/// An arena's shared memory, built before the arena moves into it.
struct SharedMemory {
    mem: Reservation,
    live: Arc<LiveFile>,
    fork_guard: SharedMemoryGuard,
}

/// The layout of a proxy: a private mapping of its source's live file. Pages in `private` were
/// written by the proxy; the others read through to the file.
#[derive(Debug)]
pub(crate) struct ProxyLayout {
    live: Arc<LiveFile>,
    pub(crate) private: PageSet,
}

impl Arena {
    /// A new arena in the proxy layout, reading through to this one (see
    /// [`Arena::proxy`](crate::Arena::proxy)): the first moves this arena into shared memory. On
    /// `Err`, nothing changed.
    pub(crate) fn new_proxy_arena(&mut self) -> Result<Arena> {
        let (live, shared) = match &self.layout {
            Layout::Shared(shared) => {
                shared.check_writer()?;
                (Arc::clone(&shared.live), None)
            }
            Layout::Own { .. } => {
                self.find_raw_writes(false);
                let shared = self.shared_memory()?;
                (Arc::clone(&shared.live), Some(shared))
            }
            Layout::Proxy(_) => unreachable!("a proxy's arena is never lent out to make proxies"),
        };
        let capacity = self.capacity();
        let mem = Reservation::with_guard(capacity, self.options.guard_bytes)?;
        // SAFETY: the reservation is new; nothing refers into it.
        unsafe { mem.map_file(0, capacity, &live.file, 0, Sharing::Private, true)? };
        // Only now that nothing can fail does the arena move into its shared memory.
        if let Some(shared) = shared {
            self.enter_shared(shared);
        }
        let pages = self.pages();
        let layout = Layout::Proxy(ProxyLayout {
            live,
            private: PageSet::new(pages),
        });
        let content = PageTable::new(pages, Arc::clone(self.store()));
        Ok(Arena::from_parts(
            mem,
            content,
            layout,
            self.options.clone(),
        ))
    }

    /// A shared live file holding the arena's bytes, which proxies can map, and the arena's
    /// memory mapped from it, built aside: on failure the arena is unchanged.
    fn shared_memory(&self) -> Result<SharedMemory> {
        let Layout::Own { private, .. } = &self.layout else {
            unreachable!("only an arena in its own layout enters the shared layout");
        };
        let fork_guard = SharedMemoryGuard::new();
        let capacity = self.capacity();
        let file = BackingFile::new(sys::create_backing_file(self.options.dir.as_deref())?);
        file.set_len(capacity)?;
        // A file whose size cannot change cannot be truncated under the mappings (SIGBUS).
        sys::seal_size(file.owned_fd())?;
        if self.options.dir.is_some() {
            // A full file system must fail here, not as SIGBUS on a later page fault.
            file.allocate(0, capacity)?;
        }
        let mut data: Vec<usize> = private.iter().collect();
        self.content
            .for_each_run(|first, len, _| data.extend(first..first + len));
        data.sort_unstable();
        data.dedup();
        let page = self.page;
        for run in runs(&data, usize::MAX) {
            let bytes = &self.as_bytes()[run.start * page..run.end * page];
            file.write_all_at(bytes, run.start * page)?;
        }
        let mem = Reservation::with_guard(capacity, self.options.guard_bytes)?;
        // SAFETY: the reservation is new; nothing refers into it.
        unsafe { mem.map_file(0, capacity, &file, 0, Sharing::Shared, true)? };
        let live = Arc::new(LiveFile {
            file,
            owner: process::current_pid(),
            source_alive: AtomicBool::new(true),
        });
        Ok(SharedMemory {
            mem,
            live,
            fork_guard,
        })
    }

    /// Moves the arena into `shared`, made by [`Arena::shared_memory`].
    fn enter_shared(&mut self, shared: SharedMemory) {
        // `&mut self`: no reference into the old memory is live, so it can go.
        self.mem = shared.mem;
        let pages = self.pages();
        let dirty = std::mem::replace(&mut self.dirty, PageSet::new(pages));
        self.layout = Layout::Shared(SharedLayout {
            live: shared.live,
            dirty,
            _fork_guard: shared.fork_guard,
        });
    }

    /// Returns a shared arena whose proxies are all gone to its usual layout. Written pages are
    /// frozen first, as their bytes live only in the shared file.
    pub(crate) fn leave_shared_if_alone(&mut self) -> Result<()> {
        match &self.layout {
            Layout::Shared(shared) if !shared.has_proxies() => {}
            _ => return Ok(()),
        }
        // Pages written through `as_mut_ptr` are not marked yet, and their bytes too live only
        // in the shared file.
        self.find_raw_writes(false);
        self.freeze_dirty()?;
        let table = self.content.clone();
        self.rebuild_from(&table)
    }

    /// For a proxy: freezes every page it reads through, as its source may have changed it.
    pub(crate) fn freeze_read_through(&mut self) -> Result<()> {
        let Layout::Proxy(proxy) = &self.layout else {
            unreachable!("only a proxy reads through");
        };
        let data = proxy.live.data_pages(self.page, self.pages())?;
        let private = &proxy.private;
        let pages: Vec<usize> = data
            .iter()
            .flat_map(Range::clone)
            .filter(|&p| !private.contains(p))
            .collect();
        // The other pages it reads through are holes, so zero: only those `content` still holds
        // a slot for change, and `content` lists them without a scan of the whole capacity.
        let in_data = |p: usize| {
            let i = data.partition_point(|r| r.end <= p);
            data.get(i).is_some_and(|r| r.contains(&p))
        };
        let mut zero: Vec<(usize, SlotId)> = Vec::new();
        self.content.for_each_run(|first, len, _| {
            zero.extend(
                (first..first + len)
                    .filter(|&p| !private.contains(p) && !in_data(p))
                    .map(|p| (p, SlotId::ZERO)),
            );
        });
        let (_, result) = self.freeze_pages(&pages);
        result?;
        self.content.set_many(&zero);
        Ok(())
    }
}
