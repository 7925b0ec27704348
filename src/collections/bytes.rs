//! [`ArenaBytes`]: a growable byte string in the arena.

use super::{expect, ArenaVec};
use crate::arena::Arena;
use crate::error::Result;
use crate::typed::View;
use bytemuck::{Pod, Zeroable};

/// A growable byte string stored in an [`Arena`]: a `Pod` handle, so it can be the root or a
/// field of another arena object (see the [module docs](crate::collections)).
///
/// ```
/// use cowarena::{Arena, ArenaBytes};
/// let mut a = Arena::with_capacity(1 << 20)?;
/// let log = ArenaBytes::from_slice(&mut a, b"start")?;
/// let s = a.snapshot()?;
/// log.append(&mut a, b", step 1")?;
/// assert_eq!(log.as_slice(&a), b"start, step 1");
/// assert_eq!(log.as_slice(&s), b"start");
/// assert_eq!(log.len(&s), 5);
/// # Ok::<(), cowarena::Error>(())
/// ```
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct ArenaBytes {
    bytes: ArenaVec<u8>,
}

impl ArenaBytes {
    /// A new, empty byte string in `arena`.
    pub fn new(arena: &mut Arena) -> Result<Self> {
        Ok(ArenaBytes {
            bytes: ArenaVec::new(arena)?,
        })
    }

    /// A new, empty byte string with room for `capacity` bytes.
    pub fn with_capacity(arena: &mut Arena, capacity: usize) -> Result<Self> {
        Ok(ArenaBytes {
            bytes: ArenaVec::with_capacity(arena, capacity)?,
        })
    }

    /// A new byte string holding a copy of `bytes`.
    pub fn from_slice(arena: &mut Arena, bytes: &[u8]) -> Result<Self> {
        let s = Self::with_capacity(arena, bytes.len())?;
        s.append(arena, bytes)?;
        Ok(s)
    }

    /// The bytes, or why the handle names no live byte string in `view`.
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
    pub fn append(&self, arena: &mut Arena, bytes: &[u8]) -> Result<()> {
        self.bytes.extend_from_slice(arena, bytes)
    }

    /// Empties the byte string, keeping its buffer.
    pub fn clear(&self, arena: &mut Arena) -> Result<()> {
        self.bytes.clear(arena)
    }

    /// Frees the byte string's memory; every copy of the handle becomes invalid.
    pub fn free(self, arena: &mut Arena) -> Result<()> {
        self.bytes.free(arena)
    }
}
