//! [`MapIter`]: the entries of an [`ArenaMap`], read from its table in slot order.

use crate::ptr::handles::ArenaMap;
use crate::ptr::value::Value;
use std::fmt;
use std::marker::PhantomData;

/// The entries of an [`ArenaMap`], from [`ArenaMap::iter`] or
/// [`MapMut::iter`](super::MapMut::iter).
pub struct MapIter<'a, K, V> {
    table: &'a [u8],
    next: usize,
    _type: PhantomData<fn() -> (K, V)>,
}

impl<'a, K: Value + Eq, V: Value> MapIter<'a, K, V> {
    /// The entries of `table`.
    ///
    /// # Safety
    /// Every occupied slot of `table` holds a valid key and value
    /// ([`ArenaMap::check_entries`]), unchanged for `'a` but through a `&mut V`.
    pub(super) unsafe fn new(table: &'a [u8]) -> Self {
        MapIter {
            table,
            next: 0,
            _type: PhantomData,
        }
    }
}

impl<'a, K: Value + Eq, V: Value> Iterator for MapIter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        let cap = self.table.len() / ArenaMap::<K, V>::STRIDE;
        while self.next < cap {
            let i = self.next;
            self.next += 1;
            if ArenaMap::<K, V>::tag_at(self.table, i) != 0 {
                // SAFETY: slot `i` is occupied and below the capacity, so its entry is valid
                // (`new`'s contract).
                return Some(unsafe {
                    (
                        ArenaMap::<K, V>::key_at(self.table, i),
                        ArenaMap::<K, V>::value_at(self.table, i),
                    )
                });
            }
        }
        None
    }
}

impl<K, V> fmt::Debug for MapIter<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapIter")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}
