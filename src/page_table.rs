//! A persistent page table: page index -> frozen slot, shared structurally between snapshots.
//!
//! It is a 16-ary radix tree of `Arc` nodes. A change copies one node per level, so a narrow
//! node keeps the metadata of a snapshot of `k` scattered pages small (about 150 bytes per page
//! and level at 16 entries, against 550 at 64); the extra levels cost little, since lookups
//! happen per changed page, not per access. Cloning a table is one reference-count increment; a
//! change copies only the nodes on the path to the changed page (copy-on-write of the table
//! itself), so a snapshot after `k` changed pages costs `O(k)` and two tables that share history
//! differ in `O(changed)` nodes, which [`PageTable::diff`] visits without looking at shared
//! subtrees. Absent subtrees stand for all-zero pages.
//!
//! Leaves own their slots: a slot's count in the [`Store`] is the number of leaves that hold it,
//! so dropping the last snapshot (or arena) that refers to a page frees the page.

use crate::error::Result;
use crate::page_set::{coalesce, coalesced, Coalesce};
use crate::store::{CopyOut, Frozen, SlotId, Store};
use std::ops::Range;
use std::sync::Arc;

const FANOUT_BITS: u32 = 4;
const FANOUT: usize = 1 << FANOUT_BITS;

struct Leaf {
    slots: [SlotId; FANOUT],
    store: Arc<Store>,
}

impl Clone for Leaf {
    fn clone(&self) -> Self {
        self.store.retain(&self.slots);
        Leaf {
            slots: self.slots,
            store: Arc::clone(&self.store),
        }
    }
}

impl Drop for Leaf {
    fn drop(&mut self) {
        self.store.release(&self.slots);
    }
}

#[derive(Clone)]
enum Node {
    Branch([Option<Arc<Node>>; FANOUT]),
    Leaf(Leaf),
}

/// Page index -> slot for `pages` pages (see the module docs).
#[derive(Clone)]
pub(crate) struct PageTable {
    root: Option<Arc<Node>>,
    /// Branch levels above the leaves.
    height: u32,
    pages: usize,
    /// Pages whose slot is not [`SlotId::ZERO`].
    data_pages: usize,
    store: Arc<Store>,
}

impl std::fmt::Debug for PageTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageTable")
            .field("pages", &self.pages)
            .finish_non_exhaustive()
    }
}

fn child_index(page: usize, level: u32) -> usize {
    (page >> (FANOUT_BITS * (level + 1))) & (FANOUT - 1)
}

impl PageTable {
    /// A table of `pages` zero pages.
    pub(crate) fn new(pages: usize, store: Arc<Store>) -> Self {
        let mut height = 0;
        while FANOUT << (FANOUT_BITS * height) < pages {
            height += 1;
        }
        PageTable {
            root: None,
            height,
            pages,
            data_pages: 0,
            store,
        }
    }

    /// A table of `pages` pages pointing the pages of `entries` (sorted by page, distinct) at
    /// their slots and the others at zero, built bottom-up in `O(entries)`: a snapshot opened
    /// from a file lists every page at once, and one `set` per page costs several times more.
    pub(crate) fn from_sorted(
        pages: usize,
        store: Arc<Store>,
        entries: &[(usize, SlotId)],
    ) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        debug_assert!(entries.last().is_none_or(|e| e.0 < pages));
        let mut table = PageTable::new(pages, store);
        let slots: Vec<SlotId> = entries.iter().map(|e| e.1).collect();
        table.store.retain(&slots);
        table.root = build(entries, table.height, 0, &table.store);
        table.data_pages = slots.iter().filter(|s| !s.is_zero()).count();
        table
    }

    pub(crate) fn pages(&self) -> usize {
        self.pages
    }

    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Pages that are not all-zero pages.
    pub(crate) fn data_pages(&self) -> usize {
        self.data_pages
    }

    pub(crate) fn get(&self, page: usize) -> SlotId {
        debug_assert!(page < self.pages);
        let mut node = match &self.root {
            Some(n) => n,
            None => return SlotId::ZERO,
        };
        let mut level = self.height;
        loop {
            match &**node {
                Node::Leaf(leaf) => return leaf.slots[page & (FANOUT - 1)],
                Node::Branch(children) => match &children[child_index(page, level - 1)] {
                    Some(child) => node = child,
                    None => return SlotId::ZERO,
                },
            }
            level -= 1;
        }
    }

    /// Points `page` at `slot`, taking a hold on `slot` and dropping the one on the old slot.
    pub(crate) fn set(&mut self, page: usize, slot: SlotId) {
        self.set_many(&[(page, slot)]);
    }

    /// [`set`](PageTable::set) for many pages, with one store lock for all the counts.
    pub(crate) fn set_many(&mut self, updates: &[(usize, SlotId)]) {
        let mut taken = Vec::with_capacity(updates.len());
        let mut dropped = Vec::with_capacity(updates.len());
        for &(page, slot) in updates {
            let old = self.swap(page, slot);
            if old != slot {
                taken.push(slot);
                dropped.push(old);
                self.data_pages =
                    self.data_pages + usize::from(old.is_zero()) - usize::from(slot.is_zero());
            }
        }
        // Take before dropping, so a slot moved between pages never reaches a count of zero.
        self.store.retain(&taken);
        self.store.release(&dropped);
    }

    /// Points each of `pages` at the slot `frozen` holds for it, in order: the hold passes to
    /// the table, so the freeze's slots are counted once, not taken and released again.
    pub(crate) fn set_frozen(
        &mut self,
        pages: impl IntoIterator<Item = usize>,
        frozen: Frozen<'_>,
    ) {
        // Each entry becomes the slot it replaced, released below.
        let mut slots = frozen.into_held();
        for (page, slot) in pages.into_iter().zip(&mut slots) {
            let old = self.swap(page, *slot);
            debug_assert!(!slot.is_zero() && old != *slot, "a frozen slot is new");
            self.data_pages += usize::from(old.is_zero());
            *slot = old;
        }
        self.store.release(&slots);
    }

    /// Points `page` at `slot` without touching counts; returns the old slot.
    fn swap(&mut self, page: usize, slot: SlotId) -> SlotId {
        debug_assert!(page < self.pages);
        if slot.is_zero() && self.get(page).is_zero() {
            return SlotId::ZERO;
        }
        let store = &self.store;
        let height = self.height;
        let mut node = self.root.get_or_insert_with(|| new_node(height, store));
        let mut level = height;
        loop {
            match Arc::make_mut(node) {
                Node::Leaf(leaf) => {
                    return std::mem::replace(&mut leaf.slots[page & (FANOUT - 1)], slot);
                }
                Node::Branch(children) => {
                    node = children[child_index(page, level - 1)]
                        .get_or_insert_with(|| new_node(level - 1, store));
                }
            }
            level -= 1;
        }
    }

    /// Calls `f(page)` for every page whose slot differs between `self` and `other`, in increasing
    /// page order, skipping subtrees the two tables share.
    pub(crate) fn diff(&self, other: &PageTable, mut f: impl FnMut(usize)) {
        debug_assert_eq!(self.pages, other.pages);
        diff_nodes(
            self.root.as_ref(),
            other.root.as_ref(),
            self.height,
            0,
            &mut f,
        );
    }

    /// Calls `f(first_page, len, first_slot)` for every maximal run of pages whose slots are
    /// consecutive in one chunk, in page order. Zero pages are skipped.
    pub(crate) fn for_each_run(&self, mut f: impl FnMut(usize, usize, SlotId)) {
        let mut runs = Coalesce::new(0, same_run);
        visit_leaves(self.root.as_ref(), self.height, 0, &mut |base, slots| {
            for (i, &slot) in slots.iter().enumerate() {
                if slot.is_zero() {
                    continue;
                }
                if let Some((r, first)) = runs.push((base + i..base + i + 1, slot)) {
                    f(r.start, r.len(), first);
                }
            }
        });
        if let Some((r, first)) = runs.finish() {
            f(r.start, r.len(), first);
        }
    }

    /// The maximal runs of pages that are not zero pages, whatever their slots, in page order.
    pub(crate) fn extents(&self) -> Vec<Range<usize>> {
        let mut runs = Coalesce::new(0, |_: &_, _: &_| true);
        let mut extents = Vec::new();
        self.for_each_run(|first, len, _| extents.extend(runs.push((first..first + len, ()))));
        extents.extend(runs.finish());
        extents.into_iter().map(|(r, ())| r).collect()
    }

    /// Groups the (sorted) `pages` into runs of consecutive pages whose slots are consecutive
    /// too, or all zero: each run is one `mmap` or one copy. Returns (pages, first slot).
    pub(crate) fn slot_runs(
        &self,
        pages: impl IntoIterator<Item = usize>,
    ) -> Vec<(Range<usize>, SlotId)> {
        coalesce(
            pages.into_iter().map(|p| (p..p + 1, self.get(p))),
            0,
            same_run,
        )
    }

    /// Copies the bytes at `offset` into `buf`: one copy out of the page store per run of
    /// consecutive slots, zeros for zero pages.
    pub(crate) fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.read_many([(offset, buf)])
    }

    /// [`read`](PageTable::read) for many `(offset, buf)` at once: the copies out of the store
    /// are issued together (see [`Store::copy_out`]).
    pub(crate) fn read_many<'b>(
        &self,
        parts: impl IntoIterator<Item = (usize, &'b mut [u8])>,
    ) -> Result<()> {
        let page = self.store.page_size();
        let mut copies: Vec<CopyOut<'b>> = Vec::new();
        for (offset, mut buf) in parts {
            let end = offset + buf.len();
            assert!(end <= self.pages * page, "read past the table's pages");
            if buf.is_empty() {
                continue;
            }
            let pieces = (offset / page..end.div_ceil(page)).map(|p| (p..p + 1, self.get(p)));
            for (run, first) in coalesced(pieces, 0, same_run) {
                let from = (run.start * page).max(offset);
                let to = (run.end * page).min(end);
                let (dst, rest) = std::mem::take(&mut buf).split_at_mut(to - from);
                buf = rest;
                if first.is_zero() {
                    dst.fill(0);
                } else {
                    copies.push(CopyOut::new(first, from - run.start * page, dst));
                }
            }
        }
        // SAFETY: `self` holds every slot copied and is borrowed for the call, so none of them is
        // freed, rewritten or punched during the copies.
        unsafe { self.store.copy_out(&mut copies) }
    }

    /// Whether both tables point every page at the same slot (cheap when they share their root).
    #[cfg(test)]
    pub(crate) fn same_as(&self, other: &PageTable) -> bool {
        let mut same = true;
        self.diff(other, |_| same = false);
        same
    }
}

/// Whether `piece` continues `run`: its slot follows the run's slots in the same chunk, or both
/// are zero.
pub(crate) fn same_run(
    (run, first): &(Range<usize>, SlotId),
    (_, slot): &(Range<usize>, SlotId),
) -> bool {
    if first.is_zero() {
        slot.is_zero()
    } else {
        *slot == first.offset(run.len())
    }
}

fn new_node(level: u32, store: &Arc<Store>) -> Arc<Node> {
    Arc::new(if level == 0 {
        Node::Leaf(Leaf {
            slots: [SlotId::ZERO; FANOUT],
            store: Arc::clone(store),
        })
    } else {
        Node::Branch([const { None }; FANOUT])
    })
}

/// The subtree at `level` covering the pages from `base` that hold `entries` (all of them in
/// its range); `None` when there are none. Takes no holds on the slots.
fn build(
    entries: &[(usize, SlotId)],
    level: u32,
    base: usize,
    store: &Arc<Store>,
) -> Option<Arc<Node>> {
    if entries.is_empty() {
        return None;
    }
    if level == 0 {
        let mut slots = [SlotId::ZERO; FANOUT];
        for &(page, slot) in entries {
            slots[page - base] = slot;
        }
        return Some(Arc::new(Node::Leaf(Leaf {
            slots,
            store: Arc::clone(store),
        })));
    }
    let child_span = span(level - 1);
    let mut children = [const { None }; FANOUT];
    let mut rest = entries;
    for (i, child) in children.iter_mut().enumerate() {
        let end = base + (i + 1) * child_span;
        let n = rest.partition_point(|e| e.0 < end);
        let (mine, after) = rest.split_at(n);
        *child = build(mine, level - 1, base + i * child_span, store);
        rest = after;
    }
    Some(Arc::new(Node::Branch(children)))
}

fn span(level: u32) -> usize {
    FANOUT << (FANOUT_BITS * level)
}

fn diff_nodes(
    a: Option<&Arc<Node>>,
    b: Option<&Arc<Node>>,
    level: u32,
    base: usize,
    f: &mut impl FnMut(usize),
) {
    match (a, b) {
        (None, None) => {}
        (Some(x), Some(y)) if Arc::ptr_eq(x, y) => {}
        (Some(x), Some(y)) => match (&**x, &**y) {
            (Node::Leaf(p), Node::Leaf(q)) => {
                for i in 0..FANOUT {
                    if p.slots[i] != q.slots[i] {
                        f(base + i);
                    }
                }
            }
            (Node::Branch(p), Node::Branch(q)) => {
                for i in 0..FANOUT {
                    diff_nodes(
                        p[i].as_ref(),
                        q[i].as_ref(),
                        level - 1,
                        base + i * span(level - 1),
                        f,
                    );
                }
            }
            _ => unreachable!("tables of one size have the same shape"),
        },
        (Some(x), None) | (None, Some(x)) => {
            visit_leaves(Some(x), level, base, &mut |leaf_base, slots| {
                for (i, s) in slots.iter().enumerate() {
                    if !s.is_zero() {
                        f(leaf_base + i);
                    }
                }
            });
        }
    }
}

fn visit_leaves(
    node: Option<&Arc<Node>>,
    level: u32,
    base: usize,
    f: &mut impl FnMut(usize, &[SlotId; FANOUT]),
) {
    match node.map(|n| &**n) {
        None => {}
        Some(Node::Leaf(leaf)) => f(base, &leaf.slots),
        Some(Node::Branch(children)) => {
            for (i, child) in children.iter().enumerate() {
                visit_leaves(child.as_ref(), level - 1, base + i * span(level - 1), f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_built_from_entries_counts_its_data_pages() {
        let store = Store::new(4096, None);
        let run = store.freeze(&[&vec![7u8; 4096 * 2]], 1).unwrap();
        let s0 = run.slots()[0];
        let entries = [(3, s0), (4, SlotId::ZERO), (700, s0.offset(1))];
        let mut t = PageTable::from_sorted(1000, Arc::clone(&store), &entries);
        drop(run);
        assert_eq!(t.data_pages(), 2);
        t.set(3, SlotId::ZERO);
        t.set(4, SlotId::ZERO);
        assert_eq!(t.data_pages(), 1);
        assert_eq!(t.get(700), s0.offset(1));
    }

    #[test]
    fn set_get_diff_and_refcounts() {
        let store = Store::new(4096, None);
        let run = store.freeze(&[&vec![7u8; 4096 * 3]], 1).unwrap();
        let s0 = run.slots()[0];
        let mut a = PageTable::new(10_000, Arc::clone(&store));
        a.set(5, s0);
        a.set(6, s0.offset(1));
        a.set(9000, s0.offset(2));
        drop(run);
        assert_eq!(store.stats().live_pages, 3);
        assert_eq!(a.data_pages(), 3);
        let b = a.clone();
        a.set(6, SlotId::ZERO);
        assert_eq!((a.data_pages(), b.data_pages()), (2, 3));
        assert_eq!(a.get(5), s0);
        assert_eq!(b.get(6), s0.offset(1));
        let mut changed = Vec::new();
        a.diff(&b, |p| changed.push(p));
        assert_eq!(changed, vec![6]);
        let mut runs = Vec::new();
        b.for_each_run(|p, n, s| runs.push((p, n, s)));
        assert_eq!(runs, vec![(5, 2, s0), (9000, 1, s0.offset(2))]);
        assert!(!a.same_as(&b));
        let built = PageTable::from_sorted(
            10_000,
            Arc::clone(&store),
            &[(5, s0), (6, s0.offset(1)), (9000, s0.offset(2))],
        );
        assert!(built.same_as(&b));
        assert_eq!(
            (built.get(5), built.get(6), built.get(7)),
            (s0, s0.offset(1), SlotId::ZERO)
        );
        assert_eq!(store.stats().live_pages, 3);
        drop(built);
        drop(b);
        assert_eq!(store.stats().live_pages, 2);
        drop(a);
        assert_eq!(store.stats().live_pages, 0);
    }
}
