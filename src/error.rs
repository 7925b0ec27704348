//! The crate's error type: every failure names what was asked and why it could not be done.

use std::fmt;

/// `Result<T, cowarena::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `cowarena`.
///
/// # One convention for failures
///
/// Each method fails in one of these ways, chosen by what the failure means:
///
/// | method | on failure | why |
/// |---|---|---|
/// | accessors that read or lend a reference: [`Arena::get`](crate::Arena::get), [`get_mut`](crate::Arena::get_mut), [`set_root`](crate::Arena::set_root), [`View::lend`](crate::View::lend), [`ViewMut::lend_mut`](crate::ViewMut::lend_mut), [`Loan::views`](crate::Loan::views), the collections' `get`, `get_mut`, `as_slice`, `as_mut_slice`, `slice_mut`, `view_mut`, `len`, `iter`, `entry`, [`Snapshot::as_bytes`](crate::Snapshot::as_bytes), ... | the plain name **panics**; a `try_` twin returns `Result` | the only failure is a handle that names nothing (a programming error, like an index past a slice; for a snapshot, a view that cannot be mapped) or bytes that raw writes made an invalid value ([`Error::InvalidValue`]), and these sit in hot loops, where a `Result` costs every caller a branch and an `unwrap` |
/// | collection operations that neither allocate nor free: [`ArenaVec::set`](crate::ArenaVec::set), [`pop`](crate::ArenaVec::pop), [`truncate`](crate::ArenaVec::truncate), [`clear`](crate::ArenaVec::clear), [`ArenaMap::remove`](crate::ArenaMap::remove), [`ArenaMap::clear`](crate::ArenaMap::clear), [`ArenaBytes::clear`](crate::ArenaBytes::clear) | the plain name **panics**; a `try_` twin returns `Result` | as for accessors: only a handle that names nothing (or, for `set`, an index out of bounds) makes them fail, as `Vec::pop` or `v[i] = x` cannot fail |
/// | operations that may allocate or free, or make system calls: `alloc`, `free`, `push`, `extend_from_slice`, `insert`, `resize`, `reserve`, `or_insert` (and a view's `push`, `extend_from_slice`, `reserve` and `insert_str`), [`snapshot`](crate::Arena::snapshot), [`restore`](crate::Arena::restore), `proxy`, `save`, `open`, `fork_run`, ... | return `Result` | they fail for reasons outside the caller's control (memory, the kernel, a full disk) |
/// | raw byte access at offsets: [`write`](crate::Arena::write), [`read`](crate::Arena::read), [`bytes_mut`](crate::Arena::bytes_mut); pairing objects: [`Proxy::with`](crate::Proxy::with), `restore` of another arena's snapshot | return `Result` | an offset is plain data, often computed or read from a file, and which objects belong together is known only at run time: the caller decides what a failure means |
/// | an index into a collection | `Option` from `get`/`get_mut`/`pop`; indexing a view (`view[i]`), `set` and `swap` panic like a slice; [`ArenaVec::try_set`](crate::ArenaVec::try_set) returns [`Error::IndexOutOfBounds`] | as for `Vec` and slices |
///
/// The panics carry the same message as the error (`"cowarena: invalid pointer ..."`,
/// `"cowarena: invalid value ..."`). Every
/// `Result`-returning public function lists its errors in an `# Errors` section. No failure,
/// whatever the input, is undefined behaviour, and a call that fails with
/// [`InvalidPtr`](Error::InvalidPtr), [`InvalidValue`](Error::InvalidValue),
/// [`IndexOutOfBounds`](Error::IndexOutOfBounds),
/// [`OutOfBounds`](Error::OutOfBounds), [`CapacityOverflow`](Error::CapacityOverflow),
/// [`CannotGrow`](Error::CannotGrow) or [`CannotInsert`](Error::CannotInsert) changes nothing.
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
    /// An index past the end of a collection.
    #[error("index out of bounds: the len is {len} but the index is {index}")]
    IndexOutOfBounds {
        /// The index asked for.
        index: usize,
        /// The collection's length.
        len: usize,
    },
    /// A collection's length would not fit in a `usize`.
    #[error("capacity overflow: {len} elements plus {additional} more do not fit in a usize")]
    CapacityOverflow {
        /// The current length.
        len: usize,
        /// The elements to add.
        additional: usize,
    },
    /// A vector's view was asked to grow past its capacity but cannot allocate: it was lent
    /// with other handles ([`ViewMut::lend_mut`](crate::ViewMut::lend_mut) of several, or a
    /// [`Loan`](crate::Loan)), whose views stay alive meanwhile. Reserve room beforehand
    /// ([`ArenaVec::reserve`](crate::ArenaVec::reserve), through the loan between views), or
    /// lend the vector alone ([`ArenaVec::view_mut`](crate::ArenaVec::view_mut)).
    #[error(
        "cannot grow a lent vector: {len} elements plus {additional} exceed its capacity of \
         {capacity}, and a view lent with others cannot allocate; reserve room before lending"
    )]
    CannotGrow {
        /// The vector's length.
        len: usize,
        /// The elements to add.
        additional: usize,
        /// The vector's capacity.
        capacity: usize,
    },
    /// A map's view ([`MapMut::insert_str`](crate::MapMut::insert_str)) was given a key the map
    /// does not hold: a view adds no entries, and a new text key needs a string allocated, which
    /// a view cannot do while it borrows the arena. Insert the key through the arena, or through
    /// the [`Loan`](crate::Loan) between batches of views
    /// ([`ArenaMap::insert_str`](crate::ArenaMap::insert_str)).
    #[error(
        "cannot insert the new key {key:?} through a map's view: a view adds no entries; insert \
         it with ArenaMap::insert_str through the arena or the loan, between views"
    )]
    CannotInsert {
        /// The key's text.
        key: String,
    },
    /// Handles lent mutably at once ([`ViewMut::lend_mut`](crate::ViewMut::lend_mut), a
    /// [`Loan`](crate::Loan)) whose memory overlaps where a view writes it: the same handle
    /// twice, or a map keyed by [`ArenaString`](crate::ArenaString) and the string of one of its
    /// keys (whose text the map's view reads).
    #[error(
        "overlapping loans: {len} bytes at offset {offset:#x} would be written through one view \
         while another view lends them"
    )]
    Overlap {
        /// Where the overlap starts.
        offset: usize,
        /// How many bytes overlap.
        len: usize,
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
    /// A [`Ptr`](crate::Ptr) or collection handle that does not name a live object of its type
    /// here.
    #[error("invalid pointer {offset:#x} to {type_name}: {reason}")]
    InvalidPtr {
        /// The offset the handle holds.
        offset: usize,
        /// The type the handle names (for a collection, the collection's type).
        type_name: &'static str,
        /// Why it is not valid.
        reason: InvalidPtrReason,
    },
    /// The bytes of a value do not form a valid value of its type (a `bool` that is neither 0
    /// nor 1, an enum tag no variant has, ...): raw writes or a file changed them (see
    /// [`Value`](crate::Value)). Nothing was read or changed.
    #[error(
        "invalid value at offset {offset:#x}: its bytes are not a valid {type_name} (changed by \
         raw writes or a file?)"
    )]
    InvalidValue {
        /// Where the value starts in the arena.
        offset: usize,
        /// The value's type.
        type_name: &'static str,
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
    /// Snapshot bytes in memory ([`Snapshot::from_bytes`](crate::Snapshot::from_bytes),
    /// [`Snapshot::from_delta`](crate::Snapshot::from_delta)) are not what they should be, or
    /// writing them ([`Snapshot::delta_to`](crate::Snapshot::delta_to)) failed. The problems are
    /// those of a file, in the same format.
    #[error("snapshot bytes: {problem}")]
    Bytes {
        /// What is wrong.
        problem: FileProblem,
    },
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Os {
        /// The operation, e.g. `"mmap (map file pages)"`.
        op: &'static str,
        /// The operating system's error; [`raw_os_error`](std::io::Error::raw_os_error) gives
        /// the errno.
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
    /// Bytes of a delta were given where a whole snapshot was expected.
    #[error("a delta against base {base}: rebuild it with Snapshot::from_delta and that base")]
    NeedsBase {
        /// The content hash of the base the delta needs.
        base: crate::ContentHash,
    },
    /// Bytes of a whole snapshot were given where a delta was expected.
    #[error("a whole snapshot, not a delta: rebuild it with Snapshot::from_bytes")]
    NotADelta,
    /// The base snapshot given for a delta in memory is not the one it was made against.
    #[error("wrong base: the delta needs content hash {expected}, the base given has {found}")]
    BaseMismatch {
        /// The content hash the base must have.
        expected: crate::ContentHash,
        /// The content hash of the snapshot given as the base.
        found: crate::ContentHash,
    },
    /// A chain of deltas longer than the crate follows (a cycle of files naming each other).
    #[error("delta chain longer than {0} files")]
    ChainTooLong(usize),
    /// The path names something other than a regular file (a directory, a FIFO, a device, a
    /// socket), or, for a delta's base, a symbolic link: snapshot files are read only from
    /// regular files, so that opening one never blocks or reads a device.
    #[error("not a regular file ({kind})")]
    NotARegularFile {
        /// What the path names instead.
        kind: &'static str,
    },
    /// A delta names its base by something other than a file name in its own directory (a
    /// path with `/`, `.` or `..`), or `save_delta` was given a base saved in another directory
    /// than the delta: a delta's base must sit beside it.
    #[error("the base {base:?} is not a file beside the delta (deltas name their base by its file name in the delta's own directory)")]
    BaseNotBeside {
        /// The base's name or path.
        base: std::path::PathBuf,
    },
}

/// Why a [`Ptr`](crate::Ptr) or collection handle names no live object: the `reason` of
/// [`Error::InvalidPtr`].
///
/// ```
/// use cowarena::{Arena, Error, InvalidPtrReason};
/// let mut a = Arena::with_capacity(1 << 20)?;
/// let p = a.alloc(5u64)?;
/// a.free(p)?;
/// match a.try_get(p) {
///     Err(Error::InvalidPtr { reason: InvalidPtrReason::Freed, .. }) => {}
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), cowarena::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidPtrReason {
    /// The null `Ptr` (or an all-zero handle).
    Null,
    /// The object and its stamp at this offset do not fit in the arena: the handle may come
    /// from an arena of another capacity.
    OutOfRange {
        /// The object's size in bytes.
        size: usize,
        /// The arena's capacity.
        capacity: usize,
    },
    /// The offset is not a multiple of where objects of this type start.
    Misaligned {
        /// Objects of the type start at multiples of this.
        align: usize,
    },
    /// The arena holds no typed objects yet (its allocator is uninitialized).
    NoAllocator,
    /// The stamp was never handed out by `alloc` (it is even).
    NotFromAlloc,
    /// The object was freed.
    Freed,
    /// No object was ever allocated at this offset: the handle belongs to another arena, or to
    /// a state this arena was restored away from.
    NeverAllocated,
    /// Another object lives here now: this one was freed and its space reused, or the handle
    /// belongs to another arena or to a state this arena was restored away from.
    Reused,
    /// No live object of this type is here (freed, another arena's, or restored away).
    NotLive,
    /// A live stamp sits here, but the allocator's metadata places no object of this type at
    /// this offset (a `Ptr` cast to another type, or forged).
    NotAnObject {
        /// The size of the type asked for.
        size: usize,
    },
    /// A collection's buffer is not live although its header is (raw writes overwrote it).
    CollectionBuffer,
    /// The collection holds elements of another type (its handle was cast).
    CollectionType,
    /// A map's table has no empty slot (raw writes overwrote it).
    MapTable,
}

impl fmt::Display for InvalidPtrReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Null => f.write_str("null pointer"),
            Self::OutOfRange { size, capacity } => write!(
                f,
                "out of range: an object of {size} bytes and its stamp at this offset does not \
                 fit in an arena of {capacity} bytes; is it a Ptr from an arena of another \
                 capacity?"
            ),
            Self::Misaligned { align } => {
                write!(
                    f,
                    "misaligned: objects of this type start at multiples of {align}"
                )
            }
            Self::NoAllocator => f.write_str(
                "this arena holds no typed objects (its allocator is uninitialized); is it a Ptr \
                 from another arena?",
            ),
            Self::NotFromAlloc => f.write_str("not a pointer made by alloc (its stamp is even)"),
            Self::Freed => f.write_str("the object was freed"),
            Self::NeverAllocated => f.write_str(
                "no object was ever allocated here; the Ptr belongs to another arena, or to a \
                 state this arena was restored away from",
            ),
            Self::Reused => f.write_str(
                "another object lives here now: the object was freed and its space reused, or \
                 the Ptr belongs to another arena or to a state this arena was restored away from",
            ),
            Self::NotLive => f.write_str(
                "no live object here: it was freed, or the Ptr belongs to another arena or to a \
                 state this arena was restored away from",
            ),
            Self::NotAnObject { size } => write!(
                f,
                "not the start of an allocated object of this type ({size} bytes)"
            ),
            Self::CollectionBuffer => f.write_str(
                "a collection's buffer is not live (its header was overwritten by raw writes?)",
            ),
            Self::CollectionType => {
                f.write_str("the collection holds elements of another type (was its handle cast?)")
            }
            Self::MapTable => {
                f.write_str("a map's table has no empty slot (overwritten by raw writes?)")
            }
        }
    }
}
