//! [`ArenaMap`]: a hash map in the arena (open addressing, linear probing, backward-shift
//! deletion, so no tombstones): its header, layout and operations. The probing core is in
//! `table`, iteration in `iter`, [`Entry`] in `entry`, and [`MapMut`], a checked-once mutable
//! view of its values, in `view`.

mod entry;
mod iter;
mod table;
mod text;
mod view;

pub use self::entry::Entry;
pub use self::iter::MapIter;
pub use self::view::{MapMut, MapRef};

use self::table::Probe;

use super::{expect, layout_sig, lend_slice, store, Buf};
use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::ptr::handles::ArenaMap;
use crate::ptr::value::Value;
use crate::ptr::Ptr;
use crate::typed::lend::Spans;
use crate::typed::sealed::TOKEN;
use crate::typed::{View, ViewMut};
use bytemuck::{Pod, Zeroable};
use std::hash::{BuildHasher, RandomState};
use std::marker::PhantomData;

/// The part of a map that lives in the arena.
///
/// Invariant: `cap` is 0 or a power of two; `buf` holds `cap` entries, `len` of them occupied,
/// and `len * 4 <= cap * 3`, so every probe meets an empty slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct MapHead {
    len: u64,
    cap: u64,
    /// Hash seed, chosen at random when the map is made and stored with it, so every view of the
    /// map hashes alike.
    seed: u64,
    sig: u64,
    buf: Buf,
}

const fn round_up(n: usize, align: usize) -> usize {
    n.div_ceil(align) * align
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

const MIN_CAP: usize = 8;

/// Where a map's table is: its header (checked) and the table's offset in the arena (0 when it
/// has no table yet).
#[derive(Clone, Copy)]
#[doc(hidden)]
#[derive(Debug)]
pub struct Table {
    head: MapHead,
    pub(super) start: usize,
}

impl Table {
    fn cap(&self) -> usize {
        self.head.cap as usize
    }
}

impl<K, V> ArenaMap<K, V> {
    /// The map's header.
    fn head_ptr(&self) -> Ptr<MapHead> {
        self.head.cast()
    }
}

impl<K: Value + Eq, V: Value> ArenaMap<K, V> {
    const ALIGN: usize = max(4, max(align_of::<K>(), align_of::<V>()));
    const KEY_AT: usize = round_up(4, align_of::<K>());
    const VALUE_AT: usize = round_up(Self::KEY_AT + size_of::<K>(), align_of::<V>());
    const STRIDE: usize = round_up(Self::VALUE_AT + size_of::<V>(), Self::ALIGN);
    const SIG: u64 = layout_sig(size_of::<K>(), align_of::<K>(), 0x6d_6170)
        ^ layout_sig(size_of::<V>(), align_of::<V>(), 0).rotate_left(32);

    /// A new, empty map in `arena`.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the arena has no room for the map's header.
    pub fn new(arena: &mut impl ViewMut) -> Result<Self> {
        Self::with_capacity(arena, 0)
    }

    /// A new, empty map with room for `capacity` entries before it grows.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the arena has no room for the table.
    pub fn with_capacity(arena: &mut impl ViewMut, capacity: usize) -> Result<Self> {
        let arena = arena.arena_mut(TOKEN);
        let cap = if capacity == 0 {
            0
        } else {
            Self::cap_for(capacity).ok_or_else(|| Self::too_big(arena))?
        };
        let buf = Self::new_table(arena, cap)?;
        let head = MapHead {
            len: 0,
            cap: cap as u64,
            seed: RandomState::new().hash_one(0x61_7265_6e61_u64),
            sig: Self::SIG,
            buf,
        };
        match arena.alloc(head) {
            Ok(head) => Ok(ArenaMap {
                head: head.cast(),
                _type: PhantomData,
            }),
            Err(e) => {
                buf.free(arena, cap * Self::STRIDE, Self::ALIGN)?;
                Err(e)
            }
        }
    }

    /// The smallest table for `entries` at a load of at most 3/4.
    fn cap_for(entries: usize) -> Option<usize> {
        let cap = entries
            .checked_mul(4)?
            .div_ceil(3)
            .checked_next_power_of_two()?
            .max(MIN_CAP);
        (cap <= 1 << 31 && cap.checked_mul(Self::STRIDE).is_some()).then_some(cap)
    }

    fn too_big(arena: &Arena) -> Error {
        Error::OutOfMemory {
            requested: usize::MAX,
            align: Self::ALIGN,
            capacity: arena.capacity(),
        }
    }

    /// A table of `cap` empty entries.
    fn new_table(arena: &mut Arena, cap: usize) -> Result<Buf> {
        let size = cap * Self::STRIDE;
        let buf = Buf::alloc(arena, size, Self::ALIGN)?;
        // Only the tags must be zero (empty), but zeroing whole pages costs the same.
        buf.bytes_mut(arena, 0..size)?.fill(0);
        Ok(buf)
    }

    /// The value for `key`.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] when the handle names no live map of these types in `view` (and,
    /// for a snapshot, the errors of [`View::try_bytes`]).
    #[inline]
    pub fn try_get<'a>(&self, view: &'a impl View, key: &K) -> Result<Option<&'a V>> {
        let bytes = view.try_bytes()?;
        let t = self.table(bytes)?;
        if t.head.len == 0 {
            return Ok(None);
        }
        let probe = Self::probe(bytes, t.head.seed, key)?;
        self.value_in(bytes, &t, &probe)
    }

    /// The value of the key `probe` looks for in the table `t` (checked, in `bytes`).
    fn value_in<'a>(&self, bytes: &'a [u8], t: &Table, probe: &Probe<'_>) -> Result<Option<&'a V>> {
        let (i, found) = self.find_in(bytes, t, probe)?;
        if !found {
            return Ok(None);
        }
        Self::check_value(bytes, t, i)?;
        // SAFETY: slot `i` of the checked table, its value checked valid; keys are compared by
        // their bytes (or text), so the key is valid too.
        Ok(Some(unsafe {
            Self::value_at(Self::table_bytes(bytes, t), i)
        }))
    }

    /// The value for `key`.
    ///
    /// # Panics
    /// If the handle names no live map in `view` (see [`try_get`](Self::try_get)).
    #[track_caller]
    #[inline]
    pub fn get<'a>(&self, view: &'a impl View, key: &K) -> Option<&'a V> {
        expect(self.try_get(view, key))
    }

    /// Whether the map holds `key`.
    ///
    /// # Panics
    /// If the handle names no live map in `view`.
    #[track_caller]
    #[inline]
    pub fn contains_key(&self, view: &impl View, key: &K) -> bool {
        self.get(view, key).is_some()
    }

    /// The number of entries.
    ///
    /// # Errors
    /// As [`try_get`](Self::try_get).
    #[inline]
    pub fn try_len(&self, view: &impl View) -> Result<usize> {
        Ok(self.head(view.try_bytes()?)?.len as usize)
    }

    /// The number of entries.
    ///
    /// # Panics
    /// If the handle names no live map in `view`.
    #[track_caller]
    #[inline]
    pub fn len(&self, view: &impl View) -> usize {
        expect(self.try_len(view))
    }

    /// Whether the map is empty.
    ///
    /// # Panics
    /// If the handle names no live map in `view`.
    #[track_caller]
    pub fn is_empty(&self, view: &impl View) -> bool {
        self.len(view) == 0
    }

    /// Iterates over the entries, in no particular order.
    ///
    /// # Errors
    /// As [`try_get`](Self::try_get).
    pub fn try_iter<'a>(&self, view: &'a impl View) -> Result<MapIter<'a, K, V>> {
        let bytes = view.try_bytes()?;
        let t = self.table(bytes)?;
        Self::check_entries(bytes, &t)?;
        // SAFETY: every entry checked valid.
        Ok(unsafe { MapIter::new(Self::table_bytes(bytes, &t)) })
    }

    /// Iterates over the entries, in no particular order.
    ///
    /// # Panics
    /// If the handle names no live map in `view`.
    #[track_caller]
    pub fn iter<'a>(&self, view: &'a impl View) -> MapIter<'a, K, V> {
        expect(self.try_iter(view))
    }

    /// Inserts `value` for `key`; returns the value it replaces.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] when the handle names no live map; [`Error::OutOfMemory`] when the
    /// table must grow and the arena has no room.
    #[inline]
    pub fn insert(&self, arena: &mut impl ViewMut, key: K, value: V) -> Result<Option<V>> {
        let arena = arena.arena_mut(TOKEN);
        let bytes = arena.as_bytes();
        let t = self.table(bytes)?;
        let probe = Self::probe(bytes, t.head.seed, &key)?;
        let tag = probe.tag;
        if t.cap() > 0 {
            let (i, found) = self.find_in(bytes, &t, &probe)?;
            if found {
                Self::check_value(bytes, &t, i)?;
                // SAFETY: as in `try_get`.
                let old = unsafe { *Self::value_at(Self::table_bytes(bytes, &t), i) };
                // SAFETY: `table` checked `t`, and `find_in` returns a slot below `t.cap()`.
                unsafe { Self::write_slot(arena, &t, i, None, value) };
                return Ok(Some(old));
            }
            if (t.head.len + 1) * 4 <= t.head.cap * 3 {
                // SAFETY: as above; `table` checked the header too.
                unsafe {
                    Self::write_slot(arena, &t, i, Some((tag, &key)), value);
                    self.set_len(arena, t.head.len + 1);
                }
                return Ok(None);
            }
        }
        self.insert_after_growing(arena, tag, &key, value)?;
        Ok(None)
    }

    /// Inserts a key that is not in the map, growing the table first; returns its value.
    #[inline(never)]
    pub(super) fn insert_after_growing<'a>(
        &self,
        arena: &'a mut Arena,
        tag: u32,
        key: &K,
        value: V,
    ) -> Result<&'a mut V> {
        let t = self.grow(arena)?;
        let bytes = arena.as_bytes();
        let (i, _) = self.find_in(bytes, &t, &Self::probe(bytes, t.head.seed, key)?)?;
        // SAFETY: `grow` returns the table checked anew, and `find_in` a slot below its cap.
        unsafe {
            self.set_len(arena, t.head.len + 1);
            Ok(Self::write_slot(arena, &t, i, Some((tag, key)), value))
        }
    }

    /// The value for `key`, for writing; its pages are marked as written.
    ///
    /// # Errors
    /// As [`try_get`](Self::try_get).
    #[inline]
    pub fn try_get_mut<'a>(
        &self,
        arena: &'a mut impl ViewMut,
        key: &K,
    ) -> Result<Option<&'a mut V>> {
        let arena = arena.arena_mut(TOKEN);
        let bytes = arena.as_bytes();
        let t = self.table(bytes)?;
        if t.head.len == 0 {
            return Ok(None);
        }
        let (i, found) = self.find_in(bytes, &t, &Self::probe(bytes, t.head.seed, key)?)?;
        if !found {
            return Ok(None);
        }
        let at = t.start + i * Self::STRIDE + Self::VALUE_AT;
        // SAFETY: `table` checked the table, and `find_in` returns a slot below its cap; values
        // sit at `VALUE_AT` in aligned slots.
        let value = unsafe { lend_slice::<V>(arena, at, 1)? };
        Ok(value.first_mut())
    }

    /// The value for `key`, for writing; its pages are marked as written.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// let counts = cowarena::ArenaMap::<u32, u64>::new(&mut a)?;
    /// counts.insert(&mut a, 7, 0)?;
    /// *counts.get_mut(&mut a, &7).unwrap() += 1;
    /// assert_eq!(counts.get(&a, &7), Some(&1));
    /// assert_eq!(counts.get_mut(&mut a, &8), None);
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    ///
    /// # Panics
    /// If the handle names no live map in `arena` (see [`try_get_mut`](Self::try_get_mut)).
    #[track_caller]
    #[inline]
    pub fn get_mut<'a>(&self, arena: &'a mut impl ViewMut, key: &K) -> Option<&'a mut V> {
        expect(self.try_get_mut(arena, key))
    }

    /// Removes `key`; returns its value.
    ///
    /// # Panics
    /// If the handle names no live map in `arena` (see [`try_remove`](Self::try_remove)).
    #[track_caller]
    pub fn remove(&self, arena: &mut impl ViewMut, key: &K) -> Option<V> {
        expect(self.try_remove(arena, key))
    }

    /// Removes `key` and returns its value, or says why the handle names no map.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] when the handle names no live map.
    pub fn try_remove(&self, arena: &mut impl ViewMut, key: &K) -> Result<Option<V>> {
        let arena = arena.arena_mut(TOKEN);
        let bytes = arena.as_bytes();
        let t = self.table(bytes)?;
        if t.head.len == 0 {
            return Ok(None);
        }
        let cap = t.cap();
        let (i, found) = self.find_in(bytes, &t, &Self::probe(bytes, t.head.seed, key)?)?;
        if !found {
            return Ok(None);
        }
        Self::check_value(bytes, &t, i)?;
        let table = Self::table_bytes(bytes, &t);
        // SAFETY: as in `try_get`.
        let value = unsafe { *Self::value_at(table, i) };
        // Backward shift: move each later entry of the probe run into the hole if the hole lies
        // between its home slot and its slot, so lookups never need tombstones. The moves are
        // found first and then made entry by entry, so only the entries moved are written.
        let mask = cap - 1;
        let mut moves: Vec<(usize, usize)> = Vec::new();
        let mut hole = i;
        let mut j = (i + 1) & mask;
        for _ in 0..cap {
            let tag = Self::tag_at(table, j);
            if tag == 0 {
                break;
            }
            let home = tag as usize & mask;
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                moves.push((j, hole));
                hole = j;
            }
            j = (j + 1) & mask;
        }
        let mut entry = vec![0u8; Self::STRIDE];
        for (from, to) in moves {
            arena.read(t.start + from * Self::STRIDE, &mut entry)?;
            arena.write(t.start + to * Self::STRIDE, &entry)?;
        }
        // SAFETY: `table` checked the table and the header, and `hole` is a slot below the cap
        // (masked); a tag starts its aligned slot.
        unsafe {
            store(arena, t.start + hole * Self::STRIDE, 0u32);
            self.set_len(arena, t.head.len - 1);
        }
        Ok(Some(value))
    }

    /// Removes every entry, keeping the table (whose pages it writes).
    ///
    /// # Panics
    /// If the handle names no live map in `arena` (see [`try_clear`](Self::try_clear)).
    #[track_caller]
    pub fn clear(&self, arena: &mut impl ViewMut) {
        expect(self.try_clear(arena))
    }

    /// Removes every entry, or says why the handle names no map.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] when the handle names no live map.
    pub fn try_clear(&self, arena: &mut impl ViewMut) -> Result<()> {
        let arena = arena.arena_mut(TOKEN);
        let t = self.table(arena.as_bytes())?;
        if t.head.len > 0 {
            t.head
                .buf
                .bytes_mut(arena, 0..t.cap() * Self::STRIDE)?
                .fill(0);
            // SAFETY: `table` checked the header.
            unsafe { self.set_len(arena, 0) };
        }
        Ok(())
    }

    /// Frees the map's memory; every copy of the handle becomes invalid.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] when the handle names no live map.
    pub fn free(self, arena: &mut impl ViewMut) -> Result<()> {
        let arena = arena.arena_mut(TOKEN);
        let h = self.head(arena.as_bytes())?;
        h.buf
            .free(arena, h.cap as usize * Self::STRIDE, Self::ALIGN)?;
        arena.free(self.head_ptr())
    }

    /// For lending: the table, its entries checked, and the spans its view writes (the table)
    /// and reads (for a map keyed by [`ArenaString`](crate::ArenaString), every key's string,
    /// see [`plan_text_keys`](Self::plan_text_keys)).
    pub(super) fn lend_plan(&self, bytes: &[u8], spans: &mut Spans) -> Result<Table> {
        let t = self.table(bytes)?;
        Self::check_entries(bytes, &t)?;
        spans.push(t.start..t.start + t.cap() * Self::STRIDE);
        if Self::text_keys() {
            Self::plan_text_keys(bytes, &t, spans)?;
        }
        Ok(t)
    }

    /// For lending to read: the map in `bytes`, checked.
    pub(super) fn ref_in<'a>(&self, bytes: &'a [u8]) -> Result<MapRef<'a, K, V>> {
        let t = self.table(bytes)?;
        Self::check_entries(bytes, &t)?;
        // SAFETY: every entry checked valid.
        Ok(unsafe { MapRef::new(bytes, t) })
    }
}
