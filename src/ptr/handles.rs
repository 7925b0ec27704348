//! The handles of the collections: `Pod` values that name a collection's header in an arena, as
//! a [`Ptr`] names an object. They are defined here, with the other handles, so that the typed
//! API below the collections can name them (`alloc_slice_zeroed` returns an [`ArenaVec`],
//! `lend_mut` lends them); the headers' layout and every operation are the collections' own
//! ([`crate::collections`]).

use super::Ptr;
use bytemuck::{Pod, Zeroable};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

/// What a collection handle points to: a header whose layout only the collection knows (it casts
/// the pointer to its own header type).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Header {}

/// A growable array of `T` stored in an [`Arena`](crate::Arena): a `Pod` handle, so it can be the root or a
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
/// v.set(&mut a, 0, 42);
/// assert_eq!(v.get(&a, 0), Some(&42));
/// assert_eq!(v.get(&s, 0), Some(&0));
/// assert_eq!(v.iter(&s).sum::<u32>(), 4950);
/// assert_eq!(v.pop(&mut a), Some(99));
/// assert_eq!(v.len(&a), 99);
///
/// // In a hot loop, check the handle once and index a view.
/// let mut w = v.view_mut(&mut a);
/// for i in 0..w.len() {
///     w[i] *= 2;
/// }
/// assert_eq!(v.as_slice(&a)[..3], [84, 2, 4]);
/// # Ok::<(), cowarena::Error>(())
/// ```
#[repr(C)]
pub struct ArenaVec<T> {
    pub(crate) head: Ptr<Header>,
    pub(crate) _type: PhantomData<fn() -> T>,
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

/// A hash map from `K` to `V` stored in an [`Arena`](crate::Arena): a `Pod` handle, so it can be the root or a
/// field of another arena object (see the [module docs](crate::collections)).
///
/// Keys are hashed and compared by their bytes (with a per-map random seed), so keys that are
/// equal must have equal bytes, as they do for [`Value`](crate::Value) types with a derived
/// `Eq` (padding made explicit with [`Pad`](crate::Pad) is always zero). An entry is a 4-byte hash tag,
/// the key and the value, side by side, so an insert writes one entry and the map's header.
///
/// ```
/// use cowarena::{Arena, ArenaMap};
/// let mut a = Arena::with_capacity(1 << 20)?;
/// let m = ArenaMap::<u64, [u8; 4]>::new(&mut a)?;
/// m.insert(&mut a, 1, *b"one ")?;
/// m.insert(&mut a, 2, *b"two ")?;
/// let s = a.snapshot()?;
/// assert_eq!(m.remove(&mut a, &1), Some(*b"one "));
/// assert_eq!(m.get(&a, &1), None);
/// assert_eq!(m.get(&s, &1), Some(b"one "));
/// assert_eq!(m.len(&s), 2);
/// let mut keys: Vec<u64> = m.iter(&s).map(|(k, _)| *k).collect();
/// keys.sort();
/// assert_eq!(keys, [1, 2]);
/// # Ok::<(), cowarena::Error>(())
/// ```
#[repr(C)]
pub struct ArenaMap<K, V> {
    pub(crate) head: Ptr<Header>,
    pub(crate) _type: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for ArenaMap<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for ArenaMap<K, V> {}

impl<K, V> PartialEq for ArenaMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.head == other.head
    }
}

impl<K, V> Eq for ArenaMap<K, V> {}

impl<K, V> Hash for ArenaMap<K, V> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.head.hash(state);
    }
}

impl<K, V> fmt::Debug for ArenaMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ArenaMap<{}, {}>({:#x})",
            std::any::type_name::<K>(),
            std::any::type_name::<V>(),
            self.head.offset()
        )
    }
}

// SAFETY: `repr(C)` around one `Ptr` (itself Zeroable) and a zero-sized marker: no padding, and
// all zeros is a valid (null) handle.
unsafe impl<K, V> Zeroable for ArenaMap<K, V> {}

// SAFETY: as above; every bit pattern is a valid handle (it is checked at each use), and the
// `'static` bounds make the handle `'static`.
unsafe impl<K: 'static, V: 'static> Pod for ArenaMap<K, V> {}

/// A growable byte string stored in an [`Arena`](crate::Arena): a `Pod` handle, so it can be the
/// root or a field of another arena object (see the [module docs](crate::collections)). It is an
/// [`ArenaVec<u8>`] with byte-string names; [`as_vec`](Self::as_vec) gives the vector's whole API.
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
/// log.as_mut_slice(&mut a)[0] = b'S';
/// assert_eq!(log.as_vec().get(&a, 0), Some(&b'S'));
/// # Ok::<(), cowarena::Error>(())
/// ```
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct ArenaBytes {
    pub(crate) bytes: ArenaVec<u8>,
}

/// UTF-8 text stored in an [`Arena`](crate::Arena): a `Pod` handle, so it can be the root or a
/// field of another arena object. Its bytes are an [`ArenaVec<u8>`], so raw writes can make
/// them invalid UTF-8: [`try_as_str`](Self::try_as_str) checks them, and returns
/// [`Error::InvalidValue`](crate::Error::InvalidValue) for bytes that are not UTF-8.
///
/// As a key of an [`ArenaMap`] it is hashed and compared by its text, not by its handle (see
/// [`ArenaMap::get_str`]).
///
/// ```
/// use cowarena::{Arena, ArenaString};
/// let mut a = Arena::with_capacity(1 << 20)?;
/// let name = ArenaString::from_str(&mut a, "path")?;
/// let s = a.snapshot()?;
/// name.push_str(&mut a, " 17")?;
/// assert_eq!(name.as_str(&a), "path 17");
/// assert_eq!(name.as_str(&s), "path");
/// a.write(name.as_vec().as_slice(&a).as_ptr() as usize - a.as_bytes().as_ptr() as usize, &[0xFF])?;
/// assert!(name.try_as_str(&a).is_err()); // not UTF-8
/// # Ok::<(), cowarena::Error>(())
/// ```
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct ArenaString {
    pub(crate) bytes: ArenaVec<u8>,
}
