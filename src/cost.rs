//! Where the time of snapshots and restores goes, for benchmarks (cargo feature `cost-split`,
//! off by default: without it [`enter`] returns an empty guard and nothing is timed).
//!
//! The arena enters a [`Phase`] around each step of a snapshot or restore, and every system
//! call is a phase of its own ([`Phase::SystemCalls`], entered by the failure point each call
//! passes). Phases nest; each is charged only the time spent in it and not in a phase entered
//! inside it, so the phases never count a nanosecond twice and their sum is at most the time of
//! the calls. Timing is on only on threads that asked for it
//! ([`cost_split::start`](crate::cost_split::start)), so the feature costs other code a branch
//! per phase.

/// A step of a snapshot or restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Asking the kernel which pages were written through raw pointers, and protecting them
    /// again after a restore (`PAGEMAP_SCAN`, `UFFDIO_WRITEPROTECT`).
    RawWrites,
    /// Finding the pages written since the last snapshot and batching them for the store.
    Freeze,
    /// Placing frozen pages in store slots and copying them there.
    Store,
    /// Updating and cloning page tables (the snapshot's and the arena's).
    PageTable,
    /// A restore finding the pages that differ from its target and marking them.
    RestoreWalk,
    /// A restore copying its target's bytes into the arena, or mapping them.
    Copies,
    /// Returning private copies to the kernel after a snapshot or restore.
    Shedding,
    /// Inside a system call.
    SystemCalls,
}

#[cfg(feature = "cost-split")]
impl Phase {
    /// Every phase, in the order [`CostSplit`] reports them.
    pub const ALL: [Phase; 8] = [
        Phase::RawWrites,
        Phase::Freeze,
        Phase::Store,
        Phase::PageTable,
        Phase::RestoreWalk,
        Phase::Copies,
        Phase::Shedding,
        Phase::SystemCalls,
    ];

    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Phase::RawWrites => "raw writes",
            Phase::Freeze => "freeze",
            Phase::Store => "store",
            Phase::PageTable => "page table",
            Phase::RestoreWalk => "restore walk",
            Phase::Copies => "copies",
            Phase::Shedding => "shedding",
            Phase::SystemCalls => "system calls",
        }
    }
}

/// The time each [`Phase`] took, and the system calls made, since timing started or was last
/// taken on this thread.
#[cfg(feature = "cost-split")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CostSplit {
    nanos: [u64; Phase::ALL.len()],
    system_calls: u64,
}

#[cfg(feature = "cost-split")]
impl CostSplit {
    /// The time spent in `phase` (and not in a phase entered inside it).
    pub fn time(&self, phase: Phase) -> std::time::Duration {
        std::time::Duration::from_nanos(self.nanos[phase as usize])
    }

    /// The system calls made.
    pub fn system_calls(&self) -> u64 {
        self.system_calls
    }

    /// The time of every phase together.
    pub fn total(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.nanos.iter().sum())
    }
}

/// Leaves the phase entered by [`enter`] when dropped.
#[must_use = "the phase lasts as long as the guard"]
pub(crate) struct InPhase {
    #[cfg(feature = "cost-split")]
    outer: Option<Option<Phase>>,
}

impl InPhase {
    /// Runs `f` in the phase, then leaves it.
    #[inline(always)]
    pub(crate) fn then<R>(self, f: impl FnOnce() -> R) -> R {
        let result = f();
        drop(self);
        result
    }
}

/// Enters `phase` until the guard is dropped.
#[cfg(not(feature = "cost-split"))]
#[inline(always)]
pub(crate) fn enter(_phase: Phase) -> InPhase {
    InPhase {}
}

#[cfg(feature = "cost-split")]
pub(crate) use timed::enter;

#[cfg(feature = "cost-split")]
pub(crate) mod timed {
    use super::{CostSplit, InPhase, Phase};
    use std::cell::{Cell, RefCell};
    use std::time::Instant;

    struct Clock {
        current: Option<Phase>,
        since: Instant,
        split: CostSplit,
    }

    thread_local! {
        static ON: Cell<bool> = const { Cell::new(false) };
        static CLOCK: RefCell<Option<Clock>> = const { RefCell::new(None) };
    }

    /// Charges the time since the last switch to the current phase and makes `next` current;
    /// returns the phase that was current.
    fn switch(next: Option<Phase>) -> Option<Phase> {
        CLOCK.with(|clock| {
            let mut clock = clock.borrow_mut();
            let clock = clock.get_or_insert_with(|| Clock {
                current: None,
                since: Instant::now(),
                split: CostSplit::default(),
            });
            let now = Instant::now();
            if let Some(current) = clock.current {
                clock.split.nanos[current as usize] += (now - clock.since).as_nanos() as u64;
            }
            if next == Some(Phase::SystemCalls) {
                clock.split.system_calls += 1;
            }
            clock.since = now;
            std::mem::replace(&mut clock.current, next)
        })
    }

    pub(crate) fn enter(phase: Phase) -> InPhase {
        if !ON.with(Cell::get) {
            return InPhase { outer: None };
        }
        InPhase {
            outer: Some(switch(Some(phase))),
        }
    }

    impl Drop for InPhase {
        fn drop(&mut self) {
            if let Some(outer) = self.outer {
                switch(outer);
            }
        }
    }

    pub(crate) fn start() {
        ON.with(|on| on.set(true));
        take();
    }

    pub(crate) fn stop() -> CostSplit {
        ON.with(|on| on.set(false));
        take()
    }

    pub(crate) fn take() -> CostSplit {
        CLOCK.with(|clock| {
            clock
                .borrow_mut()
                .as_mut()
                .map(|clock| std::mem::take(&mut clock.split))
                .unwrap_or_default()
        })
    }
}

#[cfg(all(test, feature = "cost-split"))]
mod tests {
    use super::{enter, timed, Phase};
    use std::time::Duration;

    #[test]
    fn nested_phases_count_once_and_only_while_on() {
        let pause = || std::thread::sleep(Duration::from_millis(20));
        let outside = enter(Phase::Copies);
        pause();
        drop(outside);
        let wall = std::time::Instant::now();
        timed::start();
        let copies = enter(Phase::Copies);
        pause();
        enter(Phase::SystemCalls).then(pause);
        pause();
        drop(copies);
        let split = timed::stop();
        let wall = wall.elapsed();
        let (copies, calls) = (split.time(Phase::Copies), split.time(Phase::SystemCalls));
        assert!(copies >= Duration::from_millis(40), "{split:?}");
        assert!(calls >= Duration::from_millis(20), "{split:?}");
        // Counted twice, the nested phase would make the sum exceed the time that passed.
        assert!(copies + calls <= wall, "{split:?} in {wall:?}");
        assert_eq!(split.system_calls(), 1);
        assert_eq!(split.total(), copies + calls);
        enter(Phase::Store).then(pause);
        assert_eq!(timed::take(), Default::default(), "timed while off");
    }
}
