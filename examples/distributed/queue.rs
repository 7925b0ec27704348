//! The run's state in Redis and the scripts that change it, each atomically.
//!
//! Keys (all under `cowarena:`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `config` | hash | the model and the run's settings, written by the seeder |
//! | `blob:<content hash>` | string | a state: the base whole ([`Snapshot::full_bytes`]), the others as deltas against it |
//! | `refs` | hash | content hash -> items that need the blob (the base's is not counted) |
//! | `queue` | list | work items: a state's content hash, fingerprint, depth and trace |
//! | `processing:<worker>` | list | the item a worker holds (at most one) |
//! | `lease:<worker>` | string | present while the worker's lease runs (a key with a TTL) |
//! | `holders` | set | workers that hold an item |
//! | `visited` | sorted set | fingerprint -> the smallest depth it was reached at |
//! | `expanded` | set | fingerprints whose transitions were counted |
//! | `attempts` | hash | item (SHA-1 of its bytes) -> failed or expired attempts |
//! | `aside`, `aside:why` | lists | items set aside, and why (same order) |
//! | `stats` | hash | counts, bytes shipped, the first violation's trace, recovery times |
//!
//! The queue is a reliable one: taking an item moves it to the worker's processing list and
//! gives the worker a lease in the same script; the worker renews the lease as it goes (the
//! lease is a key that Redis expires, so every machine reads one clock), and whoever takes work
//! next (or waits for the end) moves the items of a holder whose lease expired back to the
//! queue. A worker's results (states reached, new items, counts) are applied by one script that
//! first removes the item from its processing list, so they are applied once or not at all: a
//! worker killed in the middle of an item leaves nothing but the item, which runs again. The run
//! is over when the queue is empty and no worker holds an item.
//!
//! States stay out of the scripts: a script that handles a 30 KiB string costs Redis about
//! 130 us against 6 us for a short one (measured here with `INFO commandstats`), so a worker
//! writes the deltas of its new states with plain `SET`s before its commit, and items carry only
//! their state's hash. A blob is counted in `refs` before it is written and released when the
//! item that needs it is done (or, for a state that turned out to be known, at the commit), and
//! deleted when no item needs it: a state met by several workers at once is stored once, and
//! never deleted while an item needs it. Blobs of a worker killed before its commit stay until
//! the next run is seeded. The call made at every level of a subtree is no script either: a
//! pipeline of `PEXPIRE` (the renewal, which also says whether the lease is still there) and
//! `ZMSCORE`.
//!
//! The visited set keeps each fingerprint's smallest depth (`ZADD LT`), not only the fingerprint:
//! the search is bounded by depth, and a state reached again at a smaller depth is explored again
//! (as the single-process search does), or the states within the bound behind it would be lost.

use crate::checker::{self, Config};
use cowarena::{Arena, ArenaVec, ContentHash, Snapshot};
use redis::{Connection, Script};
use std::collections::HashMap;
use xxhash_rust::xxh3::xxh3_64;

pub const PREFIX: &str = "cowarena:";

/// Attempts at an item (failures and expired leases together) before it is set aside.
pub const MAX_ATTEMPTS: u32 = 3;

pub fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// The processing list of `worker`.
pub fn processing(worker: &str) -> String {
    key(&format!("processing:{worker}"))
}

pub fn blob_key(hash: ContentHash) -> String {
    key(&format!("blob:{hash}"))
}

/// The visited set's member for a fingerprint.
pub fn member(fp: u64) -> String {
    format!("{fp:016x}")
}

pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

pub fn connect(url: &str) -> Res<Connection> {
    Ok(redis::Client::open(url)?.get_connection()?)
}

/// What a run explores and how: the model, and the work per item.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub config: Config,
    /// Levels a worker explores below an item's state before it hands the states it reached
    /// on as new items.
    pub subtree: usize,
    /// How long a worker holds an item without renewing its lease.
    pub lease_ms: u64,
}

impl Run {
    fn store(&self, con: &mut Connection) -> Res<()> {
        let c = &self.config;
        redis::cmd("HSET")
            .arg(key("config"))
            .arg(&[
                ("procs", c.procs as u64),
                ("buffer_words", c.buffer_words as u64),
                ("stripe", c.stripe as u64),
                ("depth", c.depth as u64),
                ("broken", u64::from(c.broken)),
                ("subtree", self.subtree as u64),
                ("lease_ms", self.lease_ms),
            ])
            .exec(con)?;
        Ok(())
    }

    /// The run the seeder stored.
    pub fn load(con: &mut Connection) -> Res<Run> {
        let h: HashMap<String, u64> = redis::cmd("HGETALL").arg(key("config")).query(con)?;
        let get = |k: &str| {
            h.get(k)
                .map(|&v| v as usize)
                .ok_or_else(|| format!("no run seeded here ({}config has no {k})", PREFIX))
        };
        Ok(Run {
            config: Config {
                procs: get("procs")?,
                buffer_words: get("buffer_words")?,
                stripe: get("stripe")?,
                depth: get("depth")?,
                broken: get("broken")? != 0,
            },
            subtree: get("subtree")?,
            lease_ms: get("lease_ms")? as u64,
        })
    }
}

/// A work item: the content hash of a state (its blob is a delta against the base) and where
/// the search met it. Checksummed: a damaged item is refused, not misread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub state: ContentHash,
    pub fp: u64,
    pub depth: u32,
    /// The processes that stepped from the initial state.
    pub trace: Vec<u8>,
}

impl Item {
    const HEADER: usize = 40;

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::HEADER + self.trace.len());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&self.state.to_bytes());
        b.extend_from_slice(&self.fp.to_le_bytes());
        b.extend_from_slice(&self.depth.to_le_bytes());
        b.extend_from_slice(&(self.trace.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.trace);
        let sum = xxh3_64(&b[8..]);
        b[..8].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Reads an item, or says what is wrong with it.
    pub fn decode(bytes: &[u8]) -> Result<Item, String> {
        let damaged = || format!("a damaged item of {} bytes", bytes.len());
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        if bytes.len() < Self::HEADER
            || bytes.len() != Self::HEADER + u32_at(36) as usize
            || xxh3_64(&bytes[8..]).to_le_bytes() != bytes[..8]
        {
            return Err(damaged());
        }
        Ok(Item {
            state: ContentHash::from_bytes(bytes[8..24].try_into().unwrap()),
            fp: u64::from_le_bytes(bytes[24..32].try_into().unwrap()),
            depth: u32_at(32),
            trace: bytes[Self::HEADER..].to_vec(),
        })
    }

    /// How errors and reports name the item.
    pub fn name(&self) -> String {
        format!(
            "item {:016x}@{} (state {})",
            self.fp, self.depth, self.state
        )
    }
}

/// Names an item's bytes, readable or not.
pub fn item_name(bytes: &[u8]) -> String {
    Item::decode(bytes).map_or_else(|e| e, |i| i.name())
}

/// The Redis server's clock in milliseconds, for the recovery times in the stats.
const NOW: &str = "
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// Moves the items of holders whose lease expired back to the queue (or aside, after too many
/// attempts); then, for a worker, takes an item and a lease. Returns `{1, item}`, `{0, ''}` when
/// there is no item but work is in flight, `{2, ''}` when the run is over.
/// KEYS: queue, holders, attempts, aside, aside:why, stats.
/// ARGV: processing list prefix, lease key prefix, worker ('' to only reap), lease ms, max
/// attempts.
const TAKE: &str = "
for _, w in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', ARGV[2] .. w) == 0 then
    local list = ARGV[1] .. w
    local item = redis.call('RPOP', list)
    while item do
      local id = redis.sha1hex(item)
      if redis.call('HINCRBY', KEYS[3], id, 1) >= tonumber(ARGV[5]) then
        redis.call('LPUSH', KEYS[4], item)
        redis.call('LPUSH', KEYS[5], 'the lease of its worker ' .. w .. ' expired')
      else
        redis.call('RPUSH', KEYS[1], item)
      end
      redis.call('HSET', KEYS[6], 'requeued_at', now)
      item = redis.call('RPOP', list)
    end
    redis.call('SREM', KEYS[2], w)
  end
end
if ARGV[3] ~= '' then
  local item = redis.call('LMOVE', KEYS[1], ARGV[1] .. ARGV[3], 'RIGHT', 'LEFT')
  if item then
    redis.call('SADD', KEYS[2], ARGV[3])
    redis.call('SET', ARGV[2] .. ARGV[3], 1, 'PX', ARGV[4])
    return {1, item}
  end
end
if redis.call('LLEN', KEYS[1]) == 0 and redis.call('SCARD', KEYS[2]) == 0 then
  return {2, ''}
end
return {0, ''}
";

/// Applies an item's results if the worker still holds the item: records each state reached
/// (pushing the new item of one reached at a smaller depth than before, and releasing the blob
/// of one that was not), counts the transitions of states expanded for the first time, and drops
/// the item, releasing its blob. Returns the items pushed, or -1 when the item was no longer the
/// worker's (its lease expired): then nothing is applied.
/// KEYS: queue, holders, attempts, visited, expanded, stats, the worker's lease, refs.
/// ARGV: processing list, worker, item, its blob to release or '', blob key prefix, n, n x
/// (fingerprint, depth, new item or '', its blob, bytes shipped, pages shipped, bytes whole), m,
/// m x (fingerprint, transitions, violations), violation trace or ''.
const COMMIT: &str = "
if redis.call('LREM', ARGV[1], 1, ARGV[3]) == 0 then
  return -1
end
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[7])
local function release(h)
  if redis.call('HINCRBY', KEYS[8], h, -1) <= 0 then
    redis.call('HDEL', KEYS[8], h)
    redis.call('DEL', ARGV[5] .. h)
  end
end
local i = 7
local pushed, bytes, pages, whole, transitions, violations = 0, 0, 0, 0, 0, 0
for _ = 1, tonumber(ARGV[6]) do
  local improved = redis.call('ZADD', KEYS[4], 'LT', 'CH', ARGV[i + 1], ARGV[i])
  if ARGV[i + 2] ~= '' then
    if improved == 1 then
      redis.call('LPUSH', KEYS[1], ARGV[i + 2])
      pushed = pushed + 1
      bytes = bytes + tonumber(ARGV[i + 4])
      pages = pages + tonumber(ARGV[i + 5])
      whole = whole + tonumber(ARGV[i + 6])
    else
      release(ARGV[i + 3])
    end
  end
  i = i + 7
end
local m = tonumber(ARGV[i])
i = i + 1
for _ = 1, m do
  if redis.call('SADD', KEYS[5], ARGV[i]) == 1 then
    transitions = transitions + tonumber(ARGV[i + 1])
    violations = violations + tonumber(ARGV[i + 2])
  end
  i = i + 3
end
if ARGV[i] ~= '' then
  redis.call('HSETNX', KEYS[6], 'trace', ARGV[i])
end
if ARGV[4] ~= '' then
  release(ARGV[4])
end
for k, v in pairs({transitions = transitions, violations = violations, items = 1,
                   pushed = pushed, shipped_bytes = bytes, shipped_pages = pages,
                   whole_bytes = whole}) do
  redis.call('HINCRBY', KEYS[6], k, v)
end
if redis.call('HDEL', KEYS[3], redis.sha1hex(ARGV[3])) == 1 then
  redis.call('HINCRBY', KEYS[6], 'recovered', 1)
  redis.call('HSET', KEYS[6], 'recovered_at', now)
end
return pushed
";

/// Gives up an item that failed: back to the queue for another attempt, or aside with the
/// error after [`MAX_ATTEMPTS`]. Returns the attempts so far, or -1 if the worker no longer held
/// the item.
/// KEYS: queue, holders, attempts, aside, aside:why, the worker's lease.
/// ARGV: processing list, worker, item, error, max attempts.
const FAIL: &str = "
if redis.call('LREM', ARGV[1], 1, ARGV[3]) == 0 then
  return -1
end
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[6])
local id = redis.sha1hex(ARGV[3])
local n = redis.call('HINCRBY', KEYS[3], id, 1)
if n >= tonumber(ARGV[5]) then
  redis.call('LPUSH', KEYS[4], ARGV[3])
  redis.call('LPUSH', KEYS[5], ARGV[4])
else
  redis.call('RPUSH', KEYS[1], ARGV[3])
end
return n
";

/// The scripts, run by SHA.
pub struct Scripts {
    take: Script,
    commit: Script,
    fail: Script,
}

impl Scripts {
    /// The scripts, with the commit loaded into Redis: it goes in a pipeline after the new
    /// blobs, where it cannot be loaded on demand (the others are).
    pub fn load(con: &mut Connection) -> Res<Scripts> {
        let scripts = Scripts {
            take: Script::new(&format!("{NOW}{TAKE}")),
            commit: Script::new(&format!("{NOW}{COMMIT}")),
            fail: Script::new(FAIL),
        };
        scripts.commit.load(con)?;
        Ok(scripts)
    }
}

pub fn lease_key(worker: &str) -> String {
    key(&format!("lease:{worker}"))
}

/// What [`Scripts::take`] found.
pub enum Taken {
    Item(Vec<u8>),
    /// Nothing queued, but items are in flight: new work may come.
    Wait,
    Done,
}

/// A state handed on as a new item: the item, and its blob (written before the commit).
pub struct NewItem {
    pub item: Vec<u8>,
    pub blob: ContentHash,
    /// Bytes of the item and its blob, the pages the blob's delta stores or zeroes, and the
    /// bytes of the state whole (its non-zero pages, in the same format).
    pub bytes: usize,
    pub pages: usize,
    pub whole: usize,
}

/// An item's results, for [`Scripts::commit`].
#[derive(Default)]
pub struct Results {
    /// The blobs of the new items: content hash, delta.
    pub blobs: Vec<(ContentHash, Vec<u8>)>,
    /// Each state reached: fingerprint, depth, and the item to push if it is to be explored
    /// from there.
    pub reached: Vec<(u64, u32, Option<NewItem>)>,
    /// Each state expanded: fingerprint, transitions, violations.
    pub expanded: Vec<(u64, u32, u32)>,
    /// A trace that ends in a violation.
    pub trace: Option<Vec<u8>>,
    /// The blob of the item's own state, if it is not the base.
    pub release: Option<ContentHash>,
}

impl Scripts {
    /// Takes an item for `worker` (reaping expired leases first); with no worker, only reaps
    /// and says whether the run is over.
    pub fn take(&self, con: &mut Connection, worker: Option<&str>, lease_ms: u64) -> Res<Taken> {
        let (tag, item): (u8, Vec<u8>) = self
            .take
            .key(key("queue"))
            .key(key("holders"))
            .key(key("attempts"))
            .key(key("aside"))
            .key(key("aside:why"))
            .key(key("stats"))
            .arg(key("processing:"))
            .arg(key("lease:"))
            .arg(worker.unwrap_or(""))
            .arg(lease_ms)
            .arg(MAX_ATTEMPTS)
            .invoke(con)?;
        Ok(match tag {
            1 => Taken::Item(item),
            2 => Taken::Done,
            _ => Taken::Wait,
        })
    }

    /// Writes the blobs of the new items, each counted as needed before it is written (see the
    /// module docs), and applies `results` for `worker`'s `item`, in one round trip. Returns the
    /// items pushed, or `None` if the worker no longer held the item.
    pub fn commit(
        &self,
        con: &mut Connection,
        worker: &str,
        item: &[u8],
        results: &Results,
    ) -> Res<Option<u64>> {
        let mut pipe = redis::pipe();
        for (hash, bytes) in &results.blobs {
            pipe.cmd("HINCRBY")
                .arg(key("refs"))
                .arg(hash.to_string())
                .arg(1)
                .ignore();
            pipe.cmd("SET").arg(blob_key(*hash)).arg(bytes).ignore();
        }
        let mut call = redis::cmd("EVALSHA");
        call.arg(self.commit.get_hash()).arg(8).arg(key("queue"));
        for k in ["holders", "attempts", "visited", "expanded", "stats"] {
            call.arg(key(k));
        }
        call.arg(lease_key(worker)).arg(key("refs"));
        call.arg(processing(worker)).arg(worker).arg(item);
        call.arg(results.release.map_or(String::new(), |h| h.to_string()));
        call.arg(key("blob:")).arg(results.reached.len());
        for (fp, depth, new) in &results.reached {
            call.arg(member(*fp)).arg(depth);
            match new {
                Some(n) => call
                    .arg(n.item.as_slice())
                    .arg(n.blob.to_string())
                    .arg(n.bytes)
                    .arg(n.pages)
                    .arg(n.whole),
                None => call.arg("").arg("").arg(0).arg(0).arg(0),
            };
        }
        call.arg(results.expanded.len());
        for (fp, transitions, violations) in &results.expanded {
            call.arg(member(*fp)).arg(transitions).arg(violations);
        }
        call.arg(results.trace.as_deref().unwrap_or(&[]));
        pipe.add_command(call);
        let (pushed,): (i64,) = pipe.query(con)?;
        Ok(u64::try_from(pushed).ok())
    }

    /// Gives up `worker`'s `item` with `error`: the attempts so far, or `None` if the worker no
    /// longer held it.
    pub fn fail(
        &self,
        con: &mut Connection,
        worker: &str,
        item: &[u8],
        error: &str,
    ) -> Res<Option<u32>> {
        let n: i64 = self
            .fail
            .key(key("queue"))
            .key(key("holders"))
            .key(key("attempts"))
            .key(key("aside"))
            .key(key("aside:why"))
            .key(lease_key(worker))
            .arg(processing(worker))
            .arg(worker)
            .arg(item)
            .arg(error)
            .arg(MAX_ATTEMPTS)
            .invoke(con)?;
        Ok(u32::try_from(n).ok())
    }
}

/// Renews `worker`'s lease and reads the smallest depths the fingerprints were reached at, in
/// one round trip. `None` if the lease expired (the item goes back to the queue).
pub fn check(
    con: &mut Connection,
    worker: &str,
    lease_ms: u64,
    fps: &[u64],
) -> Res<Option<Vec<Option<u32>>>> {
    let mut pipe = redis::pipe();
    pipe.cmd("PEXPIRE").arg(lease_key(worker)).arg(lease_ms);
    if fps.is_empty() {
        let (held,): (bool,) = pipe.query(con)?;
        return Ok(held.then(Vec::new));
    }
    pipe.cmd("ZMSCORE").arg(key("visited"));
    for &fp in fps {
        pipe.arg(member(fp));
    }
    let (held, depths): (bool, Vec<Option<u32>>) = pipe.query(con)?;
    Ok(held.then_some(depths))
}

/// What a worker needs to start on an item.
pub struct Begun {
    /// The smallest depth the item's state was reached at.
    pub known: Option<u32>,
    /// The state's blob.
    pub blob: Option<Vec<u8>>,
}

/// Renews `worker`'s lease and reads what it needs to start on `item`, in one round trip.
/// `None` if the lease expired (the item goes back to the queue).
pub fn begin(con: &mut Connection, worker: &str, lease_ms: u64, item: &Item) -> Res<Option<Begun>> {
    let (held, (known,), blob): (bool, (Option<u32>,), Option<Vec<u8>>) = redis::pipe()
        .cmd("PEXPIRE")
        .arg(lease_key(worker))
        .arg(lease_ms)
        .cmd("ZMSCORE")
        .arg(key("visited"))
        .arg(member(item.fp))
        .cmd("GET")
        .arg(blob_key(item.state))
        .query(con)?;
    Ok(held.then_some(Begun { known, blob }))
}

/// The initial state of the model, as the base of a run (its root is the state's words), and its
/// fingerprint.
pub fn initial(config: &Config) -> Res<(Snapshot, u64)> {
    let words = checker::initial(config);
    // As `CowArena::new`: the allocator's metadata takes a few pages beyond the words.
    let mut arena = Arena::with_capacity(words.len() * 4 + (1 << 20))?;
    let vec = ArenaVec::from_slice(&mut arena, &words)?;
    let root = arena.alloc(vec)?;
    arena.set_root(root);
    Ok((arena.snapshot()?, checker::fingerprint(&words)))
}

/// Starts a run: clears what an earlier run left under the prefix, stores the run's settings and
/// the base state whole under its content hash, marks the initial state visited at depth 0 and
/// queues it as the first item (its blob is the base). `base` is the initial state; its root is
/// the state's words.
pub fn seed(con: &mut Connection, run: &Run, base: &Snapshot, fp: u64) -> Res<()> {
    let old: Vec<String> = redis::cmd("KEYS").arg(format!("{PREFIX}*")).query(con)?;
    if !old.is_empty() {
        redis::cmd("DEL").arg(old).exec(con)?;
    }
    run.store(con)?;
    let hash = base.hash()?;
    redis::cmd("SET")
        .arg(blob_key(hash))
        .arg(base.full_bytes()?)
        .exec(con)?;
    redis::cmd("ZADD")
        .arg(key("visited"))
        .arg(0)
        .arg(member(fp))
        .exec(con)?;
    let item = Item {
        state: hash,
        fp,
        depth: 0,
        trace: Vec::new(),
    };
    redis::cmd("LPUSH")
        .arg(key("queue"))
        .arg(item.encode())
        .exec(con)?;
    Ok(())
}

/// What a finished (or running) run has found so far.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub states: u64,
    pub transitions: u64,
    pub violations: u64,
    pub trace: Option<Vec<u8>>,
    /// Items explored, and items pushed.
    pub items: u64,
    pub pushed: u64,
    /// Bytes of the items pushed, and the pages their deltas store or zero.
    pub shipped_bytes: u64,
    pub shipped_pages: u64,
    /// Bytes the states pushed would take whole.
    pub whole_bytes: u64,
    /// Items that ran again after a failure or an expired lease and then succeeded.
    pub recovered: u64,
    /// Redis server time (ms) when an expired lease's items were last requeued, and when an
    /// item that had failed or expired was last applied.
    pub requeued_at: Option<u64>,
    pub recovered_at: Option<u64>,
    /// Items set aside: their names and why.
    pub aside: Vec<(String, String)>,
}

/// Reads the run's counts.
pub fn report(con: &mut Connection) -> Res<Report> {
    let stats: HashMap<String, Vec<u8>> = redis::cmd("HGETALL").arg(key("stats")).query(con)?;
    let num = |k: &str| -> u64 {
        stats
            .get(k)
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0)
    };
    let at = |k: &str| stats.contains_key(k).then(|| num(k));
    let aside: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(key("aside"))
        .arg(0)
        .arg(-1)
        .query(con)?;
    let why: Vec<String> = redis::cmd("LRANGE")
        .arg(key("aside:why"))
        .arg(0)
        .arg(-1)
        .query(con)?;
    let aside = aside
        .iter()
        .zip(why)
        .map(|(item, why)| (item_name(item), why))
        .collect();
    Ok(Report {
        states: redis::cmd("ZCARD").arg(key("visited")).query(con)?,
        transitions: num("transitions"),
        violations: num("violations"),
        trace: stats.get("trace").cloned(),
        items: num("items"),
        pushed: num("pushed"),
        shipped_bytes: num("shipped_bytes"),
        shipped_pages: num("shipped_pages"),
        whole_bytes: num("whole_bytes"),
        recovered: num("recovered"),
        requeued_at: at("requeued_at"),
        recovered_at: at("recovered_at"),
        aside,
    })
}

/// The Redis server's clock, in milliseconds.
pub fn server_ms(con: &mut Connection) -> Res<u64> {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(con)?;
    Ok(s * 1000 + us / 1000)
}
