//! [`ArenaBytes`]: a growable byte string in the arena.

use super::expect;
use crate::error::Result;
use crate::ptr::handles::{ArenaBytes, ArenaVec};
use crate::typed::{View, ViewMut};

impl ArenaBytes {
    /// A new, empty byte string in `arena`.
    ///
    /// # Errors
    /// As [`ArenaVec::new`].
    pub fn new(arena: &mut impl ViewMut) -> Result<Self> {
        Ok(ArenaBytes {
            bytes: ArenaVec::new(arena)?,
        })
    }

    /// A new, empty byte string with room for `capacity` bytes.
    ///
    /// # Errors
    /// As [`ArenaVec::with_capacity`].
    pub fn with_capacity(arena: &mut impl ViewMut, capacity: usize) -> Result<Self> {
        Ok(ArenaBytes {
            bytes: ArenaVec::with_capacity(arena, capacity)?,
        })
    }

    /// A new byte string holding a copy of `bytes`.
    ///
    /// # Errors
    /// As [`ArenaVec::from_slice`].
    pub fn from_slice(arena: &mut impl ViewMut, bytes: &[u8]) -> Result<Self> {
        Ok(ArenaBytes {
            bytes: ArenaVec::from_slice(arena, bytes)?,
        })
    }

    /// The byte string as the vector of bytes it is.
    pub fn as_vec(self) -> ArenaVec<u8> {
        self.bytes
    }

    /// The bytes.
    ///
    /// # Errors
    /// As [`ArenaVec::try_as_slice`].
    pub fn try_as_slice<'a>(&self, view: &'a impl View) -> Result<&'a [u8]> {
        self.bytes.try_as_slice(view)
    }

    /// The bytes.
    ///
    /// # Panics
    /// If the handle names no live byte string in `view` (see
    /// [`try_as_slice`](Self::try_as_slice)).
    #[track_caller]
    pub fn as_slice<'a>(&self, view: &'a impl View) -> &'a [u8] {
        expect(self.try_as_slice(view))
    }

    /// The bytes, for writing; their pages are marked as written.
    ///
    /// # Errors
    /// As [`ArenaVec::try_as_mut_slice`].
    pub fn try_as_mut_slice<'a>(&self, arena: &'a mut impl ViewMut) -> Result<&'a mut [u8]> {
        self.bytes.try_as_mut_slice(arena)
    }

    /// The bytes, for writing; their pages are marked as written.
    ///
    /// # Panics
    /// If the handle names no live byte string in `arena`.
    #[track_caller]
    pub fn as_mut_slice<'a>(&self, arena: &'a mut impl ViewMut) -> &'a mut [u8] {
        self.bytes.as_mut_slice(arena)
    }

    /// The length in bytes.
    ///
    /// # Errors
    /// As [`ArenaVec::try_len`].
    pub fn try_len(&self, view: &impl View) -> Result<usize> {
        self.bytes.try_len(view)
    }

    /// The length in bytes.
    ///
    /// # Panics
    /// If the handle names no live byte string in `view`.
    #[track_caller]
    pub fn len(&self, view: &impl View) -> usize {
        self.bytes.len(view)
    }

    /// Whether the byte string is empty.
    ///
    /// # Panics
    /// If the handle names no live byte string in `view`.
    #[track_caller]
    pub fn is_empty(&self, view: &impl View) -> bool {
        self.bytes.is_empty(view)
    }

    /// Appends `bytes`, growing the buffer (to at least twice its size) when it is full.
    ///
    /// # Errors
    /// As [`ArenaVec::extend_from_slice`].
    pub fn append(&self, arena: &mut impl ViewMut, bytes: &[u8]) -> Result<()> {
        self.bytes.extend_from_slice(arena, bytes)
    }

    /// Empties the byte string, keeping its buffer.
    ///
    /// # Panics
    /// If the handle names no live byte string in `arena` (see [`try_clear`](Self::try_clear)).
    #[track_caller]
    pub fn clear(&self, arena: &mut impl ViewMut) {
        self.bytes.clear(arena)
    }

    /// Empties the byte string, or says why the handle names none.
    ///
    /// # Errors
    /// As [`ArenaVec::try_clear`].
    pub fn try_clear(&self, arena: &mut impl ViewMut) -> Result<()> {
        self.bytes.try_clear(arena)
    }

    /// Frees the byte string's memory; every copy of the handle becomes invalid.
    ///
    /// # Errors
    /// As [`ArenaVec::free`].
    pub fn free(self, arena: &mut impl ViewMut) -> Result<()> {
        self.bytes.free(arena)
    }
}
