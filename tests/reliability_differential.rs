//! Differential fuzzing of the whole public API against plain models.
//!
//! Long random sequences (deterministic xorshift RNG per seed) mix raw writes (safe and through
//! `as_mut_ptr`), snapshots, restores to any live snapshot in any order, snapshot drops,
//! `to_arena`, proxies (reads through, own writes, source restores, proxy snapshots restored
//! into the source, sources dropped), snapshot files (save, save_delta chains, open), forked
//! branches (`fork_run`, `fork_snapshot`, whose snapshot is then restored), typed values and
//! collections (views of small and of large elements, `slice_mut`, `lend_mut`, `entry`), under
//! default and tight private/mapping budgets and a backing directory. After every step every
//! byte of every live arena, proxy and snapshot is compared with its model (a `Vec<u8>`), and
//! typed values and collections with theirs (`Vec`/`HashMap`).
//!
//! Environment: `COWFUZZ_SEEDS` (number of seeds, default 60), `COWFUZZ_FIRST` (first seed,
//! default 1), `COWFUZZ_STEPS` (steps per seed, default 300), `COWFUZZ_VERBOSE=1` (print ops).

use cowarena::{Arena, ArenaBytes, ArenaMap, ArenaVec, Error, Proxy, Ptr, Snapshot, View, ViewMut};
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::rc::Rc;

mod common;
use common::{serial, Rng};

const BIGN: usize = 1100; // 4400 bytes: larger than a page
type Big = [u32; BIGN];

#[derive(Clone, Default)]
struct TModel {
    objs: Vec<(Ptr<u64>, u64)>,
    bigs: Vec<(Ptr<Big>, Vec<u32>)>,
    vecs: Vec<(ArenaVec<u32>, Vec<u32>)>,
    bigvecs: Vec<(ArenaVec<Big>, Vec<Vec<u32>>)>,
    maps: Vec<(ArenaMap<u32, u64>, HashMap<u32, u64>)>,
    bytes: Vec<(ArenaBytes, Vec<u8>)>,
}

struct ASlot {
    id: usize,
    arena: Arena,
    model: Vec<u8>,
    typed: Option<TModel>,
    store: usize,
    shared: bool,
}

struct SSlot {
    id: usize,
    snap: Snapshot,
    model: Rc<Vec<u8>>,
    typed: Option<Rc<TModel>>,
    store: usize,
    saved: bool,
    via_read: bool,
}

struct PSlot {
    id: usize,
    proxy: Proxy,
    source: Option<usize>,
    store: usize,
    own: BTreeMap<usize, Vec<u8>>,
    frozen: Option<Vec<u8>>,
}

struct FileRec {
    path: PathBuf,
    model: Rc<Vec<u8>>,
    typed: Option<Rc<TModel>>,
}

struct World {
    seed: u64,
    page: usize,
    rng: Rng,
    next_id: usize,
    next_store: usize,
    arenas: Vec<ASlot>,
    snaps: Vec<SSlot>,
    proxies: Vec<PSlot>,
    files: Vec<FileRec>,
    dir: PathBuf,
    backing: PathBuf,
    log: Vec<String>,
    /// Every object handle seen in a typed model: where a model does not hold it, it is stale
    /// (freed, or undone by a restore) and must not name an object.
    seen_objs: Vec<Ptr<u64>>,
    seen_bigs: Vec<Ptr<Big>>,
    verbose: bool,
    step: usize,
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(usize::MAX);
    }
    if a == b {
        return None;
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

impl World {
    fn new(seed: u64) -> World {
        let page = cowarena::page_size();
        let dir = std::env::temp_dir().join(format!("cowfuzz-{}-{seed}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let backing = dir.join("backing");
        std::fs::create_dir_all(&backing).unwrap();
        World {
            seed,
            page,
            rng: Rng::new(seed),
            next_id: 0,
            next_store: 0,
            arenas: Vec::new(),
            snaps: Vec::new(),
            proxies: Vec::new(),
            files: Vec::new(),
            dir,
            backing,
            log: Vec::new(),
            seen_objs: Vec::new(),
            seen_bigs: Vec::new(),
            verbose: std::env::var("COWFUZZ_VERBOSE").is_ok(),
            step: 0,
        }
    }

    fn id(&mut self) -> usize {
        self.next_id += 1;
        self.next_id
    }

    fn note(&mut self, s: String) {
        if self.verbose {
            eprintln!("[seed {} step {}] {s}", self.seed, self.step);
        }
        self.log.push(format!("step {}: {s}", self.step));
    }

    fn fail(&self, msg: String) -> ! {
        let tail: Vec<&String> = self.log.iter().rev().take(60).collect();
        let mut text = String::new();
        for l in tail.iter().rev() {
            text.push_str(l);
            text.push('\n');
        }
        panic!(
            "seed {} step {}: {msg}\nlast ops:\n{text}",
            self.seed, self.step
        );
    }

    fn new_root_arena(&mut self) {
        let page = self.page;
        let caps = [16 * page, 64 * page, 256 * page, 1024 * page];
        let w = self.rng.below(10);
        let cap = caps[if w < 3 {
            0
        } else if w < 6 {
            1
        } else if w < 9 {
            2
        } else {
            3
        }];
        let mode = self.rng.below(4);
        let mut b = Arena::builder(cap);
        let desc;
        match mode {
            0 => desc = "default",
            1 | 2 => {
                let budget = self.rng.range(1, 4) * page;
                let maps = self.rng.range(8, 12);
                b = b.private_budget(budget).mapping_budget(maps);
                desc = "tight";
            }
            _ => {
                b = b
                    .backing_dir(&self.backing)
                    .private_budget(2 * page)
                    .mapping_budget(8);
                desc = "backing_dir+tight";
            }
        }
        let arena = b.build().unwrap();
        let typed = if cap >= 64 * page && self.rng.chance(60) {
            Some(TModel::default())
        } else {
            None
        };
        let id = self.id();
        let store = self.next_store;
        self.next_store += 1;
        self.note(format!(
            "new arena #{id} cap {} pages {desc} typed={}",
            cap / page,
            typed.is_some()
        ));
        self.arenas.push(ASlot {
            id,
            arena,
            model: vec![0; cap],
            typed,
            store,
            shared: false,
        });
    }

    fn live_proxies_of(&self, arena_id: usize) -> usize {
        self.proxies
            .iter()
            .filter(|p| p.source == Some(arena_id))
            .count()
    }

    // ---------- checks ----------

    fn proxy_model(&self, p: &PSlot) -> Vec<u8> {
        let mut m = match (&p.frozen, p.source) {
            (Some(f), _) => f.clone(),
            (None, Some(src)) => self
                .arenas
                .iter()
                .find(|a| a.id == src)
                .unwrap()
                .model
                .clone(),
            _ => unreachable!(),
        };
        for (&pg, bytes) in &p.own {
            m[pg * self.page..(pg + 1) * self.page].copy_from_slice(bytes);
        }
        m
    }

    fn check_stale(&self, v: &impl View, t: &TModel) -> Result<(), String> {
        for p in &self.seen_objs {
            if !t.objs.iter().any(|(q, _)| q == p) && v.try_get(*p).is_ok() {
                return Err(format!("stale {p:?} still names an object"));
            }
        }
        for p in &self.seen_bigs {
            if !t.bigs.iter().any(|(q, _)| q == p) && v.try_get(*p).is_ok() {
                return Err(format!("stale big {p:?} still names an object"));
            }
        }
        Ok(())
    }

    fn collect_seen(&mut self) {
        let mut objs = std::mem::take(&mut self.seen_objs);
        let mut bigs = std::mem::take(&mut self.seen_bigs);
        let models = self
            .arenas
            .iter()
            .filter_map(|a| a.typed.as_ref())
            .chain(self.snaps.iter().filter_map(|s| s.typed.as_deref()));
        for t in models {
            for (p, _) in &t.objs {
                if !objs.contains(p) {
                    objs.push(*p);
                }
            }
            for (p, _) in &t.bigs {
                if !bigs.contains(p) {
                    bigs.push(*p);
                }
            }
        }
        if objs.len() > 200 {
            objs.drain(..objs.len() - 200);
        }
        if bigs.len() > 100 {
            bigs.drain(..bigs.len() - 100);
        }
        self.seen_objs = objs;
        self.seen_bigs = bigs;
    }

    fn check_all(&mut self) {
        self.collect_seen();
        for i in 0..self.arenas.len() {
            let a = &self.arenas[i];
            if let Some(off) = first_diff(a.arena.as_bytes(), &a.model) {
                self.fail(format!(
                    "arena #{} differs from its model at byte {off} (page {}): got {} want {}",
                    a.id,
                    off / self.page,
                    a.arena.as_bytes()[off],
                    a.model[off]
                ));
            }
            if let Some(t) = &a.typed {
                if let Err(e) =
                    check_typed(&a.arena, t).and_then(|()| self.check_stale(&a.arena, t))
                {
                    self.fail(format!("arena #{} typed: {e}", a.id));
                }
            }
        }
        for i in 0..self.snaps.len() {
            let s = &self.snaps[i];
            let got: Vec<u8>;
            let bytes: &[u8] = if s.via_read {
                let mut buf = vec![0u8; s.snap.capacity()];
                s.snap.read(0, &mut buf).unwrap();
                got = buf;
                &got
            } else {
                s.snap.as_bytes()
            };
            if let Some(off) = first_diff(bytes, &s.model) {
                let (g, w) = if off == usize::MAX {
                    (0, 0)
                } else {
                    (bytes[off], s.model[off])
                };
                self.fail(format!(
                    "snapshot #{} (via_read={}) differs at byte {off} (page {}): got {g} want {w}",
                    s.id,
                    s.via_read,
                    off / self.page
                ));
            }
            if let Some(t) = &s.typed {
                if let Err(e) = check_typed(&s.snap, t).and_then(|()| self.check_stale(&s.snap, t))
                {
                    self.fail(format!("snapshot #{} typed: {e}", s.id));
                }
            }
        }
        for i in 0..self.proxies.len() {
            let p = &self.proxies[i];
            let want = self.proxy_model(p);
            let got = match p.source {
                Some(src) => {
                    let a = &self.arenas.iter().find(|a| a.id == src).unwrap().arena;
                    p.proxy.with(a).unwrap().as_bytes().to_vec()
                }
                None => p.proxy.without_source().unwrap().as_bytes().to_vec(),
            };
            if let Some(off) = first_diff(&got, &want) {
                self.fail(format!(
                    "proxy #{} (source {:?}) differs at byte {off} (page {}): got {} want {}",
                    p.id,
                    p.source,
                    off / self.page,
                    got[off],
                    want[off]
                ));
            }
        }
    }

    // ---------- helpers ----------

    fn pick_range(&mut self, cap: usize) -> (usize, usize) {
        let page = self.page;
        let len = match self.rng.below(10) {
            0..=2 => self.rng.range(1, 16),
            3..=5 => self.rng.range(1, page),
            6..=8 => self.rng.range(page / 2, 3 * page),
            _ => self.rng.range(1, 40 * page),
        }
        .min(cap);
        let off = if self.rng.chance(50) {
            // near a page boundary
            let pg = self.rng.below(cap / page);
            (pg * page + page).saturating_sub(self.rng.range(1, 64.min(len.max(1))))
        } else {
            self.rng.below(cap)
        };
        let off = off.min(cap - len);
        (off, len)
    }

    fn pick_arena(&mut self) -> usize {
        self.rng.below(self.arenas.len())
    }

    // ---------- raw ops ----------

    fn op_write(&mut self) {
        let i = self.pick_arena();
        if self.arenas[i].typed.is_some() && !self.rng.chance(1) {
            return self.op_typed_raw_write(i);
        }
        let cap = self.arenas[i].model.len();
        let nwrites = self.rng.range(1, 6);
        let kind = self.rng.below(3);
        let mut ranges = Vec::new();
        let mut datas = Vec::new();
        for _ in 0..nwrites {
            let (off, len) = self.pick_range(cap);
            let data = self.rng.bytes(len);
            ranges.push((off, len));
            datas.push(data);
        }
        let a = &mut self.arenas[i];
        a.typed = None; // raw bytes over the allocator's data: no longer typed
        match kind {
            0 => {
                for ((off, _), d) in ranges.iter().zip(&datas) {
                    a.arena.write(*off, d).unwrap();
                }
            }
            1 => {
                for ((off, len), d) in ranges.iter().zip(&datas) {
                    a.arena
                        .bytes_mut(*off..*off + *len)
                        .unwrap()
                        .copy_from_slice(d);
                }
            }
            // SAFETY: every range is inside the arena (as for `write` above), and the pointer is
            // used before any other call on the arena.
            _ => unsafe {
                let p = a.arena.as_mut_ptr();
                for ((off, len), d) in ranges.iter().zip(&datas) {
                    std::ptr::copy_nonoverlapping(d.as_ptr(), p.add(*off), *len);
                }
            },
        }
        for ((off, len), d) in ranges.iter().zip(&datas) {
            a.model[*off..*off + *len].copy_from_slice(d);
        }
        let id = a.id;
        self.note(format!(
            "arena #{id}: {} writes {:?}",
            ["write", "bytes_mut", "raw ptr"][kind],
            ranges
        ));
    }

    /// Raw write through `as_mut_ptr` into a big object's or a vector's elements.
    fn op_typed_raw_write(&mut self, i: usize) {
        let a = &mut self.arenas[i];
        let t = a.typed.as_mut().unwrap();
        let base = a.arena.as_bytes().as_ptr() as usize;
        if !t.bigs.is_empty() && (t.vecs.is_empty() || self.rng.chance(50)) {
            let j = self.rng.below(t.bigs.len());
            let k = self.rng.below(BIGN);
            let n = self.rng.range(1, BIGN - k);
            let v = self.rng.next() as u32;
            let off = t.bigs[j].0.offset() + 4 * k;
            // SAFETY: elements `k..k + n` of the live object are inside the arena; no borrow of
            // the arena is live, and the pointer is used before any other call on it.
            unsafe {
                let p = a.arena.as_mut_ptr().add(off).cast::<u32>();
                for x in 0..n {
                    p.add(x).write_unaligned(v.wrapping_add(x as u32));
                }
            }
            for x in 0..n {
                t.bigs[j].1[k + x] = v.wrapping_add(x as u32);
            }
            let id = a.id;
            self.note(format!("arena #{id}: raw ptr write big[{j}][{k}..+{n}]"));
        } else if !t.vecs.is_empty() {
            let j = self.rng.below(t.vecs.len());
            let len = t.vecs[j].1.len();
            if len == 0 {
                return;
            }
            let off = t.vecs[j].0.as_slice(&a.arena).as_ptr() as usize - base;
            let k = self.rng.below(len);
            let n = self.rng.range(1, len - k);
            let v = self.rng.next() as u32;
            // SAFETY: elements `k..k + n` of the vector are inside the arena (and aligned, as its
            // slice was); no borrow of the arena is live, and the pointer is used before any
            // other call on it.
            unsafe {
                let p = a.arena.as_mut_ptr().add(off).cast::<u32>();
                for x in 0..n {
                    p.add(k + x).write(v ^ x as u32);
                }
            }
            for x in 0..n {
                t.vecs[j].1[k + x] = v ^ x as u32;
            }
            let id = a.id;
            self.note(format!("arena #{id}: raw ptr write vec[{j}][{k}..+{n}]"));
        } else {
            return;
        }
        self.resync(i);
    }

    /// After typed ops, the byte model is taken from the arena (checked through the typed
    /// model), so snapshots can be compared byte for byte.
    fn resync(&mut self, i: usize) {
        let a = &mut self.arenas[i];
        a.model.copy_from_slice(a.arena.as_bytes());
    }

    fn op_snapshot(&mut self) {
        if self.snaps.len() >= 16 {
            self.op_drop_snapshot();
        }
        let i = self.pick_arena();
        let live = self.live_proxies_of(self.arenas[i].id);
        let a = &mut self.arenas[i];
        let snap = a.arena.snapshot().unwrap();
        if live == 0 {
            a.shared = false;
        }
        let id = self.next_id + 1;
        self.next_id = id;
        let via_read = self.rng.chance(30);
        let s = SSlot {
            id,
            snap,
            model: Rc::new(a.model.clone()),
            typed: a.typed.clone().map(Rc::new),
            store: a.store,
            saved: false,
            via_read,
        };
        let aid = a.id;
        self.note(format!("arena #{aid}: snapshot -> #{id}"));
        self.snaps.push(s);
    }

    fn op_restore(&mut self) {
        let i = self.pick_arena();
        let store = self.arenas[i].store;
        let cands: Vec<usize> = (0..self.snaps.len())
            .filter(|&k| self.snaps[k].store == store)
            .collect();
        if cands.is_empty() {
            // a foreign snapshot must be refused, changing nothing
            if !self.snaps.is_empty() {
                let k = self.rng.below(self.snaps.len());
                let r = self.arenas[i].arena.restore(&self.snaps[k].snap);
                if !matches!(
                    r,
                    Err(Error::ForeignSnapshot) | Err(Error::CapacityMismatch { .. })
                ) {
                    self.fail(format!("foreign restore gave {r:?}"));
                }
                let (aid, sid) = (self.arenas[i].id, self.snaps[k].id);
                self.note(format!("arena #{aid}: restore foreign #{sid} refused"));
            }
            return;
        }
        let k = cands[self.rng.below(cands.len())];
        let live = self.live_proxies_of(self.arenas[i].id);
        let (aid, sid) = (self.arenas[i].id, self.snaps[k].id);
        self.note(format!("arena #{aid}: restore #{sid}"));
        let a = &mut self.arenas[i];
        let s = &self.snaps[k];
        a.arena.restore(&s.snap).unwrap();
        a.model.copy_from_slice(&s.model);
        a.typed = s.typed.as_ref().map(|t| (**t).clone());
        if live == 0 {
            a.shared = false;
        }
    }

    fn op_drop_snapshot(&mut self) {
        if self.snaps.is_empty() {
            return;
        }
        let k = self.rng.below(self.snaps.len());
        let s = self.snaps.swap_remove(k);
        self.note(format!("drop snapshot #{}", s.id));
    }

    fn op_to_arena(&mut self) {
        if self.snaps.is_empty() {
            return;
        }
        if self.arenas.len() >= 5 {
            self.op_drop_arena();
        }
        let k = self.rng.below(self.snaps.len());
        let s = &self.snaps[k];
        let arena = s.snap.to_arena().unwrap();
        let id = self.next_id + 1;
        self.next_id = id;
        let slot = ASlot {
            id,
            arena,
            model: (*s.model).clone(),
            typed: s.typed.as_ref().map(|t| (**t).clone()),
            store: s.store,
            shared: false,
        };
        let sid = s.id;
        self.note(format!("snapshot #{sid}: to_arena -> arena #{id}"));
        self.arenas.push(slot);
    }

    fn op_drop_arena(&mut self) {
        if self.arenas.len() <= 1 {
            return;
        }
        let i = self.pick_arena();
        let a = self.arenas.swap_remove(i);
        let aid = a.id;
        // its proxies keep its last bytes
        let model = a.model.clone();
        drop(a);
        for p in &mut self.proxies {
            if p.source == Some(aid) {
                let mut m = model.clone();
                for (&pg, bytes) in &p.own {
                    m[pg * self.page..(pg + 1) * self.page].copy_from_slice(bytes);
                }
                p.frozen = Some(m);
                p.own.clear();
                p.source = None;
            }
        }
        self.note(format!("drop arena #{aid}"));
    }

    fn op_from_bytes(&mut self) {
        if self.snaps.is_empty() || self.arenas.len() >= 5 {
            return;
        }
        let k = self.rng.below(self.snaps.len());
        let s = &self.snaps[k];
        let arena = Arena::from_bytes(&s.model).unwrap();
        let id = self.next_id + 1;
        self.next_id = id;
        let store = self.next_store;
        self.next_store += 1;
        let sid = s.id;
        let slot = ASlot {
            id,
            arena,
            model: (*s.model).clone(),
            typed: None,
            store,
            shared: false,
        };
        self.note(format!("from_bytes(snapshot #{sid}) -> arena #{id}"));
        self.arenas.push(slot);
    }

    // ---------- proxies ----------

    fn op_proxy_new(&mut self) {
        if self.proxies.len() >= 3 {
            return;
        }
        let i = self.pick_arena();
        let a = &mut self.arenas[i];
        let proxy = a.arena.proxy().unwrap();
        a.shared = true;
        let aid = a.id;
        let store = a.store;
        let id = self.id();
        self.note(format!("arena #{aid}: proxy -> #{id}"));
        self.proxies.push(PSlot {
            id,
            proxy,
            store,
            source: Some(aid),
            own: BTreeMap::new(),
            frozen: None,
        });
    }

    fn op_proxy_write(&mut self) {
        if self.proxies.is_empty() {
            return;
        }
        let j = self.rng.below(self.proxies.len());
        let cap = self.proxies[j].proxy.capacity();
        let (off, len) = self.pick_range(cap);
        // mode 0: write; 1: bytes_mut of the range, all written; 2: bytes_mut of the range
        // (pages marked) with only a sub-range written: only written pages become the proxy's
        let mode = self.rng.below(3);
        let (woff, wlen) = if mode == 2 {
            let s = self.rng.below(len);
            (off + s, self.rng.range(1, len - s))
        } else {
            (off, len)
        };
        let data = self.rng.bytes(wlen);
        let page = self.page;
        let src = self.proxies[j].source;
        let write = |m: &mut cowarena::ProxyMut<'_>| match mode {
            0 => m.write(off, &data).unwrap(),
            _ => m.bytes_mut(off..off + len).unwrap()[woff - off..woff - off + wlen]
                .copy_from_slice(&data),
        };
        // Model first: every page lent for writing becomes the proxy's own, written or not,
        // starting from the source's current bytes.
        if let Some(src) = src {
            let src_model = self
                .arenas
                .iter()
                .find(|a| a.id == src)
                .unwrap()
                .model
                .clone();
            let p = &mut self.proxies[j];
            for pg in off / page..(off + len).div_ceil(page) {
                p.own
                    .entry(pg)
                    .or_insert_with(|| src_model[pg * page..(pg + 1) * page].to_vec());
            }
            for (x, &b) in data.iter().enumerate() {
                let at = woff + x;
                p.own.get_mut(&(at / page)).unwrap()[at % page] = b;
            }
            let a = &self.arenas.iter().find(|a| a.id == src).unwrap().arena;
            let mut m = p.proxy.with_mut(a).unwrap();
            write(&mut m);
        } else {
            let p = &mut self.proxies[j];
            p.frozen.as_mut().unwrap()[woff..woff + wlen].copy_from_slice(&data);
            let mut m = p.proxy.without_source_mut().unwrap();
            write(&mut m);
        }
        let id = self.proxies[j].id;
        self.note(format!(
            "proxy #{id}: {} {off}+{len} (written {woff}+{wlen})",
            ["write", "bytes_mut", "bytes_mut partial"][mode]
        ));
    }

    fn op_proxy_snapshot(&mut self) {
        if self.proxies.is_empty() {
            return;
        }
        if self.snaps.len() >= 16 {
            self.op_drop_snapshot();
        }
        let j = self.rng.below(self.proxies.len());
        let model = self.proxy_model(&self.proxies[j]);
        let src = self.proxies[j].source;
        let (snap, store) = match src {
            Some(src) => {
                let a = self.arenas.iter().find(|a| a.id == src).unwrap();
                let store = a.store;
                let p = &mut self.proxies[j];
                (
                    p.proxy.with_mut(&a.arena).unwrap().snapshot().unwrap(),
                    store,
                )
            }
            None => {
                let p = &mut self.proxies[j];
                // still the (dropped) source's page store
                let s = p.proxy.without_source_mut().unwrap().snapshot().unwrap();
                (s, p.store)
            }
        };
        let id = self.id();
        let pid = self.proxies[j].id;
        self.note(format!("proxy #{pid}: snapshot -> #{id}"));
        let via_read = self.rng.chance(30);
        self.snaps.push(SSlot {
            id,
            snap,
            model: Rc::new(model),
            typed: None,
            store,
            saved: false,
            via_read,
        });
    }

    fn op_proxy_drop(&mut self) {
        if self.proxies.is_empty() {
            return;
        }
        let j = self.rng.below(self.proxies.len());
        let p = self.proxies.swap_remove(j);
        self.note(format!("drop proxy #{}", p.id));
    }

    // ---------- files ----------

    fn op_save(&mut self) {
        if self.snaps.is_empty() || self.files.len() >= 24 {
            return;
        }
        let k = self.rng.below(self.snaps.len());
        let n = self.files.len();
        let path = self.dir.join(format!("f{n}.snap"));
        let bases: Vec<usize> = (0..self.snaps.len())
            .filter(|&b| {
                self.snaps[b].saved && self.snaps[b].model.len() == self.snaps[k].model.len()
            })
            .collect();
        let sid = self.snaps[k].id;
        if !bases.is_empty() && self.rng.chance(60) {
            let b = bases[self.rng.below(bases.len())];
            let bid = self.snaps[b].id;
            self.snaps[k]
                .snap
                .save_delta(&path, &self.snaps[b].snap)
                .unwrap_or_else(|e| self.fail(format!("save_delta: {e}")));
            self.note(format!("snapshot #{sid}: save_delta f{n} base #{bid}"));
        } else {
            self.snaps[k].snap.save(&path).unwrap();
            self.note(format!("snapshot #{sid}: save f{n}"));
        }
        self.snaps[k].saved = true;
        self.files.push(FileRec {
            path,
            model: Rc::clone(&self.snaps[k].model),
            typed: self.snaps[k].typed.clone(),
        });
    }

    fn op_open(&mut self) {
        if self.files.is_empty() {
            return;
        }
        if self.snaps.len() >= 16 {
            self.op_drop_snapshot();
        }
        let f = self.rng.below(self.files.len());
        let path = self.files[f].path.clone();
        let into: Vec<usize> = (0..self.arenas.len())
            .filter(|&i| self.arenas[i].model.len() == self.files[f].model.len())
            .collect();
        let (snap, store, how) = if !into.is_empty() && self.rng.chance(50) {
            let i = into[self.rng.below(into.len())];
            let a = &self.arenas[i];
            (
                a.arena.open_snapshot(&path).unwrap(),
                a.store,
                format!("arena #{}.open_snapshot", a.id),
            )
        } else {
            let s = Snapshot::open(&path).unwrap();
            let store = self.next_store;
            self.next_store += 1;
            (s, store, "Snapshot::open".to_string())
        };
        let id = self.id();
        self.note(format!("{how}(f{f}) -> #{id}"));
        let via_read = self.rng.chance(30);
        self.snaps.push(SSlot {
            id,
            snap,
            model: Rc::clone(&self.files[f].model),
            typed: self.files[f].typed.clone(),
            store,
            saved: true,
            via_read,
        });
    }

    // ---------- forks ----------

    fn op_fork(&mut self) {
        let i = self.pick_arena();
        let aid = self.arenas[i].id;
        let own_live = self.live_proxies_of(aid) > 0;
        let others_shared = self
            .arenas
            .iter()
            .any(|a| a.id != aid && (a.shared || self.live_proxies_of(a.id) > 0));
        let refused = own_live || others_shared;
        // plan the branch's writes
        let cap = self.arenas[i].model.len();
        let mut fops: Vec<FOp> = Vec::new();
        let n = self.rng.range(1, 6);
        for _ in 0..n {
            if let Some(t) = &self.arenas[i].typed {
                match self.rng.below(3) {
                    0 if !t.bigs.is_empty() => {
                        let j = self.rng.below(t.bigs.len());
                        let k = self.rng.below(BIGN);
                        let at = t.bigs[j].0.offset() + 4 * k;
                        fops.push(FOp::Big(t.bigs[j].0, j, k, self.rng.next() as u32, at));
                    }
                    1 if !t.bigvecs.is_empty() => {
                        let j = self.rng.below(t.bigvecs.len());
                        let len = t.bigvecs[j].1.len();
                        if len > 0 {
                            let e = self.rng.below(len);
                            let k = self.rng.below(BIGN);
                            let base = self.arenas[i].arena.as_bytes().as_ptr() as usize;
                            let at = t.bigvecs[j].0.as_slice(&self.arenas[i].arena).as_ptr()
                                as usize
                                - base
                                + (e * BIGN + k) * 4;
                            fops.push(FOp::BigVec(
                                t.bigvecs[j].0,
                                j,
                                e,
                                k,
                                self.rng.next() as u32,
                                at,
                            ));
                        }
                    }
                    _ if !t.vecs.is_empty() => {
                        let j = self.rng.below(t.vecs.len());
                        let len = t.vecs[j].1.len();
                        if len > 0 {
                            let e = self.rng.below(len);
                            let base = self.arenas[i].arena.as_bytes().as_ptr() as usize;
                            let at = t.vecs[j].0.as_slice(&self.arenas[i].arena).as_ptr() as usize
                                - base
                                + e * 4;
                            fops.push(FOp::Vec(t.vecs[j].0, j, e, self.rng.next() as u32, at));
                        }
                    }
                    _ => {}
                }
            } else {
                let (off, len) = self.pick_range(cap);
                let raw = self.rng.chance(40);
                fops.push(FOp::Raw(off, self.rng.bytes(len), raw));
            }
        }
        let snapshot = self.rng.chance(70);
        let desc = format!(
            "arena #{aid}: fork_{} {} ops",
            if snapshot { "snapshot" } else { "run" },
            fops.len()
        );
        self.note(desc);
        let a = &mut self.arenas[i];
        let mut model = a.model.clone();
        let mut typed = a.typed.clone();
        for op in &fops {
            op.apply_model(&mut model, typed.as_mut());
        }
        let digest = fnv(&model);
        let ops2 = fops.clone();
        let typed_now = a.typed.is_some();
        if snapshot {
            let r = a.arena.fork_snapshot(move |b| {
                for op in &ops2 {
                    op.apply(b);
                }
                fnv(b.as_bytes())
            });
            if !own_live {
                a.shared = false;
            }
            match r {
                Err(e) if refused => {
                    self.note(format!("  refused: {e}"));
                }
                Err(e) => self.fail(format!("fork_snapshot failed: {e}")),
                Ok(_) if refused => self.fail("fork_snapshot not refused with proxies".into()),
                Ok((d, snap)) => {
                    if d != digest {
                        self.fail(format!("child saw other bytes: {d:x} vs {digest:x}"));
                    }
                    let store = a.store;
                    let id = self.next_id + 1;
                    self.next_id = id;
                    let via_read = self.rng.chance(30);
                    self.note(format!("  -> snapshot #{id}"));
                    if typed_now {
                        // the branch's model, resynced from the returned snapshot's bytes after
                        // checking its typed values
                        if let Err(e) = check_typed(&snap, typed.as_ref().unwrap()) {
                            self.fail(format!("fork_snapshot typed: {e}"));
                        }
                    }
                    if self.snaps.len() >= 16 {
                        self.op_drop_snapshot();
                    }
                    self.snaps.push(SSlot {
                        id,
                        snap,
                        model: Rc::new(model),
                        typed: typed.map(Rc::new),
                        store,
                        saved: false,
                        via_read,
                    });
                    if self.rng.chance(60) {
                        // take the branch
                        let k = self.snaps.len() - 1;
                        let i = self.arenas.iter().position(|a| a.id == aid).unwrap();
                        self.note(format!("arena #{aid}: restore branch #{id}"));
                        let a = &mut self.arenas[i];
                        a.arena.restore(&self.snaps[k].snap).unwrap();
                        a.model.copy_from_slice(&self.snaps[k].model);
                        a.typed = self.snaps[k].typed.as_ref().map(|t| (**t).clone());
                    }
                }
            }
        } else {
            let r = a.arena.fork_run(move |b| {
                for op in &ops2 {
                    op.apply(b);
                }
                fnv(b.as_bytes())
            });
            if !own_live {
                a.shared = false;
            }
            match r {
                Err(e) if refused => self.note(format!("  refused: {e}")),
                Err(e) => self.fail(format!("fork_run failed: {e}")),
                Ok(_) if refused => self.fail("fork_run not refused with proxies".into()),
                Ok(d) => {
                    if d != digest {
                        self.fail(format!("child saw other bytes: {d:x} vs {digest:x}"));
                    }
                }
            }
        }
    }

    // ---------- typed ----------

    fn op_typed(&mut self) {
        let cands: Vec<usize> = (0..self.arenas.len())
            .filter(|&i| self.arenas[i].typed.is_some())
            .collect();
        if cands.is_empty() {
            // occasionally turn an arena typed again by restoring... or a fresh arena
            if self.arenas.len() < 5 && self.rng.chance(20) {
                self.new_root_arena();
            }
            return;
        }
        let i = cands[self.rng.below(cands.len())];
        let aid = self.arenas[i].id;
        let a = &mut self.arenas[i];
        let mut t = a.typed.take().unwrap();
        let mut desc = String::new();
        for _ in 0..8 {
            let op = self.rng.below(22);
            desc = typed_op(&mut a.arena, &mut t, &mut self.rng, op);
            if desc != "nop" && desc != "skip" {
                break;
            }
        }
        a.typed = Some(t);
        self.note(format!("arena #{aid}: typed {desc}"));
        self.resync(i);
    }

    fn run_step(&mut self) {
        let r = self.rng.below(100);
        match r {
            0..=17 => self.op_write(),
            18..=37 => self.op_typed(),
            38..=47 => self.op_snapshot(),
            48..=59 => self.op_restore(),
            60..=64 => self.op_drop_snapshot(),
            65..=67 => self.op_to_arena(),
            68 => self.op_drop_arena(),
            69 => self.op_from_bytes(),
            70..=71 => self.op_proxy_new(),
            72..=75 => self.op_proxy_write(),
            76..=77 => self.op_proxy_snapshot(),
            78 => self.op_proxy_drop(),
            79..=81 => self.op_save(),
            82..=83 => self.op_open(),
            84..=87 => self.op_fork(),
            88 => {
                if self.arenas.len() < 5 {
                    self.new_root_arena()
                }
            }
            _ => {
                // a burst: write then snapshot then restore an older one
                self.op_write();
                self.op_snapshot();
                self.op_write();
                self.op_restore();
            }
        }
    }
}

fn fnv(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for chunk in b.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x100000001b3);
    }
    h
}

#[derive(Clone)]
enum FOp {
    Raw(usize, Vec<u8>, bool),
    Big(Ptr<Big>, usize, usize, u32, usize),
    BigVec(ArenaVec<Big>, usize, usize, usize, u32, usize),
    Vec(ArenaVec<u32>, usize, usize, u32, usize),
}

impl FOp {
    fn apply(&self, b: &mut cowarena::Branch<'_>) {
        match self {
            FOp::Raw(off, data, raw) => {
                if *raw {
                    // SAFETY: the op's range lies inside the branch's arena (it was made so), and
                    // the pointer is used before any other call on the branch.
                    unsafe {
                        let p = b.as_mut_ptr();
                        std::ptr::copy_nonoverlapping(data.as_ptr(), p.add(*off), data.len());
                    }
                } else {
                    b.write(*off, data).unwrap();
                }
            }
            FOp::Big(p, _, k, v, _) => b.get_mut(*p)[*k] = *v,
            FOp::BigVec(vec, _, e, k, v, _) => {
                let mut m = vec.view_mut(b);
                m[*e][*k] = *v;
            }
            FOp::Vec(vec, _, e, v, _) => {
                let mut m = vec.view_mut(b);
                m[*e] = *v;
            }
        }
    }

    fn apply_model(&self, model: &mut [u8], t: Option<&mut TModel>) {
        match self {
            FOp::Raw(off, data, _) => model[*off..*off + data.len()].copy_from_slice(data),
            FOp::Big(_, j, k, v, at) => {
                t.unwrap().bigs[*j].1[*k] = *v;
                model[*at..*at + 4].copy_from_slice(&v.to_ne_bytes());
            }
            FOp::BigVec(_, j, e, k, v, at) => {
                t.unwrap().bigvecs[*j].1[*e][*k] = *v;
                model[*at..*at + 4].copy_from_slice(&v.to_ne_bytes());
            }
            FOp::Vec(_, j, e, v, at) => {
                t.unwrap().vecs[*j].1[*e] = *v;
                model[*at..*at + 4].copy_from_slice(&v.to_ne_bytes());
            }
        }
    }
}

fn check_typed(v: &impl View, t: &TModel) -> Result<(), String> {
    for (k, (p, val)) in t.objs.iter().enumerate() {
        let got = v.try_get(*p).map_err(|e| format!("obj {k}: {e}"))?;
        if got != val {
            return Err(format!("obj {k}: {got} != {val}"));
        }
    }
    for (k, (p, val)) in t.bigs.iter().enumerate() {
        let got = v.try_get(*p).map_err(|e| format!("big {k}: {e}"))?;
        if let Some(x) = (0..BIGN).find(|&x| got[x] != val[x]) {
            return Err(format!("big {k}[{x}]: {} != {}", got[x], val[x]));
        }
    }
    for (k, (h, val)) in t.vecs.iter().enumerate() {
        let got = h.try_as_slice(v).map_err(|e| format!("vec {k}: {e}"))?;
        if got != &val[..] {
            let x = got.iter().zip(val).position(|(a, b)| a != b);
            return Err(format!(
                "vec {k}: len {} vs {}, first diff {x:?}",
                got.len(),
                val.len()
            ));
        }
    }
    for (k, (h, val)) in t.bigvecs.iter().enumerate() {
        let got = h.try_as_slice(v).map_err(|e| format!("bigvec {k}: {e}"))?;
        if got.len() != val.len() {
            return Err(format!("bigvec {k}: len {} vs {}", got.len(), val.len()));
        }
        for (e, (g, w)) in got.iter().zip(val).enumerate() {
            if let Some(x) = (0..BIGN).find(|&x| g[x] != w[x]) {
                return Err(format!("bigvec {k}[{e}][{x}]: {} != {}", g[x], w[x]));
            }
        }
    }
    for (k, (h, val)) in t.maps.iter().enumerate() {
        let len = h.try_len(v).map_err(|e| format!("map {k}: {e}"))?;
        if len != val.len() {
            return Err(format!("map {k}: len {len} vs {}", val.len()));
        }
        for (key, want) in val {
            match h.try_get(v, key).map_err(|e| format!("map {k}: {e}"))? {
                Some(got) if got == want => {}
                other => return Err(format!("map {k}[{key}]: {other:?} != {want}")),
            }
        }
        if h.iter(v).count() != val.len() {
            return Err(format!("map {k}: iter count"));
        }
    }
    for (k, (h, val)) in t.bytes.iter().enumerate() {
        let got = h.try_as_slice(v).map_err(|e| format!("bytes {k}: {e}"))?;
        if got != &val[..] {
            return Err(format!("bytes {k}: len {} vs {}", got.len(), val.len()));
        }
    }
    Ok(())
}

fn oom<T>(r: cowarena::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(Error::OutOfMemory { .. }) => None,
        Err(e) => panic!("typed op failed: {e}"),
    }
}

fn rand_big(rng: &mut Rng) -> Big {
    let v = rng.next() as u32;
    let mut b = [0u32; BIGN];
    for (x, e) in b.iter_mut().enumerate() {
        *e = v.wrapping_add(x as u32 * 7);
    }
    b
}

/// One typed operation on `a`, mirrored in `t`. Returns a description.
fn typed_op(a: &mut Arena, t: &mut TModel, rng: &mut Rng, op: usize) -> String {
    match op {
        0 => {
            if t.objs.len() > 40 {
                return "skip".into();
            }
            let v = rng.next();
            if let Some(p) = oom(a.alloc(v)) {
                t.objs.push((p, v));
            }
            "alloc u64".into()
        }
        1 if !t.objs.is_empty() => {
            let j = rng.below(t.objs.len());
            let v = rng.next();
            *a.get_mut(t.objs[j].0) = v;
            t.objs[j].1 = v;
            format!("get_mut obj {j}")
        }
        2 if !t.objs.is_empty() => {
            let j = rng.below(t.objs.len());
            a.free(t.objs[j].0).unwrap();
            t.objs.swap_remove(j);
            format!("free obj {j}")
        }
        3 => {
            if t.bigs.len() > 8 {
                return "skip".into();
            }
            let b = rand_big(rng);
            if let Some(p) = oom(a.alloc(b)) {
                t.bigs.push((p, b.to_vec()));
            }
            "alloc big".into()
        }
        4 if !t.bigs.is_empty() => {
            let j = rng.below(t.bigs.len());
            let k = rng.below(BIGN);
            let n = rng.range(1, BIGN - k);
            let v = rng.next() as u32;
            let m = a.get_mut(t.bigs[j].0);
            for x in 0..n {
                m[k + x] = v ^ x as u32;
                t.bigs[j].1[k + x] = v ^ x as u32;
            }
            format!("get_mut big {j} [{k}..+{n}]")
        }
        5 if !t.bigs.is_empty() => {
            let j = rng.below(t.bigs.len());
            a.free(t.bigs[j].0).unwrap();
            t.bigs.swap_remove(j);
            format!("free big {j}")
        }
        6 => {
            if t.vecs.len() > 6 {
                return "skip".into();
            }
            let n = rng.range(0, 3000);
            let v0 = rng.next() as u32;
            let vals: Vec<u32> = (0..n as u32).map(|x| v0.wrapping_add(x)).collect();
            if let Some(h) = oom(ArenaVec::from_slice(a, &vals)) {
                t.vecs.push((h, vals));
            }
            format!("vec from_slice {n}")
        }
        7 if !t.vecs.is_empty() => {
            let j = rng.below(t.vecs.len());
            let (h, m) = &mut t.vecs[j];
            if rng.chance(50) {
                let v = rng.next() as u32;
                if oom(h.push(a, v)).is_some() {
                    m.push(v);
                }
                format!("vec {j} push")
            } else {
                let n = rng.range(1, 1500);
                let v0 = rng.next() as u32;
                let vals: Vec<u32> = (0..n as u32).map(|x| v0 ^ x).collect();
                if oom(h.extend_from_slice(a, &vals)).is_some() {
                    m.extend_from_slice(&vals);
                }
                format!("vec {j} extend {n}")
            }
        }
        8 if !t.vecs.is_empty() => {
            let j = rng.below(t.vecs.len());
            let (h, m) = &mut t.vecs[j];
            match rng.below(3) {
                0 => {
                    let n = rng.range(0, 4000);
                    let v = rng.next() as u32;
                    if oom(h.resize(a, n, v)).is_some() {
                        m.resize(n, v);
                    }
                    format!("vec {j} resize {n}")
                }
                1 => {
                    let n = rng.range(0, m.len());
                    h.truncate(a, n);
                    m.truncate(n);
                    format!("vec {j} truncate {n}")
                }
                _ => {
                    let got = h.pop(a);
                    assert_eq!(got, m.pop());
                    format!("vec {j} pop")
                }
            }
        }
        9 if !t.vecs.is_empty() => {
            let j = rng.below(t.vecs.len());
            let (h, m) = &mut t.vecs[j];
            if m.is_empty() {
                return "skip".into();
            }
            let n = rng.range(1, 50);
            let mut v = h.view_mut(a);
            let mut log = Vec::new();
            for _ in 0..n {
                let i = rng.below(m.len());
                let x = rng.next() as u32;
                match rng.below(3) {
                    0 => v[i] = x,
                    1 => *v.get_mut(i).unwrap() = x,
                    _ => v.set(i, x),
                }
                m[i] = x;
                log.push(i);
            }
            format!("vec {j} view_mut writes {log:?}")
        }
        10 if !t.vecs.is_empty() => {
            let j = rng.below(t.vecs.len());
            let (h, m) = &mut t.vecs[j];
            if m.is_empty() {
                return "skip".into();
            }
            let s = rng.below(m.len());
            let e = rng.range(s, m.len());
            let x = rng.next() as u32;
            if rng.chance(50) {
                h.slice_mut(a, s..e).fill(x);
            } else {
                let mut v = h.view_mut(a);
                v.slice_mut(s..e).fill(x);
            }
            m[s..e].fill(x);
            format!("vec {j} slice_mut {s}..{e}")
        }
        11 => {
            if t.bigvecs.len() > 3 {
                // push to an existing one
                let j = rng.below(t.bigvecs.len());
                if t.bigvecs[j].1.len() > 8 {
                    return "skip".into();
                }
                let b = rand_big(rng);
                if oom(t.bigvecs[j].0.push(a, b)).is_some() {
                    t.bigvecs[j].1.push(b.to_vec());
                }
                return format!("bigvec {j} push");
            }
            let n = rng.range(0, 5);
            if let Some(h) = oom(ArenaVec::<Big>::with_len_zeroed(a, n)) {
                t.bigvecs.push((h, vec![vec![0u32; BIGN]; n]));
            }
            format!("bigvec with_len_zeroed {n}")
        }
        12 if !t.bigvecs.is_empty() => {
            let j = rng.below(t.bigvecs.len());
            let (h, m) = &mut t.bigvecs[j];
            if m.is_empty() {
                return "skip".into();
            }
            let mut v = h.view_mut(a);
            let mut log = Vec::new();
            for _ in 0..rng.range(1, 6) {
                let e = rng.below(m.len());
                let x = rng.next() as u32;
                match rng.below(4) {
                    0 => {
                        // one word anywhere in a large element
                        let k = rng.below(BIGN);
                        v[e][k] = x;
                        m[e][k] = x;
                        log.push(format!("[{e}][{k}]"));
                    }
                    1 => {
                        // a range of words through get_mut
                        let k = rng.below(BIGN);
                        let n = rng.range(1, BIGN - k);
                        let r = v.get_mut(e).unwrap();
                        for y in 0..n {
                            r[k + y] = x ^ y as u32;
                            m[e][k + y] = x ^ y as u32;
                        }
                        log.push(format!("[{e}][{k}..+{n}]"));
                    }
                    2 => {
                        let b = rand_big(rng);
                        v.set(e, b);
                        m[e] = b.to_vec();
                        log.push(format!("set {e}"));
                    }
                    _ => {
                        let s = rng.below(m.len());
                        let en = rng.range(s, m.len());
                        let k = rng.below(BIGN);
                        for el in v.slice_mut(s..en) {
                            el[k] = x;
                        }
                        for el in &mut m[s..en] {
                            el[k] = x;
                        }
                        log.push(format!("slice {s}..{en} [{k}]"));
                    }
                }
            }
            format!("bigvec {j} view_mut {log:?}")
        }
        13 => {
            if t.maps.is_empty() || (t.maps.len() < 3 && rng.chance(20)) {
                if let Some(h) = oom(ArenaMap::<u32, u64>::new(a)) {
                    t.maps.push((h, HashMap::new()));
                }
                return "map new".into();
            }
            let j = rng.below(t.maps.len());
            let (h, m) = &mut t.maps[j];
            let n = rng.range(1, 60);
            for _ in 0..n {
                let k = rng.below(400) as u32;
                if rng.chance(70) {
                    let v = rng.next();
                    match oom(h.insert(a, k, v)) {
                        Some(old) => assert_eq!(old, m.insert(k, v)),
                        None => break,
                    }
                } else {
                    assert_eq!(h.remove(a, &k), m.remove(&k));
                }
            }
            format!("map {j} {n} inserts/removes")
        }
        14 if !t.maps.is_empty() => {
            let j = rng.below(t.maps.len());
            let (h, m) = &mut t.maps[j];
            let k = rng.below(400) as u32;
            let v = rng.next();
            if rng.chance(50) {
                if let Some(r) = oom(h.entry(a, k).and_modify(|x| *x ^= v).or_insert(v)) {
                    *r = r.wrapping_add(1);
                    let e = m.entry(k).and_modify(|x| *x ^= v).or_insert(v);
                    *e = e.wrapping_add(1);
                }
            } else if let Some(r) = h.get_mut(a, &k) {
                *r = v;
                *m.get_mut(&k).unwrap() = v;
            } else {
                assert!(!m.contains_key(&k));
            }
            format!("map {j} entry/get_mut {k}")
        }
        15 if !t.maps.is_empty() => {
            let j = rng.below(t.maps.len());
            let (h, m) = &mut t.maps[j];
            let mut v = h.view_mut(a);
            let keys: Vec<u32> = m.keys().copied().collect();
            for _ in 0..rng.range(1, 20) {
                if keys.is_empty() {
                    break;
                }
                let k = keys[rng.below(keys.len())];
                let x = rng.next();
                *v.get_mut(&k).unwrap() = x;
                m.insert(k, x);
            }
            format!("map {j} view_mut")
        }
        16 => {
            if t.bytes.is_empty() || (t.bytes.len() < 3 && rng.chance(20)) {
                let n = rng.range(0, 9000);
                let d = rng.bytes(n);
                if let Some(h) = oom(ArenaBytes::from_slice(a, &d)) {
                    t.bytes.push((h, d));
                }
                return "bytes new".into();
            }
            let j = rng.below(t.bytes.len());
            let (h, m) = &mut t.bytes[j];
            match rng.below(4) {
                0 => {
                    let n = rng.range(0, 6000);
                    let d = rng.bytes(n);
                    if oom(h.append(a, &d)).is_some() {
                        m.extend_from_slice(&d);
                    }
                    format!("bytes {j} append")
                }
                1 if !m.is_empty() => {
                    let s = rng.below(m.len());
                    let e = rng.range(s, m.len());
                    let x = rng.next() as u8;
                    h.as_mut_slice(a)[s..e].fill(x);
                    m[s..e].fill(x);
                    format!("bytes {j} as_mut_slice {s}..{e}")
                }
                2 => {
                    h.clear(a);
                    m.clear();
                    format!("bytes {j} clear")
                }
                _ => "skip".into(),
            }
        }
        17 if !t.vecs.is_empty()
            && !t.bigvecs.is_empty()
            && !t.bigs.is_empty()
            && !t.maps.is_empty() =>
        {
            let jv = rng.below(t.vecs.len());
            let jb = rng.below(t.bigvecs.len());
            let jp = rng.below(t.bigs.len());
            let jm = rng.below(t.maps.len());
            let (hv, hb, hp, hm) = (t.vecs[jv].0, t.bigvecs[jb].0, t.bigs[jp].0, t.maps[jm].0);
            let (mut v, mut bv, mut p, mut mm) = a.lend_mut((hv, hb, hp, hm));
            let x = rng.next() as u32;
            if !t.vecs[jv].1.is_empty() {
                let i = rng.below(t.vecs[jv].1.len());
                v[i] = x;
                t.vecs[jv].1[i] = x;
            }
            if !t.bigvecs[jb].1.is_empty() {
                let e = rng.below(t.bigvecs[jb].1.len());
                let k = rng.below(BIGN);
                bv[e][k] = x;
                t.bigvecs[jb].1[e][k] = x;
            }
            let k = rng.below(BIGN);
            p[k] = x;
            t.bigs[jp].1[k] = x;
            let keys: Vec<u32> = t.maps[jm].1.keys().copied().collect();
            if !keys.is_empty() {
                let key = keys[rng.below(keys.len())];
                *mm.get_mut(&key).unwrap() = u64::from(x);
                t.maps[jm].1.insert(key, u64::from(x));
            }
            "lend_mut(vec, bigvec, big, map)".into()
        }
        18 => match rng.below(4) {
            0 if !t.vecs.is_empty() => {
                let j = rng.below(t.vecs.len());
                t.vecs.swap_remove(j).0.free(a).unwrap();
                format!("free vec {j}")
            }
            1 if !t.maps.is_empty() => {
                let j = rng.below(t.maps.len());
                t.maps.swap_remove(j).0.free(a).unwrap();
                format!("free map {j}")
            }
            2 if !t.bytes.is_empty() => {
                let j = rng.below(t.bytes.len());
                t.bytes.swap_remove(j).0.free(a).unwrap();
                format!("free bytes {j}")
            }
            3 if !t.bigvecs.is_empty() => {
                let j = rng.below(t.bigvecs.len());
                t.bigvecs.swap_remove(j).0.free(a).unwrap();
                format!("free bigvec {j}")
            }
            _ => "skip".into(),
        },
        19 if !t.maps.is_empty() => {
            let j = rng.below(t.maps.len());
            if rng.chance(20) {
                t.maps[j].0.clear(a);
                t.maps[j].1.clear();
                return format!("map {j} clear");
            }
            "skip".into()
        }
        20 if !t.bigvecs.is_empty() => {
            // slice_mut through the handle, of large elements
            let j = rng.below(t.bigvecs.len());
            let (h, m) = &mut t.bigvecs[j];
            if m.is_empty() {
                return "skip".into();
            }
            let s = rng.below(m.len());
            let e = rng.range(s, m.len());
            let k = rng.below(BIGN);
            let x = rng.next() as u32;
            for el in h.slice_mut(a, s..e) {
                el[k] = x;
            }
            for el in &mut m[s..e] {
                el[k] = x;
            }
            format!("bigvec {j} slice_mut {s}..{e} [{k}]")
        }
        _ => "nop".into(),
    }
}

fn run_seed(seed: u64, steps: usize) {
    let mut w = World::new(seed);
    w.new_root_arena();
    for step in 0..steps {
        w.step = step;
        w.run_step();
        w.check_all();
    }
    let dir = w.dir.clone();
    drop(w);
    let _ = std::fs::remove_dir_all(dir);
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn differential_fuzz() {
    let _serial = serial();
    let seeds = env("COWFUZZ_SEEDS", 60);
    let first = env("COWFUZZ_FIRST", 1);
    let steps = env("COWFUZZ_STEPS", 300) as usize;
    let mut failures = Vec::new();
    for seed in first..first + seeds {
        let r = catch_unwind(AssertUnwindSafe(|| run_seed(seed, steps)));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let head: String = msg.lines().next().unwrap_or("").to_string();
            eprintln!("SEED {seed} FAILED: {head}");
            failures.push((seed, head));
        }
    }
    assert!(failures.is_empty(), "failing seeds: {failures:#?}");
}

/// Raw-pointer writes made while the arena is shared with proxies survive the last proxy's
/// drop and a fork (found by seed 38: the shared memory was dropped before they were marked).
#[test]
fn raw_writes_made_while_proxies_lived_survive_a_fork() {
    let _serial = serial();
    let page = cowarena::page_size();
    let mut a = Arena::with_capacity(16 * page).unwrap();
    let p = a.proxy().unwrap();
    // SAFETY: offset 100 is inside the arena, and no reference into it is alive.
    unsafe { *a.as_mut_ptr().add(100) = 7 };
    drop(p);
    let seen: u8 = a.fork_run(|b| b.as_bytes()[100]).unwrap();
    let after = a.as_bytes()[100];
    assert_eq!(
        (seen, after),
        (7, 7),
        "child saw {seen}, parent now holds {after}"
    );
}

/// A proxy page lent for writing is the proxy's own from then on, even if nothing is stored to
/// it: it stops reading through, and the proxy's snapshots freeze what the proxy shows.
#[test]
fn a_proxy_page_lent_for_writing_is_its_own_even_unwritten() {
    let _serial = serial();
    let page = cowarena::page_size();
    let mut a = Arena::with_capacity(4 * page).unwrap();
    a.write(0, b"old").unwrap();
    let mut p = a.proxy().unwrap();
    let _ = p.with_mut(&a).unwrap().bytes_mut(0..page).unwrap();
    let _first = p.with_mut(&a).unwrap().snapshot().unwrap();
    a.write(0, b"new").unwrap();
    assert_eq!(&p.with(&a).unwrap().as_bytes()[..3], b"old");
    let s = p.with_mut(&a).unwrap().snapshot().unwrap();
    assert_eq!(&s.as_bytes()[..3], b"old");
}

/// The same through the typed API: `get_mut` of an object larger than a page lends all its
/// pages; a write to one of them makes both the proxy's, and its snapshot holds what it shows.
#[test]
fn a_proxys_large_object_written_in_part_is_its_own() {
    let _serial = serial();
    let mut a = Arena::with_capacity(64 * cowarena::page_size()).unwrap();
    let big = a.alloc([0u32; BIGN]).unwrap();
    let mut p = a.proxy().unwrap();
    p.with_mut(&a).unwrap().get_mut(big)[0] = 1;
    let _first = p.with_mut(&a).unwrap().snapshot().unwrap();
    a.get_mut(big)[BIGN - 1] = 7;
    let shown = *p.with(&a).unwrap().get(big);
    assert_eq!((shown[0], shown[BIGN - 1]), (1, 0));
    let s = p.with_mut(&a).unwrap().snapshot().unwrap();
    assert_eq!(
        *s.get(big),
        shown,
        "the proxy's snapshot differs from what it shows"
    );
    a.restore(&s).unwrap();
    assert_eq!((a.get(big)[0], a.get(big)[BIGN - 1]), (1, 0));
}
