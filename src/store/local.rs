//! A `redis-server` child process on a free loopback port.
//!
//! `serve` uses it when no Redis URL is configured (data in `redis_data_dir`, AOF on), and the
//! integration tests use it to give each test its own real Redis. The child is killed if the
//! parent dies (Linux `PR_SET_PDEATHSIG`), so a crashed test leaves no stray server behind.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// How to start a local Redis.
#[derive(Debug, Clone)]
pub struct LocalRedisOptions {
    /// Working directory for AOF/RDB files and the log.
    pub data_dir: PathBuf,
    /// Turn the append-only file on (durable restarts) or keep everything in memory.
    pub appendonly: bool,
    /// Extra `--name value` arguments passed to `redis-server`.
    pub extra_args: Vec<String>,
}

/// A running `redis-server` child owned by this process.
#[derive(Debug)]
pub struct LocalRedis {
    port: u16,
    options: LocalRedisOptions,
    child: Option<Child>,
}

/// Find `redis-server` on `PATH`.
pub fn redis_server_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("redis-server");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "`redis-server` was not found on PATH. Install it (Debian/Ubuntu: `apt-get install -y redis-server`, \
         macOS: `brew install redis`) or point GEODISPATCH_REDIS_URL at an existing Redis"
    )
}

/// Have the child started by `cmd` killed when this process dies (Linux `PR_SET_PDEATHSIG`),
/// so a crashed test or benchmark leaves no stray server behind.
pub fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// Send `sig` to a running child (e.g. SIGSTOP / SIGCONT); nothing when it is not running.
pub fn signal_child(child: Option<&Child>, sig: i32) {
    if let Some(pid) = child.and_then(|c| c.id()) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(pid as i32, sig);
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding an ephemeral port")?;
    Ok(listener.local_addr()?.port())
}

impl LocalRedis {
    /// Start `redis-server` on a free loopback port and wait until it answers PING.
    pub async fn start(options: LocalRedisOptions) -> anyhow::Result<Self> {
        let mut last_err = None;
        // A port picked free can be taken by someone else before redis binds it: retry.
        for _ in 0..5 {
            let port = free_port()?;
            match Self::start_on(port, options.clone()).await {
                Ok(redis) => return Ok(redis),
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    /// Start `redis-server` on `port` (for restarting a stopped server on the same address).
    pub async fn start_on(port: u16, options: LocalRedisOptions) -> anyhow::Result<Self> {
        let binary = redis_server_binary()?;
        std::fs::create_dir_all(&options.data_dir)
            .with_context(|| format!("creating redis data dir {}", options.data_dir.display()))?;
        let data_dir = std::fs::canonicalize(&options.data_dir)?;
        let mut cmd = Command::new(binary);
        cmd.arg("--port")
            .arg(port.to_string())
            .args([
                "--bind",
                "127.0.0.1",
                "--protected-mode",
                "yes",
                "--daemonize",
                "no",
            ])
            .arg("--dir")
            .arg(&data_dir)
            .args(["--logfile", "redis.log", "--save", ""])
            .args([
                "--appendonly",
                if options.appendonly { "yes" } else { "no" },
            ])
            .args(&options.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().context("spawning redis-server")?;
        let mut redis = LocalRedis {
            port,
            options,
            child: Some(child),
        };
        redis.wait_ready(Duration::from_secs(10)).await?;
        Ok(redis)
    }

    async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let client = redis::Client::open(self.url())?;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "redis-server exited with {status} while starting on port {} (see {})",
                    self.port,
                    self.log_path().display()
                );
            }
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "redis-server on port {} did not answer within {within:?}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Give the server's main thread the real-time policy `SCHED_FIFO` (priority 10), so that
    /// on a machine it shares with its clients no ordinary process preempts it while it runs
    /// a command, as a production Redis with a core of its own. Needs root (or
    /// `CAP_SYS_NICE`).
    pub fn set_realtime(&self) -> anyhow::Result<()> {
        let pid = self
            .child
            .as_ref()
            .and_then(|c| c.id())
            .context("redis-server is not running")?;
        let param = libc::sched_param { sched_priority: 10 };
        // SAFETY: plain system call on our own child's pid with a valid parameter struct.
        let rc = unsafe { libc::sched_setscheduler(pid as libc::pid_t, libc::SCHED_FIFO, &param) };
        anyhow::ensure!(
            rc == 0,
            "sched_setscheduler(SCHED_FIFO) on redis-server: {}",
            std::io::Error::last_os_error()
        );
        Ok(())
    }

    /// The server's log file.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.options.data_dir.join("redis.log")
    }

    /// Wait for the child to exit on its own (used by the supervisor to notice a crash).
    pub(crate) async fn wait_exit(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        match self.child.as_mut() {
            Some(child) => Ok(child.wait().await?),
            None => bail!("not running"),
        }
    }

    /// Stop the server: `SHUTDOWN` (which flushes the AOF), then kill if it lingers.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(client) = redis::Client::open(self.url())
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
        {
            let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query_async(&mut conn).await;
        }
        match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                child.kill().await?;
            }
        }
        Ok(())
    }

    /// Send `sig` to the server (e.g. SIGSTOP / SIGCONT to stall it).
    pub fn signal(&self, sig: i32) {
        signal_child(self.child.as_ref(), sig);
    }

    /// Kill the server at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Start it again on the same port with the same options after [`stop`](Self::stop).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        let fresh = Self::start_on(self.port, self.options.clone()).await?;
        *self = fresh;
        Ok(())
    }
}
