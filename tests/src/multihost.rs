//! A dramaq site spread over simulated hosts ([`crate::netns`]): a Redis Cluster of three
//! primaries and three replicas (one host each), the sandbox on a host of its own, and worker
//! hosts running one or more `dramaq-worker` processes. The test itself and the `dramaq` CLI run
//! in the root namespace and reach everything through the bridge.
//!
//! Used by `tests/tests/multihost.rs`: whole hosts are killed, cut off and brought back, and the
//! cluster loses primaries, while the helpers here read what Redis and the sandbox hold.

use crate::netns::{Host, Net};
use crate::{bin, spawn_sandbox, test_config, with_test_env, Proc, SandboxArgs};
use anyhow::{bail, Context, Result};
use dramaq_common::keys::AccountKeys;
use dramaq_common::model::TaskRecord;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Port every Redis node listens on (each host has its own address).
pub const REDIS_PORT: u16 = 6379;

/// One Redis Cluster node on its own host.
pub struct RedisNode {
    pub host: Host,
    pub proc: Proc,
    _dir: tempfile::TempDir,
}

impl RedisNode {
    pub fn addr(&self) -> String {
        format!("{}:{REDIS_PORT}", self.host.ip)
    }

    /// A plain connection to this node (not cluster-aware).
    pub fn connection(&self) -> Result<redis::Connection> {
        let client = redis::Client::open(format!("redis://{}", self.addr()))?;
        Ok(client.get_connection_with_timeout(Duration::from_secs(2))?)
    }
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub id: String,
    /// `ip:port`.
    pub addr: String,
    pub primary: bool,
    pub failed: bool,
    /// For a replica: the id of its primary.
    pub primary_id: Option<String>,
    /// Slot ranges served (primaries).
    pub slots: Vec<(u16, u16)>,
}

/// A worker host and the worker processes running on it.
pub struct WorkerHost {
    pub host: Host,
    pub procs: Vec<Proc>,
}

impl WorkerHost {
    /// Whether worker id `id` (`<hostname>-<pid>-<rand>`) belongs to a process of this host.
    pub fn owns(&self, id: &str) -> bool {
        self.procs
            .iter()
            .any(|p| id.contains(&format!("-{}-", p.child.id())))
    }
}

/// Everything a multi-host test runs. Fields drop in order: processes first, the network last.
pub struct Site {
    node_timeout_ms: u64,
    pub workers: Vec<WorkerHost>,
    pub sandbox: Proc,
    pub sandbox_url: String,
    pub redis: Vec<RedisNode>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub out: PathBuf,
    pub net: Net,
}

impl Site {
    /// A six-node cluster (`cluster-node-timeout` `node_timeout_ms`), the sandbox, and
    /// `worker_hosts` empty worker hosts (start processes with [`Site::start_worker`]).
    pub fn start(sandbox: SandboxArgs, worker_hosts: usize, node_timeout_ms: u64) -> Result<Site> {
        let mut net = Net::new()?;
        let dir = tempfile::tempdir()?;
        let mut redis = Vec::new();
        for i in 0..6 {
            let host = net.host(&format!("redis{i}"))?;
            let data = tempfile::tempdir()?;
            let proc = spawn_redis(&net, &host, data.path(), node_timeout_ms)?;
            redis.push(RedisNode {
                host,
                proc,
                _dir: data,
            });
        }
        let sandbox_host = net.host("sandbox")?;
        let (sandbox, sandbox_url) = spawn_sandbox(
            net.command(&sandbox_host, bin("dramaq-sandbox")),
            &format!("{}:8787", sandbox_host.ip),
            &sandbox,
        )?;
        let mut workers = Vec::new();
        for i in 0..worker_hosts {
            workers.push(WorkerHost {
                host: net.host(&format!("worker{i}"))?,
                procs: Vec::new(),
            });
        }
        let out = dir.path().join("out");
        let config = dir.path().join("dramaq.toml");
        let mut site = Site {
            node_timeout_ms,
            workers,
            sandbox,
            sandbox_url,
            redis,
            dir,
            config,
            out,
            net,
        };
        site.create_cluster()?;
        std::fs::write(
            &site.config,
            test_config(&site.sandbox_url, &site.url(), &site.out)?,
        )?;
        Ok(site)
    }

    fn create_cluster(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &self.redis {
            while node
                .connection()
                .and_then(|mut c| Ok(redis::cmd("PING").query::<String>(&mut c)?))
                .is_err()
            {
                if Instant::now() > deadline {
                    bail!("redis node {} did not answer", node.addr());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let addrs: Vec<String> = self.redis.iter().map(RedisNode::addr).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Ready when every node agrees the cluster is ok and every replica is in sync.
        loop {
            let ready = self.redis.iter().all(|n| {
                let Ok(mut c) = n.connection() else {
                    return false;
                };
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut c)
                    .unwrap_or_default();
                let repl: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut c)
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
                    && (repl.contains("role:master") || repl.contains("master_link_status:up"))
            });
            if ready && self.view()?.iter().filter(|n| n.primary).count() == 3 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the cluster did not become ready");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Start node `i` again on its host, from its data folder (its `nodes.conf` makes it rejoin
    /// the cluster; a primary that was replaced comes back as a replica of its successor). Its
    /// link is plugged back first.
    pub fn restart_redis(&mut self, i: usize) -> Result<()> {
        let node = &self.redis[i];
        self.net.set_link(&node.host, true)?;
        let proc = spawn_redis(
            &self.net,
            &node.host,
            node._dir.path(),
            self.node_timeout_ms,
        )?;
        self.redis[i].proc = proc;
        Ok(())
    }

    /// Add `lines` at the top of the config's `[redis]` table (e.g. `durable_submit = …`),
    /// before any worker starts.
    pub fn redis_settings(&self, lines: &str) -> Result<()> {
        let text = std::fs::read_to_string(&self.config)?;
        if !text.contains("[redis]\n") {
            bail!("the test config has no [redis] table");
        }
        std::fs::write(
            &self.config,
            text.replacen("[redis]\n", &format!("[redis]\n{lines}\n"), 1),
        )?;
        Ok(())
    }

    /// `redis+cluster://…` with every node as a seed.
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self.redis.iter().map(RedisNode::addr).collect();
        format!("redis+cluster://{}", addrs.join(","))
    }

    /// The cluster as the first reachable node sees it.
    pub fn view(&self) -> Result<Vec<NodeView>> {
        let text: String = self.any_node(|c| Ok(redis::cmd("CLUSTER").arg("NODES").query(c)?))?;
        Ok(text.lines().filter_map(parse_node_line).collect())
    }

    /// Run `f` on the first node that answers.
    pub fn any_node<T>(&self, f: impl Fn(&mut redis::Connection) -> Result<T>) -> Result<T> {
        let mut last = None;
        for node in &self.redis {
            match node.connection().and_then(|mut c| f(&mut c)) {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no redis node")))
    }

    /// The Redis clock in ms (any live node; the hosts share the machine's clock).
    pub fn redis_now_ms(&self) -> Result<i64> {
        self.any_node(|c| {
            let (s, us): (i64, i64) = redis::cmd("TIME").query(c)?;
            Ok(s * 1000 + us / 1000)
        })
    }

    /// A cluster-aware connection (follows MOVED, finds new primaries).
    pub fn cluster(&self) -> Result<redis::cluster::ClusterConnection> {
        let nodes: Vec<String> = self
            .redis
            .iter()
            .map(|n| format!("redis://{}", n.addr()))
            .collect();
        Ok(redis::cluster::ClusterClient::builder(nodes)
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(Duration::from_secs(2))
            .build()?
            .get_connection()?)
    }

    /// The node whose host is `addr` (`ip:port`).
    pub fn node(&self, addr: &str) -> Option<&RedisNode> {
        self.redis.iter().find(|n| n.addr() == addr)
    }

    /// The task records held (leased) in `account` right now, with their lease expiry.
    pub fn leased(
        &self,
        conn: &mut redis::cluster::ClusterConnection,
        account: &str,
    ) -> Result<Vec<(TaskRecord, i64)>> {
        let keys = AccountKeys::new(account);
        let held: Vec<(String, i64)> = redis::cmd("ZRANGE")
            .arg(keys.leases())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(conn)?;
        let mut out = Vec::new();
        for (id, expiry) in held {
            if let Some(rec) = record(conn, account, &id)? {
                out.push((rec, expiry));
            }
        }
        Ok(out)
    }

    /// Start one worker process on worker host `i`; its log (level `warn`) goes to
    /// `<dir>/worker<i>-<n>.log`.
    pub fn start_worker(&mut self, i: usize, args: &[&str]) -> Result<()> {
        let n = self.workers[i].procs.len();
        let log = std::fs::File::create(self.log_path(i, n))?;
        let cmd = self
            .net
            .command(&self.workers[i].host, bin("dramaq-worker"));
        let child = with_test_env(cmd, &self.config)
            .env("RUST_LOG", "warn")
            .arg("run")
            .args(["--metrics-addr", &format!("0.0.0.0:{}", 9464 + n)])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.workers[i].procs.push(Proc {
            child,
            name: format!("worker{i}-{n}"),
        });
        Ok(())
    }

    pub fn log_path(&self, host: usize, n: usize) -> PathBuf {
        self.dir.path().join(format!("worker{host}-{n}.log"))
    }

    /// Everything worker host `i`'s processes logged so far.
    pub fn logs(&self, i: usize) -> String {
        (0..self.workers[i].procs.len())
            .map(|n| std::fs::read_to_string(self.log_path(i, n)).unwrap_or_default())
            .collect()
    }

    /// `dramaq <args> --json` from the root namespace, parsed.
    pub fn dramaq_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let out = with_test_env(Command::new(bin("dramaq")), &self.config)
            .args(args)
            .arg("--json")
            .output()?;
        if !out.status.success() {
            bail!(
                "dramaq {args:?} exited {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("parsing {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Write a season script and enqueue it; returns the number of new tasks.
    pub fn enqueue(&self, name: &str, script: &str) -> Result<u64> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, script)?;
        let v = self.dramaq_json(&["enqueue", path.to_str().unwrap_or_default()])?;
        Ok(v["new"].as_u64().unwrap_or(0))
    }

    /// Wait until no task of `season` can move any more (`status --wait`'s judgement).
    pub fn wait_done(&self, season: &str, timeout: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            // `status` may fail while the cluster fails over: that only means "not yet".
            if let Ok(st) = self.dramaq_json(&["status", "--season", season]) {
                if crate::season_finished(&st) {
                    return Ok(st);
                }
                if Instant::now() > deadline {
                    bail!("season {season} not finished after {timeout:?}: {st}");
                }
            } else if Instant::now() > deadline {
                bail!("season {season}: status kept failing for {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The sandbox's submission counters (`/admin/stats`).
    pub fn sandbox_stats(&self) -> Result<serde_json::Value> {
        let body = crate::http::blocking_get(&format!("{}/admin/stats", self.sandbox_url))?;
        Ok(serde_json::from_str(&body)?)
    }
}

fn spawn_redis(
    net: &Net,
    host: &Host,
    dir: &std::path::Path,
    node_timeout_ms: u64,
) -> Result<Proc> {
    let child = net
        .command(host, "redis-server")
        .args(["--port", &REDIS_PORT.to_string(), "--bind", "0.0.0.0"])
        .args(["--protected-mode", "no", "--save", "", "--appendonly", "no"])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-node-timeout", &node_timeout_ms.to_string()])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting redis-server in a namespace")?;
    Ok(Proc {
        child,
        name: format!("redis on {}", host.name),
    })
}

/// One task record through a cluster connection.
pub fn record(
    conn: &mut redis::cluster::ClusterConnection,
    account: &str,
    id: &str,
) -> Result<Option<TaskRecord>> {
    let raw: Option<Vec<u8>> = redis::cmd("GET")
        .arg(AccountKeys::new(account).task(id))
        .query(conn)?;
    raw.map(|b| TaskRecord::from_msgpack(&b).context("decoding a task record"))
        .transpose()
}

/// `<id> <ip:port@cport[,hostname]> <flags> <primary> <ping> <pong> <epoch> <link> <slot>…`
fn parse_node_line(line: &str) -> Option<NodeView> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 8 {
        return None;
    }
    let addr = f[1].split('@').next()?.to_string();
    let flags = f[2];
    let slots = f[8..]
        .iter()
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|x| (x, x)),
        })
        .collect();
    Some(NodeView {
        id: f[0].to_string(),
        addr,
        primary: flags.contains("master"),
        failed: flags.contains("fail") && !flags.contains("fail?"),
        primary_id: (f[3] != "-").then(|| f[3].to_string()),
        slots,
    })
}

/// The cluster slot of `key` (CRC16 of its hash tag, as Redis computes it).
pub fn key_slot(conn: &mut redis::Connection, key: &str) -> Result<u16> {
    Ok(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(conn)?)
}
