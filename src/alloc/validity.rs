//! Whether `(offset, stamp)` names a live object: the check behind `get` (and the first one
//! `free` makes), on an arena's or a snapshot's bytes. It reads no header field it would have
//! to validate first, so it is a handful of compares and two loads.

use super::geometry::{large_run, slot_index, slots, Placement};
use super::header::{page_shift, read_u64};
use super::kinds::{self, PAGE_MAP};

/// Whether the live object at `off` placed as `place` has stamp `stamp`: the whole validity
/// check behind `get`. For a small object: one compare for range, one load and compare of the
/// page's kind, one compare for the position in the page, then one load and compare of the
/// stamp.
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
/// Alignment is that of the slot's offset (slots start at multiples of the alignment from a
/// page's start) and of `bytes`' start, so that a reference made from a `true` result is aligned
/// whatever the alignment of `bytes` (page-aligned in every arena and view, but nothing here
/// relies on it).
#[inline(always)]
pub(crate) fn live_at(bytes: &[u8], off: usize, stamp: u64, place: &Placement) -> bool {
    if place.is_large() {
        return live_large_at(bytes, off, stamp, place);
    }
    // The object and its stamp end inside `bytes`. The page map byte of `off`'s page lies inside
    // `bytes` once `bytes` holds the page map's first page and one byte per page of `bytes` after
    // it (true of every arena: at least a page). All but the first compare are the same for
    // every `off` in `bytes`.
    let Some(last) = bytes.len().checked_sub(place.stamp_at + 8) else {
        return false;
    };
    if off > last || bytes.len() < 2 * PAGE_MAP || bytes.as_ptr() as usize & place.mask != 0 {
        return false;
    }
    let shift = page_shift(bytes);
    // SAFETY: `off < bytes.len()` (checked above) and `page_shift` is at least 9, so the index
    // is below `PAGE_MAP + bytes.len() / 512 <= bytes.len()` for `bytes.len() >= 2 * PAGE_MAP`.
    let kind = unsafe { *bytes.as_ptr().add(PAGE_MAP + (off >> shift)) };
    // The position also refuses offset 0 (the header's page is no slab's) and misaligned
    // offsets. On x86-64 the shift and, for a typed access, the class are constants, so the slot
    // count is one too, and this is three instructions and one compare.
    let index = slot_index(off, shift, place.class);
    if (kind != kinds::slab(place.class)) | (index >= slots(shift, place.class)) {
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
        && kinds::at(bytes, off >> shift) == kinds::slab(place.class)
        && slot_index(off, shift, place.class) >= slots(shift, place.class)
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
        let tail = p + 1 == bytes.len() >> shift || page_map(p + 1) != Some(kinds::LARGE_TAIL);
        tail && matches!(page_map(p), Some(kinds::LARGE_HEAD | kinds::LARGE_TAIL))
    };
    let fits = off
        .checked_add(trailer + 16)
        .is_some_and(|end| end <= bytes.len());
    if off == 0
        || !fits
        || (bytes.as_ptr() as usize).wrapping_add(off) & ((1 << shift) - 1) != 0
        || page_map(first) != Some(kinds::LARGE_HEAD)
        || !ends_run(first + pages - 1)
    {
        return false;
    }
    read_u64(bytes, off + trailer) == Some(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::geometry::data_start;
    use crate::sys;
    use bytemuck::{Pod, Zeroable};

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
        b[PAGE_MAP + 1] = kinds::slab(place.class) + 1;
        assert!(!live_at(b, at, 7, &place), "a slab of another class");
        b[PAGE_MAP + 1] = kinds::slab(place.class);
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
        b[PAGE_MAP + 1] = kinds::slab(place.class);
        b[PAGE_MAP + 2] = kinds::slab(place.class);
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
        b[PAGE_MAP + 2] = kinds::LARGE_HEAD;
        b[PAGE_MAP + 3] = kinds::LARGE_TAIL;
        assert!(live_at(b, 2 * page, 7, &place));
        assert!(!live_at(b, 2 * page, 9, &place));
        // A longer run there now: the old trailer's place is inside its object.
        b[PAGE_MAP + 4] = kinds::LARGE_TAIL;
        assert!(!live_at(b, 2 * page, 7, &place));
        b[PAGE_MAP + 4] = kinds::SLAB;
        assert!(live_at(b, 2 * page, 7, &place));
        b[PAGE_MAP + 2] = kinds::FREE_HEAD;
        assert!(!live_at(b, 2 * page, 7, &place), "not the head of a run");
    }
}
