//! The typed allocator. Every byte of its state lives inside the arena, so whatever the core
//! does to the arena's pages (snapshot, restore, `to_arena`, proxy) it does to the allocator too:
//! restoring a snapshot brings back the allocator as it was, and objects allocated since are free
//! again without any bookkeeping outside the arena.
//!
//! # Layout
//!
//! ```text
//! offset 0            Header: magic, geometry, top, free-run bins, per-class slab lists, root
//! offset 1024         page map: one byte per page of the arena (its kind, see `Kind`)
//! first_page ..top    slabs, large objects and free runs, in pages
//! top ..capacity      never used since the last time top was lowered
//! ```
//!
//! - A *slab* is one page holding objects of one size class: a 32-byte header (class, counts,
//!   links of the class's list of partly free slabs), a bitmap of used slots, then the slots.
//!   A slot is the object followed by its 8-byte *stamp*, so an allocation writes one page: the
//!   slab's bitmap and the slot sit on the same page.
//! - A *large object* (over 1016 bytes, or aligned above 64) is a run of whole pages starting
//!   with the object; its trailer (stamp, page count) follows the object.
//! - A *free run* of pages starts with its list links and ends with its length, so freeing pages
//!   merges them with free neighbours (found through the page map) in O(1). Runs are kept in 64
//!   bins: one per length up to 32 pages, one per power of two above.
//!
//! One allocation or free writes a bounded number of pages (the slab's page, and on the rarer
//! paths the header, the page-map page and the pages of list neighbours), so a snapshot after
//! `k` allocations freezes `O(k)` pages, not the heap.
//!
//! # Stamps
//!
//! A live slot's stamp is odd and unique in the process (a counter outside the arena, so that a
//! state restored and allocated from again never repeats a stamp of a state it left); freeing
//! sets it to `stamp + 1`, and a slot never used holds zero. A [`Ptr`](crate::Ptr) carries the
//! stamp it was given, and `get` compares it with the one in the arena: one load and one compare.
//! Stamps are unique within a process; a child made with `fork()` continues the parent's counter.
//!
//! # Raw writes
//!
//! Nothing is trusted: every field read from the arena is range-checked before use, so raw
//! writes into allocator-owned memory can make operations fail (with an error naming the
//! corruption) but never cause undefined behaviour.

use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::ptr;
use crate::sys;
use bytemuck::{Pod, Zeroable};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

const MAGIC: u64 = u64::from_le_bytes(*b"cowalloc");
const VERSION: u32 = 1;

/// Where the page map starts; the header fits below it.
const PAGE_MAP: usize = 1024;

/// Slot sizes (object and stamp) of the size classes.
const CLASS_SIZES: [usize; 24] = [
    8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640,
    768, 896, 1024,
];
const CLASSES: usize = CLASS_SIZES.len();

/// Objects aligned above this are large; slab slots start on a 64-byte boundary.
const MAX_SMALL_ALIGN: usize = 64;

/// `Placement::class` of a large object.
const LARGE: usize = usize::MAX;

/// Free-run bins: one per length `1..=EXACT_BINS` pages, then one per power of two.
const BINS: usize = 64;
const EXACT_BINS: usize = 32;

/// First-fit candidates examined in a power-of-two bin before a larger bin is split.
const BIN_SCAN: usize = 16;

/// Page kinds in the page map.
mod kind {
    pub(super) const LARGE_HEAD: u8 = 1;
    pub(super) const LARGE_TAIL: u8 = 2;
    pub(super) const FREE_HEAD: u8 = 3;
    pub(super) const FREE_LAST: u8 = 4;
    /// A slab of class `c` is `SLAB + c`.
    pub(super) const SLAB: u8 = 16;
}

/// The allocator's header, at offset 0 of the arena. All zeros means "not initialized yet".
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Header {
    magic: u64,
    version: u32,
    page_shift: u32,
    capacity: u64,
    /// First page the allocator hands out (after the header and page map).
    first_page: u64,
    /// Pages at and above `top` are unused.
    top: u64,
    /// Bit `b` is set iff `bins[b]` is non-empty.
    free_mask: u64,
    root_offset: u64,
    root_stamp: u64,
    root_type: u64,
    /// First page of each bin's list of free runs (0: empty).
    bins: [u32; BINS],
    classes: [ClassLists; CLASSES],
}

/// Invariant: `current` (0: none) and the slabs of `partial` are slabs of this class; a slab is
/// on `partial` iff its `listed` flag is set; full slabs other than `current` are on no list.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ClassLists {
    current: u32,
    partial: u32,
}

const HEADER_SIZE: usize = size_of::<Header>();
const _: () = assert!(HEADER_SIZE <= PAGE_MAP);

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SlabHeader {
    class: u32,
    used: u32,
    slots: u32,
    listed: u32,
    prev: u32,
    next: u32,
    _reserved: [u32; 2],
}

const SLAB_HEADER: usize = size_of::<SlabHeader>();
/// Where `SlabHeader::used` sits in a slab, for the fast paths' field writes.
const USED: usize = std::mem::offset_of!(SlabHeader, used);

/// The links at the start of a free run; its length is also stored in the run's last 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct FreeRun {
    pages: u64,
    prev: u32,
    next: u32,
}

/// Where an object of a given size and alignment lives, fixed per type at compile time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Placement {
    pub(crate) size: usize,
    pub(crate) align: usize,
    /// Size class, or `LARGE`.
    class: usize,
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
    fn is_large(&self) -> bool {
        self.class == LARGE
    }
}

/// The arena's geometry, from a validated header. Page sizes are powers of two, so everything
/// here is shifts: the fast paths divide nothing.
#[derive(Clone, Copy)]
struct Geo {
    shift: u32,
    pages: usize,
    first_page: usize,
    top: usize,
}

/// Page sizes the header may record: 512 bytes to 64 KiB (slot indices rely on the upper bound).
const PAGE_SHIFTS: std::ops::RangeInclusive<u32> = 9..=16;

impl Geo {
    #[inline]
    fn new(shift: u32, capacity: usize) -> Geo {
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
    fn page(&self) -> usize {
        1 << self.shift
    }

    /// Bitmap words of a slab: one bit per 8 bytes of page.
    #[inline]
    fn words(&self) -> usize {
        (self.page() >> 9).max(1)
    }

    /// Where a slab's slots start.
    #[inline]
    fn data_start(&self) -> usize {
        // `next_multiple_of`, spelled with a mask because it branches otherwise.
        (SLAB_HEADER + 8 * self.words() + MAX_SMALL_ALIGN - 1) & !(MAX_SMALL_ALIGN - 1)
    }

    #[inline]
    fn page_at(&self, p: usize) -> usize {
        p << self.shift
    }

    /// Whether `p` is a page the allocator has handed out or holds as free.
    #[inline]
    fn in_use(&self, p: usize) -> bool {
        p >= self.first_page && p < self.top
    }
}

/// `ceil(2^32 / size)` per class: `(rel * r) >> 32 == rel / size` for every `rel < 2^16`, which
/// `PAGE_SHIFTS` guarantees for offsets within a page.
const RECIPROCALS: [u64; CLASSES] = {
    let mut r = [0; CLASSES];
    let mut c = 0;
    while c < CLASSES {
        r[c] = (1u64 << 32).div_ceil(CLASS_SIZES[c] as u64);
        c += 1;
    }
    r
};

fn corrupt() -> Error {
    Error::Corrupt(
        "the typed allocator's metadata fails its checks (raw writes into memory it owns?)",
    )
}

/// Stamps a thread takes from the global counter at a time.
const STAMP_BLOCK: u64 = 1 << 16;

thread_local! {
    /// The thread's next stamp and the end of its block; equal when the block is used up.
    static STAMPS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// The next stamp: odd and never repeated within the process. A thread takes blocks of stamps
/// from a global counter so that the common case is a thread-local increment.
///
/// Never inlined: in another crate (where the typed fast paths are inlined) the thread-local's
/// accessor is opaque and costs two calls, one of them indirect; here it is one direct call.
#[inline(never)]
fn fresh_stamp() -> u64 {
    STAMPS.with(|r| {
        let (next, end) = r.get();
        if next == end {
            return next_stamp_block(r);
        }
        r.set((next + 2, end));
        next
    })
}

/// The next block of stamps to hand out.
static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);

/// Moves a `fork()` child to stamps its parent (and its siblings) do not use: the child starts
/// with copies of the parent's counters, and a state it sends back must not repeat a stamp the
/// parent hands out meanwhile. The child draws from a block range above 2^40 picked from its pid
/// and the time, so two processes collide only with negligible probability.
pub(crate) fn after_fork_in_child() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = (u64::from(std::process::id()) << 32) ^ nanos ^ NEXT_BLOCK.load(Ordering::Relaxed);
    // splitmix64 finalizer: spreads nearby pids and times over the whole range.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    NEXT_BLOCK.store((1 << 40) | (x & ((1 << 40) - 1)), Ordering::Relaxed);
    STAMPS.with(|r| r.set((0, 0)));
}

/// Takes a new block of stamps for this thread and returns its first.
#[cold]
#[inline(never)]
fn next_stamp_block(r: &Cell<(u64, u64)>) -> u64 {
    let first = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed) * STAMP_BLOCK;
    let (next, end) = ((first << 1) | 1, ((first + STAMP_BLOCK) << 1) | 1);
    r.set((next + 2, end));
    next
}

#[inline]
fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_ne_bytes(b.try_into().ok()?))
}

/// The `T` at `bytes[at..]`, read without a bounds check: for the fast paths, whose checks of
/// the allocator's metadata already place every access inside a slab page.
///
/// # Safety
/// `at + size_of::<T>() <= bytes.len()`.
#[inline(always)]
unsafe fn read_at<T: Pod>(bytes: &[u8], at: usize) -> T {
    debug_assert!(at + size_of::<T>() <= bytes.len());
    // SAFETY: in bounds (forwarded to the caller); every bit pattern is a `T` (Pod).
    unsafe { bytes.as_ptr().add(at).cast::<T>().read_unaligned() }
}

/// Writes `v` at `bytes[at..]` without a bounds check (see `read_at`).
///
/// # Safety
/// `at + size_of::<T>() <= bytes.len()`.
#[inline(always)]
unsafe fn write_at<T: Pod>(bytes: &mut [u8], at: usize, v: T) {
    debug_assert!(at + size_of::<T>() <= bytes.len());
    // SAFETY: in bounds (forwarded to the caller); `bytes` is plain memory.
    unsafe { bytes.as_mut_ptr().add(at).cast::<T>().write_unaligned(v) }
}

#[inline]
fn header(bytes: &[u8]) -> &Header {
    bytemuck::from_bytes(&bytes[..HEADER_SIZE])
}

fn header_mut(arena: &mut Arena) -> Result<&mut Header> {
    Ok(bytemuck::from_bytes_mut(arena.bytes_mut(0..HEADER_SIZE)?))
}

/// What the header says.
enum State {
    /// All zeros: no typed use yet.
    Uninit,
    Ready(Geo),
    Corrupt,
}

#[inline(always)]
fn state(bytes: &[u8]) -> State {
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
fn geometry(bytes: &[u8]) -> Result<Option<Geo>> {
    match state(bytes) {
        State::Uninit => Ok(None),
        State::Ready(g) => Ok(Some(g)),
        State::Corrupt => Err(corrupt()),
    }
}

/// The header fields `state` checks, read on their own (`Header` is too large to copy).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct HeaderGeo {
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
fn ready(arena: &Arena) -> Option<Geo> {
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
fn current_slab(bytes: &[u8], c: usize) -> Option<usize> {
    let at = std::mem::offset_of!(Header, classes) + c * size_of::<ClassLists>();
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_ne_bytes(b.try_into().ok()?) as usize)
}

/// The geometry, initializing the allocator on first use.
#[inline(always)]
fn ensure(arena: &mut Arena) -> Result<Geo> {
    match state(arena.as_bytes()) {
        State::Ready(g) => Ok(g),
        State::Uninit => init(arena),
        State::Corrupt => Err(corrupt()),
    }
}

#[cold]
fn init(arena: &mut Arena) -> Result<Geo> {
    let g = Geo::new(sys::page_size().trailing_zeros(), arena.capacity());
    let meta = PAGE_MAP + g.pages;
    if arena.as_bytes()[..meta].iter().any(|&b| b != 0) {
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

#[inline]
fn page_kind(bytes: &[u8], p: usize) -> u8 {
    bytes.get(PAGE_MAP + p).copied().unwrap_or(0)
}

fn set_kinds(arena: &mut Arena, pages: std::ops::Range<usize>, k: u8) -> Result<()> {
    arena
        .bytes_mut(PAGE_MAP + pages.start..PAGE_MAP + pages.end)?
        .fill(k);
    Ok(())
}

fn out_of_memory(arena: &Arena, place: Placement) -> Error {
    Error::OutOfMemory {
        requested: place.size,
        align: place.align,
        capacity: arena.capacity(),
    }
}

/// Allocates room for an object placed as `place`, copies `init` (at most `place.size` bytes)
/// to its start, and returns its offset and stamp.
///
/// `place` is a reference so that the slow path's argument is a pointer to a constant, not a
/// copy built on the stack before every fast path.
#[inline(always)]
pub(crate) fn alloc(arena: &mut Arena, place: &Placement, init: &[u8]) -> Result<(usize, u64)> {
    debug_assert!(init.len() <= place.size);
    if !place.is_large() {
        if let Some(done) = alloc_fast(arena, place, init) {
            return Ok(done);
        }
    }
    alloc_slow(arena, place, init)
}

/// The common allocation: a free slot in the current slab of the object's class. It makes the
/// same checks as `alloc_small`, but a failed one returns `None` having written nothing, and
/// `alloc_slow` starts over (and names the error). Inlined into every typed `alloc`, where the
/// placement is a constant, so that it costs about what the writes to the slab cost.
#[inline(always)]
fn alloc_fast(arena: &mut Arena, place: &Placement, init: &[u8]) -> Option<(usize, u64)> {
    // Taken first, while few values are live across the call; one wasted on a fallback to the
    // slow path costs nothing.
    let stamp = fresh_stamp();
    let g = ready(arena)?;
    let c = place.class;
    let size = *CLASS_SIZES.get(c)?;
    let bytes = arena.as_bytes();
    let s = current_slab(bytes, c)?;
    // `&`, not `&&`: one branch for the lot.
    if !(g.in_use(s) & (page_kind(bytes, s) == kind::SLAB + c as u8)) {
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

/// Everything `alloc_fast` leaves: initialization, a full current slab, large objects, errors.
#[inline(never)]
fn alloc_slow(arena: &mut Arena, place: &Placement, init: &[u8]) -> Result<(usize, u64)> {
    let place = *place;
    let g = ensure(arena)?;
    if place.is_large() {
        alloc_large(arena, g, place, init)
    } else {
        alloc_small(arena, g, place, init)
    }
}

fn alloc_small(arena: &mut Arena, g: Geo, place: Placement, init: &[u8]) -> Result<(usize, u64)> {
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
fn slab_has_room(bytes: &[u8], g: Geo, s: usize, c: usize) -> bool {
    slab_with_room(bytes, g, s, c).is_some()
}

/// The header of `s` if it is a slab of class `c` with a free slot.
#[inline(always)]
fn slab_with_room(bytes: &[u8], g: Geo, s: usize, c: usize) -> Option<SlabHeader> {
    if !g.in_use(s) || page_kind(bytes, s) != kind::SLAB + c as u8 {
        return None;
    }
    let h = slab_header(bytes, g, s);
    (h.class as usize == c && h.used < h.slots).then_some(h)
}

/// Makes a slab with a free slot the class's current one: a partly free slab if there is one,
/// else a new slab.
#[cold]
#[inline(never)]
fn refill(arena: &mut Arena, g: Geo, place: Placement) -> Result<usize> {
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

fn init_slab(arena: &mut Arena, g: Geo, s: usize, c: usize) -> Result<()> {
    let slots = ((g.page() - g.data_start()) / CLASS_SIZES[c]).min(g.words() * 64);
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
    set_kinds(arena, s..s + 1, kind::SLAB + c as u8)
}

/// A copy of the header of slab `s` (an unaligned read: `s` is page-aligned, but checking that
/// would cost a branch on the fast paths).
#[inline(always)]
fn slab_header(bytes: &[u8], g: Geo, s: usize) -> SlabHeader {
    bytemuck::pod_read_unaligned(&bytes[g.page_at(s)..g.page_at(s) + SLAB_HEADER])
}

fn slab_header_mut(arena: &mut Arena, g: Geo, s: usize) -> Result<&mut SlabHeader> {
    let base = g.page_at(s);
    Ok(bytemuck::from_bytes_mut(
        arena.bytes_mut(base..base + SLAB_HEADER)?,
    ))
}

/// Checks that `s` is a slab of class `c` (a list link read from the arena).
fn check_slab(bytes: &[u8], g: Geo, s: usize, c: usize) -> Result<()> {
    if g.in_use(s)
        && page_kind(bytes, s) == kind::SLAB + c as u8
        && slab_header(bytes, g, s).class as usize == c
    {
        Ok(())
    } else {
        Err(corrupt())
    }
}

fn push_partial(arena: &mut Arena, g: Geo, c: usize, s: usize) -> Result<()> {
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

fn unlink_partial(arena: &mut Arena, g: Geo, c: usize, s: usize) -> Result<()> {
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

fn large_pages(g: Geo, place: Placement) -> Option<usize> {
    Some(place.stamp_at.checked_add(16)?.div_ceil(g.page()))
}

#[inline(never)]
fn alloc_large(arena: &mut Arena, g: Geo, place: Placement, init: &[u8]) -> Result<(usize, u64)> {
    if place.align > g.page() {
        return Err(Error::Unsupported(
            "objects aligned above the page size cannot be allocated",
        ));
    }
    let n = large_pages(g, place)
        .filter(|&n| n <= g.pages)
        .ok_or_else(|| out_of_memory(arena, place))?;
    let s = alloc_pages(arena, g, n).ok_or_else(|| out_of_memory(arena, place))??;
    set_kinds(arena, s..s + 1, kind::LARGE_HEAD)?;
    set_kinds(arena, s + 1..s + n, kind::LARGE_TAIL)?;
    let off = g.page_at(s);
    let stamp = fresh_stamp();
    let trailer = arena.bytes_mut(off + place.stamp_at..off + place.stamp_at + 16)?;
    trailer[..8].copy_from_slice(&stamp.to_ne_bytes());
    trailer[8..].copy_from_slice(&(n as u64).to_ne_bytes());
    if !init.is_empty() {
        arena
            .bytes_mut(off..off + init.len())?
            .copy_from_slice(init);
    }
    Ok((off, stamp))
}

fn bin_of(pages: usize) -> usize {
    if pages <= EXACT_BINS {
        pages - 1
    } else {
        (EXACT_BINS + (pages.ilog2() as usize - EXACT_BINS.ilog2() as usize)).min(BINS - 1)
    }
}

fn free_run(bytes: &[u8], g: Geo, s: usize) -> Result<FreeRun> {
    if !g.in_use(s) || page_kind(bytes, s) != kind::FREE_HEAD {
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

fn free_run_mut(arena: &mut Arena, g: Geo, s: usize) -> Result<&mut FreeRun> {
    let base = g.page_at(s);
    Ok(bytemuck::from_bytes_mut(
        arena.bytes_mut(base..base + size_of::<FreeRun>())?,
    ))
}

/// Takes `n` pages: from a free run if one is long enough, else from `top`. `None` when the
/// arena has no room.
fn alloc_pages(arena: &mut Arena, g: Geo, n: usize) -> Option<Result<usize>> {
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
fn find_run(bytes: &[u8], g: Geo, n: usize) -> Result<Option<(usize, usize)>> {
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
fn take_run(arena: &mut Arena, g: Geo, s: usize, len: usize, n: usize) -> Result<()> {
    unlink_run(arena, g, s)?;
    if len > n {
        push_run(arena, g, s + n, len - n)?;
    }
    Ok(())
}

fn unlink_run(arena: &mut Arena, g: Geo, s: usize) -> Result<()> {
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
fn push_run(arena: &mut Arena, g: Geo, s: usize, n: usize) -> Result<()> {
    let b = bin_of(n);
    let head = header(arena.as_bytes()).bins[b] as usize;
    if head != 0 {
        free_run(arena.as_bytes(), g, head)?;
        free_run_mut(arena, g, head)?.prev = s as u32;
    }
    *free_run_mut(arena, g, s)? = FreeRun {
        pages: n as u64,
        prev: 0,
        next: head as u32,
    };
    let end = g.page_at(s + n);
    arena
        .bytes_mut(end - 8..end)?
        .copy_from_slice(&(n as u64).to_ne_bytes());
    set_kinds(arena, s..s + 1, kind::FREE_HEAD)?;
    if n > 1 {
        set_kinds(arena, s + n - 1..s + n, kind::FREE_LAST)?;
    }
    let h = header_mut(arena)?;
    h.bins[b] = s as u32;
    h.free_mask |= 1 << b;
    Ok(())
}

/// Returns `[s, s + n)` to the free pages, merged with free neighbours; pages that end at `top`
/// lower it instead.
fn free_pages(arena: &mut Arena, g: Geo, mut s: usize, mut n: usize) -> Result<()> {
    let bytes = arena.as_bytes();
    if s > g.first_page {
        let k = page_kind(bytes, s - 1);
        if k == kind::FREE_HEAD || k == kind::FREE_LAST {
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
        header_mut(arena)?.top = s as u64;
        return Ok(());
    }
    if page_kind(arena.as_bytes(), end) == kind::FREE_HEAD {
        let len = free_run(arena.as_bytes(), g, end)?.pages as usize;
        unlink_run(arena, g, end)?;
        n += len;
        if s + n == g.top {
            header_mut(arena)?.top = s as u64;
            return Ok(());
        }
    }
    push_run(arena, g, s, n)
}

/// Frees the object at `offset` with `stamp`, placed as `place`, after checking that it is live.
#[inline(always)]
pub(crate) fn free(
    arena: &mut Arena,
    offset: usize,
    stamp: u64,
    place: &Placement,
    type_name: &str,
) -> Result<()> {
    if !place.is_large() {
        match free_fast(arena, offset, stamp, place) {
            FreeFast::Done => return Ok(()),
            FreeFast::Relist { g, s, used, listed } => {
                return relist(arena, g, place.class, s, used, listed)
            }
            FreeFast::Slow => {}
        }
    }
    free_slow(arena, offset, stamp, place, type_name)
}

/// What `free_fast` did.
enum FreeFast {
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
fn free_fast(arena: &mut Arena, offset: usize, stamp: u64, place: &Placement) -> FreeFast {
    free_fast_or_none(arena, offset, stamp, place).unwrap_or(FreeFast::Slow)
}

#[inline(always)]
fn free_fast_or_none(
    arena: &mut Arena,
    offset: usize,
    stamp: u64,
    place: &Placement,
) -> Option<FreeFast> {
    let g = ready(arena)?;
    let c = place.class;
    let size = *CLASS_SIZES.get(c)?;
    let bytes = arena.as_bytes();
    if stamp & 1 == 0 || !ptr::live_at(bytes, offset, stamp, place) {
        return None;
    }
    let s = offset >> g.shift;
    if !(g.in_use(s) & (page_kind(bytes, s) == kind::SLAB + c as u8)) {
        return None;
    }
    let base = g.page_at(s);
    // SAFETY: as in `alloc_fast`: `s < top <= pages`, and the header is in the first 512 bytes.
    let head: SlabHeader = unsafe { read_at(bytes, base) };
    let rel = (offset - base).wrapping_sub(g.data_start());
    let index = ((rel as u64).wrapping_mul(RECIPROCALS[c]) >> 32) as usize;
    // `|`, not `||`: one branch for the lot; `rel < page()` keeps the sums below from wrapping.
    if (rel >= g.page())
        | (index * size != rel)
        | (g.data_start() + rel + size > g.page())
        | (head.class as usize != c)
        | (index >= head.slots as usize)
        | (index >= g.words() * 64)
        | (head.used == 0)
    {
        return None;
    }
    let word_at = SLAB_HEADER + 8 * (index / 64);
    // SAFETY: page `s` lies inside `bytes`, and `index < words * 64`, so the word ends by
    // `data_start() <= page()`.
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
    // `data_start()`, the slot (whose last 8 bytes are the stamp) by `data_start() + rel + size
    // <= page()`, both checked above.
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

/// Everything `free_fast` leaves: large objects, and invalid pointers and corruption, whose
/// errors it names.
#[inline(never)]
fn free_slow(
    arena: &mut Arena,
    offset: usize,
    stamp: u64,
    place: &Placement,
    type_name: &str,
) -> Result<()> {
    let place = *place;
    let bytes = arena.as_bytes();
    let g = match state(bytes) {
        State::Ready(g) => g,
        State::Uninit => return Err(explain(bytes, offset, stamp, place, type_name)),
        State::Corrupt => return Err(corrupt()),
    };
    let live = read_u64(bytes, offset.saturating_add(place.stamp_at));
    if offset & place.mask != 0 || live != Some(stamp) || stamp & 1 == 0 {
        return Err(explain(bytes, offset, stamp, place, type_name));
    }
    let s = offset >> g.shift;
    if !g.in_use(s) {
        return Err(not_an_object(offset, type_name, place));
    }
    if place.is_large() {
        return free_large(arena, g, offset, stamp, place, type_name);
    }
    let c = place.class;
    let size = CLASS_SIZES[c];
    let base = g.page_at(s);
    let head = slab_header(bytes, g, s);
    let rel = (offset - base).wrapping_sub(g.data_start());
    let index = ((rel as u64).wrapping_mul(RECIPROCALS[c]) >> 32) as usize;
    if rel >= g.page()
        || index * size != rel
        // The slot must end in the slab (a slot count overwritten with a larger one says more).
        || g.data_start() + rel + size > g.page()
        || page_kind(bytes, s) != kind::SLAB + c as u8
        || head.class as usize != c
        || index >= head.slots as usize
        || index >= g.words() * 64
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
fn relist(arena: &mut Arena, g: Geo, c: usize, s: usize, used: u32, listed: bool) -> Result<()> {
    if used == 0 {
        if listed {
            unlink_partial(arena, g, c, s)?;
        }
        free_pages(arena, g, s, 1)
    } else {
        push_partial(arena, g, c, s)
    }
}

#[inline(never)]
fn free_large(
    arena: &mut Arena,
    g: Geo,
    offset: usize,
    stamp: u64,
    place: Placement,
    type_name: &str,
) -> Result<()> {
    let bytes = arena.as_bytes();
    let s = offset >> g.shift;
    let n = large_pages(g, place).unwrap_or(0);
    let pages = read_u64(bytes, offset + place.stamp_at + 8);
    if offset != g.page_at(s)
        || page_kind(bytes, s) != kind::LARGE_HEAD
        || pages != Some(n as u64)
        || s + n > g.top
    {
        return Err(not_an_object(offset, type_name, place));
    }
    arena
        .bytes_mut(offset + place.stamp_at..offset + place.stamp_at + 8)?
        .copy_from_slice(&(stamp + 1).to_ne_bytes());
    free_pages(arena, g, s, n)
}

/// A live stamp at `offset` that the allocator's metadata does not place an object of this
/// type at (a `Ptr` cast to another type, or forged).
#[cold]
fn not_an_object(offset: usize, type_name: &str, place: Placement) -> Error {
    Error::InvalidPtr {
        offset,
        reason: format!(
            "not the start of an allocated object of {type_name} ({} bytes)",
            place.size
        ),
    }
}

/// The root, if one of type tag `type_tag` is set.
pub(crate) fn root(bytes: &[u8], type_tag: u64) -> Option<(usize, u64)> {
    let h = header(bytes);
    if h.magic != MAGIC || h.root_stamp == 0 || h.root_type != type_tag {
        return None;
    }
    Some((usize::try_from(h.root_offset).ok()?, h.root_stamp))
}

/// Sets (or with a zero stamp clears) the root.
pub(crate) fn set_root(arena: &mut Arena, offset: usize, stamp: u64, type_tag: u64) -> Result<()> {
    if stamp == 0 && geometry(arena.as_bytes())?.is_none() {
        return Ok(());
    }
    ensure(arena)?;
    let h = header_mut(arena)?;
    h.root_offset = offset as u64;
    h.root_stamp = stamp;
    h.root_type = if stamp == 0 { 0 } else { type_tag };
    Ok(())
}

/// Explains why `(offset, stamp)` does not name a live object placed as `place` in `bytes`.
#[cold]
pub(crate) fn explain(
    bytes: &[u8],
    offset: usize,
    stamp: u64,
    place: Placement,
    type_name: &str,
) -> Error {
    let reason = if offset == 0 && stamp == 0 {
        "null pointer".to_string()
    } else if offset
        .checked_add(place.stamp_at + 8)
        .is_none_or(|end| end > bytes.len())
    {
        format!(
            "out of range: an object of {type_name} ({} bytes and its stamp) at this offset does not \
             fit in an arena of {} bytes; is it a Ptr from an arena of another capacity?",
            place.size,
            bytes.len()
        )
    } else if offset & place.mask != 0 {
        format!(
            "misaligned: objects of {type_name} start at multiples of {}",
            place.mask + 1
        )
    } else if header(bytes).magic == 0 {
        "this arena holds no typed objects (its allocator is uninitialized); is it a Ptr from \
         another arena?"
            .to_string()
    } else if stamp & 1 == 0 {
        format!("not a pointer made by alloc (its stamp {stamp:#x} is even)")
    } else {
        let found = read_u64(bytes, offset + place.stamp_at).unwrap_or(0);
        if found == stamp.wrapping_add(1) {
            format!("the object of {type_name} was freed")
        } else if found == 0 {
            "no object was ever allocated here; the Ptr belongs to another arena, or to a state \
             this arena was restored away from"
                .to_string()
        } else if found & 1 == 1 {
            format!(
                "another object lives here now: the {type_name} was freed and its space reused, \
                 or the Ptr belongs to another arena or to a state this arena was restored away from"
            )
        } else {
            format!(
                "no live {type_name} here: it was freed, or the Ptr belongs to another arena or to \
                 a state this arena was restored away from"
            )
        }
    };
    Error::InvalidPtr { offset, reason }
}

/// Allocation statistics, computed by walking the allocator's metadata.
pub(crate) fn stats(bytes: &[u8]) -> Result<Option<AllocStats>> {
    let Some(g) = geometry(bytes)? else {
        return Ok(None);
    };
    let mut u = AllocStats {
        heap_pages: g.top - g.first_page,
        ..AllocStats::default()
    };
    let h = header(bytes);
    for &head in &h.bins {
        let mut s = head as usize;
        let mut guard = g.pages;
        while s != 0 && guard > 0 {
            let run = free_run(bytes, g, s)?;
            u.free_pages += run.pages as usize;
            s = run.next as usize;
            guard -= 1;
        }
    }
    let mut p = g.first_page;
    while p < g.top {
        let k = page_kind(bytes, p);
        if k >= kind::SLAB && ((k - kind::SLAB) as usize) < CLASSES {
            u.slab_pages += 1;
            u.small_objects += slab_header(bytes, g, p).used as usize;
            p += 1;
        } else if k == kind::FREE_HEAD {
            p += free_run(bytes, g, p)?.pages as usize;
        } else if k == kind::LARGE_HEAD {
            u.large_objects += 1;
            let mut q = p + 1;
            while q < g.top && page_kind(bytes, q) == kind::LARGE_TAIL {
                q += 1;
            }
            u.large_pages += q - p;
            p = q;
        } else {
            return Err(corrupt());
        }
    }
    Ok(Some(u))
}

/// How the typed allocator uses an arena (see [`Arena::alloc_stats`](crate::Arena::alloc_stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Pages between the allocator's metadata and its high-water mark (`top`).
    pub heap_pages: usize,
    /// Of those, pages in free runs, ready for reuse.
    pub free_pages: usize,
    /// Pages holding slabs of small objects.
    pub slab_pages: usize,
    /// Pages holding large objects.
    pub large_pages: usize,
    /// Live small objects.
    pub small_objects: usize,
    /// Live large objects.
    pub large_objects: usize,
}
