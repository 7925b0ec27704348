//! Bad input at every public call: random, reversed and overflowing offsets, lengths and ranges,
//! snapshots of other arenas, forged `Ptr`s and raw writes over the allocator's metadata. Each
//! call returns an `Error` or panics where documented, and a failed call changes no byte of the
//! arena.

use bytemuck::{Pod, Zeroable};
use cowarena::{Arena, Error, Ptr, Snapshot};
use proptest::prelude::*;
use std::cell::Cell;
use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};

const PAGES: usize = 32;

fn capacity() -> usize {
    PAGES * cowarena::page_size()
}

thread_local! {
    /// Set while a call is expected to panic, so the panic hook stays quiet about it.
    static EXPECTING_PANIC: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, which may panic only with one of the crate's documented messages; returns whether
/// it panicked.
fn panics(f: impl FnOnce()) -> bool {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !EXPECTING_PANIC.with(Cell::get) {
                default(info);
            }
        }));
    });
    EXPECTING_PANIC.with(|e| e.set(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    EXPECTING_PANIC.with(|e| e.set(false));
    match r {
        Ok(()) => false,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            assert!(
                msg.starts_with("cowarena: "),
                "an undocumented panic: {msg:?}"
            );
            true
        }
    }
}

/// Offsets and range ends: inside, at and just past the end, far past it, and near
/// `usize::MAX`, where `offset + len` overflows.
fn edge() -> impl Strategy<Value = usize> {
    let cap = capacity();
    let page = cowarena::page_size();
    prop_oneof![
        4 => 0..=cap,
        1 => prop_oneof![Just(0), Just(cap - 1), Just(cap), Just(cap + 1)],
        1 => cap..cap + 4 * page,
        1 => prop_oneof![
            Just(usize::MAX),
            Just(usize::MAX - 1),
            Just(isize::MAX as usize),
            Just(isize::MAX as usize + 1),
        ],
        1 => usize::MAX - 4 * page..=usize::MAX,
        1 => any::<usize>(),
    ]
}

/// Buffer lengths (allocatable: overflow comes from the offsets).
fn length() -> impl Strategy<Value = usize> {
    let cap = capacity();
    let page = cowarena::page_size();
    prop_oneof![
        3 => 0..64usize,
        2 => 0..=2 * page,
        1 => prop_oneof![Just(cap), Just(cap + 1)],
        1 => 0..=cap + page,
    ]
}

fn fits(offset: usize, len: usize) -> bool {
    offset.checked_add(len).is_some_and(|end| end <= capacity())
}

/// Which snapshot `restore` gets.
#[derive(Clone, Debug)]
enum Target {
    /// One of the arena's own (index into the live ones).
    Own(usize),
    /// A snapshot of an arena made from one of its own: it shares the page store.
    Fork(usize),
    /// A snapshot of an arena of another capacity.
    OtherCapacity,
    /// A snapshot of an unrelated arena of the same capacity.
    Unrelated,
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        3 => any::<usize>().prop_map(Target::Own),
        1 => any::<usize>().prop_map(Target::Fork),
        1 => Just(Target::OtherCapacity),
        1 => Just(Target::Unrelated),
    ]
}

/// Snapshots of other arenas, made once per case.
struct Strangers {
    other_capacity: Snapshot,
    unrelated: Snapshot,
    _arenas: (Arena, Arena),
}

impl Strangers {
    fn new() -> Self {
        let page = cowarena::page_size();
        let mut small = Arena::with_capacity(capacity() - page).unwrap();
        small.write(0, b"small").unwrap();
        let mut same = Arena::with_capacity(capacity()).unwrap();
        same.write(0, b"unrelated").unwrap();
        Strangers {
            other_capacity: small.snapshot().unwrap(),
            unrelated: same.snapshot().unwrap(),
            _arenas: (small, same),
        }
    }
}

/// Restores `target`; returns the bytes the arena must hold afterwards, or `None` if the call
/// must fail (and then checks it failed with the right error).
fn restore_target(
    a: &mut Arena,
    target: &Target,
    own: &[(Snapshot, Vec<u8>)],
    strangers: &Strangers,
) -> Option<Vec<u8>> {
    match target {
        Target::Own(_) | Target::Fork(_) if own.is_empty() => None,
        Target::Own(i) => {
            let (s, bytes) = &own[i % own.len()];
            a.restore(s).unwrap();
            Some(bytes.clone())
        }
        Target::Fork(i) => {
            let (s, bytes) = &own[i % own.len()];
            let mut fork = s.to_arena().unwrap();
            let t = fork.snapshot().unwrap();
            drop(fork);
            a.restore(&t).unwrap();
            Some(bytes.clone())
        }
        Target::OtherCapacity => {
            let e = a.restore(&strangers.other_capacity).unwrap_err();
            assert!(matches!(e, Error::CapacityMismatch { .. }), "{e}");
            None
        }
        Target::Unrelated => {
            let e = a.restore(&strangers.unrelated).unwrap_err();
            assert!(matches!(e, Error::ForeignSnapshot), "{e}");
            None
        }
    }
}

#[derive(Clone, Debug)]
enum RawOp {
    Write {
        offset: usize,
        len: usize,
        byte: u8,
    },
    Read {
        offset: usize,
        len: usize,
    },
    BytesMut {
        start: usize,
        end: usize,
        byte: u8,
    },
    SnapshotRead {
        snap: usize,
        offset: usize,
        len: usize,
    },
    Snapshot,
    Restore(Target),
}

fn raw_op() -> impl Strategy<Value = RawOp> {
    prop_oneof![
        4 => (edge(), length(), any::<u8>())
            .prop_map(|(offset, len, byte)| RawOp::Write { offset, len, byte }),
        2 => (edge(), length()).prop_map(|(offset, len)| RawOp::Read { offset, len }),
        3 => (edge(), edge(), any::<u8>())
            .prop_map(|(start, end, byte)| RawOp::BytesMut { start, end, byte }),
        2 => (any::<usize>(), edge(), length())
            .prop_map(|(snap, offset, len)| RawOp::SnapshotRead { snap, offset, len }),
        1 => Just(RawOp::Snapshot),
        2 => target().prop_map(RawOp::Restore),
    ]
}

fn run_raw(budget: usize, mapping_budget: usize, ops: Vec<RawOp>) {
    let strangers = Strangers::new();
    let mut a = Arena::builder(capacity())
        .private_budget(budget)
        .mapping_budget(mapping_budget)
        .build()
        .unwrap();
    let mut snaps: Vec<(Snapshot, Vec<u8>)> = Vec::new();
    for op in ops {
        let before = a.as_bytes().to_vec();
        let mut expected = before.clone();
        match op {
            RawOp::Write { offset, len, byte } => {
                let r = a.write(offset, &vec![byte; len]);
                if fits(offset, len) {
                    r.unwrap();
                    expected[offset..offset + len].fill(byte);
                } else {
                    let e = r.unwrap_err();
                    assert!(matches!(e, Error::OutOfBounds { .. }), "{e}");
                }
            }
            RawOp::Read { offset, len } => {
                let mut buf = vec![0x5A; len];
                let r = a.read(offset, &mut buf);
                if fits(offset, len) {
                    r.unwrap();
                    assert_eq!(buf, before[offset..offset + len]);
                } else {
                    assert!(matches!(r, Err(Error::OutOfBounds { .. })));
                    assert!(buf.iter().all(|&b| b == 0x5A), "a failed read wrote");
                }
            }
            RawOp::BytesMut { start, end, byte } => {
                let ok = start <= end && end <= capacity();
                match a.bytes_mut(start..end) {
                    Ok(bytes) => {
                        assert!(ok, "bytes_mut({start}..{end}) succeeded");
                        assert_eq!(bytes.len(), end - start);
                        bytes.fill(byte);
                        expected[start..end].fill(byte);
                    }
                    Err(e) => {
                        assert!(!ok, "bytes_mut({start}..{end}): {e}");
                        assert!(matches!(e, Error::OutOfBounds { .. }), "{e}");
                    }
                }
            }
            RawOp::SnapshotRead { snap, offset, len } => {
                if let Some((s, bytes)) = snaps.get(snap % snaps.len().max(1)) {
                    let mut buf = vec![0x5A; len];
                    let r = s.read(offset, &mut buf);
                    if fits(offset, len) {
                        r.unwrap();
                        assert_eq!(buf, bytes[offset..offset + len]);
                    } else {
                        assert!(matches!(r, Err(Error::OutOfBounds { .. })));
                        assert!(buf.iter().all(|&b| b == 0x5A), "a failed read wrote");
                    }
                    assert!(s.as_bytes() == &bytes[..]);
                }
            }
            RawOp::Snapshot => snaps.push((a.snapshot().unwrap(), before.clone())),
            RawOp::Restore(t) => {
                if let Some(bytes) = restore_target(&mut a, &t, &snaps, &strangers) {
                    expected = bytes;
                }
            }
        }
        assert!(
            a.as_bytes() == &expected[..],
            "the arena's bytes after a call"
        );
    }
    for (s, bytes) in &snaps {
        assert!(s.as_bytes() == &bytes[..], "a snapshot changed");
    }
}

/// Values of three layouts: a small aligned one, a small unaligned one, and a large one.
trait Value: Pod + PartialEq + Debug {
    fn make(seed: u64) -> Self;
}

impl Value for u64 {
    fn make(seed: u64) -> Self {
        seed
    }
}

impl Value for [u8; 24] {
    fn make(seed: u64) -> Self {
        let mut v = [0; 24];
        v.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = seed.rotate_left(i as u32) as u8);
        v
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Large([u64; 256]);

impl Value for Large {
    fn make(seed: u64) -> Self {
        let mut v = [0; 256];
        v.iter_mut()
            .enumerate()
            .for_each(|(i, w)| *w = seed.wrapping_mul(i as u64 + 1));
        Large(v)
    }
}

/// How to make a `Ptr` for a call.
#[derive(Clone, Debug)]
enum Forge {
    /// Sixteen random bytes.
    Bytes([u8; 16]),
    /// A live object's `Ptr`, possibly with its offset or stamp changed.
    Live {
        which: usize,
        offset_delta: i64,
        stamp_delta: i64,
    },
    /// A `Ptr` to a freed object, or one a restore undid.
    Dead(usize),
    /// A live `Ptr` of an unrelated arena.
    Foreign(usize),
    Null,
}

fn forge() -> impl Strategy<Value = Forge> {
    let delta = prop_oneof![
        6 => Just(0i64),
        1 => -64..64i64,
        1 => prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(1 << 20)],
        1 => any::<i64>(),
    ];
    prop_oneof![
        2 => any::<[u8; 16]>().prop_map(Forge::Bytes),
        4 => (any::<usize>(), delta.clone(), delta)
            .prop_map(|(which, offset_delta, stamp_delta)| Forge::Live { which, offset_delta, stamp_delta }),
        1 => any::<usize>().prop_map(Forge::Dead),
        1 => any::<usize>().prop_map(Forge::Foreign),
        1 => Just(Forge::Null),
    ]
}

#[derive(Clone, Debug)]
enum TypedOp {
    Alloc { kind: u8, seed: u64 },
    Free { kind: u8, ptr: Forge },
    TryGet { kind: u8, ptr: Forge },
    TryGetMut { kind: u8, ptr: Forge, seed: u64 },
    Get { kind: u8, ptr: Forge },
    GetMut { kind: u8, ptr: Forge, seed: u64 },
    SetRoot { kind: u8, ptr: Forge },
    SnapshotGet { snap: usize, kind: u8, ptr: Forge },
    BadWrite { offset: usize, len: usize },
    Snapshot,
    Restore(Target),
}

fn typed_op() -> impl Strategy<Value = TypedOp> {
    let kind = 0..3u8;
    prop_oneof![
        4 => (kind.clone(), any::<u64>()).prop_map(|(kind, seed)| TypedOp::Alloc { kind, seed }),
        2 => (kind.clone(), forge()).prop_map(|(kind, ptr)| TypedOp::Free { kind, ptr }),
        3 => (kind.clone(), forge()).prop_map(|(kind, ptr)| TypedOp::TryGet { kind, ptr }),
        2 => (kind.clone(), forge(), any::<u64>())
            .prop_map(|(kind, ptr, seed)| TypedOp::TryGetMut { kind, ptr, seed }),
        2 => (kind.clone(), forge()).prop_map(|(kind, ptr)| TypedOp::Get { kind, ptr }),
        1 => (kind.clone(), forge(), any::<u64>())
            .prop_map(|(kind, ptr, seed)| TypedOp::GetMut { kind, ptr, seed }),
        1 => (kind.clone(), forge()).prop_map(|(kind, ptr)| TypedOp::SetRoot { kind, ptr }),
        2 => (any::<usize>(), kind, forge())
            .prop_map(|(snap, kind, ptr)| TypedOp::SnapshotGet { snap, kind, ptr }),
        1 => (edge(), length())
            .prop_map(|(offset, len)| TypedOp::BadWrite { offset, len })
            .prop_filter("out of bounds", |op| match op {
                TypedOp::BadWrite { offset, len } => !fits(*offset, *len),
                _ => false,
            }),
        1 => Just(TypedOp::Snapshot),
        2 => target().prop_map(TypedOp::Restore),
    ]
}

/// A live object: its layout, `Ptr` (as raw bytes, whatever its type) and value seed.
#[derive(Clone, Copy, Debug)]
struct Obj {
    kind: u8,
    ptr: [u64; 2],
    seed: u64,
}

#[derive(Clone, Default)]
struct TypedModel {
    live: Vec<Obj>,
    dead: Vec<[u64; 2]>,
}

impl TypedModel {
    fn forge(&self, f: &Forge, foreign: &[[u64; 2]]) -> [u64; 2] {
        let pick = |v: &[[u64; 2]], i: usize| v.get(i % v.len().max(1)).copied();
        match *f {
            Forge::Bytes(b) => bytemuck::cast(b),
            Forge::Live {
                which,
                offset_delta,
                stamp_delta,
            } => match self.live.get(which % self.live.len().max(1)) {
                Some(o) => [
                    o.ptr[0].wrapping_add_signed(offset_delta),
                    o.ptr[1].wrapping_add_signed(stamp_delta),
                ],
                None => [0, 0],
            },
            Forge::Dead(i) => pick(&self.dead, i).unwrap_or([0, 0]),
            Forge::Foreign(i) => pick(foreign, i).unwrap_or([0, 0]),
            Forge::Null => [0, 0],
        }
    }

    /// The live object `raw` names with layout `kind`, if any.
    fn find(&self, kind: u8, raw: [u64; 2]) -> Option<&Obj> {
        self.live.iter().find(|o| o.kind == kind && o.ptr == raw)
    }

    /// Whether `raw` carries a live object's stamp. Validation compares the stamp stored after
    /// the object with the `Ptr`'s, so a `Ptr` of another layout whose offset puts its stamp
    /// where a live one is may be accepted; one without a live stamp must not be.
    fn has_live_stamp(&self, raw: [u64; 2]) -> bool {
        self.live.iter().any(|o| o.ptr[1] == raw[1])
    }

    fn names_live(&self, raw: [u64; 2]) -> bool {
        self.live.iter().any(|o| o.ptr == raw)
    }
}

/// One typed call with a `Ptr` forged as `T`; checks the outcome against the model and returns
/// whether the arena may have changed (a call that fails must change nothing).
fn typed_call<T: Value>(
    a: &mut Arena,
    m: &mut TypedModel,
    op: &TypedOp,
    raw: [u64; 2],
    snaps: &[(Snapshot, Vec<u8>, TypedModel)],
) -> bool {
    let p: Ptr<T> = bytemuck::cast(raw);
    let found = m.find(kind_of::<T>(), raw).copied();
    let may_pass = m.has_live_stamp(raw);
    match op {
        TypedOp::Free { .. } => match a.free(p) {
            Ok(()) => {
                assert!(may_pass, "free accepted {p:?}");
                let i = m.live.iter().position(|o| o.ptr[1] == raw[1]).unwrap();
                let o = m.live.swap_remove(i);
                m.dead.push(o.ptr);
                true
            }
            Err(e) => {
                assert!(found.is_none(), "free refused a live {p:?}: {e}");
                assert!(matches!(e, Error::InvalidPtr { .. }), "{e}");
                false
            }
        },
        TypedOp::TryGet { .. } => {
            match a.try_get(p) {
                Ok(v) => {
                    assert!(may_pass, "try_get accepted {p:?}");
                    if let Some(o) = found {
                        assert_eq!(*v, T::make(o.seed));
                    }
                }
                Err(e) => {
                    assert!(found.is_none(), "try_get refused a live {p:?}: {e}");
                    assert!(matches!(e, Error::InvalidPtr { .. }), "{e}");
                }
            }
            false
        }
        TypedOp::TryGetMut { seed, .. } => match a.try_get_mut(p) {
            Ok(v) => {
                assert!(may_pass, "try_get_mut accepted {p:?}");
                if found.is_some() {
                    *v = T::make(*seed);
                    m.live.iter_mut().find(|o| o.ptr == raw).unwrap().seed = *seed;
                }
                true
            }
            Err(e) => {
                assert!(found.is_none(), "try_get_mut refused a live {p:?}: {e}");
                assert!(matches!(e, Error::InvalidPtr { .. }), "{e}");
                false
            }
        },
        TypedOp::Get { .. } => {
            let mut got = None;
            let panicked = panics(|| got = Some(*a.get(p)));
            assert!(panicked || may_pass, "get accepted {p:?}");
            if let Some(o) = found {
                assert!(!panicked, "get panicked for a live {p:?}");
                assert_eq!(got, Some(T::make(o.seed)));
            }
            false
        }
        TypedOp::GetMut { seed, .. } => {
            let panicked = panics(|| {
                let v = a.get_mut(p);
                if found.is_some() {
                    *v = T::make(*seed);
                }
            });
            assert!(panicked || may_pass, "get_mut accepted {p:?}");
            if found.is_some() {
                assert!(!panicked, "get_mut panicked for a live {p:?}");
                m.live.iter_mut().find(|o| o.ptr == raw).unwrap().seed = *seed;
            }
            !panicked
        }
        TypedOp::SetRoot { .. } => {
            let r = a.try_set_root(p);
            match &r {
                Ok(()) => {
                    assert!(may_pass || raw == [0, 0], "try_set_root accepted {p:?}");
                    assert_eq!(a.root::<T>(), (raw != [0, 0]).then_some(p));
                }
                Err(e) => {
                    assert!(found.is_none(), "try_set_root refused a live {p:?}: {e}");
                    assert!(matches!(e, Error::InvalidPtr { .. }), "{e}");
                }
            }
            let panicked = panics(|| a.set_root(p));
            assert_eq!(
                panicked,
                r.is_err(),
                "set_root panics exactly when try_set_root fails"
            );
            r.is_ok()
        }
        TypedOp::SnapshotGet { snap, .. } => {
            if let Some((s, _, sm)) = snaps.get(snap % snaps.len().max(1)) {
                let found = sm.find(kind_of::<T>(), raw);
                let may_pass = sm.has_live_stamp(raw);
                match s.try_get(p) {
                    Ok(v) => {
                        assert!(may_pass, "Snapshot::try_get accepted {p:?}");
                        if let Some(o) = found {
                            assert_eq!(*v, T::make(o.seed));
                        }
                    }
                    Err(e) => {
                        assert!(found.is_none(), "Snapshot::try_get refused {p:?}: {e}");
                        assert!(matches!(e, Error::InvalidPtr { .. }), "{e}");
                    }
                }
                let panicked = panics(|| {
                    std::hint::black_box(*s.get(p));
                });
                assert!(panicked || may_pass, "Snapshot::get accepted {p:?}");
                assert!(
                    !panicked || found.is_none(),
                    "Snapshot::get panicked for {p:?}"
                );
            }
            false
        }
        _ => unreachable!("not a Ptr call"),
    }
}

fn kind_of<T: Value>() -> u8 {
    match size_of::<T>() {
        8 => 0,
        24 => 1,
        _ => 2,
    }
}

fn check_objects(a: &Arena, m: &TypedModel) {
    for o in &m.live {
        match o.kind {
            0 => assert_eq!(
                *a.try_get::<u64>(bytemuck::cast(o.ptr)).unwrap(),
                u64::make(o.seed)
            ),
            1 => assert_eq!(
                *a.try_get::<[u8; 24]>(bytemuck::cast(o.ptr)).unwrap(),
                <[u8; 24]>::make(o.seed)
            ),
            _ => assert_eq!(
                *a.try_get::<Large>(bytemuck::cast(o.ptr)).unwrap(),
                Large::make(o.seed)
            ),
        }
    }
}

fn run_typed(ops: Vec<TypedOp>) {
    let strangers = Strangers::new();
    let mut other = Arena::with_capacity(capacity()).unwrap();
    let foreign: Vec<[u64; 2]> = vec![
        bytemuck::cast(other.alloc(7u64).unwrap()),
        bytemuck::cast(other.alloc(<[u8; 24]>::make(7)).unwrap()),
        bytemuck::cast(other.alloc(Large::make(7)).unwrap()),
    ];
    let mut a = Arena::with_capacity(capacity()).unwrap();
    let mut m = TypedModel::default();
    let mut snaps: Vec<(Snapshot, Vec<u8>, TypedModel)> = Vec::new();
    for op in ops {
        let before = a.as_bytes().to_vec();
        match &op {
            TypedOp::Alloc { kind, seed } => {
                let r: cowarena::Result<[u64; 2]> = match kind % 3 {
                    0 => a.alloc(u64::make(*seed)).map(bytemuck::cast),
                    1 => a.alloc(<[u8; 24]>::make(*seed)).map(bytemuck::cast),
                    _ => a.alloc(Large::make(*seed)).map(bytemuck::cast),
                };
                match r {
                    Ok(raw) => m.live.push(Obj {
                        kind: kind % 3,
                        ptr: raw,
                        seed: *seed,
                    }),
                    Err(e) => {
                        assert!(matches!(e, Error::OutOfMemory { .. }), "{e}");
                        assert!(a.as_bytes() == &before[..], "a failed alloc changed bytes");
                    }
                }
            }
            TypedOp::BadWrite { offset, len } => {
                let e = a.write(*offset, &vec![1; *len]).unwrap_err();
                assert!(matches!(e, Error::OutOfBounds { .. }), "{e}");
            }
            TypedOp::Snapshot => {
                snaps.push((a.snapshot().unwrap(), before.clone(), m.clone()));
            }
            TypedOp::Restore(t) => {
                let own: Vec<(Snapshot, Vec<u8>)> = snaps
                    .iter()
                    .map(|(s, b, _)| (s.clone(), b.clone()))
                    .collect();
                if let Some(bytes) = restore_target(&mut a, t, &own, &strangers) {
                    let i = match t {
                        Target::Own(i) | Target::Fork(i) => i % snaps.len(),
                        _ => unreachable!("only own snapshots restore"),
                    };
                    let undone: Vec<[u64; 2]> = m.live.iter().map(|o| o.ptr).collect();
                    m = snaps[i].2.clone();
                    let undone: Vec<[u64; 2]> =
                        undone.into_iter().filter(|p| !m.names_live(*p)).collect();
                    m.dead.extend(undone);
                    assert!(a.as_bytes() == &bytes[..]);
                }
            }
            TypedOp::Free { kind, ptr }
            | TypedOp::TryGet { kind, ptr }
            | TypedOp::TryGetMut { kind, ptr, .. }
            | TypedOp::Get { kind, ptr }
            | TypedOp::GetMut { kind, ptr, .. }
            | TypedOp::SetRoot { kind, ptr }
            | TypedOp::SnapshotGet { kind, ptr, .. } => {
                let raw = m.forge(ptr, &foreign);
                let may_change = match kind % 3 {
                    0 => typed_call::<u64>(&mut a, &mut m, &op, raw, &snaps),
                    1 => typed_call::<[u8; 24]>(&mut a, &mut m, &op, raw, &snaps),
                    _ => typed_call::<Large>(&mut a, &mut m, &op, raw, &snaps),
                };
                assert!(
                    may_change || a.as_bytes() == &before[..],
                    "{op:?} failed or only read, but changed the arena"
                );
            }
        }
        check_objects(&a, &m);
    }
    for (s, bytes, _) in &snaps {
        assert!(s.as_bytes() == &bytes[..], "a snapshot changed");
    }
}

/// Raw writes over allocator metadata, then typed calls: each returns a value or an error; only
/// `get` and `get_mut` panic, as documented, with the crate's message.
fn run_corrupted(allocs: Vec<(u8, u64)>, writes: Vec<(usize, Vec<u8>)>, calls: Vec<(u8, Forge)>) {
    let mut a = Arena::with_capacity(capacity()).unwrap();
    let mut m = TypedModel::default();
    for (kind, seed) in allocs {
        let r: cowarena::Result<[u64; 2]> = match kind % 3 {
            0 => a.alloc(u64::make(seed)).map(bytemuck::cast),
            1 => a.alloc(<[u8; 24]>::make(seed)).map(bytemuck::cast),
            _ => a.alloc(Large::make(seed)).map(bytemuck::cast),
        };
        if let Ok(raw) = r {
            m.live.push(Obj {
                kind: kind % 3,
                ptr: raw,
                seed,
            });
        }
    }
    let s = a.snapshot().unwrap();
    for (offset, bytes) in writes {
        let offset = offset % (capacity() - bytes.len());
        a.write(offset, &bytes).unwrap();
    }
    fn calls_for<T: Value>(a: &mut Arena, s: &Snapshot, p: Ptr<T>, seed: u64) {
        let _ = a.try_get(p);
        let _ = a.try_get_mut(p).map(|v| *v = T::make(seed));
        let _ = s.try_get(p);
        panics(|| {
            std::hint::black_box(*a.get(p));
        });
        panics(|| *a.get_mut(p) = T::make(seed));
        let _ = a.try_set_root(p);
        let _ = a.root::<T>();
        let _ = a.free(p);
        let _ = a.alloc(T::make(seed));
        let _ = a.alloc_stats();
    }
    for (kind, f) in calls {
        let raw = m.forge(&f, &[]);
        match kind % 3 {
            0 => calls_for::<u64>(&mut a, &s, bytemuck::cast(raw), raw[0]),
            1 => calls_for::<[u8; 24]>(&mut a, &s, bytemuck::cast(raw), raw[0]),
            _ => calls_for::<Large>(&mut a, &s, bytemuck::cast(raw), raw[0]),
        }
    }
    // The snapshot taken before the corruption still holds every object.
    a.restore(&s).unwrap();
    check_objects(&a, &m);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    /// 512 programs of 64 raw calls with hostile arguments: 32,768 calls.
    #[test]
    fn raw_calls_with_bad_arguments(
        budget in prop_oneof![Just(0usize), 0..2 * capacity()],
        mapping_budget in 0..64usize,
        ops in prop::collection::vec(raw_op(), 64),
    ) {
        run_raw(budget, mapping_budget, ops);
    }

    /// 512 programs of 64 typed calls with forged, stale and foreign `Ptr`s: 32,768 calls.
    #[test]
    fn typed_calls_with_forged_ptrs(ops in prop::collection::vec(typed_op(), 64)) {
        run_typed(ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, max_shrink_iters: 1000, ..ProptestConfig::default() })]

    /// 128 arenas whose allocator metadata is overwritten with random bytes, then 16 rounds of
    /// ten typed calls each: 20,480 calls on corrupt metadata.
    #[test]
    fn typed_calls_after_raw_corruption(
        allocs in prop::collection::vec((0..3u8, any::<u64>()), 1..40),
        writes in prop::collection::vec(
            (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64)), 1..16),
        calls in prop::collection::vec((0..3u8, forge()), 16),
    ) {
        run_corrupted(allocs, writes, calls);
    }
}
