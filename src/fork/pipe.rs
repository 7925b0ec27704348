//! The result pipes' read ends in the parent, registered so that every new child closes the
//! pipes of branches that are not its own.

use crate::sys::process;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// Descriptors a new child closes first: the read ends of branches in flight on other threads
/// and, in a child, its own result pipe (so its nested branches do not hold it open). Changed
/// only under [`process::fork_lock`], which orders the accesses; a full table leaves a descriptor open in
/// siblings forked meanwhile, which costs an idle descriptor until they exit.
pub(super) static CLOSE_IN_CHILD: [AtomicI32; 64] = [const { AtomicI32::new(-1) }; 64];

/// Registers `fd` in [`CLOSE_IN_CHILD`]; the caller holds [`process::fork_lock`].
pub(super) fn register(fd: RawFd) -> Option<usize> {
    let slot = CLOSE_IN_CHILD
        .iter()
        .position(|s| s.load(Ordering::Relaxed) < 0)?;
    CLOSE_IN_CHILD[slot].store(fd, Ordering::Relaxed);
    Some(slot)
}

/// A pipe's read end in the parent; unregistered and closed under [`process::fork_lock`], so that no
/// child can close a later descriptor that reuses its number.
pub(super) struct ReadEnd {
    pub(super) fd: Option<OwnedFd>,
    pub(super) slot: Option<usize>,
}

impl Drop for ReadEnd {
    fn drop(&mut self) {
        let _lock = process::fork_lock();
        if let Some(slot) = self.slot {
            CLOSE_IN_CHILD[slot].store(-1, Ordering::Relaxed);
        }
        drop(self.fd.take());
    }
}
