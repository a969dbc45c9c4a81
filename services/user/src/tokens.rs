//! Access tokens (signed JWTs) and rotating refresh tokens: issuance,
//! single-use rotation within a family, and reuse detection.

use berth_runtime::Problem;
use berth_runtime::auth::AccessClaims;
use serde::Serialize;

use crate::crypto::sha256;
use crate::error::ApiResult;
use crate::store::{self, Account, secs};
use crate::{UserError, Users};

/// An access token and the refresh token that renews it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct TokenResponse {
    /// EdDSA JWT for `Authorization: Bearer`.
    access_token: String,
    #[schema(example = "Bearer")]
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: u64,
    /// Opaque and single use.
    refresh_token: String,
    /// Seconds until the refresh token expires.
    refresh_expires_in: u64,
}

impl Users {
    pub(crate) fn access_token(&self, account: &Account) -> Result<String, UserError> {
        let now = store::now().max(0).unsigned_abs();
        let claims = AccessClaims {
            iss: self.config().issuer.clone(),
            aud: self.config().audience.clone(),
            sub: account.id.clone(),
            exp: now + self.config().access_ttl.as_secs(),
            nbf: now,
            iat: now,
            jti: Some(uuid::Uuid::now_v7().to_string()),
            roles: account.roles.clone(),
            phone_number: account.phone.clone().filter(|_| account.phone_verified),
        };
        self.inner.keys.active().sign(&claims)
    }

    /// Issues an access token and a refresh token of `family` (new when `None`).
    pub(crate) async fn tokens(
        &self,
        account: &Account,
        family: Option<String>,
    ) -> Result<TokenResponse, UserError> {
        let access = self.access_token(account)?;
        let refresh = self.random_token()?;
        let family = family.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let refresh_ttl = self.config().refresh_ttl.as_secs();
        self.inner
            .store
            .insert_refresh(
                &sha256(&refresh),
                &family,
                &account.id,
                store::now() + secs(refresh_ttl),
            )
            .await?;
        Ok(TokenResponse {
            access_token: access,
            token_type: "Bearer",
            expires_in: self.config().access_ttl.as_secs(),
            refresh_token: refresh,
            refresh_expires_in: refresh_ttl,
        })
    }

    /// Exchanges a refresh token for new tokens of the same family. A token
    /// that was already used revokes the whole family.
    pub(crate) async fn rotate_refresh(&self, refresh_token: &str) -> ApiResult<TokenResponse> {
        let store = &self.inner.store;
        let hash = sha256(refresh_token);
        let invalid = || Problem::unauthorized("invalid refresh token");
        let row = store.refresh_by_hash(&hash).await?.ok_or_else(invalid)?;
        if row.revoked_at.is_some() {
            return Err(invalid().into());
        }
        if row.used_at.is_some() || !store.consume_refresh(&hash).await? {
            // A rotated token came back: whoever holds the family is not to be
            // trusted any more.
            store.revoke_family(&row.family_id).await?;
            tracing::warn!(account = %row.account_id, family = %row.family_id, "refresh token reuse; family revoked");
            return Err(invalid().into());
        }
        if row.expires_at <= store::now() {
            return Err(invalid().into());
        }
        let account = store
            .account_by_id(&row.account_id)
            .await?
            .ok_or_else(invalid)?;
        Ok(self.tokens(&account, Some(row.family_id)).await?)
    }

    /// Revokes the family of a refresh token (logout); unknown tokens are
    /// ignored.
    pub(crate) async fn revoke_refresh(&self, refresh_token: &str) -> Result<(), UserError> {
        let store = &self.inner.store;
        if let Some(row) = store.refresh_by_hash(&sha256(refresh_token)).await? {
            store.revoke_family(&row.family_id).await?;
            tracing::info!(account = %row.account_id, "logged out");
        }
        Ok(())
    }
}
