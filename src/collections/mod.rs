//! Collections that live inside the arena: [`ArenaVec`], [`ArenaMap`], [`ArenaBytes`] and
//! [`ArenaString`].
//!
//! Each is a small `Pod` handle (a [`Ptr`](crate::Ptr) to a header in the arena) that can be
//! stored anywhere a value can: as the [root](crate::Arena::set_root), or as a field of another
//! arena object. Their contents are offsets, never addresses, so a collection reads the same in
//! the arena, its snapshots, the arenas made from them and proxies: methods that read take any
//! [`View`](crate::View) (an [`Arena`], a [`Snapshot`](crate::Snapshot) or a
//! [`Branch`](crate::Branch)), methods that write take any [`ViewMut`](crate::ViewMut) (an
//! `Arena`, or a `Branch` inside [`fork_run`](crate::Arena::fork_run)).
//!
//! Failures follow the crate's [convention](crate::Error#one-convention-for-failures): readers
//! and lenders (`get`, `as_slice`, `get_mut`, `view_mut`, ...) panic if the handle names no live
//! collection and have a `try_` twin that returns the error; operations that may allocate or
//! change the length (`push`, `insert`, `resize`, `set`, ...) return [`Result`].
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
//!
//! # Fast paths: validate once, then work at slice speed
//!
//! Every call through a handle checks it (the header's stamp and element type, the buffer's
//! stamp): a few loads and compares. In a hot loop, check once and keep a borrowed view:
//!
//! - [`ArenaVec::view_mut`] gives a [`VecMut`]: it reads as a slice, and indexing for writing
//!   (`v[i] += 1`), `get_mut` and `set` cost a bounds check and a test that the element's page
//!   is marked as written; `push`, `pop`, `truncate` and `extend_from_slice` change the length
//!   (and a view lent alone grows the buffer).
//! - [`ArenaVec::as_mut_slice`] and [`ArenaVec::slice_mut`] lend a plain `&mut [T]`, marking
//!   exactly the pages they lend as written: the fastest way to rewrite a range, but each page
//!   lent is frozen by the next snapshot even if it was not changed.
//! - [`ArenaMap::get_mut`], [`ArenaMap::entry`] and [`ArenaMap::view_mut`] do the same for maps.
//! - [`ViewMut::lend_mut`](crate::ViewMut::lend_mut) lends several collections and objects
//!   mutably at once, after checking that their memory does not overlap, and
//!   [`View::lend`](crate::View::lend) lends them for reading.
//! - A [`Loan`](crate::Loan) holds the arena and lends those views again and again, with
//!   snapshots and restores in between, checking the handles only after a restore (see
//!   [`crate::typed::loan`]).
//!
//! A view marks a page on its first write there, in the arena's own bitmap of written pages, so
//! lending costs the same for a vector of any size (a 1 GiB vector within 1.05x of a 4 KiB one,
//! about 40 ns with the check) and a snapshot freezes only the pages written. A write tests the
//! page's bit (a shift, a load, a bit test), or, once every page of a buffer of up to 4 MiB is
//! marked, a flag of the view alone; the first write to a page is a call. Measured on the
//! machine of `BENCHMARKS.md` (ratios within one run): a read-modify-write loop over 4096
//! scattered elements of a `VecMut` runs at about 1.1x the same loop over a `Vec` (through
//! `as_slice` + `set` per element: 15x); a solver-shaped loop over five vectors and an object
//! lent by a loan and held behind one `&mut self`, with an undo trail, at 1.05–1.21x the same
//! code over `Vec`s, 1.10x in the median run (`cargo bench --bench solver`; 1.28x with the bit
//! test alone, without the flag).
//! Views hold raw pointers and no destructor, and the first write to a page is a call given no
//! pointer into the view, so the compiler keeps a view's fields in registers across a loop.

mod bytes;
mod lend;
mod map;
mod string;
mod vec;

pub use self::map::{Entry, MapIter, MapMut, MapRef};
pub use self::vec::VecMut;
pub use crate::ptr::handles::{ArenaBytes, ArenaMap, ArenaString, ArenaVec};
pub use crate::typed::lend::Lend;

use crate::alloc::{self, Placement};
use crate::arena::Arena;
use crate::error::{Error, InvalidPtrReason, Result};
use crate::ptr::value::{first_invalid, invalid_value, Value};
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
            stamp_at: alloc::stamp_offset(arena.as_bytes(), &place) as u64,
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

    /// The offset of the buffer's first `len` bytes, checked live, in bounds and aligned to
    /// `align` in memory; 0 for an empty range (which needs no memory).
    #[inline(always)]
    fn start(&self, all: &[u8], len: usize, align: usize) -> Result<usize> {
        if len == 0 {
            return Ok(0);
        }
        let start = self.check(all, len)?;
        if (all.as_ptr() as usize).wrapping_add(start) % align != 0 {
            return Err(misaligned(start, align));
        }
        Ok(start)
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

/// A buffer whose header, overwritten by raw writes, puts it at a misaligned offset.
#[cold]
fn misaligned(offset: usize, align: usize) -> Error {
    Error::InvalidPtr {
        offset,
        type_name: "collection buffer",
        reason: InvalidPtrReason::Misaligned { align },
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
/// Evaluating it for a type aligned above [`alloc::MAX_ALIGN`] fails to compile, so no
/// collection of such a type can be made.
const fn layout_sig(size: usize, align: usize, salt: u64) -> u64 {
    assert!(
        align <= alloc::MAX_ALIGN,
        "cowarena: types aligned above 4096 bytes cannot live in an arena"
    );
    ((size as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (align as u64)).rotate_left(17) ^ salt
}

/// `len` values of `T` starting at `start` in `all` (an empty slice needs no memory), or the
/// error naming the first whose bytes are not a valid `T`.
///
/// # Safety
/// If `len > 0`, `all[start..]` holds `len` values of `T`, at an address aligned for `T` (what
/// `Buf::start` checks).
#[inline(always)]
unsafe fn elements<T: Value>(all: &[u8], start: usize, len: usize) -> Result<&[T]> {
    if len == 0 || size_of::<T>() == 0 {
        // SAFETY: zero-sized values read no memory, and a dangling pointer is aligned.
        if let Some(i) =
            unsafe { first_invalid::<T>(NonNull::<T>::dangling().as_ptr().cast(), len) }
        {
            return Err(invalid_value::<T>(start + i * size_of::<T>()));
        }
        // SAFETY: a slice of zero-sized values, or an empty one, reads no memory; it needs only a
        // non-null, aligned pointer, which `dangling` is; the values are valid (checked).
        return Ok(unsafe { std::slice::from_raw_parts(NonNull::<T>::dangling().as_ptr(), len) });
    }
    let bytes = &all[start..start + len * size_of::<T>()];
    // SAFETY: `bytes` holds exactly `len` values of `T` at an address aligned for `T` (the
    // caller's contract).
    if let Some(i) = unsafe { first_invalid::<T>(bytes.as_ptr(), len) } {
        return Err(invalid_value::<T>(start + i * size_of::<T>()));
    }
    // SAFETY: as above, and every value is a valid `T` (checked); the slice borrows `all`.
    Ok(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), len) })
}

/// Checks that the `len` values of `T` at `start` in `all` are valid.
///
/// # Safety
/// As [`elements`].
#[inline(always)]
unsafe fn validate<T: Value>(all: &[u8], start: usize, len: usize) -> Result<()> {
    // SAFETY: the caller's contract.
    unsafe { elements::<T>(all, start, len) }.map(drop)
}

/// Marks `len` bytes at `at` (inside the arena) as written, for a reference about to be lent.
///
/// # Panics
/// Where the arena may not be written at all: an arena shared with proxies, in a child of a raw
/// `fork()` (an unsafe call; see [`crate::proxy`]). Views and loans check that when they are
/// made ([`Arena::check_writable`]) and return the error instead; accessors that lend one
/// element panic with it.
#[inline(always)]
#[track_caller]
fn mark_written(arena: &mut Arena, at: usize, len: usize) {
    if let Err(e) = arena.mark_dirty(at, len) {
        crate::ptr::fail(e);
    }
}

/// `count` values of `T` at offset `at`, for writing; their pages are marked as written. The
/// error names the first value whose bytes are not a valid `T` (nothing is marked then).
///
/// # Safety
/// The values lie inside the arena, aligned for `T` (unchecked here: the hot paths that lend
/// one element have checked the whole collection already).
#[inline(always)]
unsafe fn lend_slice<T: Value>(arena: &mut Arena, at: usize, count: usize) -> Result<&mut [T]> {
    // SAFETY: the caller's contract.
    unsafe { validate::<T>(arena.as_bytes(), at, count)? };
    let size = size_of::<T>();
    if size == 0 || count == 0 {
        // SAFETY: an empty slice, or one of zero-sized values, touches no memory; `dangling` is
        // non-null and aligned; the values are valid (checked).
        return Ok(unsafe {
            std::slice::from_raw_parts_mut(NonNull::<T>::dangling().as_ptr(), count)
        });
    }
    mark_written(arena, at, count * size);
    // SAFETY: the values lie inside the arena, aligned for `T` (the caller's contract), and are
    // valid (checked); the memory is mapped writable while `arena` is borrowed, which the
    // slice's lifetime extends, so no other reference into it exists.
    Ok(unsafe { std::slice::from_raw_parts_mut(arena.base_mut().add(at).cast::<T>(), count) })
}

/// Writes `value` at offset `at`, whose pages are marked as written; the bytes there before
/// need not be a valid `T`.
///
/// # Safety
/// As [`lend_slice`] for one value.
#[inline(always)]
unsafe fn store<T: Value>(arena: &mut Arena, at: usize, value: T) {
    if size_of::<T>() == 0 {
        return;
    }
    mark_written(arena, at, size_of::<T>());
    // SAFETY: inside the arena, aligned for `T` (the caller's contract), mapped writable while
    // `arena` is borrowed; a write through a raw pointer reads nothing of the old bytes.
    unsafe { arena.base_mut().add(at).cast::<T>().write(value) };
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
