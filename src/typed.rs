//! Typed values inside the arena: [`Arena::alloc`], [`Ptr`], [`Arena::get`], and the
//! collections built on them.
//!
//! Values of any [`bytemuck::Pod`] type can live in an arena. Because the allocator keeps *all*
//! of its state inside the arena too, everything the arena does to its pages it does to the
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
//! [`Error::Unsupported`](crate::Error::Unsupported)) if raw writes already put non-zero bytes where the header and page
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
//! return [`Error::InvalidPtr`](crate::Error::InvalidPtr) with the reason, [`get`](Arena::get) and
//! [`get_mut`](Arena::get_mut) panic with it. Since `Ptr` is `Pod`, one can also be made from
//! raw bytes: such a `Ptr` is checked the same way and can never cause undefined behaviour, but
//! one that copies the offset and stamp of a live object names that object.
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

use crate::alloc::{self, AllocStats};
use crate::arena::Arena;
use crate::error::Result;
use crate::proxy::{ProxyMut, ProxyRef};
use crate::ptr::{self, Ptr};
use crate::snapshot::Snapshot;
use bytemuck::Pod;
use std::any::TypeId;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

mod private {
    pub trait Sealed {}
    impl Sealed for crate::Arena {}
    impl Sealed for crate::Snapshot {}
    impl Sealed for crate::ProxyRef<'_> {}
    impl Sealed for crate::ProxyMut<'_> {}
}

/// Read access to typed values: implemented by [`Arena`] (including proxies) and [`Snapshot`],
/// so that code reading the arena's objects and collections works on either.
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
pub trait View: private::Sealed {
    /// The whole arena's bytes (for a snapshot, mapped on first use).
    fn try_bytes(&self) -> Result<&[u8]>;

    /// The object `p` names, or [`Error::InvalidPtr`](crate::Error::InvalidPtr) saying why `p`
    /// names no live object here.
    #[inline]
    fn try_get<T: Pod>(&self, p: Ptr<T>) -> Result<&T> {
        ptr::check(self.try_bytes()?, p)
    }

    /// The object `p` names.
    ///
    /// # Panics
    /// If `p` names no live object here (see [`try_get`](View::try_get)).
    #[inline]
    #[track_caller]
    fn get<T: Pod>(&self, p: Ptr<T>) -> &T {
        match self.try_get(p) {
            Ok(v) => v,
            Err(e) => ptr::fail(e),
        }
    }

    /// The root object set with [`Arena::set_root`], if there is one of type `T`.
    fn root<T: Pod>(&self) -> Option<Ptr<T>> {
        let (offset, stamp) = alloc::root(self.try_bytes().ok()?, type_tag::<T>())?;
        Some(Ptr::from_raw(offset, stamp))
    }
}

impl View for Arena {
    #[inline]
    fn try_bytes(&self) -> Result<&[u8]> {
        Ok(self.as_bytes())
    }
}

impl View for Snapshot {
    #[inline]
    fn try_bytes(&self) -> Result<&[u8]> {
        self.try_as_bytes()
    }
}

/// A proxy read while its source is borrowed (or gone): see [`crate::proxy`].
impl View for ProxyRef<'_> {
    #[inline]
    fn try_bytes(&self) -> Result<&[u8]> {
        Ok(self.as_bytes())
    }
}

/// A proxy written while its source is borrowed (or gone): see [`crate::proxy`].
impl View for ProxyMut<'_> {
    #[inline]
    fn try_bytes(&self) -> Result<&[u8]> {
        Ok(self.as_bytes())
    }
}

/// A tag naming `T` within this process, stored with the root so that `root::<U>()` of another
/// type finds nothing.
fn type_tag<T: 'static>() -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(TypeId::of::<T>()) | 1
}

/// The typed API of an arena. See the [module docs](crate::typed).
impl Arena {
    /// Moves `value` into the arena and returns a [`Ptr`] to it.
    ///
    /// Fails with [`Error::OutOfMemory`](crate::Error::OutOfMemory) when the arena has no room,
    /// and with [`Error::Unsupported`](crate::Error::Unsupported) for a type aligned above the page
    /// size or when raw writes occupy the allocator's header (see the
    /// [module docs](crate::typed#where-the-allocator-lives-and-raw-bytes)). Zero-sized types
    /// work: each allocation is distinct and takes 8 bytes. `value` is moved through the stack;
    /// for large objects see [`alloc_zeroed`](Arena::alloc_zeroed).
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 16)?;
    /// let p = a.alloc([1u32, 2, 3])?;
    /// assert_eq!(a.get(p)[2], 3);
    /// let too_big = a.alloc([[0u8; 4096]; 16]);
    /// assert!(matches!(too_big, Err(cowarena::Error::OutOfMemory { .. })));
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    #[inline(always)]
    pub fn alloc<T: Pod>(&mut self, value: T) -> Result<Ptr<T>> {
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
    pub fn alloc_zeroed<T: Pod>(&mut self) -> Result<Ptr<T>> {
        let (offset, stamp) = alloc::alloc(self, &Ptr::<T>::PLACE, &[])?;
        self.bytes_mut(offset..offset + size_of::<T>())?.fill(0);
        Ok(Ptr::from_raw(offset, stamp))
    }

    /// The object `p` names.
    ///
    /// # Panics
    /// If `p` names no live object in this arena, with the reason (see
    /// [`try_get`](Arena::try_get)).
    #[inline]
    #[track_caller]
    pub fn get<T: Pod>(&self, p: Ptr<T>) -> &T {
        ptr::get(self.as_bytes(), p)
    }

    /// The object `p` names, or [`Error::InvalidPtr`](crate::Error::InvalidPtr) if it is out of
    /// range, misaligned, null, never allocated, freed, from another arena, or from a state a
    /// [`restore`](Arena::restore) undid.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// let p = a.alloc(5u64)?;
    /// a.free(p)?;
    /// let err = a.try_get(p).unwrap_err();
    /// assert!(err.to_string().contains("was freed"), "{err}");
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    #[inline]
    pub fn try_get<T: Pod>(&self, p: Ptr<T>) -> Result<&T> {
        ptr::check(self.as_bytes(), p)
    }

    /// The object `p` names, for writing; its pages are marked as written.
    ///
    /// # Panics
    /// If `p` names no live object in this arena (see [`try_get`](Arena::try_get)).
    #[inline]
    #[track_caller]
    pub fn get_mut<T: Pod>(&mut self, p: Ptr<T>) -> &mut T {
        match self.try_get_mut(p) {
            Ok(v) => v,
            Err(e) => ptr::fail(e),
        }
    }

    /// The object `p` names, for writing, or the reason it names no live object (see
    /// [`try_get`](Arena::try_get)).
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// let p = a.alloc(1u32)?;
    /// *a.try_get_mut(p)? += 1;
    /// assert_eq!(*a.get(p), 2);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    #[inline]
    pub fn try_get_mut<T: Pod>(&mut self, p: Ptr<T>) -> Result<&mut T> {
        if !ptr::is_live(self.as_bytes(), p) {
            return Err(ptr::invalid(self.as_bytes(), p));
        }
        let offset = p.offset();
        let bytes = self.bytes_mut(offset..offset + size_of::<T>())?;
        Ok(bytemuck::from_bytes_mut(bytes))
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
    #[inline(always)]
    pub fn free<T: Pod>(&mut self, p: Ptr<T>) -> Result<()> {
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
    pub fn set_root<T: Pod>(&mut self, p: Ptr<T>) {
        if let Err(e) = self.try_set_root(p) {
            ptr::fail(e)
        }
    }

    /// Like [`set_root`](Arena::set_root), but returns the reason `p` cannot be the root.
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
    pub fn try_set_root<T: Pod>(&mut self, p: Ptr<T>) -> Result<()> {
        if !p.is_null() {
            ptr::check(self.as_bytes(), p)?;
        }
        alloc::set_root(self, p.offset(), p.stamp(), type_tag::<T>())
    }

    /// The root set with [`set_root`](Arena::set_root), if there is one of type `T`.
    pub fn root<T: Pod>(&self) -> Option<Ptr<T>> {
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
    pub fn get<T: Pod>(&self, p: Ptr<T>) -> &T {
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
    #[inline]
    pub fn try_get<T: Pod>(&self, p: Ptr<T>) -> Result<&T> {
        View::try_get(self, p)
    }

    /// The root of the arena when this snapshot was taken, if it is of type `T`.
    pub fn root<T: Pod>(&self) -> Option<Ptr<T>> {
        View::root(self)
    }

    /// How the typed allocator used the arena when this snapshot was taken (see
    /// [`Arena::alloc_stats`]).
    pub fn alloc_stats(&self) -> Result<AllocStats> {
        Ok(alloc::stats(self.try_as_bytes()?)?.unwrap_or_default())
    }
}
