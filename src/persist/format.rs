//! The snapshot file format: encoding and checking of the header, the page index and the
//! checksums, and the content hash. Nothing here touches a file. The layout is drawn in the
//! [`persist`](super) module docs.

use crate::error::FileProblem;
use crate::snapshot::ContentHash;
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

pub(crate) const MAGIC: [u8; 8] = *b"\x89CWSNAP\n";
pub(crate) const VERSION: u32 = 1;
pub(crate) const HEADER_BYTES: usize = 128;
const FLAG_DELTA: u32 = 1;
const ZERO_ENTRY: u64 = 1 << 63;
/// Longest base name accepted, in bytes (`PATH_MAX` on Linux).
const MAX_NAME: u64 = 4096;

/// The checksum of a page's bytes.
pub(crate) fn checksum(page: &[u8]) -> u64 {
    xxh3_64(page)
}

/// Whether every byte of `bytes` is zero.
pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    // OR-folding fixed blocks vectorizes; one early exit per block keeps non-zero pages cheap.
    let mut blocks = bytes.chunks_exact(64);
    blocks.all(|b| b.iter().fold(0, |acc, &x| acc | x) == 0)
        && blocks.remainder().iter().all(|&x| x == 0)
}

/// The content hash under construction: a wrapping sum of one term for the geometry and one
/// per non-zero page, so that changing a page changes the sum by two terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HashSum(u128);

impl HashSum {
    /// The sum for an all-zero snapshot of this geometry.
    pub(crate) fn empty(page_size: usize, capacity: usize) -> Self {
        let mut b = [0u8; 32];
        b[..16].copy_from_slice(b"cowarena/geometr");
        b[16..24].copy_from_slice(&(page_size as u64).to_le_bytes());
        b[24..].copy_from_slice(&(capacity as u64).to_le_bytes());
        HashSum(xxh3_128(&b))
    }

    pub(crate) fn of(hash: ContentHash) -> Self {
        HashSum(hash.0)
    }

    fn term(page: usize, checksum: u64) -> u128 {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&(page as u64).to_le_bytes());
        b[8..].copy_from_slice(&checksum.to_le_bytes());
        xxh3_128(&b)
    }

    /// Counts page `page` with bytes of checksum `checksum`.
    pub(crate) fn add(&mut self, page: usize, checksum: u64) {
        self.0 = self.0.wrapping_add(Self::term(page, checksum));
    }

    /// Stops counting page `page` with bytes of checksum `checksum`.
    pub(crate) fn remove(&mut self, page: usize, checksum: u64) {
        self.0 = self.0.wrapping_sub(Self::term(page, checksum));
    }

    pub(crate) fn finish(self) -> ContentHash {
        ContentHash(self.0)
    }
}

/// One entry of the page index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) page: usize,
    /// The page's bytes are stored (otherwise the page became zero).
    pub(crate) stored: bool,
}

/// A header as read from a file, checked for consistency with itself and the file's length.
#[derive(Clone, Debug)]
pub(crate) struct Header {
    pub(crate) capacity: usize,
    pub(crate) entries: usize,
    pub(crate) stored: usize,
    pub(crate) data_offset: u64,
    pub(crate) content_hash: ContentHash,
    /// For a delta: the base's content hash and name.
    pub(crate) base: Option<ContentHash>,
    /// A bound above every object stamp in the file's snapshot (0: unknown).
    pub(crate) stamp_ceiling: u64,
    name_len: usize,
    /// Bytes from the start of the file to the end of the metadata checksum.
    pub(crate) meta_len: u64,
}

/// Bytes of metadata (header to metadata checksum) for these counts, if they fit in a u64.
fn meta_len(name_len: u64, entries: u64, stored: u64) -> Option<u64> {
    (HEADER_BYTES as u64)
        .checked_add(name_len)?
        .checked_add(entries.checked_mul(8)?)?
        .checked_add(stored.checked_mul(8)?)?
        .checked_add(8)
}

/// The first page-aligned offset after the metadata of a file of at most `entries` entries and
/// `stored` stored pages.
pub(crate) fn data_offset(page: usize, name_len: usize, entries: usize, stored: usize) -> u64 {
    let meta = meta_len(name_len as u64, entries as u64, stored as u64).expect("counts fit");
    meta.next_multiple_of(page as u64)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u128_at(b: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(b[at..at + 16].try_into().expect("16 bytes"))
}

impl Header {
    /// Checks the first bytes of a file of `file_len` bytes (`head` holds up to
    /// [`HEADER_BYTES`] of them).
    pub(crate) fn decode(head: &[u8], file_len: u64, page: usize) -> Result<Header, FileProblem> {
        let magic_len = head.len().min(MAGIC.len());
        if head[..magic_len] != MAGIC[..magic_len] {
            return Err(FileProblem::NotASnapshot);
        }
        if head.len() < HEADER_BYTES {
            return Err(FileProblem::Truncated {
                len: file_len,
                needed: HEADER_BYTES as u64,
                what: "header",
            });
        }
        let version = u32_at(head, 8);
        if version != VERSION {
            return Err(FileProblem::Version {
                found: version,
                supported: VERSION,
            });
        }
        let page_size = u64_at(head, 16);
        if page_size != page as u64 {
            return Err(FileProblem::PageSize {
                file: page_size,
                runtime: page,
            });
        }
        let capacity = u64_at(head, 24);
        let bad_capacity = |reason| FileProblem::Capacity { capacity, reason };
        if capacity == 0 || capacity % page_size != 0 {
            return Err(bad_capacity("not a positive multiple of the page size"));
        }
        let pages = capacity / page_size;
        if pages > u32::MAX as u64 || capacity > isize::MAX as u64 {
            return Err(bad_capacity("more pages than an arena can index"));
        }
        let flags = u32_at(head, 12);
        let delta = flags & FLAG_DELTA != 0;
        let (entries, stored, data_offset) = (u64_at(head, 32), u64_at(head, 40), u64_at(head, 48));
        let (base_hash, name_len) = (u128_at(head, 72), u64_at(head, 88));
        let stamp_ceiling = u64_at(head, 96);
        if flags & !FLAG_DELTA != 0 || head[104..].iter().any(|&b| b != 0) {
            return Err(FileProblem::Index("unknown flags or reserved bytes set"));
        }
        if stamp_ceiling > crate::alloc::MAX_STAMP_CEILING {
            // No process records more (see `alloc::stamps`); a larger one would exhaust the
            // stamps of every process that opens the file.
            return Err(FileProblem::Index(
                "stamp ceiling beyond any process's stamps",
            ));
        }
        if entries > pages || stored > entries {
            return Err(FileProblem::Index(
                "more entries than pages, or more stored pages than entries",
            ));
        }
        if delta != (name_len > 0) || (!delta && base_hash != 0) || name_len > MAX_NAME {
            return Err(FileProblem::Index("base name and delta flag disagree"));
        }
        let meta_len = meta_len(name_len, entries, stored).expect("bounded counts fit");
        if data_offset % page_size != 0 || data_offset < meta_len {
            return Err(FileProblem::Index(
                "data offset inside the metadata or not page-aligned",
            ));
        }
        let expected = stored
            .checked_mul(page_size)
            .and_then(|d| d.checked_add(data_offset))
            .ok_or(FileProblem::Index("data offset past any file length"))?;
        let truncated = |needed, what| FileProblem::Truncated {
            len: file_len,
            needed,
            what,
        };
        if file_len < meta_len {
            return Err(truncated(meta_len, "page index"));
        }
        if file_len < expected {
            return Err(truncated(expected, "page data"));
        }
        if file_len > expected {
            return Err(FileProblem::TrailingBytes {
                len: file_len,
                expected,
            });
        }
        Ok(Header {
            capacity: capacity as usize,
            entries: entries as usize,
            stored: stored as usize,
            data_offset,
            content_hash: ContentHash(u128_at(head, 56)),
            base: delta.then_some(ContentHash(base_hash)),
            stamp_ceiling,
            name_len: name_len as usize,
            meta_len,
        })
    }
}

/// A file's metadata: header, base name, page index and checksums.
#[derive(Clone, Debug)]
pub(crate) struct Meta {
    pub(crate) header: Header,
    pub(crate) base_name: Vec<u8>,
    pub(crate) entries: Vec<Entry>,
    /// Per entry, the number of stored entries before it: a stored entry's slot.
    pub(crate) stored_before: Vec<usize>,
    /// One per stored page, in index order.
    pub(crate) checksums: Vec<u64>,
}

impl Meta {
    /// Checks and parses the metadata bytes (the file's first `header.meta_len` bytes).
    pub(crate) fn decode(header: Header, meta: &[u8], page: usize) -> Result<Meta, FileProblem> {
        debug_assert_eq!(meta.len() as u64, header.meta_len);
        let (body, sum) = meta.split_at(meta.len() - 8);
        if xxh3_64(body) != u64_at(sum, 0) {
            return Err(FileProblem::MetadataChecksum);
        }
        let pages = header.capacity / page;
        let name_end = HEADER_BYTES + header.name_len;
        let base_name = body[HEADER_BYTES..name_end].to_vec();
        let index_end = name_end + 8 * header.entries;
        let mut entries = Vec::with_capacity(header.entries);
        let mut stored_before = Vec::with_capacity(header.entries);
        let mut stored = 0;
        for raw in body[name_end..index_end].chunks_exact(8) {
            let raw = u64_at(raw, 0);
            let entry = Entry {
                page: (raw & !ZERO_ENTRY) as usize,
                stored: raw & ZERO_ENTRY == 0,
            };
            if entry.page >= pages || entries.last().is_some_and(|e: &Entry| e.page >= entry.page) {
                return Err(FileProblem::Index(
                    "page numbers out of range or not increasing",
                ));
            }
            if !entry.stored && header.base.is_none() {
                return Err(FileProblem::Index("a zero-page entry outside a delta"));
            }
            stored_before.push(stored);
            stored += usize::from(entry.stored);
            entries.push(entry);
        }
        if stored != header.stored {
            return Err(FileProblem::Index(
                "stored page count disagrees with the index",
            ));
        }
        let checksums = body[index_end..]
            .chunks_exact(8)
            .map(|c| u64_at(c, 0))
            .collect();
        Ok(Meta {
            header,
            base_name,
            entries,
            stored_before,
            checksums,
        })
    }

    /// The metadata bytes of a file with these contents (padding not included).
    pub(crate) fn encode(
        page: usize,
        capacity: usize,
        data_offset: u64,
        content_hash: ContentHash,
        base: Option<(ContentHash, &[u8])>,
        entries: &[Entry],
        checksums: &[u64],
    ) -> Vec<u8> {
        let name: &[u8] = base.map_or(&[], |(_, n)| n);
        let len = meta_len(
            name.len() as u64,
            entries.len() as u64,
            checksums.len() as u64,
        )
        .expect("counts fit") as usize;
        let mut b = Vec::with_capacity(len);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&(if base.is_some() { FLAG_DELTA } else { 0 }).to_le_bytes());
        for v in [
            page as u64,
            capacity as u64,
            entries.len() as u64,
            checksums.len() as u64,
            data_offset,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&content_hash.0.to_le_bytes());
        b.extend_from_slice(&base.map_or(0, |(h, _)| h.0).to_le_bytes());
        b.extend_from_slice(&(name.len() as u64).to_le_bytes());
        b.extend_from_slice(&crate::alloc::stamp_ceiling().to_le_bytes());
        b.resize(HEADER_BYTES, 0);
        b.extend_from_slice(name);
        for e in entries {
            let flag = if e.stored { 0 } else { ZERO_ENTRY };
            b.extend_from_slice(&(e.page as u64 | flag).to_le_bytes());
        }
        for c in checksums {
            b.extend_from_slice(&c.to_le_bytes());
        }
        let sum = xxh3_64(&b);
        b.extend_from_slice(&sum.to_le_bytes());
        debug_assert_eq!(b.len(), len);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode() {
        let page = 4096;
        let entries = [
            Entry {
                page: 1,
                stored: true,
            },
            Entry {
                page: 5,
                stored: false,
            },
            Entry {
                page: 9,
                stored: true,
            },
        ];
        let name = b"../base.snap";
        let off = data_offset(page, name.len(), 3, 2);
        let meta = Meta::encode(
            page,
            64 * page,
            off,
            ContentHash(7),
            Some((ContentHash(3), name)),
            &entries,
            &[11, 12],
        );
        let header = Header::decode(&meta[..HEADER_BYTES], off + 2 * page as u64, page).unwrap();
        let parsed = Meta::decode(header, &meta, page).unwrap();
        assert_eq!(parsed.entries, entries);
        assert_eq!(parsed.checksums, [11, 12]);
        assert_eq!(parsed.base_name, name);
        assert_eq!(parsed.header.base, Some(ContentHash(3)));
        assert!(matches!(
            Header::decode(&meta[..HEADER_BYTES], off + 2 * page as u64 - 1, page),
            Err(FileProblem::Truncated { .. })
        ));
    }

    #[test]
    fn hash_terms_cancel() {
        let mut a = HashSum::empty(4096, 1 << 20);
        let empty = a;
        a.add(3, 99);
        assert_ne!(a, empty);
        a.remove(3, 99);
        assert_eq!(a, empty);
        assert!(is_zero(&[0; 100]) && !is_zero(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
    }
}
