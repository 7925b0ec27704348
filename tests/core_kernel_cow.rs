//! The kernel does the copying: after a snapshot, writing k pages gives the live mapping exactly
//! k private pages, and the snapshot's own pages are never copied.

#![cfg(target_os = "linux")]

mod common;
use common::{page_states, private_pages};
use cowarena::Arena;

#[test]
fn writing_k_pages_after_a_snapshot_copies_exactly_k_pages() {
    let page = cowarena::page_size();
    let pages = 1024;
    let mut a = Arena::with_capacity(pages * page).unwrap();
    a.bytes_mut(0..pages * page).unwrap().fill(1);
    assert_eq!(
        private_pages(a.as_bytes()),
        pages,
        "fresh writes are private"
    );

    let s = a.snapshot().unwrap();
    // The frozen run was remapped from the store: no private page is left.
    let touched: u64 = a.as_bytes().iter().step_by(page).map(|&b| b as u64).sum();
    assert_eq!(touched, pages as u64);
    assert_eq!(
        private_pages(a.as_bytes()),
        0,
        "after snapshot all pages are file pages"
    );
    assert!(
        page_states(a.as_bytes()).iter().all(|s| s.0),
        "read back: all present"
    );

    // Restored pages keep their private copies (so rewriting them costs no fault); each round
    // writes pages no earlier round wrote, and exactly those become private.
    let mut before: Vec<usize> = Vec::new();
    for (round, k) in [1usize, 7, 64].into_iter().enumerate() {
        let targets: Vec<usize> = (0..k).map(|i| round * 300 + i * 3).collect();
        for &p in &targets {
            a.write(p * page + 5, &[9]).unwrap();
        }
        let states = page_states(a.as_bytes());
        let private: Vec<usize> = (0..pages).filter(|&p| states[p].1).collect();
        let mut want = [before.clone(), targets.clone()].concat();
        want.sort_unstable();
        assert_eq!(
            private, want,
            "exactly the written pages were copied (k = {k})"
        );
        before = want;

        // The snapshot's view maps the same frozen pages and none of them is a private copy.
        assert_eq!(
            private_pages(s.as_bytes()),
            0,
            "snapshot pages are not copied"
        );
        assert!(s.as_bytes().iter().step_by(page).all(|&b| b == 1));

        a.restore(&s).unwrap();
        assert!(a.as_bytes().iter().all(|&b| b == 1));
    }
}

#[test]
fn a_snapshot_costs_the_written_pages_in_store_memory() {
    let page = cowarena::page_size();
    let pages = 4096;
    let mut a = Arena::with_capacity(pages * page).unwrap();
    a.bytes_mut(0..pages * page).unwrap().fill(3);
    let s0 = a.snapshot().unwrap();
    let base = a.stats().store.live_pages;
    assert_eq!(base, pages);
    let mut held = vec![s0];
    for round in 1..=10usize {
        for i in 0..5 {
            a.write(((round * 101 + i * 13) % pages) * page, &[round as u8])
                .unwrap();
        }
        held.push(a.snapshot().unwrap());
        assert_eq!(
            a.stats().store.live_pages,
            base + 5 * round,
            "only written pages are frozen"
        );
    }
    drop(held);
    drop(a);
}

#[test]
fn raw_pointer_writes_are_found_by_the_kernel_scan() {
    let page = cowarena::page_size();
    let pages = 256;
    let mut a = Arena::with_capacity(pages * page).unwrap();
    a.bytes_mut(0..pages * page).unwrap().fill(1);
    let s = a.snapshot().unwrap();
    // SAFETY: the pointer is used only before the next `&mut self` call, within capacity.
    unsafe {
        let p = a.as_mut_ptr();
        *p.add(3 * page) = 7;
        *p.add(200 * page + 1) = 8;
    }
    let s2 = a.snapshot().unwrap();
    assert_eq!(s2.as_bytes()[3 * page], 7);
    assert_eq!(s2.as_bytes()[200 * page + 1], 8);
    assert_eq!(
        a.stats().store.live_pages,
        pages + 2,
        "only the two written pages were frozen"
    );
    // SAFETY: as above.
    unsafe { *a.as_mut_ptr().add(10 * page) = 5 };
    a.restore(&s).unwrap();
    assert!(a.as_bytes().iter().all(|&b| b == 1));
}
