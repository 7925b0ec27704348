//! Writes through a raw pointer kept for the arena's life: every one is found by every later
//! snapshot and restore (checked against a plain copy of the bytes), the kernel's tracking is
//! precise where it is active, the pages a restore writes itself are not taken for new writes,
//! remapped runs stay tracked, and a guard region faults.

mod common;

use common::{addresses, mappings_in, serial, status_kib, Rng};
use cowarena::{Arena, RawWrites, Snapshot};

/// Whether the running kernel should track writes itself (Linux 6.7 brought `PAGEMAP_SCAN`).
fn kernel_tracks_writes() -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 7)
}

/// Whether the kernel tracks `a`'s raw writes, which it must where it can (Linux 6.7+); where it
/// cannot, says that what needs it is not checked.
fn kernel_tracks(a: &Arena) -> bool {
    if a.stats().raw_writes == RawWrites::Kernel {
        return true;
    }
    assert!(
        !kernel_tracks_writes(),
        "the kernel should track writes here"
    );
    eprintln!("note: raw writes found as private pages on this kernel; precision not checked");
    false
}

/// Writes `byte` at `at` through `base`.
fn poke(base: *mut u8, at: usize, byte: u8) {
    // SAFETY: every caller passes an offset inside its arena, whose pointer stays valid for the
    // arena's life, and holds no reference into the arena meanwhile.
    unsafe { base.add(at).write(byte) }
}

#[test]
fn a_kept_pointer_is_tracked_across_snapshots_and_restores() {
    let _serial = serial();
    let page = cowarena::page_size();
    let pages = 256;
    let mut a = Arena::with_capacity(pages * page).unwrap();
    // SAFETY: used only between calls of `a`'s methods, with no reference into `a` alive.
    let base = unsafe { a.as_mut_ptr() };
    if kernel_tracks_writes() {
        assert_eq!(a.stats().raw_writes, RawWrites::Kernel);
    }
    let mut model = vec![0u8; pages * page];
    let mut snaps: Vec<(Snapshot, Vec<u8>)> = vec![(a.snapshot().unwrap(), model.clone())];
    let mut rng = Rng::new(7);
    for step in 0..400 {
        match rng.below(10) {
            0..=5 => {
                for _ in 0..rng.range(1, 20) {
                    let at = rng.below(pages * page);
                    let byte = rng.next() as u8;
                    poke(base, at, byte);
                    model[at] = byte;
                }
            }
            6 => {
                let at = rng.below(pages * page - 100);
                a.write(at, &[step as u8; 100]).unwrap();
                model[at..at + 100].fill(step as u8);
            }
            7 | 8 => snaps.push((a.snapshot().unwrap(), model.clone())),
            _ => {
                let (s, bytes) = &snaps[rng.below(snaps.len())];
                a.restore(s).unwrap();
                model.clone_from(bytes);
            }
        }
        assert!(
            a.as_bytes() == model.as_slice(),
            "step {step}: the arena differs"
        );
    }
    for (i, (s, bytes)) in snaps.iter().enumerate() {
        assert!(s.as_bytes() == bytes.as_slice(), "snapshot {i} differs");
        a.restore(s).unwrap();
        assert!(a.as_bytes() == bytes.as_slice(), "restoring snapshot {i}");
    }
}

#[test]
fn the_kernel_reports_exactly_the_pages_written() {
    let _serial = serial();
    let page = cowarena::page_size();
    let pages = 4096;
    let mut a = Arena::with_capacity(pages * page).unwrap();
    for p in 0..pages / 2 {
        a.write(p * page, &[1]).unwrap();
    }
    // SAFETY: the pointer is used only through `poke`, between calls of the arena's
    // methods, with no reference into the arena alive.
    let base = unsafe { a.as_mut_ptr() };
    if !kernel_tracks(&a) {
        return;
    }
    let start = a.snapshot().unwrap();
    for round in 0..20u8 {
        // Few pages far apart (protected again one call per run) or many close together (by
        // a scan of their span).
        let (count, stride) = if round % 2 == 0 { (5, 797) } else { (40, 7) };
        let written: Vec<usize> = (0..count)
            .map(|i| (round as usize * 131 + i * stride) % pages)
            .collect();
        for &p in &written {
            poke(base, p * page + 9, round + 1);
        }
        let live = a.stats().store.live_pages;
        let s = a.snapshot().unwrap();
        let frozen = a.stats().store.live_pages - live;
        assert!(
            frozen <= written.len(),
            "round {round}: {} pages written, {frozen} frozen",
            written.len()
        );
        for &p in &written {
            assert_eq!(s.as_bytes()[p * page + 9], round + 1);
        }
        a.restore(&start).unwrap();
        // The restore's own writes are not reported as new ones.
        let live = a.stats().store.live_pages;
        drop(a.snapshot().unwrap());
        assert_eq!(
            a.stats().store.live_pages,
            live,
            "round {round}: restored pages refrozen"
        );
        // A page between two restored ones is still caught when written.
        let between = (written[0] + 1) % pages;
        poke(base, between * page + 3, 0xEE);
        let s = a.snapshot().unwrap();
        assert_eq!(s.as_bytes()[between * page + 3], 0xEE, "round {round}");
        a.restore(&start).unwrap();
        assert_eq!(a.as_bytes()[between * page + 3], 0, "round {round}");
    }
}

#[test]
fn pages_remapped_at_a_snapshot_stay_tracked() {
    let _serial = serial();
    let page = cowarena::page_size();
    let pages = 512;
    let mut a = Arena::builder(pages * page)
        .private_budget(page)
        .build()
        .unwrap();
    // SAFETY: the pointer is used only through `poke`, between calls of the arena's
    // methods, with no reference into the arena alive.
    let base = unsafe { a.as_mut_ptr() };
    // Long runs are remapped from the store when frozen, and the budget sheds the rest.
    for p in 0..pages {
        poke(base, p * page, 1);
    }
    let ones = a.snapshot().unwrap();
    let ones_bytes = a.as_bytes().to_vec();
    for round in 0..10u8 {
        for p in (round as usize..pages).step_by(37) {
            poke(base, p * page + 1, round + 2);
        }
        let s = a.snapshot().unwrap();
        for p in (round as usize..pages).step_by(37) {
            assert_eq!(
                s.as_bytes()[p * page + 1],
                round + 2,
                "round {round}, page {p}"
            );
        }
        a.restore(&ones).unwrap();
        assert!(
            a.as_bytes() == ones_bytes.as_slice(),
            "round {round}: restore"
        );
    }
}

/// A raw arena much larger than what it holds: tracking its writes gives page tables only to
/// what exists (a scan steps over the rest), and writes into never-touched memory are caught.
#[test]
fn a_sparse_arena_keeps_its_holes() {
    let _serial = serial();
    let page = cowarena::page_size();
    let capacity = 1 << 30;
    let mut a = Arena::with_capacity(capacity).unwrap();
    a.write(0, &vec![1u8; 1 << 20]).unwrap();
    let start = a.snapshot().unwrap();
    let tables_before = status_kib("VmPTE:");
    assert!(tables_before > 0, "VmPTE not read from /proc/self/status");
    // SAFETY: the pointer is used only through `poke`, between calls of the arena's
    // methods, with no reference into the arena alive.
    let base = unsafe { a.as_mut_ptr() };
    if !kernel_tracks(&a) {
        return;
    }
    for round in 0..20usize {
        let far = (1 << 20) + (round * 7919 % 4096) * 64 * page;
        let near = round * 13 * page;
        // A never-touched page read first, then written; another only read.
        assert_eq!(a.as_bytes()[far + 1], 0);
        assert_eq!(a.as_bytes()[far + 3 * page], 0);
        poke(base, far + 1, round as u8 + 1);
        poke(base, near + 2, round as u8 + 100);
        poke(base, capacity - page + round, 7);
        // Pages only read count as written at most once (those read in short runs).
        let read = (1 << 29) + round * 64 * page;
        let zeros = a.as_bytes()[read..read + 64 * page]
            .iter()
            .filter(|&&b| b == 0);
        assert_eq!(zeros.count(), 64 * page);
        let live = a.stats().store.live_pages;
        let s = a.snapshot().unwrap();
        let frozen = a.stats().store.live_pages - live;
        assert!(
            frozen <= 3,
            "round {round}: 3 pages written, {frozen} frozen"
        );
        assert_eq!(s.as_bytes()[far + 1], round as u8 + 1, "round {round}");
        assert_eq!(s.as_bytes()[near + 2], round as u8 + 100, "round {round}");
        assert_eq!(s.as_bytes()[capacity - page + round], 7, "round {round}");
        a.restore(&start).unwrap();
        assert_eq!(a.as_bytes()[far + 1], 0, "round {round}");
        assert_eq!(a.as_bytes()[near + 2], 1, "round {round}");
        assert_eq!(a.as_bytes()[capacity - page + round], 0, "round {round}");
    }
    // Protecting the whole gigabyte would take 2 MiB of page tables; 20 scattered pages and
    // the first MiB take a few dozen.
    let grown = status_kib("VmPTE:").saturating_sub(tables_before);
    assert!(grown < 512, "page tables grew by {grown} KiB");
}

/// Raw writes, safe writes and reads scattered over a sparse arena (whole page tables never
/// touched, pages only read, runs long enough to be remapped, shed copies), against a model:
/// no write is ever missed by a snapshot or undone wrongly by a restore.
#[test]
fn sparse_raw_writes_match_a_model() {
    use std::collections::BTreeMap;
    let _serial = serial();
    let page = cowarena::page_size();
    let pages = 8192;
    let mut a = Arena::builder(pages * page)
        .private_budget(16 * page)
        .build()
        .unwrap();
    // SAFETY: the pointer is used only through `poke`, between calls of the arena's
    // methods, with no reference into the arena alive.
    let base = unsafe { a.as_mut_ptr() };
    // Pages the program returns to, spread over every 2 MiB of the arena but the last ones.
    let hot: Vec<usize> = (0..48).map(|i| i * 127 % (pages - 1024)).collect();
    let mut model: BTreeMap<usize, u8> = BTreeMap::new();
    let mut snaps: Vec<(Snapshot, BTreeMap<usize, u8>)> = Vec::new();
    let mut rng = Rng::new(19);
    for step in 0..600 {
        match rng.below(12) {
            0..=3 => {
                for _ in 0..rng.range(1, 6) {
                    let at = hot[rng.below(hot.len())] * page + rng.below(page);
                    let byte = rng.next() as u8 | 1;
                    poke(base, at, byte);
                    model.insert(at, byte);
                }
            }
            4 => {
                // A run long enough to be frozen and remapped as one.
                let first = rng.below(pages - 1024 - 24);
                let byte = rng.next() as u8 | 1;
                for p in first..first + 20 {
                    poke(base, p * page + 7, byte);
                    model.insert(p * page + 7, byte);
                }
            }
            5 => {
                let at = hot[rng.below(hot.len())] * page + rng.below(page - 8);
                let bytes = [step as u8 | 1; 8];
                a.write(at, &bytes).unwrap();
                for (i, &byte) in bytes.iter().enumerate() {
                    model.insert(at + i, byte);
                }
            }
            6 => {
                // Reads of memory never written, some in page tables never made.
                for _ in 0..8 {
                    let at = (pages - 1024 + rng.below(1024)) * page + rng.below(page);
                    assert_eq!(a.as_bytes()[at], 0, "step {step}: never written");
                }
            }
            7..=8 => snaps.push((a.snapshot().unwrap(), model.clone())),
            9..=10 if !snaps.is_empty() => {
                let (s, m) = &snaps[rng.below(snaps.len())];
                a.restore(s).unwrap();
                model.clone_from(m);
            }
            _ if snaps.len() > 6 => drop(snaps.remove(rng.below(snaps.len()))),
            _ => {}
        }
        let seen: Vec<usize> = snaps
            .iter()
            .flat_map(|(_, m)| m.keys().copied())
            .chain(model.keys().copied())
            .collect();
        for at in seen {
            let want = model.get(&at).copied().unwrap_or(0);
            assert_eq!(a.as_bytes()[at], want, "step {step}: byte {at}");
        }
    }
    for (i, (s, m)) in snaps.iter().enumerate() {
        for (&at, &want) in m {
            assert_eq!(s.as_bytes()[at], want, "snapshot {i}, byte {at}");
        }
        a.restore(s).unwrap();
        for (&at, &want) in m {
            assert_eq!(a.as_bytes()[at], want, "restoring snapshot {i}, byte {at}");
        }
    }
}

/// Pages shed from a small private budget while the contents drift would each need a mapping of
/// their own, and every mapping slows every later scan: they stay private instead.
#[test]
fn drifting_contents_keep_the_mappings_few() {
    let _serial = serial();
    let page = cowarena::page_size();
    let pages = 8192;
    let mut a = Arena::builder(pages * page)
        .private_budget(1 << 20)
        .build()
        .unwrap();
    // SAFETY: the pointer is used only through `poke`, between calls of the arena's
    // methods, with no reference into the arena alive.
    let base = unsafe { a.as_mut_ptr() };
    if !kernel_tracks(&a) {
        return;
    }
    for p in 0..pages {
        poke(base, p * page, 1);
    }
    let mut model = vec![0u8; pages * page];
    for p in 0..pages {
        model[p * page] = 1;
    }
    let mut rng = Rng::new(11);
    let mut kept = Vec::new();
    for round in 0..300 {
        for _ in 0..64 {
            let at = rng.below(pages) * page + 5;
            poke(base, at, round as u8);
            model[at] = round as u8;
        }
        let s = a.snapshot().unwrap();
        if round % 50 == 0 {
            kept.push((s, model.clone()));
        }
    }
    let stats = a.stats();
    let mappings = mappings_in(addresses(a.as_bytes()));
    assert!(
        stats.remapped_runs <= 64 && mappings <= 256,
        "{} remapped runs, {mappings} mappings after 300 snapshots",
        stats.remapped_runs
    );
    assert!(a.as_bytes() == model.as_slice());
    for (i, (s, bytes)) in kept.iter().enumerate() {
        assert!(s.as_bytes() == bytes.as_slice(), "snapshot {i} differs");
    }
}

#[test]
fn many_mid_run_snapshots_stay_within_the_mapping_budget() {
    let _serial = serial();
    let page = cowarena::page_size();
    let pages = 4096;
    let mut a = Arena::with_capacity(pages * page).unwrap();
    // SAFETY: the pointer is used only through `poke`, between calls of the arena's
    // methods, with no reference into the arena alive.
    let base = unsafe { a.as_mut_ptr() };
    for p in 0..pages {
        poke(base, p * page, 1);
    }
    let mut rng = Rng::new(3);
    let mut kept = Vec::new();
    for round in 0..2000 {
        for _ in 0..64 {
            poke(base, rng.below(pages) * page + 3, round as u8);
        }
        let s = a.snapshot().unwrap();
        if round % 100 == 0 {
            kept.push(s);
        }
    }
    let stats = a.stats();
    assert!(
        stats.remapped_runs < cowarena::MAX_REMAPPED_RUNS,
        "{} remapped runs after 2000 snapshots",
        stats.remapped_runs
    );
    assert!(
        stats.store.live_pages <= pages * (kept.len() + 2),
        "{} live pages for {} snapshots of {pages} pages",
        stats.store.live_pages,
        kept.len()
    );
}

#[test]
fn a_guard_region_faults_past_the_end() {
    let _serial = serial();
    let page = cowarena::page_size();
    let mut a = Arena::builder(16 * page).guard(64 * page).build().unwrap();
    assert_eq!(a.stats().guard_bytes, 64 * page);
    let b = a.snapshot().unwrap().to_arena().unwrap();
    assert_eq!(
        b.stats().guard_bytes,
        64 * page,
        "arenas made from snapshots keep the guard"
    );
    let last: u8 = a
        .fork_run(|b| {
            // SAFETY: the pointer is used only through `poke`, between calls of the arena's
            // methods, with no reference into the arena alive.
            let base = unsafe { b.as_mut_ptr() };
            poke(base, 16 * page - 1, 5);
            b.as_bytes()[16 * page - 1]
        })
        .unwrap();
    assert_eq!(last, 5);
    let crashed = a.fork_run(|b| {
        // SAFETY: the pointer is used only through `poke`, between calls of the arena's
        // methods, with no reference into the arena alive.
        let base = unsafe { b.as_mut_ptr() };
        poke(base, 16 * page + 10 * page, 5);
    });
    assert!(
        matches!(crashed, Err(cowarena::ForkError::Signaled { .. })),
        "a write into the guard must fault: {crashed:?}"
    );
}
