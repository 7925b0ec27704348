//! Writing a snapshot file so that its final name only ever names a complete, synced file.

use super::in_file;
use crate::error::{Error, FileProblem, Result};
use crate::sys::file::{self, DataFile};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of page data gathered before one `pwrite`.
const STAGING_BYTES: usize = 1 << 20;

/// The directory `path` names a file in (`.` for a bare file name).
pub(crate) fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A file being written under a temporary name in its final directory. [`NewFile::commit`]
/// syncs it and renames it over the final name; dropping it uncommitted removes it.
pub(crate) struct NewFile {
    file: DataFile,
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    committed: bool,
    /// Page data not yet written, and where it goes.
    staged: Vec<u8>,
    staged_at: u64,
}

impl NewFile {
    /// Creates the temporary file for `path`; page data will start at `data_offset`.
    pub(crate) fn create(path: &Path, data_offset: u64) -> Result<NewFile> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = path.file_name().ok_or_else(|| Error::File {
            path: path.to_path_buf(),
            problem: FileProblem::Os {
                op: "save",
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the path names no file",
                ),
            },
        })?;
        let dir = file::canonicalize(dir_of(path)).map_err(in_file(path))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(
            ".{}-{}.cowarena-tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = dir.join(tmp_name);
        let file = DataFile::create_new(&tmp).map_err(in_file(path))?;
        Ok(NewFile {
            file,
            tmp,
            path: dir.join(name),
            dir,
            committed: false,
            staged: Vec::with_capacity(STAGING_BYTES),
            staged_at: data_offset,
        })
    }

    /// The directory the file goes to (absolute, symbolic links resolved).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends page bytes to the data area.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<()> {
        if self.staged.len() + bytes.len() > STAGING_BYTES {
            self.flush()?;
        }
        self.staged.extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.file
            .write_all_at(&self.staged, self.staged_at)
            .map_err(in_file(&self.path))?;
        self.staged_at += self.staged.len() as u64;
        self.staged.clear();
        Ok(())
    }

    /// Writes the remaining data and `meta` at the start, syncs, and renames the file to its
    /// final name. Returns the final path (absolute) and the file's length.
    pub(crate) fn commit(mut self, meta: &[u8]) -> Result<(PathBuf, u64)> {
        self.flush()?;
        let at = in_file(&self.path);
        let len = self.staged_at;
        // Without stored pages nothing was written up to the data offset.
        self.file.set_len(len).map_err(&at)?;
        self.file.write_all_at(meta, 0).map_err(&at)?;
        self.file.sync().map_err(&at)?;
        // Opened before the rename, so that the only failure left after it is the sync.
        let dir = file::Dir::open(&self.dir).map_err(&at)?;
        file::rename(&self.tmp, &self.path).map_err(&at)?;
        self.committed = true;
        // The rename is durable only once the directory is synced. If that fails the complete
        // file is in place, but its name may not survive a crash: the caller hears of it.
        dir.sync().map_err(&at)?;
        Ok((self.path.clone(), len))
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the write already failed, and that error is what the caller sees.
            let _ = file::remove(&self.tmp);
        }
    }
}
