//! Branches run in forked children: values come back, every way a child can fail is an error
//! that says how, the parent's arena never changes, and no child or descriptor is left behind.
//!
//! The tests take one global lock, so that no test forks while another is counting descriptors
//! or children, and no child inherits another test's half-made state.
#![cfg(target_os = "linux")]

mod common;
use bytemuck::{CheckedBitPattern, NoUninit, Pod, Zeroable};
use common::{fds_to, no_children, open_fds, serial};
use cowarena::{Arena, ArenaVec, Array, ForkError, ForkOptions, Pad, ViewMut};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

fn page() -> usize {
    cowarena::page_size()
}

/// Open pipe descriptors of this process.
fn open_pipes() -> usize {
    fds_to("pipe:").len()
}

/// Asserts that this process has no child at all: none running, none left as a zombie.
fn assert_no_children() {
    if let Err(e) = no_children() {
        panic!("{e}");
    }
}

/// Runs `body`, then checks that it left no child and no descriptor behind.
fn clean<T>(body: impl FnOnce() -> T) -> T {
    let fds = open_fds();
    let out = body();
    assert_no_children();
    assert_eq!(open_fds(), fds, "descriptors leaked");
    out
}

/// An arena of `pages` pages, every page holding its own byte pattern, plus the same bytes.
fn patterned(pages: usize) -> (Arena, Vec<u8>) {
    let mut a = Arena::with_capacity(pages * page()).unwrap();
    let model: Vec<u8> = (0..pages * page())
        .map(|i| (i / page() * 7 + i % 251) as u8)
        .collect();
    a.write(0, &model).unwrap();
    (a, model)
}

/// Ends this (child) process with `signal` as its default action would: std's own `SIGSEGV` and
/// `SIGBUS` handler (stack-overflow detection) would otherwise swallow a raised signal.
fn raise(signal: i32) {
    // SAFETY: restores a signal's default action and sends it to this process; no memory is
    // involved. `SIGKILL`'s action cannot change, which the first call reports and is ignored.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
struct Outcome {
    sum: u64,
    pages_seen: u32,
    flag: u32,
}

#[test]
fn a_branch_returns_its_value_and_leaves_the_parent_unchanged() {
    let _g = serial();
    clean(|| {
        let (mut a, model) = patterned(64);
        let out = a
            .fork_run(|b| {
                let sum = b.as_bytes().iter().map(|&x| u64::from(x)).sum();
                b.bytes_mut(0..64 * page()).unwrap().fill(0xEE);
                Outcome {
                    sum,
                    pages_seen: (b.capacity() / page()) as u32,
                    flag: u32::from(b.as_bytes().iter().all(|&x| x == 0xEE)),
                }
            })
            .unwrap();
        let want = Outcome {
            sum: model.iter().map(|&x| u64::from(x)).sum(),
            pages_seen: 64,
            flag: 1,
        };
        assert_eq!(out, want);
        assert_eq!(a.as_bytes(), &model[..]);
        assert_eq!(
            a.stats().dirty_pages,
            64,
            "the parent's own bookkeeping is untouched"
        );
        let unit: () = a.fork_run(|_| ()).unwrap();
        assert_eq!(unit, ());
    });
}

#[test]
fn a_panic_is_an_error_with_its_message() {
    let _g = serial();
    clean(|| {
        let (mut a, model) = patterned(8);
        let r = a.fork_run(|b| -> u8 {
            b.write(0, &[1; 100]).unwrap();
            panic!("branch {} is infeasible", 17);
        });
        match r {
            Err(ForkError::Panicked { message }) => assert_eq!(message, "branch 17 is infeasible"),
            other => panic!("expected a panic, got {other:?}"),
        }
        let r = a.fork_run(|_| -> u8 { std::panic::panic_any(5u32) });
        assert!(
            matches!(r, Err(ForkError::Panicked { message }) if message.contains("not a string"))
        );
        let long = "x".repeat(100_000);
        let r = a.fork_run(|_| -> u8 { panic!("{long}") });
        match r {
            Err(ForkError::Panicked { message }) => assert_eq!(message.len(), 4096),
            other => panic!("expected a panic, got {other:?}"),
        }
        assert_eq!(a.as_bytes(), &model[..]);
    });
}

#[test]
fn abort_segfault_and_signals_are_reported_by_signal() {
    let _g = serial();
    clean(|| {
        let (mut a, model) = patterned(8);
        let r = a.fork_run(|_| -> u8 { std::process::abort() });
        assert!(
            matches!(
                r,
                Err(ForkError::Signaled {
                    signal: libc::SIGABRT,
                    core_dumped: false
                })
            ),
            "{r:?}"
        );

        let r = a.fork_run(|b| -> u8 {
            b.write(0, &[9; 4096]).unwrap();
            raise(libc::SIGSEGV);
            0
        });
        assert!(
            matches!(
                r,
                Err(ForkError::Signaled {
                    signal: libc::SIGSEGV,
                    ..
                })
            ),
            "{r:?}"
        );
        let message = r.unwrap_err().to_string();
        assert!(message.contains("SIGSEGV"), "{message}");

        for signal in [libc::SIGKILL, libc::SIGTERM, libc::SIGBUS] {
            let r = a.fork_run(|_| -> u8 {
                raise(signal);
                0
            });
            assert!(
                matches!(r, Err(ForkError::Signaled { signal: s, .. }) if s == signal),
                "{r:?}"
            );
        }
        assert_eq!(a.as_bytes(), &model[..]);
    });
}

#[test]
fn an_exit_without_a_value_is_reported_with_its_status() {
    let _g = serial();
    clean(|| {
        let (mut a, _) = patterned(4);
        let r = a.fork_run(|_| -> u8 { std::process::exit(7) });
        assert!(matches!(r, Err(ForkError::Exited { code: 7 })), "{r:?}");
        let r = a.fork_run(|_| -> u8 { std::process::exit(0) });
        assert!(matches!(r, Err(ForkError::Exited { code: 0 })), "{r:?}");
    });
}

#[test]
fn a_branch_past_its_timeout_is_killed() {
    let _g = serial();
    clean(|| {
        let (mut a, model) = patterned(16);
        let options = ForkOptions::new().timeout(Duration::from_millis(200));
        let start = Instant::now();
        let r = a.fork_run_with(&options, |b| -> u8 {
            b.write(0, &[3; 8192]).unwrap();
            loop {
                std::hint::spin_loop();
            }
        });
        let took = start.elapsed();
        match r {
            Err(ForkError::TimedOut { timeout }) => assert_eq!(timeout, Duration::from_millis(200)),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(5),
            "{took:?}"
        );

        // A branch that sleeps instead of spinning is killed too.
        let r = a.fork_run_with(&options, |_| -> u8 {
            std::thread::sleep(Duration::from_secs(30));
            0
        });
        assert!(matches!(r, Err(ForkError::TimedOut { .. })), "{r:?}");

        // A branch that finishes in time is not affected by its timeout.
        let generous = ForkOptions::new().timeout(Duration::from_secs(20));
        assert_eq!(
            a.fork_run_with(&generous, |b| b.as_bytes()[5]).unwrap(),
            model[5]
        );
        let (v, s) = a
            .fork_snapshot_with(&generous, |b| {
                b.write(page(), &[1, 2, 3]).unwrap();
                9u8
            })
            .unwrap();
        assert_eq!(v, 9);
        assert_eq!(&s.as_bytes()[page()..page() + 3], &[1, 2, 3]);
        assert_eq!(a.as_bytes(), &model[..]);

        // A timeout too long to be a point in time is none.
        let endless = ForkOptions::new().timeout(Duration::MAX);
        assert_eq!(
            a.fork_run_with(&endless, |b| b.as_bytes()[5]).unwrap(),
            model[5]
        );
        let (v, _) = a.fork_snapshot_with(&endless, |_| 4u8).unwrap();
        assert_eq!(v, 4);
    });
}

#[test]
fn branches_nest() {
    let _g = serial();
    clean(|| {
        let (mut a, model) = patterned(16);
        let out: [u8; 4] = a
            .fork_run(|b| {
                b.write(0, &[1]).unwrap();
                let inner: [u8; 2] = b
                    .fork_run(|c| {
                        c.write(1, &[2]).unwrap();
                        [c.as_bytes()[0], c.as_bytes()[1]]
                    })
                    .unwrap();
                let crashed = b.fork_run(|c| -> u8 {
                    c.write(0, &[99]).unwrap();
                    raise(libc::SIGSEGV);
                    0
                });
                let crash_signal = match crashed {
                    Err(ForkError::Signaled { signal, .. }) => signal as u8,
                    _ => 0,
                };
                // The nested branches changed nothing here.
                [
                    inner[0],
                    inner[1],
                    crash_signal,
                    b.as_bytes()[0] + b.as_bytes()[1],
                ]
            })
            .unwrap();
        assert_eq!(out, [1, 2, libc::SIGSEGV as u8, 1 + model[1]]);
        assert_eq!(a.as_bytes(), &model[..]);
    });
}

#[test]
fn a_timed_out_branch_takes_its_nested_branches_with_it() {
    let _g = serial();
    clean(|| {
        let path = std::env::temp_dir().join(format!("cowarena-fork-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut a = Arena::with_capacity(page()).unwrap();
        let options = ForkOptions::new().timeout(Duration::from_millis(300));
        let r = a.fork_run_with(&options, |b| -> u8 {
            let _ = b.fork_run(|_| -> u8 {
                std::fs::write(&path, std::process::id().to_string()).unwrap();
                loop {
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
            0
        });
        assert!(matches!(r, Err(ForkError::TimedOut { .. })), "{r:?}");
        let grandchild: i32 = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        std::fs::remove_file(&path).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // Gone, or dead and waiting for whoever adopted it to reap it.
            let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat"));
            let dead = stat.map_or(true, |s| {
                s.rsplit(')').next().unwrap().trim_start().starts_with('Z')
            });
            if dead {
                break;
            }
            if Instant::now() > deadline {
                // SAFETY: plain system call; keeps a failed run from leaving the process behind.
                unsafe { libc::kill(grandchild, libc::SIGKILL) };
                panic!("the nested branch {grandchild} outlived its parent");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
}

#[test]
fn a_crash_after_writing_leaves_the_parent_bytes_unchanged() {
    let _g = serial();
    clean(|| {
        let (mut a, model) = patterned(256);
        let before = a.snapshot().unwrap();
        let r = a.fork_run(|b| -> u8 {
            b.bytes_mut(0..256 * page()).unwrap().fill(0);
            // SAFETY: in bounds; no slice of the arena is live.
            unsafe {
                let p = b.as_mut_ptr();
                for i in (0..256 * page()).step_by(64) {
                    p.add(i).write_volatile(0x5A);
                }
            }
            raise(libc::SIGSEGV);
            0
        });
        assert!(matches!(r, Err(ForkError::Signaled { .. })), "{r:?}");
        assert_eq!(a.as_bytes(), &model[..]);
        // The parent's snapshots and page store are intact and still work.
        assert_eq!(before.as_bytes(), &model[..]);
        a.write(5, &[1]).unwrap();
        a.restore(&before).unwrap();
        assert_eq!(a.as_bytes(), &model[..]);
        let after = a.snapshot().unwrap();
        assert_eq!(after.as_bytes(), &model[..]);
    });
}

#[test]
fn fork_snapshot_returns_exactly_the_childs_writes() {
    let _g = serial();
    clean(|| {
        let pages = 512;
        let (mut a, mut model) = patterned(pages);
        let s_old = a.snapshot().unwrap();
        let original = model.clone();
        // Unsaved writes in the parent belong to the branch's starting point.
        a.write(3 * page() + 10, b"unsaved").unwrap();
        model[3 * page() + 10..3 * page() + 17].copy_from_slice(b"unsaved");
        let parent_model = model.clone();

        let writes: Vec<(usize, Vec<u8>)> = vec![
            (0, vec![1; 3]),
            (7 * page() - 2, vec![2; 4]), // across a page boundary
            (100 * page(), vec![3; 20 * page()]), // a long run
            (pages * page() - 1, vec![4]), // the last byte
            (3 * page() + 12, b"XY".to_vec()), // over the parent's unsaved write
        ];
        let raw_at = 300 * page() + 77;
        let (value, s) = a
            .fork_snapshot(|b| {
                for (at, bytes) in &writes {
                    b.write(*at, bytes).unwrap();
                }
                // SAFETY: in bounds; no slice of the arena is live.
                unsafe { b.as_mut_ptr().add(raw_at).write(0xAB) };
                0xC0FFEEu32
            })
            .unwrap();
        assert_eq!(value, 0xC0FFEE);
        for (at, bytes) in &writes {
            model[*at..*at + bytes.len()].copy_from_slice(bytes);
        }
        model[raw_at] = 0xAB;
        assert!(
            s.as_bytes() == &model[..],
            "the snapshot is the child's final arena"
        );
        assert_eq!(a.as_bytes(), &parent_model[..], "the parent is unchanged");
        assert!(
            s_old.as_bytes() == &original[..],
            "older snapshots are unchanged"
        );

        // The result lives in the parent's page store: restoring it commits the branch, and
        // arenas made from it are independent.
        a.restore(&s).unwrap();
        assert_eq!(a.as_bytes(), &model[..]);
        let mut c = s.to_arena().unwrap();
        c.write(0, &[77]).unwrap();
        assert_eq!(s.as_bytes()[0], 1);

        // A branch that writes nothing returns the parent's state.
        let (_, same) = a.fork_snapshot(|_| 0u8).unwrap();
        assert!(same.as_bytes() == &model[..]);
    });
}

#[test]
fn fork_snapshot_of_a_failing_branch_is_an_error() {
    let _g = serial();
    clean(|| {
        let (mut a, model) = patterned(32);
        let r = a.fork_snapshot(|b| -> u8 {
            b.write(0, &[1; 4096]).unwrap();
            panic!("no")
        });
        assert!(matches!(r, Err(ForkError::Panicked { .. })), "{r:?}");
        let r = a.fork_snapshot(|_| -> u8 { std::process::abort() });
        assert!(matches!(r, Err(ForkError::Signaled { .. })), "{r:?}");
        let options = ForkOptions::new().timeout(Duration::from_millis(100));
        let r = a.fork_snapshot_with(&options, |_| -> u8 {
            loop {
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        assert!(matches!(r, Err(ForkError::TimedOut { .. })), "{r:?}");
        assert_eq!(a.as_bytes(), &model[..]);
    });
}

#[test]
fn no_branch_while_an_arena_shares_memory_with_proxies() {
    let _g = serial();
    clean(|| {
        let (mut a, _) = patterned(4);
        let mut other = Arena::with_capacity(page()).unwrap();
        let proxy = a.proxy().unwrap();
        for r in [a.fork_run(|_| 0u8), other.fork_run(|_| 0u8)] {
            assert!(
                matches!(r, Err(ForkError::Parent(cowarena::Error::Unsupported(_)))),
                "{r:?}"
            );
        }
        drop(proxy);
        assert!(!a.stats().has_proxies, "cleared when the last proxy goes");
        // `a` shares its memory until it leaves that layout, so other branches still wait.
        assert!(other.fork_run(|_| 0u8).is_err());
        // Forking `a` returns it to its own layout first.
        let seen = a.fork_run(|b| b.as_bytes()[page() + 1]).unwrap();
        assert_eq!(seen, a.as_bytes()[page() + 1]);
        assert_eq!(other.fork_run(|_| 7u8).unwrap(), 7);
    });
}

#[test]
fn a_child_of_a_raw_fork_cannot_write_a_shared_arena() {
    let _g = serial();
    clean(|| {
        let (mut a, model) = patterned(4);
        let proxy = a.proxy().unwrap();
        // SAFETY: the child only calls `write` (which fails before touching memory and
        // allocates nothing) and `_exit`.
        match unsafe { libc::fork() } {
            0 => {
                let code = match a.write(0, &[0xEE]) {
                    Err(cowarena::Error::Unsupported(_)) => 0,
                    _ => 1,
                };
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            pid => {
                assert!(pid > 0, "fork failed");
                let mut status = 0;
                // SAFETY: waits for the child just forked.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
            }
        }
        assert_eq!(
            a.as_bytes(),
            &model[..],
            "the child's write never reached the parent"
        );
        assert_eq!(proxy.with(&a).unwrap().as_bytes(), &model[..]);
    });
}

#[test]
fn a_branch_holds_only_its_own_pipe() {
    let _g = serial();
    clean(|| {
        let mut a = Arena::with_capacity(page()).unwrap();
        let fds = open_fds();
        let in_child = a.fork_run(|_| open_fds() as u64).unwrap();
        assert_eq!(
            in_child,
            fds as u64 + 1,
            "the child has its write end, nothing else new"
        );

        // A branch in flight on another thread: its read end is not inherited by the next.
        let mut slow = Arena::with_capacity(page()).unwrap();
        let before = open_pipes();
        std::thread::scope(|scope| {
            let t = scope.spawn(|| {
                slow.fork_run(|_| -> u8 {
                    std::thread::sleep(Duration::from_secs(1));
                    1
                })
            });
            // Until the other branch runs: its parent then holds the read end alone.
            let deadline = Instant::now() + Duration::from_secs(5);
            while open_pipes() != before + 1 {
                assert!(Instant::now() < deadline, "the other branch did not start");
                std::thread::sleep(Duration::from_millis(2));
            }
            let pipes = before + 1;
            let in_child = a.fork_run(|_| open_pipes() as u64).unwrap();
            assert_eq!(
                in_child, pipes as u64,
                "own write end in, the other branch's read end out"
            );
            assert_eq!(t.join().unwrap().unwrap(), 1);
        });
    });
}

#[test]
fn many_branches_from_many_threads_leave_nothing_behind() {
    let _g = serial();
    clean(|| {
        std::thread::scope(|scope| {
            for t in 0..4u8 {
                scope.spawn(move || {
                    let (mut a, model) = patterned(32);
                    let options = ForkOptions::new().timeout(Duration::from_millis(50));
                    for i in 0..12u8 {
                        match i % 4 {
                            0 => assert_eq!(
                                a.fork_run(move |b| b.as_bytes()[1] ^ t).unwrap(),
                                model[1] ^ t
                            ),
                            1 => assert!(a.fork_run(|_| -> u8 { panic!("p") }).is_err()),
                            2 => assert!(a
                                .fork_run_with(&options, |_| -> u8 {
                                    loop {
                                        std::thread::sleep(Duration::from_millis(1));
                                    }
                                })
                                .is_err()),
                            _ => {
                                let (_, s) = a
                                    .fork_snapshot(move |b| {
                                        b.write(page() * 2, &[t, i]).unwrap();
                                        0u8
                                    })
                                    .unwrap();
                                assert_eq!(&s.as_bytes()[page() * 2..page() * 2 + 2], &[t, i]);
                            }
                        }
                    }
                    assert_eq!(a.as_bytes(), &model[..]);
                });
            }
        });
    });
}

#[test]
fn the_child_is_reaped_when_the_parent_side_fails() {
    let _g = serial();
    // In a single-threaded helper process, so the address-space limit that makes the parent
    // side fail touches nothing else: after the fork the parent cannot reserve the result
    // arena's address space.
    // SAFETY: the helper runs only this test's code and ends with `_exit`.
    let helper = unsafe { libc::fork() };
    assert!(helper >= 0);
    if helper == 0 {
        let code = std::panic::catch_unwind(|| {
            let mut a = Arena::with_capacity(1 << 30).unwrap();
            a.write(0, &[1]).unwrap();
            let vm_kib: usize = std::fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("VmSize:")?
                        .trim()
                        .strip_suffix("kB")?
                        .trim()
                        .parse()
                        .ok()
                })
                .unwrap();
            let limit = (vm_kib * 1024 + (256 << 20)) as libc::rlim_t;
            let rl = libc::rlimit {
                rlim_cur: limit,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: a valid rlimit pointer.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
            let r = a.fork_snapshot(|b| {
                b.write(4096, &[2]).unwrap();
                0u8
            });
            assert!(
                matches!(r, Err(ForkError::Parent(cowarena::Error::Os { .. }))),
                "{r:?}"
            );
            assert_no_children();
        });
        // SAFETY: ends the helper without running the test harness's code.
        unsafe { libc::_exit(if code.is_ok() { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(helper, &mut status, 0) }, helper);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status:#x}"
    );
    assert_no_children();
}

#[test]
fn typed_values_change_in_a_branch_and_come_back_with_its_snapshot() {
    let _g = serial();
    clean(|| {
        let mut a = Arena::with_capacity(1 << 20).unwrap();
        let counter = a
            .alloc(Outcome {
                sum: 1,
                pages_seen: 2,
                flag: 3,
            })
            .unwrap();
        let (made, s) = a
            .fork_snapshot(|b| {
                b.get_mut(counter).sum += 100;
                let gone = b.alloc(1u64).unwrap();
                b.free(gone).unwrap();
                let made = b.alloc([9u32; 8]).unwrap();
                b.set_root(made);
                let nested: u64 = b
                    .fork_run(|c| {
                        c.get_mut(counter).sum = 0;
                        c.get(made)[0] as u64
                    })
                    .unwrap();
                b.get_mut(made)[1] = nested as u32 + 1;
                made
            })
            .unwrap();
        assert_eq!(a.get(counter).sum, 1, "the parent's object is unchanged");
        assert!(
            a.try_get(made).is_err(),
            "the child's object does not exist in the parent"
        );
        assert_eq!(s.get(counter).sum, 101);
        assert_eq!(s.get(made)[..2], [9, 10]);
        assert_eq!(s.root::<[u32; 8]>(), Some(made));
        a.restore(&s).unwrap();
        assert_eq!(a.get(made)[1], 10);
        a.free(made).unwrap();
    });
}

#[test]
fn with_sigchld_ignored_results_still_arrive() {
    let _g = serial();
    // In a helper process, so that the ignored SIGCHLD touches nothing else.
    // SAFETY: the helper runs only this test's code and ends with `_exit`.
    let helper = unsafe { libc::fork() };
    assert!(helper >= 0);
    if helper == 0 {
        let code = std::panic::catch_unwind(|| {
            // SAFETY: sets a signal disposition; no handler code is involved.
            unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
            let mut a = Arena::with_capacity(page()).unwrap();
            assert_eq!(a.fork_run(|b| b.as_bytes()[0] + 1).unwrap(), 1);
            let (_, s) = a.fork_snapshot(|b| b.write(0, &[5]).unwrap()).unwrap();
            assert_eq!(s.as_bytes()[0], 5);
            let r = a.fork_run(|_| -> u8 { panic!("seen") });
            assert!(matches!(r, Err(ForkError::Panicked { .. })), "{r:?}");
            let r = a.fork_run(|_| -> u8 { std::process::abort() });
            match r {
                Err(ForkError::Parent(cowarena::Error::Os { source, .. })) => {
                    assert_eq!(source.raw_os_error(), Some(libc::ECHILD))
                }
                other => panic!("expected ECHILD, got {other:?}"),
            }
            assert_no_children();
        });
        // SAFETY: ends the helper without running the test harness's code.
        unsafe { libc::_exit(if code.is_ok() { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(helper, &mut status, 0) }, helper);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status:#x}"
    );
    assert_no_children();
}

/// A file saved in a branch records a stamp ceiling from the children's range; after the parent
/// opens it, new branches must still find fresh stamps at once (they start above the floor the
/// file raised, instead of stepping up to it).
#[test]
fn branches_allocate_at_once_after_a_branchs_file_is_opened() {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("cowarena-fork-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("branch.snap");
    clean(|| {
        let mut a = Arena::with_capacity(1 << 20).unwrap();
        let p = a.alloc(5u64).unwrap();
        let s = a.snapshot().unwrap();
        let saved: u32 = a
            .fork_run(|b| {
                b.alloc(1u64).unwrap();
                u32::from(s.save(&path).is_ok())
            })
            .unwrap();
        assert_eq!(saved, 1);
        let opened = cowarena::Snapshot::open(&path).unwrap();
        assert_eq!(*opened.get(p), 5);
        let options = ForkOptions::new().timeout(Duration::from_secs(10));
        for _ in 0..8 {
            let got: u64 = a
                .fork_run_with(&options, |b| {
                    let q = b.alloc(7u64).unwrap();
                    *b.get(q)
                })
                .unwrap();
            assert_eq!(got, 7);
        }
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, NoUninit, CheckedBitPattern)]
#[repr(u8)]
enum Verdict {
    Pass = 1,
    Fail = 2,
    Skip = 3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, NoUninit, CheckedBitPattern)]
#[repr(u32)]
enum Found {
    Nothing(Pad<8>),
    At(u32, Verdict, Pad<3>),
    Marks(Array<bool, 8>),
}

#[test]
fn results_need_not_be_pod() {
    let _g = serial();
    clean(|| {
        let mut a = Arena::with_capacity(1 << 20).unwrap();
        a.write(0, &[3]).unwrap();
        let first = |b: &cowarena::Branch<'_>| b.as_bytes()[0];
        let v = a
            .fork_run(|b| match first(b) {
                3 => Verdict::Skip,
                _ => Verdict::Fail,
            })
            .unwrap();
        assert_eq!(v, Verdict::Skip);
        assert!(a.fork_run(|b| first(b) == 3).unwrap());
        assert!(!a.fork_run(|b| first(b) == 4).unwrap());
        let id = a.fork_run(|b| NonZeroU32::new(u32::from(first(b))));
        assert_eq!(id.unwrap(), NonZeroU32::new(3));
        assert_eq!(a.fork_run(|_| None::<NonZeroU32>).unwrap(), None);
        assert_eq!(a.fork_run(|_| 'λ').unwrap(), 'λ');
        let all = a.fork_run(|_| Array([Verdict::Pass, Verdict::Fail, Verdict::Skip]));
        assert_eq!(
            all.unwrap(),
            Array([Verdict::Pass, Verdict::Fail, Verdict::Skip])
        );
        let options = ForkOptions::new().timeout(Duration::from_secs(30));
        let found = a.fork_run_with(&options, |b| {
            Found::At(u32::from(first(b)), Verdict::Pass, Pad::ZERO)
        });
        assert_eq!(found.unwrap(), Found::At(3, Verdict::Pass, Pad::ZERO));
        // Nested: a branch's own branches return such values too.
        let nested = a.fork_run(|b| {
            let marks = b.fork_run(|_| Array([true, false, true])).unwrap();
            match b.fork_run_with(&options, |_| Found::Nothing(Pad::ZERO)) {
                Ok(Found::Nothing(_)) => {
                    Found::Marks(Array(std::array::from_fn(|i| i < 3 && marks[i])))
                }
                _ => Found::Nothing(Pad::ZERO),
            }
        });
        let want = [true, false, true, false, false, false, false, false];
        assert_eq!(nested.unwrap(), Found::Marks(Array(want)));
    });
}

/// A branch whose arena holds arrays of non-`Pod` values changes them, allocates more, and
/// returns one; the snapshot it brings back holds its changes, the parent's arena none.
#[test]
fn arrays_change_in_a_branch_and_come_back() {
    let _g = serial();
    clean(|| {
        let mut a = Arena::with_capacity(1 << 20).unwrap();
        let p = a.alloc(Array([Verdict::Pass; 4])).unwrap();
        let v = ArenaVec::from_elem(&mut a, Array([false; 4]), 100).unwrap();
        let (made, s) = a
            .fork_snapshot(|b| {
                b.get_mut(p)[2] = Verdict::Fail;
                v.set(b, 99, Array([true; 4]));
                v.push(b, Array([true, false, true, false])).unwrap();
                let made = b.alloc(Array(['a', 'b'])).unwrap();
                b.set_root(made);
                let seen = b.fork_run(|c| *c.get(p)).unwrap();
                assert_eq!(seen[2], Verdict::Fail);
                made
            })
            .unwrap();
        assert_eq!(*a.get(p), Array([Verdict::Pass; 4]));
        assert_eq!(v.len(&a), 100);
        assert!(a.try_get(made).is_err());
        assert_eq!(s.get(p)[2], Verdict::Fail);
        assert_eq!(v.get(&s, 99), Some(&Array([true; 4])));
        assert_eq!(v.get(&s, 100), Some(&Array([true, false, true, false])));
        assert_eq!(*s.get(made), Array(['a', 'b']));
        assert_eq!(s.root::<Array<char, 2>>(), Some(made));
        let back = a.fork_run(|b| *b.get(p)).unwrap();
        assert_eq!(back, Array([Verdict::Pass; 4]));
    });
}

/// Writes a whole result message to this (child) process's result pipe, the one pipe it holds
/// beyond `before`, and ends the child: a closure that forges its own result. The message is
/// the crate's: a `[tag, page count]` header (tag 0: a value) of native-endian `u64`, then the
/// value's bytes.
fn forge_result(before: &[i32], value: &[u8]) -> ! {
    let fd = fds_to("pipe:")
        .into_iter()
        .find(|fd| !before.contains(fd))
        .expect("the result pipe");
    let mut message = [0u64, 0].map(u64::to_ne_bytes).concat();
    message.extend_from_slice(value);
    // SAFETY: writes a buffer of this length to a descriptor this process holds, then ends the
    // process without unwinding or running destructors, as the crate's child does.
    unsafe {
        libc::write(fd, message.as_ptr().cast(), message.len());
        libc::_exit(0)
    }
}

#[test]
fn invalid_result_bytes_are_an_error() {
    let _g = serial();
    clean(|| {
        let mut a = Arena::with_capacity(1 << 20).unwrap();
        let before = fds_to("pipe:");
        let r = a.fork_run(|_| -> bool { forge_result(&before, &[2]) });
        match r {
            Err(e @ ForkError::InvalidResult { type_name: "bool" }) => {
                assert!(e.to_string().contains("not a valid bool"), "{e}")
            }
            other => panic!("expected an invalid result, got {other:?}"),
        }
        let r = a.fork_run(|_| -> Verdict { forge_result(&before, &[0]) });
        assert!(matches!(r, Err(ForkError::InvalidResult { .. })), "{r:?}");
        let r = a.fork_run(|_| -> Option<NonZeroU32> { forge_result(&before, &[0; 4]) });
        assert_eq!(r.unwrap(), None, "all zeros is `None`");
        let r = a.fork_run(|_| -> NonZeroU32 { forge_result(&before, &[0; 4]) });
        assert!(matches!(r, Err(ForkError::InvalidResult { .. })), "{r:?}");
        // An invalid element, brought back with a snapshot: no snapshot is made.
        let r = a.fork_snapshot(|b| -> Array<bool, 4> {
            b.write(0, b"lost").unwrap();
            forge_result(&before, &[1, 0, 1, 3])
        });
        assert!(matches!(r, Err(ForkError::InvalidResult { .. })), "{r:?}");
        let valid = a.fork_snapshot(|_| -> Array<bool, 4> { forge_result(&before, &[1, 0, 1, 0]) });
        let (result, snapshot) = valid.unwrap();
        assert_eq!(result, Array([true, false, true, false]));
        assert_eq!(
            &snapshot.as_bytes()[..4],
            &[0; 4],
            "the refused branch's write left no trace"
        );
    });
}
