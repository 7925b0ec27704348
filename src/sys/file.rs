//! Files the user names: snapshot files and arena images. Reads and writes are positional
//! (`pread`/`pwrite`), so one open file serves any number of readers without a shared cursor.
//! Nothing here maps a user's file: another process may truncate it at any time, and a mapping
//! of a truncated file raises SIGBUS on access, while a short `pread` is an ordinary error.

use super::fault::{self, Call};
use crate::error::{Error, FileProblem, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

fn io_error(op: &'static str, source: std::io::Error) -> Error {
    Error::Os { op, source }
}

fn not_regular(path: &Path, kind: &'static str) -> Error {
    Error::File {
        path: path.to_path_buf(),
        problem: FileProblem::NotARegularFile { kind },
    }
}

/// The failure point of a call the standard library makes (and retries on `EINTR` itself).
fn point(op: &'static str) -> Result<crate::cost::InPhase> {
    fault::point(op, Call::Plain).map_err(|e| io_error(op, e.into()))
}

/// An open regular file named by the user.
#[derive(Debug)]
pub(crate) struct DataFile {
    file: File,
}

impl DataFile {
    /// Opens `path` read-only (close-on-exec), if it is a regular file: without blocking (a FIFO
    /// would wait for a writer), and, with `follow_links` false, refusing a symbolic link as the
    /// last component.
    ///
    /// # Errors
    /// [`Error::Os`] naming `open` or `fstat`; [`FileProblem::NotARegularFile`] (in
    /// [`Error::File`]) for anything but a regular file.
    pub(crate) fn open_read(path: &Path, follow_links: bool) -> Result<DataFile> {
        let mut flags = libc::O_NONBLOCK;
        if !follow_links {
            flags |= libc::O_NOFOLLOW;
        }
        let file = point("open").and_then(|_call| {
            OpenOptions::new()
                .read(true)
                .custom_flags(flags)
                .open(path)
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::ELOOP) if !follow_links => not_regular(path, "a symbolic link"),
                    _ => io_error("open", e),
                })
        })?;
        let kind = point("fstat")
            .and_then(|_call| file.metadata().map_err(|e| io_error("fstat", e)))?
            .file_type();
        if !kind.is_file() {
            use std::os::unix::fs::FileTypeExt;
            let what = match () {
                () if kind.is_dir() => "a directory",
                () if kind.is_fifo() => "a FIFO",
                () if kind.is_char_device() || kind.is_block_device() => "a device",
                () if kind.is_socket() => "a socket",
                () => "not a plain file",
            };
            return Err(not_regular(path, what));
        }
        Ok(DataFile { file })
    }

    /// Creates `path`, which must not exist yet, for writing (mode 0644 less the umask,
    /// close-on-exec).
    pub(crate) fn create_new(path: &Path) -> Result<DataFile> {
        let _call = point("open(O_CREAT | O_EXCL)")?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .map_err(|e| io_error("open(O_CREAT | O_EXCL)", e))?;
        Ok(DataFile { file })
    }

    /// The file's current length (`fstat`).
    pub(crate) fn len(&self) -> Result<u64> {
        let _call = point("fstat")?;
        Ok(self
            .file
            .metadata()
            .map_err(|e| io_error("fstat", e))?
            .len())
    }

    /// Reads into `buf` from `offset` until `buf` is full or the file ends; returns the bytes
    /// read (fewer than `buf.len()` only at the end of the file).
    pub(crate) fn read_at(&self, mut buf: &mut [u8], mut offset: u64) -> Result<usize> {
        let mut done = 0;
        while !buf.is_empty() {
            let read = fault::point("pread", Call::Interruptible)
                .map_err(std::io::Error::from)
                .and_then(|_call| self.file.read_at(buf, offset));
            match read {
                Ok(0) => break,
                Ok(n) => {
                    done += n;
                    offset += n as u64;
                    buf = &mut buf[n..];
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error("pread", e)),
            }
        }
        Ok(done)
    }

    /// Writes all of `buf` at `offset`.
    pub(crate) fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        let _call = point("pwrite")?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| io_error("pwrite", e))
    }

    /// Sets the file's length (`ftruncate`): the end of a file whose last bytes are zeros.
    pub(crate) fn set_len(&self, len: u64) -> Result<()> {
        let _call = point("ftruncate")?;
        self.file.set_len(len).map_err(|e| io_error("ftruncate", e))
    }

    /// Flushes the file's data and metadata to stable storage (`fsync`).
    pub(crate) fn sync(&self) -> Result<()> {
        let _call = point("fsync")?;
        self.file.sync_all().map_err(|e| io_error("fsync", e))
    }
}

/// Renames `from` to `to`, replacing `to` atomically if it exists.
pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    let _call = point("rename")?;
    std::fs::rename(from, to).map_err(|e| io_error("rename", e))
}

/// Removes the file `path`.
pub(crate) fn remove(path: &Path) -> Result<()> {
    let _call = point("unlink")?;
    std::fs::remove_file(path).map_err(|e| io_error("unlink", e))
}

/// An open directory, to flush its entries (a rename into it) to stable storage.
#[derive(Debug)]
pub(crate) struct Dir {
    file: File,
}

impl Dir {
    /// Opens the directory `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Dir> {
        let _call = point("open (directory, to fsync it)")?;
        let file = File::open(dir).map_err(|e| io_error("open (directory, to fsync it)", e))?;
        Ok(Dir { file })
    }

    /// Flushes the directory's entries to stable storage (`fsync`).
    pub(crate) fn sync(&self) -> Result<()> {
        let _call = point("fsync (directory)")?;
        self.file
            .sync_all()
            .map_err(|e| io_error("fsync (directory)", e))
    }
}

/// The absolute path of `path` with every symbolic link resolved (`realpath`).
pub(crate) fn canonicalize(path: &Path) -> Result<PathBuf> {
    let _call = point("realpath")?;
    std::fs::canonicalize(path).map_err(|e| io_error("realpath", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reads_stop_at_the_end() {
        let dir = std::env::temp_dir().join(format!("cowarena-sys-file-{}", std::process::id()));
        let f = DataFile::create_new(&dir).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync().unwrap();
        assert!(DataFile::create_new(&dir).is_err());
        let r = DataFile::open_read(&dir, true).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(r.read_at(&mut buf, 2).unwrap(), 3);
        assert_eq!(&buf[..3], b"llo");
        assert_eq!(r.len().unwrap(), 5);
        remove(&dir).unwrap();
        assert!(DataFile::open_read(&dir, true).is_err());
    }
}
