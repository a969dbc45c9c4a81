//! OIDC login state and linked external identities.

use sqlx::Row;

use super::{Store, now};
use crate::UserError;

impl Store {
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
