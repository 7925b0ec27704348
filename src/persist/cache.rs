//! The receiving side of deltas: a bounded cache of base snapshots by content hash.

use super::memory::inspect;
use super::{ContentHash, MAX_CHAIN};
use crate::error::{Error, FileProblem, Result};
use crate::snapshot::Snapshot;
use crate::sys;
use std::collections::{BTreeMap, HashMap};

/// Base snapshots by [content hash](Snapshot::hash), for a process that receives deltas: it
/// keeps the bases it holds, rebuilds each delta against one of them, and fetches only the
/// bases it lacks. Bounded by a number of bases and by bytes (a base's non-zero pages; pages
/// that bases share are counted for each); beyond either bound the least recently used bases
/// are dropped. The base inserted last is kept even when it alone is over the bounds, so that
/// it can be used at once.
///
/// ```
/// use cowarena::{persist::BaseCache, Arena, ContentHash, Snapshot};
/// use std::collections::HashMap;
///
/// // The sending side: a base, stored whole under its hash, and a delta against it.
/// let mut a = Arena::with_capacity(1 << 20)?;
/// a.write(0, b"base")?;
/// let base = a.snapshot()?;
/// let mut blobs: HashMap<ContentHash, Vec<u8>> = HashMap::new();
/// blobs.insert(base.hash()?, base.full_bytes()?);
/// a.write(8192, b"work")?;
/// let delta = a.snapshot()?.delta_bytes(&base)?;
///
/// // The receiving side fetches the base once, then rebuilds deltas against the cached copy.
/// let mut cache = BaseCache::new(16, 1 << 30);
/// let mut fetches = 0;
/// for _ in 0..3 {
///     let s = cache.rebuild(&delta, |hash| -> Result<Vec<u8>, Box<dyn std::error::Error>> {
///         fetches += 1;
///         Ok(blobs.get(&hash).ok_or(format!("no blob {hash}"))?.clone())
///     })?;
///     assert_eq!(&s.as_bytes()[8192..8196], b"work");
/// }
/// assert_eq!(fetches, 1);
/// assert!(cache.get(base.hash()?).is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct BaseCache {
    max_bases: usize,
    max_bytes: usize,
    entries: HashMap<ContentHash, Entry>,
    /// Last use -> base, oldest first. Invariant: one entry per base, at its `Entry::used`.
    order: BTreeMap<u64, ContentHash>,
    clock: u64,
    /// Invariant: the sum of the entries' `bytes`.
    bytes: usize,
}

#[derive(Debug)]
struct Entry {
    snapshot: Snapshot,
    used: u64,
    bytes: usize,
}

impl BaseCache {
    /// An empty cache that keeps at most `max_bases` bases and `max_bytes` bytes of them.
    pub fn new(max_bases: usize, max_bytes: usize) -> Self {
        BaseCache {
            max_bases,
            max_bytes,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
            bytes: 0,
        }
    }

    fn touch(&mut self, hash: ContentHash) {
        self.clock += 1;
        let entry = self.entries.get_mut(&hash).expect("a cached base");
        self.order.remove(&entry.used);
        entry.used = self.clock;
        self.order.insert(self.clock, hash);
    }

    /// The base with content hash `hash`, if the cache holds it (it becomes the most recently
    /// used).
    pub fn get(&mut self, hash: ContentHash) -> Option<Snapshot> {
        let snapshot = self.entries.get(&hash)?.snapshot.clone();
        self.touch(hash);
        Some(snapshot)
    }

    /// Adds `snapshot` (or marks it used, if the cache holds it), dropping the least recently
    /// used bases beyond the bounds. Returns its content hash.
    ///
    /// # Errors
    /// Those of [`Snapshot::hash`], when the hash was not known and a page cannot be read.
    pub fn insert(&mut self, snapshot: Snapshot) -> Result<ContentHash> {
        let hash = snapshot.hash()?;
        if self.entries.contains_key(&hash) {
            self.touch(hash);
        } else {
            let bytes = snapshot.table().data_pages() * sys::page_size();
            self.bytes += bytes;
            self.clock += 1;
            let entry = Entry {
                snapshot,
                used: self.clock,
                bytes,
            };
            self.entries.insert(hash, entry);
            self.order.insert(self.clock, hash);
        }
        while self.entries.len() > 1
            && (self.entries.len() > self.max_bases || self.bytes > self.max_bytes)
        {
            let (_, oldest) = self.order.pop_first().expect("entries are ordered");
            let entry = self.entries.remove(&oldest).expect("ordered entries exist");
            self.bytes -= entry.bytes;
        }
        Ok(hash)
    }

    /// Bases held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no base is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of the bases held (their non-zero pages).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Rebuilds the snapshot that `bytes` hold (whole, or a delta). A delta's base comes from the
    /// cache; a base it lacks comes from `fetch(hash)` (the base's bytes, whole or a delta
    /// against a further base, looked up the same way), is checked to have that hash, and is
    /// cached. Every byte is checked as [`Snapshot::from_bytes`] and [`Snapshot::from_delta`]
    /// check them.
    ///
    /// # Errors
    /// `fetch`'s errors; the errors of [`Snapshot::from_bytes`] and [`Snapshot::from_delta`] for
    /// `bytes` or a fetched base; [`Error::Bytes`] with [`FileProblem::BaseMismatch`] when
    /// `fetch` returns another snapshot than the one asked for, or
    /// [`FileProblem::ChainTooLong`] past [`MAX_CHAIN`] bases to fetch.
    pub fn rebuild<E: From<Error>>(
        &mut self,
        bytes: &[u8],
        mut fetch: impl FnMut(ContentHash) -> Result<Vec<u8>, E>,
    ) -> Result<Snapshot, E> {
        // Bases to rebuild, the delta's own base first, down to one in the cache or a whole one.
        let mut fetched: Vec<Vec<u8>> = Vec::new();
        let mut below = None;
        let mut need = inspect(bytes)?.base;
        while let Some(hash) = need {
            if let Some(base) = self.get(hash) {
                below = Some(base);
                break;
            }
            if fetched.len() == MAX_CHAIN {
                let problem = FileProblem::ChainTooLong(MAX_CHAIN);
                return Err(Error::Bytes { problem }.into());
            }
            let blob = fetch(hash)?;
            let info = inspect(&blob)?;
            if info.content_hash != hash {
                let problem = FileProblem::BaseMismatch {
                    expected: hash,
                    found: info.content_hash,
                };
                return Err(Error::Bytes { problem }.into());
            }
            need = info.base;
            fetched.push(blob);
        }
        for blob in fetched.iter().rev() {
            let base = match &below {
                Some(b) => Snapshot::from_delta(blob, b)?,
                None => Snapshot::from_bytes(blob)?,
            };
            self.insert(base.clone())?;
            below = Some(base);
        }
        Ok(match &below {
            Some(b) => Snapshot::from_delta(bytes, b)?,
            None => Snapshot::from_bytes(bytes)?,
        })
    }
}
