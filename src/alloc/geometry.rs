//! Where things go: the size classes, where a type's objects go ([`Placement`]), the arena's
//! geometry ([`Geo`]), and the arithmetic of positions inside a slab page and a large run. Page
//! sizes are powers of two, so all of it is shifts and multiplications: nothing here divides on
//! a fast path.

use super::kinds::PAGE_MAP;

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

/// Page sizes the header may record: 512 bytes to 64 KiB (slot indices rely on the upper bound).
pub(super) const PAGE_SHIFTS: std::ops::RangeInclusive<u32> = 9..=16;

/// Bytes of a slab's header (`header::SlabHeader`), before its bitmap.
pub(super) const SLAB_HEADER: usize = 32;

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

/// The arena's geometry, from a validated header.
#[derive(Clone, Copy)]
pub(super) struct Geo {
    pub(super) shift: u32,
    pub(super) pages: usize,
    pub(super) first_page: usize,
    pub(super) top: usize,
}

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

    /// The index of the slot of class `c` that starts at offset `off` of a slab: below
    /// `slots(c)` exactly when a slot starts there (see [`slot_index`]).
    #[inline(always)]
    pub(super) fn slot_index(&self, off: usize, c: usize) -> usize {
        slot_index(off, self.shift, c)
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

/// Per class, the slot size `d` as `o << t` with `o` odd: `o`'s inverse modulo 2^32, and `t`.
/// Modulo `2^w`, for a multiple `k * d` of `d`, `k * d * inverse` is `k << t`, and for any other
/// number it is not a multiple of `2^t` or is `k << t` with `k` at least `2^w / d`: the usual
/// test for a zero remainder by a constant, which tells both whether a slot starts at an offset
/// and which one.
const SLOT_DIVISORS: [(u32, u32); CLASSES] = {
    let mut r = [(0, 0); CLASSES];
    let mut c = 0;
    while c < CLASSES {
        let t = CLASS_SIZES[c].trailing_zeros();
        let odd = (CLASS_SIZES[c] >> t) as u32;
        // Newton's iteration doubles the correct low bits: 3 (any odd `o` is its own inverse
        // modulo 8), then 6, 12, 24, 48.
        let mut inverse = odd;
        let mut i = 0;
        while i < 4 {
            inverse = inverse.wrapping_mul(2u32.wrapping_sub(odd.wrapping_mul(inverse)));
            i += 1;
        }
        assert!(odd.wrapping_mul(inverse) == 1);
        r[c] = (inverse, t);
        c += 1;
    }
    r
};

/// The index of the slot of class `c` that starts at offset `off` of a slab in pages of
/// `1 << shift` bytes, if one starts there; otherwise a number of at least `slots(shift, c)`
/// (for an offset before the page's first slot, inside a slot or past the last slot's start).
///
/// The test of `SLOT_DIVISORS` modulo the page size, `2^shift`, in the top `shift` bits of a
/// word, where the multiplication drops the offset's page and the rotation brings `k` to the
/// bottom and the low `t` bits, zero for a multiple of `d`, to the top. An offset before the
/// first slot wraps to the page's end, past the last slot's start. On x86-64, for a typed
/// access, this is a subtraction, a multiplication and a rotation.
#[inline(always)]
pub(super) fn slot_index(off: usize, shift: u32, c: usize) -> usize {
    let (inverse, twos) = SLOT_DIVISORS[c];
    let rel = (off as u32).wrapping_sub(data_start(shift) as u32);
    let top = rel.wrapping_mul(inverse << (32 - shift));
    // `wrapping_sub`: a class larger than the page has no slots, whatever the rotation.
    top.rotate_left(shift.wrapping_sub(twos)) as usize
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
                    for off in [at, at + page, at + (1 << 30)] {
                        let index = slot_index(off, shift, c);
                        assert_eq!(index < n, slot, "page {page}, class {size}, at {off}");
                        if slot {
                            assert_eq!(index, rel / size);
                        }
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
}
