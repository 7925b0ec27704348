//! The default private budget follows the working set: an arena rewritten over and over, however
//! spread out, ends up keeping its pages private (no copy-on-write fault per write), while one
//! moving forward through fresh pages keeps only its share.

mod common;
use common::Rng;
use cowarena::{Arena, Snapshot};

const MIB: usize = 1 << 20;

/// Snapshot, write one byte in each of `k` pages chosen by `pick`, restore, `cycles` times.
fn cycle(a: &mut Arena, cycles: usize, k: usize, mut pick: impl FnMut() -> usize) {
    let page = cowarena::page_size();
    for _ in 0..cycles {
        let s = a.snapshot().unwrap();
        for _ in 0..k {
            a.write(pick() * page + 3, &[7]).unwrap();
        }
        a.restore(&s).unwrap();
    }
}

/// A 16 MiB arena written whole (ones) and its snapshot.
fn written_and_frozen() -> (Arena, Snapshot) {
    let mut a = Arena::with_capacity(16 * MIB).unwrap();
    a.bytes_mut(0..16 * MIB).unwrap().fill(1);
    let base = a.snapshot().unwrap();
    (a, base)
}

#[test]
fn a_uniformly_rewritten_arena_keeps_its_pages_private() {
    let page = cowarena::page_size();
    let pages = 16 * MIB / page;
    let (mut a, base) = written_and_frozen();
    assert_eq!(a.stats().private_pages, 0, "frozen whole and remapped");
    // Each page comes back every `pages / 4` cycles, far past what the recent generations see.
    let mut rng = Rng(11);
    cycle(&mut a, 6 * pages / 4, 4, || rng.below(pages));
    let private = a.stats().private_pages;
    assert!(
        private * 4 >= pages * 3,
        "{private} of {pages} pages private after every page was rewritten several times"
    );
    assert!(a.as_bytes().iter().all(|&b| b == 1), "every write restored");
    drop(base);
}

#[test]
fn an_arena_moving_forward_keeps_only_its_share() {
    let page = cowarena::page_size();
    let pages = 16 * MIB / page;
    let (mut a, base) = written_and_frozen();
    // Four fresh pages per cycle, each written once and never again.
    let mut next = 0;
    let budget = 2 * MIB / page;
    let mut most = 0;
    for _ in 0..pages / 4 / 16 {
        cycle(&mut a, 16, 4, || {
            next += 1;
            next - 1
        });
        most = most.max(a.stats().private_pages);
    }
    assert_eq!(next, pages);
    assert!(
        most <= budget,
        "{most} private pages at most, for a default budget of 1 MiB plus the recent writes"
    );
    drop(base);
}
