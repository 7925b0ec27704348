//! The workloads, written once against `Strategy`.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::strategy::{expected_u8, mix, wrong, PagePicker, Res, Strategy};
use crate::sys::{self, MemSample, Shared};

/// Where the first_write workload's child (fork) leaves its timing.
const SLOT_FIRST_WRITE: usize = 100;
/// DFS per-level checksums live in slots `0..=depth`.
pub const MAX_DFS_DEPTH: u32 = 20;

/// One byte in each of `k` distinct pseudo-random pages, at a pseudo-random offset in the page.
/// The value differs from the fill pattern, so a restore that misses the page shows.
pub fn pick_writes(picker: &mut PagePicker, k: usize, page: usize) -> Vec<(usize, u8)> {
    let pages = picker.pick(k).to_vec();
    writes_to(picker, pages, page)
}

fn writes_to(picker: &mut PagePicker, pages: Vec<u32>, page: usize) -> Vec<(usize, u8)> {
    pages
        .into_iter()
        .map(|p| {
            let off = p as usize * page + picker.rng().below(page);
            (off, !expected_u8(off))
        })
        .collect()
}

fn check_restored<S: Strategy>(s: &S, writes: &[(usize, u8)]) -> Res<()> {
    for &(off, _) in writes {
        let (got, want) = (s.read_u8(off), expected_u8(off));
        if got != want {
            return Err(wrong(format!(
                "{}: wrong restore: byte at offset {off} is {got:#04x}, expected the pre-snapshot {want:#04x}",
                S::NAME
            )));
        }
    }
    Ok(())
}

/// Runs `f` at least once and until `budget` has passed or `max` samples were taken.
pub fn sample_loop(budget: Duration, max: usize, mut f: impl FnMut() -> Res<f64>) -> Res<Vec<f64>> {
    let start = Instant::now();
    let mut v = Vec::new();
    while v.len() < max && (v.is_empty() || start.elapsed() < budget) {
        v.push(f()?);
    }
    Ok(v)
}

/// One cycle: snapshot, write one byte in each of `k` pages, restore, verify. Returns nanoseconds.
pub fn cycle<S: Strategy>(s: &mut S, picker: &mut PagePicker, k: usize) -> Res<f64> {
    let writes = pick_writes(picker, k, sys::page_size());
    cycle_with(s, &writes)
}

/// One cold cycle: a cycle whose `k` pages were never written since the state was set up (and,
/// for cowarena, frozen whole). `picker` hands out fresh pages only (`pick_fresh`).
pub fn cold<S: Strategy>(s: &mut S, picker: &mut PagePicker, k: usize) -> Res<f64> {
    let page = sys::page_size();
    let pages = picker.pick_fresh(k).to_vec();
    let writes = writes_to(picker, pages, page);
    cycle_with(s, &writes)
}

fn cycle_with<S: Strategy>(s: &mut S, writes: &[(usize, u8)]) -> Res<f64> {
    let t = Instant::now();
    s.branches(1, &mut |s, _| {
        for &(off, v) in writes {
            s.write_u8(off, v)?;
        }
        Ok(())
    })?;
    check_restored(s, writes)?;
    Ok(t.elapsed().as_nanos() as f64)
}

/// Nanoseconds per page of the first writes to `n` distinct pages after a snapshot.
pub fn first_write<S: Strategy>(
    s: &mut S,
    picker: &mut PagePicker,
    n: usize,
    shared: &Shared,
) -> Res<f64> {
    let writes = pick_writes(picker, n, sys::page_size());
    shared.slot(SLOT_FIRST_WRITE).store(0, Relaxed);
    s.branches(1, &mut |s, _| {
        let t = Instant::now();
        for &(off, v) in &writes {
            s.write_u8(off, v)?;
        }
        let ns = t.elapsed().as_nanos() as u64;
        shared.slot(SLOT_FIRST_WRITE).store(ns, Relaxed);
        Ok(())
    })?;
    check_restored(s, &writes)?;
    Ok(shared.slot(SLOT_FIRST_WRITE).load(Relaxed) as f64 / writes.len() as f64)
}

/// The snapshot call alone, taken after `k` pages were written. Leaves those writes in place, so this
/// runs after the other workloads on a state.
pub fn snapshot<S: Strategy>(s: &mut S, picker: &mut PagePicker, k: usize) -> Res<f64> {
    let writes: Vec<(usize, u8)> = pick_writes(picker, k, sys::page_size())
        .into_iter()
        .map(|(off, _)| (off, picker.rng().next_u64() as u8))
        .collect();
    for &(off, v) in &writes {
        s.write_u8(off, v)?;
    }
    Ok(s.timed_snapshot(&writes)?.as_nanos() as f64)
}

pub const MEMORY_ARENA: usize = 256 << 20;
pub const MEMORY_PAGES_APART: usize = 16;

/// Bytes used by a 256 MiB state plus `n` live snapshots, each `MEMORY_PAGES_APART` pages apart from
/// the one before (see `MemSample` for what is counted).
pub fn memory<S: Strategy>(n: usize, seed: u64) -> Res<MemSample> {
    sys::trim_heap();
    let before = MemSample::now()?;
    let mut s = S::setup(MEMORY_ARENA)?;
    let page = sys::page_size();
    let mut picker = PagePicker::new(s.capacity() / page, seed);
    let mut last = Vec::new();
    for _ in 0..n {
        last = pick_writes(&mut picker, MEMORY_PAGES_APART, page);
        for &(off, v) in &last {
            s.write_u8(off, v)?;
        }
        s.snapshot()?;
    }
    let after = MemSample::now()?;
    // The newest snapshot must hold the newest writes.
    for &(off, _) in &last {
        s.write_u8(off, expected_u8(off))?;
    }
    s.restore()?;
    for &(off, v) in &last {
        if s.read_u8(off) != v {
            return Err(wrong(format!(
                "{}: memory workload: restore of the newest snapshot lost offset {off}",
                S::NAME
            )));
        }
    }
    drop(s);
    sys::trim_heap();
    Ok(after.minus(&before))
}

pub const DFS_ARENA: usize = 256 << 20;
pub const DFS_READS: usize = 4096;
pub const DFS_WRITES: usize = 8;

struct DfsCx<'a> {
    depth: u32,
    words: usize,
    shared: &'a Shared,
}

impl DfsCx<'_> {
    fn pos(&self, seed: u64) -> usize {
        ((u128::from(mix(seed)) * self.words as u128) >> 64) as usize * 8
    }
}

/// Node `id` (the root is 1, children of n are 2n and 2n+1) at `level`.
///
/// Half of a node's written words are chosen by its level alone, so nodes at the same level in the
/// left and right subtrees write the same words, and each node reads its words before writing them:
/// a write leaking out of a restored subtree changes the checksum. A right child also reads the words
/// its left sibling wrote.
fn node<S: Strategy>(s: &mut S, cx: &DfsCx<'_>, level: u32, id: u64) -> Res<()> {
    let mut own = [0usize; DFS_WRITES];
    for (j, o) in own.iter_mut().enumerate() {
        let j = j as u64;
        *o = if j < 4 {
            cx.pos((0x1e7e1 << 32) | (u64::from(level) << 8) | j)
        } else {
            cx.pos(mix(id) ^ j)
        };
    }
    let mut sum = 0u64;
    let mut add = |v: u64| sum = sum.wrapping_mul(0x0100_0000_01b3).wrapping_add(v);
    let mut reads = 0;
    for &o in &own {
        add(s.read_u64(o));
        reads += 1;
    }
    if level > 0 && id & 1 == 1 {
        let sibling = id ^ 1;
        for j in 4..DFS_WRITES as u64 {
            add(s.read_u64(cx.pos(mix(sibling) ^ j)));
            reads += 1;
        }
    }
    let mut rng = crate::strategy::Rng::new(mix(id ^ 0xdf5));
    for _ in reads..DFS_READS {
        add(s.read_u64(rng.below(cx.words) * 8));
    }
    for (j, &o) in own.iter().enumerate() {
        s.write_u64(o, mix(id.wrapping_mul(DFS_WRITES as u64) + j as u64))?;
    }
    cx.shared.slot(level as usize).fetch_add(sum, Relaxed);
    if level < cx.depth {
        s.branches(2, &mut |s, i| node(s, cx, level + 1, 2 * id + i as u64))?;
    }
    Ok(())
}

pub struct DfsRun {
    pub elapsed: Duration,
    pub nodes: u64,
    /// Sum of the checksums of the nodes at each level; the same for every strategy.
    pub level_sums: Vec<u64>,
}

/// A full binary tree of `depth` levels below the root, explored depth-first from `s`'s state;
/// `s` is back in that state afterwards.
pub fn dfs<S: Strategy>(s: &mut S, depth: u32, shared: &Shared) -> Res<DfsRun> {
    assert!(depth <= MAX_DFS_DEPTH);
    for l in 0..=depth as usize {
        shared.slot(l).store(0, Relaxed);
    }
    let cx = DfsCx {
        depth,
        words: s.capacity() / 8,
        shared,
    };
    let t = Instant::now();
    s.branches(1, &mut |s, _| node(s, &cx, 0, 1))?;
    let elapsed = t.elapsed();
    Ok(DfsRun {
        elapsed,
        nodes: (1u64 << (depth + 1)) - 1,
        level_sums: (0..=depth as usize)
            .map(|l| shared.slot(l).load(Relaxed))
            .collect(),
    })
}
