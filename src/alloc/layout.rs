//! The allocator's header and geometry: the constants of its layout, the header at offset 0,
//! where each type's objects go ([`Placement`]), and the checks that turn the header's fields
//! into a trusted geometry ([`Geo`]).

use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::sys;
use bytemuck::{Pod, Zeroable};
use std::mem::offset_of;

pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"cowalloc");
/// 2: large objects keep their trailer at the end of their run, and every page's kind is
/// current (free pages and pages above `top` are never left with an old kind).
pub(super) const VERSION: u32 = 2;

/// Where the page map starts; the header fits below it.
pub(super) const PAGE_MAP: usize = 1024;

/// Slot sizes (object and stamp) of the size classes.
pub(super) const CLASS_SIZES: [usize; 24] = [
    8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640,
    768, 896, 1024,
];
pub(super) const CLASSES: usize = CLASS_SIZES.len();

/// Objects aligned above this are large; slab slots start on a 64-byte boundary.
pub(super) const MAX_SMALL_ALIGN: usize = 64;

/// `Placement::class` of a large object.
pub(super) const LARGE: usize = usize::MAX;

/// The largest alignment a type stored in an arena may have, checked at compile time: the
/// smallest page size of the platforms the crate supports, so that a large object, which starts
/// a page, is aligned for its type everywhere.
pub(crate) const MAX_ALIGN: usize = 4096;

/// Free-run bins: one per length `1..=EXACT_BINS` pages, then one per power of two.
pub(super) const BINS: usize = 64;
pub(super) const EXACT_BINS: usize = 32;

/// Page kinds in the page map.
pub(super) mod kind {
    pub(in crate::alloc) const LARGE_HEAD: u8 = 1;
    pub(in crate::alloc) const LARGE_TAIL: u8 = 2;
    pub(in crate::alloc) const FREE_HEAD: u8 = 3;
    pub(in crate::alloc) const FREE_LAST: u8 = 4;
    /// A slab of class `c` is `SLAB + c`.
    pub(in crate::alloc) const SLAB: u8 = 16;
}

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

pub(super) const SLAB_HEADER: usize = size_of::<SlabHeader>();
/// Where `SlabHeader::used` sits in a slab, for the fast paths' field writes.
pub(super) const USED: usize = std::mem::offset_of!(SlabHeader, used);

/// The links at the start of a free run; its length is also stored in the run's last 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(super) struct FreeRun {
    pub(super) pages: u64,
    pub(super) prev: u32,
    pub(super) next: u32,
}

/// Where an object of a given size and alignment lives, fixed per type at compile time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Placement {
    pub(crate) size: usize,
    pub(crate) align: usize,
    /// Size class, or `LARGE`.
    pub(super) class: usize,
    /// Offset of the stamp from the object's start.
    pub(crate) stamp_at: usize,
    /// An object's offset is a multiple of `mask + 1` (at least 8, so its stamp is aligned).
    pub(crate) mask: usize,
}

impl Placement {
    pub(crate) const fn of(size: usize, align: usize) -> Placement {
        let align = if align == 0 { 1 } else { align };
        let step = if align > 8 { align } else { 8 };
        let mut class = LARGE;
        if align <= MAX_SMALL_ALIGN && size <= CLASS_SIZES[CLASSES - 1] - 8 {
            let mut c = 0;
            while c < CLASSES {
                if CLASS_SIZES[c] >= size + 8 && CLASS_SIZES[c] % step == 0 {
                    class = c;
                    break;
                }
                c += 1;
            }
        }
        let stamp_at = if class == LARGE {
            match size.checked_next_multiple_of(8) {
                Some(s) if s <= usize::MAX - 16 => s,
                _ => usize::MAX - 16,
            }
        } else {
            CLASS_SIZES[class] - 8
        };
        Placement {
            size,
            align,
            class,
            stamp_at,
            mask: step - 1,
        }
    }

    #[inline]
    pub(crate) fn is_large(&self) -> bool {
        self.class == LARGE
    }
}

/// The arena's geometry, from a validated header. Page sizes are powers of two, so everything
/// here is shifts: the fast paths divide nothing.
#[derive(Clone, Copy)]
pub(super) struct Geo {
    pub(super) shift: u32,
    pub(super) pages: usize,
    pub(super) first_page: usize,
    pub(super) top: usize,
}

/// Page sizes the header may record: 512 bytes to 64 KiB (slot indices rely on the upper bound).
pub(super) const PAGE_SHIFTS: std::ops::RangeInclusive<u32> = 9..=16;

impl Geo {
    #[inline]
    pub(super) fn new(shift: u32, capacity: usize) -> Geo {
        let pages = capacity >> shift;
        let first_page = (PAGE_MAP + pages + (1 << shift) - 1) >> shift;
        Geo {
            shift,
            pages,
            first_page,
            top: first_page,
        }
    }

    #[inline]
    pub(super) fn page(&self) -> usize {
        1 << self.shift
    }

    /// Bitmap words of a slab.
    #[inline]
    pub(super) fn words(&self) -> usize {
        words(self.shift)
    }

    /// Where a slab's slots start.
    #[inline]
    pub(super) fn data_start(&self) -> usize {
        data_start(self.shift)
    }

    /// Slots of a slab of class `c`.
    #[inline(always)]
    pub(super) fn slots(&self, c: usize) -> usize {
        slots(self.shift, c)
    }

    /// The index of the slot of class `c` that starts `at` bytes into a slab page: below
    /// `slots(c)` exactly when a slot starts there (see [`slot_index`]).
    #[inline(always)]
    pub(super) fn slot_index(&self, at: usize, c: usize) -> usize {
        slot_index(at, self.shift, c)
    }

    #[inline]
    pub(super) fn page_at(&self, p: usize) -> usize {
        p << self.shift
    }

    /// Whether `p` is a page the allocator has handed out or holds as free.
    #[inline]
    pub(super) fn in_use(&self, p: usize) -> bool {
        p >= self.first_page && p < self.top
    }
}

/// Bitmap words of a slab in a page of `1 << shift` bytes: one bit per 8 bytes of page.
#[inline(always)]
pub(super) const fn words(shift: u32) -> usize {
    let w = (1usize << shift) >> 9;
    if w == 0 {
        1
    } else {
        w
    }
}

/// Where a slab's slots start in a page of `1 << shift` bytes: after its header and bitmap, on
/// a `MAX_SMALL_ALIGN` boundary (`next_multiple_of`, spelled with a mask because it branches
/// otherwise).
#[inline(always)]
pub(super) const fn data_start(shift: u32) -> usize {
    (SLAB_HEADER + 8 * words(shift) + MAX_SMALL_ALIGN - 1) & !(MAX_SMALL_ALIGN - 1)
}

/// Slots of a slab of class `c` in a page of `1 << shift` bytes: as many as fit after
/// `data_start`, and at most one per bitmap bit.
#[inline(always)]
pub(super) fn slots(shift: u32, c: usize) -> usize {
    (((1usize << shift) - data_start(shift)) / CLASS_SIZES[c]).min(words(shift) * 64)
}

/// Per class, the slot size `d` as `o << t` with `o` odd: `o`'s inverse modulo 2^64, and `t`.
/// For a multiple `k * d` (`k < 2^64 / d`), `(k * d * inverse).rotate_right(t) == k`; for any
/// other number the result exceeds `u64::MAX / d` (the usual test for a zero remainder by a
/// constant), so one compare tells both whether a slot starts at an offset and which.
const SLOT_DIVISORS: [(u64, u32); CLASSES] = {
    let mut r = [(0, 0); CLASSES];
    let mut c = 0;
    while c < CLASSES {
        let t = CLASS_SIZES[c].trailing_zeros();
        let odd = (CLASS_SIZES[c] >> t) as u64;
        // Newton's iteration doubles the correct low bits: 3 (any odd `o` is its own inverse
        // modulo 8), then 6, 12, 24, 48, 96.
        let mut inverse = odd;
        let mut i = 0;
        while i < 5 {
            inverse = inverse.wrapping_mul(2u64.wrapping_sub(odd.wrapping_mul(inverse)));
            i += 1;
        }
        assert!(odd.wrapping_mul(inverse) == 1);
        r[c] = (inverse, t);
        c += 1;
    }
    r
};

/// The index of the slot of class `c` that starts `at` bytes into a slab page of `1 << shift`
/// bytes, if one starts there; otherwise a number of at least `slots(shift, c)` (an `at`
/// before the first slot, in it or in the page's tail past the last slot).
#[inline(always)]
pub(super) fn slot_index(at: usize, shift: u32, c: usize) -> usize {
    let (inverse, twos) = SLOT_DIVISORS[c];
    let rel = at.wrapping_sub(data_start(shift)) as u64;
    usize::try_from(rel.wrapping_mul(inverse).rotate_right(twos)).unwrap_or(usize::MAX)
}

pub(super) fn corrupt() -> Error {
    Error::Corrupt(
        "the typed allocator's metadata fails its checks (raw writes into memory it owns?)",
    )
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

#[inline]
pub(super) fn header(bytes: &[u8]) -> &Header {
    bytemuck::from_bytes(&bytes[..HEADER_SIZE])
}

pub(super) fn header_mut(arena: &mut Arena) -> Result<&mut Header> {
    Ok(bytemuck::from_bytes_mut(arena.bytes_mut(0..HEADER_SIZE)?))
}

/// What the header says.
pub(super) enum State {
    /// All zeros: no typed use yet.
    Uninit,
    Ready(Geo),
    Corrupt,
}

#[inline(always)]
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

/// The header fields `state` checks, read on their own (`Header` is too large to copy).
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

const _: () = assert!(std::mem::offset_of!(Header, top) == std::mem::offset_of!(HeaderGeo, top));

/// `state` for the fast paths: the geometry if the header is valid, else `None` (initialization
/// and errors are the slow paths' business). The page size must also be the arena's, as it is
/// unless the header was overwritten, which makes the expected geometry a function of the
/// arena's constants instead of the header's fields.
#[inline(always)]
pub(super) fn ready(arena: &Arena) -> Option<Geo> {
    let bytes = arena.as_bytes();
    let h: HeaderGeo = bytemuck::pod_read_unaligned(bytes.get(..size_of::<HeaderGeo>())?);
    let shift = arena.page_shift();
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

/// Slab `current` of class `c`, from the header.
#[inline(always)]
pub(super) fn current_slab(bytes: &[u8], c: usize) -> Option<usize> {
    let at = std::mem::offset_of!(Header, classes) + c * size_of::<ClassLists>();
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_ne_bytes(b.try_into().ok()?) as usize)
}

/// The geometry, initializing the allocator on first use.
#[inline(always)]
pub(super) fn ensure(arena: &mut Arena) -> Result<Geo> {
    match state(arena.as_bytes()) {
        State::Ready(g) => Ok(g),
        State::Uninit => init(arena),
        State::Corrupt => Err(corrupt()),
    }
}

#[cold]
pub(super) fn init(arena: &mut Arena) -> Result<Geo> {
    let g = Geo::new(sys::page_size().trailing_zeros(), arena.capacity());
    let meta = PAGE_MAP + g.pages;
    if !all_zero(&arena.as_bytes()[..meta]) {
        return Err(Error::Unsupported(
            "typed allocation needs the arena's first bytes (allocator header and page map) \
             zeroed, but raw writes were made there",
        ));
    }
    let capacity = arena.capacity() as u64;
    let h = header_mut(arena)?;
    h.magic = MAGIC;
    h.version = VERSION;
    h.page_shift = g.shift;
    h.capacity = capacity;
    h.first_page = g.first_page as u64;
    h.top = g.first_page as u64;
    Ok(g)
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
pub(super) fn page_kind(bytes: &[u8], p: usize) -> u8 {
    bytes.get(PAGE_MAP + p).copied().unwrap_or(0)
}

pub(super) fn set_kinds(arena: &mut Arena, pages: std::ops::Range<usize>, k: u8) -> Result<()> {
    arena
        .bytes_mut(PAGE_MAP + pages.start..PAGE_MAP + pages.end)?
        .fill(k);
    Ok(())
}

pub(super) fn out_of_memory(arena: &Arena, place: Placement) -> Error {
    Error::OutOfMemory {
        requested: place.size,
        align: place.align,
        capacity: arena.capacity(),
    }
}

/// Whether the live object at `off` placed as `place` has stamp `stamp`: the whole validity
/// check behind `get`. For a small object: one compare for range and null, one test for
/// alignment, one load and compare of the page's kind, one compare of the position in the page,
/// then one load and compare of the stamp.
///
/// The page's kind is what makes the stamp's position trustworthy: a slab of the object's class
/// has a stamp at that position and nothing else, while a page reused for a slab of another
/// class, or for a large object, may hold any data there (a table of `Ptr`s holds stamps as
/// data), which a stale `Ptr` would otherwise compare with. Large objects keep their stamp at
/// the end of their run of pages for the same reason (see [`large_run`]). In a slab only a
/// slot's start is an object: elsewhere (the slab's header and bitmap, the middle of a slot, the
/// page's tail past its last slot) the bytes where a stamp would be are metadata or another
/// object's, and a `Ptr` forged to match them would lend that memory as its object.
///
/// Alignment is tested on the address, not the offset, so that a reference made from a `true`
/// result is aligned whatever the alignment of `bytes` (page-aligned in every arena and view,
/// but nothing here relies on it).
#[inline(always)]
pub(crate) fn live_at(bytes: &[u8], off: usize, stamp: u64, place: &Placement) -> bool {
    if place.is_large() {
        return live_large_at(bytes, off, stamp, place);
    }
    let unit = place.mask + 1;
    // Objects start at a non-zero multiple of `unit` (a power of two, at least 8) and end, with
    // their stamp, inside `bytes`. `off - unit` wraps offset 0 to a huge value, so one unsigned
    // compare accepts the non-zero, in-range offsets; alignment is a second test. (Rotating by
    // log2(unit) would fold both into one compare, but x86 rotates merge flags and measured
    // slower than the extra test and well-predicted branch.)
    let Some(last) = bytes.len().checked_sub(place.stamp_at + 8 + unit) else {
        return false;
    };
    if off.wrapping_sub(unit) > last
        || (bytes.as_ptr() as usize).wrapping_add(off) & place.mask != 0
    {
        return false;
    }
    // The page map byte of `off`'s page lies inside `bytes` once `bytes` holds the page map's
    // first page and one byte per page of `bytes` after it (true of every arena: at least a page).
    if bytes.len() < 2 * PAGE_MAP {
        return false;
    }
    let shift = page_shift(bytes);
    // SAFETY: `off < bytes.len()` (checked above) and `page_shift` is at least 9, so the index
    // is below `PAGE_MAP + bytes.len() / 512 <= bytes.len()` for `bytes.len() >= 2 * PAGE_MAP`.
    let kind = unsafe { *bytes.as_ptr().add(PAGE_MAP + (off >> shift)) };
    // On x86-64 the shift and, for a typed access, the class are constants, so the slot count is
    // one too, and the position check is a multiplication and one compare.
    let index = slot_index(off & ((1 << shift) - 1), shift, place.class);
    if (kind != kind::SLAB.wrapping_add(place.class as u8)) | (index >= slots(shift, place.class)) {
        return false;
    }
    // SAFETY: `off + stamp_at + 8 <= bytes.len()` (checked above), so the read is inside
    // `bytes`; it is unaligned, so it assumes nothing of where `bytes` starts.
    let found = unsafe {
        bytes
            .as_ptr()
            .add(off + place.stamp_at)
            .cast::<u64>()
            .read_unaligned()
    };
    // Stamps handed out are odd and unique; a freed slot holds its last stamp plus one, a slot
    // never allocated holds zero, so only the `Ptr` of the live object matches.
    found == stamp
}

/// Whether `off` lies in a slab of `place`'s class but where no slot of it starts: for the
/// diagnostics of a `Ptr` that [`live_at`] refuses.
pub(super) fn off_slot(bytes: &[u8], off: usize, place: &Placement) -> bool {
    let shift = page_shift(bytes);
    !place.is_large()
        && page_kind(bytes, off >> shift) == kind::SLAB.wrapping_add(place.class as u8)
        && slot_index(off & ((1 << shift) - 1), shift, place.class) >= slots(shift, place.class)
}

/// The page size of the arena `bytes`, as a shift, for the validity check. x86-64 has 4 KiB
/// pages only, so there it is a constant (a variable shift and the load feeding it made `get`
/// about 15% slower); elsewhere it is read from the header, next to the fields every typed call
/// reads (a header changed by raw writes only makes the check read another page-map byte).
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

/// The run of pages of a large object placed as `place`, with pages of `1 << shift` bytes: its
/// length, and where its trailer (stamp, then the length) sits from the object's start, in the
/// last 16 bytes of the run. A trailer's position depends only on where the run ends, so it
/// holds trailers only: whatever reuses the pages, the page map says whether that page still
/// ends a large run. `None` if no run can be that long.
#[inline]
pub(crate) fn large_run(place: &Placement, shift: u32) -> Option<(usize, usize)> {
    let pages = place.stamp_at.checked_add(16)?.div_ceil(1 << shift);
    let trailer = pages.checked_mul(1 << shift)? - 16;
    Some((pages, trailer))
}

/// Where the stamp of an object placed as `place` in the arena `bytes` sits, from the object's
/// start.
pub(crate) fn stamp_offset(bytes: &[u8], place: &Placement) -> usize {
    if place.is_large() {
        large_run(place, page_shift(bytes)).map_or(usize::MAX, |(_, at)| at)
    } else {
        place.stamp_at
    }
}

/// [`live_at`] for a large object: its address starts a page that heads a large run, the run's
/// last page is the last of a large run, and the trailer there holds `stamp`.
#[inline(never)]
fn live_large_at(bytes: &[u8], off: usize, stamp: u64, place: &Placement) -> bool {
    let shift = page_shift(bytes);
    let Some((pages, trailer)) = large_run(place, shift) else {
        return false;
    };
    let first = off >> shift;
    let page_map = |p: usize| bytes.get(PAGE_MAP + p).copied();
    let ends_run = |p: usize| {
        let tail = p + 1 == bytes.len() >> shift || page_map(p + 1) != Some(kind::LARGE_TAIL);
        tail && matches!(page_map(p), Some(kind::LARGE_HEAD | kind::LARGE_TAIL))
    };
    let fits = off
        .checked_add(trailer + 16)
        .is_some_and(|end| end <= bytes.len());
    if off == 0
        || !fits
        || (bytes.as_ptr() as usize).wrapping_add(off) & ((1 << shift) - 1) != 0
        || page_map(first) != Some(kind::LARGE_HEAD)
        || !ends_run(first + pages - 1)
    {
        return false;
    }
    read_u64(bytes, off + trailer) == Some(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_picks_the_smallest_class_that_fits_object_and_stamp() {
        for size in 0..=CLASS_SIZES[CLASSES - 1] - 8 {
            for align in [1, 2, 4, 8, 16, 32, 64] {
                let p = Placement::of(size, align);
                assert!(!p.is_large(), "size {size} align {align}");
                let slot = CLASS_SIZES[p.class];
                let step = align.max(8);
                assert!(slot >= size + 8 && slot % step == 0);
                assert!(CLASS_SIZES[..p.class]
                    .iter()
                    .all(|&s| s < size + 8 || s % step != 0));
                assert_eq!(p.stamp_at, slot - 8);
                assert_eq!(p.mask, step - 1);
            }
        }
    }

    #[test]
    fn placement_of_large_and_over_aligned_objects() {
        let p = Placement::of(1017, 8);
        assert!(p.is_large());
        assert_eq!(p.stamp_at, 1024);
        let p = Placement::of(24, 128);
        assert!(p.is_large(), "aligned above 64: a page of its own");
        assert_eq!((p.stamp_at, p.mask), (24, 127));
        let p = Placement::of(0, 0);
        assert_eq!((p.size, p.align, p.stamp_at), (0, 1, 0));
        let p = Placement::of(usize::MAX - 3, 8);
        assert!(p.is_large());
        assert_eq!(p.stamp_at, usize::MAX - 16, "saturates instead of wrapping");
    }

    #[test]
    fn slot_index_finds_exactly_the_slots_of_every_class_and_page_size() {
        for shift in PAGE_SHIFTS {
            let page = 1usize << shift;
            for (c, &size) in CLASS_SIZES.iter().enumerate() {
                let n = slots(shift, c);
                assert!(n <= words(shift) * 64 && data_start(shift) + n * size <= page);
                for at in 0..page {
                    let rel = at.wrapping_sub(data_start(shift));
                    let slot = at >= data_start(shift) && rel % size == 0 && rel / size < n;
                    let index = slot_index(at, shift, c);
                    assert_eq!(index < n, slot, "page {page}, class {size}, at {at}");
                    if slot {
                        assert_eq!(index, rel / size);
                    }
                }
            }
        }
    }

    #[test]
    fn geometry_puts_the_first_page_after_the_page_map() {
        let g = Geo::new(12, 1 << 20);
        assert_eq!(g.pages, 256);
        assert_eq!(
            g.first_page, 1,
            "1024 + 256 bytes of metadata fit in one page"
        );
        let g = Geo::new(12, 1 << 30);
        assert_eq!(g.first_page, (1024 + (1 << 18)) / 4096 + 1);
        assert_eq!(g.words(), 8);
        assert_eq!(g.data_start() % MAX_SMALL_ALIGN, 0);
        assert!(g.data_start() >= SLAB_HEADER + 8 * g.words());
    }

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

    /// `pages` zeroed pages, page-aligned like an arena.
    fn zeroed_pages(pages: usize) -> Vec<Aligned> {
        vec![Aligned([0; 65536]); (pages * sys::page_size()).div_ceil(65536)]
    }

    #[derive(Clone, Copy, Pod, Zeroable)]
    #[repr(C, align(65536))]
    struct Aligned([u8; 65536]);

    #[test]
    fn live_at_checks_range_alignment_page_kind_and_stamp() {
        let page = sys::page_size();
        let mut blocks = zeroed_pages(2);
        let b: &mut [u8] = &mut bytemuck::cast_slice_mut(&mut blocks)[..2 * page];
        let place = Placement::of(16, 8);
        let at = page + data_start(page.trailing_zeros());
        b[at + place.stamp_at..at + place.stamp_at + 8].copy_from_slice(&7u64.to_ne_bytes());
        assert!(!live_at(b, at, 7, &place), "page 1 is not a slab");
        b[PAGE_MAP + 1] = kind::SLAB + place.class as u8 + 1;
        assert!(!live_at(b, at, 7, &place), "a slab of another class");
        b[PAGE_MAP + 1] = kind::SLAB + place.class as u8;
        assert!(live_at(b, at, 7, &place));
        assert!(!live_at(b, at, 9, &place));
        assert!(!live_at(b, at + 4, 7, &place), "misaligned");
        assert!(!live_at(b, 0, 0, &place), "offset 0 is never an object");
        assert!(!live_at(b, b.len() - 8, 0, &place), "stamp past the end");
        assert!(!live_at(b, usize::MAX - 7, 7, &place));
        assert!(!live_at(&b[..16], 8, 0, &place));
    }

    #[test]
    fn in_a_slab_only_a_slots_start_is_an_object() {
        let shift = sys::page_size().trailing_zeros();
        let page = 1 << shift;
        let mut blocks = zeroed_pages(3);
        let b: &mut [u8] = &mut bytemuck::cast_slice_mut(&mut blocks)[..3 * page];
        // 16-byte objects in 24-byte slots, 8-aligned: a slot every third aligned offset.
        let place = Placement::of(16, 8);
        let size = place.stamp_at + 8;
        b[PAGE_MAP + 1] = kind::SLAB + place.class as u8;
        b[PAGE_MAP + 2] = kind::SLAB + place.class as u8;
        // Every aligned word of the slab page and the next one's head holds the stamp, so only
        // the position can refuse an offset.
        for w in b[page..].chunks_exact_mut(8) {
            w.copy_from_slice(&5u64.to_ne_bytes());
        }
        let first = data_start(shift);
        let slots = (page - first) / size;
        for at in (0..page).step_by(8) {
            let slot = at >= first && (at - first) % size == 0 && (at - first) / size < slots;
            assert_eq!(live_at(b, page + at, 5, &place), slot, "at {at}");
            assert_eq!(off_slot(b, page + at, &place), !slot, "at {at}");
        }
        assert!(
            !off_slot(b, page + 8, &Placement::of(8, 8)),
            "another class"
        );
    }

    #[test]
    fn a_large_objects_stamp_is_where_its_run_ends() {
        let shift = sys::page_size().trailing_zeros();
        let page = 1 << shift;
        let place = Placement::of(page + 100, 8);
        let (pages, trailer) = large_run(&place, shift).unwrap();
        assert_eq!((pages, trailer), (2, 2 * page - 16));
        // Pages 0..6: the object's run is pages 2 and 3.
        let mut blocks = zeroed_pages(6);
        let b: &mut [u8] = &mut bytemuck::cast_slice_mut(&mut blocks)[..6 * page];
        b[2 * page + trailer..2 * page + trailer + 8].copy_from_slice(&7u64.to_ne_bytes());
        assert!(!live_at(b, 2 * page, 7, &place), "no run in the page map");
        b[PAGE_MAP + 2] = kind::LARGE_HEAD;
        b[PAGE_MAP + 3] = kind::LARGE_TAIL;
        assert!(live_at(b, 2 * page, 7, &place));
        assert!(!live_at(b, 2 * page, 9, &place));
        // A longer run there now: the old trailer's place is inside its object.
        b[PAGE_MAP + 4] = kind::LARGE_TAIL;
        assert!(!live_at(b, 2 * page, 7, &place));
        b[PAGE_MAP + 4] = kind::SLAB;
        assert!(live_at(b, 2 * page, 7, &place));
        b[PAGE_MAP + 2] = kind::FREE_HEAD;
        assert!(!live_at(b, 2 * page, 7, &place), "not the head of a run");
    }
}
