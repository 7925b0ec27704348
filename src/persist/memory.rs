//! Snapshots as bytes: the file format (see the [module docs](super)) written to any
//! [`io::Write`](std::io::Write), whole or as a delta against a base the receiver already holds,
//! and read back from a byte slice with every check [`Snapshot::open`] makes. This is the unit a
//! queue or a key-value store carries between processes and machines.
//!
//! Writing makes two passes over the pages: the first builds the index, the checksums and the
//! content hash, which the format puts before the pages; the second writes the pages. A stream
//! has no going back, and holding the pages between the passes would cost the size of the
//! output (a whole snapshot can be gigabytes); reading a page twice costs a copy.
//!
//! Reading checks the header, the metadata checksum, the index, the content hash (against the
//! base's for a delta) and every page's checksum before anything is kept, then copies the pages
//! into a page store: the snapshot owes nothing to the bytes after the call.

use super::format::{self, HashSum, Header, Meta};
use super::save::{delta_candidates, for_each_change, Index};
use super::{ContentHash, SaveStats};
use crate::error::{Error, FileProblem, Result};
use crate::page_table::PageTable;
use crate::snapshot::{Options, Snapshot};
use crate::store::{SlotId, Store};
use crate::sys;
use std::io::Write;
use std::sync::Arc;

/// Pages read from a snapshot per call at most, so that buffers stay small.
const READ_RUN_PAGES: usize = 256;

fn bad(problem: FileProblem) -> Error {
    Error::Bytes { problem }
}

/// Calls `f(page, bytes)` for each page of `pages` (increasing), reading consecutive pages with
/// one call.
fn for_each_page(
    table: &PageTable,
    pages: &[usize],
    mut f: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<()> {
    let page = sys::page_size();
    let mut buf = Vec::new();
    let runs = pages.chunk_by(|p, q| p + 1 == *q);
    for run in runs.flat_map(|r| r.chunks(READ_RUN_PAGES)) {
        buf.resize(run.len() * page, 0);
        table.read(run[0] * page, &mut buf)?;
        for (&p, bytes) in run.iter().zip(buf.chunks_exact(page)) {
            f(p, bytes)?;
        }
    }
    Ok(())
}

/// Calls `f(page, bytes)` for each page of `table` whose bytes are not all zero.
fn for_each_nonzero(table: &PageTable, mut f: impl FnMut(usize, &[u8])) -> Result<()> {
    let mut pages = Vec::new();
    table.for_each_run(|first, len, _| pages.extend(first..first + len));
    for_each_page(table, &pages, |p, bytes| {
        if !format::is_zero(bytes) {
            f(p, bytes);
        }
        Ok(())
    })
}

/// Writes the metadata of `index`, the padding and the stored pages (read from `table`) to `w`.
fn write_out(
    w: &mut impl Write,
    snapshot: &Snapshot,
    index: &Index,
    base: Option<(ContentHash, &[u8])>,
) -> Result<SaveStats> {
    let page = sys::page_size();
    let name_len = base.map_or(0, |(_, n)| n.len());
    let stored = index.checksums.len();
    let data_offset = format::data_offset(page, name_len, index.entries.len(), stored);
    let meta = Meta::encode(
        page,
        snapshot.capacity(),
        data_offset,
        index.hash.finish(),
        base,
        &index.entries,
        &index.checksums,
    );
    let io = |source| {
        bad(FileProblem::Os {
            op: "write",
            source,
        })
    };
    w.write_all(&meta).map_err(io)?;
    w.write_all(&vec![0; data_offset as usize - meta.len()])
        .map_err(io)?;
    let pages: Vec<usize> = index
        .entries
        .iter()
        .filter(|e| e.stored)
        .map(|e| e.page)
        .collect();
    for_each_page(snapshot.table(), &pages, |_, bytes| {
        w.write_all(bytes).map_err(io)
    })?;
    w.flush().map_err(io)?;
    snapshot.set_known_hash(index.hash.finish());
    Ok(index.stats(data_offset + (stored * page) as u64))
}

impl Snapshot {
    /// The snapshot's content hash: the identity of its contents, equal in every process and on
    /// every machine (of the same page size) for equal contents, however the snapshot was made
    /// (see the [`persist`](crate::persist) module docs). A worker names the states and bases it
    /// holds by it.
    ///
    /// Known at once for a snapshot saved, opened, written as bytes or rebuilt from bytes;
    /// otherwise computed once from every non-zero page (`O(non-zero pages)`) and kept.
    ///
    /// # Errors
    /// For a snapshot [opened](Snapshot::open) from a file, a page that cannot be read or fails
    /// its checksum ([`Error::File`]); [`Error::Os`] if the page store cannot be read.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// a.write(0, b"state")?;
    /// let s = a.snapshot()?;
    /// a.write(0, b"other")?;
    /// a.write(0, b"state")?;
    /// assert_eq!(a.snapshot()?.hash()?, s.hash()?); // same contents, same hash
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn hash(&self) -> Result<ContentHash> {
        if let Some(hash) = self.known_hash() {
            return Ok(hash);
        }
        let mut sum = HashSum::empty(sys::page_size(), self.capacity());
        for_each_nonzero(self.table(), |p, bytes| sum.add(p, format::checksum(bytes)))?;
        self.set_known_hash(sum.finish());
        Ok(sum.finish())
    }

    /// Writes the whole snapshot to `w` in the snapshot file format (what [`save`](Snapshot::save)
    /// writes): [`Snapshot::from_bytes`] rebuilds it in any process, and the bytes written to a
    /// file open with [`Snapshot::open`]. Zero pages are not written.
    ///
    /// # Errors
    /// [`Error::Bytes`] with [`FileProblem::Os`] naming `write` if `w` fails (it may hold part of
    /// the bytes then); the errors of [`hash`](Snapshot::hash) when a page cannot be read.
    ///
    /// ```
    /// use cowarena::{Arena, Snapshot};
    /// let path = std::env::temp_dir().join(format!("cowarena-doc-full-{}", std::process::id()));
    /// let mut a = Arena::with_capacity(1 << 20)?;
    /// a.write(8192, b"streamed")?;
    /// let s = a.snapshot()?;
    /// let file = std::fs::File::create(&path).unwrap();
    /// let stats = s.full_to(std::io::BufWriter::new(file))?;
    /// assert_eq!(stats.pages_written, 1);
    /// let opened = Snapshot::open(&path)?;                // the file format
    /// assert_eq!(opened.content_hash(), Some(s.hash()?));
    /// # std::fs::remove_file(&path).unwrap();
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn full_to(&self, mut w: impl Write) -> Result<SaveStats> {
        let mut index = Index::new(HashSum::empty(sys::page_size(), self.capacity()));
        for_each_nonzero(self.table(), |p, bytes| index.record(p, bytes))?;
        write_out(&mut w, self, &index, None)
    }

    /// [`full_to`](Snapshot::full_to) into a new `Vec`.
    ///
    /// # Errors
    /// As [`hash`](Snapshot::hash).
    ///
    /// ```
    /// use cowarena::{Arena, Snapshot};
    /// let mut a = Arena::with_capacity(1 << 20)?;
    /// let p = a.alloc(42u64)?;
    /// a.set_root(p);
    /// let s = a.snapshot()?;
    /// let bytes = s.full_bytes()?;                  // the file format, in memory
    /// let t = Snapshot::from_bytes(&bytes)?;        // in this or any other process
    /// assert_eq!(*t.get(t.root::<u64>().unwrap()), 42);
    /// assert_eq!(t.hash()?, s.hash()?);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn full_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.full_to(&mut out)?;
        Ok(out)
    }

    /// Writes to `w` only what differs from `base` (any snapshot of the same capacity, saved or
    /// not), in the format of [`save_delta`](Snapshot::save_delta): pages whose bytes changed,
    /// pages that became zero as index entries without data, and the base's content hash.
    /// [`Snapshot::from_delta`] rebuilds the snapshot from these bytes and the base.
    ///
    /// The delta names its base by content hash and by the file name `<content hash>.snap`, so
    /// written to a file beside its base saved under that name, it also opens with
    /// [`Snapshot::open`].
    ///
    /// Costs `O(pages that differ)` when the snapshot descends from `base` (taken from an arena
    /// made with `base.to_arena()`, restored to a snapshot of `base`'s page store, or from the
    /// arena `base` was taken from); otherwise every non-zero page of either is compared.
    ///
    /// # Errors
    /// [`Error::Bytes`] with [`FileProblem::Capacity`] when the capacities differ, or
    /// [`FileProblem::Os`] naming `write` if `w` fails (it may hold part of the bytes then); the
    /// errors of [`hash`](Snapshot::hash) when a page cannot be read.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// a.write(0, b"base")?;
    /// let base = a.snapshot()?;
    /// a.write(4096 * 3, b"one page")?;
    /// a.write(0, &[0; 4])?;                             // page 0 is all zero again
    /// let mut out = Vec::new();
    /// let stats = a.snapshot()?.delta_to(&base, &mut out)?;
    /// assert_eq!((stats.pages_written, stats.pages_zeroed), (1, 1));
    /// assert_eq!(stats.file_bytes, out.len() as u64);
    /// assert_eq!(stats.content_hash, a.snapshot()?.hash()?);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn delta_to(&self, base: &Snapshot, mut w: impl Write) -> Result<SaveStats> {
        if base.capacity() != self.capacity() {
            return Err(bad(FileProblem::Capacity {
                capacity: self.capacity() as u64,
                reason: "the base snapshot has another capacity",
            }));
        }
        let base_hash = base.hash()?;
        let (new, old) = (self.table(), base.table());
        let mut index = Index::new(HashSum::of(base_hash));
        for_each_change(new, old, &delta_candidates(new, old), |p, a, b| {
            index.record_change(p, a, b);
            Ok(())
        })?;
        let name = format!("{base_hash}.snap");
        write_out(&mut w, self, &index, Some((base_hash, name.as_bytes())))
    }

    /// [`delta_to`](Snapshot::delta_to) into a new `Vec`.
    ///
    /// # Errors
    /// As [`delta_to`](Snapshot::delta_to).
    ///
    /// ```
    /// use cowarena::{Arena, Snapshot};
    /// let mut a = Arena::with_capacity(64 << 20)?;
    /// a.bytes_mut(0..32 << 20)?.fill(1);
    /// let base = a.snapshot()?;                       // both sides hold this one
    /// a.write(4096, b"changed")?;
    /// let delta = a.snapshot()?.delta_bytes(&base)?;
    /// assert!(delta.len() <= 2 * cowarena::page_size()); // one changed page, not 32 MiB
    ///
    /// let s = Snapshot::from_delta(&delta, &base)?;    // on the receiving side
    /// let mut buf = [0u8; 7];
    /// s.read(4096, &mut buf)?;
    /// assert_eq!(&buf, b"changed");
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn delta_bytes(&self, base: &Snapshot) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.delta_to(base, &mut out)?;
        Ok(out)
    }

    /// Rebuilds a snapshot from the bytes of a whole one ([`full_bytes`](Snapshot::full_bytes),
    /// or a file written by [`save`](Snapshot::save)), in a page store of its own. Everything is
    /// checked first, as [`open`](Snapshot::open) checks a file, and every page against its
    /// checksum; the pages are copied, so the snapshot does not borrow `bytes`.
    ///
    /// # Errors
    /// [`Error::Bytes`] with the [`FileProblem`]: not snapshot bytes, another version, page size
    /// or capacity, truncated or trailing bytes, damaged metadata or index, a content hash that
    /// does not match, a page that fails its checksum; [`FileProblem::NeedsBase`] for a delta.
    /// [`Error::Os`] if the page store cannot take the pages.
    ///
    /// ```
    /// use cowarena::{Arena, Error, FileProblem, Snapshot};
    /// let mut a = Arena::with_capacity(1 << 20)?;
    /// a.write(0, b"sent")?;
    /// let mut bytes = a.snapshot()?.full_bytes()?;
    /// assert_eq!(&Snapshot::from_bytes(&bytes)?.as_bytes()[..4], b"sent");
    /// let last = bytes.len() - 1;
    /// bytes[last] ^= 1;                                 // damaged on the way
    /// assert!(matches!(
    ///     Snapshot::from_bytes(&bytes),
    ///     Err(Error::Bytes { problem: FileProblem::PageChecksum { page: 0, .. } })
    /// ));
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> Result<Snapshot> {
        decode(bytes, None)
    }

    /// Rebuilds a snapshot from a delta ([`delta_bytes`](Snapshot::delta_bytes), or a file written
    /// by [`save_delta`](Snapshot::save_delta)) and the base it was made against, given in memory.
    /// The snapshot shares `base`'s page store and unchanged pages: an arena made with
    /// `base.to_arena()` can [restore](crate::Arena::restore) it. Costs `O(pages in the delta)`.
    /// Everything is checked as [`from_bytes`](Snapshot::from_bytes) checks it, and the base's
    /// content hash against the one the delta names.
    ///
    /// # Errors
    /// Those of [`from_bytes`](Snapshot::from_bytes), and [`Error::Bytes`] with
    /// [`FileProblem::BaseMismatch`] when `base` is not the delta's base,
    /// [`FileProblem::Capacity`] when its capacity differs, [`FileProblem::NotADelta`] for the
    /// bytes of a whole snapshot.
    ///
    /// ```
    /// use cowarena::{Arena, Error, FileProblem, Snapshot};
    /// let mut a = Arena::with_capacity(1 << 20)?;
    /// let base = a.snapshot()?;
    /// a.write(0, b"next")?;
    /// let next = a.snapshot()?;
    /// let delta = next.delta_bytes(&base)?;
    /// let mut worker = base.to_arena()?;                // holds the base
    /// let s = Snapshot::from_delta(&delta, &base)?;
    /// worker.restore(&s)?;                              // O(pages that differ)
    /// assert_eq!(&worker.as_bytes()[..4], b"next");
    /// assert!(matches!(
    ///     Snapshot::from_delta(&delta, &next),          // not its base
    ///     Err(Error::Bytes { problem: FileProblem::BaseMismatch { .. } })
    /// ));
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn from_delta(bytes: &[u8], base: &Snapshot) -> Result<Snapshot> {
        decode(bytes, Some(base))
    }
}

/// What snapshot bytes say about themselves: read by [`inspect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BytesInfo {
    /// The content hash of the snapshot the bytes hold.
    pub content_hash: ContentHash,
    /// For a delta, the content hash of the base it needs.
    pub base: Option<ContentHash>,
    /// The snapshot's capacity in bytes.
    pub capacity: usize,
    /// Pages whose bytes are stored.
    pub pages_stored: usize,
}

/// Reads the header and index of snapshot bytes (made by [`Snapshot::full_bytes`],
/// [`Snapshot::delta_bytes`], or read from a snapshot file) and says which snapshot they hold
/// and which base they need, so that a receiver can find or fetch that base first. Checks the
/// header and the metadata checksum (`O(index)`); the pages are checked when the snapshot is
/// rebuilt.
///
/// # Errors
/// [`Error::Bytes`] with the [`FileProblem`] of a damaged or truncated header or index.
///
/// ```
/// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
/// let base = a.snapshot()?;
/// a.write(0, b"new")?;
/// let delta = a.snapshot()?.delta_bytes(&base)?;
/// let info = cowarena::persist::inspect(&delta)?;
/// assert_eq!(info.base, Some(base.hash()?));
/// assert_eq!(info.pages_stored, 1);
/// # Ok::<(), cowarena::Error>(())
/// ```
pub fn inspect(bytes: &[u8]) -> Result<BytesInfo> {
    let meta = read_meta(bytes)?;
    Ok(BytesInfo {
        content_hash: meta.header.content_hash,
        base: meta.header.base,
        capacity: meta.header.capacity,
        pages_stored: meta.header.stored,
    })
}

/// Reads and checks the header and metadata at the start of `bytes` (which are all of the
/// snapshot's bytes).
fn read_meta(bytes: &[u8]) -> Result<Meta> {
    let page = sys::page_size();
    let head = &bytes[..bytes.len().min(format::HEADER_BYTES)];
    let header = Header::decode(head, bytes.len() as u64, page).map_err(bad)?;
    let meta = &bytes[..header.meta_len as usize];
    Meta::decode(header, meta, page).map_err(bad)
}

fn decode(bytes: &[u8], base: Option<&Snapshot>) -> Result<Snapshot> {
    let page = sys::page_size();
    let meta = read_meta(bytes)?;
    let h = &meta.header;
    let (mut sum, base) = match (h.base, base) {
        (None, None) => (HashSum::empty(page, h.capacity), None),
        (Some(expected), Some(base)) => {
            if base.capacity() != h.capacity {
                return Err(bad(FileProblem::Capacity {
                    capacity: h.capacity as u64,
                    reason: "the base snapshot has another capacity",
                }));
            }
            let found = base.hash()?;
            if found != expected {
                return Err(bad(FileProblem::BaseMismatch { expected, found }));
            }
            (HashSum::of(found), Some(base))
        }
        (Some(expected), None) => return Err(bad(FileProblem::NeedsBase { base: expected })),
        (None, Some(_)) => return Err(bad(FileProblem::NotADelta)),
    };
    // The content hash the index gives: the base's, less the pages the delta replaces, plus
    // the stored pages.
    if let Some(base) = base {
        let listed: Vec<usize> = meta.entries.iter().map(|e| e.page).collect();
        for_each_page(base.table(), &listed, |p, old| {
            if !format::is_zero(old) {
                sum.remove(p, format::checksum(old));
            }
            Ok(())
        })?;
    }
    let stored: Vec<usize> = meta
        .entries
        .iter()
        .filter(|e| e.stored)
        .map(|e| e.page)
        .collect();
    for (&p, &c) in stored.iter().zip(&meta.checksums) {
        sum.add(p, c);
    }
    if sum.finish() != h.content_hash {
        return Err(bad(FileProblem::ContentHash {
            stored: h.content_hash,
            computed: sum.finish(),
        }));
    }
    let data = &bytes[h.data_offset as usize..];
    for ((&p, &c), b) in stored
        .iter()
        .zip(&meta.checksums)
        .zip(data.chunks_exact(page))
    {
        if format::checksum(b) != c {
            return Err(bad(FileProblem::PageChecksum {
                page: p,
                offset: p * page,
            }));
        }
    }
    // As for a file: objects in the bytes carry the stamps of the process that made them.
    crate::alloc::stamps_above(h.stamp_ceiling);
    let (mut table, options) = match base {
        Some(b) => (b.table().clone(), b.options().clone()),
        None => {
            let store = Store::new(page, None);
            (PageTable::new(h.capacity / page, store), Options::default())
        }
    };
    let store = Arc::clone(table.store());
    for (k, block) in stored.chunks(store.max_run_pages()).enumerate() {
        let first = k * store.max_run_pages();
        let mut bufs = Vec::new();
        let mut at = first;
        for run in block.chunk_by(|p, q| p + 1 == *q) {
            bufs.push(&data[at * page..(at + run.len()) * page]);
            at += run.len();
        }
        let frozen = store.freeze(&bufs, crate::REMAP_MIN_RUN)?;
        let updates: Vec<(usize, SlotId)> = block
            .iter()
            .copied()
            .zip(frozen.slots().iter().copied())
            .collect();
        table.set_many(&updates);
    }
    let zeroed: Vec<(usize, SlotId)> = meta
        .entries
        .iter()
        .filter(|e| !e.stored)
        .map(|e| (e.page, SlotId::ZERO))
        .collect();
    table.set_many(&zeroed);
    let snapshot = Snapshot::new(table, options);
    snapshot.set_known_hash(h.content_hash);
    Ok(snapshot)
}
