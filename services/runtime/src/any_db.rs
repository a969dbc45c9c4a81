//! Opening a service's store over `sqlx::Any`, the one way the services
//! whose queries run unchanged on both backends do it: PostgreSQL in
//! production (a schema of the service's own, pinned by `search_path` on
//! every pooled connection, so `_sqlx_migrations` and unqualified table
//! names stay the service's) or SQLite under `berth dev` (one connection:
//! SQLite has one writer, so writers queue in order).

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Connection, Executor};

/// An open pool and which backend it is on.
#[derive(Clone)]
pub struct AnyDb {
    pub pool: AnyPool,
    /// Else SQLite.
    pub postgres: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AnyDbError {
    #[error("database URL must start with postgres:// or sqlite:")]
    Url,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Opens `url` for the service whose PostgreSQL schema is `schema`
/// (created if missing); migrations are the caller's to run.
pub async fn open(url: &str, schema: &str, max_connections: u32) -> Result<AnyDb, AnyDbError> {
    sqlx::any::install_default_drivers();
    let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !postgres && !url.starts_with("sqlite:") {
        return Err(AnyDbError::Url);
    }
    if postgres {
        // The schema must exist before pooled connections pin their
        // search_path to it.
        let mut conn = sqlx::AnyConnection::connect(url).await?;
        conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
            .await?;
        conn.close().await?;
    }
    let mut options =
        AnyPoolOptions::new().max_connections(if postgres { max_connections } else { 1 });
    if postgres {
        let set_path = format!("SET search_path TO {schema}");
        options = options.after_connect(move |conn, _meta| {
            let set_path = set_path.clone();
            Box::pin(async move {
                conn.execute(set_path.as_str()).await?;
                Ok(())
            })
        });
    }
    Ok(AnyDb {
        pool: options.connect(url).await?,
        postgres,
    })
}
