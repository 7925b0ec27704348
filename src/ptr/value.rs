//! [`Value`]: the types an arena stores, and the check that bytes read from the arena are one.
//!
//! A value's bytes can be changed behind the typed API (raw writes, a file), so a type with
//! invalid bit patterns (`bool`, `char`, `NonZeroU32`, enums) is validated on every read that
//! makes a reference; for a [`Pod`](bytemuck::Pod) type the check is the constant `true` and
//! compiles away.

use crate::error::Error;
use bytemuck::{CheckedBitPattern, NoUninit, Zeroable};
use std::fmt;
use std::hash::{Hash, Hasher};

/// A type whose values can live in an arena: every [`bytemuck::Pod`] type, and every type that
/// is [`NoUninit`] (no padding, so its bytes can be copied and hashed) and
/// [`CheckedBitPattern`] (its bytes can be checked to be a valid value): `bool`, `char`,
/// `NonZeroU32` and the other `NonZero*`, `Option<NonZero*>`, the structs and enums that derive
/// both traits, and [`Array`](crate::Array)s of any of them (see [Arrays](#arrays)).
///
/// It is implemented for every such type; there is nothing to implement.
///
/// # Reading validates
///
/// The bytes under a value can change outside the typed API: [`write`](crate::Arena::write),
/// [`bytes_mut`](crate::Arena::bytes_mut), or a file. So every read that makes a reference
/// checks them: [`get`](crate::Arena::get), [`get_mut`](crate::Arena::get_mut), the
/// collections' `get`, `as_slice`, `iter`, views and loans. A pattern that is not a valid value
/// is [`Error::InvalidValue`] from the `try_` methods and a panic with the same message from the
/// others, never undefined behaviour. The check costs, for a `Pod` type, nothing; for others,
/// what [`CheckedBitPattern::is_valid_bit_pattern`] costs per value (a compare or two for a
/// `bool`, a `char` or an enum's tag): once per `get`, and once per element for the whole of a
/// collection when a slice, an iterator or a view of it is made (a view then costs nothing more
/// per access). Writing needs no check: only valid values can be written through a `&mut T`.
///
/// # Data-carrying enums
///
/// Derive [`NoUninit`] and [`CheckedBitPattern`] with a primitive `repr` (`#[repr(u8)]`,
/// `#[repr(u32)]`, `#[repr(u64)]`, ...). The derive refuses padding: in each variant the tag and
/// the fields must fill the whole enum, with no gap after the tag. Make the rest explicit with
/// [`Pad`], whose bytes are always zero, so that equal values have equal bytes (what
/// [`ArenaMap`](crate::ArenaMap) hashes):
///
/// ```
/// use bytemuck::{CheckedBitPattern, NoUninit};
/// use cowarena::{Arena, Pad, Ptr};
///
/// #[derive(Clone, Copy, Debug, PartialEq, Eq, NoUninit, CheckedBitPattern)]
/// #[repr(u64)] // an 8-byte tag, so that the 8-aligned fields follow it without a gap
/// enum Expr {
///     Const(u64, Pad<24>),                 // 8 + 8 + 24 = 40 bytes, as every variant
///     Sym(u32, Pad<28>),
///     Add(Ptr<Expr>, Ptr<Expr>),           // 8 + 16 + 16
///     Not(Ptr<Expr>, Pad<16>),
/// }
///
/// let mut a = Arena::with_capacity(1 << 20)?;
/// let x = a.alloc(Expr::Sym(0, Pad::ZERO))?;
/// let one = a.alloc(Expr::Const(1, Pad::ZERO))?;
/// let sum = a.alloc(Expr::Add(x, one))?;
/// let s = a.snapshot()?;
/// let Expr::Add(l, _) = *s.get(sum) else { unreachable!() };
/// assert_eq!(*s.get(l), Expr::Sym(0, Pad::ZERO));
///
/// a.write(sum.offset(), &[9; 8])?;         // a tag no variant has
/// assert!(matches!(a.try_get(sum), Err(cowarena::Error::InvalidValue { .. })));
/// # Ok::<(), cowarena::Error>(())
/// ```
///
/// Fieldless enums need only the `repr`: `#[repr(u8)] enum Op { Add, Sub }`. A type with padding
/// does not compile:
///
/// ```compile_fail,E0080
/// #[derive(Clone, Copy, bytemuck::NoUninit, bytemuck::CheckedBitPattern)]
/// #[repr(C)]
/// struct Gap {
///     flag: bool, // followed by 3 bytes of padding
///     count: u32,
/// }
/// ```
///
/// and neither does one without the traits:
///
/// ```compile_fail,E0277
/// #[derive(Clone, Copy)]
/// struct Plain(u32);
/// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
/// a.alloc(Plain(1))?; // error: `Plain` cannot live in an arena
/// # Ok::<(), cowarena::Error>(())
/// ```
///
/// # Arrays
///
/// An array of a type with invalid patterns (`[bool; 4]`, `[Op; 8]`) is not
/// [`CheckedBitPattern`] in bytemuck, so it is no `Value`; wrap it in [`Array`](crate::Array),
/// which is one (of the same layout) whenever its element is, as a value or as a field. Arrays of
/// `Pod` elements (`[u32; 4]`) are `Pod` and need no wrapper.
///
/// ```
/// use bytemuck::{CheckedBitPattern, NoUninit};
/// use cowarena::{Arena, ArenaVec, Array, Pad};
///
/// #[derive(Clone, Copy, Debug, PartialEq, NoUninit, CheckedBitPattern)]
/// #[repr(u32)]
/// enum Move {
///     Pass(Pad<4>),
///     Place(Array<bool, 4>), // 4 + 4 bytes, as the other variant
/// }
///
/// let mut a = Arena::with_capacity(1 << 20)?;
/// let board = a.alloc(Array(['x', '.', 'o']))?;
/// let moves = ArenaVec::from_slice(&mut a, &[Move::Pass(Pad::ZERO)])?;
/// moves.push(&mut a, Move::Place(Array([false, true, false, false])))?;
/// let s = a.snapshot()?;
/// assert_eq!(s.get(board)[2], 'o');
/// assert_eq!(moves.get(&s, 1), Some(&Move::Place(Array([false, true, false, false]))));
///
/// a.write(board.offset() + 4, &0xD800u32.to_ne_bytes())?; // board[1]: a surrogate, no char
/// assert!(a.try_get(board).is_err());
/// # Ok::<(), cowarena::Error>(())
/// ```
///
/// The bare array does not compile:
///
/// ```compile_fail,E0277
/// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
/// a.alloc([true, false])?; // error: `[bool; 2]` cannot live in an arena
/// # Ok::<(), cowarena::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot live in an arena",
    label = "not `bytemuck::NoUninit + bytemuck::CheckedBitPattern`",
    note = "derive `bytemuck::Pod` (every bit pattern valid), or `bytemuck::NoUninit` and \
            `bytemuck::CheckedBitPattern`; see `cowarena::Value`"
)]
pub trait Value: NoUninit + CheckedBitPattern {}

impl<T: NoUninit + CheckedBitPattern> Value for T {}

/// Whether the `size_of::<T>()` bytes at `data` are a valid `T`.
///
/// # Safety
/// `data` points to `size_of::<T>()` readable bytes, aligned for `T`.
#[inline(always)]
pub(crate) unsafe fn is_valid<T: Value>(data: *const u8) -> bool {
    // SAFETY: `T::Bits` has `T`'s layout (the contract of `CheckedBitPattern`), so the bytes are
    // in bounds and aligned for it (the caller's contract), and every pattern is a `Bits`
    // (`AnyBitPattern`).
    T::is_valid_bit_pattern(unsafe { &*data.cast::<T::Bits>() })
}

/// The index of the first of the `len` values of `T` at `data` that is not valid.
///
/// # Safety
/// `data` points to `len` values' worth of readable bytes, aligned for `T`, or `len` is 0.
#[inline(always)]
pub(crate) unsafe fn first_invalid<T: Value>(data: *const u8, len: usize) -> Option<usize> {
    if len == 0 {
        return None;
    }
    if size_of::<T>() == 0 {
        // SAFETY: a zero-sized `Bits` reads no memory, and a dangling pointer is aligned.
        let valid = unsafe { is_valid::<T>(std::ptr::NonNull::<T>::dangling().as_ptr().cast()) };
        return (!valid).then_some(0);
    }
    // SAFETY: `len` values of `T::Bits` (of `T`'s layout) at an aligned address (the caller's
    // contract); every bit pattern is a `Bits`.
    let bits = unsafe { std::slice::from_raw_parts(data.cast::<T::Bits>(), len) };
    bits.iter().position(|b| !T::is_valid_bit_pattern(b))
}

/// The error for bytes at `offset` that are not a valid `T`.
#[cold]
#[inline(never)]
pub(crate) fn invalid_value<T: ?Sized>(offset: usize) -> Error {
    Error::InvalidValue {
        offset,
        type_name: std::any::type_name::<T>(),
    }
}

/// `N` bytes that are always zero: the explicit padding of a [`Value`] that would otherwise have
/// a gap, such as a short variant of a data-carrying enum (see [`Value`]).
///
/// Its only valid pattern is all zeros, so a value holding it has one byte representation, and
/// non-zero bytes there read as [`Error::InvalidValue`]. All `Pad`s of a size are equal.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Pad<const N: usize>([u8; N]);

impl<const N: usize> Pad<N> {
    /// The (only) value.
    pub const ZERO: Self = Pad([0; N]);
}

impl<const N: usize> Default for Pad<N> {
    fn default() -> Self {
        Self::ZERO
    }
}

impl<const N: usize> PartialEq for Pad<N> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<const N: usize> Eq for Pad<N> {}

impl<const N: usize> PartialOrd for Pad<N> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<const N: usize> Ord for Pad<N> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<const N: usize> Hash for Pad<N> {
    fn hash<H: Hasher>(&self, _: &mut H) {}
}

impl<const N: usize> fmt::Debug for Pad<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pad<{N}>")
    }
}

// SAFETY: `repr(transparent)` over `[u8; N]`, for which all zeros is valid.
unsafe impl<const N: usize> Zeroable for Pad<N> {}

// SAFETY: `repr(transparent)` over `[u8; N]`: no padding, `Copy` and `'static`.
unsafe impl<const N: usize> NoUninit for Pad<N> {}

// SAFETY: `Pad<N>` has the layout of `[u8; N]` (`repr(transparent)`), and all zeros, the only
// pattern accepted, is the value `Pad::ZERO`.
unsafe impl<const N: usize> CheckedBitPattern for Pad<N> {
    type Bits = [u8; N];

    #[inline]
    fn is_valid_bit_pattern(bits: &[u8; N]) -> bool {
        bits.iter().all(|&b| b == 0)
    }
}
