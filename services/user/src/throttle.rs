//! Fixed-window failure counters (Redis when configured, in-memory otherwise)
//! used to throttle login, OTP and recovery attempts per account, phone and
//! client address.
//!
//! Redis errors fail *open* (logged): an unavailable cache must not lock
//! every user out. Per-challenge OTP attempt limits are enforced in the
//! database and do not depend on this.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_runtime::Problem;
use redis::AsyncCommands;

use crate::Users;

#[derive(Clone)]
pub(crate) enum Throttle {
    /// Connection and key prefix.
    Redis(redis::aio::ConnectionManager, Arc<str>),
    Memory(Arc<Mutex<HashMap<String, (u64, Instant)>>>),
}

impl Throttle {
    pub(crate) fn memory() -> Self {
        Self::Memory(Arc::default())
    }

    /// Current count in the window.
    pub(crate) async fn count(&self, key: &str) -> u64 {
        match self {
            Self::Redis(conn, prefix) => {
                let mut conn = conn.clone();
                let value: redis::RedisResult<Option<u64>> =
                    conn.get(format!("{prefix}throttle:{key}")).await;
                value
                    .unwrap_or_else(|error| {
                        tracing::warn!(%error, "throttle read failed; allowing");
                        None
                    })
                    .unwrap_or(0)
            }
            Self::Memory(map) => {
                let map = map.lock().unwrap_or_else(|p| p.into_inner());
                match map.get(key) {
                    Some((n, until)) if *until > Instant::now() => *n,
                    _ => 0,
                }
            }
        }
    }

    /// Adds one to the window (starting it when absent); returns the count.
    pub(crate) async fn hit(&self, key: &str, window: Duration) -> u64 {
        match self {
            Self::Redis(conn, prefix) => {
                let mut conn = conn.clone();
                let key = format!("{prefix}throttle:{key}");
                // SET NX starts the window (with its expiry) only when the
                // key is absent; works on every Redis since 2.6.12.
                let result: redis::RedisResult<(Option<String>, u64)> = redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&key)
                    .arg(0)
                    .arg("EX")
                    .arg(window.as_secs().max(1))
                    .arg("NX")
                    .incr(&key, 1u64)
                    .query_async(&mut conn)
                    .await;
                match result {
                    Ok((_, n)) => n,
                    Err(error) => {
                        tracing::warn!(%error, "throttle write failed");
                        0
                    }
                }
            }
            Self::Memory(map) => {
                let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                map.retain(|_, (_, until)| *until > now);
                let entry = map.entry(key.to_owned()).or_insert((0, now + window));
                entry.0 += 1;
                entry.0
            }
        }
    }

    pub(crate) async fn reset(&self, key: &str) {
        match self {
            Self::Redis(conn, prefix) => {
                let mut conn = conn.clone();
                let result: redis::RedisResult<()> =
                    conn.del(format!("{prefix}throttle:{key}")).await;
                if let Err(error) = result {
                    tracing::warn!(%error, "throttle reset failed");
                }
            }
            Self::Memory(map) => {
                map.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
            }
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), String> {
        match self {
            Self::Redis(conn, _) => {
                let mut conn = conn.clone();
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Self::Memory(_) => Ok(()),
        }
    }
}

impl Users {
    /// [`Users::limit_requests`] per client address, when it is known.
    pub(crate) async fn limit_address(
        &self,
        address: Option<&str>,
        limit: u64,
        window: Duration,
    ) -> Result<(), Problem> {
        match address {
            Some(address) => {
                self.limit_requests(&format!("req:{address}"), limit, window)
                    .await
            }
            None => Ok(()),
        }
    }

    /// 429 when `key` is at `limit`; else counts one request.
    pub(crate) async fn limit_requests(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
    ) -> Result<(), Problem> {
        if self.inner.throttle.count(key).await >= limit {
            return Err(too_many(window));
        }
        self.inner.throttle.hit(key, window).await;
        Ok(())
    }
}

pub(crate) fn too_many(retry_after: Duration) -> Problem {
    Problem::too_many_requests("too many attempts; try again later")
        .with_extension("retry_after", retry_after.as_secs())
}
