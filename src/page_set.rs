//! A set of page indices with O(1) insert and lookup and iteration in O(members): the dirty and
//! private-page sets of an arena, whose cost must follow the pages touched, not the capacity;
//! and [`Coalesce`], which groups pages into runs.

use std::ops::Range;

/// Invariant: `list` holds each member exactly once; `bits` has a bit set exactly for members.
#[derive(Clone, Debug, Default)]
pub(crate) struct PageSet {
    bits: Vec<u64>,
    list: Vec<u32>,
}

impl PageSet {
    pub(crate) fn new(pages: usize) -> Self {
        assert!(pages <= u32::MAX as usize, "page index fits in u32");
        PageSet {
            bits: vec![0; pages.div_ceil(64)],
            list: Vec::new(),
        }
    }

    #[inline]
    pub(crate) fn contains(&self, page: usize) -> bool {
        self.bits[page / 64] & (1 << (page % 64)) != 0
    }

    /// The bitmap's words: page `p` is a member when bit `p % 64` of word `p / 64` is set. For
    /// the typed views, which test membership without holding a borrow of the set between the
    /// inserts they make through their arena. The words stay where they are for the set's life:
    /// `insert`, `retain` and `clear` change them in place.
    pub(crate) fn words(&self) -> *const u64 {
        self.bits.as_ptr()
    }

    /// Adds `page`; returns whether it was new.
    #[inline]
    pub(crate) fn insert(&mut self, page: usize) -> bool {
        let word = &mut self.bits[page / 64];
        let bit = 1 << (page % 64);
        if *word & bit != 0 {
            return false;
        }
        *word |= bit;
        self.list.push(page as u32);
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The members, in insertion order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.list.iter().map(|&p| p as usize)
    }

    /// The members in increasing order.
    pub(crate) fn sorted(&self) -> Vec<usize> {
        let mut v = Vec::new();
        self.sorted_into(&mut v);
        v
    }

    /// Replaces the contents of `out` with the members in increasing order.
    pub(crate) fn sorted_into(&self, out: &mut Vec<usize>) {
        out.clear();
        out.extend(self.iter());
        out.sort_unstable();
    }

    pub(crate) fn clear(&mut self) {
        for &p in &self.list {
            self.bits[p as usize / 64] = 0;
        }
        self.list.clear();
    }

    /// Keeps only the members for which `keep` returns true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let bits = &mut self.bits;
        self.list.retain(|&p| {
            let k = keep(p as usize);
            if !k {
                bits[p as usize / 64] &= !(1 << (p % 64));
            }
            k
        });
    }
}

/// Splits increasing page indices into maximal runs of consecutive pages, at most `max` long.
pub(crate) fn runs(sorted: &[usize], max: usize) -> Vec<Range<usize>> {
    coalesce(sorted.iter().map(|&p| (p..p + 1, ())), 0, |(run, ()), _| {
        run.len() < max
    })
    .into_iter()
    .map(|(r, ())| r)
    .collect()
}

/// Builds maximal runs out of pieces given in increasing order: the one way this crate groups
/// pages into the runs that cost one system call, one mapping or one copy each.
///
/// A piece is a range and a value (the run's first slot, say). It joins the run before it when
/// it starts at most `max_gap` past the run's end and `joins(run, piece)` agrees; the run then
/// ends where the piece ends and keeps its own value.
pub(crate) struct Coalesce<V, F> {
    run: Option<(Range<usize>, V)>,
    max_gap: usize,
    joins: F,
}

impl<V, F: FnMut(&(Range<usize>, V), &(Range<usize>, V)) -> bool> Coalesce<V, F> {
    pub(crate) fn new(max_gap: usize, joins: F) -> Self {
        Coalesce {
            run: None,
            max_gap,
            joins,
        }
    }

    /// Adds `piece`; returns the run it closed, if it starts a new one.
    #[inline]
    pub(crate) fn push(&mut self, piece: (Range<usize>, V)) -> Option<(Range<usize>, V)> {
        if let Some(run) = &mut self.run {
            debug_assert!(piece.0.start >= run.0.end, "pieces in increasing order");
            if piece.0.start - run.0.end <= self.max_gap && (self.joins)(run, &piece) {
                run.0.end = piece.0.end;
                return None;
            }
        }
        self.run.replace(piece)
    }

    /// The run being built, if any.
    pub(crate) fn current(&self) -> Option<&(Range<usize>, V)> {
        self.run.as_ref()
    }

    /// The last run, if any.
    pub(crate) fn finish(self) -> Option<(Range<usize>, V)> {
        self.run
    }
}

/// [`Coalesce`] over all of `pieces` at once.
pub(crate) fn coalesce<V>(
    pieces: impl IntoIterator<Item = (Range<usize>, V)>,
    max_gap: usize,
    joins: impl FnMut(&(Range<usize>, V), &(Range<usize>, V)) -> bool,
) -> Vec<(Range<usize>, V)> {
    coalesced(pieces, max_gap, joins).collect()
}

/// [`coalesce`] as an iterator: the runs come as they close, with nothing collected.
pub(crate) fn coalesced<V>(
    pieces: impl IntoIterator<Item = (Range<usize>, V)>,
    max_gap: usize,
    joins: impl FnMut(&(Range<usize>, V), &(Range<usize>, V)) -> bool,
) -> impl Iterator<Item = (Range<usize>, V)> {
    let mut c = Coalesce::new(max_gap, joins);
    let mut pieces = pieces.into_iter();
    std::iter::from_fn(move || {
        for piece in pieces.by_ref() {
            if let Some(run) = c.push(piece) {
                return Some(run);
            }
        }
        c.run.take()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_retain_clear() {
        let mut s = PageSet::new(200);
        assert!(s.insert(3));
        assert!(!s.insert(3));
        s.insert(150);
        s.insert(4);
        assert_eq!(s.sorted(), vec![3, 4, 150]);
        s.retain(|p| p != 4);
        assert!(!s.contains(4) && s.contains(150));
        assert_eq!(runs(&[1, 2, 3, 7, 8], 2), vec![1..3, 3..4, 7..9]);
        assert!(runs(&[], 2).is_empty());
        s.clear();
        assert!(s.is_empty() && !s.contains(3));
    }

    #[test]
    fn coalesce_gaps_and_values() {
        let pieces = [(0..2, 'a'), (2..3, 'b'), (5..6, 'c'), (9..10, 'd')];
        let all = |_: &(Range<usize>, char), _: &(Range<usize>, char)| true;
        assert_eq!(
            coalesce(pieces.clone(), 0, all),
            vec![(0..3, 'a'), (5..6, 'c'), (9..10, 'd')]
        );
        assert_eq!(
            coalesce(pieces.clone(), 2, all),
            vec![(0..6, 'a'), (9..10, 'd')]
        );
        assert_eq!(
            coalesce(pieces, 9, |_, (_, v)| *v != 'c'),
            vec![(0..3, 'a'), (5..10, 'c')]
        );
    }
}
