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
    /// with [`Snapshot::to_arena`](crate::Snapshot::to_arena) or [`Arena::proxy`](crate::Arena::proxy)).
    #[error(
        "foreign snapshot: it belongs to an unrelated arena; restore it with to_arena() instead"
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
