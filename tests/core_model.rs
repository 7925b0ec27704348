//! Model-based test of the core: random programs of writes, snapshots, restores to any live
//! snapshot, snapshot drops, `to_arena`, proxies and arena drops, checked after every step
//! against plain `Vec<u8>` copies.

use cowarena::{Arena, Error, Proxy, ProxyMut, Snapshot, ViewMut};
use proptest::prelude::*;

enum Handle {
    Arena(Arena),
    Proxy(Proxy),
}

/// What an arena's bytes should be. A proxy's pages that it has not written show its source's.
struct ModelArena {
    handle: Handle,
    bytes: Vec<u8>,
    /// For a proxy still reading through: its source (index into `arenas`) and its own pages.
    source: Option<(usize, Vec<bool>)>,
}

struct Model {
    page: usize,
    arenas: Vec<Option<ModelArena>>,
    snapshots: Vec<Option<(Snapshot, Vec<u8>)>>,
}

impl Model {
    fn view(&self, i: usize) -> Vec<u8> {
        let a = self.arenas[i].as_ref().unwrap();
        match &a.source {
            None => a.bytes.clone(),
            Some((src, own)) => {
                let src = self.view(*src);
                let mut out = a.bytes.clone();
                for (p, &mine) in own.iter().enumerate() {
                    if !mine {
                        let r = p * self.page..(p + 1) * self.page;
                        out[r.clone()].copy_from_slice(&src[r]);
                    }
                }
                out
            }
        }
    }

    fn live_arenas(&self) -> Vec<usize> {
        (0..self.arenas.len())
            .filter(|&i| self.arenas[i].is_some())
            .collect()
    }

    fn live_snapshots(&self) -> Vec<usize> {
        (0..self.snapshots.len())
            .filter(|&i| self.snapshots[i].is_some())
            .collect()
    }

    /// Turns a proxy into a standalone model arena holding what it shows now.
    fn detach(&mut self, i: usize) {
        let v = self.view(i);
        let a = self.arenas[i].as_mut().unwrap();
        a.bytes = v;
        a.source = None;
    }

    fn arena(&self, i: usize) -> &Arena {
        match &self.arenas[i].as_ref().unwrap().handle {
            Handle::Arena(a) => a,
            Handle::Proxy(_) => panic!("arena {i} is a proxy"),
        }
    }

    /// Runs `f` on arena `i`'s bytes: an arena's own, or a proxy's read through its source.
    fn read<R>(&self, i: usize, f: impl FnOnce(&Arena) -> R) -> R {
        let a = self.arenas[i].as_ref().unwrap();
        match (&a.handle, &a.source) {
            (Handle::Arena(arena), _) => f(arena),
            (Handle::Proxy(p), Some((src, _))) => f(&p.with(self.arena(*src)).unwrap()),
            (Handle::Proxy(p), None) => f(&p.without_source().unwrap()),
        }
    }

    /// Runs `f` on proxy `i`, its source borrowed (or gone).
    fn proxy_mut<R>(&mut self, i: usize, f: impl FnOnce(&mut ProxyMut<'_>) -> R) -> R {
        let mut a = self.arenas[i].take().unwrap();
        let Handle::Proxy(p) = &mut a.handle else {
            panic!("arena {i} is not a proxy")
        };
        let r = match &a.source {
            Some((src, _)) => {
                let source = self.arena(*src);
                assert!(p.without_source().is_err(), "the source is alive");
                f(&mut p.with_mut(source).unwrap())
            }
            None => f(&mut p.without_source_mut().unwrap()),
        };
        self.arenas[i] = Some(a);
        r
    }

    fn check(&self) {
        for i in self.live_arenas() {
            let want = self.view(i);
            self.read(i, |a| {
                assert!(
                    a.as_bytes() == &want[..],
                    "arena {i} differs from the model"
                );
                let mut buf = vec![0u8; 100];
                a.read(want.len() - 100, &mut buf).unwrap();
                assert_eq!(&buf[..], &want[want.len() - 100..]);
            });
        }
        for (i, s) in self.snapshots.iter().enumerate() {
            if let Some((snap, want)) = s {
                let mut buf = vec![0u8; want.len()];
                snap.read(0, &mut buf).unwrap();
                assert!(buf == *want, "snapshot {i} read() differs from the model");
                assert!(snap.as_bytes() == &want[..], "snapshot {i} view differs");
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Write {
        arena: usize,
        offset: usize,
        len: usize,
        byte: u8,
    },
    Snapshot {
        arena: usize,
    },
    Restore {
        arena: usize,
        snap: usize,
    },
    DropSnapshot {
        snap: usize,
    },
    ToArena {
        snap: usize,
    },
    Proxy {
        arena: usize,
    },
    DropArena {
        arena: usize,
    },
}

fn op(capacity: usize) -> impl Strategy<Value = Op> {
    let page = cowarena::page_size();
    prop_oneof![
        6 => (any::<usize>(), 0..capacity, prop_oneof![1..64usize, 1..page * 20], any::<u8>())
            .prop_map(|(arena, offset, len, byte)| Op::Write { arena, offset, len, byte }),
        3 => any::<usize>().prop_map(|arena| Op::Snapshot { arena }),
        3 => (any::<usize>(), any::<usize>()).prop_map(|(arena, snap)| Op::Restore { arena, snap }),
        1 => any::<usize>().prop_map(|snap| Op::DropSnapshot { snap }),
        1 => any::<usize>().prop_map(|snap| Op::ToArena { snap }),
        1 => any::<usize>().prop_map(|arena| Op::Proxy { arena }),
        1 => any::<usize>().prop_map(|arena| Op::DropArena { arena }),
    ]
}

fn pick(live: &[usize], n: usize) -> Option<usize> {
    (!live.is_empty()).then(|| live[n % live.len()])
}

fn run(pages: usize, budget_pages: usize, ops: Vec<Op>) {
    let page = cowarena::page_size();
    let capacity = pages * page;
    let arena = Arena::builder(capacity)
        .private_budget(budget_pages * page)
        .mapping_budget(8)
        .build()
        .unwrap();
    let mut m = Model {
        page,
        arenas: vec![Some(ModelArena {
            handle: Handle::Arena(arena),
            bytes: vec![0; capacity],
            source: None,
        })],
        snapshots: Vec::new(),
    };
    for op in ops {
        let arenas = m.live_arenas();
        let snaps = m.live_snapshots();
        match op {
            Op::Write {
                arena,
                offset,
                len,
                byte,
            } => {
                let i = pick(&arenas, arena).unwrap();
                let view = m.view(i);
                let data = vec![byte; len];
                let r = match &mut m.arenas[i].as_mut().unwrap().handle {
                    Handle::Arena(a) => a.write(offset, &data),
                    Handle::Proxy(_) => m.proxy_mut(i, |p| p.write(offset, &data)),
                };
                let a = m.arenas[i].as_mut().unwrap();
                if offset + len > capacity {
                    assert!(matches!(r, Err(Error::OutOfBounds { .. })));
                    continue;
                }
                r.unwrap();
                if let Some((_, own)) = &mut a.source {
                    let touched = offset / page..=(offset + len - 1) / page;
                    for (p, mine) in own
                        .iter_mut()
                        .enumerate()
                        .filter(|(p, _)| touched.contains(p))
                    {
                        if !*mine {
                            *mine = true;
                            let r = p * page..(p + 1) * page;
                            a.bytes[r.clone()].copy_from_slice(&view[r]);
                        }
                    }
                }
                a.bytes[offset..offset + len].fill(byte);
            }
            Op::Snapshot { arena } => {
                let i = pick(&arenas, arena).unwrap();
                let v = m.view(i);
                let s = match &mut m.arenas[i].as_mut().unwrap().handle {
                    Handle::Arena(a) => a.snapshot().unwrap(),
                    Handle::Proxy(_) => m.proxy_mut(i, |p| p.snapshot().unwrap()),
                };
                m.snapshots.push(Some((s, v)));
            }
            Op::Restore { arena, snap } => {
                let Some(s) = pick(&snaps, snap) else {
                    continue;
                };
                let i = pick(&arenas, arena).unwrap();
                let (snapshot, bytes) = m.snapshots[s].as_ref().unwrap();
                let bytes = bytes.clone();
                let a = m.arenas[i].as_mut().unwrap();
                // A proxy is not restored; its snapshots can be restored into arenas.
                let Handle::Arena(arena) = &mut a.handle else {
                    continue;
                };
                arena.restore(snapshot).unwrap();
                a.bytes = bytes;
            }
            Op::DropSnapshot { snap } => {
                if let Some(s) = pick(&snaps, snap) {
                    m.snapshots[s] = None;
                }
            }
            Op::ToArena { snap } => {
                if arenas.len() >= 5 {
                    continue;
                }
                let Some(s) = pick(&snaps, snap) else {
                    continue;
                };
                let (snapshot, bytes) = m.snapshots[s].as_ref().unwrap();
                let arena = snapshot.to_arena().unwrap();
                let bytes = bytes.clone();
                m.arenas.push(Some(ModelArena {
                    handle: Handle::Arena(arena),
                    bytes,
                    source: None,
                }));
            }
            Op::Proxy { arena } => {
                if arenas.len() >= 5 {
                    continue;
                }
                let i = pick(&arenas, arena).unwrap();
                let Handle::Arena(a) = &mut m.arenas[i].as_mut().unwrap().handle else {
                    continue;
                };
                let proxy = a.proxy().unwrap();
                assert!(a.stats().has_proxies);
                m.arenas.push(Some(ModelArena {
                    handle: Handle::Proxy(proxy),
                    bytes: vec![0; capacity],
                    source: Some((i, vec![false; pages])),
                }));
            }
            Op::DropArena { arena } => {
                if arenas.len() <= 1 {
                    continue;
                }
                let i = pick(&arenas, arena).unwrap();
                for j in m.live_arenas() {
                    if matches!(&m.arenas[j].as_ref().unwrap().source, Some((src, _)) if *src == i)
                    {
                        m.detach(j);
                    }
                }
                m.arenas[i] = None;
            }
        }
        m.check();
    }
    drop(m);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    /// 128 programs of 100 operations: at least 12,800 checked operations per run.
    #[test]
    fn arena_matches_model(
        (pages, ops) in prop_oneof![Just(8usize), Just(24), Just(70)]
            .prop_flat_map(|pages| (Just(pages), prop::collection::vec(op(pages * cowarena::page_size()), 100))),
        budget in prop_oneof![Just(1usize), Just(4), Just(1000)],
    ) {
        run(pages, budget, ops);
    }
}
