//! Opening snapshot files: reading and checking each file of a delta chain, checking the
//! chain's content hashes, and building one page table whose pages the files provide lazily.

use super::format::{self, HashSum, Header, Meta};
use super::{bad_file, in_file, ContentHash, LazyPages, MAX_CHAIN};
use crate::error::{Error, FileProblem, Result};
use crate::page_table::PageTable;
use crate::snapshot::{Options, SavedAs, Snapshot};
use crate::store::{SlotId, Store};
use crate::sys::{self, file::DataFile};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

impl Snapshot {
    /// Opens a snapshot saved by [`save`](Snapshot::save) or [`save_delta`](Snapshot::save_delta)
    /// (following the delta chain), in this or any other process. Costs `O(index)`: pages are
    /// read from the file, and checked, when first read or mapped.
    ///
    /// The snapshot has its own page store: [`to_arena`](Snapshot::to_arena) makes an arena
    /// that it can be [restored](crate::Arena::restore) into; to restore it into an existing
    /// arena, open it with [`Arena::open_snapshot`](crate::Arena::open_snapshot) instead.
    ///
    /// A file is input from outside, and opening it is bounded: `open` reads only regular files
    /// (never blocking on a FIFO or reading a device), and a delta's base only from a regular
    /// file beside the delta, named by a plain file name and not through a symbolic link (see the
    /// [`persist`](crate::persist) module docs). Its work follows the file's index and, later,
    /// the pages used, not the capacity the file claims.
    ///
    /// # Errors
    /// [`Error::File`] naming the file and a [`FileProblem`]: not a regular file, not a
    /// snapshot, another version, page size or capacity, truncated, damaged metadata, a missing
    /// or wrong base, a base not beside the delta. A damaged page is an error at the first call
    /// that reads or maps it.
    pub fn open(path: impl AsRef<Path>) -> Result<Snapshot> {
        let page = sys::page_size();
        open_in(path.as_ref(), Store::new(page, None), Options::default())
    }

    /// The content hash of the file this snapshot was last saved to or opened from.
    pub fn content_hash(&self) -> Option<ContentHash> {
        self.saved_as().map(|s| s.hash)
    }
}

/// One file of a delta chain, checked.
pub(super) struct OpenedFile {
    path: PathBuf,
    file: DataFile,
    meta: Meta,
}

/// Opens and checks the file at `path` (its header and index, not its pages), following a
/// symbolic link only if `follow_links`.
fn read_file(path: &Path, follow_links: bool) -> Result<OpenedFile> {
    let page = sys::page_size();
    let at = in_file(path);
    let file = DataFile::open_read(path, follow_links).map_err(&at)?;
    let len = file.len().map_err(&at)?;
    let mut head = vec![0u8; format::HEADER_BYTES];
    let got = file.read_at(&mut head, 0).map_err(&at)?;
    head.truncate(got);
    let header = Header::decode(&head, len, page).map_err(|p| bad_file(path, p))?;
    let mut meta = vec![0u8; header.meta_len as usize];
    if file.read_at(&mut meta, 0).map_err(&at)? < meta.len() {
        return Err(bad_file(
            path,
            FileProblem::Truncated {
                len: file.len().map_err(&at)?,
                needed: header.meta_len,
                what: "page index (the file shrank while it was read)",
            },
        ));
    }
    let meta = Meta::decode(header, &meta, page).map_err(|p| bad_file(path, p))?;
    Ok(OpenedFile {
        path: path.to_path_buf(),
        file,
        meta,
    })
}

/// Opens the base `name` of the delta at `delta`, which must have content hash `expected`.
///
/// A snapshot file is input from outside, so the name it gives is trusted only as far as this
/// rule goes: a file name (no `/`, `.` or `..`) in the delta's own directory, opened without
/// following a symbolic link, without blocking, and only if it is a regular file. So a damaged
/// or hostile delta can make `open` read no other file than a snapshot file beside it.
pub(super) fn open_base(delta: &Path, name: &Path, expected: ContentHash) -> Result<OpenedFile> {
    let mut parts = name.components();
    if !matches!(
        (parts.next(), parts.next()),
        (Some(Component::Normal(_)), None)
    ) {
        return Err(bad_file(
            delta,
            FileProblem::BaseNotBeside {
                base: name.to_path_buf(),
            },
        ));
    }
    let base = delta.parent().unwrap_or(Path::new(".")).join(name);
    // A base that is not there is named by the delta; any other failure to read it is the base
    // file's own error.
    let opened = read_file(&base, false).map_err(|e| match e {
        Error::File {
            problem: FileProblem::Os { op, source },
            ..
        } if source.kind() == std::io::ErrorKind::NotFound => bad_file(
            delta,
            FileProblem::MissingBase {
                base: base.clone(),
                expected,
                source: Box::new(bad_file(&base, FileProblem::Os { op, source })),
            },
        ),
        other => other,
    })?;
    let found = opened.meta.header.content_hash;
    if found != expected {
        return Err(bad_file(
            delta,
            FileProblem::WrongBase {
                base,
                expected,
                found,
            },
        ));
    }
    Ok(opened)
}

/// Reads `path` and the bases it names; returns the files base first.
fn read_chain(path: &Path) -> Result<Vec<OpenedFile>> {
    let mut chain = vec![read_file(path, true)?];
    loop {
        let top = chain.last().expect("not empty");
        let Some(expected) = top.meta.header.base else {
            break;
        };
        if chain.len() == MAX_CHAIN {
            return Err(bad_file(path, FileProblem::ChainTooLong(MAX_CHAIN)));
        }
        let name = Path::new(OsStr::from_bytes(&top.meta.base_name));
        let opened = open_base(&top.path, name, expected)?;
        if opened.meta.header.capacity != top.meta.header.capacity {
            return Err(bad_file(
                &top.path,
                FileProblem::Capacity {
                    capacity: top.meta.header.capacity as u64,
                    reason: "the base file has another capacity",
                },
            ));
        }
        chain.push(opened);
    }
    chain.reverse();
    Ok(chain)
}

/// The checksum page `p` has in the chain below `files` (the last of `files` is the newest),
/// `None` for a zero page.
fn checksum_below(files: &[OpenedFile], p: usize) -> Option<u64> {
    for f in files.iter().rev() {
        if let Ok(i) = f.meta.entries.binary_search_by_key(&p, |e| e.page) {
            if !f.meta.entries[i].stored {
                return None;
            }
            return Some(f.meta.checksums[f.meta.stored_before[i]]);
        }
    }
    None
}

/// Checks each file's content hash against its index, from the base up.
fn check_hashes(chain: &[OpenedFile]) -> Result<()> {
    let page = sys::page_size();
    for (i, f) in chain.iter().enumerate() {
        let h = &f.meta.header;
        let mut sum = match chain[..i].last() {
            Some(base) => HashSum::of(base.meta.header.content_hash),
            None => HashSum::empty(page, h.capacity),
        };
        let mut k = 0;
        for e in &f.meta.entries {
            if let Some(old) = checksum_below(&chain[..i], e.page) {
                sum.remove(e.page, old);
            }
            if e.stored {
                sum.add(e.page, f.meta.checksums[k]);
                k += 1;
            }
        }
        if sum.finish() != h.content_hash {
            return Err(bad_file(
                &f.path,
                FileProblem::ContentHash {
                    stored: h.content_hash,
                    computed: sum.finish(),
                },
            ));
        }
    }
    Ok(())
}

/// Opens `path` (and its bases) into `store`.
pub(super) fn open_in(path: &Path, store: Arc<Store>, options: Options) -> Result<Snapshot> {
    let page = sys::page_size();
    let chain = read_chain(path)?;
    check_hashes(&chain)?;
    // The files' objects carry stamps of the processes that made them: allocations here must
    // not repeat one (an old `Ptr` in the file would then name a new object).
    let ceiling = chain.iter().map(|f| f.meta.header.stamp_ceiling).max();
    crate::alloc::stamps_above(ceiling.unwrap_or(0));
    let top_hash = chain.last().expect("not empty").meta.header.content_hash;
    let pages = chain[0].meta.header.capacity / page;
    let mut table: Option<PageTable> = None;
    let mut held = Vec::with_capacity(chain.len());
    for f in chain {
        let stored = f.meta.header.stored;
        let first = if stored > 0 {
            let data: Vec<u32> = f
                .meta
                .entries
                .iter()
                .filter(|e| e.stored)
                .map(|e| e.page as u32)
                .collect();
            let lazy = LazyPages::new(
                f.file,
                f.path,
                page,
                f.meta.header.data_offset,
                data,
                f.meta.checksums,
            );
            let run = store.add_file_chunk(Arc::new(lazy), stored)?;
            let first = run.slots()[0];
            held.push(run);
            first
        } else {
            SlotId::ZERO
        };
        let mut k = 0;
        let updates: Vec<(usize, SlotId)> = f
            .meta
            .entries
            .iter()
            .map(|e| {
                let slot = if e.stored {
                    k += 1;
                    first.offset(k - 1)
                } else {
                    SlotId::ZERO
                };
                (e.page, slot)
            })
            .collect();
        match &mut table {
            Some(t) => t.set_many(&updates),
            None => table = Some(PageTable::from_sorted(pages, Arc::clone(&store), &updates)),
        }
    }
    let table = table.expect("a chain has a file");
    // Slots of base pages that a delta replaced are released here, with the runs' holds.
    drop(held);
    let snapshot = Snapshot::new(table, options);
    let abs = sys::file::canonicalize(path).map_err(in_file(path))?;
    snapshot.set_saved_as(SavedAs {
        hash: top_hash,
        path: abs,
    });
    Ok(snapshot)
}
