//! Sign-up, password login, token refresh and logout, and the JWKS.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_runtime::{Json, Problem};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;

use super::{AccountView, ClientAddr};
use crate::crypto::sha256;
use crate::error::ApiResult;
use crate::passwords::check_password;
use crate::throttle::too_many;
use crate::tokens::TokenResponse;
use crate::validate::normalize_email;
use crate::{UserError, Users};

pub(super) async fn jwks(State(users): State<Users>) -> Response {
    let mut response = axum::Json(users.inner.keys.jwks().get().as_ref().clone()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

#[derive(Deserialize)]
pub(super) struct SignupRequest {
    email: String,
    password: String,
    #[serde(default)]
    display_name: Option<String>,
}

pub(super) async fn signup(
    State(users): State<Users>,
    ClientAddr(address): ClientAddr,
    Json(body): Json<SignupRequest>,
) -> ApiResult<(StatusCode, Json<AccountView>)> {
    let limits = &users.config().limits;
    users
        .limit_address(
            address.as_deref(),
            limits.requests_per_address,
            limits.login_window,
        )
        .await?;
    let email = normalize_email(&body.email)?;
    check_password(&body.password)?;
    let hash = users.hash(&body.password).await?;
    let account = match users
        .inner
        .store
        .insert_account(
            Some(&email),
            false,
            None,
            false,
            Some(&hash),
            &["customer".to_owned()],
        )
        .await
    {
        Ok(account) => account,
        Err(UserError::Conflict) => {
            return Err(
                Problem::conflict("account-exists", "an account with this email exists").into(),
            );
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(name) = body
        .display_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        users
            .inner
            .store
            .set_display_name(&account.id, Some(name))
            .await?;
    }
    users.send_verification(&account).await?;
    tracing::info!(account = %account.id, "account created");
    let account = users
        .inner
        .store
        .account_by_id(&account.id)
        .await?
        .ok_or(UserError::NotFound)?;
    Ok((StatusCode::CREATED, Json(AccountView::from(&account))))
}

#[derive(Deserialize)]
pub(super) struct LoginRequest {
    email: String,
    password: String,
}

pub(super) async fn login(
    State(users): State<Users>,
    ClientAddr(address): ClientAddr,
    Json(body): Json<LoginRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let email = normalize_email(&body.email)
        .map_err(|_| Problem::unauthorized("invalid email or password"))?;
    let limits = users.config().limits.clone();
    let account_key = format!("login:account:{}", sha256(&email));
    let address_key = address.as_ref().map(|a| format!("login:address:{a}"));
    let throttle = &users.inner.throttle;
    let address_count = match &address_key {
        Some(key) => throttle.count(key).await,
        None => 0,
    };
    if throttle.count(&account_key).await >= limits.login_per_account
        || address_count >= limits.login_per_address
    {
        tracing::warn!(
            address = address.as_deref().unwrap_or("unknown"),
            "login throttled"
        );
        return Err(too_many(limits.login_window).into());
    }
    let account = users.inner.store.account_by_email(&email).await?;
    let ok = users
        .verify_password(
            &body.password,
            account.as_ref().and_then(|a| a.password_hash.as_deref()),
        )
        .await;
    match account {
        Some(account) if ok => {
            throttle.reset(&account_key).await;
            tracing::info!(account = %account.id, "password login");
            Ok(Json(users.tokens(&account, None).await?))
        }
        _ => {
            throttle.hit(&account_key, limits.login_window).await;
            if let Some(key) = &address_key {
                throttle.hit(key, limits.login_window).await;
            }
            tracing::info!(
                address = address.as_deref().unwrap_or("unknown"),
                "failed password login"
            );
            Err(Problem::unauthorized("invalid email or password").into())
        }
    }
}

#[derive(Deserialize)]
pub(super) struct RefreshRequest {
    refresh_token: String,
}

pub(super) async fn refresh(
    State(users): State<Users>,
    Json(body): Json<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    Ok(Json(users.rotate_refresh(&body.refresh_token).await?))
}

pub(super) async fn logout(
    State(users): State<Users>,
    Json(body): Json<RefreshRequest>,
) -> ApiResult<StatusCode> {
    users.revoke_refresh(&body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}
