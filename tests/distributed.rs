//! The distributed exploration of `examples/distributed.rs` on a `redis-server` of the test's own
//! (on a free loopback port, stopped at the end even when a test fails): three worker processes,
//! one killed with SIGKILL in the middle of an item, find exactly what the single-process search
//! finds; a damaged blob is an error that names its item, which is retried and then set aside,
//! and the run says so. The workers are this test binary, run again with `worker_process`.
//!
//! `redis-server` must be installed (`apt-get install -y redis-server`; `.ci/run` installs it):
//! without it the tests fail rather than skip.

// The `Vec` copy and undo log strategies are `model_check`'s baselines; the reference here is
// the single-process arena search.
#[allow(dead_code)]
#[path = "../examples/model_check/checker.rs"]
mod checker;
#[path = "../examples/distributed/drive.rs"]
mod drive;
#[path = "../examples/distributed/queue.rs"]
mod queue;
#[path = "../examples/distributed/server.rs"]
mod server;
#[path = "../examples/distributed/worker.rs"]
mod worker;

use checker::{check, replay, Config, CowArena, Step};
use queue::{Item, Run};
use server::RedisServer;
use std::process::{Command, Stdio};

/// Set in the worker processes: `URL ID [ITEMS]`.
const WORKER_ENV: &str = "COWARENA_DISTRIBUTED_WORKER";

/// Small enough for a loaded 2-core machine: 854 states; items of two levels, so that there are
/// a few hundred of them and a kill lands in the middle of the run.
fn small_run(broken: bool) -> Run {
    Run {
        config: Config {
            procs: 3,
            // 256 KiB: a stripe of 8 slots lands on 8 different pages.
            buffer_words: 1 << 16,
            stripe: 8,
            depth: 20,
            broken,
        },
        subtree: 2,
        lease_ms: 1000,
    }
}

fn seed(url: &str, run: &Run) {
    let (base, fp) = queue::initial(&run.config).unwrap();
    let mut con = queue::connect(url).unwrap();
    queue::seed(&mut con, run, &base, fp).unwrap();
}

fn worker_command(url: &str, id: &str, items: Option<u64>) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "worker_process",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(
        WORKER_ENV,
        format!(
            "{url} {id} {}",
            items.map_or(String::new(), |n| n.to_string())
        ),
    )
    .stdout(Stdio::null());
    server::die_with_parent(&mut c);
    c
}

/// Run by the tests below in worker processes; does nothing otherwise.
#[test]
fn worker_process() {
    let Ok(args) = std::env::var(WORKER_ENV) else {
        return;
    };
    let mut args = args.split(' ');
    let (url, id) = (args.next().unwrap(), args.next().unwrap());
    let items = args.next().and_then(|n| n.parse().ok());
    let mut w = worker::Worker::new(url, id).unwrap();
    w.work(items).unwrap();
    println!("{id}: {:?}", w.stats);
}

#[test]
fn three_workers_one_killed_in_the_middle_of_an_item_lose_nothing() {
    let server = RedisServer::start().unwrap();
    let run = small_run(false);
    let single = check::<CowArena>(&run.config);
    seed(&server.url, &run);
    let driven = drive::drive(&server.url, 3, true, |id| {
        worker_command(&server.url, id, None)
    })
    .unwrap();
    let r = &driven.report;
    let killed = driven
        .killed
        .as_ref()
        .expect("a worker was killed while it held an item");
    assert_eq!(
        (r.states, r.transitions, r.violations),
        (single.states, single.transitions, single.violations),
        "{r:?}"
    );
    assert!(r.aside.is_empty(), "{:?}", r.aside);
    assert!(r.items > 100 && r.pushed + 1 == r.items, "{r:?}");
    // The killed worker's item went back to the queue when its lease expired, and was done.
    let requeued = r.requeued_at.expect("an item was queued again");
    let recovered = r.recovered_at.expect("a requeued item was done");
    assert!(r.recovered >= 1 && requeued >= killed.at_ms && recovered >= requeued);
    println!(
        "{} killed holding {}; queued again after {} ms, done after {} ms; {} items in {:.2} s",
        killed.worker,
        killed.item,
        requeued - killed.at_ms,
        recovered - killed.at_ms,
        r.items,
        driven.seconds
    );
    // What the workers shipped: deltas of the few pages that differ from the base.
    // Each is the changed pages, a page of metadata and a short item.
    let page = cowarena::page_size() as u64;
    assert!(
        r.shipped_bytes <= (r.shipped_pages + r.pushed) * page + r.pushed * 128,
        "{r:?}"
    );
    // Less than the states whole: the pages they share with the base stay behind.
    assert!(r.shipped_bytes < r.whole_bytes, "{r:?}");
    assert!(r.trace.is_none());
}

#[test]
fn the_broken_lock_is_found_by_workers_as_by_one_process() {
    let server = RedisServer::start().unwrap();
    let mut run = small_run(true);
    run.config.depth = 16;
    run.subtree = 4;
    let single = check::<CowArena>(&run.config);
    seed(&server.url, &run);
    let driven = drive::drive(&server.url, 2, false, |id| {
        worker_command(&server.url, id, None)
    })
    .unwrap();
    let r = &driven.report;
    assert!(single.violations > 0);
    assert_eq!(
        (r.states, r.transitions, r.violations),
        (single.states, single.transitions, single.violations),
    );
    let trace = r.trace.as_ref().expect("a violation's trace");
    assert_eq!(replay(&run.config, trace).last(), Some(&Step::Violation));
    assert!(driven.killed.is_none());
}

/// Flips a byte in the last page of the blob of `key`.
fn damage(con: &mut redis::Connection, key: &str) {
    let len: usize = redis::cmd("STRLEN").arg(key).query(con).unwrap();
    let at = len - 100;
    let byte: Vec<u8> = redis::cmd("GETRANGE")
        .arg(key)
        .arg(at)
        .arg(at)
        .query(con)
        .unwrap();
    redis::cmd("SETRANGE")
        .arg(key)
        .arg(at)
        .arg(&[byte[0] ^ 0x40][..])
        .exec(con)
        .unwrap();
}

#[test]
fn a_damaged_blob_is_an_error_naming_its_item_retried_then_set_aside() {
    let server = RedisServer::start().unwrap();
    let run = small_run(false);
    seed(&server.url, &run);
    let mut con = queue::connect(&server.url).unwrap();
    // One item done: its new items and their blobs wait in the queue.
    let status = worker_command(&server.url, "first", Some(1))
        .status()
        .unwrap();
    assert!(status.success());
    let raw: Vec<u8> = redis::cmd("LINDEX")
        .arg(queue::key("queue"))
        .arg(0)
        .query(&mut con)
        .unwrap();
    let item = Item::decode(&raw).unwrap();
    damage(&mut con, &queue::blob_key(item.state));
    let driven = drive::drive(&server.url, 2, false, |id| {
        worker_command(&server.url, id, None)
    })
    .unwrap();
    let r = &driven.report;
    assert_eq!(r.aside.len(), 1, "{:?}", r.aside);
    let (name, why) = &r.aside[0];
    assert_eq!(*name, item.name());
    assert!(
        why.starts_with(&item.name()) && why.contains("checksum mismatch"),
        "{why}"
    );
    // Retried: three attempts, then aside; the rest of the run went on.
    let attempts: u32 = redis::cmd("HGET")
        .arg(queue::key("attempts"))
        .arg(sha1_of(&mut con, &raw))
        .query(&mut con)
        .unwrap();
    assert_eq!(attempts, queue::MAX_ATTEMPTS);
    assert!(r.items > 10 && r.states > 100, "{r:?}");
}

/// The SHA-1 Redis names an item by in `attempts`.
fn sha1_of(con: &mut redis::Connection, bytes: &[u8]) -> String {
    redis::cmd("EVAL")
        .arg("return redis.sha1hex(ARGV[1])")
        .arg(0)
        .arg(bytes)
        .query(con)
        .unwrap()
}

#[test]
fn a_damaged_base_sets_the_first_item_aside() {
    let server = RedisServer::start().unwrap();
    let run = small_run(false);
    seed(&server.url, &run);
    let mut con = queue::connect(&server.url).unwrap();
    let raw: Vec<u8> = redis::cmd("LINDEX")
        .arg(queue::key("queue"))
        .arg(0)
        .query(&mut con)
        .unwrap();
    let base = Item::decode(&raw).unwrap().state;
    damage(&mut con, &queue::blob_key(base));
    let driven = drive::drive(&server.url, 1, false, |id| {
        worker_command(&server.url, id, None)
    })
    .unwrap();
    let r = &driven.report;
    assert_eq!(r.aside.len(), 1);
    assert!(
        r.aside[0].1.contains(&format!("base {base}")) && r.aside[0].1.contains("checksum"),
        "{:?}",
        r.aside
    );
    assert_eq!((r.states, r.items), (1, 0));
}
