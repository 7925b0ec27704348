//! The crate's error type: every failure names what was asked and why it could not be done.

/// `Result<T, cowarena::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `cowarena`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A byte range does not lie inside the arena.
    #[error(
        "out of bounds: {len} bytes at offset {offset} do not fit in an arena of {capacity} bytes"
    )]
    OutOfBounds {
        /// First byte of the range.
        offset: usize,
        /// Length of the range.
        len: usize,
        /// The arena's capacity.
        capacity: usize,
    },
    /// The requested capacity cannot be an arena.
    #[error("invalid capacity {requested}: {reason}")]
    InvalidCapacity {
        /// The capacity asked for.
        requested: usize,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A snapshot of an arena of another capacity was given to `restore`.
    #[error("capacity mismatch: the snapshot holds {snapshot} bytes, the arena {arena} bytes")]
    CapacityMismatch {
        /// The arena's capacity.
        arena: usize,
        /// The snapshot's capacity.
        snapshot: usize,
    },
    /// The snapshot was not taken from this arena or an arena sharing its page store (one made
    /// with [`Snapshot::to_arena`](crate::Snapshot::to_arena) or [`Arena::proxy`](crate::Arena::proxy)),
    /// nor opened into it with [`Arena::open_snapshot`](crate::Arena::open_snapshot).
    #[error(
        "foreign snapshot: it belongs to an unrelated arena's page store; use its to_arena(), or \
         open a saved snapshot with Arena::open_snapshot to restore it here"
    )]
    ForeignSnapshot,
    /// The arena given to [`Proxy::with`](crate::Proxy::with) (or `with_mut`) is not the one the
    /// proxy was made from.
    #[error("not the proxy's source: a proxy reads through only to the arena it was made from")]
    NotTheSource,
    /// [`Proxy::without_source`](crate::Proxy::without_source) (or `_mut`) while the proxy's
    /// source is alive.
    #[error("the proxy's source is alive: access the proxy with `with(&source)`")]
    SourceAlive,
    /// A `Ptr` that does not name a live object of its type in this arena.
    #[error("invalid pointer {offset:#x}: {reason}")]
    InvalidPtr {
        /// The offset the `Ptr` holds.
        offset: usize,
        /// Why it is not valid.
        reason: String,
    },
    /// The arena has no free space for an allocation.
    #[error("out of memory: no room for {requested} bytes (alignment {align}) in an arena of {capacity} bytes")]
    OutOfMemory {
        /// Bytes requested.
        requested: usize,
        /// Alignment requested.
        align: usize,
        /// The arena's capacity.
        capacity: usize,
    },
    /// Metadata stored in the arena (the typed allocator's) fails its checks, most likely
    /// because raw writes overwrote it; nothing was changed.
    #[error("corrupt arena metadata: {0}")]
    Corrupt(&'static str),
    /// The operation is not possible in the arena's current state; the message says why.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A snapshot file (or a file given to [`Arena::from_file`](crate::Arena::from_file)) cannot
    /// be written or read, or its contents are not what they should be.
    #[error("{path}: {problem}", path = path.display())]
    File {
        /// The file concerned (for a missing or wrong base, the delta that names it).
        path: std::path::PathBuf,
        /// What is wrong.
        problem: FileProblem,
    },
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Os {
        /// The operation, e.g. `"mmap (map file pages)"`.
        op: &'static str,
        /// The operating system's error (errno).
        #[source]
        source: std::io::Error,
    },
}

/// What is wrong with a snapshot file: the detail of [`Error::File`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileProblem {
    /// A system call on the file failed.
    #[error("{op} failed: {source}")]
    Os {
        /// The operation, e.g. `"pread"`.
        op: &'static str,
        /// The operating system's error (errno).
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the snapshot file magic.
    #[error("not a cowarena snapshot file (wrong magic number)")]
    NotASnapshot,
    /// The file was written in a format version this build does not read.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    Version {
        /// The version in the file.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// The file's page size is not the running system's.
    #[error("page size {file} bytes, but this system's page size is {runtime} bytes")]
    PageSize {
        /// The page size recorded in the file.
        file: u64,
        /// [`page_size`](crate::page_size) here.
        runtime: usize,
    },
    /// The recorded capacity cannot be an arena's, or does not match the base's.
    #[error("capacity {capacity}: {reason}")]
    Capacity {
        /// The capacity recorded in the file.
        capacity: u64,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The file is shorter than its header and index say (or it shrank after it was opened).
    #[error("truncated: the file has {len} bytes, its {what} needs {needed}")]
    Truncated {
        /// The file's length.
        len: u64,
        /// Bytes the file must have.
        needed: u64,
        /// The part of the file that does not fit.
        what: &'static str,
    },
    /// The file is longer than its header and index say.
    #[error("the file has {len} bytes, {expected} expected: trailing bytes")]
    TrailingBytes {
        /// The file's length.
        len: u64,
        /// The length its header and index give.
        expected: u64,
    },
    /// The header, base name, page index or checksum table is damaged.
    #[error("header or page index checksum mismatch: the file's metadata is damaged")]
    MetadataChecksum,
    /// The page index is inconsistent although its checksum matches.
    #[error("malformed page index: {0}")]
    Index(&'static str),
    /// The pages listed in the index do not add up to the content hash in the header.
    #[error("content hash mismatch: the header says {stored}, the page index gives {computed}")]
    ContentHash {
        /// The hash recorded in the header.
        stored: crate::ContentHash,
        /// The hash of the pages the index lists.
        computed: crate::ContentHash,
    },
    /// A page's bytes do not match their checksum.
    #[error("checksum mismatch at page {page} (arena offset {offset:#x})")]
    PageChecksum {
        /// The page's index in the arena.
        page: usize,
        /// The page's first byte in the arena.
        offset: usize,
    },
    /// `save_delta` was given a base that was neither saved nor opened from a file.
    #[error("the base snapshot was never saved to or opened from a file; save it first")]
    BaseNotSaved,
    /// `save_delta` was asked to write the delta over its own base's file.
    #[error("the delta would replace its own base file")]
    OverwritesBase,
    /// The delta's base file cannot be opened.
    #[error("base {base} (content hash {expected}) cannot be opened: {source}", base = base.display())]
    MissingBase {
        /// Where the delta says its base is.
        base: std::path::PathBuf,
        /// The content hash the base must have.
        expected: crate::ContentHash,
        /// Why it could not be opened.
        #[source]
        source: Box<crate::Error>,
    },
    /// The delta's base file holds another snapshot than the one the delta was saved against.
    #[error("wrong base {base}: the delta needs content hash {expected}, the file has {found}", base = base.display())]
    WrongBase {
        /// Where the delta says its base is.
        base: std::path::PathBuf,
        /// The content hash the base must have.
        expected: crate::ContentHash,
        /// The content hash the file has.
        found: crate::ContentHash,
    },
    /// A chain of deltas longer than the crate follows (a cycle of files naming each other).
    #[error("delta chain longer than {0} files")]
    ChainTooLong(usize),
}
