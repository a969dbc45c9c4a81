//! A PostgreSQL database per test: `CREATE DATABASE <prefix>_<random>` on
//! the server of `$DATABASE_URL`, dropped (best effort) by
//! [`TestDb::drop_now`] or, if the test panicked first, on drop.

use sqlx::{Connection, Executor, PgConnection};

pub struct TestDb {
    pub url: String,
    admin_url: String,
    pub name: String,
    dropped: bool,
}

/// `$DATABASE_URL`, or a clear failure telling how to get one.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set. PostgreSQL tests need a server: run \
             `scripts/stack up && eval \"$(scripts/stack env)\"` first."
        )
    })
}

/// `$REDIS_URL` when set.
pub fn redis_url() -> Option<String> {
    std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty())
}

async fn drop_database(admin_url: &str, name: &str) {
    if let Ok(mut conn) = PgConnection::connect(admin_url).await {
        let _ = conn
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await;
        let _ = conn.close().await;
    }
}

impl TestDb {
    pub async fn create(prefix: &str) -> Self {
        let admin_url = database_url();
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!("cannot connect to DATABASE_URL ({e}); is `scripts/stack up` running?")
        });
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        conn.close().await.ok();
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&name);
        Self {
            url: url.to_string(),
            admin_url,
            name,
            dropped: false,
        }
    }

    /// Drops the database (best effort; errors are ignored).
    pub async fn drop_now(mut self) {
        self.dropped = true;
        drop_database(&self.admin_url, &self.name).await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Reached when a test panicked before `drop_now`: drop from a
        // separate thread with its own runtime (we may be inside one).
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_database(&admin_url, &name));
            }
        })
        .join();
    }
}
