//! The lookups by text of an [`ArenaMap`] keyed by [`ArenaString`].

use super::table::Probe;
use crate::collections::expect;
use crate::error::Result;
use crate::ptr::handles::{ArenaMap, ArenaString};
use crate::ptr::value::Value;
use crate::typed::sealed::TOKEN;
use crate::typed::{View, ViewMut};

/// The lookups by text of a map keyed by [`ArenaString`]. Its keys are hashed and compared by
/// their text by every method ([`get`](ArenaMap::get), [`insert`](ArenaMap::insert),
/// [`entry`](ArenaMap::entry), ...): two handles holding the same text are the same key. A
/// key's text must not change while it is in the map. Such a map is lent for reading
/// ([`View::lend`]) but not mutably, since its lookups read the keys' text elsewhere in the
/// arena.
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
