//! How the mutable views ([`PtrMut`](super::lend::PtrMut), and the collections' `VecMut` and
//! `MapMut`) keep the arena's record of written pages true while they lend memory.
//!
//! A view marks a page as written before its first write there, and only then: lending a 1 GiB
//! vector costs what lending a 4 KiB one does, and a snapshot freezes only the pages written.
//! The test is the arena's own dirty bitmap ([`Arena::dirty_pages`]), read in place: one bit per
//! page, so a write to a marked page costs a shift, a load and a bit test, and the first write to
//! a page calls the arena ([`Arena::mark_dirty`], out of line).
//!
//! Why the bitmap can be read without a borrow of the arena: a view holds the arena borrowed
//! mutably for its life (directly, or through the [`Loan`](super::loan::Loan) it was lent from),
//! so nothing but the views of one loan changes the bitmap meanwhile, and they change it only by
//! marking pages, in place (the bitmap's words never move: [`PageSet::words`]). A bit once set
//! stays set until a snapshot or restore, which need the arena the view borrows. The views are
//! neither `Send` nor `Sync` (raw pointers), so every read and every marking happens on the
//! thread that holds the borrow, one at a time.

use crate::alloc::MAX_ALIGN;
use crate::arena::Arena;
#[cfg(doc)]
use crate::page_set::PageSet;
use crate::ptr;
use std::ptr::NonNull;

/// A view's way to the arena's dirty bitmap and, for the first write to a page, to the arena.
#[derive(Clone, Copy)]
pub(crate) struct Marker {
    /// The words of the arena's dirty bitmap.
    words: NonNull<u64>,
    /// `log2` of the arena's page size.
    shift: u32,
    arena: NonNull<Arena>,
}

/// The longest span [`Marker::all_marked`] looks at: 1,024 pages (4 MiB of 4 KiB pages), 16
/// words of the bitmap.
const SCANNED_PAGES: usize = 1024;

/// The page size as a shift, where it is known at compile time: x86-64 has 4 KiB pages only, and
/// a constant shift keeps a register free in the views' loops.
const FIXED_SHIFT: Option<u32> = if cfg!(target_arch = "x86_64") {
    Some(12)
} else {
    None
};

impl Marker {
    /// The marker of `arena`.
    ///
    /// # Safety
    /// `arena` points to a live arena, borrowed mutably by the caller, that nothing but the
    /// markers made from it (and copies of them) uses for as long as any of them is used; none
    /// is used from another thread.
    pub(crate) unsafe fn new(arena: NonNull<Arena>) -> Marker {
        // SAFETY: the arena is live and not otherwise used (the caller's contract); the shared
        // reference ends within this function.
        let a = unsafe { arena.as_ref() };
        let shift = a.page_shift();
        // The fast test relies on the fixed shift being the arena's.
        assert!(
            FIXED_SHIFT.is_none_or(|s| s == shift),
            "cowarena: a page size other than 4 KiB on x86-64"
        );
        let words = a.dirty_pages().words();
        Marker {
            // A bitmap of no words (an arena of no pages) lends nothing, so its test never runs.
            words: NonNull::new(words.cast_mut()).unwrap_or(NonNull::dangling()),
            shift,
            arena,
        }
    }

    /// The same arena's marker, read anew: for a view that allocated through the arena, so that
    /// it assumes nothing of what the allocation left in place.
    ///
    /// # Safety
    /// As [`new`](Self::new), for this marker's arena.
    pub(crate) unsafe fn renew(self) -> Marker {
        // SAFETY: the caller's contract.
        unsafe { Marker::new(self.arena) }
    }

    /// The arena, for the exclusive views that may allocate.
    ///
    /// # Safety
    /// No reference made from this marker's arena, and no view lent from it other than the
    /// caller's, is alive; the result is not kept beyond the caller's `&mut self`.
    pub(crate) unsafe fn arena<'a>(self) -> &'a mut Arena {
        // SAFETY: the arena is live and otherwise unused (`new`'s contract and the caller's).
        unsafe { &mut *self.arena.as_ptr() }
    }

    #[inline(always)]
    fn shift(&self) -> u32 {
        FIXED_SHIFT.unwrap_or(self.shift)
    }

    /// Whether page `page` of the arena is marked as written.
    ///
    /// # Safety
    /// `page` is a page of the arena (below its capacity divided by the page size).
    #[inline(always)]
    unsafe fn is_marked(&self, page: usize) -> bool {
        // SAFETY: the bitmap has a bit per page of the arena (the caller's contract) and lives
        // as long as the arena, which the views hold borrowed (see the module docs).
        let word = unsafe { *self.words.as_ptr().add(page / 64) };
        word >> (page % 64) & 1 != 0
    }

    /// Whether every page of the `len` bytes at arena offset `at` is marked as written, for a
    /// span of at most [`SCANNED_PAGES`] pages; `false` for longer ones, which are not looked at,
    /// so that the answer costs a few loads whatever the span. A view asks when it is made and
    /// after it marked a page.
    ///
    /// # Safety
    /// The bytes lie inside the arena.
    #[inline(always)]
    pub(crate) unsafe fn all_marked(&self, at: usize, len: usize) -> bool {
        // SAFETY: the caller's contract.
        unsafe { scan(self.words, self.shift(), at, len) }
    }

    /// Makes sure that an item of type `I` at arena offset `at` lies on pages marked as written:
    /// one test (two when items of `I` can straddle pages) when they are. Returns whether it
    /// marked a page (so the caller's view may now lie on marked pages only).
    ///
    /// # Safety
    /// The item lies inside the arena.
    #[inline(always)]
    pub(crate) unsafe fn touch<I>(&self, at: usize) -> bool {
        let size = size_of::<I>();
        if size == 0 {
            return false;
        }
        let shift = self.shift();
        // SAFETY: the item's first and last bytes are inside the arena (the caller's contract).
        let marked = unsafe {
            if one_page::<I>() {
                self.is_marked(at >> shift)
            } else {
                // An item over a page may span pages between its first and last: always marked
                // (the arena skips the pages marked already).
                size <= MAX_ALIGN
                    && self.is_marked(at >> shift)
                    && self.is_marked((at + size - 1) >> shift)
            }
        };
        if !marked {
            // SAFETY: the marker's arena (see `new`); the item lies inside it.
            unsafe { mark(self.arena, at, size) };
        }
        !marked
    }

    /// Makes sure that the `len` bytes at arena offset `at` lie on pages marked as written;
    /// returns whether it marked a page.
    ///
    /// # Safety
    /// The bytes lie inside the arena.
    #[inline(always)]
    pub(crate) unsafe fn touch_span(&self, at: usize, len: usize) -> bool {
        if len == 0 {
            return false;
        }
        let (first, last) = (at >> self.shift(), (at + len - 1) >> self.shift());
        // SAFETY: both pages hold bytes of the span, inside the arena (the caller's contract).
        let marked = last - first <= 1 && unsafe { self.is_marked(first) && self.is_marked(last) };
        if !marked {
            // SAFETY: the marker's arena (see `new`); the bytes lie inside it.
            unsafe { mark(self.arena, at, len) };
        }
        !marked
    }
}

/// Marks the pages of the `len` bytes at arena offset `at`: the first write to a page, so next
/// to a copy-on-write fault. Out of line, and given scalars only (no pointer into the view), so
/// that the view's fields stay in registers across a loop of writes.
///
/// # Safety
/// `arena` is a [`Marker`]'s, used as [`Marker::new`] requires, and the bytes lie inside it.
#[cold]
#[inline(never)]
#[track_caller]
unsafe fn mark(arena: NonNull<Arena>, at: usize, len: usize) {
    // SAFETY: the arena is live and nothing else uses it meanwhile (the caller's contract): the
    // reference lives for this call only, which makes no other reference to the arena and
    // touches only its page records, none of the memory lent.
    let arena = unsafe { &mut *arena.as_ptr() };
    // Fails only where the arena may not be written at all, which the loan checked when it
    // lent the view (`check_writable`); a raw `fork()` since is the caller's unsafe act.
    if let Err(e) = arena.mark_dirty(at, len) {
        ptr::fail(e);
    }
}

/// [`Marker::all_marked`] for the bitmap `words` of pages of `1 << shift` bytes; out of line
/// with scalar arguments, as [`mark`].
///
/// # Safety
/// The bytes lie inside the arena whose bitmap `words` is, alive (`Marker::new`'s contract).
#[cold]
#[inline(never)]
unsafe fn scan(words: NonNull<u64>, shift: u32, at: usize, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    let (first, last) = (at >> shift, (at + len - 1) >> shift);
    if last - first >= SCANNED_PAGES {
        return false;
    }
    // A word at a time: the bits of pages `first..=last` in each word must all be set.
    (first / 64..=last / 64).all(|w| {
        let from = if w == first / 64 { first % 64 } else { 0 };
        let to = if w == last / 64 { last % 64 } else { 63 };
        let mask = (u64::MAX >> (63 - to)) & (u64::MAX << from);
        // SAFETY: word `w` holds bits of pages of the span, pages of the arena (the caller's
        // contract), so it lies in the bitmap.
        let word = unsafe { *words.as_ptr().add(w) };
        word & mask == mask
    })
}

/// Whether no item of type `I` in the arena straddles two pages: its size is a power of two no
/// larger than the smallest page, and its alignment at least its size, so every item starts at
/// a multiple of its size, which divides the page size.
const fn one_page<I>() -> bool {
    let size = size_of::<I>();
    size <= 1 || (size.is_power_of_two() && size <= MAX_ALIGN && align_of::<I>() >= size)
}
