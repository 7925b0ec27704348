//! Limits: a hundred thousand live snapshots, scattered writes that would fragment the arena's
//! mapping, random restores, snapshot views and arenas made from fragmented snapshots. Open
//! files, kernel mappings and memory stay within bounds derived from the documented constants
//! (the process limit is 65530 mappings) and return to where they started once all is dropped.

#![cfg(target_os = "linux")]

mod common;
use common::{
    addresses, cowarena_memfds, mappings, mappings_in, memfd_bytes, memfd_mappings, open_fds,
    rss_kib, serial, Rng,
};
use cowarena::{Arena, Snapshot, MAX_REMAPPED_RUNS, MAX_VIEW_RUNS};
use std::ops::Range;

const MIB: usize = 1 << 20;
/// The page store's chunk size (README: 16 MiB chunk files).
const CHUNK: usize = 16 * MIB;
/// Process-wide mapping counts also see the stacks and allocator heaps of the test harness's
/// other threads, which come and go while a test runs.
const OTHER_THREADS: usize = 16;

/// Resident memory after handing freed heap memory back to the kernel, in KiB.
fn trimmed_rss_kib() -> usize {
    // SAFETY: malloc_trim only returns unused heap memory to the kernel; no pointer is involved.
    unsafe { libc::malloc_trim(0) };
    rss_kib()
}

/// Checks that resident memory is back to `start` (KiB), give or take the allocator's caches.
/// Not under AddressSanitizer, whose allocator keeps freed memory in quarantine; it is
/// recognized by the terabytes of shadow address space it reserves.
fn check_rss(start: usize) {
    if common::status_kib("VmSize:") > 1 << 33 {
        return;
    }
    let rss = trimmed_rss_kib();
    assert!(
        rss <= start + 8 * 1024,
        "resident memory grew from {start} KiB to {rss} KiB"
    );
}

fn word(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Checks an arena's mapping against the documented bound: its reservation, split at most twice
/// per remapped run, and at most `MAX_REMAPPED_RUNS` runs between compactions.
fn check_arena_mappings(a: &Arena, when: &str) {
    let runs = a.stats().remapped_runs;
    assert!(
        runs <= MAX_REMAPPED_RUNS,
        "{when}: {runs} remapped runs, more than MAX_REMAPPED_RUNS"
    );
    let held = mappings_in(addresses(a.as_bytes()));
    assert!(
        held <= 1 + 2 * runs,
        "{when}: the arena holds {held} kernel mappings, more than 1 + 2 * remapped_runs ({runs})"
    );
}

/// Checks the store's files: one open chunk file per chunk with a live page, plus the one being
/// filled; no other file descriptor; and the kernel's count of their memory equals the store's.
fn check_files(a: &Arena, fds0: usize, when: &str) {
    let st = a.stats().store;
    assert!(
        st.chunk_files <= st.live_pages + 1,
        "{when}: {} chunk files for {} live pages",
        st.chunk_files,
        st.live_pages
    );
    let fds = open_fds();
    assert!(
        fds <= fds0 + st.chunk_files,
        "{when}: {fds} open files, {fds0} before and {} chunk files",
        st.chunk_files
    );
    let bytes = memfd_bytes();
    assert_eq!(
        bytes, st.held_bytes,
        "{when}: the store's files hold {bytes} bytes, its counters say {}",
        st.held_bytes
    );
}

/// Checks that nothing is left of the arenas and views that lived at `ranges`: no mapping there,
/// no store file open or mapped.
fn check_released(ranges: &[Range<usize>], fds0: usize) {
    assert!(cowarena_memfds().is_empty(), "every chunk file is closed");
    // At most as many as before: the harness may close descriptors of its own meanwhile.
    let fds = open_fds();
    assert!(
        fds <= fds0,
        "no file descriptor is left open: {fds0} before, {fds} after"
    );
    assert_eq!(memfd_mappings(), 0, "no mapping of a store file is left");
    for r in ranges {
        assert_eq!(mappings_in(r.clone()), 0, "{r:x?} is unmapped");
    }
}

#[test]
fn a_hundred_thousand_live_snapshots() {
    let _serial = serial();
    const SNAPSHOTS: usize = 100_000;
    let page = cowarena::page_size();
    let pages = 64;
    let fds0 = open_fds();
    let maps0 = mappings();
    let rss0 = trimmed_rss_kib();
    assert!(
        cowarena_memfds().is_empty(),
        "no store files before the test"
    );

    let mut a = Arena::with_capacity(pages * page).unwrap();
    let range = addresses(a.as_bytes());
    let mut rng = Rng(0x5EED_0001);
    let mut snaps: Vec<Snapshot> = Vec::with_capacity(SNAPSHOTS);
    // The page each snapshot's write went to, and the contents (the first word of every page)
    // of every 1000th snapshot.
    let mut written = Vec::with_capacity(SNAPSHOTS);
    let mut model = vec![0u64; pages];
    let mut samples = Vec::new();
    let mut max_maps = 0;
    for i in 0..SNAPSHOTS {
        let p = rng.below(pages);
        let v = i as u64 + 1;
        a.write(p * page, &v.to_le_bytes()).unwrap();
        model[p] = v;
        snaps.push(a.snapshot().unwrap());
        written.push(p);
        if i % 1000 == 0 {
            samples.push((i, model.clone()));
        }
        if i % 10_000 == 9_999 {
            let when = format!("after {} snapshots", i + 1);
            let st = a.stats().store;
            // Each snapshot froze its one written page; a compaction now and then freezes the
            // arena's pages once more.
            assert!(
                st.live_pages > i && st.live_pages <= i + 1 + (i + 1) / 8 + pages,
                "{when}: {} live pages",
                st.live_pages
            );
            assert!(st.held_bytes >= st.live_pages * page, "{when}: {st:?}");
            assert!(
                st.chunk_files <= st.held_bytes.div_ceil(CHUNK) + 1,
                "{when}: {st:?}"
            );
            assert!(
                st.sealed_chunk_files + 1 >= st.chunk_files,
                "{when}: full chunks are sealed: {st:?}"
            );
            check_files(&a, fds0, &when);
            check_arena_mappings(&a, &when);
            max_maps = max_maps.max(mappings());
        }
    }
    assert!(
        max_maps <= maps0 + 1 + 2 * MAX_REMAPPED_RUNS + OTHER_THREADS,
        "mappings grew from {maps0} to {max_maps}"
    );

    // Every snapshot still holds its own write, and the sampled ones all their pages.
    for (i, (s, &p)) in snaps.iter().zip(&written).enumerate() {
        let mut buf = [0u8; 8];
        s.read(p * page, &mut buf).unwrap();
        assert_eq!(u64::from_le_bytes(buf), i as u64 + 1, "snapshot {i}");
    }
    for (i, want) in &samples {
        for (p, &v) in want.iter().enumerate() {
            let mut buf = [0u8; 8];
            snaps[*i].read(p * page, &mut buf).unwrap();
            assert_eq!(u64::from_le_bytes(buf), v, "snapshot {i} page {p}");
        }
    }
    // Restores to random old snapshots give back exactly their contents.
    for _ in 0..1000 {
        let (i, want) = &samples[rng.below(samples.len())];
        a.restore(&snaps[*i]).unwrap();
        for (p, &v) in want.iter().enumerate() {
            assert_eq!(word(a.as_bytes(), p * page), v, "restored {i}, page {p}");
        }
        check_arena_mappings(&a, "after a restore");
    }

    // Dropping the snapshots leaves the store with the arena's own pages.
    drop(snaps);
    let st = a.stats().store;
    assert!(
        st.live_pages <= 2 * pages,
        "with only the arena left the store holds {} live pages",
        st.live_pages
    );
    check_files(&a, fds0, "after dropping the snapshots");
    drop(a);
    check_released(&[range], fds0);
    drop((written, samples));
    check_rss(rss0);
}

#[test]
fn scattered_writes_and_random_restores_keep_mappings_bounded() {
    let _serial = serial();
    const STEPS: usize = 30_000;
    const KEPT: usize = 256;
    let page = cowarena::page_size();
    let pages = 8192;
    let fds0 = open_fds();
    let maps0 = mappings();
    let rss0 = trimmed_rss_kib();
    // The arena's own mapping plus one snapshot view at a time.
    let bound = maps0 + (1 + 2 * MAX_REMAPPED_RUNS) + (1 + 2 * MAX_VIEW_RUNS) + OTHER_THREADS;

    let mut a = Arena::with_capacity(pages * page).unwrap();
    let mut ranges = vec![addresses(a.as_bytes())];
    let mut rng = Rng(0x5EED_0002);
    let mut model = vec![0u64; pages];
    // Live snapshots with their contents (the first word of every page).
    let mut kept: Vec<(Snapshot, Vec<u64>)> = Vec::new();
    let mut max_maps = 0;
    for step in 0..STEPS {
        // One or two single scattered pages per snapshot.
        for _ in 0..1 + step % 2 {
            let p = rng.below(pages);
            let v = rng.next();
            a.write(p * page, &v.to_le_bytes()).unwrap();
            model[p] = v;
        }
        kept.push((a.snapshot().unwrap(), model.clone()));
        if kept.len() > KEPT {
            kept.swap_remove(rng.below(KEPT));
        }
        if step % 3 == 0 {
            let (s, want) = &kept[rng.below(kept.len())];
            a.restore(s).unwrap();
            model.clone_from(want);
            for _ in 0..32 {
                let p = rng.below(pages);
                assert_eq!(
                    word(a.as_bytes(), p * page),
                    model[p],
                    "step {step}: page {p}"
                );
            }
        }
        check_arena_mappings(&a, &format!("step {step}"));
        if step % 1000 == 999 {
            // A full check of the arena, and of one snapshot through its view, which goes with
            // the snapshot.
            for (p, &v) in model.iter().enumerate() {
                assert_eq!(word(a.as_bytes(), p * page), v, "step {step}: page {p}");
            }
            let (s, want) = kept.swap_remove(rng.below(kept.len()));
            let view = s.try_as_bytes().unwrap();
            ranges.push(addresses(view));
            for (p, &v) in want.iter().enumerate() {
                assert_eq!(word(view, p * page), v, "step {step}: view, page {p}");
            }
            max_maps = max_maps.max(mappings());
            check_files(&a, fds0, &format!("step {step}"));
        }
    }
    assert!(
        max_maps <= bound,
        "mappings grew from {maps0} to {max_maps}, above {bound}"
    );

    drop(kept);
    let st = a.stats().store;
    assert!(
        st.live_pages <= 2 * pages,
        "with only the arena left the store holds {} live pages",
        st.live_pages
    );
    check_files(&a, fds0, "after dropping the snapshots");
    drop(a);
    check_released(&ranges, fds0);
    check_rss(rss0);
}

/// Every page of a 258 MiB arena written, the even pages before one snapshot and the odd ones
/// before the next, so that no two neighbouring pages are frozen next to each other. Mapping
/// them page by page would take 66,000 kernel mappings: more than a process may have (65530).
#[test]
fn snapshots_of_interleaved_pages() {
    let _serial = serial();
    let page = cowarena::page_size();
    let pages = 66_000;
    let fds0 = open_fds();
    let maps0 = mappings();
    let mut a = Arena::with_capacity(pages * page).unwrap();
    let range = addresses(a.as_bytes());
    let base = a.snapshot().unwrap();
    let mut snaps = Vec::new();
    for parity in 0..2 {
        for p in (parity..pages).step_by(2) {
            a.write(p * page, &(p as u32 + 1).to_le_bytes()).unwrap();
        }
        let when = format!("snapshot of the {} pages", ["even", "odd"][parity]);
        let s = a
            .snapshot()
            .unwrap_or_else(|e| panic!("{when} failed: {e}"));
        check_arena_mappings(&a, &when);
        assert!(mappings() <= maps0 + 1 + 2 * MAX_REMAPPED_RUNS + OTHER_THREADS);
        snaps.push(s);
    }
    let value = |bytes: &[u8], p: usize| {
        u32::from_le_bytes(bytes[p * page..p * page + 4].try_into().unwrap())
    };
    for p in 0..pages {
        assert_eq!(value(a.as_bytes(), p), p as u32 + 1, "page {p}");
    }
    a.restore(&snaps[0]).unwrap();
    check_arena_mappings(&a, "restored to the even pages");
    for p in 0..pages {
        let want = if p % 2 == 0 { p as u32 + 1 } else { 0 };
        assert_eq!(value(a.as_bytes(), p), want, "restored, page {p}");
    }
    a.restore(&base).unwrap();
    check_arena_mappings(&a, "restored to zero");
    assert!(a.as_bytes().iter().step_by(page).all(|&b| b == 0));
    drop((a, base, snaps));
    check_released(&[range], fds0);
}

/// A snapshot whose pages lie in more runs than `MAX_VIEW_RUNS` is viewed through a private copy
/// (one mapping), and an arena made from it keeps to the documented mapping bound.
#[test]
fn fragmented_snapshots_can_be_viewed_and_forked() {
    let _serial = serial();
    let page = cowarena::page_size();
    let pages = 4 * MAX_VIEW_RUNS + 64;
    let isolated = 2 * MAX_VIEW_RUNS + 1;
    let fds0 = open_fds();
    // A private budget as large as the arena keeps every written page private and unmapped, so
    // the snapshot keeps one run per isolated page (nothing is compacted).
    let mut a = Arena::builder(pages * page)
        .private_budget(pages * page)
        .build()
        .unwrap();
    let mut ranges = vec![addresses(a.as_bytes())];
    for (i, p) in (0..pages).step_by(2).take(isolated).enumerate() {
        a.write(p * page, &(i as u32 + 1).to_le_bytes()).unwrap();
        if i % 500 == 0 {
            drop(a.snapshot().unwrap());
        }
    }
    let s = a.snapshot().unwrap();
    let check = |bytes: &[u8], what: &str| {
        for (i, p) in (0..pages).step_by(2).take(isolated).enumerate() {
            let got = u32::from_le_bytes(bytes[p * page..p * page + 4].try_into().unwrap());
            assert_eq!(got, i as u32 + 1, "{what}: page {p}");
            assert_eq!(bytes[p * page + page], 0, "{what}: page {}", p + 1);
        }
    };
    let view = s.try_as_bytes().unwrap();
    ranges.push(addresses(view));
    check(view, "snapshot view");
    let view_maps = mappings_in(addresses(view));
    assert_eq!(view_maps, 1, "a view of a fragmented snapshot is one copy");

    let mut b = s.to_arena().unwrap();
    ranges.push(addresses(b.as_bytes()));
    check(b.as_bytes(), "arena made from the snapshot");
    check_arena_mappings(&b, "arena made from a fragmented snapshot");
    b.write(page, b"fork").unwrap();
    let t = b.snapshot().unwrap();
    check_arena_mappings(&b, "its first snapshot");
    assert_eq!(&t.try_as_bytes().unwrap()[page..page + 4], b"fork");
    drop((a, b, s, t));
    check_released(&ranges, fds0);
}

/// An arena of `pages` pages whose every other page holds its own number (so that each is a run
/// of its own when frozen), and a snapshot of it.
fn every_other_page(pages: usize) -> (Arena, Snapshot) {
    let page = cowarena::page_size();
    let mut a = Arena::builder(pages * page)
        .private_budget(pages * page)
        .build()
        .unwrap();
    for p in (0..pages).step_by(2) {
        a.write(p * page, &(p as u32 + 1).to_le_bytes()).unwrap();
    }
    let s = a.snapshot().unwrap();
    (a, s)
}

/// Whether `bytes` show what [`every_other_page`] wrote.
fn check_every_other_page(bytes: &[u8], pages: usize, what: &str) {
    let page = cowarena::page_size();
    for p in (0..pages).step_by(2) {
        assert_eq!(word(bytes, p * page), p as u64 + 1, "{what}: page {p}");
    }
}

/// `to_arena` of a snapshot whose 33,000 pages are all isolated: one kernel mapping per run
/// would pass the process limit; the snapshot's view (a private copy) shows it need not.
#[test]
fn an_arena_made_from_a_snapshot_of_33k_scattered_pages() {
    let _serial = serial();
    let page = cowarena::page_size();
    let pages = 66_000;
    let fds0 = open_fds();
    let (a, s) = every_other_page(pages);
    let mut ranges = vec![addresses(a.as_bytes())];
    let check = |bytes: &[u8], what: &str| check_every_other_page(bytes, pages, what);
    let view = s.try_as_bytes().unwrap();
    ranges.push(addresses(view));
    check(view, "snapshot view");
    let mut b = s
        .to_arena()
        .unwrap_or_else(|e| panic!("to_arena of a snapshot of 33,000 scattered pages: {e}"));
    ranges.push(addresses(b.as_bytes()));
    check(b.as_bytes(), "arena made from the snapshot");
    check_arena_mappings(&b, "arena made from the snapshot");
    b.write(page, b"fork").unwrap();
    b.restore(&s).unwrap();
    check(b.as_bytes(), "restored");
    drop((a, b, s));
    check_released(&ranges, fds0);
}

/// Views of many fragmented snapshots held at once: each snapshot maps up to `MAX_VIEW_RUNS`
/// runs, so twenty of them would need more mappings than the process may have.
#[test]
fn views_of_many_fragmented_snapshots() {
    let _serial = serial();
    const SNAPSHOTS: usize = 20;
    let page = cowarena::page_size();
    let pages = 2 * MAX_VIEW_RUNS;
    let fds0 = open_fds();
    let maps0 = mappings();
    let mut a = Arena::builder(pages * page)
        .private_budget(pages * page)
        .build()
        .unwrap();
    let mut ranges = vec![addresses(a.as_bytes())];
    let mut snaps = Vec::new();
    for v in 1..=SNAPSHOTS as u8 {
        for p in (0..pages).step_by(2) {
            a.write(p * page, &[v]).unwrap();
        }
        snaps.push((a.snapshot().unwrap(), v));
    }
    // Stop at the first failure and release everything before reporting it: a process at its
    // mapping limit cannot do much else.
    let mut failure = None;
    let mut max_maps = 0;
    for (i, (s, v)) in snaps.iter().enumerate() {
        match s.try_as_bytes() {
            Ok(view) => {
                ranges.push(addresses(view));
                assert!((0..pages).step_by(2).all(|p| view[p * page] == *v));
                max_maps = max_maps.max(mappings());
            }
            Err(e) => {
                failure = Some((i, e.to_string()));
                break;
            }
        }
    }
    // The snapshot whose view failed can be viewed once the other views are gone.
    let retry = failure.as_ref().map(|&(i, _)| snaps[i].clone());
    drop((a, snaps));
    let retried = retry.map(|(s, v)| match s.try_as_bytes() {
        Ok(view) => {
            ranges.push(addresses(view));
            Ok(view[0] == v)
        }
        Err(e) => Err(e.to_string()),
    });
    check_released(&ranges, fds0);
    assert!(
        failure.is_none(),
        "every view can be made, but {failure:?}; the same view after the others were \
         dropped: {retried:?}"
    );
    assert!(
        max_maps <= maps0 + 65530 / 2,
        "{SNAPSHOTS} views hold {} mappings",
        max_maps - maps0
    );
}

/// Arenas made with `to_arena` count against the process's mapping budget like any other: nine
/// arenas of a snapshot whose 4,096 written pages are all isolated would need about 74,000
/// kernel mappings if each mapped its runs, past the process limit (65,530); within the budget
/// the later ones copy their pages instead, and every one shows the snapshot.
#[test]
fn many_arenas_from_one_fragmented_snapshot_stay_within_the_mapping_budget() {
    let _serial = serial();
    const ARENAS: usize = 9;
    let pages = 8192;
    let fds0 = open_fds();
    let maps0 = mappings();
    let (a, s) = every_other_page(pages);
    let mut ranges = vec![addresses(a.as_bytes())];
    let mut arenas = Vec::new();
    let mut max_maps = 0;
    for i in 0..ARENAS {
        let b = s
            .to_arena()
            .unwrap_or_else(|e| panic!("to_arena number {i} of a fragmented snapshot: {e}"));
        ranges.push(addresses(b.as_bytes()));
        check_every_other_page(b.as_bytes(), pages, &format!("arena {i}"));
        max_maps = max_maps.max(mappings());
        arenas.push(b);
    }
    let remapped: usize = arenas.iter().map(|b| b.stats().remapped_runs).sum();
    drop((a, arenas, s));
    check_released(&ranges, fds0);
    assert!(
        remapped <= MAX_REMAPPED_RUNS,
        "the arenas hold {remapped} remapped runs, more than the process's budget"
    );
    assert!(
        max_maps <= maps0 + 2 * MAX_REMAPPED_RUNS + 64,
        "{ARENAS} arenas from one snapshot hold {} mappings",
        max_maps - maps0
    );
}
