//! Throwaway `redis-server` processes for tests and the demo: standalone or a 3-primary cluster,
//! each on free ports in a temporary directory, killed when dropped.
//!
//! No container engine is assumed; tests never touch a shared Redis on 6379.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error(
        "redis-server not found on PATH: install it with `apt-get install -y redis-server` \
         (or set DRAMAQ_REDIS_URL to a running server)"
    )]
    NoRedisServer,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("redis-server on port {port} did not answer: {detail}")]
    NotReady { port: u16, detail: String },
}

/// A port that was free a moment ago. Binding may still race with other processes; callers
/// retry on failure.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One redis-server process.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Result<RedisServer, TestkitError> {
        Self::start_with(&[])
    }

    /// Start with extra `--name value` arguments.
    pub fn start_with(extra: &[&str]) -> Result<RedisServer, TestkitError> {
        let mut last = None;
        for _ in 0..5 {
            match Self::try_start(extra) {
                Ok(s) => return Ok(s),
                Err(TestkitError::NotReady { port, detail }) => {
                    last = Some(TestkitError::NotReady { port, detail })
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(TestkitError::NoRedisServer))
    }

    fn try_start(extra: &[&str]) -> Result<RedisServer, TestkitError> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TestkitError::NoRedisServer)
            }
            Err(e) => return Err(e.into()),
        };
        let mut server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<(), TestkitError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let url = self.url();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(TestkitError::NotReady {
                    port: self.port,
                    detail: format!("exited with {status}"),
                });
            }
            let ok = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            match ok {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(TestkitError::NotReady {
                        port: self.port,
                        detail: e.to_string(),
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Every key in the server (tests assert on what dramaq left behind).
    pub fn keys(&self) -> Vec<String> {
        redis::Client::open(self.url().as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("KEYS").arg("*").query(&mut c))
            .unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A 3-primary Redis Cluster on free ports.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Result<RedisCluster, TestkitError> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "5000",
            ])?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .arg("--cluster-replicas")
            .arg("0")
            .arg("--cluster-yes")
            .output()?;
        if !out.status.success() {
            return Err(TestkitError::NotReady {
                port: nodes[0].port,
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let cluster = RedisCluster { nodes };
        cluster.wait_ok()?;
        Ok(cluster)
    }

    fn wait_ok(&self) -> Result<(), TestkitError> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let all_ok = self.nodes.iter().all(|n| {
                redis::Client::open(n.url().as_str())
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                    .map(|info| info.contains("cluster_state:ok"))
                    .unwrap_or(false)
            });
            if all_ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TestkitError::NotReady {
                    port: self.nodes[0].port,
                    detail: "cluster_state never became ok".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis+cluster://…` URL understood by [`crate::redis_conn::RedisHandle`].
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", addrs.join(","))
    }
}

/// Path of a workspace binary next to the running test executable (`target/<profile>/NAME`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test-bin> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    dir.join(name)
}
