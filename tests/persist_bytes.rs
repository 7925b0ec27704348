//! Snapshots as bytes in memory: whole and delta round trips (related and unrelated page
//! stores), content hashes stable across routes and processes' encodings, the same format as
//! files, the base cache, and damaged bytes (a bit flip in every section, truncation, junk),
//! which give an `Error::Bytes` or the exact bytes, never a crash.

mod common;

use cowarena::persist::{inspect, BaseCache};
use cowarena::{Arena, ContentHash, Error, FileProblem, Snapshot};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::OnceLock;

const PAGES: usize = 32;

fn page() -> usize {
    cowarena::page_size()
}

fn fill(a: &mut Arena, p: usize, byte: u8) {
    a.bytes_mut(p * page()..(p + 1) * page())
        .unwrap()
        .fill(byte);
}

/// A base with 10 pages written, and the arena it came from.
fn base_arena() -> (Arena, Snapshot) {
    let mut a = Arena::with_capacity(PAGES * page()).unwrap();
    for p in [0, 1, 2, 5, 8, 9, 10, 20, 30, 31] {
        fill(&mut a, p, p as u8 + 1);
        a.write(p * page() + 3, &[0xee, p as u8]).unwrap();
    }
    let base = a.snapshot().unwrap();
    (a, base)
}

/// From the base: 3 pages changed, 1 zeroed, 2 added.
fn change(a: &mut Arena) {
    for p in [1, 9, 30] {
        a.write(p * page() + 100, b"changed").unwrap();
    }
    fill(a, 5, 0);
    for p in [12, 25] {
        fill(a, p, 0x77);
    }
}

/// Section boundaries of encoded bytes: header fields, base name, index, checksums, metadata
/// checksum, padding, each stored page, end; and where the metadata and the data start.
struct Layout {
    boundaries: Vec<usize>,
    meta_end: usize,
    data_offset: usize,
}

fn layout(bytes: &[u8]) -> Layout {
    let s = common::sections(bytes, page());
    Layout {
        boundaries: s.boundaries,
        meta_end: s.meta_end,
        data_offset: s.data_offset,
    }
}

struct Fixture {
    base: Vec<u8>,
    delta: Vec<u8>,
    base_contents: Vec<u8>,
    delta_contents: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (mut a, base) = base_arena();
        change(&mut a);
        let next = a.snapshot().unwrap();
        let delta = next.delta_bytes(&base).unwrap();
        let info = inspect(&delta).unwrap();
        assert_eq!(
            (info.pages_stored, info.base),
            (5, Some(base.hash().unwrap()))
        );
        Fixture {
            base: base.full_bytes().unwrap(),
            delta,
            base_contents: base.as_bytes().to_vec(),
            delta_contents: next.as_bytes().to_vec(),
        }
    })
}

#[test]
fn whole_and_delta_round_trips() {
    let (mut a, base) = base_arena();
    change(&mut a);
    let next = a.snapshot().unwrap();

    let mut bytes = base.full_bytes().unwrap();
    let rebuilt_base = Snapshot::from_bytes(&bytes).unwrap();
    // The snapshot owes nothing to the bytes it was rebuilt from.
    bytes.fill(0xff);
    drop(bytes);
    assert_eq!(rebuilt_base.as_bytes(), base.as_bytes());
    assert_eq!(rebuilt_base.hash().unwrap(), base.hash().unwrap());

    // Against the sender's own base (same page store: a diff of the page tables) and against a
    // rebuilt copy (another store: every page compared): the same bytes.
    let mut delta = Vec::new();
    let stats = next.delta_to(&base, &mut delta).unwrap();
    assert_eq!((stats.pages_written, stats.pages_zeroed), (5, 1));
    assert_eq!(stats.file_bytes, delta.len() as u64);
    assert_eq!(stats.content_hash, next.hash().unwrap());
    assert_eq!(next.delta_bytes(&rebuilt_base).unwrap(), delta);
    // A delta is the changed pages and one page of metadata.
    assert_eq!(delta.len(), 6 * page());

    let received = Snapshot::from_delta(&delta, &rebuilt_base).unwrap();
    delta.fill(0);
    assert_eq!(received.as_bytes(), next.as_bytes());
    assert_eq!(received.hash().unwrap(), next.hash().unwrap());
    // It shares the base's page store: an arena made from the base restores it.
    let mut worker = rebuilt_base.to_arena().unwrap();
    worker.restore(&received).unwrap();
    assert_eq!(worker.as_bytes(), next.as_bytes());
    // A delta of the received state against the base is the same delta again.
    assert_eq!(
        received.delta_bytes(&rebuilt_base).unwrap(),
        next.delta_bytes(&base).unwrap()
    );
    // Nothing changed: a delta without pages.
    let empty = base.delta_bytes(&base).unwrap();
    let same = Snapshot::from_delta(&empty, &rebuilt_base).unwrap();
    assert_eq!(same.as_bytes(), base.as_bytes());
    assert_eq!(inspect(&empty).unwrap().pages_stored, 0);
}

#[test]
fn content_hashes_are_the_contents_identity() {
    let (mut a, base) = base_arena();
    change(&mut a);
    let next = a.snapshot().unwrap();
    // The same contents written in another order into another arena.
    let mut b = Arena::with_capacity(PAGES * page()).unwrap();
    b.write(0, next.as_bytes()).unwrap();
    let copy = b.snapshot().unwrap();
    assert_eq!(copy.hash().unwrap(), next.hash().unwrap());
    assert_ne!(base.hash().unwrap(), next.hash().unwrap());
    // The hash of a file of the same contents.
    let dir = std::env::temp_dir().join(format!("cowarena-bytes-hash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let saved = copy.save(dir.join("copy.snap")).unwrap();
    assert_eq!(saved.content_hash, next.hash().unwrap());
    // Bytes are the file format: a delta written beside its base, saved as `<hash>.snap`,
    // opens as a file.
    let base_name = format!("{}.snap", base.hash().unwrap());
    std::fs::write(dir.join(&base_name), base.full_bytes().unwrap()).unwrap();
    std::fs::write(dir.join("next.snap"), next.delta_bytes(&base).unwrap()).unwrap();
    let opened = Snapshot::open(dir.join("next.snap")).unwrap();
    assert_eq!(opened.as_bytes(), next.as_bytes());
    assert_eq!(opened.content_hash(), Some(next.hash().unwrap()));
    // And a file is bytes.
    let file = std::fs::read(dir.join("copy.snap")).unwrap();
    assert_eq!(
        Snapshot::from_bytes(&file).unwrap().as_bytes(),
        next.as_bytes()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn problem(r: cowarena::Result<Snapshot>) -> FileProblem {
    match r {
        Err(Error::Bytes { problem }) => problem,
        other => panic!("expected Error::Bytes, got {other:?}"),
    }
}

#[test]
fn wrong_bases_and_kinds_are_errors() {
    let f = fixture();
    let base = Snapshot::from_bytes(&f.base).unwrap();
    assert!(matches!(
        problem(Snapshot::from_bytes(&f.delta)),
        FileProblem::NeedsBase { base: b } if b == base.hash().unwrap()
    ));
    assert!(matches!(
        problem(Snapshot::from_delta(&f.base, &base)),
        FileProblem::NotADelta
    ));
    let other = Arena::with_capacity(PAGES * page())
        .unwrap()
        .snapshot()
        .unwrap();
    assert!(matches!(
        problem(Snapshot::from_delta(&f.delta, &other)),
        FileProblem::BaseMismatch { expected, found }
            if expected == base.hash().unwrap() && found == other.hash().unwrap()
    ));
    let bigger = Arena::with_capacity(2 * PAGES * page())
        .unwrap()
        .snapshot()
        .unwrap();
    assert!(matches!(
        problem(Snapshot::from_delta(&f.delta, &bigger)),
        FileProblem::Capacity { .. }
    ));
    let e = base.delta_bytes(&bigger).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Bytes {
                problem: FileProblem::Capacity { .. }
            }
        ),
        "{e}"
    );
    // A writer that fails is an error naming the write.
    struct Full;
    impl std::io::Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::StorageFull.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let e = base.full_to(Full).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Bytes {
                problem: FileProblem::Os { op: "write", .. }
            }
        ),
        "{e}"
    );
}

#[test]
fn the_base_cache_keeps_the_recent_bases_within_its_bounds() {
    let mut a = Arena::with_capacity(PAGES * page()).unwrap();
    let mut states = Vec::new();
    for k in 0..5u8 {
        fill(&mut a, k as usize, k + 1);
        states.push(a.snapshot().unwrap());
    }
    let hashes: Vec<ContentHash> = states.iter().map(|s| s.hash().unwrap()).collect();
    // By count: the least recently used goes first.
    let mut cache = BaseCache::new(3, usize::MAX);
    for s in &states[..3] {
        cache.insert(s.clone()).unwrap();
    }
    assert!(cache.get(hashes[0]).is_some());
    cache.insert(states[3].clone()).unwrap();
    assert_eq!(cache.len(), 3);
    assert!(cache.get(hashes[1]).is_none(), "the least recently used");
    assert!(cache.get(hashes[0]).is_some() && cache.get(hashes[3]).is_some());
    // By bytes: states k hold k + 1 pages.
    let mut cache = BaseCache::new(100, 6 * page());
    for s in &states[..3] {
        cache.insert(s.clone()).unwrap();
    }
    assert_eq!((cache.len(), cache.bytes()), (3, 6 * page()));
    cache.insert(states[3].clone()).unwrap();
    assert_eq!((cache.len(), cache.bytes()), (1, 4 * page()));
    // One base over the bounds is kept, alone.
    cache.insert(states[4].clone()).unwrap();
    assert_eq!((cache.len(), cache.bytes()), (1, 5 * page()));
    assert!(cache.get(hashes[4]).is_some());
    // Inserting again only marks it used.
    cache.insert(states[4].clone()).unwrap();
    assert_eq!(cache.len(), 1);
    assert!(!cache.is_empty());
}

#[test]
fn the_base_cache_rebuilds_chains_and_checks_what_it_fetches() {
    let mut a = Arena::with_capacity(PAGES * page()).unwrap();
    fill(&mut a, 0, 1);
    let root = a.snapshot().unwrap();
    let mut blobs: HashMap<ContentHash, Vec<u8>> = HashMap::new();
    blobs.insert(root.hash().unwrap(), root.full_bytes().unwrap());
    // A chain: each state a delta against the one before.
    let mut prev = root.clone();
    for k in 1..4 {
        fill(&mut a, k, k as u8 + 1);
        let s = a.snapshot().unwrap();
        blobs.insert(s.hash().unwrap(), s.delta_bytes(&prev).unwrap());
        prev = s;
    }
    fill(&mut a, 9, 9);
    let last = a.snapshot().unwrap();
    let delta = last.delta_bytes(&prev).unwrap();
    let mut cache = BaseCache::new(8, usize::MAX);
    let mut fetched = Vec::new();
    let mut fetch = |h: ContentHash| -> cowarena::Result<Vec<u8>> {
        fetched.push(h);
        Ok(blobs[&h].clone())
    };
    let s = cache.rebuild(&delta, &mut fetch).unwrap();
    assert_eq!(s.as_bytes(), last.as_bytes());
    assert_eq!(
        cache.len(),
        4,
        "the root and three deltas, each rebuilt once"
    );
    let s = cache.rebuild(&delta, &mut fetch).unwrap();
    assert_eq!(s.hash().unwrap(), last.hash().unwrap());
    assert_eq!(fetched.len(), 4, "nothing fetched twice");
    // A fetch that returns another snapshot than the one asked for.
    let mut cache = BaseCache::new(8, usize::MAX);
    let wrong = root.full_bytes().unwrap();
    let e = cache
        .rebuild(&delta, |_| -> cowarena::Result<Vec<u8>> {
            Ok(wrong.clone())
        })
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Bytes {
                problem: FileProblem::BaseMismatch { .. }
            }
        ),
        "{e}"
    );
    assert!(cache.is_empty());
}

/// What damaged bytes must give.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// An `Error::Bytes`.
    Error,
    /// The exact state (the damage hit bytes nothing reads).
    Exact,
    /// Either.
    Either,
}

/// Rebuilds the (possibly damaged) bytes: an `Error::Bytes` or the exact state, never another
/// error, a panic or wrong bytes.
fn check_damaged(in_delta: bool, bytes: &[u8], expect: Expect) {
    let f = fixture();
    let result = if in_delta {
        let base = Snapshot::from_bytes(&f.base).unwrap();
        Snapshot::from_delta(bytes, &base)
    } else {
        Snapshot::from_bytes(bytes)
    };
    let expected = if in_delta {
        &f.delta_contents
    } else {
        &f.base_contents
    };
    match result {
        Ok(s) => {
            assert!(expect != Expect::Error, "damaged bytes were accepted");
            assert_eq!(s.as_bytes(), &expected[..]);
        }
        Err(Error::Bytes { problem }) => {
            assert!(expect != Expect::Exact, "intact bytes refused: {problem}")
        }
        Err(e) => panic!("not an Error::Bytes: {e}"),
    }
}

/// A flip at `at` must be an error unless it lands in the padding between the metadata and the
/// pages, which nothing reads.
fn flip_expect(l: &Layout, at: usize) -> Expect {
    if (l.meta_end..l.data_offset).contains(&at) {
        Expect::Exact
    } else {
        Expect::Error
    }
}

fn encoded(in_delta: bool) -> &'static [u8] {
    let f = fixture();
    if in_delta {
        &f.delta
    } else {
        &f.base
    }
}

#[test]
fn every_section_flipped() {
    for in_delta in [false, true] {
        let bytes = encoded(in_delta);
        let l = layout(bytes);
        for w in l.boundaries.windows(2).filter(|w| w[1] > w[0]) {
            for at in [w[0], (w[0] + w[1]) / 2, w[1] - 1] {
                for bit in [0, 7] {
                    let mut damaged = bytes.to_vec();
                    damaged[at] ^= 1 << bit;
                    check_damaged(in_delta, &damaged, flip_expect(&l, at));
                }
            }
        }
    }
}

#[test]
fn truncation_at_every_section_boundary() {
    for in_delta in [false, true] {
        let bytes = encoded(in_delta);
        let l = layout(bytes);
        let mut lens: Vec<usize> = l
            .boundaries
            .iter()
            .flat_map(|&b| [b.saturating_sub(1), b, b + 1])
            .filter(|&n| n < bytes.len())
            .collect();
        lens.dedup();
        for n in lens {
            check_damaged(in_delta, &bytes[..n], Expect::Error);
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        check_damaged(in_delta, &longer, Expect::Error);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_flips_truncations_and_junk(
        in_delta: bool,
        at_frac in 0.0f64..1.0,
        bit in 0u8..8,
        len_frac in 0.0f64..1.0,
        junk in any::<[u8; 8]>(),
    ) {
        let bytes = encoded(in_delta);
        let l = layout(bytes);
        let at = ((bytes.len() as f64 * at_frac) as usize).min(bytes.len() - 1);
        let mut flipped = bytes.to_vec();
        flipped[at] ^= 1 << bit;
        check_damaged(in_delta, &flipped, flip_expect(&l, at));
        let len = (bytes.len() as f64 * len_frac) as usize;
        check_damaged(in_delta, &bytes[..len], Expect::Error);
        let mut junked = bytes.to_vec();
        let at = ((bytes.len() - 8) as f64 * at_frac) as usize;
        junked[at..at + 8].copy_from_slice(&junk);
        // Junk may land in the padding, or equal the bytes it replaces.
        check_damaged(in_delta, &junked, Expect::Either);
    }
}
