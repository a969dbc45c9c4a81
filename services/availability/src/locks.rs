//! Per-resource queueing in front of the ledger's database transaction.
//!
//! These locks make racing clients wait their turn instead of piling onto
//! the database; they are *not* what keeps the ledger correct. Correctness
//! rests on the resource row lock and the non-overlap constraint inside the
//! transaction, so when Redis is slow, down or loses a lock, a claim simply
//! proceeds under the row lock alone.
//!
//! - In-process: an async mutex per resource (always; it also keeps one
//!   process from sending its whole queue to Redis).
//! - Across processes (when a Redis URL is configured): `SET NX PX` with a
//!   fencing token from `INCR`; the transaction records the token in the
//!   resource row and refuses a token not newer than the stored one, so a
//!   holder whose lock lapsed cannot act as if it still held it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use uuid::Uuid;

/// How long a Redis lock lives if its holder dies without releasing it.
const LOCK_TTL: Duration = Duration::from_secs(5);
/// How long a client queues for the Redis lock before going ahead on the row lock.
const MAX_WAIT: Duration = Duration::from_secs(5);
/// After a Redis error, how long to skip Redis before trying it again.
const COOL_DOWN: Duration = Duration::from_secs(1);

/// Takes the lock if it is free and returns a fresh fencing token (0 if
/// taken). `ARGV[2]` is a floor for the counter: after Redis lost its data
/// the counter restarts below the fence stored in the database.
const ACQUIRE: &str = r"
local floor = tonumber(ARGV[2])
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current < floor then redis.call('SET', KEYS[2], floor) end
if redis.call('SET', KEYS[1], 'pending', 'NX', 'PX', ARGV[1]) then
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
  return token
end
return 0
";

/// Deletes the lock only if we still hold it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

#[derive(Clone)]
pub(crate) struct Locks {
    local: LocalLocks,
    redis: Option<Arc<RedisLocks>>,
}

impl Locks {
    pub fn new(redis_url: Option<&str>) -> Result<Self, redis::RedisError> {
        let redis = match redis_url {
            Some(url) => Some(Arc::new(RedisLocks::new(url)?)),
            None => None,
        };
        Ok(Self {
            local: LocalLocks::default(),
            redis,
        })
    }

    /// Queues for the resource. `fence_floor` is the fence stored in the
    /// database when a previous attempt found its token stale (else 0).
    pub async fn acquire(&self, resource: Uuid, fence_floor: i64) -> Guard {
        let local = self.local.lock(resource).await;
        let redis = match &self.redis {
            Some(redis) => redis.clone().acquire(resource, fence_floor).await,
            None => None,
        };
        Guard {
            _local: local,
            redis,
        }
    }

    pub async fn ping_redis(&self) -> Option<Result<(), String>> {
        let redis = self.redis.as_ref()?;
        Some(redis.ping().await.map_err(|e| e.to_string()))
    }

    /// Claims that went ahead without the Redis lock because Redis failed.
    pub fn redis_fallbacks(&self) -> u64 {
        self.redis
            .as_ref()
            .map_or(0, |r| r.fallbacks.load(Ordering::Relaxed))
    }
}

/// Held for one ledger transaction; release after commit or rollback.
pub(crate) struct Guard {
    _local: LocalGuard,
    redis: Option<RedisHeld>,
}

impl Guard {
    /// The fencing token to record in the resource row, if Redis is in use.
    pub fn token(&self) -> Option<i64> {
        self.redis.as_ref().map(|held| held.token)
    }

    pub async fn release(mut self) {
        if let Some(held) = self.redis.take() {
            held.locks.release(held.resource, held.token).await;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // A cancelled request never reached `release`: free the lock anyway
        // rather than make the next client wait for the TTL.
        if let Some(held) = self.redis.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move { held.locks.release(held.resource, held.token).await });
        }
    }
}

type Map = Arc<Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>>;

/// One async mutex per resource, removed again when nobody waits on it.
#[derive(Clone, Default)]
struct LocalLocks {
    map: Map,
}

impl LocalLocks {
    async fn lock(&self, id: Uuid) -> LocalGuard {
        let mutex = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_default()
            .clone();
        let guard = mutex.lock_owned().await;
        LocalGuard {
            id,
            guard: Some(guard),
            map: self.map.clone(),
        }
    }
}

struct LocalGuard {
    id: Uuid,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    map: Map,
}

impl Drop for LocalGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // Waiters clone the Arc under this map lock, so a count of 1 means
        // only the map holds it and nobody can be about to wait.
        if map.get(&self.id).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.id);
        }
    }
}

struct RedisHeld {
    locks: Arc<RedisLocks>,
    resource: Uuid,
    token: i64,
}

struct RedisLocks {
    client: redis::Client,
    manager: tokio::sync::Mutex<Option<ConnectionManager>>,
    acquire: Script,
    release: Script,
    /// True from the first failure until Redis answers again (one warning per episode).
    degraded: AtomicBool,
    skip_until: Mutex<Option<Instant>>,
    fallbacks: AtomicU64,
}

fn lock_key(resource: Uuid) -> String {
    // The hash tag keeps both keys in one cluster slot for the script.
    format!("berth:availability:{{{resource}}}:lock")
}

fn fence_key(resource: Uuid) -> String {
    format!("berth:availability:{{{resource}}}:fence")
}

impl RedisLocks {
    fn new(url: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            manager: tokio::sync::Mutex::new(None),
            acquire: Script::new(ACQUIRE),
            release: Script::new(RELEASE),
            degraded: AtomicBool::new(false),
            skip_until: Mutex::new(None),
            fallbacks: AtomicU64::new(0),
        })
    }

    /// Connects lazily, so a service starts (and books) while Redis is down.
    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let mut slot = self.manager.lock().await;
        if let Some(manager) = slot.as_ref() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_millis(500))
            .set_response_timeout(Duration::from_millis(500))
            .set_number_of_retries(1);
        let manager = ConnectionManager::new_with_config(self.client.clone(), config).await?;
        *slot = Some(manager.clone());
        Ok(manager)
    }

    async fn acquire(self: Arc<Self>, resource: Uuid, fence_floor: i64) -> Option<RedisHeld> {
        if self.cooling_down() {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut conn = match self.connection().await {
            Ok(conn) => conn,
            Err(error) => {
                self.failed(&error);
                return None;
            }
        };
        let deadline = Instant::now() + MAX_WAIT;
        let mut pause = Duration::from_millis(2);
        loop {
            let token: redis::RedisResult<i64> = self
                .acquire
                .key(lock_key(resource))
                .key(fence_key(resource))
                .arg(LOCK_TTL.as_millis() as u64)
                .arg(fence_floor)
                .invoke_async(&mut conn)
                .await;
            match token {
                Ok(token) if token > 0 => {
                    self.recovered();
                    return Some(RedisHeld {
                        locks: self,
                        resource,
                        token,
                    });
                }
                Ok(_) if Instant::now() >= deadline => {
                    tracing::warn!(%resource, wait = ?MAX_WAIT, "redis lock still busy; proceeding on the row lock");
                    return None;
                }
                Ok(_) => {
                    // Full jitter spreads the queue's retries out.
                    let nanos = rand::random_range(0..=pause.as_nanos() as u64);
                    tokio::time::sleep(Duration::from_nanos(nanos)).await;
                    pause = (pause * 2).min(Duration::from_millis(40));
                }
                Err(error) => {
                    self.failed(&error);
                    return None;
                }
            }
        }
    }

    async fn release(&self, resource: Uuid, token: i64) {
        let Ok(mut conn) = self.connection().await else {
            return; // The lock lapses by its TTL.
        };
        let released: redis::RedisResult<i64> = self
            .release
            .key(lock_key(resource))
            .arg(token)
            .invoke_async(&mut conn)
            .await;
        if let Err(error) = released {
            tracing::debug!(%resource, %error, "redis lock release failed; it lapses by its TTL");
        }
    }

    async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
    }

    fn cooling_down(&self) -> bool {
        let skip = self.skip_until.lock().unwrap_or_else(|p| p.into_inner());
        skip.is_some_and(|until| Instant::now() < until)
    }

    fn failed(&self, error: &redis::RedisError) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        *self.skip_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + COOL_DOWN);
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "redis unavailable; ledger locks fall back to database row locks");
        }
    }

    fn recovered(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("redis reachable again; ledger locks use it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_locks_serialise_and_clean_up() {
        let locks = Locks::new(None).unwrap_or_else(|_| unreachable!());
        let id = Uuid::new_v4();
        let first = locks.acquire(id, 0).await;
        assert_eq!(first.token(), None);
        let waiter = tokio::spawn({
            let locks = locks.clone();
            async move { locks.acquire(id, 0).await.release().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "second holder must wait");
        first.release().await;
        waiter.await.unwrap_or_else(|_| unreachable!());
        assert!(
            locks
                .local
                .map
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
        );
    }
}
