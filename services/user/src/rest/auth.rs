//! Sign-up, password login, token refresh and logout, and the JWKS.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_runtime::openapi::ProblemResponse;
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

/// JSON Web Key Set (RFC 7517) of the access-token signing keys. Documents
/// `jsonwebtoken`'s `JwkSet`, which is what the handler serialises.
#[derive(utoipa::ToSchema)]
#[schema(as = JwkSet)]
#[expect(dead_code, reason = "only describes the JWKS body")]
struct JwkSetSchema {
    /// The active key first, then previous keys still accepted.
    keys: Vec<JwkSchema>,
}

/// An Ed25519 public key.
#[derive(utoipa::ToSchema)]
#[schema(as = Jwk)]
#[expect(dead_code, reason = "only describes the JWKS body")]
struct JwkSchema {
    #[schema(example = "OKP")]
    kty: String,
    #[schema(example = "Ed25519")]
    crv: String,
    /// The public key, base64url.
    x: String,
    /// Matches the `kid` header of the tokens it signed.
    kid: String,
    #[schema(example = "EdDSA")]
    alg: String,
    #[schema(rename = "use", example = "sig")]
    use_: String,
}

#[utoipa::path(
    get,
    operation_id = "getJwks",
    path = "/.well-known/jwks.json",
    tag = "jwks",
    responses(
        (status = 200, description = "The signing keys; cacheable for 5 minutes", body = JwkSetSchema,
            headers(("Cache-Control" = String, description = "`public, max-age=300`"))),
    )
)]
pub(super) async fn jwks(State(users): State<Users>) -> Response {
    let mut response = axum::Json(users.inner.keys.jwks().get().as_ref().clone()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct SignupRequest {
    #[schema(format = Email)]
    email: String,
    #[schema(format = Password, min_length = 10, max_length = 128)]
    password: String,
    #[serde(default)]
    display_name: Option<String>,
}

/// Creates an account with the `customer` role and mails a verification
/// link.
#[utoipa::path(
    post,
    operation_id = "signup",
    path = "/v1/auth/signup",
    tag = "auth",
    request_body = SignupRequest,
    responses(
        (status = 201, description = "Account created", body = AccountView),
        (status = 409, response = ProblemResponse),
        (status = 429, description = "Too many requests from this address", body = Problem,
            content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, response = ProblemResponse),
    )
)]
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

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct LoginRequest {
    #[schema(format = Email)]
    email: String,
    #[schema(format = Password)]
    password: String,
}

/// Password login. Failures are throttled per account and per address.
#[utoipa::path(
    post,
    operation_id = "login",
    path = "/v1/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 401, response = ProblemResponse),
        (status = 429, description = "Too many failed logins", body = Problem,
            content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
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

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct RefreshRequest {
    refresh_token: String,
}

/// Exchanges a refresh token for new tokens. Reusing a spent refresh token
/// revokes its whole family.
#[utoipa::path(
    post,
    operation_id = "refreshTokens",
    path = "/v1/auth/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens", body = TokenResponse),
        (status = 401, response = ProblemResponse),
    )
)]
pub(super) async fn refresh(
    State(users): State<Users>,
    Json(body): Json<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    Ok(Json(users.rotate_refresh(&body.refresh_token).await?))
}

/// Revokes the refresh token's family; unknown tokens are ignored.
#[utoipa::path(
    post,
    operation_id = "logout",
    path = "/v1/auth/logout",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "Signed out"),
    )
)]
pub(super) async fn logout(
    State(users): State<Users>,
    Json(body): Json<RefreshRequest>,
) -> ApiResult<StatusCode> {
    users.revoke_refresh(&body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}
