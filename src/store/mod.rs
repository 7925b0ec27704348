//! The page store: frozen page images in chunk files, reference-counted, shared by an arena, its
//! snapshots, and every arena made from them.
//!
//! A chunk is a file of [`CHUNK_BYTES`] (sealed against growing and shrinking when it is made).
//! Frozen pages are written into slots of the open chunk with `pwritev`, so a full file system is
//! an `Error` at the call that freezes, never a SIGBUS later. Chunks are 16 MiB, so open files
//! stay at about one per 16 MiB of frozen pages, not one per snapshot.
//!
//! This module holds the store's interface: freezing pages, holding and releasing slots, and
//! the statistics. Its parts: `chunk` (slots, how a freeze chooses them, and a chunk's life up
//! to sealing), `reuse` (freed slots, reused or punched out), `read` (reading frozen pages) and
//! `file_chunk` (the chunks of snapshots opened from files).
//!
//! # Fork
//!
//! A `fork()` child shares the chunk files with its parent. The store never writes, seals or
//! punches a chunk another process made, and while a branch started by
//! [`fork_run`](crate::Arena::fork_run) may be running
//! ([`children_alive`](crate::sys::process::children_alive)), it neither reuses nor punches a slot freed
//! meanwhile: the child may still read it through its copy of an arena or snapshot.

mod chunk;
mod file_chunk;
mod read;
mod reuse;

pub(crate) use chunk::SlotId;
pub(crate) use file_chunk::PageSource;
pub(crate) use read::CopyOut;

use crate::error::Result;
use crate::page_set::coalesce;
use crate::sys::{BackingFile, FileWriter};
use chunk::Chunk;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes per chunk file.
pub(crate) const CHUNK_BYTES: usize = 16 << 20;

/// Freed slots collected before they are punched out together.
const PUNCH_BATCH: usize = 256;

#[derive(Debug, Default)]
struct StoreState {
    chunks: Vec<Option<Chunk>>,
    current: Option<usize>,
    live_slots: usize,
    held_slots: usize,
    /// Freed slots of unsealed or reusable chunks, not yet reused or punched out.
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
    /// Of `held_bytes`, dead pages kept to be written over by later snapshots (in the chunk
    /// being filled and in full chunks of a memory store), and pages allocated ahead for the
    /// chunk being filled; given back when their chunk closes or the store is dropped.
    pub reusable_bytes: usize,
    /// Open chunk files (file descriptors).
    pub chunk_files: usize,
    /// Chunk files the kernel has write-sealed.
    pub sealed_chunk_files: usize,
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

    /// The slots, whose holds pass to the caller (a page table that now points at them).
    pub(crate) fn into_held(mut self) -> Vec<SlotId> {
        std::mem::take(&mut self.slots)
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if !self.slots.is_empty() {
            self.store.release(&self.slots);
        }
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

    /// Holds the store's lock until the guard is dropped, for a `fork()`: a lock another thread
    /// holds when the process forks stays held in the child forever, so the forking thread
    /// takes it first, and parent and child each drop their copy of the guard after the fork.
    pub(crate) fn hold_across_fork(&self) -> impl Sized + '_ {
        self.lock()
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
    /// open chunk or of a full chunk kept for reuse, wherever they are: writing over an allocated
    /// page costs about half as much as allocating one, and the dead page needs no punching (see
    /// `chunk`). Longer buffers
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
        let (file, writer, chunk, slots) = {
            let mut st = self.lock();
            self.process_pending(&mut st);
            let (chunk, slots) = self.chunk_with_room(&mut st, bufs, reuse_below)?;
            let c = st.chunks[chunk].as_mut().expect("current chunk is open");
            let reused = slots.iter().filter(|&&i| i < c.used).count();
            if reused > 0 && self.dir.is_none() {
                c.start_writer(page);
            }
            let end = slots.iter().max().map_or(0, |&i| i + 1);
            // A chunk's writer has its slots allocated ahead, a step at a time; those count as
            // held from then on, so fresh slots below the mark add nothing.
            let prepared = match c.prepare_writer(end, self.chunk_pages, page) {
                Ok(prepared) => prepared,
                Err(e) => {
                    c.give_back(&slots);
                    return Err(e);
                }
            };
            let fresh_held = if c.writer.is_some() { 0 } else { pages };
            for &i in &slots {
                c.refs[i] = 1;
                c.used = c.used.max(i + 1);
            }
            c.live += pages;
            c.writing += 1;
            let file = Arc::clone(&c.file);
            let writer = c.writer.clone();
            st.live_slots += pages;
            st.held_slots += prepared + fresh_held.saturating_sub(reused);
            let slots = slots
                .into_iter()
                .map(|i| SlotId::new(chunk as u32, i as u32));
            (file, writer, chunk, slots.collect::<Vec<_>>())
        };
        let frozen = Frozen { store: self, slots };
        let written = self.write(&file, writer.as_deref(), bufs, &frozen.slots);
        // Before the chunk can be sealed (no write in flight), which needs the mapping gone.
        drop(writer);
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

    /// Writes each page of `bufs` into its slot of `file`: one copy through `writer` per run of
    /// consecutive slots, or without one, one `pwritev` per run.
    fn write(
        &self,
        file: &BackingFile,
        writer: Option<&FileWriter>,
        bufs: &[&[u8]],
        slots: &[SlotId],
    ) -> Result<()> {
        let page = self.page;
        if let Some(writer) = writer {
            for_each_slot_run(bufs, slots, page, |run, bytes| {
                // SAFETY: the slots were handed to this freeze alone (under the lock, counted in
                // `writing`); no one reads a slot before a page table holds it, and a dead slot
                // is written over only when nothing can read it any more.
                unsafe { writer.copy_in(run.start * page, bytes) };
            });
            return Ok(());
        }
        let mut pieces: Vec<(Range<usize>, &[u8])> = Vec::new();
        for_each_slot_run(bufs, slots, page, |run, bytes| pieces.push((run, bytes)));
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
    /// Freed slots of unsealed chunks and of full chunks kept for reuse are handled in batches
    /// ([`PUNCH_BATCH`] slots, or before the next freeze or stats call): kept for reuse in those
    /// chunks, punched out elsewhere.
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
            if c.sealed && !c.reusable {
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
                .map(|c| c.free.len + c.ready_unused())
                .sum::<usize>()
                * self.page,
            chunk_files: st.chunks.iter().flatten().count(),
            sealed_chunk_files: st.chunks.iter().flatten().filter(|c| c.sealed).count(),
        }
    }
}

/// Calls `f(slots, bytes)` for each piece of `bufs` (whole pages) whose `slots` (one per page, in
/// order) are consecutive: each buffer splits where its slots stop being consecutive. Reused
/// slots come in any order, which [`Coalesce`](crate::page_set::Coalesce) (increasing pieces
/// only) does not take.
fn for_each_slot_run<'b>(
    bufs: &[&'b [u8]],
    slots: &[SlotId],
    page: usize,
    mut f: impl FnMut(Range<usize>, &'b [u8]),
) {
    let mut slots = slots.iter().map(|s| s.index());
    for b in bufs {
        let mut start = 0;
        let mut run: Option<Range<usize>> = None;
        for (i, s) in (0..b.len() / page).zip(&mut slots) {
            match &mut run {
                Some(r) if r.end == s => r.end += 1,
                _ => {
                    if let Some(r) = run.replace(s..s + 1) {
                        f(r.clone(), &b[start * page..(start + r.len()) * page]);
                    }
                    start = i;
                }
            }
        }
        if let Some(r) = run {
            f(r.clone(), &b[start * page..(start + r.len()) * page]);
        }
    }
}
