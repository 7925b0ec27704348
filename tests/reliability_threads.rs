//! Eight threads read snapshots (raw `read`, `as_bytes` views, typed `get`) while the arena is
//! written, snapshotted and restored; snapshots and arenas made from them are dropped on other
//! threads than the ones that made them. Every read must see exactly the frozen value.

#![cfg(target_os = "linux")]

mod common;
use common::Rng;
use cowarena::{Arena, Ptr, Snapshot};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

const READERS: usize = 8;
/// Pages whose bytes the snapshots freeze (the typed objects live in pages above them).
const PAGES: usize = 96;

/// What a snapshot must show: per raw page, the word repeated over the whole page, and the value
/// of each typed counter.
struct Frozen {
    words: Vec<u64>,
    counters: Vec<u64>,
}

/// Page `p` holding `w` is `w`'s eight bytes repeated.
fn page_bytes(w: u64, page: usize) -> impl Iterator<Item = u8> {
    w.to_le_bytes().into_iter().cycle().take(page)
}

fn check_page(bytes: &[u8], w: u64, what: &str) {
    let page = cowarena::page_size();
    assert!(
        bytes.iter().copied().eq(page_bytes(w, page)),
        "{what}: expected the page to hold {w:#x} throughout"
    );
}

/// Where the raw pages start: the upper half of the arena, which the allocator (holding the
/// counters in its first pages) never reaches here.
fn raw_start() -> usize {
    2 * PAGES * cowarena::page_size()
}

/// One reader's check of a snapshot, by the method `how` picks.
fn check_snapshot(s: &Snapshot, f: &Frozen, counters: &[Ptr<u64>], how: usize, rng: &mut Rng) {
    let page = cowarena::page_size();
    let raw = raw_start();
    match how % 4 {
        0 => {
            let view = &s.as_bytes()[raw..];
            for (p, &w) in f.words.iter().enumerate() {
                check_page(&view[p * page..(p + 1) * page], w, "view");
            }
        }
        1 => {
            let mut buf = vec![0u8; PAGES * page];
            s.read(raw, &mut buf).unwrap();
            for (p, &w) in f.words.iter().enumerate() {
                check_page(&buf[p * page..(p + 1) * page], w, "read");
            }
        }
        2 => {
            // Unaligned ranges across page boundaries.
            for _ in 0..16 {
                let start = rng.below(PAGES * page - 64);
                let len = 1 + rng.below(2 * page).min(PAGES * page - start - 1);
                let mut buf = vec![0u8; len];
                s.read(raw + start, &mut buf).unwrap();
                for (i, &b) in buf.iter().enumerate() {
                    let at = start + i;
                    let w = f.words[at / page].to_le_bytes();
                    assert_eq!(b, w[at % page % 8], "read of {len} bytes at {start}");
                }
            }
        }
        _ => {
            for (c, &want) in counters.iter().zip(&f.counters) {
                assert_eq!(*s.get(*c), want, "typed read");
                assert_eq!(*s.try_get(*c).unwrap(), want, "typed try_get");
            }
        }
    }
}

#[test]
fn eight_readers_while_the_arena_writes_snapshots_and_restores() {
    const ROUNDS: usize = 1500;
    let page = cowarena::page_size();
    let mut a = Arena::with_capacity(4 * PAGES * page).unwrap();
    let raw_start = raw_start();
    let counters: Vec<Ptr<u64>> = (0..32).map(|i| a.alloc(i as u64).unwrap()).collect();
    assert!(counters.iter().all(|c| c.offset() < raw_start));
    let counters = Arc::new(counters);

    // The live snapshots readers pick from, with what each must show.
    type Pool = Mutex<Vec<(Snapshot, Arc<Frozen>)>>;
    let pool: Arc<Pool> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicUsize::new(0));
    let forks = Arc::new(Mutex::new(Vec::<(Arena, Arc<Frozen>)>::new()));

    let readers: Vec<_> = (0..READERS)
        .map(|t| {
            let (pool, stop, checks, forks, counters) = (
                Arc::clone(&pool),
                Arc::clone(&stop),
                Arc::clone(&checks),
                Arc::clone(&forks),
                Arc::clone(&counters),
            );
            std::thread::spawn(move || {
                let mut rng = Rng(0x5EED_1000 + t as u64);
                while !stop.load(Ordering::Relaxed) {
                    let picked = {
                        let mut pool = pool.lock().unwrap();
                        if pool.is_empty() {
                            None
                        } else {
                            let i = rng.below(pool.len());
                            // Now and then a reader takes a snapshot out of the pool, so the
                            // last handle is dropped on this thread.
                            Some(if rng.below(8) == 0 {
                                pool.swap_remove(i)
                            } else {
                                pool[i].clone()
                            })
                        }
                    };
                    if let Some((s, f)) = picked {
                        check_snapshot(&s, &f, &counters, rng.next() as usize, &mut rng);
                        checks.fetch_add(1, Ordering::Relaxed);
                    } else {
                        std::thread::yield_now();
                    }
                    // Arenas made from snapshots on the writer's thread are checked, written
                    // and dropped here.
                    let fork = forks.lock().unwrap().pop();
                    if let Some((mut b, f)) = fork {
                        for (p, &w) in f.words.iter().enumerate() {
                            let at = raw_start + p * page;
                            check_page(&b.as_bytes()[at..at + page], w, "arena from a snapshot");
                        }
                        for (c, &want) in counters.iter().zip(&f.counters) {
                            assert_eq!(*b.get(*c), want);
                        }
                        b.write(raw_start, &[0xAB; 64]).unwrap();
                        let s = b.snapshot().unwrap();
                        assert_eq!(s.as_bytes()[raw_start], 0xAB);
                    }
                }
            })
        })
        .collect();

    let mut rng = Rng(0x5EED_2000);
    let mut words = vec![0u64; PAGES];
    let mut values: Vec<u64> = (0..32).collect();
    let mut history: Vec<(Snapshot, Arc<Frozen>)> = Vec::new();
    let write_page = |a: &mut Arena, p: usize, w: u64| {
        let at = raw_start + p * page;
        for (dst, src) in a
            .bytes_mut(at..at + page)
            .unwrap()
            .iter_mut()
            .zip(page_bytes(w, page))
        {
            *dst = src;
        }
    };
    for p in 0..PAGES {
        write_page(&mut a, p, 0);
    }
    for round in 0..ROUNDS {
        for _ in 0..1 + rng.below(8) {
            let p = rng.below(PAGES);
            let w = rng.next();
            write_page(&mut a, p, w);
            words[p] = w;
        }
        let c = rng.below(counters.len());
        values[c] = rng.next();
        *a.get_mut(counters[c]) = values[c];

        let s = a.snapshot().unwrap();
        let f = Arc::new(Frozen {
            words: words.clone(),
            counters: values.clone(),
        });
        history.push((s.clone(), Arc::clone(&f)));
        if history.len() > 64 {
            history.swap_remove(rng.below(64));
        }
        {
            let mut pool = pool.lock().unwrap();
            pool.push((s, f));
            if pool.len() > 32 {
                // Dropped here, or later on whichever reader still holds a clone.
                pool.swap_remove(rng.below(32));
            }
        }
        if round % 4 == 0 {
            let (s, f) = &history[rng.below(history.len())];
            a.restore(s).unwrap();
            words.clone_from(&f.words);
            values.clone_from(&f.counters);
            for (p, &w) in words.iter().enumerate() {
                let at = raw_start + p * page;
                check_page(&a.as_bytes()[at..at + page], w, "restored arena");
            }
            for (c, &want) in counters.iter().zip(&values) {
                assert_eq!(*a.get(*c), want, "restored counter");
            }
        }
        if round % 50 == 0 {
            let (s, f) = &history[rng.below(history.len())];
            forks
                .lock()
                .unwrap()
                .push((s.to_arena().unwrap(), Arc::clone(f)));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("a reader failed");
    }
    let checks = checks.load(Ordering::Relaxed);
    eprintln!("{checks} snapshot checks by {READERS} readers during {ROUNDS} rounds");
    assert!(checks >= ROUNDS, "only {checks} checks");
    // Whatever is left is dropped on another thread than the one that made it.
    let leftovers = (
        std::mem::take(&mut *pool.lock().unwrap()),
        history,
        std::mem::take(&mut *forks.lock().unwrap()),
    );
    std::thread::spawn(move || drop(leftovers)).join().unwrap();
    assert!(a.stats().store.live_pages > 0);
}

/// Eight threads ask for the view of a fresh snapshot at the same moment: all get the same
/// mapping with the same bytes.
#[test]
fn racing_first_views_of_one_snapshot() {
    let page = cowarena::page_size();
    let mut a = Arena::with_capacity(64 * page).unwrap();
    for round in 0..50u8 {
        a.bytes_mut(0..64 * page).unwrap().fill(round);
        let s = a.snapshot().unwrap();
        let barrier = Arc::new(Barrier::new(READERS));
        let handles: Vec<_> = (0..READERS)
            .map(|_| {
                let (s, barrier) = (s.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    let v = s.as_bytes();
                    (v.as_ptr() as usize, v.iter().all(|&b| b == round))
                })
            })
            .collect();
        let views: Vec<(usize, bool)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(views.iter().all(|&(addr, ok)| ok && addr == views[0].0));
        a.write(0, &[round.wrapping_add(1)]).unwrap();
        assert_eq!(s.as_bytes()[0], round);
    }
}

/// A branch whose child uses the page store while another thread of the parent snapshots an
/// arena of the same store: the fork takes the store's lock first, so the child never finds it
/// held forever (which a timeout would otherwise end).
#[test]
fn branches_fork_while_another_thread_uses_their_store() {
    let _serial = common::serial();
    let page = cowarena::page_size();
    let mut a = cowarena::Arena::with_capacity(64 * page).unwrap();
    a.write(0, &[1]).unwrap();
    let s = a.snapshot().unwrap();
    let mut b = s.to_arena().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut results = Vec::new();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut round = 0u8;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                round = round.wrapping_add(1);
                for p in 0..32 {
                    a.write(p * page, &[round]).unwrap();
                }
                drop(a.snapshot().unwrap());
            }
        });
        let options = cowarena::ForkOptions::new().timeout(std::time::Duration::from_secs(5));
        for i in 0..200u8 {
            let got = b.fork_run_with(&options, |child| {
                use cowarena::ViewMut;
                child.write(page, &[i]).unwrap();
                // Reads the frozen page from the store, under its lock.
                let mut first = [0u8];
                s.read(0, &mut first).unwrap();
                first[0] + child.as_bytes()[page]
            });
            results.push((i, got));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    for (i, got) in results {
        assert_eq!(got.unwrap(), 1 + i, "branch {i}");
    }
}
