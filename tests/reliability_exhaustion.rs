//! Exhaustion: a full backing file system, the arena's capacity, the open-files limit and the
//! address-space limit. Each must surface as an `Error` (never a SIGBUS or an abort); the arena
//! and every snapshot keep their contents; once the resource is back, everything works again.

#![cfg(target_os = "linux")]

mod common;
use common::{serial, Rng};
use cowarena::{Arena, Error, Snapshot};
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: usize = 1 << 20;

fn errno(e: &Error) -> Option<i32> {
    match e {
        Error::Os { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

/// A size-limited tmpfs mounted for one test, unmounted (and its directory removed) on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (a `mount -o size=` value), or says why it cannot.
    fn mount(name: &str, size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("mounting a tmpfs needs root".into());
        }
        let dir = std::env::temp_dir().join(format!("cowarena-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "cowarena-test",
            ])
            .arg(&dir)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    /// Bytes in use on the file system.
    fn used(&self) -> usize {
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        let path = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `path` is a NUL-terminated string and `st` has room for one `statvfs`.
        let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
        assert_eq!(rc, 0, "statvfs {}", self.dir.display());
        // SAFETY: statvfs succeeded, so it filled `st`.
        let st = unsafe { st.assume_init() };
        (st.f_blocks - st.f_bfree) as usize * st.f_frsize as usize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // A lazy unmount still succeeds if a file in it is open (a test that failed part-way).
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Pages `0..PAGES` of the arena each hold one repeated byte; the model is that byte per page.
const PAGES: usize = 1024;

fn fill(a: &mut Arena, model: &mut [u8], pages: std::ops::Range<usize>, value: u8) {
    let page = cowarena::page_size();
    a.bytes_mut(pages.start * page..pages.end * page)
        .unwrap()
        .fill(value);
    model[pages].fill(value);
}

fn check_bytes(bytes: &[u8], model: &[u8], what: &str) {
    let page = cowarena::page_size();
    for (p, &v) in model.iter().enumerate() {
        assert!(
            bytes[p * page..(p + 1) * page].iter().all(|&b| b == v),
            "{what}: page {p} should be all {v}"
        );
    }
}

fn check_snapshot(s: &Snapshot, model: &[u8], what: &str) {
    let mut buf = vec![0u8; s.capacity()];
    s.read(0, &mut buf).unwrap();
    check_bytes(&buf, model, &format!("{what} (read)"));
    check_bytes(s.try_as_bytes().unwrap(), model, &format!("{what} (view)"));
}

#[test]
fn a_full_backing_file_system_is_an_error_and_nothing_is_lost() {
    let _serial = serial();
    let fs = match Tmpfs::mount("full", "8m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let page = cowarena::page_size();
    let mut a = Arena::builder(PAGES * page)
        .backing_dir(&fs.dir)
        .build()
        .unwrap();
    let mut model = vec![0u8; PAGES];
    let mut snaps: Vec<(Snapshot, Vec<u8>)> = Vec::new();
    // Each snapshot holds 128 pages (512 KiB) of its own: the 8 MiB fill up after about 16.
    let mut failed = None;
    for round in 1..=40u8 {
        fill(&mut a, &mut model, 0..128, round);
        fill(
            &mut a,
            &mut model,
            128 + round as usize * 3..129 + round as usize * 3,
            round,
        );
        match a.snapshot() {
            Ok(s) => snaps.push((s, model.clone())),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let e = failed.expect("an 8 MiB file system cannot hold 40 snapshots of 512 KiB");
    assert_eq!(errno(&e), Some(libc::ENOSPC), "{e}");
    assert!(snaps.len() >= 8, "only {} snapshots fit", snaps.len());
    eprintln!("{} snapshots filled the file system: {e}", snaps.len());

    // The arena keeps the bytes written since its last snapshot; every snapshot keeps its own.
    check_bytes(a.as_bytes(), &model, "arena after the failed snapshot");
    for (i, (s, m)) in snaps.iter().enumerate() {
        check_snapshot(s, m, &format!("snapshot {i}"));
    }

    // Still full: writes work (they need no store space), snapshots and proxies fail.
    fill(&mut a, &mut model, 200..300, 0xEE);
    let e = a.snapshot().unwrap_err();
    assert_eq!(errno(&e), Some(libc::ENOSPC), "{e}");
    let e = a.proxy().unwrap_err();
    assert_eq!(errno(&e), Some(libc::ENOSPC), "{e}");
    check_bytes(a.as_bytes(), &model, "arena after more failed calls");
    // An arena made from a snapshot needs no new space until its own snapshot.
    let (last, last_model) = snaps.last().unwrap().clone();
    let mut fork = last.to_arena().unwrap();
    let mut fork_model = last_model.clone();
    check_bytes(
        fork.as_bytes(),
        &fork_model,
        "arena made from the last snapshot",
    );
    // Its first run of pages fits in the space left, the second does not.
    fill(&mut fork, &mut fork_model, 250..260, 0xF1);
    fill(&mut fork, &mut fork_model, 300..700, 0xF0);
    let e = fork.snapshot().unwrap_err();
    assert_eq!(errno(&e), Some(libc::ENOSPC), "{e}");
    check_bytes(
        fork.as_bytes(),
        &fork_model,
        "the fork after its failed snapshot",
    );
    // Typed allocations need no store space either; the snapshot that would freeze them fails
    // and they stay.
    let mut typed = Arena::builder(PAGES * page)
        .backing_dir(&fs.dir)
        .build()
        .unwrap();
    let blocks: Vec<_> = (0..200u64)
        .map(|i| (typed.alloc(Block([i; 256])).unwrap(), i))
        .collect();
    let e = typed.snapshot().unwrap_err();
    assert_eq!(errno(&e), Some(libc::ENOSPC), "{e}");
    for &(p, i) in &blocks {
        assert_eq!(
            *typed.get(p),
            Block([i; 256]),
            "an object after the failed snapshot"
        );
    }
    // Restoring needs no new space either.
    let (s3, m3) = &snaps[3];
    a.restore(s3).unwrap();
    check_bytes(a.as_bytes(), m3, "arena restored to snapshot 3");
    model.clone_from(m3);
    for (i, (s, m)) in snaps.iter().enumerate() {
        check_snapshot(s, m, &format!("snapshot {i} while full"));
    }

    // Dropping snapshots frees their pages; the arena (and its fork) work again.
    let used_full = fs.used();
    let first = snaps.remove(0);
    snaps.truncate(4);
    assert!(
        fs.used() < used_full,
        "dropping snapshots frees space ({used_full} bytes before)"
    );
    fill(&mut a, &mut model, 0..128, 0x77);
    fill(&mut a, &mut model, 600..700, 0x78);
    let s = a.snapshot().unwrap();
    check_snapshot(&s, &model, "snapshot after space was freed");
    let t = fork.snapshot().unwrap();
    check_snapshot(&t, &fork_model, "the fork's snapshot after space was freed");
    let ts = typed.snapshot().unwrap();
    for &(p, _) in &blocks[..100] {
        typed.free(p).unwrap();
    }
    typed.restore(&ts).unwrap();
    for &(p, i) in &blocks {
        assert_eq!(
            *ts.get(p),
            Block([i; 256]),
            "an object in the typed snapshot"
        );
        assert_eq!(
            *typed.get(p),
            Block([i; 256]),
            "an object after the restore"
        );
    }
    a.restore(&first.0).unwrap();
    check_bytes(
        a.as_bytes(),
        &first.1,
        "arena restored to the first snapshot",
    );
    for (i, (s, m)) in snaps.iter().enumerate() {
        check_snapshot(s, m, &format!("snapshot {i} at the end"));
    }
    let st = a.stats().store;
    assert!(
        st.held_bytes <= fs.used(),
        "the store's count of its bytes ({}) is within the file system's ({})",
        st.held_bytes,
        fs.used()
    );
    drop((a, fork, s, t, snaps, first, last, typed, ts));
    assert_eq!(fs.used(), 0, "every store file is gone");
}

#[test]
fn an_unusable_backing_directory_is_an_error() {
    let _serial = serial();
    let page = cowarena::page_size();
    let file = std::env::temp_dir().join(format!("cowarena-notadir-{}", std::process::id()));
    std::fs::write(&file, b"x").unwrap();
    for dir in [
        Path::new("/nonexistent/cowarena").to_path_buf(),
        file.clone(),
    ] {
        let mut a = Arena::builder(16 * page).backing_dir(&dir).build().unwrap();
        a.write(0, b"kept").unwrap();
        let e = a.snapshot().unwrap_err();
        assert!(matches!(e, Error::Os { .. }), "{}: {e}", dir.display());
        assert!(a.proxy().is_err());
        assert_eq!(&a.as_bytes()[..4], b"kept");
        a.write(page, b"more").unwrap();
        assert_eq!(&a.as_bytes()[page..page + 4], b"more");
    }
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn capacity_exhausted_through_the_raw_api() {
    let _serial = serial();
    let page = cowarena::page_size();
    let capacity = 8 * page;
    let mut a = Arena::with_capacity(capacity).unwrap();
    a.bytes_mut(0..capacity).unwrap().fill(7);
    let s = a.snapshot().unwrap();
    let oob = |r: cowarena::Result<()>| matches!(r, Err(Error::OutOfBounds { .. }));
    assert!(oob(a.write(capacity, &[1])));
    assert!(oob(a.write(capacity - 1, &[1, 2])));
    assert!(oob(a.write(usize::MAX, &[1])));
    assert!(oob(a.read(capacity - 3, &mut [0; 4])));
    assert!(oob(s.read(capacity, &mut [0])));
    assert!(a.bytes_mut(capacity - 1..capacity + 1).is_err());
    assert!(a.bytes_mut(0..usize::MAX).is_err());
    // The message names the request and the capacity.
    let msg = a.write(capacity, &[1]).unwrap_err().to_string();
    assert!(msg.contains(&capacity.to_string()), "{msg}");
    // Writes exactly up to the end still work, and nothing was changed by the failed ones.
    a.write(capacity - 2, &[1, 2]).unwrap();
    a.write(capacity, &[]).unwrap();
    assert!(a.as_bytes()[..capacity - 2].iter().all(|&b| b == 7));
    assert_eq!(&a.as_bytes()[capacity - 2..], &[1, 2]);
    let t = a.snapshot().unwrap();
    a.restore(&s).unwrap();
    assert!(a.as_bytes().iter().all(|&b| b == 7));
    a.restore(&t).unwrap();
    assert_eq!(&a.as_bytes()[capacity - 2..], &[1, 2]);

    // Capacities that cannot be an arena are refused with a reason.
    for bad in [
        0,
        usize::MAX,
        usize::MAX - page,
        isize::MAX as usize + 1,
        1 << 47,
    ] {
        let e = Arena::with_capacity(bad).unwrap_err();
        assert!(matches!(e, Error::InvalidCapacity { .. }), "{bad}: {e}");
    }
}

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Block([u64; 256]);

#[test]
fn capacity_exhausted_through_the_typed_api() {
    let _serial = serial();
    let page = cowarena::page_size();
    let capacity = 64 * page;
    let mut a = Arena::with_capacity(capacity).unwrap();
    let mut small = Vec::new();
    let mut large = Vec::new();
    // Alternate small and large objects until the arena is full.
    let e = loop {
        let i = small.len() as u64;
        match a.alloc([i; 4]) {
            Ok(p) => small.push((p, i)),
            Err(e) => break e,
        }
        match a.alloc(Block([i; 256])) {
            Ok(p) => large.push((p, i)),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(e, Error::OutOfMemory { capacity: c, .. } if c == capacity),
        "{e}"
    );
    assert!(large.len() >= 32, "only {} large objects fit", large.len());
    // Full: large allocations keep failing, and every object is intact.
    let s = a.snapshot().unwrap();
    let full = a.as_bytes().to_vec();
    for _ in 0..3 {
        assert!(matches!(
            a.alloc(Block([0; 256])),
            Err(Error::OutOfMemory { .. })
        ));
    }
    // Larger than the whole arena.
    let huge = Box::new([Block([0; 256]); 256]);
    assert!(matches!(
        a.alloc(*huge),
        Err(Error::OutOfMemory { requested, .. }) if requested == size_of_val(&*huge)
    ));
    assert!(
        a.as_bytes() == &full[..],
        "failed allocations changed nothing"
    );
    let check = |a: &Arena,
                 small: &[(cowarena::Ptr<[u64; 4]>, u64)],
                 large: &[(cowarena::Ptr<Block>, u64)]| {
        for &(p, i) in small {
            assert_eq!(*a.get(p), [i; 4]);
        }
        for &(p, i) in large {
            assert_eq!(*a.get(p), Block([i; 256]));
        }
    };
    check(&a, &small, &large);

    // Freeing makes room again, and the space is reused.
    for (p, _) in large.drain(..8) {
        a.free(p).unwrap();
    }
    for i in 0..8 {
        large.push((a.alloc(Block([1000 + i; 256])).unwrap(), 1000 + i));
    }
    check(&a, &small, &large);
    assert!(a.alloc(Block([0; 256])).is_err());
    // Restoring the full snapshot brings back its objects; the freed ones' Ptrs are refused.
    a.restore(&s).unwrap();
    assert!(a.as_bytes() == &full[..]);
    for &(p, _) in &large[large.len() - 8..] {
        assert!(a.try_get(p).is_err());
    }
    let fresh = a.snapshot().unwrap();
    assert_eq!(fresh.as_bytes(), &full[..]);
}

fn set_limit(resource: libc::__rlimit_resource_t, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid `rlimit` to fill.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut old) }, 0);
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: `new` is a valid `rlimit`; the soft limit is at most the hard one.
    assert_eq!(unsafe { libc::setrlimit(resource, &new) }, 0);
    old.rlim_cur
}

/// Restores a resource limit on drop, so that a failing test leaves the process usable.
struct LimitGuard {
    resource: libc::__rlimit_resource_t,
    old: u64,
}

impl Drop for LimitGuard {
    fn drop(&mut self) {
        set_limit(self.resource, self.old);
    }
}

fn limit(resource: libc::__rlimit_resource_t, soft: u64) -> LimitGuard {
    let old = set_limit(resource, soft);
    LimitGuard { resource, old }
}

#[test]
fn the_open_files_limit_is_an_error() {
    let _serial = serial();
    let page = cowarena::page_size();
    let pages = 32 * MIB / page;
    let mut a = Arena::with_capacity(pages * page).unwrap();
    let mut rng = Rng(0x5EED_0003);
    let mut model: Vec<u8> = (0..pages).map(|_| rng.next() as u8).collect();
    for (p, &v) in model.iter().enumerate() {
        a.bytes_mut(p * page..(p + 1) * page).unwrap().fill(v);
    }
    // 32 MiB: the first snapshot fills two 16 MiB chunk files and opens a third.
    let s0 = a.snapshot().unwrap();
    let s0_model = model.clone();
    for p in (0..pages).step_by(3) {
        model[p] = model[p].wrapping_add(1);
        a.bytes_mut(p * page..(p + 1) * page)
            .unwrap()
            .fill(model[p]);
    }

    let mut failure = None;
    {
        // No new descriptor can be opened: the limit sits at the highest one open, and the
        // gaps below it are filled.
        let highest = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap();
        let _limit = limit(libc::RLIMIT_NOFILE, highest + 1);
        let mut fillers = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            fillers.push(f);
        }
        match a.snapshot() {
            Ok(_) => {}
            Err(e) => failure = Some(e),
        }
        if failure.is_some() {
            assert!(a.proxy().is_err(), "a proxy needs a new file");
            // Views and forks need no descriptor.
            check_bytes(s0.try_as_bytes().unwrap(), &s0_model, "snapshot view");
            let fork = s0.to_arena().unwrap();
            check_bytes(fork.as_bytes(), &s0_model, "arena made from the snapshot");
        }
    }
    let e = failure.expect("a snapshot of 11,000 pages needs a new chunk file");
    assert_eq!(errno(&e), Some(libc::EMFILE), "{e}");
    check_bytes(a.as_bytes(), &model, "arena after the failed snapshot");
    check_snapshot(&s0, &s0_model, "first snapshot");
    // With descriptors available again the same arena snapshots, restores and proxies.
    let s1 = a.snapshot().unwrap();
    check_snapshot(&s1, &model, "snapshot after the limit was lifted");
    a.restore(&s0).unwrap();
    check_bytes(a.as_bytes(), &s0_model, "restored");
    let p = a.proxy().unwrap();
    check_bytes(p.with(&a).unwrap().as_bytes(), &s0_model, "proxy");
}

fn vm_size() -> u64 {
    common::status_kib("VmSize:") as u64 * 1024
}

#[test]
fn the_address_space_limit_is_an_error() {
    let _serial = serial();
    let capacity = 512 * MIB;
    // Raw bytes in the upper half, clear of the typed allocator's header and page map.
    let at = capacity / 2;
    let mut a = Arena::with_capacity(capacity).unwrap();
    let p = a.alloc(42u64).unwrap();
    a.write(at, b"before").unwrap();
    let s = a.snapshot().unwrap();
    let unviewed = a.snapshot().unwrap();
    a.write(at, b"after!").unwrap();

    let mut failures = Vec::new();
    {
        // Room for the allocator, none for another arena-sized reservation.
        let _limit = limit(libc::RLIMIT_AS, vm_size() + 64 * MIB as u64);
        let mut note = |what: &str, r: Result<(), Error>| match r {
            Err(Error::Os { .. }) => failures.push(what.to_string()),
            Err(e) => panic!("{what}: {e} is not the system's error"),
            Ok(()) => panic!("{what} succeeded without address space"),
        };
        note("with_capacity", Arena::with_capacity(capacity).map(drop));
        note("to_arena", s.to_arena().map(drop));
        note("snapshot view", unviewed.try_as_bytes().map(drop));
        note("typed snapshot read", unviewed.try_get(p).map(drop));
        // The arena itself keeps working: its memory is reserved already.
        a.write(at + 64, b"during").unwrap();
        let q = a.alloc(7u64).unwrap();
        let t = a.snapshot().unwrap();
        a.restore(&s).unwrap();
        assert_eq!(&a.as_bytes()[at..at + 6], b"before");
        assert!(a.try_get(q).is_err());
        a.restore(&t).unwrap();
        assert_eq!(&a.as_bytes()[at..at + 6], b"after!");
        assert_eq!(&a.as_bytes()[at + 64..at + 70], b"during");
        assert_eq!((*a.get(p), *a.get(q)), (42, 7));
    }
    assert_eq!(failures.len(), 4);
    // With address space available again everything works, including the view that failed.
    let b = s.to_arena().unwrap();
    assert_eq!(&b.as_bytes()[at..at + 6], b"before");
    let view = unviewed.try_as_bytes();
    assert!(
        view.is_ok(),
        "a snapshot view that failed for lack of address space is made once there is room: {:?}",
        view.err()
    );
    assert_eq!(&view.unwrap()[at..at + 6], b"before");
    assert_eq!(*unviewed.get(p), 42);
}

/// Takes the process's kernel mappings until only about `left` remain under `vm.max_map_count`,
/// and gives them back on drop: a reservation whose every other page is made readable, each
/// such page splitting it (two more mappings per page).
struct MappingFiller {
    base: *mut libc::c_void,
    len: usize,
}

impl MappingFiller {
    fn leave(left: usize) -> MappingFiller {
        let page = cowarena::page_size();
        let max: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let take = max.saturating_sub(common::mappings() + left);
        let splits = take / 2;
        let len = (2 * splits + 1) * page;
        // SAFETY: a new inaccessible mapping at an address the kernel chooses.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        for i in 0..splits {
            // SAFETY: page `2i + 1` lies inside the mapping made above, which nothing else uses.
            let rc = unsafe {
                libc::mprotect(
                    base.cast::<u8>().add((2 * i + 1) * page).cast(),
                    page,
                    libc::PROT_READ,
                )
            };
            assert_eq!(rc, 0, "mprotect split {i} of {splits}");
        }
        MappingFiller { base, len }
    }
}

impl Drop for MappingFiller {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `leave`, which nothing refers into.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

#[test]
fn running_out_of_mappings_changes_no_byte() {
    let _serial = serial();
    let page = cowarena::page_size();
    let pages = 8192;
    let mut a = Arena::with_capacity(pages * page).unwrap();
    let mut model = vec![0u8; pages];
    // 2048 scattered frozen pages: mapping them back takes 2048 runs.
    for p in (0..pages).step_by(4) {
        fill(&mut a, &mut model, p..p + 1, (p / 4 % 251 + 1) as u8);
    }
    let s = a.snapshot().unwrap();
    fill(&mut a, &mut model, 1..2, 0xEE);
    // A proxy made and dropped leaves `a` in the shared layout until its next snapshot.
    drop(a.proxy().unwrap());
    {
        let _filler = MappingFiller::leave(600);
        let e = a.snapshot().unwrap_err();
        assert_eq!(errno(&e), Some(libc::ENOMEM), "{e}");
        check_bytes(a.as_bytes(), &model, "arena after the failed snapshot");
        let e = s.to_arena().unwrap_err();
        assert_eq!(errno(&e), Some(libc::ENOMEM), "{e}");
    }
    let s2 = a.snapshot().unwrap();
    check_bytes(a.as_bytes(), &model, "arena after the snapshot that worked");
    check_snapshot(&s2, &model, "the snapshot that worked");
    assert!(!a.stats().has_proxies);
    a.restore(&s).unwrap();
    model[1] = 0;
    check_bytes(a.as_bytes(), &model, "restored");
}
