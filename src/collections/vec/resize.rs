//! The operations that change an [`ArenaVec`]'s length: appending (growing the buffer when it
//! is full), resizing and reserving, which may allocate and so return `Result`; popping and
//! truncating, which only write the header and so panic on a handle that names nothing, with a
//! `try_` twin.

use super::VecHead;
use crate::arena::Arena;
use crate::collections::{copy_within, expect};
use crate::error::{Error, Result};
use crate::ptr::handles::ArenaVec;
use crate::ptr::value::Value;
use crate::typed::sealed::TOKEN;
use crate::typed::ViewMut;
use bytemuck::Zeroable;
use std::ops::Range;

impl<T: Value + Zeroable> ArenaVec<T> {
    /// Appends `additional` zeroed elements. Pages of the buffer that are zero already (fresh
    /// from the arena, or never written) are not written, so they cost no page copy and the
    /// next snapshot does not freeze them.
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn extend_zeroed(&self, arena: &mut impl ViewMut, additional: usize) -> Result<()> {
        self.grow_zeroed(arena.arena_mut(TOKEN), additional)
    }
}

impl<T: Value> ArenaVec<T> {
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
            return self.try_truncate(arena, new_len);
        }
        if bytemuck::bytes_of(&value).iter().all(|&b| b == 0) {
            return self.grow_zeroed(arena, new_len - len);
        }
        let (h, range) = self.grow_by(arena, new_len - len)?;
        let size = size_of::<T>();
        if size > 0 {
            let bytes = h
                .buf
                .bytes_mut(arena, range.start * size..range.end * size)?;
            for slot in bytes.chunks_exact_mut(size) {
                slot.copy_from_slice(bytemuck::bytes_of(&value));
            }
        }
        arena.get_mut(self.head_ptr()).len = range.end as u64;
        Ok(())
    }

    /// Appends `additional` elements of zero bytes, writing only the pages that are not zero
    /// already (see [`extend_zeroed`](Self::extend_zeroed)); the caller knows zero bytes are a
    /// valid `T`.
    fn grow_zeroed(&self, arena: &mut Arena, additional: usize) -> Result<()> {
        let (h, range) = self.grow_by(arena, additional)?;
        let size = size_of::<T>();
        if size > 0 && !range.is_empty() {
            let start = h.buf.check(arena.as_bytes(), range.end * size)?;
            zero(arena, start + range.start * size..start + range.end * size)?;
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
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// let v = cowarena::ArenaVec::from_slice(&mut a, &[1u8, 2])?;
    /// assert_eq!((v.pop(&mut a), v.pop(&mut a), v.pop(&mut a)), (Some(2), Some(1), None));
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Panics
    /// If the handle names no live vector in `arena` (see [`try_pop`](Self::try_pop)).
    #[track_caller]
    pub fn pop(&self, arena: &mut impl ViewMut) -> Option<T> {
        expect(self.try_pop(arena))
    }

    /// Removes and returns the last element, or says why the handle names no vector.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] when the handle names no live vector.
    pub fn try_pop(&self, arena: &mut impl ViewMut) -> Result<Option<T>> {
        let arena = arena.arena_mut(TOKEN);
        let Some(&last) = self.try_as_slice(arena)?.last() else {
            return Ok(None);
        };
        arena.get_mut(self.head_ptr()).len -= 1;
        Ok(Some(last))
    }

    /// Shortens the vector to `len` elements (nothing happens if it is not longer), keeping the
    /// buffer.
    ///
    /// # Panics
    /// If the handle names no live vector in `arena` (see [`try_truncate`](Self::try_truncate)).
    #[track_caller]
    pub fn truncate(&self, arena: &mut impl ViewMut, len: usize) {
        expect(self.try_truncate(arena, len))
    }

    /// Shortens the vector to `len` elements, or says why the handle names no vector.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] when the handle names no live vector.
    pub fn try_truncate(&self, arena: &mut impl ViewMut, len: usize) -> Result<()> {
        let arena = arena.arena_mut(TOKEN);
        if (self.head(arena.as_bytes())?.len as usize) > len {
            arena.get_mut(self.head_ptr()).len = len as u64;
        }
        Ok(())
    }

    /// Removes every element, keeping the buffer.
    ///
    /// # Panics
    /// If the handle names no live vector in `arena` (see [`try_clear`](Self::try_clear)).
    #[track_caller]
    pub fn clear(&self, arena: &mut impl ViewMut) {
        self.truncate(arena, 0)
    }

    /// Removes every element, or says why the handle names no vector.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] when the handle names no live vector.
    pub fn try_clear(&self, arena: &mut impl ViewMut) -> Result<()> {
        self.try_truncate(arena, 0)
    }
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
