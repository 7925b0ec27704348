//! Pages: large objects (runs of whole pages) and the free-page pool, kept as runs in size
//! bins. Everything here works on the metadata view the entry points made ([`MetaMut`]).

use super::diagnostics::not_an_object;
use super::geometry::{large_run, Placement};
use super::header::{corrupt, FreeRun, BINS};
use super::kinds;
use super::meta::{Meta, MetaMut};
use super::stamps::fresh_stamp;
use crate::error::{Error, Result};

/// Free-run bins: one per length `1..=EXACT_BINS` pages, then one per power of two.
pub(super) const EXACT_BINS: usize = 32;

/// First-fit candidates examined in a power-of-two bin before a larger bin is split.
const BIN_SCAN: usize = 16;

/// No run of free pages (nor room above `top`) fits an object placed as `place`.
pub(super) fn out_of_memory(capacity: usize, place: Placement) -> Error {
    Error::OutOfMemory {
        requested: place.size,
        align: place.align,
        capacity,
    }
}

#[inline(never)]
pub(super) fn alloc_large(
    m: &mut MetaMut<'_>,
    place: Placement,
    init: &[u8],
) -> Result<(usize, u64)> {
    let g = m.geo();
    if place.align > g.page() {
        return Err(Error::Unsupported(
            "objects aligned above the page size cannot be allocated",
        ));
    }
    let (n, at) = large_run(&place, g.shift)
        .filter(|&(n, _)| n <= g.pages)
        .ok_or_else(|| out_of_memory(m.capacity(), place))?;
    let s = alloc_pages(m, n)?.ok_or_else(|| out_of_memory(m.capacity(), place))?;
    m.set_kinds(s..s + 1, kinds::LARGE_HEAD)?;
    m.set_kinds(s + 1..s + n, kinds::LARGE_TAIL)?;
    let off = g.page_at(s);
    let stamp = fresh_stamp();
    m.write(off + at, bytemuck::bytes_of(&[stamp, n as u64]))?;
    m.write(off, init)?;
    Ok((off, stamp))
}

pub(super) fn bin_of(pages: usize) -> usize {
    if pages <= EXACT_BINS {
        pages - 1
    } else {
        (EXACT_BINS + (pages.ilog2() as usize - EXACT_BINS.ilog2() as usize)).min(BINS - 1)
    }
}

/// Takes `n` pages: from a free run if one is long enough, else from `top`. `None` when the
/// arena has no room.
pub(super) fn alloc_pages(m: &mut MetaMut<'_>, n: usize) -> Result<Option<usize>> {
    if let Some((s, len)) = find_run(m.read(), n)? {
        take_run(m, s, len, n)?;
        return Ok(Some(s));
    }
    let g = m.geo();
    if n > g.pages - g.top {
        return Ok(None);
    }
    m.set_top(g.top + n)?;
    Ok(Some(g.top))
}

/// A free run of at least `n` pages: the head of the exact bin, else a first fit among a few
/// runs of `n`'s power-of-two bin, else the head of the next non-empty larger bin.
fn find_run(meta: Meta<'_>, n: usize) -> Result<Option<(usize, usize)>> {
    let h = meta.header();
    let b = bin_of(n);
    let mut s = h.bins[b] as usize;
    let mut scanned = 0;
    while s != 0 && scanned < BIN_SCAN {
        let run = meta.free_run(s)?;
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
    let len = meta.free_run(s)?.pages as usize;
    if len < n {
        return Err(corrupt());
    }
    Ok(Some((s, len)))
}

/// Removes the free run at `s` (of `len` pages) from its bin and gives back its tail past `n`.
fn take_run(m: &mut MetaMut<'_>, s: usize, len: usize, n: usize) -> Result<()> {
    unlink_run(m, s)?;
    if len > n {
        push_run(m, s + n, len - n)?;
    }
    Ok(())
}

fn unlink_run(m: &mut MetaMut<'_>, s: usize) -> Result<()> {
    let run = m.read().free_run(s)?;
    let (prev, next) = (run.prev as usize, run.next as usize);
    if prev != 0 {
        m.free_run_mut(prev)?.next = next as u32;
    } else {
        let b = bin_of(run.pages as usize);
        let h = m.header_mut()?;
        if h.bins[b] as usize != s {
            return Err(corrupt());
        }
        h.bins[b] = next as u32;
        if next == 0 {
            h.free_mask &= !(1 << b);
        }
    }
    if next != 0 {
        m.free_run_mut(next)?.prev = prev as u32;
    }
    Ok(())
}

/// Records `[s, s + n)` as a free run at the head of its bin.
fn push_run(m: &mut MetaMut<'_>, s: usize, n: usize) -> Result<()> {
    let b = bin_of(n);
    let head = m.read().header().bins[b] as usize;
    if head != 0 {
        m.free_run_mut(head)?.prev = s as u32;
    }
    // Every page of a free run reads as free in the page map, so that no page keeps the kind
    // of what it held before (the validity check of a `Ptr` trusts the kinds).
    m.set_kinds(s..s + n, kinds::FREE)?;
    let g = m.geo();
    let run = FreeRun {
        pages: n as u64,
        prev: 0,
        next: head as u32,
    };
    m.write(g.page_at(s), bytemuck::bytes_of(&run))?;
    m.write(g.page_at(s + n) - 8, &(n as u64).to_ne_bytes())?;
    m.set_kinds(s..s + 1, kinds::FREE_HEAD)?;
    if n > 1 {
        m.set_kinds(s + n - 1..s + n, kinds::FREE_LAST)?;
    }
    let h = m.header_mut()?;
    h.bins[b] = s as u32;
    h.free_mask |= 1 << b;
    Ok(())
}

/// Returns `[s, s + n)` to the free pages, merged with free neighbours; pages that end at `top`
/// lower it instead.
pub(super) fn free_pages(m: &mut MetaMut<'_>, mut s: usize, mut n: usize) -> Result<()> {
    let g = m.geo();
    let meta = m.read();
    if s > g.first_page && matches!(meta.kind(s - 1), kinds::FREE_HEAD | kinds::FREE_LAST) {
        let len = meta.read_u64(g.page_at(s) - 8).unwrap_or(0) as usize;
        let start = s.wrapping_sub(len);
        if len > 0 && len <= s - g.first_page && meta.free_run(start)?.pages as usize == len {
            unlink_run(m, start)?;
            s = start;
            n += len;
        }
    }
    let end = s + n;
    if end == g.top {
        return lower_top(m, s, n);
    }
    if m.read().kind(end) == kinds::FREE_HEAD {
        let len = m.read().free_run(end)?.pages as usize;
        unlink_run(m, end)?;
        n += len;
        if s + n == g.top {
            return lower_top(m, s, n);
        }
    }
    push_run(m, s, n)
}

/// Gives `[s, s + n)`, which ends at `top`, back by lowering `top` to `s`; its pages read as
/// never used again.
fn lower_top(m: &mut MetaMut<'_>, s: usize, n: usize) -> Result<()> {
    m.set_kinds(s..s + n, kinds::FREE)?;
    m.set_top(s)
}

#[inline(never)]
pub(super) fn free_large(
    m: &mut MetaMut<'_>,
    offset: usize,
    stamp: u64,
    place: Placement,
    type_name: &'static str,
) -> Result<()> {
    let g = m.geo();
    let s = offset >> g.shift;
    // `free_slow` checked the run's head, its end and the stamp in its trailer (`live_at`).
    let Some((n, at)) = large_run(&place, g.shift) else {
        return Err(not_an_object(offset, type_name, place));
    };
    if m.read().read_u64(offset + at + 8) != Some(n as u64) || s + n > g.top {
        return Err(not_an_object(offset, type_name, place));
    }
    m.write(offset + at, &(stamp + 1).to_ne_bytes())?;
    free_pages(m, s, n)
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
