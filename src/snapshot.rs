//! Frozen states of an arena.
//!
//! A [`Snapshot`] is a page table whose slots are frozen (sealed) store pages, so it is
//! immutable by construction and can be read from any thread while its arena changes. Reading
//! bytes (`read`) copies from the store's read-only chunk mappings and maps nothing of the
//! snapshot's own. `as_bytes` (and typed access) map the snapshot once, lazily, read-only: one
//! `mmap` per run of consecutive slots.
//! A snapshot whose pages are scattered over more than [`MAX_VIEW_RUNS`] runs, or whose view
//! would take the process's view mappings past [`MAX_VIEW_MAPPINGS`], is copied into a private
//! buffer instead (costing memory, not mappings), so that viewing many fragmented snapshots
//! cannot exhaust the process's mapping limit (65530).

use crate::error::{Error, Result};
use crate::page_table::PageTable;
use crate::store::SlotId;
use crate::sys::{self, Reservation, Sharing};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Settings an arena passes on to its snapshots, and they to the arenas made from them
/// (defaults and meaning: [`ArenaBuilder`](crate::ArenaBuilder)).
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) private_budget_pages: Option<usize>,
    pub(crate) mapping_budget: usize,
    pub(crate) dir: Option<PathBuf>,
    /// Bytes of inaccessible address space after each arena's last byte.
    pub(crate) guard_bytes: usize,
    /// Whether raw writes are tracked by the kernel where it can (else found as private pages).
    pub(crate) kernel_write_tracking: bool,
}

/// The identity of a snapshot's contents (see the [`persist`](crate::persist) module docs): equal for
/// equal contents, whichever files hold them. Shown as 32 hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub(crate) u128);

impl std::fmt::Display for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl ContentHash {
    /// The hash as 16 bytes (little-endian), to send it or store it beside a state.
    ///
    /// ```
    /// let s = cowarena::Arena::with_capacity(1 << 16)?.snapshot()?;
    /// let h = s.hash()?;
    /// assert_eq!(cowarena::ContentHash::from_bytes(h.to_bytes()), h);
    /// assert_eq!(h.to_string().parse::<cowarena::ContentHash>(), Ok(h));
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_le_bytes()
    }

    /// The hash that [`to_bytes`](ContentHash::to_bytes) gave these bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        ContentHash(u128::from_le_bytes(bytes))
    }
}

/// Parses the 32 hexadecimal digits that `Display` shows.
impl std::str::FromStr for ContentHash {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(s, 16).map(ContentHash)
    }
}

impl std::fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

/// The file a snapshot was last saved to or opened from.
#[derive(Clone, Debug)]
pub(crate) struct SavedAs {
    pub(crate) hash: ContentHash,
    /// Absolute, symbolic links resolved.
    pub(crate) path: PathBuf,
}

/// Runs above which a snapshot view is a private copy rather than a mapping of the store.
pub const MAX_VIEW_RUNS: usize = 2048;

/// Kernel mappings that all snapshot views of the process may hold together; past it, new
/// views are private copies. A view of `r` runs takes up to `2 * r + 1` mappings (runs and the
/// zero gaps between them).
pub const MAX_VIEW_MAPPINGS: usize = 16384;

/// Kernel mappings held by the views alive in the process.
static VIEW_MAPPINGS: AtomicUsize = AtomicUsize::new(0);

/// A snapshot's bytes in memory: a read-only mapping of the store, or a private copy.
struct View {
    mem: Reservation,
    /// Mappings this view accounts for in [`VIEW_MAPPINGS`].
    mappings: usize,
}

impl Drop for View {
    fn drop(&mut self) {
        VIEW_MAPPINGS.fetch_sub(self.mappings, Ordering::Relaxed);
    }
}

/// A frozen state of an [`Arena`](crate::Arena): cheap to take, cheap to clone, readable from any thread.
///
/// ```
/// use cowarena::Arena;
/// let mut a = Arena::with_capacity(1 << 16)?;
/// a.write(0, b"v1")?;
/// let s = a.snapshot()?;
/// a.write(0, b"v2")?;
/// let reader = std::thread::spawn({
///     let s = s.clone();
///     move || s.as_bytes()[..2].to_vec()
/// });
/// assert_eq!(reader.join().unwrap(), b"v1");
/// let mut b = s.to_arena()?;       // an independent arena that starts from s
/// b.write(0, b"v3")?;
/// assert_eq!(&s.as_bytes()[..2], b"v1");
/// # Ok::<(), cowarena::Error>(())
/// ```
#[derive(Clone)]
pub struct Snapshot {
    inner: Arc<Inner>,
}

struct Inner {
    table: PageTable,
    options: Options,
    /// The file this snapshot was last saved to or opened from, so that a delta can name it.
    saved: Mutex<Option<SavedAs>>,
    /// The content hash, once known: computing it reads every non-zero page, and a snapshot's
    /// contents never change.
    hash: OnceLock<ContentHash>,
    /// Only a view that was made is kept: a failure (out of address space, say) is retried.
    view: OnceLock<View>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    pub(crate) fn new(table: PageTable, options: Options) -> Self {
        Snapshot {
            inner: Arc::new(Inner {
                table,
                options,
                saved: Mutex::new(None),
                hash: OnceLock::new(),
                view: OnceLock::new(),
            }),
        }
    }

    pub(crate) fn table(&self) -> &PageTable {
        &self.inner.table
    }

    /// The file this snapshot was last saved to or opened from.
    pub(crate) fn saved_as(&self) -> Option<SavedAs> {
        self.inner
            .saved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_saved_as(&self, saved: SavedAs) {
        self.set_known_hash(saved.hash);
        *self.inner.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
    }

    /// The content hash, if it was computed, or read from a file or bytes, before.
    pub(crate) fn known_hash(&self) -> Option<ContentHash> {
        self.inner.hash.get().copied()
    }

    /// Records the content hash (the contents are immutable, so a hash once known stays true).
    pub(crate) fn set_known_hash(&self, hash: ContentHash) {
        let _ = self.inner.hash.set(hash);
        debug_assert_eq!(self.inner.hash.get(), Some(&hash));
    }

    /// Capacity in bytes of the arena it was taken from.
    pub fn capacity(&self) -> usize {
        self.inner.table.pages() * sys::page_size()
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`, straight from the page store (no view
    /// of the snapshot is mapped).
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] past the capacity; [`Error::Os`] if a store file cannot be mapped
    /// for reading (out of memory or mappings). On `Err`, nothing changed (`buf` may hold part
    /// of the bytes); a later call tries again.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        let capacity = self.capacity();
        if offset
            .checked_add(buf.len())
            .is_none_or(|end| end > capacity)
        {
            return Err(Error::OutOfBounds {
                offset,
                len: buf.len(),
                capacity,
            });
        }
        if let Some(view) = self.inner.view.get() {
            // SAFETY: the view is mapped readable over the whole capacity and never written.
            let bytes = unsafe { std::slice::from_raw_parts(view.mem.base(), capacity) };
            buf.copy_from_slice(&bytes[offset..offset + buf.len()]);
            return Ok(());
        }
        self.inner.table.read(offset, buf)
    }

    /// The snapshot's bytes, mapped read-only on first use.
    ///
    /// # Panics
    /// If the view cannot be created (the process is out of address space or mappings); use
    /// [`try_as_bytes`](Snapshot::try_as_bytes) to get that as an error.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match self.try_as_bytes() {
            Ok(bytes) => bytes,
            Err(e) => panic!("cowarena: cannot map a snapshot view: {e}"),
        }
    }

    /// The snapshot's bytes, or the error that kept them from being mapped.
    ///
    /// # Errors
    /// [`Error::Os`] if the view cannot be reserved, mapped or copied (out of address space,
    /// memory or mappings). On `Err`, nothing is kept: the next call tries again.
    #[inline]
    pub fn try_as_bytes(&self) -> Result<&[u8]> {
        let view = match self.inner.view.get() {
            Some(v) => v,
            None => self.first_view()?,
        };
        // SAFETY: the view is mapped readable over the whole capacity, is never written, and
        // lives as long as `self.inner`.
        Ok(unsafe { std::slice::from_raw_parts(view.mem.base(), view.mem.len()) })
    }

    #[cold]
    #[inline(never)]
    fn first_view(&self) -> Result<&View> {
        // Two threads may both make a view; the loser's is dropped.
        let _ = self.inner.view.set(self.make_view()?);
        Ok(self.inner.view.get().expect("set above"))
    }

    fn make_view(&self) -> Result<View> {
        let mem = Reservation::new(self.capacity())?;
        let mut runs = 0;
        self.inner.table.for_each_run(|_, _, _| runs += 1);
        let mappings = 2 * runs + 1;
        let reserved = runs <= MAX_VIEW_RUNS
            && VIEW_MAPPINGS
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                    (held + mappings <= MAX_VIEW_MAPPINGS).then_some(held + mappings)
                })
                .is_ok();
        if reserved {
            let view = View { mem, mappings };
            // SAFETY: `mem` is new and unreferenced.
            unsafe { map_table(&view.mem, &self.inner.table, false)? };
            return Ok(view);
        }
        // SAFETY: `mem` is new and unreferenced.
        unsafe { copy_table(&mem, &self.inner.table)? };
        mem.protect_read_only()?;
        Ok(View { mem, mappings: 0 })
    }

    /// The settings of the arena it was taken from.
    pub(crate) fn options(&self) -> &Options {
        &self.inner.options
    }
}

/// Fills all of `mem` with `table`'s bytes, copied from the store into fresh private memory.
///
/// # Safety
/// No reference may point into `mem`.
pub(crate) unsafe fn copy_table(mem: &Reservation, table: &PageTable) -> Result<()> {
    let page = sys::page_size();
    // SAFETY: forwarded to the caller.
    unsafe { mem.map_zero(0, mem.len(), true)? };
    let mut result = Ok(());
    table.for_each_run(|first, len, _| {
        if result.is_err() {
            return;
        }
        // SAFETY: in bounds of `mem`, which is writable; no reference points into it
        // (forwarded to the caller).
        let dst =
            unsafe { std::slice::from_raw_parts_mut(mem.base().add(first * page), len * page) };
        result = table.read(first * page, dst);
    });
    result
}

/// Maps all of `mem` from `table`: zero memory, then each run of consecutive slots with one
/// `mmap`. Returns the number of runs mapped.
///
/// # Safety
/// No reference may point into `mem`.
pub(crate) unsafe fn map_table(
    mem: &Reservation,
    table: &PageTable,
    writable: bool,
) -> Result<usize> {
    let page = sys::page_size();
    // SAFETY: forwarded to the caller.
    unsafe { mem.map_zero(0, mem.len(), writable)? };
    let store = table.store();
    let mut result = Ok(());
    let mut runs = 0;
    table.for_each_run(|first, len, slot: SlotId| {
        if result.is_err() {
            return;
        }
        runs += 1;
        result = store.locate(slot, len).and_then(|(file, off)| {
            // SAFETY: forwarded to the caller; the run lies inside `mem`.
            unsafe {
                mem.map_file(
                    first * page,
                    len * page,
                    &file,
                    off,
                    Sharing::Private,
                    writable,
                )
            }
        });
    });
    result.map(|()| runs)
}
