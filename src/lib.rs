#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs, missing_debug_implementations)]

mod alloc;
mod arena;
pub mod collections;
mod cost;
mod error;
pub mod fork;
mod page_set;
mod page_table;
pub mod persist;
pub mod proxy;
mod ptr;
mod snapshot;
mod store;
mod sys;
pub mod typed;

pub use alloc::AllocStats;
pub use arena::{Arena, ArenaBuilder, ArenaStats, RawWrites, MAX_REMAPPED_RUNS, REMAP_MIN_RUN};
pub use collections::{ArenaBytes, ArenaMap, ArenaString, ArenaVec, MapMut, MapRef, VecMut};
pub use error::{Error, FileProblem, InvalidPtrReason, Result};
pub use fork::{Branch, ForkError, ForkOptions};
pub use persist::{ContentHash, SaveStats};
pub use proxy::{Proxy, ProxyMut, ProxyRef};
pub use ptr::array::Array;
pub use ptr::value::{Pad, Value};
pub use ptr::Ptr;
pub use snapshot::{Snapshot, MAX_VIEW_MAPPINGS, MAX_VIEW_RUNS};
pub use store::StoreStats;
pub use sys::page_size;
pub use typed::{Lend, Loan, PtrMut, View, ViewMut};

/// Where the time of snapshots and restores goes (cargo feature `cost-split`, off by default):
/// for benchmarks that report the split of a workload's cost. Timing is per thread and on only
/// between [`start`](cost_split::start) and [`stop`](cost_split::stop); each phase then costs
/// two clock reads (entering and leaving), so time the workload itself in a separate pass.
///
/// ```
/// # #[cfg(feature = "cost-split")] {
/// use cowarena::cost_split::{self, Phase};
/// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
/// let start = a.snapshot()?;
/// cost_split::start();
/// a.write(0, b"some bytes")?;
/// a.restore(&start)?;
/// let split = cost_split::stop();
/// assert!(split.time(Phase::Copies) > std::time::Duration::ZERO);
/// for phase in Phase::ALL {
///     println!("{:>12}: {:?}", phase.name(), split.time(phase));
/// }
/// # }
/// # Ok::<(), cowarena::Error>(())
/// ```
#[cfg(feature = "cost-split")]
pub mod cost_split {
    pub use crate::cost::{CostSplit, Phase};

    /// Starts timing this thread's snapshots and restores, from zero.
    pub fn start() {
        crate::cost::timed::start()
    }

    /// The split since [`start`] or the last [`take`], from zero again.
    pub fn take() -> CostSplit {
        crate::cost::timed::take()
    }

    /// Stops timing; returns the split since [`start`] or the last [`take`].
    pub fn stop() -> CostSplit {
        crate::cost::timed::stop()
    }
}

/// Failure injection for tests (cargo feature `fault-injection`, off by default): makes the n-th
/// system call of this thread fail as if the kernel had returned an error, so that a test can
/// fail every call a workload makes, one at a time, and check that nothing is lost.
///
/// ```
/// # #[cfg(feature = "fault-injection")] {
/// use cowarena::fault_injection as fi;
/// let mut a = cowarena::Arena::with_capacity(1 << 16)?;
/// a.write(0, b"kept")?;
/// fi::reset_count();
/// let s = a.snapshot()?;
/// let calls = fi::calls();
/// drop(s);
/// a.write(0, b"more")?;
/// fi::fail_nth(1, libc::ENOSPC);
/// let failed = a.snapshot();
/// assert!(failed.is_err() || calls == 0);
/// fi::disarm();
/// assert_eq!(&a.as_bytes()[..4], b"more");
/// # }
/// # Ok::<(), cowarena::Error>(())
/// ```
#[cfg(feature = "fault-injection")]
pub mod fault_injection {
    use crate::sys::fault::armed;

    /// Arms a failure: the `n`-th system call (counting from 1) this thread makes from now on
    /// fails with `errno` instead of reaching the kernel. For `EINTR`, only calls the kernel can
    /// interrupt count (the crate retries them).
    pub fn fail_nth(n: u64, errno: i32) {
        armed::arm(n, errno)
    }

    /// Disarms; returns the operation whose call failed, if the armed failure happened.
    pub fn disarm() -> Option<&'static str> {
        armed::disarm()
    }

    /// System calls this thread made since [`reset_count`].
    pub fn calls() -> u64 {
        armed::calls(false)
    }

    /// Of [`calls`], those the kernel can interrupt: what an armed `EINTR` counts.
    pub fn interruptible_calls() -> u64 {
        armed::calls(true)
    }

    /// Starts counting calls from zero.
    pub fn reset_count() {
        armed::reset_count()
    }

    /// The distinct operations (as named in [`Error::Os`](crate::Error::Os)) whose system calls
    /// this thread made since the last call, in the order first seen: which failure points a
    /// workload reaches.
    pub fn take_reached() -> Vec<&'static str> {
        armed::take_reached()
    }

    /// A copy of `snapshot`'s bytes, read from its page store's files with `pread`. It maps and
    /// caches nothing and passes no failure point, so a test can check a snapshot between the
    /// steps of a workload without changing which system calls the later steps make (reading
    /// through [`Snapshot::read`](crate::Snapshot::read) or
    /// [`Snapshot::as_bytes`](crate::Snapshot::as_bytes) would map and keep views). Pages of a
    /// snapshot [opened](crate::Snapshot::open) from a file that were not read yet are read from
    /// the file first, as any use of them would.
    ///
    /// # Errors
    /// [`Error::Os`](crate::Error::Os) naming `pread` if a file cannot be read.
    pub fn snapshot_bytes(snapshot: &crate::Snapshot) -> crate::Result<Vec<u8>> {
        let page = crate::page_size();
        let table = snapshot.table();
        let mut bytes = vec![0; snapshot.capacity()];
        let mut result = Ok(());
        table.for_each_run(|first, len, slot| {
            if result.is_ok() {
                result = table.store().locate(slot, len).and_then(|(file, offset)| {
                    file.read_exact_at(&mut bytes[first * page..(first + len) * page], offset)
                });
            }
        });
        result.map(|()| bytes)
    }
}
