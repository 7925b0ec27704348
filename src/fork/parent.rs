//! The parent's side of a branch: forking, reading the child's message before the deadline,
//! reaping the child, and building the result.

use super::child::child_main;
use super::pipe::{register, ReadEnd};
use super::{Branch, ForkError, ForkOptions, MAX_MESSAGE, PANICKED, RETURNED};
use crate::arena::Arena;
use crate::error::Error;
use crate::page_set::runs;
use crate::ptr::value::Value;
use crate::snapshot::Snapshot;
use crate::sys::process::{self, ExitStatus, Forked, Pid};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
pub(super) fn run<R, F>(
    arena: &mut Arena,
    options: &ForkOptions,
    f: F,
    base: Option<&Snapshot>,
) -> Result<(R, Option<Snapshot>), ForkError>
where
    R: Value,
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
    let store = Arc::clone(arena.store());
    let store_hold = store.hold_across_fork();
    // SAFETY: the child runs `child_main`, which never returns (it ends with `_exit`) and, apart
    // from the caller's closure, makes only system calls and allocations (see the module docs on
    // what the closure may do in a multi-threaded parent).
    match unsafe { process::fork() }? {
        Forked::Child => {
            drop(store_hold);
            drop(read_end);
            child_main(arena, f, base.is_some(), write_end, lock, parent, options)
        }
        Forked::Parent(pid) => {
            drop(store_hold);
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
                // A timeout too long to be a point in time is no timeout.
                deadline: options.timeout.and_then(|t| Instant::now().checked_add(t)),
                timeout: options.timeout.unwrap_or_default(),
            };
            collect(session, base, page, pages)
        }
    }
}

/// The parent's side: reads the child's message and builds the result.
fn collect<R: Value>(
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
    // Checked, not trusted: the closure may have written to the pipe itself, or made its value
    // with `unsafe` code.
    let mut bytes = vec![0u8; size_of::<R>()];
    session.recv(&mut bytes)?;
    let value = bytemuck::checked::try_pod_read_unaligned::<R>(&bytes).map_err(|_| {
        ForkError::InvalidResult {
            type_name: std::any::type_name::<R>(),
        }
    })?;
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
