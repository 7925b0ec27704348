//! The allocator's on-arena format: the header at offset 0, a slab's header, a free run's
//! links, and the checks that turn the header's fields into a trusted geometry ([`Geo`]).
//! Everything here reads bytes; writing them is the metadata view's business (`meta`).

use super::geometry::{Geo, CLASSES, PAGE_SHIFTS, SLAB_HEADER};
use super::kinds::PAGE_MAP;
use crate::error::{Error, Result};
use bytemuck::{Pod, Zeroable};
use std::mem::offset_of;
use std::ops::Range;

pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"cowalloc");
/// 2: large objects keep their trailer at the end of their run, and every page's kind is
/// current (free pages and pages above `top` are never left with an old kind).
pub(super) const VERSION: u32 = 2;

/// Free-run bins (see `pages::bin_of`).
pub(super) const BINS: usize = 64;

/// The allocator's header, at offset 0 of the arena. All zeros means "not initialized yet".
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(super) struct Header {
    pub(super) magic: u64,
    pub(super) version: u32,
    pub(super) page_shift: u32,
    pub(super) capacity: u64,
    /// First page the allocator hands out (after the header and page map).
    pub(super) first_page: u64,
    /// Pages at and above `top` are unused.
    pub(super) top: u64,
    /// Bit `b` is set iff `bins[b]` is non-empty.
    pub(super) free_mask: u64,
    pub(super) root_offset: u64,
    pub(super) root_stamp: u64,
    pub(super) root_type: u64,
    /// First page of each bin's list of free runs (0: empty).
    pub(super) bins: [u32; BINS],
    pub(super) classes: [ClassLists; CLASSES],
}

/// Invariant: `current` (0: none) and the slabs of `partial` are slabs of this class; a slab is
/// on `partial` iff its `listed` flag is set; full slabs other than `current` are on no list.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(super) struct ClassLists {
    pub(super) current: u32,
    pub(super) partial: u32,
}

pub(super) const HEADER_SIZE: usize = size_of::<Header>();
const _: () = assert!(HEADER_SIZE <= PAGE_MAP);

/// The start of a slab's page; its used-slot bitmap follows.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(super) struct SlabHeader {
    pub(super) class: u32,
    pub(super) used: u32,
    pub(super) slots: u32,
    pub(super) listed: u32,
    pub(super) prev: u32,
    pub(super) next: u32,
    pub(super) _reserved: [u32; 2],
}

const _: () = assert!(size_of::<SlabHeader>() == SLAB_HEADER);
/// Where `SlabHeader::used` sits in a slab, for the fast paths' field writes.
pub(super) const USED: usize = offset_of!(SlabHeader, used);

/// The links at the start of a free run; its length is also stored in the run's last 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(super) struct FreeRun {
    pub(super) pages: u64,
    pub(super) prev: u32,
    pub(super) next: u32,
}

/// The header's first fields, which `state` checks and a new allocator writes, on their own
/// (`Header` is too large to copy).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(super) struct HeaderGeo {
    magic: u64,
    version: u32,
    page_shift: u32,
    capacity: u64,
    first_page: u64,
    top: u64,
}

const _: () = assert!(size_of::<HeaderGeo>() == offset_of!(Header, free_mask));
const _: () = assert!(offset_of!(Header, top) == offset_of!(HeaderGeo, top));

pub(super) fn corrupt() -> Error {
    Error::Corrupt(
        "the typed allocator's metadata fails its checks (raw writes into memory it owns?)",
    )
}

#[inline]
pub(super) fn header(bytes: &[u8]) -> &Header {
    bytemuck::from_bytes(&bytes[..HEADER_SIZE])
}

/// The page size of the arena `bytes`, as a shift, for the validity check and the fast paths.
/// x86-64 has 4 KiB pages only, so there it is a constant (a variable shift and the load feeding
/// it made `get` about 15% slower), and so is every position in a slab; elsewhere it is read
/// from the header, next to the fields every typed call reads (a header changed by raw writes
/// only makes the check read another page-map byte).
#[inline(always)]
pub(super) fn page_shift(bytes: &[u8]) -> u32 {
    if cfg!(target_arch = "x86_64") {
        12
    } else {
        let at = offset_of!(Header, page_shift);
        let field = bytes
            .get(at..at + 4)
            .map_or([0; 4], |b| b.try_into().unwrap_or([0; 4]));
        // Clamped to `PAGE_SHIFTS`' bounds, which the unchecked page-map read relies on.
        u32::from_ne_bytes(field).clamp(*PAGE_SHIFTS.start(), *PAGE_SHIFTS.end())
    }
}

/// What the header says.
pub(super) enum State {
    /// All zeros: no typed use yet.
    Uninit,
    Ready(Geo),
    Corrupt,
}

pub(super) fn state(bytes: &[u8]) -> State {
    let h = header(bytes);
    if h.magic != MAGIC {
        return if h.magic == 0 {
            State::Uninit
        } else {
            State::Corrupt
        };
    }
    if h.version != VERSION
        || !PAGE_SHIFTS.contains(&h.page_shift)
        || h.capacity != bytes.len() as u64
        || bytes.len() >> h.page_shift == 0
    {
        return State::Corrupt;
    }
    let mut g = Geo::new(h.page_shift, bytes.len());
    let top = usize::try_from(h.top).unwrap_or(usize::MAX);
    if h.first_page != g.first_page as u64 || top < g.first_page || top > g.pages {
        return State::Corrupt;
    }
    g.top = top;
    State::Ready(g)
}

/// The geometry if the allocator is initialized, `None` if the header is all zeros.
pub(super) fn geometry(bytes: &[u8]) -> Result<Option<Geo>> {
    match state(bytes) {
        State::Uninit => Ok(None),
        State::Ready(g) => Ok(Some(g)),
        State::Corrupt => Err(corrupt()),
    }
}

/// `state` for the fast paths: the geometry if the header is valid and its pages are of
/// `1 << shift` bytes (the arena's, as they are unless the header was overwritten, which makes
/// the expected geometry a function of the arena's constants instead of the header's fields),
/// else `None` (initialization and errors are the slow paths' business).
#[inline(always)]
pub(super) fn ready(bytes: &[u8], shift: u32) -> Option<Geo> {
    let h: HeaderGeo = bytemuck::pod_read_unaligned(bytes.get(..size_of::<HeaderGeo>())?);
    let g = Geo::new(shift, bytes.len());
    let top = usize::try_from(h.top).ok()?;
    // The exact compares as one test: on the fast path they all hold.
    let differs = (h.magic ^ MAGIC)
        | u64::from(h.version ^ VERSION)
        | u64::from(h.page_shift ^ shift)
        | (h.capacity ^ bytes.len() as u64)
        | (h.first_page ^ g.first_page as u64);
    let valid =
        differs == 0 && PAGE_SHIFTS.contains(&shift) && top >= g.first_page && top <= g.pages;
    valid.then_some(Geo { top, ..g })
}

/// The geometry of a new allocator in the arena `bytes`, with pages of `1 << shift` bytes, and
/// the header fields that record it; refused unless the metadata's bytes are all zero.
#[cold]
/// Bytes at the start of an arena of `capacity` bytes that the allocator's header and page map
/// take.
pub(super) fn metadata_len(capacity: usize, shift: u32) -> usize {
    PAGE_MAP + Geo::new(shift, capacity).pages
}

/// The header fields of a new allocator in `bytes`, if its metadata is zero. Only the pages of
/// the (sorted) runs `nonzero` may hold a non-zero byte (the arena knows which pages hold data),
/// so the check costs what the arena holds, not its capacity: an arena opened from a file that
/// claims a huge capacity is not read a page-map byte per page of it.
pub(super) fn init(bytes: &[u8], shift: u32, nonzero: &[Range<usize>]) -> Result<(Geo, HeaderGeo)> {
    let g = Geo::new(shift, bytes.len());
    let meta = PAGE_MAP + g.pages;
    let page = 1usize << shift;
    let zero = nonzero.iter().all(|r| {
        let (start, end) = ((r.start * page).min(meta), (r.end * page).min(meta));
        all_zero(&bytes[start..end])
    });
    if !zero {
        return Err(Error::Unsupported(
            "typed allocation needs the arena's first bytes (allocator header and page map) \
             zeroed, but raw writes were made there",
        ));
    }
    let fields = HeaderGeo {
        magic: MAGIC,
        version: VERSION,
        page_shift: g.shift,
        capacity: bytes.len() as u64,
        first_page: g.first_page as u64,
        top: g.first_page as u64,
    };
    Ok((g, fields))
}

/// Whether every byte of `bytes` is zero. Checks a page-sized chunk at a time without an early
/// exit inside it, which the compiler vectorizes: the page map of a large arena is megabytes
/// (a byte at a time, 1 TiB's took 0.2 s).
fn all_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(4096)
        .all(|chunk| chunk.iter().fold(0, |acc, &b| acc | b) == 0)
}

#[inline]
pub(super) fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_ne_bytes(b.try_into().ok()?))
}

/// The `T` at `bytes[at..]`, read without a bounds check: for the fast paths, whose checks of
/// the allocator's metadata already place every access inside a slab page.
///
/// # Safety
/// `at + size_of::<T>() <= bytes.len()`.
#[inline(always)]
pub(super) unsafe fn read_at<T: Pod>(bytes: &[u8], at: usize) -> T {
    debug_assert!(at + size_of::<T>() <= bytes.len());
    // SAFETY: in bounds (forwarded to the caller); every bit pattern is a `T` (Pod).
    unsafe { bytes.as_ptr().add(at).cast::<T>().read_unaligned() }
}

/// Writes `v` at `bytes[at..]` without a bounds check (see `read_at`).
///
/// # Safety
/// `at + size_of::<T>() <= bytes.len()`.
#[inline(always)]
pub(super) unsafe fn write_at<T: Pod>(bytes: &mut [u8], at: usize, v: T) {
    debug_assert!(at + size_of::<T>() <= bytes.len());
    // SAFETY: in bounds (forwarded to the caller); `bytes` is plain memory.
    unsafe { bytes.as_mut_ptr().add(at).cast::<T>().write_unaligned(v) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_zero_sees_any_byte() {
        let mut bytes = vec![0u8; 3 * 4096 + 5];
        assert!(all_zero(&bytes) && all_zero(&[]));
        for at in [0, 4095, 4096, 3 * 4096 + 4] {
            bytes[at] = 1;
            assert!(!all_zero(&bytes), "{at}");
            bytes[at] = 0;
        }
    }

    #[test]
    fn a_new_header_reads_as_ready() {
        let mut bytes = vec![0u64; (1 << 20) / 8];
        let b: &mut [u8] = bytemuck::cast_slice_mut(&mut bytes);
        assert!(matches!(state(b), State::Uninit));
        let all = vec![Range {
            start: 0,
            end: b.len() / 4096,
        }];
        let (g, fields) = init(b, 12, &all).unwrap();
        b[..size_of::<HeaderGeo>()].copy_from_slice(bytemuck::bytes_of(&fields));
        assert!(matches!(state(b), State::Ready(r) if r.top == g.first_page));
        assert!(ready(b, 12).is_some_and(|r| r.top == g.first_page));
        assert!(ready(b, 13).is_none(), "another page size");
        assert!(init(b, 12, &all).is_err(), "the metadata is no longer zero");
        assert!(init(b, 12, &[]).is_ok(), "only the pages named are read");
        b[8] ^= 1;
        assert!(matches!(state(b), State::Corrupt));
    }
}
