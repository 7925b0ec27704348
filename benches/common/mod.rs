//! What the benchmarks share: the arena sizes to run and the random pages each cycle writes.

/// Pages written per cycle.
pub const K: usize = 64;
pub const MIB: usize = 1 << 20;

/// Arena sizes in MiB: `COWARENA_BENCH_SIZES=16,1024` (the default) or any list.
pub fn sizes() -> Vec<usize> {
    std::env::var("COWARENA_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![16, 1024])
}

/// `K` distinct pages spread over the arena, different each call.
pub struct Pages {
    pub state: u64,
    pub pages: usize,
}

impl Pages {
    pub fn next(&mut self) -> Vec<usize> {
        let mut out = Vec::with_capacity(K);
        while out.len() < K {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let p = self.state as usize % self.pages;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }
}
