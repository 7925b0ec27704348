//! The page store: frozen page images in chunk files, reference-counted, shared by an arena, its
//! snapshots, and every arena made from them.
//!
//! A chunk is a file of [`CHUNK_BYTES`] (sealed against growing and shrinking when it is made).
//! Frozen pages are appended to the current chunk with `pwrite`, so a full file system is an
//! `Error` at the call that freezes, never a SIGBUS later. Pages frozen together get consecutive
//! slots, so a run of them maps with one `mmap`.
//!
//! When a chunk is full it is write-sealed (`F_SEAL_WRITE`): no one, not even through its file
//! descriptor, can change a frozen page afterwards. The kernel refuses to punch holes in a
//! write-sealed file, so memory is returned in two ways: a slot freed while its chunk is still
//! being filled is punched out at once; a sealed chunk is closed (and its memory freed) when its
//! last live slot is freed. The memory a sealed chunk keeps for dead slots is therefore bounded by
//! one chunk per chunk with any live slot; [`StoreStats::held_bytes`] reports it. Chunks are
//! 16 MiB, so open files stay at about one per 16 MiB of frozen pages, not one per snapshot.
//!
//! A snapshot opened from a file adds a *file chunk* ([`Store::add_file_chunk`]): one slot per
//! page stored in the file, backed by a sparse memory file that is filled lazily. Before any
//! slot of it is mapped ([`Store::locate`]) or read ([`Store::view`]), the [`LazyPages`] of the
//! chunk reads those pages from the user's file, checks them and writes them into the chunk (see
//! [`crate::persist`]). A file chunk is never write-sealed, since pages arrive after it is made;
//! the crate is its only writer, and it writes a slot only before anyone can map or read it
//! (a `fork()` child that fills a slot its parent has not filled yet writes the same checked
//! bytes). Its slots count in [`StoreStats::held_bytes`] from the start, read or not.

use crate::error::{Error, Result};
use crate::persist::LazyPages;
use crate::sys::{self, BackingFile};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

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

    /// The slot right after this one in the same chunk (used to find runs that map in one call).
    pub(crate) fn follows(self, prev: SlotId) -> bool {
        !self.is_zero() && !prev.is_zero() && self.0 == prev.0 + 1
    }

    /// The slot `n` places after this one in the same chunk.
    pub(crate) fn offset(self, n: usize) -> SlotId {
        debug_assert!(!self.is_zero());
        SlotId(self.0 + n as u64)
    }
}

/// A read-only private mapping of a whole chunk, for copying frozen pages out without a system
/// call. Private, so it does not count as a writable shared mapping when the chunk is sealed.
#[derive(Debug)]
pub(crate) struct ChunkView {
    map: memmap2::Mmap,
}

impl ChunkView {
    /// The chunk's bytes. Only slots that are live (written and held) may be read: reading a
    /// punched-out slot would allocate memory for it.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }
}

#[derive(Debug)]
struct Chunk {
    /// The process that made the chunk. A `fork()` child shares the file with its parent, so it
    /// must never write, seal or punch it: its own freezes go to chunks it makes itself.
    owner: u32,
    file: Arc<BackingFile>,
    view: Option<Arc<ChunkView>>,
    /// Per slot, the number of page-table leaves (and in-flight freezes) that hold it.
    refs: Vec<u32>,
    /// Slots handed out so far; the chunk is full when this reaches its slot count.
    used: usize,
    /// Slots with a non-zero count.
    live: usize,
    /// No more slots are handed out; the chunk is sealed once its last write is done.
    retired: bool,
    /// Writes into handed-out slots still in progress (sealing waits for them).
    writing: usize,
    /// The kernel has write-sealed the file.
    sealed: bool,
    /// Slots that were freed after the chunk was sealed and still occupy memory.
    dead_held: usize,
    /// Freed slots waiting in [`StoreState::pending`] to be punched out.
    pending: usize,
    /// For a file chunk, where its slots' bytes come from.
    lazy: Option<Arc<LazyPages>>,
}

#[derive(Debug, Default)]
struct StoreState {
    chunks: Vec<Option<Chunk>>,
    current: Option<usize>,
    live_slots: usize,
    held_slots: usize,
    /// Freed slots of unsealed chunks, not yet punched out.
    pending: Vec<SlotId>,
}

/// Counters describing the page store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Frozen pages that some snapshot, arena or proxy still refers to.
    pub live_pages: usize,
    /// Bytes of memory (or disk) the store occupies, including dead pages in sealed chunks.
    pub held_bytes: usize,
    /// Open chunk files (file descriptors).
    pub chunk_files: usize,
    /// Chunk files the kernel has write-sealed.
    pub sealed_chunk_files: usize,
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

/// A run of freshly frozen slots, held until a page table takes them.
pub(crate) struct FrozenRun<'a> {
    store: &'a Store,
    first: SlotId,
    len: usize,
}

impl FrozenRun<'_> {
    pub(crate) fn first(&self) -> SlotId {
        self.first
    }
}

impl Drop for FrozenRun<'_> {
    fn drop(&mut self) {
        let slots: Vec<SlotId> = (0..self.len).map(|i| self.first.offset(i)).collect();
        self.store.release(&slots);
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

    /// The longest run [`Store::freeze`] accepts, in pages.
    pub(crate) fn max_run_pages(&self) -> usize {
        self.chunk_pages
    }

    fn lock(&self) -> MutexGuard<'_, StoreState> {
        // A panic while the lock was held left counts that are still consistent (every update is
        // a single step), so the poison flag carries no information.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies the buffers (whole pages each, at most [`Store::max_run_pages`] in all) into
    /// consecutive new slots with one `pwritev`: scattered pages frozen together cost one system
    /// call, and their slots are adjacent, so restoring them reads one contiguous range.
    pub(crate) fn freeze(&self, bufs: &[&[u8]]) -> Result<FrozenRun<'_>> {
        let bytes: usize = bufs.iter().map(|b| b.len()).sum();
        let len = bytes / self.page;
        assert!(
            bufs.iter().all(|b| b.len() % self.page == 0) && (1..=self.chunk_pages).contains(&len),
            "freeze takes 1..={} whole pages, got {bytes} bytes",
            self.chunk_pages,
        );
        let (file, chunk, index) = {
            let mut st = self.lock();
            self.punch_pending(&mut st);
            let chunk = self.chunk_with_room(&mut st, len)?;
            let c = st.chunks[chunk].as_mut().expect("current chunk is open");
            let index = c.used;
            c.used += len;
            for r in &mut c.refs[index..index + len] {
                *r = 1;
            }
            c.live += len;
            c.writing += 1;
            let file = Arc::clone(&c.file);
            st.live_slots += len;
            st.held_slots += len;
            (file, chunk, index)
        };
        let run = FrozenRun {
            store: self,
            first: SlotId::new(chunk as u32, index as u32),
            len,
        };
        let written = file.write_all_vectored_at(bufs, index * self.page);
        {
            let mut st = self.lock();
            let c = st.chunks[chunk]
                .as_mut()
                .expect("chunk with live slots is open");
            c.writing -= 1;
            if c.used == self.chunk_pages {
                c.retired = true;
            }
            self.seal_if_done(&mut st, chunk);
        }
        // On failure `run` is dropped, which frees the slots again (punching any partial write).
        written.map(|()| run)
    }

    fn chunk_with_room(&self, st: &mut StoreState, len: usize) -> Result<usize> {
        if let Some(cur) = st.current {
            let c = st.chunks[cur].as_ref().expect("current chunk is open");
            if c.owner != std::process::id() {
                // Inherited across fork(): stop allocating from it, but leave it as it is.
                st.chunks[cur].as_mut().expect("open").retired = true;
                st.current = None;
                return self.chunk_with_room(st, len);
            }
            if !c.retired && c.used + len <= self.chunk_pages {
                return Ok(cur);
            }
            if !c.retired {
                self.retire(st, cur);
            }
        }
        let fd = sys::create_backing_file(self.dir.as_deref())?;
        let file = BackingFile::new(fd);
        file.set_len(self.chunk_pages * self.page)?;
        sys::seal_size(file.owned_fd())?;
        let chunk = Chunk {
            owner: std::process::id(),
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
        };
        // Chunk numbers are never reused, so a stale slot can never name a newer chunk.
        st.chunks.push(Some(chunk));
        let id = st.chunks.len() - 1;
        st.current = Some(id);
        Ok(id)
    }

    /// Stops handing out slots from `chunk`; it is sealed once its writes are done.
    fn retire(&self, st: &mut StoreState, chunk: usize) {
        st.chunks[chunk]
            .as_mut()
            .expect("retiring an open chunk")
            .retired = true;
        if st.current == Some(chunk) {
            st.current = None;
        }
        self.seal_if_done(st, chunk);
    }

    /// Write-seals a retired chunk with no write in flight; closes it if nothing is live.
    fn seal_if_done(&self, st: &mut StoreState, chunk: usize) {
        let c = st.chunks[chunk].as_ref().expect("open chunk");
        if !c.retired || c.writing > 0 {
            return;
        }
        if st.current == Some(chunk) {
            st.current = None;
        }
        if c.pending > 0 {
            // The kernel refuses to punch holes once the chunk is sealed.
            self.punch_pending(st);
        }
        let c = st.chunks[chunk].as_mut().expect("open chunk");
        if !c.sealed && c.owner == std::process::id() {
            // Sealing fails only where the kernel does not support it; the chunk is then simply
            // never written again by this crate.
            c.sealed = sys::seal_write(c.file.owned_fd()).unwrap_or(false);
        }
        if Self::close_if_dead(st, chunk) {
            st.forget_pending_of_closed();
        }
    }

    /// Closes a retired chunk with nothing live; returns whether it did.
    fn close_if_dead(st: &mut StoreState, chunk: usize) -> bool {
        let c = st.chunks[chunk].as_ref().expect("open chunk");
        if c.retired && c.writing == 0 && c.live == 0 {
            st.held_slots -= c.dead_held + c.pending;
            st.chunks[chunk] = None;
            return true;
        }
        false
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
    /// Freed slots of unsealed chunks are punched out in batches ([`PUNCH_BATCH`] slots, or
    /// before the next freeze or stats call): the pages of one dropped snapshot are released by
    /// many page-table leaves, and one `fallocate` per run beats one per leaf.
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
            self.punch_pending(&mut st);
        }
    }

    /// Punches out the freed slots waiting in `pending`, one `fallocate` per run.
    fn punch_pending(&self, st: &mut StoreState) {
        let mut freed = std::mem::take(&mut st.pending);
        freed.sort_unstable();
        let mut retry = Vec::new();
        let mut i = 0;
        while i < freed.len() {
            let mut j = i + 1;
            while j < freed.len() && freed[j].follows(freed[j - 1]) {
                j += 1;
            }
            let (first, len) = (freed[i], j - i);
            let c = st.chunks[first.chunk()]
                .as_mut()
                .expect("pending slots belong to open chunks");
            let punched = if c.sealed || c.owner != std::process::id() {
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
                Ok(()) => {
                    c.pending -= len;
                    st.held_slots -= len;
                }
                // A passing failure (out of memory, say): the slots wait for the next punch.
                Err(Some(errno))
                    if !matches!(errno, libc::EOPNOTSUPP | libc::EPERM | libc::EINVAL) =>
                {
                    retry.extend_from_slice(&freed[i..j]);
                }
                // The file system has no holes, or the chunk was sealed meanwhile (or belongs to
                // another process): the pages stay until the chunk closes (`held_bytes`).
                Err(_) => {
                    c.pending -= len;
                    c.dead_held += len;
                }
            }
            i = j;
        }
        st.pending = retry;
    }

    /// Adds a file chunk of `slots` slots whose bytes `lazy` provides on first use, all held by
    /// the returned run until a page table takes the ones it needs.
    pub(crate) fn add_file_chunk(
        &self,
        lazy: Arc<LazyPages>,
        slots: usize,
    ) -> Result<FrozenRun<'_>> {
        assert!(
            (1..=u32::MAX as usize).contains(&slots),
            "a file chunk has 1..=u32::MAX slots, got {slots}"
        );
        let file = BackingFile::new(sys::create_backing_file(self.dir.as_deref())?);
        file.set_len(slots * self.page)?;
        sys::seal_size(file.owned_fd())?;
        let mut st = self.lock();
        st.chunks.push(Some(Chunk {
            owner: std::process::id(),
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
        }));
        st.live_slots += slots;
        st.held_slots += slots;
        let chunk = st.chunks.len() - 1;
        Ok(FrozenRun {
            store: self,
            first: SlotId::new(chunk as u32, 0),
            len: slots,
        })
    }

    /// For a file chunk, its source and memory file: what [`Store::fill`] needs.
    fn lazy_of(c: &Chunk) -> Option<(Arc<LazyPages>, Arc<BackingFile>)> {
        c.lazy
            .as_ref()
            .map(|l| (Arc::clone(l), Arc::clone(&c.file)))
    }

    /// Brings the `len` slots from `slot` of a file chunk into memory (see the module docs).
    /// Called without the store lock: reading the user's file may take a while.
    fn fill(
        lazy: Option<(Arc<LazyPages>, Arc<BackingFile>)>,
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

    /// A read-only mapping of the chunk holding `slot` (not [`SlotId::ZERO`]) and the slot's
    /// byte offset in it; the `len` consecutive slots from `slot` may be read.
    pub(crate) fn view(&self, slot: SlotId, len: usize) -> Result<(Arc<ChunkView>, usize)> {
        let (view, lazy) = {
            let mut st = self.lock();
            let c = st.chunks[slot.chunk()]
                .as_mut()
                .expect("a held slot's chunk is open");
            let view = match &c.view {
                Some(v) => Arc::clone(v),
                None => {
                    let map = c.file.map_read_only(c.refs.len() * self.page)?;
                    let v = Arc::new(ChunkView { map });
                    c.view = Some(Arc::clone(&v));
                    v
                }
            };
            (view, Self::lazy_of(c))
        };
        Self::fill(lazy, slot, len)?;
        Ok((view, slot.index() * self.page))
    }

    pub(crate) fn stats(&self) -> StoreStats {
        let mut st = self.lock();
        self.punch_pending(&mut st);
        StoreStats {
            live_pages: st.live_slots,
            held_bytes: st.held_slots * self.page,
            chunk_files: st.chunks.iter().flatten().count(),
            sealed_chunk_files: st.chunks.iter().flatten().filter(|c| c.sealed).count(),
        }
    }
}
