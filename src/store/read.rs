//! Reading frozen pages: the file and offset of a slot to map, copies out of chunks' views, and
//! populating a view ahead of the restores that read it.
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

use super::{SlotId, Store, StoreState};
use crate::error::Result;
use crate::page_set::coalesce;
use crate::sys::process;
use crate::sys::{BackingFile, FileView};
use std::sync::Arc;

impl Store {
    /// Maps the live slots of a finished chunk into its view now, so that restores copying from
    /// it take no page fault (see the module docs). Only live slots: they hold no hole.
    pub(super) fn populate_view(&self, st: &mut StoreState, chunk: usize) {
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

    /// For each copy: copies bytes of the consecutive slots starting at its `first` (not
    /// [`SlotId::ZERO`]), from byte `offset` of `first` on, into its `dst`; no system call once
    /// the chunks' views exist (and, for a file chunk, its pages are filled).
    ///
    /// The first line of every source is prefetched before any copy starts, so that the page
    /// walks and cache misses of scattered pages overlap instead of following one another.
    ///
    /// # Safety
    /// Every slot the copies read is held (by a page table borrowed for the call, say), so no one
    /// frees, rewrites or punches it while the copies run.
    pub(crate) unsafe fn copy_out(&self, copies: &mut [CopyOut<'_>]) -> Result<()> {
        let mut fills = Vec::new();
        {
            let mut st = self.lock();
            for copy in copies.iter_mut() {
                let c = st.chunks[copy.first.chunk()]
                    .as_mut()
                    .expect("a held slot's chunk is open");
                let view = c.view(self.page)?;
                if let Some(lazy) = Self::lazy_of(c) {
                    let len = (copy.offset + copy.dst.len()).div_ceil(self.page);
                    fills.push((lazy, copy.first, len));
                }
                copy.view = Some(view);
            }
        }
        for (lazy, first, len) in fills {
            Self::fill(Some(lazy), first, len)?;
        }
        for copy in copies.iter() {
            let at = copy.source(self.page);
            copy.view.as_ref().expect("set above").prefetch(at);
        }
        for copy in copies.iter_mut() {
            let view = copy.view.as_ref().expect("set above");
            // SAFETY: the caller holds the slots read; held slots are never handed out again, so
            // nothing writes or punches them during the copy (a file chunk's are filled above,
            // before any copy).
            unsafe { view.copy_out(copy.source(self.page), copy.dst) };
        }
        Ok(())
    }
}

/// One copy out of the store (see [`Store::copy_out`]).
pub(crate) struct CopyOut<'b> {
    first: SlotId,
    offset: usize,
    dst: &'b mut [u8],
    /// Filled in by `copy_out`: the chunk's view.
    view: Option<Arc<FileView>>,
}

impl<'b> CopyOut<'b> {
    /// Bytes of the slots from `first` on, starting at byte `offset` of `first`, into `dst`.
    pub(crate) fn new(first: SlotId, offset: usize, dst: &'b mut [u8]) -> Self {
        CopyOut {
            first,
            offset,
            dst,
            view: None,
        }
    }

    /// The byte of the chunk's view to copy from.
    fn source(&self, page: usize) -> usize {
        self.first.index() * page + self.offset
    }
}
