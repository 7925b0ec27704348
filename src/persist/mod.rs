//! Snapshots in files: [`Snapshot::save`](crate::Snapshot::save),
//! [`Snapshot::save_delta`](crate::Snapshot::save_delta),
//! [`Snapshot::open`](crate::Snapshot::open),
//! [`Arena::open_snapshot`](crate::Arena::open_snapshot),
//! [`Arena::from_file`](crate::Arena::from_file) and
//! [`Arena::from_bytes`](crate::Arena::from_bytes); and in memory, in the same format:
//! [`Snapshot::full_bytes`](crate::Snapshot::full_bytes),
//! [`Snapshot::delta_bytes`](crate::Snapshot::delta_bytes) (or `full_to` / `delta_to` any
//! `io::Write`), [`Snapshot::from_bytes`](crate::Snapshot::from_bytes),
//! [`Snapshot::from_delta`](crate::Snapshot::from_delta), [`inspect`], the content hash of any
//! snapshot ([`Snapshot::hash`](crate::Snapshot::hash)) and a [`BaseCache`] for the receiving
//! side.
//!
//! # The file
//!
//! A snapshot file is self-describing: magic number, format version, page size, capacity, a page
//! index, one checksum (xxh3-64) per stored page, a checksum over all of that, then the stored
//! pages, page-aligned. Zero pages are not stored. A delta stores only the pages that differ
//! from its base (pages that became zero are index entries without data) and names its base
//! twice: by the base's file name in the delta's own directory (a base must sit beside its
//! deltas), and by the base's *content hash*. Stored pages sit in index order, so an entry needs no data offset of its own: an index
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
//!      128    base name: the base file's name in this file's directory (deltas only)
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
//! [`Arena::from_bytes`](crate::Arena::from_bytes) and
//! [`Arena::from_file`](crate::Arena::from_file) freeze the bytes' non-zero pages straight into
//! the page store, a page store chunk at a time, and map the arena from it: the arena starts
//! with no dirty page, so its first snapshot costs nothing, and its pages are shared with every
//! snapshot and arena made from it. An arbitrary file has no checksums, so it is copied once
//! (read with `pread`) rather than mapped, for the SIGBUS reason above.
//!
//! # Snapshots as bytes
//!
//! `full_to` / `delta_to` write exactly what `save` / `save_delta` write, to any `io::Write`;
//! the base of an in-memory delta can be any snapshot (its content hash is computed once if no
//! file gave it), and the delta names it by that hash and by the file name `<hash>.snap`, so a
//! directory of blobs named by their hashes opens with `open` as well. `from_bytes` and
//! `from_delta` make every check `open` makes, and check every page against its checksum at
//! once (the bytes are in memory: there is nothing to defer), then copy the pages into a page
//! store; a delta's pages go into its base's store, so the rebuilt state shares the base's
//! unchanged pages and an arena made from the base restores it in `O(pages that differ)`. Damaged
//! bytes are an [`Error::Bytes`] naming the [`FileProblem`], never a panic.
//!
//! # Beyond one machine
//!
//! An exploration that outgrows one machine (a symbolic executor's or a fuzzer's corpus of
//! states, a model checker's frontier) moves states in this format, carried by an existing
//! engine, never a home-made one:
//!
//! - **A state is a delta against a base both sides hold.** The sender writes
//!   `state.delta_bytes(&base)`: the pages that changed since the base, a few pages where the
//!   state is megabytes. The receiver keeps its bases in a [`BaseCache`] by content hash, fetches
//!   a base it lacks once (bases are stored whole under their hash), and rebuilds the state with
//!   [`BaseCache::rebuild`]. `examples/distributed.rs` runs a model checker this way on Redis:
//!   states as blobs under their content hash (the base whole, the others as deltas against
//!   it), work items naming them in a reliable queue, the visited set in Redis; a worker killed
//!   in the middle of an item loses nothing. Its measured costs are in `BENCHMARKS.md`.
//! - **Or states are content-addressed delta files in shared storage.** A worker saves a state
//!   as a delta against the state it started from and names the file by its content hash
//!   ([`SaveStats::content_hash`]), e.g. `states/<hash>.snap`: the same state reached twice gets
//!   the same name, so deduplication is a file-exists check, and a file's name says what it holds.
//!   Deltas name their base by its file name beside them, so a directory of states can be copied
//!   or synced as a whole (rsync, object-store sync, a shared file system such as NFS or CephFS).
//!   `Snapshot::open` costs `O(index)`; a worker that takes a state reads only the pages it
//!   touches, and each page is checked on arrival, so a file that a sync is still writing, or a
//!   damaged copy, is an error for that state, not a crash.
//! - **An existing engine carries the work.** A work queue or key-value store (Redis, RabbitMQ,
//!   SQS) or a cluster scheduler (Slurm, Kubernetes jobs, Ray) carries the states or their
//!   hashes, and the results come back the same way. cowarena supplies no transport, no
//!   scheduler and no membership: the format is the contract, and anything that moves bytes
//!   moves states. Deep chains are periodically rebased by sending a state whole, which keeps
//!   rebuilding cheap and lets old deltas be dropped by whatever owns the storage.
//! - **States cross machines of one page size.** The format records the page size, and a
//!   snapshot of 4 KiB pages is refused on a 16 KiB-page machine ([`FileProblem::PageSize`]).

mod arena;
mod cache;
mod format;
mod lazy;
mod memory;
mod open;
mod save;
mod write;

pub use cache::BaseCache;
pub(crate) use lazy::LazyPages;
pub use memory::{inspect, BytesInfo};

use crate::error::{Error, FileProblem};
pub use crate::snapshot::ContentHash;
use std::path::Path;

/// Files a delta chain may have at most, so that files naming each other in a cycle end in an
/// error.
pub const MAX_CHAIN: usize = 256;

/// What a [`Snapshot::save`](crate::Snapshot::save),
/// [`Snapshot::save_delta`](crate::Snapshot::save_delta),
/// [`Snapshot::full_to`](crate::Snapshot::full_to) or
/// [`Snapshot::delta_to`](crate::Snapshot::delta_to) wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SaveStats {
    /// Pages whose bytes the file holds.
    pub pages_written: usize,
    /// For a delta: pages recorded as having become zero.
    pub pages_zeroed: usize,
    /// The file's length in bytes (the bytes written, for `full_to` and `delta_to`).
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
