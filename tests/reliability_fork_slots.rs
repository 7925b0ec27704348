//! A branch forked by one thread can still read every snapshot it inherited while other threads
//! of the parent drop snapshots and take new ones: the page store neither reuses nor punches out
//! a slot freed while a branch is running (it may still map that slot).
#![cfg(target_os = "linux")]

use cowarena::Arena;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 stores.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors are fresh and owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// One byte through a pipe, with plain system calls (the child may call nothing else safely).
fn signal(fd: RawFd) {
    // SAFETY: writes one byte from a valid buffer.
    assert_eq!(unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) }, 1);
}

fn wait_for(fd: RawFd) {
    let mut b = [0u8];
    // SAFETY: reads at most one byte into a valid buffer.
    assert_eq!(unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) }, 1);
}

#[test]
fn a_running_branch_keeps_the_slots_it_inherited() {
    let page = cowarena::page_size();
    let pages = 64;
    let mut b = Arena::with_capacity(pages * page).unwrap();
    b.bytes_mut(0..pages * page).unwrap().fill(7);
    // Held only here (and in the branch's copy of memory) once `b` moves on.
    let old = Arc::new(Mutex::new(Some(b.snapshot().unwrap())));
    b.bytes_mut(0..pages * page).unwrap().fill(8);
    b.snapshot().unwrap();
    let mut a = Arena::with_capacity(page).unwrap();
    let (alive_r, alive_w) = pipe();
    let (go_r, go_w) = pipe();

    let parent = std::thread::scope(|scope| {
        // Another thread of the parent: once the branch runs, it frees the old snapshot's slots
        // and freezes new pages, which would go to those slots if they could be reused.
        let held = Arc::clone(&old);
        let mover = scope.spawn(move || {
            wait_for(alive_r.as_raw_fd());
            drop(held.lock().unwrap().take());
            for v in 10..20u8 {
                b.bytes_mut(0..pages * page).unwrap().fill(v);
                b.snapshot().unwrap();
            }
            signal(go_w.as_raw_fd());
        });
        let seen: u64 = a
            .fork_run(|_| {
                signal(alive_w.as_raw_fd());
                wait_for(go_r.as_raw_fd());
                let s = old
                    .lock()
                    .unwrap()
                    .clone()
                    .expect("the branch's copy still has it");
                let mut buf = vec![0u8; pages * page];
                s.read(0, &mut buf).unwrap();
                buf.iter().map(|&x| u64::from(x)).sum()
            })
            .unwrap();
        mover.join().unwrap();
        seen
    });
    assert_eq!(
        parent,
        7 * (pages * page) as u64,
        "the branch read its inherited snapshot's bytes"
    );
}
