//! [`ArenaString`]: UTF-8 text in the arena.

use super::expect;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::ptr::handles::{ArenaString, ArenaVec};
use crate::ptr::value::invalid_value;
use crate::typed::{View, ViewMut};

impl ArenaString {
    /// A new, empty string in `arena`.
    ///
    /// # Errors
    /// As [`ArenaVec::new`].
    pub fn new(arena: &mut impl ViewMut) -> Result<Self> {
        Ok(ArenaString {
            bytes: ArenaVec::new(arena)?,
        })
    }

    /// A new string holding a copy of `text`.
    ///
    /// # Errors
    /// As [`ArenaVec::from_slice`].
    #[allow(clippy::should_implement_trait)] // it allocates in an arena: not `FromStr`
    pub fn from_str(arena: &mut impl ViewMut, text: &str) -> Result<Self> {
        Ok(ArenaString {
            bytes: ArenaVec::from_slice(arena, text.as_bytes())?,
        })
    }

    /// The string's bytes as the vector they are (writing them directly may make them invalid
    /// UTF-8, which [`try_as_str`](Self::try_as_str) then reports).
    pub fn as_vec(self) -> ArenaVec<u8> {
        self.bytes
    }

    /// The text.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] when the bytes are not UTF-8 (changed by raw writes or a file),
    /// naming the first byte that is not; the errors of [`ArenaVec::try_as_slice`].
    pub fn try_as_str<'a>(&self, view: &'a impl View) -> Result<&'a str> {
        let bytes = self.bytes.try_as_slice(view)?;
        let start = bytes.as_ptr() as usize - view.try_bytes().map_or(0, |b| b.as_ptr() as usize);
        text_at(bytes, start)
    }

    /// The text.
    ///
    /// # Panics
    /// If the handle names no live string in `view`, or its bytes are not UTF-8 (see
    /// [`try_as_str`](Self::try_as_str)).
    #[track_caller]
    pub fn as_str<'a>(&self, view: &'a impl View) -> &'a str {
        expect(self.try_as_str(view))
    }

    /// The length in bytes.
    ///
    /// # Panics
    /// If the handle names no live string in `view`.
    #[track_caller]
    pub fn len(&self, view: &impl View) -> usize {
        self.bytes.len(view)
    }

    /// Whether the string is empty.
    ///
    /// # Panics
    /// If the handle names no live string in `view`.
    #[track_caller]
    pub fn is_empty(&self, view: &impl View) -> bool {
        self.len(view) == 0
    }

    /// Appends `text`.
    ///
    /// # Errors
    /// As [`ArenaVec::extend_from_slice`].
    pub fn push_str(&self, arena: &mut impl ViewMut, text: &str) -> Result<()> {
        self.bytes.extend_from_slice(arena, text.as_bytes())
    }

    /// Empties the string, keeping its memory.
    ///
    /// # Panics
    /// If the handle names no live string in `arena`.
    #[track_caller]
    pub fn clear(&self, arena: &mut impl ViewMut) {
        self.bytes.clear(arena)
    }

    /// Frees the string's memory; every copy of the handle becomes invalid.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] when the handle names no live string.
    pub fn free(self, arena: &mut impl ViewMut) -> Result<()> {
        self.bytes.free(arena)
    }
}

/// `bytes` (a string's text, at arena offset `start`) as `&str`, or the error naming the first
/// byte that is not UTF-8.
pub(super) fn text_at(bytes: &[u8], start: usize) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|e| invalid_value::<str>(start + e.valid_up_to()))
}
