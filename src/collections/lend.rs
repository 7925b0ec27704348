//! [`Lend`]: handles that [`ViewMut::lend_mut`](crate::ViewMut::lend_mut) lends mutably at
//! once.
//!
//! Lending happens in two steps so that no reference exists while handles are checked: first
//! every handle is checked against the arena's bytes and reports the span of memory it will
//! lend; the spans are checked to be disjoint; only then are the references and views made. The
//! views of one loan share the arena through an `Rc<RefCell<_>>`, which they borrow only to mark
//! pages.

use super::map::Table;
use super::vec::Elems;
use super::{ArenaBytes, ArenaMap, ArenaVec, MapMut, Marker, VecMut};
use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::ptr::{self, Ptr};
use crate::typed::sealed::{Token, TOKEN};
use bytemuck::Pod;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::Range;
use std::rc::Rc;

mod sealed {
    /// Keeps [`Lend`](super::Lend) to the crate's handle types.
    pub trait Sealed {}
}

/// Handles that [`ViewMut::lend_mut`](crate::ViewMut::lend_mut) can lend mutably at once: a
/// [`Ptr<T>`] (lent as `&mut T`), an [`ArenaVec<T>`] or [`ArenaBytes`] (a [`VecMut`]), an
/// [`ArenaMap<K, V>`] (a [`MapMut`]), and tuples of up to four of them (a tuple of the same
/// shape).
pub trait Lend: sealed::Sealed + Copy {
    /// What the handles are lent as, borrowing the arena for `'a`.
    type Out<'a>;

    /// Checks the handles against `bytes` and records what `make` needs (crate-internal).
    #[doc(hidden)]
    fn plan(&self, bytes: &[u8], plan: &mut Plan, token: Token) -> Result<()>;

    /// Makes the references from what `plan` recorded (crate-internal).
    #[doc(hidden)]
    fn make<'a>(&self, lent: &mut Lent<'a>, token: Token) -> Self::Out<'a>;
}

/// What one handle will lend, found by [`Lend::plan`].
enum Item {
    Object(usize),
    Vec(Elems),
    Map(Table),
}

/// The handles of one loan, checked (crate-internal; it cannot be made outside the crate).
pub struct Plan {
    items: VecDeque<Item>,
    spans: Vec<Range<usize>>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("spans", &self.spans)
            .finish_non_exhaustive()
    }
}

impl Plan {
    fn push(&mut self, item: Item, span: Range<usize>) {
        self.items.push_back(item);
        if !span.is_empty() {
            self.spans.push(span);
        }
    }

    /// Fails if two spans overlap.
    fn check_disjoint(&mut self) -> Result<()> {
        self.spans.sort_unstable_by_key(|r| r.start);
        for w in self.spans.windows(2) {
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
    items: VecDeque<Item>,
    base: *mut u8,
    arena: Rc<RefCell<&'a mut Arena>>,
}

impl std::fmt::Debug for Lent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lent").finish_non_exhaustive()
    }
}

impl<'a> Lent<'a> {
    fn next(&mut self) -> Item {
        self.items
            .pop_front()
            .expect("`make` takes the items `plan` recorded, in order")
    }

    fn marker(&self) -> Marker<'a> {
        Marker::Shared(Rc::clone(&self.arena))
    }
}

/// Checks `handles` and lends them (see [`ViewMut::lend_mut`](crate::ViewMut::lend_mut)).
pub(crate) fn lend<L: Lend>(arena: &mut Arena, handles: L) -> Result<L::Out<'_>> {
    let mut plan = Plan {
        items: VecDeque::new(),
        spans: Vec::new(),
    };
    handles.plan(arena.as_bytes(), &mut plan, TOKEN)?;
    plan.check_disjoint()?;
    arena.check_writable()?;
    let base = arena.base_mut();
    let mut lent = Lent {
        items: plan.items,
        base,
        arena: Rc::new(RefCell::new(arena)),
    };
    Ok(handles.make(&mut lent, TOKEN))
}

impl<T: Pod> sealed::Sealed for Ptr<T> {}

impl<T: Pod> Lend for Ptr<T> {
    type Out<'a> = &'a mut T;

    fn plan(&self, bytes: &[u8], plan: &mut Plan, _: Token) -> Result<()> {
        ptr::check(bytes, *self)?;
        let at = self.offset();
        plan.push(Item::Object(at), at..at + size_of::<T>());
        Ok(())
    }

    fn make<'a>(&self, lent: &mut Lent<'a>, _: Token) -> &'a mut T {
        let Item::Object(at) = lent.next() else {
            unreachable!("`plan` recorded an object")
        };
        super::mark_written(&mut lent.arena.borrow_mut(), at, size_of::<T>());
        // SAFETY: `ptr::check` found a live, aligned `T` at `at` inside the arena; its span is
        // disjoint from every other reference of the loan, and the arena stays borrowed for
        // `'a`, so the memory stays mapped and nothing else refers to it.
        unsafe { &mut *lent.base.add(at).cast::<T>() }
    }
}

impl<T: Pod> sealed::Sealed for ArenaVec<T> {}

impl<T: Pod> Lend for ArenaVec<T> {
    type Out<'a> = VecMut<'a, T>;

    fn plan(&self, bytes: &[u8], plan: &mut Plan, _: Token) -> Result<()> {
        let e = self.lend_plan(bytes)?;
        plan.push(Item::Vec(e), e.start..e.start + e.len * size_of::<T>());
        Ok(())
    }

    fn make<'a>(&self, lent: &mut Lent<'a>, _: Token) -> VecMut<'a, T> {
        let Item::Vec(e) = lent.next() else {
            unreachable!("`plan` recorded a vector")
        };
        // SAFETY: `lend_plan` checked the buffer holds `len` aligned elements inside the arena;
        // their span is disjoint from every other reference of the loan, and the arena stays
        // borrowed for `'a`.
        unsafe { VecMut::new(lent.base, e, lent.marker()) }
    }
}

impl sealed::Sealed for ArenaBytes {}

impl Lend for ArenaBytes {
    type Out<'a> = VecMut<'a, u8>;

    fn plan(&self, bytes: &[u8], plan: &mut Plan, token: Token) -> Result<()> {
        self.as_vec().plan(bytes, plan, token)
    }

    fn make<'a>(&self, lent: &mut Lent<'a>, token: Token) -> VecMut<'a, u8> {
        self.as_vec().make(lent, token)
    }
}

impl<K: Pod + Eq, V: Pod> sealed::Sealed for ArenaMap<K, V> {}

impl<K: Pod + Eq, V: Pod> Lend for ArenaMap<K, V> {
    type Out<'a> = MapMut<'a, K, V>;

    fn plan(&self, bytes: &[u8], plan: &mut Plan, _: Token) -> Result<()> {
        let (t, len) = self.lend_plan(bytes)?;
        plan.push(Item::Map(t), t.start..t.start + len);
        Ok(())
    }

    fn make<'a>(&self, lent: &mut Lent<'a>, _: Token) -> MapMut<'a, K, V> {
        let Item::Map(t) = lent.next() else {
            unreachable!("`plan` recorded a map")
        };
        // SAFETY: `lend_plan` checked the table lies inside the arena, aligned; its span is
        // disjoint from every other reference of the loan, and the arena stays borrowed for
        // `'a`.
        unsafe { MapMut::new(lent.base, t, lent.marker()) }
    }
}

macro_rules! lend_tuple {
    ($($name:ident)+) => {
        impl<$($name: Lend),+> sealed::Sealed for ($($name,)+) {}

        impl<$($name: Lend),+> Lend for ($($name,)+) {
            type Out<'a> = ($($name::Out<'a>,)+);

            #[allow(non_snake_case)]
            fn plan(&self, bytes: &[u8], plan: &mut Plan, token: Token) -> Result<()> {
                let ($($name,)+) = self;
                $($name.plan(bytes, plan, token)?;)+
                Ok(())
            }

            #[allow(non_snake_case)]
            fn make<'a>(&self, lent: &mut Lent<'a>, token: Token) -> Self::Out<'a> {
                let ($($name,)+) = self;
                ($($name.make(lent, token),)+)
            }
        }
    };
}

lend_tuple!(A);
lend_tuple!(A B);
lend_tuple!(A B C);
lend_tuple!(A B C D);
