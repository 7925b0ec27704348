//! [`VecMut`]: a mutable view of an [`ArenaVec`]'s elements with the handle checked once, and
//! its indexing, which marks the pages of the elements written.

use super::{bounds, Elems};
use crate::collections::{expect, Marker, Marks, Tracker};
use crate::error::Result;
use crate::ptr::handles::ArenaVec;
use crate::typed::sealed::TOKEN;
use crate::typed::ViewMut;
use bytemuck::Pod;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Index, IndexMut, RangeBounds};
use std::ptr::NonNull;

impl<T: Pod> ArenaVec<T> {
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
    pub(in crate::collections) unsafe fn new(base: *mut u8, e: Elems, marker: Marker<'a>) -> Self {
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
