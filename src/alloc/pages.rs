//! Pages: large objects (runs of whole pages) and the free-page pool, kept as runs in size
//! bins.

use super::diagnostics::not_an_object;
use super::geometry::{large_run, Geo, Placement};
use super::header::{corrupt, header, header_mut, read_u64, FreeRun, BINS};
use super::kinds;
use super::stamps::fresh_stamp;
use crate::arena::Arena;
use crate::error::{Error, Result};

/// Free-run bins: one per length `1..=EXACT_BINS` pages, then one per power of two.
pub(super) const EXACT_BINS: usize = 32;

/// First-fit candidates examined in a power-of-two bin before a larger bin is split.
pub(super) const BIN_SCAN: usize = 16;

/// No run of free pages (nor room above `top`) fits an object placed as `place`.
pub(super) fn out_of_memory(arena: &Arena, place: Placement) -> Error {
    Error::OutOfMemory {
        requested: place.size,
        align: place.align,
        capacity: arena.capacity(),
    }
}

#[inline(never)]
pub(super) fn alloc_large(
    arena: &mut Arena,
    g: Geo,
    place: Placement,
    init: &[u8],
) -> Result<(usize, u64)> {
    if place.align > g.page() {
        return Err(Error::Unsupported(
            "objects aligned above the page size cannot be allocated",
        ));
    }
    let (n, at) = large_run(&place, g.shift)
        .filter(|&(n, _)| n <= g.pages)
        .ok_or_else(|| out_of_memory(arena, place))?;
    let s = alloc_pages(arena, g, n).ok_or_else(|| out_of_memory(arena, place))??;
    kinds::set_kinds(arena, s..s + 1, kinds::LARGE_HEAD)?;
    kinds::set_kinds(arena, s + 1..s + n, kinds::LARGE_TAIL)?;
    let off = g.page_at(s);
    let stamp = fresh_stamp();
    let trailer = arena.bytes_mut(off + at..off + at + 16)?;
    trailer[..8].copy_from_slice(&stamp.to_ne_bytes());
    trailer[8..].copy_from_slice(&(n as u64).to_ne_bytes());
    if !init.is_empty() {
        arena
            .bytes_mut(off..off + init.len())?
            .copy_from_slice(init);
    }
    Ok((off, stamp))
}

pub(super) fn bin_of(pages: usize) -> usize {
    if pages <= EXACT_BINS {
        pages - 1
    } else {
        (EXACT_BINS + (pages.ilog2() as usize - EXACT_BINS.ilog2() as usize)).min(BINS - 1)
    }
}

pub(super) fn free_run(bytes: &[u8], g: Geo, s: usize) -> Result<FreeRun> {
    if !g.in_use(s) || kinds::at(bytes, s) != kinds::FREE_HEAD {
        return Err(corrupt());
    }
    let run: FreeRun =
        *bytemuck::from_bytes(&bytes[g.page_at(s)..g.page_at(s) + size_of::<FreeRun>()]);
    let pages = usize::try_from(run.pages).unwrap_or(usize::MAX);
    if pages == 0 || pages > g.top - s {
        return Err(corrupt());
    }
    Ok(run)
}

pub(super) fn free_run_mut(arena: &mut Arena, g: Geo, s: usize) -> Result<&mut FreeRun> {
    let base = g.page_at(s);
    Ok(bytemuck::from_bytes_mut(
        arena.bytes_mut(base..base + size_of::<FreeRun>())?,
    ))
}

/// Takes `n` pages: from a free run if one is long enough, else from `top`. `None` when the
/// arena has no room.
pub(super) fn alloc_pages(arena: &mut Arena, g: Geo, n: usize) -> Option<Result<usize>> {
    match find_run(arena.as_bytes(), g, n) {
        Ok(Some((s, len))) => Some(take_run(arena, g, s, len, n).map(|()| s)),
        Err(e) => Some(Err(e)),
        Ok(None) => {
            let top = g.top;
            if n > g.pages - top {
                return None;
            }
            Some(header_mut(arena).map(|h| {
                h.top = (top + n) as u64;
                top
            }))
        }
    }
}

/// A free run of at least `n` pages: the head of the exact bin, else a first fit among a few
/// runs of `n`'s power-of-two bin, else the head of the next non-empty larger bin.
pub(super) fn find_run(bytes: &[u8], g: Geo, n: usize) -> Result<Option<(usize, usize)>> {
    let h = header(bytes);
    let b = bin_of(n);
    let mut s = h.bins[b] as usize;
    let mut scanned = 0;
    while s != 0 && scanned < BIN_SCAN {
        let run = free_run(bytes, g, s)?;
        let len = run.pages as usize;
        if len >= n {
            return Ok(Some((s, len)));
        }
        s = run.next as usize;
        scanned += 1;
    }
    let larger = h.free_mask & (u64::MAX << b << 1);
    if larger == 0 {
        return Ok(None);
    }
    let s = h.bins[larger.trailing_zeros() as usize] as usize;
    let len = free_run(bytes, g, s)?.pages as usize;
    if len < n {
        return Err(corrupt());
    }
    Ok(Some((s, len)))
}

/// Removes the free run at `s` (of `len` pages) from its bin and gives back its tail past `n`.
pub(super) fn take_run(arena: &mut Arena, g: Geo, s: usize, len: usize, n: usize) -> Result<()> {
    unlink_run(arena, g, s)?;
    if len > n {
        push_run(arena, g, s + n, len - n)?;
    }
    Ok(())
}

pub(super) fn unlink_run(arena: &mut Arena, g: Geo, s: usize) -> Result<()> {
    let run = free_run(arena.as_bytes(), g, s)?;
    let (prev, next) = (run.prev as usize, run.next as usize);
    if prev != 0 {
        free_run(arena.as_bytes(), g, prev)?;
        free_run_mut(arena, g, prev)?.next = next as u32;
    } else {
        let b = bin_of(run.pages as usize);
        let h = header_mut(arena)?;
        if h.bins[b] as usize != s {
            return Err(corrupt());
        }
        h.bins[b] = next as u32;
        if next == 0 {
            h.free_mask &= !(1 << b);
        }
    }
    if next != 0 {
        free_run(arena.as_bytes(), g, next)?;
        free_run_mut(arena, g, next)?.prev = prev as u32;
    }
    Ok(())
}

/// Records `[s, s + n)` as a free run at the head of its bin.
pub(super) fn push_run(arena: &mut Arena, g: Geo, s: usize, n: usize) -> Result<()> {
    let b = bin_of(n);
    let head = header(arena.as_bytes()).bins[b] as usize;
    if head != 0 {
        free_run(arena.as_bytes(), g, head)?;
        free_run_mut(arena, g, head)?.prev = s as u32;
    }
    // Every page of a free run reads as free in the page map, so that no page keeps the kind
    // of what it held before (the validity check of a `Ptr` trusts the kinds).
    kinds::set_kinds(arena, s..s + n, 0)?;
    *free_run_mut(arena, g, s)? = FreeRun {
        pages: n as u64,
        prev: 0,
        next: head as u32,
    };
    let end = g.page_at(s + n);
    arena
        .bytes_mut(end - 8..end)?
        .copy_from_slice(&(n as u64).to_ne_bytes());
    kinds::set_kinds(arena, s..s + 1, kinds::FREE_HEAD)?;
    if n > 1 {
        kinds::set_kinds(arena, s + n - 1..s + n, kinds::FREE_LAST)?;
    }
    let h = header_mut(arena)?;
    h.bins[b] = s as u32;
    h.free_mask |= 1 << b;
    Ok(())
}

/// Returns `[s, s + n)` to the free pages, merged with free neighbours; pages that end at `top`
/// lower it instead.
pub(super) fn free_pages(arena: &mut Arena, g: Geo, mut s: usize, mut n: usize) -> Result<()> {
    let bytes = arena.as_bytes();
    if s > g.first_page {
        let k = kinds::at(bytes, s - 1);
        if k == kinds::FREE_HEAD || k == kinds::FREE_LAST {
            let len = read_u64(bytes, g.page_at(s) - 8).unwrap_or(0) as usize;
            let start = s.wrapping_sub(len);
            if len > 0
                && len <= s - g.first_page
                && free_run(bytes, g, start)?.pages as usize == len
            {
                unlink_run(arena, g, start)?;
                s = start;
                n += len;
            }
        }
    }
    let end = s + n;
    if end == g.top {
        return lower_top(arena, s, n);
    }
    if kinds::at(arena.as_bytes(), end) == kinds::FREE_HEAD {
        let len = free_run(arena.as_bytes(), g, end)?.pages as usize;
        unlink_run(arena, g, end)?;
        n += len;
        if s + n == g.top {
            return lower_top(arena, s, n);
        }
    }
    push_run(arena, g, s, n)
}

/// Gives `[s, s + n)`, which ends at `top`, back by lowering `top` to `s`; its pages read as
/// never used again.
fn lower_top(arena: &mut Arena, s: usize, n: usize) -> Result<()> {
    kinds::set_kinds(arena, s..s + n, 0)?;
    header_mut(arena)?.top = s as u64;
    Ok(())
}

#[inline(never)]
pub(super) fn free_large(
    arena: &mut Arena,
    g: Geo,
    offset: usize,
    stamp: u64,
    place: Placement,
    type_name: &'static str,
) -> Result<()> {
    let bytes = arena.as_bytes();
    let s = offset >> g.shift;
    // `free_slow` checked the run's head, its end and the stamp in its trailer (`live_at`).
    let Some((n, at)) = large_run(&place, g.shift) else {
        return Err(not_an_object(offset, type_name, place));
    };
    if read_u64(bytes, offset + at + 8) != Some(n as u64) || s + n > g.top {
        return Err(not_an_object(offset, type_name, place));
    }
    arena
        .bytes_mut(offset + at..offset + at + 8)?
        .copy_from_slice(&(stamp + 1).to_ne_bytes());
    free_pages(arena, g, s, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_exact_up_to_32_pages_then_powers_of_two() {
        for n in 1..=EXACT_BINS {
            assert_eq!(bin_of(n), n - 1);
        }
        assert_eq!(bin_of(33), EXACT_BINS);
        assert_eq!(bin_of(63), EXACT_BINS);
        assert_eq!(bin_of(64), EXACT_BINS + 1);
        assert_eq!(bin_of(1 << 20), EXACT_BINS + 15);
        assert_eq!(bin_of(usize::MAX), BINS - 1);
        let mut last = 0;
        for n in 1..100_000 {
            assert!(bin_of(n) >= last, "bins grow with the run length");
            last = bin_of(n);
        }
    }
}
