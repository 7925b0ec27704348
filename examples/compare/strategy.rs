//! The one interface every strategy implements, so all of them run the identical workload code.

use std::fmt;
use std::time::{Duration, Instant};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Res<T> = Result<T, Error>;

/// A restore that returned wrong bytes or a checksum that differs: these stop the whole run.
#[derive(Debug)]
pub struct WrongResult(pub String);

impl fmt::Display for WrongResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WrongResult {}

pub fn wrong(msg: String) -> Error {
    Box::new(WrongResult(msg))
}

pub fn is_wrong(e: &Error) -> bool {
    e.downcast_ref::<WrongResult>().is_some()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    Cycle,
    Cold,
    Snapshot,
    FirstWrite,
    Memory,
    Dfs,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Cycle => "cycle",
            Workload::Cold => "cold",
            Workload::Snapshot => "snapshot",
            Workload::FirstWrite => "first_write",
            Workload::Memory => "memory",
            Workload::Dfs => "dfs",
        }
    }
}

/// A byte-addressed state with snapshots kept as a stack.
///
/// `snapshot` pushes, `restore` returns to the top one and keeps it, `release` drops the top one and
/// keeps the current state. Workloads go through `branches`, which a strategy may override when its
/// natural shape is different (fork: a branch is a child process).
pub trait Strategy: Sized {
    const NAME: &'static str;
    /// Whether one untimed cycle should run before timing (first snapshots that freeze the whole
    /// arena, lazily built structures).
    const WARMUP: bool = true;
    /// Every snapshot is a full copy of the state: the memory workload keeps only a few alive and
    /// reports the per-snapshot cost instead of a figure for 1000.
    const FULL_COPY: bool = false;

    /// A state of `bytes` bytes with every page written with the `fill` pattern.
    fn setup(bytes: usize) -> Res<Self>;
    fn capacity(&self) -> usize;
    fn read_u8(&self, off: usize) -> u8;
    /// `off` is 8-aligned.
    fn read_u64(&self, off: usize) -> u64;
    fn write_u8(&mut self, off: usize, v: u8) -> Res<()>;
    /// `off` is 8-aligned.
    fn write_u64(&mut self, off: usize, v: u64) -> Res<()>;

    fn snapshot(&mut self) -> Res<()>;
    fn restore(&mut self) -> Res<()>;
    fn release(&mut self) -> Res<()>;
    fn restore_and_release(&mut self) -> Res<()> {
        self.restore()?;
        self.release()
    }

    /// Runs `f(self, 0..n)`, each from the current state; afterwards the state is the current one again.
    fn branches(&mut self, n: usize, f: &mut dyn FnMut(&mut Self, usize) -> Res<()>) -> Res<()> {
        self.snapshot()?;
        for i in 0..n {
            f(self, i)?;
            if i + 1 == n {
                self.restore_and_release()?;
            } else {
                self.restore()?;
            }
        }
        Ok(())
    }

    /// The snapshot workload's sample: times one `snapshot` of the current (written) state, then checks
    /// that restoring it brings back `written` and releases it.
    fn timed_snapshot(&mut self, written: &[(usize, u8)]) -> Res<Duration> {
        let t = Instant::now();
        self.snapshot()?;
        let dt = t.elapsed();
        for &(off, v) in written {
            self.write_u8(off, !v)?;
        }
        self.restore()?;
        for &(off, v) in written {
            let got = self.read_u8(off);
            if got != v {
                return Err(wrong(format!(
                    "{}: snapshot lost a write: byte at offset {off} is {got}, expected {v}",
                    Self::NAME
                )));
            }
        }
        self.release()?;
        Ok(dt)
    }

    /// `Some(reason)` when this strategy cannot run `w`.
    fn unsupported(w: Workload) -> Option<&'static str> {
        let _ = w;
        None
    }
}

/// Content of word `w` (bytes `8w..8w+8`) after setup: non-zero, different per word, so a restore
/// that brings back the wrong page or zeroes shows up.
pub fn fill_word(w: usize) -> u64 {
    ((w as u64) ^ 0x5bd1_e995).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

pub fn expected_u8(off: usize) -> u8 {
    fill_word(off / 8).to_le_bytes()[off % 8]
}

/// Writes the fill pattern into `buf`, which holds bytes `start..start + buf.len()` of the state.
pub fn fill(buf: &mut [u8], start: usize) {
    assert!(start % 8 == 0 && buf.len() % 8 == 0);
    for (i, c) in buf.chunks_exact_mut(8).enumerate() {
        c.copy_from_slice(&fill_word(start / 8 + i).to_le_bytes());
    }
}

/// splitmix64: every strategy sees the same pseudo-random sequence for the same seed.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Distinct pseudo-random pages, a fresh set on every call (partial Fisher-Yates, O(k)).
pub struct PagePicker {
    perm: Vec<u32>,
    rng: Rng,
    /// `perm[..fresh]` are the pages `pick_fresh` has handed out.
    fresh: usize,
}

impl PagePicker {
    pub fn new(pages: usize, seed: u64) -> Self {
        Self {
            perm: (0..pages as u32).collect(),
            rng: Rng::new(seed),
            fresh: 0,
        }
    }

    /// `k` pages that no earlier call of `pick_fresh` on this picker returned (fewer when the
    /// pages run out). Do not mix with `pick` on one picker.
    pub fn pick_fresh(&mut self, k: usize) -> &[u32] {
        let n = self.perm.len();
        let start = self.fresh;
        let end = (start + k).min(n);
        for i in start..end {
            let j = i + self.rng.below(n - i);
            self.perm.swap(i, j);
        }
        self.fresh = end;
        &self.perm[start..end]
    }

    pub fn pick(&mut self, k: usize) -> &[u32] {
        let n = self.perm.len();
        let k = k.min(n);
        for i in 0..k {
            let j = i + self.rng.below(n - i);
            self.perm.swap(i, j);
        }
        &self.perm[..k]
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }
}
