//! PostgreSQL pool settings shared by the services.

use std::time::Duration;

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
