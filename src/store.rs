//! The page store: frozen page images in chunk files, reference-counted, shared by an arena, its
//! snapshots, and every arena made from them.
//!
//! A chunk is a file of [`CHUNK_BYTES`] (sealed against growing and shrinking when it is made).
//! Frozen pages are written into slots of the open chunk with `pwritev`, so a full file system is
//! an `Error` at the call that freezes, never a SIGBUS later. Chunks are 16 MiB, so open files
//! stay at about one per 16 MiB of frozen pages, not one per snapshot.
//!
//! # Slots: fresh and reused
//!
//! A run of at least [`REMAP_MIN_RUN`](crate::REMAP_MIN_RUN) pages gets consecutive slots, so it
//! maps with one `mmap`. Shorter runs (the scattered pages of a typical snapshot) go to slots of
//! the open chunk that died earlier, wherever they are, all in one run of free slots when there is
//! one (one `pwritev`). Measured here, per 4 KiB page: `pwritev` into a fresh slot 0.7–2.1 us
//! (allocating a shared-memory page, touched for the first time), into an allocated one
//! 0.4–0.7 us, and punching a dead slot out 0.3–0.7 us more. So the old scheme (append, punch what
//! died) paid about twice what writing over dead slots costs: a snapshot of 64 scattered pages
//! went from 104 us to 35–43 us at 16 MiB and from 161 us to 68–73 us at 1 GiB (each cycle
//! restores an older snapshot, so 64 slots die per snapshot).
//!
//! Dead slots are kept for reuse only in the open chunk of a memory store; a store in a
//! [`backing_dir`](crate::ArenaBuilder::backing_dir) returns them to the file system at once
//! (its space is what the directory bounds). Elsewhere dead slots are punched out, in batches.
//!
//! # Sealing and what the kernel keeps immutable
//!
//! The open chunk is retired once a freeze needs more fresh slots than it has left; its free slots
//! are punched out and, when its writes are done, it is sealed with `F_SEAL_WRITE` and
//! `F_SEAL_SEAL`: no one, not even through its file descriptor, can change a frozen page of it or
//! its seals afterwards. The open chunk itself is not sealed (its dead slots are written over),
//! and files in a backing directory cannot be sealed at all. The kernel refuses to punch holes in
//! a sealed file, so a sealed chunk is closed (and its memory freed) when its last live slot is
//! freed; the memory sealed chunks keep for dead slots is reported by
//! [`StoreStats::held_bytes`].
//!
//! # Reading frozen pages
//!
//! Restores copy frozen pages out of a read-only private mapping of each chunk (its view), by
//! raw-pointer copies over the exact range ([`PageTable::read`](crate::page_table::PageTable)):
//! other slots of the same chunk may be written meanwhile, so no slice over the whole chunk is
//! ever lent. A view made lazily costs a page fault per page first read: on a 1 GiB arena frozen
//! whole, restoring 64 scattered pages took one fault per page and 265–330 us. So a chunk's view
//! is made and populated (`MADV_POPULATE_READ` over its live slots, which hold no hole: reading a
//! hole of a memory file would allocate a page) when the chunk runs out of fresh slots (or is
//! sealed before that); the same restore then takes no fault and 50–75 us. Populating costs
//! about 0.35 us per page (1.4 ms per 16 MiB chunk), once: a slot written over keeps its page, so
//! the view needs no second pass.
//!
//! # Snapshots opened from files
//!
//! A snapshot opened from a file adds a *file chunk* ([`Store::add_file_chunk`]): one slot per
//! page stored in the file, backed by a sparse memory file that is filled lazily. Before any
//! slot of it is mapped ([`Store::locate`]) or copied out ([`Store::copy_out`]), the
//! [`PageSource`] of the chunk reads those pages from the user's file, checks them and writes them
//! into the chunk (see [`crate::persist`]). A file chunk is never sealed or populated, since pages
//! arrive after it is made; the crate is its only writer, and it writes a slot only before anyone
//! can map or read it (a `fork()` child that fills a slot its parent has not filled yet writes
//! the same checked bytes). Its slots count in [`StoreStats::held_bytes`] from the start, read or
//! not.
//!
//! # Fork
//!
//! A `fork()` child shares the chunk files with its parent. The store never writes, seals or
//! punches a chunk another process made, and while a branch started by
//! [`fork_run`](crate::Arena::fork_run) may be running
//! ([`children_alive`](crate::sys::process::children_alive)), it neither reuses nor punches a slot freed
//! meanwhile: the child may still read it through its copy of an arena or snapshot.

use crate::error::{Error, Result};
use crate::page_set::{coalesce, Coalesce};
use crate::sys::process::{self, Pid};
use crate::sys::{self, BackingFile, FileView};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// Where the pages of a file chunk come from when they are first needed: the store never reads
/// a snapshot file itself, it asks the chunk's source (implemented by `persist`, which knows the
/// file format) to fill slots before it reads or maps them.
pub(crate) trait PageSource: Send + Sync + std::fmt::Debug {
    /// Makes slots `first..first + len` of `chunk` hold their pages, or says why it cannot (the
    /// source changed or is damaged). Slots filled before stay filled; nothing unchecked may
    /// reach the chunk.
    fn fill(&self, chunk: &BackingFile, first: usize, len: usize) -> Result<()>;
}

/// Bytes per chunk file.
pub(crate) const CHUNK_BYTES: usize = 16 << 20;

/// Freed slots collected before they are punched out together.
const PUNCH_BATCH: usize = 256;

/// Names one frozen page: a chunk and a slot in it. [`SlotId::ZERO`] is the all-zero page, which
/// has no storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SlotId(u64);

impl SlotId {
    pub(crate) const ZERO: SlotId = SlotId(0);

    fn new(chunk: u32, index: u32) -> Self {
        SlotId(((chunk as u64 + 1) << 32) | index as u64)
    }

    pub(crate) fn is_zero(self) -> bool {
        self.0 == 0
    }

    fn chunk(self) -> usize {
        ((self.0 >> 32) - 1) as usize
    }

    fn index(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    /// A number that is one more for the next slot of the same chunk (for grouping runs).
    fn number(self) -> usize {
        self.0 as usize
    }

    /// The slot `n` places after this one in the same chunk.
    pub(crate) fn offset(self, n: usize) -> SlotId {
        debug_assert!(!self.is_zero());
        SlotId(self.0 + n as u64)
    }
}

#[derive(Debug)]
struct Chunk {
    /// The process that made the chunk. A `fork()` child shares the file with its parent, so it
    /// must never write, seal or punch it: its own freezes go to chunks it makes itself.
    owner: Pid,
    file: Arc<BackingFile>,
    /// A read-only mapping of the whole chunk, for copying frozen pages out without a system
    /// call; made when the chunk is sealed (or first read), and kept while the chunk is open.
    view: Option<Arc<FileView>>,
    /// Per slot, the number of page-table leaves (and in-flight freezes) that hold it.
    refs: Vec<u32>,
    /// Fresh slots handed out so far; the chunk is full when this reaches its slot count.
    used: usize,
    /// Slots with a non-zero count.
    live: usize,
    /// No more slots are handed out; the chunk is sealed once its last write is done.
    retired: bool,
    /// Writes into handed-out slots still in progress (sealing waits for them).
    writing: usize,
    /// The kernel has write-sealed the file.
    sealed: bool,
    /// Dead slots that still occupy memory and are neither reused nor punched any more (the
    /// chunk is sealed, or punching failed).
    dead_held: usize,
    /// Freed slots waiting in [`StoreState::pending`].
    pending: usize,
    /// For a file chunk, where its slots' bytes come from.
    lazy: Option<Arc<dyn PageSource>>,
    /// Dead slots of the open chunk kept for reuse: their pages stay allocated and are written
    /// over by later freezes, instead of being punched now and allocated again then.
    /// Invariant: each was dead when no branch of this process was running, so no process can
    /// still read it.
    free: FreeSlots,
    /// The view has been populated (when the chunk ran out of fresh slots, or was sealed).
    /// Reused slots keep their pages, so it need not be populated again.
    populated: bool,
}

/// A set of slot indices of one chunk, a bit per slot, that hands out its lowest members and
/// first-fit runs of consecutive ones.
#[derive(Clone, Debug)]
struct FreeSlots {
    bits: Vec<u64>,
    len: usize,
}

impl FreeSlots {
    fn new(slots: usize) -> Self {
        FreeSlots {
            bits: vec![0; slots.div_ceil(64)],
            len: 0,
        }
    }

    fn insert(&mut self, i: usize) {
        debug_assert!(self.bits[i / 64] & (1 << (i % 64)) == 0);
        self.bits[i / 64] |= 1 << (i % 64);
        self.len += 1;
    }

    fn remove(&mut self, i: usize) {
        self.bits[i / 64] &= !(1 << (i % 64));
        self.len -= 1;
    }

    /// The members in increasing order.
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter().enumerate().flat_map(|(w, &word)| {
            // Each step clears the lowest set bit.
            std::iter::successors((word != 0).then_some(word), |&x| {
                let rest = x & (x - 1);
                (rest != 0).then_some(rest)
            })
            .map(move |x| w * 64 + x.trailing_zeros() as usize)
        })
    }

    /// Takes the lowest member.
    fn pop_lowest(&mut self) -> Option<usize> {
        let w = self.bits.iter().position(|&word| word != 0)?;
        let i = w * 64 + self.bits[w].trailing_zeros() as usize;
        self.remove(i);
        Some(i)
    }

    /// Takes the first run of `n` consecutive members, if there is one; returns its start.
    fn take_run(&mut self, n: usize) -> Option<usize> {
        let mut runs = Coalesce::new(0, |_: &_, _: &_| true);
        let start = self.iter().find_map(|i| {
            runs.push((i..i + 1, ()));
            runs.current()
                .filter(|(r, ())| r.len() >= n)
                .map(|(r, ())| r.start)
        })?;
        for i in start..start + n {
            self.remove(i);
        }
        Some(start)
    }
}

#[derive(Debug, Default)]
struct StoreState {
    chunks: Vec<Option<Chunk>>,
    current: Option<usize>,
    live_slots: usize,
    held_slots: usize,
    /// Freed slots of unsealed chunks, not yet reused or punched out.
    pending: Vec<SlotId>,
}

/// Counters describing the page store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Frozen pages that some snapshot, arena or proxy still refers to.
    pub live_pages: usize,
    /// Bytes of memory (or disk) the store occupies, including dead pages kept for reuse and
    /// dead pages in sealed chunks.
    pub held_bytes: usize,
    /// Of `held_bytes`, dead pages of the chunk being filled, kept to be written over by later
    /// snapshots (at most a chunk: 16 MiB); given back when the store is dropped.
    pub reusable_bytes: usize,
    /// Open chunk files (file descriptors).
    pub chunk_files: usize,
    /// Chunk files the kernel has write-sealed.
    pub sealed_chunk_files: usize,
}

impl Chunk {
    /// The chunk's view, made now if it has none yet.
    fn view(&mut self, page: usize) -> Result<Arc<FileView>> {
        if let Some(v) = &self.view {
            return Ok(Arc::clone(v));
        }
        let v = Arc::new(FileView::new(&self.file, self.refs.len() * page)?);
        Ok(Arc::clone(self.view.insert(v)))
    }
}

impl StoreState {
    fn forget_pending_of_closed(&mut self) {
        let chunks = &self.chunks;
        self.pending.retain(|s| chunks[s.chunk()].is_some());
    }
}

/// The page store (see the module docs).
#[derive(Debug)]
pub(crate) struct Store {
    page: usize,
    chunk_pages: usize,
    dir: Option<PathBuf>,
    state: Mutex<StoreState>,
}

/// Freshly frozen slots, one per page frozen, held until a page table takes them.
pub(crate) struct Frozen<'a> {
    store: &'a Store,
    slots: Vec<SlotId>,
}

impl Frozen<'_> {
    /// The slot of each page frozen, in the order of the buffers given to [`Store::freeze`].
    pub(crate) fn slots(&self) -> &[SlotId] {
        &self.slots
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        self.store.release(&self.slots);
    }
}

impl Store {
    pub(crate) fn new(page: usize, dir: Option<PathBuf>) -> Arc<Store> {
        Arc::new(Store {
            page,
            chunk_pages: (CHUNK_BYTES / page).max(1),
            dir,
            state: Mutex::new(StoreState::default()),
        })
    }

    pub(crate) fn page_size(&self) -> usize {
        self.page
    }

    /// The most pages one [`Store::freeze`] accepts.
    pub(crate) fn max_run_pages(&self) -> usize {
        self.chunk_pages
    }

    fn lock(&self) -> MutexGuard<'_, StoreState> {
        // A panic while the lock was held left counts that are still consistent (every update is
        // a single step), so the poison flag carries no information.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies the buffers (whole pages each, at most [`Store::max_run_pages`] in all) into slots
    /// of one chunk and returns them.
    ///
    /// A buffer of fewer than `reuse_below` pages goes, as far as they last, to dead slots of the
    /// open chunk, wherever they are: writing over an allocated page costs about half as much as
    /// allocating one, and the dead page needs no punching (see the module docs). Longer buffers
    /// get consecutive fresh slots, so that each maps with one `mmap`; all the fresh slots of a
    /// call are written with one `pwritev`.
    pub(crate) fn freeze(&self, bufs: &[&[u8]], reuse_below: usize) -> Result<Frozen<'_>> {
        let page = self.page;
        let bytes: usize = bufs.iter().map(|b| b.len()).sum();
        let pages = bytes / page;
        assert!(
            bufs.iter().all(|b| b.len() % page == 0) && (1..=self.chunk_pages).contains(&pages),
            "freeze takes 1..={} whole pages, got {bytes} bytes",
            self.chunk_pages,
        );
        let (file, chunk, slots) = {
            let mut st = self.lock();
            self.process_pending(&mut st);
            let runs: Vec<usize> = bufs.iter().map(|b| b.len() / page).collect();
            let (chunk, free, slots) = self.chunk_with_room(&mut st, &runs, reuse_below)?;
            let c = st.chunks[chunk].as_mut().expect("current chunk is open");
            let reused = c.free.len - free.len;
            c.free = free;
            for &i in &slots {
                c.refs[i] = 1;
                c.used = c.used.max(i + 1);
            }
            c.live += pages;
            c.writing += 1;
            let file = Arc::clone(&c.file);
            st.live_slots += pages;
            st.held_slots += pages - reused;
            let slots = slots
                .into_iter()
                .map(|i| SlotId::new(chunk as u32, i as u32));
            (file, chunk, slots.collect::<Vec<_>>())
        };
        let frozen = Frozen { store: self, slots };
        let written = self.write(&file, bufs, &frozen.slots);
        {
            let mut st = self.lock();
            let c = st.chunks[chunk]
                .as_mut()
                .expect("chunk with live slots is open");
            c.writing -= 1;
            if c.used == self.chunk_pages && !c.populated {
                // Out of fresh slots: from now on it mostly serves restores. It stays open for
                // reuse until a freeze needs more fresh slots than it has.
                self.populate_view(&mut st, chunk);
            }
            self.seal_if_done(&mut st, chunk);
        }
        // On failure `frozen` is dropped, which frees the slots again.
        written.map(|()| frozen)
    }

    /// Writes each page of `bufs` into its slot of `file`: one `pwritev` per run of consecutive
    /// slots.
    fn write(&self, file: &BackingFile, bufs: &[&[u8]], slots: &[SlotId]) -> Result<()> {
        let page = self.page;
        // Each buffer splits where its slots stop being consecutive.
        let mut pieces: Vec<(Range<usize>, &[u8])> = Vec::new();
        let mut k = 0;
        for b in bufs {
            let n = b.len() / page;
            let runs = coalesce(
                (0..n).map(|i| {
                    let s = slots[k + i].index();
                    (s..s + 1, i)
                }),
                0,
                |_, _| true,
            );
            pieces.extend(
                runs.into_iter()
                    .map(|(r, i)| (r.clone(), &b[i * page..(i + r.len()) * page])),
            );
            k += n;
        }
        pieces.sort_unstable_by_key(|(r, _)| r.start);
        let groups = coalesce(
            pieces.iter().enumerate().map(|(i, (r, _))| (r.clone(), i)),
            0,
            |_, _| true,
        );
        for (g, (slots, first)) in groups.iter().enumerate() {
            let end = groups.get(g + 1).map_or(pieces.len(), |(_, next)| *next);
            let group: Vec<&[u8]> = pieces[*first..end].iter().map(|(_, b)| *b).collect();
            file.write_all_vectored_at(&group, slots.start * page)?;
        }
        Ok(())
    }

    /// Chooses a slot for each page of runs of `runs` pages: in the open chunk if it has room,
    /// otherwise in a new one. Returns the chunk, its free slots left, and the slot indices.
    fn chunk_with_room(
        &self,
        st: &mut StoreState,
        runs: &[usize],
        reuse_below: usize,
    ) -> Result<(usize, FreeSlots, Vec<usize>)> {
        if let Some(cur) = st.current {
            let c = st.chunks[cur].as_ref().expect("current chunk is open");
            if c.owner != process::current_pid() {
                // Inherited across fork(): stop allocating from it, but leave it as it is.
                st.chunks[cur].as_mut().expect("open").retired = true;
                st.current = None;
                return self.chunk_with_room(st, runs, reuse_below);
            }
            if let Some((free, slots)) = self.place(c, runs, reuse_below) {
                return Ok((cur, free, slots));
            }
            self.retire(st, cur);
        }
        let fd = sys::create_backing_file(self.dir.as_deref())?;
        let file = BackingFile::new(fd);
        file.set_len(self.chunk_pages * self.page)?;
        sys::seal_size(file.owned_fd())?;
        let chunk = Chunk {
            owner: process::current_pid(),
            file: Arc::new(file),
            view: None,
            refs: vec![0; self.chunk_pages],
            used: 0,
            live: 0,
            retired: false,
            writing: 0,
            sealed: false,
            dead_held: 0,
            pending: 0,
            lazy: None,
            free: FreeSlots::new(self.chunk_pages),
            populated: false,
        };
        let (free, slots) = self
            .place(&chunk, runs, reuse_below)
            .expect("a new chunk takes up to a chunk's worth of pages");
        // Chunk numbers are never reused, so a stale slot can never name a newer chunk.
        st.chunks.push(Some(chunk));
        let id = st.chunks.len() - 1;
        st.current = Some(id);
        Ok((id, free, slots))
    }

    /// Slots in `c` for runs of `runs` pages, or `None` if it has not enough room. A run of at
    /// least `reuse_below` pages gets consecutive slots (a run of free ones, or fresh ones); a
    /// shorter one takes the lowest free slots, then fresh ones.
    fn place(
        &self,
        c: &Chunk,
        runs: &[usize],
        reuse_below: usize,
    ) -> Option<(FreeSlots, Vec<usize>)> {
        let mut free = c.free.clone();
        let mut used = c.used;
        let mut slots = Vec::with_capacity(runs.iter().sum());
        // All the short runs in one run of free slots, if there is one: one `pwritev` for them.
        let short: usize = runs.iter().filter(|&&n| n < reuse_below).sum();
        let mut together = if short > 1 {
            free.take_run(short)
        } else {
            None
        };
        for &n in runs {
            if n >= reuse_below {
                let start = free.take_run(n).unwrap_or_else(|| {
                    used += n;
                    used - n
                });
                slots.extend(start..start + n);
            } else if let Some(start) = &mut together {
                slots.extend(*start..*start + n);
                *start += n;
            } else {
                for _ in 0..n {
                    slots.push(free.pop_lowest().unwrap_or_else(|| {
                        used += 1;
                        used - 1
                    }));
                }
            }
        }
        (used <= self.chunk_pages).then_some((free, slots))
    }

    /// Stops handing out slots from `chunk`; punches out its dead slots; it is sealed once its
    /// writes are done.
    fn retire(&self, st: &mut StoreState, chunk: usize) {
        if st.current == Some(chunk) {
            st.current = None;
        }
        let c = st.chunks[chunk].as_mut().expect("retiring an open chunk");
        c.retired = true;
        let free = std::mem::replace(&mut c.free, FreeSlots::new(0));
        let free = free.iter().map(|i| SlotId::new(chunk as u32, i as u32));
        self.punch(st, free.collect());
        self.seal_if_done(st, chunk);
    }

    /// Write-seals a retired chunk with no write in flight; closes it if nothing is live.
    fn seal_if_done(&self, st: &mut StoreState, chunk: usize) {
        let c = st.chunks[chunk].as_ref().expect("open chunk");
        if !c.retired || c.writing > 0 {
            return;
        }
        if c.pending > 0 {
            // The kernel refuses to punch holes once the chunk is sealed.
            self.process_pending(st);
        }
        let c = st.chunks[chunk].as_mut().expect("open chunk");
        if !c.sealed && c.owner == process::current_pid() {
            // Sealing fails only where the kernel does not support it; the chunk is then simply
            // never written again by this crate.
            c.sealed = sys::seal_full(c.file.owned_fd()).unwrap_or(false);
        }
        if Self::close_if_dead(st, chunk) {
            st.forget_pending_of_closed();
        } else if !st.chunks[chunk].as_ref().expect("open chunk").populated {
            self.populate_view(st, chunk);
        }
    }

    /// Closes a retired chunk with nothing live; returns whether it did.
    fn close_if_dead(st: &mut StoreState, chunk: usize) -> bool {
        let c = st.chunks[chunk].as_ref().expect("open chunk");
        if c.retired && c.writing == 0 && c.live == 0 {
            st.held_slots -= c.dead_held + c.pending + c.free.len;
            st.chunks[chunk] = None;
            return true;
        }
        false
    }

    /// Maps the live slots of a finished chunk into its view now, so that restores copying from
    /// it take no page fault (see the module docs). Only live slots: they hold no hole.
    fn populate_view(&self, st: &mut StoreState, chunk: usize) {
        let page = self.page;
        let c = st.chunks[chunk].as_mut().expect("open chunk");
        if c.owner != process::current_pid() {
            return;
        }
        c.populated = true;
        let Ok(view) = c.view(page) else {
            // Without a view now, one is made on first read.
            return;
        };
        let live = c.refs.iter().enumerate().filter(|(_, &r)| r > 0);
        for (run, ()) in coalesce(live.map(|(i, _)| (i..i + 1, ())), 0, |_, _| true) {
            view.populate(run.start * page, run.len() * page);
        }
    }

    /// Adds one holder to each non-zero slot.
    pub(crate) fn retain(&self, slots: &[SlotId]) {
        let mut st = self.lock();
        for &s in slots.iter().filter(|s| !s.is_zero()) {
            let c = st.chunks[s.chunk()]
                .as_mut()
                .expect("retained slot's chunk is open");
            c.refs[s.index()] += 1;
        }
    }

    /// Drops one holder from each non-zero slot; frees slots that have none left.
    ///
    /// Freed slots of unsealed chunks are handled in batches ([`PUNCH_BATCH`] slots, or before
    /// the next freeze or stats call): kept for reuse in the open chunk, punched out elsewhere.
    /// The pages of one dropped snapshot are released by many page-table leaves, and one
    /// `fallocate` per run beats one per leaf.
    pub(crate) fn release(&self, slots: &[SlotId]) {
        let mut st = self.lock();
        let mut closed_any = false;
        for &s in slots.iter().filter(|s| !s.is_zero()) {
            let c = st.chunks[s.chunk()]
                .as_mut()
                .expect("released slot's chunk is open");
            let r = &mut c.refs[s.index()];
            *r -= 1;
            if *r > 0 {
                continue;
            }
            c.live -= 1;
            if c.sealed {
                c.dead_held += 1;
            } else {
                c.pending += 1;
                st.pending.push(s);
            }
            st.live_slots -= 1;
            closed_any |= Self::close_if_dead(&mut st, s.chunk());
        }
        if closed_any {
            st.forget_pending_of_closed();
        }
        if st.pending.len() >= PUNCH_BATCH {
            self.process_pending(&mut st);
        }
    }

    /// Moves the freed slots waiting in `pending` to their open chunk's free slots, or punches
    /// them out. Not while a branch of this process may be running
    /// ([`process::children_alive`](crate::sys::process::children_alive)): it may still read a slot freed
    /// after it was forked, through its copy of an arena or snapshot.
    fn process_pending(&self, st: &mut StoreState) {
        if st.pending.is_empty() || process::children_alive() {
            return;
        }
        let me = process::current_pid();
        // A backing directory bounds the store's space: its dead pages go back at once.
        let reuse = self.dir.is_none();
        let mut punch = Vec::new();
        for s in std::mem::take(&mut st.pending) {
            let c = st.chunks[s.chunk()]
                .as_mut()
                .expect("pending slots belong to open chunks");
            c.pending -= 1;
            if reuse && !c.retired && c.owner == me {
                c.free.insert(s.index());
            } else {
                punch.push(s);
            }
        }
        self.punch(st, punch);
    }

    /// Punches the dead `slots` out of their chunks, one `fallocate` per run.
    fn punch(&self, st: &mut StoreState, mut slots: Vec<SlotId>) {
        slots.sort_unstable();
        let pieces = slots.iter().map(|s| {
            let n = s.number();
            (n..n + 1, *s)
        });
        for (run, first) in coalesce(pieces, 0, |_, _| true) {
            let len = run.len();
            let c = st.chunks[first.chunk()]
                .as_mut()
                .expect("dead slots belong to open chunks");
            let punched = if c.sealed || c.owner != process::current_pid() {
                Err(None)
            } else {
                sys::punch_hole(
                    c.file.owned_fd(),
                    first.index() * self.page,
                    len * self.page,
                )
                .map_err(|e| match e {
                    Error::Os { source, .. } => source.raw_os_error(),
                    _ => None,
                })
            };
            match punched {
                Ok(()) => st.held_slots -= len,
                // A passing failure (out of memory, say): the slots wait for the next punch.
                Err(Some(errno))
                    if !matches!(errno, libc::EOPNOTSUPP | libc::EPERM | libc::EINVAL) =>
                {
                    c.pending += len;
                    st.pending.extend((0..len).map(|k| first.offset(k)));
                }
                // The file system has no holes, or the chunk was sealed meanwhile (or belongs to
                // another process): the pages stay until the chunk closes (`held_bytes`).
                Err(_) => c.dead_held += len,
            }
        }
    }

    /// Adds a file chunk of `slots` slots whose bytes `lazy` provides on first use, all held by
    /// the returned run until a page table takes the ones it needs.
    pub(crate) fn add_file_chunk(
        &self,
        lazy: Arc<dyn PageSource>,
        slots: usize,
    ) -> Result<Frozen<'_>> {
        assert!(
            (1..=u32::MAX as usize).contains(&slots),
            "a file chunk has 1..=u32::MAX slots, got {slots}"
        );
        let file = BackingFile::new(sys::create_backing_file(self.dir.as_deref())?);
        file.set_len(slots * self.page)?;
        sys::seal_size(file.owned_fd())?;
        let mut st = self.lock();
        st.chunks.push(Some(Chunk {
            owner: process::current_pid(),
            file: Arc::new(file),
            view: None,
            refs: vec![1; slots],
            used: slots,
            live: slots,
            retired: true,
            writing: 0,
            sealed: false,
            dead_held: 0,
            pending: 0,
            lazy: Some(lazy),
            free: FreeSlots::new(0),
            // Never populated: reading a slot not filled yet would allocate its page.
            populated: true,
        }));
        st.live_slots += slots;
        st.held_slots += slots;
        let chunk = st.chunks.len() - 1;
        Ok(Frozen {
            store: self,
            slots: (0..slots)
                .map(|i| SlotId::new(chunk as u32, i as u32))
                .collect(),
        })
    }

    /// For a file chunk, its source and memory file: what [`Store::fill`] needs.
    fn lazy_of(c: &Chunk) -> Option<(Arc<dyn PageSource>, Arc<BackingFile>)> {
        c.lazy
            .as_ref()
            .map(|l| (Arc::clone(l), Arc::clone(&c.file)))
    }

    /// Brings the `len` slots from `slot` of a file chunk into memory (see the module docs).
    /// Called without the store lock: reading the user's file may take a while.
    fn fill(
        lazy: Option<(Arc<dyn PageSource>, Arc<BackingFile>)>,
        slot: SlotId,
        len: usize,
    ) -> Result<()> {
        match lazy {
            Some((lazy, file)) => lazy.fill(&file, slot.index(), len),
            None => Ok(()),
        }
    }

    /// The file and byte offset holding `slot` (not [`SlotId::ZERO`]), whose `len` consecutive
    /// slots are about to be mapped.
    pub(crate) fn locate(&self, slot: SlotId, len: usize) -> Result<(Arc<BackingFile>, usize)> {
        let (file, lazy) = {
            let st = self.lock();
            let c = st.chunks[slot.chunk()]
                .as_ref()
                .expect("a held slot's chunk is open");
            (Arc::clone(&c.file), Self::lazy_of(c))
        };
        Self::fill(lazy, slot, len)?;
        Ok((file, slot.index() * self.page))
    }

    /// For each `(first, offset, dst)`: copies bytes of the consecutive slots starting at `first`
    /// (not [`SlotId::ZERO`]), from byte `offset` of `first` on, into `dst`; no system call once
    /// the chunks' views exist (and, for a file chunk, its pages are filled).
    ///
    /// The first line of every source is prefetched before any copy starts, so that the page
    /// walks and cache misses of scattered pages overlap instead of following one another.
    ///
    /// # Safety
    /// Every slot the copies read is held (by a page table borrowed for the call, say), so no one
    /// frees, rewrites or punches it while the copies run.
    pub(crate) unsafe fn copy_out(&self, copies: &mut [(SlotId, usize, &mut [u8])]) -> Result<()> {
        let mut views: Vec<(Arc<FileView>, usize)> = Vec::with_capacity(copies.len());
        let mut fills = Vec::new();
        {
            let mut st = self.lock();
            for (first, offset, dst) in copies.iter() {
                let c = st.chunks[first.chunk()]
                    .as_mut()
                    .expect("a held slot's chunk is open");
                let view = c.view(self.page)?;
                if let Some(lazy) = Self::lazy_of(c) {
                    fills.push((lazy, *first, (offset + dst.len()).div_ceil(self.page)));
                }
                views.push((view, first.index() * self.page + offset));
            }
        }
        for (lazy, first, len) in fills {
            Self::fill(Some(lazy), first, len)?;
        }
        for (view, at) in &views {
            view.prefetch(*at);
        }
        for ((view, at), (_, _, dst)) in views.iter().zip(copies.iter_mut()) {
            // SAFETY: the caller holds the slots read; held slots are never handed out again, so
            // nothing writes or punches them during the copy (a file chunk's are filled above,
            // before any copy).
            unsafe { view.copy_out(*at, dst) };
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> StoreStats {
        let mut st = self.lock();
        self.process_pending(&mut st);
        StoreStats {
            live_pages: st.live_slots,
            held_bytes: st.held_slots * self.page,
            reusable_bytes: st
                .chunks
                .iter()
                .flatten()
                .map(|c| c.free.len)
                .sum::<usize>()
                * self.page,
            chunk_files: st.chunks.iter().flatten().count(),
            sealed_chunk_files: st.chunks.iter().flatten().filter(|c| c.sealed).count(),
        }
    }
}
