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
//! | `GET/PATCH/DELETE /v1/me` | bearer; PATCH `{display_name}`; DELETE removes personal data and emits `account.deleted` |
//! | `POST /v1/me/email/verification` | bearer; re-sends the verification mail |
//! | `PUT /v1/users/{id}/roles` | bearer, `admin` role; `{roles: [customer|staff|admin]}` |
//!
//! Token responses: `{access_token, token_type: "Bearer", expires_in,
//! refresh_token, refresh_expires_in}`. Errors are problem+json. [`openapi`]
//! returns the OpenAPI document of these routes.
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
//!
//! # Events
//! Other services learn of deletions (the booking service anonymises the
//! person's bookings) through a transactional outbox:
//!
//! | | |
//! |---|---|
//! | written | `account_events` row in the deletion's transaction |
//! | relayed by | [`Users::spawn_event_relay`]: woken by each deletion, polls every `event_poll_interval`, retries through Redis outages, purges rows published over 7 days ago |
//! | Redis | `XADD <event_stream_key> * event_id <uuid v7> type account.deleted account_id <id>` (default stream `berth:accounts`) |
//! | in process | [`Users::subscribe_account_events`] (`berth dev`; also mirrors Redis) |
//! | guarantee | at-least-once; consumers deduplicate on `event_id` |

mod config;
mod crypto;
mod email;
mod error;
mod events;
pub mod keys;
pub mod oidc;
mod otp;
mod passwords;
mod rest;
pub mod store;
mod throttle;
mod tokens;
mod validate;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use berth_runtime::auth::Verifier;
use ring::rand::SystemRandom;
use tokio::sync::{Notify, broadcast};

pub use berth_messaging::{
    Mail, MailSender, MemoryMailer, MemorySms, SendError, SmsSender, SmtpConfig, SmtpMailer,
    SmtpSecurity, TwilioConfig, TwilioSms,
};
pub use config::{Limits, UserConfig};
pub use error::UserError;
pub use events::{ACCOUNT_DELETED, AccountEvent};
pub use keys::SigningKeySource;
pub use oidc::OidcProviderConfig;
pub use passwords::PasswordParams;
pub use rest::openapi;

use crypto::random_bytes;
use keys::{KeyRing, SigningKey};
use passwords::hash_password;
use store::Store;
use throttle::Throttle;
use validate::normalize_email;

/// Name used in logs, metrics and `berth serve <name>`.
pub const NAME: &str = "user";

/// The roles an account can hold.
pub const ROLES: [&str; 3] = ["customer", "staff", "admin"];

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
    /// In-process account events (see [`events`]).
    events: broadcast::Sender<AccountEvent>,
    /// Where the relay sends account events; connected lazily.
    events_redis: Option<redis::Client>,
    /// Wakes the relay after a deletion commits.
    relay_wake: Notify,
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
        let events_redis = redis_url.map(redis::Client::open).transpose()?;
        let throttle = match &events_redis {
            Some(client) => Throttle::Redis(
                redis::aio::ConnectionManager::new(client.clone()).await?,
                Arc::from(config.redis_prefix.as_str()),
            ),
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
                events: broadcast::channel(1024).0,
                events_redis,
                relay_wake: Notify::new(),
            }),
        })
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
}
