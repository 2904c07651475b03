//! Buckets in Redis, shared by every replica (SPEC §4.5): one round trip
//! per decision, atomic — a Lua script loaded once and called by
//! `EVALSHA` (on `NOSCRIPT`, after a `SCRIPT FLUSH` or a restart, it is
//! loaded again) — with the time taken from Redis `TIME`, so that replicas
//! with skewed clocks agree, and keys that expire once their bucket has
//! refilled. Each call waits at most `redis.timeout`; the connection is
//! made lazily and re-made with backoff (at most 5 s) by redis-rs's
//! connection manager. Redis Cluster and Sentinel are not supported.
//!
//! One connection per thread that asks: with `workers: N`, each worker's
//! runtime drives its own, so that a quota check never wakes another
//! worker's thread to write and read for it.
//!
//! Adapter: depends on redis-rs, tokio and thread_local.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use thread_local::ThreadLocal;

use super::{Shared, Verdict};
use crate::config::QuotaPolicy;
use crate::telemetry::Metrics;

/// GCRA in microseconds on Redis' own clock. Returns {allowed, a, b}:
/// allowed → a = headroom (µs), b = µs until full; refused → a = µs until
/// the next allowed request, b = µs until full.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2]) * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > limit then
  return {0, new_tat - limit - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, limit - (new_tat - now), new_tat - now}
";

pub struct Store {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// Each thread's connection, made on its first call.
    connections: ThreadLocal<ConnectionManager>,
    script: redis::Script,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never printed.
        f.debug_struct("redis::Store")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A store for `url` (connected on first use). Must run in Tokio.
    pub fn new(url: &str, timeout: Duration, metrics: Arc<Metrics>) -> Result<Store, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis URL: {:?}", e.kind()))?;
        let config = ConnectionManagerConfig::new()
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(5))
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(timeout));
        let store = Store {
            client,
            config,
            connections: ThreadLocal::new(),
            script: redis::Script::new(SCRIPT),
            timeout,
            metrics,
        };
        // This thread's, made now so that a config it refuses is an error
        // now rather than on the first call.
        store
            .this_threads()
            .map_err(|e| format!("redis connection: {:?}", e.kind()))?;
        Ok(store)
    }

    /// This thread's connection, made (lazily connected) on first use.
    fn this_threads(&self) -> redis::RedisResult<&ConnectionManager> {
        self.connections.get_or_try(|| {
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
        })
    }

    /// This thread's connection (a handle: cloned per call).
    fn connection(&self) -> Result<ConnectionManager, ()> {
        self.this_threads()
            .cloned()
            .map_err(|e| tracing::warn!("redis connection: {:?}", e.kind()))
    }

    async fn call(&self, bucket: &str, policy: &QuotaPolicy) -> Result<Verdict, ()> {
        let mut connection = self.connection()?;
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(bucket)
            .arg(policy.interval_us)
            .arg(policy.burst);
        let started = Instant::now();
        let answer = tokio::time::timeout(
            self.timeout,
            invocation.invoke_async::<(i64, i64, i64)>(&mut connection),
        )
        .await;
        self.metrics
            .redis_call(started.elapsed(), answer.as_ref().is_ok_and(Result::is_ok));
        let (allowed, a, b) = match answer {
            Ok(Ok(triple)) => triple,
            Ok(Err(e)) => {
                tracing::warn!("redis quota call failed: {:?}", e.kind());
                return Err(());
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "redis quota call timed out");
                return Err(());
            }
        };
        let micros = |v: i64| u64::try_from(v).unwrap_or(0);
        let secs = |v: i64| micros(v).div_ceil(1_000_000);
        Ok(if allowed == 1 {
            Verdict::Allowed {
                remaining: micros(a) / policy.interval_us,
                reset: secs(b),
            }
        } else {
            Verdict::Limited {
                retry_after: secs(a).max(1),
                reset: secs(b),
            }
        })
    }
}

impl Store {
    async fn set_once(&self, key: &str, ttl: Duration) -> Result<bool, ()> {
        let mut connection = self.connection()?;
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut command = redis::cmd("SET");
        command.arg(key).arg(1).arg("NX").arg("PX").arg(millis);
        let started = Instant::now();
        let answer = tokio::time::timeout(
            self.timeout,
            command.query_async::<Option<String>>(&mut connection),
        )
        .await;
        self.metrics
            .redis_call(started.elapsed(), answer.as_ref().is_ok_and(Result::is_ok));
        match answer {
            Ok(Ok(set)) => Ok(set.is_some()),
            Ok(Err(e)) => {
                tracing::warn!("redis DPoP replay check failed: {:?}", e.kind());
                Err(())
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "redis DPoP replay check timed out");
                Err(())
            }
        }
    }
}

impl Shared for Store {
    fn first_seen<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<bool, ()>> + Send + 'a>> {
        Box::pin(self.set_once(key, ttl))
    }

    fn take<'a>(
        &'a self,
        bucket: &'a str,
        policy: &'a QuotaPolicy,
    ) -> Pin<Box<dyn Future<Output = Result<Verdict, ()>> + Send + 'a>> {
        Box::pin(self.call(bucket, policy))
    }
}
