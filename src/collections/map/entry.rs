//! [`Entry`]: one key's place in an [`ArenaMap`], looked up once for reading, updating or
//! inserting in place.

use super::Table;
use crate::arena::Arena;
use crate::collections::{expect, lend_slice};
use crate::error::Result;
use crate::ptr::handles::ArenaMap;
use crate::ptr::value::Value;
use crate::typed::sealed::TOKEN;
use crate::typed::ViewMut;
use std::fmt;

impl<K: Value + Eq, V: Value> ArenaMap<K, V> {
    /// The entry for `key`, for reading, updating or inserting in place with one lookup.
    ///
    /// # Errors
    /// As [`try_get`](Self::try_get).
    pub fn try_entry<'a>(&self, arena: &'a mut impl ViewMut, key: K) -> Result<Entry<'a, K, V>> {
        let arena = arena.arena_mut(TOKEN);
        let bytes = arena.as_bytes();
        let t = self.table(bytes)?;
        let probe = Self::probe(bytes, t.head.seed, &key)?;
        let tag = probe.tag;
        let slot = if t.cap() > 0 {
            Some(self.find_in(bytes, &t, &probe)?)
        } else {
            None
        };
        if let Some((i, true)) = slot {
            Self::check_value(bytes, &t, i)?;
        }
        Ok(Entry {
            map: *self,
            arena,
            table: t,
            key,
            tag,
            slot,
        })
    }

    /// The entry for `key` (see [`Entry`]).
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// let seen = cowarena::ArenaMap::<u64, u32>::new(&mut a)?;
    /// for state in [5, 9, 5, 5] {
    ///     *seen.entry(&mut a, state).or_insert(0)? += 1;
    /// }
    /// assert_eq!((seen.get(&a, &5), seen.get(&a, &9)), (Some(&3), Some(&1)));
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Panics
    /// If the handle names no live map in `arena` (see [`try_entry`](Self::try_entry)).
    #[track_caller]
    pub fn entry<'a>(&self, arena: &'a mut impl ViewMut, key: K) -> Entry<'a, K, V> {
        expect(self.try_entry(arena, key))
    }
}

/// The entry for one key of an [`ArenaMap`], from [`ArenaMap::entry`]: the lookup is done, and
/// the arena stays borrowed until the entry is used.
pub struct Entry<'a, K, V> {
    map: ArenaMap<K, V>,
    arena: &'a mut Arena,
    table: Table,
    key: K,
    tag: u32,
    /// The key's slot and whether it is occupied; `None` when the map has no table yet.
    slot: Option<(usize, bool)>,
}

impl<'a, K: Value + Eq, V: Value> Entry<'a, K, V> {
    /// The key.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// Whether the map holds the key.
    pub fn is_occupied(&self) -> bool {
        matches!(self.slot, Some((_, true)))
    }

    /// The value, for writing, if the map holds the key; its pages are marked as written.
    pub fn get_mut(self) -> Option<&'a mut V> {
        let (i, true) = self.slot? else {
            return None;
        };
        let at = self.table.start + i * ArenaMap::<K, V>::STRIDE + ArenaMap::<K, V>::VALUE_AT;
        // SAFETY: an entry holds a checked table and a slot of it that `find_in` returned; the
        // arena has stayed borrowed since, and `try_entry` checked the value valid.
        expect(unsafe { lend_slice::<V>(self.arena, at, 1) }).first_mut()
    }

    /// Calls `f` with the value if the map holds the key.
    pub fn and_modify(self, f: impl FnOnce(&mut V)) -> Self {
        if let Some((i, true)) = self.slot {
            let at = self.table.start + i * ArenaMap::<K, V>::STRIDE + ArenaMap::<K, V>::VALUE_AT;
            // SAFETY: as in `get_mut`.
            if let Some(v) = expect(unsafe { lend_slice::<V>(self.arena, at, 1) }).first_mut() {
                f(v);
            }
        }
        self
    }

    /// The value, inserting `default` first if the map does not hold the key.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`](crate::Error::OutOfMemory) when the table must grow and the arena
    /// has no room.
    pub fn or_insert(self, default: V) -> Result<&'a mut V> {
        self.or_insert_with(|| default)
    }

    /// The value, inserting `f()` first if the map does not hold the key.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`](crate::Error::OutOfMemory) when the table must grow and the arena
    /// has no room.
    pub fn or_insert_with(self, f: impl FnOnce() -> V) -> Result<&'a mut V> {
        let Entry {
            map,
            arena,
            table: t,
            key,
            tag,
            slot,
        } = self;
        match slot {
            Some((i, true)) => {
                let at = t.start + i * ArenaMap::<K, V>::STRIDE + ArenaMap::<K, V>::VALUE_AT;
                // SAFETY: as in `get_mut`.
                let value = unsafe { lend_slice::<V>(arena, at, 1)? };
                Ok(&mut value[0])
            }
            Some((i, false)) if (t.head.len + 1) * 4 <= t.head.cap * 3 => {
                // `f` runs before anything changes: if it panics, the map is as it was.
                let value = f();
                // SAFETY: as in `get_mut`; the table's check covered its header too.
                unsafe {
                    map.set_len(arena, t.head.len + 1);
                    Ok(ArenaMap::write_slot(arena, &t, i, Some((tag, &key)), value))
                }
            }
            _ => map.insert_after_growing(arena, tag, &key, f()),
        }
    }
}

impl<K: fmt::Debug, V> fmt::Debug for Entry<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key)
            .field("occupied", &matches!(self.slot, Some((_, true))))
            .finish_non_exhaustive()
    }
}
