//! Freed slots: they wait in the store's pending list, then become free slots of their chunk,
//! to be written over by later freezes, or are punched out of their chunk's file.
//!
//! A memory store keeps dead slots for reuse in the open chunk and in its reusable full chunks
//! (see [`Chunk::keep_for_reuse`](super::chunk::Chunk::keep_for_reuse)); a store in a
//! [`backing_dir`](crate::ArenaBuilder::backing_dir) returns them to the file system at once
//! (its space is what the directory bounds). Elsewhere dead slots are punched out, in batches,
//! or held by a sealed chunk until it closes.

use super::{SlotId, Store, StoreState};
use crate::error::Error;
use crate::page_set::coalesce;
use crate::sys::{self, process};

impl StoreState {
    pub(super) fn forget_pending_of_closed(&mut self) {
        let chunks = &self.chunks;
        self.pending.retain(|s| chunks[s.chunk()].is_some());
    }
}

impl Store {
    /// Moves the freed slots waiting in `pending` to their open chunk's free slots, or punches
    /// them out. Not while a branch of this process may be running
    /// ([`process::children_alive`](crate::sys::process::children_alive)): it may still read a slot freed
    /// after it was forked, through its copy of an arena or snapshot.
    pub(super) fn process_pending(&self, st: &mut StoreState) {
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
            if reuse && (c.reusable || !c.retired) && c.owner == me {
                c.free.insert(s.index());
            } else {
                punch.push(s);
            }
        }
        self.punch(st, punch);
    }

    /// Punches the dead `slots` out of their chunks, one `fallocate` per run.
    pub(super) fn punch(&self, st: &mut StoreState, mut slots: Vec<SlotId>) {
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
}
