//! Typed values inside the arena: [`Arena::alloc`], [`Ptr`], [`Arena::get`], and the
//! collections built on them.
//!
//! Values of any [`Value`] type can live in an arena: every [`bytemuck::Pod`] type, and types
//! with invalid bit patterns (`bool`, `char`, enums, ..., and arrays of them as
//! [`Array`](crate::Array)) whose reads are checked (see [`Value`] for what a check costs, and
//! how to declare an enum that carries data). Because the allocator keeps *all* of its state
//! inside the arena too, everything the arena does to its pages it does to the
//! values and to the allocator at once: [`restore`](Arena::restore) brings back the values and
//! the allocator (objects allocated after the snapshot are gone and their space is free again),
//! [`Snapshot::to_arena`] forks both, and a [proxy](Arena::proxy) shares both until written.
//!
//! ```
//! use cowarena::{Arena, Ptr};
//! #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
//! #[repr(C)]
//! struct Point { x: i32, y: i32 }
//!
//! let mut a = Arena::with_capacity(1 << 20)?;
//! let p = a.alloc(Point { x: 1, y: 2 })?;
//! a.set_root(p);
//! let s = a.snapshot()?;
//!
//! let q = a.alloc(Point { x: 7, y: 7 })?;
//! a.get_mut(p).x = 5;
//! assert_eq!(s.get(p).x, 1);              // the snapshot keeps its values
//!
//! let mut fork = s.to_arena()?;           // an independent arena starting from s
//! let root: Ptr<Point> = fork.root().unwrap();
//! fork.get_mut(root).y = 9;
//!
//! a.restore(&s)?;
//! assert_eq!(*a.get(p), Point { x: 1, y: 2 });
//! assert!(a.try_get(q).is_err());         // allocated after s: gone, its space free again
//! assert_eq!(fork.get(p).y, 9);
//! # Ok::<(), cowarena::Error>(())
//! ```
//!
//! # Where the allocator lives, and raw bytes
//!
//! A new arena is all zeros, and a zeroed header means "no allocator yet": the allocator
//! initializes itself on the first typed call that needs it ([`alloc`](Arena::alloc),
//! [`set_root`](Arena::set_root), or a collection's `new`). From then on it owns the whole arena:
//! its header sits at offset 0, followed by a page map of one byte per page, and every page after
//! those is a slab, a large object or free space. Initialization refuses (with
//! [`Error::Unsupported`]) if raw writes already put non-zero bytes where the header and page
//! map go.
//!
//! Raw access ([`write`](Arena::write), [`bytes_mut`](Arena::bytes_mut)) still works after that,
//! and is how code outside the typed API can fill an object in place (its bytes start at
//! [`Ptr::offset`]). Raw writes elsewhere into allocator-owned memory are the caller's
//! responsibility: they can change objects or corrupt the allocator's metadata, but they never
//! cause undefined behaviour, because every piece of metadata read from the arena is checked
//! before it is used. A corrupted allocator fails with an error; an overwritten stamp makes its
//! object invalid. To keep raw bytes next to typed values, allocate them: an
//! [`ArenaBytes`](crate::ArenaBytes), or a `[u8; N]`.
//!
//! # Layout, and what an allocation costs a snapshot
//!
//! The allocator is built for page-granular copy-on-write: one allocation or free writes O(1)
//! pages, so a snapshot after `k` of them freezes O(k) pages whatever the heap's size.
//!
//! - Objects up to 1016 bytes (and aligned at most 64) live in *slabs*: one page per slab, all
//!   of one size class, with the slab's header and used-slot bitmap in the same page. Allocating
//!   writes just that page in the common case; objects of one size class share pages.
//! - Larger objects get a run of whole pages of their own, starting page-aligned.
//! - Freed slots are reused by the next allocation of their class; a slab that empties, and a
//!   large object's pages, return to a free-page pool (merged with free neighbours) that any size
//!   can reuse.
//!
//! [`Arena::alloc_stats`] reports the pages in use.
//!
//! # Validity of a `Ptr`
//!
//! Next to every object the arena stores a *stamp*, unique to that allocation within the process;
//! the [`Ptr`] carries the same stamp. `get` compares them (a bounds check, an alignment test,
//! one load and one compare), so a `Ptr` that is out of range, misaligned, null, never allocated,
//! already freed, from another arena, or from a state that a restore undid is refused:
//! [`try_get`](Arena::try_get), [`try_get_mut`](Arena::try_get_mut) and [`free`](Arena::free)
//! return [`Error::InvalidPtr`] with the reason, [`get`](Arena::get) and
//! [`get_mut`](Arena::get_mut) panic with it. Since `Ptr` is `Pod`, one can also be made from
//! raw bytes: such a `Ptr` is checked the same way and can never cause undefined behaviour, but
//! one that copies the offset and stamp of a live object names that object.
//!
//! # Types aligned above 4096 bytes
//!
//! Objects start at most page-aligned, and 4096 bytes is the smallest page size the crate runs
//! on, so a type aligned above that cannot live in an arena: using it with `alloc`, `get`, a
//! collection or any other typed call fails to compile.
//!
//! ```compile_fail,E0080
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
//! #[repr(C, align(8192))]
//! struct TwoPages([u8; 8192]);
//! let mut a = cowarena::Arena::with_capacity(1 << 20)?;
//! let p = a.alloc_zeroed::<TwoPages>()?; // error: aligned above 4096 bytes
//! # Ok::<(), cowarena::Error>(())
//! ```
//!
//! A type with padding bytes does not compile either (see [`Value`]): its bytes could not be
//! copied, hashed or saved.
//!
//! Alignment is also checked on the address at every access (not on the offset alone), so even
//! a `Ptr` made from raw bytes never yields a misaligned reference.
//!
//! # Writing in an arena or a branch: `ViewMut`
//!
//! The typed write API ([`alloc`](Arena::alloc), [`get_mut`](Arena::get_mut),
//! [`free`](Arena::free), ...) is also the trait [`ViewMut`], implemented by [`Arena`] and by the
//! [`Branch`](crate::Branch) a [`fork_run`](Arena::fork_run) child gets; every collection method
//! that writes takes `&mut impl ViewMut`. Reads go through [`View`] (an `Arena`, a
//! [`Snapshot`] or a `Branch`). Failures follow one convention, tabled in the [`Error`] docs:
//! accessors panic and have a `try_` twin, operations that may allocate or free return `Result`.
//!
//! Several objects and collections are lent at once, each checked once, by
//! [`ViewMut::lend_mut`] (mutably, their memory checked disjoint) and [`View::lend`] (for
//! reading). A search that snapshots and restores between batches of writes lends its state
//! through a [`Loan`], which holds the arena and lends the views again after each snapshot or
//! restore (see the [`loan`] module).
//!
//! # Sizing an arena
//!
//! [`Arena::with_capacity`] reserves address space, not memory: pages are used as they are
//! touched, so reserve generously. What typed use takes of it: the allocator's header and page
//! map (1 KiB plus one byte per page of capacity) at the start; each small object rounded up to
//! its size class (the object and an 8-byte stamp, 16 to 1024 bytes; a page per slab of one
//! class); each object over 1016 bytes, whole pages; a vector's buffer up to twice its length; a
//! map's table up to 4/3 of its entries, a power of two. [`Arena::alloc_stats`] reports the
//! pages in use. The private page copies an arena keeps between snapshots are a separate budget
//! ([`ArenaBuilder::private_budget`](crate::ArenaBuilder::private_budget)).
//!
//! # Proxies
//!
//! A [proxy](crate::proxy) shares the allocator and every object with its source until it
//! writes their pages; the seed's `Proxy(obj)` examples are in the [`proxy`](crate::proxy)
//! module. Allocating or freeing in a proxy writes allocator metadata (a slab page, sometimes
//! the header or the page map): after that, allocate in only one of the two. If both allocate,
//! each sees a mix of its own metadata pages and the other's; it never causes undefined
//! behaviour, and objects of either are validated by their stamps, but objects allocated in one
//! may be invisible to the other.

pub(crate) mod lend;
pub mod loan;
pub(crate) mod marks;

use crate::alloc::{self, AllocStats};
use crate::arena::Arena;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::ptr::handles::ArenaVec;
use crate::ptr::value::Value;
use crate::ptr::{self, Ptr};
use crate::snapshot::Snapshot;
use bytemuck::Zeroable;
pub use lend::{Lend, PtrMut};
pub use loan::{Lender, Loan};
use std::ops::Range;

/// What keeps [`View`] and [`ViewMut`] to the crate's own types, and [`ViewMut::arena_mut`] to
/// the crate's own code.
pub(crate) mod sealed {
    /// Implemented by the types that may be views: outside code cannot name it, so it cannot
    /// implement [`View`](crate::View) or [`ViewMut`](crate::ViewMut). Each type's module
    /// implements it next to its `View`.
    pub trait Sealed {}
    impl Sealed for crate::Arena {}
    impl Sealed for crate::Snapshot {}

    /// Proof that a call of [`ViewMut::arena_mut`](crate::ViewMut::arena_mut) comes from inside
    /// the crate: its field is private and nothing outside the crate hands one out, so outside
    /// code cannot call the method even through a generic bound. (A sealed supertrait alone would
    /// not do: its methods stay callable wherever the trait is.)
    #[derive(Clone, Copy, Debug)]
    pub struct Token(());

    /// The only way to make a [`Token`].
    pub(crate) const TOKEN: Token = Token(());
}

use sealed::{Token, TOKEN};

/// Read access to typed values: implemented by [`Arena`], [`Snapshot`] and
/// [`Branch`](crate::Branch), so that code reading the arena's objects and collections works on
/// any of them.
///
/// ```
/// use cowarena::{Arena, Ptr, View};
/// fn sum(view: &impl View, items: &[Ptr<u64>]) -> u64 {
///     items.iter().map(|&p| *view.get(p)).sum()
/// }
/// let mut a = Arena::with_capacity(1 << 20)?;
/// let items = [a.alloc(1u64)?, a.alloc(2u64)?];
/// let s = a.snapshot()?;
/// *a.get_mut(items[0]) = 10;
/// assert_eq!((sum(&a, &items), sum(&s, &items)), (12, 3));
/// # Ok::<(), cowarena::Error>(())
/// ```
pub trait View: sealed::Sealed {
    /// The whole arena's bytes (for a snapshot, mapped on first use).
    ///
    /// # Errors
    /// For a [`Snapshot`], [`Error::Os`] if its view cannot be mapped (see
    /// [`Snapshot::try_as_bytes`]); never for an arena.
    fn try_bytes(&self) -> Result<&[u8]>;

    /// The object `p` names.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] saying why `p` names no live object here;
    /// for a snapshot, the errors of [`try_bytes`](View::try_bytes).
    #[inline]
    fn try_get<T: Value>(&self, p: Ptr<T>) -> Result<&T> {
        ptr::check(self.try_bytes()?, p)
    }

    /// The object `p` names.
    ///
    /// # Panics
    /// If `p` names no live object here (see [`try_get`](View::try_get)).
    #[inline]
    #[track_caller]
    fn get<T: Value>(&self, p: Ptr<T>) -> &T {
        // `ptr::get`, not `try_get`: its failures do not return, so a loop of `get`s keeps the
        // checks on the bytes out of its body (see `ptr::object`).
        match self.try_bytes() {
            Ok(bytes) => ptr::get(bytes, p),
            Err(e) => ptr::fail(e),
        }
    }

    /// The root object set with [`Arena::set_root`], if there is one of type `T`.
    fn root<T: Value>(&self) -> Option<Ptr<T>> {
        let (offset, stamp) = alloc::root(self.try_bytes().ok()?, type_tag::<T>())?;
        Some(Ptr::from_raw(offset, stamp))
    }

    /// Lends several objects and collections for reading at once, each checked once: the
    /// read-only twin of [`ViewMut::lend_mut`], with the same shapes of `handles`; a [`Ptr`] is
    /// lent as `&T`, an [`ArenaVec`] or [`ArenaBytes`](crate::ArenaBytes) as a slice, an
    /// [`ArenaMap`](crate::ArenaMap) as a [`MapRef`](crate::collections::MapRef). Handles may
    /// overlap (nothing is written).
    ///
    /// ```
    /// use cowarena::{Arena, ArenaMap, ArenaVec, View};
    /// let mut a = Arena::with_capacity(1 << 20)?;
    /// let order = ArenaVec::from_slice(&mut a, &[3u16, 1, 4])?;
    /// let names = ArenaMap::<u16, u8>::new(&mut a)?;
    /// names.insert(&mut a, 4, b'd')?;
    /// let total = a.alloc(8u64)?;
    /// let s = a.snapshot()?;
    /// let (order, names, total) = s.lend((order, names, total));
    /// assert_eq!((order, names.get(&4), *total), (&[3, 1, 4][..], Some(&b'd'), 8));
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Panics
    /// If a handle names nothing here (see [`try_lend`](Self::try_lend)).
    #[track_caller]
    fn lend<L: Lend>(&self, handles: L) -> L::Ref<'_> {
        match self.try_lend(handles) {
            Ok(refs) => refs,
            Err(e) => ptr::fail(e),
        }
    }

    /// Like [`lend`](Self::lend), but returns why the handles cannot be lent.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] for a handle that names no live object or collection here; for a
    /// snapshot, the errors of [`try_bytes`](View::try_bytes).
    fn try_lend<L: Lend>(&self, handles: L) -> Result<L::Ref<'_>> {
        handles.lend_ref(self.try_bytes()?, TOKEN)
    }
}

/// Write access to typed values and bytes: implemented by [`Arena`] and by
/// [`Branch`](crate::Branch) (an arena inside a [`fork_run`](Arena::fork_run) child), so that
/// code changing objects and collections works on either.
///
/// Every collection method that writes takes `&mut impl ViewMut`. The methods here are the
/// arena's typed write API ([`Arena::alloc`], [`Arena::get_mut`], ...), with the same
/// behaviour; on an `Arena` its inherent methods are found first, so bring the trait into scope
/// (`use cowarena::ViewMut`) to call them on a `Branch` or through a generic bound.
/// Snapshots, restores and proxies are not part of it: a branch cannot take them.
///
/// ```
/// use cowarena::{Arena, ArenaVec, ViewMut};
/// /// Works in the arena and in a forked child alike.
/// fn record(w: &mut impl ViewMut, log: ArenaVec<u32>, step: u32) -> cowarena::Result<()> {
///     log.push(w, step)?;
///     let total = w.alloc(u64::from(step))?;
///     *w.get_mut(total) += 1;
///     Ok(())
/// }
/// # fn main() -> Result<(), cowarena::ForkError> {
/// let mut a = Arena::with_capacity(1 << 20)?;
/// let log = ArenaVec::new(&mut a)?;
/// record(&mut a, log, 1)?;
/// let in_child = a.fork_run(|b| {
///     record(b, log, 2).unwrap();
///     log.len(b) as u32
/// })?;
/// assert_eq!((in_child, log.len(&a)), (2, 1));
/// # Ok(())
/// # }
/// ```
///
/// Outside code cannot reach the arena behind the trait (a `Token` cannot be made outside the
/// crate)...
///
/// ```compile_fail,E0603
/// fn steal<'a>(w: &'a mut impl cowarena::ViewMut) -> &'a mut cowarena::Arena {
///     w.arena_mut(cowarena::typed::sealed::TOKEN)
/// }
/// ```
///
/// ...nor implement it, or [`View`], for its own types:
///
/// ```compile_fail,E0277
/// struct Mine(cowarena::Arena);
/// impl cowarena::View for Mine {
///     fn try_bytes(&self) -> cowarena::Result<&[u8]> {
///         Ok(self.0.as_bytes())
///     }
/// }
/// ```
pub trait ViewMut: View {
    /// The arena behind the view. Only the crate can call it: a `Token` cannot be made outside.
    fn arena_mut(&mut self, token: Token) -> &mut Arena;

    /// Copies `bytes` into the arena at `offset` (see [`Arena::write`]).
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if the range does not fit.
    fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<()> {
        self.arena_mut(TOKEN).write(offset, bytes)
    }

    /// A mutable view of `range`, whose pages are marked as written (see [`Arena::bytes_mut`]).
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if the range does not fit or is
    /// reversed.
    fn bytes_mut(&mut self, range: Range<usize>) -> Result<&mut [u8]> {
        self.arena_mut(TOKEN).bytes_mut(range)
    }

    /// Moves `value` into the arena (see [`Arena::alloc`]).
    ///
    /// # Errors
    /// As [`Arena::alloc`].
    #[inline(always)]
    fn alloc<T: Value>(&mut self, value: T) -> Result<Ptr<T>> {
        self.arena_mut(TOKEN).alloc(value)
    }

    /// Allocates a zeroed `T` in place (see [`Arena::alloc_zeroed`]).
    ///
    /// # Errors
    /// As [`Arena::alloc_zeroed`].
    fn alloc_zeroed<T: Value + Zeroable>(&mut self) -> Result<Ptr<T>> {
        self.arena_mut(TOKEN).alloc_zeroed()
    }

    /// A vector of `len` zeroed elements (see [`Arena::alloc_slice_zeroed`]).
    ///
    /// # Errors
    /// As [`Arena::alloc_slice_zeroed`].
    fn alloc_slice_zeroed<T: Value + Zeroable>(&mut self, len: usize) -> Result<ArenaVec<T>> {
        self.arena_mut(TOKEN).alloc_slice_zeroed(len)
    }

    /// The object `p` names, for writing (see [`Arena::get_mut`]).
    ///
    /// # Panics
    /// If `p` names no live object here.
    #[inline]
    #[track_caller]
    fn get_mut<T: Value>(&mut self, p: Ptr<T>) -> &mut T {
        self.arena_mut(TOKEN).get_mut(p)
    }

    /// The object `p` names, for writing (see [`Arena::try_get_mut`]).
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] saying why `p` names no live object here.
    #[inline]
    fn try_get_mut<T: Value>(&mut self, p: Ptr<T>) -> Result<&mut T> {
        self.arena_mut(TOKEN).try_get_mut(p)
    }

    /// Frees the object `p` names (see [`Arena::free`]).
    ///
    /// # Errors
    /// As [`Arena::free`].
    #[inline(always)]
    fn free<T: Value>(&mut self, p: Ptr<T>) -> Result<()> {
        self.arena_mut(TOKEN).free(p)
    }

    /// Makes `p` the root (see [`Arena::set_root`]).
    ///
    /// # Panics
    /// If `p` is neither null nor a live object here.
    #[track_caller]
    fn set_root<T: Value>(&mut self, p: Ptr<T>) {
        self.arena_mut(TOKEN).set_root(p)
    }

    /// Makes `p` the root, or says why it cannot be (see [`Arena::try_set_root`]).
    ///
    /// # Errors
    /// As [`Arena::try_set_root`].
    fn try_set_root<T: Value>(&mut self, p: Ptr<T>) -> Result<()> {
        self.arena_mut(TOKEN).try_set_root(p)
    }

    /// Lends several objects and collections mutably at once: `handles` is a [`Ptr`], an
    /// [`ArenaVec`], an [`ArenaMap`](crate::ArenaMap), an [`ArenaBytes`](crate::ArenaBytes), or a
    /// tuple of up to twelve of them (tuples nest), and the result has the same shape: a
    /// [`PtrMut`] for a `Ptr`, a [`VecMut`](crate::VecMut) for a vector or byte string, a
    /// [`MapMut`](crate::MapMut) for a map. The views mark the pages they write as they go, so
    /// lending costs the same for a vector of any size, and a page only read is not frozen by
    /// the next snapshot. For a loop with snapshots and restores in between, lend through a
    /// [`Loan`] instead.
    ///
    /// Every handle is checked, and their memory must not overlap (the same handle twice is
    /// refused), so the views never alias. A vector lent alone may grow; one lent with others
    /// pushes within its capacity.
    ///
    /// ```
    /// use cowarena::{Arena, ArenaVec, ViewMut};
    /// let mut a = Arena::with_capacity(1 << 20)?;
    /// let counts = ArenaVec::from_elem(&mut a, 0u32, 100)?;
    /// let order = ArenaVec::from_slice(&mut a, &[3u16, 1, 4, 1, 5])?;
    /// let total = a.alloc(0u64)?;
    /// let (mut counts_w, order_w, mut total_w) = a.lend_mut((counts, order, total));
    /// for &i in order_w.iter() {
    ///     counts_w[usize::from(i)] += 1;
    ///     *total_w += 1;
    /// }
    /// assert_eq!((counts.as_slice(&a)[1], *a.get(total)), (2, 5));
    /// assert!(a.try_lend_mut((counts, counts)).is_err()); // would alias
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Panics
    /// If a handle names nothing here or two overlap (see [`try_lend_mut`](Self::try_lend_mut)).
    #[track_caller]
    fn lend_mut<L: Lend>(&mut self, handles: L) -> L::Out<'_> {
        match self.try_lend_mut(handles) {
            Ok(out) => out,
            Err(e) => ptr::fail(e),
        }
    }

    /// Like [`lend_mut`](Self::lend_mut), but returns why the handles cannot be lent.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] for a handle that names no live object or
    /// collection here; [`Error::Overlap`] when two handles' memory
    /// overlaps.
    fn try_lend_mut<L: Lend>(&mut self, handles: L) -> Result<L::Out<'_>> {
        lend::lend(self.arena_mut(TOKEN), handles)
    }
}

impl View for Arena {
    #[inline]
    fn try_bytes(&self) -> Result<&[u8]> {
        Ok(self.as_bytes())
    }
}

impl ViewMut for Arena {
    #[inline(always)]
    fn arena_mut(&mut self, _: Token) -> &mut Arena {
        self
    }
}

impl View for Snapshot {
    #[inline]
    fn try_bytes(&self) -> Result<&[u8]> {
        self.try_as_bytes()
    }
}

/// A tag naming `T`, stored with the root so that `root::<U>()` of another type finds nothing.
///
/// It hashes the type's name, size and alignment rather than its `TypeId`, which changes with
/// every build: a snapshot saved to a file must find its root again in the next version of the
/// program (after a deploy) and in other programs that declare the same type. (Type names are
/// what the compiler prints; two types of the same path, size and alignment share a tag.)
fn type_tag<T: 'static>() -> u64 {
    let name = std::any::type_name::<T>().as_bytes();
    let seed = ((size_of::<T>() as u64) << 32) ^ align_of::<T>() as u64;
    xxhash_rust::xxh3::xxh3_64_with_seed(name, seed) | 1
}

/// The typed API of an arena. See the [module docs](crate::typed).
impl Arena {
    /// Moves `value` into the arena and returns a [`Ptr`] to it. Zero-sized types work: each
    /// allocation is distinct and takes 8 bytes. `value` is moved through the stack; for large
    /// objects see [`alloc_zeroed`](Arena::alloc_zeroed). A type aligned above 4096 bytes does
    /// not compile (see the [module docs](crate::typed#types-aligned-above-4096-bytes)).
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 16)?;
    /// let p = a.alloc([1u32, 2, 3])?;
    /// assert_eq!(a.get(p)[2], 3);
    /// let too_big = a.alloc([[0u8; 4096]; 16]);
    /// assert!(matches!(too_big, Err(cowarena::Error::OutOfMemory { .. })));
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the arena has no room;
    /// [`Error::Unsupported`] when raw writes occupy the allocator's
    /// header (see the [module docs](crate::typed#where-the-allocator-lives-and-raw-bytes));
    /// [`Error::Corrupt`] when raw writes damaged its metadata.
    #[inline(always)]
    pub fn alloc<T: Value>(&mut self, value: T) -> Result<Ptr<T>> {
        let (offset, stamp) = alloc::alloc(self, &Ptr::<T>::PLACE, bytemuck::bytes_of(&value))?;
        Ok(Ptr::from_raw(offset, stamp))
    }

    /// Allocates a zeroed `T` in place. Unlike [`alloc`](Arena::alloc), the value never passes
    /// through the stack, which suits large objects.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(16 << 20)?;
    /// let grid = a.alloc_zeroed::<[[u64; 1024]; 1024]>()?;   // 8 MiB
    /// a.get_mut(grid)[512][3] = 1;
    /// assert_eq!(a.get(grid)[512].iter().sum::<u64>(), 1);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`alloc`](Arena::alloc).
    pub fn alloc_zeroed<T: Value + Zeroable>(&mut self) -> Result<Ptr<T>> {
        let (offset, stamp) = alloc::alloc(self, &Ptr::<T>::PLACE, &[])?;
        self.bytes_mut(offset..offset + size_of::<T>())?.fill(0);
        Ok(Ptr::from_raw(offset, stamp))
    }

    /// A vector of `len` zeroed elements of `T`, allocated at its exact size: an array whose
    /// length is known only at run time (`alloc_zeroed::<[T; N]>` needs `N` at compile time).
    /// The same as [`ArenaVec::with_len_zeroed`]; it can grow later like any vector.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// let n = 1000;
    /// let marks = a.alloc_slice_zeroed::<u8>(n)?;
    /// marks.as_mut_slice(&mut a)[n - 1] = 1;
    /// assert_eq!(marks.iter(&a).map(|&m| usize::from(m)).sum::<usize>(), 1);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the arena has no room.
    pub fn alloc_slice_zeroed<T: Value + Zeroable>(&mut self, len: usize) -> Result<ArenaVec<T>> {
        ArenaVec::with_len_zeroed(self, len)
    }

    /// The object `p` names.
    ///
    /// # Panics
    /// If `p` names no live object in this arena, with the reason (see
    /// [`try_get`](Arena::try_get)).
    #[inline]
    #[track_caller]
    pub fn get<T: Value>(&self, p: Ptr<T>) -> &T {
        ptr::get(self.as_bytes(), p)
    }

    /// The object `p` names.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// let p = a.alloc(5u64)?;
    /// a.free(p)?;
    /// let err = a.try_get(p).unwrap_err();
    /// assert!(matches!(
    ///     err,
    ///     cowarena::Error::InvalidPtr { reason: cowarena::InvalidPtrReason::Freed, .. }
    /// ));
    /// assert!(err.to_string().contains("was freed"), "{err}");
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidPtr`], whose reason says whether `p` is out of
    /// range, misaligned, null, never allocated, freed, from another arena, or from a state a
    /// [`restore`](Arena::restore) undid.
    #[inline]
    pub fn try_get<T: Value>(&self, p: Ptr<T>) -> Result<&T> {
        ptr::check(self.as_bytes(), p)
    }

    /// The object `p` names, for writing; its pages are marked as written.
    ///
    /// # Panics
    /// If `p` names no live object in this arena (see [`try_get`](Arena::try_get)).
    #[inline]
    #[track_caller]
    pub fn get_mut<T: Value>(&mut self, p: Ptr<T>) -> &mut T {
        match self.try_get_mut(p) {
            Ok(v) => v,
            Err(e) => ptr::fail(e),
        }
    }

    /// The object `p` names, for writing; its pages are marked as written.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// let p = a.alloc(1u32)?;
    /// *a.try_get_mut(p)? += 1;
    /// assert_eq!(*a.get(p), 2);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`try_get`](Arena::try_get).
    #[inline]
    pub fn try_get_mut<T: Value>(&mut self, p: Ptr<T>) -> Result<&mut T> {
        ptr::check(self.as_bytes(), p)?;
        let offset = p.offset();
        let bytes = self.bytes_mut(offset..offset + size_of::<T>())?;
        // SAFETY: `check` found a live `T` at `offset`, in bounds, aligned for `T` (in memory),
        // whose bytes are a valid `T`; `bytes` is exactly its bytes, borrowed mutably from the
        // arena for the reference's life. Only valid values can be written through it.
        Ok(unsafe { &mut *bytes.as_mut_ptr().cast::<T>() })
    }

    /// Frees the object `p` names; its space is reused by later allocations. Every copy of `p`
    /// becomes invalid.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// let p = a.alloc(1u64)?;
    /// a.free(p)?;
    /// assert!(a.free(p).is_err());    // a double free is refused
    /// let q = a.alloc(2u64)?;
    /// assert_eq!(q.offset(), p.offset());
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] if `p` names no live object here (a double
    /// free included); [`Error::Corrupt`] when raw writes damaged the
    /// allocator's metadata. Nothing is freed then.
    #[inline(always)]
    pub fn free<T: Value>(&mut self, p: Ptr<T>) -> Result<()> {
        alloc::free(
            self,
            p.offset(),
            p.stamp(),
            &Ptr::<T>::PLACE,
            std::any::type_name::<T>(),
        )
    }

    /// Makes `p` the arena's root: the one well-known entry object, found again with
    /// [`root`](Arena::root) in the arena, its snapshots, and arenas made from them. A null `p`
    /// clears the root.
    ///
    /// # Panics
    /// If `p` is neither null nor a live object of this arena (see
    /// [`try_set_root`](Arena::try_set_root)).
    #[track_caller]
    pub fn set_root<T: Value>(&mut self, p: Ptr<T>) {
        if let Err(e) = self.try_set_root(p) {
            ptr::fail(e)
        }
    }

    /// Like [`set_root`](Arena::set_root), but returns the reason `p` cannot be the root.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] if `p` is neither null nor a live object
    /// here; the errors of [`alloc`](Arena::alloc)'s first call, which initializes the
    /// allocator (the root lives in its header).
    ///
    /// ```
    /// use cowarena::{Arena, Ptr};
    /// let mut a = Arena::with_capacity(1 << 20)?;
    /// assert_eq!(a.root::<u64>(), None);
    /// let p = a.alloc(7u64)?;
    /// a.try_set_root(p)?;
    /// let s = a.snapshot()?;
    /// let b = s.to_arena()?;
    /// assert_eq!(*b.get(b.root::<u64>().unwrap()), 7);
    /// assert_eq!(b.root::<u32>(), None);    // the root is a u64
    /// a.try_set_root(Ptr::<u64>::null())?;
    /// assert_eq!(a.root::<u64>(), None);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn try_set_root<T: Value>(&mut self, p: Ptr<T>) -> Result<()> {
        if !p.is_null() {
            ptr::check(self.as_bytes(), p)?;
        }
        alloc::set_root(self, p.offset(), p.stamp(), type_tag::<T>())
    }

    /// The root set with [`set_root`](Arena::set_root), if there is one of type `T`.
    pub fn root<T: Value>(&self) -> Option<Ptr<T>> {
        View::root(self)
    }

    /// How the typed allocator uses this arena: pages in use, free, and live objects. Walks the
    /// allocator's metadata, so it costs O(pages in use).
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// let p = a.alloc([0u8; 128])?;
    /// assert_eq!(a.alloc_stats()?.small_objects, 1);
    /// a.free(p)?;
    /// assert_eq!(a.alloc_stats()?.small_objects, 0);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Corrupt`] when raw writes damaged the allocator's metadata.
    pub fn alloc_stats(&self) -> Result<AllocStats> {
        Ok(alloc::stats(self.as_bytes())?.unwrap_or_default())
    }
}

/// Typed reads of a snapshot. See the [module docs](crate::typed).
impl Snapshot {
    /// The object `p` names in this snapshot.
    ///
    /// # Panics
    /// If `p` names no live object in this snapshot, or the snapshot cannot be mapped (see
    /// [`try_get`](Snapshot::try_get)).
    #[inline]
    #[track_caller]
    pub fn get<T: Value>(&self, p: Ptr<T>) -> &T {
        View::get(self, p)
    }

    /// The object `p` names in this snapshot, or why it names none.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// let p = a.alloc(1u8)?;
    /// let s = a.snapshot()?;
    /// *a.get_mut(p) = 2;
    /// let q = a.alloc(3u8)?;
    /// assert_eq!(*s.try_get(p)?, 1);
    /// assert!(s.try_get(q).is_err());       // allocated after the snapshot
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Arena::try_get`], and the errors of [`try_as_bytes`](Snapshot::try_as_bytes).
    #[inline]
    pub fn try_get<T: Value>(&self, p: Ptr<T>) -> Result<&T> {
        View::try_get(self, p)
    }

    /// The root of the arena when this snapshot was taken, if it is of type `T`.
    pub fn root<T: Value>(&self) -> Option<Ptr<T>> {
        View::root(self)
    }

    /// How the typed allocator used the arena when this snapshot was taken (see
    /// [`Arena::alloc_stats`]).
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the allocator's metadata fails its checks;
    /// the errors of [`try_as_bytes`](Snapshot::try_as_bytes).
    pub fn alloc_stats(&self) -> Result<AllocStats> {
        Ok(alloc::stats(self.try_as_bytes()?)?.unwrap_or_default())
    }
}
