//! Storage: one set of runtime-checked queries over `sqlx::Any`, on
//! PostgreSQL (schema `users`) or SQLite (`berth dev`), chosen by URL prefix.

mod challenges;
mod events;
mod identities;
mod tokens;

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::UserError;

static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

pub(crate) const SCHEMA: &str = "users";

#[derive(Clone)]
pub(crate) struct Store {
    pub(crate) pool: AnyPool,
    /// Else SQLite.
    postgres: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub id: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub phone: Option<String>,
    pub phone_verified: bool,
    pub password_hash: Option<String>,
    pub display_name: Option<String>,
    pub roles: Vec<String>,
    pub created_at: i64,
}

const ACCOUNT_COLUMNS: &str = "id, email, email_verified, phone, phone_verified, password_hash, display_name, roles, created_at";

fn account(row: &AnyRow) -> Result<Account, sqlx::Error> {
    let roles: String = row.try_get("roles")?;
    Ok(Account {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        email_verified: row.try_get::<i64, _>("email_verified")? != 0,
        phone: row.try_get("phone")?,
        phone_verified: row.try_get::<i64, _>("phone_verified")? != 0,
        password_hash: row.try_get("password_hash")?,
        display_name: row.try_get("display_name")?,
        roles: roles
            .split(',')
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect(),
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Seconds as a timestamp offset, capped so `now() + secs(..)` cannot overflow.
pub(crate) fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX / 2)
}

pub(crate) struct RefreshRow {
    pub family_id: String,
    pub account_id: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

pub(crate) struct Challenge {
    pub id: String,
    pub code_hash: String,
    pub attempts: i64,
    pub expires_at: i64,
}

impl Store {
    pub(crate) async fn connect(url: &str) -> Result<Self, UserError> {
        let db = berth_runtime::any_db::open(url, SCHEMA, 10)
            .await
            .map_err(|e| match e {
                berth_runtime::any_db::AnyDbError::Url => UserError::Config(e.to_string()),
                berth_runtime::any_db::AnyDbError::Database(db) => db.into(),
            })?;
        let migrator = if db.postgres {
            &PG_MIGRATIONS
        } else {
            &SQLITE_MIGRATIONS
        };
        migrator.run(&db.pool).await?;
        Ok(Self {
            pool: db.pool,
            postgres: db.postgres,
        })
    }

    pub(crate) async fn ping(&self) -> Result<(), String> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub(crate) async fn insert_account(
        &self,
        email: Option<&str>,
        email_verified: bool,
        phone: Option<&str>,
        phone_verified: bool,
        password_hash: Option<&str>,
        roles: &[String],
    ) -> Result<Account, UserError> {
        let id = uuid::Uuid::now_v7().to_string();
        let now = now();
        let result = sqlx::query(
            "INSERT INTO accounts (id, email, email_verified, phone, phone_verified, password_hash, roles, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(&id)
        .bind(email)
        .bind(i64::from(email_verified))
        .bind(phone)
        .bind(i64::from(phone_verified))
        .bind(password_hash)
        .bind(roles.join(","))
        .bind(now)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(UserError::Conflict);
            }
            Err(e) => return Err(e.into()),
        }
        self.account_by_id(&id).await?.ok_or(UserError::NotFound)
    }

    pub(crate) async fn account_by_id(&self, id: &str) -> Result<Option<Account>, UserError> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(account).transpose()?)
    }

    pub(crate) async fn account_by_email(&self, email: &str) -> Result<Option<Account>, UserError> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE email = $1"
        ))
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(account).transpose()?)
    }

    pub(crate) async fn account_by_phone(&self, phone: &str) -> Result<Option<Account>, UserError> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE phone = $1"
        ))
        .bind(phone)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(account).transpose()?)
    }

    pub(crate) async fn set_password(&self, id: &str, hash: &str) -> Result<(), UserError> {
        sqlx::query("UPDATE accounts SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(hash)
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn mark_email_verified(&self, id: &str) -> Result<(), UserError> {
        sqlx::query("UPDATE accounts SET email_verified = 1, updated_at = $1 WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn set_display_name(
        &self,
        id: &str,
        name: Option<&str>,
    ) -> Result<(), UserError> {
        sqlx::query("UPDATE accounts SET display_name = $1, updated_at = $2 WHERE id = $3")
            .bind(name)
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn set_roles(&self, id: &str, roles: &[String]) -> Result<bool, UserError> {
        let done = sqlx::query("UPDATE accounts SET roles = $1, updated_at = $2 WHERE id = $3")
            .bind(roles.join(","))
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
