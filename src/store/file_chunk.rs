//! File chunks: the chunks of snapshots opened from files, whose slots are filled on first use.
//!
//! A snapshot opened from a file adds a *file chunk* ([`Store::add_file_chunk`]): one slot per
//! page stored in the file, backed by a sparse memory file that is filled lazily. Before any
//! slot of it is mapped ([`Store::locate`]) or copied out ([`Store::copy_out`]), the
//! [`PageSource`] of the chunk reads those pages from the user's file, checks them and writes them
//! into the chunk (see [`crate::persist`]). A file chunk is never sealed or populated, since pages
//! arrive after it is made; the crate is its only writer, and it writes a slot only before anyone
//! can map or read it (a `fork()` child that fills a slot its parent has not filled yet writes
//! the same checked bytes). Its slots count in
//! [`StoreStats::held_bytes`](super::StoreStats::held_bytes) from the start, read or not.

use super::chunk::{Chunk, FreeSlots};
use super::{Frozen, SlotId, Store};
use crate::error::Result;
use crate::sys::process;
use crate::sys::{self, BackingFile};
use std::sync::Arc;

/// Where the pages of a file chunk come from when they are first needed: the store never reads
/// a snapshot file itself, it asks the chunk's source (implemented by `persist`, which knows the
/// file format) to fill slots before it reads or maps them.
pub(crate) trait PageSource: Send + Sync + std::fmt::Debug {
    /// Makes slots `first..first + len` of `chunk` hold their pages, or says why it cannot (the
    /// source changed or is damaged). Slots filled before stay filled; nothing unchecked may
    /// reach the chunk.
    fn fill(&self, chunk: &BackingFile, first: usize, len: usize) -> Result<()>;
}

impl Store {
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
            writer: None,
            writer_ready: 0,
            refs: vec![1; slots],
            used: slots,
            live: slots,
            retired: true,
            reusable: false,
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
    pub(super) fn lazy_of(c: &Chunk) -> Option<(Arc<dyn PageSource>, Arc<BackingFile>)> {
        c.lazy
            .as_ref()
            .map(|l| (Arc::clone(l), Arc::clone(&c.file)))
    }

    /// Brings the `len` slots from `slot` of a file chunk into memory (see the module docs).
    /// Called without the store lock: reading the user's file may take a while.
    pub(super) fn fill(
        lazy: Option<(Arc<dyn PageSource>, Arc<BackingFile>)>,
        slot: SlotId,
        len: usize,
    ) -> Result<()> {
        match lazy {
            Some((lazy, file)) => lazy.fill(&file, slot.index(), len),
            None => Ok(()),
        }
    }
}
