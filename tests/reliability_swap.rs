//! Pages written through a raw pointer are found by the next snapshot even when the kernel has
//! swapped them out meanwhile: the kernel's page scan counts swapped anonymous pages as written.
//!
//! The test needs swap. As root it makes a small swap file, turns it on for the test and off
//! again afterwards, and pushes the written pages out with `MADV_PAGEOUT`; where any of that is
//! not possible (not root, no swap support, a file system that cannot hold swap) it says why and
//! passes without checking.
#![cfg(target_os = "linux")]

use cowarena::Arena;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::Command;

/// A swap file in use; turned off and removed when dropped (also when the test fails).
struct SwapFile {
    path: PathBuf,
    on: bool,
}

impl SwapFile {
    fn enable(bytes: usize) -> Result<SwapFile, String> {
        // SAFETY: geteuid takes no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: cannot turn swap on".into());
        }
        let path = std::env::temp_dir().join(format!("cowarena-swap-{}", std::process::id()));
        let mut swap = SwapFile { path, on: false };
        let file = std::fs::File::create(&swap.path).map_err(|e| format!("create: {e}"))?;
        // Written, not fallocated: swap files must have no holes or unwritten extents.
        let zeros = vec![0u8; 1 << 20];
        for off in (0..bytes).step_by(zeros.len()) {
            file.write_all_at(&zeros, off as u64)
                .map_err(|e| format!("write: {e}"))?;
        }
        file.sync_all().map_err(|e| format!("fsync: {e}"))?;
        drop(file);
        run("chmod", &["600"], &swap.path)?;
        run("mkswap", &[], &swap.path)?;
        run("swapon", &[], &swap.path)?;
        swap.on = true;
        Ok(swap)
    }
}

impl Drop for SwapFile {
    fn drop(&mut self) {
        if self.on {
            if let Err(e) = run("swapoff", &[], &self.path) {
                eprintln!("could not turn the test's swap file off: {e}");
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn run(cmd: &str, args: &[&str], path: &std::path::Path) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .arg(path)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether each page of `[addr, addr + len)` is swapped out (pagemap bit 62).
fn swapped(addr: usize, len: usize) -> Vec<bool> {
    let page = cowarena::page_size();
    let f = std::fs::File::open("/proc/self/pagemap").unwrap();
    let mut buf = vec![0u8; len / page * 8];
    f.read_exact_at(&mut buf, (addr / page * 8) as u64).unwrap();
    buf.chunks_exact(8)
        .map(|e| u64::from_ne_bytes(e.try_into().unwrap()) >> 62 & 1 == 1)
        .collect()
}

#[test]
fn raw_writes_to_swapped_out_pages_are_snapshotted() {
    let swap = match SwapFile::enable(64 << 20) {
        Ok(s) => s,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let page = cowarena::page_size();
    let pages = 256;
    let mut a = Arena::with_capacity(pages * page).unwrap();
    a.bytes_mut(0..pages * page).unwrap().fill(1);
    let before = a.snapshot().unwrap();
    let written: Vec<usize> = (0..pages).step_by(5).collect();
    // SAFETY: the pointer is used only before the next call on `a` that takes `&mut self`, and no
    // slice from `as_bytes` is live meanwhile; every offset written is inside the arena.
    let (base, paged_out) = unsafe {
        let base = a.as_mut_ptr();
        for &p in &written {
            base.add(p * page).write_volatile(2);
        }
        let rc = libc::madvise(base.cast(), pages * page, libc::MADV_PAGEOUT);
        (base as usize, rc == 0)
    };
    let out = swapped(base, pages * page);
    let swapped_written = written.iter().filter(|&&p| out[p]).count();
    if !paged_out || swapped_written == 0 {
        eprintln!(
            "skipped: MADV_PAGEOUT swapped out none of the written pages (madvise ok: {paged_out})"
        );
        drop(swap);
        return;
    }
    eprintln!(
        "{swapped_written} of {} written pages were swapped out",
        written.len()
    );

    let after = a.snapshot().unwrap();
    let mut buf = vec![0u8; pages * page];
    after.read(0, &mut buf).unwrap();
    for p in 0..pages {
        let want = if written.contains(&p) { 2 } else { 1 };
        assert_eq!(
            buf[p * page],
            want,
            "page {p} (swapped out: {}) in the snapshot after the raw writes",
            out[p]
        );
    }
    a.restore(&before).unwrap();
    assert!(
        a.as_bytes().iter().step_by(page).all(|&b| b == 1),
        "restoring the earlier snapshot undoes every raw write"
    );
    drop((a, before, after));
    drop(swap);
}
