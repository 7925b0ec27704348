//! Damaged snapshot files: every class of bit flip (header fields, base name, page index,
//! checksums, metadata checksum, padding, page data; in a base and in a delta) and truncation at
//! every section boundary. Each gives an `Error` (at `open`, or at the first read of the damaged
//! page) or bytes equal to the saved ones; never a crash and never wrong bytes.

mod common;

use cowarena::{Arena, Error, FileProblem, Snapshot};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const PAGES: usize = 32;

fn page() -> usize {
    cowarena::page_size()
}

/// A saved file and what it holds.
struct Saved {
    bytes: Vec<u8>,
    /// Section boundaries: header fields, base name, index, checksums, metadata checksum,
    /// padding, each data page, end.
    boundaries: Vec<usize>,
    meta_end: usize,
    data_offset: usize,
    /// Arena page held by each stored page, in file order.
    stored_pages: Vec<usize>,
    /// Arena pages listed in the index (stored or zeroed).
    listed: Vec<usize>,
}

impl Saved {
    fn parse(bytes: Vec<u8>) -> Saved {
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        let common::Sections {
            boundaries,
            index,
            meta_end,
            data_offset,
            entries,
        } = common::sections(&bytes, page());
        let mut stored_pages = Vec::new();
        let mut listed = Vec::new();
        for i in 0..entries {
            let raw = u64_at(index + 8 * i);
            let p = raw & !(1 << 63);
            listed.push(p);
            if raw >> 63 == 0 {
                stored_pages.push(p);
            }
        }
        Saved {
            bytes,
            boundaries,
            meta_end,
            data_offset,
            stored_pages,
            listed,
        }
    }
}

struct Fixture {
    base: Saved,
    delta: Saved,
    base_bytes: Vec<u8>,
    delta_bytes: Vec<u8>,
}

/// A base with 10 pages written and a delta that changes 3, zeroes 1 and adds 2.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("cowarena-fuzz-fixture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut a = Arena::with_capacity(PAGES * page()).unwrap();
        for p in [0, 1, 2, 5, 8, 9, 10, 20, 30, 31] {
            let fill = p as u8 + 1;
            a.bytes_mut(p * page()..(p + 1) * page())
                .unwrap()
                .fill(fill);
            a.write(p * page() + 3, &[0xee, p as u8]).unwrap();
        }
        let base = a.snapshot().unwrap();
        base.save(dir.join("base.snap")).unwrap();
        for p in [1, 9, 30] {
            a.write(p * page() + 100, b"changed").unwrap();
        }
        a.bytes_mut(5 * page()..6 * page()).unwrap().fill(0);
        for p in [12, 25] {
            a.bytes_mut(p * page()..(p + 1) * page())
                .unwrap()
                .fill(0x77);
        }
        let delta = a.snapshot().unwrap();
        delta.save_delta(dir.join("delta.snap"), &base).unwrap();
        let f = Fixture {
            base: Saved::parse(std::fs::read(dir.join("base.snap")).unwrap()),
            delta: Saved::parse(std::fs::read(dir.join("delta.snap")).unwrap()),
            base_bytes: base.as_bytes().to_vec(),
            delta_bytes: delta.as_bytes().to_vec(),
        };
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(f.delta.stored_pages, [1, 9, 12, 25, 30]);
        assert_eq!(f.delta.listed, [1, 5, 9, 12, 25, 30]);
        f
    })
}

/// A directory for one test's damaged files.
fn case_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cowarena-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What opening a file should give.
enum Expect<'a> {
    /// An error at `open`.
    OpenFails,
    /// `open` succeeds; these arena pages fail their check when read, the others are exact.
    Opens { bad: &'a [usize] },
}

fn check(path: &Path, expected: &[u8], expect: Expect<'_>) {
    let opened = Snapshot::open(path);
    let bad = match expect {
        Expect::OpenFails => {
            let e = opened.expect_err("a damaged file must not open");
            assert!(matches!(e, Error::File { .. }), "{e}");
            return;
        }
        Expect::Opens { bad } => bad,
    };
    let s = opened.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = vec![0u8; page()];
    for p in 0..PAGES {
        match s.read(p * page(), &mut buf) {
            Ok(()) => {
                assert!(!bad.contains(&p), "damaged page {p} read without error");
                assert_eq!(buf, expected[p * page()..(p + 1) * page()], "page {p}");
            }
            Err(e) => {
                assert!(bad.contains(&p), "page {p}: {e}");
                assert!(
                    matches!(e, Error::File { problem: FileProblem::PageChecksum { page, .. }, .. } if page == p),
                    "{e}"
                );
            }
        }
    }
    match s.try_as_bytes() {
        Ok(bytes) => {
            assert!(bad.is_empty(), "a view over a damaged page");
            assert_eq!(bytes, expected);
        }
        Err(e) => assert!(!bad.is_empty(), "{e}"),
    }
}

/// Writes the base and delta files (either possibly damaged) and checks both.
fn check_pair(
    dir: &Path,
    base: &[u8],
    delta: &[u8],
    base_expect: Expect<'_>,
    delta_expect: Expect<'_>,
) {
    let f = fixture();
    std::fs::write(dir.join("base.snap"), base).unwrap();
    std::fs::write(dir.join("delta.snap"), delta).unwrap();
    check(&dir.join("base.snap"), &f.base_bytes, base_expect);
    check(&dir.join("delta.snap"), &f.delta_bytes, delta_expect);
}

/// Where a flip lands: the expected outcome for the damaged file, and for the delta when the
/// base is damaged.
fn flip_outcome(saved: &Saved, at: usize) -> (bool, Option<usize>) {
    if at < saved.meta_end {
        (true, None)
    } else if at < saved.data_offset {
        (false, None)
    } else {
        (
            false,
            Some(saved.stored_pages[(at - saved.data_offset) / page()]),
        )
    }
}

fn flip_and_check(dir: &Path, in_delta: bool, at: usize, bit: u8) {
    let f = fixture();
    let mut base = f.base.bytes.clone();
    let mut delta = f.delta.bytes.clone();
    let target = if in_delta { &mut delta } else { &mut base };
    target[at] ^= 1 << bit;
    let saved = if in_delta { &f.delta } else { &f.base };
    let (meta, page) = flip_outcome(saved, at);
    let bad: Vec<usize> = page.into_iter().collect();
    // A base page the delta replaces is never read through the delta.
    let bad_through_delta: Vec<usize> = bad
        .iter()
        .copied()
        .filter(|p| in_delta || !f.delta.listed.contains(p))
        .collect();
    let damaged = if meta {
        Expect::OpenFails
    } else {
        Expect::Opens { bad: &bad }
    };
    let delta_expect = if meta {
        Expect::OpenFails
    } else {
        Expect::Opens {
            bad: &bad_through_delta,
        }
    };
    if in_delta {
        check_pair(dir, &base, &delta, Expect::Opens { bad: &[] }, damaged);
    } else {
        check_pair(dir, &base, &delta, damaged, delta_expect);
    }
}

/// Picks a byte in one class of regions of a file: 0 metadata, 1 padding, 2 page data.
fn position(saved: &Saved, class: u8, frac: f64) -> Option<usize> {
    let range = match class {
        0 => 0..saved.meta_end,
        1 => saved.meta_end..saved.data_offset,
        _ => saved.data_offset..saved.bytes.len(),
    };
    (!range.is_empty())
        .then(|| range.start + ((range.len() as f64 * frac) as usize).min(range.len() - 1))
}

#[test]
fn every_header_field_and_section_flipped() {
    let f = fixture();
    let dir = case_dir("sections");
    for (in_delta, saved) in [(false, &f.base), (true, &f.delta)] {
        // One byte in every section (each header field, name, index, checksums, metadata
        // checksum, padding, every data page), two bits each.
        for w in saved.boundaries.windows(2).filter(|w| w[1] > w[0]) {
            for at in [w[0], (w[0] + w[1]) / 2, w[1] - 1] {
                for bit in [0, 7] {
                    flip_and_check(&dir, in_delta, at, bit);
                }
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncation_at_every_section_boundary() {
    let f = fixture();
    let dir = case_dir("truncation");
    for (in_delta, saved) in [(false, &f.base), (true, &f.delta)] {
        let mut lens: Vec<usize> = saved
            .boundaries
            .iter()
            .flat_map(|&b| [b.saturating_sub(1), b, b + 1])
            .filter(|&l| l < saved.bytes.len())
            .collect();
        lens.dedup();
        // A damaged delta still opens its (intact) base; a damaged base opens neither.
        let check_damaged = |damage: &dyn Fn(&mut Vec<u8>)| {
            let (mut base, mut delta) = (f.base.bytes.clone(), f.delta.bytes.clone());
            if in_delta {
                damage(&mut delta);
                check_pair(
                    &dir,
                    &base,
                    &delta,
                    Expect::Opens { bad: &[] },
                    Expect::OpenFails,
                );
            } else {
                damage(&mut base);
                check_pair(&dir, &base, &delta, Expect::OpenFails, Expect::OpenFails);
            }
        };
        for len in lens {
            check_damaged(&|bytes| bytes.truncate(len));
        }
        // Extra bytes at the end are refused too.
        check_damaged(&|bytes| bytes.push(0));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bit_flips(in_delta: bool, class in 0u8..3, frac in 0.0f64..1.0, bit in 0u8..8) {
        let f = fixture();
        let saved = if in_delta { &f.delta } else { &f.base };
        if let Some(at) = position(saved, class, frac) {
            let dir = case_dir("flips");
            flip_and_check(&dir, in_delta, at, bit);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn random_truncations_and_multi_byte_damage(
        in_delta: bool,
        len_frac in 0.0f64..1.0,
        at_frac in 0.0f64..1.0,
        junk in any::<[u8; 8]>(),
    ) {
        let f = fixture();
        let dir = case_dir("damage");
        let (mut base, mut delta) = (f.base.bytes.clone(), f.delta.bytes.clone());
        let target = if in_delta { &mut delta } else { &mut base };
        let len = (target.len() as f64 * len_frac) as usize;
        target.truncate(len);
        check_pair(&dir, &base, &delta,
            if in_delta { Expect::Opens { bad: &[] } } else { Expect::OpenFails },
            Expect::OpenFails);
        // Eight bytes of junk anywhere: an error or the right bytes, whatever it hits.
        let (mut base, mut delta) = (f.base.bytes.clone(), f.delta.bytes.clone());
        let target = if in_delta { &mut delta } else { &mut base };
        let at = ((target.len() - 8) as f64 * at_frac) as usize;
        target[at..at + 8].copy_from_slice(&junk);
        std::fs::write(dir.join("base.snap"), &base).unwrap();
        std::fs::write(dir.join("delta.snap"), &delta).unwrap();
        for (name, expected) in [("base.snap", &f.base_bytes), ("delta.snap", &f.delta_bytes)] {
            if let Ok(s) = Snapshot::open(dir.join(name)) {
                let mut buf = vec![0u8; page()];
                for p in 0..PAGES {
                    if s.read(p * page(), &mut buf).is_ok() {
                        prop_assert_eq!(&buf[..], &expected[p * page()..(p + 1) * page()]);
                    }
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
