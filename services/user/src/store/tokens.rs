//! Refresh tokens and one-time tokens (email verification, password reset).

use sqlx::Row;

use super::{RefreshRow, Store, now};
use crate::UserError;

impl Store {
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
}
