//! macOS and other Unix systems without memfd: page-store files are unlinked temporary files.
//! They cannot be sealed, and the kernel offers no scan of a mapping's private pages, so writes
//! through raw pointers are found by treating every resident page as written.

use super::fault::{self, Call};
use super::os_error;
use crate::error::Result;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// A new empty, unlinked, close-on-exec file in `dir` or the temporary directory.
pub(crate) fn create_backing_file(dir: Option<&Path>) -> Result<OwnedFd> {
    let dir = dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let (raw, path) = fault::point("mkstemp in the backing directory", Call::Plain)
        .and_then(|_call| nix::unistd::mkstemp(&dir.join("cowarena.XXXXXX")))
        .map_err(|e| os_error("mkstemp in the backing directory", e))?;
    // SAFETY: `mkstemp` returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    nix::unistd::unlink(&path).map_err(|e| os_error("unlink", e))?;
    nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| os_error("fcntl(F_SETFD)", e))?;
    Ok(fd)
}

/// Never done here: there is no `MADV_POPULATE_WRITE`.
///
/// # Safety
/// As on Linux: the range lies in a private writable mapping the caller owns.
pub(super) unsafe fn populate_write(_addr: usize, _len: usize) -> bool {
    false
}

pub(crate) fn seal_size(_fd: &OwnedFd) -> Result<bool> {
    Ok(false)
}

/// No seals here.
pub(crate) fn seal_future_writes(_fd: &OwnedFd) -> Result<bool> {
    Ok(false)
}

/// No seals here.
pub(crate) fn seal_for_owners(_fd: &OwnedFd) -> Result<bool> {
    Ok(false)
}

pub(crate) fn seal_full(_fd: &OwnedFd) -> Result<bool> {
    Ok(false)
}

/// Frees the file's blocks in the range with `F_PUNCHHOLE`.
pub(crate) fn punch_hole(fd: &OwnedFd, offset: usize, len: usize) -> Result<()> {
    let args = libc::fpunchhole_t {
        fp_flags: 0,
        reserved: 0,
        fp_offset: offset as libc::off_t,
        fp_length: len as libc::off_t,
    };
    let _call = fault::point("fcntl(F_PUNCHHOLE)", Call::Plain)
        .map_err(|e| os_error("fcntl(F_PUNCHHOLE)", e))?;
    // SAFETY: `args` is a valid `fpunchhole_t` that outlives the call.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_PUNCHHOLE, &args) };
    if r < 0 {
        return Err(os_error("fcntl(F_PUNCHHOLE)", nix::errno::Errno::last()));
    }
    Ok(())
}

/// Writes zeros over the range so that its blocks exist before the range is mapped.
pub(crate) fn allocate(fd: &OwnedFd, offset: usize, len: usize) -> Result<()> {
    let zeros = vec![0u8; len.min(1 << 20)];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len());
        super::write_all_at(fd, &zeros[..n], offset + done)?;
        done += n;
    }
    Ok(())
}

/// The whole file counts as data: holes are not reported portably.
pub(crate) fn data_ranges(_fd: &OwnedFd, len: usize) -> Result<Vec<Range<usize>>> {
    let whole = 0..len;
    Ok(vec![whole])
}

/// No batched `madvise` here: the caller drops every range itself.
///
/// # Safety
/// Nothing to uphold: no range is touched.
pub(crate) unsafe fn discard_ranges(_ranges: &[(usize, usize)]) -> usize {
    0
}

pub(crate) fn private_page_runs(_addr: usize, _len: usize) -> Option<Vec<Range<usize>>> {
    None
}

/// No userfaultfd here: raw writes are found by treating every private page as written.
pub(crate) mod write_tracker {
    use crate::error::Result;
    use std::ops::Range;

    /// Never made on this platform.
    #[derive(Debug)]
    pub(crate) enum WriteTracker {}

    impl WriteTracker {
        pub(crate) fn new() -> Result<Option<WriteTracker>> {
            Ok(None)
        }

        pub(crate) fn answers_here(&self) -> bool {
            match *self {}
        }

        pub(crate) fn track(&self, _addr: usize, _len: usize, _file: bool) -> Result<()> {
            match *self {}
        }

        pub(crate) fn protect(&self, _addr: usize, _len: usize) -> Result<()> {
            match *self {}
        }

        pub(crate) fn take_written(
            &self,
            _addr: usize,
            _len: usize,
            _protect: bool,
        ) -> Result<Vec<Range<usize>>> {
            match *self {}
        }
    }
}
