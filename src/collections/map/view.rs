//! [`MapMut`]: a mutable view of an [`ArenaMap`]'s values with the handle checked once, which
//! marks the pages of the values it lends as written.

use super::{MapIter, Table};
use crate::collections::{expect, Marker, Marks, Tracker};
use crate::error::Result;
use crate::ptr::handles::ArenaMap;
use crate::typed::sealed::TOKEN;
use crate::typed::ViewMut;
use bytemuck::Pod;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;

impl<K: Pod + Eq, V: Pod> ArenaMap<K, V> {
    /// A mutable view of the map's values, with the handle checked once (see [`MapMut`]).
    ///
    /// # Errors
    /// As [`try_get`](Self::try_get).
    pub fn try_view_mut<'a>(&self, arena: &'a mut impl ViewMut) -> Result<MapMut<'a, K, V>> {
        let arena = arena.arena_mut(TOKEN);
        let t = self.table(arena.as_bytes())?;
        arena.check_writable()?;
        let base = arena.base_mut();
        // SAFETY: `table` checked that the table lies inside the arena, aligned; the view keeps
        // the arena borrowed, so the memory stays mapped and no other reference into it exists.
        Ok(unsafe { MapMut::new(base, t, Marker::Own(arena)) })
    }

    /// A mutable view of the map's values, with the handle checked once (see [`MapMut`]).
    ///
    /// # Panics
    /// If the handle names no live map in `arena`.
    #[track_caller]
    pub fn view_mut<'a>(&self, arena: &'a mut impl ViewMut) -> MapMut<'a, K, V> {
        expect(self.try_view_mut(arena))
    }
}

/// A mutable view of an [`ArenaMap`]'s values, from [`ArenaMap::view_mut`] or
/// [`ViewMut::lend_mut`]: the handle was checked once, and the arena stays borrowed while the
/// view lives, so no entry can be added or removed. A lookup costs the hash and the probe;
/// [`get_mut`](Self::get_mut) marks the value's pages as written (once per run of pages, as
/// [`VecMut`](crate::collections::VecMut) does).
///
/// ```
/// use cowarena::{Arena, ArenaMap};
/// let mut a = Arena::with_capacity(1 << 20)?;
/// let m = ArenaMap::<u32, u64>::new(&mut a)?;
/// for k in 0..100 {
///     m.insert(&mut a, k, 0)?;
/// }
/// let mut w = m.view_mut(&mut a);
/// for k in (0..100).chain(0..10) {
///     *w.get_mut(&k).unwrap() += 1;
/// }
/// assert_eq!((w.get(&5), w.get(&50), w.get(&500)), (Some(&2), Some(&1), None));
/// # Ok::<(), cowarena::Error>(())
/// ```
pub struct MapMut<'a, K, V> {
    /// The table's first byte (dangling when there is no table).
    table: NonNull<u8>,
    t: Table,
    marks: Marks,
    tracker: Box<Tracker<'a>>,
    _table: PhantomData<&'a mut [u8]>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<'a, K: Pod + Eq, V: Pod> MapMut<'a, K, V> {
    /// # Safety
    /// `base + t.start` must hold the table of `t`, aligned, inside memory that stays mapped
    /// and is referenced by nothing else for `'a`.
    pub(in crate::collections) unsafe fn new(base: *mut u8, t: Table, marker: Marker<'a>) -> Self {
        let table = if t.cap() == 0 {
            NonNull::dangling()
        } else {
            // SAFETY: in bounds of the arena (forwarded to the caller), so not null.
            unsafe { NonNull::new_unchecked(base.add(t.start)) }
        };
        let (tracker, marks) = Tracker::new(
            marker,
            (t.start, t.cap() * ArenaMap::<K, V>::STRIDE),
            (
                ArenaMap::<K, V>::VALUE_AT,
                ArenaMap::<K, V>::STRIDE,
                size_of::<V>(),
            ),
        );
        MapMut {
            table,
            t,
            marks,
            tracker,
            _table: PhantomData,
            _types: PhantomData,
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the table's memory (see `new`), borrowed from the view; an empty slice when
        // there is no table.
        unsafe {
            std::slice::from_raw_parts(self.table.as_ptr(), self.t.cap() * ArenaMap::<K, V>::STRIDE)
        }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.t.head.len as usize
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slot holding `key`, if any.
    fn slot(&self, key: &K) -> Option<usize> {
        if self.t.head.len == 0 {
            return None;
        }
        let tag = ArenaMap::<K, V>::tag_of(self.t.head.seed, key);
        match ArenaMap::<K, V>::find(self.bytes(), self.t.cap(), tag, key) {
            Some((i, true)) => Some(i),
            _ => None,
        }
    }

    /// The value for `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        let i = self.slot(key)?;
        Some(ArenaMap::<K, V>::value_at(self.bytes(), i))
    }

    /// Whether the map holds `key`.
    pub fn contains_key(&self, key: &K) -> bool {
        self.slot(key).is_some()
    }

    /// The value for `key`, for writing; its pages are marked as written.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = self.slot(key)?;
        let at = i * ArenaMap::<K, V>::STRIDE + ArenaMap::<K, V>::VALUE_AT;
        if self.marks.need_marking(at, size_of::<V>()) {
            self.tracker.mark(at, size_of::<V>());
        }
        // SAFETY: slot `i < cap` of the table (see `new`), whose values are aligned for `V`;
        // the reference borrows the view mutably, so it is the only one.
        Some(unsafe { &mut *self.table.as_ptr().add(at).cast::<V>() })
    }

    /// Iterates over the entries, in no particular order.
    pub fn iter(&self) -> MapIter<'_, K, V> {
        MapIter::new(self.bytes())
    }
}

impl<K, V> fmt::Debug for MapMut<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapMut")
            .field("len", &self.t.head.len)
            .finish_non_exhaustive()
    }
}
