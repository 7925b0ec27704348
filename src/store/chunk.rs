//! Chunks and their slots: [`SlotId`] names a frozen page, [`Chunk`] is one chunk file with
//! its slots' counts, [`FreeSlots`] the dead slots it keeps for reuse; how a freeze chooses
//! slots, and a chunk's life from open to retired, sealed and closed.
//!
//! # Slots: fresh and reused
//!
//! A run of at least [`REMAP_MIN_RUN`](crate::REMAP_MIN_RUN) pages gets consecutive slots, so it
//! maps with one `mmap`. Shorter runs (the scattered pages of a typical snapshot) go to slots of
//! the open chunk, or of a full chunk kept for reuse, that died earlier, wherever they are, all in one run of free slots when there is
//! one (one copy). Measured here with `pwritev`, per 4 KiB page: `pwritev` into a fresh slot 0.7–2.1 us
//! (allocating a shared-memory page, touched for the first time), into an allocated one
//! 0.4–0.7 us, and punching a dead slot out 0.3–0.7 us more. So the old scheme (append, punch what
//! died) paid about twice what writing over dead slots costs: a snapshot of 64 scattered pages
//! went from 104 us to 35–43 us at 16 MiB and from 161 us to 68–73 us at 1 GiB (each cycle
//! restores an older snapshot, so 64 slots die per snapshot). Copying through a mapping whose
//! pages were allocated and mapped ahead ([`FileWriter`]) removes the rest of the system call:
//! in a forward-moving search (16 pages written, a snapshot, 16 more, a restore), a `pwritev`
//! took 43% of the time, and the loop went from 145 us to 80 us per step.
//!
//! # Sealing and what the kernel keeps immutable
//!
//! A memory store writes the open chunk through a shared writable mapping of its own (see
//! [`FileWriter`]) from the first freeze that writes over dead slots (see
//! [`Chunk::start_writer`]), and then seals the chunk with `F_SEAL_FUTURE_WRITE`: from then on no
//! one else can write it, not through its descriptor, a new shared mapping, or a hole punched,
//! while the store's mapping keeps working.
//!
//! The open chunk is retired once a freeze needs more fresh slots than it has left. A memory
//! store's chunk keeps its mapping (made then if it had none) and its dead slots, and is sealed
//! for good with `F_SEAL_FUTURE_WRITE` and `F_SEAL_SEAL` (see [`Chunk::keep_for_reuse`]): no one
//! but the store, not even through its file descriptor, can change a page of it or its seals,
//! and the store writes only over slots no snapshot, arena or branch holds. Later snapshots of
//! scattered pages take those dead slots before fresh ones. Scattered rewrites free slots all
//! over the full chunks, and the kernel refuses to punch a sealed file: when full chunks held
//! their dead slots until every one of them died, a 64 MiB arena rewritten 64 random pages at a
//! time held 62,000 pages for 31,000 live after 800 snapshots (tests/core_stress.rs), and each
//! snapshot paid a fresh page per page (allocated, zeroed and mapped: 500 us for each 256 at
//! 1 GiB). Other chunks (a backing directory's, which cannot be sealed; a file chunk; one the
//! mapping could not be made for) have their free slots punched out and, once their writes are
//! done, are sealed with `F_SEAL_WRITE` and `F_SEAL_SEAL`; a sealed chunk's dead slots stay
//! held until it closes. The memory held for dead slots is reported by
//! [`StoreStats::held_bytes`](super::StoreStats::held_bytes) and
//! [`StoreStats::reusable_bytes`](super::StoreStats::reusable_bytes).

use super::{PageSource, Store, StoreState};
use crate::error::Result;
use crate::page_set::Coalesce;
use crate::sys::process::{self, Pid};
use crate::sys::{self, BackingFile, FileView, FileWriter};
use std::sync::Arc;

/// Names one frozen page: a chunk and a slot in it. [`SlotId::ZERO`] is the all-zero page, which
/// has no storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SlotId(u64);

impl SlotId {
    pub(crate) const ZERO: SlotId = SlotId(0);

    pub(super) fn new(chunk: u32, index: u32) -> Self {
        SlotId(((chunk as u64 + 1) << 32) | index as u64)
    }

    pub(crate) fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub(super) fn chunk(self) -> usize {
        ((self.0 >> 32) - 1) as usize
    }

    pub(super) fn index(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    /// A number that is one more for the next slot of the same chunk (for grouping runs).
    pub(super) fn number(self) -> usize {
        self.0 as usize
    }

    /// The slot `n` places after this one in the same chunk.
    pub(crate) fn offset(self, n: usize) -> SlotId {
        debug_assert!(!self.is_zero());
        SlotId(self.0 + n as u64)
    }
}

#[derive(Debug)]
pub(super) struct Chunk {
    /// The process that made the chunk. A `fork()` child shares the file with its parent, so it
    /// must never write, seal or punch it: its own freezes go to chunks it makes itself.
    pub(super) owner: Pid,
    pub(super) file: Arc<BackingFile>,
    /// A read-only mapping of the whole chunk, for copying frozen pages out without a system
    /// call; made when the chunk is sealed (or first read), and kept while the chunk is open.
    pub(super) view: Option<Arc<FileView>>,
    /// A shared writable mapping of the whole chunk through which freezes copy pages in (memory
    /// stores; see [`FileWriter`]). Made at the chunk's first reuse of a dead slot (or when it is
    /// retired), after which the chunk is sealed against every other writer
    /// (`F_SEAL_FUTURE_WRITE`); kept by a reusable retired chunk, dropped by another before it is
    /// sealed for good.
    pub(super) writer: Option<Arc<FileWriter>>,
    /// Slots below this are allocated, and for the open chunk mapped ahead in `writer` (see
    /// [`prepare_writer`](Chunk::prepare_writer)).
    pub(super) writer_ready: usize,
    /// Per slot, the number of page-table leaves (and in-flight freezes) that hold it.
    pub(super) refs: Vec<u32>,
    /// Fresh slots handed out so far; the chunk is full when this reaches its slot count.
    pub(super) used: usize,
    /// Slots with a non-zero count.
    pub(super) live: usize,
    /// No fresh slots are handed out; the chunk is sealed once its last write is done.
    pub(super) retired: bool,
    /// Retired, but its dead slots are still written over by later freezes, through its writer
    /// (see [`Chunk::keep_for_reuse`]), instead of being held until it closes.
    pub(super) reusable: bool,
    /// Writes into handed-out slots still in progress (sealing waits for them).
    pub(super) writing: usize,
    /// The kernel has write-sealed the file.
    pub(super) sealed: bool,
    /// Dead slots that still occupy memory and are neither reused nor punched any more (the
    /// chunk is sealed, or punching failed).
    pub(super) dead_held: usize,
    /// Freed slots waiting in [`StoreState::pending`](super::StoreState::pending).
    pub(super) pending: usize,
    /// For a file chunk, where its slots' bytes come from.
    pub(super) lazy: Option<Arc<dyn PageSource>>,
    /// Dead slots kept for reuse (of the open chunk, or a reusable retired one): their pages stay
    /// allocated and are written over by later freezes, instead of being punched now and
    /// allocated again then.
    /// Invariant: each was dead when no branch of this process was running, so no process can
    /// still read it.
    pub(super) free: FreeSlots,
    /// The view has been populated (when the chunk ran out of fresh slots, or was sealed).
    /// Reused slots keep their pages, so it need not be populated again.
    pub(super) populated: bool,
}

/// A set of slot indices of one chunk, a bit per slot, that hands out its lowest members and
/// first-fit runs of consecutive ones.
#[derive(Clone, Debug)]
pub(super) struct FreeSlots {
    bits: Vec<u64>,
    pub(super) len: usize,
}

impl FreeSlots {
    pub(super) fn new(slots: usize) -> Self {
        FreeSlots {
            bits: vec![0; slots.div_ceil(64)],
            len: 0,
        }
    }

    pub(super) fn insert(&mut self, i: usize) {
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

/// Slots a chunk's writer allocates and maps at a time, at most: 1 MiB, so that a large store
/// makes a call per 256 pages frozen. The steps start at 16 slots and double, so that a small
/// arena's first snapshot prepares little (256 slots took 0.7 ms).
const WRITER_STEP: usize = 256;
const WRITER_FIRST_STEP: usize = 16;

impl Chunk {
    /// Makes the slots below `end` writable through the writer (allocated, so that writing can
    /// never fault for want of memory, and mapped), a step ahead. Returns how many slots it
    /// allocated (zero for a chunk without a writer).
    ///
    /// # Errors
    /// [`Error::Os`](crate::Error::Os) when the memory cannot be allocated or mapped; nothing
    /// changed then.
    pub(super) fn prepare_writer(
        &mut self,
        end: usize,
        slots: usize,
        page: usize,
    ) -> Result<usize> {
        let Some(writer) = &self.writer else {
            return Ok(0);
        };
        if end <= self.writer_ready {
            return Ok(0);
        }
        let ready = self.writer_ready;
        let step = ready.clamp(WRITER_FIRST_STEP, WRITER_STEP);
        let new = end
            .max(ready + step)
            .next_multiple_of(WRITER_FIRST_STEP)
            .min(slots);
        writer.prepare(&self.file, ready * page, (new - ready) * page)?;
        self.writer_ready = new;
        Ok(new - ready)
    }

    /// Gives the chunk its writer, at the first freeze that writes over dead slots (a memory
    /// store's chunk made by this process): from then on freezes copy through it and no one else
    /// can write the chunk (`F_SEAL_FUTURE_WRITE`). Until then, fresh slots are written with
    /// `pwritev`, which fills a new page without zeroing it first, where the writer's pages must
    /// be allocated and mapped ahead (zeroed): a chunk filled with fresh slots only, as when a
    /// whole 16 MiB arena is frozen at once, took twice as long through the writer. The slots
    /// used so far hold pages already; mapping them now costs no allocation. A failure leaves
    /// the chunk without a writer, written with `pwritev`; so does a write in flight (another
    /// thread's freeze, with `pwritev`, which the seal would make fail): a later freeze tries
    /// again.
    pub(super) fn start_writer(&mut self, page: usize) {
        if self.writer.is_some() || self.owner != process::current_pid() || self.writing > 0 {
            return;
        }
        let len = self.refs.len() * page;
        let Ok(writer) = FileWriter::new(&self.file, len) else {
            return;
        };
        if self.used > 0 && writer.prepare(&self.file, 0, self.used * page).is_err() {
            return;
        }
        // Only a kernel without the seal refuses it; the chunk then stays as before.
        let _ = sys::seal_future_writes(self.file.owned_fd());
        self.writer_ready = self.used;
        self.writer = Some(Arc::new(writer));
    }

    /// Returns the free slots among `slots` (those below the `used` mark) that a placement took
    /// and will not use.
    pub(super) fn give_back(&mut self, slots: &[usize]) {
        for &i in slots.iter().filter(|&&i| i < self.used) {
            self.free.insert(i);
        }
    }

    /// Keeps the dead slots of this retired chunk for later freezes to write over, through its
    /// writer, made now if it has none; [`Store::seal_if_done`] seals it against every other
    /// writer once no write to it is in flight. Its free slots hold pages (they were never
    /// punched), so writing them allocates nothing. Only for the open chunk being retired, which
    /// is this process's own and never a file chunk; returns whether it keeps them, which it
    /// does not when the writer cannot be mapped. The chunk then holds two kernel mappings (its view and
    /// its writer) where a sealed one holds one: 2 per 16 MiB of frozen pages, about 3,000 for
    /// all the memory of this machine (the process limit is 65,530).
    pub(super) fn keep_for_reuse(&mut self, page: usize) -> bool {
        debug_assert!(self.owner == process::current_pid() && self.lazy.is_none());
        if self.writer.is_none() {
            let Ok(writer) = FileWriter::new(&self.file, self.refs.len() * page) else {
                return false;
            };
            self.writer = Some(Arc::new(writer));
            // Allocated, not mapped ahead: a slot written over takes one fault on its first
            // reuse, which costs what mapping it now would, and a whole arena frozen at once
            // (each full chunk retired on the way) pays nothing (1 GiB: 750 ms with the
            // mapping populated here, 540 ms without).
            self.writer_ready = self.used;
        }
        // Slots the writer allocated ahead and no freeze used are free slots like the dead ones.
        for i in self.used..self.writer_ready {
            self.free.insert(i);
        }
        self.used = self.used.max(self.writer_ready);
        self.reusable = true;
        true
    }

    /// Slots the writer allocated ahead that no freeze has used yet (none once the chunk is
    /// retired: they are dead then).
    pub(super) fn ready_unused(&self) -> usize {
        if self.retired {
            0
        } else {
            self.writer_ready.saturating_sub(self.used)
        }
    }

    /// The chunk's view, made now if it has none yet.
    pub(super) fn view(&mut self, page: usize) -> Result<Arc<FileView>> {
        if let Some(v) = &self.view {
            return Ok(Arc::clone(v));
        }
        let v = Arc::new(FileView::new(&self.file, self.refs.len() * page)?);
        Ok(Arc::clone(self.view.insert(v)))
    }
}

impl Store {
    /// Chooses a slot for each page of the buffers `bufs` (whole pages): among the open chunk's
    /// dead slots if it has enough, else (for short runs) among the dead slots of the reusable
    /// full chunk with the most, else fresh slots of the open chunk, else a new chunk. Looking
    /// for a full chunk visits every chunk: one step per 16 MiB of frozen pages. Returns the chunk and the slot indices; the slots taken
    /// from the chunk's free slots are no longer free (see [`Chunk::give_back`]), and the fresh
    /// ones are those at or past its `used` mark.
    pub(super) fn chunk_with_room(
        &self,
        st: &mut StoreState,
        bufs: &[&[u8]],
        reuse_below: usize,
    ) -> Result<(usize, Vec<usize>)> {
        let pages: usize = bufs.iter().map(|b| b.len() / self.page).sum();
        let short = bufs.iter().all(|b| b.len() / self.page < reuse_below);
        // Whether the full chunks were looked at already (retiring the open chunk adds none
        // with room: it is retired because its free and fresh slots fell short).
        let mut looked = false;
        if let Some(cur) = st.current {
            let c = st.chunks[cur].as_mut().expect("current chunk is open");
            if c.owner != process::current_pid() {
                // Inherited across fork(): stop allocating from it, but leave it as it is.
                c.retired = true;
                st.current = None;
                return self.chunk_with_room(st, bufs, reuse_below);
            }
            if c.free.len < pages && short {
                looked = true;
                if let Some(found) = self.place_in_reusable(st, bufs, reuse_below, pages) {
                    return Ok(found);
                }
            }
            let c = st.chunks[cur].as_mut().expect("current chunk is open");
            if let Some(slots) = self.place(c, bufs, reuse_below) {
                return Ok((cur, slots));
            }
            self.retire(st, cur);
        }
        if short && !looked {
            if let Some(found) = self.place_in_reusable(st, bufs, reuse_below, pages) {
                return Ok(found);
            }
        }
        let fd = sys::create_backing_file(self.dir.as_deref())?;
        let file = BackingFile::new(fd);
        let len = self.chunk_pages * self.page;
        file.set_len(len)?;
        sys::seal_size(file.owned_fd())?;
        let mut chunk = Chunk {
            owner: process::current_pid(),
            file: Arc::new(file),
            view: None,
            writer: None,
            writer_ready: 0,
            refs: vec![0; self.chunk_pages],
            used: 0,
            live: 0,
            retired: false,
            reusable: false,
            writing: 0,
            sealed: false,
            dead_held: 0,
            pending: 0,
            lazy: None,
            free: FreeSlots::new(self.chunk_pages),
            populated: false,
        };
        let slots = self
            .place(&mut chunk, bufs, reuse_below)
            .expect("a new chunk takes up to a chunk's worth of pages");
        // Chunk numbers are never reused, so a stale slot can never name a newer chunk.
        st.chunks.push(Some(chunk));
        let id = st.chunks.len() - 1;
        st.current = Some(id);
        Ok((id, slots))
    }

    /// Dead slots for the `pages` pages of `bufs` (short runs only) in the retired, reusable
    /// chunk with the most of them, if one has enough: writing over them allocates nothing,
    /// where fresh slots cost a new page each (allocated, zeroed and mapped).
    fn place_in_reusable(
        &self,
        st: &mut StoreState,
        bufs: &[&[u8]],
        reuse_below: usize,
        pages: usize,
    ) -> Option<(usize, Vec<usize>)> {
        let me = process::current_pid();
        let (best, _) = st
            .chunks
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
            .filter(|(_, c)| c.reusable && c.owner == me && c.free.len >= pages)
            .map(|(i, c)| (i, c.free.len))
            .max_by_key(|&(_, free)| free)?;
        let c = st.chunks[best].as_mut().expect("found open");
        self.place(c, bufs, reuse_below).map(|slots| (best, slots))
    }

    /// Slots in `c` for the pages of `bufs`, or `None` (and `c` unchanged) if it has not enough
    /// room. A buffer of at least `reuse_below` pages gets consecutive slots (a run of free ones,
    /// or fresh ones); a shorter one takes the lowest free slots, then fresh ones. The free slots
    /// taken are taken out of `c.free`; `c.used` is left for the caller to move.
    fn place(&self, c: &mut Chunk, bufs: &[&[u8]], reuse_below: usize) -> Option<Vec<usize>> {
        let runs = || bufs.iter().map(|b| b.len() / self.page);
        let mut used = c.used;
        let mut slots = Vec::with_capacity(runs().sum());
        // All the short runs in one run of free slots, if there is one: one `pwritev` for them.
        let short: usize = runs().filter(|&n| n < reuse_below).sum();
        let mut together = if short > 1 {
            c.free.take_run(short)
        } else {
            None
        };
        for n in runs() {
            if n >= reuse_below {
                let start = c.free.take_run(n).unwrap_or_else(|| {
                    used += n;
                    used - n
                });
                slots.extend(start..start + n);
            } else if let Some(start) = &mut together {
                slots.extend(*start..*start + n);
                *start += n;
            } else {
                for _ in 0..n {
                    slots.push(c.free.pop_lowest().unwrap_or_else(|| {
                        used += 1;
                        used - 1
                    }));
                }
            }
        }
        if used > self.chunk_pages {
            c.give_back(&slots);
            return None;
        }
        Some(slots)
    }

    /// Stops handing out fresh slots from `chunk`; it is sealed once its writes are done. A
    /// memory store keeps its dead slots for reuse (see [`Chunk::keep_for_reuse`]); otherwise
    /// they are punched out.
    fn retire(&self, st: &mut StoreState, chunk: usize) {
        if st.current == Some(chunk) {
            st.current = None;
        }
        let c = st.chunks[chunk].as_mut().expect("retiring an open chunk");
        c.retired = true;
        if self.dir.is_none() && c.keep_for_reuse(self.page) {
            self.seal_if_done(st, chunk);
            return;
        }
        let free = std::mem::replace(&mut c.free, FreeSlots::new(0));
        // Slots the writer allocated ahead and no freeze used are dead too.
        let unused = c.used..c.writer_ready.max(c.used);
        let free = free
            .iter()
            .chain(unused)
            .map(|i| SlotId::new(chunk as u32, i as u32));
        self.punch(st, free.collect());
        self.seal_if_done(st, chunk);
    }

    /// Write-seals a retired chunk with no write in flight; closes it if nothing is live.
    pub(super) fn seal_if_done(&self, st: &mut StoreState, chunk: usize) {
        let c = st.chunks[chunk].as_ref().expect("open chunk");
        if !c.retired || c.writing > 0 {
            return;
        }
        if c.pending > 0 {
            // The kernel refuses to punch holes once the chunk is sealed.
            self.process_pending(st);
        }
        let c = st.chunks[chunk].as_mut().expect("open chunk");
        if !c.reusable {
            // The seal below needs the chunk without writable shared mappings.
            c.writer = None;
        }
        if !c.sealed && c.owner == process::current_pid() {
            // Sealing fails only where the kernel does not support it; the chunk is then simply
            // never written again by this crate (a reusable one only through its writer).
            let fd = c.file.owned_fd();
            c.sealed = if c.reusable {
                sys::seal_for_owners(fd)
            } else {
                sys::seal_full(fd)
            }
            .unwrap_or(false);
        }
        if Self::close_if_dead(st, chunk) {
            st.forget_pending_of_closed();
        } else if !st.chunks[chunk].as_ref().expect("open chunk").populated {
            self.populate_view(st, chunk);
        }
    }

    /// Closes a retired chunk with nothing live; returns whether it did.
    pub(super) fn close_if_dead(st: &mut StoreState, chunk: usize) -> bool {
        let c = st.chunks[chunk].as_ref().expect("open chunk");
        if c.retired && c.writing == 0 && c.live == 0 {
            st.held_slots -= c.dead_held + c.pending + c.free.len;
            st.chunks[chunk] = None;
            return true;
        }
        false
    }
}
