//! Anomaly tests: every system call a workload makes is failed in turn, with each errno class,
//! and the whole world is checked against a plain model after every step.
//!
//! A workload is a list of [`Step`]s on a small world: arenas, snapshots, proxies, typed values
//! and collections. It runs once to count its system calls (`fault_injection::calls`, or the
//! interruptible ones for `EINTR`), then again from scratch for every `n` in `1..=count`, with
//! call `n` failing. After each step:
//!
//! - if it returned `Err`: the error is an [`Error::Os`] naming the operation that failed, with
//!   the injected errno (or, for a branch, a [`ForkError`] saying how the child ended when the
//!   failure landed in the child); the world equals the model from before the step, except
//!   where the call documents a partial result (a restore's copy: each page is either as before
//!   or as the snapshot); then the step, retried without the failure, succeeds;
//! - `EINTR` never surfaces: the step succeeds;
//! - every byte of every arena, snapshot and proxy, every typed value and every collection
//!   equals the model.
//!
//! At the end, with everything dropped: each page store holds no live page, and no memfd,
//! backing file, mapping or child process is left. A panic is caught and reported with the
//! workload, errno, `n`, step and failed operation; `SIGBUS`, `SIGSEGV` and `SIGABRT` print the
//! same position before the process dies.
//!
//! Adding a workload: a function returning its steps and the failure points it must reach, and a
//! `#[test]` calling [`check`] (a new kind of call is a new [`Step`] variant and its arm in
//! [`World::exec`]).

#![cfg(all(target_os = "linux", feature = "fault-injection"))]

mod common;
use common::{
    cowarena_memfds, fds_to, mappings_in, mappings_of, memfd_mappings, no_children, serial,
};
use cowarena::fault_injection as fi;
use cowarena::{
    page_size, Arena, ArenaMap, ArenaVec, Error, FileProblem, ForkError, ForkOptions, Proxy, Ptr,
    Snapshot, ViewMut,
};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ERRNOS: [(i32, &str); 5] = [
    (libc::ENOMEM, "ENOMEM"),
    (libc::ENOSPC, "ENOSPC"),
    (libc::EMFILE, "EMFILE"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::EINTR, "EINTR"),
];

/// Elements of a large object: over 1016 bytes, so it gets pages of its own.
const LARGE: usize = 600;

/// How a [`Step::Build`] arena is configured.
#[derive(Clone, Copy, Debug)]
enum Config {
    Default,
    /// `private_budget` and `mapping_budget`, in pages and runs: snapshots and restores shed,
    /// remap and compact.
    Tight {
        private: usize,
        runs: usize,
    },
    /// The page store in a directory of the normal file system (`O_TMPFILE`, `fallocate`).
    Dir,
    /// Raw writes found as private pages, without the kernel's write tracking.
    PrivatePages,
}

/// One step of a workload, with positional fields so that a workload reads as a script. `a`,
/// `s`, `p`, `o`, `v`, `m` name world slots: arenas, snapshots, proxies, typed objects, vectors
/// and maps; `at`/`len` a byte range; `seed` the bytes or values written.
#[derive(Clone, Debug)]
enum Step {
    /// (a, pages, config): `ArenaBuilder::build`.
    Build(usize, usize, Config),
    /// (a, at, len, seed): `Arena::write`.
    Write(usize, usize, usize, u64),
    /// (a, pages, every, seed): whole pages `pages.step_by(every)` written with `Arena::write`.
    Fill(usize, Range<usize>, usize, u64),
    /// (a, at, len, seed): a write through `Arena::as_mut_ptr`, found by the kernel's page scan.
    RawWrite(usize, usize, usize, u64),
    /// (a, s): `Arena::snapshot`.
    Snapshot(usize, usize),
    /// (a, s): `Arena::restore`.
    Restore(usize, usize),
    /// (s)
    DropSnapshot(usize),
    /// (a)
    DropArena(usize),
    /// (s, a): `Snapshot::to_arena`.
    ToArena(usize, usize),
    /// (s): `Snapshot::try_as_bytes`, compared with the model.
    View(usize),
    /// (s, at, len): `Snapshot::read`, compared with the model.
    Read(usize, usize, usize),
    /// (a, p): `Arena::proxy`.
    Proxy(usize, usize),
    /// (p, at, len, seed): `ProxyMut::write` (through `with_mut`, or `without_source_mut` once
    /// the source is gone).
    ProxyWrite(usize, usize, usize, u64),
    /// (p, at, len): `read` through `Proxy::with` (or `without_source`).
    ProxyRead(usize, usize, usize),
    /// (p, s): `ProxyMut::snapshot`.
    ProxySnapshot(usize, usize),
    /// (p)
    DropProxy(usize),
    /// (a, o, large, value): `Arena::alloc` of a `u64`, or of a page-sized array of them.
    Alloc(usize, usize, bool, u64),
    /// (a, o, value): `Arena::try_get_mut`.
    Set(usize, usize, u64),
    /// (a, o): `Arena::free`.
    Free(usize, usize),
    /// (a, v): `ArenaVec::new`.
    NewVec(usize, usize),
    /// (a, v, count, seed): `ArenaVec::push`, `count` times.
    Push(usize, usize, u64, u64),
    /// (a, m): `ArenaMap::new`.
    NewMap(usize, usize),
    /// (a, m, count, seed): `ArenaMap::insert`, `count` times.
    Insert(usize, usize, u64, u64),
    /// (a, at, len, seed, timeout): `fork_run` (with a generous timeout if `timeout`); the child
    /// writes and returns the sum of its arena's bytes.
    ForkRun(usize, usize, usize, u64, bool),
    /// (a, s, at, len, seed, raw): `fork_snapshot`; the child writes (through `as_mut_ptr` if
    /// `raw`).
    ForkSnapshot(usize, usize, usize, usize, u64, bool),
    /// (a): a child that never returns, killed at a short timeout (`ForkError::TimedOut`).
    ForkTimeout(usize),
    /// (s, f): `Snapshot::save` to file `f` of the world's directory.
    Save(usize, usize),
    /// (s, base, f): `Snapshot::save_delta` against snapshot `base` (saved or opened).
    SaveDelta(usize, usize, usize),
    /// (f, s): `Snapshot::open`, following the file's delta chain.
    Open(usize, usize),
    /// (a, f, s): `Arena::open_snapshot`, into arena `a`'s page store.
    OpenInto(usize, usize, usize),
    /// (a, pages, seed): `Arena::from_bytes`.
    FromBytes(usize, usize, u64),
}

/// A workload: its steps, and the failure points (operations) it must reach.
struct Workload {
    name: &'static str,
    steps: Vec<Step>,
    reaches: &'static [&'static str],
}

fn page() -> usize {
    page_size()
}

/// Deterministic non-zero bytes, different for every seed.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let base = (seed.wrapping_mul(0x9e37_79b9) >> 24) as u8;
    (0..len)
        .map(|i| base.wrapping_add((i as u8).wrapping_mul(31)) | 1)
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Obj {
    Small(Ptr<u64>),
    Large(Ptr<[u64; LARGE]>),
}

/// The model of an arena's typed values.
#[derive(Clone, Default)]
struct Typed {
    objs: BTreeMap<usize, (Obj, u64)>,
    vecs: BTreeMap<usize, (ArenaVec<u64>, Vec<u64>)>,
    maps: BTreeMap<usize, MapModel>,
}

/// A map and its model.
type MapModel = (ArenaMap<u64, u64>, BTreeMap<u64, u64>);

struct ArenaEntry {
    arena: Arena,
    bytes: Vec<u8>,
    typed: Typed,
    /// The arena has had a proxy since its last snapshot or restore (its memory may still be
    /// the shared file, which it leaves at its next snapshot or restore).
    shared: bool,
}

struct SnapEntry {
    snap: Snapshot,
    bytes: Vec<u8>,
    typed: Typed,
}

struct ProxyEntry {
    proxy: Proxy,
    source: usize,
    /// The pages the proxy wrote, with their bytes.
    own: BTreeMap<usize, Vec<u8>>,
    /// The source's last bytes, once it is dropped.
    orphaned: Option<Vec<u8>>,
}

/// How a step failed.
enum StepError {
    Call(Error),
    Fork(ForkError),
    /// The step returned, but not what the model expects.
    Wrong(String),
}

impl From<Error> for StepError {
    fn from(e: Error) -> Self {
        StepError::Call(e)
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Call(e) => write!(f, "{e} ({e:?})"),
            StepError::Fork(e) => write!(f, "{e} ({e:?})"),
            StepError::Wrong(s) => f.write_str(s),
        }
    }
}

fn slot<T>(v: &mut Vec<Option<T>>, i: usize) -> &mut Option<T> {
    if v.len() <= i {
        v.resize_with(i + 1, || None);
    }
    &mut v[i]
}

/// The arenas, snapshots and proxies of a workload, with their models.
#[derive(Default)]
struct World {
    arenas: Vec<Option<ArenaEntry>>,
    snaps: Vec<Option<SnapEntry>>,
    proxies: Vec<Option<ProxyEntry>>,
    /// One arena per page store, made from an empty snapshot: it holds no page, and its stats
    /// show whether the store's pages are all released at the end.
    probes: Vec<Arena>,
    /// A store was made by the last step and needs its probe.
    new_store: Option<usize>,
    /// Every address range the world's memory occupied, checked for mappings at the end.
    ranges: BTreeSet<(usize, usize)>,
    dir: Option<PathBuf>,
    /// Saved snapshot files: what each holds.
    files: Vec<Option<SnapModel>>,
}

/// What a saved file holds.
#[derive(Clone)]
struct SnapModel {
    bytes: Vec<u8>,
    typed: Typed,
}

impl World {
    fn arena(&mut self, a: usize) -> &mut ArenaEntry {
        self.arenas[a]
            .as_mut()
            .expect("workload names a live arena")
    }

    fn snap(&self, s: usize) -> &SnapEntry {
        self.snaps[s]
            .as_ref()
            .expect("workload names a live snapshot")
    }

    /// What proxy `p` shows, by the model.
    fn proxy_model(&self, p: usize) -> Vec<u8> {
        let e = self.proxies[p].as_ref().expect("live proxy");
        let source = match &e.orphaned {
            Some(b) => b.clone(),
            None => self.arenas[e.source]
                .as_ref()
                .expect("source")
                .bytes
                .clone(),
        };
        self.proxy_over(p, source)
    }

    /// What proxy `p` shows over its source's bytes `source`.
    fn proxy_over(&self, p: usize, mut bytes: Vec<u8>) -> Vec<u8> {
        let e = self.proxies[p].as_ref().expect("live proxy");
        for (&pg, own) in &e.own {
            bytes[pg * page()..(pg + 1) * page()].copy_from_slice(own);
        }
        bytes
    }

    fn file(&self, f: usize) -> PathBuf {
        self.dir
            .as_ref()
            .expect("a directory")
            .join(format!("f{f}.snap"))
    }

    /// Saves snapshot `s` to file `f` (as a delta against snapshot `base`, if given).
    fn save(&mut self, s: usize, base: Option<usize>, f: usize) -> Result<(), StepError> {
        let path = self.file(f);
        let t = self.snap(s);
        match base {
            None => t.snap.save(&path)?,
            Some(b) => t.snap.save_delta(&path, &self.snap(b).snap)?,
        };
        let model = SnapModel {
            bytes: t.bytes.clone(),
            typed: t.typed.clone(),
        };
        *slot(&mut self.files, f) = Some(model);
        Ok(())
    }

    /// The saved files are exactly the model's, each holding its snapshot: a failed save leaves
    /// the old file or none, and no temporary file.
    fn check_files(&self) -> Result<(), String> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| e.to_string())?
            .map(|e| {
                e.expect("a directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        on_disk.sort();
        let mut expected: Vec<String> = (0..self.files.len())
            .filter(|&f| self.files[f].is_some())
            .map(|f| format!("f{f}.snap"))
            .collect();
        expected.sort();
        if on_disk != expected {
            return Err(format!("files {on_disk:?}, the model has {expected:?}"));
        }
        for (f, m) in self.files.iter().enumerate() {
            let Some(m) = m else { continue };
            let opened = Snapshot::open(self.file(f)).map_err(|e| format!("file {f}: {e}"))?;
            let bytes = fi::snapshot_bytes(&opened).map_err(|e| e.to_string())?;
            if bytes != m.bytes {
                return Err(format!("file {f} differs from the model"));
            }
        }
        Ok(())
    }

    fn has_proxies(&self, a: usize) -> bool {
        self.proxies.iter().flatten().any(|p| p.source == a)
    }

    /// What a failed step may not have done, beyond changing bytes: a snapshot fails only with
    /// pages left unfrozen (its own layout: remapping and shedding do not fail it), a restore
    /// only before its copy is complete (shedding does not fail it).
    fn check_failed(&self, step: &Step) -> Result<(), String> {
        match *step {
            Step::Snapshot(a, _) => {
                let e = self.arenas[a].as_ref().expect("live arena");
                if !e.shared && e.arena.stats().dirty_pages == 0 {
                    return Err("the snapshot failed with every page frozen".into());
                }
            }
            Step::Restore(a, s) => {
                let e = self.arenas[a].as_ref().expect("live arena");
                let target = &self.snap(s).bytes;
                if e.arena.as_bytes() == target && e.bytes != *target {
                    return Err("the restore failed with its copy complete".into());
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The model after `step` failed in `failed`, where the call documents a result: a save whose
    /// last step, the directory's `fsync`, failed has its complete file in place.
    fn after_failure(&mut self, step: &Step, failed: Option<&str>) {
        if failed != Some("fsync (directory)") {
            return;
        }
        if let Step::Save(s, f) | Step::SaveDelta(s, _, f) = *step {
            let t = self.snap(s);
            let model = SnapModel {
                bytes: t.bytes.clone(),
                typed: t.typed.clone(),
            };
            *slot(&mut self.files, f) = Some(model);
        }
    }

    /// Runs `step`; on success the model follows it.
    fn exec(&mut self, step: &Step) -> Result<(), StepError> {
        match *step {
            Step::Build(a, pages, config) => {
                let mut b = Arena::builder(pages * page());
                match config {
                    Config::Default => {}
                    Config::Tight { private, runs } => {
                        b = b.private_budget(private * page()).mapping_budget(runs)
                    }
                    Config::Dir => b = b.backing_dir(self.dir.clone().expect("a directory")),
                    Config::PrivatePages => b = b.track_raw_writes(false),
                }
                let arena = b.build()?;
                *slot(&mut self.arenas, a) = Some(ArenaEntry {
                    arena,
                    bytes: vec![0; pages * page()],
                    typed: Typed::default(),
                    shared: false,
                });
                self.new_store = Some(a);
            }
            Step::Write(a, at, len, seed) => {
                let e = self.arena(a);
                let data = pattern(seed, len);
                e.arena.write(at, &data)?;
                e.bytes[at..at + len].copy_from_slice(&data);
            }
            Step::Fill(a, ref pages, every, seed) => {
                let e = self.arena(a);
                for pg in pages.clone().step_by(every) {
                    let data = pattern(seed ^ pg as u64, page());
                    e.arena.write(pg * page(), &data)?;
                    e.bytes[pg * page()..(pg + 1) * page()].copy_from_slice(&data);
                }
            }
            Step::RawWrite(a, at, len, seed) => {
                let e = self.arena(a);
                let data = pattern(seed, len);
                assert!(at + len <= e.arena.capacity());
                // SAFETY: in bounds (checked above); no borrow of the arena is live.
                unsafe {
                    let base = e.arena.as_mut_ptr();
                    std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(at), len);
                }
                e.bytes[at..at + len].copy_from_slice(&data);
            }
            Step::Snapshot(a, s) => {
                let alone = !self.has_proxies(a);
                let e = self.arena(a);
                let snap = e.arena.snapshot()?;
                e.shared &= !alone;
                let entry = SnapEntry {
                    snap,
                    bytes: e.bytes.clone(),
                    typed: e.typed.clone(),
                };
                *slot(&mut self.snaps, s) = Some(entry);
            }
            Step::Restore(a, s) => {
                let alone = !self.has_proxies(a);
                let e = self.arenas[a].as_mut().expect("live arena");
                let t = self.snaps[s].as_ref().expect("live snapshot");
                e.arena.restore(&t.snap)?;
                e.shared &= !alone;
                e.bytes = t.bytes.clone();
                e.typed = t.typed.clone();
            }
            Step::DropSnapshot(s) => {
                self.snaps[s] = None;
            }
            Step::DropArena(a) => {
                let e = self.arenas[a].take().expect("live arena");
                for p in self.proxies.iter_mut().flatten() {
                    if p.source == a && p.orphaned.is_none() {
                        p.orphaned = Some(e.bytes.clone());
                    }
                }
            }
            Step::ToArena(s, a) => {
                let t = self.snap(s);
                let entry = ArenaEntry {
                    arena: t.snap.to_arena()?,
                    bytes: t.bytes.clone(),
                    typed: t.typed.clone(),
                    shared: false,
                };
                *slot(&mut self.arenas, a) = Some(entry);
            }
            Step::View(s) => {
                let t = self.snaps[s].as_ref().expect("live snapshot");
                let bytes = t.snap.try_as_bytes()?;
                if bytes != t.bytes {
                    return Err(StepError::Wrong(format!("snapshot {s}'s view differs")));
                }
                note(&mut self.ranges, bytes);
            }
            Step::Read(s, at, len) => {
                let t = self.snap(s);
                let mut buf = vec![0; len];
                t.snap.read(at, &mut buf)?;
                if buf != t.bytes[at..at + len] {
                    return Err(StepError::Wrong(format!("snapshot {s}'s read differs")));
                }
            }
            Step::Proxy(a, p) => {
                let e = self.arena(a);
                let proxy = e.arena.proxy()?;
                e.shared = true;
                *slot(&mut self.proxies, p) = Some(ProxyEntry {
                    proxy,
                    source: a,
                    own: BTreeMap::new(),
                    orphaned: None,
                });
            }
            Step::ProxyWrite(p, at, len, seed) => {
                let before = self.proxy_model(p);
                let e = self.proxies[p].as_mut().expect("live proxy");
                let data = pattern(seed, len);
                match &e.orphaned {
                    Some(_) => e.proxy.without_source_mut()?.write(at, &data)?,
                    None => {
                        let source = &self.arenas[e.source].as_ref().expect("source").arena;
                        e.proxy.with_mut(source)?.write(at, &data)?
                    }
                }
                for pg in at / page()..(at + len).div_ceil(page()) {
                    e.own
                        .entry(pg)
                        .or_insert_with(|| before[pg * page()..(pg + 1) * page()].to_vec());
                    let lo = at.max(pg * page());
                    let hi = (at + len).min((pg + 1) * page());
                    e.own.get_mut(&pg).expect("inserted")[lo - pg * page()..hi - pg * page()]
                        .copy_from_slice(&data[lo - at..hi - at]);
                }
            }
            Step::ProxyRead(p, at, len) => {
                let expected = self.proxy_model(p)[at..at + len].to_vec();
                let e = self.proxies[p].as_ref().expect("live proxy");
                let mut buf = vec![0; len];
                match &e.orphaned {
                    Some(_) => e.proxy.without_source()?.read(at, &mut buf)?,
                    None => {
                        let source = &self.arenas[e.source].as_ref().expect("source").arena;
                        e.proxy.with(source)?.read(at, &mut buf)?
                    }
                }
                if buf != expected {
                    return Err(StepError::Wrong(format!("proxy {p} reads wrong bytes")));
                }
            }
            Step::ProxySnapshot(p, s) => {
                let bytes = self.proxy_model(p);
                let e = self.proxies[p].as_mut().expect("live proxy");
                let snap = match &e.orphaned {
                    Some(_) => e.proxy.without_source_mut()?.snapshot()?,
                    None => {
                        let source = &self.arenas[e.source].as_ref().expect("source").arena;
                        e.proxy.with_mut(source)?.snapshot()?
                    }
                };
                *slot(&mut self.snaps, s) = Some(SnapEntry {
                    snap,
                    bytes,
                    typed: Typed::default(),
                });
            }
            Step::DropProxy(p) => {
                self.proxies[p] = None;
            }
            Step::Alloc(a, o, large, value) => {
                let e = self.arena(a);
                let obj = if large {
                    Obj::Large(e.arena.alloc([value; LARGE])?)
                } else {
                    Obj::Small(e.arena.alloc(value)?)
                };
                e.typed.objs.insert(o, (obj, value));
                e.bytes = e.arena.as_bytes().to_vec();
            }
            Step::Set(a, o, value) => {
                let e = self.arena(a);
                let (obj, v) = e.typed.objs.get_mut(&o).expect("live object");
                match *obj {
                    Obj::Small(p) => *e.arena.try_get_mut(p)? = value,
                    Obj::Large(p) => *e.arena.try_get_mut(p)? = [value; LARGE],
                }
                *v = value;
                e.bytes = e.arena.as_bytes().to_vec();
            }
            Step::Free(a, o) => {
                let e = self.arena(a);
                match e.typed.objs[&o].0 {
                    Obj::Small(p) => e.arena.free(p)?,
                    Obj::Large(p) => e.arena.free(p)?,
                }
                e.typed.objs.remove(&o);
                e.bytes = e.arena.as_bytes().to_vec();
            }
            Step::NewVec(a, v) => {
                let e = self.arena(a);
                let vec = ArenaVec::new(&mut e.arena)?;
                e.typed.vecs.insert(v, (vec, Vec::new()));
                e.bytes = e.arena.as_bytes().to_vec();
            }
            Step::Push(a, v, count, seed) => {
                let e = self.arena(a);
                let (vec, model) = e.typed.vecs.get_mut(&v).expect("live vector");
                for i in 0..count {
                    vec.push(&mut e.arena, seed + i)?;
                    model.push(seed + i);
                }
                e.bytes = e.arena.as_bytes().to_vec();
            }
            Step::NewMap(a, m) => {
                let e = self.arena(a);
                let map = ArenaMap::new(&mut e.arena)?;
                e.typed.maps.insert(m, (map, BTreeMap::new()));
                e.bytes = e.arena.as_bytes().to_vec();
            }
            Step::Insert(a, m, count, seed) => {
                let e = self.arena(a);
                let (map, model) = e.typed.maps.get_mut(&m).expect("live map");
                for i in 0..count {
                    let key = (seed + i).wrapping_mul(0x9e37_79b9);
                    map.insert(&mut e.arena, key, i)?;
                    model.insert(key, i);
                }
                e.bytes = e.arena.as_bytes().to_vec();
            }
            Step::ForkRun(a, at, len, seed, timeout) => {
                let e = self.arena(a);
                let data = pattern(seed, len);
                let mut after = e.bytes.clone();
                after[at..at + len].copy_from_slice(&data);
                let expected: u64 = after.iter().map(|&b| u64::from(b)).sum();
                let options = match timeout {
                    true => ForkOptions::new().timeout(Duration::from_secs(60)),
                    false => ForkOptions::new(),
                };
                let sum = e
                    .arena
                    .fork_run_with(&options, |b| {
                        b.write(at, &data).expect("in bounds");
                        b.as_bytes().iter().map(|&b| u64::from(b)).sum::<u64>()
                    })
                    .map_err(StepError::Fork)?;
                if sum != expected {
                    return Err(StepError::Wrong(format!("branch sum {sum} != {expected}")));
                }
            }
            Step::ForkSnapshot(a, s, at, len, seed, raw) => {
                let e = self.arena(a);
                let data = pattern(seed, len);
                let mut after = e.bytes.clone();
                after[at..at + len].copy_from_slice(&data);
                let (value, snap) = e
                    .arena
                    .fork_snapshot(|b| {
                        if raw {
                            // SAFETY: in bounds (the workload's offsets fit its arena); no
                            // borrow of the branch's arena is live.
                            unsafe {
                                let base = b.as_mut_ptr();
                                std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(at), len);
                            }
                        } else {
                            b.write(at, &data).expect("in bounds");
                        }
                        7u32
                    })
                    .map_err(StepError::Fork)?;
                if value != 7 {
                    return Err(StepError::Wrong(format!("branch returned {value}")));
                }
                let typed = e.typed.clone();
                *slot(&mut self.snaps, s) = Some(SnapEntry {
                    snap,
                    bytes: after,
                    typed,
                });
            }
            Step::ForkTimeout(a) => {
                let options = ForkOptions::new().timeout(Duration::from_millis(5));
                let r: Result<u8, ForkError> =
                    self.arena(a).arena.fork_run_with(&options, |_| loop {
                        std::hint::spin_loop()
                    });
                match r {
                    Err(ForkError::TimedOut { .. }) => {}
                    Err(e) => return Err(StepError::Fork(e)),
                    Ok(v) => return Err(StepError::Wrong(format!("endless branch returned {v}"))),
                }
            }
            Step::Save(s, f) => self.save(s, None, f)?,
            Step::SaveDelta(s, base, f) => self.save(s, Some(base), f)?,
            Step::Open(f, s) => {
                let m = self.files[f].clone().expect("a saved file");
                let snap = Snapshot::open(self.file(f))?;
                let entry = SnapEntry {
                    snap,
                    bytes: m.bytes,
                    typed: m.typed,
                };
                *slot(&mut self.snaps, s) = Some(entry);
            }
            Step::OpenInto(a, f, s) => {
                let m = self.files[f].clone().expect("a saved file");
                let path = self.file(f);
                let snap = self.arena(a).arena.open_snapshot(path)?;
                let entry = SnapEntry {
                    snap,
                    bytes: m.bytes,
                    typed: m.typed,
                };
                *slot(&mut self.snaps, s) = Some(entry);
            }
            Step::FromBytes(a, pages, seed) => {
                let bytes = pattern(seed, pages * page());
                let arena = Arena::from_bytes(&bytes)?;
                // Its store starts with pages, so it gets no probe: the memfd and mapping
                // counts show whether it is released.
                *slot(&mut self.arenas, a) = Some(ArenaEntry {
                    arena,
                    bytes,
                    typed: Typed::default(),
                    shared: false,
                });
            }
        }
        Ok(())
    }

    /// Compares everything with the model. While `restoring` = `(arena, snapshot)`, that arena's
    /// pages may each be as before or as the snapshot (a failed restore's partial copy).
    fn check(&mut self, restoring: Option<(usize, usize)>) -> Result<(), String> {
        let pg = page();
        for (i, e) in self.arenas.iter().enumerate() {
            let Some(e) = e else { continue };
            let bytes = e.arena.as_bytes();
            match restoring {
                Some((a, s)) if a == i => {
                    let target = &self.snap(s).bytes;
                    for (p, got) in bytes.chunks(pg).enumerate() {
                        let (before, after) = (&e.bytes[p * pg..][..pg], &target[p * pg..][..pg]);
                        if got != before && got != after {
                            return Err(format!(
                                "arena {i} page {p} is neither as before nor as the snapshot"
                            ));
                        }
                    }
                }
                _ => {
                    if bytes != e.bytes {
                        let p = first_difference(bytes, &e.bytes) / pg;
                        return Err(format!("arena {i} differs from the model at page {p}"));
                    }
                    check_typed(&e.arena, &e.typed).map_err(|m| format!("arena {i}: {m}"))?;
                }
            }
        }
        for (i, t) in self.snaps.iter().enumerate() {
            let Some(t) = t else { continue };
            let bytes = fi::snapshot_bytes(&t.snap).map_err(|e| e.to_string())?;
            if bytes != t.bytes {
                let p = first_difference(&bytes, &t.bytes) / pg;
                return Err(format!("snapshot {i} differs from the model at page {p}"));
            }
        }
        for p in 0..self.proxies.len() {
            let Some(e) = &self.proxies[p] else { continue };
            // A failed restore of the source shows through its proxies as it is.
            let expected = match restoring {
                Some((a, _)) if a == e.source && e.orphaned.is_none() => {
                    let source = self.arenas[a].as_ref().expect("source");
                    self.proxy_over(p, source.arena.as_bytes().to_vec())
                }
                _ => self.proxy_model(p),
            };
            let view = match &e.orphaned {
                Some(_) => e.proxy.without_source(),
                None => e
                    .proxy
                    .with(&self.arenas[e.source].as_ref().expect("source").arena),
            }
            .map_err(|e| format!("proxy {p}: {e}"))?;
            if view.as_bytes() != expected {
                let at = first_difference(view.as_bytes(), &expected) / pg;
                return Err(format!("proxy {p} differs from the model at page {at}"));
            }
            note(&mut self.ranges, view.as_bytes());
        }
        for e in self.arenas.iter().flatten() {
            note(&mut self.ranges, e.arena.as_bytes());
        }
        self.check_files()
    }

    /// Makes the probe of a store made by the last step (outside any failure).
    fn add_probe(&mut self) -> Result<(), Error> {
        if let Some(a) = self.new_store.take() {
            let empty = self.arena(a).arena.snapshot()?;
            self.probes.push(empty.to_arena()?);
        }
        Ok(())
    }

    /// Drops everything, checking the typed values of the snapshots on the way, then that every
    /// store released its pages.
    fn teardown(mut self) -> Result<BTreeSet<(usize, usize)>, String> {
        for (i, t) in self.snaps.iter().enumerate() {
            let Some(t) = t else { continue };
            check_typed(&t.snap, &t.typed).map_err(|m| format!("snapshot {i}: {m}"))?;
            if let Ok(bytes) = t.snap.try_as_bytes() {
                note(&mut self.ranges, bytes);
            }
        }
        self.proxies.clear();
        self.snaps.clear();
        for f in 0..self.files.len() {
            if self.files[f].take().is_some() {
                std::fs::remove_file(self.file(f)).map_err(|e| format!("file {f}: {e}"))?;
            }
        }
        for e in self.arenas.drain(..).flatten() {
            note(&mut self.ranges, e.arena.as_bytes());
        }
        for (i, probe) in self.probes.iter().enumerate() {
            let store = probe.stats().store;
            // Dead pages kept for reuse go with the store, whose file the resource count checks.
            if store.live_pages != 0 || store.held_bytes != store.reusable_bytes {
                return Err(format!("store {i} holds {store:?} with everything dropped"));
            }
            note(&mut self.ranges, probe.as_bytes());
        }
        Ok(std::mem::take(&mut self.ranges))
    }
}

/// Records the address range of `bytes`, to check at the end that no mapping is left there.
fn note(ranges: &mut BTreeSet<(usize, usize)>, bytes: &[u8]) {
    let r = common::addresses(bytes);
    ranges.insert((r.start, r.end));
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(0)
}

/// Every typed value and collection of the model, read through `view`.
fn check_typed(view: &impl cowarena::View, typed: &Typed) -> Result<(), String> {
    for (o, &(obj, value)) in &typed.objs {
        let ok = match obj {
            Obj::Small(p) => view.try_get(p).map(|v| *v == value),
            Obj::Large(p) => view.try_get(p).map(|v| v.iter().all(|&x| x == value)),
        };
        match ok {
            Ok(true) => {}
            Ok(false) => return Err(format!("object {o} changed")),
            Err(e) => return Err(format!("object {o}: {e}")),
        }
    }
    for (v, (vec, model)) in &typed.vecs {
        let got = vec
            .try_as_slice(view)
            .map_err(|e| format!("vector {v}: {e}"))?;
        if got != model.as_slice() {
            return Err(format!("vector {v} differs"));
        }
    }
    for (m, (map, model)) in &typed.maps {
        if map.len(view) != model.len() {
            return Err(format!("map {m} has {} entries", map.len(view)));
        }
        for (k, v) in model {
            if map.try_get(view, k).map_err(|e| e.to_string())? != Some(v) {
                return Err(format!("map {m} lost key {k}"));
            }
        }
    }
    Ok(())
}

/// The crate's resources that must come back to where they started.
#[derive(Debug, PartialEq, Eq)]
struct Resources {
    memfds: usize,
    memfd_mappings: usize,
    dir_files: usize,
    dir_mappings: usize,
}

fn resources(dir: &Path) -> Resources {
    let dir = dir.to_string_lossy().into_owned();
    let dir_files = fds_to(&dir).len();
    let dir_mappings = mappings_of(&dir);
    Resources {
        memfds: cowarena_memfds().len(),
        memfd_mappings: memfd_mappings(),
        dir_files,
        dir_mappings,
    }
}

/// Where a run is, for reports (and for the crash handler).
struct Position<'a> {
    workload: &'a str,
    errno: &'a str,
    n: u64,
    step: usize,
}

impl std::fmt::Display for Position<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "workload {}, {} at call {}, step {}",
            self.workload, self.errno, self.n, self.step
        )
    }
}

/// What one run of a workload found.
#[derive(Default)]
struct RunReport {
    /// Calls of the counted class made by the steps.
    calls: u64,
    interruptible: u64,
    /// The operation whose call failed.
    failed: Option<&'static str>,
    /// Operations whose calls the steps (not the checks) made.
    reached: BTreeSet<&'static str>,
    divergence: Option<String>,
}

/// Whether `e`, the error of a step whose call failed with `errno` in operation `failed` (`None`
/// when no armed call failed in this process: it failed in a forked child), reports it.
fn reports_failure(e: &StepError, failed: Option<&str>, errno: i32) -> Result<(), String> {
    let os = match e {
        StepError::Call(e) | StepError::Fork(ForkError::Parent(e)) => e,
        // The child could not send its result: its failure ends it with status 102.
        StepError::Fork(ForkError::Exited { code: 102 }) => return Ok(()),
        other => return Err(format!("unexpected error: {other}")),
    };
    let (op, source) = match os {
        Error::Os { op, source } => (op, source),
        // A snapshot file's errors name the file, and the call inside.
        Error::File {
            problem: FileProblem::Os { op, source },
            ..
        } => (op, source),
        _ => return Err(format!("not an Error::Os: {os:?}")),
    };
    if Some(*op) != failed {
        return Err(format!(
            "the error names {op:?}, the call that failed was {failed:?}"
        ));
    }
    if source.raw_os_error() != Some(errno) || !os.to_string().contains(op) {
        return Err(format!(
            "the error does not carry the errno and operation: {os}"
        ));
    }
    Ok(())
}

/// Runs `w` from scratch with the `n`-th call (of `errno`'s class) failing; `n == 0` fails none.
fn run_once(w: &Workload, errno: i32, n: u64, dir: &Path, pos: &mut Position<'_>) -> RunReport {
    let interruptible = errno == libc::EINTR;
    // A run that diverged may have left its files.
    for entry in std::fs::read_dir(dir).expect("the world's directory") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "snap") {
            std::fs::remove_file(&path).expect("a file of a diverged run");
        }
    }
    let mut world = World {
        dir: Some(dir.to_path_buf()),
        ..World::default()
    };
    let mut report = RunReport::default();
    let mut consumed = 0;
    let mut done = n == 0;
    fi::take_reached();
    for (i, step) in w.steps.iter().enumerate() {
        pos.step = i;
        crash::set(pos);
        fi::reset_count();
        let armed = !done && n > consumed;
        if armed {
            fi::fail_nth(n - consumed, errno);
        }
        let result = world.exec(step);
        let failed = fi::disarm();
        report.calls += fi::calls();
        report.interruptible += fi::interruptible_calls();
        consumed += if interruptible {
            fi::interruptible_calls()
        } else {
            fi::calls()
        };
        if failed.is_some() {
            done = true;
            report.failed = failed;
        }
        let diverged = |what: String| format!("{pos}, {step:?}, failed call {failed:?}: {what}");
        if let Err(e) = result {
            // A branch's child inherits the countdown: its failure shows only as how it ended.
            let injected = failed.is_some() || armed && matches!(e, StepError::Fork(_));
            if interruptible || !injected {
                report.divergence = Some(diverged(format!("an error, no failure injected: {e}")));
                break;
            }
            done = true;
            if matches!(e, StepError::Fork(ForkError::Exited { code: 102 })) {
                // Only a failed `write` of its result ends a child with this status.
                report.failed.get_or_insert("write");
                report.reached.insert("write");
            }
            if let Err(m) = reports_failure(&e, failed, errno) {
                report.divergence = Some(diverged(m));
                break;
            }
            world.after_failure(step, failed);
            if let Err(m) = world.check_failed(step) {
                report.divergence = Some(diverged(format!("after the error ({e}): {m}")));
                break;
            }
            let restoring = match *step {
                Step::Restore(a, s) => Some((a, s)),
                _ => None,
            };
            if let Err(m) = world.check(restoring) {
                report.divergence = Some(diverged(format!("after the error ({e}): {m}")));
                break;
            }
            if let Err(e) = world.exec(step) {
                report.divergence = Some(diverged(format!("the retry failed: {e}")));
                break;
            }
        }
        report.reached.extend(fi::take_reached());
        if let Err(e) = world.add_probe() {
            report.divergence = Some(diverged(format!("making the store's probe: {e}")));
            break;
        }
        if let Err(m) = world.check(None) {
            report.divergence = Some(diverged(m));
            break;
        }
        fi::take_reached();
    }
    pos.step = w.steps.len();
    crash::set(pos);
    let teardown = world.teardown();
    report.reached.extend(fi::take_reached());
    match teardown {
        Err(m) if report.divergence.is_none() => report.divergence = Some(format!("{pos}: {m}")),
        Ok(ranges) if report.divergence.is_none() => {
            for (lo, hi) in ranges {
                if mappings_in(lo..hi) != 0 {
                    report.divergence = Some(format!("{pos}: mappings left at {lo:#x}..{hi:#x}"));
                    break;
                }
            }
        }
        _ => {}
    }
    report
}

/// Runs `w` counting its calls, then once per failure point and errno class; asserts that no
/// run diverged or leaked, and that the workload reached every operation it names.
fn check(w: &Workload) {
    let _serial = serial();
    crash::install();
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("cowarena-anomaly-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let baseline = resources(&dir);
    let mut pos = Position {
        workload: w.name,
        errno: "none",
        n: 0,
        step: 0,
    };
    let count = run_once(w, 0, 0, &dir, &mut pos);
    assert_eq!(
        count.divergence, None,
        "the workload fails without injected failures"
    );
    let mut divergences = Vec::new();
    let mut reached = count.reached.clone();
    let mut failed_ops = BTreeSet::new();
    let mut points = 0;
    for (errno, name) in ERRNOS {
        let total = if errno == libc::EINTR {
            count.interruptible
        } else {
            count.calls
        };
        for n in 1..=total {
            pos = Position {
                workload: w.name,
                errno: name,
                n,
                step: 0,
            };
            let outcome =
                panic::catch_unwind(AssertUnwindSafe(|| run_once(w, errno, n, &dir, &mut pos)));
            let op = fi::disarm();
            points += 1;
            match outcome {
                Ok(report) => {
                    reached.extend(&report.reached);
                    failed_ops.extend(report.failed);
                    divergences.extend(report.divergence);
                }
                Err(payload) => {
                    let message = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    divergences.push(format!("{pos}: panicked (failed call {op:?}): {message}"));
                }
            }
            if let Err(m) = no_children() {
                divergences.push(format!("{pos}: {m}"));
            }
            let now = resources(&dir);
            if now != baseline {
                divergences.push(format!("{pos}: leaked {now:?} (before: {baseline:?})"));
            }
        }
    }
    crash::clear();
    let _ = std::fs::remove_dir(&dir);
    // No arena is left counted as sharing its memory with proxies, which would refuse branches.
    let mut other = Arena::with_capacity(page()).unwrap();
    if let Err(e) = other.fork_run(|_| 0u8) {
        divergences.push(format!("workload {}: a branch is refused: {e}", w.name));
    }
    println!(
        "workload {}: {} steps, {} calls ({} interruptible), {points} failure points in {:.1?}; \
         failed: {failed_ops:?}; reached: {reached:?}",
        w.name,
        w.steps.len(),
        count.calls,
        count.interruptible,
        started.elapsed(),
    );
    assert!(
        divergences.is_empty(),
        "{} divergences, the first ones:\n{}",
        divergences.len(),
        divergences[..divergences.len().min(20)].join("\n")
    );
    let missing: Vec<_> = w
        .reaches
        .iter()
        .filter(|op| !reached.contains(**op))
        .collect();
    assert!(
        missing.is_empty(),
        "workload {} never reached {missing:?}",
        w.name
    );
}

/// Prints the position of the run in progress when the process dies of a signal the test cannot
/// catch (`SIGBUS`, `SIGSEGV`, `SIGABRT`), then dies of it.
mod crash {
    use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
    use std::sync::Once;

    const MAX: usize = 256;
    static WHERE: [AtomicU8; MAX] = [const { AtomicU8::new(0) }; MAX];
    static LEN: AtomicUsize = AtomicUsize::new(0);

    pub fn set(pos: &impl std::fmt::Display) {
        let text = pos.to_string();
        let bytes = &text.as_bytes()[..text.len().min(MAX)];
        for (slot, &b) in WHERE.iter().zip(bytes) {
            slot.store(b, Ordering::Relaxed);
        }
        LEN.store(bytes.len(), Ordering::Relaxed);
    }

    pub fn clear() {
        LEN.store(0, Ordering::Relaxed);
    }

    extern "C" fn report(signal: libc::c_int) {
        let mut buf = [0u8; MAX + 64];
        let head = b"\nanomaly: fatal signal during ";
        buf[..head.len()].copy_from_slice(head);
        let len = LEN.load(Ordering::Relaxed);
        for i in 0..len {
            buf[head.len() + i] = WHERE[i].load(Ordering::Relaxed);
        }
        buf[head.len() + len] = b'\n';
        // SAFETY: write, signal and raise are async-signal-safe; `buf` outlives the call.
        unsafe {
            libc::write(2, buf.as_ptr().cast(), head.len() + len + 1);
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }

    pub fn install() {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            for signal in [libc::SIGBUS, libc::SIGSEGV, libc::SIGABRT] {
                // SAFETY: `report` is an `extern "C" fn(c_int)` that only makes
                // async-signal-safe calls.
                unsafe { libc::signal(signal, report as *const () as libc::sighandler_t) };
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------------

/// (a) Raw writes, snapshots, restores to older snapshots, drops.
fn raw() -> Workload {
    use Step::*;
    Workload {
        name: "raw",
        steps: vec![
            Build(0, 32, Config::Default),
            Fill(0, 0..32, 3, 1),
            Snapshot(0, 0),
            Write(0, 100, 9000, 2),
            Fill(0, 8..28, 1, 3),
            Snapshot(0, 1),
            Write(0, 5 * 4096 - 7, 20, 4),
            RawWrite(0, 30 * 4096 + 5, 3000, 5),
            Snapshot(0, 2),
            Restore(0, 0),
            Write(0, 12 * 4096, 4096, 6),
            Restore(0, 1),
            DropSnapshot(1),
            Snapshot(0, 3),
            RawWrite(0, 2 * 4096, 10, 7),
            Restore(0, 2),
            DropSnapshot(0),
            DropSnapshot(2),
            Fill(0, 1..32, 2, 8),
            Snapshot(0, 4),
            Restore(0, 3),
            DropSnapshot(3),
            DropArena(0),
            Build(1, 16, Config::PrivatePages),
            RawWrite(1, 3 * 4096, 100, 9),
            Snapshot(1, 5),
            RawWrite(1, 3 * 4096 + 50, 10, 10),
            Restore(1, 5),
            DropSnapshot(5),
            DropArena(1),
        ],
        reaches: &[
            "mmap (reserve address space)",
            "mmap (map zero pages)",
            "mmap (map file pages)",
            "mmap (read-only view of a store chunk)",
            "memfd_create",
            "ftruncate",
            "fcntl(F_ADD_SEALS)",
            "pwritev",
            "ioctl(PAGEMAP_SCAN)",
            "open(/proc/self/pagemap)",
            "pread(/proc/self/pagemap)",
            "userfaultfd(UFFD_USER_MODE_ONLY)",
            "mmap (shared writable view of a store chunk)",
            "madvise(MADV_POPULATE_WRITE)",
            "ioctl(UFFDIO_API)",
            "ioctl(UFFDIO_REGISTER)",
            "ioctl(UFFDIO_WRITEPROTECT)",
            "madvise(MADV_NOHUGEPAGE)",
        ],
    }
}

#[test]
fn raw_writes_snapshots_restores_and_drops() {
    check(&raw());
}

/// (b) A proxy's life: read through, written, its source written, snapshotted and restored
/// (to the proxy's snapshot too), a second proxy, raw writes to the shared source, the source
/// leaving the shared layout, and a proxy outliving its source.
fn proxy() -> Workload {
    use Step::*;
    Workload {
        name: "proxy",
        steps: vec![
            Build(0, 24, Config::Default),
            Fill(0, 0..24, 2, 1),
            Snapshot(0, 0),
            Write(0, 3 * 4096, 5000, 2),
            Proxy(0, 0),
            ProxyRead(0, 4000, 9000),
            Write(0, 4 * 4096 + 10, 100, 3),
            ProxyWrite(0, 4 * 4096, 50, 4),
            Write(0, 4 * 4096 + 200, 100, 5),
            ProxyRead(0, 4 * 4096, 4096),
            Snapshot(0, 1),
            Restore(0, 0),
            ProxyWrite(0, 10 * 4096, 8192, 6),
            ProxySnapshot(0, 2),
            Proxy(0, 1),
            Restore(0, 2),
            RawWrite(0, 20 * 4096, 4096, 7),
            Snapshot(0, 3),
            DropProxy(0),
            Write(0, 7 * 4096, 10, 8),
            ProxyWrite(1, 7 * 4096, 10, 9),
            DropProxy(1),
            Snapshot(0, 4),
            Restore(0, 1),
            DropSnapshot(0),
            Proxy(0, 2),
            ProxyWrite(2, 0, 4096, 10),
            Write(0, 8192, 4096, 11),
            DropArena(0),
            ProxyRead(2, 0, 3 * 4096),
            ProxyWrite(2, 5 * 4096, 10, 12),
            ProxySnapshot(2, 5),
            DropProxy(2),
            ToArena(5, 1),
            Restore(1, 3),
            Snapshot(1, 6),
        ],
        reaches: &[
            "memfd_create",
            "ftruncate",
            "fcntl(F_ADD_SEALS)",
            "pwrite",
            "mmap (reserve address space)",
            "mmap (map file pages)",
            "lseek(SEEK_DATA)",
            "lseek(SEEK_HOLE)",
            "madvise(MADV_POPULATE_WRITE) of arena pages",
        ],
    }
}

#[test]
fn a_proxys_life() {
    check(&proxy());
}

/// (c) Typed values and collections: allocations and frees, a vector pushed past its capacity
/// and a map past its resize, snapshots and restores.
fn typed() -> Workload {
    use Step::*;
    Workload {
        name: "typed",
        steps: vec![
            Build(0, 48, Config::Default),
            Alloc(0, 0, false, 1),
            Alloc(0, 1, true, 2),
            NewVec(0, 0),
            NewMap(0, 0),
            Snapshot(0, 0),
            Push(0, 0, 40, 100),
            Insert(0, 0, 30, 200),
            Alloc(0, 2, false, 3),
            Set(0, 0, 4),
            Free(0, 1),
            Snapshot(0, 1),
            Push(0, 0, 600, 300),
            Insert(0, 0, 200, 400),
            Alloc(0, 3, true, 5),
            Restore(0, 0),
            Alloc(0, 4, true, 6),
            Push(0, 0, 20, 500),
            Snapshot(0, 2),
            Restore(0, 1),
            DropSnapshot(0),
            Set(0, 2, 7),
            Push(0, 0, 100, 600),
            Insert(0, 0, 100, 700),
            Snapshot(0, 3),
            Restore(0, 2),
            Free(0, 4),
            Snapshot(0, 4),
            Restore(0, 3),
        ],
        reaches: &[
            "pwritev",
            "mmap (map file pages)",
            "mmap (read-only view of a store chunk)",
        ],
    }
}

#[test]
fn typed_values_and_collection_growth() {
    check(&typed());
}

/// (d) `to_arena` and snapshot views: `try_as_bytes`, `read`, arenas made from snapshots,
/// restores across arenas sharing a store.
fn views() -> Workload {
    use Step::*;
    Workload {
        name: "views",
        steps: vec![
            Build(0, 32, Config::Default),
            Fill(0, 0..32, 3, 1),
            Fill(0, 10..30, 1, 2),
            Snapshot(0, 0),
            View(0),
            Read(0, 4090, 10000),
            ToArena(0, 1),
            Write(1, 5000, 3000, 3),
            Snapshot(1, 1),
            Read(1, 0, 32 * 4096),
            Restore(0, 1),
            Write(0, 31 * 4096, 4096, 4),
            Snapshot(0, 2),
            ToArena(2, 2),
            DropArena(1),
            View(2),
            View(1),
            Restore(2, 0),
            DropSnapshot(0),
            Snapshot(2, 3),
            ToArena(3, 3),
            Read(3, 100, 100),
        ],
        reaches: &[
            "mmap (reserve address space)",
            "mmap (map zero pages)",
            "mmap (map file pages)",
            "mmap (read-only view of a store chunk)",
        ],
    }
}

#[test]
fn to_arena_and_snapshot_views() {
    check(&views());
}

/// (e) Branches: `fork_run` (with and without a timeout), `fork_snapshot` (safe and raw
/// writes in the child), and a branch killed at its timeout.
fn fork() -> Workload {
    use Step::*;
    Workload {
        name: "fork",
        steps: vec![
            Build(0, 16, Config::Default),
            Fill(0, 0..16, 2, 1),
            ForkRun(0, 100, 5000, 2, false),
            ForkSnapshot(0, 0, 3 * 4096, 9000, 3, false),
            Restore(0, 0),
            ForkSnapshot(0, 1, 9 * 4096 + 1, 100, 4, true),
            ForkRun(0, 0, 4096, 5, true),
            ForkTimeout(0),
            Restore(0, 1),
            DropSnapshot(0),
        ],
        reaches: &[
            "pipe",
            "fork",
            "read",
            "poll",
            "waitpid",
            "kill(SIGKILL)",
            "write",
        ],
    }
}

#[test]
fn fork_branches() {
    check(&fork());
}

/// (f) Shedding, remapping and compaction: a private budget of two pages and a mapping budget
/// of eight runs, so that snapshots and restores discard private copies, remap runs up to the
/// budget, and compact.
fn tight() -> Workload {
    use Step::*;
    let config = Config::Tight {
        private: 2,
        runs: 8,
    };
    Workload {
        name: "tight",
        steps: vec![
            Build(0, 48, config),
            Fill(0, 0..48, 2, 1),
            Snapshot(0, 0),
            Fill(0, 1..48, 4, 2),
            Snapshot(0, 1),
            Fill(0, 0..40, 1, 3),
            Snapshot(0, 2),
            Write(0, 5 * 4096, 3 * 4096, 7),
            Restore(0, 2),
            Restore(0, 0),
            Write(0, 3 * 4096, 12 * 4096, 4),
            Restore(0, 1),
            Fill(0, 0..48, 5, 5),
            Snapshot(0, 3),
            Restore(0, 2),
            DropSnapshot(1),
            Restore(0, 3),
            ToArena(0, 1),
            Fill(1, 2..48, 3, 6),
            Snapshot(1, 4),
            Restore(0, 4),
        ],
        reaches: &[
            "madvise(MADV_DONTNEED)",
            "pidfd_open",
            "process_madvise(MADV_DONTNEED)",
            "mmap (map zero pages)",
            "mmap (map file pages)",
            "mmap (read-only view of a store chunk)",
            "pwritev",
        ],
    }
}

#[test]
fn shedding_remapping_and_compaction() {
    check(&tight());
}

/// (g) A page store in a directory of the normal file system: `O_TMPFILE` chunks, and a proxy
/// whose live file is allocated with `fallocate`.
fn dir() -> Workload {
    use Step::*;
    Workload {
        name: "dir",
        steps: vec![
            Build(0, 24, Config::Dir),
            Fill(0, 0..24, 3, 1),
            Snapshot(0, 0),
            Proxy(0, 0),
            ProxyWrite(0, 4096, 100, 2),
            Write(0, 2 * 4096, 4096, 3),
            ProxySnapshot(0, 1),
            DropProxy(0),
            Snapshot(0, 2),
            Restore(0, 1),
            DropSnapshot(0),
            Fill(0, 0..24, 2, 4),
            Snapshot(0, 3),
            Restore(0, 2),
        ],
        reaches: &[
            "open(O_TMPFILE) in the backing directory",
            "fallocate",
            "ftruncate",
            "pwrite",
            "pwritev",
            "fallocate(PUNCH_HOLE)",
        ],
    }
}

#[test]
fn a_store_in_a_directory() {
    check(&dir());
}

/// A snapshot scattered over more runs than [`cowarena::MAX_VIEW_RUNS`] (its view is a private
/// copy, made read-only), and more frozen pages than one store chunk holds (the full chunk is
/// write-sealed and a new one made).
fn fragmented() -> Workload {
    use Step::*;
    let pages = 2 * cowarena::MAX_VIEW_RUNS + 4;
    let config = Config::Tight {
        private: pages,
        runs: 8,
    };
    Workload {
        name: "fragmented",
        steps: vec![
            Build(0, pages, config),
            Fill(0, 0..pages, 2, 1),
            Snapshot(0, 0),
            View(0),
            Fill(0, 1..pages, 2, 2),
            Snapshot(0, 1),
            DropSnapshot(1),
        ],
        reaches: &[
            "mprotect",
            "fcntl(F_ADD_SEALS)",
            "memfd_create",
            "madvise(MADV_POPULATE_READ)",
        ],
    }
}

#[test]
fn fragmented_views_and_full_chunks() {
    check(&fragmented());
}

/// A proxy whose own mapping fails leaves its source as it was: in particular not in the shared
/// layout, which would refuse every branch of the process until the source's next snapshot.
#[test]
fn a_failed_proxy_leaves_its_source_as_it_was() {
    let _serial = serial();
    let mut a = Arena::with_capacity(8 * page()).unwrap();
    a.write(0, b"source").unwrap();
    let mut twin = Arena::with_capacity(8 * page()).unwrap();
    twin.write(0, b"source").unwrap();
    fi::reset_count();
    drop(twin.proxy().unwrap());
    // The last call of a first proxy maps the proxy's view of the live file.
    fi::fail_nth(fi::calls(), libc::ENOMEM);
    let failed = a.proxy();
    assert_eq!(fi::disarm(), Some("mmap (map file pages)"));
    assert!(failed.is_err());
    drop(twin);
    assert_eq!(&a.as_bytes()[..6], b"source");
    let mut other = Arena::with_capacity(page()).unwrap();
    assert_eq!(other.fork_run(|_| 1u8).unwrap(), 1);
    let mut b = a.proxy().unwrap();
    assert_eq!(&b.with_mut(&a).unwrap().as_bytes()[..6], b"source");
}

/// (h) Snapshot files: a whole save, a delta against it, the chain reopened (as a snapshot of
/// its own store, and into an arena's store to restore it), an arena from an opened snapshot,
/// and an arena from bytes.
fn persist() -> Workload {
    use Step::*;
    Workload {
        name: "persist",
        steps: vec![
            Build(0, 24, Config::Default),
            Alloc(0, 0, false, 7),
            NewVec(0, 0),
            Push(0, 0, 40, 3),
            // Raw pages above the allocator's, which it has not handed out.
            Fill(0, 12..24, 2, 1),
            Snapshot(0, 0),
            Save(0, 0),
            Fill(0, 14..20, 1, 4),
            Set(0, 0, 8),
            Snapshot(0, 1),
            SaveDelta(1, 0, 1),
            Open(1, 2),
            Read(2, 0, 3 * 4096),
            View(2),
            ToArena(2, 1),
            Write(1, 14 * 4096 + 50, 5000, 5),
            Snapshot(1, 3),
            Save(3, 2),
            OpenInto(0, 0, 4),
            Restore(0, 4),
            Save(1, 1),
            FromBytes(2, 8, 9),
            Snapshot(2, 5),
            Save(5, 3),
            DropArena(1),
            DropSnapshot(2),
            DropSnapshot(3),
        ],
        reaches: &[
            "open",
            "open(O_CREAT | O_EXCL)",
            "pwrite",
            "fsync",
            "rename",
            "open (directory, to fsync it)",
            "fsync (directory)",
            "fstat",
            "pread",
            "realpath",
            "unlink",
        ],
    }
}

#[test]
fn snapshot_files() {
    check(&persist());
}

fn workloads() -> Vec<Workload> {
    vec![
        raw(),
        proxy(),
        typed(),
        views(),
        fork(),
        tight(),
        dir(),
        fragmented(),
        persist(),
    ]
}

/// The operations of the failure points in `src/sys/` (Linux): each `fault::point` call names
/// its operation directly, or through the `OP` constant its function declares before it;
/// `file.rs` names its points through a local `point("op")`.
fn failure_points() -> BTreeSet<String> {
    let sys = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sys");
    let literal = |s: &str| s.split('"').nth(1).expect("a string literal").to_owned();
    let mut ops = BTreeSet::new();
    for file in [
        "mod.rs",
        "linux.rs",
        "write_tracker.rs",
        "process.rs",
        "file.rs",
    ] {
        let text = std::fs::read_to_string(sys.join(file)).unwrap();
        let mut op = None;
        for line in text.lines() {
            if line.trim_start().starts_with("const OP: &str = ") {
                op = Some(literal(line));
            }
            let args = line
                .split_once("fault::point(")
                .or_else(|| line.split_once(" point(\""))
                .map(|(before, _)| {
                    &line[line[before.len()..].find('(').unwrap() + before.len() + 1..]
                });
            // `file.rs`'s helper passes its own argument on.
            if let Some(args) = args.filter(|a| !a.starts_with("op,")) {
                ops.insert(match args.starts_with('"') {
                    true => literal(args),
                    false => op.clone().expect("an OP constant before its failure point"),
                });
            }
        }
    }
    ops
}

/// Every failure point is reached by some workload (each workload's test checks that it does
/// reach the ones it names).
#[test]
fn every_failure_point_is_reached_by_a_workload() {
    // The other tests check that no mapping is left where their memory was: this test's
    // allocations must not land there meanwhile.
    let _serial = serial();
    let named: BTreeSet<&str> = workloads()
        .iter()
        .flat_map(|w| w.reaches.iter().copied())
        .collect();
    let points = failure_points();
    assert!(points.len() >= 25, "found only {points:?}");
    let missing: Vec<&String> = points
        .iter()
        .filter(|op| !named.contains(op.as_str()))
        .collect();
    assert!(missing.is_empty(), "no workload reaches {missing:?}");
}
