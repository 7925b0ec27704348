//! [`Lend`]: handles that [`ViewMut::lend_mut`](crate::ViewMut::lend_mut) lends mutably at
//! once.
//!
//! Lending happens in two steps so that no reference exists while handles are checked: first
//! every handle is checked against the arena's bytes and reports the span of memory it will
//! lend ([`Lend::check`]); the spans are checked to be disjoint; only then are the references and
//! views made ([`Lend::lend`]). What a check found travels to its lend in the handle's own
//! `Checked` type, so a loan allocates nothing but the list of spans. The views of one loan share
//! the arena through an `Rc<RefCell<_>>`, which they borrow only to mark pages.
//!
//! This floor lends objects (`Ptr<T>`) and tuples; the collections implement [`Lend`] for their
//! handles in their own module.

use super::sealed::{Token, TOKEN};
use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::ptr::{self, Ptr};
use bytemuck::Pod;
use std::cell::RefCell;
use std::ops::Range;
use std::rc::Rc;

pub(crate) mod sealed {
    /// Keeps [`Lend`](super::Lend) to the crate's handle types.
    pub trait Sealed {}
}

/// Handles that [`ViewMut::lend_mut`](crate::ViewMut::lend_mut) can lend mutably at once: a
/// [`Ptr<T>`] (lent as `&mut T`), an [`ArenaVec<T>`](crate::ArenaVec) or
/// [`ArenaBytes`](crate::ArenaBytes) (a [`VecMut`](crate::collections::VecMut)), an
/// [`ArenaMap<K, V>`](crate::ArenaMap) (a [`MapMut`](crate::collections::MapMut)), and tuples of
/// up to twelve of them (a tuple of the same shape). Tuples nest, so a state of more parts is
/// lent as a tuple of tuples.
pub trait Lend: sealed::Sealed + Copy {
    /// What the handles are lent as, borrowing the arena for `'a`.
    type Out<'a>;

    /// What [`check`](Lend::check) found, for [`lend`](Lend::lend) (crate-internal).
    #[doc(hidden)]
    type Checked;

    /// Checks the handles against `bytes` and records the spans they will lend (crate-internal).
    #[doc(hidden)]
    fn check(&self, bytes: &[u8], spans: &mut Spans, token: Token) -> Result<Self::Checked>;

    /// Makes the references from what `check` found (crate-internal).
    #[doc(hidden)]
    fn lend<'a>(checked: Self::Checked, lent: &Lent<'a>, token: Token) -> Self::Out<'a>;
}

/// The memory a loan's handles will lend (crate-internal; it cannot be made outside the crate).
#[derive(Debug)]
pub struct Spans(Vec<Range<usize>>);

impl Spans {
    /// Records that a handle lends `span` (arena offsets); empty spans lend nothing.
    pub(crate) fn push(&mut self, span: Range<usize>) {
        if !span.is_empty() {
            self.0.push(span);
        }
    }

    /// Fails if two spans overlap.
    fn check_disjoint(&mut self) -> Result<()> {
        self.0.sort_unstable_by_key(|r| r.start);
        for w in self.0.windows(2) {
            if w[0].end > w[1].start {
                return Err(Error::Overlap {
                    offset: w[1].start,
                    len: w[0].end.min(w[1].end) - w[1].start,
                });
            }
        }
        Ok(())
    }
}

/// What the references of one loan are made from (crate-internal).
pub struct Lent<'a> {
    base: *mut u8,
    arena: Rc<RefCell<&'a mut Arena>>,
}

impl std::fmt::Debug for Lent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lent").finish_non_exhaustive()
    }
}

impl<'a> Lent<'a> {
    /// The arena's first byte, writable for `'a`.
    pub(crate) fn base(&self) -> *mut u8 {
        self.base
    }

    /// The arena, shared by the views of the loan to mark the pages they write.
    pub(crate) fn arena(&self) -> Rc<RefCell<&'a mut Arena>> {
        Rc::clone(&self.arena)
    }
}

/// Checks `handles` and lends them (see [`ViewMut::lend_mut`](crate::ViewMut::lend_mut)).
pub(crate) fn lend<L: Lend>(arena: &mut Arena, handles: L) -> Result<L::Out<'_>> {
    let mut spans = Spans(Vec::new());
    let checked = handles.check(arena.as_bytes(), &mut spans, TOKEN)?;
    spans.check_disjoint()?;
    arena.check_writable()?;
    let lent = Lent {
        base: arena.base_mut(),
        arena: Rc::new(RefCell::new(arena)),
    };
    Ok(L::lend(checked, &lent, TOKEN))
}

impl<T: Pod> sealed::Sealed for Ptr<T> {}

impl<T: Pod> Lend for Ptr<T> {
    type Out<'a> = &'a mut T;
    type Checked = usize;

    fn check(&self, bytes: &[u8], spans: &mut Spans, _: Token) -> Result<usize> {
        ptr::check(bytes, *self)?;
        let at = self.offset();
        spans.push(at..at + size_of::<T>());
        Ok(at)
    }

    fn lend<'a>(at: usize, lent: &Lent<'a>, _: Token) -> &'a mut T {
        if let Err(e) = lent.arena.borrow_mut().mark_dirty(at, size_of::<T>()) {
            ptr::fail(e);
        }
        // SAFETY: `ptr::check` found a live, aligned `T` at `at` inside the arena; its span is
        // disjoint from every other reference of the loan, and the arena stays borrowed for
        // `'a`, so the memory stays mapped and nothing else refers to it.
        unsafe { &mut *lent.base.add(at).cast::<T>() }
    }
}

macro_rules! lend_tuple {
    ($($name:ident)+) => {
        impl<$($name: Lend),+> sealed::Sealed for ($($name,)+) {}

        impl<$($name: Lend),+> Lend for ($($name,)+) {
            type Out<'a> = ($($name::Out<'a>,)+);
            type Checked = ($($name::Checked,)+);

            #[allow(non_snake_case)]
            fn check(&self, bytes: &[u8], spans: &mut Spans, token: Token) -> Result<Self::Checked> {
                let ($($name,)+) = self;
                Ok(($($name.check(bytes, spans, token)?,)+))
            }

            #[allow(non_snake_case)]
            fn lend<'a>(checked: Self::Checked, lent: &Lent<'a>, token: Token) -> Self::Out<'a> {
                let ($($name,)+) = checked;
                ($($name::lend($name, lent, token),)+)
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
