//! PostgreSQL pool settings shared by the services.

use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::PgPoolOptions;

/// A pooled connection idle at least this long is pinged before it is handed
/// out; busier ones are trusted (HikariCP's rule). sqlx's default pings on
/// every checkout, a round trip per statement that under load costs the
/// database about as much as a small statement, while a connection used a
/// moment ago is almost certainly still alive.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// `max_connections` opened up front (so first requests do not pay for
/// connecting), pinged only after [`PING_IF_IDLE_FOR`] idle: a connection
/// broken since (database restart, failover) is replaced before use. One
/// that breaks within that second fails its statement as an I/O error, as
/// a connection lost mid-statement does, and is dropped on release.
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(max_connections)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// Whether `error` means the database could not be reached or went away
/// (answer 503 and let the client retry) rather than a fault in the
/// statement: I/O, TLS, pool exhaustion, and the server's own connection
/// exceptions (SQLSTATE class 08) and shutdowns (57P01–57P03, sent to every
/// session when it restarts or fails over).
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

/// A held connection goes back to the pool (and a fresh one is taken) after
/// this long, so held connections still follow the pool's lifetime rules.
pub const HOLD_AT_MOST: Duration = Duration::from_secs(300);

/// Connections kept out of the pool between statements on a hot path.
///
/// sqlx pings every connection the pool takes back (a `Sync` round trip on
/// each release, unconditional in sqlx 0.8), so a statement run through the
/// pool costs two round trips. Connections taken here are handed back to
/// this set instead, unpinged, and reused by the next caller; like the pool
/// itself they are pinged before use once idle for [`PING_IF_IDLE_FOR`].
/// At most `keep` stay held; the rest go back to the pool.
pub struct HeldConnections {
    pool: sqlx::PgPool,
    keep: usize,
    idle: std::sync::Mutex<Vec<Idle>>,
}

struct Idle {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    taken_at: Instant,
    used_at: Instant,
}

impl HeldConnections {
    pub fn new(pool: sqlx::PgPool, keep: usize) -> Self {
        Self {
            pool,
            keep,
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A connection for one statement (or transaction); give it back with
    /// [`HeldConnection::give_back`]. Dropped otherwise (e.g. cancelled
    /// mid-statement), it returns to the pool, which checks it.
    pub async fn take(&self) -> Result<HeldConnection<'_>, sqlx::Error> {
        loop {
            let Some(idle) = self.pop() else { break };
            if idle.taken_at.elapsed() >= HOLD_AT_MOST {
                continue; // dropped: back to the pool
            }
            let mut conn = idle.conn;
            if idle.used_at.elapsed() >= PING_IF_IDLE_FOR && conn.ping().await.is_err() {
                continue;
            }
            return Ok(HeldConnection {
                conn: Some(conn),
                taken_at: idle.taken_at,
                home: self,
            });
        }
        Ok(HeldConnection {
            conn: Some(self.pool.acquire().await?),
            taken_at: Instant::now(),
            home: self,
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A poisoned lock only means a panic elsewhere mid-push or pop; the
        // list itself is still a valid list of connections.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn pop(&self) -> Option<Idle> {
        self.idle().pop()
    }

    fn push(&self, idle: Idle) {
        let mut list = self.idle();
        if list.len() < self.keep {
            list.push(idle);
        }
    }

    /// Connections held right now (for tests).
    pub fn held(&self) -> usize {
        self.idle().len()
    }
}

/// A connection from [`HeldConnections::take`].
pub struct HeldConnection<'a> {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
    taken_at: Instant,
    home: &'a HeldConnections,
}

impl HeldConnection<'_> {
    /// Keeps the connection for the next caller if its last statement
    /// succeeded or failed in a way that leaves the session intact (an
    /// error the server reported, or a row the client could not decode).
    /// Otherwise (I/O, TLS, protocol, the server's connection errors) it
    /// goes back to the pool, which checks it and closes it if broken.
    pub fn give_back(mut self, error: Option<&sqlx::Error>) {
        let intact = match error {
            None => true,
            Some(error @ sqlx::Error::Database(_)) => !is_unavailable(error),
            Some(
                sqlx::Error::RowNotFound
                | sqlx::Error::ColumnNotFound(_)
                | sqlx::Error::ColumnIndexOutOfBounds { .. }
                | sqlx::Error::ColumnDecode { .. }
                | sqlx::Error::Decode(_)
                | sqlx::Error::TypeNotFound { .. },
            ) => true,
            Some(_) => false,
        };
        if !intact {
            return;
        }
        if let Some(conn) = self.conn.take() {
            self.home.push(Idle {
                conn,
                taken_at: self.taken_at,
                used_at: Instant::now(),
            });
        }
    }
}

impl std::ops::Deref for HeldConnection<'_> {
    type Target = sqlx::PgConnection;

    fn deref(&self) -> &sqlx::PgConnection {
        // Invariant: `conn` is only taken out by `give_back`, which consumes
        // the guard, so every other use sees it present.
        #[allow(clippy::expect_used)]
        self.conn
            .as_ref()
            .expect("a held connection until given back")
    }
}

impl std::ops::DerefMut for HeldConnection<'_> {
    fn deref_mut(&mut self) -> &mut sqlx::PgConnection {
        // Invariant: as in `deref`.
        #[allow(clippy::expect_used)]
        self.conn
            .as_mut()
            .expect("a held connection until given back")
    }
}
