//! The signed-in account: `/v1/me`.

use std::time::Duration;

use axum::extract::State;
use berth_runtime::auth::Principal;
use berth_runtime::openapi::ProblemResponse;
use berth_runtime::{Json, Problem};
use http::StatusCode;
use serde::Deserialize;

use super::AccountView;
use crate::Users;
use crate::error::ApiResult;

#[utoipa::path(
    get,
    operation_id = "getMe",
    path = "/v1/me",
    tag = "me",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The signed-in account", body = AccountView),
        (status = 404, response = ProblemResponse),
    )
)]
pub(super) async fn get_me(
    State(users): State<Users>,
    principal: Principal,
) -> ApiResult<Json<AccountView>> {
    let account = users
        .inner
        .store
        .account_by_id(&principal.subject)
        .await?
        .ok_or_else(|| Problem::not_found("the account no longer exists"))?;
    Ok(Json(AccountView::from(&account)))
}

/// Sends a new verification email (at most `otp_per_hour` an hour).
#[utoipa::path(
    post,
    operation_id = "resendVerification",
    path = "/v1/me/email/verification",
    tag = "me",
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Verification mail sent"),
        (status = 404, response = ProblemResponse),
        (status = 409, response = ProblemResponse),
        (status = 429, description = "Too many verification mails this hour", body = Problem,
            content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, response = ProblemResponse),
    )
)]
pub(super) async fn resend_verification(
    State(users): State<Users>,
    principal: Principal,
) -> ApiResult<StatusCode> {
    let account = users
        .inner
        .store
        .account_by_id(&principal.subject)
        .await?
        .ok_or_else(|| Problem::not_found("the account no longer exists"))?;
    if account.email_verified || account.email.is_none() {
        return Err(Problem::conflict("nothing-to-verify", "no unverified email address").into());
    }
    users
        .limit_requests(
            &format!("verify:{}", account.id),
            users.config().limits.otp_per_hour,
            Duration::from_secs(3600),
        )
        .await?;
    users.send_verification(&account).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PatchMe {
    /// At most 100 characters; `null` or blank removes it, absent keeps it.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 100)]
    display_name: Option<Option<String>>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

#[utoipa::path(
    patch,
    operation_id = "updateMe",
    path = "/v1/me",
    tag = "me",
    security(("bearer" = [])),
    request_body = PatchMe,
    responses(
        (status = 200, description = "The updated account", body = AccountView),
        (status = 404, response = ProblemResponse),
    )
)]
pub(super) async fn patch_me(
    State(users): State<Users>,
    principal: Principal,
    Json(body): Json<PatchMe>,
) -> ApiResult<Json<AccountView>> {
    if let Some(name) = body.display_name {
        let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
        if name.as_ref().is_some_and(|n| n.chars().count() > 100) {
            return Err(Problem::validation("`display_name` is at most 100 characters").into());
        }
        users
            .inner
            .store
            .set_display_name(&principal.subject, name.as_deref())
            .await?;
    }
    get_me(State(users), principal).await
}

/// Deletes the account and its personal data (email, phone, password hash,
/// name, linked identities, sessions, pending tokens and codes) and records
/// `account.deleted` for the booking service in the same transaction.
#[utoipa::path(
    delete,
    operation_id = "deleteMe",
    path = "/v1/me",
    tag = "me",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Account deleted (or already gone)"),
    )
)]
pub(super) async fn delete_me(
    State(users): State<Users>,
    principal: Principal,
) -> ApiResult<StatusCode> {
    if users.delete_account(&principal.subject).await? {
        tracing::info!(account = %principal.subject, "account deleted");
    }
    Ok(StatusCode::NO_CONTENT)
}
