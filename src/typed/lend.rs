//! [`Lend`]: handles that [`ViewMut::lend_mut`](crate::ViewMut::lend_mut),
//! [`View::lend`](crate::View::lend) and a [`Loan`](super::loan::Loan) lend at once, and
//! [`PtrMut`], what an object is lent mutably as.
//!
//! Lending happens in two steps so that no reference exists while handles are checked: first
//! every handle is checked against the arena's bytes and reports the spans of memory it will
//! lend ([`Lend::check`]); the spans are checked to be disjoint; only then are the views made
//! ([`Lend::lend`]). What a check found travels to its lend in the handle's own `Checked` type, so
//! a loan keeps it and lends again without checking while nothing but its views changed the
//! arena. Views hold raw pointers and no borrow of each other: each reaches the arena only to
//! mark a page on its first write there (see [`marks`](super::marks)).
//!
//! This floor lends objects (`Ptr<T>`) and tuples; the collections implement [`Lend`] for their
//! handles in their own module.

use super::marks::Marker;
use super::sealed::{Token, TOKEN};
use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::ptr::value::Value;
use crate::ptr::{self, Ptr};
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut, Range};
use std::ptr::NonNull;

pub(crate) mod sealed {
    /// Keeps [`Lend`](super::Lend) to the crate's handle types.
    pub trait Sealed {}
}

/// Handles that can be lent at once: a [`Ptr<T>`] (lent as a [`PtrMut`], read as `&T`), an
/// [`ArenaVec<T>`](crate::ArenaVec) or [`ArenaBytes`](crate::ArenaBytes) (a
/// [`VecMut`](crate::VecMut), read as a slice), an [`ArenaMap<K, V>`](crate::ArenaMap) (a
/// [`MapMut`](crate::MapMut), read as a [`MapRef`](crate::collections::MapRef)), and tuples of up
/// to twelve of them (a tuple of the same shape). Tuples nest, so a state of more parts is lent as
/// a tuple of tuples.
pub trait Lend: sealed::Sealed + Copy {
    /// What the handles are lent as mutably, borrowing the arena for `'a`.
    type Out<'a>;

    /// What the handles are lent as for reading, borrowing the arena for `'a`.
    type Ref<'a>;

    /// What [`check`](Lend::check) found, for [`lend`](Lend::lend) (crate-internal).
    #[doc(hidden)]
    type Checked: Copy;

    /// Checks the handles against `bytes` and records the spans they will lend (crate-internal).
    #[doc(hidden)]
    fn check(&self, bytes: &[u8], spans: &mut Spans, token: Token) -> Result<Self::Checked>;

    /// Makes the views from what `check` found (crate-internal).
    ///
    /// # Safety
    /// `checked` came from [`check`](Lend::check) of these handles against the bytes of the
    /// arena `lent` lends from, whose spans were found disjoint; since then the arena's bytes
    /// were changed only through views lent from `checked`, and none of those is alive.
    #[doc(hidden)]
    unsafe fn lend<'a>(checked: Self::Checked, lent: &Lent<'a>, token: Token) -> Self::Out<'a>;

    /// Checks the handles against `bytes` and lends them for reading (crate-internal).
    #[doc(hidden)]
    fn lend_ref<'a>(&self, bytes: &'a [u8], token: Token) -> Result<Self::Ref<'a>>;
}

/// The memory a loan's handles will lend (crate-internal; it cannot be made outside the crate):
/// the spans a view may write, which must be disjoint from every other span, and the spans a
/// view reads but no view writes (the text of a map's [`ArenaString`](crate::ArenaString) keys),
/// which may overlap each other.
#[derive(Debug)]
pub struct Spans {
    lent: Vec<Range<usize>>,
    read: Vec<Range<usize>>,
}

impl Spans {
    /// Records that a handle lends `span` (arena offsets) for writing; empty spans lend nothing.
    pub(crate) fn push(&mut self, span: Range<usize>) {
        if !span.is_empty() {
            self.lent.push(span);
        }
    }

    /// Records that a handle's view reads `span` (arena offsets) without writing it.
    pub(crate) fn push_read(&mut self, span: Range<usize>) {
        if !span.is_empty() {
            self.read.push(span);
        }
    }

    /// Fails if a span lent for writing overlaps another span.
    fn check_disjoint(&mut self) -> Result<()> {
        self.lent.sort_unstable_by_key(|r| r.start);
        for w in self.lent.windows(2) {
            if w[0].end > w[1].start {
                return Err(overlap(&w[0], &w[1]));
            }
        }
        // The lent spans are sorted and disjoint, so their ends are sorted too: of those that end
        // after a read span starts, the first starts first, so it overlaps the span if any does.
        for r in &self.read {
            let i = self.lent.partition_point(|l| l.end <= r.start);
            if let Some(l) = self.lent.get(i).filter(|l| l.start < r.end) {
                return Err(overlap(l, r));
            }
        }
        Ok(())
    }
}

/// The error for two overlapping spans.
#[cold]
fn overlap(a: &Range<usize>, b: &Range<usize>) -> Error {
    let start = a.start.max(b.start);
    Error::Overlap {
        offset: start,
        len: a.end.min(b.end) - start,
    }
}

/// What the views of one loan are made from (crate-internal): the arena's memory, its marker,
/// and whether a view may allocate.
pub struct Lent<'a> {
    base: *mut u8,
    marker: Marker,
    /// The loan is one collection, lent alone by a borrow of the arena (`view_mut`, or
    /// `lend_mut` of one handle): its view may allocate, since no other view can be alive.
    exclusive: bool,
    _arena: PhantomData<&'a mut Arena>,
}

impl fmt::Debug for Lent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lent").finish_non_exhaustive()
    }
}

impl<'a> Lent<'a> {
    /// Lends from `arena` for `'a`.
    pub(crate) fn new(arena: &'a mut Arena, exclusive: bool) -> Self {
        let base = arena.base_mut();
        let arena = NonNull::from(arena);
        Lent {
            base,
            // SAFETY: the arena stays borrowed mutably for `'a`, and every use of the marker is
            // by a view of this loan, whose lifetime is at most `'a`; views are not `Send`.
            marker: unsafe { Marker::new(arena) },
            exclusive,
            _arena: PhantomData,
        }
    }

    /// The arena's first byte, writable for `'a`.
    pub(crate) fn base(&self) -> *mut u8 {
        self.base
    }

    /// The marker the views of the loan share.
    pub(crate) fn marker(&self) -> Marker {
        self.marker
    }

    /// Whether the view made from this may allocate (see the field).
    pub(crate) fn exclusive(&self) -> bool {
        self.exclusive
    }

    /// The same, for one part of a tuple: never exclusive.
    fn part(&self) -> Lent<'a> {
        Lent {
            exclusive: false,
            ..*self
        }
    }
}

/// Checks `handles` against `arena` and the disjointness of their spans.
pub(crate) fn check<L: Lend>(arena: &Arena, handles: &L) -> Result<L::Checked> {
    let mut spans = Spans {
        lent: Vec::new(),
        read: Vec::new(),
    };
    let checked = handles.check(arena.as_bytes(), &mut spans, TOKEN)?;
    spans.check_disjoint()?;
    Ok(checked)
}

/// Checks `handles` and lends them (see [`ViewMut::lend_mut`](crate::ViewMut::lend_mut)): a
/// single collection lent this way may allocate.
pub(crate) fn lend<L: Lend>(arena: &mut Arena, handles: L) -> Result<L::Out<'_>> {
    let checked = check(arena, &handles)?;
    arena.check_writable()?;
    let lent = Lent::new(arena, true);
    // SAFETY: `checked` was just found against this arena, its spans disjoint, and nothing
    // changed the arena since.
    Ok(unsafe { L::lend(checked, &lent, TOKEN) })
}

impl<T: Value> sealed::Sealed for Ptr<T> {}

impl<T: Value> Lend for Ptr<T> {
    type Out<'a> = PtrMut<'a, T>;
    type Ref<'a> = &'a T;
    type Checked = usize;

    fn check(&self, bytes: &[u8], spans: &mut Spans, _: Token) -> Result<usize> {
        ptr::check(bytes, *self)?;
        let at = self.offset();
        spans.push(at..at + size_of::<T>());
        Ok(at)
    }

    unsafe fn lend<'a>(at: usize, lent: &Lent<'a>, _: Token) -> PtrMut<'a, T> {
        // SAFETY: `check` found a live, aligned `T` at `at`, inside the arena (so the address is
        // not null); its span is disjoint from every other view of the loan, and the arena stays
        // borrowed for `'a` (the caller's contract).
        let value = unsafe { NonNull::new_unchecked(lent.base().add(at).cast::<T>()) };
        PtrMut {
            value,
            at,
            marked: false,
            marker: lent.marker(),
            _value: PhantomData,
        }
    }

    fn lend_ref<'a>(&self, bytes: &'a [u8], _: Token) -> Result<&'a T> {
        ptr::check(bytes, *self)
    }
}

/// An object lent mutably by [`ViewMut::lend_mut`](crate::ViewMut::lend_mut) or a
/// [`Loan`](crate::Loan): reading it (`*p`, `p.field`) costs what a reference does; the first
/// write through it (`*p = x`, `p.field += 1`, `&mut *p`) marks its pages as written, so an object
/// lent and only read leaves nothing for the next snapshot to freeze.
///
/// ```
/// use cowarena::{Arena, ViewMut};
/// let mut a = Arena::with_capacity(1 << 20)?;
/// let (p, q) = (a.alloc(1u64)?, a.alloc(2u64)?);
/// a.snapshot()?;
/// let (mut p_w, q_w) = a.lend_mut((p, q));
/// *p_w += *q_w;
/// assert_eq!(a.stats().dirty_pages, 1);   // p's page; q was only read
/// assert_eq!(*a.get(p), 3);
/// # Ok::<(), cowarena::Error>(())
/// ```
pub struct PtrMut<'a, T> {
    value: NonNull<T>,
    /// The object's offset in the arena.
    at: usize,
    /// Whether this `PtrMut` marked the object's pages: they stay marked for its life, since a
    /// snapshot or restore needs the arena it borrows.
    marked: bool,
    marker: Marker,
    _value: PhantomData<&'a mut T>,
}

impl<T> Deref for PtrMut<'_, T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: the object lent (see `lend`), borrowed from this `PtrMut`.
        unsafe { self.value.as_ref() }
    }
}

impl<T> DerefMut for PtrMut<'_, T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        if !self.marked {
            // SAFETY: the object lies inside the arena (see `lend`).
            unsafe { self.marker.touch_span(self.at, size_of::<T>()) };
            self.marked = true;
        }
        // SAFETY: the object lent (see `lend`), its pages marked; the reference borrows this
        // `PtrMut` mutably, so it is the only one.
        unsafe { self.value.as_mut() }
    }
}

impl<T: fmt::Debug> fmt::Debug for PtrMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

macro_rules! lend_tuple {
    ($($name:ident)+) => {
        impl<$($name: Lend),+> sealed::Sealed for ($($name,)+) {}

        impl<$($name: Lend),+> Lend for ($($name,)+) {
            type Out<'a> = ($($name::Out<'a>,)+);
            type Ref<'a> = ($($name::Ref<'a>,)+);
            type Checked = ($($name::Checked,)+);

            #[allow(non_snake_case)]
            fn check(&self, bytes: &[u8], spans: &mut Spans, token: Token) -> Result<Self::Checked> {
                let ($($name,)+) = self;
                Ok(($($name.check(bytes, spans, token)?,)+))
            }

            #[allow(non_snake_case)]
            unsafe fn lend<'a>(checked: Self::Checked, lent: &Lent<'a>, token: Token) -> Self::Out<'a> {
                let ($($name,)+) = checked;
                let part = lent.part();
                // SAFETY: each part's `checked` came from its `check` within the tuple's, whose
                // spans were all found disjoint together (the caller's contract).
                unsafe { ($($name::lend($name, &part, token),)+) }
            }

            #[allow(non_snake_case)]
            fn lend_ref<'a>(&self, bytes: &'a [u8], token: Token) -> Result<Self::Ref<'a>> {
                let ($($name,)+) = self;
                Ok(($($name.lend_ref(bytes, token)?,)+))
            }
        }
    };
}

lend_tuple!(A);
lend_tuple!(A B);
lend_tuple!(A B C);
lend_tuple!(A B C D);
lend_tuple!(A B C D E);
lend_tuple!(A B C D E F);
lend_tuple!(A B C D E F G);
lend_tuple!(A B C D E F G H);
lend_tuple!(A B C D E F G H I);
lend_tuple!(A B C D E F G H I J);
lend_tuple!(A B C D E F G H I J K);
lend_tuple!(A B C D E F G H I J K L);
