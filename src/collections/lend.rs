//! The collections' side of [`Lend`]: a vector or byte string is lent as a [`VecMut`] (read as a
//! slice), a map as a [`MapMut`] (read as a [`MapRef`]), marking the pages they write through
//! the loan's marker (see [`crate::typed`]'s `lend`).

use super::map::Table;
use super::vec::Buffer;
use super::{ArenaBytes, ArenaMap, ArenaVec, MapMut, MapRef, VecMut};
use crate::error::Result;
use crate::ptr::value::Value;
use crate::typed::lend::{sealed::Sealed, Lend, Lent, Spans};
use crate::typed::sealed::Token;

impl<T: Value> Sealed for ArenaVec<T> {}

impl<T: Value> Lend for ArenaVec<T> {
    type Out<'a> = VecMut<'a, T>;
    type Ref<'a> = &'a [T];
    type Checked = (Buffer, ArenaVec<T>);

    fn check(&self, bytes: &[u8], spans: &mut Spans, _: Token) -> Result<Self::Checked> {
        let b = self.lend_plan(bytes)?;
        // The view writes the header's length and may fill the whole capacity.
        spans.push(b.head..b.head + Self::HEAD_SIZE);
        spans.push(b.start..b.start + b.cap * size_of::<T>());
        Ok((b, *self))
    }

    unsafe fn lend<'a>((b, v): Self::Checked, lent: &Lent<'a>, _: Token) -> VecMut<'a, T> {
        // SAFETY: `lend_plan` checked the header and the buffer's `cap` aligned elements inside
        // the arena; their spans are disjoint from every other view of the loan, and the arena
        // stays borrowed for `'a` (the caller's contract). The view may allocate only when it is
        // the loan's only view.
        unsafe { VecMut::new(b, lent, lent.exclusive().then_some(v)) }
    }

    fn lend_ref<'a>(&self, bytes: &'a [u8], _: Token) -> Result<&'a [T]> {
        self.slice_in(bytes)
    }
}

impl Sealed for ArenaBytes {}

impl Lend for ArenaBytes {
    type Out<'a> = VecMut<'a, u8>;
    type Ref<'a> = &'a [u8];
    type Checked = (Buffer, ArenaVec<u8>);

    fn check(&self, bytes: &[u8], spans: &mut Spans, token: Token) -> Result<Self::Checked> {
        self.as_vec().check(bytes, spans, token)
    }

    unsafe fn lend<'a>(checked: Self::Checked, lent: &Lent<'a>, token: Token) -> VecMut<'a, u8> {
        // SAFETY: the caller's contract, for the vector the byte string is.
        unsafe { ArenaVec::<u8>::lend(checked, lent, token) }
    }

    fn lend_ref<'a>(&self, bytes: &'a [u8], token: Token) -> Result<&'a [u8]> {
        self.as_vec().lend_ref(bytes, token)
    }
}

impl<K: Value + Eq, V: Value> Sealed for ArenaMap<K, V> {}

impl<K: Value + Eq, V: Value> Lend for ArenaMap<K, V> {
    type Out<'a> = MapMut<'a, K, V>;
    type Ref<'a> = MapRef<'a, K, V>;
    type Checked = Table;

    fn check(&self, bytes: &[u8], spans: &mut Spans, _: Token) -> Result<Table> {
        self.lend_plan(bytes, spans)
    }

    unsafe fn lend<'a>(t: Table, lent: &Lent<'a>, _: Token) -> MapMut<'a, K, V> {
        // SAFETY: `lend_plan` checked the table lies inside the arena, aligned, and its entries
        // (text keys' strings included); the table's span is disjoint from every other span of
        // the loan, the text keys' spans from every span a view writes, and the arena stays
        // borrowed for `'a` (the caller's contract).
        unsafe { MapMut::new(t, lent) }
    }

    fn lend_ref<'a>(&self, bytes: &'a [u8], _: Token) -> Result<MapRef<'a, K, V>> {
        self.ref_in(bytes)
    }
}
