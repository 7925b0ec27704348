//! The comparison itself: arguments, the run over strategies, sizes and rounds, the report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::baselines::{DeepCopy, Fork, KernelFloor};
use crate::cowarena_strategy::CowArena;
use crate::peers::{Crumbles, Imbl, Memsnap};
use crate::strategy::{is_wrong, wrong, PagePicker, Res, Strategy, Workload};
use crate::sys::Shared;

pub const STRATEGIES: [&str; 7] = [
    "cowarena",
    "deep_copy",
    "fork",
    "kernel_floor",
    "crumbles",
    "memsnap",
    "imbl",
];

/// Runs `$body` with `$S` bound to the strategy type named `$name`.
macro_rules! with_strategy {
    ($name:expr, $S:ident => $body:expr) => {
        match $name {
            "cowarena" => {
                type $S = CowArena;
                $body
            }
            "deep_copy" => {
                type $S = DeepCopy;
                $body
            }
            "fork" => {
                type $S = Fork;
                $body
            }
            "kernel_floor" => {
                type $S = KernelFloor;
                $body
            }
            "crumbles" => {
                type $S = Crumbles;
                $body
            }
            "memsnap" => {
                type $S = Memsnap;
                $body
            }
            "imbl" => {
                type $S = Imbl;
                $body
            }
            other => unreachable!("unknown strategy {other}"),
        }
    };
}

pub const MIB: usize = 1 << 20;
pub const GIB: usize = 1 << 30;

pub struct Cfg {
    pub full: bool,
    pub strategies: Vec<&'static str>,
    pub sizes: Vec<usize>,
    pub ks: Vec<usize>,
    pub rounds: usize,
    pub cycle_budget: Duration,
    pub cycle_max: usize,
    /// Unmeasured cycles before each cycle workload's samples (within a third of its budget).
    pub cycle_warmup: usize,
    /// Cold cycles measured per k, right after setup.
    pub cold_max: usize,
    pub fw_pages: usize,
    pub fw_budget: Duration,
    pub fw_max: usize,
    pub snap_budget: Duration,
    pub snap_max: usize,
    /// Rounds that also run first_write and snapshot (their samples are many per round).
    pub side_rounds: usize,
    pub memory_snaps: usize,
    pub memory_full_copy_snaps: usize,
    pub dfs_depth: u32,
    pub dfs_rounds: usize,
    pub dfs_budget: Duration,
    pub json: Option<PathBuf>,
}

impl Cfg {
    fn new(full: bool) -> Self {
        let sizes = if full {
            vec![16 * MIB, 256 * MIB, GIB, 4 * GIB]
        } else {
            vec![16 * MIB, GIB]
        };
        let ms = Duration::from_millis;
        Self {
            full,
            strategies: STRATEGIES.to_vec(),
            sizes,
            ks: vec![1, 64, 4096],
            rounds: if full { 5 } else { 3 },
            cycle_budget: if full { ms(1000) } else { ms(150) },
            cycle_max: if full { 1000 } else { 100 },
            cycle_warmup: 5000,
            cold_max: 8,
            fw_pages: 256,
            fw_budget: if full { ms(400) } else { ms(60) },
            fw_max: if full { 200 } else { 20 },
            snap_budget: if full { ms(400) } else { ms(60) },
            snap_max: if full { 300 } else { 30 },
            side_rounds: if full { 5 } else { 1 },
            memory_snaps: 1000,
            memory_full_copy_snaps: if full { 16 } else { 4 },
            dfs_depth: 12,
            dfs_rounds: if full { 3 } else { 1 },
            dfs_budget: if full {
                Duration::from_secs(40)
            } else {
                Duration::from_secs(3)
            },
            json: None,
        }
    }
}

/// (workload, strategy, arena bytes, dirty pages)
pub type Key = (Workload, &'static str, u64, u64);

#[derive(Default)]
pub struct Results {
    pub samples: BTreeMap<Key, Vec<f64>>,
    pub na: BTreeMap<Key, String>,
    pub dfs_depth: BTreeMap<&'static str, u32>,
    pub memory_parts: BTreeMap<&'static str, crate::sys::MemSample>,
    dfs_reference: BTreeMap<usize, (u64, &'static str)>,
}

impl Results {
    pub fn median(&self, key: &Key) -> Option<f64> {
        let v = self.samples.get(key)?;
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| {
            let m = v.len() / 2;
            if v.len() % 2 == 1 {
                v[m]
            } else {
                (v[m - 1] + v[m]) / 2.0
            }
        })
    }

    fn set_na(&mut self, key: Key, reason: String) {
        self.na.entry(key).or_insert(reason);
    }

    /// Files the outcome of one measurement: samples, or n/a with the reason. Wrong results stop
    /// the run; other errors (a peer crate failing) become n/a.
    fn record(
        &mut self,
        key: Key,
        unsupported: Option<&str>,
        run: impl FnOnce() -> Res<Vec<f64>>,
    ) -> Res<()> {
        if let Some(why) = unsupported {
            self.set_na(key, why.to_string());
            return Ok(());
        }
        match run() {
            Ok(v) => self.samples.entry(key).or_default().extend(v),
            Err(e) if is_wrong(&e) => return Err(e),
            Err(e) => self.set_na(key, format!("failed: {e}")),
        }
        Ok(())
    }

    fn check_dfs(&mut self, name: &'static str, sums: &[u64]) -> Res<()> {
        for (level, &sum) in sums.iter().enumerate() {
            match self.dfs_reference.get(&level) {
                Some(&(want, by)) if want != sum => {
                    return Err(wrong(format!(
                        "dfs checksum differs at level {level}: {name} has {sum:#018x}, {by} had {want:#018x}"
                    )))
                }
                Some(_) => {}
                None => {
                    self.dfs_reference.insert(level, (sum, name));
                }
            }
        }
        Ok(())
    }
}

fn seed_for(round: usize, size: usize) -> u64 {
    crate::strategy::mix(0xc0_a7e4a ^ ((round as u64) << 40) ^ size as u64)
}

/// All cold, cycle, first_write and snapshot figures of one strategy at one arena size, on a fresh
/// state.
fn run_unit<S: Strategy>(
    cfg: &Cfg,
    size: usize,
    round: usize,
    shared: &Shared,
    res: &mut Results,
) -> Res<()> {
    let arena = size as u64;
    let name = S::NAME;
    let page = crate::sys::page_size();
    let mut picker = PagePicker::new(size.div_ceil(page), seed_for(round, size));
    crate::sys::trim_heap();
    let started = S::setup(size).and_then(|mut s| {
        if S::WARMUP {
            crate::workloads::cycle(&mut s, &mut picker, 1)?;
        }
        Ok(s)
    });
    let mut s = match started {
        Ok(s) => s,
        Err(e) if is_wrong(&e) => return Err(e),
        Err(e) => {
            let why = format!("setup of {} failed: {e}", crate::report::fmt_size(arena));
            for &k in &cfg.ks {
                for w in [Workload::Cold, Workload::Cycle, Workload::Snapshot] {
                    res.set_na((w, name, arena, k as u64), why.clone());
                }
            }
            res.set_na(
                (Workload::FirstWrite, name, arena, cfg.fw_pages as u64),
                why,
            );
            return Ok(());
        }
    };
    let pages = s.capacity() / page;
    // First, while every page is as setup left it: cycles over pages not written before, the
    // largest k first, so that even k = all pages finds them untouched.
    for &k in cfg.ks.iter().rev() {
        let key = (Workload::Cold, name, arena, k as u64);
        let mut fresh = PagePicker::new(pages, seed_for(round, size) ^ k as u64);
        res.record(key, S::unsupported(Workload::Cold), || {
            let n = cfg.cold_max.min(pages / k).max(1);
            crate::workloads::sample_loop(cfg.cycle_budget, n, || {
                crate::workloads::cold(&mut s, &mut fresh, k)
            })
        })?;
    }
    for &k in &cfg.ks {
        let key = (Workload::Cycle, name, arena, k as u64);
        res.record(key, S::unsupported(Workload::Cycle), || {
            // Unmeasured cycles first, the same for every strategy: the figure is the cost of
            // a search that has settled into this k, not of the switch from the last one (the
            // cold table has that). A 16 MiB cowarena arena cycling k = 1 random page settles
            // after about 3500 cycles, once most of its pages are private again.
            crate::workloads::sample_loop(cfg.cycle_budget / 3, cfg.cycle_warmup, || {
                crate::workloads::cycle(&mut s, &mut picker, k)
            })?;
            crate::workloads::sample_loop(cfg.cycle_budget, cfg.cycle_max, || {
                crate::workloads::cycle(&mut s, &mut picker, k)
            })
        })?;
    }
    if round < cfg.side_rounds {
        let n = cfg.fw_pages.min(pages);
        res.record(
            (Workload::FirstWrite, name, arena, cfg.fw_pages as u64),
            S::unsupported(Workload::FirstWrite),
            || {
                crate::workloads::sample_loop(cfg.fw_budget, cfg.fw_max, || {
                    crate::workloads::first_write(&mut s, &mut picker, n, shared)
                })
            },
        )?;
        // Last: it leaves its writes in the state.
        for &k in &cfg.ks {
            let key = (Workload::Snapshot, name, arena, k as u64);
            res.record(key, S::unsupported(Workload::Snapshot), || {
                crate::workloads::sample_loop(cfg.snap_budget, cfg.snap_max, || {
                    crate::workloads::snapshot(&mut s, &mut picker, k)
                })
            })?;
        }
    }
    drop(s);
    crate::sys::trim_heap();
    Ok(())
}

fn run_memory<S: Strategy>(cfg: &Cfg, res: &mut Results) -> Res<()> {
    let key = (
        Workload::Memory,
        S::NAME,
        crate::workloads::MEMORY_ARENA as u64,
        crate::workloads::MEMORY_PAGES_APART as u64,
    );
    if let Some(why) = S::unsupported(Workload::Memory) {
        res.set_na(key, why.to_string());
        return Ok(());
    }
    let n = if S::FULL_COPY {
        cfg.memory_full_copy_snaps
    } else {
        cfg.memory_snaps
    };
    match crate::workloads::memory::<S>(n, seed_for(0, crate::workloads::MEMORY_ARENA)) {
        Ok(used) if S::FULL_COPY => {
            res.set_na(
                key,
                format!(
                    "every snapshot of a written state is a full copy; {n} live snapshots took {}, so {} would need ~{}",
                    crate::report::fmt_bytes(used.total()),
                    cfg.memory_snaps,
                    crate::report::fmt_bytes((crate::workloads::MEMORY_ARENA * cfg.memory_snaps) as u64),
                ),
            );
        }
        Ok(used) => {
            res.samples
                .entry(key)
                .or_default()
                .push(used.total() as f64);
            res.memory_parts.insert(S::NAME, used);
        }
        Err(e) if is_wrong(&e) => return Err(e),
        Err(e) => res.set_na(key, format!("failed: {e}")),
    }
    Ok(())
}

fn nodes(depth: u32) -> f64 {
    ((1u64 << (depth + 1)) - 1) as f64
}

fn run_dfs<S: Strategy>(cfg: &Cfg, shared: &Shared, res: &mut Results) -> Res<()> {
    let key = (
        Workload::Dfs,
        S::NAME,
        crate::workloads::DFS_ARENA as u64,
        crate::workloads::DFS_WRITES as u64,
    );
    if let Some(why) = S::unsupported(Workload::Dfs) {
        res.set_na(key, why.to_string());
        return Ok(());
    }
    crate::sys::trim_heap();
    let run = S::setup(crate::workloads::DFS_ARENA).and_then(|mut s| {
        if S::WARMUP {
            let mut picker = PagePicker::new(s.capacity() / crate::sys::page_size(), 1);
            crate::workloads::cycle(&mut s, &mut picker, 1)?;
        }
        let run = match res.dfs_depth.get(S::NAME) {
            Some(&d) => crate::workloads::dfs(&mut s, d, shared)?,
            None => {
                // Deepen one level at a time while the next tree (twice the nodes) fits the budget;
                // the last tree run is the measurement.
                let mut d = 1;
                loop {
                    let run = crate::workloads::dfs(&mut s, d, shared)?;
                    res.check_dfs(S::NAME, &run.level_sums)?;
                    let next = run.elapsed.as_secs_f64() * nodes(d + 1) / nodes(d);
                    if d == cfg.dfs_depth || next > cfg.dfs_budget.as_secs_f64() {
                        res.dfs_depth.insert(S::NAME, d);
                        break run;
                    }
                    d += 1;
                }
            }
        };
        drop(s);
        crate::sys::trim_heap();
        Ok(run)
    });
    let run = match run {
        Ok(run) => run,
        Err(e) if is_wrong(&e) => return Err(e),
        Err(e) => {
            res.set_na(key, format!("failed: {e}"));
            return Ok(());
        }
    };
    res.check_dfs(S::NAME, &run.level_sums)?;
    res.samples
        .entry(key)
        .or_default()
        .push(run.nodes as f64 / run.elapsed.as_secs_f64());
    Ok(())
}

fn usage() -> &'static str {
    "usage: compare [--full] [--json PATH] [--only NAME,NAME,...]\n\
     \n\
     (default)      16 MiB and 1 GiB arenas, 3 rounds, shallower DFS for slow strategies (< 3 min)\n\
     --full         16 MiB to 4 GiB, 5 rounds, larger budgets (about half an hour)\n\
     --json PATH    also write every figure as a JSON array\n\
     --only LIST    run only these strategies (comma-separated)"
}

fn parse_args() -> Result<Cfg, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--full");
    let mut cfg = Cfg::new(full);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--full" => {}
            "--json" => cfg.json = Some(it.next().ok_or("--json needs a path")?.into()),
            "--only" => {
                let list = it.next().ok_or("--only needs a list")?;
                let mut chosen = Vec::new();
                for n in list.split(',') {
                    let s = STRATEGIES.iter().find(|s| **s == n).ok_or_else(|| {
                        format!("unknown strategy {n}; known: {}", STRATEGIES.join(", "))
                    })?;
                    chosen.push(*s);
                }
                cfg.strategies = chosen;
            }
            "-h" | "--help" => return Err(usage().to_string()),
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    Ok(cfg)
}

fn run(cfg: &Cfg, res: &mut Results) -> Res<()> {
    let shared = Shared::new()?;
    let n = cfg.strategies.len();
    let units = cfg.rounds * cfg.sizes.len() * n + n + cfg.dfs_rounds * n;
    let pb = ProgressBar::new(units as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} [{elapsed_precise}] {msg}")
            .map_err(|e| e.to_string())?,
    );
    let outcome = run_all(cfg, res, &shared, &pb);
    pb.finish_and_clear();
    outcome
}

fn run_all(cfg: &Cfg, res: &mut Results, shared: &Shared, pb: &ProgressBar) -> Res<()> {
    let n = cfg.strategies.len();
    for round in 0..cfg.rounds {
        for &size in &cfg.sizes {
            for i in 0..n {
                let name = cfg.strategies[(i + round) % n];
                pb.set_message(format!(
                    "round {}/{} {} {name}",
                    round + 1,
                    cfg.rounds,
                    crate::report::fmt_size(size as u64)
                ));
                with_strategy!(name, S => run_unit::<S>(cfg, size, round, shared, res))?;
                pb.inc(1);
            }
        }
    }
    for &name in &cfg.strategies {
        pb.set_message(format!("memory {name}"));
        with_strategy!(name, S => run_memory::<S>(cfg, res))?;
        pb.inc(1);
    }
    for round in 0..cfg.dfs_rounds {
        for i in 0..n {
            let name = cfg.strategies[(i + round) % n];
            pb.set_message(format!("dfs round {}/{} {name}", round + 1, cfg.dfs_rounds));
            with_strategy!(name, S => run_dfs::<S>(cfg, shared, res))?;
            pb.inc(1);
        }
    }
    Ok(())
}

pub fn main() -> ExitCode {
    let cfg = match parse_args() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let mut res = Results::default();
    let outcome = run(&cfg, &mut res);
    let elapsed = started.elapsed();
    if let Err(e) = outcome {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    crate::report::print(&cfg, &res, elapsed);
    let svg = crate::report::target_dir().join("compare.svg");
    match crate::report::plot(&cfg, &res, &svg) {
        Ok(()) => println!("plot: {}", svg.display()),
        Err(e) => eprintln!("plot not written: {e}"),
    }
    if let Some(path) = &cfg.json {
        match crate::report::write_json(&cfg, &res, path) {
            Ok(()) => println!("json: {}", path.display()),
            Err(e) => {
                eprintln!("json not written: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
