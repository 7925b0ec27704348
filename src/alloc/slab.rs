//! Slabs: pages of small objects of one size class, each with its header and used-slot bitmap
//! on the same page, and the per-class lists of slabs with free slots. Everything here works on
//! the metadata view the entry points made ([`MetaMut`]).

use super::diagnostics::not_an_object;
use super::geometry::{Placement, CLASS_SIZES, SLAB_HEADER};
use super::header::{corrupt, write_at, SlabHeader, USED};
use super::kinds;
use super::meta::{Meta, MetaMut};
use super::pages::{alloc_pages, free_pages, out_of_memory};
use super::stamps::fresh_stamp;
use super::validity::live_at;
use crate::error::Result;

/// The common allocation: a free slot in the current slab of the object's class, stamped with
/// `stamp`. It makes the same checks as `alloc_small`, but a failed one returns `None` having
/// written nothing, and `alloc_slow` starts over (and names the error). Inlined into every typed
/// `alloc`, where the placement is a constant, so that it costs about what the writes to the
/// slab cost.
#[inline(always)]
pub(super) fn alloc_fast(
    m: &mut MetaMut<'_>,
    place: &Placement,
    init: &[u8],
    stamp: u64,
) -> Option<(usize, u64)> {
    let g = m.geo();
    let c = place.class;
    let size = *CLASS_SIZES.get(c)?;
    let meta = m.read();
    let s = meta.current_slab(c)?;
    // `&`, not `&&`: one branch for the lot.
    if !(g.in_use(s) & (meta.kind(s) == kinds::slab(c))) {
        return None;
    }
    let base = g.page_at(s);
    // SAFETY: `s < top <= pages` (`in_use`, `ready`), so page `s` lies inside the arena, and its
    // header is within its first 512 bytes (`PAGE_SHIFTS`).
    let head: SlabHeader = unsafe { meta.read(base) };
    if (head.class as usize != c) | (head.used >= head.slots) {
        return None;
    }
    let mut w = 0;
    let word = loop {
        if w == g.words() {
            return None;
        }
        // SAFETY: page `s` lies inside the arena (above), and word `w < words` ends by
        // `data_start() <= page()`.
        let word: u64 = unsafe { meta.read(base + SLAB_HEADER + 8 * w) };
        if word != u64::MAX {
            break word;
        }
        w += 1;
    };
    let bit = word.trailing_ones() as usize;
    let slot = g.data_start() + (w * 64 + bit) * size;
    if (slot + size > g.page()) | (init.len() + 8 > size) {
        return None;
    }
    let page = m.fast_page_mut(s)?;
    // SAFETY: `page` is page `s`, of `g.page()` bytes (`fast_page_mut`); the bitmap word and the
    // slab header end by `data_start()` (above), and `init` (at most `size - 8` bytes) and the
    // stamp end by `slot + size <= page()` (checked).
    unsafe {
        write_at(page, SLAB_HEADER + 8 * w, word | 1 << bit);
        write_at(page, USED, head.used + 1);
        std::ptr::copy_nonoverlapping(init.as_ptr(), page.as_mut_ptr().add(slot), init.len());
        write_at(page, slot + size - 8, stamp);
    }
    Some((base + slot, stamp))
}

pub(super) fn alloc_small(
    m: &mut MetaMut<'_>,
    place: Placement,
    init: &[u8],
) -> Result<(usize, u64)> {
    let c = place.class;
    let size = CLASS_SIZES[c];
    let mut s = m.read().header().classes[c].current as usize;
    if !has_room(m.read(), s, c) {
        s = refill(m, place)?;
    }
    let g = m.geo();
    let page = m.page_mut(s)?;
    let (head, rest) = page.split_at_mut(SLAB_HEADER);
    let (bitmap, _) = rest.split_at_mut(8 * g.words());
    let bitmap: &mut [u64] = bytemuck::cast_slice_mut(bitmap);
    let (w, word) = bitmap
        .iter_mut()
        .enumerate()
        .find(|(_, w)| **w != u64::MAX)
        .ok_or_else(corrupt)?;
    let bit = word.trailing_ones() as usize;
    let slot = g.data_start() + (w * 64 + bit) * size;
    if slot + size > g.page() {
        return Err(corrupt());
    }
    *word |= 1 << bit;
    let head: &mut SlabHeader = bytemuck::from_bytes_mut(head);
    head.used += 1;
    let stamp = fresh_stamp();
    page[slot..slot + init.len()].copy_from_slice(init);
    page[slot + size - 8..slot + size].copy_from_slice(&stamp.to_ne_bytes());
    Ok((g.page_at(s) + slot, stamp))
}

/// Whether `s` is a slab of class `c` with a free slot.
fn has_room(meta: Meta<'_>, s: usize, c: usize) -> bool {
    meta.slab(s, c).is_ok_and(|h| h.used < h.slots)
}

/// Makes a slab with a free slot the class's current one: a partly free slab if there is one,
/// else a new slab.
#[cold]
#[inline(never)]
fn refill(m: &mut MetaMut<'_>, place: Placement) -> Result<usize> {
    let c = place.class;
    let s = m.read().header().classes[c].partial as usize;
    let s = if s != 0 {
        unlink_partial(m, c, s)?;
        if !has_room(m.read(), s, c) {
            return Err(corrupt());
        }
        s
    } else {
        let s = alloc_pages(m, 1)?.ok_or_else(|| out_of_memory(m.capacity(), place))?;
        init_slab(m, s, c)?;
        s
    };
    m.header_mut()?.classes[c].current = s as u32;
    Ok(s)
}

fn init_slab(m: &mut MetaMut<'_>, s: usize, c: usize) -> Result<()> {
    let g = m.geo();
    let slots = g.slots(c);
    let page = m.page_mut(s)?;
    // Zeroed stamps read as "never allocated", whatever the page held before.
    page.fill(0);
    let (head, rest) = page.split_at_mut(SLAB_HEADER);
    let bitmap: &mut [u64] = bytemuck::cast_slice_mut(&mut rest[..8 * g.words()]);
    // Bits past the last slot are set, so a search for a free bit never finds them.
    for (i, w) in bitmap.iter_mut().enumerate() {
        let first = i * 64;
        if slots <= first {
            *w = u64::MAX;
        } else if slots < first + 64 {
            *w = u64::MAX << (slots - first);
        }
    }
    let head: &mut SlabHeader = bytemuck::from_bytes_mut(head);
    head.class = c as u32;
    head.slots = slots as u32;
    m.set_kinds(s..s + 1, kinds::slab(c))
}

fn push_partial(m: &mut MetaMut<'_>, c: usize, s: usize) -> Result<()> {
    let head = m.read().header().classes[c].partial as usize;
    if head != 0 {
        m.slab_mut(head, c)?.prev = s as u32;
    }
    let h = m.slab_mut(s, c)?;
    h.listed = 1;
    h.prev = 0;
    h.next = head as u32;
    m.header_mut()?.classes[c].partial = s as u32;
    Ok(())
}

fn unlink_partial(m: &mut MetaMut<'_>, c: usize, s: usize) -> Result<()> {
    let h = m.read().slab(s, c)?;
    if h.listed != 1 {
        return Err(corrupt());
    }
    let (prev, next) = (h.prev as usize, h.next as usize);
    if prev != 0 {
        m.slab_mut(prev, c)?.next = next as u32;
    } else {
        m.header_mut()?.classes[c].partial = next as u32;
    }
    if next != 0 {
        m.slab_mut(next, c)?.prev = prev as u32;
    }
    let h = m.slab_mut(s, c)?;
    h.listed = 0;
    h.prev = 0;
    h.next = 0;
    Ok(())
}

/// What `free_fast` did.
pub(super) enum FreeFast {
    /// Freed the object.
    Done,
    /// Freed the object; its slab `s` (now with `used` objects) must move lists (`relist`).
    Relist { s: usize, used: u32, listed: bool },
    /// Nothing: `free_slow` must handle it.
    Slow,
}

/// The common free: a live small object. It makes the same checks as `free_slow`, but a failed
/// one returns `Slow` having written nothing, and `free_slow` starts over (and names the error).
/// Inlined into every typed `free`, like `alloc_fast`.
#[inline(always)]
pub(super) fn free_fast(
    m: &mut MetaMut<'_>,
    offset: usize,
    stamp: u64,
    place: &Placement,
) -> FreeFast {
    free_fast_or_none(m, offset, stamp, place).unwrap_or(FreeFast::Slow)
}

#[inline(always)]
fn free_fast_or_none(
    m: &mut MetaMut<'_>,
    offset: usize,
    stamp: u64,
    place: &Placement,
) -> Option<FreeFast> {
    let g = m.geo();
    let c = place.class;
    let size = *CLASS_SIZES.get(c)?;
    let meta = m.read();
    if stamp & 1 == 0 || !live_at(meta.bytes(), offset, stamp, place) {
        return None;
    }
    // `live_at` checked that page `s` is a slab of class `c`.
    let s = offset >> g.shift;
    if !g.in_use(s) {
        return None;
    }
    let base = g.page_at(s);
    // SAFETY: as in `alloc_fast`: `s < top <= pages`, and the header is in the first 512 bytes.
    let head: SlabHeader = unsafe { meta.read(base) };
    let index = g.slot_index(offset, c);
    // `|`, not `||`: one branch for the lot.
    if (index >= g.slots(c))
        | (head.class as usize != c)
        | (index >= head.slots as usize)
        | (head.used == 0)
    {
        return None;
    }
    let word_at = SLAB_HEADER + 8 * (index / 64);
    // SAFETY: page `s` lies inside the arena, and `index < slots(c) <= words * 64`, so the word
    // ends by `data_start() <= page()`.
    let word: u64 = unsafe { meta.read(base + word_at) };
    let bit = 1u64 << (index % 64);
    if word & bit == 0 {
        return None;
    }
    let current = meta.current_slab(c)?;
    let page = m.fast_page_mut(s)?;
    let used = head.used - 1;
    // SAFETY: `page` is page `s`, of `g.page()` bytes (`fast_page_mut`); the word ends by
    // `data_start()`, and the slot (whose last 8 bytes are the stamp) starts at `offset - base`
    // and ends by `page()`, as slot `index < slots(c)` does.
    unsafe {
        write_at(page, word_at, word & !bit);
        write_at(page, offset - base + size - 8, stamp + 1);
        write_at(page, USED, used);
    }
    let listed = head.listed != 0;
    Some(if s == current || (used != 0 && listed) {
        FreeFast::Done
    } else {
        FreeFast::Relist { s, used, listed }
    })
}

/// Frees the small object at `offset` (whose stamp `free_slow` checked), or names why the
/// allocator's metadata places no such object there.
pub(super) fn free_small(
    m: &mut MetaMut<'_>,
    offset: usize,
    stamp: u64,
    place: Placement,
    type_name: &'static str,
) -> Result<()> {
    let g = m.geo();
    let meta = m.read();
    let s = offset >> g.shift;
    let c = place.class;
    let size = CLASS_SIZES[c];
    let base = g.page_at(s);
    let head = meta.slab_header(s);
    let index = g.slot_index(offset, c);
    if index >= g.slots(c)
        || meta.kind(s) != kinds::slab(c)
        || head.class as usize != c
        || index >= head.slots as usize
    {
        return Err(not_an_object(offset, type_name, place));
    }
    let current = meta.header().classes[c].current as usize;
    let page = m.page_mut(s)?;
    let word_at = SLAB_HEADER + 8 * (index / 64);
    let word: &mut u64 = bytemuck::from_bytes_mut(&mut page[word_at..word_at + 8]);
    let bit = 1u64 << (index % 64);
    if *word & bit == 0 || head.used == 0 {
        return Err(corrupt());
    }
    *word &= !bit;
    let at = offset - base + size - 8;
    page[at..at + 8].copy_from_slice(&(stamp + 1).to_ne_bytes());
    let used = head.used - 1;
    bytemuck::from_bytes_mut::<SlabHeader>(&mut page[..SLAB_HEADER]).used = used;
    if s == current || (used != 0 && head.listed != 0) {
        Ok(())
    } else {
        relist(m, c, s, used, head.listed != 0)
    }
}

/// After a free in slab `s` (not its class's current slab): an empty slab goes back to the free
/// pages, so any class (or a large object) can reuse it; a full one joins the partial list.
#[cold]
#[inline(never)]
pub(super) fn relist(
    m: &mut MetaMut<'_>,
    c: usize,
    s: usize,
    used: u32,
    listed: bool,
) -> Result<()> {
    if used == 0 {
        if listed {
            unlink_partial(m, c, s)?;
        }
        free_pages(m, s, 1)
    } else {
        push_partial(m, c, s)
    }
}
