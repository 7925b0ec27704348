//! The child's side of a branch: running the closure, sending back its value (and the pages it
//! wrote) or its panic message, and ending with `_exit`.

use super::pipe::{register, CLOSE_IN_CHILD};
use super::{
    Branch, ForkOptions, EXIT_ORPHANED, EXIT_PANICKED, EXIT_UNDELIVERED, MAX_MESSAGE, PANICKED,
    RETURNED,
};
use crate::arena::Arena;
use crate::page_set::runs;
use crate::ptr::value::Value;
use crate::sys::process::{self, Pid};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::MutexGuard;

/// The child's side. Never returns: every path ends in `_exit`.
pub(super) fn child_main<R, F>(
    arena: &mut Arena,
    f: F,
    send_pages: bool,
    pipe: OwnedFd,
    lock: MutexGuard<'_, ()>,
    parent: Pid,
    options: &ForkOptions,
) -> !
where
    R: Value,
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

fn send_result<R: Value>(arena: &mut Arena, value: &R, send_pages: bool, pipe: &OwnedFd) -> i32 {
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
