//! Process control: fork, close-on-exec pipes, waiting, signals and exit, and the process-wide
//! counts that decide whether a fork is safe (arenas whose memory is shared, children alive).
//!
//! The functions a forked child calls ([`read`], [`write_all`], [`close_raw`],
//! [`die_with_parent`], [`disable_core_dumps`], [`exit_now`]) are plain system calls: they are
//! async-signal-safe, allocate nothing and take no lock.

use super::fault::{self, Call};
use super::os_error;
use crate::error::Result;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Once, PoisonError};
use std::time::Duration;

/// A process id.
pub(crate) type Pid = libc::pid_t;

/// Which side of a [`fork`] the caller is on.
pub(crate) enum Forked {
    Child,
    Parent(Pid),
}

/// How a child process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExitStatus {
    Exited(i32),
    Signaled { signal: i32, core_dumped: bool },
}

/// Forks the process.
///
/// # Safety
/// Only the calling thread exists in the child, and locks held by other threads at the fork stay
/// held there forever: in the child of a multi-threaded process, only async-signal-safe functions
/// are sound. The child must end with [`exit_now`] and never return into frames it shares with
/// the parent, or it would go on running the parent's code and dropping the parent's values.
pub(crate) unsafe fn fork() -> Result<Forked> {
    let _call = fault::point("fork", Call::Plain).map_err(|e| os_error("fork", e))?;
    // SAFETY: forwarded to the caller (see above).
    match unsafe { libc::fork() } {
        -1 => Err(os_error("fork", Errno::last())),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// The calling process's id.
pub(crate) fn getpid() -> Pid {
    // SAFETY: no arguments; cannot fail.
    unsafe { libc::getpid() }
}

/// The calling process's id, cached: a load instead of a system call, for checks on write paths.
/// A `fork()` child (any fork, not only the crate's) clears the cache in an `atfork` handler, so
/// it never sees its parent's id.
pub(crate) fn current_pid() -> Pid {
    match CACHED_PID.load(Ordering::Relaxed) {
        0 => cache_pid(),
        pid => pid,
    }
}

static CACHED_PID: AtomicI32 = AtomicI32::new(0);
static FORGET_REGISTERED: AtomicBool = AtomicBool::new(false);

#[cold]
fn cache_pid() -> Pid {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: the handler is a plain `extern "C" fn` that stores to an atomic, which is
        // async-signal-safe as an `atfork` child handler must be. Registration fails only when
        // out of memory; the cache then stays empty (every call asks the kernel).
        let registered = unsafe { libc::pthread_atfork(None, None, Some(forget_pid)) } == 0;
        FORGET_REGISTERED.store(registered, Ordering::Relaxed);
    });
    let pid = getpid();
    // Only with the handler in place can a cached id never outlive a fork. A fork by another
    // thread between `getpid` and the store does not matter: this thread does not exist in
    // that child, whose handler empties the child's cache.
    if FORGET_REGISTERED.load(Ordering::Relaxed) {
        CACHED_PID.store(pid, Ordering::Relaxed);
    }
    pid
}

extern "C" fn forget_pid() {
    CACHED_PID.store(0, Ordering::Relaxed);
}

/// A pipe whose two ends are close-on-exec: `(read end, write end)`.
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as RawFd; 2];
    let _call = fault::point("pipe", Call::Plain).map_err(|e| os_error("pipe", e))?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: `fds` has room for the two descriptors the call stores.
        Errno::result(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })
            .map_err(|e| os_error("pipe2(O_CLOEXEC)", e))?;
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        // SAFETY: `fds` has room for the two descriptors the call stores.
        Errno::result(unsafe { libc::pipe(fds.as_mut_ptr()) }).map_err(|e| os_error("pipe", e))?;
    }
    // SAFETY: the call succeeded, so both are fresh descriptors that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    for fd in [&read, &write] {
        // Without pipe2 the flag is set afterwards; the caller holds the fork lock meanwhile.
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| os_error("fcntl(F_SETFD, FD_CLOEXEC)", e))?;
    }
    Ok((read, write))
}

fn decode(status: libc::c_int) -> Option<ExitStatus> {
    if libc::WIFEXITED(status) {
        Some(ExitStatus::Exited(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(ExitStatus::Signaled {
            signal: libc::WTERMSIG(status),
            core_dumped: libc::WCOREDUMP(status),
        })
    } else {
        None
    }
}

fn waitpid(pid: Pid, flags: libc::c_int) -> Result<Option<ExitStatus>> {
    loop {
        let mut status = 0;
        let _call = match fault::point("waitpid", Call::Interruptible) {
            Ok(call) => call,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(os_error("waitpid", e)),
        };
        // SAFETY: `status` is a valid out-pointer for the call.
        match unsafe { libc::waitpid(pid, &mut status, flags) } {
            -1 if Errno::last() == Errno::EINTR => continue,
            -1 => return Err(os_error("waitpid", Errno::last())),
            0 => return Ok(None),
            // Stop and continue reports need WUNTRACED / WCONTINUED, which are not passed.
            _ => match decode(status) {
                Some(s) => return Ok(Some(s)),
                None => continue,
            },
        }
    }
}

/// Waits for the child `pid` to end and reaps it.
pub(crate) fn wait(pid: Pid) -> Result<ExitStatus> {
    loop {
        if let Some(status) = waitpid(pid, 0)? {
            return Ok(status);
        }
    }
}

/// Reaps the child `pid` if it has ended.
pub(crate) fn try_wait(pid: Pid) -> Result<Option<ExitStatus>> {
    waitpid(pid, libc::WNOHANG)
}

/// Sends `SIGKILL` to `pid`. A process that is already gone (or a zombie) is not an error.
pub(crate) fn kill(pid: Pid) -> Result<()> {
    let killed = fault::point("kill(SIGKILL)", Call::Plain).and_then(|_call| {
        // SAFETY: plain system call on a pid the caller started and has not reaped.
        Errno::result(unsafe { libc::kill(pid, libc::SIGKILL) })
    });
    match killed {
        Ok(_) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(os_error("kill(SIGKILL)", e)),
    }
}

/// Waits until `fd` is readable (or at its end), at most `timeout` (`None`: without limit).
/// Returns `false` when the time ran out or a signal interrupted the wait.
pub(crate) fn poll_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<bool> {
    let millis = match timeout {
        // Rounded up, so that a wait never ends before the deadline it was computed from.
        Some(t) => {
            libc::c_int::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(libc::c_int::MAX)
        }
        None => -1,
    };
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let polled = fault::point("poll", Call::Interruptible).and_then(|_call| {
        // SAFETY: `pfd` is one valid `pollfd`, as the count says.
        Errno::result(unsafe { libc::poll(&mut pfd, 1, millis) })
    });
    match polled {
        Ok(n) => Ok(n > 0),
        Err(Errno::EINTR) => Ok(false),
        Err(e) => Err(os_error("poll", e)),
    }
}

/// Reads at most `buf.len()` bytes; `0` means the end of the stream.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize> {
    loop {
        let n = fault::point("read", Call::Interruptible).and_then(|_call| {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
            Errno::result(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
        });
        match n {
            Ok(n) => return Ok(n as usize),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(os_error("read", e)),
        }
    }
}

/// Writes all of `buf`.
pub(crate) fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> std::result::Result<(), Errno> {
    while !buf.is_empty() {
        let n = fault::point("write", Call::Interruptible).and_then(|_call| {
            // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
            Errno::result(unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) })
        });
        match n {
            Ok(0) => return Err(Errno::EPIPE),
            Ok(n) => buf = &buf[n as usize..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Closes a descriptor by number.
///
/// # Safety
/// Nothing in this process may use `fd` afterwards (whoever owns it will never close it).
pub(crate) unsafe fn close_raw(fd: RawFd) {
    // SAFETY: forwarded to the caller. An error leaves nothing to do.
    unsafe { libc::close(fd) };
}

/// Asks the kernel to kill this process when the thread that forked it exits, so that a child
/// killed on a timeout takes its own children with it. Returns `false` if the parent is already
/// gone (it is no longer `parent`). A no-op returning `true` where the kernel has no such request.
pub(crate) fn die_with_parent(parent: Pid) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: PR_SET_PDEATHSIG takes a signal number and no pointers.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
        // The parent may have died before the request was made.
        // SAFETY: no arguments; cannot fail.
        unsafe { libc::getppid() == parent }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = parent;
        true
    }
}

/// Turns core dumps off for this process: a crashing branch must not write a core the size of
/// the whole heap.
pub(crate) fn disable_core_dumps() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit out- and in-pointer for both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_CORE, &mut limit) == 0 {
            limit.rlim_cur = 0;
            libc::setrlimit(libc::RLIMIT_CORE, &limit);
        }
    }
}

/// Ends the process at once with `code`: no destructors, no exit handlers, no stdio flush.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// Held by the crate's forks from a branch's pipe creation until the parent has closed the write
/// end and registered the read end, so that a branch forked by another thread meanwhile inherits
/// neither; and while an arena enters the shared layout, so that no fork slips between the
/// check of [`shared_arenas`] and a new shared mapping.
static FORK_LOCK: Mutex<()> = Mutex::new(());

/// Takes [`FORK_LOCK`].
pub(crate) fn fork_lock() -> MutexGuard<'static, ()> {
    // The lock guards no data, so a panic while it was held leaves nothing inconsistent.
    FORK_LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Arenas of this process whose memory is a shared file mapping (arenas with proxies). A child
/// would share that memory with its parent: its writes would reach the parent, and the parent's
/// writes would change bytes under the child's references. Branches are refused while any
/// exists. Grown under [`FORK_LOCK`], as forks are checked under it.
static SHARED_ARENAS: AtomicUsize = AtomicUsize::new(0);

/// How many arenas of this process have their memory shared with a file (see [`SHARED_ARENAS`]);
/// read under [`fork_lock`].
pub(crate) fn shared_arenas() -> usize {
    SHARED_ARENAS.load(Ordering::Relaxed)
}

/// Counts one arena in [`SHARED_ARENAS`] for as long as it lives. Made before the shared mapping
/// exists and dropped after it is gone.
#[derive(Debug)]
pub(crate) struct SharedMemoryGuard(());

impl SharedMemoryGuard {
    pub(crate) fn new() -> Self {
        let _lock = fork_lock();
        SHARED_ARENAS.fetch_add(1, Ordering::Relaxed);
        SharedMemoryGuard(())
    }
}

impl Drop for SharedMemoryGuard {
    fn drop(&mut self) {
        SHARED_ARENAS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Children of this process's branches that may still be running: counted from before the fork
/// until the child is reaped. While one is, the page store neither reuses nor punches out a slot
/// freed after the fork, which the child may still read through its copy of an arena or snapshot.
static LIVE_CHILDREN: AtomicUsize = AtomicUsize::new(0);

/// Whether a branch's child of this process may still be running.
pub(crate) fn children_alive() -> bool {
    LIVE_CHILDREN.load(Ordering::SeqCst) > 0
}

/// In a new child: its parent's other children are not its own. Async-signal-safe (an atomic
/// store).
pub(crate) fn forget_children_in_child() {
    LIVE_CHILDREN.store(0, Ordering::SeqCst);
}

/// One count in [`LIVE_CHILDREN`], taken before the fork and given back when dropped.
#[derive(Debug)]
pub(crate) struct ChildCount(());

impl ChildCount {
    pub(crate) fn new() -> Self {
        LIVE_CHILDREN.fetch_add(1, Ordering::SeqCst);
        ChildCount(())
    }
}

impl Drop for ChildCount {
    fn drop(&mut self) {
        LIVE_CHILDREN.fetch_sub(1, Ordering::SeqCst);
    }
}
