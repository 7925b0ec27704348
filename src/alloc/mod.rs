//! The typed allocator. Every byte of its state lives inside the arena, so whatever the core
//! does to the arena's pages (snapshot, restore, `to_arena`, proxy) it does to the allocator too:
//! restoring a snapshot brings back the allocator as it was, and objects allocated since are free
//! again without any bookkeeping outside the arena.
//!
//! # Layout
//!
//! ```text
//! offset 0            Header: magic, geometry, top, free-run bins, per-class slab lists, root
//! offset 1024         page map: one byte per page of the arena (its kind, see `kinds`)
//! first_page ..top    slabs, large objects and free runs, in pages
//! top ..capacity      never used since the last time top was lowered
//! ```
//!
//! - A *slab* is one page holding objects of one size class: a 32-byte header (class, counts,
//!   links of the class's list of partly free slabs), a bitmap of used slots, then the slots.
//!   A slot is the object followed by its 8-byte *stamp*, so an allocation writes one page: the
//!   slab's bitmap and the slot sit on the same page.
//! - A *large object* (over 1016 bytes, or aligned above 64) is a run of whole pages starting
//!   with the object; its trailer (stamp, page count) fills the run's last 16 bytes.
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
//! stamp it was given, and `get` compares it with the one in the arena. A stamp is trusted only
//! where the page map says a stamp sits: `get` first checks that the object's page is a slab of
//! its class and that a slot of it starts at the object's offset (a large object's: that its
//! page heads a run and the run ends where its trailer would be). The page map is current for
//! every page (free pages, and pages above `top`, read as free), so a page reused for other
//! objects, whose bytes may hold anything at the old stamp's place (a table of `Ptr`s holds
//! stamps as data), turns a stale `Ptr` away, and a forged one cannot name a slab's header or
//! half of a slot: two loads and three compares.
//! A child made with `fork()` draws its stamps from a range of its own, so a state it sends back
//! repeats no stamp its parent hands out.
//!
//! # Raw writes
//!
//! Nothing is trusted: every field read from the arena is range-checked before use, so raw
//! writes into allocator-owned memory can make operations fail (with an error naming the
//! corruption) but never cause undefined behaviour.
//!
//! # Files
//!
//! From the top down; each uses only files below it, so one call's data flows one way: an entry
//! point here takes the metadata view once and hands it down to the slab or page code.
//!
//! - `slab.rs`: small objects: the inlined fast paths of `alloc` and `free`, slabs and their
//!   lists.
//! - `pages.rs`: large objects and the free-page pool (runs in size bins).
//! - `diagnostics.rs`: why a handle is invalid, and [`AllocStats`].
//! - `meta.rs`: the metadata view of one call (`Meta`, `MetaMut`): it checks every list link it
//!   reads, and is the only writer of metadata, marking the pages it writes in the arena.
//! - `validity.rs`: whether `(offset, stamp)` names a live object (the check behind `get`).
//! - `header.rs`: the on-arena format (the header, a slab's header, a free run's links) and the
//!   checks that turn the header into a trusted geometry.
//! - `geometry.rs`: [`Placement`] (where a type's objects go), the size classes, the arena's
//!   geometry and the positions of slots and trailers.
//! - `kinds.rs`: the page map's kinds.
//! - `stamps.rs`: the process-wide stamp counter.

mod diagnostics;
mod geometry;
mod header;
mod kinds;
mod meta;
mod pages;
mod slab;
mod stamps;
mod validity;

pub use diagnostics::AllocStats;
pub(crate) use diagnostics::{explain, stats};
pub(crate) use geometry::{Placement, MAX_ALIGN};
pub(crate) use stamps::{after_fork_in_child, stamp_ceiling, stamps_above, MAX_STAMP_CEILING};
pub(crate) use validity::{live_at, stamp_offset};

use crate::arena::Arena;
use crate::error::Result;
use diagnostics::not_an_object;
use header::{header, MAGIC};
use meta::{Meta, MetaMut};
use slab::FreeFast;
use stamps::fresh_stamp;

/// Allocates room for an object placed as `place`, copies `init` (at most `place.size` bytes)
/// to its start, and returns its offset and stamp.
///
/// `place` is a reference so that the slow path's argument is a pointer to a constant, not a
/// copy built on the stack before every fast path.
#[inline(always)]
pub(crate) fn alloc(arena: &mut Arena, place: &Placement, init: &[u8]) -> Result<(usize, u64)> {
    debug_assert!(init.len() <= place.size);
    if !place.is_large() {
        // Taken first, while few values are live across the call; one wasted on a fallback to
        // the slow path costs nothing.
        let stamp = fresh_stamp();
        if let Some(mut m) = MetaMut::ready(arena) {
            if let Some(done) = slab::alloc_fast(&mut m, place, init, stamp) {
                return Ok(done);
            }
        }
    }
    alloc_slow(arena, place, init)
}

/// Everything `alloc_fast` leaves: initialization, a full current slab, large objects, errors.
#[inline(never)]
fn alloc_slow(arena: &mut Arena, place: &Placement, init: &[u8]) -> Result<(usize, u64)> {
    let place = *place;
    let mut m = MetaMut::ensure(arena)?;
    if place.is_large() {
        pages::alloc_large(&mut m, place, init)
    } else {
        slab::alloc_small(&mut m, place, init)
    }
}

/// Frees the object at `offset` with `stamp`, placed as `place`, after checking that it is live.
#[inline(always)]
pub(crate) fn free(
    arena: &mut Arena,
    offset: usize,
    stamp: u64,
    place: &Placement,
    type_name: &'static str,
) -> Result<()> {
    if !place.is_large() {
        if let Some(mut m) = MetaMut::ready(arena) {
            match slab::free_fast(&mut m, offset, stamp, place) {
                FreeFast::Done => return Ok(()),
                FreeFast::Relist { s, used, listed } => {
                    return slab::relist(&mut m, place.class, s, used, listed)
                }
                FreeFast::Slow => {}
            }
        }
    }
    free_slow(arena, offset, stamp, place, type_name)
}

/// Everything `free_fast` leaves: large objects, and invalid pointers and corruption, whose
/// errors it names.
#[inline(never)]
fn free_slow(
    arena: &mut Arena,
    offset: usize,
    stamp: u64,
    place: &Placement,
    type_name: &'static str,
) -> Result<()> {
    let place = *place;
    let Some(mut m) = MetaMut::open(arena)? else {
        return Err(explain(arena.as_bytes(), offset, stamp, place, type_name));
    };
    let bytes = m.read().bytes();
    if stamp & 1 == 0 || !live_at(bytes, offset, stamp, &place) {
        return Err(explain(bytes, offset, stamp, place, type_name));
    }
    if !m.geo().in_use(offset >> m.geo().shift) {
        return Err(not_an_object(offset, type_name, place));
    }
    if place.is_large() {
        return pages::free_large(&mut m, offset, stamp, place, type_name);
    }
    slab::free_small(&mut m, offset, stamp, place, type_name)
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
    if stamp == 0 && Meta::new(arena.as_bytes())?.is_none() {
        return Ok(());
    }
    let mut m = MetaMut::ensure(arena)?;
    let h = m.header_mut()?;
    h.root_offset = offset as u64;
    h.root_stamp = stamp;
    h.root_type = if stamp == 0 { 0 } else { type_tag };
    Ok(())
}
