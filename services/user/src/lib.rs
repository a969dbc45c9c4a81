//! The `user` service: accounts and authentication — sign-up, login
//! (password, phone OTP, OIDC), access JWTs, rotating refresh tokens, JWKS.
//!
//! # Routes
//! | Route | |
//! |---|---|
//! | `GET /.well-known/jwks.json` | public signing keys (active + previous) |
//! | `POST /v1/auth/signup` | `{email, password, display_name?}` → 201 account; sends a verification mail |
//! | `POST /v1/auth/login` | `{email, password}` → tokens (401 / 429) |
//! | `POST /v1/auth/refresh` | `{refresh_token}` → new tokens (rotation, reuse detection) |
//! | `POST /v1/auth/logout` | `{refresh_token}` → 204, revokes the family |
//! | `POST /v1/auth/email/verify` | `{token}` → 204 |
//! | `POST /v1/auth/password/forgot` | `{email}` → 202 (same answer for unknown emails) |
//! | `POST /v1/auth/password/reset` | `{token, password}` → 204, revokes all sessions |
//! | `POST /v1/auth/phone/start` | `{phone}` (E.164) → 202, SMS with a 6-digit code |
//! | `POST /v1/auth/phone/verify` | `{phone, code}` → tokens |
//! | `GET /v1/auth/oidc/{provider}/start` | 303 to the provider (code + PKCE) |
//! | `GET /v1/auth/oidc/{provider}/callback` | `?code&state` → tokens |
//! | `GET/PATCH/DELETE /v1/me` | bearer; PATCH `{display_name}`; DELETE removes personal data |
//! | `POST /v1/me/email/verification` | bearer; re-sends the verification mail |
//! | `PUT /v1/users/{id}/roles` | bearer, `admin` role; `{roles: [customer|staff|admin]}` |
//!
//! Token responses: `{access_token, token_type: "Bearer", expires_in,
//! refresh_token, refresh_expires_in}`. Errors are problem+json.
//!
//! # Tokens
//! * **Access tokens** are EdDSA (Ed25519) JWTs with a `kid`, claims `iss`,
//!   `aud`, `sub` (account id), `exp`, `nbf`, `iat`, `jti` and `roles`;
//!   default lifetime 10 minutes. Services verify them with
//!   [`berth_runtime::auth::Verifier`] against `GET /.well-known/jwks.json`.
//! * **Refresh tokens** are opaque (256 random bits, base64url), stored only
//!   as SHA-256 hashes, single use: every refresh returns a new one in the
//!   same *family*. Presenting an already-used token (theft replay) revokes
//!   the whole family. Logout revokes the family; a password reset revokes
//!   every family of the account.
//! * **Keys**: one active signing key plus previous keys published for
//!   verification during rotation (see [`keys`]).
//!
//! # Passwords
//! argon2id, v1.3, defaults m = 19 456 KiB (19 MiB), t = 2, p = 1 — the
//! OWASP Password Storage Cheat Sheet baseline: memory-hard enough to make
//! GPU guessing expensive while costing ~20–40 ms per login on one core of
//! a release build. Parameters are stored in each PHC hash string, so they
//! can be raised later without breaking existing hashes. Passwords must be
//! 10–128 characters (the upper bound caps hashing cost per request).
//!
//! # Throttling
//! Failed logins are counted per account and per client address in a fixed
//! window (Redis when configured, in-memory otherwise); past the limit the
//! answer is 429 problem+json with `Retry-After`, even for the right
//! password. OTP sends are throttled per phone (resend interval + hourly
//! cap); each OTP allows a fixed number of attempts.

pub mod keys;
pub mod mail;
mod oidc;
pub mod sms;
mod store;
mod throttle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use berth_runtime::auth::{AccessClaims, Principal, Verifier, require_role};
use berth_runtime::{Json, Path, Problem};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use keys::SigningKeySource;
pub use mail::{Mail, MailSender, MemoryMailer, SmtpConfig, SmtpMailer, SmtpSecurity};
pub use oidc::OidcProviderConfig;
pub use sms::{MemorySms, SmsSender, TwilioConfig, TwilioSms};

use keys::{KeyRing, SigningKey};
use store::{Account, Store};
use throttle::Throttle;

/// Name used in logs, metrics and `berth serve <name>`.
pub const NAME: &str = "user";

/// The roles an account can hold.
pub const ROLES: [&str; 3] = ["customer", "staff", "admin"];

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("signing key: {0}")]
    Key(String),
    #[error("password hashing: {0}")]
    Hash(String),
    #[error("already exists")]
    Conflict,
    #[error("not found")]
    NotFound,
    #[error("delivery failed: {0}")]
    Delivery(String),
    #[error("{0}")]
    Problem(Problem),
}

impl From<Problem> for UserError {
    fn from(p: Problem) -> Self {
        Self::Problem(p)
    }
}

impl IntoResponse for UserError {
    fn into_response(self) -> Response {
        match self {
            UserError::Problem(p) => p.into_response(),
            UserError::Conflict => Problem::conflict("exists", "already exists").into_response(),
            UserError::NotFound => Problem::not_found("not found").into_response(),
            UserError::Delivery(_) => {
                tracing::warn!(error = %self, "message delivery failed");
                Problem::unavailable("the message could not be delivered").into_response()
            }
            other => Problem::internal(&other).into_response(),
        }
    }
}

/// argon2id cost parameters (see the crate docs for the defaults' rationale).
#[derive(Debug, Clone, Copy)]
pub struct PasswordParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Attempt limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Failed logins per account per window.
    pub login_per_account: u64,
    /// Failed logins per client address per window.
    pub login_per_address: u64,
    pub login_window: Duration,
    /// Minimum time between two OTP sends to one phone.
    pub otp_resend_interval: Duration,
    /// OTP sends per phone per hour.
    pub otp_per_hour: u64,
    /// Wrong codes allowed per OTP.
    pub otp_attempts: i64,
    pub otp_ttl: Duration,
    pub email_token_ttl: Duration,
    pub reset_token_ttl: Duration,
    /// Requests per address per window for sign-up, password reset and OTP.
    pub requests_per_address: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            login_per_account: 5,
            login_per_address: 50,
            login_window: Duration::from_secs(15 * 60),
            otp_resend_interval: Duration::from_secs(30),
            otp_per_hour: 5,
            otp_attempts: 5,
            otp_ttl: Duration::from_secs(5 * 60),
            email_token_ttl: Duration::from_secs(24 * 3600),
            reset_token_ttl: Duration::from_secs(30 * 60),
            requests_per_address: 100,
        }
    }
}

/// Settings of the user service.
#[derive(Clone)]
pub struct UserConfig {
    /// `iss` of access tokens (the service's public base URL).
    pub issuer: String,
    /// `aud` of access tokens.
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub signing_key: SigningKeySource,
    /// Keys still accepted for verification (previous active keys).
    pub previous_keys: Vec<SigningKeySource>,
    /// Secret for HMAC-hashing OTP codes. `None` generates one per process
    /// (pending codes then do not survive restarts or span replicas).
    pub code_pepper: Option<String>,
    pub password: PasswordParams,
    pub limits: Limits,
    /// Base URL used in email links.
    pub public_url: String,
    /// `None` keeps mail in an in-memory outbox (development).
    pub smtp: Option<SmtpConfig>,
    /// `None` keeps SMS in memory (development).
    pub sms: Option<TwilioConfig>,
    pub oidc_providers: Vec<OidcProviderConfig>,
    /// Take the client address from the last `X-Forwarded-For` hop (set by
    /// the ingress). Turn off when clients reach the service directly.
    pub trust_forwarded_for: bool,
    /// Prefix of this service's Redis keys (separates deployments sharing
    /// one Redis).
    pub redis_prefix: String,
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("signing_key", &self.signing_key)
            .field("smtp", &self.smtp)
            .field("sms", &self.sms)
            .field("oidc_providers", &self.oidc_providers)
            .finish_non_exhaustive()
    }
}

impl Default for UserConfig {
    fn default() -> Self {
        Self {
            issuer: "http://localhost:8080".into(),
            audience: "berth".into(),
            access_ttl: Duration::from_secs(600),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            signing_key: SigningKeySource::Generate,
            previous_keys: Vec::new(),
            code_pepper: None,
            password: PasswordParams::default(),
            limits: Limits::default(),
            public_url: "http://localhost:8080".into(),
            smtp: None,
            sms: None,
            oidc_providers: Vec::new(),
            trust_forwarded_for: true,
            redis_prefix: "berth:user:".into(),
        }
    }
}

struct Inner {
    config: UserConfig,
    store: Store,
    throttle: Throttle,
    keys: KeyRing,
    verifier: Verifier,
    argon: argon2::Argon2<'static>,
    dummy_hash: String,
    pepper: ring::hmac::Key,
    mailer: Arc<dyn MailSender>,
    sms: Arc<dyn SmsSender>,
    oidc: oidc::Oidc,
    random: SystemRandom,
}

/// The user service. Cheap to clone.
#[derive(Clone)]
pub struct Users {
    inner: Arc<Inner>,
}

impl Users {
    /// Connects storage (running migrations), the throttle store and the
    /// configured senders.
    pub async fn connect(
        database_url: &str,
        redis_url: Option<&str>,
        config: UserConfig,
    ) -> Result<Self, UserError> {
        let mailer: Arc<dyn MailSender> = match &config.smtp {
            Some(smtp) => Arc::new(SmtpMailer::new(smtp).map_err(UserError::Config)?),
            None => Arc::new(MemoryMailer::default()),
        };
        let sms: Arc<dyn SmsSender> = match &config.sms {
            Some(twilio) => Arc::new(TwilioSms::new(twilio.clone())),
            None => Arc::new(MemorySms::default()),
        };
        Self::connect_with(database_url, redis_url, config, mailer, sms).await
    }

    /// Like [`Users::connect`] with explicit senders.
    pub async fn connect_with(
        database_url: &str,
        redis_url: Option<&str>,
        config: UserConfig,
        mailer: Arc<dyn MailSender>,
        sms: Arc<dyn SmsSender>,
    ) -> Result<Self, UserError> {
        let store = Store::connect(database_url).await?;
        let throttle = match redis_url {
            Some(url) => {
                let client = redis::Client::open(url)?;
                Throttle::Redis(
                    redis::aio::ConnectionManager::new(client).await?,
                    Arc::from(config.redis_prefix.as_str()),
                )
            }
            None => Throttle::memory(),
        };
        let active = SigningKey::load(&config.signing_key)?;
        let previous = config
            .previous_keys
            .iter()
            .map(SigningKey::load)
            .collect::<Result<Vec<_>, _>>()?;
        let keys = KeyRing::new(active, previous);
        let verifier = Verifier::from_shared(&config.issuer, &config.audience, keys.jwks());
        let p = config.password;
        let params = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, None)
            .map_err(|e| UserError::Config(format!("argon2 parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let random = SystemRandom::new();
        let pepper_bytes = match &config.code_pepper {
            Some(p) => p.as_bytes().to_vec(),
            None => random_bytes(&random, 32)?,
        };
        let pepper = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &pepper_bytes);
        let dummy = URL_SAFE_NO_PAD.encode(random_bytes(&random, 16)?);
        let dummy_hash = hash_password(&argon, &dummy)?;
        let oidc = oidc::Oidc::new(config.oidc_providers.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                store,
                throttle,
                keys,
                verifier,
                argon,
                dummy_hash,
                pepper,
                mailer,
                sms,
                oidc,
                random,
            }),
        })
    }

    /// The service's public REST routes.
    pub fn rest_routes(&self) -> Router {
        let me = Router::new()
            .route("/v1/me", get(get_me).patch(patch_me).delete(delete_me))
            .route("/v1/me/email/verification", post(resend_verification))
            .with_state(self.clone());
        let admin = Router::new()
            .route("/v1/users/{id}/roles", put(put_roles))
            .layer(require_role("admin"))
            .with_state(self.clone());
        let public = Router::new()
            .route("/.well-known/jwks.json", get(jwks))
            .route("/v1/auth/signup", post(signup))
            .route("/v1/auth/login", post(login))
            .route("/v1/auth/refresh", post(refresh))
            .route("/v1/auth/logout", post(logout))
            .route("/v1/auth/email/verify", post(verify_email))
            .route("/v1/auth/password/forgot", post(forgot_password))
            .route("/v1/auth/password/reset", post(reset_password))
            .route("/v1/auth/phone/start", post(phone_start))
            .route("/v1/auth/phone/verify", post(phone_verify))
            .route("/v1/auth/oidc/{provider}/start", get(oidc::start))
            .route("/v1/auth/oidc/{provider}/callback", get(oidc::callback))
            .with_state(self.clone());
        public.merge(me.merge(admin).layer(self.inner.verifier.layer()))
    }

    pub async fn check_ready(&self) -> Result<(), String> {
        self.inner.store.ping().await?;
        self.inner.throttle.ping().await
    }

    /// In-process verification of this service's access tokens (`berth dev`).
    pub fn verifier(&self) -> Verifier {
        self.inner.verifier.clone()
    }

    /// Creates (or resets the password of) a verified account with all roles.
    pub async fn ensure_demo_user(&self, email: &str, password: &str) -> Result<(), UserError> {
        let email = normalize_email(email)?;
        let hash = self.hash(password).await?;
        let roles: Vec<String> = ROLES.iter().map(|r| (*r).to_owned()).collect();
        match self.inner.store.account_by_email(&email).await? {
            Some(account) => {
                self.inner.store.set_password(&account.id, &hash).await?;
                self.inner.store.mark_email_verified(&account.id).await?;
                self.inner.store.set_roles(&account.id, &roles).await?;
            }
            None => {
                self.inner
                    .store
                    .insert_account(Some(&email), true, None, false, Some(&hash), &roles)
                    .await?;
            }
        }
        Ok(())
    }

    /// Makes a new signing key active; the previous one stays published for
    /// verification until [`Users::retire_previous_keys`].
    pub fn rotate_signing_key(&self, next: &SigningKeySource) -> Result<(), UserError> {
        self.inner.keys.rotate(SigningKey::load(next)?);
        Ok(())
    }

    pub fn retire_previous_keys(&self) {
        self.inner.keys.retire_previous();
    }

    /// Issues an access token for an account id (tests and tooling).
    pub async fn issue_access_token(&self, account_id: &str) -> Result<String, UserError> {
        let account = self
            .inner
            .store
            .account_by_id(account_id)
            .await?
            .ok_or(UserError::NotFound)?;
        self.access_token(&account)
    }

    fn config(&self) -> &UserConfig {
        &self.inner.config
    }

    fn access_token(&self, account: &Account) -> Result<String, UserError> {
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
        };
        self.inner.keys.active().sign(&claims)
    }

    fn random_token(&self) -> Result<String, UserError> {
        Ok(URL_SAFE_NO_PAD.encode(random_bytes(&self.inner.random, 32)?))
    }

    /// Issues an access token and a refresh token of `family` (new when `None`).
    async fn tokens(
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

    async fn hash(&self, password: &str) -> Result<String, UserError> {
        let argon = self.inner.argon.clone();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || hash_password(&argon, &password))
            .await
            .map_err(|e| UserError::Hash(e.to_string()))?
    }

    async fn verify_password(&self, password: &str, hash: Option<&str>) -> bool {
        // Unknown accounts are checked against a dummy hash so timing does
        // not reveal which emails exist.
        let (hash, real) = match hash {
            Some(h) => (h.to_owned(), true),
            None => (self.inner.dummy_hash.clone(), false),
        };
        let argon = self.inner.argon.clone();
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| argon.verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        ok && real
    }

    fn code_hash(&self, phone: &str, code: &str) -> String {
        let tag = ring::hmac::sign(&self.inner.pepper, format!("{phone}\n{code}").as_bytes());
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    async fn send_mail(&self, to: &str, subject: &str, body: String) -> Result<(), UserError> {
        self.inner
            .mailer
            .send(Mail {
                to: to.to_owned(),
                subject: subject.to_owned(),
                body,
            })
            .await
            .map_err(UserError::Delivery)
    }

    async fn send_verification(&self, account: &Account) -> Result<(), UserError> {
        let Some(email) = &account.email else {
            return Ok(());
        };
        let token = self.random_token()?;
        let ttl = secs(self.config().limits.email_token_ttl.as_secs());
        self.inner
            .store
            .insert_one_time(
                &sha256(&token),
                &account.id,
                PURPOSE_VERIFY,
                store::now() + ttl,
            )
            .await?;
        let link = format!(
            "{}/verify-email?token={token}",
            self.config().public_url.trim_end_matches('/')
        );
        self.send_mail(
            email,
            "Confirm your email address",
            format!("Confirm your email address for Berth:\n\n{link}\n\nThis link expires in 24 hours.\n"),
        )
        .await?;
        tracing::info!(account = %account.id, "verification email sent");
        Ok(())
    }

    /// [`Users::limit_requests`] per client address, when it is known.
    async fn limit_address(
        &self,
        address: Option<&str>,
        limit: u64,
        window: Duration,
    ) -> Result<(), Problem> {
        match address {
            Some(address) => {
                self.limit_requests(&format!("req:{address}"), limit, window)
                    .await
            }
            None => Ok(()),
        }
    }

    /// 429 when `key` is at `limit`; else counts one request.
    async fn limit_requests(&self, key: &str, limit: u64, window: Duration) -> Result<(), Problem> {
        if self.inner.throttle.count(key).await >= limit {
            return Err(too_many(window));
        }
        self.inner.throttle.hit(key, window).await;
        Ok(())
    }
}

const PURPOSE_VERIFY: &str = "verify-email";
const PURPOSE_RESET: &str = "reset-password";

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX / 2)
}

fn random_bytes(random: &SystemRandom, n: usize) -> Result<Vec<u8>, UserError> {
    let mut bytes = vec![0u8; n];
    random
        .fill(&mut bytes)
        .map_err(|_| UserError::Key("the system random generator failed".into()))?;
    Ok(bytes)
}

fn hash_password(argon: &argon2::Argon2<'_>, password: &str) -> Result<String, UserError> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UserError::Hash(e.to_string()))
}

fn sha256(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(value.as_bytes()))
}

fn too_many(retry_after: Duration) -> Problem {
    Problem::too_many_requests("too many attempts; try again later")
        .with_extension("retry_after", retry_after.as_secs())
}

/// problem+json plus `Retry-After` for 429s.
fn problem_response(problem: Problem) -> Response {
    let retry = problem
        .extensions
        .get("retry_after")
        .and_then(serde_json::Value::as_u64);
    let mut response = problem.into_response();
    if let Some(retry) = retry
        && let Ok(value) = HeaderValue::from_str(&retry.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

struct ApiError(UserError);

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        Self(e)
    }
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        Self(UserError::Problem(p))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self.0 {
            UserError::Problem(p) => problem_response(p),
            other => other.into_response(),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn normalize_email(email: &str) -> Result<String, Problem> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(email)
    } else {
        Err(Problem::validation("`email` is not a valid address"))
    }
}

fn normalize_phone(phone: &str) -> Result<String, Problem> {
    let phone: String = phone
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    let digits = phone.strip_prefix('+').unwrap_or("");
    if (8..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) {
        Ok(phone)
    } else {
        Err(Problem::validation(
            "`phone` must be in E.164 form, e.g. +441632960961",
        ))
    }
}

fn check_password(password: &str) -> Result<(), Problem> {
    let n = password.chars().count();
    if (10..=128).contains(&n) {
        Ok(())
    } else {
        Err(Problem::validation(
            "`password` must be 10 to 128 characters",
        ))
    }
}

/// The client address: the last `X-Forwarded-For` hop (the one our own
/// ingress added) when [`UserConfig::trust_forwarded_for`], else the TCP
/// peer when the server records it (`into_make_service_with_connect_info`).
/// `None` when unknown: per-address limits are then skipped rather than
/// putting every client into one bucket.
fn client_address(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    trust_forwarded: bool,
) -> Option<String> {
    let forwarded = if trust_forwarded {
        headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    } else {
        None
    };
    forwarded.or_else(|| peer.map(|p| p.ip().to_string()))
}

/// The client address of a request (see [`client_address`]).
struct ClientAddr(Option<String>);

impl FromRequestParts<Users> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, users: &Users) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr);
        Ok(Self(client_address(
            &parts.headers,
            peer,
            users.config().trust_forwarded_for,
        )))
    }
}

/// Constant-time equality (the lengths are not secret).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---------------------------------------------------------------- handlers

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    refresh_token: String,
    refresh_expires_in: u64,
}

#[derive(Serialize)]
struct AccountView {
    id: String,
    email: Option<String>,
    email_verified: bool,
    phone: Option<String>,
    phone_verified: bool,
    display_name: Option<String>,
    roles: Vec<String>,
    created_at: String,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> Self {
        Self {
            id: a.id.clone(),
            email: a.email.clone(),
            email_verified: a.email_verified,
            phone: a.phone.clone(),
            phone_verified: a.phone_verified,
            display_name: a.display_name.clone(),
            roles: a.roles.clone(),
            created_at: chrono::DateTime::from_timestamp(a.created_at, 0)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
        }
    }
}

async fn jwks(State(users): State<Users>) -> Response {
    let mut response = axum::Json(users.inner.keys.jwks().get().as_ref().clone()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

#[derive(Deserialize)]
struct SignupRequest {
    email: String,
    password: String,
    #[serde(default)]
    display_name: Option<String>,
}

async fn signup(
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
struct LoginRequest {
    email: String,
    password: String,
}

async fn login(
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
struct RefreshRequest {
    refresh_token: String,
}

async fn refresh(
    State(users): State<Users>,
    Json(body): Json<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let store = &users.inner.store;
    let hash = sha256(&body.refresh_token);
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
    Ok(Json(users.tokens(&account, Some(row.family_id)).await?))
}

async fn logout(
    State(users): State<Users>,
    Json(body): Json<RefreshRequest>,
) -> ApiResult<StatusCode> {
    let store = &users.inner.store;
    if let Some(row) = store.refresh_by_hash(&sha256(&body.refresh_token)).await? {
        store.revoke_family(&row.family_id).await?;
        tracing::info!(account = %row.account_id, "logged out");
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct TokenRequest {
    token: String,
}

async fn verify_email(
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

#[derive(Deserialize)]
struct ForgotRequest {
    email: String,
}

async fn forgot_password(
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
        let token = users.random_token()?;
        let ttl = secs(limits.reset_token_ttl.as_secs());
        users
            .inner
            .store
            .insert_one_time(
                &sha256(&token),
                &account.id,
                PURPOSE_RESET,
                store::now() + ttl,
            )
            .await?;
        let link = format!(
            "{}/reset-password?token={token}",
            users.config().public_url.trim_end_matches('/')
        );
        users
            .send_mail(
                &email,
                "Reset your password",
                format!("Someone asked to reset your Berth password. If it was you, open:\n\n{link}\n\nThis link expires in 30 minutes. Otherwise ignore this message.\n"),
            )
            .await?;
        tracing::info!(account = %account.id, "password reset email sent");
    }
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize)]
struct ResetRequest {
    token: String,
    password: String,
}

async fn reset_password(
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

#[derive(Deserialize)]
struct PhoneStartRequest {
    phone: String,
}

async fn phone_start(
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
        .map_err(UserError::Delivery)?;
    tracing::info!("phone code sent");
    Ok(StatusCode::ACCEPTED)
}

/// A uniformly random 6-digit code (rejection sampling, no modulo bias).
fn six_digits(random: &SystemRandom) -> Result<String, UserError> {
    const LIMIT: u32 = u32::MAX - (u32::MAX % 1_000_000);
    loop {
        let bytes = random_bytes(random, 4)?;
        let n = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if n < LIMIT {
            return Ok(format!("{:06}", n % 1_000_000));
        }
    }
}

#[derive(Deserialize)]
struct PhoneVerifyRequest {
    phone: String,
    code: String,
}

async fn phone_verify(
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

async fn get_me(State(users): State<Users>, principal: Principal) -> ApiResult<Json<AccountView>> {
    let account = users
        .inner
        .store
        .account_by_id(&principal.subject)
        .await?
        .ok_or_else(|| Problem::not_found("the account no longer exists"))?;
    Ok(Json(AccountView::from(&account)))
}

/// Sends a new verification email (at most `otp_per_hour` an hour).
async fn resend_verification(
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchMe {
    #[serde(default, with = "double_option")]
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

async fn patch_me(
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
/// name, linked identities, sessions, pending tokens).
async fn delete_me(State(users): State<Users>, principal: Principal) -> ApiResult<StatusCode> {
    let store = &users.inner.store;
    if let Some(account) = store.account_by_id(&principal.subject).await? {
        if let Some(phone) = &account.phone {
            store.delete_phone_challenges(phone).await?;
        }
        store.delete_account(&account.id).await?;
        tracing::info!(account = %account.id, "account deleted");
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct RolesRequest {
    roles: Vec<String>,
}

async fn put_roles(
    State(users): State<Users>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<RolesRequest>,
) -> ApiResult<StatusCode> {
    principal.require_role("admin")?;
    let mut roles: Vec<String> = Vec::new();
    for role in body.roles {
        if !ROLES.contains(&role.as_str()) {
            return Err(Problem::validation(format!("unknown role `{role}`")).into());
        }
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    if !users.inner.store.set_roles(&id, &roles).await? {
        return Err(Problem::not_found("no such account").into());
    }
    tracing::info!(account = %id, by = %principal.subject, ?roles, "roles changed");
    Ok(StatusCode::NO_CONTENT)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_and_phones_are_normalised() {
        assert_eq!(normalize_email(" A@Example.COM ").unwrap(), "a@example.com");
        assert!(normalize_email("nope").is_err());
        assert!(normalize_email("a@b").is_err());
        assert_eq!(normalize_phone("+44 1632 960961").unwrap(), "+441632960961");
        assert!(normalize_phone("01632960961").is_err());
    }

    #[test]
    fn codes_have_six_digits() {
        let random = SystemRandom::new();
        for _ in 0..100 {
            let code = six_digits(&random).unwrap();
            assert_eq!(code.len(), 6);
            assert!(code.chars().all(|c| c.is_ascii_digit()));
        }
    }

    #[test]
    fn forwarded_for_uses_the_last_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 10.0.0.1"),
        );
        assert_eq!(client_address(&h, None, true).as_deref(), Some("10.0.0.1"));
        assert_eq!(client_address(&h, None, false), None);
        assert_eq!(client_address(&HeaderMap::new(), None, true), None);
    }
}
