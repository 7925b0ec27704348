//! [`ArenaMap`]: a hash map in the arena (open addressing, linear probing, backward-shift
//! deletion, so no tombstones), and [`MapMut`], a checked-once mutable view of its values.

use super::{expect, layout_sig, lend_slice, type_mismatch, Buf, Marker, Marks, Tracker};
use crate::arena::Arena;
use crate::error::{Error, InvalidPtrReason, Result};
use crate::ptr::handles::ArenaMap;
use crate::ptr::{self, Ptr};
use crate::typed::sealed::TOKEN;
use crate::typed::{View, ViewMut};
use bytemuck::{Pod, Zeroable};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::marker::PhantomData;
use std::ptr::NonNull;

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

impl<K: Pod + Eq, V: Pod> ArenaMap<K, V> {
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

    /// The header, checked to be live and of these key and value types.
    #[inline(always)]
    fn head(&self, bytes: &[u8]) -> Result<MapHead> {
        let h = *ptr::check(bytes, self.head_ptr())?;
        let cap = h.cap as usize;
        if h.sig != Self::SIG
            || !(cap == 0 || cap.is_power_of_two())
            || cap > 1 << 31
            || h.len > h.cap
        {
            return Err(type_mismatch::<Self>(self.head_ptr().offset()));
        }
        Ok(h)
    }

    /// The header and where the table is, checked live and aligned.
    #[inline(always)]
    fn table(&self, bytes: &[u8]) -> Result<Table> {
        let head = self.head(bytes)?;
        let start = head
            .buf
            .start(bytes, head.cap as usize * Self::STRIDE, Self::ALIGN)?;
        Ok(Table { head, start })
    }

    /// The bytes of table `t` in `bytes`.
    #[inline(always)]
    fn table_bytes<'a>(bytes: &'a [u8], t: &Table) -> &'a [u8] {
        &bytes[t.start..t.start + t.cap() * Self::STRIDE]
    }

    #[inline]
    fn tag_of(seed: u64, key: &K) -> u32 {
        ((hash_bytes(bytemuck::bytes_of(key), seed) >> 32) as u32) | 1 << 31
    }

    #[inline]
    fn tag_at(table: &[u8], i: usize) -> u32 {
        let at = i * Self::STRIDE;
        u32::from_ne_bytes(table[at..at + 4].try_into().unwrap_or_default())
    }

    #[inline]
    fn key_at(table: &[u8], i: usize) -> &K {
        let at = i * Self::STRIDE + Self::KEY_AT;
        bytemuck::from_bytes(&table[at..at + size_of::<K>()])
    }

    #[inline]
    fn value_at(table: &[u8], i: usize) -> &V {
        let at = i * Self::STRIDE + Self::VALUE_AT;
        bytemuck::from_bytes(&table[at..at + size_of::<V>()])
    }

    /// The slot holding `key`, or the empty slot where it would go; `None` if the table (of
    /// `cap` entries, a power of two) has no empty slot, which only raw writes can cause.
    #[inline]
    fn find(table: &[u8], cap: usize, tag: u32, key: &K) -> Option<(usize, bool)> {
        let mask = cap.wrapping_sub(1);
        let mut i = tag as usize & mask;
        for _ in 0..cap {
            let entry = &table[i * Self::STRIDE..(i + 1) * Self::STRIDE];
            let t = u32::from_ne_bytes([entry[0], entry[1], entry[2], entry[3]]);
            if t == 0 {
                return Some((i, false));
            }
            if t == tag
                && bytemuck::pod_read_unaligned::<K>(
                    &entry[Self::KEY_AT..Self::KEY_AT + size_of::<K>()],
                ) == *key
            {
                return Some((i, true));
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// `find` in the table of `t`, or the error naming a full table.
    #[inline]
    fn find_in(&self, bytes: &[u8], t: &Table, tag: u32, key: &K) -> Result<(usize, bool)> {
        Self::find(Self::table_bytes(bytes, t), t.cap(), tag, key)
            .ok_or_else(|| self.no_empty_slot())
    }

    #[cold]
    fn no_empty_slot(&self) -> Error {
        Error::InvalidPtr {
            offset: self.head_ptr().offset(),
            type_name: std::any::type_name::<Self>(),
            reason: InvalidPtrReason::MapTable,
        }
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
        let (i, found) = self.find_in(bytes, &t, Self::tag_of(t.head.seed, key), key)?;
        Ok(found.then(|| Self::value_at(Self::table_bytes(bytes, &t), i)))
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
        Ok(MapIter::new(Self::table_bytes(bytes, &t)))
    }

    /// Iterates over the entries, in no particular order.
    ///
    /// # Panics
    /// If the handle names no live map in `view`.
    #[track_caller]
    pub fn iter<'a>(&self, view: &'a impl View) -> MapIter<'a, K, V> {
        expect(self.try_iter(view))
    }

    /// Writes `value` into slot `i` of table `t` (its value only, or the whole entry) and
    /// returns the value, for writing.
    ///
    /// # Safety
    /// `t` was checked in this arena (`table`) and `i < t.cap()`.
    unsafe fn write_slot<'a>(
        arena: &'a mut Arena,
        t: &Table,
        i: usize,
        entry: Option<(u32, &K)>,
        value: V,
    ) -> &'a mut V {
        let at = t.start + i * Self::STRIDE;
        if let Some((tag, key)) = entry {
            // SAFETY: slot `i` lies in the table, inside the arena (the caller's contract); the
            // table and `STRIDE` are aligned to `ALIGN`, and the tag and key offsets to their
            // types.
            unsafe {
                lend_slice::<u32>(arena, at, 1)[0] = tag;
                lend_slice::<K>(arena, at + Self::KEY_AT, 1)[0] = *key;
            }
        }
        // SAFETY: as above, for the value at its aligned offset `VALUE_AT`.
        let v = unsafe { &mut lend_slice::<V>(arena, at + Self::VALUE_AT, 1)[0] };
        *v = value;
        v
    }

    /// Sets the header's length.
    ///
    /// # Safety
    /// The header was checked live in this arena (`head` or `table`).
    unsafe fn set_len(&self, arena: &mut Arena, len: u64) {
        let at = self.head_ptr().offset() + std::mem::offset_of!(MapHead, len);
        // SAFETY: the header is live (the caller's contract), so it lies in the arena, aligned.
        unsafe { lend_slice::<u64>(arena, at, 1)[0] = len };
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
        let tag = Self::tag_of(t.head.seed, &key);
        if t.cap() > 0 {
            let (i, found) = self.find_in(bytes, &t, tag, &key)?;
            if found {
                let old = *Self::value_at(Self::table_bytes(bytes, &t), i);
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
    fn insert_after_growing<'a>(
        &self,
        arena: &'a mut Arena,
        tag: u32,
        key: &K,
        value: V,
    ) -> Result<&'a mut V> {
        let t = self.grow(arena)?;
        let (i, _) = self.find_in(arena.as_bytes(), &t, tag, key)?;
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
        let (i, found) = self.find_in(bytes, &t, Self::tag_of(t.head.seed, key), key)?;
        if !found {
            return Ok(None);
        }
        let at = t.start + i * Self::STRIDE + Self::VALUE_AT;
        // SAFETY: `table` checked the table, and `find_in` returns a slot below its cap; values
        // sit at `VALUE_AT` in aligned slots.
        Ok(Some(unsafe { &mut lend_slice::<V>(arena, at, 1)[0] }))
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

    /// The entry for `key`, for reading, updating or inserting in place with one lookup.
    ///
    /// # Errors
    /// As [`try_get`](Self::try_get).
    pub fn try_entry<'a>(&self, arena: &'a mut impl ViewMut, key: K) -> Result<Entry<'a, K, V>> {
        let arena = arena.arena_mut(TOKEN);
        let bytes = arena.as_bytes();
        let t = self.table(bytes)?;
        let tag = Self::tag_of(t.head.seed, &key);
        let slot = if t.cap() > 0 {
            Some(self.find_in(bytes, &t, tag, &key)?)
        } else {
            None
        };
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

    /// Moves the entries to a table twice as large (or the first table).
    fn grow(&self, arena: &mut Arena) -> Result<Table> {
        let t = self.table(arena.as_bytes())?;
        let old_cap = t.cap();
        let cap = if old_cap == 0 { MIN_CAP } else { old_cap * 2 };
        if cap > 1 << 31 || cap.checked_mul(Self::STRIDE).is_none() {
            return Err(Self::too_big(arena));
        }
        let old: Vec<u8> = Self::table_bytes(arena.as_bytes(), &t).to_vec();
        let buf = Self::new_table(arena, cap)?;
        let table = buf.bytes_mut(arena, 0..cap * Self::STRIDE)?;
        let mask = cap - 1;
        for i in 0..old_cap {
            let tag = Self::tag_at(&old, i);
            if tag == 0 {
                continue;
            }
            let mut j = tag as usize & mask;
            while Self::tag_at(table, j) != 0 {
                j = (j + 1) & mask;
            }
            let (from, to) = (i * Self::STRIDE, j * Self::STRIDE);
            table[to..to + Self::STRIDE].copy_from_slice(&old[from..from + Self::STRIDE]);
        }
        t.head
            .buf
            .free(arena, old_cap * Self::STRIDE, Self::ALIGN)?;
        let head = arena.get_mut(self.head_ptr());
        head.cap = cap as u64;
        head.buf = buf;
        self.table(arena.as_bytes())
    }

    /// Removes `key`; returns its value.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] when the handle names no live map.
    pub fn remove(&self, arena: &mut impl ViewMut, key: &K) -> Result<Option<V>> {
        let arena = arena.arena_mut(TOKEN);
        let bytes = arena.as_bytes();
        let t = self.table(bytes)?;
        if t.head.len == 0 {
            return Ok(None);
        }
        let cap = t.cap();
        let (i, found) = self.find_in(bytes, &t, Self::tag_of(t.head.seed, key), key)?;
        if !found {
            return Ok(None);
        }
        let table = Self::table_bytes(bytes, &t);
        let value = *Self::value_at(table, i);
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
            lend_slice::<u32>(arena, t.start + hole * Self::STRIDE, 1)[0] = 0;
            self.set_len(arena, t.head.len - 1);
        }
        Ok(Some(value))
    }

    /// Removes every entry, keeping the table (whose pages it writes).
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] when the handle names no live map.
    pub fn clear(&self, arena: &mut impl ViewMut) -> Result<()> {
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

    /// For `lend_mut`: the table, checked, and its span.
    pub(super) fn lend_plan(&self, bytes: &[u8]) -> Result<(Table, usize)> {
        let t = self.table(bytes)?;
        Ok((t, t.cap() * Self::STRIDE))
    }
}

/// A 64-bit hash of `bytes`: one folded multiply per 8 bytes. Fast for the small keys maps
/// usually have; the per-map random seed keeps colliding keys from being predictable.
#[inline]
fn hash_bytes(bytes: &[u8], seed: u64) -> u64 {
    const K1: u64 = 0x9E37_79B9_7F4A_7C15;
    const K2: u64 = 0x2D35_8DCC_AA6C_78A5;
    let fold = |a: u64, b: u64| {
        let p = u128::from(a) * u128::from(b);
        (p as u64) ^ ((p >> 64) as u64)
    };
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(K1);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = fold(h ^ u64::from_le_bytes(c.try_into().unwrap_or_default()), K1);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = fold(h ^ u64::from_le_bytes(last), K1);
    }
    fold(h, K2)
}

/// The entries of an [`ArenaMap`], from [`ArenaMap::iter`] or [`MapMut::iter`].
pub struct MapIter<'a, K, V> {
    table: &'a [u8],
    next: usize,
    _type: PhantomData<fn() -> (K, V)>,
}

impl<'a, K: Pod + Eq, V: Pod> MapIter<'a, K, V> {
    fn new(table: &'a [u8]) -> Self {
        MapIter {
            table,
            next: 0,
            _type: PhantomData,
        }
    }
}

impl<'a, K: Pod + Eq, V: Pod> Iterator for MapIter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        let cap = self.table.len() / ArenaMap::<K, V>::STRIDE;
        while self.next < cap {
            let i = self.next;
            self.next += 1;
            if ArenaMap::<K, V>::tag_at(self.table, i) != 0 {
                return Some((
                    ArenaMap::<K, V>::key_at(self.table, i),
                    ArenaMap::<K, V>::value_at(self.table, i),
                ));
            }
        }
        None
    }
}

impl<K, V> fmt::Debug for MapIter<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapIter")
            .field("next", &self.next)
            .finish_non_exhaustive()
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

impl<'a, K: Pod + Eq, V: Pod> Entry<'a, K, V> {
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
        // arena has stayed borrowed since.
        Some(unsafe { &mut lend_slice::<V>(self.arena, at, 1)[0] })
    }

    /// Calls `f` with the value if the map holds the key.
    pub fn and_modify(self, f: impl FnOnce(&mut V)) -> Self {
        if let Some((i, true)) = self.slot {
            let at = self.table.start + i * ArenaMap::<K, V>::STRIDE + ArenaMap::<K, V>::VALUE_AT;
            // SAFETY: as in `get_mut`.
            f(unsafe { &mut lend_slice::<V>(self.arena, at, 1)[0] });
        }
        self
    }

    /// The value, inserting `default` first if the map does not hold the key.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the table must grow and the arena has no room.
    pub fn or_insert(self, default: V) -> Result<&'a mut V> {
        self.or_insert_with(|| default)
    }

    /// The value, inserting `f()` first if the map does not hold the key.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the table must grow and the arena has no room.
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
                Ok(unsafe { &mut lend_slice::<V>(arena, at, 1)[0] })
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

/// A mutable view of an [`ArenaMap`]'s values, from [`ArenaMap::view_mut`] or
/// [`ViewMut::lend_mut`]: the handle was checked once, and the arena stays borrowed while the
/// view lives, so no entry can be added or removed. A lookup costs the hash and the probe;
/// [`get_mut`](Self::get_mut) marks the value's pages as written (once per run of pages, as
/// [`VecMut`](super::VecMut) does).
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
    pub(super) unsafe fn new(base: *mut u8, t: Table, marker: Marker<'a>) -> Self {
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
