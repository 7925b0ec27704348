//! [`VecMut`]: a mutable view of an [`ArenaVec`] with the handle checked once: indexing, which
//! marks the pages of the elements written, and length changes, written through to the header.

use super::{bounds, Buffer, VecHead};
use crate::collections::expect;
use crate::error::{Error, Result};
use crate::ptr::handles::ArenaVec;
use crate::ptr::value::Value;
use crate::typed::lend::{self, Lent};
use crate::typed::marks::Marker;
use crate::typed::sealed::TOKEN;
use crate::typed::ViewMut;
use std::fmt;
use std::marker::PhantomData;
use std::mem::offset_of;
use std::ops::{Deref, Index, IndexMut, RangeBounds};
use std::ptr::NonNull;

impl<T: Value> ArenaVec<T> {
    /// A mutable view of the vector, with the handle checked once (see [`VecMut`]): indexing
    /// costs a bounds check and a test that the element's page is marked as written, and the
    /// view may grow the vector. Making it costs the same for a vector of any size of a `Pod`
    /// type; for a type with invalid bit patterns it also checks each element once (see
    /// [`Value`](crate::Value)), and then nothing more per access.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the first element whose bytes are not a valid `T`, and the
    /// errors of [`try_as_slice`](Self::try_as_slice).
    #[inline]
    pub fn try_view_mut<'a>(&self, arena: &'a mut impl ViewMut) -> Result<VecMut<'a, T>> {
        lend::lend(arena.arena_mut(TOKEN), *self)
    }

    /// A mutable view of the vector, with the handle checked once (see
    /// [`try_view_mut`](Self::try_view_mut) and [`VecMut`]).
    ///
    /// # Panics
    /// If the handle names no live vector in `arena`.
    #[track_caller]
    #[inline]
    pub fn view_mut<'a>(&self, arena: &'a mut impl ViewMut) -> VecMut<'a, T> {
        expect(self.try_view_mut(arena))
    }
}

/// A mutable view of an [`ArenaVec`], from [`ArenaVec::view_mut`], [`ViewMut::lend_mut`] or a
/// [`Loan`](crate::Loan): the handle was checked once, and the arena stays borrowed while the
/// view lives, so nothing else changes the vector meanwhile.
///
/// It reads as a slice (`Deref<Target = [T]>`: `v[i]`, `v.iter()`, `v.len()` cost what they cost
/// on a slice). Writes (`v[i] = x`, [`get_mut`](Self::get_mut), [`set`](Self::set)) cost a
/// bounds check and a test of the arena's bit for the element's page; the first write to a page
/// marks it (a call, next to the kernel's copy of the page on its first write after a
/// snapshot). Only the pages written are marked, so lending a vector costs the same whatever its
/// size, and a snapshot freezes only what was written.
///
/// The length changes within the capacity ([`push`](Self::push), [`pop`](Self::pop),
/// [`truncate`](Self::truncate), [`extend_from_slice`](Self::extend_from_slice), ...), written
/// through to the vector's header, so the next view, a snapshot or any reader sees it. A view
/// made by `view_mut` (or `lend_mut` of the vector alone) also grows the buffer when it is full; a
/// view lent with others cannot allocate while they are alive, and returns
/// [`Error::CannotGrow`] instead: reserve room beforehand.
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
///
/// let log = ArenaVec::<u64>::new(&mut a)?;
/// let mut w = log.view_mut(&mut a);
/// for i in 0..100 {
///     w.push(i)?; // grows: the view was lent alone
/// }
/// assert_eq!((w.pop(), w.len()), (Some(99), 99));
/// w.truncate(10);
/// assert_eq!(log.len(&a), 10);
/// # Ok::<(), cowarena::Error>(())
/// ```
pub struct VecMut<'a, T> {
    /// The first element (dangling when there is no memory to point to).
    data: NonNull<T>,
    /// Invariant: `len <= cap`, and the header's length field holds `len`.
    len: usize,
    cap: usize,
    /// The buffer's offset in the arena (0 when there is none).
    start: usize,
    marker: Marker,
    /// Whether every page of the buffer is marked as written (known for buffers of up to
    /// `SCANNED_PAGES` pages): then a write tests this flag only. Pages stay marked for the
    /// view's life, since a snapshot or restore needs the arena it borrows.
    all_marked: bool,
    /// The header's offset in the arena, and its length field.
    head: usize,
    head_len: NonNull<u64>,
    /// Whether the header's page was marked by this view (it stays marked for the view's life).
    head_marked: bool,
    /// The vector, when the view may allocate (it was lent alone).
    grows: Option<ArenaVec<T>>,
    _elems: PhantomData<&'a mut [T]>,
}

/// Where a vector's length sits in its header.
const LEN_AT: usize = offset_of!(VecHead, len);

impl<'a, T: Value> VecMut<'a, T> {
    /// The view of the vector `b` describes, which may allocate when `grows` is its handle.
    ///
    /// # Safety
    /// As [`Lend::lend`](crate::collections::Lend): `b` was checked against the arena `lent`
    /// lends from, which has changed since only through views of the same vector, and the
    /// header and the buffer's `b.cap` elements are lent to this view alone for `'a`. `grows` is
    /// the vector's handle only if `lent` is exclusive.
    pub(in crate::collections) unsafe fn new(
        b: Buffer,
        lent: &Lent<'a>,
        grows: Option<ArenaVec<T>>,
    ) -> Self {
        // SAFETY: the header is live inside the arena, aligned for its `u64` fields (checked).
        let head_len = unsafe { NonNull::new_unchecked(lent.base().add(b.head + LEN_AT).cast()) };
        // SAFETY: as above; the views of this vector kept the length within the capacity, and
        // the clamp makes sure of it whatever the header holds.
        let len = unsafe { head_len.read() };
        let mut view = VecMut {
            data: NonNull::dangling(),
            len: usize::try_from(len).unwrap_or(usize::MAX).min(b.cap),
            cap: 0,
            start: 0,
            marker: lent.marker(),
            all_marked: false,
            head: b.head,
            head_len,
            head_marked: false,
            grows,
            _elems: PhantomData,
        };
        // SAFETY: the buffer's `cap` elements are lent to this view (the caller's contract).
        unsafe { view.place(lent.base(), b) };
        view
    }

    /// Points the view at the buffer `b` describes, in the arena whose first byte is `base`.
    ///
    /// # Safety
    /// The buffer holds `b.cap` elements, aligned, inside the arena, lent to this view alone.
    unsafe fn place(&mut self, base: *mut u8, b: Buffer) {
        self.data = if size_of::<T>() == 0 || b.cap == 0 {
            NonNull::dangling()
        } else {
            // SAFETY: inside the arena (the caller's contract), so not null.
            unsafe { NonNull::new_unchecked(base.add(b.start).cast()) }
        };
        self.cap = b.cap;
        self.start = b.start;
        self.scan();
    }

    /// Finds out whether every page of the buffer is marked (see `all_marked`).
    #[inline(always)]
    fn scan(&mut self) {
        // SAFETY: the buffer lies inside the arena.
        self.all_marked = unsafe {
            self.marker
                .all_marked(self.start, self.cap * size_of::<T>())
        };
    }

    /// The number of elements.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many elements fit without allocating.
    #[inline(always)]
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The elements, for reading (nothing is marked).
    #[inline(always)]
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: `data` holds `len` elements (see `new`), borrowed from the view.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.len) }
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

    /// Swaps two elements.
    ///
    /// # Panics
    /// If either index is out of bounds, as [`slice::swap`] does.
    #[inline]
    #[track_caller]
    pub fn swap(&mut self, a: usize, b: usize) {
        if a.max(b) >= self.len {
            index_out_of_bounds(a.max(b), self.len);
        }
        self.touch(a);
        self.touch(b);
        // SAFETY: both below `len`, inside the view's memory; `ptr::swap` allows `a == b`.
        unsafe { std::ptr::swap(self.data.as_ptr().add(a), self.data.as_ptr().add(b)) };
    }

    /// Elements `range`, for writing; exactly their pages are marked as written.
    ///
    /// # Panics
    /// If the range is out of bounds, as slicing does.
    #[track_caller]
    pub fn slice_mut(&mut self, range: impl RangeBounds<usize>) -> &mut [T] {
        let r = expect(bounds(range, self.len));
        let size = size_of::<T>();
        // SAFETY: the range lies inside the view's memory (checked), inside the arena.
        if unsafe {
            self.marker
                .touch_span(self.start + r.start * size, r.len() * size)
        } {
            self.scan();
        }
        // SAFETY: as above; the slice borrows the view mutably, so it is the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr().add(r.start), r.len()) }
    }

    /// All elements, for writing; every page they occupy is marked as written.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self.slice_mut(..)
    }

    /// Appends `value`. Within the capacity this writes the element and the header's length;
    /// when the vector is full, a view lent alone grows it (to twice its size).
    ///
    /// # Errors
    /// [`Error::CannotGrow`] when the vector is full and the view was lent with others;
    /// [`Error::OutOfMemory`] when it must grow and the arena has no room;
    /// [`Error::CapacityOverflow`] when the length would not fit in a `usize`. Nothing changes
    /// then.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<()> {
        if self.len == self.cap {
            self.make_room(1)?;
        }
        let i = self.len;
        self.touch(i);
        // SAFETY: `i < cap`, inside the buffer lent to this view.
        unsafe { self.data.as_ptr().add(i).write(value) };
        self.set_len(i + 1);
        Ok(())
    }

    /// Appends all of `values` (see [`push`](Self::push)).
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn extend_from_slice(&mut self, values: &[T]) -> Result<()> {
        if values.len() > self.cap - self.len {
            self.make_room(values.len())?;
        }
        let size = size_of::<T>();
        // SAFETY: `len + values.len() <= cap`: inside the buffer lent to this view, which
        // `values` (a shared borrow alive with this `&mut self`) cannot overlap.
        unsafe {
            let at = self.start + self.len * size;
            if self.marker.touch_span(at, size_of_val(values)) {
                self.scan();
            }
            let to = self.data.as_ptr().add(self.len);
            std::ptr::copy_nonoverlapping(values.as_ptr(), to, values.len());
        }
        self.set_len(self.len + values.len());
        Ok(())
    }

    /// Makes room for `additional` more elements (see [`push`](Self::push)).
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn reserve(&mut self, additional: usize) -> Result<()> {
        if additional > self.cap - self.len {
            self.make_room(additional)?;
        }
        Ok(())
    }

    /// Removes and returns the last element.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        let i = self.len.checked_sub(1)?;
        // SAFETY: `i < len`, inside the view's memory.
        let value = unsafe { self.data.as_ptr().add(i).read() };
        self.set_len(i);
        Some(value)
    }

    /// Removes the element at `index` and returns it, moving the last element into its place.
    ///
    /// # Panics
    /// If `index` is out of bounds, as [`Vec::swap_remove`] does.
    #[track_caller]
    pub fn swap_remove(&mut self, index: usize) -> T {
        if index >= self.len {
            index_out_of_bounds(index, self.len);
        }
        let last = self.len - 1;
        // SAFETY: `index` and `last` are below `len`, inside the view's memory.
        let value = unsafe { self.data.as_ptr().add(index).read() };
        if index != last {
            self.touch(index);
            // SAFETY: as above.
            unsafe {
                let moved = self.data.as_ptr().add(last).read();
                self.data.as_ptr().add(index).write(moved);
            }
        }
        self.set_len(last);
        value
    }

    /// Shortens the vector to `len` elements (nothing happens if it is not longer).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.set_len(len);
        }
    }

    /// Removes every element, keeping the buffer.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Makes sure element `index` (below the capacity) lies on pages marked as written.
    #[inline(always)]
    fn touch(&mut self, index: usize) {
        let at = self.start + index * size_of::<T>();
        // SAFETY: below the capacity, the element lies in the buffer, inside the arena.
        if !self.all_marked && unsafe { self.marker.touch::<T>(at) } {
            self.scan();
        }
    }

    /// Sets the length (at most the capacity), in the view and in the header.
    #[inline(always)]
    fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.cap);
        if !self.head_marked {
            // SAFETY: the header lies inside the arena.
            unsafe { self.marker.touch_span(self.head + LEN_AT, size_of::<u64>()) };
            self.head_marked = true;
        }
        self.len = len;
        // SAFETY: the header's length field, lent to this view alone, its page marked.
        unsafe { self.head_len.as_ptr().write(len as u64) };
    }

    /// Makes room for `additional` more elements than the length: grows the buffer if the view
    /// may allocate.
    #[cold]
    #[inline(never)]
    fn make_room(&mut self, additional: usize) -> Result<()> {
        let len = self.len;
        let need = len
            .checked_add(additional)
            .ok_or(Error::CapacityOverflow { len, additional })?;
        if need <= self.cap {
            return Ok(());
        }
        let Some(handle) = self.grows else {
            return Err(Error::CannotGrow {
                len,
                additional,
                capacity: self.cap,
            });
        };
        // SAFETY: the view was lent alone (`grows` is set only then), so it is the only user of
        // the arena, and `&mut self` means no reference it lent is alive.
        let arena = unsafe { self.marker.arena() };
        handle.reserve(arena, additional)?;
        let b = handle.lend_plan(arena.as_bytes())?;
        let base = arena.base_mut();
        // SAFETY: `lend_plan` checked the buffer the header now names: `cap` aligned elements
        // inside the arena, lent to this view alone as the old one was (the header is the same,
        // live and aligned).
        unsafe {
            self.place(base, b);
            self.head_len = NonNull::new_unchecked(base.add(self.head + LEN_AT).cast());
        }
        // SAFETY: the same arena, still borrowed by this view alone.
        self.marker = unsafe { self.marker.renew() };
        Ok(())
    }
}

impl<T: Value> Deref for VecMut<'_, T> {
    type Target = [T];

    #[inline(always)]
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Value> Index<usize> for VecMut<'_, T> {
    type Output = T;

    #[inline(always)]
    #[track_caller]
    fn index(&self, index: usize) -> &T {
        &self.as_slice()[index]
    }
}

impl<T: Value> IndexMut<usize> for VecMut<'_, T> {
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

impl<T: Value + fmt::Debug> fmt::Debug for VecMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}
