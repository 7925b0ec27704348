//! Model-based test of the typed allocator under snapshot, restore, to_arena, proxies and drops:
//! random programs run against a model of each arena's live objects and their values.
//!
//! Proxies follow the discipline the docs recommend: while a proxy reads through, its source
//! may write objects and take snapshots but not allocate, free or restore; once the proxy
//! allocates or frees, its source is left alone entirely. Under that discipline a proxy's view
//! is exact: an object reads its own copy if the proxy has written the object's page, and the
//! source's current value otherwise.

use cowarena::{page_size, Arena, Proxy, ProxyMut, Ptr, Snapshot, ViewMut};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};

type Mid = [u64; 20];
type Large = [[u64; 256]; 2];

/// An object of one of three placements: a small slab slot, a mid-size slot, a page run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Obj {
    kind: u8,
    offset: usize,
    stamp: u64,
}

impl Obj {
    fn of<T: 'static>(kind: u8, p: Ptr<T>) -> Obj {
        let [offset, stamp]: [u64; 2] = bytemuck::cast(p);
        Obj {
            kind,
            offset: offset as usize,
            stamp,
        }
    }

    fn ptr<T: 'static>(self) -> Ptr<T> {
        bytemuck::cast([self.offset as u64, self.stamp])
    }

    fn size(self) -> usize {
        match self.kind {
            0 => size_of::<u64>(),
            1 => size_of::<Mid>(),
            _ => size_of::<Large>(),
        }
    }

    fn pages(self) -> std::ops::RangeInclusive<usize> {
        self.offset / page_size()..=(self.offset + self.size() - 1) / page_size()
    }
}

fn mid(v: u64) -> Mid {
    std::array::from_fn(|i| v.wrapping_add(i as u64))
}

fn large(v: u64) -> Large {
    let mut l: Large = [[0; 256]; 2];
    for (i, w) in l.iter_mut().flatten().enumerate() {
        *w = v ^ (i as u64).wrapping_mul(0x9E37_79B9);
    }
    l
}

fn alloc(a: &mut impl ViewMut, kind: u8, v: u64) -> cowarena::Result<Obj> {
    Ok(match kind {
        0 => Obj::of(0, a.alloc(v)?),
        1 => Obj::of(1, a.alloc(mid(v))?),
        _ => {
            let p = a.alloc_zeroed::<Large>()?;
            *a.get_mut(p) = large(v);
            Obj::of(2, p)
        }
    })
}

fn write(a: &mut impl ViewMut, o: Obj, v: u64) {
    match o.kind {
        0 => *a.get_mut(o.ptr::<u64>()) = v,
        1 => *a.get_mut(o.ptr::<Mid>()) = mid(v),
        _ => *a.get_mut(o.ptr::<Large>()) = large(v),
    }
}

fn free(a: &mut impl ViewMut, o: Obj) -> cowarena::Result<()> {
    match o.kind {
        0 => a.free(o.ptr::<u64>()),
        1 => a.free(o.ptr::<Mid>()),
        _ => a.free(o.ptr::<Large>()),
    }
}

/// The value `o` holds in `view`, `None` if `o` is not live there.
fn read(view: &impl cowarena::View, o: Obj) -> Option<u64> {
    match o.kind {
        0 => view.try_get(o.ptr::<u64>()).ok().copied(),
        1 => {
            let m = view.try_get(o.ptr::<Mid>()).ok()?;
            assert_eq!(*m, mid(m[0]), "a mid object was torn");
            Some(m[0])
        }
        _ => {
            let l = view.try_get(o.ptr::<Large>()).ok()?;
            let v = l[0][0];
            assert!(*l == large(v), "a large object was torn");
            Some(v)
        }
    }
}

type Model = BTreeMap<Obj, u64>;

enum Mode {
    /// Objects and values are exactly `model`. `frozen_source` is set for a proxy that has
    /// allocated or freed: its source must no longer change.
    Own {
        model: Model,
        frozen_source: Option<usize>,
    },
    /// A proxy reading through to `source`; `own` holds the values of the objects on the pages
    /// in `private`, copied when the proxy first wrote each page.
    Through {
        source: usize,
        private: BTreeSet<usize>,
        own: HashMap<Obj, u64>,
    },
}

enum Handle {
    Arena(Arena),
    /// A proxy and its source (index into `arenas`, `None` once dropped).
    Proxy(Proxy, Option<usize>),
}

struct Entry {
    handle: Handle,
    mode: Mode,
    /// Proxies attached to this arena (reading through it, or having frozen it).
    proxies: BTreeSet<usize>,
}

#[derive(Default)]
struct World {
    arenas: Vec<Option<Entry>>,
    snaps: Vec<(Snapshot, Model)>,
    every: Vec<Obj>,
}

const CAPACITY: usize = 4 << 20;
const MAX_ARENAS: usize = 5;
const MAX_SNAPS: usize = 8;

impl World {
    fn live(&self) -> Vec<usize> {
        (0..self.arenas.len())
            .filter(|&i| self.arenas[i].is_some())
            .collect()
    }

    fn pick(&self, i: u8) -> usize {
        let live = self.live();
        live[i as usize % live.len()]
    }

    fn entry(&mut self, i: usize) -> &mut Entry {
        self.arenas[i].as_mut().unwrap()
    }

    fn arena(&self, i: usize) -> &Arena {
        match &self.arenas[i].as_ref().unwrap().handle {
            Handle::Arena(a) => a,
            Handle::Proxy(..) => panic!("arena {i} is a proxy"),
        }
    }

    fn is_proxy(&self, i: usize) -> bool {
        matches!(self.arenas[i].as_ref().unwrap().handle, Handle::Proxy(..))
    }

    /// Runs `f` on arena `i`'s bytes (a proxy's with its source borrowed).
    fn read<R>(&self, i: usize, f: impl FnOnce(&Arena) -> R) -> R {
        match &self.arenas[i].as_ref().unwrap().handle {
            Handle::Arena(a) => f(a),
            Handle::Proxy(p, Some(src)) => f(&p.with(self.arena(*src)).unwrap()),
            Handle::Proxy(p, None) => f(&p.without_source().unwrap()),
        }
    }

    /// Runs `f` on arena `i` for writing (a proxy's with its source borrowed).
    fn write<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Arena) -> R,
        g: impl FnOnce(&mut ProxyMut<'_>) -> R,
    ) -> R {
        let mut e = self.arenas[i].take().unwrap();
        let r = match &mut e.handle {
            Handle::Arena(a) => f(a),
            Handle::Proxy(p, Some(src)) => g(&mut p.with_mut(self.arena(*src)).unwrap()),
            Handle::Proxy(p, None) => g(&mut p.without_source_mut().unwrap()),
        };
        self.arenas[i] = Some(e);
        r
    }

    fn add(&mut self, e: Entry) -> usize {
        self.arenas.push(Some(e));
        self.arenas.len() - 1
    }

    /// What arena `i` should show.
    fn view(&self, i: usize) -> Model {
        match &self.arenas[i].as_ref().unwrap().mode {
            Mode::Own { model, .. } => model.clone(),
            Mode::Through {
                source,
                private,
                own,
            } => self
                .view(*source)
                .into_iter()
                .map(|(o, v)| {
                    if o.pages().any(|p| private.contains(&p)) {
                        (o, own[&o])
                    } else {
                        (o, v)
                    }
                })
                .collect(),
        }
    }

    /// Whether arena `i` may allocate, free or restore (it has no attached proxies).
    fn may_restructure(&self, i: usize) -> bool {
        self.arenas[i].as_ref().unwrap().proxies.is_empty()
    }

    fn frozen(&self, i: usize) -> bool {
        let e = self.arenas[i].as_ref().unwrap();
        e.proxies.iter().any(|&p| {
            matches!(
                self.arenas[p].as_ref().unwrap().mode,
                Mode::Own {
                    frozen_source: Some(_),
                    ..
                }
            )
        })
    }

    /// Turns a read-through proxy into one with a fixed model.
    fn materialize(&mut self, i: usize, frozen_source: Option<usize>) {
        let model = self.view(i);
        self.entry(i).mode = Mode::Own {
            model,
            frozen_source,
        };
    }

    fn model_mut(&mut self, i: usize) -> &mut Model {
        match &mut self.entry(i).mode {
            Mode::Own { model, .. } => model,
            Mode::Through { .. } => unreachable!("materialized first"),
        }
    }

    /// A proxy about to allocate or free: its source must stay as it is from now on.
    fn detach_for_allocation(&mut self, i: usize) {
        if let Mode::Through { source, .. } = self.entry(i).mode {
            self.materialize(i, Some(source));
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Alloc(a, kind, v) => {
                let i = self.pick(a);
                if !self.may_restructure(i) {
                    return;
                }
                self.detach_for_allocation(i);
                let kind = kind % 3;
                match self.write(i, |a| alloc(a, kind, v), |p| alloc(p, kind, v)) {
                    Ok(o) => {
                        self.every.push(o);
                        self.model_mut(i).insert(o, v);
                    }
                    Err(cowarena::Error::OutOfMemory { .. }) => {}
                    Err(e) => panic!("alloc failed: {e}"),
                }
            }
            Op::Free(a, n) => {
                let i = self.pick(a);
                let view = self.view(i);
                if view.is_empty() || !self.may_restructure(i) {
                    return;
                }
                let o = *view.keys().nth(n as usize % view.len()).unwrap();
                self.detach_for_allocation(i);
                self.write(i, |a| free(a, o), |p| free(p, o)).unwrap();
                self.model_mut(i).remove(&o);
                assert!(self.read(i, |a| read(a, o)).is_none());
                let again = self.write(i, |a| free(a, o), |p| free(p, o));
                assert!(again.is_err(), "double free");
            }
            Op::Write(a, n, v) => {
                let i = self.pick(a);
                let view = self.view(i);
                if view.is_empty() || self.frozen(i) {
                    return;
                }
                let o = *view.keys().nth(n as usize % view.len()).unwrap();
                self.write(i, |a| write(a, o, v), |p| write(p, o, v));
                let source = match self.entry(i).mode {
                    Mode::Through { source, .. } => Some(source),
                    Mode::Own { .. } => None,
                };
                let source_view = source.map(|s| self.view(s));
                match &mut self.entry(i).mode {
                    Mode::Own { model, .. } => {
                        model.insert(o, v);
                    }
                    Mode::Through { private, own, .. } => {
                        let source_view = source_view.unwrap();
                        for p in o.pages() {
                            if private.insert(p) {
                                for (&o2, &v2) in &source_view {
                                    if o2.pages().any(|q| q == p) {
                                        own.insert(o2, v2);
                                    }
                                }
                            }
                        }
                        own.insert(o, v);
                    }
                }
            }
            Op::Snapshot(a) => {
                let i = self.pick(a);
                let s = self.write(i, |a| a.snapshot(), |p| p.snapshot()).unwrap();
                let view = self.view(i);
                for (&o, &v) in &view {
                    assert_eq!(read(&s, o), Some(v), "snapshot of arena {i}");
                }
                if self.snaps.len() == MAX_SNAPS {
                    self.snaps.remove(0);
                }
                self.snaps.push((s, view));
            }
            Op::Restore(a, n) => {
                let i = self.pick(a);
                if self.snaps.is_empty()
                    || !self.may_restructure(i)
                    || self.frozen(i)
                    || self.is_proxy(i)
                {
                    return;
                }
                let (s, model) = self.snaps[n as usize % self.snaps.len()].clone();
                let Handle::Arena(arena) = &mut self.entry(i).handle else {
                    unreachable!("checked above")
                };
                arena.restore(&s).unwrap();
                self.entry(i).mode = Mode::Own {
                    model,
                    frozen_source: None,
                };
            }
            Op::ToArena(n) => {
                if self.snaps.is_empty() || self.live().len() >= MAX_ARENAS {
                    return;
                }
                let (s, model) = self.snaps[n as usize % self.snaps.len()].clone();
                let arena = s.to_arena().unwrap();
                self.add(Entry {
                    handle: Handle::Arena(arena),
                    mode: Mode::Own {
                        model,
                        frozen_source: None,
                    },
                    proxies: BTreeSet::new(),
                });
            }
            Op::Proxy(a) => {
                let i = self.pick(a);
                if self.live().len() >= MAX_ARENAS || self.frozen(i) || self.is_proxy(i) {
                    return;
                }
                let Handle::Arena(arena) = &mut self.entry(i).handle else {
                    unreachable!("checked above")
                };
                let proxy = arena.proxy().unwrap();
                let p = self.add(Entry {
                    handle: Handle::Proxy(proxy, Some(i)),
                    mode: Mode::Through {
                        source: i,
                        private: BTreeSet::new(),
                        own: HashMap::new(),
                    },
                    proxies: BTreeSet::new(),
                });
                self.entry(i).proxies.insert(p);
            }
            Op::Drop(a) => {
                let i = self.pick(a);
                if self.live().len() == 1 {
                    return;
                }
                // Proxies reading through keep the source's last values.
                let attached: Vec<usize> = self.entry(i).proxies.iter().copied().collect();
                for p in attached {
                    if let Handle::Proxy(_, source) = &mut self.entry(p).handle {
                        *source = None;
                    }
                    match self.entry(p).mode {
                        Mode::Through { .. } => self.materialize(p, None),
                        Mode::Own {
                            ref mut frozen_source,
                            ..
                        } => *frozen_source = None,
                    }
                }
                self.release_source(i);
                self.arenas[i] = None;
            }
        }
    }

    /// Detaches arena `i` from the source it reads through or froze, if any.
    fn release_source(&mut self, i: usize) {
        let source = match self.entry(i).mode {
            Mode::Through { source, .. } => Some(source),
            Mode::Own { frozen_source, .. } => frozen_source,
        };
        if let Some(s) = source {
            if let Some(e) = self.arenas[s].as_mut() {
                e.proxies.remove(&i);
            }
        }
        if let Mode::Through { .. } = self.entry(i).mode {
            self.materialize(i, None);
        } else if let Mode::Own { frozen_source, .. } = &mut self.entry(i).mode {
            *frozen_source = None;
        }
    }

    fn check(&self) {
        for i in self.live() {
            let view = self.view(i);
            self.read(i, |a| {
                for o in &self.every {
                    assert_eq!(read(a, *o), view.get(o).copied(), "arena {i}, object {o:?}");
                }
                let stats = a.alloc_stats().unwrap();
                assert_eq!(
                    stats.small_objects + stats.large_objects,
                    view.len(),
                    "arena {i}"
                );
            });
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Alloc(u8, u8, u64),
    Free(u8, u16),
    Write(u8, u16, u64),
    Snapshot(u8),
    Restore(u8, u8),
    ToArena(u8),
    Proxy(u8),
    Drop(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (any::<u8>(), prop_oneof![4 => Just(0u8), 3 => Just(1u8), 1 => Just(2u8)], any::<u64>())
            .prop_map(|(a, k, v)| Op::Alloc(a, k, v)),
        12 => (any::<u8>(), any::<u16>()).prop_map(|(a, n)| Op::Free(a, n)),
        25 => (any::<u8>(), any::<u16>(), any::<u64>()).prop_map(|(a, n, v)| Op::Write(a, n, v)),
        8 => any::<u8>().prop_map(Op::Snapshot),
        8 => (any::<u8>(), any::<u8>()).prop_map(|(a, n)| Op::Restore(a, n)),
        4 => any::<u8>().prop_map(Op::ToArena),
        6 => any::<u8>().prop_map(Op::Proxy),
        3 => any::<u8>().prop_map(Op::Drop),
    ]
}

fn run(ops: &[Op]) {
    let mut w = World::default();
    w.add(Entry {
        handle: Handle::Arena(Arena::with_capacity(CAPACITY).unwrap()),
        mode: Mode::Own {
            model: Model::new(),
            frozen_source: None,
        },
        proxies: BTreeSet::new(),
    });
    for op in ops {
        w.apply(op);
        w.check();
    }
    for (s, model) in &w.snaps {
        for o in &w.every {
            assert_eq!(read(s, *o), model.get(o).copied(), "snapshot, object {o:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn typed_values_follow_the_model(ops in proptest::collection::vec(op(), 1..200)) {
        run(&ops);
    }
}

/// Many allocations and frees of every kind in one arena, with restores to old states: the
/// allocator's free lists and merged runs stay consistent.
#[test]
fn long_program_in_one_arena() {
    let mut ops = Vec::new();
    let mut x = 0x1234_5678_u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..20_000 {
        let r = next();
        ops.push(match r % 20 {
            0..=8 => Op::Alloc(0, (next() % 3) as u8, next()),
            9..=15 => Op::Free(0, next() as u16),
            16..=17 => Op::Write(0, next() as u16, next()),
            18 => Op::Snapshot(0),
            _ => Op::Restore(0, next() as u8),
        });
    }
    run(&ops);
}
