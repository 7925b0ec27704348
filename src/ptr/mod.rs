//! [`Ptr<T>`]: an offset into an arena plus the stamp that proves which allocation it names.

pub(crate) mod array;
pub(crate) mod handles;
pub(crate) mod value;

use crate::alloc::{self, Placement, MAX_ALIGN};
use crate::error::{Error, Result};
use bytemuck::{Pod, Zeroable};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use value::{invalid_value, is_valid, Value};

/// A typed reference to a value allocated in an [`Arena`](crate::Arena) with
/// [`alloc`](crate::Arena::alloc).
///
/// A `Ptr` is an offset, not an address: the same `Ptr` names the same object in the arena, in
/// every [`Snapshot`](crate::Snapshot) of it, in every arena made from those snapshots and in
/// proxies, each mapped at a different address. It is plain data (`Pod`), so objects in the arena
/// can hold `Ptr`s to each other.
///
/// Besides the offset it carries a *stamp*, unique to the allocation within the process, that
/// the arena also stores next to the object. Every access compares the two, so a `Ptr` to a freed
/// object, to an object of another arena, or to an object that a [`restore`](crate::Arena::restore)
/// undid is refused with [`Error::InvalidPtr`] instead of showing whatever lives there now.
///
/// ```
/// use cowarena::{Arena, Ptr};
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Node { value: u64, next: Ptr<Node> }
///
/// let mut a = Arena::with_capacity(1 << 20)?;
/// let tail = a.alloc(Node { value: 2, next: Ptr::null() })?;
/// let head = a.alloc(Node { value: 1, next: tail })?;
/// let mut sum = 0;
/// let mut p = head;
/// while !p.is_null() {
///     sum += a.get(p).value;
///     p = a.get(p).next;
/// }
/// assert_eq!(sum, 3);
/// # Ok::<(), cowarena::Error>(())
/// ```
#[repr(C)]
pub struct Ptr<T> {
    offset: u64,
    stamp: u64,
    // `fn() -> T`: a Ptr owns no T, so it is Send, Sync and covariant whatever T is.
    _type: PhantomData<fn() -> T>,
}

impl<T> Ptr<T> {
    /// The null `Ptr`: names no object; every access to it is [`Error::InvalidPtr`]. It is the
    /// all-zero value, so zeroed memory holds null `Ptr`s.
    pub const fn null() -> Self {
        Ptr {
            offset: 0,
            stamp: 0,
            _type: PhantomData,
        }
    }

    /// Whether this is the [null](Ptr::null) `Ptr`.
    pub const fn is_null(self) -> bool {
        self.offset == 0 && self.stamp == 0
    }

    /// The object's byte offset in the arena (for use with `read`, `write` or `as_bytes`).
    pub fn offset(self) -> usize {
        usize::try_from(self.offset).unwrap_or(usize::MAX)
    }

    /// The same offset and stamp, naming a `U`: for handles whose target type is chosen by the
    /// module that owns it (see [`handles`]).
    pub(crate) const fn cast<U>(self) -> Ptr<U> {
        Ptr {
            offset: self.offset,
            stamp: self.stamp,
            _type: PhantomData,
        }
    }

    pub(crate) const fn from_raw(offset: usize, stamp: u64) -> Self {
        Ptr {
            offset: offset as u64,
            stamp,
            _type: PhantomData,
        }
    }

    pub(crate) const fn stamp(self) -> u64 {
        self.stamp
    }
}

impl<T: Value> Ptr<T> {
    /// Where objects of type `T` sit in the allocator's layout, computed at compile time. Using
    /// it for a type aligned above [`MAX_ALIGN`] fails to compile: such a value could not be
    /// placed aligned in a page of every supported platform.
    pub(crate) const PLACE: Placement = {
        assert!(
            align_of::<T>() <= MAX_ALIGN,
            "cowarena: types aligned above 4096 bytes cannot live in an arena"
        );
        Placement::of(size_of::<T>(), align_of::<T>())
    };
}

/// Whether `p` names a live object in `bytes` (an arena's or snapshot's memory).
#[inline(always)]
pub(crate) fn is_live<T: Value>(bytes: &[u8], p: Ptr<T>) -> bool {
    alloc::live_at(bytes, p.offset(), p.stamp, &Ptr::<T>::PLACE)
}

/// The object at `p`'s offset, or `None` if its bytes are not a valid `T`. An `Option`, not a
/// `Result`: the caller's failure path then is a call that does not return, so a loop of `get`s
/// has no path back into its body and the compiler hoists the checks on `bytes` out of it (the
/// `Result` of an out-of-line error constructor has to be tested for `Ok` after the call).
///
/// # Safety
/// `is_live(bytes, p)` must hold.
#[inline(always)]
unsafe fn object<T: Value>(bytes: &[u8], p: Ptr<T>) -> Option<&T> {
    // SAFETY: `is_live` checked `offset + size_of::<T>() <= offset + stamp_at < bytes.len()`, so
    // the object lies inside `bytes`, and that its address is a multiple of `PLACE.mask + 1`,
    // itself a multiple of T's alignment.
    let data = unsafe { bytes.as_ptr().add(p.offset()) };
    // SAFETY: as above, `size_of::<T>()` bytes, aligned for `T`.
    if !unsafe { is_valid::<T>(data) } {
        return None;
    }
    // SAFETY: in bounds and aligned (above), and the bytes are a valid `T` (checked); the
    // reference borrows `bytes`, so it cannot outlive the memory.
    Some(unsafe { &*data.cast::<T>() })
}

/// The object `p` names in `bytes`; panics with the reason if `p` is not live there or its bytes
/// are not a valid `T`.
#[inline(always)]
#[track_caller]
pub(crate) fn get<T: Value>(bytes: &[u8], p: Ptr<T>) -> &T {
    if !is_live(bytes, p) {
        fail(invalid(bytes, p));
    }
    // SAFETY: `is_live` holds.
    match unsafe { object(bytes, p) } {
        Some(v) => v,
        None => fail(invalid_value::<T>(p.offset())),
    }
}

/// The object `p` names in `bytes`, or why `p` is not live there or its bytes are not a `T`.
#[inline(always)]
pub(crate) fn check<T: Value>(bytes: &[u8], p: Ptr<T>) -> Result<&T> {
    if is_live(bytes, p) {
        // SAFETY: `is_live` holds.
        unsafe { object(bytes, p) }.ok_or_else(|| invalid_value::<T>(p.offset()))
    } else {
        Err(invalid(bytes, p))
    }
}

/// Why `p` does not name a live object in `bytes`.
#[cold]
#[inline(never)]
pub(crate) fn invalid<T: Value>(bytes: &[u8], p: Ptr<T>) -> Error {
    alloc::explain(
        bytes,
        p.offset(),
        p.stamp,
        Ptr::<T>::PLACE,
        std::any::type_name::<T>(),
    )
}

/// Panics with the error's message: the panicking accessors' failure path.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn fail(e: Error) -> ! {
    panic!("cowarena: {e}")
}

impl<T> Clone for Ptr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Ptr<T> {}

impl<T> PartialEq for Ptr<T> {
    fn eq(&self, other: &Self) -> bool {
        self.offset == other.offset && self.stamp == other.stamp
    }
}

impl<T> Eq for Ptr<T> {}

impl<T> Hash for Ptr<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.offset.hash(state);
        self.stamp.hash(state);
    }
}

impl<T> Default for Ptr<T> {
    fn default() -> Self {
        Ptr::null()
    }
}

impl<T> fmt::Debug for Ptr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_null() {
            return write!(f, "Ptr<{}>(null)", std::any::type_name::<T>());
        }
        write!(
            f,
            "Ptr<{}>({:#x}, stamp {:#x})",
            std::any::type_name::<T>(),
            self.offset,
            self.stamp
        )
    }
}

// SAFETY: `Ptr<T>` is `repr(C)` with two `u64` fields and a zero-sized marker, so it has no
// padding and the all-zero pattern is a valid value (the null Ptr).
unsafe impl<T> Zeroable for Ptr<T> {}

// SAFETY: as above, every bit pattern is a valid `Ptr<T>` (validity is checked at each use, never
// assumed), the type is `Copy`, and `T: 'static` makes it `'static`.
unsafe impl<T: 'static> Pod for Ptr<T> {}
