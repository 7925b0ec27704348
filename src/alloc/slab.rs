//! Slabs: pages of small objects of one size class, each with its header and used-slot bitmap
//! on the same page, and the per-class lists of slabs with free slots.

use super::diagnostics::not_an_object;
use super::geometry::{Geo, Placement, CLASS_SIZES, SLAB_HEADER};
use super::header::{
    corrupt, current_slab, header, header_mut, read_at, read_u64, ready, write_at,
};
use super::header::{SlabHeader, USED};
use super::kinds;
use super::pages::{alloc_pages, free_pages, out_of_memory};
use super::stamps::fresh_stamp;
use super::validity::live_at;
use crate::arena::Arena;
use crate::error::Result;

/// The common allocation: a free slot in the current slab of the object's class. It makes the
/// same checks as `alloc_small`, but a failed one returns `None` having written nothing, and
/// `alloc_slow` starts over (and names the error). Inlined into every typed `alloc`, where the
/// placement is a constant, so that it costs about what the writes to the slab cost.
#[inline(always)]
pub(super) fn alloc_fast(
    arena: &mut Arena,
    place: &Placement,
    init: &[u8],
) -> Option<(usize, u64)> {
    // Taken first, while few values are live across the call; one wasted on a fallback to the
    // slow path costs nothing.
    let stamp = fresh_stamp();
    let g = ready(arena.as_bytes(), arena.page_shift())?;
    let c = place.class;
    let size = *CLASS_SIZES.get(c)?;
    let bytes = arena.as_bytes();
    let s = current_slab(bytes, c)?;
    // `&`, not `&&`: one branch for the lot.
    if !(g.in_use(s) & (kinds::at(bytes, s) == kinds::slab(c))) {
        return None;
    }
    let base = g.page_at(s);
    // SAFETY: `s < top <= pages` (`in_use`, `ready`), so page `s` lies inside `bytes`, and its
    // header is within its first 512 bytes (`PAGE_SHIFTS`).
    let head: SlabHeader = unsafe { read_at(bytes, base) };
    if (head.class as usize != c) | (head.used >= head.slots) {
        return None;
    }
    let mut w = 0;
    let word = loop {
        if w == g.words() {
            return None;
        }
        // SAFETY: page `s` lies inside `bytes` (above), and word `w < words` ends by
        // `data_start() <= page()`.
        let word: u64 = unsafe { read_at(bytes, base + SLAB_HEADER + 8 * w) };
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
    let page = arena.page_mut(s)?;
    debug_assert_eq!(
        page.len(),
        g.page(),
        "`ready` checked the page size is the arena's"
    );
    // SAFETY: `page` is page `s`, of `g.page()` bytes (`ready` checked the header's page size
    // is the arena's); the bitmap word and the slab header end by `data_start()` (above), and
    // `init` (at most `size - 8` bytes) and the stamp end by `slot + size <= page()` (checked).
    unsafe {
        write_at(page, SLAB_HEADER + 8 * w, word | 1 << bit);
        write_at(page, USED, head.used + 1);
        std::ptr::copy_nonoverlapping(init.as_ptr(), page.as_mut_ptr().add(slot), init.len());
        write_at(page, slot + size - 8, stamp);
    }
    Some((base + slot, stamp))
}

pub(super) fn alloc_small(
    arena: &mut Arena,
    g: Geo,
    place: Placement,
    init: &[u8],
) -> Result<(usize, u64)> {
    let c = place.class;
    let size = CLASS_SIZES[c];
    let mut s = header(arena.as_bytes()).classes[c].current as usize;
    if !slab_has_room(arena.as_bytes(), g, s, c) {
        s = refill(arena, g, place)?;
    }
    let base = g.page_at(s);
    let page = arena.bytes_mut(base..base + g.page())?;
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
    Ok((base + slot, stamp))
}

/// Whether `s` is a slab of class `c` with a free slot.
#[inline]
pub(super) fn slab_has_room(bytes: &[u8], g: Geo, s: usize, c: usize) -> bool {
    if check_slab(bytes, g, s, c).is_err() {
        return false;
    }
    let h = slab_header(bytes, g, s);
    h.used < h.slots
}

/// Makes a slab with a free slot the class's current one: a partly free slab if there is one,
/// else a new slab.
#[cold]
#[inline(never)]
pub(super) fn refill(arena: &mut Arena, g: Geo, place: Placement) -> Result<usize> {
    let c = place.class;
    let s = header(arena.as_bytes()).classes[c].partial as usize;
    let s = if s != 0 {
        unlink_partial(arena, g, c, s)?;
        if !slab_has_room(arena.as_bytes(), g, s, c) {
            return Err(corrupt());
        }
        s
    } else {
        let s = alloc_pages(arena, g, 1).ok_or_else(|| out_of_memory(arena, place))??;
        init_slab(arena, g, s, c)?;
        s
    };
    header_mut(arena)?.classes[c].current = s as u32;
    Ok(s)
}

pub(super) fn init_slab(arena: &mut Arena, g: Geo, s: usize, c: usize) -> Result<()> {
    let slots = g.slots(c);
    let base = g.page_at(s);
    let page = arena.bytes_mut(base..base + g.page())?;
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
    kinds::set_kinds(arena, s..s + 1, kinds::slab(c))
}

/// A copy of the header of slab `s` (an unaligned read: `s` is page-aligned, but checking that
/// would cost a branch on the fast paths).
#[inline(always)]
pub(super) fn slab_header(bytes: &[u8], g: Geo, s: usize) -> SlabHeader {
    bytemuck::pod_read_unaligned(&bytes[g.page_at(s)..g.page_at(s) + SLAB_HEADER])
}

pub(super) fn slab_header_mut(arena: &mut Arena, g: Geo, s: usize) -> Result<&mut SlabHeader> {
    let base = g.page_at(s);
    Ok(bytemuck::from_bytes_mut(
        arena.bytes_mut(base..base + SLAB_HEADER)?,
    ))
}

/// Checks that `s` is a slab of class `c` (a list link read from the arena).
pub(super) fn check_slab(bytes: &[u8], g: Geo, s: usize, c: usize) -> Result<()> {
    if g.in_use(s)
        && kinds::at(bytes, s) == kinds::slab(c)
        && slab_header(bytes, g, s).class as usize == c
    {
        Ok(())
    } else {
        Err(corrupt())
    }
}

pub(super) fn push_partial(arena: &mut Arena, g: Geo, c: usize, s: usize) -> Result<()> {
    let head = header(arena.as_bytes()).classes[c].partial as usize;
    if head != 0 {
        check_slab(arena.as_bytes(), g, head, c)?;
        slab_header_mut(arena, g, head)?.prev = s as u32;
    }
    let h = slab_header_mut(arena, g, s)?;
    h.listed = 1;
    h.prev = 0;
    h.next = head as u32;
    header_mut(arena)?.classes[c].partial = s as u32;
    Ok(())
}

pub(super) fn unlink_partial(arena: &mut Arena, g: Geo, c: usize, s: usize) -> Result<()> {
    check_slab(arena.as_bytes(), g, s, c)?;
    let h = slab_header(arena.as_bytes(), g, s);
    if h.listed != 1 {
        return Err(corrupt());
    }
    let (prev, next) = (h.prev as usize, h.next as usize);
    if prev != 0 {
        check_slab(arena.as_bytes(), g, prev, c)?;
        slab_header_mut(arena, g, prev)?.next = next as u32;
    } else {
        header_mut(arena)?.classes[c].partial = next as u32;
    }
    if next != 0 {
        check_slab(arena.as_bytes(), g, next, c)?;
        slab_header_mut(arena, g, next)?.prev = prev as u32;
    }
    let h = slab_header_mut(arena, g, s)?;
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
    Relist {
        g: Geo,
        s: usize,
        used: u32,
        listed: bool,
    },
    /// Nothing: `free_slow` must handle it.
    Slow,
}

/// The common free: a live small object. It makes the same checks as `free_slow`, but a failed
/// one returns `Slow` having written nothing, and `free_slow` starts over (and names the error).
/// Inlined into every typed `free`, like `alloc_fast`.
#[inline(always)]
pub(super) fn free_fast(
    arena: &mut Arena,
    offset: usize,
    stamp: u64,
    place: &Placement,
) -> FreeFast {
    free_fast_or_none(arena, offset, stamp, place).unwrap_or(FreeFast::Slow)
}

#[inline(always)]
pub(super) fn free_fast_or_none(
    arena: &mut Arena,
    offset: usize,
    stamp: u64,
    place: &Placement,
) -> Option<FreeFast> {
    let g = ready(arena.as_bytes(), arena.page_shift())?;
    let c = place.class;
    let size = *CLASS_SIZES.get(c)?;
    let bytes = arena.as_bytes();
    if stamp & 1 == 0 || !live_at(bytes, offset, stamp, place) {
        return None;
    }
    // `live_at` checked that page `s` is a slab of class `c`.
    let s = offset >> g.shift;
    if !g.in_use(s) {
        return None;
    }
    let base = g.page_at(s);
    // SAFETY: as in `alloc_fast`: `s < top <= pages`, and the header is in the first 512 bytes.
    let head: SlabHeader = unsafe { read_at(bytes, base) };
    let index = g.slot_index(offset - base, c);
    // `|`, not `||`: one branch for the lot.
    if (index >= g.slots(c))
        | (head.class as usize != c)
        | (index >= head.slots as usize)
        | (head.used == 0)
    {
        return None;
    }
    let word_at = SLAB_HEADER + 8 * (index / 64);
    // SAFETY: page `s` lies inside `bytes`, and `index < slots(c) <= words * 64`, so the word
    // ends by `data_start() <= page()`.
    let word: u64 = unsafe { read_at(bytes, base + word_at) };
    let bit = 1u64 << (index % 64);
    if word & bit == 0 {
        return None;
    }
    let current = current_slab(bytes, c)?;
    let page = arena.page_mut(s)?;
    debug_assert_eq!(
        page.len(),
        g.page(),
        "`ready` checked the page size is the arena's"
    );
    let used = head.used - 1;
    // SAFETY: `page` is page `s`, of `g.page()` bytes (as in `alloc_fast`); the word ends by
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
        FreeFast::Relist { g, s, used, listed }
    })
}

/// Frees the small object at `offset` (whose stamp `free_slow` checked), or names why the
/// allocator's metadata places no such object there.
pub(super) fn free_small(
    arena: &mut Arena,
    g: Geo,
    offset: usize,
    stamp: u64,
    place: Placement,
    type_name: &'static str,
) -> Result<()> {
    let bytes = arena.as_bytes();
    let s = offset >> g.shift;
    let c = place.class;
    let size = CLASS_SIZES[c];
    let base = g.page_at(s);
    let head = slab_header(bytes, g, s);
    let index = g.slot_index(offset - base, c);
    if index >= g.slots(c)
        || kinds::at(bytes, s) != kinds::slab(c)
        || head.class as usize != c
        || index >= head.slots as usize
    {
        return Err(not_an_object(offset, type_name, place));
    }
    let page = arena.bytes_mut(base..base + g.page())?;
    let word_at = SLAB_HEADER + 8 * (index / 64);
    let mut word = read_u64(page, word_at).unwrap_or(0);
    let bit = 1u64 << (index % 64);
    if word & bit == 0 || head.used == 0 {
        return Err(corrupt());
    }
    word &= !bit;
    page[word_at..word_at + 8].copy_from_slice(&word.to_ne_bytes());
    let at = offset - base + size - 8;
    page[at..at + 8].copy_from_slice(&(stamp + 1).to_ne_bytes());
    let used = head.used - 1;
    bytemuck::from_bytes_mut::<SlabHeader>(&mut page[..SLAB_HEADER]).used = used;
    let current = header(arena.as_bytes()).classes[c].current as usize;
    if s == current || (used != 0 && head.listed != 0) {
        Ok(())
    } else {
        relist(arena, g, c, s, used, head.listed != 0)
    }
}

/// After a free in slab `s` (not its class's current slab): an empty slab goes back to the free
/// pages, so any class (or a large object) can reuse it; a full one joins the partial list.
#[cold]
#[inline(never)]
pub(super) fn relist(
    arena: &mut Arena,
    g: Geo,
    c: usize,
    s: usize,
    used: u32,
    listed: bool,
) -> Result<()> {
    if used == 0 {
        if listed {
            unlink_partial(arena, g, c, s)?;
        }
        free_pages(arena, g, s, 1)
    } else {
        push_partial(arena, g, c, s)
    }
}
