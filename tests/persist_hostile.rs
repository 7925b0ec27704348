//! Snapshot files are input from outside: a delta that names its base as a FIFO, a device, a
//! path elsewhere or a symbolic link is an error at once (never a hang, never another file
//! read), and `save_delta` refuses a base whose file no longer holds it.

use cowarena::{Arena, Error, FileProblem, Snapshot};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cowarena-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Opens `path` on another thread, failing the test (instead of hanging it) if that takes more
/// than ten seconds.
fn open_within_time(path: &Path) -> cowarena::Result<Snapshot> {
    let (tx, rx) = mpsc::channel();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(Snapshot::open(&path));
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("Snapshot::open blocked")
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// A base `base.snap` and a delta `delta.snap` against it in `d`.
fn base_and_delta(d: &Path) {
    let mut a = Arena::with_capacity(1 << 20).unwrap();
    a.write(0, b"base").unwrap();
    let base = a.snapshot().unwrap();
    base.save(d.join("base.snap")).unwrap();
    a.write(8192, b"delta").unwrap();
    a.snapshot()
        .unwrap()
        .save_delta(d.join("delta.snap"), &base)
        .unwrap();
}

/// Rewrites the base name stored in the delta at `path` (same length) and its metadata
/// checksum, as a forger would.
fn forge_base_name(path: &Path, name: &[u8]) {
    let mut bytes = std::fs::read(path).unwrap();
    let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize;
    let name_len = word(&bytes, 88);
    assert_eq!(name.len(), name_len, "the forged name keeps the length");
    bytes[128..128 + name_len].copy_from_slice(name);
    let meta_end = 128 + name_len + 8 * word(&bytes, 32) + 8 * word(&bytes, 40);
    let sum = xxhash_rust::xxh3::xxh3_64(&bytes[..meta_end]);
    bytes[meta_end..meta_end + 8].copy_from_slice(&sum.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

fn problem(r: cowarena::Result<Snapshot>) -> FileProblem {
    match r {
        Err(Error::File { problem, .. }) => problem,
        other => panic!("expected a file error, got {other:?}"),
    }
}

#[test]
fn the_forged_delta_opens_when_untouched() {
    let d = dir("plain");
    base_and_delta(&d);
    let s = open_within_time(&d.join("delta.snap")).unwrap();
    assert_eq!(&s.as_bytes()[8192..8197], b"delta");
    // The forger's rewrite itself keeps a valid file.
    forge_base_name(&d.join("delta.snap"), b"base.snap");
    open_within_time(&d.join("delta.snap")).unwrap();
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_base_named_as_a_path_is_refused() {
    let d = dir("paths");
    base_and_delta(&d);
    mkfifo(&d.join("fifo"));
    for name in [
        &b".//./fifo"[..],
        b"/dev/zero",
        b"../b.snap",
        b"./b.snap",
        b"x/../base",
    ] {
        let name = &[name, &b"zzzzzzzzz"[name.len()..]].concat()[..9];
        forge_base_name(&d.join("delta.snap"), name);
        let p = problem(open_within_time(&d.join("delta.snap")));
        assert!(
            matches!(p, FileProblem::BaseNotBeside { .. }),
            "base name {:?}: {p}",
            String::from_utf8_lossy(name)
        );
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_base_that_is_a_fifo_or_a_link_is_refused_without_blocking() {
    let d = dir("fifo");
    base_and_delta(&d);
    mkfifo(&d.join("fifo.snap"));
    forge_base_name(&d.join("delta.snap"), b"fifo.snap");
    let p = problem(open_within_time(&d.join("delta.snap")));
    assert!(
        matches!(p, FileProblem::NotARegularFile { kind: "a FIFO" }),
        "{p}"
    );

    // A link to the right base is still refused: the base is read only from a file beside.
    std::os::unix::fs::symlink(d.join("base.snap"), d.join("link.snap")).unwrap();
    forge_base_name(&d.join("delta.snap"), b"link.snap");
    let p = problem(open_within_time(&d.join("delta.snap")));
    assert!(matches!(p, FileProblem::NotARegularFile { .. }), "{p}");

    std::fs::create_dir(d.join("dirx.snap")).unwrap();
    forge_base_name(&d.join("delta.snap"), b"dirx.snap");
    let p = problem(open_within_time(&d.join("delta.snap")));
    assert!(
        matches!(
            p,
            FileProblem::NotARegularFile {
                kind: "a directory"
            }
        ),
        "{p}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn opening_a_fifo_or_a_device_fails_at_once() {
    let d = dir("direct");
    mkfifo(&d.join("state.snap"));
    let p = problem(open_within_time(&d.join("state.snap")));
    assert!(
        matches!(p, FileProblem::NotARegularFile { kind: "a FIFO" }),
        "{p}"
    );
    let p = problem(open_within_time(Path::new("/dev/zero")));
    assert!(
        matches!(p, FileProblem::NotARegularFile { kind: "a device" }),
        "{p}"
    );
    assert!(Arena::from_file(d.join("state.snap")).is_err());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn save_delta_refuses_a_replaced_or_distant_base() {
    let d = dir("save");
    let mut a = Arena::with_capacity(1 << 20).unwrap();
    a.write(0, b"one").unwrap();
    let one = a.snapshot().unwrap();
    one.save(d.join("base.snap")).unwrap();
    let base = Snapshot::open(d.join("base.snap")).unwrap();
    a.write(0, b"two").unwrap();
    a.snapshot().unwrap().save(d.join("base.snap")).unwrap();
    a.write(4096, b"three").unwrap();
    let next = a.snapshot().unwrap();
    let p = problem(
        next.save_delta(d.join("d.snap"), &base)
            .map(|_| base.clone()),
    );
    assert!(matches!(p, FileProblem::WrongBase { .. }), "{p}");
    assert!(
        !d.join("d.snap").exists(),
        "nothing is written against a replaced base"
    );

    let other = dir("save-other");
    let p = problem(
        next.save_delta(other.join("d.snap"), &one)
            .map(|_| one.clone()),
    );
    assert!(matches!(p, FileProblem::BaseNotBeside { .. }), "{p}");
    assert!(!other.join("d.snap").exists());
    std::fs::remove_dir_all(&d).unwrap();
    std::fs::remove_dir_all(&other).unwrap();
}

/// A file may claim any capacity up to what an arena can index; the work of opening it and of
/// the first typed allocation follows the pages it holds, not that claim (the allocator's page
/// map of 16 TiB would be 4 GiB, and reading it maps a page-table entry per page).
#[test]
fn a_huge_claimed_capacity_costs_what_is_used() {
    let page = cowarena::page_size();
    let capacity = (u32::MAX as usize) * page;
    let d = dir("huge");
    let mut a = Arena::with_capacity(capacity).unwrap();
    a.write(capacity - 8, b"last").unwrap();
    a.snapshot().unwrap().save(d.join("huge.snap")).unwrap();
    drop(a);
    let pte_kib = || {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmPTE:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            .unwrap()
    };
    let before = pte_kib();
    let s = open_within_time(&d.join("huge.snap")).unwrap();
    let mut b = s.to_arena().unwrap();
    let p = b.alloc(42u64).unwrap();
    assert_eq!(*b.get(p), 42);
    let mut last = [0u8; 4];
    b.read(capacity - 8, &mut last).unwrap();
    assert_eq!(&last, b"last");
    let grown = pte_kib().saturating_sub(before);
    assert!(
        grown < 4096,
        "page tables grew by {grown} KiB for a few pages used"
    );
    std::fs::remove_dir_all(&d).unwrap();
}
