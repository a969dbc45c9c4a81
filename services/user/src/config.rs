//! Settings of the user service and its attempt limits.

use std::time::Duration;

use crate::{OidcProviderConfig, PasswordParams, SigningKeySource, SmtpConfig, TwilioConfig};

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
    /// Redis stream the account events go to (shared with other services).
    pub event_stream_key: String,
    /// How often the event relay looks for unpublished rows when not woken.
    pub event_poll_interval: Duration,
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
            .field("event_stream_key", &self.event_stream_key)
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
            event_stream_key: "berth:accounts".into(),
            event_poll_interval: Duration::from_millis(500),
        }
    }
}
