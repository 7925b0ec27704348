//! The lookups by text of an [`ArenaMap`] keyed by [`ArenaString`].

use super::table::Probe;
use super::Table;
use crate::collections::expect;
use crate::collections::string::text_at;
use crate::error::Result;
use crate::ptr::handles::{ArenaMap, ArenaString};
use crate::ptr::value::Value;
use crate::typed::lend::Spans;
use crate::typed::sealed::TOKEN;
use crate::typed::{View, ViewMut};

/// The lookups by text of a map keyed by [`ArenaString`]. Its keys are hashed and compared by
/// their text by every method ([`get`](ArenaMap::get), [`insert`](ArenaMap::insert),
/// [`entry`](ArenaMap::entry), ...): two handles holding the same text are the same key. A
/// key's text must not change while it is in the map. Such a map is lent for reading
/// ([`View::lend`], a [`MapRef`](crate::MapRef)) and mutably ([`view_mut`](ArenaMap::view_mut),
/// [`ViewMut::lend_mut`], a [`Loan`](crate::Loan)): its [`MapMut`](crate::MapMut) looks keys up
/// by text ([`get_str`](crate::MapMut::get_str), [`get_str_mut`](crate::MapMut::get_str_mut)),
/// reading the keys' strings, which no view lent with it may write.
///
/// ```
/// use cowarena::{Arena, ArenaMap, ArenaString};
/// let mut a = Arena::with_capacity(1 << 20)?;
/// let ids = ArenaMap::<ArenaString, u32>::new(&mut a)?;
/// ids.insert_str(&mut a, "x", 0)?;
/// let y = ArenaString::from_str(&mut a, "y")?;
/// ids.insert(&mut a, y, 1)?;
/// let s = a.snapshot()?;
/// let another_y = ArenaString::from_str(&mut a, "y")?;
/// assert_eq!(ids.get(&a, &another_y), Some(&1));  // by text, not by handle
/// assert_eq!((ids.get_str(&s, "x"), ids.get_str(&s, "z")), (Some(&0), None));
/// # Ok::<(), cowarena::Error>(())
/// ```
impl<V: Value> ArenaMap<ArenaString, V> {
    /// The value for the key whose text is `key`.
    ///
    /// # Errors
    /// As [`try_get`](Self::try_get).
    pub fn try_get_str<'a>(&self, view: &'a impl View, key: &str) -> Result<Option<&'a V>> {
        let bytes = view.try_bytes()?;
        let t = self.table(bytes)?;
        if t.head.len == 0 {
            return Ok(None);
        }
        self.value_in(bytes, &t, &Probe::text(key.as_bytes(), t.head.seed, bytes))
    }

    /// The value for the key whose text is `key`.
    ///
    /// # Panics
    /// If the handle names no live map in `view` (see [`try_get_str`](Self::try_get_str)).
    #[track_caller]
    pub fn get_str<'a>(&self, view: &'a impl View, key: &str) -> Option<&'a V> {
        expect(self.try_get_str(view, key))
    }

    /// Inserts `value` for the text `key`, allocating an [`ArenaString`] for a key not in the
    /// map yet; returns the value it replaces.
    ///
    /// # Errors
    /// As [`insert`](Self::insert).
    pub fn insert_str(&self, arena: &mut impl ViewMut, key: &str, value: V) -> Result<Option<V>> {
        let arena = arena.arena_mut(TOKEN);
        if let Some(old) = self.try_get_str(arena, key)?.copied() {
            let bytes = arena.as_bytes();
            let t = self.table(bytes)?;
            let (i, _) =
                self.find_in(bytes, &t, &Probe::text(key.as_bytes(), t.head.seed, bytes))?;
            // SAFETY: `table` checked `t`, and `find_in` returns a slot below `t.cap()`.
            unsafe { Self::write_slot(arena, &t, i, None, value) };
            return Ok(Some(old));
        }
        let text = ArenaString::from_str(arena, key)?;
        match self.insert(arena, text, value) {
            Ok(old) => Ok(old),
            Err(e) => {
                text.free(arena)?;
                Err(e)
            }
        }
    }
}

impl<K: Value + Eq, V: Value> ArenaMap<K, V> {
    /// For lending a map keyed by [`ArenaString`]: checks every key's string (live, its text
    /// UTF-8) and records its header and its text as spans the view reads. The view reads them
    /// for every lookup and lends the text as `&str`, without a check: they stay as checked
    /// because no view lent with it may write them (the loan checks that its spans written are
    /// disjoint from these) and the view itself writes only values. A lend costs in proportion
    /// to the keys' text.
    pub(super) fn plan_text_keys(bytes: &[u8], t: &Table, spans: &mut Spans) -> Result<()> {
        let table = Self::table_bytes(bytes, t);
        for i in 0..t.cap() {
            if Self::tag_at(table, i) == 0 {
                continue;
            }
            let at = i * Self::STRIDE + Self::KEY_AT;
            let key: ArenaString = bytemuck::pod_read_unaligned(&table[at..at + size_of::<K>()]);
            let (head, text) = key.bytes.read_plan(bytes)?;
            text_at(&bytes[text.clone()], text.start)?;
            spans.push_read(head);
            spans.push_read(text);
        }
        Ok(())
    }
}
