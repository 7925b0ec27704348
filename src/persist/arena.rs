//! Arenas from saved or arbitrary contents: [`Arena::from_bytes`] and [`Arena::from_file`]
//! freeze their non-zero pages straight into a new page store; [`Arena::open_snapshot`] opens a
//! snapshot file into an arena's own store.

use super::open::open_in;
use super::{bad_file, format, in_file};
use crate::arena::{checked_capacity, Arena};
use crate::error::{FileProblem, Result};
use crate::page_table::PageTable;
use crate::snapshot::{Options, Snapshot};
use crate::store::{SlotId, Store};
use crate::sys::{self, file::DataFile};
use std::path::Path;
use std::sync::Arc;

/// Freezes the non-zero pages of `block` (whole pages, at most a store chunk's worth), which
/// holds the pages from `first`, into `table`.
fn freeze_block(table: &mut PageTable, first: usize, block: &[u8]) -> Result<()> {
    let page = sys::page_size();
    let mut pages = Vec::new();
    let mut bufs: Vec<&[u8]> = Vec::new();
    let mut run: Option<(usize, usize)> = None;
    for (k, bytes) in block.chunks_exact(page).enumerate() {
        if format::is_zero(bytes) {
            continue;
        }
        pages.push(first + k);
        match &mut run {
            Some((_, end)) if *end == k => *end += 1,
            _ => {
                if let Some((s, e)) = run.take() {
                    bufs.push(&block[s * page..e * page]);
                }
                run = Some((k, k + 1));
            }
        }
    }
    if let Some((s, e)) = run {
        bufs.push(&block[s * page..e * page]);
    }
    if pages.is_empty() {
        return Ok(());
    }
    let store = Arc::clone(table.store());
    let frozen = store.freeze(&bufs, crate::REMAP_MIN_RUN)?;
    let updates: Vec<(usize, SlotId)> = pages
        .iter()
        .copied()
        .zip(frozen.slots().iter().copied())
        .collect();
    table.set_many(&updates);
    Ok(())
}

/// An arena of `len` bytes (rounded up to whole pages) whose pages `fill(first_page, block)`
/// provides, a block (whole pages, at most a store chunk) at a time.
fn arena_from_blocks(
    len: usize,
    mut fill: impl FnMut(usize, &mut [u8]) -> Result<()>,
) -> Result<Arena> {
    let page = sys::page_size();
    let capacity = checked_capacity(len, page)?;
    let store = Store::new(page, None);
    let max = store.max_run_pages();
    let pages = capacity / page;
    let mut table = PageTable::new(pages, Arc::clone(&store));
    let mut block = vec![0u8; max.min(pages) * page];
    let mut first = 0;
    while first < pages {
        let n = max.min(pages - first);
        let buf = &mut block[..n * page];
        fill(first, buf)?;
        freeze_block(&mut table, first, buf)?;
        first += n;
    }
    Arena::from_table(&table, Options::default())
}

impl Arena {
    /// An arena whose initial contents are `bytes`, its capacity `bytes.len()` rounded up to
    /// whole pages (the rest reads as zeros). Its pages are frozen into the page store once, so
    /// the arena starts clean: its first snapshot costs nothing.
    ///
    /// ```
    /// let a = cowarena::Arena::from_bytes(b"guest memory image")?;
    /// assert_eq!(a.capacity(), cowarena::page_size());
    /// assert_eq!(&a.as_bytes()[..5], b"guest");
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> Result<Arena> {
        let page = sys::page_size();
        arena_from_blocks(bytes.len(), |first, block| {
            let start = (first * page).min(bytes.len());
            let src = &bytes[start..(start + block.len()).min(bytes.len())];
            block[..src.len()].copy_from_slice(src);
            block[src.len()..].fill(0);
            Ok(())
        })
    }

    /// An arena whose initial contents are the file at `path` (any file, not only a snapshot
    /// file), its capacity the file's length rounded up to whole pages. The file is read once
    /// with `pread` and not mapped, so a later change or truncation of the file by another
    /// process does not affect the arena (see the [module docs](crate::persist)).
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("cowarena-doc-image-{}", std::process::id()));
    /// std::fs::write(&path, vec![7u8; 10_000]).unwrap();
    /// let mut a = cowarena::Arena::from_file(&path)?;
    /// # std::fs::remove_file(&path).unwrap();
    /// assert_eq!(a.as_bytes()[9_999], 7);
    /// assert_eq!(a.as_bytes()[10_000], 0);
    /// a.write(0, b"writable")?;
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> Result<Arena> {
        let path = path.as_ref();
        let page = sys::page_size();
        let at = in_file(path);
        let file = DataFile::open_read(path, true).map_err(&at)?;
        let len = file.len().map_err(&at)?;
        let len = usize::try_from(len).map_err(|_| {
            bad_file(
                path,
                FileProblem::Capacity {
                    capacity: len,
                    reason: "larger than the address space",
                },
            )
        })?;
        arena_from_blocks(len, |first, block| {
            let offset = (first * page) as u64;
            let want = block.len().min(len - first * page);
            let got = file.read_at(&mut block[..want], offset).map_err(&at)?;
            if got < want {
                return Err(bad_file(
                    path,
                    FileProblem::Truncated {
                        len: offset + got as u64,
                        needed: len as u64,
                        what: "contents (the file shrank while it was read)",
                    },
                ));
            }
            block[want..].fill(0);
            Ok(())
        })
    }

    /// Opens a saved snapshot (like [`Snapshot::open`]) into this arena's page store, so that it
    /// can be [restored](Arena::restore) into this arena (which needs the same capacity).
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("cowarena-doc-open-in-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let mut a = cowarena::Arena::with_capacity(1 << 20)?;
    /// a.write(0, b"saved")?;
    /// a.snapshot()?.save(dir.join("s.snap"))?;
    /// a.write(0, b"later")?;
    /// let s = a.open_snapshot(dir.join("s.snap"))?;
    /// a.restore(&s)?;
    /// assert_eq!(&a.as_bytes()[..5], b"saved");
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), cowarena::Error>(())
    /// ```
    pub fn open_snapshot(&self, path: impl AsRef<Path>) -> Result<Snapshot> {
        open_in(
            path.as_ref(),
            Arc::clone(self.store()),
            self.options().clone(),
        )
    }
}
