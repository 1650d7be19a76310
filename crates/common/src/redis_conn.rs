//! Redis connections: the shared pool, dedicated blocking readers, and the start-up checks.
//!
//! Two traps shape this file (docs/redis-client.md). redis 1.x async connections
//! time out a response after 500 ms by default, so pooled connections get a longer timeout and a
//! blocking `XREADGROUP … BLOCK` runs on its own connection whose timeout exceeds the block. And a
//! blocking command on a shared multiplexed connection stalls every other command on it, so
//! nothing ever blocks on the pool.
//!
//! A URL starting with `redis+cluster://host:port,host:port` selects Redis Cluster; every script
//! keeps its keys in one hash tag, so the same code runs on both.

use redis::aio::ConnectionLike;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

/// How long a non-blocking command may take before the client gives up. Long enough for the
/// largest batched script (enqueue of a few hundred tasks) on a busy server.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("cannot connect to Redis at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("Redis pool: {0}")]
    Pool(String),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error(
        "Redis at {url} has maxmemory-policy '{policy}': it may evict task records and leases and \
         lose work. Set `maxmemory-policy noeviction` (CONFIG SET maxmemory-policy noeviction), or \
         set redis.allow_eviction = true in the config for a throwaway setup"
    )]
    Evicting { url: String, policy: String },
}

/// A handle on Redis that hands out connections: a deadpool of multiplexed connections for a
/// standalone server, or one multiplexed cluster connection.
#[derive(Clone)]
pub struct RedisHandle {
    url: String,
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Pool(deadpool_redis::Pool),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// One connection from [`RedisHandle::conn`].
pub enum Conn {
    Pooled(deadpool_redis::Connection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Pooled(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Pooled(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Pooled(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let rest = url.strip_prefix("redis+cluster://")?;
    Some(
        rest.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| format!("redis://{s}"))
            .collect(),
    )
}

impl RedisHandle {
    /// Connect (lazily for the pool, eagerly for a cluster) and check the server is reachable.
    pub async fn connect(url: &str, pool_size: usize) -> Result<RedisHandle, ConnError> {
        let connect_err = |source| ConnError::Connect {
            url: redact_url(url),
            source,
        };
        let inner = if let Some(nodes) = cluster_nodes(url) {
            let client = redis::cluster::ClusterClient::builder(nodes)
                .response_timeout(COMMAND_TIMEOUT)
                .connection_timeout(Duration::from_secs(5))
                .build()
                .map_err(connect_err)?;
            Inner::Cluster(client.get_async_connection().await.map_err(connect_err)?)
        } else {
            let cfg = AsyncConnectionConfig::new()
                .set_response_timeout(Some(COMMAND_TIMEOUT))
                .set_connection_timeout(Some(Duration::from_secs(5)));
            let manager =
                deadpool_redis::Manager::new_with_config(url, cfg).map_err(connect_err)?;
            let pool = deadpool_redis::Pool::builder(manager)
                .max_size(pool_size.max(1))
                .runtime(deadpool_redis::Runtime::Tokio1)
                .build()
                .map_err(|e| ConnError::Pool(e.to_string()))?;
            Inner::Pool(pool)
        };
        let handle = RedisHandle {
            url: url.to_string(),
            inner,
        };
        let mut conn = handle.conn().await?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(connect_err)?;
        Ok(handle)
    }

    pub async fn conn(&self) -> Result<Conn, ConnError> {
        match &self.inner {
            Inner::Pool(pool) => match pool.get().await {
                Ok(c) => Ok(Conn::Pooled(c)),
                Err(deadpool_redis::PoolError::Backend(e)) => Err(ConnError::Connect {
                    url: redact_url(&self.url),
                    source: e,
                }),
                Err(e) => Err(ConnError::Pool(e.to_string())),
            },
            Inner::Cluster(c) => Ok(Conn::Cluster(c.clone())),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.inner, Inner::Cluster(_))
    }

    /// A connection of its own for blocking reads, with a response timeout longer than `block`.
    pub async fn blocking_conn(&self, block: Duration) -> Result<Conn, ConnError> {
        let timeout = block + Duration::from_secs(5);
        let connect_err = |source| ConnError::Connect {
            url: redact_url(&self.url),
            source,
        };
        if let Some(nodes) = cluster_nodes(&self.url) {
            let client = redis::cluster::ClusterClient::builder(nodes)
                .response_timeout(timeout)
                .build()
                .map_err(connect_err)?;
            return Ok(Conn::Cluster(
                client.get_async_connection().await.map_err(connect_err)?,
            ));
        }
        let cfg = AsyncConnectionConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(Duration::from_secs(5)));
        let manager = deadpool_redis::Manager::new_with_config(self.url.as_str(), cfg)
            .map_err(connect_err)?;
        // A one-connection pool: the connection is ours alone for as long as we hold it.
        let pool = deadpool_redis::Pool::builder(manager)
            .max_size(1)
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .map_err(|e| ConnError::Pool(e.to_string()))?;
        match pool.get().await {
            Ok(c) => Ok(Conn::Pooled(c)),
            Err(deadpool_redis::PoolError::Backend(e)) => Err(connect_err(e)),
            Err(e) => Err(ConnError::Pool(e.to_string())),
        }
    }

    /// Refuse a server that may evict keys (docs/invariants.md, "Redis must not evict"), unless allowed.
    pub(crate) async fn check_no_eviction(&self, allow_eviction: bool) -> Result<(), ConnError> {
        let mut conn = self.conn().await?;
        let reply: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        let policy = reply.get(1).cloned().unwrap_or_else(|| "noeviction".into());
        if policy != "noeviction" && !allow_eviction {
            return Err(ConnError::Evicting {
                url: redact_url(&self.url),
                policy,
            });
        }
        if policy != "noeviction" {
            tracing::warn!(%policy, "Redis may evict keys; continuing because redis.allow_eviction is set");
        }
        Ok(())
    }

    /// One field of `INFO server` (`redis_version`, `run_id`, …), empty when absent.
    pub async fn server_info(&self, field: &str) -> Result<String, ConnError> {
        let mut conn = self.conn().await?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .map_err(ConnError::from)?;
        let prefix = format!("{field}:");
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or("")
            .trim()
            .to_string())
    }

    pub fn url_redacted(&self) -> String {
        redact_url(&self.url)
    }
}

/// Drop a password from a Redis URL before it goes into a log or an error.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://[redacted]@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_leave() {
        assert_eq!(
            redact_url("redis://user:s3cret@host:6379/0"),
            "redis://[redacted]@host:6379/0"
        );
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
    }

    #[test]
    fn cluster_urls() {
        assert_eq!(
            cluster_nodes("redis+cluster://127.0.0.1:7000,127.0.0.1:7001"),
            Some(vec![
                "redis://127.0.0.1:7000".to_string(),
                "redis://127.0.0.1:7001".to_string()
            ])
        );
        assert_eq!(cluster_nodes("redis://x"), None);
    }
}
