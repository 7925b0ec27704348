//! Diagnostics: why a handle names no object, and what the allocator holds.

use super::geometry::{Placement, CLASSES};
use super::header::{corrupt, header, page_shift, read_u64};
use super::kinds;
use super::meta::Meta;
use super::validity::{off_slot, stamp_offset};
use crate::error::{Error, InvalidPtrReason, Result};

/// A live stamp at `offset` that the allocator's metadata does not place an object of this
/// type at (a `Ptr` cast to another type, or forged).
#[cold]
pub(super) fn not_an_object(offset: usize, type_name: &'static str, place: Placement) -> Error {
    Error::InvalidPtr {
        offset,
        type_name,
        reason: InvalidPtrReason::NotAnObject { size: place.size },
    }
}

/// Explains why `(offset, stamp)` does not name a live object placed as `place` in `bytes`.
#[cold]
pub(crate) fn explain(
    bytes: &[u8],
    offset: usize,
    stamp: u64,
    place: Placement,
    type_name: &'static str,
) -> Error {
    let reason = if offset == 0 && stamp == 0 {
        InvalidPtrReason::Null
    } else if offset == 0 {
        // The allocator's header: never an object.
        InvalidPtrReason::NotAnObject { size: place.size }
    } else if offset
        .checked_add(stamp_offset(bytes, &place).saturating_add(8))
        .is_none_or(|end| end > bytes.len())
    {
        InvalidPtrReason::OutOfRange {
            size: place.size,
            capacity: bytes.len(),
        }
    } else if (bytes.as_ptr() as usize).wrapping_add(offset) & place.mask != 0 {
        InvalidPtrReason::Misaligned {
            align: place.mask + 1,
        }
    } else if header(bytes).magic == 0 {
        InvalidPtrReason::NoAllocator
    } else if off_slot(bytes, offset, &place) {
        // A slab's header or bitmap, or no slot's start.
        InvalidPtrReason::NotAnObject { size: place.size }
    } else if stamp & 1 == 0 {
        InvalidPtrReason::NotFromAlloc
    } else {
        let found = read_u64(bytes, offset + stamp_offset(bytes, &place)).unwrap_or(0);
        let free = page_is_free(bytes, offset);
        if found == stamp.wrapping_add(1) {
            InvalidPtrReason::Freed
        } else if !free && !same_page_kind(bytes, offset, &place) {
            // Its page holds other objects now (what sits where its stamp was is not a stamp).
            InvalidPtrReason::Reused
        } else if found == 0 {
            InvalidPtrReason::NeverAllocated
        } else if !free && found & 1 == 1 {
            InvalidPtrReason::Reused
        } else {
            InvalidPtrReason::NotLive
        }
    };
    Error::InvalidPtr {
        offset,
        type_name,
        reason,
    }
}

/// Whether the page at `offset` is free (in a free run, or above `top`).
fn page_is_free(bytes: &[u8], offset: usize) -> bool {
    kinds::is_free(kinds::at(bytes, offset >> page_shift(bytes)))
}

/// Whether the page at `offset` holds objects placed as `place`: a slab of its class, or the
/// head of a large run.
fn same_page_kind(bytes: &[u8], offset: usize, place: &Placement) -> bool {
    let k = kinds::at(bytes, offset >> page_shift(bytes));
    if place.is_large() {
        k == kinds::LARGE_HEAD
    } else {
        k == kinds::slab(place.class)
    }
}

/// Allocation statistics, computed by walking the allocator's metadata.
pub(crate) fn stats(bytes: &[u8]) -> Result<Option<AllocStats>> {
    let Some(meta) = Meta::new(bytes)? else {
        return Ok(None);
    };
    let g = meta.geo();
    let mut u = AllocStats {
        heap_pages: g.top - g.first_page,
        ..AllocStats::default()
    };
    for &head in &meta.header().bins {
        let mut s = head as usize;
        let mut guard = g.pages;
        while s != 0 && guard > 0 {
            let run = meta.free_run(s)?;
            u.free_pages += run.pages as usize;
            s = run.next as usize;
            guard -= 1;
        }
    }
    let mut p = g.first_page;
    while p < g.top {
        let k = meta.kind(p);
        if k >= kinds::SLAB && ((k - kinds::SLAB) as usize) < CLASSES {
            u.slab_pages += 1;
            u.small_objects += meta.slab_header(p).used as usize;
            p += 1;
        } else if k == kinds::FREE_HEAD {
            p += meta.free_run(p)?.pages as usize;
        } else if k == kinds::LARGE_HEAD {
            u.large_objects += 1;
            let mut q = p + 1;
            while q < g.top && meta.kind(q) == kinds::LARGE_TAIL {
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
