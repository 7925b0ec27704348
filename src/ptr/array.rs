//! [`Array`]: a fixed-size array that is a [`Value`](super::value::Value) whenever its element
//! is one.
//!
//! bytemuck implements [`CheckedBitPattern`] for no array and [`NoUninit`] only for arrays of a
//! few element types, and the orphan rules keep this crate from adding the impls to `[T; N]`
//! (as does the blanket `Value` impl from an own `Value` impl), so a `[bool; 4]` cannot be a
//! value or a field of one. `Array` is the crate's own `[T; N]`, with the impls.

use bytemuck::{AnyBitPattern, CheckedBitPattern, NoUninit, Zeroable};
use std::fmt;
use std::ops::{Deref, DerefMut};

/// `[T; N]` as a [`Value`](crate::Value) for any element that is one: `Array<bool, 8>`,
/// `Array<char, 4>`, an array of enums or of `Option<NonZeroU32>`, as a value of its own or as a
/// field of a struct or enum that derives [`NoUninit`] and [`CheckedBitPattern`]. Reads check
/// every element; bytes that are not valid for one of them make the whole array
/// [`Error::InvalidValue`](crate::Error::InvalidValue).
///
/// It has the layout of `[T; N]` (`repr(transparent)`), dereferences to it, and compares,
/// orders, hashes and prints as it. For an element type whose every bit pattern is valid (`u32`,
/// `[u8; 16]`, a `Pod` struct), use a plain `[T; N]`: that one is `Pod`, and `Array` never is
/// (so a struct holding an `Array` derives `NoUninit` and `CheckedBitPattern`, not `Pod`).
///
/// ```
/// use bytemuck::{CheckedBitPattern, NoUninit};
/// use cowarena::{Arena, Array, Error};
///
/// #[derive(Clone, Copy, Debug, PartialEq, NoUninit, CheckedBitPattern)]
/// #[repr(u8)]
/// enum Op { Push, Pop, Halt }
///
/// #[derive(Clone, Copy, Debug, PartialEq, NoUninit, CheckedBitPattern)]
/// #[repr(C)]
/// struct Program {
///     ops: Array<Op, 4>,
///     breakpoints: Array<bool, 4>,
/// }
///
/// let mut a = Arena::with_capacity(1 << 20)?;
/// let p = a.alloc(Program {
///     ops: Array([Op::Push, Op::Push, Op::Pop, Op::Halt]),
///     breakpoints: Array::default(),
/// })?;
/// a.get_mut(p).breakpoints[2] = true;
/// assert_eq!(a.get(p).ops[3], Op::Halt);
/// assert_eq!(a.get(p).breakpoints.iter().filter(|&&b| b).count(), 1);
///
/// a.write(p.offset() + 5, &[7])?; // breakpoints[1]: no bool
/// assert!(matches!(a.try_get(p), Err(Error::InvalidValue { .. })));
/// # Ok::<(), cowarena::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Array<T, const N: usize>(pub [T; N]);

/// The bits of an [`Array`] as [`CheckedBitPattern`] reads them before checking: an array of the
/// element's `Bits`. Named by the derived `Bits` types of structs and enums with `Array` fields,
/// never by hand.
///
/// It is `AnyBitPattern` but not `Pod` (bytemuck makes every `Pod` type `AnyBitPattern`, which
/// would collide with this crate's own impl), and `Array` is not `AnyBitPattern` (bytemuck makes
/// every such type `CheckedBitPattern`).
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct ArrayBits<B, const N: usize>([B; N]);

impl<T: Default, const N: usize> Default for Array<T, N> {
    /// Every element its default (`false`, `'\0'`, `None`, ...), for any `N` (std's arrays are
    /// `Default` up to 32 elements).
    fn default() -> Self {
        Array(std::array::from_fn(|_| T::default()))
    }
}

impl<T: fmt::Debug, const N: usize> fmt::Debug for Array<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<B: fmt::Debug, const N: usize> fmt::Debug for ArrayBits<B, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T, const N: usize> Deref for Array<T, N> {
    type Target = [T; N];

    fn deref(&self) -> &[T; N] {
        &self.0
    }
}

impl<T, const N: usize> DerefMut for Array<T, N> {
    fn deref_mut(&mut self) -> &mut [T; N] {
        &mut self.0
    }
}

impl<T, const N: usize> From<[T; N]> for Array<T, N> {
    fn from(array: [T; N]) -> Self {
        Array(array)
    }
}

impl<T, const N: usize> From<Array<T, N>> for [T; N] {
    fn from(array: Array<T, N>) -> Self {
        array.0
    }
}

impl<T, const N: usize> AsRef<[T]> for Array<T, N> {
    fn as_ref(&self) -> &[T] {
        &self.0
    }
}

impl<T, const N: usize> AsMut<[T]> for Array<T, N> {
    fn as_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

impl<T, const N: usize> IntoIterator for Array<T, N> {
    type Item = T;
    type IntoIter = std::array::IntoIter<T, N>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a, T, const N: usize> IntoIterator for &'a Array<T, N> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'a, T, const N: usize> IntoIterator for &'a mut Array<T, N> {
    type Item = &'a mut T;
    type IntoIter = std::slice::IterMut<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter_mut()
    }
}

// SAFETY: `repr(transparent)` over `[T; N]`, which is all zeros when each `T` is.
unsafe impl<T: Zeroable, const N: usize> Zeroable for Array<T, N> {}

// SAFETY: `repr(transparent)` over `[T; N]`: an array has no padding between or after its
// elements (its size is `N` times the element's, a multiple of the alignment), and the elements
// have none (`T: NoUninit`); `NoUninit` makes `T`, so the array, `Copy` and `'static`.
unsafe impl<T: NoUninit, const N: usize> NoUninit for Array<T, N> {}

// SAFETY: `T::Bits` has `T`'s layout (the contract of `T`'s impl), so `ArrayBits<T::Bits, N>`
// (transparent over `[T::Bits; N]`) has the layout of `[T; N]` and so of `Array<T, N>`, element
// for element; the pattern is valid exactly when each element's is.
unsafe impl<T: CheckedBitPattern, const N: usize> CheckedBitPattern for Array<T, N> {
    type Bits = ArrayBits<T::Bits, N>;

    #[inline]
    fn is_valid_bit_pattern(bits: &Self::Bits) -> bool {
        bits.0.iter().all(T::is_valid_bit_pattern)
    }
}

// SAFETY: `repr(transparent)` over `[B; N]`, which is all zeros when each `B` is.
unsafe impl<B: Zeroable, const N: usize> Zeroable for ArrayBits<B, N> {}

// SAFETY: `repr(transparent)` over `[B; N]`: every pattern of the array is one of `N` elements,
// each valid for any bits (`B: AnyBitPattern`, which also makes `B` `Copy` and `'static`).
unsafe impl<B: AnyBitPattern, const N: usize> AnyBitPattern for ArrayBits<B, N> {}
