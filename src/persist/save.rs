//! Writing snapshot files: [`Snapshot::save`] stores every non-zero page,
//! [`Snapshot::save_delta`] only the pages that differ from a saved base; both build the file's
//! index and content hash as they go.

use super::format::{self, Entry, HashSum, Meta};
use super::open::open_base;
use super::write::{self, NewFile};
use super::{bad_file, in_file, ContentHash, SaveStats};
use crate::error::{FileProblem, Result};
use crate::page_table::PageTable;
use crate::snapshot::{SavedAs, Snapshot};
use crate::sys;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

/// Pages a delta reads and compares per call at most, so that its buffers stay small.
const COMPARE_RUN_PAGES: usize = 256;

/// The pages that are non-zero in `table`, in increasing order.
fn nonzero_pages(table: &PageTable) -> Vec<usize> {
    let mut pages = Vec::new();
    table.for_each_run(|first, len, _| pages.extend(first..first + len));
    pages
}

/// The pages whose bytes may differ between `new` and `old`, in increasing order: those whose
/// slots differ when the two share a page store (their diff skips shared subtrees, so this is
/// `O(differing)`), otherwise every page that is non-zero in either.
pub(super) fn delta_candidates(new: &PageTable, old: &PageTable) -> Vec<usize> {
    if Arc::ptr_eq(new.store(), old.store()) {
        let mut pages = Vec::new();
        new.diff(old, |p| pages.push(p));
        pages
    } else {
        let mut pages = nonzero_pages(new);
        pages.extend(nonzero_pages(old));
        pages.sort_unstable();
        pages.dedup();
        pages
    }
}

/// Calls `f(page, new bytes, old bytes)` for each page of `pages` (increasing) whose bytes differ
/// between the two tables. Consecutive pages are read with one call per table, so that pages of
/// a file not yet brought in cost one `pread` per run rather than one per page.
pub(super) fn for_each_change(
    new: &PageTable,
    old: &PageTable,
    pages: &[usize],
    mut f: impl FnMut(usize, &[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let page = sys::page_size();
    let (mut a_run, mut b_run) = (Vec::new(), Vec::new());
    let runs = pages.chunk_by(|p, q| p + 1 == *q);
    for run in runs.flat_map(|r| r.chunks(COMPARE_RUN_PAGES)) {
        a_run.resize(run.len() * page, 0);
        b_run.resize(run.len() * page, 0);
        new.read(run[0] * page, &mut a_run)?;
        old.read(run[0] * page, &mut b_run)?;
        let pairs = a_run.chunks_exact(page).zip(b_run.chunks_exact(page));
        for (&p, (a, b)) in run.iter().zip(pairs) {
            if a != b {
                f(p, a, b)?;
            }
        }
    }
    Ok(())
}

/// The parts of a file being written that become its metadata.
pub(super) struct Index {
    pub(super) entries: Vec<Entry>,
    pub(super) checksums: Vec<u64>,
    pub(super) hash: HashSum,
}

impl Index {
    pub(super) fn new(hash: HashSum) -> Self {
        Index {
            entries: Vec::new(),
            checksums: Vec::new(),
            hash,
        }
    }

    /// Records page `p` with `bytes` (not all zero) as stored.
    pub(super) fn record(&mut self, p: usize, bytes: &[u8]) {
        let sum = format::checksum(bytes);
        self.entries.push(Entry {
            page: p,
            stored: true,
        });
        self.checksums.push(sum);
        self.hash.add(p, sum);
    }

    /// Records a page of a delta whose bytes changed from `old` to `new`.
    pub(super) fn record_change(&mut self, p: usize, new: &[u8], old: &[u8]) {
        if !format::is_zero(old) {
            self.hash.remove(p, format::checksum(old));
        }
        if format::is_zero(new) {
            self.entries.push(Entry {
                page: p,
                stored: false,
            });
        } else {
            self.record(p, new);
        }
    }

    /// Records page `p` with `bytes` (not all zero) and writes them.
    fn store(&mut self, file: &mut NewFile, p: usize, bytes: &[u8]) -> Result<()> {
        self.record(p, bytes);
        file.push(bytes)
    }

    /// What a file of this index holds.
    pub(super) fn stats(&self, file_bytes: u64) -> SaveStats {
        SaveStats {
            pages_written: self.checksums.len(),
            pages_zeroed: self.entries.len() - self.checksums.len(),
            file_bytes,
            content_hash: self.hash.finish(),
        }
    }

    /// Writes the metadata and gives the file its final name.
    fn commit(
        self,
        file: NewFile,
        snapshot: &Snapshot,
        data_offset: u64,
        base: Option<(ContentHash, &[u8])>,
    ) -> Result<SaveStats> {
        let hash = self.hash.finish();
        let meta = Meta::encode(
            sys::page_size(),
            snapshot.capacity(),
            data_offset,
            hash,
            base,
            &self.entries,
            &self.checksums,
        );
        let (path, file_bytes) = file.commit(&meta)?;
        snapshot.set_saved_as(SavedAs { hash, path });
        Ok(self.stats(file_bytes))
    }
}

impl Snapshot {
    /// Writes the snapshot to a new file at `path` (replacing any file there, atomically) that
    /// any process can [`open`](Snapshot::open). Zero pages are not stored. The file is synced
    /// before it takes its name: after an error or a crash, `path` holds the old file or none.
    ///
    /// Pointers ([`Ptr`](crate::Ptr)) saved inside stay valid in the reopened snapshot, and stay
    /// *checked*: the file records a bound above its objects' stamps, and a process that opens
    /// it hands out only higher ones, so a stale `Ptr` saved in the file never names an object
    /// allocated after the reopening. See the [module docs](crate::persist) for the format.
    ///
    /// # Errors
    /// [`Error::File`](crate::Error::File) naming `path` and the problem: the system call that
    /// failed (`realpath`, `open`, `pwrite`, `fsync`, `rename`), or for a snapshot opened from a
    /// file, one of its pages that fails its checksum. On `Err`, `path` holds the old file or
    /// none and no temporary file is left, with one exception: when the last step, the `fsync`
    /// of the directory after the rename, fails, the complete new file is in place, but its name
    /// may not survive a crash.
    ///
    /// ```
    /// use cowarena::{Arena, Snapshot};
    /// let dir = std::env::temp_dir().join(format!("cowarena-doc-save-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let mut a = Arena::with_capacity(1 << 20)?;
    /// let p = a.alloc(42u64)?;
    /// a.set_root(p);
    /// let stats = a.snapshot()?.save(dir.join("state.snap"))?;
    /// assert!(stats.pages_written >= 1);
    ///
    /// let s = Snapshot::open(dir.join("state.snap"))?;   // reads the index, no page yet
    /// assert_eq!(*s.get(s.root::<u64>().unwrap()), 42);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn save(&self, path: impl AsRef<Path>) -> Result<SaveStats> {
        let path = path.as_ref();
        let page = sys::page_size();
        let table = self.table();
        let mut upper = 0;
        table.for_each_run(|_, len, _| upper += len);
        let data_offset = format::data_offset(page, 0, upper, upper);
        let mut file = NewFile::create(path, data_offset)?;
        let mut index = Index::new(HashSum::empty(page, self.capacity()));
        let mut result = Ok(());
        let mut bytes = Vec::new();
        table.for_each_run(|first, len, _| {
            if result.is_err() {
                return;
            }
            bytes.resize(len * page, 0);
            result = table.read(first * page, &mut bytes).and_then(|()| {
                for (k, b) in bytes.chunks_exact(page).enumerate() {
                    if !format::is_zero(b) {
                        index.store(&mut file, first + k, b)?;
                    }
                }
                Ok(())
            });
        });
        result?;
        index.commit(file, self, data_offset, None)
    }

    /// Writes to `path` only what differs from `base`, which must have been saved to or opened
    /// from a file in the directory the delta goes to. The delta names its base by content hash
    /// and by the base's file name; [`open`](Snapshot::open) follows the chain. Before anything
    /// is written, the base file is checked to still hold `base` (its content hash), so that the
    /// delta can be opened again.
    ///
    /// Costs `O(pages that differ)` when the snapshot descends from `base` (it was taken from an
    /// arena made with `base.to_arena()`, or from the arena `base` was taken from); otherwise
    /// every non-zero page of either is compared.
    ///
    /// # Errors
    /// [`Error::File`](crate::Error::File) with [`FileProblem::BaseNotSaved`],
    /// [`FileProblem::Capacity`] when the capacities differ, [`FileProblem::OverwritesBase`] when
    /// `path` is the base's own file, [`FileProblem::BaseNotBeside`] when the base's file is in
    /// another directory, [`FileProblem::MissingBase`] or [`FileProblem::WrongBase`] when the
    /// base's file is gone or now holds another snapshot (nothing is written then), or any error
    /// of [`save`](Snapshot::save), with the same guarantee for `path`.
    ///
    /// ```
    /// use cowarena::{Arena, Snapshot};
    /// let dir = std::env::temp_dir().join(format!("cowarena-doc-delta-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let mut a = Arena::with_capacity(64 << 20)?;
    /// a.bytes_mut(0..32 << 20)?.fill(1);
    /// let base = a.snapshot()?;
    /// base.save(dir.join("base.snap"))?;
    /// a.write(4096, b"changed")?;
    /// let stats = a.snapshot()?.save_delta(dir.join("next.snap"), &base)?;
    /// assert_eq!(stats.pages_written, 1);              // not 8192
    ///
    /// let s = Snapshot::open(dir.join("next.snap"))?;  // base + delta
    /// let mut buf = [0u8; 7];
    /// s.read(4096, &mut buf)?;
    /// assert_eq!(&buf, b"changed");
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn save_delta(&self, path: impl AsRef<Path>, base: &Snapshot) -> Result<SaveStats> {
        let path = path.as_ref();
        let page = sys::page_size();
        let saved = base
            .saved_as()
            .ok_or_else(|| bad_file(path, FileProblem::BaseNotSaved))?;
        if base.capacity() != self.capacity() {
            return Err(bad_file(
                path,
                FileProblem::Capacity {
                    capacity: self.capacity() as u64,
                    reason: "the base snapshot has another capacity",
                },
            ));
        }
        let (new, old) = (self.table(), base.table());
        let pages = delta_candidates(new, old);
        // The name is computed before anything is written, from the directory the delta goes
        // to; a temporary file is made there only once the base is known to be elsewhere.
        let dir = sys::file::canonicalize(write::dir_of(path)).map_err(in_file(path))?;
        if path.file_name().is_some_and(|n| dir.join(n) == saved.path) {
            return Err(bad_file(path, FileProblem::OverwritesBase));
        }
        let (Some(name), true) = (saved.path.file_name(), saved.path.parent() == Some(&*dir))
        else {
            return Err(bad_file(
                path,
                FileProblem::BaseNotBeside {
                    base: saved.path.clone(),
                },
            ));
        };
        // The base file must still hold the base: a delta against a replaced file could never
        // be opened again.
        open_base(path, Path::new(name), saved.hash)?;
        let name = name.as_bytes();
        let data_offset = format::data_offset(page, name.len(), pages.len(), pages.len());
        let mut file = NewFile::create(path, data_offset)?;
        debug_assert_eq!(file.dir(), dir);
        let mut index = Index::new(HashSum::of(saved.hash));
        for_each_change(new, old, &pages, |p, a, b| {
            index.record_change(p, a, b);
            if format::is_zero(a) {
                Ok(())
            } else {
                file.push(a)
            }
        })?;
        index.commit(file, self, data_offset, Some((saved.hash, name)))
    }
}
