//! Local Redis topologies of real `redis-server` processes on loopback: a Sentinel group (one
//! primary, replicas, sentinels) and a Redis Cluster (primaries with replicas). The topology
//! tests and the failover benchmark start them; `docker-compose.yml`'s `sentinel` and
//! `cluster` profiles describe the same shapes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use geodispatch::store::local::{LocalRedis, LocalRedisOptions, redis_server_binary};

/// Name under which the sentinels monitor the primary.
pub const MASTER_NAME: &str = "mymaster";

async fn connect(port: u16) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let conn = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .context("connecting timed out")??;
    Ok(conn)
}

/// Send one command to the server on `port`.
pub async fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> anyhow::Result<T> {
    let mut conn = connect(port).await?;
    let value = tokio::time::timeout(Duration::from_secs(5), cmd.query_async(&mut conn))
        .await
        .context("command timed out")??;
    Ok(value)
}

/// `field:value` lines of an `INFO` section or `CLUSTER INFO` reply.
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

async fn wait_for<F, Fut>(what: &str, within: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + within;
    let mut last = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(err) => last = Some(err),
        }
        if Instant::now() > deadline {
            bail!("{what} did not happen within {within:?} (last error: {last:?})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn data_node(dir: &Path, name: &str, extra_args: Vec<String>) -> LocalRedisOptions {
    LocalRedisOptions {
        data_dir: dir.join(name),
        appendonly: false,
        extra_args,
    }
}

/// A `redis-server --sentinel` child.
#[derive(Debug)]
pub struct SentinelProcess {
    port: u16,
    child: Option<Child>,
}

impl SentinelProcess {
    async fn start(dir: &Path, primary_port: u16, quorum: usize) -> anyhow::Result<Self> {
        let port = geodispatch::store::local::free_port()?;
        let dir = dir.join(format!("sentinel-{port}"));
        std::fs::create_dir_all(&dir)?;
        let dir = std::fs::canonicalize(&dir)?;
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {}\nlogfile sentinel.log\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} {quorum}\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 4000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir.display()
            ),
        )?;
        let mut cmd = Command::new(redis_server_binary()?);
        cmd.arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        geodispatch::store::local::die_with_parent(&mut cmd);
        let child = cmd.spawn().context("spawning redis-server --sentinel")?;
        let sentinel = Self {
            port,
            child: Some(child),
        };
        wait_for(
            "a sentinel answering PING",
            Duration::from_secs(10),
            || async move {
                let pong: String = query(port, &redis::cmd("PING")).await?;
                Ok(pong == "PONG")
            },
        )
        .await?;
        Ok(sentinel)
    }

    /// The sentinel's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kill it at once.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
}

/// One primary with replicas, watched by sentinels (quorum: a majority of them).
#[derive(Debug)]
pub struct LocalSentinelGroup {
    /// The data nodes; `nodes[0]` is the first primary (failovers change which one is).
    pub nodes: Vec<LocalRedis>,
    /// The sentinels.
    pub sentinels: Vec<SentinelProcess>,
}

impl LocalSentinelGroup {
    /// Start a primary, `replicas` replicas of it and `sentinels` sentinels in `dir`, and wait
    /// until the replicas are in sync and every sentinel knows every replica and sentinel.
    /// `extra_args` go to every data node (e.g. `--appendonly yes`).
    pub async fn start(
        dir: &Path,
        replicas: usize,
        sentinels: usize,
        extra_args: Vec<String>,
    ) -> anyhow::Result<Self> {
        let primary = LocalRedis::start(data_node(dir, "primary", extra_args.clone())).await?;
        let p = primary.port();
        let mut nodes = vec![primary];
        for i in 0..replicas {
            let mut args = extra_args.clone();
            args.extend([
                "--replicaof".to_owned(),
                "127.0.0.1".to_owned(),
                p.to_string(),
            ]);
            nodes.push(LocalRedis::start(data_node(dir, &format!("replica-{i}"), args)).await?);
        }
        for node in &nodes[1..] {
            let port = node.port();
            wait_for(
                "a replica in sync",
                Duration::from_secs(15),
                || async move {
                    let info: String = query(port, redis::cmd("INFO").arg("replication")).await?;
                    Ok(info_field(&info, "master_link_status").as_deref() == Some("up"))
                },
            )
            .await?;
        }
        let quorum = sentinels / 2 + 1;
        let mut list = Vec::with_capacity(sentinels);
        for _ in 0..sentinels {
            list.push(SentinelProcess::start(dir, p, quorum).await?);
        }
        for s in &list {
            let port = s.port();
            wait_for(
                "a sentinel discovering the group",
                Duration::from_secs(20),
                || async move {
                    let fields: Vec<String> =
                        query(port, redis::cmd("SENTINEL").arg("MASTER").arg(MASTER_NAME)).await?;
                    let get = |name: &str| {
                        fields
                            .iter()
                            .position(|f| f == name)
                            .and_then(|i| fields.get(i + 1))
                            .and_then(|v| v.parse::<usize>().ok())
                    };
                    Ok(get("num-slaves") == Some(replicas)
                        && get("num-other-sentinels") == Some(sentinels - 1))
                },
            )
            .await?;
        }
        Ok(Self {
            nodes,
            sentinels: list,
        })
    }

    /// The sentinels' addresses, as `redis_sentinels` takes them.
    pub fn sentinel_addrs(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the primary the first live sentinel names.
    pub async fn primary_port(&self) -> anyhow::Result<u16> {
        for s in &self.sentinels {
            if s.child.is_none() {
                continue;
            }
            let addr: Option<(String, u16)> = query(
                s.port(),
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(MASTER_NAME),
            )
            .await
            .ok()
            .flatten();
            if let Some((_, port)) = addr {
                return Ok(port);
            }
        }
        bail!("no sentinel names a primary")
    }

    /// The data node listening on `port`.
    pub fn node_mut(&mut self, port: u16) -> Option<&mut LocalRedis> {
        self.nodes.iter_mut().find(|n| n.port() == port)
    }

    /// Wait until the sentinels name a primary other than `old` and that node has
    /// taken the role; returns its port.
    pub async fn wait_failover(&self, old: u16, within: Duration) -> anyhow::Result<u16> {
        let mut new = None;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(port) = self.primary_port().await
                && port != old
            {
                let role: anyhow::Result<String> =
                    query(port, redis::cmd("INFO").arg("replication"))
                        .await
                        .map(|info: String| info_field(&info, "role").unwrap_or_default());
                if role.ok().as_deref() == Some("master") {
                    new = Some(port);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        new.with_context(|| format!("no failover away from port {old} within {within:?}"))
    }
}

/// A Redis Cluster of `primaries` primaries with `replicas` replicas each.
#[derive(Debug)]
pub struct LocalCluster {
    /// Every node, primaries and replicas.
    pub nodes: Vec<LocalRedis>,
    dir: PathBuf,
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> anyhow::Result<u16> {
    for _ in 0..200 {
        let port = 20_000 + (rand_u16() % 25_000);
        let ok = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok();
        if ok {
            return Ok(port);
        }
    }
    bail!("no free port pair for a cluster node")
}

fn rand_u16() -> u16 {
    let bytes = uuid::Uuid::new_v4();
    u16::from_le_bytes([bytes.as_bytes()[0], bytes.as_bytes()[1]])
}

impl LocalCluster {
    /// Start the nodes in `dir`, join them with `redis-cli --cluster create`, and wait until
    /// every node reports `cluster_state:ok` and every replica is attached.
    pub async fn start(dir: &Path, primaries: usize, replicas: usize) -> anyhow::Result<Self> {
        let total = primaries * (replicas + 1);
        let mut nodes = Vec::with_capacity(total);
        for i in 0..total {
            let mut last = None;
            for _ in 0..5 {
                let port = free_cluster_port()?;
                let options = data_node(
                    dir,
                    &format!("node-{i}"),
                    vec![
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        "nodes.conf".into(),
                        "--cluster-node-timeout".into(),
                        "2000".into(),
                    ],
                );
                match LocalRedis::start_on(port, options).await {
                    Ok(n) => {
                        last = None;
                        nodes.push(n);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                return Err(e.context("starting a cluster node"));
            }
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port()));
        }
        create
            .arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes")
            .stdin(Stdio::null());
        let out = create
            .output()
            .await
            .context("running redis-cli --cluster create (package redis-tools)")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let cluster = Self {
            nodes,
            dir: dir.to_owned(),
        };
        cluster.wait_ok(total, primaries * replicas).await?;
        Ok(cluster)
    }

    async fn wait_ok(&self, total: usize, replicas: usize) -> anyhow::Result<()> {
        for n in &self.nodes {
            let port = n.port();
            wait_for("cluster_state:ok", Duration::from_secs(30), || async move {
                let info: String = query(port, redis::cmd("CLUSTER").arg("INFO")).await?;
                let nodes: String = query(port, redis::cmd("CLUSTER").arg("NODES")).await?;
                let linked = nodes.lines().filter(|l| l.contains(" connected")).count();
                // Every node must also see every replica as one (roles spread by gossip).
                let seen_replicas = nodes
                    .lines()
                    .filter(|l| {
                        l.split_whitespace()
                            .nth(2)
                            .is_some_and(|f| f.contains("slave"))
                    })
                    .count();
                Ok(info_field(&info, "cluster_state").as_deref() == Some("ok")
                    && info_field(&info, "cluster_slots_ok").as_deref() == Some("16384")
                    && linked == total
                    && seen_replicas == replicas)
            })
            .await?;
        }
        Ok(())
    }

    /// Seed node addresses, as `redis_cluster_nodes` takes them.
    pub fn seed_nodes(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `(node id, port, is primary, slot ranges)` of every node, from `CLUSTER NODES`.
    pub async fn topology(&self) -> anyhow::Result<Vec<(String, u16, bool, Vec<(u16, u16)>)>> {
        let port = self.nodes[0].port();
        let text: String = query(port, redis::cmd("CLUSTER").arg("NODES")).await?;
        let mut out = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                continue;
            }
            let port: u16 = f[1]
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .context("CLUSTER NODES address")?;
            let primary = f[2].contains("master");
            let ranges = f[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .filter_map(|r| {
                    let mut it = r.split('-');
                    let a: u16 = it.next()?.parse().ok()?;
                    let b: u16 = it.next().map_or(Some(a), |b| b.parse().ok())?;
                    Some((a, b))
                })
                .collect();
            out.push((f[0].to_owned(), port, primary, ranges));
        }
        Ok(out)
    }

    /// The port of the primary that owns `slot`.
    pub async fn owner_of(&self, slot: u16) -> anyhow::Result<(String, u16)> {
        self.topology()
            .await?
            .into_iter()
            .find(|(_, _, primary, ranges)| {
                *primary && ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .map(|(id, port, _, _)| (id, port))
            .with_context(|| format!("no primary owns slot {slot}"))
    }

    /// Move `slot` (with its keys) from its owner to the primary listening on `to_port`, the
    /// way `redis-cli --cluster reshard` does: `SETSLOT IMPORTING/MIGRATING`, `MIGRATE` in
    /// batches, then `SETSLOT NODE` on every primary. Clients meanwhile get `ASK` (and
    /// `TRYAGAIN` for multi-key commands whose keys are split) and retry.
    pub async fn move_slot(&self, slot: u16, to_port: u16) -> anyhow::Result<usize> {
        let (from_id, from_port) = self.owner_of(slot).await?;
        let topo = self.topology().await?;
        let to_id = topo
            .iter()
            .find(|(_, p, primary, _)| *p == to_port && *primary)
            .map(|(id, ..)| id.clone())
            .context("the target is not a primary")?;
        if from_port == to_port {
            return Ok(0);
        }
        let setslot = |state: &str, id: &str| {
            let mut c = redis::cmd("CLUSTER");
            c.arg("SETSLOT").arg(slot).arg(state).arg(id);
            c
        };
        let _: () = query(to_port, &setslot("IMPORTING", &from_id))
            .await
            .with_context(|| format!("SETSLOT IMPORTING on {to_port} ({topo:?})"))?;
        let _: () = query(from_port, &setslot("MIGRATING", &to_id))
            .await
            .with_context(|| format!("SETSLOT MIGRATING on {from_port}"))?;
        let mut moved = 0;
        loop {
            let keys: Vec<String> = query(
                from_port,
                redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(100),
            )
            .await?;
            if keys.is_empty() {
                break;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg("127.0.0.1")
                .arg(to_port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("REPLACE")
                .arg("KEYS")
                .arg(&keys);
            let _: () = query(from_port, &migrate).await?;
            moved += keys.len();
        }
        for (_, port, primary, _) in &topo {
            if *primary {
                let _: () = query(*port, &setslot("NODE", &to_id))
                    .await
                    .with_context(|| format!("SETSLOT NODE on {port} ({topo:?})"))?;
            }
        }
        Ok(moved)
    }

    /// The directory the nodes keep their data in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
