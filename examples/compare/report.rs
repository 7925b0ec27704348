//! Tables, goals, JSON and the SVG plot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::strategy::{Res, Workload};
use crate::workloads::{DFS_ARENA, DFS_READS, DFS_WRITES, MEMORY_ARENA, MEMORY_PAGES_APART};
use crate::{Cfg, Key, Results, GIB, MIB};

const BASE: &str = "cowarena";

pub fn fmt_size(b: u64) -> String {
    if b >= GIB as u64 && b % GIB as u64 == 0 {
        format!("{} GiB", b / GIB as u64)
    } else {
        format!("{} MiB", b / MIB as u64)
    }
}

pub fn fmt_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= GIB as f64 {
        format!("{:.2} GiB", b / GIB as f64)
    } else if b >= MIB as f64 {
        format!("{:.1} MiB", b / MIB as f64)
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn fmt_ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}x")
    } else if r >= 10.0 {
        format!("{r:.1}x")
    } else if r >= 0.1 {
        format!("{r:.2}x")
    } else {
        format!("1/{:.0}x", 1.0 / r)
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k/s", r / 1e3)
    } else {
        format!("{r:.1} /s")
    }
}

/// How a workload's figure reads: a cost (time, bytes) or a rate (nodes per second).
#[derive(Clone, Copy)]
enum Kind {
    Ns,
    Bytes,
    Rate,
}

fn kind(w: Workload) -> Kind {
    match w {
        Workload::Memory => Kind::Bytes,
        Workload::Dfs => Kind::Rate,
        _ => Kind::Ns,
    }
}

fn fmt_value(k: Kind, v: f64) -> String {
    match k {
        Kind::Ns => fmt_ns(v),
        Kind::Bytes => fmt_bytes(v as u64),
        Kind::Rate => fmt_rate(v),
    }
}

/// Strategy cost over cowarena cost (for a rate, cowarena's rate over the strategy's):
/// above 1 means cowarena is that many times better.
fn cost_ratio(k: Kind, strategy: f64, base: f64) -> f64 {
    match k {
        Kind::Rate => base / strategy,
        _ => strategy / base,
    }
}

struct Notes {
    list: Vec<String>,
    index: BTreeMap<String, usize>,
}

impl Notes {
    fn id(&mut self, reason: &str) -> usize {
        if let Some(&i) = self.index.get(reason) {
            return i;
        }
        self.list.push(reason.to_string());
        self.index.insert(reason.to_string(), self.list.len());
        self.list.len()
    }
}

const CELL: usize = 19;

fn cell(res: &Results, key: &Key, notes: &mut Notes) -> String {
    let k = kind(key.0);
    match res.median(key) {
        Some(v) => {
            let mut s = fmt_value(k, v);
            if key.1 != BASE {
                if let Some(b) = res.median(&(key.0, BASE, key.2, key.3)) {
                    s = format!("{s} {}", fmt_ratio(cost_ratio(k, v, b)));
                }
            }
            s
        }
        None => match res.na.get(key) {
            Some(why) => format!("n/a [{}]", notes.id(why)),
            None => "-".to_string(),
        },
    }
}

fn header(cfg: &Cfg, label: &str) {
    let mut line = format!("{label:<18}");
    for s in &cfg.strategies {
        line += &format!("{s:>CELL$}");
    }
    println!("{line}");
}

fn row(
    cfg: &Cfg,
    res: &Results,
    label: &str,
    key: impl Fn(&'static str) -> Key,
    notes: &mut Notes,
) {
    let mut line = format!("{label:<18}");
    for &s in &cfg.strategies {
        line += &format!("{:>CELL$}", cell(res, &key(s), notes));
    }
    println!("{line}");
}

pub fn print(cfg: &Cfg, res: &Results, elapsed: Duration) {
    let mut notes = Notes {
        list: Vec::new(),
        index: BTreeMap::new(),
    };
    println!(
        "cowarena comparison ({} run, {} rounds, {:.0} s). Medians; the factor after a figure is that \
         strategy's cost over cowarena's (above 1: cowarena is that many times better).",
        if cfg.full { "--full" } else { "default" },
        cfg.rounds,
        elapsed.as_secs_f64()
    );
    println!();
    let tables = [
        (
            Workload::Cycle,
            format!(
                "cycle: snapshot, write 1 byte in each of k distinct random pages, restore, drop the snapshot, verify, once settled (each k first runs up to {} unmeasured cycles, within {} ms)",
                cfg.cycle_warmup,
                (cfg.cycle_budget / 3).as_millis()
            ),
        ),
        (
            Workload::Cold,
            format!(
                "cold: the same cycle on pages not written since setup (cowarena: right after freezing the whole arena), the first {} cycles per k",
                cfg.cold_max
            ),
        ),
        (
            Workload::Snapshot,
            "snapshot: the snapshot call alone, after k pages were written".to_string(),
        ),
    ];
    for (w, title) in tables {
        println!("{title}");
        header(cfg, "arena, k");
        for &size in &cfg.sizes {
            for &k in &cfg.ks {
                let label = format!("{} k={k}", fmt_size(size as u64));
                row(
                    cfg,
                    res,
                    &label,
                    |s| (w, s, size as u64, k as u64),
                    &mut notes,
                );
            }
        }
        println!();
    }
    println!(
        "first_write: first write to a page after a snapshot, per page ({} pages per sample)",
        cfg.fw_pages
    );
    header(cfg, "arena");
    for &size in &cfg.sizes {
        row(
            cfg,
            res,
            &fmt_size(size as u64),
            |s| (Workload::FirstWrite, s, size as u64, cfg.fw_pages as u64),
            &mut notes,
        );
    }
    println!();
    let ideal = ideal_memory(cfg);
    println!(
        "memory: {} live snapshots of a {} arena, {MEMORY_PAGES_APART} pages apart; ideal {} \
         (counted: smaps_rollup Anonymous + this process's memfd pages + page tables, after minus before)",
        cfg.memory_snaps,
        fmt_size(MEMORY_ARENA as u64),
        fmt_bytes(ideal)
    );
    header(cfg, "");
    row(cfg, res, "bytes", memory_key, &mut notes);
    let mut line = format!("{:<18}", "x ideal");
    for &s in &cfg.strategies {
        let c = res
            .median(&memory_key(s))
            .map(|b| format!("{:.2}x", b / ideal as f64))
            .unwrap_or_default();
        line += &format!("{c:>CELL$}");
    }
    println!("{line}");
    let mut line = format!("{:<18}", "anon/shmem/pte");
    for &s in &cfg.strategies {
        let c = res
            .memory_parts
            .get(s)
            .map(|m| {
                let mib = |b: u64| b as f64 / MIB as f64;
                format!("{:.0}/{:.0}/{:.1}M", mib(m.anon), mib(m.shmem), mib(m.pte))
            })
            .unwrap_or_default();
        line += &format!("{c:>CELL$}");
    }
    println!("{line}");
    println!();
    println!(
        "dfs: {} arena, binary tree, per node {DFS_READS} random 8-byte reads and {DFS_WRITES} page writes, \
         snapshot, left, restore, right, restore; nodes per second",
        fmt_size(DFS_ARENA as u64)
    );
    header(cfg, "");
    row(cfg, res, "nodes/s", dfs_key, &mut notes);
    let mut line = format!("{:<18}", "depth (nodes)");
    for &s in &cfg.strategies {
        let c = res
            .dfs_depth
            .get(s)
            .map(|&d| {
                let shrunk = if d < cfg.dfs_depth { "*" } else { "" };
                format!("{d}{shrunk} ({})", (1u64 << (d + 1)) - 1)
            })
            .unwrap_or_default();
        line += &format!("{c:>CELL$}");
    }
    println!("{line}");
    if res.dfs_depth.values().any(|&d| d < cfg.dfs_depth) {
        println!(
            "  * tree shrunk from depth {} to fit {:.0} s per strategy; checksums agree level by level \
             with the deeper runs",
            cfg.dfs_depth,
            cfg.dfs_budget.as_secs_f64()
        );
    }
    if !notes.list.is_empty() {
        println!();
        println!("n/a:");
        for (i, n) in notes.list.iter().enumerate() {
            println!("  [{}] {n}", i + 1);
        }
    }
    println!();
    println!("goals:");
    for g in goals(cfg, res) {
        let mark = match g.met {
            Some(true) => "met    ",
            Some(false) => "MISSED ",
            None => "unknown",
        };
        println!("  [{mark}] {:<60} {}", g.what, g.detail);
    }
}

fn memory_key(s: &'static str) -> Key {
    (
        Workload::Memory,
        s,
        MEMORY_ARENA as u64,
        MEMORY_PAGES_APART as u64,
    )
}

fn dfs_key(s: &'static str) -> Key {
    (Workload::Dfs, s, DFS_ARENA as u64, DFS_WRITES as u64)
}

fn ideal_memory(cfg: &Cfg) -> u64 {
    (MEMORY_ARENA + cfg.memory_snaps * MEMORY_PAGES_APART * crate::sys::page_size()) as u64
}

struct Goal {
    what: String,
    met: Option<bool>,
    detail: String,
}

fn goals(cfg: &Cfg, res: &Results) -> Vec<Goal> {
    let mut out = Vec::new();
    // Cost of `s` over cowarena's, the goal being `ratio >= min`.
    let mut vs = |what: String, key: Key, min: f64| {
        let base = res.median(&(key.0, BASE, key.2, key.3));
        let other = res.median(&key);
        let (met, detail) = match (base, other) {
            (Some(b), Some(o)) => {
                let r = cost_ratio(kind(key.0), o, b);
                (
                    Some(r >= min),
                    format!("{} (goal >= {})", fmt_ratio(r), fmt_ratio(min)),
                )
            }
            _ => (None, "not measured".to_string()),
        };
        out.push(Goal { what, met, detail });
    };
    let c1g = |s| (Workload::Cycle, s, GIB as u64, 64);
    vs(
        "cycle 1 GiB k=64: >= 20x faster than fork".into(),
        c1g("fork"),
        20.0,
    );
    vs(
        "cycle 1 GiB k=64: >= 200x faster than deep_copy".into(),
        c1g("deep_copy"),
        200.0,
    );
    vs(
        "cycle 1 GiB k=64: faster than crumbles".into(),
        c1g("crumbles"),
        1.0 + f64::EPSILON,
    );
    vs(
        "cycle 1 GiB k=64: faster than memsnap".into(),
        c1g("memsnap"),
        1.0 + f64::EPSILON,
    );
    vs(
        "dfs: >= 10x the nodes/s of deep_copy".into(),
        dfs_key("deep_copy"),
        10.0,
    );
    vs(
        "dfs: >= 3x the nodes/s of fork".into(),
        dfs_key("fork"),
        3.0,
    );
    vs(
        "dfs: >= 5x the nodes/s of imbl".into(),
        dfs_key("imbl"),
        5.0,
    );
    // Upper bounds on cowarena's own ratio.
    let mut within = |what: String, num: Option<f64>, den: Option<f64>, max: f64| {
        let (met, detail) = match (num, den) {
            (Some(n), Some(d)) => {
                let r = n / d;
                (
                    Some(r <= max),
                    format!("{} (goal <= {})", fmt_ratio(r), fmt_ratio(max)),
                )
            }
            _ => (None, "not measured".to_string()),
        };
        out.push(Goal { what, met, detail });
    };
    let at = |w, s, size: usize, k: usize| res.median(&(w, s, size as u64, k as u64));
    let floor = "kernel_floor";
    for w in [Workload::Cycle, Workload::Cold] {
        for &size in &cfg.sizes {
            for &k in &cfg.ks {
                within(
                    format!(
                        "{} {} k={k}: <= kernel_floor",
                        w.name(),
                        fmt_size(size as u64)
                    ),
                    at(w, BASE, size, k),
                    at(w, floor, size, k),
                    1.0,
                );
            }
        }
        let (small, large) = (cfg.sizes[0], cfg.sizes[cfg.sizes.len() - 1]);
        let growth = |s| Some(at(w, s, large, 64)? / at(w, s, small, 64)?);
        within(
            format!(
                "{} k=64 growth {} -> {}: within 1.1x of kernel_floor's",
                w.name(),
                fmt_size(small as u64),
                fmt_size(large as u64)
            ),
            growth(BASE),
            growth(floor),
            1.1,
        );
    }
    for &size in &cfg.sizes {
        within(
            format!("snapshot {} k=64: <= 1 us per page", fmt_size(size as u64)),
            at(Workload::Snapshot, BASE, size, 64).map(|ns| ns / 64.0),
            Some(1000.0),
            1.0,
        );
    }
    let fw = |s| res.median(&(Workload::FirstWrite, s, GIB as u64, cfg.fw_pages as u64));
    within(
        "first_write 1 GiB: within 1.3x of the kernel COW fault (kernel_floor)".into(),
        fw(BASE),
        fw(floor),
        1.3,
    );
    within(
        format!(
            "memory: {} snapshots within 1.1x of ideal",
            cfg.memory_snaps
        ),
        res.median(&memory_key(BASE)),
        Some(ideal_memory(cfg) as f64),
        1.1,
    );
    // Goals first by kind: cycle and cold, then snapshot/first_write/memory, then dfs.
    out.sort_by_key(|g| {
        if g.what.starts_with("cycle") || g.what.starts_with("cold") {
            0
        } else if g.what.starts_with("dfs") {
            2
        } else {
            1
        }
    });
    out
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

pub fn write_json(cfg: &Cfg, res: &Results, path: &Path) -> Res<()> {
    use serde_json::{json, Map, Value};
    let mut keys: Vec<&Key> = res.samples.keys().chain(res.na.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut rows = Vec::new();
    for key in keys {
        let (w, s, arena, dirty) = *key;
        let mut o = Map::new();
        o.insert("workload".into(), json!(w.name()));
        o.insert("strategy".into(), json!(s));
        o.insert("arena_bytes".into(), json!(arena));
        o.insert("dirty_pages".into(), json!(dirty));
        let med = res.median(key);
        let field = match w {
            Workload::Dfs => "nodes_per_sec",
            Workload::Memory => "bytes",
            _ => "median_ns",
        };
        let v = match (w, med) {
            (Workload::Memory, Some(b)) => json!(b as u64),
            (_, Some(x)) => json!(x),
            (_, None) => Value::Null,
        };
        o.insert(field.into(), v);
        if let Some(n) = res.samples.get(key) {
            o.insert("samples".into(), json!(n.len()));
        }
        match w {
            Workload::Memory => {
                o.insert("snapshots".into(), json!(cfg.memory_snaps));
                o.insert("ideal_bytes".into(), json!(ideal_memory(cfg)));
                if let Some(m) = res.memory_parts.get(s) {
                    o.insert("anon_bytes".into(), json!(m.anon));
                    o.insert("shmem_bytes".into(), json!(m.shmem));
                    o.insert("page_table_bytes".into(), json!(m.pte));
                }
            }
            Workload::Dfs => {
                if let Some(&d) = res.dfs_depth.get(s) {
                    o.insert("depth".into(), json!(d));
                    o.insert("nodes".into(), json!((1u64 << (d + 1)) - 1));
                }
            }
            Workload::FirstWrite => {
                o.insert("unit".into(), json!("per page"));
            }
            _ => {}
        }
        if med.is_none() {
            if let Some(why) = res.na.get(key) {
                o.insert("na".into(), json!(why));
            }
        }
        rows.push(Value::Object(o));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&Value::Array(rows))?)?;
    Ok(())
}

pub fn plot(cfg: &Cfg, res: &Results, path: &Path) -> Res<()> {
    use plotters::prelude::*;
    const COLORS: [RGBColor; 7] = [
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(0, 0, 0),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let rows = [Workload::Cycle, Workload::Cold];
    let root = SVGBackend::new(path, (560 * cfg.ks.len() as u32, 520 * rows.len() as u32))
        .into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let panels = root.split_evenly((rows.len(), cfg.ks.len()));
    let cells = rows
        .iter()
        .flat_map(|&w| cfg.ks.iter().map(move |&k| (w, k)));
    let mib = |b: usize| b as f64 / MIB as f64;
    let (xmin, xmax) = (
        mib(*cfg.sizes.iter().min().unwrap_or(&MIB)) / 1.5,
        mib(*cfg.sizes.iter().max().unwrap_or(&MIB)) * 1.5,
    );
    for (panel, (w, k)) in panels.iter().zip(cells) {
        let series: Vec<(&'static str, Vec<(f64, f64)>)> = cfg
            .strategies
            .iter()
            .map(|&s| {
                let pts = cfg
                    .sizes
                    .iter()
                    .filter_map(|&size| {
                        res.median(&(w, s, size as u64, k as u64))
                            .map(|ns| (mib(size), ns / 1e3))
                    })
                    .collect();
                (s, pts)
            })
            .collect();
        let ys = series.iter().flat_map(|(_, p)| p.iter().map(|&(_, y)| y));
        let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
        // Headroom above the data for the legend.
        let (lo, hi) = if lo <= hi {
            (lo / 2.0, hi * 2.0 * (hi / lo).max(10.0).powf(0.6))
        } else {
            (1.0, 10.0)
        };
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!(
                    "{} cycle time, k = {k} page{}",
                    if w == Workload::Cold { "cold" } else { "warm" },
                    if k == 1 { "" } else { "s" }
                ),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d((xmin..xmax).log_scale().base(4.0), (lo..hi).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .y_labels(6)
            .x_desc("arena")
            .y_desc("median cycle")
            .x_label_formatter(&|mib| fmt_size((*mib * MIB as f64).round() as u64))
            .y_label_formatter(&|us| fmt_ns(*us * 1e3))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, (name, pts)) in series.iter().enumerate() {
            if pts.is_empty() {
                continue;
            }
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
