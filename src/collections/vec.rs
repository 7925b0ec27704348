//! [`ArenaVec`]: a growable array in the arena.

use super::{cast_slice, copy_within, expect, layout_sig, type_mismatch, Buf};
use crate::arena::Arena;
use crate::error::Result;
use crate::ptr::{self, Ptr};
use crate::typed::View;
use bytemuck::{Pod, Zeroable};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

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

/// A growable array of `T` stored in an [`Arena`]: a `Pod` handle, so it can be the root or a
/// field of another arena object (see the [module docs](crate::collections)).
///
/// ```
/// use cowarena::{Arena, ArenaVec};
/// let mut a = Arena::with_capacity(1 << 20)?;
/// let v = ArenaVec::<u32>::new(&mut a)?;
/// for i in 0..100 {
///     v.push(&mut a, i)?;
/// }
/// let s = a.snapshot()?;
/// v.set(&mut a, 0, 42)?;
/// assert_eq!(v.get(&a, 0), Some(&42));
/// assert_eq!(v.get(&s, 0), Some(&0));
/// assert_eq!(v.iter(&s).sum::<u32>(), 4950);
/// assert_eq!(v.pop(&mut a)?, Some(99));
/// assert_eq!(v.len(&a), 99);
/// # Ok::<(), cowarena::Error>(())
/// ```
#[repr(C)]
pub struct ArenaVec<T> {
    head: Ptr<VecHead>,
    _type: PhantomData<fn() -> T>,
}

impl<T: Pod> ArenaVec<T> {
    const ELEM: u64 = layout_sig(size_of::<T>(), align_of::<T>(), 0x7665_6374);

    /// A new, empty vector in `arena`.
    pub fn new(arena: &mut Arena) -> Result<Self> {
        Self::with_capacity(arena, 0)
    }

    /// A new, empty vector with room for `capacity` elements.
    pub fn with_capacity(arena: &mut Arena, capacity: usize) -> Result<Self> {
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
                head,
                _type: PhantomData,
            }),
            Err(e) => {
                Self::free_buf(arena, buf, capacity)?;
                Err(e)
            }
        }
    }

    fn alloc_buf(arena: &mut Arena, cap: usize) -> Result<Buf> {
        let size = cap
            .checked_mul(size_of::<T>())
            .ok_or(crate::Error::OutOfMemory {
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
        let h = *ptr::check(bytes, self.head)?;
        let size = size_of::<T>();
        if h.elem != Self::ELEM
            || h.len > h.cap
            || (size != 0 && (h.cap as usize).checked_mul(size).is_none())
        {
            return Err(type_mismatch::<Self>(self.head.offset()));
        }
        Ok(h)
    }

    /// The elements, or why the handle names no live vector in `view`.
    #[inline]
    pub fn try_as_slice<'a>(&self, view: &'a impl View) -> Result<&'a [T]> {
        let bytes = view.try_bytes()?;
        let h = self.head(bytes)?;
        let len = h.len as usize;
        let data = h.buf.bytes(bytes, len.saturating_mul(size_of::<T>()))?;
        Ok(cast_slice(data, len))
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
    /// # Panics
    /// If the handle names no live vector in `view`.
    #[track_caller]
    #[inline]
    pub fn len(&self, view: &impl View) -> usize {
        expect(view.try_bytes().and_then(|b| self.head(b))).len as usize
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
    /// # Panics
    /// If the handle names no live vector in `view`.
    #[track_caller]
    #[inline]
    pub fn get<'a>(&self, view: &'a impl View, index: usize) -> Option<&'a T> {
        self.as_slice(view).get(index)
    }

    /// Iterates over the elements.
    ///
    /// # Panics
    /// If the handle names no live vector in `view`.
    #[track_caller]
    pub fn iter<'a>(&self, view: &'a impl View) -> std::slice::Iter<'a, T> {
        self.as_slice(view).iter()
    }

    /// Appends `value`, growing the buffer (to twice its size) when it is full.
    #[inline]
    pub fn push(&self, arena: &mut Arena, value: T) -> Result<()> {
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
    #[inline]
    pub fn extend_from_slice(&self, arena: &mut Arena, values: &[T]) -> Result<()> {
        let mut h = self.head(arena.as_bytes())?;
        let len = h.len as usize;
        let new_len = len + values.len();
        if new_len as u64 > h.cap {
            h = self.grow(arena, h, new_len)?;
        }
        let size = size_of::<T>();
        h.buf
            .bytes_mut(arena, len * size..new_len * size)?
            .copy_from_slice(bytemuck::cast_slice(values));
        arena.get_mut(self.head).len = new_len as u64;
        Ok(())
    }

    /// Makes room for `additional` more elements.
    pub fn reserve(&self, arena: &mut Arena, additional: usize) -> Result<()> {
        let h = self.head(arena.as_bytes())?;
        let need = (h.len as usize).saturating_add(additional);
        if need as u64 > h.cap {
            self.grow(arena, h, need)?;
        }
        Ok(())
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
        let head = arena.get_mut(self.head);
        head.cap = cap as u64;
        head.buf = buf;
        Ok(*head)
    }

    /// Removes and returns the last element.
    pub fn pop(&self, arena: &mut Arena) -> Result<Option<T>> {
        let h = self.head(arena.as_bytes())?;
        if h.len == 0 {
            return Ok(None);
        }
        let last = *self
            .try_as_slice(arena)?
            .last()
            .expect("a non-empty vector has a last element");
        arena.get_mut(self.head).len = h.len - 1;
        Ok(Some(last))
    }

    /// Replaces the element at `index`.
    ///
    /// # Panics
    /// If `index` is not less than the length.
    #[track_caller]
    pub fn set(&self, arena: &mut Arena, index: usize, value: T) -> Result<()> {
        let h = self.head(arena.as_bytes())?;
        let len = h.len as usize;
        assert!(
            index < len,
            "index out of bounds: the len is {len} but the index is {index}"
        );
        let size = size_of::<T>();
        h.buf
            .bytes_mut(arena, index * size..(index + 1) * size)?
            .copy_from_slice(bytemuck::bytes_of(&value));
        Ok(())
    }

    /// Removes every element, keeping the buffer.
    pub fn clear(&self, arena: &mut Arena) -> Result<()> {
        self.head(arena.as_bytes())?;
        arena.get_mut(self.head).len = 0;
        Ok(())
    }

    /// Frees the vector's memory; every copy of the handle becomes invalid.
    pub fn free(self, arena: &mut Arena) -> Result<()> {
        let h = self.head(arena.as_bytes())?;
        Self::free_buf(arena, h.buf, h.cap as usize)?;
        arena.free(self.head)
    }
}

impl<T> Clone for ArenaVec<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for ArenaVec<T> {}

impl<T> PartialEq for ArenaVec<T> {
    fn eq(&self, other: &Self) -> bool {
        self.head == other.head
    }
}

impl<T> Eq for ArenaVec<T> {}

impl<T> Hash for ArenaVec<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.head.hash(state);
    }
}

impl<T> fmt::Debug for ArenaVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ArenaVec<{}>({:#x})",
            std::any::type_name::<T>(),
            self.head.offset()
        )
    }
}

// SAFETY: `repr(C)` around one `Ptr` (itself Zeroable) and a zero-sized marker: no padding, and
// all zeros is a valid (null) handle.
unsafe impl<T> Zeroable for ArenaVec<T> {}

// SAFETY: as above; every bit pattern is a valid handle (it is checked at each use), and
// `T: 'static` makes the handle `'static`.
unsafe impl<T: 'static> Pod for ArenaVec<T> {}
