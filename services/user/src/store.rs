//! Storage: one set of runtime-checked queries over `sqlx::Any`, on
//! PostgreSQL (schema `users`) or SQLite (`berth dev`), chosen by URL prefix.

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Connection, Executor, Row};

use crate::UserError;

static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

pub(crate) const SCHEMA: &str = "users";

#[derive(Clone)]
pub(crate) struct Store {
    pub(crate) pool: AnyPool,
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
        sqlx::any::install_default_drivers();
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let sqlite = url.starts_with("sqlite:");
        if !postgres && !sqlite {
            return Err(UserError::Config(
                "database URL must start with postgres:// or sqlite:".into(),
            ));
        }
        if postgres {
            // Create the schema once, before pooled connections pin their
            // search_path to it.
            let mut conn = sqlx::AnyConnection::connect(url).await?;
            conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA}").as_str())
                .await?;
            conn.close().await?;
        }
        let mut options = AnyPoolOptions::new().max_connections(if sqlite { 1 } else { 10 });
        if postgres {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(format!("SET search_path TO {SCHEMA}").as_str())
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(url).await?;
        let migrator = if postgres {
            &PG_MIGRATIONS
        } else {
            &SQLITE_MIGRATIONS
        };
        migrator.run(&pool).await?;
        Ok(Self { pool })
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

    /// Deletes the account and every row that refers to it.
    pub(crate) async fn delete_account(&self, id: &str) -> Result<(), UserError> {
        let mut tx = self.pool.begin().await?;
        for table in [
            "refresh_tokens",
            "one_time_tokens",
            "oidc_identities",
            "accounts",
        ] {
            let column = if table == "accounts" {
                "id"
            } else {
                "account_id"
            };
            sqlx::query(&format!("DELETE FROM {table} WHERE {column} = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn delete_phone_challenges(&self, phone: &str) -> Result<(), UserError> {
        sqlx::query("DELETE FROM phone_challenges WHERE phone = $1")
            .bind(phone)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // --- refresh tokens ---

    pub(crate) async fn insert_refresh(
        &self,
        hash: &str,
        family: &str,
        account_id: &str,
        expires_at: i64,
    ) -> Result<(), UserError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, account_id, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash)
        .bind(family)
        .bind(account_id)
        .bind(expires_at)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn refresh_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<RefreshRow>, UserError> {
        let row = sqlx::query(
            "SELECT family_id, account_id, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(RefreshRow {
            family_id: row.try_get("family_id")?,
            account_id: row.try_get("account_id")?,
            expires_at: row.try_get("expires_at")?,
            used_at: row.try_get("used_at")?,
            revoked_at: row.try_get("revoked_at")?,
        }))
    }

    /// Marks a token used; `false` when someone else used it first.
    pub(crate) async fn consume_refresh(&self, hash: &str) -> Result<bool, UserError> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn revoke_family(&self, family: &str) -> Result<(), UserError> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(family)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn revoke_all_refresh(&self, account_id: &str) -> Result<(), UserError> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE account_id = $2 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(account_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // --- one-time tokens (email verification, password reset) ---

    pub(crate) async fn insert_one_time(
        &self,
        hash: &str,
        account_id: &str,
        purpose: &str,
        expires_at: i64,
    ) -> Result<(), UserError> {
        sqlx::query(
            "INSERT INTO one_time_tokens (token_hash, account_id, purpose, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(hash)
        .bind(account_id)
        .bind(purpose)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Atomically uses a valid token; returns its account.
    pub(crate) async fn use_one_time(
        &self,
        hash: &str,
        purpose: &str,
    ) -> Result<Option<String>, UserError> {
        let now = now();
        let row = sqlx::query(
            "UPDATE one_time_tokens SET used_at = $1 WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1 RETURNING account_id",
        )
        .bind(now)
        .bind(hash)
        .bind(purpose)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("account_id")).transpose()?)
    }

    // --- phone challenges ---

    pub(crate) async fn insert_challenge(
        &self,
        phone: &str,
        code_hash: &str,
        expires_at: i64,
    ) -> Result<(), UserError> {
        let mut tx = self.pool.begin().await?;
        // A new code replaces older ones.
        sqlx::query("DELETE FROM phone_challenges WHERE phone = $1")
            .bind(phone)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO phone_challenges (id, phone, code_hash, attempts, expires_at, created_at) VALUES ($1, $2, $3, 0, $4, $5)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(phone)
        .bind(code_hash)
        .bind(expires_at)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn active_challenge(
        &self,
        phone: &str,
    ) -> Result<Option<Challenge>, UserError> {
        let row = sqlx::query(
            "SELECT id, code_hash, attempts, expires_at FROM phone_challenges WHERE phone = $1 AND consumed_at IS NULL ORDER BY created_at DESC LIMIT 1",
        )
        .bind(phone)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Challenge {
            id: row.try_get("id")?,
            code_hash: row.try_get("code_hash")?,
            attempts: row.try_get("attempts")?,
            expires_at: row.try_get("expires_at")?,
        }))
    }

    /// Counts an attempt; `false` when the limit was already reached.
    pub(crate) async fn count_attempt(&self, id: &str, max: i64) -> Result<bool, UserError> {
        let done = sqlx::query(
            "UPDATE phone_challenges SET attempts = attempts + 1 WHERE id = $1 AND attempts < $2",
        )
        .bind(id)
        .bind(max)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn consume_challenge(&self, id: &str) -> Result<bool, UserError> {
        let done = sqlx::query(
            "UPDATE phone_challenges SET consumed_at = $1 WHERE id = $2 AND consumed_at IS NULL",
        )
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // --- OIDC ---

    pub(crate) async fn insert_oidc_state(
        &self,
        state_hash: &str,
        provider: &str,
        verifier: &str,
        nonce: &str,
        expires_at: i64,
    ) -> Result<(), UserError> {
        sqlx::query("DELETE FROM oidc_states WHERE expires_at < $1")
            .bind(now())
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO oidc_states (state_hash, provider, pkce_verifier, nonce, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(state_hash)
        .bind(provider)
        .bind(verifier)
        .bind(nonce)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes and returns a pending flow `(pkce_verifier, nonce)`.
    pub(crate) async fn take_oidc_state(
        &self,
        state_hash: &str,
        provider: &str,
    ) -> Result<Option<(String, String)>, UserError> {
        let row = sqlx::query(
            "DELETE FROM oidc_states WHERE state_hash = $1 AND provider = $2 AND expires_at > $3 RETURNING pkce_verifier, nonce",
        )
        .bind(state_hash)
        .bind(provider)
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some((row.try_get("pkce_verifier")?, row.try_get("nonce")?)))
    }

    pub(crate) async fn account_by_identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<String>, UserError> {
        let row = sqlx::query(
            "SELECT account_id FROM oidc_identities WHERE provider = $1 AND subject = $2",
        )
        .bind(provider)
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("account_id")).transpose()?)
    }

    pub(crate) async fn link_identity(
        &self,
        provider: &str,
        subject: &str,
        account_id: &str,
    ) -> Result<(), UserError> {
        sqlx::query(
            "INSERT INTO oidc_identities (provider, subject, account_id, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(provider)
        .bind(subject)
        .bind(account_id)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
