//! Collections and typed values change inside a `fork_run` child through `ViewMut`, as they do
//! in the parent. (Its own test binary, like `tests/fork.rs`, so that its forks never run
//! beside other tests' threads.)

use cowarena::{Arena, ArenaBytes, ArenaMap, ArenaVec, ViewMut};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The tests here fork one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One step of work, written once for any writable view.
fn step(w: &mut impl ViewMut, path: ArenaVec<u32>, seen: ArenaMap<u32, u32>, n: u32) {
    path.push(w, n).unwrap();
    *seen.entry(w, n % 4).or_insert(0).unwrap() += 1;
    let mut v = path.view_mut(w);
    v[0] += 100;
}

#[test]
fn collections_change_in_a_branch_as_in_the_parent() {
    let _serial = serial();
    let mut a = Arena::with_capacity(4 << 20).unwrap();
    let path = ArenaVec::<u32>::from_slice(&mut a, &[0]).unwrap();
    let seen = ArenaMap::<u32, u32>::new(&mut a).unwrap();
    let log = ArenaBytes::new(&mut a).unwrap();
    step(&mut a, path, seen, 1);
    let (sum, s) = a
        .fork_snapshot(|b| {
            for n in 2..50 {
                step(b, path, seen, n);
            }
            log.append(b, b"child").unwrap();
            let (mut p, m) = b.lend_mut((path, seen));
            p[1] = 7;
            assert_eq!(m.get(&0), Some(&12));
            let extra = ArenaVec::from_elem(b, 3u8, 10).unwrap();
            extra.resize(b, 20, 4).unwrap();
            let root = b.alloc(extra).unwrap();
            b.set_root(root);
            path.iter(&*b).sum::<u32>()
        })
        .unwrap();
    assert_eq!(path.as_slice(&a), &[100, 1], "the parent is unchanged");
    assert_eq!(seen.len(&a), 1);
    assert!(log.is_empty(&a));
    assert_eq!(path.len(&s), 50);
    assert_eq!(path.iter(&s).sum::<u32>(), sum);
    assert_eq!(path.as_slice(&s)[..3], [4900, 7, 2]);
    assert_eq!(seen.iter(&s).map(|(_, &c)| c).sum::<u32>(), 49);
    assert_eq!(log.as_slice(&s), b"child");
    let extra = *s.get(s.root::<ArenaVec<u8>>().unwrap());
    assert_eq!(extra.iter(&s).map(|&x| u32::from(x)).sum::<u32>(), 70);
    a.restore(&s).unwrap();
    assert_eq!(path.len(&a), 50);
}

#[test]
fn values_with_invalid_patterns_change_in_a_branch() {
    let _serial = serial();
    let mut a = Arena::with_capacity(4 << 20).unwrap();
    let flags = ArenaVec::from_elem(&mut a, false, 64).unwrap();
    let seen = ArenaMap::<char, bool>::new(&mut a).unwrap();
    let last = a.alloc('a').unwrap();
    let (count, s) = a
        .fork_snapshot(|b| {
            for (i, ch) in "branch".chars().enumerate() {
                flags.set(b, i, true);
                seen.insert(b, ch, i % 2 == 0).unwrap();
                *b.get_mut(last) = ch;
            }
            let at = last.offset();
            b.write(at, &0xD800u32.to_ne_bytes()).unwrap(); // no char
            let refused = b.try_get(last).is_err();
            b.write(at, &u32::from('h').to_ne_bytes()).unwrap();
            u32::from(refused) + flags.iter(&*b).filter(|&&f| f).count() as u32
        })
        .unwrap();
    assert_eq!(count, 7);
    assert!(flags.iter(&a).all(|&f| !f));
    assert_eq!(
        (*s.get(last), seen.get(&s, &'b'), seen.len(&s)),
        ('h', Some(&true), 6)
    );
}
