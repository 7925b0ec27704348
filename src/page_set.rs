//! A set of page indices with O(1) insert and lookup and iteration in O(members): the dirty and
//! private-page sets of an arena, whose cost must follow the pages touched, not the capacity.

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
        let mut v: Vec<usize> = self.iter().collect();
        v.sort_unstable();
        v
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
pub(crate) fn runs(sorted: &[usize], max: usize) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for &p in sorted {
        match out.last_mut() {
            Some(r) if r.end == p && r.len() < max => r.end += 1,
            _ => out.push(p..p + 1),
        }
    }
    out
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
        s.clear();
        assert!(s.is_empty() && !s.contains(3));
    }
}
