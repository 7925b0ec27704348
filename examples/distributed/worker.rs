//! A worker: takes an item, rebuilds its state from its blob (a delta) and the base (fetched
//! once, then cached by content hash), explores the subtree below it level by level with
//! snapshot and restore, asks Redis which of the states it reached are known already, and
//! commits what it found in one script. The states at the subtree's last level go back to the
//! queue, each as a delta against the same base stored under its content hash. A damaged item
//! or blob fails the item with an error that names it.

use crate::checker::{self, Step};
use crate::queue::{self, Item, NewItem, Res, Results, Run, Scripts, Taken, MAX_ATTEMPTS};
use cowarena::persist::{inspect, BaseCache};
use cowarena::{Arena, ArenaVec, ContentHash, Snapshot};
use redis::Connection;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Bases a worker keeps, by count and bytes (a run has one base; a model whose states drift
/// far from it would rebase and have more).
const CACHE_BASES: usize = 16;
const CACHE_BYTES: usize = 1 << 30;

/// How long a worker waits before asking again when nothing is queued but items are in flight:
/// from the first to the last, doubling, so that a worker neither sleeps through new work nor
/// keeps Redis busy with asking.
const IDLE_FIRST: Duration = Duration::from_micros(200);
const IDLE_LAST: Duration = Duration::from_millis(5);

/// Why an item was not explored.
enum Failure {
    /// Something in the item: the item itself, its state's blob or the base (the message says
    /// which).
    Item(String),
    /// The worker's lease expired and the item went back to the queue.
    Lost,
    /// Redis failed, or this machine cannot hold the run's states: the worker cannot go on.
    Fatal(Box<dyn std::error::Error>),
}

impl From<cowarena::Error> for Failure {
    fn from(e: cowarena::Error) -> Self {
        Failure::Item(e.to_string())
    }
}

impl From<Box<dyn std::error::Error>> for Failure {
    fn from(e: Box<dyn std::error::Error>) -> Self {
        Failure::Fatal(e)
    }
}

impl From<redis::RedisError> for Failure {
    fn from(e: redis::RedisError) -> Self {
        Failure::Fatal(e.into())
    }
}

/// What a worker did.
#[derive(Clone, Copy, Debug, Default)]
pub struct WorkerStats {
    /// Items explored and committed.
    pub items: u64,
    /// States expanded (their successors computed).
    pub expanded: u64,
    /// Items that failed (damaged), and items whose lease expired before they were committed.
    pub failed: u64,
    pub lost: u64,
}

/// The arena a worker explores in, made from a base: the states of items against that base
/// share its page store, so restoring one costs the pages that differ.
struct Held {
    hash: ContentHash,
    base: Snapshot,
    arena: Arena,
    words: ArenaVec<u32>,
}

/// A state of the subtree being explored.
struct Node {
    fp: u64,
    snapshot: Snapshot,
    trace: Vec<u8>,
}

pub struct Worker {
    con: Connection,
    scripts: Scripts,
    id: String,
    run: Run,
    cache: BaseCache,
    held: Option<Held>,
    pub stats: WorkerStats,
}

impl Worker {
    pub fn new(url: &str, id: &str) -> Res<Worker> {
        let mut con = queue::connect(url)?;
        let run = Run::load(&mut con)?;
        let scripts = Scripts::load(&mut con)?;
        Ok(Worker {
            con,
            scripts,
            id: id.to_string(),
            run,
            cache: BaseCache::new(CACHE_BASES, CACHE_BYTES),
            held: None,
            stats: WorkerStats::default(),
        })
    }

    /// Takes and explores items until the run is over (or after `max_items` items, explored or
    /// failed).
    pub fn work(&mut self, max_items: Option<u64>) -> Res<()> {
        let mut idle = IDLE_FIRST;
        while max_items.is_none_or(|m| self.stats.items + self.stats.failed < m) {
            let lease = self.run.lease_ms;
            match self.scripts.take(&mut self.con, Some(&self.id), lease)? {
                Taken::Item(raw) => {
                    self.process(&raw)?;
                    idle = IDLE_FIRST;
                }
                Taken::Wait => {
                    std::thread::sleep(idle);
                    idle = (idle * 2).min(IDLE_LAST);
                }
                Taken::Done => break,
            }
        }
        Ok(())
    }

    fn process(&mut self, raw: &[u8]) -> Res<()> {
        match self.explore(raw) {
            Ok(results) => match self
                .scripts
                .commit(&mut self.con, &self.id, raw, &results)?
            {
                Some(_) => self.stats.items += 1,
                None => self.stats.lost += 1,
            },
            Err(Failure::Item(e)) => {
                self.stats.failed += 1;
                let error = format!("{}: {e}", queue::item_name(raw));
                match self.scripts.fail(&mut self.con, &self.id, raw, &error)? {
                    Some(n) if n >= MAX_ATTEMPTS => {
                        eprintln!("worker {}: {error}; set aside after {n} attempts", self.id)
                    }
                    Some(n) => eprintln!(
                        "worker {}: {error}; attempt {n} of {MAX_ATTEMPTS}, queued again",
                        self.id
                    ),
                    None => self.stats.lost += 1,
                }
            }
            Err(Failure::Lost) => self.stats.lost += 1,
            Err(Failure::Fatal(e)) => return Err(e),
        }
        Ok(())
    }

    /// Makes the base `hash` the one the worker explores from: from the cache, or fetched from
    /// Redis and checked, with an arena made from it.
    fn hold_base(&mut self, hash: ContentHash) -> Result<(), Failure> {
        if self.held.as_ref().is_some_and(|h| h.hash == hash) {
            return Ok(());
        }
        let base = match self.cache.get(hash) {
            Some(base) => base,
            None => {
                let blob: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(queue::blob_key(hash))
                    .query(&mut self.con)?;
                let blob = blob.ok_or_else(|| Failure::Item(format!("base {hash}: not found")))?;
                let base = Snapshot::from_bytes(&blob).map_err(|e| match e {
                    // This machine cannot hold the run's states at all: the worker stops, so
                    // that it does not set aside items that other workers can explore.
                    cowarena::Error::Bytes {
                        problem: cowarena::FileProblem::PageSize { .. },
                    } => Failure::Fatal(format!("base {hash}: {e}").into()),
                    e => Failure::Item(format!("base {hash}: {e}")),
                })?;
                if base.hash()? != hash {
                    return Err(Failure::Item(format!("base {hash}: holds another state")));
                }
                self.cache.insert(base.clone())?;
                base
            }
        };
        let root = base
            .root::<ArenaVec<u32>>()
            .ok_or_else(|| Failure::Item(format!("base {hash}: no root")))?;
        let words = *base.try_get(root)?;
        self.held = Some(Held {
            hash,
            arena: base.to_arena()?,
            base,
            words,
        });
        Ok(())
    }

    /// The item's state, from its blob: the base itself, or a delta against it.
    fn rebuild(&mut self, item: &Item, blob: &[u8]) -> Result<Snapshot, Failure> {
        let blob_error = |e: cowarena::Error| Failure::Item(format!("blob {}: {e}", item.state));
        let info = inspect(blob).map_err(blob_error)?;
        if info.content_hash != item.state {
            return Err(Failure::Item(format!(
                "blob {}: holds state {}",
                item.state, info.content_hash
            )));
        }
        self.hold_base(info.base.unwrap_or(info.content_hash))?;
        let held = self.held.as_ref().expect("held");
        if info.base.is_none() {
            return Ok(held.base.clone());
        }
        Snapshot::from_delta(blob, &held.base).map_err(blob_error)
    }

    fn explore(&mut self, raw: &[u8]) -> Result<Results, Failure> {
        let item = Item::decode(raw).map_err(Failure::Item)?;
        let Run {
            config, subtree, ..
        } = self.run;
        let d0 = item.depth as usize;
        let begun = queue::begin(&mut self.con, &self.id, self.run.lease_ms, &item)?
            .ok_or(Failure::Lost)?;
        let blob = begun
            .blob
            .ok_or_else(|| Failure::Item(format!("blob {}: not found", item.state)))?;
        let mut results = Results {
            release: inspect(&blob).ok().and_then(|i| i.base).map(|_| item.state),
            ..Results::default()
        };
        // Reached at a smaller depth since it was queued: whoever did explores it from there.
        if begun.known.is_some_and(|d| (d as usize) < d0) {
            return Ok(results);
        }
        let state = self.rebuild(&item, &blob)?;
        let held = self.held.as_mut().expect("held");
        held.arena.restore(&state)?;
        let words = held.words;
        if checker::fingerprint(words.as_slice(&held.arena)) != item.fp {
            return Err(Failure::Item(
                "the state is not the one the item names".into(),
            ));
        }
        let last = (d0 + subtree).min(config.depth);
        results.reached.push((item.fp, item.depth, None));
        let mut seen = HashSet::from([item.fp]);
        let mut level = vec![Node {
            fp: item.fp,
            snapshot: state,
            trace: item.trace,
        }];
        let lease = Duration::from_millis(self.run.lease_ms);
        let mut renewed = Instant::now();
        // Breadth first, so that a state is first met at its smallest depth in the subtree.
        for d in d0..last {
            let held = self.held.as_mut().expect("held");
            let mut next = Vec::new();
            for node in &level {
                // A wide level may take longer than the lease.
                if renewed.elapsed() > lease / 4 {
                    queue::check(&mut self.con, &self.id, self.run.lease_ms, &[])?
                        .ok_or(Failure::Lost)?;
                    renewed = Instant::now();
                }
                held.arena.restore(&node.snapshot)?;
                let (mut transitions, mut violations) = (0, 0);
                for i in 0..config.procs {
                    let step = checker::step(&mut words.view_mut(&mut held.arena), &config, i);
                    if step == Step::Blocked {
                        continue;
                    }
                    transitions += 1;
                    let mut trace = node.trace.clone();
                    trace.push(i as u8);
                    if step == Step::Violation {
                        violations += 1;
                        results.trace.get_or_insert_with(|| trace.clone());
                    }
                    let fp = checker::fingerprint(words.as_slice(&held.arena));
                    if seen.insert(fp) {
                        let snapshot = held.arena.snapshot()?;
                        next.push(Node {
                            fp,
                            snapshot,
                            trace,
                        });
                    }
                    held.arena.restore(&node.snapshot)?;
                }
                results.expanded.push((node.fp, transitions, violations));
                self.stats.expanded += 1;
            }
            if next.is_empty() {
                break;
            }
            // States some committed item reached at a depth no larger are that item's to explore.
            let known = self.check(&next.iter().map(|n| n.fp).collect::<Vec<_>>())?;
            renewed = Instant::now();
            level = next
                .into_iter()
                .zip(known)
                .filter(|(_, k)| k.is_none_or(|k| k as usize > d + 1))
                .map(|(n, _)| n)
                .collect();
            let frontier = d + 1 == last && last < config.depth;
            let held = self.held.as_ref().expect("held");
            for node in &level {
                let new = if frontier {
                    let mut delta = Vec::new();
                    let stats = node.snapshot.delta_to(&held.base, &mut delta)?;
                    let item = Item {
                        state: stats.content_hash,
                        fp: node.fp,
                        depth: d as u32 + 1,
                        trace: node.trace.clone(),
                    }
                    .encode();
                    let new = NewItem {
                        bytes: item.len() + delta.len(),
                        item,
                        blob: stats.content_hash,
                        pages: stats.pages_written + stats.pages_zeroed,
                        // For the report only: what sending the state whole would cost.
                        whole: node.snapshot.full_to(std::io::sink())?.file_bytes as usize,
                    };
                    results.blobs.push((stats.content_hash, delta));
                    Some(new)
                } else {
                    None
                };
                results.reached.push((node.fp, d as u32 + 1, new));
            }
        }
        Ok(results)
    }

    /// Renews the lease and reads the smallest depths the fingerprints were reached at.
    fn check(&mut self, fps: &[u64]) -> Result<Vec<Option<u32>>, Failure> {
        queue::check(&mut self.con, &self.id, self.run.lease_ms, fps)?.ok_or(Failure::Lost)
    }
}
