//! The page map: one byte per page of the arena, after the header, saying what the page holds.
//! It is current for every page (free pages, and pages above `top`, read as free), which is what
//! lets the validity check trust a stamp's position.

/// Where the page map starts; the header fits below it.
pub(super) const PAGE_MAP: usize = 1024;

/// Free, or above `top`.
pub(super) const FREE: u8 = 0;
pub(super) const LARGE_HEAD: u8 = 1;
pub(super) const LARGE_TAIL: u8 = 2;
pub(super) const FREE_HEAD: u8 = 3;
pub(super) const FREE_LAST: u8 = 4;
/// A slab of class `c` is `SLAB + c`.
pub(super) const SLAB: u8 = 16;

/// The kind of a slab of class `c`.
#[inline(always)]
pub(super) const fn slab(c: usize) -> u8 {
    SLAB.wrapping_add(c as u8)
}

/// The kind of page `p` in the arena `bytes` (free past the map's end).
#[inline(always)]
pub(super) fn at(bytes: &[u8], p: usize) -> u8 {
    bytes.get(PAGE_MAP + p).copied().unwrap_or(FREE)
}

/// Whether a page of kind `k` holds no object.
#[inline]
pub(super) fn is_free(k: u8) -> bool {
    k == FREE || k == FREE_HEAD || k == FREE_LAST
}
