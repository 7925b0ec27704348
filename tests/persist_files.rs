//! Snapshot files: save and reopen (in this process and in another one), delta chains, content
//! hashes, arenas from files and bytes, and the errors of bad bases and damaged files.

use bytemuck::{Pod, Zeroable};
use cowarena::{Arena, ArenaMap, ArenaVec, Error, FileProblem, Ptr, Snapshot, View};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{Rng, TempDir};

const MIB: usize = 1 << 20;

fn page() -> usize {
    cowarena::page_size()
}

/// Reads the whole snapshot through `read`, a few pages at a time.
fn read_all(s: &Snapshot) -> Vec<u8> {
    let mut out = vec![0u8; s.capacity()];
    for (i, chunk) in out.chunks_mut(5 * page() + 17).enumerate() {
        s.read(i * (5 * page() + 17), chunk).unwrap();
    }
    out
}

fn assert_same(a: &[u8], b: &[u8], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        panic!("{what}: first difference at byte {i:#x}");
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Point {
    x: i64,
    y: i64,
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct World {
    squares: ArenaVec<u64>,
    cubes: ArenaMap<u64, u64>,
    origin: Ptr<Point>,
    generation: u64,
}

/// Writes state `generation` of the test world: typed values through the root, plus raw pages
/// of a pattern in the upper half of the arena (some of them zeroed again).
fn build_state(a: &mut Arena, generation: u64) {
    let world = match a.root::<World>() {
        Some(p) => p,
        None => {
            let w = World {
                squares: ArenaVec::new(a).unwrap(),
                cubes: ArenaMap::new(a).unwrap(),
                origin: a.alloc(Point { x: 0, y: 0 }).unwrap(),
                generation: 0,
            };
            let p = a.alloc(w).unwrap();
            a.set_root(p);
            p
        }
    };
    let w = *a.get(world);
    for i in 0..100 * (generation + 1) {
        if i >= w.squares.len(a) as u64 {
            w.squares.push(a, i * i).unwrap();
            w.cubes.insert(a, i, i * i * i).unwrap();
        }
    }
    a.get_mut(w.origin).x = generation as i64;
    a.get_mut(world).generation = generation;
    let half = a.capacity() / 2 / page();
    let mut rng = Rng(generation * 7919 + 1);
    for _ in 0..40 {
        let p = half + rng.below(half);
        let value = (generation as u8)
            .wrapping_mul(31)
            .wrapping_add(rng.below(200) as u8 + 1);
        a.bytes_mut(p * page()..(p + 1) * page())
            .unwrap()
            .fill(value);
    }
    for _ in 0..5 {
        let p = half + rng.below(half);
        a.bytes_mut(p * page()..(p + 1) * page()).unwrap().fill(0);
    }
}

/// Checks the typed structure of state `generation` through any view.
fn check_world(v: &impl View, generation: u64) {
    let w: World = *v.get(v.root::<World>().expect("root"));
    assert_eq!(w.generation, generation);
    let n = 100 * (generation + 1);
    assert_eq!(w.squares.len(v), n as usize);
    assert!(w
        .squares
        .iter(v)
        .enumerate()
        .all(|(i, &s)| s == (i * i) as u64));
    assert_eq!(w.cubes.len(v), n as usize);
    for i in (0..n).step_by(7) {
        assert_eq!(w.cubes.get(v, &i), Some(&(i * i * i)));
    }
    assert_eq!(
        *v.get(w.origin),
        Point {
            x: generation as i64,
            y: 0
        }
    );
}

/// Saves a base and `deltas` deltas, each against the one before; returns the snapshots and
/// their files.
fn save_chain(dir: &TempDir, deltas: u64) -> Vec<(Snapshot, PathBuf)> {
    let mut a = Arena::with_capacity(8 * MIB).unwrap();
    let mut out: Vec<(Snapshot, PathBuf)> = Vec::new();
    for g in 0..=deltas {
        build_state(&mut a, g);
        let s = a.snapshot().unwrap();
        let path = dir.join(&format!("state{g}.snap"));
        let stats = match out.last() {
            None => s.save(&path).unwrap(),
            Some((base, _)) => {
                let stats = s.save_delta(&path, base).unwrap();
                assert!(
                    stats.pages_written < 100,
                    "a delta stores what changed: {stats:?}"
                );
                stats
            }
        };
        assert_eq!(s.content_hash(), Some(stats.content_hash));
        assert_eq!(stats.file_bytes, std::fs::metadata(&path).unwrap().len());
        out.push((s, path));
    }
    out
}

#[test]
fn save_and_open_give_back_every_byte_and_value() {
    let dir = TempDir::new("roundtrip");
    let chain = save_chain(&dir, 0);
    let (s, path) = &chain[0];
    let t = Snapshot::open(path).unwrap();
    assert_eq!(t.capacity(), s.capacity());
    assert_same(&read_all(&t), s.as_bytes(), "read");
    assert_same(t.as_bytes(), s.as_bytes(), "as_bytes");
    check_world(&t, 0);
    let nonzero = s
        .as_bytes()
        .chunks(page())
        .filter(|p| p.iter().any(|&b| b != 0))
        .count();
    let again = t.save(dir.join("again.snap")).unwrap();
    assert_eq!(again.pages_written, nonzero, "zero pages are not stored");
    assert_eq!(
        Some(again.content_hash),
        s.content_hash(),
        "same contents, same hash"
    );

    // An opened snapshot is a snapshot like any other.
    let mut b = t.to_arena().unwrap();
    check_world(&b, 0);
    build_state(&mut b, 1);
    check_world(&b, 1);
    b.restore(&t).unwrap();
    check_world(&b, 0);
    assert_same(b.as_bytes(), s.as_bytes(), "restored");
}

#[test]
fn delta_chains_reopen_as_one_snapshot() {
    let dir = TempDir::new("chain");
    let chain = save_chain(&dir, 4);
    for (g, (s, path)) in chain.iter().enumerate() {
        let t = Snapshot::open(path).unwrap();
        assert_same(&read_all(&t), s.as_bytes(), &format!("state {g}"));
        check_world(&t, g as u64);
        assert_eq!(t.content_hash(), s.content_hash());
        // The same contents saved whole have the same identity as the chain.
        let whole = s.save(dir.join(&format!("whole{g}.snap"))).unwrap();
        assert_eq!(Some(whole.content_hash), t.content_hash());
    }
    // A delta of an opened snapshot, against it: the usual resume-and-continue cycle.
    let top = Snapshot::open(&chain[4].1).unwrap();
    let mut a = top.to_arena().unwrap();
    build_state(&mut a, 5);
    let s5 = a.snapshot().unwrap();
    let stats = s5.save_delta(dir.join("state5.snap"), &top).unwrap();
    assert!(
        stats.pages_written < 100 && stats.pages_zeroed <= 5,
        "{stats:?}"
    );
    let t5 = Snapshot::open(dir.join("state5.snap")).unwrap();
    assert_same(t5.as_bytes(), s5.as_bytes(), "state 5");
    check_world(&t5, 5);

    // Opening into an arena's store makes it restorable there.
    let back = a.open_snapshot(&chain[2].1).unwrap();
    a.restore(&back).unwrap();
    check_world(&a, 2);
    assert_same(a.as_bytes(), chain[2].0.as_bytes(), "restored from a file");
}

#[test]
fn deltas_against_unrelated_snapshots_compare_pages() {
    let dir = TempDir::new("unrelated");
    let mut a = Arena::with_capacity(MIB).unwrap();
    a.write(0, b"base").unwrap();
    a.write(10 * page(), b"gone").unwrap();
    let base = a.snapshot().unwrap();
    base.save(dir.join("base.snap")).unwrap();
    let mut b = Arena::with_capacity(MIB).unwrap();
    b.write(0, b"base").unwrap();
    b.write(20 * page(), b"new").unwrap();
    let s = b.snapshot().unwrap();
    let stats = s.save_delta(dir.join("d.snap"), &base).unwrap();
    assert_eq!((stats.pages_written, stats.pages_zeroed), (1, 1));
    let t = Snapshot::open(dir.join("d.snap")).unwrap();
    assert_same(t.as_bytes(), s.as_bytes(), "delta of an unrelated snapshot");
}

fn problem(e: &Error) -> &FileProblem {
    match e {
        Error::File { problem, .. } => problem,
        other => panic!("expected Error::File, got {other:?}"),
    }
}

#[test]
fn bad_bases_are_errors_naming_them() {
    let dir = TempDir::new("bases");
    let mut a = Arena::with_capacity(MIB).unwrap();
    a.write(0, b"one").unwrap();
    let one = a.snapshot().unwrap();
    a.write(0, b"two").unwrap();
    let two = a.snapshot().unwrap();

    let e = two.save_delta(dir.join("d.snap"), &one).unwrap_err();
    assert!(matches!(problem(&e), FileProblem::BaseNotSaved), "{e}");
    assert!(!dir.join("d.snap").exists());

    one.save(dir.join("one.snap")).unwrap();
    let e = two.save_delta(dir.join("one.snap"), &one).unwrap_err();
    assert!(matches!(problem(&e), FileProblem::OverwritesBase), "{e}");
    two.save_delta(dir.join("d.snap"), &one).unwrap();

    let other = Arena::with_capacity(2 * MIB).unwrap().snapshot().unwrap();
    other.save(dir.join("other.snap")).unwrap();
    let e = two.save_delta(dir.join("x.snap"), &other).unwrap_err();
    assert!(matches!(problem(&e), FileProblem::Capacity { .. }), "{e}");

    // The base replaced by another snapshot of the same capacity.
    let expected = one.content_hash().unwrap();
    two.save(dir.join("one.snap")).unwrap();
    let e = Snapshot::open(dir.join("d.snap")).unwrap_err();
    match problem(&e) {
        FileProblem::WrongBase {
            expected: x, found, ..
        } => {
            assert_eq!(*x, expected);
            assert_eq!(Some(*found), two.content_hash());
        }
        p => panic!("expected WrongBase, got {p}"),
    }
    assert!(e.to_string().contains(&expected.to_string()), "{e}");

    std::fs::remove_file(dir.join("one.snap")).unwrap();
    let e = Snapshot::open(dir.join("d.snap")).unwrap_err();
    assert!(
        matches!(problem(&e), FileProblem::MissingBase { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("one.snap") && e.to_string().contains(&expected.to_string()));

    let e = Snapshot::open(dir.join("missing.snap")).unwrap_err();
    assert!(matches!(problem(&e), FileProblem::Os { .. }), "{e}");
    std::fs::write(dir.join("text.snap"), b"hello, world").unwrap();
    let e = Snapshot::open(dir.join("text.snap")).unwrap_err();
    assert!(matches!(problem(&e), FileProblem::NotASnapshot), "{e}");
}

#[test]
fn a_file_changed_after_open_is_an_error_at_the_page_not_a_crash() {
    let dir = TempDir::new("changed");
    let path = dir.join("s.snap");
    let mut a = Arena::with_capacity(MIB).unwrap();
    a.bytes_mut(0..MIB).unwrap().fill(0xab);
    let s = a.snapshot().unwrap();
    s.save(&path).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    let pages = MIB / page();

    // Truncated in place by "another process": pages past the end are errors, not SIGBUS.
    let t = Snapshot::open(&path).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - (pages as u64 / 2) * page() as u64).unwrap();
    let mut buf = vec![0u8; page()];
    t.read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0xab));
    let e = t.read((pages - 1) * page(), &mut buf).unwrap_err();
    assert!(matches!(problem(&e), FileProblem::Truncated { .. }), "{e}");
    assert!(t.try_as_bytes().is_err());
    assert!(t.to_arena().is_err());

    // Rewritten in place: the changed page fails its checksum wherever it is needed.
    s.save(&path).unwrap();
    let t = Snapshot::open(&path).unwrap();
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"x", len - 3 * page() as u64 + 5).unwrap();
    let e = t.read((pages - 3) * page(), &mut buf).unwrap_err();
    match problem(&e) {
        FileProblem::PageChecksum { page: p, .. } => assert_eq!(*p, pages - 3),
        p => panic!("expected PageChecksum, got {p}"),
    }
    t.read((pages - 2) * page(), &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0xab));
    assert!(
        t.try_as_bytes().is_err(),
        "a view never shows an unchecked page"
    );
}

#[test]
fn a_failed_save_leaves_no_file() {
    let dir = TempDir::new("failed");
    let s = Arena::with_capacity(MIB).unwrap().snapshot().unwrap();
    std::fs::create_dir(dir.join("taken")).unwrap();
    let e = s.save(dir.join("taken")).unwrap_err();
    assert!(
        matches!(problem(&e), FileProblem::Os { op: "rename", .. }),
        "{e}"
    );
    let e = s.save(dir.join("no/such/dir.snap")).unwrap_err();
    assert!(matches!(problem(&e), FileProblem::Os { .. }), "{e}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("taken")]);
}

#[test]
fn arenas_from_bytes_and_files() {
    let dir = TempDir::new("image");
    let mut bytes = vec![0u8; 3 * page() + 100];
    bytes[..page()].fill(1);
    bytes[3 * page()..].fill(3);
    for a in [Arena::from_bytes(&bytes).unwrap(), {
        std::fs::write(dir.join("image.bin"), &bytes).unwrap();
        Arena::from_file(dir.join("image.bin")).unwrap()
    }] {
        let mut a = a;
        assert_eq!(a.capacity(), 4 * page());
        assert_same(&a.as_bytes()[..bytes.len()], &bytes, "image");
        assert!(a.as_bytes()[bytes.len()..].iter().all(|&b| b == 0));
        assert_eq!(a.stats().dirty_pages, 0, "the arena starts clean");
        assert_eq!(a.stats().store.live_pages, 2, "zero pages are not frozen");
        let s = a.snapshot().unwrap();
        a.write(0, b"changed").unwrap();
        assert_eq!(s.as_bytes()[0], 1);
    }
    // The arena is a copy: changing the file later changes nothing.
    let a = Arena::from_file(dir.join("image.bin")).unwrap();
    std::fs::write(dir.join("image.bin"), b"").unwrap();
    assert_eq!(a.as_bytes()[0], 1);
    let e = Arena::from_file(dir.join("image.bin")).unwrap_err();
    assert!(matches!(e, Error::InvalidCapacity { .. }), "{e}");
    let e = Arena::from_file(dir.join("none.bin")).unwrap_err();
    assert!(
        matches!(problem(&e), FileProblem::Os { op: "open", .. }),
        "{e}"
    );
}

/// Set in the child process: the directory the parent saved its files in.
const CHILD_ENV: &str = "COWARENA_PERSIST_CHILD_DIR";

#[test]
fn another_process_opens_the_files() {
    let dir = TempDir::new("cross");
    let chain = save_chain(&dir, 3);
    for (g, (s, _)) in chain.iter().enumerate() {
        std::fs::write(dir.join(&format!("state{g}.bytes")), s.as_bytes()).unwrap();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_checks_the_files",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {log}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("checked 4 states"), "the child ran: {log}");
}

/// Run by [`another_process_opens_the_files`] in a child process; does nothing otherwise.
#[test]
fn child_checks_the_files() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    for g in 0..4u64 {
        let s = Snapshot::open(dir.join(format!("state{g}.snap"))).unwrap();
        let expected = std::fs::read(dir.join(format!("state{g}.bytes"))).unwrap();
        assert_same(&read_all(&s), &expected, "read in the child");
        assert_same(s.as_bytes(), &expected, "as_bytes in the child");
        check_world(&s, g);
        let mut a = s.to_arena().unwrap();
        build_state(&mut a, g + 1);
        check_world(&a, g + 1);
    }
    println!("checked 4 states");
}

/// Set in the child processes of [`a_stale_ptr_in_a_file_stays_stale_in_another_process`]:
/// `save` or `open`, then the directory.
const STAMPS_ENV: &str = "COWARENA_PERSIST_STAMPS";

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct Holder {
    stale: Ptr<u64>,
}

/// Runs this test binary's `child_stamps` test in a new process with `role`.
fn run_child_stamps(role: &str, dir: &Path) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["child_stamps", "--exact", "--nocapture", "--test-threads=1"])
        .env(STAMPS_ENV, format!("{role}:{}", dir.display()))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && log.contains(&format!("{role} done")),
        "child {role} failed: {log}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_stale_ptr_in_a_file_stays_stale_in_another_process() {
    // Two fresh processes, whose stamp counters start alike: the first saves a snapshot holding a
    // `Ptr` to a freed object; the second reopens it and allocates in the freed slot.
    let dir = TempDir::new("stamps");
    run_child_stamps("save", dir.path());
    run_child_stamps("open", dir.path());
}

/// Run by [`a_stale_ptr_in_a_file_stays_stale_in_another_process`]; does nothing otherwise.
#[test]
fn child_stamps() {
    let Some(arg) = std::env::var_os(STAMPS_ENV) else {
        return;
    };
    let arg = arg.into_string().unwrap();
    let (role, dir) = arg.split_once(':').unwrap();
    let file = Path::new(dir).join("stale.snap");
    if role == "save" {
        let mut a = Arena::with_capacity(MIB).unwrap();
        let x = a.alloc(7u64).unwrap();
        let holder = a.alloc(Holder { stale: x }).unwrap();
        a.set_root(holder);
        a.free(x).unwrap();
        a.snapshot().unwrap().save(&file).unwrap();
    } else {
        let s = Snapshot::open(&file).unwrap();
        let mut a = s.to_arena().unwrap();
        let stale = a.get(a.root::<Holder>().unwrap()).stale;
        assert!(a.try_get(stale).is_err());
        // Every new object in the freed slot gets a new stamp: none may be the stale one.
        for i in 0..64 {
            let fresh = a.alloc(i).unwrap();
            assert_eq!(fresh.offset(), stale.offset(), "the freed slot is reused");
            assert!(
                a.try_get(stale).is_err(),
                "a stale Ptr from the file names object {i}"
            );
            a.free(fresh).unwrap();
        }
    }
    println!("{role} done");
}

/// A file whose header claims a stamp ceiling no process reaches (with a metadata checksum that
/// matches, as anyone can compute) is refused: opening it would otherwise push this process's
/// stamp counter to where it wraps, and freed `Ptr`s would name new objects.
#[test]
fn a_file_claiming_an_impossible_stamp_ceiling_is_refused() {
    let dir = TempDir::new("ceiling");
    let mut a = Arena::with_capacity(MIB).unwrap();
    let p = a.alloc(7u64).unwrap();
    a.free(p).unwrap();
    let path = dir.join("x.snap");
    a.snapshot().unwrap().save(&path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let (entries, stored, name_len) = (u64_at(&bytes, 32), u64_at(&bytes, 40), u64_at(&bytes, 88));
    let meta_len = (128 + name_len + 8 * entries + 8 * stored + 8) as usize;
    for ceiling in [u64::MAX, (1 << 62) + 1] {
        bytes[96..104].copy_from_slice(&ceiling.to_le_bytes());
        let sum = xxhash_rust::xxh3::xxh3_64(&bytes[..meta_len - 8]);
        bytes[meta_len - 8..meta_len].copy_from_slice(&sum.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let e = Snapshot::open(&path).unwrap_err();
        assert!(
            matches!(
                &e,
                Error::File {
                    problem: FileProblem::Index(_),
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("stamp ceiling"), "{e}");
    }
    // The stamps this process hands out are unaffected: the freed `Ptr` stays stale.
    for i in 0..1000u64 {
        a.alloc(i).unwrap();
    }
    assert!(a.try_get(p).is_err());
}
