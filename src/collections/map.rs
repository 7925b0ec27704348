//! [`ArenaMap`]: a hash map in the arena (open addressing, linear probing, backward-shift
//! deletion, so no tombstones).

use super::{expect, layout_sig, type_mismatch, Buf};
use crate::arena::Arena;
use crate::error::{Error, InvalidPtrReason, Result};
use crate::ptr::{self, Ptr};
use crate::typed::View;
use bytemuck::{Pod, Zeroable};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::marker::PhantomData;

/// The part of a map that lives in the arena.
///
/// Invariant: `cap` is 0 or a power of two; `buf` holds `cap` entries, `len` of them occupied,
/// and `len * 4 <= cap * 3`, so every probe meets an empty slot.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MapHead {
    len: u64,
    cap: u64,
    /// Hash seed, chosen at random when the map is made and stored with it, so every view of the
    /// map hashes alike.
    seed: u64,
    sig: u64,
    buf: Buf,
}

/// A hash map from `K` to `V` stored in an [`Arena`]: a `Pod` handle, so it can be the root or a
/// field of another arena object (see the [module docs](crate::collections)).
///
/// Keys are hashed by their bytes (with a per-map random seed), so keys that are equal must have
/// equal bytes, as they do for `Pod` types with a derived `Eq`. An entry is a 4-byte hash tag,
/// the key and the value, side by side, so an insert writes one entry and the map's header.
///
/// ```
/// use cowarena::{Arena, ArenaMap};
/// let mut a = Arena::with_capacity(1 << 20)?;
/// let m = ArenaMap::<u64, [u8; 4]>::new(&mut a)?;
/// m.insert(&mut a, 1, *b"one ")?;
/// m.insert(&mut a, 2, *b"two ")?;
/// let s = a.snapshot()?;
/// assert_eq!(m.remove(&mut a, &1)?, Some(*b"one "));
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
    head: Ptr<MapHead>,
    _type: PhantomData<fn() -> (K, V)>,
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

impl<K: Pod + Eq, V: Pod> ArenaMap<K, V> {
    const ALIGN: usize = max(4, max(align_of::<K>(), align_of::<V>()));
    const KEY_AT: usize = round_up(4, align_of::<K>());
    const VALUE_AT: usize = round_up(Self::KEY_AT + size_of::<K>(), align_of::<V>());
    const STRIDE: usize = round_up(Self::VALUE_AT + size_of::<V>(), Self::ALIGN);
    const SIG: u64 = layout_sig(size_of::<K>(), align_of::<K>(), 0x6d_6170)
        ^ layout_sig(size_of::<V>(), align_of::<V>(), 0).rotate_left(32);

    /// A new, empty map in `arena`.
    pub fn new(arena: &mut Arena) -> Result<Self> {
        Self::with_capacity(arena, 0)
    }

    /// A new, empty map with room for `capacity` entries before it grows.
    pub fn with_capacity(arena: &mut Arena, capacity: usize) -> Result<Self> {
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
                head,
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
        let h = *ptr::check(bytes, self.head)?;
        let cap = h.cap as usize;
        if h.sig != Self::SIG
            || !(cap == 0 || cap.is_power_of_two())
            || cap > 1 << 31
            || h.len > h.cap
        {
            return Err(type_mismatch::<Self>(self.head.offset()));
        }
        Ok(h)
    }

    /// The header and the table's bytes.
    #[inline(always)]
    fn table<'a>(&self, bytes: &'a [u8]) -> Result<(MapHead, &'a [u8])> {
        let h = self.head(bytes)?;
        let table = h.buf.bytes(bytes, h.cap as usize * Self::STRIDE)?;
        Ok((h, table))
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

    /// The slot holding `key`, or the empty slot where it would go.
    #[inline]
    fn find(&self, table: &[u8], cap: usize, tag: u32, key: &K) -> Result<(usize, bool)> {
        let mask = cap.wrapping_sub(1);
        let mut i = tag as usize & mask;
        for _ in 0..cap {
            let entry = &table[i * Self::STRIDE..(i + 1) * Self::STRIDE];
            let t = u32::from_ne_bytes([entry[0], entry[1], entry[2], entry[3]]);
            if t == 0 {
                return Ok((i, false));
            }
            if t == tag
                && bytemuck::pod_read_unaligned::<K>(
                    &entry[Self::KEY_AT..Self::KEY_AT + size_of::<K>()],
                ) == *key
            {
                return Ok((i, true));
            }
            i = (i + 1) & mask;
        }
        Err(self.no_empty_slot())
    }

    #[cold]
    fn no_empty_slot(&self) -> Error {
        Error::InvalidPtr {
            offset: self.head.offset(),
            type_name: std::any::type_name::<Self>(),
            reason: InvalidPtrReason::MapTable,
        }
    }

    /// The value for `key`, or why the handle names no live map in `view`.
    #[inline]
    pub fn try_get<'a>(&self, view: &'a impl View, key: &K) -> Result<Option<&'a V>> {
        let (h, table) = self.table(view.try_bytes()?)?;
        if h.len == 0 {
            return Ok(None);
        }
        let (i, found) = self.find(table, h.cap as usize, Self::tag_of(h.seed, key), key)?;
        Ok(found.then(|| Self::value_at(table, i)))
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
    /// # Panics
    /// If the handle names no live map in `view`.
    #[track_caller]
    #[inline]
    pub fn len(&self, view: &impl View) -> usize {
        expect(view.try_bytes().and_then(|b| self.head(b))).len as usize
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
    /// # Panics
    /// If the handle names no live map in `view`.
    #[track_caller]
    pub fn iter<'a>(&self, view: &'a impl View) -> MapIter<'a, K, V> {
        let (h, table) = expect(view.try_bytes().and_then(|b| self.table(b)));
        MapIter {
            table,
            next: 0,
            cap: h.cap as usize,
            _type: PhantomData,
        }
    }

    /// Inserts `value` for `key`; returns the value it replaces.
    #[inline]
    pub fn insert(&self, arena: &mut Arena, key: K, value: V) -> Result<Option<V>> {
        let (mut h, table) = self.table(arena.as_bytes())?;
        let tag = Self::tag_of(h.seed, &key);
        if h.cap > 0 {
            let (i, found) = self.find(table, h.cap as usize, tag, &key)?;
            if found {
                let old = *Self::value_at(table, i);
                let at = i * Self::STRIDE + Self::VALUE_AT;
                h.buf
                    .bytes_mut(arena, at..at + size_of::<V>())?
                    .copy_from_slice(bytemuck::bytes_of(&value));
                return Ok(Some(old));
            }
        }
        if (h.len + 1) * 4 > h.cap * 3 {
            h = self.resize(arena, h)?;
        }
        let table = h
            .buf
            .bytes(arena.as_bytes(), h.cap as usize * Self::STRIDE)?;
        let (i, _) = self.find(table, h.cap as usize, tag, &key)?;
        let at = i * Self::STRIDE;
        let entry = h.buf.bytes_mut(arena, at..at + Self::STRIDE)?;
        entry[..4].copy_from_slice(&tag.to_ne_bytes());
        entry[Self::KEY_AT..Self::KEY_AT + size_of::<K>()]
            .copy_from_slice(bytemuck::bytes_of(&key));
        entry[Self::VALUE_AT..Self::VALUE_AT + size_of::<V>()]
            .copy_from_slice(bytemuck::bytes_of(&value));
        arena.get_mut(self.head).len = h.len + 1;
        Ok(None)
    }

    /// The value for `key`, for writing.
    ///
    /// ```
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// let counts = cowarena::ArenaMap::<u32, u64>::new(&mut a)?;
    /// counts.insert(&mut a, 7, 0)?;
    /// *counts.get_mut(&mut a, &7)?.unwrap() += 1;
    /// assert_eq!(counts.get(&a, &7), Some(&1));
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    #[inline]
    pub fn get_mut<'a>(&self, arena: &'a mut Arena, key: &K) -> Result<Option<&'a mut V>> {
        let (h, table) = self.table(arena.as_bytes())?;
        if h.len == 0 {
            return Ok(None);
        }
        let (i, found) = self.find(table, h.cap as usize, Self::tag_of(h.seed, key), key)?;
        if !found {
            return Ok(None);
        }
        let at = i * Self::STRIDE + Self::VALUE_AT;
        let bytes = h.buf.bytes_mut(arena, at..at + size_of::<V>())?;
        Ok(Some(bytemuck::from_bytes_mut(bytes)))
    }

    /// Moves the entries to a table twice as large (or the first table).
    fn resize(&self, arena: &mut Arena, h: MapHead) -> Result<MapHead> {
        let old_cap = h.cap as usize;
        let cap = if old_cap == 0 { MIN_CAP } else { old_cap * 2 };
        if cap > 1 << 31 || cap.checked_mul(Self::STRIDE).is_none() {
            return Err(Self::too_big(arena));
        }
        let old: Vec<u8> = h
            .buf
            .bytes(arena.as_bytes(), old_cap * Self::STRIDE)?
            .to_vec();
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
        h.buf.free(arena, old_cap * Self::STRIDE, Self::ALIGN)?;
        let head = arena.get_mut(self.head);
        head.cap = cap as u64;
        head.buf = buf;
        Ok(*head)
    }

    /// Removes `key`; returns its value.
    pub fn remove(&self, arena: &mut Arena, key: &K) -> Result<Option<V>> {
        let (h, table) = self.table(arena.as_bytes())?;
        if h.len == 0 {
            return Ok(None);
        }
        let cap = h.cap as usize;
        let (i, found) = self.find(table, cap, Self::tag_of(h.seed, key), key)?;
        if !found {
            return Ok(None);
        }
        let value = *Self::value_at(table, i);
        // Backward shift: move each later entry of the probe run into the hole if the hole lies
        // between its home slot and its slot, so lookups never need tombstones.
        let mask = cap - 1;
        let mut hole = i;
        let mut j = (i + 1) & mask;
        for _ in 0..cap {
            let table = h.buf.bytes(arena.as_bytes(), cap * Self::STRIDE)?;
            let tag = Self::tag_at(table, j);
            if tag == 0 {
                break;
            }
            let home = tag as usize & mask;
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                let (k, v) = (*Self::key_at(table, j), *Self::value_at(table, j));
                let at = hole * Self::STRIDE;
                let entry = h.buf.bytes_mut(arena, at..at + Self::STRIDE)?;
                entry[..4].copy_from_slice(&tag.to_ne_bytes());
                entry[Self::KEY_AT..Self::KEY_AT + size_of::<K>()]
                    .copy_from_slice(bytemuck::bytes_of(&k));
                entry[Self::VALUE_AT..Self::VALUE_AT + size_of::<V>()]
                    .copy_from_slice(bytemuck::bytes_of(&v));
                hole = j;
            }
            j = (j + 1) & mask;
        }
        let at = hole * Self::STRIDE;
        h.buf.bytes_mut(arena, at..at + 4)?.fill(0);
        arena.get_mut(self.head).len = h.len - 1;
        Ok(Some(value))
    }

    /// Removes every entry, keeping the table (whose pages it writes).
    pub fn clear(&self, arena: &mut Arena) -> Result<()> {
        let h = self.head(arena.as_bytes())?;
        if h.len > 0 {
            h.buf
                .bytes_mut(arena, 0..h.cap as usize * Self::STRIDE)?
                .fill(0);
            arena.get_mut(self.head).len = 0;
        }
        Ok(())
    }

    /// Frees the map's memory; every copy of the handle becomes invalid.
    pub fn free(self, arena: &mut Arena) -> Result<()> {
        let h = self.head(arena.as_bytes())?;
        h.buf
            .free(arena, h.cap as usize * Self::STRIDE, Self::ALIGN)?;
        arena.free(self.head)
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

/// The entries of an [`ArenaMap`], from [`ArenaMap::iter`].
pub struct MapIter<'a, K, V> {
    table: &'a [u8],
    next: usize,
    cap: usize,
    _type: PhantomData<fn() -> (K, V)>,
}

impl<'a, K: Pod + Eq, V: Pod> Iterator for MapIter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        while self.next < self.cap {
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
