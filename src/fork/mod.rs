//! Process-level exploration: run a branch in a forked child process.
//!
//! `fork()` gives a child process a copy-on-write copy of the whole parent, every arena
//! included. A branch run there cannot take the explorer down: if it panics, crashes, loops or
//! scribbles over memory, the parent gets a [`ForkError`] that says how the child ended, and its
//! arena and process are as they were.
//!
//! ```
//! # fn main() -> Result<(), cowarena::ForkError> {
//! let mut a = cowarena::Arena::with_capacity(1 << 20)?;
//! a.write(0, &[1, 2, 3])?;
//! use cowarena::ViewMut;
//! let sum: u32 = a.fork_run(|b| {
//!     b.write(0, &[10, 20, 30]).unwrap();
//!     b.as_bytes()[..3].iter().map(|&x| u32::from(x)).sum()
//! })?;
//! assert_eq!(sum, 60);
//! assert_eq!(&a.as_bytes()[..3], &[1, 2, 3]); // the child's writes stayed in the child
//! # Ok(())
//! # }
//! ```
//!
//! - [`Arena::fork_run`] runs a closure in a child and returns its value (of any [`Value`]
//!   type, `Pod` or not, sent back through a pipe and checked on arrival).
//! - [`Arena::fork_snapshot`] also brings the child's final arena back as a [`Snapshot`]: the
//!   parent takes a snapshot before forking, the child sends the pages it wrote, and the parent
//!   writes them into an arena made from that snapshot. Only written pages cross the pipe.
//! - The `_with` variants take [`ForkOptions`]: a timeout (the child is killed past it) and
//!   whether a crashing child may dump core.
//!
//! # What a branch can do
//!
//! The closure gets a [`Branch`]: reads of the arena (through `Deref<Target = Arena>`, and as a
//! [`View`]), writes through [`ViewMut`] (bytes, typed values, and
//! every collection method: they take `&mut impl ViewMut`), raw writes
//! ([`as_mut_ptr`](Branch::as_mut_ptr)), and nested branches ([`Branch::fork_run`]). Bring
//! `ViewMut` into scope to call its methods on the branch (`use cowarena::ViewMut`).
//!
//! A branch cannot snapshot, restore or make proxies: a branch's state comes back through
//! [`Arena::fork_snapshot`] instead. `fork` copies memory, not files, so parent and child share
//! the page store's files; the store therefore never writes, seals or punches a file that
//! another process made (a child's freezes go to files of its own), which keeps the parent's
//! snapshots intact even if the closure snapshots some *other* arena it captured.
//!
//! An arena with proxies keeps its memory in a shared file, which a child would share with its
//! parent: its writes would reach the parent, and the parent's writes (by another thread) would
//! change bytes under the child's references. So branches are [`Error::Unsupported`] while *any*
//! arena of the process has proxies (or had, until its next snapshot or restore; the arena
//! being forked leaves the shared layout by itself). See the [`proxy`](crate::proxy) module.
//!
//! # How a branch ends
//!
//! | child | result |
//! |---|---|
//! | the closure returns | `Ok(value)` |
//! | the closure panics | [`ForkError::Panicked`] with the panic message |
//! | `std::process::exit(code)` | [`ForkError::Exited`] |
//! | abort, segfault, any signal | [`ForkError::Signaled`] (`SIGABRT`, `SIGSEGV`, ...) |
//! | runs past the timeout | killed with `SIGKILL`; [`ForkError::TimedOut`] |
//! | sends bytes that are not a valid result | killed; [`ForkError::InvalidResult`] |
//! | the parent cannot fork, read, or build the result | [`ForkError::Parent`] |
//!
//! Every child is reaped before the call returns, also on a timeout, on an error in the parent,
//! and when the parent's own code panics, so no zombie is left. If the process reaps children it
//! did not start (`waitpid(-1, ..)` in a `SIGCHLD` handler, or `SIGCHLD` ignored), a branch that
//! delivered its result still succeeds, but how a failed one ended is lost: the call reports
//! `ECHILD` as [`ForkError::Parent`].
//!
//! # Cost
//!
//! A fork copies the page tables of the process's private memory. An arena's pages written
//! since its last snapshot are private anonymous memory, so forking them costs like forking any
//! heap of that size (measured here: about 90 ms with 1 GiB written). After a snapshot the arena
//! maps its pages from the page store, which the kernel does not copy at fork: forking the same
//! 1 GiB arena, fully resident, then costs about 1.3 ms, most of it process creation and exit.
//! So snapshot a heavily written arena before forking it ([`Arena::fork_snapshot`] does).
//! [`Arena::fork_snapshot`] adds, per page the child wrote, a pipe transfer, a copy into the
//! result arena and a freeze into the page store.
//!
//! # Fork safety
//!
//! In a multi-threaded parent only the calling thread exists in the child, and any lock another
//! thread held at the fork stays held there forever. What the library does:
//!
//! - **No lock the child needs is held across the fork.** The child's own path (running the
//!   closure, finding its written pages, writing the pipe) takes no lock. The one lock held
//!   across the fork is this module's own (see below), which the child releases first.
//! - **Little but system calls after the closure.** The result is written with `write(2)`
//!   straight from the arena's memory (for [`Arena::fork_snapshot`] after listing the written
//!   pages, which allocates), and the child ends with `_exit(2)`: no destructor, exit handler or
//!   stdio flush runs, so the child neither deletes the parent's temporary files nor writes the
//!   parent's buffered output a second time. (Output the child prints without a final newline
//!   may be lost.)
//! - **No unwinding across the fork.** The closure runs inside `catch_unwind`; a panic becomes a
//!   message and exit code 101, and the child never returns into its parent's frames. With
//!   `panic = "abort"` a panic is reported as `SIGABRT`.
//! - **No descriptor leaks.** The pipe is created close-on-exec under a process-wide lock that is
//!   held until the parent has closed its write end, so a branch forked by another thread never
//!   inherits it; each child closes the read ends of branches other threads have in flight, and
//!   its own parent's pipe is closed in its nested branches.
//! - **A branch dies with its parent** (Linux: `PR_SET_PDEATHSIG`), so a branch killed on its
//!   timeout takes its nested branches with it, and none outlives a crashed explorer. Core dumps
//!   are off in the child unless [`ForkOptions::core_dumps`] is set.
//!
//! What the closure may do: anything in a single-threaded parent. In a multi-threaded one,
//! memory allocation is safe with glibc and recent musl (they reset the allocator's locks at the
//! fork), but anything else that takes a lock another thread may have held — `println!` and
//! other stdio, the panic hook's write to stderr, the page store of *another* arena (a
//! snapshot's [`read`](Snapshot::read) or [`Arena::stats`] take its lock) — can block forever. A
//! timeout bounds that. The page store of the arena being forked (shared by its snapshots and
//! the arenas made from them) is safe: the fork takes its lock first, so the child finds it
//! free whatever other threads were doing with it.

mod child;
mod parent;
mod pipe;

use crate::arena::Arena;
use crate::error::Error;
use crate::ptr::value::Value;
use crate::snapshot::Snapshot;
use crate::typed::sealed::{Sealed, Token};
use crate::typed::{View, ViewMut};
use parent::run;
use std::ops::Deref;
use std::time::Duration;

/// How a branch run by [`Arena::fork_run_with`] or [`Arena::fork_snapshot_with`] is supervised.
///
/// ```
/// use std::time::Duration;
/// # fn main() -> Result<(), cowarena::ForkError> {
/// let mut a = cowarena::Arena::with_capacity(1 << 16)?;
/// let options = cowarena::ForkOptions::new().timeout(Duration::from_millis(200));
/// let r: Result<(), _> = a.fork_run_with(&options, |_| loop {
///     std::hint::spin_loop();
/// });
/// assert!(matches!(r, Err(cowarena::ForkError::TimedOut { .. })));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ForkOptions {
    timeout: Option<Duration>,
    core_dumps: bool,
}

impl ForkOptions {
    /// No timeout, no core dumps.
    pub fn new() -> Self {
        Self::default()
    }

    /// Kills the child (`SIGKILL`) if it has not delivered its result and exited within
    /// `timeout` of the fork; the call then returns [`ForkError::TimedOut`]. A timeout too long
    /// to be a point in time (`Duration::MAX`, say) means no timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Lets a crashing child dump core as the process limits allow (default: off, since a core
    /// of a forked explorer holds its whole heap).
    pub fn core_dumps(mut self, enabled: bool) -> Self {
        self.core_dumps = enabled;
        self
    }
}

/// How a branch failed: the child did not return a value, or the parent could not run it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForkError {
    /// The closure panicked in the child.
    #[error("the forked child panicked: {message}")]
    Panicked {
        /// The panic message (cut to 4 KiB), or a placeholder if the payload was not a string.
        message: String,
    },
    /// The child exited (for example with `std::process::exit`) without returning a value.
    #[error("the forked child exited with status {code} before returning a value")]
    Exited {
        /// The exit status.
        code: i32,
    },
    /// The child was ended by a signal: it aborted, crashed, or was killed.
    #[error(
        "the forked child was ended by signal {signal} ({}){}",
        signal_name(*.signal),
        if *.core_dumped { ", core dumped" } else { "" }
    )]
    Signaled {
        /// The signal number (`libc::SIGSEGV`, `libc::SIGABRT`, ...).
        signal: i32,
        /// Whether the kernel wrote a core dump.
        core_dumped: bool,
    },
    /// The child ran past the timeout and was killed.
    #[error("the forked child ran past its timeout of {timeout:?} and was killed")]
    TimedOut {
        /// The timeout that was set.
        timeout: Duration,
    },
    /// The bytes the child sent as its value are not a valid value of the result type: the
    /// closure wrote to its result pipe itself, or made the value with `unsafe` code. The child
    /// has been killed and reaped.
    #[error(
        "the forked child sent bytes that are not a valid {type_name} as its result (written to \
         the result pipe by the closure, or a value made by unsafe code?)"
    )]
    InvalidResult {
        /// The result type.
        type_name: &'static str,
    },
    /// The parent could not fork, talk to the child, or build the result.
    #[error(transparent)]
    Parent(#[from] Error),
}

fn signal_name(signal: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(signal).map_or("unknown", |s| s.as_str())
}

/// The arena as a forked child sees it: its own copy-on-write copy of the parent's arena.
///
/// Reads go through `Deref<Target = Arena>` and [`View`]; writes through [`ViewMut`], which
/// the collections' mutating methods take, so collections can be changed in a child as in the
/// parent. Snapshots, restores and proxies are not offered in a child (see the
/// [module docs](crate::fork)).
///
/// ```
/// use cowarena::{ArenaVec, ViewMut};
/// # fn main() -> Result<(), cowarena::ForkError> {
/// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
/// let counter = a.alloc(0u64)?;
/// let path = ArenaVec::<u32>::new(&mut a)?;
/// let (seen, s) = a.fork_snapshot(|b| {
///     *b.get_mut(counter) += 5;
///     let extra = b.alloc([7u8; 16]).unwrap();
///     b.set_root(extra);
///     path.push(b, 42).unwrap();
///     *b.get(counter)
/// })?;
/// assert_eq!((seen, *a.get(counter)), (5, 0));
/// assert_eq!(*s.get(counter), 5);
/// assert_eq!(s.get(s.root::<[u8; 16]>().unwrap())[0], 7);
/// assert_eq!((path.as_slice(&s), path.len(&a)), (&[42][..], 0));
/// # Ok(())
/// # }
/// ```
///
/// Only [`ViewMut`] writes: the branch's arena itself is out of reach, so a child cannot take
/// a snapshot of it.
///
/// ```compile_fail,E0596
/// let mut a = cowarena::Arena::with_capacity(1 << 20).unwrap();
/// let _ = a.fork_run(|b| {
///     b.snapshot().unwrap(); // `Branch` derefs to `&Arena` only
///     0u8
/// });
/// ```
pub struct Branch<'a> {
    arena: &'a mut Arena,
}

impl std::fmt::Debug for Branch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Branch")
            .field("capacity", &self.arena.capacity())
            .finish_non_exhaustive()
    }
}

impl Deref for Branch<'_> {
    type Target = Arena;

    fn deref(&self) -> &Arena {
        self.arena
    }
}

impl Sealed for Branch<'_> {}

impl View for Branch<'_> {
    #[inline]
    fn try_bytes(&self) -> crate::Result<&[u8]> {
        Ok(self.arena.as_bytes())
    }
}

impl ViewMut for Branch<'_> {
    #[inline(always)]
    fn arena_mut(&mut self, _: Token) -> &mut Arena {
        self.arena
    }
}

impl Branch<'_> {
    /// A raw pointer to the start of the child's arena (see [`Arena::as_mut_ptr`]); pages written
    /// through it are found by [`Arena::fork_snapshot`] too.
    ///
    /// # Safety
    /// As for [`Arena::as_mut_ptr`]: valid for reads and writes of the capacity until the next
    /// call of a `&mut self` method of this branch, and not while a slice from `as_bytes` is live.
    pub unsafe fn as_mut_ptr(&mut self) -> *mut u8 {
        // SAFETY: forwarded to the caller.
        unsafe { self.arena.as_mut_ptr() }
    }

    /// Runs `f` in a child of this child (a nested branch); see [`Arena::fork_run`].
    ///
    /// # Errors
    /// As [`Arena::fork_run`].
    pub fn fork_run<R, F>(&mut self, f: F) -> Result<R, ForkError>
    where
        R: Value,
        F: FnOnce(&mut Branch<'_>) -> R,
    {
        self.fork_run_with(&ForkOptions::default(), f)
    }

    /// [`Branch::fork_run`] with options.
    ///
    /// # Errors
    /// As [`Branch::fork_run`].
    pub fn fork_run_with<R, F>(&mut self, options: &ForkOptions, f: F) -> Result<R, ForkError>
    where
        R: Value,
        F: FnOnce(&mut Branch<'_>) -> R,
    {
        // The branch's arena is not shared: branches are refused while any arena is.
        run(self.arena, options, f, None).map(|(value, _)| value)
    }
}

impl Arena {
    /// Runs `f` in a forked child process over a copy-on-write copy of this arena and returns
    /// its value. The parent's arena is unchanged, whatever the child does; a child that panics,
    /// exits, crashes or is killed is a [`ForkError`] (see the [`fork`](crate::fork) module for
    /// what the closure may do).
    ///
    /// ```
    /// use cowarena::ViewMut;
    /// # fn main() -> Result<(), cowarena::ForkError> {
    /// let mut a = cowarena::Arena::with_capacity(1 << 16)?;
    /// let r = a.fork_run(|b| {
    ///     b.write(0, b"scratch").unwrap();
    ///     assert_eq!(b.as_bytes()[0], 0, "this branch fails");
    ///     1u8
    /// });
    /// assert!(matches!(r, Err(cowarena::ForkError::Panicked { .. })));
    /// assert_eq!(a.as_bytes()[0], 0);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// The value is of any [`Value`] type: `Pod`, or with invalid bit patterns (a `bool`, an
    /// enum, an `Option<NonZeroU32>`, an [`Array`](crate::Array) of them); the parent checks the
    /// bytes it receives, as a read from an arena does.
    ///
    /// ```
    /// # fn main() -> Result<(), cowarena::ForkError> {
    /// #[derive(Clone, Copy, Debug, PartialEq, bytemuck::NoUninit, bytemuck::CheckedBitPattern)]
    /// #[repr(u8)]
    /// enum Verdict { Safe, Unsafe }
    ///
    /// let mut a = cowarena::Arena::with_capacity(1 << 16)?;
    /// let v = a.fork_run(|b| match b.as_bytes()[0] {
    ///     0 => Verdict::Safe,
    ///     _ => Verdict::Unsafe,
    /// })?;
    /// assert_eq!(v, Verdict::Safe);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// While any arena of the process has proxies, branches are [`Error::Unsupported`]: see the
    /// [module docs](crate::fork#what-a-branch-can-do).
    ///
    /// # Errors
    /// A [`ForkError`] saying how the child ended if it did not return its value (a system call
    /// failing in the child ends it too: [`ForkError::Exited`]), [`ForkError::InvalidResult`] if
    /// the bytes it sent are not a valid `R`, or [`ForkError::Parent`] with an [`Error::Os`]
    /// naming the call (`pipe`, `fork`, `poll`, `read`, `waitpid`, `kill`) that failed in the
    /// parent. On `Err`, this arena is unchanged, and the child, if one was started, has been
    /// killed and reaped.
    pub fn fork_run<R, F>(&mut self, f: F) -> Result<R, ForkError>
    where
        R: Value,
        F: FnOnce(&mut Branch<'_>) -> R,
    {
        self.fork_run_with(&ForkOptions::default(), f)
    }

    /// [`Arena::fork_run`] with options (a timeout, core dumps).
    ///
    /// # Errors
    /// As [`Arena::fork_run`].
    pub fn fork_run_with<R, F>(&mut self, options: &ForkOptions, f: F) -> Result<R, ForkError>
    where
        R: Value,
        F: FnOnce(&mut Branch<'_>) -> R,
    {
        self.check_forkable()?;
        run(self, options, f, None).map(|(value, _)| value)
    }

    /// Like [`Arena::fork_run`], and also returns the child's final arena as a [`Snapshot`] of
    /// this arena's page store: restoring it commits the branch.
    ///
    /// The parent first takes a snapshot (so this arena's unsaved writes are frozen, which costs
    /// what [`Arena::snapshot`] costs); the child sends back the pages it wrote, and the parent
    /// writes them into an arena made from that snapshot and snapshots it. After raw-pointer
    /// writes, pages the kernel reports as copied are sent too (a superset, with the same bytes).
    ///
    /// # Errors
    /// As [`Arena::fork_run`], and as [`Arena::snapshot`] for the snapshot taken before the fork
    /// and the one that holds the result. On `Err`, this arena's bytes are unchanged (its
    /// written pages may have been frozen by the first snapshot, as a snapshot does), and the
    /// child, if one was started, has been killed and reaped.
    ///
    /// ```
    /// use cowarena::ViewMut;
    /// # fn main() -> Result<(), cowarena::ForkError> {
    /// let page = cowarena::page_size();
    /// let mut a = cowarena::Arena::with_capacity(4 * page)?;
    /// a.write(0, b"base")?;
    /// let (answer, s) = a.fork_snapshot(|b| {
    ///     b.write(page, b"branch").unwrap();
    ///     42u32
    /// })?;
    /// assert_eq!(answer, 42);
    /// assert_eq!(&s.as_bytes()[..4], b"base");
    /// assert_eq!(&s.as_bytes()[page..page + 6], b"branch");
    /// assert_eq!(a.as_bytes()[page], 0); // the parent's arena is unchanged...
    /// a.restore(&s)?; // ...until it takes the branch's result
    /// assert_eq!(&a.as_bytes()[page..page + 6], b"branch");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Arena::fork_run`], and the errors of [`Arena::snapshot`] (in [`ForkError::Parent`])
    /// for the parent's snapshots.
    pub fn fork_snapshot<R, F>(&mut self, f: F) -> Result<(R, Snapshot), ForkError>
    where
        R: Value,
        F: FnOnce(&mut Branch<'_>) -> R,
    {
        self.fork_snapshot_with(&ForkOptions::default(), f)
    }

    /// [`Arena::fork_snapshot`] with options (a timeout, core dumps).
    ///
    /// # Errors
    /// As [`Arena::fork_snapshot`].
    pub fn fork_snapshot_with<R, F>(
        &mut self,
        options: &ForkOptions,
        f: F,
    ) -> Result<(R, Snapshot), ForkError>
    where
        R: Value,
        F: FnOnce(&mut Branch<'_>) -> R,
    {
        self.check_forkable()?;
        let base = self.snapshot()?;
        let (value, snapshot) = run(self, options, f, Some(&base))?;
        Ok((
            value,
            snapshot.expect("a run with a base returns a snapshot"),
        ))
    }

    /// An arena whose proxies are all gone leaves the shared layout before it is forked.
    fn check_forkable(&mut self) -> Result<(), ForkError> {
        Ok(self.leave_shared_if_alone()?)
    }
}

/// Tags of the message a child sends: `[tag, n]` as two native-endian `u64`, then
/// - `RETURNED`: the value's bytes, `n` page indices (`u64`, increasing), then those pages;
/// - `PANICKED`: `n` bytes of UTF-8 panic message.
const RETURNED: u64 = 0;
const PANICKED: u64 = 1;

/// The exit status of a child whose closure panicked (as for a Rust program that panics).
const EXIT_PANICKED: i32 = 101;
/// The exit status of a child that could not deliver its result (the parent is gone).
const EXIT_UNDELIVERED: i32 = 102;
/// The exit status of a child whose parent died before the child could attach to it.
const EXIT_ORPHANED: i32 = 103;

/// Longest panic message sent, in bytes.
const MAX_MESSAGE: usize = 4096;
