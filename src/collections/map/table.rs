//! The probing core of [`ArenaMap`]: checking a map's header and table, reading and writing
//! its slots, finding a key's slot, growing the table, and the hash that places keys.

use super::{MapHead, Table, MIN_CAP};
use crate::arena::Arena;
use crate::collections::{store, type_mismatch, validate};
use crate::error::{Error, InvalidPtrReason, Result};
use crate::ptr;
use crate::ptr::handles::{ArenaMap, ArenaString};
use crate::ptr::value::Value;
use bytemuck::bytes_of;
use std::any::TypeId;

impl<K: Value + Eq, V: Value> ArenaMap<K, V> {
    /// The header, checked to be live and of these key and value types.
    #[inline(always)]
    pub(super) fn head(&self, bytes: &[u8]) -> Result<MapHead> {
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
    pub(super) fn table(&self, bytes: &[u8]) -> Result<Table> {
        let head = self.head(bytes)?;
        let start = head
            .buf
            .start(bytes, head.cap as usize * Self::STRIDE, Self::ALIGN)?;
        Ok(Table { head, start })
    }

    /// The bytes of table `t` in `bytes`.
    #[inline(always)]
    pub(super) fn table_bytes<'a>(bytes: &'a [u8], t: &Table) -> &'a [u8] {
        &bytes[t.start..t.start + t.cap() * Self::STRIDE]
    }

    /// Whether the keys are [`ArenaString`]s, hashed and compared by their text.
    #[inline(always)]
    pub(super) fn text_keys() -> bool {
        TypeId::of::<K>() == TypeId::of::<ArenaString>()
    }

    /// What a lookup of `key` compares slots with: its tag and its bytes, or for an
    /// [`ArenaString`] key its text, read from `all` (the arena's bytes).
    #[inline]
    pub(super) fn probe<'k>(all: &'k [u8], seed: u64, key: &'k K) -> Result<Probe<'k>> {
        if Self::text_keys() {
            let text: ArenaString = bytemuck::pod_read_unaligned(bytes_of(key));
            return Ok(Probe::text(text.bytes.slice_in(all)?, seed, all));
        }
        Ok(Probe {
            tag: tag(bytes_of(key), seed),
            key: bytes_of(key),
            all: None,
        })
    }

    #[inline]
    pub(super) fn tag_at(table: &[u8], i: usize) -> u32 {
        let at = i * Self::STRIDE;
        u32::from_ne_bytes(table[at..at + 4].try_into().unwrap_or_default())
    }

    /// The key and the value of slot `i`, unchecked.
    ///
    /// # Safety
    /// `table` is a table's bytes (aligned to `ALIGN`), `i` below its capacity, and the slot's
    /// key and value were checked valid ([`check_entries`](Self::check_entries) or
    /// [`check_value`](Self::check_value) for the value alone), their bytes unchanged since
    /// but through a `&mut V`.
    #[inline]
    pub(super) unsafe fn key_at(table: &[u8], i: usize) -> &K {
        let at = i * Self::STRIDE + Self::KEY_AT;
        let key = &table[at..at + size_of::<K>()];
        // SAFETY: in bounds (indexed above), aligned (the table and `STRIDE` are aligned to
        // `ALIGN`, `KEY_AT` to `K`), and a valid `K` (the caller's contract).
        unsafe { &*key.as_ptr().cast::<K>() }
    }

    /// The value of slot `i`, unchecked.
    ///
    /// # Safety
    /// As [`key_at`](Self::key_at).
    #[inline]
    pub(super) unsafe fn value_at(table: &[u8], i: usize) -> &V {
        let at = i * Self::STRIDE + Self::VALUE_AT;
        let value = &table[at..at + size_of::<V>()];
        // SAFETY: as in `key_at`, at `VALUE_AT`, aligned for `V`.
        unsafe { &*value.as_ptr().cast::<V>() }
    }

    /// Checks that slot `i` of the table `t` (in `bytes`, the arena's) holds a valid value.
    #[inline]
    pub(super) fn check_value(bytes: &[u8], t: &Table, i: usize) -> Result<()> {
        let at = t.start + i * Self::STRIDE + Self::VALUE_AT;
        // SAFETY: `table` checked the table inside `bytes`, aligned; slot `i` is below its cap
        // (the callers' `find`).
        unsafe { validate::<V>(bytes, at, 1) }
    }

    /// Checks that every occupied slot of the table `t` (in `bytes`) holds a valid key and
    /// value: what iterating and the views rely on. Costs nothing for `Pod` keys and values.
    pub(super) fn check_entries(bytes: &[u8], t: &Table) -> Result<()> {
        let table = Self::table_bytes(bytes, t);
        for i in 0..t.cap() {
            if Self::tag_at(table, i) != 0 {
                let at = t.start + i * Self::STRIDE;
                // SAFETY: the slot lies in the checked table, key and value aligned in it.
                unsafe {
                    validate::<K>(bytes, at + Self::KEY_AT, 1)?;
                    validate::<V>(bytes, at + Self::VALUE_AT, 1)?;
                }
            }
        }
        Ok(())
    }

    /// The slot holding the key `probe` looks for, or the empty slot where it would go; `None`
    /// if the table (of `cap` entries, a power of two) has no empty slot, which only raw writes
    /// can cause.
    #[inline]
    pub(super) fn find(table: &[u8], cap: usize, probe: &Probe<'_>) -> Option<(usize, bool)> {
        Self::find_by(table, cap, probe.tag, |stored| probe.matches(stored))
    }

    /// The slot of table `t` (whose bytes are `table`) holding the key `probe` looks for, if
    /// any.
    pub(super) fn slot_of(table: &[u8], t: &Table, probe: &Probe<'_>) -> Option<usize> {
        if t.head.len == 0 {
            return None;
        }
        match Self::find(table, t.cap(), probe) {
            Some((i, true)) => Some(i),
            _ => None,
        }
    }

    /// [`find`](Self::find) of the key whose tag is `tag` and which `matches` the bytes of a
    /// slot's key (called only for occupied slots of that tag).
    #[inline(always)]
    pub(super) fn find_by(
        table: &[u8],
        cap: usize,
        tag: u32,
        matches: impl Fn(&[u8]) -> bool,
    ) -> Option<(usize, bool)> {
        let mask = cap.wrapping_sub(1);
        let mut i = tag as usize & mask;
        for _ in 0..cap {
            let entry = &table[i * Self::STRIDE..(i + 1) * Self::STRIDE];
            let t = u32::from_ne_bytes([entry[0], entry[1], entry[2], entry[3]]);
            if t == 0 {
                return Some((i, false));
            }
            if t == tag && matches(&entry[Self::KEY_AT..Self::KEY_AT + size_of::<K>()]) {
                return Some((i, true));
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// `find` in the table of `t`, or the error naming a full table.
    #[inline]
    pub(super) fn find_in(
        &self,
        bytes: &[u8],
        t: &Table,
        probe: &Probe<'_>,
    ) -> Result<(usize, bool)> {
        Self::find(Self::table_bytes(bytes, t), t.cap(), probe).ok_or_else(|| self.no_empty_slot())
    }

    #[cold]
    fn no_empty_slot(&self) -> Error {
        Error::InvalidPtr {
            offset: self.head_ptr().offset(),
            type_name: std::any::type_name::<Self>(),
            reason: InvalidPtrReason::MapTable,
        }
    }

    /// Writes `value` into slot `i` of table `t` (its value only, or the whole entry) and
    /// returns the value, for writing.
    ///
    /// # Safety
    /// `t` was checked in this arena (`table`) and `i < t.cap()`.
    pub(super) unsafe fn write_slot<'a>(
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
                store(arena, at, tag);
                store(arena, at + Self::KEY_AT, *key);
            }
        }
        // SAFETY: as above, for the value at its aligned offset `VALUE_AT`.
        unsafe { store(arena, at + Self::VALUE_AT, value) };
        // SAFETY: as above; the value was just written, so it is valid.
        unsafe { &mut *arena.base_mut().add(at + Self::VALUE_AT).cast::<V>() }
    }

    /// Sets the header's length.
    ///
    /// # Safety
    /// The header was checked live in this arena (`head` or `table`).
    pub(super) unsafe fn set_len(&self, arena: &mut Arena, len: u64) {
        let at = self.head_ptr().offset() + std::mem::offset_of!(MapHead, len);
        // SAFETY: the header is live (the caller's contract), so it lies in the arena, aligned.
        unsafe { store(arena, at, len) };
    }

    /// Moves the entries to a table twice as large (or the first table).
    pub(super) fn grow(&self, arena: &mut Arena) -> Result<Table> {
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
}

/// A key looked up: its tag, and the bytes a slot's key must equal (for text keys, the text the
/// slot's [`ArenaString`] must hold, in `all`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Probe<'k> {
    pub(super) tag: u32,
    key: &'k [u8],
    all: Option<&'k [u8]>,
}

impl<'k> Probe<'k> {
    /// A lookup of `text` among [`ArenaString`] keys stored in `all`.
    pub(super) fn text(text: &'k [u8], seed: u64, all: &'k [u8]) -> Self {
        Probe {
            tag: tag(text, seed),
            key: text,
            all: Some(all),
        }
    }

    /// Whether a slot whose key has the bytes `stored` holds the key looked for.
    #[inline(always)]
    fn matches(&self, stored: &[u8]) -> bool {
        match self.all {
            None => stored == self.key,
            Some(all) => {
                let text: ArenaString = bytemuck::pod_read_unaligned(stored);
                text.bytes.slice_in(all).is_ok_and(|t| t == self.key)
            }
        }
    }
}

/// The tag of a key whose bytes (or text) are `bytes`: never 0, the tag of an empty slot.
#[inline]
pub(super) fn tag(bytes: &[u8], seed: u64) -> u32 {
    ((hash_bytes(bytes, seed) >> 32) as u32) | 1 << 31
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
