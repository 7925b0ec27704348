//! Explicit-state exploration on Redis: the model of `model_check.rs` (the filter lock with a
//! large shared buffer), explored by worker processes that hand states to each other as deltas.
//!
//! One process seeds the work: the initial state, stored whole in Redis under its content hash
//! (the base), and the first work item. Each worker takes an item (a state as a delta against
//! that base, with its depth and trace), rebuilds the state in an arena made from the base, and
//! explores a bounded subtree below it with snapshot and restore, checking the states it reaches
//! against the visited set in Redis. The states at the subtree's last level go back to the queue
//! as new items, each the pages that changed since the base. The queue is a reliable one (an
//! item moves to the worker's processing list and returns to the queue when its lease expires),
//! and a worker's results are applied atomically with the removal of its item, so a worker
//! killed in the middle of an item loses nothing. The run ends when the queue is empty and
//! nothing is in flight. `distributed/queue.rs` describes the keys and scripts.
//!
//! ```text
//! cargo run --release --example distributed                      # 4 workers, own redis-server
//! cargo run --release --example distributed -- --workers 1,2,4   # states per second per count
//! cargo run --release --example distributed -- --workers 3 --kill-one   # recovery from SIGKILL
//! cargo run --release --example distributed -- --broken --procs 3 --depth 30
//! ```
//!
//! Without `--redis URL` the run starts its own `redis-server` on a free loopback port and stops
//! it at the end; it also runs the single-process search and fails unless the counts agree.
//! Across machines, against one Redis (see the README):
//!
//! ```text
//! distributed seed --redis redis://HOST:6379/ [--procs N --depth N ...]  # once
//! distributed worker --redis redis://HOST:6379/                          # on every machine
//! distributed report --redis redis://HOST:6379/                          # waits, then prints
//! ```

// The `Vec` copy and undo log strategies are `model_check`'s baselines; the reference here is
// the single-process arena search.
#[allow(dead_code)]
#[path = "model_check/checker.rs"]
mod checker;
#[path = "distributed/drive.rs"]
mod drive;
#[path = "distributed/queue.rs"]
mod queue;
#[path = "distributed/server.rs"]
mod server;
#[path = "distributed/worker.rs"]
mod worker;

use checker::{check, replay, Config, CowArena, Outcome, Step};
use queue::{Report, Res, Run, Scripts, Taken};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Everything the command line says.
struct Args {
    command: Option<String>,
    run: Run,
    redis: Option<String>,
    workers: Vec<usize>,
    kill_one: bool,
    items: Option<u64>,
    id: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        command: None,
        run: Run {
            config: Config {
                procs: 4,
                buffer_words: 1 << 20 >> 2,
                stripe: 8,
                depth: 60,
                broken: false,
            },
            subtree: 16,
            lease_ms: 2000,
        },
        redis: None,
        workers: vec![4],
        kill_one: false,
        items: None,
        id: None,
    };
    let mut it = std::env::args().skip(1).peekable();
    if let Some(c) = it.next_if(|a| ["seed", "worker", "report"].contains(&a.as_str())) {
        args.command = Some(c);
    }
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{arg} {v}: {e}"));
        let c = &mut args.run.config;
        match arg.as_str() {
            "--procs" => c.procs = number(value()?)?,
            "--buffer-mib" => c.buffer_words = number(value()?)? << 20 >> 2,
            "--stripe" => c.stripe = number(value()?)?,
            "--depth" => c.depth = number(value()?)?,
            "--broken" => c.broken = true,
            "--subtree" => args.run.subtree = number(value()?)?.max(1),
            "--lease-ms" => args.run.lease_ms = number(value()?)? as u64,
            "--redis" => args.redis = Some(value()?),
            "--workers" => {
                args.workers = value()?
                    .split(',')
                    .map(|v| number(v.to_string()))
                    .collect::<Result<_, _>>()?
            }
            "--kill-one" => args.kill_one = true,
            "--items" => args.items = Some(number(value()?)? as u64),
            "--id" => args.id = Some(value()?),
            other => {
                return Err(format!(
                    "unknown argument {other}; expected [seed|worker|report] and --procs N, \
                     --buffer-mib N, --stripe N, --depth N, --broken, --subtree LEVELS, \
                     --lease-ms MS, --redis URL, --workers N[,N...], --kill-one, --items N, \
                     --id NAME"
                ))
            }
        }
    }
    let c = &args.run.config;
    if c.procs < 2 || c.stripe == 0 || c.buffer_words < c.stripe || args.workers.contains(&0) {
        return Err(
            "needs --procs >= 2, --stripe >= 1, a buffer of at least a stripe of \
                    slots, and at least one worker"
                .into(),
        );
    }
    if args.command.is_some() && args.redis.is_none() {
        return Err("seed, worker and report need --redis URL".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let result = parse().map_err(Into::into).and_then(|args| {
        let url = args.redis.clone();
        match (args.command.as_deref(), url.as_deref()) {
            (Some("seed"), Some(url)) => seed(url, &args.run).map(|()| true),
            (Some("worker"), Some(url)) => work(url, args.id.as_deref(), args.items),
            (Some("report"), Some(url)) => report(url),
            _ => coordinate(&args),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn describe(run: &Run) -> String {
    let c = &run.config;
    format!(
        "filter lock{}, {} processes, {} MiB shared buffer, a stripe of {} slots per critical \
         section, depth {}; items of {} levels, leases of {} ms",
        if c.broken { " (broken)" } else { "" },
        c.procs,
        (c.buffer_words * 4) >> 20,
        c.stripe,
        c.depth,
        run.subtree,
        run.lease_ms
    )
}

fn seed(url: &str, run: &Run) -> Res<()> {
    let mut con = queue::connect(url)?;
    let (base, fp) = queue::initial(&run.config)?;
    queue::seed(&mut con, run, &base, fp)?;
    println!("{}", describe(run));
    println!(
        "seeded {url}: base {} ({} bytes whole); start workers with `distributed worker --redis \
         {url}`",
        base.hash()?,
        base.full_bytes()?.len()
    );
    Ok(())
}

/// A worker name that is unique across machines: host and process.
fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

fn work(url: &str, id: Option<&str>, items: Option<u64>) -> Res<bool> {
    let id = id.map_or_else(default_id, str::to_string);
    let mut w = worker::Worker::new(url, &id)?;
    let start = Instant::now();
    w.work(items)?;
    let s = w.stats;
    println!(
        "worker {id}: {} items, {} states expanded, {} failed, {} leases lost, in {:.2} s",
        s.items,
        s.expanded,
        s.failed,
        s.lost,
        start.elapsed().as_secs_f64()
    );
    Ok(true)
}

/// Waits until the run at `url` is over, then prints what it found.
fn report(url: &str) -> Res<bool> {
    let mut con = queue::connect(url)?;
    let run = Run::load(&mut con)?;
    let scripts = Scripts::load(&mut con)?;
    while !matches!(scripts.take(&mut con, None, run.lease_ms)?, Taken::Done) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = queue::report(&mut con)?;
    println!("{}", describe(&run));
    println!(
        "{} states, {} transitions, {} violations; {} items",
        r.states, r.transitions, r.violations, r.items
    );
    Ok(verdict(&run.config, &r))
}

/// Prints what the run says about the lock and about items set aside; false if the run is
/// incomplete or its trace does not replay.
fn verdict(config: &Config, r: &Report) -> bool {
    let mut ok = true;
    match &r.trace {
        None => println!("mutual exclusion holds up to depth {}", config.depth),
        Some(trace) => {
            println!("mutual exclusion violated; a trace, by process: {trace:?}");
            if replay(config, trace).last() != Some(&Step::Violation) {
                eprintln!("the trace does not replay to the violation");
                ok = false;
            }
        }
    }
    for (item, why) in &r.aside {
        println!("set aside: {item}: {why}");
    }
    if !r.aside.is_empty() {
        println!(
            "{} item(s) set aside: the counts miss what lies behind them",
            r.aside.len()
        );
        ok = false;
    }
    ok
}

fn coordinate(args: &Args) -> Res<bool> {
    let run = &args.run;
    println!("{}", describe(run));
    let own = match &args.redis {
        Some(_) => None,
        None => Some(server::RedisServer::start()?),
    };
    let url = args
        .redis
        .clone()
        .or_else(|| own.as_ref().map(|s| s.url.clone()))
        .expect("a server");
    match &own {
        Some(_) => println!("redis-server started on {url} (stopped at the end)"),
        None => println!("redis at {url}"),
    }
    let start = Instant::now();
    let single: Outcome = check::<CowArena>(&run.config);
    let single_secs = start.elapsed().as_secs_f64();
    let (base, fp) = queue::initial(&run.config)?;
    let whole = base.full_bytes()?.len();
    let mut con = queue::connect(&url)?;
    let exe = std::env::current_exe()?;
    let mut ok = true;
    println!(
        "\n{:<14} {:>8} {:>12} {:>10} {:>7} {:>8} {:>10} {:>10}",
        "run", "states", "transitions", "violations", "items", "seconds", "states/s", "vs single"
    );
    println!(
        "{:<14} {:>8} {:>12} {:>10} {:>7} {single_secs:>8.2} {:>10.0} {:>9.2}x",
        "single process",
        single.states,
        single.transitions,
        single.violations,
        "-",
        single.states as f64 / single_secs,
        1.0
    );
    let mut last = None;
    for &n in &args.workers {
        queue::seed(&mut con, run, &base, fp)?;
        let driven = drive::drive(&url, n, args.kill_one, |id| {
            let mut c = Command::new(&exe);
            c.args(["worker", "--redis", &url, "--id", id])
                .stdout(Stdio::null());
            server::die_with_parent(&mut c);
            c
        })?;
        let r = &driven.report;
        let rate = r.states as f64 / driven.seconds;
        println!(
            "{:<14} {:>8} {:>12} {:>10} {:>7} {:>8.2} {rate:>10.0} {:>9.2}x",
            format!("{n} worker{}", if n == 1 { "" } else { "s" }),
            r.states,
            r.transitions,
            r.violations,
            r.items,
            driven.seconds,
            rate / (single.states as f64 / single_secs),
        );
        if (r.states, r.transitions, r.violations)
            != (single.states, single.transitions, single.violations)
        {
            eprintln!("{n} workers disagree with the single-process run");
            ok = false;
        }
        last = Some(driven);
    }
    let Some(driven) = last else {
        return Ok(ok);
    };
    let r = &driven.report;
    let page = cowarena::page_size() as f64;
    if r.pushed > 0 {
        let per = |n: u64| n as f64 / r.pushed as f64;
        let (bytes, changed) = (per(r.shipped_bytes), per(r.shipped_pages) * page);
        println!(
            "\nbytes shipped per state (mean of {} items): {bytes:.0}, {:.2}x the {changed:.0} \
             bytes of the {:.1} pages that differ from the base; whole, a state would be {:.0} \
             bytes (its non-zero pages; the base's: {whole}), in memory {} KiB",
            r.pushed,
            bytes / changed,
            changed / page,
            per(r.whole_bytes),
            base.capacity() >> 10,
        );
    }
    if let Some(k) = &driven.killed {
        let after = |at: Option<u64>| {
            at.filter(|&t| t >= k.at_ms).map_or("-".to_string(), |t| {
                format!("{:.2} s", (t - k.at_ms) as f64 / 1e3)
            })
        };
        println!(
            "recovery: worker {} killed (SIGKILL) holding {}; its item was queued again after \
             {} (lease expiry) and done after {} ({} item(s) done after a failure or expiry)",
            k.worker,
            k.item,
            after(r.requeued_at),
            after(r.recovered_at),
            r.recovered
        );
    } else if args.kill_one {
        println!("recovery: the run ended before a worker could be killed holding an item");
    }
    Ok(verdict(&run.config, r) && ok)
}
