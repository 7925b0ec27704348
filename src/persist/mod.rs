//! Snapshots in files: [`Snapshot::save`], [`Snapshot::save_delta`], [`Snapshot::open`],
//! [`Arena::open_snapshot`], [`Arena::from_file`] and [`Arena::from_bytes`].
//!
//! # The file
//!
//! A snapshot file is self-describing: magic number, format version, page size, capacity, a page
//! index, one checksum (xxh3-64) per stored page, a checksum over all of that, then the stored
//! pages, page-aligned. Zero pages are not stored. A delta stores only the pages that differ
//! from its base (pages that became zero are index entries without data) and names its base
//! twice: by the base's file name, relative to the delta's directory, and by the base's *content
//! hash*. Stored pages sit in index order, so an entry needs no data offset of its own: an index
//! that passes its checks can only address the file's own pages, and there is one field fewer
//! to damage.
//!
//! ```text
//! offset 0    header, 128 bytes, little-endian:
//!               0  magic "\x89CWSNAP\n"      8  version (u32)     12  flags (u32; bit 0: delta)
//!              16  page size (u64)           24  capacity (u64)   32  index entries (u64)
//!              40  stored pages (u64)        48  data offset (u64)
//!              56  content hash (u128)       72  base content hash (u128; zero unless delta)
//!              88  base name length (u64)    96  stamp ceiling (u64)  104  reserved, zero
//!      128    base name: the base file's path relative to this file's directory (deltas only)
//!             page index: one u64 per entry, the page number, increasing; bit 63 set means
//!               "this page is zero" (deltas only); the k-th entry without it is stored page k
//!             checksums: one u64 (xxh3-64 of the page's bytes) per stored page
//!             metadata checksum: xxh3-64 of every byte above
//!             zero padding up to the data offset, a multiple of the page size
//! data offset stored pages, in index order, one page each
//! ```
//!
//! The file's length is exactly `data offset + stored pages * page size`: a shorter file is
//! truncated, a longer one is refused too.
//!
//! The content hash is the identity of a snapshot's contents, not of a file: a wrapping sum of
//! one 128-bit term for the geometry (page size, capacity) and one per non-zero page,
//! `xxh3-128(page number, xxh3-64(page bytes))`. Two files with the same contents have the same
//! hash however they were made (saved whole, or as any chain of deltas), and a delta's hash is
//! its base's minus the terms of the pages it replaces plus the terms of their new bytes: saving
//! a delta costs `O(pages that differ)`, like everything else the persistent page tables do.
//! `open` recomputes each file's hash from its index (`O(index)`, no page is read) and checks it
//! against the header and against what the next delta in the chain expects.
//!
//! # Saving
//!
//! `save` walks the snapshot's runs of frozen pages, skips zero pages, checksums the others and
//! writes them through a 1 MiB staging buffer. `save_delta(path, base)` asks the page tables which
//! pages differ (their diff skips shared subtrees, so this is `O(differing)` when the snapshot
//! descends from the base, for example from an arena made with `base.to_arena()`), compares those
//! pages' bytes and stores only the changed ones. When the two share no page store (no common
//! history), every non-zero page of either is compared instead. The base must have been saved or
//! opened: a snapshot remembers the file it was last saved to or opened from.
//!
//! The file is written under a temporary name in the target directory, `fsync`ed, renamed over
//! the final name, and the directory is `fsync`ed. A failed save removes the temporary file; a
//! process killed in the middle leaves the final name as it was (the old file or none) and at
//! most a `.NAME.PID-N.cowarena-tmp` file beside it.
//!
//! # Opening, and why the user's file is never mapped
//!
//! `open` reads and checks the header and index of each file of the delta chain (`O(index)`)
//! and builds one page table: the base's pages, overridden by each delta's. No page data is read.
//! Each file becomes a *file chunk* of the page store: a sparse memory file with one slot per
//! stored page, filled on first use. Before any slot is read (`read`) or mapped (`as_bytes`,
//! typed access, `to_arena`, `restore`), the store reads the missing pages of that run from the
//! file with `pread`, checks each against its checksum and writes it into the chunk; a bitmap
//! remembers which slots are filled. So `read` of 64 pages of a 1 GiB snapshot reads 64 pages;
//! mapping a view or an arena reads what it maps, once.
//!
//! The alternative, Firecracker's, maps the file `MAP_PRIVATE` and lets pages fault in. It
//! would skip one copy, but a mapped file that another process truncates raises SIGBUS on the
//! next access to a page past the new end, and a page changed on disk would be read unchecked.
//! Copying the whole file into sealed memory at `open` would be safe but costs `O(data)`. The
//! lazy file chunk is safe and pays per page touched: a truncated, rewritten or bit-flipped
//! file is an [`Error::File`] at the first call that needs the damaged page, never a SIGBUS
//! and never unchecked bytes. What it costs is measured by `benches/persist.rs` (see
//! BENCHMARKS.md).
//!
//! # What it costs (measured here, 1 GiB snapshot of 262,144 written pages, warm page cache)
//!
//! `cargo bench --bench persist`, medians of two runs on a loaded machine (load average 2-4):
//!
//! | operation | run A | run B |
//! |---|---|---|
//! | `open` + first `read` of 64 random pages | 27.2 ms | 48.9 ms |
//! | `open` of a 64-page delta on it + 64 reads | 33.2 ms | 26.1 ms |
//! | baseline: `pread` of the whole file into a buffer | 244 ms | 268 ms |
//! | baseline: `fork()` of a process holding a 1 GiB resident heap, child writes 64 pages | 60.1 ms | 62.6 ms |
//! | `open` + `to_arena` (every page read, checked and mapped) | 756 ms | 764 ms |
//! | `save` of the whole snapshot (with `fsync`) | 1.53 s | 2.23 s |
//! | `save_delta` of 64 changed pages (with `fsync`) | 5.3 ms | 6.8 ms |
//!
//! Reopening and reading 64 pages costs 5-9x less than reading the file and 1.3-2.2x less than
//! `fork()`; on a quiet machine it took 20 ms. `open` is `O(index)`: about 75 ns per stored page
//! (reading and checking the 16 bytes of index and checksum a page takes, recomputing the content
//! hash, and building the page table bottom-up in one pass, which took it from 40 ms to 20 ms
//! against one `set` per page). The 64 pages then cost about 15 us each (a `pread`, a checksum, a
//! `pwrite` into the chunk's memory).
//!
//! Sharing page data with the store when saving (`copy_file_range` from a `backing_dir` chunk, or
//! a reflink): measured on this machine's ext4, copying 256 MiB between two files took 100-115 ms
//! with `copy_file_range` against 120-135 ms with a mapping and `pwrite` (what `save` does), and
//! the `fsync` that follows took 145 ms either way: ext4 copies the data in both cases, so the
//! whole save would gain about 5%. Reflinks (`FICLONE`) would share the blocks on btrfs or XFS,
//! but need the page data to sit in the file at the same block offsets as in the chunk, which
//! the store does not arrange. Neither is implemented: the gain here does not pay for a second
//! write path.
//!
//! # Arenas from arbitrary bytes
//!
//! [`Arena::from_bytes`] and [`Arena::from_file`] freeze the bytes' non-zero pages straight into
//! the page store, a page store chunk at a time, and map the arena from it: the arena starts
//! with no dirty page, so its first snapshot costs nothing, and its pages are shared with every
//! snapshot and arena made from it. An arbitrary file has no checksums, so it is copied once
//! (read with `pread`) rather than mapped, for the SIGBUS reason above.
//!
//! # Beyond one machine
//!
//! An exploration that outgrows one machine (a symbolic executor's or a fuzzer's corpus of
//! states, a model checker's frontier) uses these files as its unit of exchange:
//!
//! - **States are content-addressed delta files in shared storage.** A worker saves a state as a
//!   delta against the state it started from and names the file by its content hash
//!   ([`SaveStats::content_hash`]), e.g. `states/<hash>.snap`: the same state reached twice gets
//!   the same name, so deduplication is a file-exists check, and a file's name says what it holds.
//!   Deltas name their base by a relative path, so a directory of states can be copied or synced
//!   as a whole (rsync, object-store sync, a shared file system such as NFS or CephFS).
//! - **Workers open states lazily.** `Snapshot::open` costs `O(index)`; a worker that takes a
//!   state reads only the pages it touches, and each page is checked on arrival, so a file that a
//!   sync is still writing, or a damaged copy, is an error for that state, not a crash.
//! - **An existing engine carries the work.** A work queue (Redis, RabbitMQ, SQS) or a cluster
//!   scheduler (Slurm, Kubernetes jobs, Ray) carries only small messages: the content hash (or
//!   path) of the state to explore and the branch decision to take; results come back the same
//!   way as new state hashes. cowarena supplies no transport, no scheduler and no membership: the
//!   file format is the contract, and anything that moves files and short messages moves states.
//!   Deep chains are periodically rebased by saving a state whole (`save`), which keeps opening
//!   cheap and lets old deltas be garbage-collected by whatever owns the storage.

mod format;
mod lazy;
mod write;

pub(crate) use lazy::LazyPages;

use crate::arena::{checked_capacity, Arena};
use crate::error::{Error, FileProblem, Result};
use crate::page_table::PageTable;
pub use crate::snapshot::ContentHash;
use crate::snapshot::{Options, SavedAs, Snapshot};
use crate::store::{SlotId, Store};
use crate::sys::{self, file::DataFile};
use format::{Entry, HashSum, Header, Meta};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use write::NewFile;

/// Pages `save_delta` reads and compares per call at most, so that its buffers stay small.
const COMPARE_RUN_PAGES: usize = 256;

/// Files a delta chain may have at most, so that files naming each other in a cycle end in an
/// error.
pub const MAX_CHAIN: usize = 256;

/// What a [`Snapshot::save`] or [`Snapshot::save_delta`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SaveStats {
    /// Pages whose bytes the file holds.
    pub pages_written: usize,
    /// For a delta: pages recorded as having become zero.
    pub pages_zeroed: usize,
    /// The file's length in bytes.
    pub file_bytes: u64,
    /// The saved snapshot's content hash.
    pub content_hash: ContentHash,
}

/// Turns a system call's error into one that names `path`.
pub(crate) fn in_file(path: &Path) -> impl Fn(Error) -> Error + '_ {
    move |e| match e {
        Error::Os { op, source } => bad_file(path, FileProblem::Os { op, source }),
        other => other,
    }
}

pub(crate) fn bad_file(path: &Path, problem: FileProblem) -> Error {
    Error::File {
        path: path.to_path_buf(),
        problem,
    }
}

/// `target` as a path relative to the directory `dir` (both absolute).
fn relative(dir: &Path, target: &Path) -> PathBuf {
    let d: Vec<Component<'_>> = dir.components().collect();
    let t: Vec<Component<'_>> = target.components().collect();
    let common = d.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..d.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

/// The pages that are non-zero in `table`, in increasing order.
fn nonzero_pages(table: &PageTable) -> Vec<usize> {
    let mut pages = Vec::new();
    table.for_each_run(|first, len, _| pages.extend(first..first + len));
    pages
}

/// The parts of a file being written that become its metadata.
struct Index {
    entries: Vec<Entry>,
    checksums: Vec<u64>,
    hash: HashSum,
}

impl Index {
    fn new(hash: HashSum) -> Self {
        Index {
            entries: Vec::new(),
            checksums: Vec::new(),
            hash,
        }
    }

    /// Records page `p` with `bytes` (not all zero) and writes them.
    fn store(&mut self, file: &mut NewFile, p: usize, bytes: &[u8]) -> Result<()> {
        let sum = format::checksum(bytes);
        self.entries.push(Entry {
            page: p,
            stored: true,
        });
        self.checksums.push(sum);
        self.hash.add(p, sum);
        file.push(bytes)
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
        Ok(SaveStats {
            pages_written: self.checksums.len(),
            pages_zeroed: self.entries.len() - self.checksums.len(),
            file_bytes,
            content_hash: hash,
        })
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
    /// [`Error::File`] naming `path` and the problem: the system call that failed (`realpath`,
    /// `open`, `pwrite`, `fsync`, `rename`), or for a snapshot opened from a file, one of its
    /// pages that fails its checksum. On `Err`, `path` holds the old file or none and no
    /// temporary file is left, with one exception: when the last step, the `fsync` of the
    /// directory after the rename, fails, the complete new file is in place, but its name may
    /// not survive a crash.
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
    /// from a file. The delta names its base by content hash and by the base file's path
    /// relative to the delta's directory; [`open`](Snapshot::open) follows the chain.
    ///
    /// Costs `O(pages that differ)` when the snapshot descends from `base` (it was taken from an
    /// arena made with `base.to_arena()`, or from the arena `base` was taken from); otherwise
    /// every non-zero page of either is compared.
    ///
    /// # Errors
    /// [`Error::File`] with [`FileProblem::BaseNotSaved`], [`FileProblem::Capacity`] when the
    /// capacities differ, [`FileProblem::OverwritesBase`] when `path` is the base's own file, or
    /// any error of [`save`](Snapshot::save), with the same guarantee for `path`.
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
        let pages = if Arc::ptr_eq(new.store(), old.store()) {
            let mut pages = Vec::new();
            new.diff(old, |p| pages.push(p));
            pages
        } else {
            let mut pages = nonzero_pages(new);
            pages.extend(nonzero_pages(old));
            pages.sort_unstable();
            pages.dedup();
            pages
        };
        // The name is computed before anything is written, from the directory the delta goes
        // to; a temporary file is made there only once the base is known to be elsewhere.
        let dir = sys::file::canonicalize(write::dir_of(path)).map_err(in_file(path))?;
        if path.file_name().is_some_and(|n| dir.join(n) == saved.path) {
            return Err(bad_file(path, FileProblem::OverwritesBase));
        }
        let name = relative(&dir, &saved.path);
        let name = name.as_os_str().as_bytes();
        let data_offset = format::data_offset(page, name.len(), pages.len(), pages.len());
        let mut file = NewFile::create(path, data_offset)?;
        debug_assert_eq!(file.dir(), dir);
        let mut index = Index::new(HashSum::of(saved.hash));
        let (mut a_run, mut b_run) = (Vec::new(), Vec::new());
        // Consecutive pages are read with one call per table, so that pages of a file not yet
        // brought in cost one `pread` per run rather than one per page.
        let runs = pages.chunk_by(|p, q| p + 1 == *q);
        for run in runs.flat_map(|r| r.chunks(COMPARE_RUN_PAGES)) {
            a_run.resize(run.len() * page, 0);
            b_run.resize(run.len() * page, 0);
            new.read(run[0] * page, &mut a_run)?;
            old.read(run[0] * page, &mut b_run)?;
            let pairs = a_run.chunks_exact(page).zip(b_run.chunks_exact(page));
            for (&p, (a, b)) in run.iter().zip(pairs) {
                if a == b {
                    continue;
                }
                if !format::is_zero(b) {
                    index.hash.remove(p, format::checksum(b));
                }
                if format::is_zero(a) {
                    index.entries.push(Entry {
                        page: p,
                        stored: false,
                    });
                } else {
                    index.store(&mut file, p, a)?;
                }
            }
        }
        index.commit(file, self, data_offset, Some((saved.hash, name)))
    }

    /// Opens a snapshot saved by [`save`](Snapshot::save) or [`save_delta`](Snapshot::save_delta)
    /// (following the delta chain), in this or any other process. Costs `O(index)`: pages are
    /// read from the file, and checked, when first read or mapped.
    ///
    /// The snapshot has its own page store: [`to_arena`](Snapshot::to_arena) makes an arena
    /// that it can be [restored](Arena::restore) into; to restore it into an existing arena,
    /// open it with [`Arena::open_snapshot`] instead.
    ///
    /// Errors: [`Error::File`] naming the file and a [`FileProblem`]: not a snapshot, another
    /// version, page size or capacity, truncated, damaged metadata, a missing or wrong base.
    /// A damaged page is an error at the first call that reads or maps it.
    pub fn open(path: impl AsRef<Path>) -> Result<Snapshot> {
        let page = sys::page_size();
        open_in(path.as_ref(), Store::new(page, None), Options::default())
    }

    /// The content hash of the file this snapshot was last saved to or opened from.
    pub fn content_hash(&self) -> Option<ContentHash> {
        self.saved_as().map(|s| s.hash)
    }
}

/// One file of a delta chain, checked.
struct OpenedFile {
    path: PathBuf,
    file: DataFile,
    meta: Meta,
}

fn read_file(path: &Path) -> Result<OpenedFile> {
    let page = sys::page_size();
    let at = in_file(path);
    let file = DataFile::open_read(path).map_err(&at)?;
    let len = file.len().map_err(&at)?;
    let mut head = vec![0u8; format::HEADER_BYTES];
    let got = file.read_at(&mut head, 0).map_err(&at)?;
    head.truncate(got);
    let header = Header::decode(&head, len, page).map_err(|p| bad_file(path, p))?;
    let mut meta = vec![0u8; header.meta_len as usize];
    if file.read_at(&mut meta, 0).map_err(&at)? < meta.len() {
        return Err(bad_file(
            path,
            FileProblem::Truncated {
                len: file.len().map_err(&at)?,
                needed: header.meta_len,
                what: "page index (the file shrank while it was read)",
            },
        ));
    }
    let meta = Meta::decode(header, &meta, page).map_err(|p| bad_file(path, p))?;
    Ok(OpenedFile {
        path: path.to_path_buf(),
        file,
        meta,
    })
}

/// Reads `path` and the bases it names; returns the files base first.
fn read_chain(path: &Path) -> Result<Vec<OpenedFile>> {
    let mut chain = vec![read_file(path)?];
    loop {
        let top = chain.last().expect("not empty");
        let Some(expected) = top.meta.header.base else {
            break;
        };
        if chain.len() == MAX_CHAIN {
            return Err(bad_file(path, FileProblem::ChainTooLong(MAX_CHAIN)));
        }
        let name = PathBuf::from(OsStr::from_bytes(&top.meta.base_name));
        let base = top.path.parent().unwrap_or(Path::new(".")).join(name);
        // A base that is not there is named by the delta; any other failure to read it is the
        // base file's own error.
        let opened = read_file(&base).map_err(|e| match e {
            Error::File {
                problem: FileProblem::Os { op, source },
                ..
            } if source.kind() == std::io::ErrorKind::NotFound => bad_file(
                &top.path,
                FileProblem::MissingBase {
                    base: base.clone(),
                    expected,
                    source: Box::new(bad_file(&base, FileProblem::Os { op, source })),
                },
            ),
            other => other,
        })?;
        let found = opened.meta.header.content_hash;
        if found != expected {
            return Err(bad_file(
                &top.path,
                FileProblem::WrongBase {
                    base,
                    expected,
                    found,
                },
            ));
        }
        if opened.meta.header.capacity != top.meta.header.capacity {
            return Err(bad_file(
                &top.path,
                FileProblem::Capacity {
                    capacity: top.meta.header.capacity as u64,
                    reason: "the base file has another capacity",
                },
            ));
        }
        chain.push(opened);
    }
    chain.reverse();
    Ok(chain)
}

/// The checksum page `p` has in the chain below `files` (the last of `files` is the newest),
/// `None` for a zero page.
fn checksum_below(files: &[OpenedFile], p: usize) -> Option<u64> {
    for f in files.iter().rev() {
        if let Ok(i) = f.meta.entries.binary_search_by_key(&p, |e| e.page) {
            if !f.meta.entries[i].stored {
                return None;
            }
            return Some(f.meta.checksums[f.meta.stored_before[i]]);
        }
    }
    None
}

/// Checks each file's content hash against its index, from the base up.
fn check_hashes(chain: &[OpenedFile]) -> Result<()> {
    let page = sys::page_size();
    for (i, f) in chain.iter().enumerate() {
        let h = &f.meta.header;
        let mut sum = match chain[..i].last() {
            Some(base) => HashSum::of(base.meta.header.content_hash),
            None => HashSum::empty(page, h.capacity),
        };
        let mut k = 0;
        for e in &f.meta.entries {
            if let Some(old) = checksum_below(&chain[..i], e.page) {
                sum.remove(e.page, old);
            }
            if e.stored {
                sum.add(e.page, f.meta.checksums[k]);
                k += 1;
            }
        }
        if sum.finish() != h.content_hash {
            return Err(bad_file(
                &f.path,
                FileProblem::ContentHash {
                    stored: h.content_hash,
                    computed: sum.finish(),
                },
            ));
        }
    }
    Ok(())
}

/// Opens `path` (and its bases) into `store`.
fn open_in(path: &Path, store: Arc<Store>, options: Options) -> Result<Snapshot> {
    let page = sys::page_size();
    let chain = read_chain(path)?;
    check_hashes(&chain)?;
    // The files' objects carry stamps of the processes that made them: allocations here must
    // not repeat one (an old `Ptr` in the file would then name a new object).
    let ceiling = chain.iter().map(|f| f.meta.header.stamp_ceiling).max();
    crate::alloc::stamps_above(ceiling.unwrap_or(0));
    let top_hash = chain.last().expect("not empty").meta.header.content_hash;
    let pages = chain[0].meta.header.capacity / page;
    let mut table: Option<PageTable> = None;
    let mut held = Vec::with_capacity(chain.len());
    for f in chain {
        let stored = f.meta.header.stored;
        let first = if stored > 0 {
            let data: Vec<u32> = f
                .meta
                .entries
                .iter()
                .filter(|e| e.stored)
                .map(|e| e.page as u32)
                .collect();
            let lazy = LazyPages::new(
                f.file,
                f.path,
                page,
                f.meta.header.data_offset,
                data,
                f.meta.checksums,
            );
            let run = store.add_file_chunk(Arc::new(lazy), stored)?;
            let first = run.slots()[0];
            held.push(run);
            first
        } else {
            SlotId::ZERO
        };
        let mut k = 0;
        let updates: Vec<(usize, SlotId)> = f
            .meta
            .entries
            .iter()
            .map(|e| {
                let slot = if e.stored {
                    k += 1;
                    first.offset(k - 1)
                } else {
                    SlotId::ZERO
                };
                (e.page, slot)
            })
            .collect();
        match &mut table {
            Some(t) => t.set_many(&updates),
            None => table = Some(PageTable::from_sorted(pages, Arc::clone(&store), &updates)),
        }
    }
    let table = table.expect("a chain has a file");
    // Slots of base pages that a delta replaced are released here, with the runs' holds.
    drop(held);
    let snapshot = Snapshot::new(table, options);
    let abs = sys::file::canonicalize(path).map_err(in_file(path))?;
    snapshot.set_saved_as(SavedAs {
        hash: top_hash,
        path: abs,
    });
    Ok(snapshot)
}

/// Freezes the non-zero pages of `block` (whole pages, at most a store chunk's worth), which
/// holds the pages from `first`, into `table`.
fn freeze_block(table: &mut PageTable, first: usize, block: &[u8]) -> Result<()> {
    let page = sys::page_size();
    let mut pages = Vec::new();
    let mut bufs: Vec<&[u8]> = Vec::new();
    let mut run: Option<(usize, usize)> = None;
    for (k, bytes) in block.chunks_exact(page).enumerate() {
        if format::is_zero(bytes) {
            continue;
        }
        pages.push(first + k);
        match &mut run {
            Some((_, end)) if *end == k => *end += 1,
            _ => {
                if let Some((s, e)) = run.take() {
                    bufs.push(&block[s * page..e * page]);
                }
                run = Some((k, k + 1));
            }
        }
    }
    if let Some((s, e)) = run {
        bufs.push(&block[s * page..e * page]);
    }
    if pages.is_empty() {
        return Ok(());
    }
    let store = Arc::clone(table.store());
    let frozen = store.freeze(&bufs, crate::REMAP_MIN_RUN)?;
    let updates: Vec<(usize, SlotId)> = pages
        .iter()
        .copied()
        .zip(frozen.slots().iter().copied())
        .collect();
    table.set_many(&updates);
    Ok(())
}

/// An arena of `len` bytes (rounded up to whole pages) whose pages `fill(first_page, block)`
/// provides, a block (whole pages, at most a store chunk) at a time.
fn arena_from_blocks(
    len: usize,
    mut fill: impl FnMut(usize, &mut [u8]) -> Result<()>,
) -> Result<Arena> {
    let page = sys::page_size();
    let capacity = checked_capacity(len, page)?;
    let store = Store::new(page, None);
    let max = store.max_run_pages();
    let pages = capacity / page;
    let mut table = PageTable::new(pages, Arc::clone(&store));
    let mut block = vec![0u8; max.min(pages) * page];
    let mut first = 0;
    while first < pages {
        let n = max.min(pages - first);
        let buf = &mut block[..n * page];
        fill(first, buf)?;
        freeze_block(&mut table, first, buf)?;
        first += n;
    }
    Arena::from_table(&table, Options::default())
}

impl Arena {
    /// An arena whose initial contents are `bytes`, its capacity `bytes.len()` rounded up to
    /// whole pages (the rest reads as zeros). Its pages are frozen into the page store once, so
    /// the arena starts clean: its first snapshot costs nothing.
    ///
    /// ```
    /// let a = cowarena::Arena::from_bytes(b"guest memory image")?;
    /// assert_eq!(a.capacity(), cowarena::page_size());
    /// assert_eq!(&a.as_bytes()[..5], b"guest");
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> Result<Arena> {
        let page = sys::page_size();
        arena_from_blocks(bytes.len(), |first, block| {
            let start = (first * page).min(bytes.len());
            let src = &bytes[start..(start + block.len()).min(bytes.len())];
            block[..src.len()].copy_from_slice(src);
            block[src.len()..].fill(0);
            Ok(())
        })
    }

    /// An arena whose initial contents are the file at `path` (any file, not only a snapshot
    /// file), its capacity the file's length rounded up to whole pages. The file is read once
    /// with `pread` and not mapped, so a later change or truncation of the file by another
    /// process does not affect the arena (see the [module docs](crate::persist)).
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("cowarena-doc-image-{}", std::process::id()));
    /// std::fs::write(&path, vec![7u8; 10_000]).unwrap();
    /// let mut a = cowarena::Arena::from_file(&path)?;
    /// # std::fs::remove_file(&path).unwrap();
    /// assert_eq!(a.as_bytes()[9_999], 7);
    /// assert_eq!(a.as_bytes()[10_000], 0);
    /// a.write(0, b"writable")?;
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> Result<Arena> {
        let path = path.as_ref();
        let page = sys::page_size();
        let at = in_file(path);
        let file = DataFile::open_read(path).map_err(&at)?;
        let len = file.len().map_err(&at)?;
        let len = usize::try_from(len).map_err(|_| {
            bad_file(
                path,
                FileProblem::Capacity {
                    capacity: len,
                    reason: "larger than the address space",
                },
            )
        })?;
        arena_from_blocks(len, |first, block| {
            let offset = (first * page) as u64;
            let want = block.len().min(len - first * page);
            let got = file.read_at(&mut block[..want], offset).map_err(&at)?;
            if got < want {
                return Err(bad_file(
                    path,
                    FileProblem::Truncated {
                        len: offset + got as u64,
                        needed: len as u64,
                        what: "contents (the file shrank while it was read)",
                    },
                ));
            }
            block[want..].fill(0);
            Ok(())
        })
    }

    /// Opens a saved snapshot (like [`Snapshot::open`]) into this arena's page store, so that it
    /// can be [restored](Arena::restore) into this arena (which needs the same capacity).
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("cowarena-doc-open-in-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// a.write(0, b"saved")?;
    /// a.snapshot()?.save(dir.join("s.snap"))?;
    /// a.write(0, b"later")?;
    /// let s = a.open_snapshot(dir.join("s.snap"))?;
    /// a.restore(&s)?;
    /// assert_eq!(&a.as_bytes()[..5], b"saved");
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn open_snapshot(&self, path: impl AsRef<Path>) -> Result<Snapshot> {
        open_in(
            path.as_ref(),
            Arc::clone(self.store()),
            self.options().clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::relative;
    use std::path::Path;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(Path::new("/a/b"), Path::new("/a/b/c.snap")),
            Path::new("c.snap")
        );
        assert_eq!(
            relative(Path::new("/a/b"), Path::new("/a/x/c.snap")),
            Path::new("../x/c.snap")
        );
        assert_eq!(
            relative(Path::new("/a/b"), Path::new("/c.snap")),
            Path::new("../../c.snap")
        );
    }
}
