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
//! - [`Arena::fork_run`] runs a closure in a child and returns its value (any
//!   [`Pod`] type, sent back through a pipe).
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
//! other stdio, the panic hook's write to stderr, a snapshot's [`read`](Snapshot::read) or
//! [`Arena::stats`] (the page store's lock) — can block forever. A timeout bounds that.

use crate::arena::Arena;
use crate::error::Error;
use crate::page_set::runs;
use crate::snapshot::Snapshot;
use crate::sys::process::{self, ExitStatus, Forked, Pid};
use crate::typed::sealed::{Sealed, Token};
use crate::typed::{View, ViewMut};
use bytemuck::Pod;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

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
    /// `timeout` of the fork; the call then returns [`ForkError::TimedOut`].
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
        R: Pod,
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
        R: Pod,
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
    /// While any arena of the process has proxies, branches are [`Error::Unsupported`]: see the
    /// [module docs](crate::fork#what-a-branch-can-do).
    ///
    /// # Errors
    /// A [`ForkError`] saying how the child ended if it did not return its value (a system call
    /// failing in the child ends it too: [`ForkError::Exited`]), or [`ForkError::Parent`] with an
    /// [`Error::Os`] naming the call (`pipe`, `fork`, `poll`, `read`, `waitpid`, `kill`) that
    /// failed in the parent. On `Err`, this arena is unchanged, and the child, if one was
    /// started, has been killed and reaped.
    pub fn fork_run<R, F>(&mut self, f: F) -> Result<R, ForkError>
    where
        R: Pod,
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
        R: Pod,
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
        R: Pod,
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
        R: Pod,
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

/// Descriptors a new child closes first: the read ends of branches in flight on other threads
/// and, in a child, its own result pipe (so its nested branches do not hold it open). Changed
/// only under [`process::fork_lock`], which orders the accesses; a full table leaves a descriptor open in
/// siblings forked meanwhile, which costs an idle descriptor until they exit.
static CLOSE_IN_CHILD: [AtomicI32; 64] = [const { AtomicI32::new(-1) }; 64];

/// Registers `fd` in [`CLOSE_IN_CHILD`]; the caller holds [`process::fork_lock`].
fn register(fd: RawFd) -> Option<usize> {
    let slot = CLOSE_IN_CHILD
        .iter()
        .position(|s| s.load(Ordering::Relaxed) < 0)?;
    CLOSE_IN_CHILD[slot].store(fd, Ordering::Relaxed);
    Some(slot)
}

/// A pipe's read end in the parent; unregistered and closed under [`process::fork_lock`], so that no
/// child can close a later descriptor that reuses its number.
struct ReadEnd {
    fd: Option<OwnedFd>,
    slot: Option<usize>,
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

/// A started child; dropping it unreaped kills and reaps it.
struct Child {
    pid: Pid,
    reaped: bool,
    /// Dropped after `drop` has reaped the child.
    _counted: process::ChildCount,
}

impl Child {
    fn wait(&mut self) -> crate::Result<ExitStatus> {
        let status = process::wait(self.pid);
        self.reaped = status.as_ref().map_or_else(no_such_child, |_| true);
        status
    }

    fn try_wait(&mut self) -> crate::Result<Option<ExitStatus>> {
        let status = process::try_wait(self.pid);
        self.reaped = status.as_ref().map_or_else(no_such_child, Option::is_some);
        status
    }
}

/// Whether waiting failed because the child is gone already (reaped by someone else, or
/// `SIGCHLD` is ignored): its pid may be reused, so it must never be signalled again.
fn no_such_child(e: &Error) -> bool {
    matches!(e, Error::Os { source, .. } if source.raw_os_error() == Some(libc::ECHILD))
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            // Errors leave nothing better to do: the child is gone or was reaped elsewhere.
            let _ = process::kill(self.pid);
            let _ = process::wait(self.pid);
        }
    }
}

/// How far [`Session::fill`] got.
enum Filled {
    Full,
    /// The pipe ended first: the child exited or died.
    Ended,
    /// The deadline passed.
    Late,
}

/// The parent's side of a running branch.
struct Session {
    child: Child,
    pipe: ReadEnd,
    deadline: Option<Instant>,
    timeout: Duration,
}

impl Session {
    /// Fills `buf` from the pipe; a child that ends first or runs late is the error.
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), ForkError> {
        match self.fill(buf)? {
            Filled::Full => Ok(()),
            Filled::Ended => Err(self.ended_early()),
            Filled::Late => Err(self.time_out()),
        }
    }

    fn fill(&self, mut buf: &mut [u8]) -> crate::Result<Filled> {
        let fd = self.pipe.fd.as_ref().expect("open until dropped").as_fd();
        while !buf.is_empty() {
            if let Some(deadline) = self.deadline {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(Filled::Late);
                }
                if !process::poll_readable(fd, Some(deadline - now))? {
                    continue;
                }
            }
            match process::read(fd, buf)? {
                0 => return Ok(Filled::Ended),
                n => buf = &mut buf[n..],
            }
        }
        Ok(Filled::Full)
    }

    /// Waits for the child to end, killing it at the deadline.
    fn wait(&mut self) -> Result<ExitStatus, ForkError> {
        let Some(deadline) = self.deadline else {
            return Ok(self.child.wait()?);
        };
        // The child ends right after its last write, so the first checks come quickly.
        let mut pause = Duration::from_micros(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.time_out());
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// Waits for a child that delivered its whole result; anything but exit status 0 is an error.
    fn finish(&mut self) -> Result<(), ForkError> {
        match self.wait() {
            Ok(ExitStatus::Exited(0)) => Ok(()),
            Ok(status) => Err(failure(status)),
            // Reaped elsewhere (`SIGCHLD` ignored): the whole result arrived, which is what counts.
            Err(ForkError::Parent(e)) if no_such_child(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn ended_early(&mut self) -> ForkError {
        match self.wait() {
            Ok(status) => failure(status),
            Err(e) => e,
        }
    }

    fn time_out(&mut self) -> ForkError {
        let killed = process::kill(self.child.pid).and_then(|()| self.child.wait());
        match killed {
            Ok(_) => ForkError::TimedOut {
                timeout: self.timeout,
            },
            Err(e) => e.into(),
        }
    }
}

fn failure(status: ExitStatus) -> ForkError {
    match status {
        ExitStatus::Exited(code) => ForkError::Exited { code },
        ExitStatus::Signaled {
            signal,
            core_dumped,
        } => ForkError::Signaled {
            signal,
            core_dumped,
        },
    }
}

fn malformed(what: &str) -> ForkError {
    ForkError::Parent(Error::Os {
        op: "reading a forked child's result",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned()),
    })
}

/// Forks, runs `f` in the child over `arena`, and collects its value; with a `base`, also the
/// child's written pages, applied to `base` in a new snapshot.
fn run<R, F>(
    arena: &mut Arena,
    options: &ForkOptions,
    f: F,
    base: Option<&Snapshot>,
) -> Result<(R, Option<Snapshot>), ForkError>
where
    R: Pod,
    F: FnOnce(&mut Branch<'_>) -> R,
{
    let page = crate::sys::page_size();
    let pages = arena.capacity() / page;
    let parent = process::getpid();
    let lock = process::fork_lock();
    if process::shared_arenas() > 0 {
        return Err(Error::Unsupported(
            "forking while an arena of this process shares its memory with proxies: the child \
             would share that memory with the parent; drop the proxies (the arena leaves the \
             shared layout at its next snapshot or restore), or fork an arena made with \
             to_arena() in a process without proxies",
        )
        .into());
    }
    let (read_end, write_end) = process::pipe()?;
    let counted = process::ChildCount::new();
    // SAFETY: the child runs `child_main`, which never returns (it ends with `_exit`) and, apart
    // from the caller's closure, makes only system calls and allocations (see the module docs on
    // what the closure may do in a multi-threaded parent).
    match unsafe { process::fork() }? {
        Forked::Child => {
            drop(read_end);
            child_main(arena, f, base.is_some(), write_end, lock, parent, options)
        }
        Forked::Parent(pid) => {
            let child = Child {
                pid,
                reaped: false,
                _counted: counted,
            };
            drop(write_end);
            let slot = register(read_end.as_raw_fd());
            let pipe = ReadEnd {
                fd: Some(read_end),
                slot,
            };
            drop(lock);
            let session = Session {
                child,
                pipe,
                deadline: options.timeout.map(|t| Instant::now() + t),
                timeout: options.timeout.unwrap_or_default(),
            };
            collect(session, base, page, pages)
        }
    }
}

/// The parent's side: reads the child's message and builds the result.
fn collect<R: Pod>(
    mut session: Session,
    base: Option<&Snapshot>,
    page: usize,
    pages: usize,
) -> Result<(R, Option<Snapshot>), ForkError> {
    let mut header = [0u64; 2];
    session.recv(bytemuck::bytes_of_mut(&mut header))?;
    let [tag, n] = header;
    if tag == PANICKED {
        let len = usize::try_from(n)
            .ok()
            .filter(|&len| len <= MAX_MESSAGE)
            .ok_or_else(|| malformed("panic message too long"))?;
        let mut message = vec![0u8; len];
        session.recv(&mut message)?;
        // The child is done: its exit status (101) adds nothing to the message, and a child
        // killed at the deadline on its way out still panicked.
        let _ = session.wait();
        return Err(ForkError::Panicked {
            message: String::from_utf8_lossy(&message).into_owned(),
        });
    }
    if tag != RETURNED {
        return Err(malformed("unknown message"));
    }
    let mut value = R::zeroed();
    session.recv(bytemuck::bytes_of_mut(&mut value))?;
    let Some(base) = base else {
        if n != 0 {
            return Err(malformed("pages sent without a base snapshot"));
        }
        session.finish()?;
        return Ok((value, None));
    };
    let count = usize::try_from(n)
        .ok()
        .filter(|&count| count <= pages)
        .ok_or_else(|| malformed("more pages than the arena has"))?;
    let mut indices = vec![0u64; count];
    session.recv(bytemuck::cast_slice_mut(&mut indices))?;
    let indices: Vec<usize> = indices.iter().map(|&p| p as usize).collect();
    if indices.windows(2).any(|w| w[0] >= w[1]) || indices.last().is_some_and(|&p| p >= pages) {
        return Err(malformed("page indices out of order or out of range"));
    }
    let mut result = base.to_arena()?;
    for run in runs(&indices, usize::MAX) {
        let dst = result.bytes_mut(run.start * page..run.end * page)?;
        session.recv(dst)?;
    }
    session.finish()?;
    Ok((value, Some(result.snapshot()?)))
}

/// The child's side. Never returns: every path ends in `_exit`.
fn child_main<R, F>(
    arena: &mut Arena,
    f: F,
    send_pages: bool,
    pipe: OwnedFd,
    lock: MutexGuard<'_, ()>,
    parent: Pid,
    options: &ForkOptions,
) -> !
where
    R: Pod,
    F: FnOnce(&mut Branch<'_>) -> R,
{
    if !process::die_with_parent(parent) {
        process::exit_now(EXIT_ORPHANED);
    }
    if !options.core_dumps {
        process::disable_core_dumps();
    }
    crate::alloc::after_fork_in_child();
    // The parent's other branches are not this process's children.
    process::forget_children_in_child();
    for slot in &CLOSE_IN_CHILD {
        let fd = slot.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: registered descriptors belong to the parent's branches in flight (or to
            // this process's own parent pipe); this child never uses them.
            unsafe { process::close_raw(fd) };
        }
    }
    register(pipe.as_raw_fd());
    // The parent's lock was copied held by this thread; release it for nested branches.
    drop(lock);
    // Nothing of the closure's may unwind out of here, and its payload is never dropped (its
    // destructor could panic again): the process ends right after.
    let code = match panic::catch_unwind(AssertUnwindSafe(|| {
        let outcome =
            panic::catch_unwind(AssertUnwindSafe(|| f(&mut Branch { arena: &mut *arena })));
        match outcome {
            Ok(value) => send_result(arena, &value, send_pages, &pipe),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("a panic payload that is not a string");
                let code = send_panic(message, &pipe);
                std::mem::forget(payload);
                code
            }
        }
    })) {
        Ok(code) => code,
        Err(payload) => {
            std::mem::forget(payload);
            EXIT_PANICKED
        }
    };
    process::exit_now(code)
}

fn send_result<R: Pod>(arena: &mut Arena, value: &R, send_pages: bool, pipe: &OwnedFd) -> i32 {
    let fd = pipe.as_fd();
    let written = if send_pages {
        arena.written_pages()
    } else {
        Vec::new()
    };
    let header = [RETURNED, written.len() as u64];
    let indices: Vec<u64> = written.iter().map(|&p| p as u64).collect();
    let page = crate::sys::page_size();
    let bytes = arena.as_bytes();
    let sent = process::write_all(fd, bytemuck::bytes_of(&header))
        .and_then(|()| process::write_all(fd, bytemuck::bytes_of(value)))
        .and_then(|()| process::write_all(fd, bytemuck::cast_slice(&indices)))
        .and_then(|()| {
            runs(&written, usize::MAX)
                .into_iter()
                .try_for_each(|r| process::write_all(fd, &bytes[r.start * page..r.end * page]))
        });
    match sent {
        Ok(()) => 0,
        Err(_) => EXIT_UNDELIVERED,
    }
}

fn send_panic(message: &str, pipe: &OwnedFd) -> i32 {
    let mut len = message.len().min(MAX_MESSAGE);
    while !message.is_char_boundary(len) {
        len -= 1;
    }
    let fd = pipe.as_fd();
    let header = [PANICKED, len as u64];
    match process::write_all(fd, bytemuck::bytes_of(&header))
        .and_then(|()| process::write_all(fd, &message.as_bytes()[..len]))
    {
        Ok(()) => EXIT_PANICKED,
        Err(_) => EXIT_UNDELIVERED,
    }
}
