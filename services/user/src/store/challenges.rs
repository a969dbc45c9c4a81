//! Phone OTP challenges.

use sqlx::Row;

use super::{Challenge, Store, now};
use crate::UserError;

impl Store {
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
}
