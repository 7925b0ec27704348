//! [`ArenaVec`]: a growable array in the arena, and [`VecMut`], a checked-once mutable view.

use super::{
    copy_within, elements, expect, layout_sig, lend_slice, type_mismatch, Buf, Marker, Marks,
    Tracker,
};
use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::ptr::handles::ArenaVec;
use crate::ptr::{self, Ptr};
use crate::typed::sealed::TOKEN;
use crate::typed::{View, ViewMut};
use bytemuck::{Pod, Zeroable};
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Bound, Index, IndexMut, Range, RangeBounds};
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
#[doc(hidden)]
pub struct Elems {
    pub(super) start: usize,
    pub(super) len: usize,
}

impl<T> ArenaVec<T> {
    /// The vector's header.
    fn head_ptr(&self) -> Ptr<VecHead> {
        self.head.cast()
    }
}

impl<T: Pod> ArenaVec<T> {
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
    /// [`Error::InvalidPtr`] when the handle names no live vector of `T` in `view` (and, for a
    /// snapshot, the errors of [`View::try_bytes`]).
    #[inline]
    pub fn try_as_slice<'a>(&self, view: &'a impl View) -> Result<&'a [T]> {
        let bytes = view.try_bytes()?;
        let e = self.elems(bytes)?;
        // SAFETY: `elems` checked that `bytes` holds the `len` elements at `start`, aligned.
        Ok(unsafe { elements(bytes, e.start, e.len) })
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
        Ok(self.try_as_slice(view)?.get(index))
    }

    /// The element at `index`, if there is one.
    ///
    /// # Panics
    /// If the handle names no live vector in `view`.
    #[track_caller]
    #[inline]
    pub fn get<'a>(&self, view: &'a impl View, index: usize) -> Option<&'a T> {
        self.as_slice(view).get(index)
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
        Ok(Some(unsafe {
            &mut lend_slice::<T>(arena, e.start + index * size_of::<T>(), 1)[0]
        }))
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
        Ok(unsafe { lend_slice::<T>(arena, e.start + r.start * size_of::<T>(), r.len()) })
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

    /// A mutable view of the elements, with the handle checked once: indexing it costs a bounds
    /// check and a test that the element's page is already marked as written (see [`VecMut`]).
    ///
    /// # Errors
    /// As [`try_as_slice`](Self::try_as_slice).
    #[inline]
    pub fn try_view_mut<'a>(&self, arena: &'a mut impl ViewMut) -> Result<VecMut<'a, T>> {
        let arena = arena.arena_mut(TOKEN);
        let e = self.elems(arena.as_bytes())?;
        arena.check_writable()?;
        let base = arena.base_mut();
        // SAFETY: `elems` checked that the buffer holds `len` aligned elements inside the arena;
        // the view keeps the arena borrowed, so the memory stays mapped and no other reference
        // into it can be made.
        Ok(unsafe { VecMut::new(base, e, Marker::Own(arena)) })
    }

    /// A mutable view of the elements, with the handle checked once (see
    /// [`try_view_mut`](Self::try_view_mut) and [`VecMut`]).
    ///
    /// # Panics
    /// If the handle names no live vector in `arena`.
    #[track_caller]
    #[inline]
    pub fn view_mut<'a>(&self, arena: &'a mut impl ViewMut) -> VecMut<'a, T> {
        expect(self.try_view_mut(arena))
    }

    /// Appends `value`, growing the buffer (to twice its size) when it is full.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] when the handle names no live vector; [`Error::OutOfMemory`] when
    /// the buffer must grow and the arena has no room; [`Error::CapacityOverflow`] when the
    /// length would not fit in a `usize`.
    #[inline]
    pub fn push(&self, arena: &mut impl ViewMut, value: T) -> Result<()> {
        self.extend_from_slice(arena, std::slice::from_ref(&value))
    }

    /// Appends all of `values`.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// let v = cowarena::ArenaVec::new(&mut a)?;
    /// v.extend_from_slice(&mut a, &[1u8, 2, 3])?;
    /// v.extend_from_slice(&mut a, &[4])?;
    /// assert_eq!(v.as_slice(&a), &[1, 2, 3, 4]);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`push`](Self::push).
    #[inline]
    pub fn extend_from_slice(&self, arena: &mut impl ViewMut, values: &[T]) -> Result<()> {
        let arena = arena.arena_mut(TOKEN);
        let (h, range) = self.grow_by(arena, values.len())?;
        let size = size_of::<T>();
        h.buf
            .bytes_mut(arena, range.start * size..range.end * size)?
            .copy_from_slice(bytemuck::cast_slice(values));
        arena.get_mut(self.head_ptr()).len = range.end as u64;
        Ok(())
    }

    /// Appends `additional` zeroed elements. Pages of the buffer that are zero already (fresh
    /// from the arena, or never written) are not written, so they cost no page copy and the
    /// next snapshot does not freeze them.
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn extend_zeroed(&self, arena: &mut impl ViewMut, additional: usize) -> Result<()> {
        let arena = arena.arena_mut(TOKEN);
        let (h, range) = self.grow_by(arena, additional)?;
        let size = size_of::<T>();
        if size > 0 && !range.is_empty() {
            let start = h.buf.check(arena.as_bytes(), range.end * size)?;
            zero(arena, start + range.start * size..start + range.end * size)?;
        }
        arena.get_mut(self.head_ptr()).len = range.end as u64;
        Ok(())
    }

    /// Makes the length `new_len`: truncates, or appends copies of `value`.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// let v = cowarena::ArenaVec::from_slice(&mut a, &[1u8, 2, 3])?;
    /// v.resize(&mut a, 5, 9)?;
    /// assert_eq!(v.as_slice(&a), &[1, 2, 3, 9, 9]);
    /// v.resize(&mut a, 1, 0)?;
    /// assert_eq!(v.as_slice(&a), &[1]);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn resize(&self, arena: &mut impl ViewMut, new_len: usize, value: T) -> Result<()> {
        let arena = arena.arena_mut(TOKEN);
        let len = self.head(arena.as_bytes())?.len as usize;
        if new_len <= len {
            return self.truncate(arena, new_len);
        }
        if bytemuck::bytes_of(&value).iter().all(|&b| b == 0) {
            return self.extend_zeroed(arena, new_len - len);
        }
        let (h, range) = self.grow_by(arena, new_len - len)?;
        let size = size_of::<T>();
        if size > 0 {
            let bytes = h
                .buf
                .bytes_mut(arena, range.start * size..range.end * size)?;
            let slice: &mut [T] = bytemuck::cast_slice_mut(bytes);
            slice.fill(value);
        }
        arena.get_mut(self.head_ptr()).len = range.end as u64;
        Ok(())
    }

    /// Checks the header, makes room for `additional` more elements, and returns the header
    /// and the index range the new elements take (the length is not changed yet).
    fn grow_by(&self, arena: &mut Arena, additional: usize) -> Result<(VecHead, Range<usize>)> {
        let mut h = self.head(arena.as_bytes())?;
        let len = h.len as usize;
        let new_len = len
            .checked_add(additional)
            .ok_or(Error::CapacityOverflow { len, additional })?;
        if new_len as u64 > h.cap {
            h = self.grow(arena, h, new_len)?;
        }
        Ok((h, len..new_len))
    }

    /// Makes room for `additional` more elements.
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn reserve(&self, arena: &mut impl ViewMut, additional: usize) -> Result<()> {
        self.grow_by(arena.arena_mut(TOKEN), additional).map(drop)
    }

    /// Moves the elements to a buffer of at least `need` elements.
    fn grow(&self, arena: &mut Arena, h: VecHead, need: usize) -> Result<VecHead> {
        let old_cap = h.cap as usize;
        let min_cap = (64 / size_of::<T>().max(1)).max(4);
        let cap = need.max(old_cap.saturating_mul(2)).max(min_cap);
        let buf = Self::alloc_buf(arena, cap)?;
        let len = h.len as usize * size_of::<T>();
        if len > 0 {
            let from = h.buf.check(arena.as_bytes(), len)?;
            copy_within(arena, from, buf.offset as usize, len)?;
        }
        Self::free_buf(arena, h.buf, old_cap)?;
        let head = arena.get_mut(self.head_ptr());
        head.cap = cap as u64;
        head.buf = buf;
        Ok(*head)
    }

    /// Removes and returns the last element.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] when the handle names no live vector.
    pub fn pop(&self, arena: &mut impl ViewMut) -> Result<Option<T>> {
        let arena = arena.arena_mut(TOKEN);
        let Some(&last) = self.try_as_slice(arena)?.last() else {
            return Ok(None);
        };
        arena.get_mut(self.head_ptr()).len -= 1;
        Ok(Some(last))
    }

    /// Replaces the element at `index`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfBounds`] if `index` is not less than the length; [`Error::InvalidPtr`]
    /// when the handle names no live vector.
    pub fn set(&self, arena: &mut impl ViewMut, index: usize, value: T) -> Result<()> {
        let arena = arena.arena_mut(TOKEN);
        let e = self.elems(arena.as_bytes())?;
        if index >= e.len {
            return Err(Error::IndexOutOfBounds { index, len: e.len });
        }
        // SAFETY: `elems` checked that the `len` elements lie in the arena, aligned, and
        // `index < len`.
        unsafe { lend_slice::<T>(arena, e.start + index * size_of::<T>(), 1)[0] = value };
        Ok(())
    }

    /// Shortens the vector to `len` elements (nothing happens if it is not longer), keeping the
    /// buffer.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] when the handle names no live vector.
    pub fn truncate(&self, arena: &mut impl ViewMut, len: usize) -> Result<()> {
        let arena = arena.arena_mut(TOKEN);
        if (self.head(arena.as_bytes())?.len as usize) > len {
            arena.get_mut(self.head_ptr()).len = len as u64;
        }
        Ok(())
    }

    /// Removes every element, keeping the buffer.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] when the handle names no live vector.
    pub fn clear(&self, arena: &mut impl ViewMut) -> Result<()> {
        self.truncate(arena, 0)
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

    /// For `lend_mut`: where the elements are, checked.
    pub(super) fn lend_plan(&self, bytes: &[u8]) -> Result<Elems> {
        self.elems(bytes)
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

/// Zeroes `range` of the arena, skipping the pages that are zero already (reading them costs no
/// page copy; writing would).
fn zero(arena: &mut Arena, range: Range<usize>) -> Result<()> {
    let page = 1usize << arena.page_shift();
    let mut at = range.start;
    while at < range.end {
        let end = ((at / page + 1) * page).min(range.end);
        if arena.as_bytes()[at..end].iter().any(|&b| b != 0) {
            arena.bytes_mut(at..end)?.fill(0);
        }
        at = end;
    }
    Ok(())
}

/// A mutable view of an [`ArenaVec`]'s elements, from [`ArenaVec::view_mut`] or
/// [`ViewMut::lend_mut`]: the handle was checked once, and the arena stays borrowed while the
/// view lives, so the length and the buffer cannot change.
///
/// Reads cost a bounds check. Writes (`v[i] = x`, [`get_mut`](Self::get_mut),
/// [`set`](Self::set)) cost a bounds check and a compare against the run of pages the view
/// already marked as written; the first write to an element outside that run marks its pages
/// (a few nanoseconds, plus the kernel's copy of the page on its first write after a snapshot).
/// Only the pages written are marked, so a view of a large vector costs nothing until used.
///
/// Indexing panics on an index out of bounds, as a slice does; `get` and `get_mut` return
/// `None` instead.
///
/// ```
/// use cowarena::{Arena, ArenaVec};
/// let mut a = Arena::with_capacity(1 << 20)?;
/// let counts = ArenaVec::<u32>::with_len_zeroed(&mut a, 10_000)?;
/// let s = a.snapshot()?;
/// let mut c = counts.view_mut(&mut a);
/// for i in [3, 3, 7, 9_999] {
///     c[i] += 1;
/// }
/// assert_eq!((c[3], c.get(10_000)), (2, None));
/// assert_eq!(a.stats().dirty_pages, 2); // the pages of elements 3..=7 and 9 999
/// assert_eq!(counts.as_slice(&s)[3], 0);
/// # Ok::<(), cowarena::Error>(())
/// ```
pub struct VecMut<'a, T> {
    /// The first element (dangling when there is no memory to point to).
    data: NonNull<T>,
    len: usize,
    marks: Marks,
    tracker: Box<Tracker<'a>>,
    _elems: PhantomData<&'a mut [T]>,
}

impl<'a, T: Pod> VecMut<'a, T> {
    /// # Safety
    /// `base + e.start` must hold `e.len` elements of `T`, aligned, inside memory that stays
    /// mapped and is referenced by nothing else for `'a`.
    pub(super) unsafe fn new(base: *mut u8, e: Elems, marker: Marker<'a>) -> Self {
        let size = size_of::<T>();
        let data = if size == 0 || e.len == 0 {
            NonNull::dangling()
        } else {
            // SAFETY: in bounds of the arena (forwarded to the caller), so not null.
            unsafe { NonNull::new_unchecked(base.add(e.start).cast::<T>()) }
        };
        let (tracker, marks) = Tracker::new(marker, (e.start, e.len * size), (0, size, size));
        VecMut {
            data,
            len: e.len,
            marks,
            tracker,
            _elems: PhantomData,
        }
    }

    /// The number of elements.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements, for reading (nothing is marked).
    #[inline]
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: `data` holds `len` elements (see `new`), borrowed from the view.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.len) }
    }

    /// The element at `index`, if there is one.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&T> {
        self.as_slice().get(index)
    }

    /// The element at `index`, for writing, if there is one; its pages are marked as written.
    #[inline(always)]
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        if index >= self.len {
            return None;
        }
        self.touch(index);
        // SAFETY: `index < len`, so the element is inside the view's memory (see `new`); the
        // reference borrows the view mutably, so it is the only one.
        Some(unsafe { &mut *self.data.as_ptr().add(index) })
    }

    /// Replaces the element at `index`.
    ///
    /// # Panics
    /// If `index` is out of bounds, as indexing does.
    #[inline(always)]
    #[track_caller]
    pub fn set(&mut self, index: usize, value: T) {
        self[index] = value;
    }

    /// Elements `range`, for writing; exactly their pages are marked as written.
    ///
    /// # Panics
    /// If the range is out of bounds, as slicing does.
    #[track_caller]
    pub fn slice_mut(&mut self, range: impl RangeBounds<usize>) -> &mut [T] {
        let r = expect(bounds(range, self.len));
        let size = size_of::<T>();
        self.tracker.mark(r.start * size, r.len() * size);
        // SAFETY: the range lies inside the view's memory (checked); the slice borrows the view
        // mutably, so it is the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr().add(r.start), r.len()) }
    }

    /// All elements, for writing; every page they occupy is marked as written.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self.slice_mut(..)
    }

    /// Makes sure element `index` (in bounds) lies on pages marked as written.
    #[inline(always)]
    fn touch(&mut self, index: usize) {
        let at = index * size_of::<T>();
        if self.marks.need_marking(at, size_of::<T>()) {
            self.tracker.mark(at, size_of::<T>());
        }
    }
}

impl<T: Pod> Index<usize> for VecMut<'_, T> {
    type Output = T;

    #[inline(always)]
    #[track_caller]
    fn index(&self, index: usize) -> &T {
        &self.as_slice()[index]
    }
}

impl<T: Pod> IndexMut<usize> for VecMut<'_, T> {
    #[inline(always)]
    #[track_caller]
    fn index_mut(&mut self, index: usize) -> &mut T {
        let len = self.len;
        match self.get_mut(index) {
            Some(v) => v,
            None => index_out_of_bounds(index, len),
        }
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn index_out_of_bounds(index: usize, len: usize) -> ! {
    panic!("index out of bounds: the len is {len} but the index is {index}")
}

impl<T: Pod + fmt::Debug> fmt::Debug for VecMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}
