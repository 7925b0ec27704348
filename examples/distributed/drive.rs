//! Runs worker processes against a seeded run until it is over, optionally killing one with
//! SIGKILL while it holds an item, and collects what the run found.

use crate::queue::{self, Res, Run, Scripts, Taken};
use redis::Connection;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How often the driver asks whether the run is over, and whether the worker to kill holds an
/// item.
const POLL: Duration = Duration::from_millis(2);
const AIM: Duration = Duration::from_micros(100);

/// Items done before a worker is killed, so that the kill lands in the middle of the run.
const KILL_AFTER_ITEMS: u64 = 3;

/// A worker killed in the middle of an item.
#[derive(Clone, Debug)]
pub struct Killed {
    pub worker: String,
    /// The item it held (still in its processing list after it died).
    pub item: String,
    /// Redis server time of the kill (ms).
    pub at_ms: u64,
}

/// What a driven run found.
#[derive(Clone, Debug)]
pub struct Driven {
    pub report: queue::Report,
    /// From the workers' start to the end of the run.
    pub seconds: f64,
    pub killed: Option<Killed>,
}

/// The worker processes; those still running when it is dropped (on an error) are killed.
struct Workers {
    children: Vec<(String, Child)>,
    started: usize,
}

impl Workers {
    fn start(&mut self, spawn: &impl Fn(&str) -> Command) -> Res<()> {
        let id = format!("w{}-{}", self.started, std::process::id());
        self.started += 1;
        let child = spawn(&id).spawn()?;
        self.children.push((id, child));
        Ok(())
    }

    /// Kills the oldest worker if it holds an item (once a few items are done): `None` if it
    /// holds none, else whether the item was still its own after it died (it may have finished
    /// the item in between).
    fn kill_holder(&mut self, con: &mut Connection) -> Res<Option<Option<Killed>>> {
        let Some((id, _)) = self.children.first() else {
            return Ok(None);
        };
        let done: Option<u64> = redis::cmd("HGET")
            .arg(queue::key("stats"))
            .arg("items")
            .query(con)?;
        if done.unwrap_or(0) < KILL_AFTER_ITEMS {
            return Ok(None);
        }
        let held = |con: &mut Connection| -> Res<Option<Vec<u8>>> {
            let item = redis::cmd("LINDEX")
                .arg(queue::processing(id))
                .arg(0)
                .query(con)?;
            Ok(item)
        };
        if held(con)?.is_none() {
            return Ok(None);
        }
        let (id, mut child) = self.children.remove(0);
        child.kill()?;
        child.wait()?;
        let at_ms = queue::server_ms(con)?;
        let still: Option<Vec<u8>> = redis::cmd("LINDEX")
            .arg(queue::processing(&id))
            .arg(0)
            .query(con)?;
        Ok(Some(still.map(|item| Killed {
            worker: id,
            item: queue::item_name(&item),
            at_ms,
        })))
    }

    /// Fails if a worker failed, or if none is left.
    fn check(&mut self) -> Res<()> {
        let mut alive = 0;
        for (id, child) in &mut self.children {
            match child.try_wait()? {
                None => alive += 1,
                Some(status) if !status.success() => {
                    return Err(format!("worker {id} failed: {status}").into())
                }
                Some(_) => {}
            }
        }
        if alive == 0 {
            return Err("every worker exited before the run was over".into());
        }
        Ok(())
    }

    /// Waits for every worker to exit; fails if one failed.
    fn finish(&mut self) -> Res<()> {
        for (id, mut child) in self.children.drain(..) {
            let status = child.wait()?;
            if !status.success() {
                return Err(format!("worker {id} failed: {status}").into());
            }
        }
        Ok(())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            // Best effort: an error is already on its way to the caller.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `workers` processes, `spawn(id)` making the command of worker `id`, until the run at
/// `url` is over. With `kill_one`, kills a worker that holds an item and starts another in its
/// place; if the worker finished its item between the look and the kill, the next is tried.
///
/// # Errors
/// Redis errors; a worker that fails; every worker gone before the run is over.
pub fn drive(
    url: &str,
    workers: usize,
    kill_one: bool,
    spawn: impl Fn(&str) -> Command,
) -> Res<Driven> {
    let mut con = queue::connect(url)?;
    let run = Run::load(&mut con)?;
    let scripts = Scripts::load(&mut con)?;
    let start = Instant::now();
    let mut procs = Workers {
        children: Vec::new(),
        started: 0,
    };
    for _ in 0..workers {
        procs.start(&spawn)?;
    }
    let mut killed = None;
    loop {
        let aiming = kill_one && killed.is_none();
        if aiming {
            if let Some(kill) = procs.kill_holder(&mut con)? {
                killed = kill;
                procs.start(&spawn)?;
            }
        }
        if let Taken::Done = scripts.take(&mut con, None, run.lease_ms)? {
            break;
        }
        procs.check()?;
        std::thread::sleep(if aiming { AIM } else { POLL });
    }
    let seconds = start.elapsed().as_secs_f64();
    procs.finish()?;
    Ok(Driven {
        report: queue::report(&mut con)?,
        seconds,
        killed,
    })
}
