//! What the loop benchmarks (`raw_reset`, `search_loop`) share: their settings from the
//! environment, a deterministic choice of scattered pages, and medians.

use std::time::Duration;

/// A comma-separated list of numbers from the environment variable `name`, if set.
pub fn env_list(name: &str) -> Option<Vec<usize>> {
    std::env::var(name)
        .ok()
        .map(|s| s.split(',').filter_map(|v| v.trim().parse().ok()).collect())
}

/// Distinct pages per call, a deterministic sequence for a given seed.
pub struct Scatter {
    perm: Vec<usize>,
    state: u64,
}

impl Scatter {
    pub fn new(pages: usize, seed: u64) -> Self {
        Scatter {
            perm: (0..pages).collect(),
            state: seed | 1,
        }
    }

    /// `k` distinct page indices below the `pages` given to `new`.
    pub fn next(&mut self, k: usize) -> &[usize] {
        let n = self.perm.len();
        for i in 0..k {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let j = i + self.state as usize % (n - i);
            self.perm.swap(i, j);
        }
        &self.perm[..k]
    }
}

/// Microseconds.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The median of `v` (not empty).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
