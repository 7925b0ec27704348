//! Stamps: odd numbers unique within the process, one per allocation (see the module docs of
//! `alloc`).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Stamps a thread takes from the global counter at a time.
pub(super) const STAMP_BLOCK: u64 = 1 << 16;

thread_local! {
    /// The thread's next stamp and the end of its block; equal when the block is used up.
    static STAMPS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// The next stamp: odd and never repeated within the process. A thread takes blocks of stamps
/// from a global counter so that the common case is a thread-local increment.
///
/// Never inlined: in another crate (where the typed fast paths are inlined) the thread-local's
/// accessor is opaque and costs two calls, one of them indirect; here it is one direct call.
#[inline(never)]
pub(super) fn fresh_stamp() -> u64 {
    STAMPS.with(|r| {
        let (next, end) = r.get();
        // Below the floor: the block predates a snapshot opened from a file (see
        // `stamps_above`), whose stamps it may repeat.
        if next == end || next < FLOOR.load(Ordering::Relaxed) {
            return next_stamp_block(r);
        }
        r.set((next + 2, end));
        next
    })
}

/// The next block of stamps to hand out.
pub(super) static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);

/// No stamp below this is handed out any more: raised when a snapshot made by another process
/// (whose stamps come from its own counter) is opened from a file.
static FLOOR: AtomicU64 = AtomicU64::new(0);

/// A bound above every stamp this process has handed out or holds from a file: what a saved
/// file records, so that a process that opens it can stay above its stamps. (Stamps of `fork()`
/// children, drawn from random ranges above 2^40, are not covered: a process's own counter
/// stays far below them.)
pub(crate) fn stamp_ceiling() -> u64 {
    let handed_out = NEXT_BLOCK.load(Ordering::Relaxed) * STAMP_BLOCK * 2;
    handed_out.max(FLOOR.load(Ordering::Relaxed))
}

/// From now on, every stamp this process hands out (on any thread) is at least `ceiling`: so a
/// new object never repeats the stamp of an object in a snapshot opened from a file, and an old
/// `Ptr` saved there can never name it.
pub(crate) fn stamps_above(ceiling: u64) {
    NEXT_BLOCK.fetch_max(ceiling / (2 * STAMP_BLOCK) + 1, Ordering::Relaxed);
    FLOOR.fetch_max(ceiling, Ordering::Relaxed);
}

/// Moves a `fork()` child to stamps its parent (and its siblings) do not use: the child starts
/// with copies of the parent's counters, and a state it sends back must not repeat a stamp the
/// parent hands out meanwhile. The child draws from a range of 2^36 blocks, from block 2^40 or
/// 2^38 blocks above the floor if that is higher, picked from its pid and the time, so two
/// processes collide only with negligible probability.
pub(crate) fn after_fork_in_child() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = (u64::from(std::process::id()) << 32) ^ nanos ^ NEXT_BLOCK.load(Ordering::Relaxed);
    // splitmix64 finalizer: spreads nearby pids and times over the whole range.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    // Far above the floor too: a file opened earlier may have come from a child's range, and
    // then the parent's own counter starts at the floor.
    let floor_block = FLOOR.load(Ordering::Relaxed) / (2 * STAMP_BLOCK) + 1;
    let base = (1u64 << 40).max(floor_block + (1 << 38));
    NEXT_BLOCK.store(base + (x & ((1 << 36) - 1)), Ordering::Relaxed);
    STAMPS.with(|r| r.set((0, 0)));
}

/// The largest stamp ceiling a file may record. A process that opens no file stays below block
/// 2^40 + 2^36 (a `fork()` child's range, the highest), so below stamp 2^58; each generation of
/// processes that opens a file another one saved and forks can raise that by under 2^39 blocks
/// (2^56 stamps), so about a hundred generations fit below this. A file claiming more is
/// refused, which keeps every process's blocks below [`MAX_BLOCK`].
pub(crate) const MAX_STAMP_CEILING: u64 = 1 << 62;

/// The stamps of block `b` lie below `(b + 1) * STAMP_BLOCK * 2`: blocks below this keep them
/// below 2^63, far from overflowing.
const MAX_BLOCK: u64 = 1 << 46;

/// Takes a new block of stamps for this thread and returns its first.
///
/// # Panics
/// If the process has used up its stamps (2^46 blocks of 2^16: not reachable by allocating,
/// and files cannot push the counter there, see [`MAX_STAMP_CEILING`]).
#[cold]
#[inline(never)]
pub(super) fn next_stamp_block(r: &Cell<(u64, u64)>) -> u64 {
    loop {
        let block = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed);
        assert!(
            block < MAX_BLOCK,
            "cowarena: the process has used up its stamps"
        );
        let first = block * STAMP_BLOCK;
        let (next, end) = ((first << 1) | 1, ((first + STAMP_BLOCK) << 1) | 1);
        let floor = FLOOR.load(Ordering::Relaxed);
        if next >= floor {
            r.set((next + 2, end));
            return next;
        }
        // A block taken just before another thread raised the floor: jump past the floor.
        NEXT_BLOCK.fetch_max(floor / (2 * STAMP_BLOCK) + 1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_stay_above_a_raised_floor() {
        let before = fresh_stamp();
        let ceiling = stamp_ceiling() + 1000 * STAMP_BLOCK;
        stamps_above(ceiling);
        let after = fresh_stamp();
        assert!(before < ceiling && after >= ceiling && after & 1 == 1);
        assert!(stamp_ceiling() > after);
        let other = std::thread::spawn(fresh_stamp).join().unwrap();
        assert!(other >= ceiling && other != after);
    }

    #[test]
    fn stamps_are_odd_and_unique_across_blocks_and_threads() {
        let take = || {
            (0..3 * STAMP_BLOCK)
                .map(|_| fresh_stamp())
                .collect::<Vec<u64>>()
        };
        let mine = take();
        let theirs = std::thread::spawn(take).join().unwrap();
        let mut all: Vec<u64> = mine.iter().chain(&theirs).copied().collect();
        assert!(all.iter().all(|s| s & 1 == 1));
        assert!(mine.windows(2).all(|w| w[0] < w[1]));
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 6 * STAMP_BLOCK as usize);
    }
}
