//! Collections that live inside the arena: [`ArenaVec`], [`ArenaMap`] and [`ArenaBytes`].
//!
//! Each is a small `Pod` handle (a [`Ptr`](crate::Ptr) to a header in the arena) that can be
//! stored anywhere a value can: as the [root](crate::Arena::set_root), or as a field of another
//! arena object. Their contents are offsets, never addresses, so a collection reads the same in
//! the arena, its snapshots, the arenas made from them and proxies: methods that read take any
//! [`View`](crate::View) (an [`Arena`] or a [`Snapshot`](crate::Snapshot)), methods that write take the
//! `&mut Arena`.
//!
//! Reading methods panic if the handle names no live collection of the view (it was freed, or
//! belongs to another arena), like [`Arena::get`]; each collection has a `try_` reader that
//! returns the error instead. Writing methods return [`Result`]: they can run out of memory.
//!
//! ```
//! use cowarena::{Arena, ArenaBytes, ArenaMap, ArenaVec};
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
//! #[repr(C)]
//! struct State { log: ArenaBytes, seen: ArenaMap<u64, u32>, path: ArenaVec<u32> }
//!
//! let mut a = Arena::with_capacity(1 << 20)?;
//! let state = State {
//!     log: ArenaBytes::new(&mut a)?,
//!     seen: ArenaMap::new(&mut a)?,
//!     path: ArenaVec::new(&mut a)?,
//! };
//! let root = a.alloc(state)?;
//! a.set_root(root);
//!
//! state.path.push(&mut a, 1)?;
//! state.seen.insert(&mut a, 0xfeed, 1)?;
//! let before = a.snapshot()?;
//! state.path.push(&mut a, 2)?;
//! state.log.append(&mut a, b"took branch 2")?;
//!
//! let s: State = *before.get(before.root().unwrap());
//! assert_eq!(s.path.as_slice(&before), &[1]);
//! assert_eq!(state.path.as_slice(&a), &[1, 2]);
//! assert!(s.log.is_empty(&before));
//! a.restore(&before)?;
//! assert_eq!(state.path.as_slice(&a), &[1]);
//! assert_eq!(state.seen.get(&a, &0xfeed), Some(&1));
//! # Ok::<(), cowarena::Error>(())
//! ```

mod bytes;
mod map;
mod vec;

pub use self::bytes::ArenaBytes;
pub use self::map::{ArenaMap, MapIter};
pub use self::vec::ArenaVec;

use crate::alloc::{self, Placement};
use crate::arena::Arena;
use crate::error::{Error, InvalidPtrReason, Result};
use bytemuck::{Pod, Zeroable};
use std::ops::Range;
use std::ptr::NonNull;

/// A collection's buffer: a raw allocation whose size its owner knows (capacity times element
/// size). The null buffer (all zeros) is an empty one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct Buf {
    offset: u64,
    stamp: u64,
    /// Where the buffer's stamp sits, from its start; the buffer's usable size is at most this.
    stamp_at: u64,
}

impl Buf {
    fn alloc(arena: &mut Arena, size: usize, align: usize) -> Result<Buf> {
        if size == 0 {
            return Ok(Buf::default());
        }
        let place = Placement::of(size, align);
        let (offset, stamp) = alloc::alloc(arena, &place, &[])?;
        Ok(Buf {
            offset: offset as u64,
            stamp,
            stamp_at: place.stamp_at as u64,
        })
    }

    fn free(self, arena: &mut Arena, size: usize, align: usize) -> Result<()> {
        if size == 0 {
            return Ok(());
        }
        alloc::free(
            arena,
            self.offset as usize,
            self.stamp,
            &Placement::of(size, align),
            "collection buffer",
        )
    }

    /// The buffer's first `len` bytes, after checking that it is live.
    #[inline(always)]
    fn bytes<'a>(&self, all: &'a [u8], len: usize) -> Result<&'a [u8]> {
        if len == 0 {
            return Ok(&[]);
        }
        let start = self.check(all, len)?;
        Ok(&all[start..start + len])
    }

    /// Bytes `range` of the buffer, for writing (their pages are marked as written).
    #[inline]
    fn bytes_mut<'a>(&self, arena: &'a mut Arena, range: Range<usize>) -> Result<&'a mut [u8]> {
        if range.is_empty() {
            return Ok(&mut []);
        }
        let start = self.check(arena.as_bytes(), range.end)?;
        arena.bytes_mut(start + range.start..start + range.end)
    }

    /// Checks that the buffer is live and at least `len` bytes long; returns its offset.
    #[inline(always)]
    fn check(&self, all: &[u8], len: usize) -> Result<usize> {
        let offset = usize::try_from(self.offset).unwrap_or(usize::MAX);
        let stamp_at = usize::try_from(self.stamp_at).unwrap_or(usize::MAX);
        let live = offset
            .checked_add(stamp_at)
            .and_then(|at| all.get(at..at.checked_add(8)?))
            .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or_default()));
        if len <= stamp_at && self.stamp & 1 == 1 && live == Some(self.stamp) {
            Ok(offset)
        } else {
            Err(corrupt(offset))
        }
    }
}

/// A collection whose header is live but whose buffer is not: only raw writes do that.
#[cold]
fn corrupt(offset: usize) -> Error {
    Error::InvalidPtr {
        offset,
        type_name: "collection buffer",
        reason: InvalidPtrReason::CollectionBuffer,
    }
}

/// A handle whose header does not describe its element types.
#[cold]
fn type_mismatch<C>(offset: usize) -> Error {
    Error::InvalidPtr {
        offset,
        type_name: std::any::type_name::<C>(),
        reason: InvalidPtrReason::CollectionType,
    }
}

/// A number identifying a type's layout, stored in a collection's header and checked on use.
const fn layout_sig(size: usize, align: usize, salt: u64) -> u64 {
    ((size as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (align as u64)).rotate_left(17) ^ salt
}

/// `len` values of `T` from the start of `bytes` (which holds at least that many).
fn cast_slice<T: Pod>(bytes: &[u8], len: usize) -> &[T] {
    if size_of::<T>() == 0 {
        // SAFETY: a slice of zero-sized values reads no memory; it needs only a non-null,
        // aligned pointer, which `dangling` is.
        return unsafe { std::slice::from_raw_parts(NonNull::<T>::dangling().as_ptr(), len) };
    }
    bytemuck::cast_slice(&bytes[..len * size_of::<T>()])
}

/// Copies `len` bytes from `from` to `to` (ranges that do not overlap) within the arena, a page
/// at a time so that only the destination's pages are marked as written.
fn copy_within(arena: &mut Arena, from: usize, to: usize, len: usize) -> Result<()> {
    let mut chunk = [0u8; 4096];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(chunk.len());
        arena.read(from + done, &mut chunk[..n])?;
        arena.write(to + done, &chunk[..n])?;
        done += n;
    }
    Ok(())
}

/// Unwraps a reader's result; a failure panics with the error's message.
#[track_caller]
#[inline]
fn expect<T>(r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => crate::ptr::fail(e),
    }
}
