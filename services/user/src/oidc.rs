//! OpenID Connect login: authorization code + PKCE (S256), with discovery,
//! `state` (stored hashed, single use, 10 minutes), `nonce` and full ID-token
//! validation by the `openidconnect` crate. Accounts are linked by external
//! subject, or on first login by *verified* email.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use berth_runtime::openapi::ProblemResponse;
use berth_runtime::{Json, Path, Problem, Query};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse as _,
};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::crypto::sha256;
use crate::error::{ApiError, ApiResult};
use crate::store::Account;
use crate::tokens::TokenResponse;
use crate::validate::normalize_email;
use crate::{UserError, Users, store};

const STATE_TTL: i64 = 600;

/// One external OpenID provider.
#[derive(Clone)]
pub struct OidcProviderConfig {
    /// Path segment: `/v1/auth/oidc/{name}/start`.
    pub name: String,
    pub issuer_url: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// This service's callback, `…/v1/auth/oidc/{name}/callback`, as
    /// registered with the provider.
    pub redirect_url: String,
    /// Extra scopes besides `openid email`.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for OidcProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProviderConfig")
            .field("name", &self.name)
            .field("issuer_url", &self.issuer_url)
            .field("client_id", &self.client_id)
            .field("redirect_url", &self.redirect_url)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Oidc {
    providers: HashMap<String, OidcProviderConfig>,
    metadata: Mutex<HashMap<String, (CoreProviderMetadata, std::time::Instant)>>,
    http: openidconnect::reqwest::Client,
}

const METADATA_TTL: Duration = Duration::from_secs(3600);

impl Oidc {
    pub(crate) fn new(providers: Vec<OidcProviderConfig>) -> Result<Self, UserError> {
        let http = openidconnect::reqwest::Client::builder()
            // Following redirects would open the token exchange to SSRF.
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| UserError::Config(format!("oidc http client: {e}")))?;
        Ok(Self {
            providers: providers.into_iter().map(|p| (p.name.clone(), p)).collect(),
            metadata: Mutex::new(HashMap::new()),
            http,
        })
    }

    fn provider(&self, name: &str) -> Result<&OidcProviderConfig, Problem> {
        self.providers
            .get(name)
            .ok_or_else(|| Problem::not_found("no such identity provider"))
    }

    async fn metadata(&self, config: &OidcProviderConfig) -> Result<CoreProviderMetadata, Problem> {
        let mut cache = self.metadata.lock().await;
        if let Some((metadata, at)) = cache.get(&config.name)
            && at.elapsed() < METADATA_TTL
        {
            return Ok(metadata.clone());
        }
        let issuer = IssuerUrl::new(config.issuer_url.clone())
            .map_err(|_| Problem::unavailable("the identity provider is misconfigured"))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|error| {
                tracing::warn!(provider = %config.name, error = %error, "OIDC discovery failed");
                Problem::unavailable("the identity provider is unreachable")
            })?;
        cache.insert(
            config.name.clone(),
            (metadata.clone(), std::time::Instant::now()),
        );
        Ok(metadata)
    }
}

fn misconfigured(_: impl std::fmt::Display) -> Problem {
    Problem::unavailable("the identity provider is misconfigured")
}

/// Starts an OpenID Connect login: 303 to the provider.
#[utoipa::path(
    get,
    path = "/v1/auth/oidc/{provider}/start",
    operation_id = "oidcStart",
    tag = "auth",
    params(("provider" = String, Path, description = "Configured identity provider name")),
    responses(
        (status = 303, description = "To the provider's authorization endpoint (code flow with PKCE)",
            headers(("Location" = String, description = "The provider's authorization URL"))),
        (status = 404, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
    )
)]
pub(crate) async fn start(
    State(users): State<Users>,
    Path(provider): Path<String>,
) -> ApiResult<Response> {
    let oidc = &users.inner.oidc;
    let config = oidc.provider(&provider)?;
    let metadata = oidc.metadata(config).await?;
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(config.client_id.clone()),
        config.client_secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(RedirectUrl::new(config.redirect_url.clone()).map_err(misconfigured)?);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge);
    for scope in &config.scopes {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    let (url, state, nonce) = request.url();
    users
        .inner
        .store
        .insert_oidc_state(
            &sha256(state.secret()),
            &provider,
            verifier.secret(),
            nonce.secret(),
            store::now() + STATE_TTL,
        )
        .await?;
    Ok(Redirect::to(url.as_str()).into_response())
}

/// What the provider appends to the callback URL.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CallbackQuery {
    /// Authorization code; required unless `error` is set.
    #[serde(default)]
    code: Option<String>,
    /// The `state` sent by `start`; required unless `error` is set.
    #[serde(default)]
    state: Option<String>,
    /// Set when the provider refused the login.
    #[serde(default)]
    error: Option<String>,
}

/// Completes an OpenID Connect login: the provider redirects here, the
/// answer is tokens.
#[utoipa::path(
    get,
    path = "/v1/auth/oidc/{provider}/callback",
    operation_id = "oidcCallback",
    tag = "auth",
    params(
        ("provider" = String, Path, description = "Configured identity provider name"),
        CallbackQuery,
    ),
    responses(
        (status = 200, description = "Signed in; the account is linked or created on first login", body = TokenResponse),
        (status = 401, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 409, response = ProblemResponse),
        (status = 422, response = ProblemResponse),
        (status = 503, response = ProblemResponse),
    )
)]
pub(crate) async fn callback(
    State(users): State<Users>,
    Path(provider): Path<String>,
    Query(query): Query<CallbackQuery>,
) -> ApiResult<Response> {
    let oidc = &users.inner.oidc;
    let config = oidc.provider(&provider)?;
    if let Some(error) = query.error {
        tracing::info!(%provider, %error, "identity provider refused the login");
        return Err(Problem::unauthorized("the identity provider refused the login").into());
    }
    let (Some(code), Some(state)) = (query.code, query.state) else {
        return Err(Problem::bad_request("`code` and `state` are required").into());
    };
    // Single use: the row is deleted as it is read.
    let (verifier, nonce) = users
        .inner
        .store
        .take_oidc_state(&sha256(&state), &provider)
        .await?
        .ok_or_else(|| Problem::unauthorized("unknown or expired login state"))?;
    let metadata = oidc.metadata(config).await?;
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(config.client_id.clone()),
        config.client_secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(RedirectUrl::new(config.redirect_url.clone()).map_err(misconfigured)?);
    let refused = |what: &str| -> ApiError {
        tracing::warn!(%provider, what, "OIDC login refused");
        Problem::unauthorized("the identity provider's answer was not accepted").into()
    };
    let response = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(misconfigured)?
        .set_pkce_verifier(PkceCodeVerifier::new(verifier))
        .request_async(&oidc.http)
        .await
        .map_err(|e| refused(&format!("token exchange failed: {e}")))?;
    let id_token = response.id_token().ok_or_else(|| refused("no id_token"))?;
    let claims = id_token
        .claims(&client.id_token_verifier(), &Nonce::new(nonce))
        .map_err(|e| refused(&format!("id_token invalid: {e}")))?;
    let email = match (claims.email(), claims.email_verified()) {
        (Some(email), Some(true)) => Some(email.as_str().to_owned()),
        _ => None,
    };
    let subject = claims.subject().as_str().to_owned();
    let account = account_for_identity(&users, &provider, &subject, email).await?;
    tracing::info!(account = %account.id, %provider, "OIDC login");
    Ok(Json(users.tokens(&account, None).await?).into_response())
}

/// Links or creates the account for a verified external identity.
async fn account_for_identity(
    users: &Users,
    provider: &str,
    subject: &str,
    email: Option<String>,
) -> Result<Account, ApiError> {
    let store = &users.inner.store;
    if let Some(id) = store.account_by_identity(provider, subject).await? {
        return store
            .account_by_id(&id)
            .await?
            .ok_or_else(|| Problem::unauthorized("the linked account no longer exists").into());
    }
    let Some(email) = email else {
        return Err(Problem::unauthorized("the provider did not return a verified email").into());
    };
    let email = normalize_email(&email)?;
    let account = match store.account_by_email(&email).await? {
        // Only link to an account whose email was verified, so nobody can
        // pre-register someone else's address and wait for them.
        Some(account) if account.email_verified => account,
        Some(_) => {
            return Err(Problem::conflict(
                "unverified-account",
                "an account with this email exists but its email is not verified",
            )
            .into());
        }
        None => {
            store
                .insert_account(
                    Some(&email),
                    true,
                    None,
                    false,
                    None,
                    &["customer".to_owned()],
                )
                .await?
        }
    };
    store.link_identity(provider, subject, &account.id).await?;
    tracing::info!(account = %account.id, %provider, "external identity linked");
    Ok(account)
}
