//! Snapshots are read from other threads while the arena is written, snapshotted and restored,
//! and dropped on threads other than the one that made them.

use cowarena::{Arena, Snapshot};
use std::sync::mpsc;

#[test]
fn readers_see_frozen_bytes_while_the_arena_changes() {
    let page = cowarena::page_size();
    let pages = 512;
    let mut a = Arena::with_capacity(pages * page).unwrap();
    let (tx, rx) = mpsc::sync_channel::<(Snapshot, u8)>(64);
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let readers: Vec<_> = (0..4)
        .map(|t| {
            let rx = std::sync::Arc::clone(&rx);
            std::thread::spawn(move || {
                let mut seen = 0;
                loop {
                    let msg = rx.lock().unwrap().recv();
                    let Ok((s, v)) = msg else { return seen };
                    let bytes = if t % 2 == 0 {
                        s.as_bytes().to_vec()
                    } else {
                        let mut buf = vec![0; s.capacity()];
                        s.read(0, &mut buf).unwrap();
                        buf
                    };
                    // Every page of snapshot v starts with v.
                    for p in 0..pages {
                        assert_eq!(bytes[p * page], v, "snapshot {v} page {p}");
                    }
                    seen += 1;
                }
            })
        })
        .collect();
    let mut kept = Vec::new();
    for v in 0..200u32 {
        let v = v as u8;
        for p in 0..pages {
            a.write(p * page, &[v]).unwrap();
        }
        let s = a.snapshot().unwrap();
        if v % 10 == 0 {
            kept.push((s.clone(), v));
        }
        tx.send((s, v)).unwrap();
        // Scribble and restore an older snapshot while readers work.
        a.bytes_mut(0..page * 4).unwrap().fill(0xEE);
        if let Some((old, ov)) = kept.get(kept.len() / 2) {
            a.restore(old).unwrap();
            assert_eq!(a.as_bytes()[page * 7], *ov);
        }
    }
    drop(tx);
    let seen: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert_eq!(seen, 200);
    // Drop the kept snapshots on another thread.
    std::thread::spawn(move || drop(kept)).join().unwrap();
}

#[test]
fn arena_and_snapshots_are_send() {
    fn send<T: Send>() {}
    fn sync<T: Send + Sync + Clone + 'static>() {}
    send::<Arena>();
    sync::<Snapshot>();
    let mut a = Arena::with_capacity(4 * cowarena::page_size()).unwrap();
    a.write(0, b"x").unwrap();
    let s = a.snapshot().unwrap();
    let a = std::thread::spawn(move || {
        a.read(0, &mut [0]).unwrap();
        a
    })
    .join()
    .unwrap();
    assert_eq!(a.as_bytes()[0], b'x');
    assert_eq!(s.as_bytes()[0], b'x');
}
