//! Stress: long snapshot/restore loops and thousands of live snapshots, with open files, kernel
//! mappings and resident memory checked to stay bounded and to return to where they started.

#![cfg(target_os = "linux")]

mod common;
use common::{addresses, cowarena_memfds, mappings_in, memfd_mappings, serial, status_kib, Rng};
use cowarena::{Arena, MAX_REMAPPED_RUNS};

const MIB: usize = 1 << 20;

#[test]
fn hundred_thousand_cycles_stay_bounded() {
    let _serial = serial();
    let page = cowarena::page_size();
    let pages = 64 * MIB / page;
    // Counted per resource of this crate, not per process: the test harness's own threads come
    // and go with their stacks.
    let mut a = Arena::with_capacity(64 * MIB).unwrap();
    let range = addresses(a.as_bytes());
    a.bytes_mut(0..64 * MIB).unwrap().fill(0xAB);
    let base = a.snapshot().unwrap();
    // Private memory plus the store's pages, each counted once however often it is mapped.
    let memory_kib = |a: &Arena| status_kib("RssAnon:") + a.stats().store.held_bytes / 1024;
    let mem_start = memory_kib(&a);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut max_fds = 0;
    let mut max_maps = 0;
    let mut max_mem = 0;
    for cycle in 0..100_000usize {
        let s = a.snapshot().unwrap();
        for _ in 0..4 {
            let p = rng.below(pages);
            a.write(p * page + cycle % page, &[cycle as u8]).unwrap();
        }
        a.restore(&s).unwrap();
        if cycle % 5_000 == 0 {
            max_fds = max_fds.max(cowarena_memfds().len());
            max_maps = max_maps.max(mappings_in(range.clone()));
            max_mem = max_mem.max(memory_kib(&a));
            let probe = rng.below(64 * MIB);
            assert_eq!(
                a.as_bytes()[probe],
                0xAB,
                "restore lost a byte at cycle {cycle}"
            );
        }
    }
    assert!(a.as_bytes().iter().all(|&b| b == 0xAB));
    // One chunk file per 16 MiB of frozen pages, plus a few; mappings within the documented
    // bound; memory within the 64 MiB arena, its store copy and private copies of the whole
    // arena, which a working set rewritten uniformly earns (see `tests/core_budget.rs`).
    assert!(max_fds <= 8, "{max_fds} chunk files open");
    assert!(
        max_maps <= 1 + 2 * MAX_REMAPPED_RUNS,
        "the arena holds {max_maps} mappings"
    );
    assert!(
        max_mem <= mem_start + 72 * 1024,
        "memory grew from {mem_start} KiB to {max_mem} KiB"
    );
    drop(base);
    drop(a);
    assert!(cowarena_memfds().is_empty(), "every chunk file is closed");
    assert_eq!(memfd_mappings(), 0, "no store mapping is left");
    assert_eq!(mappings_in(range), 0, "the arena is unmapped");
}

/// Scattered rewrites of a frozen arena free slots all over the store's full chunks; those are
/// written over by later snapshots, so the store holds about the live pages, not every page
/// ever frozen (which it did while full chunks kept their dead slots until all of them died:
/// 62,000 pages held for 31,000 live after 800 of these cycles).
#[test]
fn dead_slots_of_full_chunks_are_written_over() {
    let _serial = serial();
    let page = cowarena::page_size();
    let pages = 64 * MIB / page;
    let mut a = Arena::with_capacity(64 * MIB).unwrap();
    a.bytes_mut(0..64 * MIB).unwrap().fill(1);
    drop(a.snapshot().unwrap());
    let mut rng = Rng(5);
    for _ in 0..800 {
        let written: Vec<usize> = (0..64).map(|_| rng.below(pages) * page).collect();
        for &at in &written {
            a.write(at, &[5]).unwrap();
        }
        let s = a.snapshot().unwrap();
        for &at in &written {
            a.write(at, &[6]).unwrap();
        }
        a.restore(&s).unwrap();
        assert!(written.iter().all(|&at| a.as_bytes()[at] == 5));
    }
    let st = a.stats().store;
    let held = st.held_bytes / page;
    // Two chunks' worth of slack: the chunk being filled and slots allocated ahead.
    assert!(
        held <= st.live_pages + 2 * 4096,
        "{held} pages held for {} live",
        st.live_pages
    );
}

#[test]
fn thousands_of_live_snapshots_then_nothing_left() {
    let _serial = serial();
    let page = cowarena::page_size();
    let capacity = 16 * MIB;
    let pages = capacity / page;
    let mut a = Arena::with_capacity(capacity).unwrap();
    let range = addresses(a.as_bytes());
    a.bytes_mut(0..capacity).unwrap().fill(1);
    let mut snaps = Vec::new();
    let mut rng = Rng(42);
    let mut expected = Vec::new();
    for i in 0..5_000usize {
        let p = rng.below(pages);
        a.write(p * page, &(i as u32).to_le_bytes()).unwrap();
        snaps.push(a.snapshot().unwrap());
        expected.push((p, i as u32));
    }
    let stats = a.stats();
    eprintln!("{stats:?}, mappings {}", mappings_in(range.clone()));
    assert!(stats.store.chunk_files <= 2 + stats.store.held_bytes / (16 * MIB));
    assert!(mappings_in(range.clone()) <= 1 + 2 * MAX_REMAPPED_RUNS);
    // Every snapshot still shows its own write, and a sample restores exactly.
    for (s, &(p, v)) in snaps.iter().zip(&expected).step_by(97) {
        let mut buf = [0u8; 4];
        s.read(p * page, &mut buf).unwrap();
        assert_eq!(u32::from_le_bytes(buf), v);
        a.restore(s).unwrap();
        assert_eq!(a.as_bytes()[p * page..p * page + 4], v.to_le_bytes());
    }
    drop(snaps);
    drop(a);
    assert!(cowarena_memfds().is_empty(), "every chunk file is closed");
    assert_eq!(memfd_mappings(), 0, "no store mapping is left");
    assert_eq!(mappings_in(range), 0, "the arena is unmapped");
}

#[test]
fn dropping_snapshots_frees_their_pages() {
    let _serial = serial();
    let page = cowarena::page_size();
    let mut a = Arena::with_capacity(8 * MIB).unwrap();
    a.bytes_mut(0..8 * MIB).unwrap().fill(2);
    let keep = a.snapshot().unwrap();
    let live0 = a.stats().store.live_pages;
    let mut snaps = Vec::new();
    for i in 0..200usize {
        a.bytes_mut(i * page..(i + 3) * page).unwrap().fill(i as u8);
        snaps.push(a.snapshot().unwrap());
    }
    assert!(a.stats().store.live_pages > live0);
    a.restore(&keep).unwrap();
    drop(snaps);
    let s = a.snapshot().unwrap();
    assert_eq!(
        a.stats().store.live_pages,
        live0,
        "pages of dropped snapshots are freed"
    );
    drop((s, keep));
}
