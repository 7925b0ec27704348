//! The pages of an opened snapshot file, brought into the page store on first use.

use super::{bad_file, in_file};
use crate::error::{FileProblem, Result};
use crate::persist::format::checksum;
use crate::store::PageSource;
use crate::sys::file::DataFile;
use crate::sys::BackingFile;
use std::path::PathBuf;
use std::sync::Mutex;

/// Pages read from the file per `pread` at most, so a long first read does not need a buffer
/// of its whole length.
const FILL_BLOCK_PAGES: usize = 256;

/// The stored pages of one snapshot file: slot `k` of its file chunk is stored page `k`.
#[derive(Debug)]
pub(crate) struct LazyPages {
    file: DataFile,
    path: PathBuf,
    page: usize,
    data_offset: u64,
    /// Per slot: the arena page it holds (for error messages) and the checksum of its bytes.
    pages: Vec<u32>,
    checksums: Vec<u64>,
    /// Per slot, one bit: its bytes are in the chunk already. The lock also keeps two threads
    /// from filling the same slot at once.
    present: Mutex<Vec<u64>>,
}

impl LazyPages {
    pub(crate) fn new(
        file: DataFile,
        path: PathBuf,
        page: usize,
        data_offset: u64,
        pages: Vec<u32>,
        checksums: Vec<u64>,
    ) -> Self {
        debug_assert_eq!(pages.len(), checksums.len());
        let present = Mutex::new(vec![0; pages.len().div_ceil(64)]);
        LazyPages {
            file,
            path,
            page,
            data_offset,
            pages,
            checksums,
            present,
        }
    }
}

/// Each missing run is read from the file with one `pread`, checked page by page against its
/// checksum, and written into the chunk. A page that fails its check, or a file that has shrunk,
/// is an error now and again at the next call that needs the page.
impl PageSource for LazyPages {
    fn fill(&self, chunk: &BackingFile, first: usize, len: usize) -> Result<()> {
        let page = self.page;
        let mut present = self.present.lock().unwrap_or_else(|e| e.into_inner());
        let has = |bits: &[u64], s: usize| bits[s / 64] & (1 << (s % 64)) != 0;
        let end = first + len;
        let mut buf = Vec::new();
        let mut s = first;
        while s < end {
            if has(&present, s) {
                s += 1;
                continue;
            }
            let mut e = s + 1;
            while e < end && e - s < FILL_BLOCK_PAGES && !has(&present, e) {
                e += 1;
            }
            buf.resize((e - s) * page, 0);
            let at = self.data_offset + (s * page) as u64;
            let got = self
                .file
                .read_at(&mut buf, at)
                .map_err(in_file(&self.path))?;
            if got < buf.len() {
                let len = self.file.len().map_err(in_file(&self.path))?;
                return Err(bad_file(
                    &self.path,
                    FileProblem::Truncated {
                        len,
                        needed: at + buf.len() as u64,
                        what: "page data (the file shrank after it was opened)",
                    },
                ));
            }
            for (k, bytes) in buf.chunks_exact(page).enumerate() {
                if checksum(bytes) != self.checksums[s + k] {
                    let p = self.pages[s + k] as usize;
                    return Err(bad_file(
                        &self.path,
                        FileProblem::PageChecksum {
                            page: p,
                            offset: p * page,
                        },
                    ));
                }
            }
            chunk.write_all_at(&buf, s * page)?;
            for k in s..e {
                present[k / 64] |= 1 << (k % 64);
            }
            s = e;
        }
        Ok(())
    }
}
