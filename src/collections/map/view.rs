//! [`MapMut`]: a mutable view of an [`ArenaMap`]'s values with the handle checked once, which
//! marks the pages of the values it lends as written; and [`MapRef`], its read-only twin.

use super::{MapIter, Table};
use crate::collections::expect;
use crate::error::Result;
use crate::ptr::handles::ArenaMap;
use crate::ptr::value::Value;
use crate::typed::lend::{self, Lent};
use crate::typed::marks::Marker;
use crate::typed::sealed::TOKEN;
use crate::typed::ViewMut;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;

impl<K: Value + Eq, V: Value> ArenaMap<K, V> {
    /// A mutable view of the map's values, with the handle checked once (see [`MapMut`]).
    ///
    /// # Errors
    /// As [`try_get`](Self::try_get).
    pub fn try_view_mut<'a>(&self, arena: &'a mut impl ViewMut) -> Result<MapMut<'a, K, V>> {
        lend::lend(arena.arena_mut(TOKEN), *self)
    }

    /// A mutable view of the map's values, with the handle checked once (see [`MapMut`]).
    ///
    /// # Panics
    /// If the handle names no live map in `arena`.
    #[track_caller]
    pub fn view_mut<'a>(&self, arena: &'a mut impl ViewMut) -> MapMut<'a, K, V> {
        expect(self.try_view_mut(arena))
    }

    /// The slot of table `t` (whose bytes are `table`) holding `key`, if any; `all` is the
    /// arena's bytes, where [`ArenaString`](crate::ArenaString) keys' text is read (maps with
    /// other keys read nothing there).
    fn slot_in(all: &[u8], table: &[u8], t: &Table, key: &K) -> Option<usize> {
        if t.head.len == 0 {
            return None;
        }
        let probe = Self::probe(all, t.head.seed, key).ok()?;
        match Self::find(table, t.cap(), &probe) {
            Some((i, true)) => Some(i),
            _ => None,
        }
    }
}

/// A mutable view of an [`ArenaMap`]'s values, from [`ArenaMap::view_mut`],
/// [`ViewMut::lend_mut`] or a [`Loan`](crate::Loan): the handle was checked once, and the arena
/// stays borrowed while the view lives, so no entry can be added or removed. Making it checks
/// every entry once when keys or values have invalid bit patterns (see
/// [`Value`](crate::Value); nothing for `Pod` types). A lookup costs the hash and the probe; [`get_mut`](Self::get_mut) marks the value's pages as written (a test of
/// the arena's bit for the page, as [`VecMut`](crate::VecMut) does).
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
    marker: Marker,
    _table: PhantomData<&'a mut [u8]>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<'a, K: Value + Eq, V: Value> MapMut<'a, K, V> {
    /// # Safety
    /// As [`Lend::lend`](crate::collections::Lend): `t` was checked against the arena `lent`
    /// lends from, unchanged since but through views of this map, and the table is lent to this
    /// view alone for `'a`.
    pub(in crate::collections) unsafe fn new(t: Table, lent: &Lent<'a>) -> Self {
        let table = if t.cap() == 0 {
            NonNull::dangling()
        } else {
            // SAFETY: in bounds of the arena (the caller's contract), so not null.
            unsafe { NonNull::new_unchecked(lent.base().add(t.start)) }
        };
        MapMut {
            table,
            t,
            marker: lent.marker(),
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

    /// The value for `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        let i = ArenaMap::<K, V>::slot_in(&[], self.bytes(), &self.t, key)?;
        // SAFETY: the entries were checked when the view was lent (`lend_plan`), and changed
        // since only through `get_mut`'s `&mut V`.
        Some(unsafe { ArenaMap::<K, V>::value_at(self.bytes(), i) })
    }

    /// Whether the map holds `key`.
    pub fn contains_key(&self, key: &K) -> bool {
        ArenaMap::<K, V>::slot_in(&[], self.bytes(), &self.t, key).is_some()
    }

    /// The value for `key`, for writing; its pages are marked as written.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = ArenaMap::<K, V>::slot_in(&[], self.bytes(), &self.t, key)?;
        let at = i * ArenaMap::<K, V>::STRIDE + ArenaMap::<K, V>::VALUE_AT;
        // SAFETY: slot `i < cap` of the table, inside the arena (see `new`).
        unsafe { self.marker.touch::<V>(self.t.start + at) };
        // SAFETY: as above, and values sit aligned for `V` in the table, valid (checked when the
        // view was lent); the reference borrows the view mutably, so it is the only one.
        Some(unsafe { &mut *self.table.as_ptr().add(at).cast::<V>() })
    }

    /// Iterates over the entries, in no particular order.
    pub fn iter(&self) -> MapIter<'_, K, V> {
        // SAFETY: as in `get`; the iterator borrows the view.
        unsafe { MapIter::new(self.bytes()) }
    }
}

impl<K, V> fmt::Debug for MapMut<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapMut")
            .field("len", &self.t.head.len)
            .finish_non_exhaustive()
    }
}

/// An [`ArenaMap`] lent for reading with its handle checked once, by
/// [`View::lend`](crate::View::lend): lookups cost the hash and the probe.
///
/// ```
/// use cowarena::{Arena, ArenaMap, View};
/// let mut a = Arena::with_capacity(1 << 20)?;
/// let m = ArenaMap::<u32, u32>::new(&mut a)?;
/// m.insert(&mut a, 1, 10)?;
/// let r = a.lend(m);
/// assert_eq!((r.get(&1), r.contains_key(&2), r.len()), (Some(&10), false, 1));
/// # Ok::<(), cowarena::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct MapRef<'a, K, V> {
    /// The table's bytes.
    table: &'a [u8],
    /// The arena's bytes, where text keys are read.
    all: &'a [u8],
    t: Table,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<'a, K: Value + Eq, V: Value> MapRef<'a, K, V> {
    /// The map whose table `t` (checked) lies in `all`, the arena's bytes.
    ///
    /// # Safety
    /// Its entries were checked valid ([`ArenaMap::check_entries`]).
    pub(super) unsafe fn new(all: &'a [u8], t: Table) -> Self {
        MapRef {
            table: ArenaMap::<K, V>::table_bytes(all, &t),
            all,
            t,
            _types: PhantomData,
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

    /// The value for `key`.
    pub fn get(&self, key: &K) -> Option<&'a V> {
        let i = ArenaMap::<K, V>::slot_in(self.all, self.table, &self.t, key)?;
        // SAFETY: the entries were checked (`new`), and `table` is borrowed immutably.
        Some(unsafe { ArenaMap::<K, V>::value_at(self.table, i) })
    }

    /// Whether the map holds `key`.
    pub fn contains_key(&self, key: &K) -> bool {
        ArenaMap::<K, V>::slot_in(self.all, self.table, &self.t, key).is_some()
    }

    /// Iterates over the entries, in no particular order.
    pub fn iter(&self) -> MapIter<'a, K, V> {
        // SAFETY: as in `get`.
        unsafe { MapIter::new(self.table) }
    }
}

impl<K, V> fmt::Debug for MapRef<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapRef")
            .field("len", &self.t.head.len)
            .finish_non_exhaustive()
    }
}
