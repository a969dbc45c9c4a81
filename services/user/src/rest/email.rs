//! The flows driven by mailed links: email verification and password reset.

use std::time::Duration;

use axum::extract::State;
use berth_runtime::openapi::ProblemResponse;
use berth_runtime::{Json, Problem};
use http::StatusCode;
use serde::Deserialize;

use super::ClientAddr;
use crate::Users;
use crate::crypto::sha256;
use crate::email::{PURPOSE_RESET, PURPOSE_VERIFY};
use crate::error::ApiResult;
use crate::passwords::check_password;
use crate::validate::normalize_email;

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct TokenRequest {
    /// From the mailed link.
    token: String,
}

/// Confirms the email address with the token from the verification mail.
#[utoipa::path(
    post,
    operation_id = "verifyEmail",
    path = "/v1/auth/email/verify",
    tag = "auth",
    request_body = TokenRequest,
    responses(
        (status = 204, description = "Email verified"),
    )
)]
pub(super) async fn verify_email(
    State(users): State<Users>,
    Json(body): Json<TokenRequest>,
) -> ApiResult<StatusCode> {
    let account = users
        .inner
        .store
        .use_one_time(&sha256(&body.token), PURPOSE_VERIFY)
        .await?
        .ok_or_else(|| Problem::bad_request("the token is invalid, used or expired"))?;
    users.inner.store.mark_email_verified(&account).await?;
    tracing::info!(%account, "email verified");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct ForgotRequest {
    #[schema(format = Email)]
    email: String,
}

/// Mails a password-reset link when the account exists; the answer is the
/// same either way.
#[utoipa::path(
    post,
    operation_id = "forgotPassword",
    path = "/v1/auth/password/forgot",
    tag = "auth",
    request_body = ForgotRequest,
    responses(
        (status = 202, description = "A reset link is mailed if the account exists"),
        (status = 429, description = "Too many requests from this address or for this account", body = Problem,
            content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, response = ProblemResponse),
    )
)]
pub(super) async fn forgot_password(
    State(users): State<Users>,
    ClientAddr(address): ClientAddr,
    Json(body): Json<ForgotRequest>,
) -> ApiResult<StatusCode> {
    let limits = users.config().limits.clone();
    users
        .limit_address(
            address.as_deref(),
            limits.requests_per_address,
            limits.login_window,
        )
        .await?;
    let email = normalize_email(&body.email)?;
    // Same answer whether or not the account exists.
    if let Some(account) = users.inner.store.account_by_email(&email).await? {
        users
            .limit_requests(
                &format!("reset:{}", account.id),
                limits.otp_per_hour,
                Duration::from_secs(3600),
            )
            .await?;
        users.send_password_reset(&account.id, &email).await?;
    }
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct ResetRequest {
    /// From the mailed link.
    token: String,
    #[schema(format = Password, min_length = 10, max_length = 128)]
    password: String,
}

/// Sets a new password and revokes every session of the account.
#[utoipa::path(
    post,
    operation_id = "resetPassword",
    path = "/v1/auth/password/reset",
    tag = "auth",
    request_body = ResetRequest,
    responses(
        (status = 204, description = "Password changed"),
    )
)]
pub(super) async fn reset_password(
    State(users): State<Users>,
    Json(body): Json<ResetRequest>,
) -> ApiResult<StatusCode> {
    check_password(&body.password)?;
    let store = &users.inner.store;
    let account = store
        .use_one_time(&sha256(&body.token), PURPOSE_RESET)
        .await?
        .ok_or_else(|| Problem::bad_request("the token is invalid, used or expired"))?;
    let hash = users.hash(&body.password).await?;
    store.set_password(&account, &hash).await?;
    // Receiving the reset mail proves the address.
    store.mark_email_verified(&account).await?;
    store.revoke_all_refresh(&account).await?;
    tracing::info!(%account, "password reset; sessions revoked");
    Ok(StatusCode::NO_CONTENT)
}
