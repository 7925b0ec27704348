//! [`MapMut`]: a mutable view of an [`ArenaMap`]'s values with the handle checked once, which
//! marks the pages of the values it lends as written; and [`MapRef`], its read-only twin.

use super::table::{tag, Probe};
use super::{MapIter, Table};
use crate::collections::expect;
use crate::error::{Error, Result};
use crate::ptr::handles::{ArenaMap, ArenaString};
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
        Self::slot_of(table, t, &Self::probe(all, t.head.seed, key).ok()?)
    }
}

/// A mutable view of an [`ArenaMap`]'s values, from [`ArenaMap::view_mut`],
/// [`ViewMut::lend_mut`] or a [`Loan`](crate::Loan): the handle was checked once, and the arena
/// stays borrowed while the view lives, so no entry can be added or removed. Making it checks
/// every entry once when keys or values have invalid bit patterns (see
/// [`Value`](crate::Value); nothing for `Pod` types). A lookup costs the hash and the probe;
/// [`get_mut`](Self::get_mut) marks the value's pages as written (a test of the arena's bit for
/// the page, as [`VecMut`](crate::VecMut) does).
///
/// A map keyed by [`ArenaString`] is looked up by text ([`get_str`](Self::get_str),
/// [`get_str_mut`](Self::get_str_mut), [`iter_str`](Self::iter_str)): making its view also
/// checks every key's string (live, its text UTF-8), which then must not be lent mutably with it
/// ([`Error::Overlap`]), and its lookups read the keys' text in place.
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
    /// The arena's first byte, where the strings of text keys are read.
    base: NonNull<u8>,
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
            // SAFETY: the arena's first byte, of a mapping, so not null.
            base: unsafe { NonNull::new_unchecked(lent.base()) },
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

    /// The slot holding `key`.
    ///
    /// # Panics
    /// For a map keyed by [`ArenaString`], whose view looks keys up by text only.
    #[inline(always)]
    #[track_caller]
    fn slot(&self, key: &K) -> Option<usize> {
        if ArenaMap::<K, V>::text_keys() {
            by_handle();
        }
        ArenaMap::<K, V>::slot_in(&[], self.bytes(), &self.t, key)
    }

    /// The value of slot `i`, for writing; its pages are marked as written.
    fn value_mut(&mut self, i: usize) -> &mut V {
        let at = i * ArenaMap::<K, V>::STRIDE + ArenaMap::<K, V>::VALUE_AT;
        // SAFETY: slot `i < cap` of the table, inside the arena (see `new`).
        unsafe { self.marker.touch::<V>(self.t.start + at) };
        // SAFETY: as above, and values sit aligned for `V` in the table, valid (checked when the
        // view was lent); the reference borrows the view mutably, so it is the only one.
        unsafe { &mut *self.table.as_ptr().add(at).cast::<V>() }
    }

    /// The value for `key`.
    ///
    /// # Panics
    /// For a map keyed by [`ArenaString`]: use [`get_str`](Self::get_str) (the view cannot read
    /// the text of a handle that is not one of its keys, which may lie in memory lent to
    /// another view).
    #[track_caller]
    pub fn get(&self, key: &K) -> Option<&V> {
        let i = self.slot(key)?;
        // SAFETY: the entries were checked when the view was lent (`lend_plan`), and changed
        // since only through `get_mut`'s `&mut V`.
        Some(unsafe { ArenaMap::<K, V>::value_at(self.bytes(), i) })
    }

    /// Whether the map holds `key`.
    ///
    /// # Panics
    /// For a map keyed by [`ArenaString`], as [`get`](Self::get).
    #[track_caller]
    pub fn contains_key(&self, key: &K) -> bool {
        self.slot(key).is_some()
    }

    /// The value for `key`, for writing; its pages are marked as written.
    ///
    /// # Panics
    /// For a map keyed by [`ArenaString`], as [`get`](Self::get).
    #[track_caller]
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = self.slot(key)?;
        Some(self.value_mut(i))
    }

    /// Iterates over the entries, in no particular order.
    pub fn iter(&self) -> MapIter<'_, K, V> {
        // SAFETY: as in `get`; the iterator borrows the view.
        unsafe { MapIter::new(self.bytes()) }
    }
}

/// A lookup by handle in a view of a map keyed by [`ArenaString`].
#[cold]
#[inline(never)]
#[track_caller]
fn by_handle() -> ! {
    panic!(
        "cowarena: a view of a map keyed by ArenaString looks keys up by text (get_str, \
         get_str_mut, contains_str): it cannot read the text of another handle"
    )
}

/// The lookups by text of a view of a map keyed by [`ArenaString`].
///
/// ```
/// use cowarena::{Arena, ArenaMap, ArenaString, ArenaVec};
/// let mut a = Arena::with_capacity(1 << 20)?;
/// let vars = ArenaMap::<ArenaString, i64>::new(&mut a)?;
/// vars.insert_str(&mut a, "x", 1)?;
/// vars.insert_str(&mut a, "y", 2)?;
/// let trail = ArenaVec::<i64>::with_capacity(&mut a, 16)?;
/// let mut loan = a.loan((vars, trail));
/// let (mut v, mut t) = loan.views();
/// *v.get_str_mut("x").unwrap() += 10;
/// t.push(v.insert_str("y", 20)?.unwrap())?;         // the old value
/// assert_eq!((v.get_str("x"), v.contains_str("z")), (Some(&11), false));
/// assert!(v.insert_str("z", 0).is_err());           // a view adds no keys...
/// vars.insert_str(&mut loan, "z", 0)?;              // ...the loan does, between views
/// let (v, _) = loan.views();
/// let mut names: Vec<&str> = v.iter_str().map(|(k, _)| k).collect();
/// names.sort();
/// assert_eq!(names, ["x", "y", "z"]);
/// # Ok::<(), cowarena::Error>(())
/// ```
///
/// Text read from the view borrows it, so it cannot outlive the loan's next use:
///
/// ```compile_fail,E0499
/// # use cowarena::{Arena, ArenaMap, ArenaString};
/// # let mut a = Arena::with_capacity(1 << 20)?;
/// # let vars = ArenaMap::<ArenaString, i64>::new(&mut a)?;
/// # vars.insert_str(&mut a, "x", 1)?;
/// let mut loan = a.loan(vars);
/// let v = loan.views();
/// let name: &str = v.iter_str().next().unwrap().0;
/// vars.insert_str(&mut loan, "y", 2)?; // error: `loan` is borrowed through `name`
/// assert_eq!(name, "x");
/// # Ok::<(), cowarena::Error>(())
/// ```
///
/// and neither can the view be used after a snapshot or a restore:
///
/// ```compile_fail,E0499
/// # use cowarena::{Arena, ArenaMap, ArenaString};
/// # let mut a = Arena::with_capacity(1 << 20)?;
/// # let vars = ArenaMap::<ArenaString, i64>::new(&mut a)?;
/// # let s = a.snapshot()?;
/// let mut loan = a.loan(vars);
/// let v = loan.views();
/// loan.restore(&s)?;
/// v.get_str("x"); // error: `loan` is borrowed by `v`
/// # Ok::<(), cowarena::Error>(())
/// ```
impl<V: Value> MapMut<'_, ArenaString, V> {
    /// The text of `key`, a key of an occupied slot of the table.
    ///
    /// # Safety
    /// `key` was read from an occupied slot of the view's table.
    #[inline]
    unsafe fn key_text(&self, key: ArenaString) -> &[u8] {
        // SAFETY: every occupied slot's key was checked when the view was lent
        // (`plan_text_keys`), and its spans recorded as read: no view of the loan writes them,
        // the arena is borrowed, and this view writes only values, so they are as checked.
        unsafe { key.bytes.read_unchecked(self.base.as_ptr()) }
    }

    /// The slot holding the key whose text is `key`.
    #[inline]
    fn text_slot(&self, key: &str) -> Option<usize> {
        if self.t.head.len == 0 {
            return None;
        }
        let key = key.as_bytes();
        let found = ArenaMap::<ArenaString, V>::find_by(
            self.bytes(),
            self.t.cap(),
            tag(key, self.t.head.seed),
            // SAFETY: `find_by` passes the keys of occupied slots.
            |stored| unsafe { self.key_text(bytemuck::pod_read_unaligned(stored)) } == key,
        );
        match found {
            Some((i, true)) => Some(i),
            _ => None,
        }
    }

    /// The value for the key whose text is `key`.
    pub fn get_str(&self, key: &str) -> Option<&V> {
        let i = self.text_slot(key)?;
        // SAFETY: as in `get`.
        Some(unsafe { ArenaMap::<ArenaString, V>::value_at(self.bytes(), i) })
    }

    /// Whether the map holds a key whose text is `key`.
    pub fn contains_str(&self, key: &str) -> bool {
        self.text_slot(key).is_some()
    }

    /// The value for the key whose text is `key`, for writing; its pages are marked as written.
    pub fn get_str_mut(&mut self, key: &str) -> Option<&mut V> {
        let i = self.text_slot(key)?;
        Some(self.value_mut(i))
    }

    /// Replaces the value of the key whose text is `key`; returns the value it replaces.
    ///
    /// # Errors
    /// [`Error::CannotInsert`] when the map does not hold the key: a view adds no entries (a new
    /// key needs a string allocated). Insert it with [`ArenaMap::insert_str`] through the arena
    /// or the loan, between views.
    pub fn insert_str(&mut self, key: &str, value: V) -> Result<Option<V>> {
        match self.get_str_mut(key) {
            Some(old) => Ok(Some(std::mem::replace(old, value))),
            None => Err(Error::CannotInsert {
                key: key.to_owned(),
            }),
        }
    }

    /// Iterates over the entries, keys as text, in no particular order.
    pub fn iter_str(&self) -> impl Iterator<Item = (&str, &V)> + '_ {
        self.iter().map(|(k, v)| {
            // SAFETY: the iterator yields the keys of occupied slots, whose text was checked to
            // be UTF-8 when the view was lent and is unchanged (see `key_text`).
            let text = unsafe { std::str::from_utf8_unchecked(self.key_text(*k)) };
            (text, v)
        })
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

/// The lookups by text of a map keyed by [`ArenaString`], lent for reading.
///
/// ```
/// use cowarena::{Arena, ArenaMap, ArenaString, View};
/// let mut a = Arena::with_capacity(1 << 20)?;
/// let ids = ArenaMap::<ArenaString, u32>::new(&mut a)?;
/// ids.insert_str(&mut a, "x", 7)?;
/// let r = a.lend(ids);
/// assert_eq!((r.get_str("x"), r.contains_str("y")), (Some(&7), false));
/// # Ok::<(), cowarena::Error>(())
/// ```
impl<'a, V: Value> MapRef<'a, ArenaString, V> {
    /// The slot holding the key whose text is `key`.
    fn text_slot(&self, key: &str) -> Option<usize> {
        let probe = Probe::text(key.as_bytes(), self.t.head.seed, self.all);
        ArenaMap::<ArenaString, V>::slot_of(self.table, &self.t, &probe)
    }

    /// The value for the key whose text is `key`.
    pub fn get_str(&self, key: &str) -> Option<&'a V> {
        let i = self.text_slot(key)?;
        // SAFETY: as in `get`.
        Some(unsafe { ArenaMap::<ArenaString, V>::value_at(self.table, i) })
    }

    /// Whether the map holds a key whose text is `key`.
    pub fn contains_str(&self, key: &str) -> bool {
        self.text_slot(key).is_some()
    }
}

impl<K, V> fmt::Debug for MapRef<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapRef")
            .field("len", &self.t.head.len)
            .finish_non_exhaustive()
    }
}
