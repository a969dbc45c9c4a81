//! The payment service's settings; the defaults suit production.

use std::time::Duration;

use crate::error::PaymentError;

/// Stripe's own API.
pub const STRIPE_API: &str = "https://api.stripe.com/";

#[derive(Debug, Clone)]
pub struct PaymentConfig {
    /// Where Stripe's API is: Stripe itself, or (tests, `berth dev`) a local
    /// stand-in, which only a test key may talk to.
    pub stripe_api_base: String,
    /// `sk_…` or a restricted `rk_…` key. Never logged.
    pub stripe_api_key: String,
    /// The webhook endpoint's signing secrets (`whsec_…`); more than one
    /// while a secret is rolled.
    pub webhook_secrets: Vec<String>,
    pub webhook_tolerance: Duration,
    /// How long a running step keeps other workers off the payment; if its
    /// runner dies, another takes over after this.
    pub step_lease: Duration,
    /// First retry delay of a failed step; doubles per attempt up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Failed captures before the saga gives up and compensates.
    pub capture_attempts: u32,
    /// How often a payment still awaited is looked at again without a
    /// webhook (a missed or lost one must not leave it waiting).
    pub recheck_after: Duration,
    /// An authorisation never made this long after its hold lapsed is
    /// abandoned: its intent is cancelled.
    pub abandon_after: Duration,
    /// How often the worker looks for due steps written by other replicas.
    pub worker_interval: Duration,
    /// How often the reconciler looks for what is stuck or disagrees.
    pub reconcile_interval: Duration,
    /// A saga in one state longer than this is reported as stuck.
    pub stuck_after: Duration,
    /// Redis stream payment events go to.
    pub stream_key: String,
    /// Redis stream booking events come from (cancellations to refund).
    pub booking_stream_key: String,
    /// How long handled events and published outbox rows are kept.
    pub retention: Duration,
    pub max_connections: u32,
}

impl PaymentConfig {
    /// Production defaults around the two things only the operator knows.
    pub fn new(stripe_api_key: impl Into<String>, webhook_secrets: Vec<String>) -> Self {
        Self {
            stripe_api_base: STRIPE_API.to_owned(),
            stripe_api_key: stripe_api_key.into(),
            webhook_secrets,
            webhook_tolerance: Duration::from_secs(300),
            step_lease: Duration::from_secs(30),
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(5 * 60),
            capture_attempts: 8,
            recheck_after: Duration::from_secs(60),
            abandon_after: Duration::from_secs(30 * 60),
            worker_interval: Duration::from_secs(1),
            reconcile_interval: Duration::from_secs(60),
            stuck_after: Duration::from_secs(15 * 60),
            stream_key: "berth:payments".to_owned(),
            booking_stream_key: "berth:events".to_owned(),
            retention: Duration::from_secs(7 * 24 * 60 * 60),
            max_connections: 10,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), PaymentError> {
        let bad = |m: String| Err(PaymentError::Config(m));
        let key = &self.stripe_api_key;
        if !(key.starts_with("sk_") || key.starts_with("rk_")) {
            return bad("stripe.api_key must be a Stripe secret key (sk_… or rk_…)".into());
        }
        let base = self.stripe_api_base.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return bad(format!("stripe.api_base {base:?} must be an http(s) URL"));
        }
        // A live key is only ever sent to Stripe itself.
        if base != STRIPE_API.trim_end_matches('/')
            && !(key.starts_with("sk_test_") || key.starts_with("rk_test_"))
        {
            return bad(format!(
                "stripe.api_base {base:?} is not Stripe: only a test key (sk_test_…) may be sent there"
            ));
        }
        if self.webhook_secrets.is_empty() || self.webhook_secrets.iter().any(String::is_empty) {
            return bad("stripe.webhook_secret is required (the endpoint's whsec_… secret)".into());
        }
        for (name, value) in [
            ("step_lease", self.step_lease),
            ("retry_base", self.retry_base),
            ("recheck_after", self.recheck_after),
            ("worker_interval", self.worker_interval),
            ("reconcile_interval", self.reconcile_interval),
        ] {
            if value.is_zero() {
                return bad(format!("{name} must be greater than 0"));
            }
        }
        if self.capture_attempts == 0 {
            return bad("capture_attempts must be at least 1".into());
        }
        if self.stream_key.is_empty() || self.booking_stream_key.is_empty() {
            return bad("stream keys must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(key: &str, base: &str) -> PaymentConfig {
        PaymentConfig {
            stripe_api_base: base.to_owned(),
            ..PaymentConfig::new(key, vec!["whsec_x".into()])
        }
    }

    #[test]
    fn a_live_key_only_goes_to_stripe() {
        assert!(config("sk_live_1", STRIPE_API).validate().is_ok());
        assert!(
            config("sk_live_1", "http://127.0.0.1:12111")
                .validate()
                .is_err()
        );
        assert!(
            config("sk_test_1", "http://127.0.0.1:12111")
                .validate()
                .is_ok()
        );
        assert!(config("pk_test_1", STRIPE_API).validate().is_err());
        assert!(config("sk_test_1", "ftp://x").validate().is_err());
    }

    #[test]
    fn a_webhook_secret_is_required() {
        let mut c = config("sk_test_1", STRIPE_API);
        c.webhook_secrets.clear();
        assert!(c.validate().is_err());
    }
}
