//! The component containers' environment and the shutdown timings it shares
//! with the Deployment.

use serde_json::Value;

use super::ctx::Ctx;
use super::pod::{plain_env, secret_env};
use super::{
    CONFIG_DIR, CONFIG_FILE, DEFAULT_DRAIN_MS, DEFAULT_SHUTDOWN_DELAY_MS, GRPC_PORT, HTTP_PORT,
    TEMPLATES_DIR,
};
use crate::crd::{BookingPlatform, Component, EnvVar, PaymentProvider};

/// Milliseconds of (delay, drain) from the platform's shutdown settings.
pub(super) fn shutdown_millis(p: &BookingPlatform) -> (u64, u64) {
    let s = p.spec.shutdown.clone().unwrap_or_default();
    let delay = s
        .delay
        .and_then(|d| d.millis())
        .unwrap_or(DEFAULT_SHUTDOWN_DELAY_MS);
    let drain = s
        .drain_timeout
        .and_then(|d| d.millis())
        .unwrap_or(DEFAULT_DRAIN_MS);
    (delay, drain)
}

pub(super) fn component_env(ctx: &Ctx<'_>, c: Component, overrides: &[EnvVar]) -> Vec<Value> {
    let spec = &ctx.p.spec;
    let (_, drain) = shutdown_millis(ctx.p);
    let mut env = vec![
        plain_env("BERTH_CONFIG", &format!("{CONFIG_DIR}/{CONFIG_FILE}")),
        plain_env("BERTH_LOG_FORMAT", "json"),
        // The preStop sleep already covers the routing delay; the service
        // starts draining as soon as SIGTERM arrives.
        plain_env("BERTH_SHUTDOWN__DELAY", "0s"),
        plain_env("BERTH_SHUTDOWN__DRAIN_TIMEOUT", &format!("{drain}ms")),
        secret_env(
            "BERTH_DATABASE_URL",
            &spec.database.secret_ref.name,
            spec.database.secret_ref.key_or("url"),
        ),
    ];
    if let Some(ext) = &spec.redis.external {
        env.push(secret_env(
            "BERTH_REDIS_URL",
            &ext.secret_ref.name,
            ext.secret_ref.key_or("url"),
        ));
    } else {
        let nodes = ctx.redis_nodes();
        if let Some(first) = nodes.first() {
            env.push(plain_env("BERTH_REDIS_URL", first));
        }
        env.push(plain_env(
            "BERTH_SERVICE__REDIS_LOCK_NODES",
            &nodes.join(","),
        ));
    }
    env.push(plain_env("BERTH_SERVICE__AUTH__ISSUER", &spec.auth.issuer));
    if c == Component::User {
        // Only the issuer holds the private key; the others verify with JWKS.
        env.push(secret_env(
            "BERTH_SERVICE__AUTH__JWT_SIGNING_KEY",
            &spec.auth.jwt_signing_key_secret_ref.name,
            spec.auth.jwt_signing_key_secret_ref.key_or("signing-key"),
        ));
    } else {
        env.push(plain_env(
            "BERTH_SERVICE__AUTH__JWKS_URL",
            &format!(
                "http://{}:{HTTP_PORT}/.well-known/jwks.json",
                ctx.svc_host(Component::User)
            ),
        ));
    }
    let provider = ctx.payment_provider();
    let provider_name = match provider {
        PaymentProvider::Stripe => "stripe",
        PaymentProvider::None => "none",
    };
    if matches!(c, Component::User | Component::Notification) {
        messaging_env(ctx, &mut env);
    }
    match c {
        Component::User => {
            for o in &spec.auth.oidc_providers {
                let prefix = format!("BERTH_SERVICE__AUTH__OIDC__{}", o.name.to_ascii_uppercase());
                env.push(plain_env(&format!("{prefix}__ISSUER_URL"), &o.issuer_url));
                env.push(secret_env(
                    &format!("{prefix}__CLIENT_ID"),
                    &o.secret_name,
                    "client-id",
                ));
                env.push(secret_env(
                    &format!("{prefix}__CLIENT_SECRET"),
                    &o.secret_name,
                    "client-secret",
                ));
            }
        }
        Component::Booking => {
            env.push(plain_env(
                "BERTH_SERVICE__AVAILABILITY_GRPC",
                // Every replica: claims are routed by resource.
                &format!("http://{}:{GRPC_PORT}", ctx.ledger_host()),
            ));
            env.push(plain_env(
                "BERTH_SERVICE__PAYMENTS__PROVIDER",
                provider_name,
            ));
        }
        Component::Notification => {
            if ctx.templates_config_map().is_some() {
                env.push(plain_env("BERTH_SERVICE__TEMPLATES__DIR", TEMPLATES_DIR));
            }
            // Resource names and zones for messages: availability's public API.
            env.push(plain_env(
                "BERTH_SERVICE__AVAILABILITY_URL",
                &format!(
                    "http://{}:{HTTP_PORT}",
                    ctx.svc_host(Component::Availability)
                ),
            ));
        }
        Component::Payment => {
            env.push(plain_env(
                "BERTH_SERVICE__PAYMENTS__PROVIDER",
                provider_name,
            ));
            // With `none` the service reads no Stripe setting and calls
            // nothing. Validation checks the Stripe Secrets only for `stripe`,
            // so referencing them here would let a missing one stall the pod.
            if provider == PaymentProvider::Stripe {
                if let Some(stripe) = spec.payments.as_ref().and_then(|p| p.stripe.as_ref()) {
                    env.push(secret_env(
                        "BERTH_SERVICE__STRIPE__API_KEY",
                        &stripe.api_key_secret_ref.name,
                        stripe.api_key_secret_ref.key_or("api-key"),
                    ));
                    env.push(secret_env(
                        "BERTH_SERVICE__STRIPE__WEBHOOK_SECRET",
                        &stripe.webhook_secret_ref.name,
                        stripe.webhook_secret_ref.key_or("webhook-secret"),
                    ));
                }
                env.push(plain_env(
                    "BERTH_SERVICE__BOOKING_GRPC",
                    // The ClusterIP Service: settlement calls are few, one
                    // connection per payment pod carries them.
                    &format!("http://{}:{GRPC_PORT}", ctx.svc_host(Component::Booking)),
                ));
            }
        }
        Component::Availability => {}
    }
    // Overrides replace same-named variables in place (duplicates would be
    // rejected by server-side apply: `name` is the list's merge key).
    for o in overrides {
        let value = match (&o.value, &o.secret_key_ref) {
            (_, Some(s)) => secret_env(&o.name, &s.name, s.key_or(&o.name)),
            (v, None) => plain_env(&o.name, v.as_deref().unwrap_or("")),
        };
        match env
            .iter_mut()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(o.name.as_str()))
        {
            Some(slot) => *slot = value,
            None => env.push(value),
        }
    }
    env
}

/// `service.smtp.*` and `service.sms.*` for the services that send (user
/// and notification); credentials only by Secret reference.
fn messaging_env(ctx: &Ctx<'_>, env: &mut Vec<Value>) {
    let Some(messaging) = &ctx.p.spec.messaging else {
        return;
    };
    if let Some(smtp) = &messaging.smtp {
        env.push(plain_env("BERTH_SERVICE__SMTP__HOST", &smtp.host));
        env.push(plain_env("BERTH_SERVICE__SMTP__FROM", &smtp.from));
        if let Some(port) = smtp.port {
            env.push(plain_env("BERTH_SERVICE__SMTP__PORT", &port.to_string()));
        }
        if let Some(security) = smtp.security {
            env.push(plain_env(
                "BERTH_SERVICE__SMTP__SECURITY",
                security.as_str(),
            ));
        }
        if let Some(secret) = &smtp.credentials_secret_name {
            env.push(secret_env(
                "BERTH_SERVICE__SMTP__USERNAME",
                secret,
                "username",
            ));
            env.push(secret_env(
                "BERTH_SERVICE__SMTP__PASSWORD",
                secret,
                "password",
            ));
        }
    }
    if let Some(sms) = &messaging.sms {
        env.push(plain_env("BERTH_SERVICE__SMS__FROM", &sms.from));
        if let Some(base_url) = &sms.base_url {
            env.push(plain_env("BERTH_SERVICE__SMS__BASE_URL", base_url));
        }
        let secret = &sms.credentials_secret_name;
        env.push(secret_env(
            "BERTH_SERVICE__SMS__ACCOUNT_SID",
            secret,
            "account-sid",
        ));
        env.push(secret_env(
            "BERTH_SERVICE__SMS__AUTH_TOKEN",
            secret,
            "auth-token",
        ));
    }
}
