//! A process killed (SIGKILL) in the middle of `save` leaves the file's final name holding the
//! old file, or nothing if there was none, never a partial file.

use cowarena::{Arena, Snapshot};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Set in the child process: the file it saves to, over and over.
const CHILD_ENV: &str = "COWARENA_PERSIST_CRASH_PATH";
const SIZE: usize = 32 << 20;

/// A snapshot whose every page is distinct and depends on `generation`.
fn state(generation: u8) -> Snapshot {
    let page = cowarena::page_size();
    let mut a = Arena::with_capacity(SIZE).unwrap();
    for (p, bytes) in a.bytes_mut(0..SIZE).unwrap().chunks_mut(page).enumerate() {
        bytes.fill(generation);
        bytes[..8].copy_from_slice(&(p as u64).to_le_bytes());
    }
    a.snapshot().unwrap()
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".cowarena-tmp"))
        .collect()
}

#[test]
fn a_save_killed_midway_leaves_the_old_file_or_none() {
    let dir = std::env::temp_dir().join(format!("cowarena-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.snap");
    let old = state(1);
    let new_hash = state(2).save(dir.join("new.snap")).unwrap().content_hash;
    let old_hash = old.save(dir.join("old.snap")).unwrap().content_hash;
    let (mut killed_mid_write, mut rounds) = (0, 0);
    for round in 0..8u64 {
        let had_old = round % 2 == 1;
        if had_old {
            old.save(&path).unwrap();
        } else {
            let _ = std::fs::remove_file(&path);
        }
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_saves_in_a_loop",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("saving") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
        }
        // Kill once a temporary file exists (the child is inside `save`), a little later each
        // round, so the kill lands in different phases of the write.
        while temp_files(&dir).is_empty() {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_millis(round * 7));
        child.kill().unwrap();
        child.wait().unwrap();
        killed_mid_write += usize::from(!temp_files(&dir).is_empty());
        rounds += 1;

        match Snapshot::open(&path) {
            Err(e) => {
                assert!(!had_old, "the old file is gone: {e}");
                assert!(!path.exists(), "a file that does not open: {e}");
            }
            Ok(s) => {
                let hash = s.content_hash().unwrap();
                assert!(
                    hash == new_hash || (had_old && hash == old_hash),
                    "round {round}: {hash}"
                );
                let generation = if hash == new_hash { 2 } else { 1 };
                let expected = state(generation);
                assert_eq!(s.as_bytes(), expected.as_bytes(), "round {round}");
            }
        }
        for t in temp_files(&dir) {
            std::fs::remove_file(t).unwrap();
        }
    }
    println!("{killed_mid_write} of {rounds} kills left a temporary file behind");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Run by [`a_save_killed_midway_leaves_the_old_file_or_none`] in a child process; does nothing
/// otherwise.
#[test]
fn child_saves_in_a_loop() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let s = state(2);
    println!("saving");
    loop {
        s.save(&path).unwrap();
    }
}
