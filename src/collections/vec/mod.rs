//! [`ArenaVec`]: a growable array in the arena: its header, construction, and reading and
//! lending its elements. Changes of length are in `resize`, and [`VecMut`], a checked-once
//! mutable view, in `view`.

mod resize;
mod view;

pub use self::view::VecMut;

use super::{elements, expect, layout_sig, lend_slice, store, type_mismatch, validate, Buf};
use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::ptr::handles::ArenaVec;
use crate::ptr::value::Value;
use crate::ptr::{self, Ptr};
use crate::typed::sealed::TOKEN;
use crate::typed::{View, ViewMut};
use bytemuck::{Pod, Zeroable};
use std::marker::PhantomData;
use std::ops::{Bound, Range, RangeBounds};
use std::ptr::NonNull;

/// The part of a vector that lives in the arena.
///
/// Invariant: `len <= cap`; `buf` holds `cap` elements (none for zero-sized elements, whose `cap`
/// is `u64::MAX`).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct VecHead {
    len: u64,
    cap: u64,
    elem: u64,
    buf: Buf,
}

/// Where a vector's elements are: their offset in the arena and their number.
#[derive(Clone, Copy, Debug)]
struct Elems {
    start: usize,
    len: usize,
}

/// What lending a vector needs, checked: where its header and its buffer of `cap` elements are
/// (arena offsets; `start` is 0 when there is no buffer).
#[derive(Clone, Copy, Debug)]
#[doc(hidden)]
pub struct Buffer {
    pub(super) head: usize,
    pub(super) start: usize,
    pub(super) cap: usize,
}

impl<T> ArenaVec<T> {
    /// The vector's header.
    fn head_ptr(&self) -> Ptr<VecHead> {
        self.head.cast()
    }
}

impl<T: Value> ArenaVec<T> {
    /// The header's size, which a view lends with the buffer (it writes the length).
    pub(super) const HEAD_SIZE: usize = size_of::<VecHead>();
    const ELEM: u64 = layout_sig(size_of::<T>(), align_of::<T>(), 0x7665_6374);

    /// A new, empty vector in `arena`.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the arena has no room for the vector's header (and the
    /// allocator's errors, see [`Arena::alloc`]).
    pub fn new(arena: &mut impl ViewMut) -> Result<Self> {
        Self::with_capacity(arena, 0)
    }

    /// A new, empty vector with room for `capacity` elements.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the arena has no room for them.
    pub fn with_capacity(arena: &mut impl ViewMut, capacity: usize) -> Result<Self> {
        Self::make(arena.arena_mut(TOKEN), capacity)
    }

    fn make(arena: &mut Arena, capacity: usize) -> Result<Self> {
        let (cap, buf) = if size_of::<T>() == 0 {
            (u64::MAX, Buf::default())
        } else {
            (capacity as u64, Self::alloc_buf(arena, capacity)?)
        };
        let head = VecHead {
            len: 0,
            cap,
            elem: Self::ELEM,
            buf,
        };
        match arena.alloc(head) {
            Ok(head) => Ok(ArenaVec {
                head: head.cast(),
                _type: PhantomData,
            }),
            Err(e) => {
                Self::free_buf(arena, buf, capacity)?;
                Err(e)
            }
        }
    }

    /// A new vector holding a copy of `values`, allocated at its exact size.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the arena has no room for them.
    pub fn from_slice(arena: &mut impl ViewMut, values: &[T]) -> Result<Self> {
        let arena = arena.arena_mut(TOKEN);
        let v = Self::make(arena, values.len())?;
        v.extend_from_slice(arena, values)?;
        Ok(v)
    }

    /// A new vector of `len` copies of `value`, allocated at its exact size.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// let v = cowarena::ArenaVec::from_elem(&mut a, 7u16, 1000)?;
    /// assert!(v.iter(&a).all(|&x| x == 7) && v.len(&a) == 1000);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the arena has no room for them.
    pub fn from_elem(arena: &mut impl ViewMut, value: T, len: usize) -> Result<Self> {
        let arena = arena.arena_mut(TOKEN);
        let v = Self::make(arena, len)?;
        v.resize(arena, len, value)?;
        Ok(v)
    }

    fn alloc_buf(arena: &mut Arena, cap: usize) -> Result<Buf> {
        let size = cap.checked_mul(size_of::<T>()).ok_or(Error::OutOfMemory {
            requested: usize::MAX,
            align: align_of::<T>(),
            capacity: arena.capacity(),
        })?;
        Buf::alloc(arena, size, align_of::<T>())
    }

    fn free_buf(arena: &mut Arena, buf: Buf, cap: usize) -> Result<()> {
        buf.free(arena, cap.saturating_mul(size_of::<T>()), align_of::<T>())
    }

    /// The header, checked to be live and of this element type.
    #[inline(always)]
    fn head(&self, bytes: &[u8]) -> Result<VecHead> {
        let h = *ptr::check(bytes, self.head_ptr())?;
        let size = size_of::<T>();
        if h.elem != Self::ELEM
            || h.len > h.cap
            || (size != 0 && (h.cap as usize).checked_mul(size).is_none())
        {
            return Err(type_mismatch::<Self>(self.head_ptr().offset()));
        }
        Ok(h)
    }

    /// Where the elements are, after checking the header and the buffer.
    #[inline(always)]
    fn elems(&self, bytes: &[u8]) -> Result<Elems> {
        let h = self.head(bytes)?;
        let len = h.len as usize;
        let start = h.buf.start(bytes, len * size_of::<T>(), align_of::<T>())?;
        Ok(Elems { start, len })
    }

    /// The elements.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] when the handle names no live vector of `T` in `view`;
    /// [`Error::InvalidValue`] naming the first element whose bytes are not a valid `T` (see
    /// [`Value`]: each element is checked, which costs nothing for a `Pod` type); for a
    /// snapshot, the errors of [`View::try_bytes`].
    #[inline]
    pub fn try_as_slice<'a>(&self, view: &'a impl View) -> Result<&'a [T]> {
        self.slice_in(view.try_bytes()?)
    }

    /// The elements.
    ///
    /// # Panics
    /// If the handle names no live vector in `view` (see [`try_as_slice`](Self::try_as_slice)).
    #[track_caller]
    #[inline]
    pub fn as_slice<'a>(&self, view: &'a impl View) -> &'a [T] {
        expect(self.try_as_slice(view))
    }

    /// The number of elements.
    ///
    /// # Errors
    /// As [`try_as_slice`](Self::try_as_slice).
    #[inline]
    pub fn try_len(&self, view: &impl View) -> Result<usize> {
        Ok(self.head(view.try_bytes()?)?.len as usize)
    }

    /// The number of elements.
    ///
    /// # Panics
    /// If the handle names no live vector in `view`.
    #[track_caller]
    #[inline]
    pub fn len(&self, view: &impl View) -> usize {
        expect(self.try_len(view))
    }

    /// Whether the vector is empty.
    ///
    /// # Panics
    /// If the handle names no live vector in `view`.
    #[track_caller]
    pub fn is_empty(&self, view: &impl View) -> bool {
        self.len(view) == 0
    }

    /// The element at `index`, if there is one.
    ///
    /// # Errors
    /// As [`try_as_slice`](Self::try_as_slice).
    #[inline]
    pub fn try_get<'a>(&self, view: &'a impl View, index: usize) -> Result<Option<&'a T>> {
        let bytes = view.try_bytes()?;
        let e = self.elems(bytes)?;
        if index >= e.len {
            return Ok(None);
        }
        // SAFETY: `elems` checked that `bytes` holds the `len` elements at `start`, aligned, and
        // `index < len`.
        let one = unsafe { elements(bytes, e.start + index * size_of::<T>(), 1)? };
        Ok(one.first())
    }

    /// The element at `index`, if there is one.
    ///
    /// # Panics
    /// If the handle names no live vector in `view`.
    #[track_caller]
    #[inline]
    pub fn get<'a>(&self, view: &'a impl View, index: usize) -> Option<&'a T> {
        expect(self.try_get(view, index))
    }

    /// Iterates over the elements (`try_as_slice(view)?.iter()` is the fallible form).
    ///
    /// # Panics
    /// If the handle names no live vector in `view`.
    #[track_caller]
    pub fn iter<'a>(&self, view: &'a impl View) -> std::slice::Iter<'a, T> {
        self.as_slice(view).iter()
    }

    /// The element at `index`, for writing; its pages are marked as written. Checks the handle
    /// on every call: in a loop, [`view_mut`](Self::view_mut) checks it once.
    ///
    /// # Errors
    /// As [`try_as_slice`](Self::try_as_slice).
    #[inline]
    pub fn try_get_mut<'a>(
        &self,
        arena: &'a mut impl ViewMut,
        index: usize,
    ) -> Result<Option<&'a mut T>> {
        let arena = arena.arena_mut(TOKEN);
        let e = self.elems(arena.as_bytes())?;
        if index >= e.len {
            return Ok(None);
        }
        // SAFETY: `elems` checked that the `len` elements lie in the arena, aligned, and
        // `index < len`.
        let one = unsafe { lend_slice::<T>(arena, e.start + index * size_of::<T>(), 1)? };
        Ok(one.first_mut())
    }

    /// The element at `index`, for writing; its pages are marked as written.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// let v = cowarena::ArenaVec::from_slice(&mut a, &[1u32, 2, 3])?;
    /// *v.get_mut(&mut a, 1).unwrap() += 40;
    /// assert_eq!(v.get_mut(&mut a, 3), None);
    /// assert_eq!(v.as_slice(&a), &[1, 42, 3]);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Panics
    /// If the handle names no live vector in `arena` (see [`try_get_mut`](Self::try_get_mut)).
    #[track_caller]
    #[inline]
    pub fn get_mut<'a>(&self, arena: &'a mut impl ViewMut, index: usize) -> Option<&'a mut T> {
        expect(self.try_get_mut(arena, index))
    }

    /// All elements as one mutable slice; every page they occupy is marked as written (so the
    /// next snapshot freezes them all). To write a few elements of a large vector, use
    /// [`slice_mut`](Self::slice_mut) or [`view_mut`](Self::view_mut).
    ///
    /// # Errors
    /// As [`try_as_slice`](Self::try_as_slice).
    #[inline]
    pub fn try_as_mut_slice<'a>(&self, arena: &'a mut impl ViewMut) -> Result<&'a mut [T]> {
        self.try_slice_mut(arena, ..)
    }

    /// All elements as one mutable slice, marked as written (see
    /// [`try_as_mut_slice`](Self::try_as_mut_slice)).
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// let v = cowarena::ArenaVec::from_slice(&mut a, &[3u8, 1, 2])?;
    /// v.as_mut_slice(&mut a).sort();
    /// assert_eq!(v.as_slice(&a), &[1, 2, 3]);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Panics
    /// If the handle names no live vector in `arena`.
    #[track_caller]
    #[inline]
    pub fn as_mut_slice<'a>(&self, arena: &'a mut impl ViewMut) -> &'a mut [T] {
        expect(self.try_as_mut_slice(arena))
    }

    /// Elements `range` as a mutable slice; exactly the pages they occupy are marked as
    /// written.
    ///
    /// # Errors
    /// As [`try_as_slice`](Self::try_as_slice), and [`Error::IndexOutOfBounds`] when the range
    /// does not lie within the vector (its end, or its start if past the end, is the index).
    #[inline]
    pub fn try_slice_mut<'a>(
        &self,
        arena: &'a mut impl ViewMut,
        range: impl RangeBounds<usize>,
    ) -> Result<&'a mut [T]> {
        let arena = arena.arena_mut(TOKEN);
        let e = self.elems(arena.as_bytes())?;
        let r = bounds(range, e.len)?;
        // SAFETY: `elems` checked that the `len` elements lie in the arena, aligned, and `bounds`
        // that `r` lies within `0..len`.
        unsafe { lend_slice::<T>(arena, e.start + r.start * size_of::<T>(), r.len()) }
    }

    /// Elements `range` as a mutable slice, marked as written (see
    /// [`try_slice_mut`](Self::try_slice_mut)).
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// let v = cowarena::ArenaVec::<u64>::with_len_zeroed(&mut a, 4096)?;
    /// let s = a.snapshot()?;
    /// v.slice_mut(&mut a, 10..20).fill(1);
    /// assert_eq!(a.stats().dirty_pages, 1);
    /// assert_eq!(v.iter(&a).sum::<u64>(), 10);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Panics
    /// If the handle names no live vector in `arena`, or the range is out of bounds.
    #[track_caller]
    #[inline]
    pub fn slice_mut<'a>(
        &self,
        arena: &'a mut impl ViewMut,
        range: impl RangeBounds<usize>,
    ) -> &'a mut [T] {
        expect(self.try_slice_mut(arena, range))
    }

    /// Replaces the element at `index`; its pages are marked as written.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// let v = cowarena::ArenaVec::from_slice(&mut a, &[1u32, 2, 3])?;
    /// v.set(&mut a, 0, 7);
    /// assert!(v.try_set(&mut a, 3, 0).is_err());
    /// assert_eq!(v.as_slice(&a), &[7, 2, 3]);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Panics
    /// If the handle names no live vector in `arena`, or `index` is out of bounds (see
    /// [`try_set`](Self::try_set)).
    #[track_caller]
    #[inline]
    pub fn set(&self, arena: &mut impl ViewMut, index: usize, value: T) {
        expect(self.try_set(arena, index, value))
    }

    /// Replaces the element at `index`, or says why it cannot.
    ///
    /// # Errors
    /// [`Error::IndexOutOfBounds`] if `index` is not less than the length; [`Error::InvalidPtr`]
    /// when the handle names no live vector. Nothing changes then.
    #[inline]
    pub fn try_set(&self, arena: &mut impl ViewMut, index: usize, value: T) -> Result<()> {
        let arena = arena.arena_mut(TOKEN);
        let e = self.elems(arena.as_bytes())?;
        if index >= e.len {
            return Err(Error::IndexOutOfBounds { index, len: e.len });
        }
        // SAFETY: `elems` checked that the `len` elements lie in the arena, aligned, and
        // `index < len`.
        unsafe { store(arena, e.start + index * size_of::<T>(), value) };
        Ok(())
    }

    /// Frees the vector's memory; every copy of the handle becomes invalid.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] when the handle names no live vector.
    pub fn free(self, arena: &mut impl ViewMut) -> Result<()> {
        let arena = arena.arena_mut(TOKEN);
        let h = self.head(arena.as_bytes())?;
        Self::free_buf(arena, h.buf, h.cap as usize)?;
        arena.free(self.head_ptr())
    }

    /// For lending: where the header and the whole buffer are, checked (a view may push up to
    /// the capacity), and its elements checked valid.
    pub(super) fn lend_plan(&self, bytes: &[u8]) -> Result<Buffer> {
        let h = self.head(bytes)?;
        let cap = usize::try_from(h.cap).unwrap_or(usize::MAX);
        let start = h
            .buf
            .start(bytes, cap.saturating_mul(size_of::<T>()), align_of::<T>())?;
        // SAFETY: `start` checked the buffer's `cap` elements, of which the `len` lie in `bytes`,
        // aligned (`head` checked `len <= cap`).
        unsafe { validate::<T>(bytes, start, h.len as usize)? };
        Ok(Buffer {
            head: self.head_ptr().offset(),
            start,
            cap,
        })
    }

    /// For a view that reads the elements without lending them (a map's view reads its text
    /// keys so): the spans of the header and of the elements, checked, the elements valid.
    pub(in crate::collections) fn read_plan(
        &self,
        bytes: &[u8],
    ) -> Result<(Range<usize>, Range<usize>)> {
        let e = self.elems(bytes)?;
        // SAFETY: `elems` checked that `bytes` holds the `len` elements at `start`, aligned.
        unsafe { validate::<T>(bytes, e.start, e.len)? };
        let head = self.head_ptr().offset();
        Ok((
            head..head + Self::HEAD_SIZE,
            e.start..e.start + e.len * size_of::<T>(),
        ))
    }

    /// The elements, read through `base`, the arena's first byte, without a check.
    ///
    /// # Safety
    /// [`read_plan`](Self::read_plan) of this handle succeeded against the bytes of the arena
    /// `base` starts, and the bytes of both its spans have not changed since and are not written
    /// while the result lives.
    #[inline]
    pub(in crate::collections) unsafe fn read_unchecked<'a>(&self, base: *const u8) -> &'a [T] {
        // SAFETY: the header `read_plan` checked: live, aligned, inside the arena, unchanged (the
        // caller's contract).
        let h = unsafe { base.add(self.head_ptr().offset()).cast::<VecHead>().read() };
        let len = h.len as usize;
        if len == 0 || size_of::<T>() == 0 {
            // SAFETY: no memory is read; `dangling` is non-null and aligned, and zero-sized
            // values were checked valid by `read_plan`.
            return unsafe { std::slice::from_raw_parts(NonNull::<T>::dangling().as_ptr(), len) };
        }
        // SAFETY: the `len` elements `read_plan` checked valid, at the buffer's start, aligned,
        // inside the arena and unchanged (the caller's contract).
        unsafe { std::slice::from_raw_parts(base.add(h.buf.offset as usize).cast::<T>(), len) }
    }

    /// The elements in `bytes`, checked.
    #[inline(always)]
    pub(super) fn slice_in<'a>(&self, bytes: &'a [u8]) -> Result<&'a [T]> {
        let e = self.elems(bytes)?;
        // SAFETY: `elems` checked that `bytes` holds the `len` elements at `start`, aligned.
        unsafe { elements(bytes, e.start, e.len) }
    }
}

impl<T: Value + Zeroable> ArenaVec<T> {
    /// A new vector of `len` zeroed elements, allocated at its exact size (the same as
    /// [`Arena::alloc_slice_zeroed`]). Pages the buffer takes fresh from the arena are zero
    /// already and are not written, so a large table costs only the pages it later writes.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(256 << 20)?;
    /// let table = cowarena::ArenaVec::<u64>::with_len_zeroed(&mut a, 8 << 20)?; // 64 MiB
    /// assert_eq!(table.len(&a), 8 << 20);
    /// assert!(a.stats().dirty_pages < 16);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the arena has no room for them.
    pub fn with_len_zeroed(arena: &mut impl ViewMut, len: usize) -> Result<Self> {
        let arena = arena.arena_mut(TOKEN);
        let v = Self::make(arena, len)?;
        v.extend_zeroed(arena, len)?;
        Ok(v)
    }
}

/// The index range `range` names in a sequence of `len`, or the index that is out of bounds.
fn bounds(range: impl RangeBounds<usize>, len: usize) -> Result<Range<usize>> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => len,
    };
    if end > len {
        return Err(Error::IndexOutOfBounds { index: end, len });
    }
    if start > end {
        return Err(Error::IndexOutOfBounds { index: start, len });
    }
    Ok(start..end)
}
