//! Injected failures of system calls, for the anomaly tests (cargo feature `fault-injection`,
//! off by default: without it [`point`] only returns the guard of [`crate::cost`], which times
//! the call with the `cost-split` feature, and nothing else here exists).
//!
//! Every system call the crate makes passes through [`point`] first, naming itself. A test arms
//! a countdown on its thread ([`fail_nth`](crate::fault_injection::fail_nth)): the n-th call from
//! then on fails with the chosen errno instead of reaching the kernel, exactly as if the kernel
//! had returned it. Counting the calls a workload makes lets a test fail each of them in turn,
//! the way SQLite tests every failure point of every test case.
//!
//! `EINTR` is only ever injected into calls the kernel can interrupt ([`Call::Interruptible`]),
//! which the crate retries; so an armed `EINTR` counts only those calls.

use crate::cost::{self, InPhase, Phase};

/// Whether the kernel can interrupt a call with `EINTR` (and the crate then retries it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    /// Can fail with `EINTR`: read, write, open, truncate, allocate, wait, poll, populate.
    Interruptible,
    /// Cannot be interrupted (mmap, madvise(DONTNEED), memfd_create, fcntl, lseek, ioctl, fork,
    /// pipe, kill), or retried inside the standard library (reads of `/proc`).
    Plain,
}

/// Passed before every system call, naming it: fails it if a test armed a failure for it, else
/// returns a guard that counts the call, and times it with the `cost-split` feature, while it
/// is alive: keep it until the call returns.
#[inline(always)]
pub(crate) fn point(_op: &'static str, _call: Call) -> Result<InPhase, nix::errno::Errno> {
    #[cfg(feature = "fault-injection")]
    armed::point(_op, _call)?;
    Ok(cost::enter(Phase::SystemCalls))
}

#[cfg(feature = "fault-injection")]
pub(crate) mod armed {
    use super::Call;
    use nix::errno::Errno;
    use std::cell::{Cell, RefCell};

    #[derive(Clone, Copy)]
    struct Plan {
        /// Calls (of the kind `errno` applies to) still to pass before one fails; 0: disarmed.
        countdown: u64,
        errno: i32,
        /// The call that failed, once it has.
        failed: Option<&'static str>,
        /// Calls made since the count was last reset: all, and interruptible ones.
        calls: u64,
        interruptible: u64,
    }

    thread_local! {
        static PLAN: Cell<Plan> = const {
            Cell::new(Plan { countdown: 0, errno: 0, failed: None, calls: 0, interruptible: 0 })
        };
        /// The distinct operations whose calls passed a point since the last `take_reached`.
        static REACHED: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
    }

    /// Counts the call and fails it if it is the one armed.
    pub(crate) fn point(op: &'static str, call: Call) -> Result<(), Errno> {
        REACHED.with(|reached| {
            let mut reached = reached.borrow_mut();
            if !reached.contains(&op) {
                reached.push(op);
            }
        });
        PLAN.with(|cell| {
            let mut plan = cell.get();
            plan.calls += 1;
            if call == Call::Interruptible {
                plan.interruptible += 1;
            }
            let applies = plan.errno != libc::EINTR || call == Call::Interruptible;
            let mut result = Ok(());
            if plan.countdown > 0 && applies {
                plan.countdown -= 1;
                if plan.countdown == 0 {
                    plan.failed = Some(op);
                    result = Err(Errno::from_raw(plan.errno));
                }
            }
            cell.set(plan);
            result
        })
    }

    pub(crate) fn arm(n: u64, errno: i32) {
        PLAN.with(|cell| {
            let mut plan = cell.get();
            plan.countdown = n;
            plan.errno = errno;
            plan.failed = None;
            cell.set(plan);
        })
    }

    pub(crate) fn disarm() -> Option<&'static str> {
        PLAN.with(|cell| {
            let mut plan = cell.get();
            plan.countdown = 0;
            let failed = plan.failed.take();
            cell.set(plan);
            failed
        })
    }

    pub(crate) fn calls(interruptible_only: bool) -> u64 {
        PLAN.with(|cell| {
            let plan = cell.get();
            if interruptible_only {
                plan.interruptible
            } else {
                plan.calls
            }
        })
    }

    pub(crate) fn reset_count() {
        PLAN.with(|cell| {
            let mut plan = cell.get();
            plan.calls = 0;
            plan.interruptible = 0;
            cell.set(plan);
        })
    }

    pub(crate) fn take_reached() -> Vec<&'static str> {
        REACHED.with(|reached| std::mem::take(&mut *reached.borrow_mut()))
    }
}
