//! Phone login: an SMS one-time code, then tokens.

use std::time::Duration;

use axum::extract::State;
use berth_runtime::openapi::ProblemResponse;
use berth_runtime::{Json, Problem};
use http::StatusCode;
use serde::Deserialize;

use super::ClientAddr;
use crate::crypto::{ct_eq, sha256};
use crate::error::ApiResult;
use crate::otp::six_digits;
use crate::store::{self, secs};
use crate::throttle::too_many;
use crate::tokens::TokenResponse;
use crate::validate::normalize_phone;
use crate::{UserError, Users};

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct PhoneStartRequest {
    /// E.164, e.g. `+441632960961`.
    phone: String,
}

/// Texts a 6-digit login code to the phone.
#[utoipa::path(
    post,
    operation_id = "startPhoneLogin",
    path = "/v1/auth/phone/start",
    tag = "auth",
    request_body = PhoneStartRequest,
    responses(
        (status = 202, description = "Code sent"),
        (status = 429, description = "Too many codes for this phone or requests from this address", body = Problem,
            content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, response = ProblemResponse),
    )
)]
pub(super) async fn phone_start(
    State(users): State<Users>,
    ClientAddr(address): ClientAddr,
    Json(body): Json<PhoneStartRequest>,
) -> ApiResult<StatusCode> {
    let limits = users.config().limits.clone();
    let phone = normalize_phone(&body.phone)?;
    users
        .limit_address(
            address.as_deref(),
            limits.requests_per_address,
            limits.login_window,
        )
        .await?;
    let phone_key = sha256(&phone);
    users
        .limit_requests(
            &format!("otp:resend:{phone_key}"),
            1,
            limits.otp_resend_interval,
        )
        .await?;
    users
        .limit_requests(
            &format!("otp:hour:{phone_key}"),
            limits.otp_per_hour,
            Duration::from_secs(3600),
        )
        .await?;
    let code = six_digits(&users.inner.random)?;
    let ttl = secs(limits.otp_ttl.as_secs());
    users
        .inner
        .store
        .insert_challenge(&phone, &users.code_hash(&phone, &code), store::now() + ttl)
        .await?;
    users
        .inner
        .sms
        .send(
            &phone,
            &format!("Your Berth code is {code}. It expires in 5 minutes."),
        )
        .await
        .map_err(|e| UserError::Delivery(e.to_string()))?;
    tracing::info!("phone code sent");
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct PhoneVerifyRequest {
    /// E.164, as given to `/v1/auth/phone/start`.
    phone: String,
    #[schema(example = "123456")]
    code: String,
}

/// Exchanges the texted code for tokens, creating the account on first
/// login.
#[utoipa::path(
    post,
    operation_id = "verifyPhoneLogin",
    path = "/v1/auth/phone/verify",
    tag = "auth",
    request_body = PhoneVerifyRequest,
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 401, response = ProblemResponse),
        (status = 429, description = "Too many attempts for this code", body = Problem,
            content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub(super) async fn phone_verify(
    State(users): State<Users>,
    Json(body): Json<PhoneVerifyRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let phone = normalize_phone(&body.phone)?;
    let store = &users.inner.store;
    let limits = users.config().limits.clone();
    let invalid = || Problem::unauthorized("invalid or expired code");
    let challenge = store.active_challenge(&phone).await?.ok_or_else(invalid)?;
    if challenge.expires_at <= store::now() {
        return Err(invalid().into());
    }
    if challenge.attempts >= limits.otp_attempts
        || !store
            .count_attempt(&challenge.id, limits.otp_attempts)
            .await?
    {
        return Err(too_many(limits.otp_resend_interval).into());
    }
    let expected = challenge.code_hash.as_bytes();
    let given = users.code_hash(&phone, body.code.trim());
    if !ct_eq(expected, given.as_bytes()) {
        tracing::info!("wrong phone code");
        return Err(invalid().into());
    }
    if !store.consume_challenge(&challenge.id).await? {
        return Err(invalid().into());
    }
    let account = match store.account_by_phone(&phone).await? {
        Some(account) => account,
        None => {
            store
                .insert_account(
                    None,
                    false,
                    Some(&phone),
                    true,
                    None,
                    &["customer".to_owned()],
                )
                .await?
        }
    };
    tracing::info!(account = %account.id, "phone login");
    Ok(Json(users.tokens(&account, None).await?))
}
