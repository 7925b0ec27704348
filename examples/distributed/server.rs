//! A `redis-server` of the run's own: on a free loopback port, without persistence, in a
//! temporary directory, and stopped (killed and reaped, its directory removed) when dropped,
//! whether the run ends normally, fails or panics.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting server may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `redis-server`; dropping it stops the server.
pub struct RedisServer {
    child: Child,
    dir: PathBuf,
    /// `redis://127.0.0.1:PORT/`.
    pub url: String,
}

/// Makes `command`'s process be killed when the thread that spawns it ends, so that nothing is
/// left running even if this process is killed before it can stop it (Linux; elsewhere the
/// guards that stop it are all there is).
pub fn die_with_parent(command: &mut Command) -> &mut Command {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the child between fork and exec and only makes one system
        // call, which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        }
    }
    #[cfg(not(target_os = "linux"))]
    command
}

impl RedisServer {
    /// Starts `redis-server` on a free port of 127.0.0.1 and waits until it answers.
    ///
    /// # Errors
    /// When `redis-server` is not installed, or does not answer in time on any of a few ports.
    pub fn start() -> Result<RedisServer, String> {
        let mut last = String::new();
        // Another process may take the port between the probe and the server's bind: try again.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free loopback port: {e}"))?
                .port();
            let dir =
                std::env::temp_dir().join(format!("cowarena-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let mut command = Command::new("redis-server");
            command
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let child = die_with_parent(&mut command).spawn().map_err(|e| {
                format!("cannot start redis-server (apt-get install -y redis-server): {e}")
            })?;
            let mut server = RedisServer {
                child,
                dir,
                url: format!("redis://127.0.0.1:{port}/"),
            };
            match server.wait_ready() {
                Ok(()) => return Ok(server),
                Err(e) => last = e,
            }
        }
        Err(format!("redis-server did not start: {last}"))
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        let client = redis::Client::open(self.url.as_str()).map_err(|e| e.to_string())?;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("it exited with {status}"));
            }
            let answer = client
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut con| redis::cmd("PING").query::<String>(&mut con));
            match answer {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > START_TIMEOUT => return Err(e.to_string()),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Best effort: the server may have exited already, and the directory holds nothing the
        // run needs.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
