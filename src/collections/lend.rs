//! The collections' side of [`Lend`]: a vector or byte string is lent as a [`VecMut`], a map as a
//! [`MapMut`], both sharing the loan's borrow of the arena (see [`crate::typed`]'s `lend`).

use super::map::Table;
use super::vec::Elems;
use super::{ArenaBytes, ArenaMap, ArenaVec, MapMut, Marker, VecMut};
use crate::error::Result;
use crate::typed::lend::{sealed::Sealed, Lend, Lent, Spans};
use crate::typed::sealed::Token;
use bytemuck::Pod;

impl<T: Pod> Sealed for ArenaVec<T> {}

impl<T: Pod> Lend for ArenaVec<T> {
    type Out<'a> = VecMut<'a, T>;
    type Checked = Elems;

    fn check(&self, bytes: &[u8], spans: &mut Spans, _: Token) -> Result<Elems> {
        let e = self.lend_plan(bytes)?;
        spans.push(e.start..e.start + e.len * size_of::<T>());
        Ok(e)
    }

    fn lend<'a>(e: Elems, lent: &Lent<'a>, _: Token) -> VecMut<'a, T> {
        // SAFETY: `lend_plan` checked the buffer holds `len` aligned elements inside the arena;
        // their span is disjoint from every other reference of the loan, and the arena stays
        // borrowed for `'a`.
        unsafe { VecMut::new(lent.base(), e, Marker::Shared(lent.arena())) }
    }
}

impl Sealed for ArenaBytes {}

impl Lend for ArenaBytes {
    type Out<'a> = VecMut<'a, u8>;
    type Checked = Elems;

    fn check(&self, bytes: &[u8], spans: &mut Spans, token: Token) -> Result<Elems> {
        self.as_vec().check(bytes, spans, token)
    }

    fn lend<'a>(e: Elems, lent: &Lent<'a>, token: Token) -> VecMut<'a, u8> {
        ArenaVec::<u8>::lend(e, lent, token)
    }
}

impl<K: Pod + Eq, V: Pod> Sealed for ArenaMap<K, V> {}

impl<K: Pod + Eq, V: Pod> Lend for ArenaMap<K, V> {
    type Out<'a> = MapMut<'a, K, V>;
    type Checked = Table;

    fn check(&self, bytes: &[u8], spans: &mut Spans, _: Token) -> Result<Table> {
        let (t, len) = self.lend_plan(bytes)?;
        spans.push(t.start..t.start + len);
        Ok(t)
    }

    fn lend<'a>(t: Table, lent: &Lent<'a>, _: Token) -> MapMut<'a, K, V> {
        // SAFETY: `lend_plan` checked the table lies inside the arena, aligned; its span is
        // disjoint from every other reference of the loan, and the arena stays borrowed for
        // `'a`.
        unsafe { MapMut::new(lent.base(), t, Marker::Shared(lent.arena())) }
    }
}
