//! Throwaway `redis-server` processes for tests and the demo: standalone or a 3-primary cluster,
//! each on free ports in a temporary directory, killed when dropped. Likewise [`MotoServer`], an
//! in-memory S3-compatible server for the S3 storage backend's tests.
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
    #[error(
        "moto_server not found on PATH: install it with `python3 -m pip install 'moto[server]'` \
         (the S3 storage tests run against it)"
    )]
    NoMotoServer,
    #[error("moto_server on port {port}: {detail}")]
    Moto { port: u16, detail: String },
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

/// One `moto_server` process: an in-memory S3 imitation (the Python `moto` package) on a free
/// port, killed when dropped. It speaks the real S3 wire protocol (SigV4, multipart uploads,
/// XML errors), which is what the S3 backend must be tested against; an in-process fake would
/// share our assumptions.
pub struct MotoServer {
    child: Child,
    pub port: u16,
}

impl MotoServer {
    /// A server that accepts any credentials (moto's default).
    pub fn start() -> Result<MotoServer, TestkitError> {
        Self::start_with_env(&[])
    }

    /// A server that checks credentials: it knows no access key, so every signed request is
    /// refused with `InvalidAccessKeyId`. `bucket` is created first, as the one unsigned action
    /// moto allows, so requests fail on the credentials and not on a missing bucket.
    pub fn start_checking_credentials(bucket: &str) -> Result<MotoServer, TestkitError> {
        let server = Self::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "1")])?;
        server.create_bucket(bucket)?;
        Ok(server)
    }

    fn start_with_env(env: &[(&str, &str)]) -> Result<MotoServer, TestkitError> {
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let mut cmd = Command::new("moto_server");
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(TestkitError::NoMotoServer)
                }
                Err(e) => return Err(e.into()),
            };
            let mut server = MotoServer { child, port };
            match server.wait_ready() {
                Ok(()) => return Ok(server),
                // Most likely the port was taken between choosing and binding: try another.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(TestkitError::NoMotoServer))
    }

    fn wait_ready(&mut self) -> Result<(), TestkitError> {
        // Python start-up with moto's imports takes a second or two on a small machine. A TCP
        // connect is the probe, not a request: with credentials checked, moto counts requests
        // against its allowance of unsigned ones.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(TestkitError::Moto {
                    port: self.port,
                    detail: format!("exited with {status}"),
                });
            }
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TestkitError::Moto {
                    port: self.port,
                    detail: "did not listen within 60 s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:<port>`, for `storage.s3.endpoint` (with `allow_http = true`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Create a bucket with an unsigned `PUT /<bucket>`. object_store has no bucket API, and a
    /// hand-written HTTP/1.1 request keeps an HTTP client out of this crate.
    pub fn create_bucket(&self, bucket: &str) -> Result<(), TestkitError> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            conn,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.port
        )?;
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply)?;
        let reply = String::from_utf8_lossy(&reply);
        let status = reply.lines().next().unwrap_or_default();
        if status.split(' ').nth(1) == Some("200") {
            Ok(())
        } else {
            Err(TestkitError::Moto {
                port: self.port,
                detail: format!("creating bucket {bucket}: {status}"),
            })
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// A ready-to-enqueue video task of season `s1` (episode `ep01`) on `account`, with no
/// dependencies: the fixture of tests that need a render and nothing more.
pub fn video_task(id: &str, account: &str) -> crate::NewTask {
    crate::NewTask {
        id: id.into(),
        season: "s1".into(),
        group: "ep01".into(),
        label: format!("ep01/{id}"),
        chain: vec![account.into()],
        payload: crate::TaskPayload::Video {
            prompt: "the harbour".into(),
            negative_prompt: None,
            duration_s: 5,
            aspect_ratio: "9:16".into(),
            resolution: "720p".into(),
            first_frame: None,
            seed: None,
        },
        deps: vec![],
        ext: "mp4".into(),
        est_cost_usd: 0.5,
    }
}
