//! Frozen pages are immutable by the kernel's word, not only by the API's: once a 16 MiB chunk of
//! the page store is full it is sealed for good against every writer but the store's own mapping
//! (which writes only over slots no snapshot holds), so even its file descriptor cannot change
//! it, and no store file leaks into a child process through `exec`.

#![cfg(target_os = "linux")]

mod common;
use common::{cowarena_memfds, serial};
use cowarena::Arena;
use std::os::fd::RawFd;
use std::process::Command;

const MIB: usize = 1 << 20;

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

fn seals(fd: RawFd) -> i32 {
    // SAFETY: F_GET_SEALS reads the seals of an open descriptor; no memory is passed.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    assert!(seals >= 0, "F_GET_SEALS on fd {fd}: errno {}", last_errno());
    seals
}

fn is_cloexec(fd: RawFd) -> bool {
    // SAFETY: F_GETFD reads the descriptor flags of an open descriptor; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    assert!(flags >= 0, "F_GETFD on fd {fd}: errno {}", last_errno());
    flags & libc::FD_CLOEXEC != 0
}

/// The file descriptors of a child process started with `exec`, as their link targets.
fn child_fds() -> String {
    let out = Command::new("sh")
        .args(["-c", "ls -l /proc/$$/fd"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Checks that nothing can write the file behind `fd` any more: `pwrite`, a new shared writable
/// mapping and a write through `/proc/self/fd` are all refused with `EPERM`.
fn assert_no_writer(fd: RawFd, page: usize, what: &str) {
    let junk = vec![0xA5u8; page];
    // SAFETY: `junk` is valid for `page` bytes of reads; the descriptor is open.
    let n = unsafe { libc::pwrite(fd, junk.as_ptr().cast(), page, 0) };
    assert_eq!((n, last_errno()), (-1, libc::EPERM), "pwrite to {what}");
    // SAFETY: a new mapping at an address the kernel chooses; nothing refers to it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    assert_eq!(p, libc::MAP_FAILED, "a writable shared mapping of {what}");
    assert_eq!(last_errno(), libc::EPERM);
    // Opening the file again through /proc does not get around the seal.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{fd}"))
        .unwrap();
    let e = std::io::Write::write(&mut f, &junk).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EPERM),
        "write through /proc to {what}"
    );
}

#[test]
fn sealed_chunks_cannot_be_written_even_through_their_descriptor() {
    let _serial = serial();
    let page = cowarena::page_size();
    // 24 MiB of frozen pages: one full (sealed) 16 MiB chunk and one being filled.
    let capacity = 24 * MIB;
    let mut a = Arena::with_capacity(capacity).unwrap();
    for (i, chunk) in a
        .bytes_mut(0..capacity)
        .unwrap()
        .chunks_mut(page)
        .enumerate()
    {
        chunk.fill(i as u8);
    }
    let s = a.snapshot().unwrap();
    let before = s.as_bytes().to_vec();
    let st = a.stats().store;
    assert!(st.sealed_chunk_files >= 1, "{st:?}");

    let fds = cowarena_memfds();
    assert_eq!(fds.len(), st.chunk_files, "one memfd per chunk file");
    // Sealed for good: seals locked, and no writer left (`F_SEAL_WRITE`) or none but the
    // store's own mapping (`F_SEAL_FUTURE_WRITE`, a memory store's full chunk, whose dead slots
    // later snapshots write over).
    let sealed: Vec<RawFd> = fds
        .iter()
        .copied()
        .filter(|&fd| seals(fd) & libc::F_SEAL_SEAL != 0)
        .collect();
    assert_eq!(sealed.len(), st.sealed_chunk_files);
    for &fd in &sealed {
        assert!(
            seals(fd) & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) != 0,
            "a sealed chunk is write-sealed (fd {fd}, seals {:#x})",
            seals(fd)
        );
    }
    for &fd in &fds {
        let s = seals(fd);
        assert!(
            s & libc::F_SEAL_GROW != 0 && s & libc::F_SEAL_SHRINK != 0,
            "every chunk has a fixed size (seals {s:#x})"
        );
        assert!(is_cloexec(fd), "store fd {fd} is close-on-exec");
    }

    for &fd in &sealed {
        assert_no_writer(fd, page, &format!("sealed fd {fd}"));

        // SAFETY: ftruncate and fallocate take no memory; the descriptor is open.
        let rc = unsafe { libc::ftruncate(fd, 0) };
        assert_eq!((rc, last_errno()), (-1, libc::EPERM), "shrinking fd {fd}");
        // SAFETY: as above.
        let rc = unsafe {
            libc::fallocate(
                fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                page as libc::off_t,
            )
        };
        assert_eq!((rc, last_errno()), (-1, libc::EPERM), "punching fd {fd}");
    }

    // The arena's own private mapping of those pages is still writable (copy-on-write), and
    // none of the attempts above changed the snapshot.
    a.write(0, &[0xFF; 64]).unwrap();
    assert_eq!(&a.as_bytes()[..64], &[0xFF; 64]);
    let mut buf = vec![0u8; capacity];
    s.read(0, &mut buf).unwrap();
    assert!(buf == before, "the snapshot's bytes (read) are unchanged");
    assert!(
        s.as_bytes() == &before[..],
        "the snapshot's view is unchanged"
    );
    a.restore(&s).unwrap();
    assert!(
        a.as_bytes() == &before[..],
        "restoring gives the frozen bytes"
    );

    // A child started with exec sees none of the store's files, nor a proxy's live file.
    let _proxy = a.proxy().unwrap();
    let memfds = cowarena_memfds();
    assert!(memfds.len() > fds.len(), "the proxy added a live file");
    assert!(memfds.iter().all(|&fd| is_cloexec(fd)));
    let listing = child_fds();
    assert!(
        !listing.contains("memfd:cowarena"),
        "a child inherited a store file:\n{listing}"
    );
}

/// Once the chunk being filled writes over dead slots, it is written only through the store's
/// own mapping, made before the chunk was sealed against every other writer
/// (`F_SEAL_FUTURE_WRITE`): a write through its descriptor or a new shared writable mapping are
/// refused, and a snapshot's bytes cannot change under a slice it lent.
#[test]
fn the_open_chunk_cannot_be_written_by_anyone_else() {
    let _serial = serial();
    let page = cowarena::page_size();
    let mut a = Arena::with_capacity(MIB).unwrap();
    a.write(0, b"frozen").unwrap();
    let s = a.snapshot().unwrap();
    let view = s.as_bytes();
    // Page 1 frozen again and again: its old slots die and are written over.
    for round in 0..4u8 {
        a.write(page, &[round]).unwrap();
        drop(a.snapshot().unwrap());
    }
    let fds = cowarena_memfds();
    assert_eq!(fds.len(), 1, "one open chunk");
    let fd = fds[0];
    assert!(
        seals(fd) & libc::F_SEAL_FUTURE_WRITE != 0,
        "seals {:#x}",
        seals(fd)
    );
    assert_no_writer(fd, page, "the open chunk");
    assert_eq!(&view[..6], b"frozen");
    // The store itself still writes it.
    a.write(page, b"second").unwrap();
    let t = a.snapshot().unwrap();
    assert_eq!(&t.as_bytes()[page..page + 6], b"second");
    assert_eq!(&view[..6], b"frozen");
}

#[test]
fn files_in_a_backing_directory_are_close_on_exec() {
    let _serial = serial();
    let page = cowarena::page_size();
    let dir = std::env::temp_dir().join(format!("cowarena-cloexec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut a = Arena::builder(64 * page).backing_dir(&dir).build().unwrap();
    a.write(0, b"frozen").unwrap();
    let s = a.snapshot().unwrap();
    let _proxy = a.proxy().unwrap();
    let prefix = dir.to_str().unwrap().to_string();
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let fd = e.file_name().to_str()?.parse().ok()?;
            target.to_str()?.starts_with(&prefix).then_some(fd)
        })
        .collect();
    assert!(fds.len() >= 2, "a store file and the proxy's live file");
    assert!(fds.iter().all(|&fd| is_cloexec(fd)));
    let listing = child_fds();
    assert!(
        !listing.contains(&prefix),
        "a child inherited a backing file:\n{listing}"
    );
    assert_eq!(&s.as_bytes()[..6], b"frozen");
    drop((a, s, _proxy));
    std::fs::remove_dir(&dir).unwrap();
}

#[test]
fn a_proxys_live_file_cannot_change_size() {
    let _serial = serial();
    let page = cowarena::page_size();
    let mut a = Arena::with_capacity(16 * page).unwrap();
    a.write(3 * page, b"shared").unwrap();
    let before = cowarena_memfds();
    let b = a.proxy().unwrap();
    let live: Vec<RawFd> = cowarena_memfds()
        .into_iter()
        .filter(|fd| !before.contains(fd))
        .collect();
    assert_eq!(live.len(), 1, "the first proxy adds one live file");
    let fd = live[0];
    let s = seals(fd);
    assert!(
        s & libc::F_SEAL_GROW != 0 && s & libc::F_SEAL_SHRINK != 0,
        "the live file has a fixed size (seals {s:#x})"
    );
    // Truncating it under the mappings would make every later access a SIGBUS.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{fd}"))
        .unwrap();
    let e = f.set_len(0).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EPERM),
        "ftruncate through /proc"
    );
    // SAFETY: ftruncate takes no memory; the descriptor is open.
    let rc = unsafe { libc::ftruncate(fd, (64 * page) as libc::off_t) };
    assert_eq!(
        (rc, last_errno()),
        (-1, libc::EPERM),
        "growing the live file"
    );
    assert_eq!(
        &b.with(&a).unwrap().as_bytes()[3 * page..3 * page + 6],
        b"shared"
    );
    assert_eq!(a.as_bytes()[15 * page], 0);
}
